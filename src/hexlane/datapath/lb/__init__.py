"""The service load balancer's datapath, in one place.

- `maps`: the C structures of `bpf/lb.c`'s maps as ctypes, map names, flags, drop reasons;
- `loader`: compile, load and pin `lb.c` (`LbDatapath`), the Maglev map of maps;
- `encode`: a desired state (`hexlane.lb.services.DesiredState`) as map entries; ids read back;
- `tables`: every LB map as a table for the one reconciler (`hexlane.datapath.reconcile`);
- `sync`: `LbSync`, which hands a desired state to those tables and resyncs them;
- `attach`: where the programs go (LAN device, lo, hexlane_host, pod veths, the tunnel);
- `conntrack`: the conntrack garbage collector;
- `view`: what is programmed, read back for `hexlane service list` and `hexlane bpf lb`.
"""
