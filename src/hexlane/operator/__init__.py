"""The per-cluster daemon: wires cluster-wide controllers (LB-IPAM, pod CIDRs)."""
