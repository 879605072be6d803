"""Hubble Relay benchmark: flows a follower gets through the relay against straight from a node,
and the latency the relay adds, against its sort window W.

Every part is a process of its own on this machine (loopback only), so no two share a GIL:

- **replay Observers** (`--replay NODE`): a real Hubble server (`HubbleServer` on a
  `FlowStore` of 4095, 127.0.0.1, plaintext) adding the flows recorded in a real lab
  (bench/data/relay_flows.jsonl.gz, made by bench/relay_record.py) again and again, each
  re-stamped as the agent's flows are: the time now, the replay's node name, a fresh uuid;
- the **relay**: `hexlane hubble relay --peer NODE=127.0.0.1:PORT ...`, the real CLI;
- the **follower**: a grpclib client (`--follow ADDRESS`) asking GetFlows with `follow` and
  counting what comes (flows, `lost_events`, `node_status`), after a warm-up, for a set time.

Throughput, `--repeat` rounds, each: (a) the follower on ONE replay directly, then (b) the
follower on the relay in front of THREE replays; flows/s delivered, the ratio b/a (target
>= 0.8x), and the relay's CPU per 1,000 flows. Replays add flows as fast as their readers
take them: a replay keeps at most half its ring ahead of its slowest follower, so what is
measured is how fast flows can be delivered, not how many a free-running producer can make
for the ring to overwrite (on 2 CPUs, three free-running producers would take the CPU the
relay needs; `--open-loop` runs them that way too, their losses counted as `lost_events`).

Latency, for each W of `--windows` (the relay's `--sort-buffer-drain-timeout`): three
replays at `--rate` flows/s each (1,000), flows added every millisecond (`--batch-ms 50`:
every 50 ms, as the agent hands its flows over), the relay in front of them, and two
followers at once: one on node1's replay directly, one on the relay. Per flow, the follower's
wall clock when it got the flow minus the flow's time (stamped when the replay added it; all
processes read the same CLOCK_REALTIME); p50 and p99 of each, and the relay's added latency
(relay minus direct).

Run: `.venv/bin/python bench/relay_bench.py [--duration 10] [--warmup 2] [--repeat 3]
[--rate 1000] [--batch-ms 1] [--windows 5ms,20ms,100ms] [--open-loop] [--no-throughput]
[-o json]` (`--windows ""`: no latency runs). Figures in docs/benchmarks.md ("Hubble
Relay"). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gzip
import itertools
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

from google.protobuf import json_format
from grpclib.client import Channel

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hubble_bench import cpu_seconds, stdin_closed

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_grpc, observer_pb2
from hexlane.hubble.reading import FlowQuery
from hexlane.hubble.server import HubbleServer
from hexlane.hubble.store import FlowStore

RECORDING = Path(__file__).resolve().parent / "data" / "relay_flows.jsonl.gz"
NODES = ("default/node1", "default/node2", "default/node3")
CAPACITY = 4095
AHEAD = CAPACITY // 2  # flows a paced replay keeps ahead of its slowest follower
REFILL = AHEAD // 2  # ... adding more once the follower is no more than this behind
CHUNK = 64  # flows added between two turns of the event loop
HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]


# --- the replay Observer (its own process) ---------------------------------------------


def recorded_flows(path: Path = RECORDING) -> list[flow_pb2.Flow]:
    """The recording's flows, without what the replay stamps again (time, uuid, node)."""
    flows = []
    with gzip.open(path, "rt") as f:
        for line in f:
            if line.strip():
                response = json_format.Parse(line, observer_pb2.GetFlowsResponse())
                flow = response.flow
                flow.ClearField("time")
                flow.uuid = ""
                flow.node_name = ""
                flows.append(flow)
    return flows


class PacedStore(FlowStore):
    """A FlowStore that knows how far each follower has read, so that a producer can keep
    the ring ahead of the slowest one (`room` is set when it may add more)."""

    def __init__(self, capacity: int, *, node_name: str) -> None:
        super().__init__(capacity, node_name=node_name)
        self.positions: dict[int, int] = {}
        self.room = asyncio.Event()
        self._readers = itertools.count()

    def behind(self) -> int | None:
        """Flows the slowest follower has still to read; None without followers."""
        if not self.positions:
            return None
        return self.seen_flows - min(self.positions.values())

    async def flows(self, query: FlowQuery) -> AsyncIterator[flow_pb2.Flow | int]:
        reader = next(self._readers)
        self.positions[reader] = self.seen_flows
        self.room.set()
        try:
            async for item in super().flows(query):
                self.positions[reader] += item if isinstance(item, int) else 1
                if self.seen_flows - self.positions[reader] <= REFILL:
                    self.room.set()
                yield item
        finally:
            del self.positions[reader]


class Replay:
    """Adds copies of the recorded flows to a store (the store stamps them)."""

    def __init__(self, store: PacedStore, flows: list[flow_pb2.Flow]) -> None:
        self.store = store
        self.flows = itertools.cycle(flows)
        self.added = 0

    def add(self, n: int) -> None:
        for _ in range(n):
            flow = flow_pb2.Flow()
            flow.CopyFrom(next(self.flows))
            self.store.add(flow)
        self.added += n

    async def paced(self) -> None:
        """As fast as the slowest follower reads, the ring never overrun."""
        while True:
            behind = self.store.behind()
            if behind is None or behind >= AHEAD:  # until it is REFILL behind
                self.store.room.clear()
                await self.store.room.wait()
                continue
            self.add(min(CHUNK, AHEAD - behind))
            await asyncio.sleep(0)  # the server's streams send meanwhile

    async def open_loop(self) -> None:
        """As fast as this process can, whoever reads (a slow follower loses flows)."""
        while True:
            self.add(CHUNK)
            await asyncio.sleep(0)

    async def at_rate(self, rate: float, every: float) -> None:
        """`rate` flows a second, those due added every `every` seconds."""
        start = time.monotonic()
        while True:
            due = int((time.monotonic() - start) * rate)
            self.add(due - self.added)
            await asyncio.sleep(every)


async def replay(node: str, mode: str, rate: float, every: float) -> dict[str, Any]:
    """The replay process: serve on 127.0.0.1, say `ready PORT`, add flows until stdin
    closes; what it added and its CPU."""
    # a follower that goes away leaves writes on its closed socket: asyncio warns of each
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    store = PacedStore(CAPACITY, node_name=node)
    server = HubbleServer(store, node, abstract_name=None, listen_address="127.0.0.1:0")
    source = Replay(store, recorded_flows())
    await server.start()
    assert server.tcp_address is not None
    cpu = cpu_seconds()
    producer = asyncio.create_task(
        source.paced() if mode == "paced" else source.open_loop() if mode == "open"
        else source.at_rate(rate, every))
    print(f"ready {server.tcp_address[1]}", flush=True)
    try:
        await stdin_closed()
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        await server.stop()
    return {"node": node, "added": source.added, "cpu_s": round(cpu_seconds() - cpu, 3)}


# --- the follower (its own process) ----------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, round(p / 100 * (len(sorted_values) - 1))))
    return sorted_values[k]


async def follow(address: str, warmup: float, seconds: float, latency: bool
                 ) -> dict[str, Any]:
    """GetFlows with follow from `address`: what came in `seconds` after `warmup`."""
    host, _, port = address.rpartition(":")
    channel = Channel(host, int(port))
    flows = lost = statuses = total = 0
    delays: list[float] = []
    try:
        async with observer_grpc.ObserverStub(channel).GetFlows.open() as stream:
            await stream.send_message(observer_pb2.GetFlowsRequest(follow=True), end=True)
            start = time.monotonic() + warmup
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(warmup + seconds):
                    while True:
                        response = await stream.recv_message()
                        if response is None:
                            break
                        got = time.time_ns()
                        kind = response.WhichOneof("response_types")
                        total += kind == "flow"
                        if time.monotonic() < start:
                            continue
                        if kind == "flow":
                            flows += 1
                            if latency:
                                t = response.time
                                delays.append((got - t.seconds * 1_000_000_000 - t.nanos) / 1e6)
                        elif kind == "lost_events":
                            lost += response.lost_events.num_events_lost
                        elif kind == "node_status":
                            statuses += 1
            measured = time.monotonic() - start
            await stream.cancel()
    finally:
        channel.close()
    out: dict[str, Any] = {"flows": flows, "rate": round(flows / measured, 1),
                           "lost_events": lost, "node_status": statuses, "total": total}
    if latency:
        delays.sort()
        out |= {"p50_ms": round(percentile(delays, 50), 2),
                "p99_ms": round(percentile(delays, 99), 2), "samples": len(delays)}
    return out


# --- the orchestra ---------------------------------------------------------------------


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Replays:
    """Replay processes of `nodes`, each on a port of its own."""

    def __init__(self, nodes: tuple[str, ...], mode: str, rate: float = 0,
                 every: float = 0.001) -> None:
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.ports: dict[str, int] = {}
        self.reports: list[dict[str, Any]] = []
        for node in nodes:
            proc = subprocess.Popen(
                [sys.executable, __file__, "--replay", node, "--mode", mode,
                 "--rate", str(rate), "--every", str(every)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
            self.procs[node] = proc
        for node, proc in self.procs.items():
            assert proc.stdout is not None
            line = proc.stdout.readline().split()
            if line[:1] != ["ready"]:
                self.close()
                raise RuntimeError(f"replay {node} did not start")
            self.ports[node] = int(line[1])

    def address(self, node: str) -> str:
        return f"127.0.0.1:{self.ports[node]}"

    def close(self) -> None:
        for proc in self.procs.values():
            assert proc.stdin is not None and proc.stdout is not None
            if proc.poll() is None:
                proc.stdin.close()
                with contextlib.suppress(json.JSONDecodeError):
                    self.reports.append(json.loads(proc.stdout.read() or "null"))
                proc.wait(timeout=30)

    def __enter__(self) -> Replays:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextlib.contextmanager
def relay(replays: Replays, window: str = "") -> Iterator[tuple[str, int]]:
    """`hexlane hubble relay` in front of the replays, once it reports every node connected:
    (its address, its pid)."""
    port = free_port()
    argv = [*HEXLANE, "hubble", "relay", "--listen-address", f"127.0.0.1:{port}",
            *(f"--peer={node}={replays.address(node)}" for node in replays.procs)]
    if window:
        argv += ["--sort-buffer-drain-timeout", window]
    # a file, not a pipe: a relay with much to say never blocks on it
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=log, text=True)
        address = f"127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 30
            while asyncio.run(connected_nodes(address)) != len(replays.procs):
                if proc.poll() is not None or time.monotonic() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"the relay did not connect to the replays: "
                                       f"{log.read()[-2000:]}")
                time.sleep(0.2)
            yield address, proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def connected_nodes(address: str) -> int:
    host, _, port = address.rpartition(":")
    channel = Channel(host, int(port))
    try:
        status = await asyncio.wait_for(observer_grpc.ObserverStub(channel).ServerStatus(
            observer_pb2.ServerStatusRequest()), 2)
        return int(status.num_connected_nodes.value)
    except (OSError, TimeoutError):
        return -1
    finally:
        channel.close()


def follower(address: str, args: argparse.Namespace, latency: bool = False
             ) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, "--follow", address, "--warmup", str(args.warmup),
         "--duration", str(args.duration), *(["--latency"] if latency else [])],
        stdout=subprocess.PIPE, text=True)


def result_of(proc: subprocess.Popen[str]) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"the follower exited {proc.returncode}")
    return dict(json.loads(out))


def throughput_round(args: argparse.Namespace, mode: str) -> dict[str, Any]:
    with Replays(NODES[:1], mode) as one:
        direct = result_of(follower(one.address(NODES[0]), args))
    with Replays(NODES, mode) as three, relay(three) as (address, pid):
        cpu = process_cpu(pid)
        through = result_of(follower(address, args))
        relay_cpu = process_cpu(pid) - cpu
    direct["replay_cpu_per_1000"] = per_1000(one.reports[0]["cpu_s"], one.reports[0]["added"])
    through["relay_cpu_per_1000"] = per_1000(relay_cpu, through["total"])
    return {"direct": direct, "relay": through,
            "ratio": round(through["rate"] / direct["rate"], 3)}


def per_1000(cpu_s: float, count: int) -> float | None:
    return round(cpu_s / count * 1000, 5) if count else None


def latency_round(args: argparse.Namespace, window: str) -> dict[str, Any]:
    with Replays(NODES, "rate", args.rate, args.batch_ms / 1000) as three, \
            relay(three, window) as (address, _):
        procs = {"direct": follower(three.address(NODES[0]), args, latency=True),
                 "relay": follower(address, args, latency=True)}
        got = {name: result_of(proc) for name, proc in procs.items()}
    got["added_p50_ms"] = round(got["relay"]["p50_ms"] - got["direct"]["p50_ms"], 2)
    got["added_p99_ms"] = round(got["relay"]["p99_ms"] - got["direct"]["p99_ms"], 2)
    return got


def windows(args: argparse.Namespace) -> list[str]:
    return [w for w in args.windows.split(",") if w]


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def spread(values: list[float]) -> dict[str, float]:
    return {"median": round(statistics.median(values), 3), "min": round(min(values), 3),
            "max": round(max(values), 3)}


def repeated(args: argparse.Namespace, what: str, run: Callable[[], dict[str, Any]]
             ) -> list[dict[str, Any]]:
    """`--repeat` rounds of `run`, each shown on stderr as it ends."""
    rounds = []
    for i in range(args.repeat):
        got = run()
        print(f"  {what} {i + 1}: {got}", file=sys.stderr, flush=True)
        rounds.append(got)
    return rounds


def bench(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"load_before": load(), "started": time.strftime(
        "%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    modes = [] if args.no_throughput else ["paced", "open"] if args.open_loop else ["paced"]
    for mode in modes:
        rounds = repeated(args, f"throughput {mode}",
                          functools.partial(throughput_round, args, mode))
        result[f"throughput_{mode}"] = {
            "direct_rate": spread([r["direct"]["rate"] for r in rounds]),
            "relay_rate": spread([r["relay"]["rate"] for r in rounds]),
            "ratio": spread([r["ratio"] for r in rounds]),
            "lost_events_direct": sum(r["direct"]["lost_events"] for r in rounds),
            "lost_events_relay": sum(r["relay"]["lost_events"] for r in rounds),
            "relay_cpu_per_1000": spread([r["relay"]["relay_cpu_per_1000"] for r in rounds]),
            "replay_cpu_per_1000": spread([r["direct"]["replay_cpu_per_1000"]
                                           for r in rounds]),
        }
    result["load_after_throughput"] = load()
    for window in windows(args):
        rounds = repeated(args, f"latency W={window}",
                          functools.partial(latency_round, args, window))
        result[f"latency_{window}"] = {
            key: spread([r[side][p] if side else r[p] for r in rounds])
            for key, side, p in (("direct_p50", "direct", "p50_ms"),
                                 ("direct_p99", "direct", "p99_ms"),
                                 ("relay_p50", "relay", "p50_ms"),
                                 ("relay_p99", "relay", "p99_ms"),
                                 ("added_p50", "", "added_p50_ms"),
                                 ("added_p99", "", "added_p99_ms"))
        } | {"relay_rate": spread([r["relay"]["rate"] for r in rounds]),
             "lost_events": sum(r["relay"]["lost_events"] + r["direct"]["lost_events"]
                                for r in rounds)}
    result["load_after"] = load()
    return result


def print_table(r: dict[str, Any], args: argparse.Namespace) -> None:
    def ms(s: dict[str, float]) -> dict[str, float]:
        return {k: v * 1000 for k, v in s.items()}

    def fig(s: dict[str, float], unit: str = "") -> str:
        return f"{s['median']:,.2f}{unit} ({s['min']:,.2f}-{s['max']:,.2f})"

    print(f"Hubble Relay benchmark, {r['started']}; load average before "
          f"{r['load_before']}, after {r['load_after']}; median (min-max) of {args.repeat}")
    for mode in ("paced", "open"):
        t = r.get(f"throughput_{mode}")
        if t is None:
            continue
        what = ("replays as fast as their reader takes them" if mode == "paced"
                else "replays free-running (open loop)")
        print(f"\nthroughput, {what}, {args.duration:g} s after {args.warmup:g} s warm-up:")
        print(f"  (a) one replay directly      {fig(t['direct_rate'], ' flows/s')}   "
              f"lost_events {t['lost_events_direct']}")
        print(f"  (b) relay, three replays     {fig(t['relay_rate'], ' flows/s')}   "
              f"lost_events {t['lost_events_relay']}")
        print(f"  b/a                          {fig(t['ratio'], 'x')}   target >= 0.8x")
        print(f"  CPU per 1,000 flows: relay {fig(ms(t['relay_cpu_per_1000']), ' ms')}, "
              f"one replay {fig(ms(t['replay_cpu_per_1000']), ' ms')}")
    if not windows(args):
        return
    print(f"\nlatency at {args.rate:g} flows/s per node (three nodes), flows added every "
          f"{args.batch_ms:g} ms; ms from the flow's time to the follower:")
    print(f"  {'W':>6}  {'direct p50':>10} {'p99':>8}  {'relay p50':>10} {'p99':>8}  "
          f"{'added p50':>10} {'p99':>8}  lost")
    for window in windows(args):
        s = r[f"latency_{window}"]
        print(f"  {window:>6}  {s['direct_p50']['median']:>10.2f} "
              f"{s['direct_p99']['median']:>8.2f}  {s['relay_p50']['median']:>10.2f} "
              f"{s['relay_p99']['median']:>8.2f}  {s['added_p50']['median']:>10.2f} "
              f"{s['added_p99']['median']:>8.2f}  {s['lost_events']}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=10.0,
                        help="seconds each follower counts, after the warm-up")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1000.0,
                        help="flows/s per node in the latency runs")
    parser.add_argument("--batch-ms", type=float, default=1.0,
                        help="latency runs: add the flows due every this many ms")
    parser.add_argument("--windows", default="5ms,20ms,100ms",
                        help="the relay's sort windows W of the latency runs (\"\": no "
                             "latency runs)")
    parser.add_argument("--open-loop", action="store_true",
                        help="also run the throughput rounds with free-running replays")
    parser.add_argument("--no-throughput", action="store_true",
                        help="the latency runs alone")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("--replay", metavar="NODE", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="paced", help=argparse.SUPPRESS)
    parser.add_argument("--every", type=float, default=0.001, help=argparse.SUPPRESS)
    parser.add_argument("--follow", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--latency", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.replay:
        print(json.dumps(asyncio.run(replay(args.replay, args.mode, args.rate, args.every))),
              flush=True)
        return 0
    if args.follow:
        print(json.dumps(asyncio.run(follow(args.follow, args.warmup, args.duration,
                                            args.latency))), flush=True)
        return 0
    result = bench(args)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print_table(result, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
