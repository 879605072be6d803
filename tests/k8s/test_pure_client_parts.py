"""The client layer's pure parts, without a server or a clock:

- `Backoff`: 250 ms doubling to 5 minutes, reset on success, jitter only stretches (within
  the factor asked for);
- `TokenBucket`: a burst passes at once, then one token per 1/qps seconds; reservations queue
  in order (each waits exactly its share); qps <= 0 is unlimited; and, as a property, over
  any sequence of requests at any times, no window of length T admits more than
  burst + qps*T requests;
- `Cache`: keys, namespace/label/field indexes kept right through puts, replaces and
  removals, and `replace` (a relist) reporting exactly the added, updated and deleted objects.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.k8s.backoff import Backoff
from hexlane.k8s.cache import Cache, by_field, by_label, object_key, split_key
from hexlane.k8s.ratelimit import TokenBucket

# --- backoff --------------------------------------------------------------------------------


def test_backoff_doubles_from_250ms_to_five_minutes_and_resets() -> None:
    b = Backoff()
    delays = [b.next_delay() for _ in range(14)]
    assert delays[:6] == [0.25, 0.5, 1.0, 2.0, 4.0, 8.0]
    assert delays[-1] == 300.0 and max(delays) == 300.0
    assert delays == sorted(delays)
    b.reset()
    assert b.next_delay() == 0.25


def test_backoff_survives_a_long_outage() -> None:
    b = Backoff()
    b.failures = 10_000  # 2**10000 would overflow a float
    assert b.next_delay() == 300.0


@given(st.floats(0.0, 1.0), st.integers(0, 30))
def test_backoff_jitter_stretches_within_its_factor(r: float, failures: int) -> None:
    plain = Backoff(failures=failures).next_delay()
    jittered = Backoff(jitter=0.5, rand=lambda: r, failures=failures).next_delay()
    assert plain <= jittered <= plain * 1.5 + 1e-9


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        Backoff(initial=0)
    with pytest.raises(ValueError):
        Backoff(initial=10, maximum=1)


# --- token bucket ---------------------------------------------------------------------------


def test_burst_passes_then_one_token_per_period() -> None:
    bucket = TokenBucket(qps=5, burst=10, now=100.0)
    waits = [bucket.reserve(100.0) for _ in range(13)]
    assert waits[:10] == [0.0] * 10
    assert waits[10:] == pytest.approx([0.2, 0.4, 0.6])


def test_tokens_refill_with_time_up_to_burst() -> None:
    bucket = TokenBucket(qps=5, burst=10, now=0.0)
    for _ in range(10):
        bucket.reserve(0.0)
    assert bucket.available(0.0) == 0
    assert bucket.available(1.0) == pytest.approx(5.0)
    assert bucket.available(100.0) == 10.0
    assert bucket.reserve(100.0) == 0.0


def test_unlimited_when_qps_is_not_positive() -> None:
    bucket = TokenBucket(qps=0, burst=0, now=0.0)
    assert all(bucket.reserve(0.0) == 0.0 for _ in range(1000))


def test_bucket_rejects_zero_burst_with_a_rate() -> None:
    with pytest.raises(ValueError):
        TokenBucket(qps=5, burst=0, now=0.0)


@settings(max_examples=100)
@given(qps=st.floats(0.5, 50.0), burst=st.integers(1, 20),
       gaps=st.lists(st.floats(0.0, 0.5), min_size=1, max_size=40))
def test_no_window_admits_more_than_burst_plus_rate(qps: float, burst: int,
                                                    gaps: list[float]) -> None:
    bucket = TokenBucket(qps, burst, now=0.0)
    now, admitted = 0.0, []
    for gap in gaps:
        now += gap
        admitted.append(now + bucket.reserve(now))
    # Each request goes when its reservation says: in order, and never faster than allowed.
    assert admitted == sorted(admitted)
    for i, start in enumerate(admitted):
        for j in range(i, len(admitted)):
            window = admitted[j] - start
            assert j - i + 1 <= burst + qps * window + 1e-6


# --- cache ----------------------------------------------------------------------------------


def _obj(name: str, ns: str | None = "default", rv: str = "1", node: str | None = None,
         **labels: str) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "resourceVersion": rv, "labels": labels}
    if ns:
        meta["namespace"] = ns
    spec = {"nodeName": node} if node else {}
    return {"metadata": meta, "spec": spec}


def test_keys_are_client_go_keys() -> None:
    assert object_key(_obj("a")) == "default/a"
    assert object_key(_obj("pool", ns=None)) == "pool"
    assert split_key("default/a") == ("default", "a")
    assert split_key("pool") == (None, "pool")


def test_indexes_follow_changes() -> None:
    cache = Cache({"app": by_label("app"), "node": by_field("spec.nodeName")})
    cache.put(_obj("a", node="n1", app="web"))
    cache.put(_obj("b", node="n1", app="db"))
    cache.put(_obj("c", ns="other", node="n2", app="web"))
    assert [o["metadata"]["name"] for o in cache.by_index("node", "n1")] == ["a", "b"]
    assert [o["metadata"]["name"] for o in cache.by_index("app", "web")] == ["a", "c"]
    assert [o["metadata"]["name"] for o in cache.objects("other")] == ["c"]
    cache.put(_obj("a", rv="2", node="n2", app="db"))  # moved node, relabelled
    assert [o["metadata"]["name"] for o in cache.by_index("node", "n1")] == ["b"]
    assert [o["metadata"]["name"] for o in cache.by_index("node", "n2")] == ["a", "c"]
    assert cache.index_values("app") == ["db", "web"]
    cache.remove("other/c")
    assert cache.by_index("app", "web") == []
    assert cache.index_values("app") == ["db"]
    with pytest.raises(KeyError, match="no index"):
        cache.by_index("zone", "x")


def test_replace_reports_the_difference() -> None:
    cache = Cache()
    for o in (_obj("a"), _obj("b"), _obj("c")):
        cache.put(o)
    added, updated, deleted = cache.replace([_obj("a"), _obj("b", rv="7"), _obj("d")])
    assert [o["metadata"]["name"] for o in added] == ["d"]
    assert [(old["metadata"]["resourceVersion"], new["metadata"]["resourceVersion"])
            for old, new in updated] == [("1", "7")]
    assert [o["metadata"]["name"] for o in deleted] == ["c"]
    assert sorted(cache.keys()) == ["default/a", "default/b", "default/d"]


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from(("n1", "n2", None)),
                          st.booleans()), max_size=40))
def test_index_equals_a_scan(ops: list[tuple[str, str | None, bool]]) -> None:
    cache = Cache({"node": by_field("spec.nodeName")})
    for rv, (name, node, delete) in enumerate(ops):
        if delete:
            cache.remove(f"default/{name}")
        else:
            cache.put(_obj(name, rv=str(rv), node=node))
    for node in ("n1", "n2"):
        scanned = sorted(object_key(o) for o in cache.objects()
                         if o["spec"].get("nodeName") == node)
        assert [object_key(o) for o in cache.by_index("node", node)] == scanned
