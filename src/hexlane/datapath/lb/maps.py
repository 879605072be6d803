"""ctypes mirrors of the BPF map layouts in ``bpf/hexlane_maps.h``, and their constants.

One class per C struct, same field names, same order, same sizes; tests/datapath compares
each one's size and field offsets with the compiled object's BTF, so the header stays the one
place a layout is declared. Addresses and ports are stored in network byte order, as the
datapath reads them from packets: build them with `hexlane.datapath.layout`'s `ip4` and
`port16`.
"""

from __future__ import annotations

import ctypes
import enum
import socket

from hexlane.datapath.layout import u8, u16, u32, u64

# Map names (and pin names under --bpf-root).
SERVICES_MAP = "hl_lb4_services"
BACKENDS_MAP = "hl_lb4_backends"
REVNAT_MAP = "hl_lb4_revnat"
MAGLEV_MAP = "hl_lb4_maglev"
CT_MAP = "hl_ct4"
AFFINITY_MAP = "hl_lb4_affinity"
AFFINITY_MATCH_MAP = "hl_lb_aff_match"
CONFIG_MAP = "hl_lb_config"

# lb4_service.flags / flags2 (Cilium's SVC_FLAG_*)
SVC_FLAG_EXTERNAL_IP = 1 << 0
SVC_FLAG_NODEPORT = 1 << 1
SVC_FLAG_EXT_LOCAL = 1 << 2
SVC_FLAG_HOSTPORT = 1 << 3
SVC_FLAG_AFFINITY = 1 << 4
SVC_FLAG_LOADBALANCER = 1 << 5
SVC_FLAG_ROUTABLE = 1 << 6
SVC_FLAG_SOURCE_RANGE = 1 << 7
SVC_FLAG2_INT_LOCAL = 1 << 4
SVC_FLAG2_TWO_SCOPES = 1 << 5
SVC_FLAG2_FWD_MODE_DSR = 1 << 7

LB_ALGORITHM_SHIFT = 24
AFFINITY_TIMEOUT_MASK = (1 << LB_ALGORITHM_SHIFT) - 1
LB_SELECTION_RANDOM = 1
LB_SELECTION_MAGLEV = 2

LB_LOOKUP_SCOPE_EXT = 0
LB_LOOKUP_SCOPE_INT = 1


class BackendState(enum.IntEnum):
    """lb4_backend.flags: the backend's state (BE_STATE_*)."""

    ACTIVE = 0
    TERMINATING = 1
    QUARANTINED = 2
    MAINTENANCE = 3


CT_F_SERVICE = 1
CT_F_REPLY = 2
CT_F_POLICY = 4  # a connection policy allowed, keyed {endpoint, remote, ports} (policy.h)

CT_ENTRY_F_CLOSING = 1
CT_ENTRY_F_SNAT = 2
CT_ENTRY_F_DSR = 4

BE_NODE_REMOTE = 0
BE_NODE_LOCAL = 1

DSR_IPV4_OPT_TYPE = 0x9A
DSR_IPV4_OPT_LEN = 8
SNAT_PORT_MIN = 32768
SNAT_PORT_MAX = 60999

IPPROTO_TCP = socket.IPPROTO_TCP
IPPROTO_UDP = socket.IPPROTO_UDP


class DropReason(enum.IntEnum):
    """enum hl_drop_reason: why a packet was dropped (the reason of its counter in
    hl_metrics, `hexlane.datapath.metrics`, where NONE counts forwards)."""

    NONE = 0
    TRUNCATED = 1
    INVALID_IP = 2
    INVALID_L4 = 3
    NO_BACKEND = 4
    BACKEND_MISSING = 5
    WRITE = 6
    CSUM = 7
    CT_CREATE = 8
    REPLY_NAT = 9
    SNAT_PORTS = 10
    DSR_OPT = 11
    NO_NODE_IP = 12
    POLICY = 13  # network policy denied a new connection
    UNKNOWN = 15


DROP_REASON_SLOTS = 16  # HL_DROP_MAX


class Lb4Key(ctypes.Structure):
    _fields_ = [("address", u32), ("dport", u16), ("backend_slot", u16), ("proto", u8),
                ("scope", u8), ("pad", u8 * 2)]


class Lb4Service(ctypes.Structure):
    _fields_ = [("backend_id", u32), ("count", u16), ("rev_nat_index", u16), ("flags", u8),
                ("flags2", u8), ("pad", u16)]


class Lb4Backend(ctypes.Structure):
    _fields_ = [("address", u32), ("port", u16), ("proto", u8), ("flags", u8),
                ("cluster_id", u16), ("zone", u8), ("node_local", u8)]


class Lb4ReverseNat(ctypes.Structure):
    _fields_ = [("address", u32), ("port", u16), ("pad", u16)]


class Ct4Key(ctypes.Structure):
    _fields_ = [("saddr", u32), ("daddr", u32), ("sport", u16), ("dport", u16), ("proto", u8),
                ("flags", u8), ("pad", u16)]


class Ct4Entry(ctypes.Structure):
    _fields_ = [("last_seen_ns", u64), ("packets", u64), ("bytes", u64), ("backend_id", u32),
                ("rev_nat_index", u16), ("flags", u16), ("nat_addr", u32), ("nat_port", u16),
                ("pad", u16)]


class LbNodeConfig(ctypes.Structure):
    _fields_ = [("node_ip", u32), ("pad", u32)]


class Lb4AffinityKey(ctypes.Structure):
    _fields_ = [("client_ip", u32), ("rev_nat_id", u16), ("pad", u16)]


class LbAffinityVal(ctypes.Structure):
    _fields_ = [("last_used_ns", u64), ("backend_id", u32), ("pad", u32)]


class LbAffinityMatch(ctypes.Structure):
    _fields_ = [("backend_id", u32), ("rev_nat_id", u16), ("pad", u16)]


# C struct name -> its mirror, for the layout test and for tools that list maps.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "lb4_key": Lb4Key,
    "lb4_service": Lb4Service,
    "lb4_backend": Lb4Backend,
    "lb4_reverse_nat": Lb4ReverseNat,
    "ct4_key": Ct4Key,
    "ct4_entry": Ct4Entry,
    "lb4_affinity_key": Lb4AffinityKey,
    "lb_affinity_val": LbAffinityVal,
    "lb_affinity_match": LbAffinityMatch,
    "lb_node_config": LbNodeConfig,
}


def service_master_value(count: int, rev_nat_index: int, algorithm: int,
                         affinity_timeout_s: int = 0, flags: int = 0,
                         flags2: int = 0) -> Lb4Service:
    """Slot 0 of a service: its backend count, id, algorithm and affinity timeout."""
    if not 0 <= affinity_timeout_s <= AFFINITY_TIMEOUT_MASK:
        raise ValueError(f"affinity timeout {affinity_timeout_s}s does not fit in 24 bits")
    return Lb4Service(
        backend_id=(algorithm << LB_ALGORITHM_SHIFT) | affinity_timeout_s,
        count=count, rev_nat_index=rev_nat_index, flags=flags, flags2=flags2,
    )


def maglev_pin_name(table_size: int) -> str:
    """The Maglev map's pin name: per table size, since its inner tables' size is fixed at
    creation; a datapath loaded with another maglev.tableSize gets a new map (tables are
    recomputed by the agent anyway)."""
    return f"{MAGLEV_MAP}_{table_size}"


def maglev_lut_type(table_size: int) -> type[ctypes.Array[ctypes.c_uint32]]:
    """struct lb4_maglev_lut for a table of `table_size` slots."""
    return ctypes.c_uint32 * table_size
