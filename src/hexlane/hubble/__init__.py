"""Hubble: the flows each node observes, kept and served the way Cilium's Hubble does.

- `api/`: the wire contract, Cilium's flow, observer and relay protos (our own text, the
  published names and numbers) and the Python modules generated from them (`make proto`);
- `ring` (pure): the bounded ring of flows, counted as Cilium counts them;
- `filters` (pure): FlowFilter semantics (fields AND-ed, values OR-ed, whitelist minus
  blacklist);
- `store`: the ring with followers that wait for new flows (asyncio);
- `server`: the Observer API, health and reflection over gRPC (grpclib) on the node's UNIX
  socket, its abstract socket and TCP (TLS with client certificates when configured);
- `certs`: a Hubble CA and the server and client certificates it signs (openssl);
- `format`, `query`, `client` (pure / edge): what the `hexlane hubble` CLI prints, the
  requests its flags make, and its connection to a server.

Inspect a node with `hexlane hubble status`, `hexlane hubble observe` or `grpcurl -plaintext
-unix $STATE_DIR/hubble.sock list`. docs/hubble.md says more.
"""
