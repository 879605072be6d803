"""Reading the events ring buffer's records (hexlane.datapath.events, no kernel needed).

Pins down how a copy of the ring from the consumer position is cut into events: committed
records are taken, discarded ones skipped (and consumed), and the first record still being
written (busy) stops the read there, so it and everything after it wait for the next call;
the fast path (every record committed) gives the same answer as the walk.
"""

from __future__ import annotations

import struct

from hexlane.datapath.events import (
    EVENT_SIZE,
    RECORD_SIZE,
    RINGBUF_BUSY,
    RINGBUF_DISCARD,
    EventBatch,
    _records,
)


def record(tag: int, flags: int = 0) -> bytes:
    body = struct.pack("<Q", tag) + bytes(EVENT_SIZE - 8)
    return struct.pack("<II", EVENT_SIZE | flags, 0) + body


def tags(data: bytes, offsets: object) -> list[int]:
    return [struct.unpack_from("<Q", data, o)[0] for o in offsets]  # type: ignore[attr-defined]


def test_every_committed_record_is_taken() -> None:
    data = b"".join(record(i) for i in range(5))
    offsets, _l7, used = _records(data)
    assert tags(data, offsets) == [0, 1, 2, 3, 4] and used == len(data)
    assert len(EventBatch(data, offsets)) == 5


def test_discarded_records_are_skipped_and_a_busy_one_stops_the_read() -> None:
    data = (record(1) + record(2, RINGBUF_DISCARD) + record(3) + record(4, RINGBUF_BUSY)
            + record(5))
    offsets, _l7, used = _records(data)
    assert tags(data, offsets) == [1, 3]
    assert used == 3 * RECORD_SIZE  # the busy record and the one after it stay in the ring


def test_a_partial_copy_is_not_read_past() -> None:
    data = record(1) + record(2)[:20]
    offsets, _l7, used = _records(data)
    assert tags(data, offsets) == [1] and used <= len(data)
