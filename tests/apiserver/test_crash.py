"""Crash safety: `kill -9` of the apiserver while clients are writing loses no acknowledged
write and never corrupts the database; after a restart every acknowledged object is served
and new resourceVersions are greater than every one handed out before the crash."""

from __future__ import annotations

import sqlite3
import threading
import time
from typing import Any

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def test_kill_9_during_writes_loses_no_acknowledged_write(apiservers: Any,
                                                          tmp_path: Any) -> None:
    data_dir = tmp_path / "crash"
    apiserver = apiservers(data_dir=data_dir)
    acked: dict[str, int] = {}  # name -> resourceVersion of the acknowledged create
    lock = threading.Lock()
    stop = threading.Event()

    def writer(worker: int) -> None:
        api = type(apiserver.api)(apiserver.api.host, apiserver.api.port,
                                  apiserver.api.token, apiserver.api.ctx and data_dir / "tls.crt")
        i = 0
        while not stop.is_set():
            name = f"w{worker}-{i}"
            i += 1
            try:
                status, body = api.post("/api/v1/namespaces/default/configmaps",
                                        {"metadata": {"name": name}, "data": {"i": str(i)}})
            except OSError:
                return  # the server died under us: this create was never acknowledged
            if status == 201:
                with lock:
                    acked[name] = int(body["metadata"]["resourceVersion"])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while len(acked) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    apiserver.kill()  # SIGKILL while the writers are still sending
    stop.set()
    for t in threads:
        t.join(timeout=30)
    assert len(acked) >= 50, "the writers did not get going before the kill"

    with sqlite3.connect(data_dir / "state.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    restarted = apiservers(data_dir=data_dir)
    _, listing = restarted.api.get("/api/v1/namespaces/default/configmaps")
    present = {o["metadata"]["name"]: int(o["metadata"]["resourceVersion"])
               for o in listing["items"]}
    missing = sorted(set(acked) - set(present))
    assert not missing, f"{len(missing)} acknowledged creates lost, e.g. {missing[:5]}"
    for name, rv in acked.items():
        assert present[name] == rv
    status, created = restarted.api.post("/api/v1/namespaces/default/configmaps",
                                         {"metadata": {"name": "after-crash"}})
    assert status == 201
    assert int(created["metadata"]["resourceVersion"]) > max(acked.values())
    assert int(listing["metadata"]["resourceVersion"]) >= max(acked.values())
