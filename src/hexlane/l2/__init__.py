"""L2 announcements: which node answers ARP for which LoadBalancer and external IP (pure).

`hexlane.l2.policy` reads CiliumL2AnnouncementPolicy objects as Cilium's agent does (selectors
and interface regexes, with the `io.cilium/bad-*` conditions for bad ones);
`hexlane.l2.announce` decides, for one node, which Services it competes for (one Lease each,
Cilium's election), on which of its interfaces, and what the ARP responder holds while it
leads; `hexlane.l2.garp` times the gratuitous ARPs sent on taking an IP over. The agent's
edge (`hexlane.agent.l2`) turns these into Leases, responder map entries and packets.
Inspect a node with `hexlane l2 list`.
"""
