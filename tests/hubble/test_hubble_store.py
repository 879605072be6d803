"""The flow store: `add` completes what the agent left empty, counts seen and overwritten
flows and the namespaces held, and followers wake on new flows without polling, learn how
many flows they lost when they fall behind the ring, and stop at `until`."""

from __future__ import annotations

import asyncio

import pytest
from hubble_helpers import BASE_NS, pod_flow

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.filters import compile_filters
from hexlane.hubble.reading import FlowQuery
from hexlane.hubble.store import FlowStore

ALL = compile_filters()


def test_add_completes_the_flow() -> None:
    store = FlowStore(7, node_name="default/node9", clock=lambda: BASE_NS)
    f = flow_pb2.Flow()
    f.l4.UDP.destination_port = 53
    store.add(f)
    assert f.time.ToNanoseconds() == BASE_NS and len(f.uuid) == 36
    assert f.node_name == "default/node9" and f.Summary == "UDP"
    kept = pod_flow(1)
    store.add(kept)
    assert kept.node_name == "default/node1"  # the agent's own values stay


def test_counters_and_namespaces_follow_the_ring() -> None:
    store = FlowStore(3)
    for i in range(3):
        store.add(pod_flow(i, ns="old"))
    assert store.namespaces() == [("", "old")]
    for i in range(3, 5):
        store.add(pod_flow(i, ns="new"))
    assert (store.num_flows, store.max_flows, store.seen_flows, store.overwritten) == (3, 3, 5,
                                                                                        2)
    assert store.namespaces() == [("", "new"), ("", "old")]
    store.add(pod_flow(5, ns="new"))
    assert store.namespaces() == [("", "new")]


def test_capacity_is_checked() -> None:
    with pytest.raises(ValueError, match="eventBufferCapacity"):
        FlowStore(4096)


async def _collect(it, n: int) -> list:  # type: ignore[no-untyped-def]
    out = []
    async for item in it:
        out.append(item)
        if len(out) == n:
            break
    return out


async def test_a_follower_wakes_on_new_flows() -> None:
    store = FlowStore(15)
    store.add(pod_flow(0))
    reader = asyncio.create_task(_collect(store.flows(FlowQuery(ALL, number=1, follow=True)),
                                          3))
    await asyncio.sleep(0.01)
    assert not reader.done()
    store.add(pod_flow(1))
    store.add(pod_flow(2))
    got = await asyncio.wait_for(reader, 2)
    assert [f.l4.TCP.source_port for f in got] == [40000, 40001, 40002]


async def test_a_slow_follower_is_told_what_it_lost() -> None:
    store = FlowStore(3)
    it = store.flows(FlowQuery(ALL, follow=True))
    first = asyncio.create_task(it.__anext__())
    await asyncio.sleep(0)
    for i in range(10):  # 10 flows arrive before the follower runs again
        store.add(pod_flow(i))
    got = [await asyncio.wait_for(first, 2)]
    got += [await it.__anext__() for _ in range(3)]
    assert got[0] == 7  # flows 0..6 were overwritten
    assert [f.l4.TCP.source_port - 40000 for f in got[1:]] == [7, 8, 9]


async def test_follow_ends_when_until_has_passed() -> None:
    now = [BASE_NS]
    store = FlowStore(7, clock=lambda: now[0])
    q = FlowQuery(ALL, follow=True, until_ns=BASE_NS + 50_000_000)
    got = await asyncio.wait_for(_collect(store.flows(q), 10), 2)
    assert got == []


class Pending:
    """Flows built only when asked; remembers which were."""

    def __init__(self, start: int, count: int, ns: str = "lazy") -> None:
        self.start, self.count, self.ns = start, count, ns
        self.built: list[int] = []

    def __len__(self) -> int:
        return self.count

    def flow(self, i: int) -> flow_pb2.Flow:
        self.built.append(self.start + i)
        return pod_flow(self.start + i, ns=self.ns)


async def test_pending_flows_are_built_only_when_read_and_only_the_newest() -> None:
    store = FlowStore(7)
    batches = [Pending(0, 5), Pending(5, 20), Pending(25, 4)]
    for batch in batches:
        store.add_pending(batch)
    assert batches[0].built == [] and batches[1].built == []  # nothing built yet
    assert (store.seen_flows, store.num_flows, store.overwritten) == (29, 7, 22)
    flows = await _stored(store, FlowQuery(ALL, number=10))
    assert [f.l4.TCP.source_port for f in flows] == [
        pod_flow(i).l4.TCP.source_port for i in range(22, 29)]
    # only the 7 newest were ever built; the first batch was dropped unbuilt
    assert batches[0].built == [] and batches[1].built == [22, 23, 24]
    assert batches[2].built == [25, 26, 27, 28]
    assert store.namespaces() == [("", "lazy")]
    store.add(pod_flow(29, ns="eager"))  # an eager flow after pending ones keeps the order
    assert store.seen_flows == 30 and store.num_flows == 7


async def _stored(store: FlowStore, query: FlowQuery) -> list[flow_pb2.Flow]:
    return [f async for f in store.flows(query) if not isinstance(f, int)]


async def test_a_follower_wakes_on_pending_flows() -> None:
    store = FlowStore(7)
    got: list[flow_pb2.Flow | int] = []

    async def follow() -> None:
        async for item in store.flows(FlowQuery(ALL, follow=True)):
            got.append(item)
            if len(got) == 3:
                return

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    store.add_pending(Pending(0, 3))
    await asyncio.wait_for(task, 2)
    assert len(got) == 3 and not any(isinstance(x, int) for x in got)
