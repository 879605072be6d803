"""Hubble benchmark: the new-connection rate with flow events off and on, and what ingesting costs.

The topology of bench/datapath_bench.py (a client, a node, a backend pod on an lxc veth, in
namespaces only) with one LoadBalancer Service, hl_from_netdev on the node's client-facing
interface and hl_from_pod on the pod's veth. The client opens new TCP connections as fast as
it can (connect, one byte, answer, RST close: bench/c/connrate.c) to the Service's LB IP.

Side by side, `--repeat` rounds interleaved:
- off: flow events off (hubble.enabled false: the programs skip every event);
- on: events on, and an ingester reading them as the agent does: the same code path
  (`hexlane.agent.hubble.HubbleObserver`: the ring read through the map's memory, each batch
  handed to a FlowStore of 4095 as pending flows, built when read), in a process of its own
  competing for the same CPUs;
- datapath only: events on and nobody reading (the programs' own cost);
- metrics: as "on", with Hubble metrics on in the ingester (`--metrics`, default the seeds'
  list): every flow built as it is drained and counted by the handlers.

Printed: the rate with Hubble on / off (target >= 0.95x), events emitted, received and lost
over the "on" rounds (target: lost 0 and received + lost = emitted), the ingester's CPU
seconds per 1,000 events read, and per 1,000 flows built when a reader asks for the whole
ring at the end of each round (checked to name the backend pods); with metrics, the
ingester's CPU seconds per 1,000 flows built and counted (every event received is, once the
ingester has finished the batch in hand), and what the ring lost meanwhile.

Run as root: `.venv/bin/python bench/hubble_bench.py [--seconds 5] [--threads 8]
[--repeat 3] [--metrics dns:query;ignoreAAAA,drop,...] [-o json]`. Not part of the test
suite.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from datapath_bench import (
    C_SOURCE,
    NODE_IP,
    POD_IPS,
    TARGET_PORT,
    build_topology,
    lb_ip,
    measure,
    objects,
)

from hexlane.agent.hubble import HubbleObserver
from hexlane.agent.loadbalancer import ServiceReconciler
from hexlane.config.hubble_metrics import parse_metric_list
from hexlane.datapath import libbpf
from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.datapath.events import (
    EVENTS_MAP,
    EVENTS_STATS_MAP,
    EventReader,
    HlEventsStats,
    read_stats,
    trace_config,
)
from hexlane.datapath.lb.loader import (
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_POD,
    TC_HANDLE,
    TC_PRIORITY,
    LbDatapath,
)
from hexlane.hubble.filters import compile_filters
from hexlane.hubble.metrics import HubbleMetrics
from hexlane.hubble.reading import FlowQuery
from hexlane.hubble.store import FlowStore
from hexlane.lab.netns import Topology, netns_path, run_in_netns
from hexlane.lb.services import LbSettings


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def start_observer(bpf_root: Path, sink: Any, metrics: Any = None) -> HubbleObserver:
    """An ingester's observer, as the agent's, reading the pinned ring into `sink`; it knows
    the backend pods and the node by name."""
    events = libbpf.Map.from_pin(bpf_root / EVENTS_MAP)
    stats = libbpf.Map.from_pin(bpf_root / EVENTS_STATS_MAP, key_type=ctypes.c_uint32,
                                value_type=HlEventsStats)
    observer = HubbleObserver("node", {}, sink, metrics=metrics,
                              services=lambda a, p, proto: ("bench", "svc0"))
    for i, ip in enumerate(POD_IPS):
        observer.endpoints.set_pod({
            "metadata": {"name": f"backend-{i}", "namespace": "bench",
                         "labels": {"app": "backend"}},
            "spec": {"nodeName": "node"}, "status": {"podIP": ip}})
    observer.endpoints.set_node({"metadata": {"name": "node"}, "status": {
        "addresses": [{"type": "InternalIP", "address": NODE_IP}]}})
    observer.start(events, stats, [])
    return observer


async def stdin_closed() -> None:
    """Until the benchmark closes the ingester's stdin (the end of a round)."""
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def closed() -> None:
        loop.remove_reader(sys.stdin.fileno())  # at EOF it stays readable: once is enough
        done.set()

    loop.add_reader(sys.stdin.fileno(), closed)
    await done.wait()


def load_and_attach(t: Topology, bpf_root: Path) -> LbDatapath:
    """The LB programs loaded with one Service (Maglev, table 251), attached in the node:
    hl_from_netdev on the client side, hl_from_pod on the pod's veth."""
    lb = LbDatapath.load(bpf_root, table_size=251)
    rec = ServiceReconciler(lb, "node", settings=LbSettings(algorithm="maglev", table_size=251))
    rec.update(*objects(1))

    def attach() -> None:
        for dev, prog in (("toclient", PROGRAM_FROM_NETDEV), ("lxcbench", PROGRAM_FROM_POD)):
            libbpf.tc_attach(socket.if_nametoindex(dev), lb.program_fd(prog),
                             "ingress", handle=TC_HANDLE, priority=TC_PRIORITY)

    run_in_netns(netns_path(t["node"]), attach)
    return lb


SEED_METRICS = "dns:query;ignoreAAAA,drop,tcp,flow,port-distribution,icmp,http"


async def ingest(bpf_root: Path, metrics_list: str) -> dict[str, Any]:
    """The ingester process: read events until stdin closes; what it read and its CPU."""
    store = FlowStore(4095, node_name="node")
    metrics = None
    if metrics_list:
        specs, _ = parse_metric_list(metrics_list.split(","))
        metrics = HubbleMetrics(specs)
    observer = start_observer(bpf_root, store, metrics)
    ready_cpu = cpu_seconds()
    print("ready", flush=True)
    await stdin_closed()
    await asyncio.sleep(0.3)  # the last events of the round
    observer.drain()
    if metrics is not None:  # the batch the drain task was building and counting
        for _ in range(600):
            if counted(metrics) >= observer.stats().received:
                break
            await asyncio.sleep(0.05)
    cpu = cpu_seconds() - ready_cpu
    received = observer.stats().received
    # What a reader then pays: every flow the ring holds, built (GetFlows of all).
    before = cpu_seconds()
    flows = [f async for f in store.flows(FlowQuery(compile_filters()))
             if not isinstance(f, int)]
    build = cpu_seconds() - before
    named = sum(1 for f in flows if f.destination.pod_name.startswith("backend-")
                or f.source.pod_name.startswith("backend-"))
    observer.close()
    return {"received": received, "cpu_s": round(cpu, 3), "flows_seen": store.seen_flows,
            "built": len(flows), "build_cpu_s": round(build, 4), "named": named,
            "counted": counted(metrics) if metrics is not None else 0}


def counted(metrics: HubbleMetrics) -> int:
    """Flows the `flow` handler counted (every flow it was given)."""
    family = next(f for f in metrics.flows.families if f.name == "hubble_flows_processed")
    return int(sum(family.series.values()))  # type: ignore[arg-type]


def set_events(lb: LbDatapath, on: bool) -> None:
    cfg = trace_config(on=on, pod_cidr=IPv4Network("10.42.1.0/24"), overlay_ifindex=0,
                       host_ifindex=0)
    lb.maps.trace_config.update(ctypes.c_uint32(0), cfg)


def with_ingester(lb: LbDatapath, t: Topology, binary: str, args: argparse.Namespace,
                  bpf_root: Path, metrics: str) -> dict[str, Any]:
    """One round with events on and an ingester (with Hubble metrics when `metrics`)."""
    ingester = subprocess.Popen(
        [sys.executable, __file__, "--ingest", str(bpf_root), "--metrics", metrics],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert ingester.stdout is not None and ingester.stdin is not None
    assert ingester.stdout.readline().strip() == "ready"
    before = read_stats(lb.maps.events_stats)
    set_events(lb, True)
    got = measure(t, binary, lb_ip(0), args.seconds, args.threads)
    set_events(lb, False)
    after = read_stats(lb.maps.events_stats)
    ingester.stdin.close()
    report = json.loads(ingester.stdout.read())
    ingester.wait(timeout=30)
    assert report["named"] == report["built"], "flows must name the backend pod"
    return {**report, "rate": got["rate"], "emitted": after.emitted - before.emitted,
            "lost": after.lost - before.lost}


def bench(binary: str, args: argparse.Namespace, bpf_root: Path) -> dict[str, Any]:
    rounds: dict[str, list[float]] = {"off": [], "on": [], "datapath": [], "metrics": []}
    totals = {mode: dict.fromkeys(("emitted", "received", "lost", "built", "counted", "cpu_s",
                                   "build_cpu_s"), 0.0) for mode in ("on", "metrics")}
    target = lb_ip(0)
    with Topology("hl-hbb") as t:
        build_topology(t)
        server = t.start("pod", [binary, "server", str(TARGET_PORT), "2"],
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lb = load_and_attach(t, bpf_root)
        try:
            for _ in range(args.repeat):
                set_events(lb, False)
                got = measure(t, binary, target, args.seconds, args.threads)
                print(f"  off: {got}", file=sys.stderr, flush=True)
                rounds["off"].append(got["rate"])

                # events on, nobody reading: what the programs' reporting alone costs
                set_events(lb, True)
                got = measure(t, binary, target, args.seconds, args.threads)
                set_events(lb, False)
                print(f"  datapath only: {got}", file=sys.stderr, flush=True)
                rounds["datapath"].append(got["rate"])
                with EventReader(lb.maps.events) as drain:  # empty the ring for the next
                    drain.consume()

                for mode, metrics in (("on", ""), ("metrics", args.metrics)):
                    report = with_ingester(lb, t, binary, args, bpf_root, metrics)
                    print(f"  {mode}: {report}", file=sys.stderr, flush=True)
                    rounds[mode].append(report["rate"])
                    for key in totals[mode]:
                        totals[mode][key] += report[key]
        finally:
            lb.unpin()
            lb.close()

    def ratio(mode: str) -> list[float]:
        return [x / off for x, off in zip(rounds[mode], rounds["off"], strict=True)]

    def per_1000(mode: str, cpu: str, count: str) -> float | None:
        n = totals[mode][count]
        return round(totals[mode][cpu] / n * 1000, 4) if n else None

    on, metrics, datapath = ratio("on"), ratio("metrics"), ratio("datapath")
    return {
        "datapath_only_ratio": round(statistics.median(datapath), 3),
        "off_rate": round(statistics.median(rounds["off"]), 1),
        "on_rate": round(statistics.median(rounds["on"]), 1),
        "on_off_ratio": round(statistics.median(on), 3),
        "on_off_ratio_range": [round(min(on), 3), round(max(on), 3)],
        "metrics_off_ratio": round(statistics.median(metrics), 3),
        "metrics_off_ratio_range": [round(min(metrics), 3), round(max(metrics), 3)],
        "datapath_only_ratio_range": [round(min(datapath), 3), round(max(datapath), 3)],
        "emitted": int(totals["on"]["emitted"]), "received": int(totals["on"]["received"]),
        "lost": int(totals["on"]["lost"]),
        "balanced": totals["on"]["received"] + totals["on"]["lost"]
        == totals["on"]["emitted"],
        "metrics_emitted": int(totals["metrics"]["emitted"]),
        "metrics_received": int(totals["metrics"]["received"]),
        "metrics_lost": int(totals["metrics"]["lost"]),
        "metrics_counted_all": totals["metrics"]["counted"] == totals["metrics"]["received"],
        "cpu_s_per_1000_events": per_1000("on", "cpu_s", "received"),
        "cpu_s_per_1000_flows_built": per_1000("on", "build_cpu_s", "built"),
        "metrics_cpu_s_per_1000_flows": per_1000("metrics", "cpu_s", "counted"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("--metrics", default=SEED_METRICS,
                        help="hubble.metrics.enabled of the metrics rounds, comma-separated "
                             "(default: seed 002's list)")
    parser.add_argument("--ingest", metavar="BPF_ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest:
        print(json.dumps(asyncio.run(ingest(Path(args.ingest), args.metrics))), flush=True)
        return 0
    work = Path(tempfile.mkdtemp(prefix="hexlane-hubblebench-"))
    binary = str(work / "connrate")
    subprocess.run(["cc", "-O2", "-pthread", "-o", binary, str(C_SOURCE)], check=True)
    try:
        with scratch_bpf_dir("hexlane-hubble-bench") as root:
            result = bench(binary, args, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        print(f"new connections/s: Hubble off {result['off_rate']:.0f}, on "
              f"{result['on_rate']:.0f}: {result['on_off_ratio']:.3f}x (rounds "
              f"{result['on_off_ratio_range'][0]:.3f}-{result['on_off_ratio_range'][1]:.3f}; "
              f"target >= 0.95x); events on with nobody reading (the programs' cost alone): "
              f"{result['datapath_only_ratio']:.3f}x (rounds "
              f"{result['datapath_only_ratio_range'][0]:.3f}-"
              f"{result['datapath_only_ratio_range'][1]:.3f}); with Hubble metrics "
              f"{result['metrics_off_ratio']:.3f}x (rounds "
              f"{result['metrics_off_ratio_range'][0]:.3f}-"
              f"{result['metrics_off_ratio_range'][1]:.3f})\n"
              f"events: emitted {result['emitted']}, received {result['received']}, lost "
              f"{result['lost']} (received + lost = emitted: {result['balanced']}; target "
              f"lost 0)\nagent CPU: {result['cpu_s_per_1000_events']} s per 1,000 events read "
              f"(each kept as a flow to build when read); "
              f"{result['cpu_s_per_1000_flows_built']} s per 1,000 flows built for a reader; "
              f"with metrics {result['metrics_cpu_s_per_1000_flows']} s per 1,000 flows "
              f"(each built and counted; every one received counted: "
              f"{result['metrics_counted_all']}; events emitted {result['metrics_emitted']}, "
              f"received {result['metrics_received']}, lost {result['metrics_lost']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
