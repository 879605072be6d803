"""The datapath's flow events (``bpf/events.h``): their layout, decoding, and the ring's reader.

The load balancer's programs put one `struct hl_event` per report into the ``hl_events``
ring buffer (pinned under --bpf-root beside the other maps) and count what they emitted and
what the ring could not take in ``hl_events_stats``; ``hl_trace_config`` switches them on and
tells them this node's pod CIDR and devices; ``hl_trace4`` is their aggregation state.

`decode(raw)` (pure) turns one record into an `Event`; `EventReader(map)` reads the ring
through the map's memory: `consume_batch()` takes every committed record at once (one copy,
an `EventBatch` whose events are decoded when asked for), the programs wake nobody
(BPF_RB_NO_WAKEUP): the agent drains the ring on a short timer.
"""

from __future__ import annotations

import ctypes
import enum
import mmap
import socket
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from typing import NamedTuple

from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4, ip4_str, u8, u16, u32, u64

EVENTS_MAP = "hl_events"
EVENTS_STATS_MAP = "hl_events_stats"
TRACE_CONFIG_MAP = "hl_trace_config"
TRACE_MAP = "hl_trace4"
L7_PORTS_MAP = "hl_l7_ports"
EVENT_MAPS = (EVENTS_MAP, EVENTS_STATS_MAP, TRACE_CONFIG_MAP, TRACE_MAP, L7_PORTS_MAP)
_ntoa = socket.inet_ntoa

EVENT_DROP = 1  # Cilium's monitor message types (Hubble's event_type.type)
EVENT_TRACE = 4
EVENT_POLICY_VERDICT = 5  # a new connection's policy verdict (VerdictFlag in obs_point)
EVENT_L7 = 129  # Cilium's access log: an L7 record

TRACE_F_ON = 1
TRACE_F_L7 = 2  # hand up the first bytes of DNS and HTTP messages

#: the most payload an L7 record carries (HL_L7_CAPTURE)
L7_CAPTURE = 512


class L7Kind(enum.IntEnum):
    """What a port listed in hl_l7_ports carries (HL_L7_*)."""

    DNS = 1
    HTTP = 2


class L7Side(enum.IntEnum):
    """Where an L7 message was seen: at its client pod, or (the client not a pod) at its
    server pod."""

    CLIENT = 1
    SERVER = 2
#: skb->mark bit the programs set on a packet they considered for a trace
MARK_TRACED = 0x00100000


class ObservationPoint(enum.IntEnum):
    """Where a traced packet was going (Cilium's flow.TraceObservationPoint numbers)."""

    TO_HOST = 2
    TO_STACK = 3
    TO_OVERLAY = 4
    TO_NETWORK = 11
    TO_ENDPOINT = 101


class VerdictFlag(enum.IntFlag):
    """A policy verdict's flags (its obs_point byte; Cilium's layout): the direction, the
    match type in bits 3-5 (`(flags & MATCH_MASK) >> MATCH_SHIFT`), audited."""

    INGRESS = 1
    EGRESS = 2
    AUDITED = 0x40


VERDICT_MATCH_MASK = 0x38
VERDICT_MATCH_SHIFT = 3


class EventFlag(enum.IntFlag):
    REPLY = 1 << 0
    SERVICE = 1 << 1
    XLATED_SRC = 1 << 2
    L4 = 1 << 3
    RESPONSE = 1 << 4  # L7: a response (else a request)


class HlEvent(ctypes.Structure):
    _fields_ = [("ktime_ns", u64), ("type", u8), ("obs_point", u8), ("reason", u8),
                ("tcp_flags", u8), ("proto", u8), ("flags", u8), ("icmp_type", u8),
                ("icmp_code", u8), ("ifindex", u32), ("len", u32), ("saddr", u32),
                ("daddr", u32), ("sport", u16), ("dport", u16), ("svc_addr", u32),
                ("svc_port", u16), ("pad", u16), ("xlated_saddr", u32), ("identity", u32),
                ("cookie", u32)]


class HlTraceConfig(ctypes.Structure):
    _fields_ = [("flags", u32), ("pod_net", u32), ("pod_mask", u32), ("overlay_ifindex", u32),
                ("host_ifindex", u32), ("cluster_net", u32), ("cluster_mask", u32),
                ("pad", u32)]


class HlL7Port(ctypes.Structure):
    _fields_ = [("port", u16), ("proto", u8), ("pad", u8)]


class HlL7Event(ctypes.Structure):
    _fields_ = [("ev", HlEvent), ("cap_len", u16), ("kind", u8), ("side", u8), ("pad", u32),
                ("data", u8 * L7_CAPTURE)]


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
    "hl_l7_port": HlL7Port,
    "hl_l7_event": HlL7Event,
}

# The host-order head, then addresses and ports as the packet has them (network order).
_HEAD = struct.Struct("<QBBBBBBBBII")
_TUPLE = struct.Struct(">4s4sHH4sHxx4s")
_TAIL = struct.Struct("<II")  # policy verdicts: the remote identity, the policies' number
EVENT_SIZE = _HEAD.size + _TUPLE.size + _TAIL.size
assert ctypes.sizeof(HlEvent) == EVENT_SIZE


class Event(NamedTuple):
    """One decoded `struct hl_event` (a tuple: thousands a second are made)."""

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
    identity: int = 0  # policy verdicts: the remote side's security identity
    cookie: int = 0  # policy verdicts: the number of the deciding policies (0: none)

    @property
    def is_reply(self) -> bool:
        return bool(self.flags & _F_REPLY)


_F_REPLY = int(EventFlag.REPLY)
_F_SERVICE = int(EventFlag.SERVICE)
_F_XLATED_SRC = int(EventFlag.XLATED_SRC)


def decode(raw: bytes) -> Event:
    """One ring record (at least EVENT_SIZE bytes) as an `Event`."""
    return decode_at(raw, 0)


def decode_at(raw: bytes, at: int) -> Event:
    """The event at offset `at` of `raw`."""
    (ktime, etype, obs, reason, tcp_flags, proto, flags, icmp_type, icmp_code, ifindex,
     length) = _HEAD.unpack_from(raw, at)
    saddr, daddr, sport, dport, svc_addr, svc_port, xlated = _TUPLE.unpack_from(raw, at + 24)
    identity, cookie = (_TAIL.unpack_from(raw, at + 48) if etype == EVENT_POLICY_VERDICT
                        else _NO_TAIL)
    return Event(
        ktime, etype, obs, reason, tcp_flags, proto, flags, icmp_type, icmp_code, ifindex,
        length, _ntoa(saddr), _ntoa(daddr), sport, dport,
        _ntoa(svc_addr) if flags & _F_SERVICE else None, svc_port,
        _ntoa(xlated) if flags & _F_XLATED_SRC else None, identity, cookie)


_NO_TAIL = (0, 0)


def trace_config(*, on: bool, pod_cidr: IPv4Network | None, overlay_ifindex: int,
                 host_ifindex: int, l7: bool = False,
                 cluster_cidr: IPv4Network | None = None) -> HlTraceConfig:
    """The hl_trace_config entry: events on or off, L7 records on or off, this node's pod
    CIDR, the cluster's (whose addresses are pods) and the node's devices."""
    flags = (TRACE_F_ON if on else 0) | (TRACE_F_L7 if on and l7 else 0)
    cfg = HlTraceConfig(flags=flags, overlay_ifindex=overlay_ifindex, host_ifindex=host_ifindex)
    if pod_cidr is not None:
        cfg.pod_net = ip4(pod_cidr.network_address)
        cfg.pod_mask = ip4(pod_cidr.netmask)
    if cluster_cidr is not None:
        cfg.cluster_net = ip4(cluster_cidr.network_address)
        cfg.cluster_mask = ip4(cluster_cidr.netmask)
    return cfg


def l7_port_entries(dns_ports: Sequence[int], http_ports: Sequence[int]) -> dict[bytes, bytes]:
    """hl_l7_ports: DNS on UDP and TCP, HTTP on TCP (keys and values as the map holds them)."""
    entries: dict[bytes, bytes] = {}
    for port in dns_ports:
        for proto in (socket.IPPROTO_UDP, socket.IPPROTO_TCP):
            entries[bytes(HlL7Port(socket.htons(port), proto))] = bytes([L7Kind.DNS])
    for port in http_ports:
        entries[bytes(HlL7Port(socket.htons(port), socket.IPPROTO_TCP))] = bytes([L7Kind.HTTP])
    return entries


@dataclass(frozen=True)
class EventStats:
    emitted: int
    lost: int


def read_stats(stats_map: libbpf.Map) -> EventStats:
    """What the programs emitted and the ring could not take, since the map was created
    (summed over the CPUs)."""
    values = stats_map.lookup_percpu(ctypes.c_uint32(0)) or []
    raw = [HlEventsStats.from_buffer_copy(bytes(v)) for v in values]
    return EventStats(sum(int(r.emitted) for r in raw), sum(int(r.lost) for r in raw))


def describe_config(cfg: HlTraceConfig) -> str:
    net = ip4_str(cfg.pod_net) if cfg.pod_mask else "-"
    cluster = ip4_str(cfg.cluster_net) if cfg.cluster_mask else "-"
    return (f"on={bool(cfg.flags & TRACE_F_ON)} l7={bool(cfg.flags & TRACE_F_L7)} "
            f"pod_net={net} cluster_net={cluster} overlay={cfg.overlay_ifindex} "
            f"host={cfg.host_ifindex}")


#: ring buffer record header bits (linux/bpf.h BPF_RINGBUF_BUSY_BIT, _DISCARD_BIT)
RINGBUF_BUSY = 1 << 31
RINGBUF_DISCARD = 1 << 30
RINGBUF_HDR = 8
RECORD_SIZE = RINGBUF_HDR + EVENT_SIZE  # 8-byte aligned already
assert RECORD_SIZE % 8 == 0


class EventBatch(NamedTuple):
    """Records taken from the ring at once: `data` holds them back to back as the ring had
    them (each behind its 8-byte header), `offsets` where each event starts in it, `l7`
    which of them (indexes into `offsets`) are L7 records, with their payload."""

    data: bytes
    offsets: Sequence[int]
    l7: Sequence[int] = ()

    def __len__(self) -> int:
        return len(self.offsets)

    def event(self, i: int) -> Event:
        return decode_at(self.data, self.offsets[i])

    def payload(self, i: int) -> L7Payload:
        """What L7 record `i` carries (after its `struct hl_event`)."""
        at = self.offsets[i] + EVENT_SIZE
        cap_len, kind, side = _L7_HEAD.unpack_from(self.data, at)
        start = at + _L7_HEAD.size
        return L7Payload(kind, side, self.data[start:start + min(cap_len, L7_CAPTURE)])


class L7Payload(NamedTuple):
    kind: int  # L7Kind
    side: int  # L7Side
    data: bytes


_L7_HEAD = struct.Struct("<HBBxxxx")
assert _L7_HEAD.size == ctypes.sizeof(HlL7Event) - EVENT_SIZE - L7_CAPTURE


class EventReader:
    """A consumer of the events ring buffer, through the map's memory (module docstring).

    The kernel's ring buffer ABI, as libbpf's own consumer uses it: the map's first page is
    the consumer position (ours to write), the next the producer position, then the data,
    mapped twice in a row so a stretch of records that wraps reads as one. `consume()` copies
    every committed record at once and moves the consumer position past them: one copy for
    thousands of events (libbpf's ring_buffer__consume calls back into Python per record,
    1-2 us each).
    Reads of the producer position need no fence on x86-64 (loads are not reordered with
    older loads); the consumer position is written after the copy.
    """

    def __init__(self, events_map: libbpf.Map) -> None:
        if events_map.map_type != libbpf.BPF_MAP_TYPE_RINGBUF:
            raise ValueError(f"{events_map.name} is not a ring buffer map")
        page = mmap.PAGESIZE
        self.size = events_map.max_entries
        self._mask = self.size - 1
        self._fd = events_map.fd
        self._consumer = mmap.mmap(self._fd, page, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._producer = mmap.mmap(self._fd, page + 2 * self.size, mmap.MAP_SHARED,
                                   mmap.PROT_READ, offset=page)
        self._view = memoryview(self._producer)
        self._page = page
        self.received = 0

    def pending_bytes(self) -> int:
        return _U64.unpack_from(self._producer, 0)[0] - _U64.unpack_from(self._consumer, 0)[0]

    def consume_batch(self) -> EventBatch:
        """Every committed record now in the ring, oldest first (never blocks)."""
        cons = _U64.unpack_from(self._consumer, 0)[0]
        prod = _U64.unpack_from(self._producer, 0)[0]
        if prod <= cons:
            return EventBatch(b"", ())
        start = self._page + (cons & self._mask)
        data = bytes(self._view[start:start + (prod - cons)])
        offsets, l7, used = _records(data)
        _U64.pack_into(self._consumer, 0, cons + used)
        self.received += len(offsets)
        return EventBatch(data, offsets, l7)

    def consume(self) -> list[bytes]:
        """Every committed record now in the ring, each as its own bytes (tests, tools)."""
        batch = self.consume_batch()
        return [batch.data[o:o + EVENT_SIZE] for o in batch.offsets]

    def close(self) -> None:
        if self._consumer is not None:
            self._view.release()
            self._producer.close()
            self._consumer.close()
            self._consumer = None  # type: ignore[assignment]

    def __enter__(self) -> EventReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_U64 = struct.Struct("<Q")
_HDR_LEN = EVENT_SIZE  # what every committed record of ours has in its header's length


def _records(data: bytes) -> tuple[Sequence[int], Sequence[int], int]:
    """Where each committed event starts in `data` (a copy of the ring from the consumer
    position), which of them are L7 records (longer), and how many bytes they and the
    discarded records before the first busy one take (how far the consumer position
    moves)."""
    n = len(data) // RECORD_SIZE
    if n * RECORD_SIZE == len(data):
        # The common case: nothing but our fixed-size records, all committed.
        headers = memoryview(data).cast("I")[::RECORD_SIZE // 4]
        if headers.tolist().count(_HDR_LEN) == n:
            return range(RINGBUF_HDR, len(data), RECORD_SIZE), (), len(data)
    offsets: list[int] = []
    l7: list[int] = []
    pos = 0
    while pos + RINGBUF_HDR <= len(data):
        (length,) = _U32.unpack_from(data, pos)
        if length & RINGBUF_BUSY:
            break  # not committed yet: it and what follows wait for the next call
        size = length & ~(RINGBUF_BUSY | RINGBUF_DISCARD)
        end = (pos + RINGBUF_HDR + size + 7) & ~7
        if end > len(data):
            break  # never seen (the producer position covers whole records): be safe
        if not length & RINGBUF_DISCARD and size >= EVENT_SIZE:
            if size >= EVENT_SIZE + _L7_HEAD.size:
                l7.append(len(offsets))
            offsets.append(pos + RINGBUF_HDR)
        pos = end
    return offsets, l7, pos


_U32 = struct.Struct("<I")
