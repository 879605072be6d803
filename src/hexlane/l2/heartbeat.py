"""Which L2 announcers are alive: an authenticated heartbeat over the LAN (sans-IO).

hexlane's own L2 election (`l2announcements.election: hexlane`) needs every agent of an
eligible node to learn within a second which of them are alive, without the API server. Each
agent broadcasts a heartbeat every `interval` (0.1 s) as one UDP datagram on its LAN device;
a node is dead when nothing valid was heard from it for `dead_after` (0.5 s, so a node
survives three lost datagrams in a row, and a fourth when the next is on time). `Membership`
is the state machine of one agent: it makes the heartbeats it should send, judges the ones it
receives and says who is alive, all as functions of the clock it is given (`now`, monotonic
seconds). The edge owns the socket, the
timer (it wakes at `next_deadline`), the key (from a Secret) and the choice of incarnation.

Wire format, version 1, big-endian, 43 bytes plus the node name:

    offset  size  field
         0     4  magic b"HXHB"
         4     1  version, 1
         5     1  flags: bit 0 LEAVING (the sender is shutting down: drop it now rather than
                  after dead_after); other bits are sent as 0 and ignored on receipt
         6     8  incarnation, unsigned (see below)
        14     8  sequence number, unsigned, from 1, strictly increasing within an incarnation
        22     4  the sender's IPv4 node address
        26     1  length n of the node name, 1..253
        27     n  the node name, UTF-8
      27+n    16  HMAC-SHA256 over bytes 0..27+n with the shared key, truncated to its first
                  16 bytes (128 bits, as HMAC-SHA-256-128 of RFC 4868)

Any other length, magic or version, a name that is not UTF-8 or a wrong MAC decodes to None;
decoding never raises.

Replays. A receiver remembers, for every node it ever accepted a heartbeat from (dead ones
too: one small record per holder of the key), the (incarnation, sequence number) of the
last one, and accepts a heartbeat only when that pair is larger, compared as a pair: a larger
incarnation wins whatever its sequence number, and within an incarnation a larger sequence
number wins. A copy of a datagram is never larger than what was accepted from that node, so
a replay neither revives a dead node nor rolls its record back, and once a node's new
incarnation was heard none of the old one is accepted. Incarnations must therefore grow
across an agent's restarts: the edge takes the wall clock at start in nanoseconds (and may
keep the last one on disk to survive a clock stepped back). Receivers compare only numbers
from the same sender, so clocks need not agree between nodes.

What this does not cover: the key is shared, so a holder of it can speak for any node name
(it authenticates the cluster's agents, not one node; the edge may check a datagram's source
address against `Heartbeat.address`). A receiver's memory starts empty, and a datagram it
never accepted is new to it: heartbeats recorded by a LAN host and sent to an agent that has
just started, or that it lost on the way and the host kept, make their sender look alive to
it for `dead_after` after each one, at most for as many as the host has recorded. That host
can only deny service, which any LAN host can already do by answering ARP for the IPs;
closing it would need each heartbeat to echo the receivers' sequence numbers.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

MAGIC = b"HXHB"
VERSION = 1
LEAVING = 0x01
MAC_SIZE = 16
MAX_NAME = 253
INTERVAL = 0.1
DEAD_AFTER = 0.5

_HEAD = struct.Struct("!4sBBQQ4sB")  # magic, version, flags, incarnation, seq, address, n
_U64 = 1 << 64

# Why `Membership.receive` turned a datagram down (the keys of `Membership.rejected`).
MALFORMED = "malformed"  # not a heartbeat: too short or long, bad magic, name not UTF-8
WRONG_VERSION = "version"  # a heartbeat of another version (an agent of another release)
BAD_MAC = "mac"  # a wrong key, or forged or damaged on the way
SELF = "self"  # carries this agent's own name
OLD_INCARNATION = "incarnation"  # an incarnation older than the one last accepted
REPLAY = "replay"  # the incarnation last accepted, with a sequence number not above its
REASONS = (MALFORMED, WRONG_VERSION, BAD_MAC, SELF, OLD_INCARNATION, REPLAY)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """One heartbeat, as sent and as decoded."""

    name: str
    incarnation: int
    seq: int
    address: str  # IPv4
    leaving: bool = False


def _mac(key: bytes, signed: bytes) -> bytes:
    return hmac.new(key, signed, hashlib.sha256).digest()[:MAC_SIZE]


def encode(heartbeat: Heartbeat, key: bytes) -> bytes:
    """The datagram of a heartbeat. Raises ValueError when a field does not fit the format."""
    name = heartbeat.name.encode()
    if not 1 <= len(name) <= MAX_NAME:
        raise ValueError(f"node name of {len(name)} bytes (1..{MAX_NAME})")
    if not (0 <= heartbeat.incarnation < _U64 and 0 <= heartbeat.seq < _U64):
        raise ValueError("incarnation and sequence number are unsigned 64-bit")
    address = ipaddress.IPv4Address(heartbeat.address).packed  # AddressValueError: ValueError
    signed = _HEAD.pack(MAGIC, VERSION, LEAVING if heartbeat.leaving else 0,
                        heartbeat.incarnation, heartbeat.seq, address, len(name)) + name
    return signed + _mac(key, signed)


def _check(data: bytes, key: bytes) -> Heartbeat | str:
    """The heartbeat in `data`, or why there is none (one of REASONS)."""
    if len(data) < _HEAD.size + 1 + MAC_SIZE:
        return MALFORMED
    magic, version, flags, incarnation, seq, address, n = _HEAD.unpack_from(data)
    if magic != MAGIC:
        return MALFORMED
    if version != VERSION:
        return WRONG_VERSION
    end = _HEAD.size + n
    if not 1 <= n <= MAX_NAME or len(data) != end + MAC_SIZE:
        return MALFORMED
    if not hmac.compare_digest(data[end:], _mac(key, data[:end])):
        return BAD_MAC
    try:
        name = data[_HEAD.size:end].decode()
    except UnicodeDecodeError:
        return MALFORMED
    return Heartbeat(name, incarnation, seq, str(ipaddress.IPv4Address(address)),
                     bool(flags & LEAVING))


def decode(data: bytes, key: bytes) -> Heartbeat | None:
    """The heartbeat in a datagram, or None when it is not a valid one of this key."""
    got = _check(data, key)
    return got if isinstance(got, Heartbeat) else None


@dataclass(frozen=True, slots=True)
class Peer:
    """What an agent knows of another node: its last accepted heartbeat and when it came."""

    incarnation: int
    seq: int
    address: str
    heard: float
    leaving: bool

    def alive(self, now: float, dead_after: float) -> bool:
        return not self.leaving and now < self.heard + dead_after


class Membership:
    """One agent's view of who is alive (see the module docstring).

    `me` is this node's name, `address` its IPv4 node address, `incarnation` the number the
    edge chose at start (larger than any earlier run's). `send` makes a heartbeat when one is
    due, `receive` judges one, `alive` says who is alive, `next_deadline` when to call again.
    """

    def __init__(self, me: str, key: bytes, *, address: str, incarnation: int,
                 interval: float = INTERVAL, dead_after: float = DEAD_AFTER) -> None:
        if not key:
            raise ValueError("empty heartbeat key")
        if not 0 < interval < dead_after:
            raise ValueError(f"need 0 < interval ({interval}) < dead_after ({dead_after})")
        self.me = me
        self.key = key
        self.address = address
        self.incarnation = incarnation
        self.interval = interval
        self.dead_after = dead_after
        encode(Heartbeat(me, incarnation, 0, address), key)  # ValueError now, not at send
        self.seq = 0
        self.left = False
        self._next_send: float | None = None  # None: at once
        self._peers: dict[str, Peer] = {}
        self.sent = 0
        self.accepted = 0
        self.rejected: dict[str, int] = dict.fromkeys(REASONS, 0)

    @property
    def peers(self) -> Mapping[str, Peer]:
        """Every node a heartbeat was accepted from, dead or alive (read-only)."""
        return MappingProxyType(self._peers)

    def _heartbeat(self, leaving: bool) -> bytes:
        self.seq += 1
        self.sent += 1
        return encode(Heartbeat(self.me, self.incarnation, self.seq, self.address, leaving),
                      self.key)

    def send(self, now: float) -> bytes | None:
        """The heartbeat to broadcast now, or None when none is due (or after `leave`).

        Heartbeats are due every `interval` from the first; a late caller gets one and the
        next is due `interval` after it (no burst to catch up)."""
        if self.left or (self._next_send is not None and now < self._next_send):
            return None
        due = self._next_send
        if due is None or due + self.interval <= now:
            self._next_send = now + self.interval
        else:
            self._next_send = due + self.interval
        return self._heartbeat(leaving=False)

    def leave(self, now: float) -> bytes:
        """A last heartbeat saying this agent leaves (peers drop it at once); nothing is
        sent after it."""
        self.left = True
        return self._heartbeat(leaving=True)

    def receive(self, data: bytes, now: float) -> bool:
        """Judge a received datagram: True when accepted (counted in `accepted`), False when
        turned down (counted in `rejected` by reason). Never raises on any bytes."""
        got = _check(data, self.key)
        if isinstance(got, str):
            return self._reject(got)
        if got.name == self.me:
            return self._reject(SELF)
        last = self._peers.get(got.name)
        if last is not None and (got.incarnation, got.seq) <= (last.incarnation, last.seq):
            return self._reject(REPLAY if got.incarnation == last.incarnation
                                else OLD_INCARNATION)
        self._peers[got.name] = Peer(got.incarnation, got.seq, got.address, now, got.leaving)
        self.accepted += 1
        return True

    def _reject(self, reason: str) -> bool:
        self.rejected[reason] += 1
        return False

    def alive(self, now: float) -> frozenset[str]:
        """This node and every node heard from within `dead_after` that has not left."""
        return frozenset([self.me, *(name for name, peer in self._peers.items()
                                     if peer.alive(now, self.dead_after))])

    def next_deadline(self, now: float) -> float | None:
        """When to call again: the next heartbeat due or the next expiry of an alive node,
        whichever comes first (None after `leave` with nobody alive)."""
        expiries = [peer.heard + self.dead_after for peer in self._peers.values()
                    if peer.alive(now, self.dead_after)]
        if not self.left:
            expiries.append(now if self._next_send is None else self._next_send)
        return min(expiries, default=None)
