"""The per-node daemon: wires reconcilers that program this node's datapath."""
