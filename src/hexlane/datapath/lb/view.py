"""Reading back what the load balancer's pinned maps hold, as plain data for listings.

`services(bpf_root)` gives every frontend with its algorithm, flags and backends by slot;
`maglev_tables(bpf_root)` gives every programmed Maglev table with the backend address in
each slot. Both open the pins under `bpf_root` read-only in spirit (nothing is written), so
they work while an agent runs or after it stopped. Used by ``hexlane bpf lb list`` and
``hexlane bpf lb maglev list``.
"""

from __future__ import annotations

import ctypes
import os
import socket
from pathlib import Path
from typing import Any

from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4_str, port_int
from hexlane.datapath.lb.encode import ALGORITHMS, PROTO_NAMES, TYPE_FLAGS
from hexlane.datapath.lb.maps import (
    AFFINITY_TIMEOUT_MASK,
    BACKENDS_MAP,
    LB_ALGORITHM_SHIFT,
    MAGLEV_MAP,
    SERVICES_MAP,
    SVC_FLAG2_FWD_MODE_DSR,
    SVC_FLAG2_INT_LOCAL,
    SVC_FLAG2_TWO_SCOPES,
    SVC_FLAG_AFFINITY,
    SVC_FLAG_EXT_LOCAL,
    SVC_FLAG_HOSTPORT,
    BackendState,
    DropReason,
    Lb4Backend,
    Lb4Key,
    Lb4Service,
)
from hexlane.datapath.metrics import METRICS_MAP, HlMetricsValue, read_counters
from hexlane.lb.services import CLUSTER_IP

_PROTOS = {**PROTO_NAMES, socket.IPPROTO_SCTP: "SCTP"}
_ALGORITHMS = {0: "random", **{number: name for name, number in ALGORITHMS.items()}}
_STATES = {state.value: state.name.lower() for state in BackendState}
_TYPES = {**TYPE_FLAGS, "HostPort": SVC_FLAG_HOSTPORT}


def _pin(bpf_root: str | os.PathLike[str], name: str) -> Path:
    path = Path(bpf_root) / name
    if not path.exists():
        raise FileNotFoundError(f"no pinned map {path}: is the datapath loaded with "
                                f"--bpf-root {bpf_root}?")
    return path


def _addr(address: int, port: int, proto: int) -> str:
    return f"{ip4_str(address)}:{port_int(port)}/{_PROTOS.get(proto, str(proto))}"


def _backends(bpf_root: str | os.PathLike[str]) -> dict[int, dict[str, Any]]:
    with libbpf.Map.from_pin(_pin(bpf_root, BACKENDS_MAP), key_type=ctypes.c_uint32,
                             value_type=Lb4Backend) as m:
        return {
            int(k.value): {
                "id": int(k.value),
                "address": _addr(v.address, v.port, v.proto),
                "state": _STATES.get(v.flags, str(v.flags)),
                "local": bool(v.node_local),
            }
            for k, v in m.iter_items()
        }


def _service_type(svc: Lb4Service) -> str:
    return next((name for name, flag in _TYPES.items() if svc.flags & flag), CLUSTER_IP)


def services(bpf_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every frontend in the services map, sorted, with its backends by slot."""
    backends = _backends(bpf_root)
    frontends: dict[tuple[int, int, int, int], dict[str, Any]] = {}
    slots: dict[tuple[int, int, int, int], dict[int, int]] = {}
    with libbpf.Map.from_pin(_pin(bpf_root, SERVICES_MAP), key_type=Lb4Key,
                             value_type=Lb4Service) as m:
        for key, value in m.iter_items():
            fe = (key.address, key.dport, key.proto, key.scope)
            if key.backend_slot == 0:
                algorithm = value.backend_id >> LB_ALGORITHM_SHIFT
                flags = []
                if value.flags & SVC_FLAG_AFFINITY:
                    flags.append("sessionAffinity")
                if value.flags & SVC_FLAG_EXT_LOCAL:
                    flags.append("Local")
                if value.flags2 & SVC_FLAG2_INT_LOCAL:
                    flags.append("InternalLocal")
                if value.flags2 & SVC_FLAG2_TWO_SCOPES:
                    flags.append("TwoScopes")
                if value.flags2 & SVC_FLAG2_FWD_MODE_DSR:
                    flags.append("dsr")
                svc_type = _service_type(value)
                frontends[fe] = {
                    "frontend": _addr(key.address, key.dport, key.proto),
                    "scope": "internal" if key.scope else "external",
                    "rev_nat_index": int(value.rev_nat_index),
                    "type": svc_type,
                    # how traffic from outside reaches a backend on another node
                    "mode": ("-" if svc_type == CLUSTER_IP else
                             "dsr" if value.flags2 & SVC_FLAG2_FWD_MODE_DSR else "snat"),
                    "algorithm": _ALGORITHMS.get(algorithm, str(algorithm)),
                    "affinity_timeout_s": int(value.backend_id & AFFINITY_TIMEOUT_MASK),
                    "flags": flags,
                    "count": int(value.count),
                }
            else:
                slots.setdefault(fe, {})[int(key.backend_slot)] = int(value.backend_id)
    rows = []
    for fe, row in sorted(frontends.items()):
        by_slot = slots.get(fe, {})
        row["backends"] = [
            {"slot": slot, "id": bid,
             **({k: v for k, v in backends[bid].items() if k != "id"}
                if bid in backends else {"address": None, "state": "missing"})}
            for slot, bid in sorted(by_slot.items()) if slot <= row["count"]
        ]
        rows.append(row)
    return rows


def maglev_tables(bpf_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every Maglev table, by service id, with the backend address of every slot."""
    backends = _backends(bpf_root)
    frontend_of = {row["rev_nat_index"]: row["frontend"] for row in services(bpf_root)}
    rows: list[dict[str, Any]] = []
    pins = sorted(Path(bpf_root).glob(f"{MAGLEV_MAP}_*"))
    if not pins:
        raise FileNotFoundError(f"no pinned map {Path(bpf_root) / MAGLEV_MAP}_<tableSize>: is "
                                f"the datapath loaded with --bpf-root {bpf_root}?")
    with libbpf.Map.from_pin(pins[-1], key_type=ctypes.c_uint16,
                             value_type=ctypes.c_uint32) as outer:
        for key, inner_id in sorted(outer.iter_items(), key=lambda kv: kv[0].value):
            with libbpf.Map.from_id(int(inner_id.value)) as inner:
                size = inner.value_size // 4
                raw = inner.lookup(ctypes.c_uint32(0))
            ids = list((ctypes.c_uint32 * size).from_buffer_copy(raw)) if raw else []
            rows.append({
                "rev_nat_index": int(key.value),
                "frontend": frontend_of.get(int(key.value)),
                "table_size": size,
                "slots": [
                    backends[i]["address"] if i in backends else None for i in ids
                ],
                "backend_ids": ids,
            })
    return rows


def drops(bpf_root: str | os.PathLike[str]) -> dict[str, int]:
    """Packets the programs dropped, by reason name (every direction)."""
    with libbpf.Map.from_pin(_pin(bpf_root, METRICS_MAP), key_type=ctypes.c_uint32,
                             value_type=HlMetricsValue) as m:
        out: dict[str, int] = {}
        for (reason, _), count in read_counters(m).items():
            if reason != DropReason.NONE:
                name = reason.name.lower()
                out[name] = out.get(name, 0) + count.packets
        return out
