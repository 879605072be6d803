"""The relay's merge of many nodes' flows (hexlane.hubble.merge), pure: the stored flows in
time order with `number`/`first` across the cluster, and the follow mode's sort buffer:
nothing lost or doubled, nothing held past the window, in time order when the nodes keep
up, and a silent node holding nothing back longer than the window."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.hubble.merge import SortBuffer, merge_history

MS = 1_000_000
W = 20 * MS


def test_history_merges_by_time_and_selects_across_nodes() -> None:
    node1 = [(1, "a"), (4, "a"), (7, "a")]
    node2 = [(2, "b"), (3, "b"), (9, "b")]
    key = lambda x: x[0]  # noqa: E731
    assert [t for t, _ in merge_history([node1, node2], key)] == [1, 2, 3, 4, 7, 9]
    assert [t for t, _ in merge_history([node1, node2], key, number=2)] == [7, 9]
    assert [t for t, _ in merge_history([node1, node2], key, number=2, first=True)] == [1, 2]


def test_a_flow_leaves_at_once_when_every_other_node_is_past_it() -> None:
    buf: SortBuffer[str] = SortBuffer(W, 100)
    buf.set_nodes({"n1", "n2"})
    buf.push("n1", 10, "n1@10", now_ns=0)
    assert buf.pop_ready(0) == []  # n2 could still send something earlier
    buf.push("n2", 12, "n2@12", now_ns=1)
    assert buf.pop_ready(1) == ["n1@10"]  # n2 is past 10; n1 is not past 12
    assert buf.deadline() == 1 + W


def test_a_silent_node_holds_flows_back_for_the_window_only() -> None:
    buf: SortBuffer[str] = SortBuffer(W, 100)
    buf.set_nodes({"n1", "silent"})
    buf.push("n1", 10, "a", now_ns=0)
    buf.push("n1", 11, "b", now_ns=5 * MS)
    assert buf.pop_ready(W - 1) == []
    assert buf.pop_ready(W) == ["a"]
    assert buf.pop_ready(5 * MS + W) == ["b"]
    assert buf.deadline() is None


def test_a_node_leaving_releases_what_waited_for_it() -> None:
    buf: SortBuffer[str] = SortBuffer(W, 100)
    buf.set_nodes({"n1", "gone"})
    buf.push("n1", 10, "a", now_ns=0)
    assert buf.pop_ready(1) == []
    buf.set_nodes({"n1"})
    assert buf.pop_ready(1) == ["a"]


def test_an_expired_flow_takes_every_earlier_flow_with_it_in_order() -> None:
    buf: SortBuffer[str] = SortBuffer(W, 100)
    buf.set_nodes({"n1", "n2", "n3"})
    buf.push("n1", 50, "later", now_ns=0)
    buf.push("n2", 20, "earlier", now_ns=10 * MS)
    assert buf.pop_ready(W) == ["earlier", "later"]


def test_more_than_max_len_held_sends_the_earliest() -> None:
    buf: SortBuffer[int] = SortBuffer(W, 3)
    buf.set_nodes({"n1", "n2"})
    for t in (5, 1, 3, 4):
        buf.push("n1", t, t, now_ns=0)
    assert buf.pop_ready(0) == [1]
    assert len(buf) == 3
    assert buf.drain() == [3, 4, 5]


streams = st.lists(st.lists(st.integers(0, 10_000), max_size=30).map(sorted),
                   min_size=1, max_size=4)


@settings(max_examples=200, deadline=None)
@given(streams, st.data())
def test_nothing_lost_or_doubled_and_nothing_held_past_the_window(
        per_node: list[list[int]], data: st.DataObject) -> None:
    """Arrivals interleave the nodes in any order, at any pace: every flow comes out exactly
    once, none waits more than W after it arrived, and (each node in time order) the output
    is in time order whenever the nodes' streams all arrive within W of each other."""
    buf: SortBuffer[tuple[int, str, int]] = SortBuffer(W, 1000)
    names = [f"n{i}" for i in range(len(per_node))]
    buf.set_nodes(names)
    cursors = [0] * len(per_node)
    now, out = 0, []
    pending = sum(map(len, per_node))
    while pending:
        i = data.draw(st.sampled_from([k for k, s in enumerate(per_node)
                                       if cursors[k] < len(s)]))
        now += data.draw(st.integers(0, W // 2))
        t = per_node[i][cursors[i]]
        buf.push(names[i], t, (t, names[i], cursors[i]), now)
        cursors[i] += 1
        pending -= 1
        out += buf.pop_ready(now)
        deadline = buf.deadline()
        assert deadline is None or deadline > now  # nothing overdue stays
    out += buf.pop_ready(now + W)
    assert len(buf) == 0
    expected = sorted((t, names[i], k) for i, s in enumerate(per_node) for k, t in enumerate(s))
    assert sorted(out) == expected


@settings(max_examples=200, deadline=None)
@given(streams, st.data())
def test_in_time_order_when_every_node_keeps_up(per_node: list[list[int]],
                                                  data: st.DataObject) -> None:
    """With no time passing (all nodes send within the window), the output is exactly the
    time order, however the nodes' flows interleave on arrival."""
    buf: SortBuffer[int] = SortBuffer(W, 10_000)
    names = [f"n{i}" for i in range(len(per_node))]
    buf.set_nodes(names)
    cursors = [0] * len(per_node)
    out: list[int] = []
    while any(c < len(s) for c, s in zip(cursors, per_node, strict=True)):
        i = data.draw(st.sampled_from([k for k, s in enumerate(per_node)
                                       if cursors[k] < len(s)]))
        buf.push(names[i], per_node[i][cursors[i]], per_node[i][cursors[i]], 0)
        cursors[i] += 1
        out += buf.pop_ready(0)
    out += buf.drain()
    assert out == sorted(out)
