"""Maglev consistent hashing exactly as Cilium computes it (pure).

For the same backends, weights, table size and hash seed, `build_table` returns the very table
Cilium's ``pkg/maglev`` programs into ``cilium_lb4_maglev``, and `maglev_slot` names the slot
Cilium's datapath (``bpf/lib/lb.h`` ``lb4_select_backend_id_maglev``) reads for a packet.

The recipe, as Cilium does it:

- The 12-byte hash seed (base64, ``maglev.hashSeed``) splits into three big-endian 32-bit words:
  the MurmurHash3 seed and the two datapath jhash seeds (``HASH_INIT4_SEED``/``HASH_INIT6_SEED``).
- Each backend is named by its hash string ``[ip:port/PROTO,State:active]`` (IPv6:
  ``[[ip]:port/PROTO,State:active]``); backends are sorted bytewise by that string, so every node
  builds the same table whatever its node-local backend ids are.
- MurmurHash3 x64_128(string, seed) gives (h1, h2); offset = h1 % M, skip = h2 % (M-1) + 1, and
  the backend's preference list is offset, offset+skip, ... (mod M).
- Turns go round-robin over the sorted backends; on its turn a backend takes the first free slot
  of its preference list. With weights (when weightSum / N > 1) a backend whose counter is ahead
  of (n+1)·weight passes its turn to the next one (Cilium's port of Envoy PR 2982).

Inspect a programmed table with ``hexlane bpf lb maglev list``.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import cycle, islice

from hexlane.lb.hashing import jhash_3words, murmur3_x64_128_cached
from hexlane.model.errors import InputError, Problem

DEFAULT_TABLE_SIZE = 16381
DEFAULT_HASH_SEED = "JLfvgnHc2kaSUFaI"
# Cilium's allowed `maglev.tableSize` values: primes, each roughly double the previous one.
ALLOWED_TABLE_SIZES: tuple[int, ...] = (
    251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071,
)

PROTOCOL_NUMBERS = {"TCP": 6, "UDP": 17, "SCTP": 132}

_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_CANONICAL_IPV4 = re.compile(rf"{_OCTET}(?:\.{_OCTET}){{3}}")


@dataclass(frozen=True, slots=True)
class MaglevSeeds:
    """The three 32-bit seeds Cilium derives from ``maglev.hashSeed``."""

    murmur: int
    jhash4: int  # HASH_INIT4_SEED: seeds the IPv4 datapath hash
    jhash6: int  # HASH_INIT6_SEED: seeds the IPv6 datapath hash


def parse_hash_seed(hash_seed: str) -> MaglevSeeds:
    """Split a base64 Maglev seed of 12 bytes into Cilium's three seeds (big-endian words)."""
    try:
        raw = base64.b64decode(hash_seed.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InputError.at(
            "maglev.hashSeed", f"cannot decode base64 Maglev hash seed {hash_seed!r}"
        ) from None
    if len(raw) != 12:
        raise InputError.at(
            "maglev.hashSeed",
            f"decoded hash seed is {len(raw)} bytes, expected 12 "
            "(generate one with: head -c12 /dev/urandom | base64 -w0)",
        )
    return MaglevSeeds(
        murmur=int.from_bytes(raw[0:4], "big"),
        jhash4=int.from_bytes(raw[4:8], "big"),
        jhash6=int.from_bytes(raw[8:12], "big"),
    )


def check_table_size(table_size: int) -> int:
    """`table_size` if Cilium allows it, else an InputError naming the allowed primes."""
    if table_size not in ALLOWED_TABLE_SIZES:
        allowed = ", ".join(str(s) for s in ALLOWED_TABLE_SIZES)
        raise InputError.at(
            "maglev.tableSize",
            f"invalid Maglev table size {table_size}: must be one of {allowed}",
        )
    return table_size


@dataclass(frozen=True, slots=True)
class MaglevBackend:
    """One backend of a Service as Maglev sees it: node-local id, address, port, protocol."""

    id: int
    address: str
    port: int
    protocol: str = "TCP"
    weight: int = 1

    def hash_string(self) -> str:
        """Cilium's name for this backend in the Maglev hash: ``[ip:port/PROTO,State:active]``.

        Only active backends are ever put in a table, so the state is always ``active``.
        """
        proto = self.protocol.upper()
        if proto not in PROTOCOL_NUMBERS:
            raise InputError(Problem(
                f"backend {self.id}: protocol {self.protocol!r} is not one of TCP, UDP, SCTP",
                "protocol",
            ))
        if not 0 <= self.port <= 0xFFFF:
            raise InputError(Problem(f"backend {self.id}: port {self.port} out of range", "port"))
        if _CANONICAL_IPV4.fullmatch(self.address):
            host = self.address  # already as Go prints it; ipaddress is slow for thousands
        else:
            try:
                ip = ipaddress.ip_address(self.address)
            except ValueError:
                raise InputError(Problem(
                    f"backend {self.id}: invalid IP address {self.address!r}", "address"
                )) from None
            host = f"[{ip}]" if ip.version == 6 else str(ip)
        return f"[{host}:{self.port}/{proto},State:active]"


def offset_and_skip(hash_string: str, table_size: int, seed_murmur: int) -> tuple[int, int]:
    """Where a backend's preference list starts in a table of `table_size`, and its stride."""
    h1, h2 = murmur3_x64_128_cached(hash_string.encode(), seed_murmur)
    return h1 % table_size, h2 % (table_size - 1) + 1


def build_table(
    backends: Iterable[MaglevBackend],
    table_size: int = DEFAULT_TABLE_SIZE,
    hash_seed: str = DEFAULT_HASH_SEED,
) -> list[int]:
    """Cilium's Maglev lookup table: the backend id in each of `table_size` slots.

    Backends of weight 0 take no slot (Cilium leaves them out); no backends give ``[]``.
    """
    m = check_table_size(table_size)
    seeds = parse_hash_seed(hash_seed)
    named: dict[str, MaglevBackend] = {}
    for b in backends:
        if b.weight < 0:
            raise InputError(Problem(f"backend {b.id}: weight {b.weight} is negative", "weight"))
        if b.weight == 0:
            continue
        key = b.hash_string()
        if key in named:
            raise InputError(Problem(
                f"backends {named[key].id} and {b.id} are the same endpoint {key}", "backends"
            ))
        named[key] = b
    if not named:
        return []
    # Go's sort.Strings compares bytes; for these ASCII strings that is Python's str order.
    order = sorted(named)
    ids = [named[k].id for k in order]
    weights = [named[k].weight for k in order]
    offsets: list[int] = []
    skips: list[int] = []
    for key in order:
        off, skip = offset_and_skip(key, m, seeds.murmur)
        offsets.append(off)
        skips.append(skip)
    return _fill(offsets, skips, ids, weights, m)


def _turn_order(weights: Sequence[int], m: int) -> Iterator[int]:
    """Whose turn each of the M turns is (indices into the sorted backends).

    Unweighted (integer weightSum / N at most 1, as Cilium tests it): round robin. Weighted:
    turn n starts at backend n % N and passes on while (n+1)·weight is below the backend's
    counter, which starts at weight/N and grows by weightSum per turn taken (float64, as Go).
    """
    count = len(weights)
    weight_sum = sum(weights)
    if weight_sum // count <= 1:
        return islice(cycle(range(count)), m)
    counters = [w / count for w in weights]
    order = []
    for n in range(m):
        i = n % count
        limit = n + 1
        while limit * weights[i] < int(counters[i]):
            i = (i + 1) % count
        counters[i] += weight_sum
        order.append(i)
    return iter(order)


def _fill(
    offsets: Sequence[int], skips: Sequence[int], ids: Sequence[int],
    weights: Sequence[int], m: int,
) -> list[int]:
    """Run Maglev's turns, giving each turn's backend the first free slot it prefers.

    The same result as Cilium's loop over a precomputed N×M permutation array, without the
    array: backend i's j-th preference is (offset_i + j·skip_i) mod M, and `pos[i]` is its next
    candidate. Once few slots are free, probing a chain costs about M/free steps, so the last
    turns instead pick, among the free slots, the one earliest in the backend's preference
    order: slot e comes at index (e - offset_i)·skip_i⁻¹ mod M (M is prime), and every earlier
    preference is already taken.
    """
    table = [-1] * m
    taken = bytearray(m)
    pos = list(offsets)
    turns = _turn_order(weights, m)
    # Probing costs ~M/free steps per turn and scanning costs ~free: switch where they meet.
    for i in islice(turns, m - int(m**0.5)):
        c = pos[i]
        s = skips[i]
        while taken[c]:
            c += s
            if c >= m:
                c -= m
        taken[c] = 1
        table[c] = ids[i]
        c += s
        if c >= m:
            c -= m
        pos[i] = c
    free = [e for e in range(m) if not taken[e]]
    inverses: dict[int, int] = {}
    for i in turns:
        inv = inverses.get(i)
        if inv is None:
            inv = inverses[i] = pow(skips[i], -1, m)
        base = offsets[i]
        best = min(range(len(free)), key=lambda k: ((free[k] - base) * inv) % m)
        table[free[best]] = ids[i]
        free[best] = free[-1]
        free.pop()
    return table


def port_word(port: int) -> int:
    """A port as the datapath holds it: network-order bytes read as a little-endian u16."""
    return ((port & 0xFF) << 8) | ((port >> 8) & 0xFF)


def addr_word(address: str) -> int:
    """An IPv4 address as the datapath holds it: network-order bytes read as a little-endian u32."""
    return int.from_bytes(ipaddress.IPv4Address(address).packed, "little")


def datapath_hash4(
    saddr: str, sport: int, dport: int, proto: int | str, hash_seed: str = DEFAULT_HASH_SEED,
    *, session_affinity: bool = False,
) -> int:
    """The 32-bit hash Cilium's IPv4 datapath computes for a new flow to a Maglev service.

    ``jhash_3words(saddr, (svc_port << 16) | client_port, proto, HASH_INIT4_SEED)`` on the
    words as an x86 machine loads them from the packet (see `addr_word`, `port_word`). `sport`
    is the client's port, `dport` the service port. With ``sessionAffinity: ClientIP`` the
    client port counts as 0, so one client always lands on one slot. The destination address
    is not hashed: Cilium leaves it out so a backend is the same across a Service's VIPs.

    This is Cilium's hash since cilium/cilium#37005 and #37353 (January 2025, fixes for
    session affinity with Maglev). Releases before them, v1.16.0 among them, hashed the port
    word the other way round, (client_port << 16) | svc_port, and never zeroed the client port.
    """
    number = PROTOCOL_NUMBERS[proto.upper()] if isinstance(proto, str) else proto
    client = 0 if session_affinity else port_word(sport)
    word = ((port_word(dport) << 16) | client) & 0xFFFFFFFF
    return jhash_3words(addr_word(saddr), word, number, parse_hash_seed(hash_seed).jhash4)


def maglev_slot(
    saddr: str, sport: int, dport: int, proto: int | str,
    table_size: int = DEFAULT_TABLE_SIZE, hash_seed: str = DEFAULT_HASH_SEED,
    *, session_affinity: bool = False,
) -> int:
    """The Maglev table slot Cilium's datapath reads for this IPv4 flow (see `datapath_hash4`)."""
    m = check_table_size(table_size)
    h = datapath_hash4(saddr, sport, dport, proto, hash_seed, session_affinity=session_affinity)
    return h % m
