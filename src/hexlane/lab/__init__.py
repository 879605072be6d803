"""A whole homelab cluster in network namespaces on one machine."""
