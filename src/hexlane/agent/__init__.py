"""The per-node daemon: wires reconcilers that program this node's datapath.

Parts so far: `endpoints` (pods' interfaces, IPs and routes for the CNI plugin, masquerading;
`EndpointManager`) and `api` (the local HTTP API on `$STATE_DIR/agent.sock` and the abstract
socket `@hexlane-agent`; `serve_api`). `python -m hexlane.agent.endpoints` runs the endpoint
side alone in a node namespace.
"""
