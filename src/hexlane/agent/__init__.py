"""The per-node daemon: wires reconcilers that program this node's datapath.

`daemon` (`hexlane agent`) wires the parts once: `endpoints` (pods' interfaces, IPs and routes
for the CNI plugin, masquerading; `EndpointManager`), `api` (the local HTTP API on
`$STATE_DIR/agent.sock` and the abstract socket `@hexlane-agent`; `serve_api`), `services`
(the service load balancer), `nodes` (other nodes' routing facts from Node/CiliumNode),
`controllers`, `cniconf`, `metrics`; `status` decides health, `cleanup` removes it all.
`python -m hexlane.agent.endpoints` runs the endpoint side alone in a node namespace.
See docs/agent.md.
"""
