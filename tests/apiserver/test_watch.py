"""Watches as informers (lightkube, client-go) use them: initial ADDED events for rv 0,
resuming from a resourceVersion without gaps, MODIFIED/DELETED, BOOKMARK events with
allowWatchBookmarks (and the initial-events-end bookmark of sendInitialEvents), selector
transitions (an object leaving the selection is DELETED), timeoutSeconds, the legacy /watch/
path, and the 410 Expired ERROR event once the resourceVersion is older than --watch-history
(a list at such a resourceVersion, or its continue token, answers 410 too)."""

from __future__ import annotations

import base64
import threading
import time
import uuid
from typing import Any

import pytest

pytestmark = pytest.mark.timeout(120)


def _ns(api: Any) -> str:
    name = f"w-{uuid.uuid4().hex[:8]}"
    assert api.post("/api/v1/namespaces", {"metadata": {"name": name}})[0] == 201
    return name


def _cm(name: str, **labels: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}


def _events(watch: Any, count: int) -> list[dict[str, Any]]:
    out = []
    while len(out) < count:
        ev = watch.next()
        assert ev is not None, f"stream ended after {out}"
        if ev["type"] != "BOOKMARK":
            out.append(ev)
    return out


def test_watch_from_zero_then_changes(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    api.post(path, _cm("a"))
    watch = api.watch(f"{path}?watch=true&resourceVersion=0")
    try:
        assert watch.status == 200
        [first] = _events(watch, 1)
        assert first["type"] == "ADDED" and first["object"]["metadata"]["name"] == "a"
        api.post(path, _cm("b"))
        api.patch(f"{path}/a", {"data": {"k": "w"}})
        api.delete(f"{path}/b")
        evs = _events(watch, 3)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [
            ("ADDED", "b"), ("MODIFIED", "a"), ("DELETED", "b")]
        rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in evs]
        assert rvs == sorted(rvs) and len(set(rvs)) == 3
    finally:
        watch.close()


def test_resume_from_resource_version_misses_nothing(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    _, created = api.post(path, _cm("a"))
    rv = created["metadata"]["resourceVersion"]
    api.post(path, _cm("b"))
    api.delete(f"{path}/a")
    watch = api.watch(f"/api/v1/watch/namespaces/{ns}/configmaps?resourceVersion={rv}")
    try:
        evs = _events(watch, 2)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [
            ("ADDED", "b"), ("DELETED", "a")]
    finally:
        watch.close()


def test_bookmarks_and_initial_events_end(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    api.post(path, _cm("a"))
    watch = api.watch(f"{path}?watch=1&allowWatchBookmarks=true&sendInitialEvents=true"
                      "&resourceVersionMatch=NotOlderThan&resourceVersion=")
    try:
        first = watch.next()
        assert first["type"] == "ADDED"
        end = watch.next()
        assert end["type"] == "BOOKMARK"
        assert end["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}
        # The test server sends periodic bookmarks every 0.5 s.
        periodic = watch.next()
        assert periodic["type"] == "BOOKMARK"
        assert int(periodic["object"]["metadata"]["resourceVersion"]) >= int(
            end["object"]["metadata"]["resourceVersion"])
    finally:
        watch.close()


def test_timeout_seconds_ends_the_stream(api: Any) -> None:
    start = time.monotonic()
    watch = api.watch("/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=0"
                      "&timeoutSeconds=1")
    try:
        while watch.next() is not None:
            pass
    finally:
        watch.close()
    assert 0.9 <= time.monotonic() - start < 5


def test_selector_transitions(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    _, created = api.post(path, _cm("a", role="x"))
    rv = created["metadata"]["resourceVersion"]
    watch = api.watch(f"{path}?watch=1&labelSelector=role%3Dy&resourceVersion={rv}")
    try:
        api.patch(f"{path}/a", {"metadata": {"labels": {"role": "y"}}})
        api.patch(f"{path}/a", {"data": {"k": "2"}})
        api.patch(f"{path}/a", {"metadata": {"labels": {"role": "z"}}})
        api.post(path, _cm("other", role="x"))
        api.post(path, _cm("b", role="y"))
        evs = _events(watch, 4)
        assert [(e["type"], e["object"]["metadata"]["name"]) for e in evs] == [
            ("ADDED", "a"), ("MODIFIED", "a"), ("DELETED", "a"), ("ADDED", "b")]
    finally:
        watch.close()


def test_watch_too_old_gets_410(apiservers: Any) -> None:
    apiserver = apiservers("--watch-history", "5")
    api = apiserver.api
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    _, first = api.post(path, _cm("first"))
    old_rv = first["metadata"]["resourceVersion"]
    api.post(path, _cm("second"))
    _, page = api.get(f"{path}?limit=1")
    assert page["metadata"]["continue"]
    for i in range(10):
        api.post(path, _cm(f"c{i}"))
    watch = api.watch(f"{path}?watch=1&resourceVersion={old_rv}")
    try:
        assert watch.status == 200
        ev = watch.next()
        assert ev["type"] == "ERROR"
        assert ev["object"]["kind"] == "Status"
        assert ev["object"]["code"] == 410 and ev["object"]["reason"] == "Expired"
        assert watch.next() is None
    finally:
        watch.close()
    status, body = api.get(f"{path}?limit=1&continue={page['metadata']['continue']}")
    assert status == 410 and body["reason"] == "Expired"
    # A recent resourceVersion still resumes.
    _, listing = api.get(path)
    rv = listing["metadata"]["resourceVersion"]
    api.delete(f"{path}/c0")
    watch = api.watch(f"{path}?watch=1&resourceVersion={rv}")
    try:
        [ev] = _events(watch, 1)
        assert ev["type"] == "DELETED" and ev["object"]["metadata"]["name"] == "c0"
    finally:
        watch.close()


def _informer_cycle(apiserver: Any, ns: str, *, bookmarks: bool) -> list[str]:
    """A minimal informer: LIST, WATCH from the list's rv, and after the stream ends resume
    from the last rv seen (events or bookmarks), re-LISTing only after a 410. While its
    first watch is open, more changes than the kept history happen elsewhere. Returns what
    it did, in order."""
    api = apiserver.api
    path = f"/api/v1/namespaces/{ns}/configmaps"
    actions = ["list"]
    _, listing = api.get(path)
    rv = listing["metadata"]["resourceVersion"]

    def noise() -> None:
        other = type(api)(api.host, api.port, api.token, apiserver.data_dir / "tls.crt")
        for i in range(6):  # one more than the history of 5
            other.post("/api/v1/namespaces/default/secrets",
                       {"metadata": {"generateName": "noise-"},
                        "data": {"i": base64.b64encode(str(i).encode()).decode()}})
        other.close()

    for round_ in range(2):
        # Long enough for the noise to land while the first watch is open.
        query = f"watch=1&resourceVersion={rv}&timeoutSeconds={3 if round_ == 0 else 1}"
        if bookmarks:
            query += "&allowWatchBookmarks=true"
        watch = api.watch(f"{path}?{query}")
        writer = threading.Thread(target=noise)
        if round_ == 0:
            writer.start()
        try:
            while (ev := watch.next()) is not None:
                if ev["type"] == "ERROR":
                    assert ev["object"]["code"] == 410
                    actions += ["410", "list"]
                    _, listing = api.get(path)
                    rv = listing["metadata"]["resourceVersion"]
                    break
                rv = ev["object"]["metadata"]["resourceVersion"]
        finally:
            watch.close()
            if round_ == 0:
                writer.join()
        actions.append("watch")
    return actions


def test_bookmarks_spare_informers_a_relist(apiservers: Any) -> None:
    """With a short history, an informer on a quiet resource resumes without a 410 thanks
    to bookmarks (periodic, and one just before the watch times out), and the server's
    request counters show exactly one LIST; without bookmarks its resourceVersion goes
    stale and the resume costs a 410 and a second LIST."""
    apiserver = apiservers("--watch-history", "5", "--bookmark-interval", "0.2")
    ns = _ns(apiserver.api)
    before = apiserver.metrics().get(("list", "configmaps"), 0)
    assert _informer_cycle(apiserver, ns, bookmarks=True) == ["list", "watch", "watch"]
    assert apiserver.metrics()[("list", "configmaps")] - before == 1
    assert _informer_cycle(apiserver, ns, bookmarks=False) == ["list", "watch", "410", "list",
                                                            "watch"]
    assert apiserver.metrics()[("list", "configmaps")] - before == 3


def test_legacy_single_object_watch(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    _, a = api.post(path, _cm("a"))
    api.post(path, _cm("b"))
    watch = api.watch(f"/api/v1/watch/namespaces/{ns}/configmaps/a?resourceVersion="
                      f"{a['metadata']['resourceVersion']}")
    try:
        api.patch(f"{path}/b", {"data": {"k": "2"}})
        api.patch(f"{path}/a", {"data": {"k": "3"}})
        [ev] = _events(watch, 1)
        assert ev["type"] == "MODIFIED" and ev["object"]["metadata"]["name"] == "a"
    finally:
        watch.close()
