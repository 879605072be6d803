"""The load balancer's desired state as map entries, and reading ids back from the maps.

`encode(desired)` turns `hexlane.lb.services.DesiredState` into the exact key/value pairs of
every LB map (services with slots 1..n listed before their slot 0, so a reconciler writing
them in order never lets a service point at a slot not yet written), the Maglev tables by
service id, and the reverse NAT entries. `recover_ids(maps)` rebuilds the id allocations from
what is pinned, so a restarted agent keeps every id (and conntrack stays valid).
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from hexlane.datapath.layout import ip4, ip4_str, port16, port_int
from hexlane.datapath.lb.maps import (
    BE_NODE_LOCAL,
    BE_NODE_REMOTE,
    IPPROTO_TCP,
    IPPROTO_UDP,
    LB_SELECTION_MAGLEV,
    LB_SELECTION_RANDOM,
    SVC_FLAG2_FWD_MODE_DSR,
    SVC_FLAG2_INT_LOCAL,
    SVC_FLAG2_TWO_SCOPES,
    SVC_FLAG_AFFINITY,
    SVC_FLAG_EXT_LOCAL,
    SVC_FLAG_EXTERNAL_IP,
    SVC_FLAG_LOADBALANCER,
    SVC_FLAG_NODEPORT,
    BackendState,
    Lb4Backend,
    Lb4Key,
    Lb4ReverseNat,
    Lb4Service,
    LbAffinityMatch,
    service_master_value,
)
from hexlane.lb.services import (
    CLUSTER_IP,
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    STATE_ACTIVE,
    STATE_QUARANTINED,
    STATE_TERMINATING,
    Backend,
    BackendKey,
    DesiredState,
    FrontendKey,
    IdAllocations,
    ServiceEntry,
)

# The words of the encoding, which `view` reads back with.
PROTO_NUMBERS = {"TCP": IPPROTO_TCP, "UDP": IPPROTO_UDP}
PROTO_NAMES = {v: k for k, v in PROTO_NUMBERS.items()}
TYPE_FLAGS = {LOAD_BALANCER: SVC_FLAG_LOADBALANCER, NODE_PORT: SVC_FLAG_NODEPORT,
              EXTERNAL_IP: SVC_FLAG_EXTERNAL_IP}  # a ClusterIP frontend has none
ALGORITHMS = {"random": LB_SELECTION_RANDOM, "maglev": LB_SELECTION_MAGLEV}
_BACKEND_STATES = {STATE_ACTIVE: BackendState.ACTIVE, STATE_TERMINATING: BackendState.TERMINATING,
                   STATE_QUARANTINED: BackendState.QUARANTINED}


@dataclass(frozen=True)
class MapContents:
    """Every LB map's desired entries (ctypes keys and values; order matters in `services`)."""

    services: list[tuple[Lb4Key, Lb4Service]]
    backends: list[tuple[ctypes.c_uint32, Lb4Backend]]
    revnat: list[tuple[ctypes.c_uint16, Lb4ReverseNat]]
    affinity_match: list[tuple[LbAffinityMatch, ctypes.c_uint8]]
    maglev: dict[int, tuple[int, ...]]


def service_flags(entry: ServiceEntry) -> tuple[int, int]:
    flags = TYPE_FLAGS.get(entry.type, 0)
    if entry.affinity_timeout_s:
        flags |= SVC_FLAG_AFFINITY
    if entry.ext_local and entry.type != CLUSTER_IP:
        flags |= SVC_FLAG_EXT_LOCAL
    flags2 = 0
    if entry.int_local:
        flags2 |= SVC_FLAG2_INT_LOCAL
    if entry.two_scopes:
        flags2 |= SVC_FLAG2_TWO_SCOPES
    if entry.dsr:
        flags2 |= SVC_FLAG2_FWD_MODE_DSR
    return flags, flags2


def lb4_key(fe: FrontendKey, slot: int = 0) -> Lb4Key:
    return Lb4Key(address=ip4(fe.address), dport=port16(fe.port), backend_slot=slot,
                  proto=PROTO_NUMBERS[fe.protocol], scope=fe.scope)


@lru_cache(maxsize=131072)
def _encode_entry(entry: ServiceEntry) -> tuple[tuple[tuple[Lb4Key, Lb4Service], ...],
                                               tuple[ctypes.c_uint16, Lb4ReverseNat],
                                               tuple[tuple[LbAffinityMatch, ctypes.c_uint8], ...]]:
    """One frontend scope's entries; cached, since most entries are the same from one
    recomputation to the next (the structures are only read, never changed)."""
    services = [(lb4_key(entry.frontend, slot), Lb4Service(backend_id=bid,
                                                            rev_nat_index=entry.id))
                for slot, bid in enumerate(entry.backend_ids, start=1)]
    flags, flags2 = service_flags(entry)
    algorithm = ALGORITHMS.get(entry.algorithm, LB_SELECTION_RANDOM)
    services.append((lb4_key(entry.frontend, 0),
                     service_master_value(len(entry.backend_ids), entry.id, algorithm,
                                          entry.affinity_timeout_s, flags, flags2)))
    revnat = (ctypes.c_uint16(entry.id),
              Lb4ReverseNat(address=ip4(entry.frontend.address),
                            port=port16(entry.frontend.port)))
    matches = tuple((LbAffinityMatch(backend_id=bid, rev_nat_id=entry.id), ctypes.c_uint8(1))
                    for bid in entry.backend_ids) if entry.affinity_timeout_s else ()
    return tuple(services), revnat, matches


def encode(desired: DesiredState) -> MapContents:
    services: list[tuple[Lb4Key, Lb4Service]] = []
    revnat: list[tuple[ctypes.c_uint16, Lb4ReverseNat]] = []
    matches: list[tuple[LbAffinityMatch, ctypes.c_uint8]] = []
    maglev: dict[int, tuple[int, ...]] = {}
    for entry in desired.services:
        entry_services, entry_revnat, entry_matches = _encode_entry(entry)
        services.extend(entry_services)
        revnat.append(entry_revnat)
        matches.extend(entry_matches)
        if entry.maglev:
            maglev[entry.id] = entry.maglev
    backends = [
        (ctypes.c_uint32.from_buffer_copy(k), Lb4Backend.from_buffer_copy(v))
        for k, v in (raw_backend(b) for b in sorted(desired.backends.values(),
                                                    key=lambda b: b.id))
    ]
    return MapContents(services, backends, revnat, matches, maglev)


def recover_ids(services_map: Any, backends_map: Any) -> IdAllocations:
    """The ids the pinned maps use: frontend scope -> service id, backend -> backend id."""
    services: dict[FrontendKey, int] = {}
    backends: dict[BackendKey, int] = {}
    for key, value in services_map.iter_items():
        if key.backend_slot != 0 or key.proto not in PROTO_NAMES:
            continue
        fe = FrontendKey(ip4_str(key.address), port_int(key.dport), PROTO_NAMES[key.proto],
                         int(key.scope))
        services[fe] = int(value.rev_nat_index)
    for key, value in backends_map.iter_items():
        if value.proto not in PROTO_NAMES:
            continue
        bk = BackendKey(ip4_str(value.address), port_int(value.port), PROTO_NAMES[value.proto])
        backends[bk] = int(key.value)
    return IdAllocations.recovered(services, backends)


@dataclass(frozen=True)
class RawEntry:
    """One frontend scope's map entries as raw bytes (what the reconciler's tables hold)."""

    services: tuple[tuple[bytes, bytes], ...]  # slots 1..n, then slot 0
    revnat: tuple[bytes, bytes]
    affinity_match: tuple[tuple[bytes, bytes], ...]


@lru_cache(maxsize=131072)
def raw_entry(entry: ServiceEntry) -> RawEntry:
    services, revnat, matches = _encode_entry(entry)
    return RawEntry(tuple((bytes(k), bytes(v)) for k, v in services),
                    (bytes(revnat[0]), bytes(revnat[1])),
                    tuple((bytes(k), bytes(v)) for k, v in matches))


def raw_backend(b: Backend) -> tuple[bytes, bytes]:
    value = Lb4Backend(address=ip4(b.address), port=port16(b.port),
                       proto=PROTO_NUMBERS[b.protocol],
                       flags=_BACKEND_STATES[b.state],
                       node_local=BE_NODE_LOCAL if b.local else BE_NODE_REMOTE)
    return bytes(ctypes.c_uint32(b.id)), bytes(value)


def service_id_key(service_id: int) -> bytes:
    """The key of the reverse NAT and Maglev maps (a u16 service id)."""
    return bytes(ctypes.c_uint16(service_id))


_SLOT = slice(Lb4Key.backend_slot.offset, Lb4Key.backend_slot.offset + 2)


def slot0_last(raw_key: bytes) -> bool:
    """Sort key of service map writes: a service's slot 0 (its count) after its slots."""
    return raw_key[_SLOT] == b"\0\0"
