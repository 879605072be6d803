"""Cilium's range allocator order (pkg/ipalloc HashAllocator) as `BlockAllocator` reproduces it:
a fresh range gives its lowest address first, a split range fills its smallest free block
first, equal blocks are taken in the order Go's container/heap leaves them, counts stay right,
and taking an address twice or outside the range fails."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.ipam.blocks import BlockAllocator


def test_fresh_range_hands_out_lowest_first() -> None:
    a = BlockAllocator(100, 104)
    assert [a.take_any() for _ in range(6)] == [100, 101, 102, 103, 104, None]
    assert (a.used, a.free) == (5, 0)


def test_specific_take_splits_and_smallest_block_goes_first() -> None:
    a = BlockAllocator(0, 255)
    assert a.take(200)
    assert a.free_blocks() == [(0, 199), (201, 255)]
    # [201-255] (55 addresses) is smaller than [0-199] (200), so it is used first.
    assert [a.take_any() for _ in range(3)] == [201, 202, 203]


def test_equal_blocks_follow_go_heap_layout() -> None:
    a = BlockAllocator(0, 255)
    for ip in (20, 30, 9):
        assert a.take(ip)
    # [0-8] and [21-29] both hold nine addresses; Go's heap has [21-29] on top.
    assert a.take_any() == 21


def test_take_twice_or_outside_fails() -> None:
    a = BlockAllocator(10, 20)
    assert a.take(10) and not a.take(10)
    assert not a.take(9) and not a.take(21)
    assert a.is_free(11) and not a.is_free(10)
    assert a.used == 1


def test_bad_range_is_refused() -> None:
    with pytest.raises(ValueError, match="after its end"):
        BlockAllocator(5, 4)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), st.integers(0, 63)), max_size=80))
def test_blocks_stay_disjoint_maximal_and_counted(ops: list[int | None]) -> None:
    a = BlockAllocator(0, 63)
    taken: set[int] = set()
    for op in ops:
        if op is None:
            got = a.take_any()
            if got is None:
                assert len(taken) == 64
                continue
            assert got not in taken
            taken.add(got)
        else:
            assert a.take(op) == (op not in taken)
            taken.add(op)
        free = sorted(set(range(64)) - taken)
        blocks = a.free_blocks()
        assert [ip for lo, hi in blocks for ip in range(lo, hi + 1)] == free
        assert all(blocks[i][1] + 1 < blocks[i + 1][0] for i in range(len(blocks) - 1))
        assert a.used == len(taken)
