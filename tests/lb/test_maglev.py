"""Maglev tables and slot choice are Cilium's, bit for bit.

Pins down: Cilium's own test vectors from pkg/maglev (TestReproducible at M=251 as a
run-length-encoded table, the weighted counts of TestWeightedBackendWithRemoval at M=1021);
the seed split; the hash strings; that our fast fill equals the textbook permutation-array fill
for any backends (property test); minimal disruption on removal; and the datapath hash.
"""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.lb import maglev
from hexlane.lb.hashing import murmur3_x64_128
from hexlane.lb.maglev import MaglevBackend, build_table
from hexlane.model.errors import InputError

# Cilium pkg/maglev/maglev_test.go TestReproducible: M=251, default seed, backends built by
# mkAddr(i) = 0.0.0.i port i TCP, with (weight, id) (2, 0), (13, 1), (111, 2), (10, 3).
REPRODUCIBLE_RLE = (
    "2(5),3(1),2(3),1(1),2(2),0(1),2(1),3(1),2(1),3(1),2(1),1(1),2(7),1(1),2(14),3(1),2(1),"
    "1(2),2(12),3(1),2(3),1(1),2(4),3(1),2(8),3(1),2(2),1(1),2(16),1(2),2(3),3(1),2(11),1(2),"
    "2(4),3(1),2(3),1(1),2(4),3(1),2(1),0(1),1(1),2(8),1(1),2(7),1(1),2(4),3(1),2(1),3(1),2(9),"
    "1(2),2(5),1(1),2(7),3(1),2(1),3(1),1(1),2(8),1(1),2(4),0(1),2(1),1(1),2(5),3(1),2(3),1(1),"
    "2(4),3(1),2(3),1(1),2(12),0(1),3(1),2(3),3(1),2(4),3(1),2(2),1(1),2(7)"
)


def run_length(ids: list[int]) -> str:
    runs: list[str] = []
    current, count = ids[0], 1
    for x in ids[1:]:
        if x == current:
            count += 1
        else:
            runs.append(f"{current}({count})")
            current, count = x, 1
    runs.append(f"{current}({count})")
    return ",".join(runs)


def textbook_table(backends: list[MaglevBackend], m: int) -> list[int]:
    """Cilium's GetLookupTable as written: an N×M permutation array, then weighted turns."""
    seed = maglev.parse_hash_seed(maglev.DEFAULT_HASH_SEED).murmur
    named = sorted((b.hash_string(), b) for b in backends if b.weight > 0)
    n = len(named)
    perm = []
    for key, _ in named:
        h1, h2 = murmur3_x64_128(key.encode(), seed)
        offset, skip = h1 % m, h2 % (m - 1) + 1
        perm.append([(offset + j * skip) % m for j in range(m)])
    weights = [b.weight for _, b in named]
    weight_sum = sum(weights)
    counters = [w / n for w in weights]
    nxt = [0] * n
    entry = [-1] * m
    for turn in range(m):
        i = turn % n
        while True:
            if weight_sum // n > 1:
                if (turn + 1) * weights[i] < int(counters[i]):
                    i = (i + 1) % n
                    continue
                counters[i] += weight_sum
            c = perm[i][nxt[i]]
            while entry[c] >= 0:
                nxt[i] += 1
                c = perm[i][nxt[i]]
            entry[c] = named[i][1].id
            nxt[i] += 1
            break
    return entry


def cilium_backends(*specs: tuple[int, int, int]) -> list[MaglevBackend]:
    """Backends as Cilium's tests make them, from (i, id, weight): mkAddr(i) = 0.0.0.i, port i,
    TCP."""
    return [MaglevBackend(backend_id, f"0.0.0.{i}", i, weight=weight)
            for i, backend_id, weight in specs]


def test_reproducible_vector_from_cilium() -> None:
    backends = cilium_backends((1, 0, 2), (3, 1, 13), (4, 2, 111), (5, 3, 10))
    assert run_length(build_table(backends, table_size=251)) == REPRODUCIBLE_RLE


def test_weighted_backend_with_removal_counts_from_cilium() -> None:
    backends = cilium_backends((1, 1, 2), (2, 2, 13), (3, 3, 111), (4, 4, 10))
    before = build_table(backends, table_size=1021)
    assert Counter(before) == {1: 16, 2: 98, 3: 832, 4: 75}
    after = build_table(backends[1:], table_size=1021)
    assert 1 not in after
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != 1 and a != b)
    assert moved / 1021 * 100 < 1.0


def test_backend_removal_moves_under_one_percent() -> None:
    backends = [MaglevBackend(i, f"0.0.0.{i}", i) for i in (1, 2, 3)]
    before = build_table(backends, table_size=1021)
    after = build_table(backends[:2], table_size=1021)
    assert set(after) == {1, 2}
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != 3 and a != b)
    assert moved / 1021 * 100 < 1.0


def test_seed_split_matches_cilium_default() -> None:
    seeds = maglev.parse_hash_seed("JLfvgnHc2kaSUFaI")
    assert (seeds.murmur, seeds.jhash4, seeds.jhash6) == (0x24B7EF82, 0x71DCDA46, 0x92505688)


def test_hash_strings() -> None:
    assert MaglevBackend(1, "10.0.0.1", 80).hash_string() == "[10.0.0.1:80/TCP,State:active]"
    assert (MaglevBackend(1, "fd00::0001", 53, "udp").hash_string()
            == "[[fd00::1]:53/UDP,State:active]")


def test_table_does_not_depend_on_input_order_or_ids_of_others() -> None:
    backends = [MaglevBackend(i, f"10.1.{i}.7", 8080) for i in range(20)]
    assert build_table(backends, 509) == build_table(list(reversed(backends)), 509)


def test_unweighted_balance_is_floor_or_ceil() -> None:
    backends = [MaglevBackend(i, f"10.2.0.{i}", 443) for i in range(1, 11)]
    counts = Counter(build_table(backends, 16381))
    assert set(counts.values()) <= {16381 // 10, 16381 // 10 + 1}


def test_empty_and_zero_weight() -> None:
    assert build_table([], 251) == []
    table = build_table([MaglevBackend(1, "10.0.0.1", 80, weight=0),
                         MaglevBackend(2, "10.0.0.2", 80)], 251)
    assert set(table) == {2}


@pytest.mark.parametrize("size", [0, 250, 16383, 65537])
def test_bad_table_size_is_a_clear_error(size: int) -> None:
    with pytest.raises(InputError, match=r"maglev.tableSize: invalid Maglev table size"):
        build_table([MaglevBackend(1, "10.0.0.1", 80)], table_size=size)


@pytest.mark.parametrize("seed", ["not base64!", "AAAA"])
def test_bad_seed_is_a_clear_error(seed: str) -> None:
    with pytest.raises(InputError, match=r"maglev.hashSeed"):
        build_table([MaglevBackend(1, "10.0.0.1", 80)], hash_seed=seed)


def test_bad_backend_is_a_clear_error() -> None:
    with pytest.raises(InputError, match="invalid IP address"):
        build_table([MaglevBackend(1, "10.0.0.300", 80)], 251)
    with pytest.raises(InputError, match="same endpoint"):
        build_table([MaglevBackend(1, "10.0.0.1", 80), MaglevBackend(2, "10.0.0.1", 80)], 251)


@settings(max_examples=40, deadline=None)
@given(
    size=st.sampled_from([251, 509, 1021]),
    weights=st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=12),
    udp=st.booleans(),
)
def test_fast_fill_equals_textbook_fill(size: int, weights: list[int], udp: bool) -> None:
    backends = [
        MaglevBackend(i + 100, f"10.9.{i}.{i * 3 % 250}", 1000 + i, "UDP" if udp else "TCP", w)
        for i, w in enumerate(weights)
    ]
    expected = textbook_table(backends, size) if any(weights) else []
    assert build_table(backends, size) == expected


def test_more_backends_than_slots_still_fills_every_slot() -> None:
    backends = [MaglevBackend(i, f"10.3.{i // 250}.{i % 250}", 80) for i in range(300)]
    table = build_table(backends, 251)
    assert -1 not in table
    assert table == textbook_table(backends, 251)
