"""Programming services into the LB maps for tests of the BPF program, with raw flags; keys and
backend values are laid out by the agent's own encoder (`hexlane.datapath.lb.encode`)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from hexlane.datapath.lb.encode import PROTO_NAMES, lb4_key, raw_backend
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.maps import (
    LB_SELECTION_RANDOM,
    Lb4Backend,
    Lb4ReverseNat,
    Lb4Service,
    LbAffinityMatch,
    ip4,
    port16,
    service_master_value,
)
from hexlane.lb.services import SCOPE_EXT, STATE_ACTIVE, Backend, FrontendKey


def add_backend(lb: LbDatapath, backend_id: int, address: str, port: int, proto: int, *,
                local: bool = False) -> None:
    key, value = raw_backend(Backend(backend_id, address, port, PROTO_NAMES[proto],
                                     STATE_ACTIVE, "", local))
    lb.maps.backends.update(ctypes.c_uint32.from_buffer_copy(key),
                            Lb4Backend.from_buffer_copy(value))


def add_service(lb: LbDatapath, vip: str, port: int, proto: int, rev_nat: int,
                backends: Sequence[tuple[int, str, int]], *,
                algorithm: int = LB_SELECTION_RANDOM, affinity_timeout_s: int = 0,
                flags: int = 0, flags2: int = 0, scope: int = SCOPE_EXT,
                local: bool = False) -> None:
    """Backends (id, address, port) in slots 1..n, then the service's own slot 0 (in `scope`,
    with the raw `flags` and `flags2`); `local`: the backends are pods of this node. With an
    affinity timeout the backends are also marked as the service's, as the agent does."""
    frontend = FrontendKey(vip, port, PROTO_NAMES[proto], scope)
    for backend_id, address, bport in backends:
        add_backend(lb, backend_id, address, bport, proto, local=local)
        if affinity_timeout_s:
            lb.maps.affinity_match.update(
                LbAffinityMatch(backend_id=backend_id, rev_nat_id=rev_nat), ctypes.c_uint8(1))
    for slot, (backend_id, _, _) in enumerate(backends, start=1):
        lb.maps.services.update(lb4_key(frontend, slot),
                                Lb4Service(backend_id=backend_id, rev_nat_index=rev_nat))
    lb.maps.services.update(lb4_key(frontend, 0), service_master_value(
        len(backends), rev_nat, algorithm, affinity_timeout_s, flags, flags2))
    lb.maps.revnat.update(ctypes.c_uint16(rev_nat),
                          Lb4ReverseNat(address=ip4(vip), port=port16(port)))
