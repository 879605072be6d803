"""The policy tables in the kernel: ipcache, enforced endpoints, policy entries (bpf/policy.h).

The maps belong to the load balancer's object (its pod hooks enforce policy) and are pinned
beside its other maps. `PolicyDatapath(obj)` holds one reconciler per map
(`hexlane.datapath.reconcile`); `set(tables)` hands it what `hexlane.policy.node` decided, and
`flush()` writes only what changed, as a group: ipcache and policy entries before the endpoints
that turn enforcement on, and an endpoint's enforcement off before its entries go.

The byte layouts (checked against the object's BTF in tests/datapath/test_policy_program.py):

    hl_ipcache    key {u32 prefixlen, be32 addr}, value {u32 identity, u32 pad}
    hl_endpoints  key be32 addr, value {u32 identity, u8 flags, 3 pad}
    hl_policy     key {u32 prefixlen, be32 ep, u32 identity, u8 dir, u8 proto, be16 port},
                  value {u8 flags, u8 match type, 2 pad, u32 cookie}

A policy entry's prefix length is 32 (the endpoint) plus the entry's own
(`PolicyEntry.prefix_len`: identity, direction, and the protocol and port bits it covers).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping
from typing import Any

from hexlane.datapath.reconcile import FlushResult, MapTable, Reconciler, flush_group
from hexlane.policy.maps import INGRESS, IPv4Network, PolicyEntry, match_type

IPCACHE_MAP = "hl_ipcache"
ENDPOINTS_MAP = "hl_endpoints"
POLICY_MAP = "hl_policy"
POLICY_MAPS = (IPCACHE_MAP, ENDPOINTS_MAP, POLICY_MAP)

DIRECTION_CODES = {INGRESS: 0, "egress": 1}  # Cilium's trafficDirection
ENDPOINT_PREFIX = 32

_IPCACHE_KEY = struct.Struct("<I4s")
_U32_PAIR = struct.Struct("<II")
_ENDPOINT_VALUE = struct.Struct("<IB3x")
_POLICY_KEY = struct.Struct("<I4sIBB2s")
_POLICY_VALUE = struct.Struct("<BBxxI")
POLICY_F_DENY = 1  # HL_POLICY_F_DENY


def _packed(ip: str) -> bytes:
    return ipaddress.IPv4Address(ip).packed


def ipcache_key(prefix: IPv4Network) -> bytes:
    return _IPCACHE_KEY.pack(prefix.prefixlen, prefix.network_address.packed)


def ipcache_value(identity: int) -> bytes:
    return _U32_PAIR.pack(identity, 0)


def endpoint_value(identity: int, flags: int) -> bytes:
    return _ENDPOINT_VALUE.pack(identity, flags)


def policy_key(ep_ip: str, entry: PolicyEntry) -> bytes:
    return _POLICY_KEY.pack(ENDPOINT_PREFIX + entry.prefix_len, _packed(ep_ip), entry.identity,
                            DIRECTION_CODES[entry.direction], entry.protocol,
                            entry.port.to_bytes(2, "big"))


def policy_value(entry: PolicyEntry, cookie: int = 0) -> bytes:
    """Allow or deny, the match type a hit reports, the number of the entry's policies."""
    return _POLICY_VALUE.pack(POLICY_F_DENY if entry.deny else 0, match_type(entry), cookie)


def decode_policy_value(raw: bytes) -> tuple[int, int, int]:
    """(flags, match type, cookie)."""
    flags, match, cookie = _POLICY_VALUE.unpack(raw)
    return flags, match, cookie


def decode_policy_key(raw: bytes) -> tuple[int, str, int, int, int, int]:
    """(prefixlen, endpoint address, identity, direction code, protocol, port)."""
    plen, ep, ident, direction, proto, port = _POLICY_KEY.unpack(raw)
    return (plen, str(ipaddress.IPv4Address(ep)), ident, direction, proto,
            int.from_bytes(port, "big"))


def decode_ipcache(raw_key: bytes, raw_value: bytes) -> tuple[IPv4Network, int]:
    plen, addr = _IPCACHE_KEY.unpack(raw_key)
    return IPv4Network((addr, plen)), _U32_PAIR.unpack(raw_value)[0]


class PolicyDatapath:
    """The three policy maps of a loaded object, each behind a reconciler (module doc)."""

    def __init__(self, obj: Any) -> None:
        self.ipcache = obj.map(IPCACHE_MAP)
        self.endpoints = obj.map(ENDPOINTS_MAP)
        self.policy = obj.map(POLICY_MAP)
        self.ipcache_rec: Reconciler[bytes, bytes] = Reconciler(MapTable(self.ipcache))
        self.endpoints_rec: Reconciler[bytes, bytes] = Reconciler(MapTable(self.endpoints))
        self.policy_rec: Reconciler[bytes, bytes] = Reconciler(MapTable(self.policy))

    @property
    def reconcilers(self) -> list[Reconciler[bytes, bytes]]:
        """In write order: what an endpoint's enforcement needs comes first."""
        return [self.ipcache_rec, self.policy_rec, self.endpoints_rec]

    def set(self, ipcache: Mapping[IPv4Network, int],
            endpoints: Mapping[str, tuple[int, int]],
            entries: Iterable[tuple[str, PolicyEntry]],
            cookies: Mapping[tuple[str, PolicyEntry], int] | None = None) -> None:
        cookies = cookies or {}
        self.ipcache_rec.set_all({ipcache_key(p): ipcache_value(i) for p, i in ipcache.items()})
        self.endpoints_rec.set_all({_packed(ip): endpoint_value(ident, flags)
                                    for ip, (ident, flags) in endpoints.items()})
        self.policy_rec.set_all({policy_key(ip, e): policy_value(e, cookies.get((ip, e), 0))
                                 for ip, e in entries})

    def flush(self) -> FlushResult:
        return flush_group(self.reconcilers)

    def resync(self) -> FlushResult:
        for rec in self.reconcilers:
            rec.detect()
        return self.flush()
