"""Service load balancing decisions: frontends, backends, Maglev tables, affinity (pure)."""
