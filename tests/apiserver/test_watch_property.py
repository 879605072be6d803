"""Property: after any random sequence of creates, updates (PUT), merge patches and deletes
over HTTP, a watcher that started at resourceVersion 0 and was cut off at random points
(resuming each time from the last resourceVersion it saw) holds exactly the server's state:
the same objects with the same resourceVersions and data. Resumes never miss or repeat an
event, whatever moment the connection breaks."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = pytest.mark.timeout(300)

NAMES = ("a", "b", "c", "d")
OPS = st.tuples(st.sampled_from(("create", "update", "patch", "delete")),
                st.sampled_from(NAMES), st.integers(0, 9), st.booleans())


class Watcher(threading.Thread):
    """Applies watch events to a local cache; reconnects from its last rv when cut off."""

    def __init__(self, api: Any, path: str) -> None:
        super().__init__(daemon=True)
        self.api, self.path = api, path
        self.cache: dict[str, tuple[str, dict[str, str]]] = {}
        self.last_rv = "0"
        self.stop = threading.Event()
        self.connects = 0
        self.lock = threading.Lock()
        self._watch: Any = None

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                watch = self.api.watch(f"{self.path}?watch=1&allowWatchBookmarks=true"
                                       f"&resourceVersion={self.last_rv}", timeout=30)
            except OSError:
                time.sleep(0.01)
                continue
            with self.lock:
                self._watch = watch
                self.connects += 1
            try:
                while not self.stop.is_set() and (ev := watch.next()) is not None:
                    self._apply(ev)
            except (OSError, ValueError, AttributeError):
                pass  # cut off, possibly mid-line: resume from the last whole event
            finally:
                watch.close()

    def _apply(self, ev: dict[str, Any]) -> None:
        assert ev["type"] != "ERROR", ev
        meta = ev["object"]["metadata"]
        with self.lock:
            if ev["type"] in ("ADDED", "MODIFIED"):
                self.cache[meta["name"]] = (meta["resourceVersion"],
                                            ev["object"].get("data") or {})
            elif ev["type"] == "DELETED":
                self.cache.pop(meta["name"], None)
            self.last_rv = meta["resourceVersion"]

    def cut(self, wait: bool = True) -> None:
        """Break the current connection at whatever point the stream is, and (with `wait`)
        return once the watcher has resumed on a new one."""
        with self.lock:
            watch, before = self._watch, self.connects
        if watch is not None and watch.conn.sock is not None:
            with contextlib.suppress(OSError):
                watch.conn.sock.shutdown(socket.SHUT_RDWR)
        deadline = time.monotonic() + 10
        while wait and time.monotonic() < deadline:
            with self.lock:
                if self.connects > before:
                    return
            time.sleep(0.002)


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(OPS, min_size=1, max_size=25))
def test_reconnecting_watcher_reconstructs_server_state(api: Any,
                                                        ops: list[tuple[str, str, int, bool]]
                                                        ) -> None:
    ns = f"p-{uuid.uuid4().hex[:8]}"
    assert api.post("/api/v1/namespaces", {"metadata": {"name": ns}})[0] == 201
    path = f"/api/v1/namespaces/{ns}/configmaps"
    watcher = Watcher(api, path)
    watcher.start()
    while watcher.connects == 0:
        time.sleep(0.002)
    try:
        for op, name, value, cut_after in ops:
            body = {"metadata": {"name": name}, "data": {"v": str(value)}}
            if op == "create":
                status, _ = api.post(path, body)
                assert status in (201, 409)
            elif op == "update":
                status, _ = api.put(f"{path}/{name}", body)
                assert status in (200, 404)
            elif op == "patch":
                status, _ = api.patch(f"{path}/{name}", {"data": {f"k{value}": "x"}})
                assert status in (200, 404)
            else:
                status, _ = api.delete(f"{path}/{name}")
                assert status in (200, 404)
            if cut_after:
                watcher.cut()
        _, listing = api.get(path)
        want = {o["metadata"]["name"]: (o["metadata"]["resourceVersion"], o.get("data") or {})
                for o in listing["items"]}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with watcher.lock:
                seen = dict(watcher.cache)
            if seen == want:
                break
            time.sleep(0.01)
        assert seen == want
        assert watcher.connects == 1 + sum(1 for op in ops if op[3])
    finally:
        watcher.stop.set()
        watcher.cut(wait=False)
        watcher.join(timeout=10)
        api.delete(f"/api/v1/namespaces/{ns}")
