"""Loading the service load balancer: build, load, pin, and the handles the agent writes through.

`LbDatapath.load(bpf_root, table_size, hash_seed)` compiles ``bpf/lb.c`` for that Maglev table
size and seed, loads it with every map pinned by name under `bpf_root` (reusing maps already
pinned there, so conntrack and tables survive an agent restart), and pins the programs beside
them. Where the programs go is `hexlane.datapath.lb.attach`'s, what the maps hold
`hexlane.datapath.lb.sync`'s.

Inspect what is pinned with ``bpftool map dump pinned <bpf_root>/hl_lb4_services``.
"""

from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass
from pathlib import Path

from hexlane.datapath import libbpf
from hexlane.datapath.bpffs import on_bpffs
from hexlane.datapath.build import compile_program
from hexlane.datapath.events import (
    EVENT_MAPS,
    EVENTS_MAP,
    EVENTS_STATS_MAP,
    L7_PORTS_MAP,
    TRACE_CONFIG_MAP,
    TRACE_MAP,
    HlEventsStats,
    HlL7Port,
    HlTrace4Entry,
    HlTrace4Key,
    HlTraceConfig,
)
from hexlane.datapath.lb.maps import (
    AFFINITY_MAP,
    AFFINITY_MATCH_MAP,
    BACKENDS_MAP,
    CONFIG_MAP,
    CT_MAP,
    MAGLEV_MAP,
    REVNAT_MAP,
    SERVICES_MAP,
    Ct4Entry,
    Ct4Key,
    Lb4AffinityKey,
    Lb4Backend,
    Lb4Key,
    Lb4ReverseNat,
    Lb4Service,
    LbAffinityMatch,
    LbAffinityVal,
    LbNodeConfig,
    maglev_pin_name,
)
from hexlane.datapath.metrics import METRICS_MAP, HlMetricsValue
from hexlane.datapath.policy import POLICY_MAPS
from hexlane.lb.maglev import (
    DEFAULT_HASH_SEED,
    DEFAULT_TABLE_SIZE,
    check_table_size,
    parse_hash_seed,
)

PROGRAM_FROM_NETDEV = "hl_from_netdev"  # LAN interface, ingress
PROGRAM_FROM_POD = "hl_from_pod"  # every pod's host-side veth, ingress
PROGRAM_FROM_HOST = "hl_from_host"  # hexlane_host, egress (the node's own connections)
PROGRAM_FROM_OVERLAY = "hl_from_overlay"  # the VXLAN device, ingress (tunnel mode)
PROGRAM_TO_NETDEV = "hl_to_netdev"  # LAN interface, egress (host-network backends' replies)
PROGRAM_TO_POD = "hl_to_pod"  # every pod's host-side veth, egress (the same, to local pods)
PROGRAM_TO_OVERLAY = "hl_to_overlay"  # the VXLAN device, egress (the same, to remote pods)
PROGRAM_FROM_LOOPBACK = "hl_from_lo"  # lo, egress (the node's own NodePorts; names: 15 chars)
PROGRAMS = (PROGRAM_FROM_NETDEV, PROGRAM_FROM_POD, PROGRAM_FROM_HOST, PROGRAM_FROM_OVERLAY,
            PROGRAM_TO_NETDEV, PROGRAM_TO_POD, PROGRAM_TO_OVERLAY, PROGRAM_FROM_LOOPBACK)
# tc filter handle and priority of every program of ours; our programs hand on what is not
# theirs (TC_ACT_UNSPEC).
TC_HANDLE = 1
TC_PRIORITY = 1
# On the LAN interface's egress the load balancer's reverse translation (1, 1) comes before the
# masquerade's (2, 2). On its ingress the load balancer comes after the masquerade's: a
# reply to a pod's connection to a service whose backend is outside the cluster (the
# `kubernetes` Service) is first turned back to the pod, then to the service address.
NETDEV_TC_PRIORITY = 3


def build_options(table_size: int, hash_seed: str) -> dict[str, int | str]:
    """The -D definitions lb.c is built with: Cilium's LB_MAGLEV_LUT_SIZE and HASH_INIT4_SEED."""
    seeds = parse_hash_seed(hash_seed)
    return {
        "LB_MAGLEV_LUT_SIZE": check_table_size(table_size),
        "HASH_INIT4_SEED": f"{seeds.jhash4:#010x}",
    }


@dataclass
class LbMaps:
    """Typed handles on the pinned maps (they belong to the loaded object)."""

    services: libbpf.Map
    backends: libbpf.Map
    revnat: libbpf.Map
    maglev: libbpf.Map
    ct: libbpf.Map
    affinity: libbpf.Map
    affinity_match: libbpf.Map
    metrics: libbpf.Map  # forwards and drops by reason and direction (datapath.metrics)
    config: libbpf.Map
    events: libbpf.Map  # the flow events' ring buffer (hexlane.datapath.events)
    events_stats: libbpf.Map
    trace_config: libbpf.Map
    trace: libbpf.Map
    l7_ports: libbpf.Map  # which ports carry DNS and HTTP (events.l7_port_entries)


class LbDatapath:
    """The loaded service load balancer (see the module docstring)."""

    def __init__(self, obj: libbpf.BpfObject, bpf_root: Path, table_size: int) -> None:
        self.obj = obj
        self.bpf_root = bpf_root
        self.table_size = table_size
        self.maps = LbMaps(
            services=obj.map(SERVICES_MAP, key_type=Lb4Key, value_type=Lb4Service),
            backends=obj.map(BACKENDS_MAP, key_type=ctypes.c_uint32, value_type=Lb4Backend),
            revnat=obj.map(REVNAT_MAP, key_type=ctypes.c_uint16, value_type=Lb4ReverseNat),
            maglev=obj.map(MAGLEV_MAP, key_type=ctypes.c_uint16, value_type=ctypes.c_uint32),
            ct=obj.map(CT_MAP, key_type=Ct4Key, value_type=Ct4Entry),
            affinity=obj.map(AFFINITY_MAP, key_type=Lb4AffinityKey, value_type=LbAffinityVal),
            affinity_match=obj.map(AFFINITY_MATCH_MAP, key_type=LbAffinityMatch,
                                   value_type=ctypes.c_uint8),
            metrics=obj.map(METRICS_MAP, key_type=ctypes.c_uint32, value_type=HlMetricsValue),
            config=obj.map(CONFIG_MAP, key_type=ctypes.c_uint32, value_type=LbNodeConfig),
            events=obj.map(EVENTS_MAP),
            events_stats=obj.map(EVENTS_STATS_MAP, key_type=ctypes.c_uint32,
                                 value_type=HlEventsStats),
            trace_config=obj.map(TRACE_CONFIG_MAP, key_type=ctypes.c_uint32,
                                 value_type=HlTraceConfig),
            trace=obj.map(TRACE_MAP, key_type=HlTrace4Key, value_type=HlTrace4Entry),
            l7_ports=obj.map(L7_PORTS_MAP, key_type=HlL7Port, value_type=ctypes.c_uint8),
        )

    @classmethod
    def load(cls, bpf_root: str | os.PathLike[str], *, table_size: int = DEFAULT_TABLE_SIZE,
             hash_seed: str = DEFAULT_HASH_SEED) -> LbDatapath:
        root = Path(bpf_root)
        if not on_bpffs(root):
            raise libbpf.BpfError(
                errno.ENODEV,
                f"{root} is not on a BPF file system (mount one: mount -t bpf bpf /sys/fs/bpf)",
            )
        root.mkdir(parents=True, exist_ok=True)
        path = compile_program("lb.c", build_options(table_size, hash_seed))
        obj = libbpf.BpfObject(path)
        try:
            obj.set_pin_root(root)
            obj.set_pin_path(MAGLEV_MAP, root / maglev_pin_name(table_size))
            obj.load()
            for stale in root.glob(f"{MAGLEV_MAP}_*"):
                if stale.name != maglev_pin_name(table_size):
                    stale.unlink()  # tables of another maglev.tableSize
            for name in PROGRAMS:
                pin = root / name
                # A previous agent's program pin: replace it (attached filters keep their own
                # reference, so traffic flows on meanwhile).
                if pin.exists():
                    pin.unlink()
                obj.program(name).pin(pin)
            return cls(obj, root, table_size)
        except BaseException:
            obj.close()
            raise

    def program_fd(self, name: str) -> int:
        return self.obj.program(name).fd

    def close(self) -> None:
        """Close our handles; pinned maps and programs stay for the next agent."""
        self.obj.close()

    def unpin(self) -> None:
        """Remove every pin under bpf_root that this datapath made (hexlane cleanup)."""
        for name in (*PROGRAMS, SERVICES_MAP, BACKENDS_MAP, REVNAT_MAP,
                     maglev_pin_name(self.table_size), CT_MAP,
                     AFFINITY_MAP, AFFINITY_MATCH_MAP, METRICS_MAP, CONFIG_MAP, *EVENT_MAPS,
                     *POLICY_MAPS):
            pin = self.bpf_root / name
            if pin.exists():
                pin.unlink()
