"""IP address management decisions: LB-IPAM allocator and pod CIDR allocator (pure)."""
