"""The flow store: the ring of the node's flows, and followers that wait for new ones.

The agent calls `store.add(flow)` for every flow, on the event loop that serves the API (from
another thread: `loop.call_soon_threadsafe(store.add, flow)`). Adding never blocks and never
waits for readers: a follower that falls more than the ring's capacity behind is told how
many flows it lost (`follow`), as Cilium's Hubble does. Followers sleep on one asyncio event
that the next `add` sets, so nobody polls.

`add` completes what the agent left empty, as Cilium's parser would have set it: `time`
(now), `uuid` (random), `node_name` (the store's), and `Summary` (the one-line L4 summary
the hubble CLI prints).

The store also counts what ServerStatus and GetNamespaces report: flows held, seen and
overwritten, the flow rate of the last minute, uptime, and the namespaces of the flows held.

Pending flows: a busy node reports far more flows than the ring keeps (tens of thousands a
second against 4095), and building each `flow.Flow` costs more than reading its event. So
the agent may hand over `add_pending(batch)`: a batch that builds its flows only when asked
(`PendingFlows`). They count as seen at once and wake the followers; they are built, at most
`capacity` of the newest, when something reads the store (a request, a follower, a counter),
and the older ones count as overwritten without ever being built: what nobody reads costs
next to nothing. When Hubble metrics are on, the agent builds every flow anyway and hands
them over as `BuiltFlows`, through the same door.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, deque
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.format import summary
from hexlane.hubble.reading import FlowQuery, flow_time_ns, stored_flows
from hexlane.hubble.ring import FlowRing, flows_rate

DEFAULT_CAPACITY = 4095


class PendingFlows(Protocol):
    """Flows not built yet: how many, and the i-th built when asked."""

    def __len__(self) -> int: ...

    def flow(self, i: int) -> flow_pb2.Flow: ...


class BuiltFlows:
    """Flows built already (Hubble metrics needed every one), handed over as pending flows:
    the store keeps at most its capacity of the newest and builds nothing again."""

    __slots__ = ("flows",)

    def __init__(self, flows: list[flow_pb2.Flow]) -> None:
        self.flows = flows

    def __len__(self) -> int:
        return len(self.flows)

    def flow(self, i: int) -> flow_pb2.Flow:
        return self.flows[i]


class FlowStore:
    """The node's recent flows (a ring of `capacity`, 2^n-1) and the waiting followers."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY, *, node_name: str = "",
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.ring: FlowRing[flow_pb2.Flow] = FlowRing(capacity)
        self.node_name = node_name
        self._clock = clock
        self._started = time.monotonic_ns()
        self._namespaces: Counter[tuple[str, str]] = Counter()
        self._arrived: asyncio.Event | None = None
        self._pending: deque[PendingFlows] = deque()
        self._pending_count = 0
        self._dropped = 0  # pending flows overwritten before they were built

    # --- writing ----------------------------------------------------------------------

    def add(self, flow: flow_pb2.Flow) -> None:
        """Keep `flow` (the newest), pushing out the oldest when full; wake the followers."""
        if self._pending_count:
            self._catch_up()
        self._keep(flow)
        self._wake()

    def add_pending(self, batch: PendingFlows) -> None:
        """Flows to build when read (see the module docstring); wakes the followers."""
        count = len(batch)
        if not count:
            return
        self._pending.append(batch)
        self._pending_count += count
        # Whole batches that newer pending flows will overwrite anyway: forget them now.
        while self._pending_count - len(self._pending[0]) >= self.ring.capacity:
            old = self._pending.popleft()
            self._pending_count -= len(old)
            self._dropped += len(old)
        self._wake()

    def _catch_up(self) -> None:
        """Build the pending flows that the ring will still hold; count the rest."""
        if not self._pending_count:
            return
        skip = self._dropped + max(0, self._pending_count - self.ring.capacity)
        self.ring.skip(skip)
        start = max(0, self._pending_count - self.ring.capacity)
        batches, self._pending = self._pending, deque()
        self._pending_count = self._dropped = 0
        for batch in batches:
            n = len(batch)
            if start >= n:
                start -= n
                continue
            for i in range(start, n):
                self._keep(batch.flow(i))
            start = 0

    def _wake(self) -> None:
        if self._arrived is not None:
            self._arrived.set()
            self._arrived = None

    def _keep(self, flow: flow_pb2.Flow) -> None:
        if not flow.HasField("time"):
            flow.time.FromNanoseconds(self._clock())
        if not flow.uuid:
            flow.uuid = str(uuid.uuid4())
        if not flow.node_name and self.node_name:
            flow.node_name = self.node_name
        if not flow.Summary:
            flow.Summary = summary(flow)
        _, evicted = self.ring.append(flow)
        for key in _namespaces_of(flow):
            self._namespaces[key] += 1
        if evicted is not None:
            for key in _namespaces_of(evicted):
                self._namespaces[key] -= 1
                if not self._namespaces[key]:
                    del self._namespaces[key]

    # --- counters ---------------------------------------------------------------------

    @property
    def max_flows(self) -> int:
        return self.ring.capacity

    @property
    def num_flows(self) -> int:
        return min(len(self.ring) + self._pending_count, self.ring.capacity)

    @property
    def seen_flows(self) -> int:
        return self.ring.seen + self._dropped + self._pending_count

    @property
    def overwritten(self) -> int:
        """Flows pushed out of the ring by newer ones (readers may never have seen them)."""
        return self.seen_flows - self.num_flows

    @property
    def uptime_ns(self) -> int:
        return time.monotonic_ns() - self._started

    def flows_rate(self) -> float:
        """Flows per second over the last minute (ServerStatus.flows_rate)."""
        self._catch_up()
        return flows_rate((flow_time_ns(f) for _, f in self.ring.newest_first()),
                          self._clock())

    def namespaces(self) -> list[tuple[str, str]]:
        """(cluster, namespace) of the flows held, sorted."""
        self._catch_up()
        return sorted(self._namespaces)

    # --- reading ----------------------------------------------------------------------

    async def wait_beyond(self, cursor: int) -> None:
        """Return once a flow with sequence number `cursor` or later exists."""
        while self.seen_flows <= cursor:
            if self._arrived is None:
                self._arrived = asyncio.Event()
            await self._arrived.wait()

    async def flows(self, query: FlowQuery) -> AsyncIterator[flow_pb2.Flow | int]:
        """The flows a query selects: the stored ones, then (with `follow`) new ones as
        they arrive. An int in the stream is a count of flows lost to overwriting before
        this reader got to them. Ends when the stored flows are sent (no follow) or when
        `until` has passed."""
        self._catch_up()
        flows, cursor = stored_flows(self.ring, query)
        for flow in flows:
            yield flow
        if not query.follow:
            return
        while True:
            if self.seen_flows <= cursor:
                timeout = None
                if query.until_ns is not None:
                    timeout = (query.until_ns - self._clock()) / 1e9
                    if timeout <= 0:
                        return
                try:
                    await asyncio.wait_for(self.wait_beyond(cursor), timeout)
                except TimeoutError:
                    return
            self._catch_up()
            read = self.ring.read(cursor)
            cursor = read.next
            if read.lost:
                yield read.lost
            for flow in read.items:
                if query.until_ns is not None and flow_time_ns(flow) > query.until_ns:
                    return
                if query.wants(flow):
                    yield flow


def _namespaces_of(flow: flow_pb2.Flow) -> set[tuple[str, str]]:
    out = set()
    for ep in (flow.source, flow.destination):
        if ep.namespace:
            out.add((ep.cluster_name, ep.namespace))
    return out
