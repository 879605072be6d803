"""The apiserver's store on its own: writes committed together still succeed or fail one by
one (a failing write leaves no trace and takes no resourceVersion), resourceVersions are
contiguous and keep growing after reopening, the change history is kept to its bound, and
`state_at` rebuilds the objects as they were at an older resourceVersion; writes that arrive
during a commit share the next one and are answered only after it returned, and a COMMIT
that fails fails every write in it."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from hexlane.apiserver.storage import Store, Txn

pytestmark = pytest.mark.timeout(60)

RES = "core/configmaps"


def _put(name: str, value: str) -> Any:
    def fn(txn: Txn) -> int:
        old = txn.get(RES, "ns", name)
        obj = {"metadata": {"name": name, "namespace": "ns"}, "data": {"v": value}}
        return txn.put(RES, "ns", name, obj, old).rv
    return fn


def _boom(name: str) -> Any:
    def fn(txn: Txn) -> None:
        txn.put(RES, "ns", name, {"metadata": {"name": name}}, None)
        raise RuntimeError("this write fails after writing")
    return fn


async def test_failing_write_in_a_batch_leaves_no_trace(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", history=100)
    await store.start()
    try:
        jobs = [_put(f"o{i}", "x") if i != 5 else _boom("bad") for i in range(20)]
        results = await asyncio.gather(*(store.transact(j) for j in jobs),
                                       return_exceptions=True)
        assert isinstance(results[5], RuntimeError)
        rvs = [r for i, r in enumerate(results) if i != 5]
        assert sorted(rvs) == list(range(1, 20))  # contiguous: the failure took no rv
        assert store.get(RES, "ns", "bad") is None
        assert store.rv == 19 and len(store.objects[RES]) == 19
        assert [ev.rv for ev in store.events_since(RES, 0)] == list(range(1, 20))
    finally:
        await store.stop()

    reopened = Store(tmp_path / "db", history=100)
    await reopened.start()
    try:
        assert reopened.rv == 19 and len(reopened.objects[RES]) == 19
        assert await reopened.transact(_put("after", "y")) == 20
    finally:
        await reopened.stop()


async def test_history_bound_and_state_at(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", history=10)
    await store.start()
    try:
        await store.transact(_put("a", "1"))            # rv 1
        await store.transact(_put("b", "1"))            # rv 2
        await store.transact(_put("a", "2"))            # rv 3

        def drop_b(txn: Txn) -> None:
            txn.delete(RES, "ns", "b", txn.get(RES, "ns", "b") or {})

        await store.transact(drop_b)                    # rv 4
        at2 = store.state_at(RES, 2)
        assert at2[("ns", "a")] is not None and at2[("ns", "a")].obj["data"] == {"v": "1"}
        assert at2[("ns", "b")] is not None and at2[("ns", "b")].rv == 2
        assert store.state_at(RES, 0)[("ns", "a")] is None  # a did not exist yet
        for i in range(20):
            await store.transact(_put(f"n{i}", "x"))
        assert len(store.events) == 10
        assert store.compacted == store.rv - 10
    finally:
        await store.stop()
    reopened = Store(tmp_path / "db", history=10)
    await reopened.start()
    try:
        assert len(reopened.events) == 10 and reopened.compacted == reopened.rv - 10
    finally:
        await reopened.stop()


class _SlowCommits:
    """The store's connection with COMMITs that take `delay` seconds (so writes pile up
    behind one) and fail when `fail` says so; records each COMMIT's end and last rv."""

    def __init__(self, store: Store, delay: float, fail: Any = lambda n: False) -> None:
        self._store = store
        self._conn = store._conn
        self._delay = delay
        self._fail = fail
        self.done: list[tuple[float, int]] = []

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "COMMIT" and threading.current_thread() is not threading.main_thread():
            time.sleep(self._delay)
            if self._fail(len(self.done)):
                self.done.append((time.monotonic(), -1))
                raise sqlite3.OperationalError("disk I/O error (injected)")
            result = self._conn.execute(sql, *args)
            self.done.append((time.monotonic(), self._store._writer_rv))
            return result
        return self._conn.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)


async def test_writes_arriving_during_a_commit_share_the_next_and_wait_for_it(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "db", history=1000)
    store.open()
    slow = _SlowCommits(store, 0.05)
    store._conn = slow  # type: ignore[assignment]
    await store.start()
    try:
        acks: list[tuple[int, float]] = []

        async def write(i: int) -> None:
            await asyncio.sleep(i * 0.002)  # arriving over ~0.2 s, during commits
            rv = await store.transact(_put(f"o{i}", "x"))
            acks.append((rv, time.monotonic()))

        await asyncio.gather(*(write(i) for i in range(100)))
        assert sorted(rv for rv, _ in acks) == list(range(1, 101))
        # Group commit: far fewer COMMITs (each with its fsync) than writes.
        assert store.commits == len(slow.done) < 20
        for rv, acked in acks:  # answered only after the COMMIT that holds it returned
            end = next(t for t, last in slow.done if last >= rv)
            assert acked >= end
        assert [ev.rv for ev in store.events_since(RES, 0)] == list(range(1, 101))
    finally:
        await store.stop()


async def test_a_failed_commit_fails_its_writes_and_gives_back_their_rvs(
        tmp_path: Path) -> None:
    store = Store(tmp_path / "db", history=1000)
    store.open()
    slow = _SlowCommits(store, 0.02, fail=lambda n: n == 1)
    store._conn = slow  # type: ignore[assignment]
    await store.start()
    try:
        assert await store.transact(_put("first", "x")) == 1
        failed = await asyncio.gather(*(store.transact(_put(f"lost{i}", "x"))
                                        for i in range(5)), return_exceptions=True)
        assert all(isinstance(r, sqlite3.OperationalError) for r in failed)
        assert store.get(RES, "ns", "lost0") is None and store.rv == 1
        assert await store.transact(_put("after", "y")) == 2  # the failed rvs are reused
    finally:
        await store.stop()
    reopened = Store(tmp_path / "db", history=1000)
    await reopened.start()
    try:
        assert sorted(k[1] for k in reopened.objects[RES]) == ["after", "first"]
        assert reopened.rv == 2
    finally:
        await reopened.stop()
