"""Conntrack expiry: flows leave the map after Cilium's idle timeouts, both entries together.

Pins down the pure rule (TCP 6 h, 10 s once closing, 60 s otherwise) and, on the loaded
program, that FINs mark a flow closing (each direction its own entry), that gc_conntrack
removes idle UDP and closed TCP flows while keeping live ones, and that a flow idle one way
but alive the other way stays.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from bpf_lbsetup import Services

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4, port16
from hexlane.datapath.lb.conntrack import (
    CT_ENTRY_F_CLOSING,
    NS,
    CtTimeouts,
    expired,
    gc_conntrack,
)
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, LbDatapath
from hexlane.datapath.lb.maps import CT_F_REPLY, CT_F_SERVICE, Ct4Entry, Ct4Key


def test_expiry_rule() -> None:
    t = CtTimeouts()
    live = Ct4Entry(last_seen_ns=0)
    closing = Ct4Entry(last_seen_ns=0, flags=CT_ENTRY_F_CLOSING)
    assert not expired(live, 6, 21600 * NS, t) and expired(live, 6, 21600 * NS + 1, t)
    assert not expired(closing, 6, 10 * NS, t) and expired(closing, 6, 10 * NS + 1, t)
    # a closed flow's reply entry holds its tuple through the backend's TIME_WAIT
    assert not expired(closing, 6, 60 * NS, t, reply=True)
    assert expired(closing, 6, 60 * NS + 1, t, reply=True)
    assert not expired(live, 17, 60 * NS, t) and expired(live, 17, 60 * NS + 1, t)


def _key(client_port: int, daddr: str, dport: int, proto: int, flags: int) -> Ct4Key:
    return Ct4Key(saddr=ip4("10.0.2.2"), daddr=ip4(daddr), sport=port16(client_port),
                  dport=port16(dport), proto=proto, flags=flags)


@pytest.mark.root
def test_gc_on_the_loaded_program(lb: LbDatapath, services: Services,
                                  run: Callable[[str, bytes], libbpf.TestRunResult]) -> None:
    services.add("10.96.3.1", 80, packets.TCP, 31, [(310, "10.244.31.1", 8080)])
    services.add("10.96.3.1", 53, packets.UDP, 32, [(320, "10.244.32.1", 5353)])

    def from_pod(frame: bytes) -> None:  # the client pod's packets, the backend pod's replies
        run(PROGRAM_FROM_POD, frame)

    from_pod(packets.build("10.0.2.2", "10.96.3.1", 1111, 80))  # live TCP
    from_pod(packets.build("10.0.2.2", "10.96.3.1", 2222, 80))  # closed TCP
    from_pod(packets.build("10.0.2.2", "10.96.3.1", 2222, 80, tcp_flags=0x11))
    from_pod(packets.build("10.244.31.1", "10.0.2.2", 8080, 2222, tcp_flags=0x11))
    from_pod(packets.build("10.0.2.2", "10.96.3.1", 3333, 53, packets.UDP))
    from_pod(packets.build("10.0.2.2", "10.96.3.1", 4444, 53, packets.UDP))
    time.sleep(0.01)
    # The 4444 flow's replies keep flowing later than its requests.
    from_pod(packets.build("10.244.32.1", "10.0.2.2", 5353, 4444, packets.UDP))
    closing = lb.maps.ct.lookup(_key(2222, "10.96.3.1", 80, packets.TCP, CT_F_SERVICE))
    assert closing.flags & CT_ENTRY_F_CLOSING
    # A new connection reusing a closed tuple is live again.
    key = _key(5555, "10.96.3.1", 80, packets.TCP, CT_F_SERVICE)
    for flags in (0x02, 0x04):  # SYN, then RST
        from_pod(packets.build("10.0.2.2", "10.96.3.1", 5555, 80, tcp_flags=flags))
    assert lb.maps.ct.lookup(key).flags & CT_ENTRY_F_CLOSING
    from_pod(packets.build("10.0.2.2", "10.96.3.1", 5555, 80, tcp_flags=0x02))
    assert not lb.maps.ct.lookup(key).flags & CT_ENTRY_F_CLOSING

    reply_seen = lb.maps.ct.lookup(_key(4444, "10.244.32.1", 5353, packets.UDP, CT_F_REPLY))
    # 60 s after the 4444 requests but not after its reply; 11 s after the FIN.
    now = reply_seen.last_seen_ns + 60 * NS - 1_000_000
    timeouts = CtTimeouts(other_s=60, tcp_closing_s=10)
    deleted = gc_conntrack(lb.maps.ct, lb.maps.backends, lb.maps.revnat, now, timeouts)
    remaining = {(k.sport, k.flags) for k in lb.maps.ct.iter_keys() if k.saddr == ip4("10.0.2.2")}
    assert (port16(1111), CT_F_SERVICE) in remaining and (port16(1111), CT_F_REPLY) in remaining
    assert (port16(5555), CT_F_SERVICE) in remaining
    assert (port16(4444), CT_F_SERVICE) in remaining and (port16(4444), CT_F_REPLY) in remaining
    assert not any(sport in (port16(2222), port16(3333)) for sport, _ in remaining)
    assert deleted == 4
