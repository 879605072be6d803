"""The one reconciler: desired table in, kernel converged; incremental, resync, retries.

Pins down: only dirty keys are written (upserts before deletes, in the table's order); a
resync finds entries changed, missing or stale behind its back and counts them as repairs;
a failing entry is retried after a backoff without holding back the others; groups flush
every table's upserts before any table's deletes; the pure `plan`; and, as a property, any
sequence of changes, tampering and failures converges after a resync. Also on a real BPF
hash map with ctypes keys and values.
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4, port16
from hexlane.datapath.lb.maps import Lb4ReverseNat
from hexlane.datapath.reconcile import (
    AsyncReconciler,
    AsyncTable,
    MapTable,
    Reconciler,
    Table,
    flush_group,
    plan,
    reconcile_map,
)


class MemoryTable(Table[str, int]):
    """A kernel stand-in for the pure logic: a dict, a write log, keys that fail."""

    def __init__(self, name: str = "memory", log: list[tuple[str, str, str]] | None = None
                 ) -> None:
        self.name = name
        self.data: dict[str, int] = {}
        self.log = log if log is not None else []
        self.broken: set[str] = set()

    def read(self) -> Mapping[str, int]:
        return dict(self.data)

    def update(self, key: str, value: int) -> None:
        if key in self.broken:
            raise OSError(28, f"no space for {key}")
        self.data[key] = value
        self.log.append((self.name, "update", key))

    def delete(self, key: str) -> None:
        self.data.pop(key, None)
        self.log.append((self.name, "delete", key))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_plan_is_upserts_in_desired_order_and_stale_keys() -> None:
    p = plan({"a": 1, "b": 2, "d": 4}, {"a": 1, "b": 9, "c": 3})
    assert p.upserts == [("b", 2), ("d", 4)]
    assert p.deletes == ["c"]
    assert plan({"a": 1}, {"a": 1}).empty


def test_incremental_changes_write_only_their_keys() -> None:
    t = MemoryTable()
    rec = Reconciler(t)
    rec.set_all({"a": 1, "b": 2})
    assert rec.flush().updated == 2
    t.log.clear()
    rec.put("b", 3)
    rec.put("a", 1)  # unchanged: not written
    rec.remove("zzz")  # never there: nothing
    result = rec.flush()
    assert (result.updated, result.deleted) == (1, 0)
    assert t.log == [("memory", "update", "b")]
    rec.remove("a")
    assert rec.flush().deleted == 1
    assert t.data == {"b": 3}
    assert rec.pending == 0


def test_resync_repairs_changed_missing_and_stale_entries_and_counts_them() -> None:
    t = MemoryTable()
    rec = Reconciler(t)
    rec.set_all({"a": 1, "b": 2, "c": 3})
    rec.flush()
    t.data["a"] = 99  # changed behind our back
    del t.data["b"]  # deleted behind our back
    t.data["x"] = 7  # someone added one to our table
    assert rec.detect() == 3
    assert rec.flush().changed
    assert t.data == {"a": 1, "b": 2, "c": 3}
    assert rec.repairs == 3
    assert rec.resync().changed is False  # nothing left to repair
    assert rec.repairs == 3


def test_first_resync_after_restart_writes_nothing_the_kernel_already_holds() -> None:
    t = MemoryTable()
    t.data = {"a": 1, "b": 2, "old": 5}
    rec = Reconciler(t)  # a new process: its desired table is rebuilt, the kernel kept
    rec.set_all({"a": 1, "b": 3})
    rec.resync()
    assert t.log == [("memory", "update", "b"), ("memory", "delete", "old")]


def test_a_failing_entry_is_retried_with_backoff_and_does_not_hold_back_others() -> None:
    clock = Clock()
    t = MemoryTable()
    t.broken = {"bad"}
    rec = Reconciler(t, clock=clock, retry_initial=1.0, retry_max=4.0)
    rec.set_all({"a": 1, "bad": 2, "c": 3})
    result = rec.flush()
    assert result.updated == 2 and "bad" in result.failed
    assert t.data == {"a": 1, "c": 3}
    assert rec.pending == 1 and rec.errors == 1
    t.log.clear()
    rec.flush()  # not due yet: no attempt
    assert t.log == []
    clock.now += 1.0
    rec.flush()  # due: tried, fails again, now waits 2 s
    assert rec.errors == 2
    clock.now += 1.5
    rec.flush()
    assert rec.errors == 2
    t.broken.clear()
    clock.now += 0.5
    assert rec.flush().updated == 1
    assert t.data == {"a": 1, "bad": 2, "c": 3}
    assert rec.pending == 0 and not rec.last_errors


def test_a_failing_entry_no_longer_wanted_stops_being_reported() -> None:
    """A tc slot on a pod veth that went away: it failed, then the pod's link is gone from
    the desired table too; the resync finds nothing to do and the status shows no error."""
    clock = Clock()
    t = MemoryTable()
    t.broken = {"gone"}
    rec = Reconciler(t, clock=clock)
    rec.set_all({"a": 1, "gone": 2})
    assert "gone" in rec.flush().failed and rec.last_errors
    rec.set_all({"a": 1})
    rec.resync()
    assert rec.pending == 0 and rec.last_errors == {} and rec.status()["failing"] == {}


def test_groups_write_every_upsert_before_any_delete_and_delete_in_reverse() -> None:
    log: list[tuple[str, str, str]] = []
    backends, services = MemoryTable("backends", log), MemoryTable("services", log)
    rb, rs = Reconciler(backends), Reconciler(services)
    rb.set_all({"b1": 1})
    rs.set_all({"s1": 1})
    flush_group([rb, rs])
    log.clear()
    rb.set_all({"b2": 2})  # b1 goes, b2 comes
    rs.set_all({"s2": 2})  # s1 goes, s2 comes (pointing at b2)
    flush_group([rb, rs])
    assert log == [("backends", "update", "b2"), ("services", "update", "s2"),
                   ("services", "delete", "s1"), ("backends", "delete", "b1")]


def test_table_order_sorts_upserts() -> None:
    t = MemoryTable()
    t.order = lambda key: key == "master"  # type: ignore[method-assign, assignment]
    rec = Reconciler(t)
    rec.put("master", 0)
    rec.put("slot1", 1)
    rec.flush()
    assert [k for _, _, k in t.log] == ["slot1", "master"]


ops = st.lists(st.tuples(st.sampled_from(["put", "remove", "tamper", "drop", "flush",
                                          "break", "heal"]),
                         st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3)),
               max_size=40)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_any_history_converges_after_a_resync(history: list[tuple[str, str, int]]) -> None:
    clock = Clock()
    t = MemoryTable()
    rec = Reconciler(t, clock=clock)
    for op, key, value in history:
        if op == "put":
            rec.put(key, value)
        elif op == "remove":
            rec.remove(key)
        elif op == "tamper":
            t.data[key] = value + 10
        elif op == "drop":
            t.data.pop(key, None)
        elif op == "flush":
            rec.flush()
        elif op == "break":
            t.broken.add(key)
        else:
            t.broken.discard(key)
        clock.now += 0.1
    t.broken.clear()
    clock.now += 1000
    rec.resync()
    assert t.data == rec.desired
    assert rec.pending == 0


class AsyncMemoryTable(AsyncTable[str, int]):
    name = "async"

    def __init__(self) -> None:
        self.data: dict[str, int] = {}

    async def read(self) -> Mapping[str, int]:
        return dict(self.data)

    async def update(self, key: str, value: int) -> None:
        self.data[key] = value

    async def delete(self, key: str) -> None:
        self.data.pop(key, None)


def test_the_async_variant_repairs_as_the_sync_one() -> None:
    async def run() -> None:
        t = AsyncMemoryTable()
        rec: AsyncReconciler[str, int] = AsyncReconciler(t)
        rec.set_all({"a": 1, "b": 2})
        await rec.flush()
        t.data["a"] = 5
        t.data.pop("b")
        t.data["z"] = 1
        await rec.resync()
        assert t.data == {"a": 1, "b": 2}
        assert rec.repairs == 3

    asyncio.run(run())


@pytest.mark.root
def test_real_bpf_map_with_ctypes_entries() -> None:
    with libbpf.create_map(libbpf.BPF_MAP_TYPE_HASH, "hl_test_rec", 2,
                           ctypes.sizeof(Lb4ReverseNat), 512) as raw:
        m = raw.typed(ctypes.c_uint16, Lb4ReverseNat)
        m.update(ctypes.c_uint16(9), Lb4ReverseNat(address=ip4("10.96.0.9"), port=port16(9)))
        m.update(ctypes.c_uint16(1), Lb4ReverseNat(address=ip4("10.96.0.1"), port=port16(1)))
        desired: list[tuple[Any, Any]] = [
            (ctypes.c_uint16(1), Lb4ReverseNat(address=ip4("10.96.0.1"), port=port16(1))),
            (ctypes.c_uint16(2), Lb4ReverseNat(address=ip4("10.96.0.2"), port=port16(443))),
        ]
        result = reconcile_map(m, desired)
        assert (result.updated, result.deleted) == (1, 1)
        assert sorted(k.value for k in m.iter_keys()) == [1, 2]
        assert m.lookup(ctypes.c_uint16(2)).port == port16(443)
        assert not reconcile_map(m, desired).changed
        # Batched writes (>= 64 entries) land too, and a resync finds one changed by hand.
        rec = Reconciler(MapTable(m))
        rec.set_all({bytes(ctypes.c_uint16(i)): bytes(Lb4ReverseNat(address=ip4("10.0.0.1"),
                                                                      port=port16(i)))
                     for i in range(1, 300)})
        assert rec.flush().updated == 299
        assert len(list(m.raw_keys())) == 299
        m.update(ctypes.c_uint16(7), Lb4ReverseNat(address=ip4("6.6.6.6"), port=port16(7)))
        m.delete(ctypes.c_uint16(8))
        assert rec.detect() == 2
        rec.flush()
        assert m.lookup(ctypes.c_uint16(7)).address == ip4("10.0.0.1")
        assert m.lookup(ctypes.c_uint16(8)) is not None
