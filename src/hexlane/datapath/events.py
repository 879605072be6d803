"""The datapath's flow events (``bpf/events.h``): their layout, decoding, and the ring's reader.

The load balancer's programs put one `struct hl_event` per report into the ``hl_events``
ring buffer (pinned under --bpf-root beside the other maps) and count what they emitted and
what the ring could not take in ``hl_events_stats``; ``hl_trace_config`` switches them on and
tells them this node's pod CIDR and devices; ``hl_trace4`` is their aggregation state.

`decode(raw)` (pure) turns one record into an `Event`; `EventReader(map)` is libbpf's
ring_buffer over the map: `fileno()` is an epoll fd that turns readable when records wait,
`consume()` takes them all without blocking (the agent registers the fd with its event loop).
"""

from __future__ import annotations

import ctypes
import enum
import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Network

from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4, ip4_str, u8, u16, u32, u64

EVENTS_MAP = "hl_events"
EVENTS_STATS_MAP = "hl_events_stats"
TRACE_CONFIG_MAP = "hl_trace_config"
TRACE_MAP = "hl_trace4"
EVENT_MAPS = (EVENTS_MAP, EVENTS_STATS_MAP, TRACE_CONFIG_MAP, TRACE_MAP)
_ntoa = socket.inet_ntoa

EVENT_DROP = 1  # Cilium's monitor message types (Hubble's event_type.type)
EVENT_TRACE = 4

TRACE_F_ON = 1
#: skb->mark bit the programs set on a packet they considered for a trace
MARK_TRACED = 0x00100000


class ObservationPoint(enum.IntEnum):
    """Where a traced packet was going (Cilium's flow.TraceObservationPoint numbers)."""

    TO_HOST = 2
    TO_STACK = 3
    TO_OVERLAY = 4
    TO_NETWORK = 11
    TO_ENDPOINT = 101


class EventFlag(enum.IntFlag):
    REPLY = 1 << 0
    SERVICE = 1 << 1
    XLATED_SRC = 1 << 2
    L4 = 1 << 3


class HlEvent(ctypes.Structure):
    _fields_ = [("ktime_ns", u64), ("type", u8), ("obs_point", u8), ("reason", u8),
                ("tcp_flags", u8), ("proto", u8), ("flags", u8), ("icmp_type", u8),
                ("icmp_code", u8), ("ifindex", u32), ("len", u32), ("saddr", u32),
                ("daddr", u32), ("sport", u16), ("dport", u16), ("svc_addr", u32),
                ("svc_port", u16), ("pad", u16), ("xlated_saddr", u32)]


class HlTraceConfig(ctypes.Structure):
    _fields_ = [("flags", u32), ("pod_net", u32), ("pod_mask", u32), ("overlay_ifindex", u32),
                ("host_ifindex", u32), ("pad", u32)]


class HlEventsStats(ctypes.Structure):
    _fields_ = [("emitted", u64), ("lost", u64)]


class HlTrace4Key(ctypes.Structure):
    _fields_ = [("saddr", u32), ("daddr", u32), ("sport", u16), ("dport", u16), ("proto", u8),
                ("pad", u8 * 3)]


class HlTrace4Entry(ctypes.Structure):
    _fields_ = [("last_report_ns", u64), ("flags_seen", u8), ("reply", u8), ("pad", u8 * 6)]


MIRRORS: dict[str, type[ctypes.Structure]] = {
    "hl_event": HlEvent,
    "hl_trace_config": HlTraceConfig,
    "hl_events_stats": HlEventsStats,
    "hl_trace4_key": HlTrace4Key,
    "hl_trace4_entry": HlTrace4Entry,
}

# The host-order head, then addresses and ports as the packet has them (network order).
_HEAD = struct.Struct("<QBBBBBBBBII")
_TUPLE = struct.Struct(">4s4sHH4sHxx4s")
EVENT_SIZE = _HEAD.size + _TUPLE.size
assert ctypes.sizeof(HlEvent) == EVENT_SIZE


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded `struct hl_event`."""

    ktime_ns: int
    type: int  # EVENT_TRACE / EVENT_DROP
    obs_point: int  # ObservationPoint (traces)
    reason: int  # hexlane's drop reason (hexlane.datapath.lb.maps.DropReason)
    tcp_flags: int
    proto: int  # 0: not parsed
    flags: int  # EventFlag
    icmp_type: int
    icmp_code: int
    ifindex: int
    length: int
    saddr: str
    daddr: str
    sport: int
    dport: int
    svc_addr: str | None  # the frontend (EventFlag.SERVICE)
    svc_port: int
    xlated_saddr: str | None  # the source the packet left with (SNAT)

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & EventFlag.REPLY)


_F_SERVICE = int(EventFlag.SERVICE)
_F_XLATED_SRC = int(EventFlag.XLATED_SRC)


def decode(raw: bytes) -> Event:
    """One ring record (at least EVENT_SIZE bytes) as an `Event`."""
    (ktime, etype, obs, reason, tcp_flags, proto, flags, icmp_type, icmp_code, ifindex,
     length) = _HEAD.unpack_from(raw)
    saddr, daddr, sport, dport, svc_addr, svc_port, xlated = _TUPLE.unpack_from(raw, 24)
    return Event(
        ktime, etype, obs, reason, tcp_flags, proto, flags, icmp_type, icmp_code, ifindex,
        length, _ntoa(saddr), _ntoa(daddr), sport, dport,
        _ntoa(svc_addr) if flags & _F_SERVICE else None, svc_port,
        _ntoa(xlated) if flags & _F_XLATED_SRC else None)


def trace_config(*, on: bool, pod_cidr: IPv4Network | None, overlay_ifindex: int,
                 host_ifindex: int) -> HlTraceConfig:
    """The hl_trace_config entry: events on or off, this node's pod CIDR and devices."""
    cfg = HlTraceConfig(flags=TRACE_F_ON if on else 0, overlay_ifindex=overlay_ifindex,
                        host_ifindex=host_ifindex)
    if pod_cidr is not None:
        cfg.pod_net = ip4(pod_cidr.network_address)
        cfg.pod_mask = ip4(pod_cidr.netmask)
    return cfg


@dataclass(frozen=True)
class EventStats:
    emitted: int
    lost: int


def read_stats(stats_map: libbpf.Map) -> EventStats:
    """What the programs emitted and the ring could not take, since the map was created."""
    value = stats_map.lookup(ctypes.c_uint32(0))
    if value is None:
        return EventStats(0, 0)
    raw = HlEventsStats.from_buffer_copy(bytes(value))
    return EventStats(int(raw.emitted), int(raw.lost))


def describe_config(cfg: HlTraceConfig) -> str:
    net = ip4_str(cfg.pod_net) if cfg.pod_mask else "-"
    return (f"on={bool(cfg.flags & TRACE_F_ON)} pod_net={net} overlay={cfg.overlay_ifindex} "
            f"host={cfg.host_ifindex}")


class EventReader:
    """libbpf's ring_buffer over the events map (see the module docstring)."""

    def __init__(self, events_map: libbpf.Map) -> None:
        self._records: list[bytes] = []
        records = self._records
        string_at = ctypes.string_at

        def sample(_ctx: int | None, data: int, size: int) -> int:
            records.append(string_at(data, size))
            return 0

        # Kept on the instance: libbpf calls it for as long as the ring buffer lives.
        self._callback = libbpf.RING_BUFFER_SAMPLE_FN(sample)
        self._rb = libbpf.ring_buffer_new(events_map.fd, self._callback)
        self.received = 0

    def fileno(self) -> int:
        return libbpf.ring_buffer_epoll_fd(self._rb)

    def consume(self) -> list[bytes]:
        """Every record waiting, oldest first (never blocks)."""
        libbpf.ring_buffer_consume(self._rb)
        out = self._records[:]
        self._records.clear()
        self.received += len(out)
        return out

    def close(self) -> None:
        if self._rb:
            libbpf.ring_buffer_free(self._rb)
            self._rb = 0

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
