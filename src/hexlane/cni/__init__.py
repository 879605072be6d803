"""The CNI plugin executable, which hands ADD/DEL/CHECK to the node's agent."""
