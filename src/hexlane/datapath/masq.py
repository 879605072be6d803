"""Loading and configuring the eBPF masquerading (`bpf/masq.c`) on a node's external interface.

`MasqDatapath.load(bpf_root)` compiles and loads `masq.c` with its maps pinned by name under
`bpf_root` (NAT state survives an agent restart; ``hl_metrics``, the counters of drops, is
shared with the load balancer's object); `configure(plan)` writes what
`hexlane.routing.masquerade.plan_masquerade` decided into `hl_masq4_nonmasq` and `hl_masq4_config`,
through one reconciler per map (`hexlane.datapath.reconcile`), and `resync()` reads both maps
back and repairs what changed behind the agent's back; `attach(ifindex)` puts the programs on
tc egress and ingress of the interface (in the calling thread's network namespace, through
`hexlane.datapath.tc`) at priority 2: on ingress before the service load balancer (priority
3), which then sees a reply of a pod's masqueraded connection with the pod's address. Inspect
with `bpftool map dump pinned <bpf_root>/hl_snat4` and `bpftool net` in the node's namespace.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from hexlane.datapath import libbpf, tc
from hexlane.datapath.bpffs import on_bpffs
from hexlane.datapath.build import compile_program
from hexlane.datapath.layout import ip4, ip4_address, port_int, u8, u16, u32, u64
from hexlane.datapath.metrics import METRICS_MAP, HlMetricsValue
from hexlane.datapath.reconcile import FlushResult, MapTable, Reconciler, flush_group
from hexlane.routing.masquerade import MasqPlan

CONFIG_MAP = "hl_masq4_config"
NONMASQ_MAP = "hl_masq4_nonmasq"
SNAT_MAP = "hl_snat4"
STATS_MAP = "hl_masq4_stats"
STATS = ("egress", "ingress", "no_port", "rewrite_failed")  # hl_masq4_stats slots
PROGRAM_EGRESS = "hl_masq_egress"
PROGRAM_INGRESS = "hl_masq_ingress"
PROGRAMS = (PROGRAM_EGRESS, PROGRAM_INGRESS)
#: tc filter handle and priority: on ingress before the load balancer's (priority 3), so a reply
#: of a masqueraded flow is the pod's again when the load balancer sees it.
TC_HANDLE = 2
TC_PRIORITY = 2

SNAT_DIR_EGRESS = 1
SNAT_DIR_INGRESS = 2

_CONFIG_KEY = bytes(ctypes.c_uint32(0))  # hl_masq4_config is an array of one
_NONMASQ_VALUE = bytes(ctypes.c_uint8(1))


class Masq4Config(ctypes.Structure):
    _fields_ = [("node_ip", u32), ("pod_net", u32), ("pod_mask", u32), ("port_min", u16),
                ("port_max", u16), ("enabled", u32)]


class Masq4NonmasqKey(ctypes.Structure):
    _fields_ = [("prefixlen", u32), ("addr", u32)]


class Snat4Key(ctypes.Structure):
    _fields_ = [("saddr", u32), ("daddr", u32), ("sport", u16), ("dport", u16), ("proto", u8),
                ("dir", u8), ("pad", u16)]


class Snat4Entry(ctypes.Structure):
    _fields_ = [("to_addr", u32), ("to_port", u16), ("pad", u16), ("last_seen_ns", u64)]


#: C struct name -> ctypes mirror, for the layout test against the object's BTF.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "masq4_config": Masq4Config,
    "masq4_nonmasq_key": Masq4NonmasqKey,
    "snat4_key": Snat4Key,
    "snat4_entry": Snat4Entry,
}


@dataclass(frozen=True)
class NatEntry:
    """One translation: a pod flow (pod, remote) and the node port it leaves with."""

    proto: int
    pod_ip: IPv4Address
    pod_port: int
    remote_ip: IPv4Address
    remote_port: int
    node_ip: IPv4Address
    node_port: int


class MasqDatapath:
    """The loaded masquerading programs and their maps (see the module docstring)."""

    def __init__(self, obj: libbpf.BpfObject, bpf_root: Path) -> None:
        self.obj = obj
        self.bpf_root = bpf_root
        self.config = obj.map(CONFIG_MAP, key_type=ctypes.c_uint32, value_type=Masq4Config)
        self.nonmasq = obj.map(NONMASQ_MAP, key_type=Masq4NonmasqKey, value_type=ctypes.c_uint8)
        self.snat = obj.map(SNAT_MAP, key_type=Snat4Key, value_type=Snat4Entry)
        self.stats = obj.map(STATS_MAP, key_type=ctypes.c_uint32, value_type=ctypes.c_uint64)
        # shared with the load balancer's object: drops by reason and direction
        self.metrics = obj.map(METRICS_MAP, key_type=ctypes.c_uint32, value_type=HlMetricsValue)
        # What `configure` wants in the two maps the agent writes (raw keys and values).
        self.config_rec: Reconciler[bytes, bytes] = Reconciler(MapTable(self.config))
        self.nonmasq_rec: Reconciler[bytes, bytes] = Reconciler(MapTable(self.nonmasq))
        # Where the programs sit (`attach`): tc slots under the masquerade's handle.
        self.tc_table = tc.TcTable(lambda name: obj.program(name).fd, handle=TC_HANDLE,
                                   slots=(("egress", TC_PRIORITY), ("ingress", TC_PRIORITY)),
                                   name="masq_tc")
        self.tc: Reconciler[tc.Slot, int] = Reconciler(self.tc_table)

    @classmethod
    def load(cls, bpf_root: str | os.PathLike[str]) -> MasqDatapath:
        root = Path(bpf_root)
        if not on_bpffs(root):
            raise libbpf.BpfError(errno.ENODEV, f"{root} is not on a BPF file system")
        root.mkdir(parents=True, exist_ok=True)
        obj = libbpf.BpfObject(compile_program("masq.c", {}))
        try:
            obj.set_pin_root(root)
            obj.load()
            for name in PROGRAMS:
                pin = root / name
                if pin.exists():
                    pin.unlink()  # a previous agent's: attached filters keep their own ref
                obj.program(name).pin(pin)
            return cls(obj, root)
        except BaseException:
            obj.close()
            raise

    def configure(self, plan: MasqPlan) -> FlushResult:
        """Write the plan: node IP, pod CIDR, port range, and the non-masquerade prefixes.
        Only entries that differ from the previous plan are written; the first call reads
        the maps back (pinned by a previous agent: its stale prefixes go)."""
        self.nonmasq_rec.set_all(
            (bytes(Masq4NonmasqKey(net.prefixlen, ip4(net.network_address))), _NONMASQ_VALUE)
            for net in plan.nonmasq)
        self.config_rec.set_all({_CONFIG_KEY: bytes(Masq4Config(
            node_ip=ip4(plan.node_ip), pod_net=ip4(plan.pod_cidr.network_address),
            pod_mask=ip4(plan.pod_cidr.netmask), port_min=plan.port_min,
            port_max=plan.port_max, enabled=int(plan.enabled)))})
        for rec in self.reconcilers:
            if rec.last_resync is None:
                rec.detect()
        return flush_group(self.reconcilers)

    def resync(self) -> FlushResult:
        """Read both maps back; repair entries changed, missing or stale behind our back."""
        for rec in self.reconcilers:
            rec.detect()
        return flush_group(self.reconcilers)

    @property
    def reconcilers(self) -> list[Reconciler[bytes, bytes]]:
        """The exceptions first: a config that turns masquerading on never meets a
        half-written set of prefixes it must leave alone."""
        return [self.nonmasq_rec, self.config_rec]

    def nonmasq_prefixes(self) -> set[IPv4Network]:
        return {IPv4Network(f"{ip4_address(k.addr)}/{k.prefixlen}")
                for k in self.nonmasq.iter_keys()}

    def attach(self, ifindex: int) -> None:
        """Attach both programs to `ifindex` (in the calling thread's network namespace),
        replacing a previous agent's; raises when either could not be attached."""
        device = socket.if_indextoname(ifindex)
        wanted = {(device, direction, TC_PRIORITY): self.tc_table.program_id(name)
                  for name, direction in ((PROGRAM_EGRESS, "egress"),
                                          (PROGRAM_INGRESS, "ingress"))}
        self.tc_table.wanted = set(wanted)
        self.tc.set_all(wanted)
        failed = self.tc.flush().failed
        if failed:
            raise RuntimeError(f"masquerade programs not attached to {device}: "
                               + "; ".join(map(str, failed.values())))

    def entries(self) -> list[NatEntry]:
        """The live translations (from their egress entries), sorted."""
        out = []
        for key, value in self.snat.iter_items():
            if key.dir != SNAT_DIR_EGRESS:
                continue
            out.append(NatEntry(key.proto, ip4_address(key.saddr), port_int(key.sport),
                                ip4_address(key.daddr), port_int(key.dport),
                                ip4_address(value.to_addr), port_int(value.to_port)))
        return sorted(out, key=lambda e: (e.pod_ip, e.pod_port, e.remote_ip, e.remote_port))

    def counters(self) -> dict[str, int]:
        """Packets translated each way, and drops (no free NAT port, failed rewrite)."""
        out = {}
        for slot, name in enumerate(STATS):
            value = self.stats.lookup(ctypes.c_uint32(slot))
            out[name] = int(value.value) if value is not None else 0
        return out

    def close(self) -> None:
        """Close our handles; pins and attached filters stay for the next agent."""
        self.obj.close()

    def unpin(self) -> None:
        """Remove every pin this datapath made under bpf_root (hexlane cleanup)."""
        for name in (*PROGRAMS, CONFIG_MAP, NONMASQ_MAP, SNAT_MAP, STATS_MAP, METRICS_MAP):
            pin = self.bpf_root / name
            if pin.exists():
                pin.unlink()

