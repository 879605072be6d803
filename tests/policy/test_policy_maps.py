"""The policy map entries and lookups, and the ipcache's longest-prefix match."""

from __future__ import annotations

import ipaddress
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.model.netpol import CIDRBlock
from hexlane.policy.identity import ReservedIdentity
from hexlane.policy.maps import (
    EGRESS,
    INGRESS,
    PolicyEntry,
    ipcache_entries,
    ipcache_lookup,
    lookup,
    port_range_prefixes,
)
from hexlane.policy.resolve import cidr_pieces

NET = ipaddress.IPv4Network
TCP, UDP = 6, 17


def test_entry_prefix_lengths_as_ciliums_lpm_key() -> None:
    assert PolicyEntry(INGRESS, 300, TCP, 80, 16).prefix_len == 64
    assert PolicyEntry(INGRESS, 300, TCP, 8080, 14).prefix_len == 62
    assert PolicyEntry(INGRESS, 300, TCP).prefix_len == 48  # any port
    assert PolicyEntry(INGRESS, 300).prefix_len == 40       # any protocol, any port
    assert PolicyEntry(INGRESS, 300, TCP, 8080, 14).port_range == (8080, 8083)
    for bad in (dict(protocol=0, port=80, port_bits=16), dict(protocol=TCP, port=0, port_bits=3),
                dict(protocol=TCP, port=8081, port_bits=14)):
        with pytest.raises(ValueError):
            PolicyEntry(INGRESS, 1, **bad)
    with pytest.raises(ValueError, match="direction"):
        PolicyEntry("sideways", 1)
    assert PolicyEntry(EGRESS, 0, TCP, 8080, 14).describe() == "egress 0 8080-8083/TCP"


def test_lookup_order() -> None:
    exact = PolicyEntry(INGRESS, 300, TCP, 80, 16)
    id_any_port = PolicyEntry(INGRESS, 300, TCP)
    id_any = PolicyEntry(INGRESS, 300)
    any_port80 = PolicyEntry(INGRESS, 0, TCP, 80, 16)
    any_any = PolicyEntry(INGRESS, 0)
    entries = {exact, id_any_port, id_any, any_port80, any_any}
    assert lookup(entries, 300, 80, TCP, INGRESS) == exact
    assert lookup(entries, 300, 81, TCP, INGRESS) == id_any_port
    assert lookup(entries, 300, 81, UDP, INGRESS) == id_any
    assert lookup(entries, 301, 80, TCP, INGRESS) == any_port80
    assert lookup(entries, 301, 81, TCP, INGRESS) == any_any
    assert lookup(entries, 301, 81, TCP, EGRESS) is None
    assert lookup({exact}, 300, 80, UDP, INGRESS) is None


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 65535), st.integers(0, 2000))
def test_port_range_prefixes_cover_exactly(first, span) -> None:
    last = min(65535, first + span)
    blocks = port_range_prefixes(first, last)
    covered = []
    for port, bits in blocks:
        e = PolicyEntry(INGRESS, 1, TCP, port, bits)
        assert e.port_range is not None
        covered.extend(range(e.port_range[0], e.port_range[1] + 1))
    assert covered == list(range(first, last + 1))  # in order, no overlap, no gap
    assert len(blocks) <= 2 * 16


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 24),
       st.lists(st.tuples(st.integers(0, 2**32 - 1), st.integers(1, 32)), max_size=4),
       st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=20))
def test_cidr_pieces_are_the_block_less_its_excepts(base, bits, raw_excepts, probes) -> None:
    cidr = NET((base >> (32 - bits) << (32 - bits), bits))
    excepts = []
    for addr, ebits in raw_excepts:
        ebits = max(ebits, bits + 1)
        if ebits > 32:
            continue
        # an except inside the cidr: the cidr's bits, then the random address's
        inside = int(cidr.network_address) | (addr & ((1 << (32 - bits)) - 1))
        excepts.append(NET((inside >> (32 - ebits) << (32 - ebits), ebits)))
    pieces = cidr_pieces(CIDRBlock(str(cidr), tuple(str(e) for e in excepts)))
    for a, b in itertools.pairwise(pieces):
        assert not a.overlaps(b)
    samples = [int(cidr.network_address) | (p & ((1 << (32 - bits)) - 1)) for p in probes]
    samples += [int(e.network_address) for e in excepts]
    for s in samples:
        ip = ipaddress.IPv4Address(s)
        want = ip in cidr and not any(ip in e for e in excepts)
        assert any(ip in p for p in pieces) == want


def test_ipcache_entries_and_lpm() -> None:
    cache = ipcache_entries([("10.244.0.5", 300), ("10.0.0.1", 301)],
                            local_node_ips=["10.0.0.1"], remote_node_ips=["10.0.0.2"],
                            cidr_identities={NET("10.0.0.0/8"): 16777217,
                                             NET("10.0.0.0/24"): 16777218,
                                             NET("0.0.0.0/0"): 99})
    assert cache[NET("0.0.0.0/0")] == ReservedIdentity.WORLD  # /0 is always world
    assert ipcache_lookup(cache, "10.244.0.5") == 300
    assert ipcache_lookup(cache, "10.244.0.6") == 16777217
    assert ipcache_lookup(cache, "10.0.0.9") == 16777218
    assert ipcache_lookup(cache, "10.0.0.1") == ReservedIdentity.HOST  # the node's IP wins
    assert ipcache_lookup(cache, "10.0.0.2") == ReservedIdentity.REMOTE_NODE
    assert ipcache_lookup(cache, "8.8.8.8") == ReservedIdentity.WORLD
    assert ipcache_lookup({}, "8.8.8.8") == ReservedIdentity.WORLD


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.tuples(st.integers(0, 255), st.integers(0, 16)),
                       st.integers(256, 1000), max_size=12),
       st.lists(st.integers(0, 2**16 - 1), min_size=1, max_size=10))
def test_ipcache_lookup_is_the_longest_prefix(raw, probes) -> None:
    cache = {}
    for (hi, bits), ident in raw.items():
        cache[NET(((hi << 24) >> (32 - bits) << (32 - bits), bits))] = ident
    for p in probes:
        ip = ipaddress.IPv4Address((p % 256) << 24 | p >> 8)
        containing = [n for n in cache if ip in n]
        want = (cache[max(containing, key=lambda n: n.prefixlen)] if containing
                else ReservedIdentity.WORLD)
        assert ipcache_lookup(cache, ip) == want
