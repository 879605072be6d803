"""Programming services into the LB maps for tests (the agent's reconciler will do this)."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence

from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.maps import (
    BE_NODE_LOCAL,
    LB_SELECTION_RANDOM,
    Lb4Backend,
    Lb4Key,
    Lb4ReverseNat,
    Lb4Service,
    LbAffinityMatch,
    ip4,
    port16,
    service_master_value,
)


def add_backend(lb: LbDatapath, backend_id: int, address: str, port: int, proto: int, *,
                local: bool = False) -> None:
    lb.maps.backends.update(ctypes.c_uint32(backend_id),
                            Lb4Backend(address=ip4(address), port=port16(port), proto=proto,
                                       node_local=BE_NODE_LOCAL if local else 0))


def add_service(lb: LbDatapath, vip: str, port: int, proto: int, rev_nat: int,
                backends: Sequence[tuple[int, str, int]], *,
                algorithm: int = LB_SELECTION_RANDOM, affinity_timeout_s: int = 0,
                flags: int = 0, local: bool = False) -> None:
    """Backends (id, address, port) in slots 1..n, then the service's own slot 0; `local`:
    the backends are pods of this node."""
    for backend_id, address, bport in backends:
        add_backend(lb, backend_id, address, bport, proto, local=local)
        lb.maps.affinity_match.update(LbAffinityMatch(backend_id=backend_id, rev_nat_id=rev_nat),
                                      ctypes.c_uint8(1))
    for slot, (backend_id, _, _) in enumerate(backends, start=1):
        lb.maps.services.update(
            Lb4Key(address=ip4(vip), dport=port16(port), backend_slot=slot, proto=proto),
            Lb4Service(backend_id=backend_id, rev_nat_index=rev_nat),
        )
    lb.maps.services.update(
        Lb4Key(address=ip4(vip), dport=port16(port), backend_slot=0, proto=proto),
        service_master_value(len(backends), rev_nat, algorithm, affinity_timeout_s, flags),
    )
    lb.maps.revnat.update(ctypes.c_uint16(rev_nat),
                          Lb4ReverseNat(address=ip4(vip), port=port16(port)))
