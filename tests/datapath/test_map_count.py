"""`libbpf.Map.count`: how many entries a hash map holds, read in batches.

Pins down: an empty map counts 0; an LRU hash filled with 20,000 entries counts 20,000, as a
walk of its keys does; a batch smaller than one hash bucket still counts everything (the
batch grows); entries deleted are no longer counted; a map type it cannot count is refused.
"""

from __future__ import annotations

import ctypes

import pytest

from hexlane.datapath import libbpf

pytestmark = [pytest.mark.root]


def test_counts_what_the_map_holds() -> None:
    m = libbpf.create_map(libbpf.BPF_MAP_TYPE_LRU_HASH, "hl_t_count", 8, 16, 65536)
    try:
        assert m.count() == 0
        m.update_batch([(ctypes.c_uint64(i), bytes(16)) for i in range(20000)])
        assert m.count() == 20000 == sum(1 for _ in m.raw_keys())
        assert m.count(batch=1) == 20000
        m.delete_batch([ctypes.c_uint64(i) for i in range(5000)])
        assert m.count(batch=100) == 15000
    finally:
        m.close()


def test_a_map_it_cannot_count_is_refused() -> None:
    m = libbpf.create_map(libbpf.BPF_MAP_TYPE_ARRAY, "hl_t_array", 4, 8, 4)
    try:
        with pytest.raises(ValueError, match="hash map"):
            m.count()
    finally:
        m.close()
