"""The L2 heartbeat (hexlane.l2.heartbeat), with a fake clock: the wire format as its
docstring lays it out, three agents on a simulated LAN that find a silent one dead within
dead_after, forged and replayed datagrams turned down (a replay never revives a dead node or
rolls it back), a restarted agent (new incarnation) accepted and its old one no more, a
leaving agent dropped at once. Properties: no bytes make decoding or receiving raise, none
that are not a heartbeat of the key are accepted, a flipped bit is always caught, and no
interleaving of loss, duplication and replays makes a silent node look alive after
dead_after.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.l2.heartbeat import (
    BAD_MAC,
    DEAD_AFTER,
    INTERVAL,
    MAC_SIZE,
    MALFORMED,
    OLD_INCARNATION,
    REASONS,
    REPLAY,
    SELF,
    WRONG_VERSION,
    Heartbeat,
    Membership,
    _mac,
    decode,
    encode,
)

KEY = b"k" * 32
OTHER_KEY = b"x" * 32
HB = Heartbeat("node-b", incarnation=1_765_000_000_000_000_000, seq=7, address="192.168.1.12")


def member(name: str, *, incarnation: int = 1, key: bytes = KEY) -> Membership:
    return Membership(name, key, address=f"192.168.1.{10 + ord(name[-1]) % 200}",
                      incarnation=incarnation)


class Lan:
    """Agents on one LAN with a fake clock: each step goes to the earliest deadline, lets
    every agent that is not silent send what is due and delivers it to the others that are
    not silent (unless `drop(sender, receiver)`). `wire` records every datagram sent."""

    def __init__(self, names: Iterable[str]) -> None:
        self.now = 0.0
        self.nodes = {name: member(name) for name in names}
        self.silent: set[str] = set()
        self.wire: list[tuple[str, float, bytes]] = []
        self.drop = lambda sender, receiver: False

    def step(self) -> None:
        deadlines = [d for name, m in self.nodes.items() if name not in self.silent
                     if (d := m.next_deadline(self.now)) is not None]
        self.now = max(self.now, min(deadlines))
        for name, m in self.nodes.items():
            if name in self.silent or (data := m.send(self.now)) is None:
                continue
            self.wire.append((name, self.now, data))
            for other, o in self.nodes.items():
                if other != name and other not in self.silent and not self.drop(name, other):
                    o.receive(data, self.now)

    def run(self, until: float) -> None:
        while self.now < until:
            self.step()

    def alive(self, name: str) -> frozenset[str]:
        return self.nodes[name].alive(self.now)

    def last_sent(self, name: str) -> float:
        return max(t for sender, t, _ in self.wire if sender == name)


# -- the wire format ------------------------------------------------------------------------

def test_the_layout_is_the_documented_one() -> None:
    data = encode(HB, KEY)
    assert len(data) == 43 + len("node-b")
    assert data[:4] == b"HXHB" and data[4] == 1 and data[5] == 0
    assert struct.unpack_from("!QQ", data, 6) == (HB.incarnation, 7)
    assert data[22:26] == bytes([192, 168, 1, 12])
    assert data[26] == 6 and data[27:33] == b"node-b"
    assert data[33:] == _mac(KEY, data[:33]) and len(data[33:]) == MAC_SIZE
    assert decode(data, KEY) == HB
    leaving = encode(Heartbeat("n", 1, 2, "10.0.0.1", leaving=True), KEY)
    assert leaving[5] == 1 and decode(leaving, KEY) == Heartbeat("n", 1, 2, "10.0.0.1", True)


def test_a_utf8_name_and_the_longest_one_round_trip() -> None:
    for name in ("nœud-1", "n" * 253):
        hb = Heartbeat(name, 0, 2**64 - 1, "0.0.0.0")
        assert decode(encode(hb, KEY), KEY) == hb


@pytest.mark.parametrize("hb", [
    Heartbeat("", 1, 1, "10.0.0.1"),
    Heartbeat("n" * 254, 1, 1, "10.0.0.1"),
    Heartbeat("n", -1, 1, "10.0.0.1"),
    Heartbeat("n", 1, 2**64, "10.0.0.1"),
    Heartbeat("n", 1, 1, "fd00::1"),
    Heartbeat("n", 1, 1, "node"),
])
def test_encode_refuses_what_does_not_fit(hb: Heartbeat) -> None:
    with pytest.raises(ValueError):
        encode(hb, KEY)


def test_wrong_key_truncation_extra_bytes_and_other_versions_decode_to_none() -> None:
    data = encode(HB, KEY)
    assert decode(data, OTHER_KEY) is None
    assert all(decode(data[:i], KEY) is None for i in range(len(data)))
    assert decode(data + b"\0", KEY) is None
    # A correctly signed heartbeat of another version or magic is not one of ours.
    for head in (b"HXHB\x02", b"HXHA\x01"):
        signed = head + data[5:-MAC_SIZE]
        assert decode(signed + _mac(KEY, signed), KEY) is None
    # A name length past the end, or zero, with a valid MAC for what is there.
    for n in (0, 200):
        signed = data[:26] + bytes([n]) + data[27:-MAC_SIZE]
        assert decode(signed + _mac(KEY, signed), KEY) is None


def test_every_flipped_bit_is_caught() -> None:
    data = encode(HB, KEY)
    for i in range(len(data) * 8):
        flipped = bytearray(data)
        flipped[i // 8] ^= 1 << (i % 8)
        assert decode(bytes(flipped), KEY) is None, i


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.binary(max_size=400),
                 st.binary(max_size=300).map(lambda b: b"HXHB\x01" + b),
                 st.binary(min_size=22, max_size=22).map(
                     lambda b: b"HXHB\x01" + b[:21] + bytes([len(b"node-b")]) + b"node-b"
                     + b"\0" * MAC_SIZE)))
def test_no_bytes_make_decoding_or_receiving_raise_and_none_are_accepted(data: bytes) -> None:
    assert decode(data, KEY) is None
    m = member("a")
    assert m.receive(data, 1.0) is False
    assert m.accepted == 0 and sum(m.rejected.values()) == 1
    assert m.alive(1.0) == {"a"}


# -- membership -----------------------------------------------------------------------------

def test_membership_refuses_a_bad_configuration() -> None:
    with pytest.raises(ValueError):
        Membership("a", KEY, address="10.0.0.1", incarnation=1, interval=0.5, dead_after=0.5)
    with pytest.raises(ValueError):
        Membership("a", KEY, address="10.0.0.1", incarnation=1, interval=0.0)
    with pytest.raises(ValueError):
        Membership("a", KEY, address="fd00::1", incarnation=1)
    with pytest.raises(ValueError):
        Membership("a", b"", address="10.0.0.1", incarnation=1)
    with pytest.raises(ValueError):
        Membership("a" * 254, KEY, address="10.0.0.1", incarnation=1)


def test_heartbeats_are_due_every_interval_with_increasing_seq() -> None:
    m = member("a")
    assert m.next_deadline(5.0) == 5.0  # the first is due at once
    first = m.send(5.0)
    assert first is not None and decode(first, KEY) == Heartbeat("a", 1, 1, m.address)
    assert m.send(5.05) is None
    assert m.next_deadline(5.05) == pytest.approx(5.1)
    second = m.send(5.12)  # a little late: the next stays on the 0.1 s grid
    assert second is not None and decode(second, KEY) == Heartbeat("a", 1, 2, m.address)
    assert m.next_deadline(5.12) == pytest.approx(5.2)
    assert m.send(6.0) is not None  # very late: one heartbeat, no burst
    assert m.send(6.0) is None and m.next_deadline(6.0) == pytest.approx(6.1)
    assert m.sent == 3


def test_three_agents_see_each_other_and_find_a_silent_one_dead_within_dead_after() -> None:
    lan = Lan("abc")
    lan.run(1.0)
    assert all(lan.alive(n) == {"a", "b", "c"} for n in "abc")
    lan.silent.add("c")
    silenced = lan.now
    gone: dict[str, float] = {}
    while len(gone) < 2:
        lan.step()
        for n in "ab":
            if "c" not in lan.alive(n):
                gone.setdefault(n, lan.now)
            else:
                assert n not in gone  # once dead, stays dead
    for n in "ab":
        # Dead exactly dead_after after c's last heartbeat, at a deadline a or b wakes for.
        assert gone[n] == pytest.approx(lan.last_sent("c") + DEAD_AFTER)
        assert DEAD_AFTER - INTERVAL <= gone[n] - silenced <= DEAD_AFTER + INTERVAL
        assert lan.alive(n) == {"a", "b"}
    lan.run(lan.now + 2.0)
    assert lan.alive("a") == lan.alive("b") == {"a", "b"}


def test_lost_heartbeats_short_of_dead_after_do_not_kill() -> None:
    lan = Lan("ab")
    lan.run(1.0)
    lan.drop = lambda sender, receiver: sender == "b"
    lan.run(1.35)  # three of b's heartbeats lost
    assert lan.alive("a") == {"a", "b"}
    lan.drop = lambda sender, receiver: False
    lan.run(2.0)
    assert lan.alive("a") == {"a", "b"}
    assert lan.nodes["a"].rejected == dict.fromkeys(REASONS, 0)


def test_a_forged_heartbeat_is_turned_down_and_revives_nobody() -> None:
    lan = Lan("ab")
    lan.run(1.0)
    forged = encode(Heartbeat("c", 2**63, 1, "192.168.1.99"), OTHER_KEY)
    assert lan.nodes["a"].receive(forged, lan.now) is False
    assert lan.nodes["a"].rejected[BAD_MAC] == 1
    assert lan.alive("a") == {"a", "b"} and "c" not in lan.nodes["a"].peers


def test_a_captured_heartbeat_replayed_is_turned_down_and_revives_nobody() -> None:
    lan = Lan("abc")
    lan.run(1.0)
    captured = [data for sender, _, data in lan.wire if sender == "c"]
    lan.silent.add("c")
    lan.run(lan.now + 1.0)
    a = lan.nodes["a"]
    assert "c" not in a.alive(lan.now)
    before = a.peers["c"]
    for data in captured:
        assert a.receive(data, lan.now) is False
    assert a.rejected[REPLAY] == len(captured)
    assert "c" not in a.alive(lan.now) and a.peers["c"] == before
    # A copy of a live node's last heartbeat is a replay too: it does not extend its life.
    b_last = next(data for sender, _, data in reversed(lan.wire) if sender == "b")
    heard = a.peers["b"].heard
    assert a.receive(b_last, lan.now + 0.01) is False and a.peers["b"].heard == heard


def test_a_restarted_agent_is_accepted_and_its_old_incarnation_no_more() -> None:
    lan = Lan("ab")
    lan.run(1.0)
    old = [data for sender, _, data in lan.wire if sender == "b"]
    lan.silent.add("b")
    lan.run(2.0)
    assert lan.alive("a") == {"a"}
    # b restarts: a larger incarnation, its sequence numbers from 1 again.
    lan.nodes["b"] = Membership("b", KEY, address="192.168.1.20", incarnation=2)
    lan.silent.discard("b")
    lan.run(2.3)
    a = lan.nodes["a"]
    assert lan.alive("a") == {"a", "b"}
    assert (a.peers["b"].incarnation, a.peers["b"].address) == (2, "192.168.1.20")
    # The old incarnation's heartbeats, even those with seq above the new ones', roll
    # nothing back.
    peer = a.peers["b"]
    assert not any(a.receive(data, lan.now) for data in old)
    assert a.rejected[OLD_INCARNATION] == len(old) and a.peers["b"] == peer


def test_a_leaving_agent_is_dropped_at_once_and_its_leave_not_undone_by_replays() -> None:
    lan = Lan("ab")
    lan.run(1.0)
    b = lan.nodes["b"]
    earlier = [data for sender, _, data in lan.wire if sender == "b"]
    bye = b.leave(lan.now)
    assert b.send(lan.now + 1) is None and b.next_deadline(lan.now) is not None
    a = lan.nodes["a"]
    assert a.receive(bye, lan.now) is True
    assert a.alive(lan.now) == {"a"} and a.peers["b"].leaving
    assert not any(a.receive(data, lan.now) for data in [*earlier, bye])
    assert a.alive(lan.now) == {"a"}
    # After leaving with nobody alive, nothing more to wake for.
    assert b.alive(lan.now + 1) == {"b"} and b.next_deadline(lan.now + 1) is None


def test_own_name_and_other_versions_are_counted_apart() -> None:
    a = member("a")
    own = a.send(0.0)
    assert own is not None and a.receive(own, 0.0) is False
    signed = b"HXHB\x02" + own[5:-MAC_SIZE]
    assert a.receive(signed + _mac(KEY, signed), 0.0) is False
    assert a.receive(b"hello", 0.0) is False
    assert {r: n for r, n in a.rejected.items() if n} == \
        {SELF: 1, WRONG_VERSION: 1, MALFORMED: 1}


def test_next_deadline_is_the_next_send_or_expiry() -> None:
    a, b = member("a"), member("b")
    data = b.send(0.0)
    assert data is not None
    a.send(0.0)
    a.receive(data, 0.03)
    assert a.next_deadline(0.03) == pytest.approx(0.1)
    a.send(0.1)
    a.send(0.2)
    a.send(0.3)
    a.send(0.4)
    assert a.next_deadline(0.45) == pytest.approx(0.5)  # send at 0.5, b expires at 0.53
    a.send(0.5)
    assert a.next_deadline(0.5) == pytest.approx(0.53)
    assert a.alive(0.529) == {"a", "b"} and a.alive(0.53) == {"a"}


# -- properties -----------------------------------------------------------------------------

@settings(max_examples=150, deadline=None)
@given(st.lists(st.floats(0.0, 0.25), min_size=1, max_size=120), st.floats(0.0, 3.0),
       st.randoms(use_true_random=False))
def test_no_loss_duplication_or_replay_makes_a_silent_node_alive_after_dead_after(
        steps: list[float], silent_at: float, rnd: random.Random) -> None:
    """Agents a, b, c; c falls silent at `silent_at`. Each datagram reaches each receiver
    or is lost (at random), sometimes twice, and at any step an attacker replays to a
    receiver any datagram that receiver got before (see the module docstring for the one
    it did not). After c's last heartbeat + dead_after, nobody sees c alive."""
    nodes = {n: member(n) for n in "abc"}
    got: dict[str, list[bytes]] = {n: [] for n in "ab"}
    last_c: float | None = None
    now = 0.0
    for dt in steps:
        now += dt
        for name, m in nodes.items():
            if name == "c" and now >= silent_at:
                continue
            if (data := m.send(now)) is None:
                continue
            if name == "c":
                last_c = now
            for other in "ab":
                if other == name:
                    continue
                for _ in range(rnd.choice((0, 1, 1, 1, 2))):
                    nodes[other].receive(data, now)
                    got[other].append(data)
        for other in "ab":
            if got[other] and rnd.random() < 0.3:
                nodes[other].receive(rnd.choice(got[other]), now)
            if last_c is None or now >= last_c + DEAD_AFTER:
                assert "c" not in nodes[other].alive(now)
