"""The per-node daemon: wires the parts that program this node's datapath.

`daemon` (`hexlane agent`) lists the parts and wires them once: `nodemanager` (this node and
the others: routes to them), `endpoints` (pods' interfaces, IPs and routes for the CNI plugin,
masquerading; `EndpointManager`), `loadbalancer` (Services into the eBPF load balancer) with
`healthz` (kube-proxy's health servers), `api` (the local HTTP API on `$STATE_DIR/agent.sock`
and the abstract socket `@hexlane-agent`), `cniconf` (the CNI config and plugin), `status`
(the status document and its health), `metrics`; `programs` lists the tc programs attached,
`cleanup` removes it all. The loops are `hexlane.k8s.controller.Controller`s; the plans are
the pure `hexlane.routing` and `hexlane.lb`. `hexlane dev endpoints|services` runs a part
alone. See docs/agent.md and docs/code-map.md.
"""
