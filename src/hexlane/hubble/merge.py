"""Merging the flows of many nodes into one stream in time order (the relay's core, pure).

Each node sends its flows in time order, but nodes send at their own pace: an agent hands its
flows over in batches, and a quiet node sends nothing for a long time. Two merges:

- `merge_history`: the stored flows of every node, all known up front (GetFlows without
  `follow`): one sorted stream, then `number` of them, the last (or with `first` the first).
- `SortBuffer`: the follow mode's merge. A flow is held until no earlier flow can still
  come, or for at most the window W after it arrived, whichever is first:
  - a node's *watermark* is the time of the last flow it sent; a node's later flows are
    never earlier than that. The earliest held flow goes out as soon as every other node
    taking part has a watermark at or past it: with busy nodes, flows leave with no wait;
  - a silent node never advances its watermark, so the window bounds the wait: once a flow
    has been held for W it goes out, with every held flow earlier than it;
  - more than `max_len` held flows: the earliest go out until `max_len` are left.
  So the stream is in time order for flows that reach the relay within W of each other, and
  no flow waits longer than W because of another node.

Times are nanoseconds; `now` is passed in (the relay's monotonic clock), so the buffer is a
plain data structure, tested without sleeping.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


def merge_history(per_node: Sequence[Iterable[T]], time_of: Callable[[T], int], *,
                  number: int = 0, first: bool = False) -> list[T]:
    """Every node's flows (each list in time order) merged by time; with `number`, its
    last `number` (or first, with `first`), as one node's GetFlows would select."""
    merged = list(heapq.merge(*per_node, key=time_of))
    if not number:
        return merged
    return merged[:number] if first else merged[-number:]


@dataclass(slots=True)
class _Held(Generic[T]):
    time_ns: int
    arrived_ns: int
    node: str
    item: T
    sent: bool = False


class SortBuffer(Generic[T]):
    """Holds flows of several nodes and gives them back in time order (module docstring).

        buf = SortBuffer(window_ns=20_000_000, max_len=4096)
        buf.set_nodes({"node1", "node2"})       # nodes whose watermarks count
        buf.push("node1", flow_time, flow, now)
        for flow in buf.pop_ready(now): ...     # what may go out now
        buf.deadline()                          # when pop_ready has more to give, or None
    """

    def __init__(self, window_ns: int, max_len: int) -> None:
        if window_ns < 0 or max_len < 1:
            raise ValueError("window_ns must be >= 0 and max_len >= 1")
        self.window_ns = window_ns
        self.max_len = max_len
        # (time, arrival sequence, held): tuples compare in C, the sequence breaks ties
        self._heap: list[tuple[int, int, _Held[T]]] = []
        self._arrivals: deque[_Held[T]] = deque()  # in arrival order; sent ones skipped
        self._watermarks: dict[str, int] = {}
        self._nodes: set[str] = set()
        self._seq = itertools.count()
        self._held = 0

    def __len__(self) -> int:
        return self._held

    def set_nodes(self, nodes: Iterable[str]) -> None:
        """The nodes that take part now (connected ones): only they can hold a flow back."""
        self._nodes = set(nodes)
        for gone in set(self._watermarks) - self._nodes:
            del self._watermarks[gone]

    def push(self, node: str, time_ns: int, item: T, now_ns: int) -> None:
        held = _Held(time_ns, now_ns, node, item)
        heapq.heappush(self._heap, (time_ns, next(self._seq), held))
        self._arrivals.append(held)
        self._held += 1
        if time_ns > self._watermarks.get(node, -1):
            self._watermarks[node] = time_ns

    def _others_past(self, held: _Held[T]) -> bool:
        return all(self._watermarks.get(n, -1) >= held.time_ns
                   for n in self._nodes if n != held.node)

    def _pop(self) -> T:
        held = heapq.heappop(self._heap)[2]
        held.sent = True
        self._held -= 1
        return held.item

    def pop_ready(self, now_ns: int) -> list[T]:
        """The flows that may go out at `now_ns`, in time order."""
        out: list[T] = []
        while self._heap:
            while self._arrivals and self._arrivals[0].sent:
                self._arrivals.popleft()
            expired = self._arrivals[0] if (
                self._arrivals and self._arrivals[0].arrived_ns + self.window_ns <= now_ns
            ) else None
            head = self._heap[0][2]
            if expired is not None:
                # Everything up to the flow that waited W goes, in time order.
                while not expired.sent:
                    out.append(self._pop())
            elif self._held > self.max_len or self._others_past(head):
                out.append(self._pop())
            else:
                break
        return out

    def deadline(self) -> int | None:
        """When (ns, the clock of `now_ns`) the longest-held flow's window ends, or None."""
        for held in self._arrivals:
            if not held.sent:
                return held.arrived_ns + self.window_ns
        return None

    def drain(self) -> list[T]:
        """Every held flow, in time order (the stream ends)."""
        out = []
        while self._heap:
            out.append(self._pop())
        self._arrivals.clear()
        return out
