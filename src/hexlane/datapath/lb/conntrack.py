"""Expiring the load balancer's conntrack entries (the datapath only ever refreshes them).

Each flow has two entries (see bpf/conntrack.h): the service entry (client -> frontend) and the
reply entry (client -> backend), refreshed by packets of their own direction. A flow expires
when both have been idle longer than its timeout, so a flow whose traffic runs one way only
keeps its way back. Timeouts are Cilium's defaults: TCP 6 h (``bpf-ct-timeout-regular-tcp``),
10 s once a FIN or RST was seen (``...-tcp-fin``), 60 s for anything else (``...-any``). A
closed TCP flow's reply entry stays 60 s, as long as the backend may hold the connection in
TIME_WAIT (Linux's TCP_TIMEWAIT_LEN), and so its flow: while it is there, the datapath gives
a new flow that would reach the backend with the same addresses and ports another source
port (as netfilter's NAT does on a clash), instead of a SYN the backend's TIME_WAIT socket
drops by PAWS when the new flow's timestamps come from another clock.

`expired` is the pure rule; `gc_conntrack` applies it to the pinned maps. Times are
CLOCK_MONOTONIC nanoseconds, the clock of ``bpf_ktime_get_ns`` (``time.monotonic_ns()``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hexlane.datapath.lb.maps import (
    CT_ENTRY_F_CLOSING,
    CT_ENTRY_F_DSR,
    CT_ENTRY_F_SNAT,
    CT_F_REPLY,
    CT_F_SERVICE,
    IPPROTO_TCP,
    Ct4Entry,
    Ct4Key,
)

NS = 1_000_000_000


@dataclass(frozen=True)
class CtTimeouts:
    tcp_s: int = 21600
    tcp_closing_s: int = 10
    tcp_time_wait_s: int = 60
    other_s: int = 60


def expired(entry: Ct4Entry, proto: int, now_ns: int,
            timeouts: CtTimeouts = CtTimeouts(), *, reply: bool = False) -> bool:
    """Whether one entry has been idle longer than its protocol's (and state's) timeout;
    `reply`: it is a reply entry (a closed flow's holds its tuple through TIME_WAIT)."""
    if proto == IPPROTO_TCP:
        if entry.flags & CT_ENTRY_F_CLOSING:
            limit = timeouts.tcp_time_wait_s if reply else timeouts.tcp_closing_s
        else:
            limit = timeouts.tcp_s
    else:
        limit = timeouts.other_s
    return now_ns - entry.last_seen_ns > limit * NS


def partner_key(key: Ct4Key, entry: Ct4Entry, backends: dict[int, Any],
                revnat: dict[int, Any]) -> Ct4Key | None:
    """The other entry of the same flow, when the maps still say where it is.

    A service entry's partner is its reply entry (to the backend), a reply entry's its
    service entry (to the frontend: the reverse NAT). Both are keyed by the client's address
    and port, or for SNAT flows by the NAT address and port their entries hold (the node's
    in the service entry, the client's in the reply entry). DSR reply entries on a backend's
    node have no partner (the service entry lives on the node that received the flow).
    """
    if key.flags == CT_F_SERVICE:
        dest, flags = backends.get(entry.backend_id), CT_F_REPLY
    elif key.flags == CT_F_REPLY and not entry.flags & CT_ENTRY_F_DSR:
        dest, flags = revnat.get(entry.rev_nat_index), CT_F_SERVICE
    else:
        return None
    if dest is None:
        return None
    snat = entry.flags & CT_ENTRY_F_SNAT
    return Ct4Key(saddr=entry.nat_addr if snat else key.saddr, daddr=dest.address,
                  sport=entry.nat_port if snat else key.sport, dport=dest.port,
                  proto=key.proto, flags=flags)


def gc_conntrack(ct: Any, backends_map: Any, revnat_map: Any, now_ns: int,
                 timeouts: CtTimeouts = CtTimeouts()) -> int:
    """Delete every flow whose entries are all expired; returns how many entries went.

    `ct`, `backends_map` and `revnat_map` are the typed maps of `LbDatapath.maps`.
    """
    entries: dict[bytes, tuple[Ct4Key, Ct4Entry]] = {
        bytes(k): (k, v) for k, v in ct.iter_items()
    }
    backends = {int(k.value): v for k, v in backends_map.iter_items()}
    revnat = {int(k.value): v for k, v in revnat_map.iter_items()}
    deleted = 0
    for raw, (key, entry) in entries.items():
        if not expired(entry, key.proto, now_ns, timeouts, reply=key.flags == CT_F_REPLY):
            continue
        partner = partner_key(key, entry, backends, revnat)
        other = entries.get(bytes(partner)) if partner is not None else None
        if other is not None and not expired(other[1], key.proto, now_ns, timeouts,
                                             reply=other[0].flags == CT_F_REPLY):
            continue
        if ct.delete(raw):
            deleted += 1
    return deleted
