"""The node's routing and masquerade plan (pure): decisions as functions of data.

- `nodes`: Node and CiliumNode objects -> `NodeRouting` (a node's IP and pod CIDRs), and
  what this node still waits for;
- `routes`: this node and the others -> the routes, VXLAN FDB and neighbour entries it should
  have (`plan_routes`), and the names of hexlane's links (`hexlane_host`, `lxc<hash>`, ...);
- `masquerade`: which pod traffic leaves with the node's address (`plan_masquerade`).

The agent's endpoint manager hands the plans to `hexlane.datapath` (netlink, the masquerade's
maps), which carries them out and decides nothing.
"""
