"""Benchmark of the operator's LB-IPAM against the apiserver's own write rate, in one run.

1. `hexlane apiserver` with one CiliumLoadBalancerIPPool (a /16) and N LoadBalancer Services
   (`allocateLoadBalancerNodePorts: false`), created with concurrent clients;
2. the apiserver's durable write rate: PATCH of the N Services' `/status` (a neutral
   condition, which LB-IPAM keeps) from concurrent clients, with two watchers reading every
   event as during (3) (the benchmark's own and one in place of the operator's informer) —
   the limit for any status writer;
3. cold start: `hexlane operator` started after the Services exist, with its client rate
   limit set high (`k8sClientRateLimit.operator.qps/burst`); time from starting the process
   until a watcher has seen every Service satisfied (ingress IP and IPAMRequestSatisfied
   True). Services per second against (2) — target >= 0.8x (issue 21). The operator's CPU
   seconds (user + system, from /proc) at that moment, per 1,000 Services satisfied (one
   status write each), is the client stack's cost per write;
4. create-to-status latency of single Services created one after another while the N exist
   and the operator runs: from sending the create to the watcher seeing the Service
   satisfied, p50/p99, against a bare round trip measured alternately in the same loop: the
   create of a Service no controller handles (another `loadBalancerClass`), then on its ack
   the benchmark's own PATCH of an ingress IP and a condition of its own (`BARE`), until the
   watcher sees it — target
   p50 <= 3x the bare p50;
5. cold start again with seed 000's rate limits (`k8sClientRateLimit.qps: 50, burst: 200`,
   which the operator inherits), after clearing every status: the limit must bind exactly,
   >= 0.95x of 50/s (issue 21).

Run: `.venv/bin/python bench/lbipam_bench.py [--services 10000] [--clients 32] [--singles 50]
[--skip-seed-limits] [--profile DIR]` (`--profile`: the cold-start operator runs under
cProfile, its stats written to DIR/operator-high.prof). Not part of the test suite. To
measure another commit's operator with this benchmark, put its `src` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

SATISFIED = "cilium.io/IPAMRequestSatisfied"
# The bare round trip's own condition: LB-IPAM removes its condition from a Service it does
# not handle (as Cilium does), so the bare Services must not carry that one.
BARE = "bench.hexlane.io/Satisfied"
NS = "bench"


class Server:
    """`hexlane apiserver` on a free port, and how to reach it."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "kubeconfig"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "apiserver", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not self.kubeconfig.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise SystemExit("the apiserver did not start")
            time.sleep(0.05)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        self.headers = {"Authorization": f"Bearer {config['users'][0]['user']['token']}",
                        "Accept": "application/json"}
        self.ssl = ssl.create_default_context(cafile=str(data_dir / "tls.crt"))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


class Operator:
    """`hexlane operator` as a process (its log kept for failures)."""

    def __init__(self, server: Server, log: Path, *sets: str, profile: Path | None = None,
                 ) -> None:
        self.log = log
        prefix = ["-m", "cProfile", "-o", str(profile)] if profile else []
        args = [sys.executable, *prefix, "-m", "hexlane.cli.main", "operator", "--kubeconfig",
                str(server.kubeconfig), "--metrics-addr", "off", "--identity", "bench",
                "--set", "ipam.mode=kubernetes"]
        for s in sets:
            args += ["--set", s]
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=out)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def service(name: str, lb_class: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                            "selector": {"app": name},
                            "ports": [{"port": 80, "protocol": "TCP"}]}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NS}, "spec": spec}


def is_satisfied(obj: dict[str, Any]) -> bool:
    status = obj.get("status") or {}
    if not (status.get("loadBalancer") or {}).get("ingress"):
        return False
    return any(c.get("type") in (SATISFIED, BARE) and c.get("status") == "True"
               for c in status.get("conditions") or [])


async def concurrently(clients: int, items: list[Any], job: Any) -> float:
    """Run `job(item)` over `items` with `clients` workers; items per second."""
    queue: asyncio.Queue[Any] = asyncio.Queue()
    for item in items:
        queue.put_nowait(item)

    async def worker() -> None:
        while not queue.empty():
            await job(queue.get_nowait())

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    return len(items) / (time.perf_counter() - start)


class Watcher:
    """Watches the bench namespace's Services; records when each was first seen satisfied."""

    def __init__(self, session: aiohttp.ClientSession, server: Server, rv: str) -> None:
        self.satisfied: dict[str, float] = {}
        self.changed = asyncio.Event()
        self._task = asyncio.create_task(self._run(session, server, rv))

    async def _run(self, session: aiohttp.ClientSession, server: Server, rv: str) -> None:
        url = (f"{server.url}/api/v1/namespaces/{NS}/services?watch=true&resourceVersion={rv}"
               "&timeoutSeconds=3600")
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=None)) as resp:
            async for line in resp.content:
                if not line.strip():
                    continue
                event = json.loads(line)
                obj = event.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                if name and name not in self.satisfied and is_satisfied(obj):
                    self.satisfied[name] = time.perf_counter()
                    self.changed.set()

    async def wait_for(self, names: set[str], timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while not names <= self.satisfied.keys():
            self.changed.clear()
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"{len(names - self.satisfied.keys())} Services not "
                                   "satisfied in time")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                continue

    def stop(self) -> None:
        self._task.cancel()


async def current_rv(session: aiohttp.ClientSession, server: Server) -> str:
    async with session.get(f"{server.url}/api/v1/namespaces/{NS}/services?limit=1") as r:
        return str((await r.json())["metadata"]["resourceVersion"])


async def cold_start(session: aiohttp.ClientSession, server: Server, names: list[str],
                     log: Path, sets: list[str], timeout: float, profile: Path | None = None,
                     ) -> tuple[float, float, Operator]:
    """Seconds until every Service is satisfied, the operator's CPU seconds by then, and
    the operator (still running)."""
    watcher = Watcher(session, server, await current_rv(session, server))
    await asyncio.sleep(0.2)  # the watch is open before the operator starts
    start = time.perf_counter()
    operator = Operator(server, log, *sets, profile=profile)
    try:
        await watcher.wait_for(set(names), timeout)
        cpu = operator.cpu_seconds()
    except TimeoutError as e:
        operator.stop()
        raise SystemExit(f"{e}; operator log:\n{log.read_text()[-3000:]}") from None
    finally:
        watcher.stop()
    return time.perf_counter() - start, cpu, operator


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def run(args: argparse.Namespace) -> None:
    n = args.services

    def emit(line: str) -> None:
        print(line, flush=True)  # as measured: a long run shows its figures early

    emit(f"date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, cpus: "
         f"{os.cpu_count()}, load average at the start: "
         f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}, python {sys.version.split()[0]}")

    with tempfile.TemporaryDirectory(prefix="hexlane-lbipam-bench-") as tmp:
        tmpdir = Path(tmp)
        logs = args.log_dir or tmpdir
        logs.mkdir(parents=True, exist_ok=True)
        server = Server(tmpdir / "server")
        operator: Operator | None = None
        try:
            conn = aiohttp.TCPConnector(ssl=server.ssl, limit=0)
            async with aiohttp.ClientSession(headers=server.headers, connector=conn) as session:
                async with session.post(f"{server.url}/api/v1/namespaces",
                                        json={"metadata": {"name": NS}}) as r:
                    assert r.status == 201, await r.text()
                async with session.post(
                        f"{server.url}/apis/cilium.io/v2alpha1/ciliumloadbalancerippools",
                        json={"apiVersion": "cilium.io/v2alpha1",
                              "kind": "CiliumLoadBalancerIPPool",
                              "metadata": {"name": "bench"},
                              "spec": {"blocks": [{"cidr": "10.200.0.0/16"}]}}) as r:
                    assert r.status == 201, await r.text()
                names = [f"svc-{i:05d}" for i in range(n)]
                url = f"{server.url}/api/v1/namespaces/{NS}/services"

                async def create(name: str) -> None:
                    async with session.post(url, json=service(name)) as resp:
                        assert resp.status == 201, await resp.text()

                create_rate = await concurrently(args.clients, names, create)
                emit(f"{n} LoadBalancer Services created at {create_rate:.0f}/s "
                     f"({args.clients} concurrent clients)")

                async def touch(name: str, status: dict[str, Any]) -> None:
                    async with session.patch(
                            f"{url}/{name}/status", data=json.dumps({"status": status}),
                            headers={"Content-Type": "application/merge-patch+json"}) as resp:
                        assert resp.status == 200, await resp.text()

                neutral = {"conditions": [{
                    "type": "bench.hexlane.io/Touched", "status": "True", "reason": "bench",
                    "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
                # The same watch load as during the cold start: the benchmark's watcher and
                # one standing for the operator's informer, both reading every event.
                rv = await current_rv(session, server)
                watchers = [Watcher(session, server, rv) for _ in range(2)]
                await asyncio.sleep(0.2)
                write_rate = await concurrently(args.clients, names,
                                                lambda name: touch(name, neutral))
                for w in watchers:
                    w.stop()
                emit(f"apiserver durable status writes (PATCH /status, {args.clients} "
                     f"clients, 2 watchers): {write_rate:.0f}/s")

                high = ["k8sClientRateLimit.operator.qps=100000",
                        "k8sClientRateLimit.operator.burst=100000"]
                profile = args.profile / "operator-high.prof" if args.profile else None
                cold, cpu, operator = await cold_start(session, server, names,
                                                       logs / "operator-high.log", high, 600,
                                                       profile)
                cold_rate = n / cold
                emit(f"operator cold start, rate limit 100000/100000: all {n} satisfied in "
                     f"{cold:.1f} s = {cold_rate:.0f} Services/s; ratio to the apiserver's "
                     f"write rate: {cold_rate / write_rate:.2f}x (target >= 0.8x)")
                emit(f"  operator CPU by then: {cpu:.1f} s = {cpu / n * 1000:.2f} CPU s per "
                     "1,000 status writes (process start and the initial list included)")

                # Single Services, one after another, with the N in place.
                latencies: list[float] = []
                acks: list[float] = []
                bare: list[float] = []
                watcher = Watcher(session, server, await current_rv(session, server))
                await asyncio.sleep(0.2)
                satisfied = {"loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]},
                             "conditions": [{"type": BARE, "status": "True",
                                             "reason": "bench", "message": "",
                                             "lastTransitionTime": "2026-01-01T00:00:00Z"}]}
                for i in range(args.singles):
                    # The bare round trip: nothing but the benchmark writes this one.
                    name = f"bare-{i:03d}"
                    sent = time.perf_counter()
                    async with session.post(url, json=service(name, "bench.hexlane.io/none"),
                                            ) as resp:
                        assert resp.status == 201, await resp.text()
                    await touch(name, satisfied)
                    await watcher.wait_for({name}, 60)
                    bare.append(watcher.satisfied[name] - sent)
                    name = f"single-{i:03d}"
                    sent = time.perf_counter()
                    await create(name)
                    acks.append(time.perf_counter() - sent)
                    await watcher.wait_for({name}, 60)
                    latencies.append(watcher.satisfied[name] - sent)
                watcher.stop()
                operator.stop()
                operator = None
                emit(f"create-to-status of {len(latencies)} single Services with {n} in "
                     f"place: p50 {pct(latencies, 0.5):.0f} ms, p99 "
                     f"{pct(latencies, 0.99):.0f} ms, mean "
                     f"{statistics.mean(latencies) * 1000:.0f} ms; bare create + status "
                     f"PATCH until seen: p50 {pct(bare, 0.5):.0f} ms, p99 "
                     f"{pct(bare, 0.99):.0f} ms; ratio of the p50s "
                     f"{pct(latencies, 0.5) / pct(bare, 0.5):.2f}x (target <= 3x)")
                after_ack = [lat - ack for lat, ack in zip(latencies, acks, strict=True)]
                emit(f"  of which the create itself (send to durable ack): p50 "
                     f"{pct(acks, 0.5):.0f} ms; from the create's ack to the status seen "
                     f"(operator run + its status write + watch delivery): p50 "
                     f"{pct(after_ack, 0.5):.0f} ms, p99 {pct(after_ack, 0.99):.0f} ms")

                if not args.skip_seed_limits:
                    cleared = {"loadBalancer": {"ingress": None}, "conditions": None}
                    await concurrently(args.clients, names, lambda name: touch(name, cleared))
                    seed_cold, _cpu, operator = await cold_start(
                        session, server, names, logs / "operator-seed.log",
                        ["k8sClientRateLimit.qps=50", "k8sClientRateLimit.burst=200"], 3600)
                    operator.stop()
                    operator = None
                    # The bucket starts full: at most qps * t + burst requests fit in t s.
                    emit(f"operator cold start, seed 000's limits (qps 50, burst 200): all "
                         f"{n} satisfied in {seed_cold:.1f} s = {n / seed_cold:.1f} "
                         f"Services/s = {n / seed_cold / 50:.3f}x of 50/s (target >= 0.95x; "
                         f"the bound with the burst: {(50 * seed_cold + 200) / seed_cold / 50:.3f}"
                         f"x); ratio to the apiserver's write rate: "
                         f"{n / seed_cold / write_rate:.2f}x")
        finally:
            if operator is not None:
                operator.stop()
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--singles", type=int, default=50)
    parser.add_argument("--log-dir", type=Path, help="keep the operators' logs here")
    parser.add_argument("--skip-seed-limits", action="store_true",
                        help="skip the cold start with seed 000's limits (about N/50 s)")
    parser.add_argument("--profile", type=Path,
                        help="run the cold-start operator under cProfile, stats to this dir")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
