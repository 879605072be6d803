"""The apiserver's store on its own: writes committed together still succeed or fail one by
one (a failing write leaves no trace and takes no resourceVersion), resourceVersions are
contiguous and keep growing after reopening, the change history is kept to its bound, and
`state_at` rebuilds the objects as they were at an older resourceVersion."""

from __future__ import annotations

import asyncio
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
