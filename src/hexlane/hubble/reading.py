"""Which stored flows a GetFlows request returns, and where following starts (pure).

A request is reduced to a `FlowQuery` (count, direction, time window, the compiled filter).
`stored_flows(ring, query)` answers from the ring as Cilium's observer does:

- `first`: the oldest `number` matching flows (all matching flows when `number` is 0);
- `number` > 0 (the default direction): the newest `number` matching flows, oldest first;
- `number` 0 and `follow` without `since`: nothing stored, only what arrives from now on;
- `number` 0 otherwise: every matching flow held, oldest first.

`since` and `until` bound every direction (inclusive). The cursor returned is the sequence
number from which a follower continues; `follow_from` then filters what arrives after it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.ring import FlowRing


@dataclass(frozen=True, slots=True)
class FlowQuery:
    """A GetFlows request, decoded: `since_ns`/`until_ns` None = unbounded."""

    predicate: Callable[[flow_pb2.Flow], bool]
    number: int = 0
    first: bool = False
    follow: bool = False
    since_ns: int | None = None
    until_ns: int | None = None

    def in_window(self, time_ns: int) -> bool:
        return ((self.since_ns is None or time_ns >= self.since_ns)
                and (self.until_ns is None or time_ns <= self.until_ns))

    def wants(self, flow: flow_pb2.Flow) -> bool:
        return self.in_window(flow_time_ns(flow)) and self.predicate(flow)


def flow_time_ns(flow: flow_pb2.Flow) -> int:
    return int(flow.time.seconds) * 1_000_000_000 + int(flow.time.nanos)


def stored_flows(ring: FlowRing[flow_pb2.Flow], query: FlowQuery
                 ) -> tuple[list[flow_pb2.Flow], int]:
    """(the stored flows the query selects, oldest first; the cursor to follow from)."""
    if query.first:
        out: list[flow_pb2.Flow] = []
        for seq in range(ring.oldest, ring.seen):
            flow = ring.get(seq)
            if query.until_ns is not None and flow_time_ns(flow) > query.until_ns:
                return out, seq
            if query.wants(flow):
                out.append(flow)
                if query.number and len(out) == query.number:
                    return out, seq + 1
        return out, ring.seen
    if query.number:
        newest: list[flow_pb2.Flow] = []
        for _, flow in ring.newest_first():
            t = flow_time_ns(flow)
            if query.since_ns is not None and t < query.since_ns:
                break
            if query.wants(flow):
                newest.append(flow)
                if len(newest) == query.number:
                    break
        newest.reverse()
        return newest, ring.seen
    if query.follow and query.since_ns is None:
        return [], ring.seen
    return [ring.get(seq) for seq in range(ring.oldest, ring.seen)
            if query.wants(ring.get(seq))], ring.seen
