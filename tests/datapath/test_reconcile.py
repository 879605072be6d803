"""The generic map reconciler converges a map to the desired content and reports the work.

Pins down: only changed entries are written, stale ones deleted, a second run does nothing;
on an in-memory map (order of writes) and on a real BPF hash map with ctypes keys/values.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from typing import Any

import pytest

from hexlane.datapath import libbpf
from hexlane.datapath.lb.maps import Lb4ReverseNat, ip4, port16
from hexlane.datapath.reconcile import reconcile_map


class MemoryMap:
    name = "memory"

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.writes: list[tuple[str, bytes]] = []

    def raw_keys(self) -> Iterator[bytes]:
        yield from list(self.data)

    def lookup(self, key: Any) -> Any:
        return self.data.get(bytes(key))

    def update(self, key: Any, value: Any, flags: int = 0) -> None:
        self.data[bytes(key)] = bytes(value)
        self.writes.append(("update", bytes(key)))

    def delete(self, key: Any) -> bool:
        self.writes.append(("delete", bytes(key)))
        return self.data.pop(bytes(key), None) is not None


def test_converges_with_updates_first_then_deletes() -> None:
    m = MemoryMap()
    m.data = {b"a": b"1", b"b": b"2", b"c": b"3"}
    result = reconcile_map(m, {b"a": b"1", b"b": b"9", b"d": b"4"})
    assert m.data == {b"a": b"1", b"b": b"9", b"d": b"4"}
    assert (result.updated, result.deleted, result.unchanged) == (2, 1, 1)
    assert m.writes == [("update", b"b"), ("update", b"d"), ("delete", b"c")]
    assert not reconcile_map(m, {b"a": b"1", b"b": b"9", b"d": b"4"}).changed


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")
def test_real_bpf_map_with_ctypes_entries() -> None:
    with libbpf.create_map(libbpf.BPF_MAP_TYPE_HASH, "hl_test_rec", 2,
                           ctypes.sizeof(Lb4ReverseNat), 64) as raw:
        m = raw.typed(ctypes.c_uint16, Lb4ReverseNat)
        m.update(ctypes.c_uint16(9), Lb4ReverseNat(address=ip4("10.96.0.9"), port=port16(9)))
        m.update(ctypes.c_uint16(1), Lb4ReverseNat(address=ip4("10.96.0.1"), port=port16(1)))
        # ctypes values are not hashable: desired state as (key, value) pairs
        desired = [
            (ctypes.c_uint16(1), Lb4ReverseNat(address=ip4("10.96.0.1"), port=port16(1))),
            (ctypes.c_uint16(2), Lb4ReverseNat(address=ip4("10.96.0.2"), port=port16(443))),
        ]
        result = reconcile_map(m, desired)
        assert (result.updated, result.deleted, result.unchanged) == (1, 1, 1)
        assert sorted(k.value for k in m.iter_keys()) == [1, 2]
        assert m.lookup(ctypes.c_uint16(2)).port == port16(443)
        assert not reconcile_map(m, desired).changed
