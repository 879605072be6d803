"""L2 announcement decisions: which node announces which IP on which interface (pure)."""
