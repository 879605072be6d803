"""The agent's CPU seconds for one EndpointSlice change among N Services, before and after.

What the agent's services controller does when one EndpointSlice changes, on real pinned
maps (a scratch bpffs), measured with the process CPU clock (median of `--changes` changes,
each to a different Service: one endpoint less, then back):

- the "after" layout (`hexlane.lb.services.LbModel` exists): the changed object is parsed
  once and handed to the model, whose commit recomputes that Service and writes its keys;
- the "before" layout (the parent commits): every cached Service, EndpointSlice and Node is
  parsed again and the whole desired state recomputed and compared (`ServiceReconciler.update`).

The objects start as the JSON dicts an informer cache holds, so parsing is counted as the
agent pays it. `--before REV` runs this same file against a `git worktree` of REV first (its
`src` on PYTHONPATH), then against this tree, back to back, and prints both and the ratio.

Run as root: `.venv/bin/python bench/agent_change_cpu.py --services 10000 [--changes 10]
[--before REV] [-o json]`. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
POD_IPS = ("10.244.0.10", "10.244.0.11")


def raw_service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{i}", "namespace": "bench"},
            "spec": {"type": "LoadBalancer", "clusterIP": f"10.43.{i // 250}.{i % 250 + 1}",
                     "clusterIPs": [f"10.43.{i // 250}.{i % 250 + 1}"],
                     "allocateLoadBalancerNodePorts": False,
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
            "status": {"loadBalancer": {"ingress": [{"ip": f"10.96.{i // 250}.{i % 250 + 1}"}]}}}


def raw_slice(i: int, *, drop: bool = False) -> dict[str, Any]:
    ips = POD_IPS[:1] if drop else POD_IPS
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc{i}-a", "namespace": "bench",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [ip], "nodeName": "node",
                           "conditions": {"ready": True}} for ip in ips],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


RAW_NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node"},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.11"}]}}


def measure(n: int, changes: int) -> dict[str, Any]:
    """Program n Services, then time `changes` single EndpointSlice changes (this process's
    hexlane, whichever layout it has)."""
    from hexlane.agent.loadbalancer import ServiceReconciler
    from hexlane.lb import services as lbs
    from hexlane.model.endpointslice import EndpointSlice
    from hexlane.model.node import Node
    from hexlane.model.service import Service
    try:
        from hexlane.datapath.bpffs import scratch_bpf_dir
        from hexlane.datapath.lb.loader import LbDatapath
    except ImportError:  # before the datapath/lb package
        from hexlane.datapath.loader import LbDatapath, scratch_bpf_dir  # type: ignore

    incremental = hasattr(lbs, "LbModel")
    services = [raw_service(i) for i in range(n)]
    slices = [raw_slice(i) for i in range(n)]
    settings = lbs.LbSettings(algorithm="maglev", table_size=251)
    cpu: list[float] = []
    with scratch_bpf_dir("hexlane-agentcpu") as root:
        lb = LbDatapath.load(root / "lb", table_size=251)
        try:
            rec = ServiceReconciler(lb, "node", settings=settings)
            rec.update([Service.parse(s) for s in services],
                       [EndpointSlice.parse(s) for s in slices], [Node.parse(RAW_NODE)])
            for k in range(changes):
                i = (n // 3 + 7 * (k // 2)) % n
                slices[i] = raw_slice(i, drop=k % 2 == 0)
                begin = time.process_time()
                if incremental:
                    rec.model.set_slice(EndpointSlice.parse(slices[i]))
                    rec.commit()
                else:  # what the agent did then: parse the whole cache, recompute all
                    rec.update([Service.parse(s) for s in services],
                               [EndpointSlice.parse(s) for s in slices],
                               [Node.parse(RAW_NODE)])
                cpu.append(time.process_time() - begin)
        finally:
            lb.unpin()
            lb.close()
    return {"services": n, "incremental": incremental, "changes": changes,
            "cpu_s_median": round(statistics.median(cpu), 5),
            "cpu_s_max": round(max(cpu), 5)}


def run_tree(src: Path, n: int, changes: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, str(HERE), "--services", str(n), "--changes",
                          str(changes), "-o", "json", "--here"], env=env, check=True,
                         capture_output=True, text=True, cwd=src.parent)
    result: dict[str, Any] = json.loads(out.stdout)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--changes", type=int, default=10)
    parser.add_argument("--before", help="a git revision to compare with (e.g. HEAD~1)")
    parser.add_argument("--here", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args()
    if args.here:
        print(json.dumps(measure(args.services, args.changes)))
        return 0
    results: dict[str, Any] = {}
    if args.before:
        with tempfile.TemporaryDirectory(prefix="hexlane-before-") as tmp:
            tree = Path(tmp) / "tree"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree),
                            args.before], check=True, capture_output=True)
            try:
                results["before"] = {"rev": args.before,
                                     **run_tree(tree / "src", args.services, args.changes)}
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                                str(tree)], check=False, capture_output=True)
    results["after"] = run_tree(ROOT / "src", args.services, args.changes)
    if "before" in results:
        results["ratio"] = round(results["after"]["cpu_s_median"]
                                 / results["before"]["cpu_s_median"], 4)
    if args.output == "json":
        print(json.dumps(results, indent=2))
        return 0
    for name in ("before", "after"):
        if name in results:
            r = results[name]
            print(f"{name:>6}{' (' + r['rev'] + ')' if 'rev' in r else ''}: one EndpointSlice "
                  f"change at {r['services']:,} Services: {r['cpu_s_median'] * 1000:.1f} ms CPU "
                  f"(median of {r['changes']}, max {r['cpu_s_max'] * 1000:.1f} ms)")
    if "ratio" in results:
        print(f"after / before: {results['ratio']:.4f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
