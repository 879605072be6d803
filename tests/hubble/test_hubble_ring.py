"""The flow ring: Cilium's 2^n-1 capacities, sequence numbers that survive wrapping, readers
told exactly how many items they lost, the last-minute flow rate; and which stored flows a
GetFlows request selects (last N, first N, all, since/until, follow from now)."""

from __future__ import annotations

import pytest
from hubble_helpers import BASE_NS, pod_flow
from hypothesis import given
from hypothesis import strategies as st

from hexlane.hubble.filters import compile_filters
from hexlane.hubble.reading import FlowQuery, stored_flows
from hexlane.hubble.ring import CAPACITIES, FlowRing, check_capacity, flows_rate

SEC = 1_000_000_000


@pytest.mark.parametrize("bad", [0, 2, 4, 4096, 65536, 100, -1, True, "4095"])
def test_capacity_must_be_two_to_the_n_minus_one(bad: object) -> None:
    with pytest.raises(ValueError, match=r"2\^n-1"):
        check_capacity(bad)  # type: ignore[arg-type]


def test_accepted_capacities() -> None:
    assert CAPACITIES[0] == 1 and CAPACITIES[-1] == 65535 and 4095 in CAPACITIES


@given(st.sampled_from([1, 3, 7, 15]), st.integers(0, 60))
def test_ring_keeps_the_newest_capacity_items(capacity: int, n: int) -> None:
    ring: FlowRing[int] = FlowRing(capacity)
    for i in range(n):
        seq, evicted = ring.append(i)
        assert seq == i
        assert evicted == (i - capacity if i >= capacity else None)
    assert ring.seen == n and len(ring) == min(n, capacity)
    assert ring.overwritten == max(0, n - capacity)
    assert [item for _, item in ring.newest_first()] == list(range(n - 1, ring.oldest - 1, -1))
    with pytest.raises(IndexError):
        ring.get(n)


@given(st.sampled_from([1, 3, 7]), st.integers(0, 40), st.integers(0, 40))
def test_a_reader_behind_the_ring_counts_what_it_lost(capacity: int, n: int, cursor: int
                                                      ) -> None:
    ring: FlowRing[int] = FlowRing(capacity)
    for i in range(n):
        ring.append(i)
    read = ring.read(cursor)
    start = max(cursor, ring.oldest)
    assert read.items == list(range(start, n))
    assert read.lost == max(0, ring.oldest - cursor)
    assert read.next == max(n, start)
    # lost + read = everything from the cursor on
    if cursor <= n:
        assert read.lost + len(read.items) == n - cursor


def test_flows_rate_over_the_last_minute() -> None:
    now = 1000 * SEC
    # 120 flows one per half second over the last minute, then older ones
    times = [now - i * SEC // 2 for i in range(120)] + [now - 70 * SEC, now - 80 * SEC]
    assert flows_rate(times, now) == pytest.approx(2.0)


def test_flows_rate_when_the_ring_covers_less_than_a_minute() -> None:
    now = 1000 * SEC
    times = [now - i * SEC for i in range(10)]  # 10 flows over 9 s, nothing older held
    assert flows_rate(times, now) == pytest.approx(10 / 9)
    assert flows_rate([], now) == 0.0


def _ring(n: int, capacity: int = 15) -> FlowRing:
    ring: FlowRing = FlowRing(capacity)
    for i in range(n):
        ring.append(pod_flow(i))
    return ring


def _ports(flows: list) -> list[int]:
    return [f.l4.TCP.source_port - 40000 for f in flows]


ALL = compile_filters()


def test_last_n_is_the_newest_n_oldest_first() -> None:
    flows, cursor = stored_flows(_ring(10), FlowQuery(ALL, number=3))
    assert _ports(flows) == [7, 8, 9] and cursor == 10


def test_first_n_is_the_oldest_n() -> None:
    flows, _ = stored_flows(_ring(20), FlowQuery(ALL, number=3, first=True))
    assert _ports(flows) == [5, 6, 7]  # 20 flows in a ring of 15: 0-4 are gone


def test_no_number_no_follow_is_everything_held() -> None:
    flows, _ = stored_flows(_ring(20), FlowQuery(ALL))
    assert _ports(flows) == list(range(5, 20))


def test_follow_without_number_starts_now() -> None:
    flows, cursor = stored_flows(_ring(4), FlowQuery(ALL, follow=True))
    assert flows == [] and cursor == 4


def test_since_and_until_bound_the_answer() -> None:
    q = FlowQuery(ALL, since_ns=BASE_NS + 3 * SEC, until_ns=BASE_NS + 5 * SEC)
    assert _ports(stored_flows(_ring(10), q)[0]) == [3, 4, 5]
    q = FlowQuery(ALL, number=2, since_ns=BASE_NS + 3 * SEC, until_ns=BASE_NS + 8 * SEC)
    assert _ports(stored_flows(_ring(10), q)[0]) == [7, 8]
    q = FlowQuery(ALL, number=2, first=True, since_ns=BASE_NS + 3 * SEC)
    assert _ports(stored_flows(_ring(10), q)[0]) == [3, 4]


def test_last_n_counts_matching_flows_only() -> None:
    from hexlane.hubble.api.flow import flow_pb2

    odd = compile_filters([flow_pb2.FlowFilter(source_port=[str(40000 + i) for i in (1, 3, 5)])])
    assert _ports(stored_flows(_ring(10), FlowQuery(odd, number=2))[0]) == [3, 5]
