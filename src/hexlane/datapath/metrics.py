"""The datapath's counters of forwarded and dropped packets (``bpf/metrics.h``), read back.

The load balancer's programs and the masquerade's count every packet they forward or drop in
``hl_metrics``, a per-CPU array pinned under --bpf-root and shared by both objects: slot
``reason * DIRECTIONS + direction`` holds {packets, bytes}, reason 0 being a forward.
`read_counters(map)` sums the CPUs' values into `{(reason, direction): Count}` (only what is
not zero), for the agent's ``cilium_forward_*`` and ``cilium_drop_*`` and for
``hexlane bpf drops``.

Inspect with ``bpftool map dump pinned <bpf_root>/hl_metrics`` (one value per CPU).
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass
from typing import Any

from hexlane.datapath.layout import u64
from hexlane.datapath.lb.maps import DROP_REASON_SLOTS, DropReason

METRICS_MAP = "hl_metrics"


class Direction(enum.IntEnum):
    """HL_DIR_*: which way a counted packet went (Cilium's metric directions)."""

    UNKNOWN = 0
    INGRESS = 1  # into a pod of this node
    EGRESS = 2  # out of a pod of this node
    SERVICE = 3  # to a Service, at the node's other hooks (LAN, tunnel, host, loopback)


DIRECTIONS = 4  # HL_DIR_MAX


class HlMetricsValue(ctypes.Structure):
    _fields_ = [("packets", u64), ("bytes", u64)]


MIRRORS: dict[str, type[ctypes.Structure]] = {"hl_metrics_value": HlMetricsValue}


@dataclass(frozen=True)
class Count:
    packets: int
    bytes: int


Counters = dict[tuple[DropReason, Direction], Count]


def slot(reason: DropReason, direction: Direction) -> int:
    """The array index of a (reason, direction) counter."""
    return int(reason) * DIRECTIONS + int(direction)


def read_counters(metrics_map: Any) -> Counters:
    """Every counter that is not zero, summed over the CPUs: {(reason, direction): Count};
    reason NONE is the forwards. `metrics_map` is ``hl_metrics`` (a `libbpf.Map`)."""
    out: Counters = {}
    for reason_value in range(DROP_REASON_SLOTS):
        try:
            reason = DropReason(reason_value)
        except ValueError:
            continue  # a slot no reason uses: never written
        for direction in Direction:
            values = metrics_map.lookup_percpu(ctypes.c_uint32(slot(reason, direction)))
            raw = [HlMetricsValue.from_buffer_copy(bytes(v)) for v in values or ()]
            packets = sum(int(v.packets) for v in raw)
            if packets:
                out[reason, direction] = Count(packets, sum(int(v.bytes) for v in raw))
    return out
