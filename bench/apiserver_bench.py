"""Benchmark of the embedded apiserver, side by side with its storage limit, in one run.

1. raw SQLite: durable commits of the same rows the apiserver stores (WAL,
   synchronous=FULL, one transaction per row) — the limit for durable writes on this disk;
2. durable creates per second over HTTPS from concurrent clients against `hexlane apiserver`
   (each acknowledged only once committed), and the ratio to (1) — target >= 1.0x (issue 21:
   writes that arrive together share one commit);
3. list latency with 10,000 objects in the namespace (full list, and a 500-item page);
4. watch delivery latency while creates run at the rate measured in (2): to one bare watcher,
   then to 20 watchers — target: the 20 watchers' p99 at most 2x the bare watcher's (the
   fan-out costs little) and < 100 ms; then 20 watchers at half the rate. Time from sending
   the create to each watcher reading its ADDED event, p50/p99; also the creates' own latency
   (send to durable acknowledgement) and delivery minus that acknowledgement, which tell
   queueing in the durable write path apart from the fan-out. The watchers run in a process
   of their own;
5. the status-write ceiling: `--services` ClusterIP Services created, then one merge PATCH
   of each one's `/status` (a condition) from the concurrent clients, each answered once
   durable: status PATCHes per second.

Run: `.venv/bin/python bench/apiserver_bench.py [--objects 10000] [--clients 32]
[--services 5000] [--profile DIR]`; `--profile` records the server with py-spy (a dev
dependency) during the durable creates and the status PATCHes, as collapsed stacks
(`DIR/creates.txt`, `DIR/status.txt`: one stack and its sample count a line). To measure
another checkout's server, put its `src` first on PYTHONPATH (the server runs as
`python -m hexlane.cli.main apiserver`). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import re
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

DATA = {"key": "x" * 200}


def raw_sqlite(path: Path, rows: int) -> float:
    """Durable single-row commits per second, the same row shape as the apiserver's."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE objects (resource TEXT NOT NULL, namespace TEXT NOT NULL, "
               "name TEXT NOT NULL, rv INTEGER NOT NULL, data TEXT NOT NULL, "
               "PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID")
    start = time.perf_counter()
    for i in range(rows):
        obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {
            "name": f"raw-{i}", "namespace": "bench", "uid": f"{i:032x}",
            "resourceVersion": str(i + 1), "creationTimestamp": "2026-01-01T00:00:00Z",
            "generation": 1}, "data": DATA}
        db.execute("BEGIN")
        db.execute("INSERT INTO objects VALUES (?,?,?,?,?)",
                   ("core/configmaps", "bench", f"raw-{i}", i + 1,
                    json.dumps(obj, separators=(",", ":"))))
        db.execute("COMMIT")
    elapsed = time.perf_counter() - start
    db.close()
    return rows / elapsed


class Profile:
    """py-spy recording the server process while a phase runs (no-op without a dir)."""

    def __init__(self, directory: Path | None, server: Server, name: str) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        spy = Path(sys.executable).with_name("py-spy")
        self.proc = subprocess.Popen(
            [str(spy), "record", "--pid", str(server.proc.pid), "--format", "raw", "--rate",
             "200", "--nonblocking", "--output", str(directory / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # py-spy attaches

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
            self.proc.wait(timeout=60)


class Server:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        kubeconfig = data_dir / "kubeconfig"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "apiserver", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not kubeconfig.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the apiserver did not start")
            time.sleep(0.05)
        config = yaml.safe_load(kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        self.headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}",
                        "Content-Type": "application/json", "Accept": "application/json"}
        self.ssl = ssl.create_default_context(cafile=str(data_dir / "tls.crt"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def _cm(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name},
            "data": DATA}


async def creates(session: aiohttp.ClientSession, server: Server, ns: str, names: list[str],
                  clients: int) -> float:
    queue: asyncio.Queue[str] = asyncio.Queue()
    for n in names:
        queue.put_nowait(n)
    await _warm_up(session, server, clients)
    url = f"{server.url}/api/v1/namespaces/{ns}/configmaps"

    async def worker() -> None:
        while not queue.empty():
            name = queue.get_nowait()
            async with session.post(url, json=_cm(name)) as resp:
                await resp.read()
                assert resp.status == 201, resp.status

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(names) / (time.perf_counter() - start)


async def list_latency(session: aiohttp.ClientSession, server: Server, ns: str,
                       query: str, rounds: int = 5) -> tuple[float, int]:
    times, count = [], 0
    for _ in range(rounds):
        start = time.perf_counter()
        async with session.get(f"{server.url}/api/v1/namespaces/{ns}/configmaps{query}") as r:
            body = await r.read()
        times.append(time.perf_counter() - start)
        count = len(json.loads(body)["items"])
    return statistics.median(times) * 1000, count


def _watchers_process(url: str, headers: dict[str, str], cafile: str, count: int,
                      expected: int, ready: Any, results: Any) -> None:
    """Run in its own process, so reading 20 streams does not slow the writer down: each
    watcher timestamps every ADDED event against the send time the writer put in the
    object (wall clock, shared by both processes)."""
    stamp = re.compile(rb'"sent":"([0-9.]+)"')
    name_re = re.compile(rb'"name":"(lat-\d+)"')

    async def main() -> list[tuple[str, float, float]]:
        latencies: list[tuple[str, float, float]] = []
        opened = 0
        connector = aiohttp.TCPConnector(ssl=ssl.create_default_context(cafile=cafile),
                                         limit=0)
        async with aiohttp.ClientSession(headers=headers, connector=connector) as session:

            async def watcher() -> None:
                nonlocal opened
                async with session.get(f"{url}?watch=1&resourceVersion=0"
                                       "&allowWatchBookmarks=true",
                                       timeout=aiohttp.ClientTimeout(total=None)) as resp:
                    opened += 1
                    if opened == count:
                        ready.set()
                    seen = 0
                    async for line in resp.content:
                        now = time.time()
                        if not line.startswith(b'{"type":"ADDED"'):
                            continue
                        m = stamp.search(line)
                        n = name_re.search(line)
                        if m and n:
                            latencies.append((n.group(1).decode(), now - float(m.group(1)),
                                              now))
                            seen += 1
                            if seen >= expected:
                                return

            await asyncio.wait_for(asyncio.gather(*(watcher() for _ in range(count))),
                                   expected / 10 + 120)
        return latencies

    results.put(asyncio.run(main()))


async def watch_latency(session: aiohttp.ClientSession, server: Server, ns: str, rate: float,
                        watchers: int, seconds: float, clients: int
                        ) -> tuple[list[float], list[float], list[float]]:
    """Delivery latencies (send of the create to a watcher reading its ADDED event), the
    creates' own latencies (send to durable acknowledgement), and delivery relative to the
    acknowledgement (negative: the watcher had the event before the writer had its answer;
    this is the fan-out's own share)."""
    expected = int(rate * seconds)
    url = f"{server.url}/api/v1/namespaces/{ns}/configmaps"
    ctx = multiprocessing.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_watchers_process, args=(
        url, server.headers, str(server.data_dir / "tls.crt"), watchers, expected, ready,
        results))
    proc.start()
    await asyncio.get_running_loop().run_in_executor(None, ready.wait, 60)
    await asyncio.sleep(0.5)  # let the initial state drain
    await _warm_up(session, server, clients)
    interval = 1.0 / rate
    start = time.perf_counter()
    sem = asyncio.Semaphore(clients)
    writes: list[float] = []
    acked: dict[str, float] = {}

    async def one(i: int) -> None:
        async with sem:
            body = _cm(f"lat-{i}")
            t0 = time.perf_counter()
            body["data"] = {**DATA, "sent": repr(time.time())}
            async with session.post(url, json=body) as resp:
                await resp.read()
            acked[f"lat-{i}"] = time.time()
            writes.append(time.perf_counter() - t0)

    posts = []
    for i in range(expected):
        delay = start + i * interval - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        posts.append(asyncio.create_task(one(i)))
    await asyncio.gather(*posts)
    deliveries = await asyncio.get_running_loop().run_in_executor(None, results.get)
    proc.join(timeout=30)
    after_ack = [received - acked[name] for name, _, received in deliveries if name in acked]
    return [lat for _, lat, _ in deliveries], writes, after_ack


def _service(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
            "spec": {"selector": {"app": name}, "ports": [{"port": 80, "protocol": "TCP"}]}}


async def concurrently(clients: int, items: list[str],
                       one: Callable[[str], Awaitable[None]]) -> float:
    """Run `one(item)` for every item from `clients` concurrent workers: items per second."""
    queue: asyncio.Queue[str] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await one(queue.get_nowait())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(items) / (time.perf_counter() - start)


async def status_writes(session: aiohttp.ClientSession, server: Server, ns: str,
                        services: int, clients: int,
                        profile_dir: Path | None = None) -> tuple[float, float]:
    """Services created per second, then status PATCHes per second (one per Service, each a
    real change: a condition the Service did not have)."""
    url = f"{server.url}/api/v1/namespaces/{ns}/services"
    names = [f"svc-{i:05d}" for i in range(services)]

    async def create(name: str) -> None:
        async with session.post(url, json=_service(name)) as resp:
            body = await resp.read()
            assert resp.status == 201, body

    body = json.dumps({"status": {"conditions": [{
        "type": "bench.hexlane.io/Touched", "status": "True", "reason": "Bench",
        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}})
    headers = {"Content-Type": "application/merge-patch+json"}

    async def touch(name: str) -> None:
        async with session.patch(f"{url}/{name}/status", data=body, headers=headers) as resp:
            answer = await resp.read()
            assert resp.status == 200, answer
            assert b"bench.hexlane.io/Touched" in answer

    await _warm_up(session, server, clients)
    created = await concurrently(clients, names, create)
    profile = Profile(profile_dir, server, "status")
    patched = await concurrently(clients, names, touch)
    profile.stop()
    return created, patched


async def _warm_up(session: aiohttp.ClientSession, server: Server, clients: int) -> None:
    """Open the client's connection pool (TLS handshakes) before anything is timed."""

    async def one() -> None:
        async with session.get(f"{server.url}/version") as resp:
            await resp.read()

    await asyncio.gather(*(one() for _ in range(clients)))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="hexlane-bench-") as tmp:
        tmpdir = Path(tmp)
        raw_rows = min(args.objects, 3000)
        raw = raw_sqlite(tmpdir / "raw.db", raw_rows)
        server = Server(tmpdir / "server")
        try:
            conn = aiohttp.TCPConnector(ssl=server.ssl, limit=0, keepalive_timeout=600)
            async with aiohttp.ClientSession(headers=server.headers, connector=conn) as session:
                async with session.post(f"{server.url}/api/v1/namespaces",
                                        json={"metadata": {"name": "bench"}}) as r:
                    assert r.status == 201
                names = [f"obj-{i:05d}" for i in range(args.objects)]
                await _warm_up(session, server, args.clients)
                profile = Profile(args.profile, server, "creates")
                rate = await creates(session, server, "bench", names, args.clients)
                profile.stop()
                full_ms, count = await list_latency(session, server, "bench", "")
                page_ms, _ = await list_latency(session, server, "bench", "?limit=500")
                watch_runs = []
                for fraction, watchers in ((1.0, 1), (1.0, args.watchers), (0.5, args.watchers)):
                    ns = f"lat{int(fraction * 100)}w{watchers}"
                    async with session.post(f"{server.url}/api/v1/namespaces",
                                            json={"metadata": {"name": ns}}) as r:
                        assert r.status == 201
                    watch_runs.append((fraction, watchers, await watch_latency(
                        session, server, ns, rate * fraction, watchers, args.seconds,
                        args.clients)))
                async with session.post(f"{server.url}/api/v1/namespaces",
                                        json={"metadata": {"name": "svc"}}) as r:
                    assert r.status == 201
                svc_rate, status_rate = await status_writes(session, server, "svc",
                                                            args.services, args.clients,
                                                            args.profile)
        finally:
            server.stop()
    print(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"cpus: {os.cpu_count()}, load average at the end: "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, python {sys.version.split()[0]}")
    print(f"raw SQLite durable commits (WAL, synchronous=FULL, 1 row/commit): "
          f"{raw:.0f}/s over {raw_rows} rows")
    print(f"HTTPS durable creates ({args.clients} concurrent clients, {args.objects} objects): "
          f"{rate:.0f}/s  ratio to raw SQLite: {rate / raw:.2f}x (target >= 1.0x)")
    print(f"list of {count} objects: {full_ms:.0f} ms (median of 5); page of 500: "
          f"{page_ms:.1f} ms")
    for fraction, watchers, (lat, writes, after_ack) in watch_runs:
        print(f"watch delivery to {watchers} watchers at {rate * fraction:.0f} creates/s "
              f"({fraction:.0%} of the measured rate) for {args.seconds:.0f} s ({len(lat)} "
              f"deliveries): p50 {_pct(lat, 0.5):.1f} ms, p99 {_pct(lat, 0.99):.1f} ms from "
              "sending the create (target p99 < 100 ms)")
        print(f"  the create itself (send to durable ack): p50 {_pct(writes, 0.5):.1f} ms, "
              f"p99 {_pct(writes, 0.99):.1f} ms; delivery minus the writer's ack: p50 "
              f"{_pct(after_ack, 0.5):.1f} ms, p99 {_pct(after_ack, 0.99):.1f} ms")
    bare = _pct(watch_runs[0][2][0], 0.99)
    many = _pct(watch_runs[1][2][0], 0.99)
    print(f"watch p99 at the measured rate, {args.watchers} watchers / 1 bare watcher: "
          f"{many:.1f} / {bare:.1f} ms = {many / bare:.2f}x (target <= 2x)")
    print(f"status-write ceiling ({args.clients} concurrent clients, {args.services} Services "
          f"created at {svc_rate:.0f}/s): {status_rate:.0f} status PATCH/s, each durable")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--watchers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--services", type=int, default=5000)
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the server with py-spy into this directory")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
