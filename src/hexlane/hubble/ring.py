"""The flow ring (pure): the last `capacity` items, addressed by sequence number.

Every item appended gets the next sequence number (0, 1, 2, ...); the ring keeps the newest
`capacity` of them and forgets the rest, as Cilium's Hubble ring does. Readers hold a
sequence number (a cursor) instead of a position, so a reader that fell behind learns exactly
how many items were overwritten before it could read them (`read`), and readers never block
the one writer: appending is a list store and two integer updates.

The capacity must be 2^n-1 (1, 3, 7, ..., 65535), the values Cilium's
`hubble.eventBufferCapacity` accepts; anything else is refused with the list.

`flows_rate` computes ServerStatus' flows per second the way Cilium does: flows of the last
minute divided by the time they span (the whole minute, or back to the oldest flow held when
the ring covers less than a minute).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

MAX_CAPACITY = 65535
CAPACITIES = tuple(2**n - 1 for n in range(1, 17))
RATE_WINDOW_NS = 60 * 10**9


def check_capacity(capacity: int) -> int:
    """`capacity` when it is 2^n-1 from 1 to 65535; ValueError naming the accepted values."""
    if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity not in CAPACITIES:
        raise ValueError(f"hubble.eventBufferCapacity must be 2^n-1 from 1 to {MAX_CAPACITY} "
                         f"(1, 3, 7, ..., 4095, ..., 65535), got {capacity!r}")
    return capacity


@dataclass(frozen=True, slots=True)
class Read(Generic[T]):
    """What a reader got: items from `start` on, how many it `lost` to overwriting before
    `start`, and the cursor to read from next."""

    items: list[T]
    start: int
    lost: int
    next: int


class FlowRing(Generic[T]):
    """A bounded ring of items addressed by sequence number (one writer)."""

    def __init__(self, capacity: int) -> None:
        self.capacity = check_capacity(capacity)
        self._slots: list[T | None] = [None] * self.capacity
        self._seen = 0

    @property
    def seen(self) -> int:
        """Items ever appended; also the sequence number the next one gets."""
        return self._seen

    @property
    def oldest(self) -> int:
        """Sequence number of the oldest item still held."""
        return max(0, self._seen - self.capacity)

    @property
    def overwritten(self) -> int:
        """Items pushed out of the ring by newer ones."""
        return self.oldest

    def __len__(self) -> int:
        return min(self._seen, self.capacity)

    def append(self, item: T) -> tuple[int, T | None]:
        """Store `item`; its sequence number and the item it pushed out (None if none)."""
        seq = self._seen
        slot = seq % self.capacity
        evicted = self._slots[slot] if seq >= self.capacity else None
        self._slots[slot] = item
        self._seen = seq + 1
        return seq, evicted

    def skip(self, count: int) -> None:
        """Count `count` items as appended and at once pushed out, without holding them (the
        store's pending flows that newer ones overwrite before anyone reads them). The
        caller appends at least `capacity` items next, so no slot stays stale."""
        self._seen += count

    def get(self, seq: int) -> T:
        """The item with sequence number `seq`; IndexError when not held (any more, or yet)."""
        if not self.oldest <= seq < self._seen:
            raise IndexError(f"sequence {seq} is not in the ring ({self.oldest}..{self._seen})")
        item = self._slots[seq % self.capacity]
        assert item is not None
        return item

    def read(self, cursor: int, limit: int | None = None) -> Read[T]:
        """Items from `cursor` on (at most `limit`); what was overwritten is counted as lost."""
        start = max(cursor, self.oldest)
        stop = self._seen if limit is None else min(self._seen, start + limit)
        stop = max(start, stop)  # a cursor ahead of the writer stays where it is
        items = [self.get(seq) for seq in range(start, stop)]
        return Read(items, start, start - cursor if cursor < start else 0, stop)

    def newest_first(self) -> Iterable[tuple[int, T]]:
        """(sequence, item) from the newest to the oldest held."""
        for seq in range(self._seen - 1, self.oldest - 1, -1):
            yield seq, self.get(seq)


def flows_rate(times_newest_first: Iterable[int], now_ns: int) -> float:
    """Flows per second over the last minute, from the held flows' times (ns), newest first.

    When the ring holds less than a minute of flows, the rate is over the span back to the
    oldest one held (as Cilium computes it).
    """
    since = now_ns - RATE_WINDOW_NS
    count = 0
    oldest_counted: int | None = None
    for t in times_newest_first:
        if t < since:
            break
        count += 1
        oldest_counted = t
    else:
        if oldest_counted is not None:
            since = oldest_counted
    span = (now_ns - since) / 1e9
    if count == 0 or span <= 0:
        return 0.0
    return count / span
