"""L7 visibility benchmark: HTTP request rate, the agent's CPU per flow, L7 records on and off.

The topology of bench/datapath_bench.py (a client, a node, a backend pod on an lxc veth, in
namespaces only), one LoadBalancer Service on port 80 (an HTTP port) to the pod's 8080,
hl_from_netdev on the node's client-facing interface and hl_from_pod on the pod's veth. The
client makes HTTP/1.1 requests as fast as it can, one connection each (connect, GET, 200,
close: bench/c/connrate.c with CONNRATE_HTTP=1). The client is not a pod, so each request
and response is handed up at the server pod.

Side by side, `--repeat` rounds interleaved, flow events on in both and an ingester reading
them as the agent does (`hexlane.agent.hubble.HubbleObserver` in a process of its own, every
flow built as it is read, as Hubble metrics need):
- off: hubble.l7.enabled false (L3/L4 traces only);
- on: L7 records on (each request and response also handed up, read, paired, made a flow).

Printed: requests/s on / off; flows per request; the ingester's CPU seconds per 1,000 flows
and per 1,000 requests, on and off.

Run as root: `.venv/bin/python bench/l7_bench.py [--seconds 5] [--threads 8] [--repeat 3]
[-o json]`. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
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
    TARGET_PORT,
    build_topology,
    lb_ip,
    measure,
)
from hubble_bench import cpu_seconds, load_and_attach, start_observer, stdin_closed

from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.datapath.events import (
    EventReader,
    l7_port_entries,
    read_stats,
    trace_config,
)
from hexlane.datapath.lb.loader import (
    LbDatapath,
)
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.store import PendingFlows
from hexlane.lab.netns import Topology


class BuildEvery:
    """A sink that builds every flow as it comes (what Hubble metrics make the agent do)."""

    def __init__(self) -> None:
        self.flows = self.l7 = self.paired = 0

    def add_pending(self, batch: PendingFlows) -> None:
        for i in range(len(batch)):
            f = batch.flow(i)
            self.flows += 1
            if f.Type == flow_pb2.L7:
                self.l7 += 1
                self.paired += f.l7.latency_ns > 0


async def ingest(bpf_root: Path) -> dict[str, Any]:
    """The ingester process: read events until stdin closes; what it read and its CPU."""
    sink = BuildEvery()
    observer = start_observer(bpf_root, sink)
    ready_cpu = cpu_seconds()
    print("ready", flush=True)
    await stdin_closed()
    await asyncio.sleep(0.3)
    observer.drain()
    cpu = cpu_seconds() - ready_cpu
    stats_now = observer.stats()
    observer.close()
    return {"received": stats_now.received, "cpu_s": round(cpu, 3),
            "flows": sink.flows, "l7": sink.l7, "paired": sink.paired,
            "unreadable": observer.l7.errors}


def set_events(lb: LbDatapath, on: bool, l7: bool) -> None:
    cfg = trace_config(on=on, pod_cidr=IPv4Network("10.42.1.0/24"), overlay_ifindex=0,
                       host_ifindex=0, l7=l7, cluster_cidr=IPv4Network("10.42.0.0/16"))
    lb.maps.trace_config.update(ctypes.c_uint32(0), cfg)


def bench(binary: str, args: argparse.Namespace, bpf_root: Path) -> dict[str, Any]:
    rounds: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    target = lb_ip(0)
    with Topology("hl-l7b") as t:
        build_topology(t)
        server = t.start("pod", [binary, "server", str(TARGET_PORT), "2"],
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lb = load_and_attach(t, bpf_root)
        try:
            for key, value in l7_port_entries([53], [80, 8080]).items():
                lb.maps.l7_ports.update(key, value)
            for _ in range(args.repeat):
                for mode in ("off", "on"):
                    with EventReader(lb.maps.events) as drain:
                        drain.consume()
                    ingester = subprocess.Popen(
                        [sys.executable, __file__, "--ingest", str(bpf_root)],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                    assert ingester.stdout is not None and ingester.stdin is not None
                    assert ingester.stdout.readline().strip() == "ready"
                    before = read_stats(lb.maps.events_stats)
                    set_events(lb, True, mode == "on")
                    got = measure(t, binary, target, args.seconds, args.threads)
                    set_events(lb, False, False)
                    after = read_stats(lb.maps.events_stats)
                    got["lost"] = after.lost - before.lost
                    ingester.stdin.close()
                    report = json.loads(ingester.stdout.read())
                    ingester.wait(timeout=30)
                    print(f"  {mode}: {got} ingester {report}", file=sys.stderr, flush=True)
                    rounds[mode].append({**got, **report})
        finally:
            lb.unpin()
            lb.close()

    def per(mode: str, num: str, den: str) -> float:
        return round(statistics.median(r[num] / r[den] * 1000 for r in rounds[mode]), 4)

    ratios = [on["rate"] / off["rate"] for on, off in zip(rounds["on"], rounds["off"],
                                                          strict=True)]
    on_l7 = rounds["on"]
    return {
        "off_rate": round(statistics.median(r["rate"] for r in rounds["off"]), 1),
        "on_rate": round(statistics.median(r["rate"] for r in on_l7), 1),
        "on_off_ratio": round(statistics.median(ratios), 3),
        "on_off_ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        "flows_per_request_off": round(statistics.median(r["flows"] / r["conns"]
                                                         for r in rounds["off"]), 2),
        "flows_per_request_on": round(statistics.median(r["flows"] / r["conns"]
                                                        for r in on_l7), 2),
        "l7_per_request_on": round(statistics.median(r["l7"] / r["conns"] for r in on_l7), 2),
        "responses_paired": sum(r["paired"] for r in on_l7),
        "lost_off": sum(r["lost"] for r in rounds["off"]),
        "lost_on": sum(r["lost"] for r in on_l7),
        "unreadable": sum(r["unreadable"] for r in on_l7),
        "cpu_s_per_1000_flows_off": per("off", "cpu_s", "flows"),
        "cpu_s_per_1000_flows_on": per("on", "cpu_s", "flows"),
        "cpu_s_per_1000_requests_off": per("off", "cpu_s", "conns"),
        "cpu_s_per_1000_requests_on": per("on", "cpu_s", "conns"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("--ingest", metavar="BPF_ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.ingest:
        print(json.dumps(asyncio.run(ingest(Path(args.ingest)))), flush=True)
        return 0
    os.environ["CONNRATE_HTTP"] = "1"
    work = Path(tempfile.mkdtemp(prefix="hexlane-l7bench-"))
    binary = str(work / "connrate")
    subprocess.run(["cc", "-O2", "-pthread", "-o", binary, str(C_SOURCE)], check=True)
    try:
        with scratch_bpf_dir("hexlane-l7-bench") as root:
            result = bench(binary, args, root)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.output == "json":
        print(json.dumps(result, indent=2))
    else:
        r = result
        print(f"HTTP requests/s (one connection each): L7 off {r['off_rate']:.0f}, on "
              f"{r['on_rate']:.0f}: {r['on_off_ratio']:.3f}x (rounds "
              f"{r['on_off_ratio_range'][0]:.3f}-{r['on_off_ratio_range'][1]:.3f})\n"
              f"flows per request: off {r['flows_per_request_off']}, on "
              f"{r['flows_per_request_on']} ({r['l7_per_request_on']} L7); responses paired "
              f"with their request: {r['responses_paired']}; unreadable: {r['unreadable']}; events "
              f"lost (ring full): off {r['lost_off']}, on {r['lost_on']}\n"
              f"agent CPU (read + every flow built): {r['cpu_s_per_1000_flows_off']} s per "
              f"1,000 flows off, {r['cpu_s_per_1000_flows_on']} s on; "
              f"{r['cpu_s_per_1000_requests_off']} s per 1,000 requests off, "
              f"{r['cpu_s_per_1000_requests_on']} s on")
    return 0


if __name__ == "__main__":
    sys.exit(main())
