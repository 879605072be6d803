"""Records the flows bench/relay_bench.py replays: a real 2-node lab, varied traffic, every flow
the lab's Hubble Relay holds.

How the recording in bench/data/ was made (and how to make it again, as root):

    .venv/bin/python bench/relay_record.py [--rounds 60] [--out bench/data/relay_flows.jsonl.gz]

1. `hexlane lab up --name rb --nodes 2` (default values: tunnel routing, kube-proxy
   replacement, Hubble with L7 on); an `echo` Deployment of two pods (one per node) behind a
   ClusterIP Service, a Service without endpoints, and a client pod on each node.
2. Each client, `--rounds` times: curls the Service by its DNS name (DNS A and AAAA queries,
   then HTTP through the Service to either backend), a missing path (an HTTP 404), the echo
   pod on the other node directly, the empty Service (refused: a SERVICE_BACKEND_NOT_FOUND
   drop), looks up a name that does not exist (NXDOMAIN) and pings the other echo pod (ICMP).
3. `hexlane lab exec --name rb cp -- hexlane hubble observe --all -o jsonpb` (the lab's relay
   on the control-plane host: both nodes' rings, merged in time order); the flows of the
   traffic's namespace and the DNS flows are kept, one GetFlowsResponse a line, gzip'd.
4. `hexlane lab down --name rb`, also when a step failed.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]
LAB = "rb"
NS = "relay-bench"
DEFAULT_OUT = Path(__file__).resolve().parent / "data" / "relay_flows.jsonl.gz"

CLIENTS = "".join(
    f"apiVersion: v1\nkind: Pod\n"
    f"metadata: {{name: client{i}, namespace: {NS}, labels: {{app: client}}}}\n"
    f"spec: {{nodeName: node{i}, containers: [{{name: client, image: hexlane/workload}}]}}\n"
    "---\n" for i in (1, 2))
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      containers: [{{name: echo, image: hexlane/workload, ports: [{{containerPort: 8080}}]}}]
---
{CLIENTS}
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {NS}}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"""


def lab(*args: str, stdin: str | None = None, timeout: float = 300
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*HEXLANE, "lab", *args], capture_output=True, text=True,
                            input=stdin, timeout=timeout)
    if result.returncode != 0:
        raise RuntimeError(f"hexlane lab {' '.join(args)} exited {result.returncode}: "
                           f"{result.stderr.strip()[-2000:]}")
    return result


def kubectl(*args: str, stdin: str | None = None) -> str:
    return lab("kubectl", "--name", LAB, "--", *args, stdin=stdin, timeout=60).stdout


def running_pods() -> dict[str, dict[str, Any]]:
    items = json.loads(kubectl("get", "pods", "-n", NS, "-o", "json"))["items"]
    return {p["metadata"]["name"]: p for p in items
            if p["status"].get("phase") == "Running" and p["status"].get("podIP")}


def wait_pods(timeout: float = 120) -> dict[str, dict[str, Any]]:
    """The two clients and an echo pod on each node, running."""
    deadline = time.monotonic() + timeout
    while True:
        pods = running_pods()
        echo_nodes = {p["spec"]["nodeName"] for n, p in pods.items() if n.startswith("echo-")}
        if {"client1", "client2"} <= set(pods) and echo_nodes == {"node1", "node2"}:
            return pods
        if time.monotonic() > deadline:
            raise RuntimeError(f"pods not ready in {timeout:g}s: {sorted(pods)}")
        time.sleep(1)


def traffic(pods: dict[str, dict[str, Any]], rounds: int) -> None:
    """Each client's rounds (module docstring), both clients at once."""
    echo_ip = {p["spec"]["nodeName"]: p["status"]["podIP"] for n, p in pods.items()
               if n.startswith("echo-")}
    procs = []
    for client, other in (("client1", "node2"), ("client2", "node1")):
        ip = echo_ip[other]
        script = (f"for i in $(seq {rounds}); do "
                  f"curl -s -m 2 http://echo/; curl -s -m 2 http://echo/missing; "
                  f"curl -s -m 2 http://{ip}:8080/whoami; curl -s -m 1 http://empty/; "
                  f"getent hosts nope-$i.{NS}.svc.cluster.local; ping -c 1 -W 1 {ip}; "
                  f"done >/dev/null 2>&1; echo done")
        procs.append(subprocess.Popen(
            [*HEXLANE, "lab", "exec", "--name", LAB, f"pod/{NS}/{client}", "--", "sh", "-c",
             script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for proc in procs:
        out, err = proc.communicate(timeout=60 + rounds * 10)
        if proc.returncode != 0 or "done" not in out:
            raise RuntimeError(f"traffic failed ({proc.returncode}): {err.strip()[-2000:]}")


def kept(response: dict[str, Any]) -> bool:
    """The traffic's flows and the DNS flows (the cluster DNS is outside the namespace)."""
    flow = response.get("flow")
    if not flow:
        return False
    return (NS in (flow.get("source", {}).get("namespace"),
                   flow.get("destination", {}).get("namespace"))
            or "dns" in flow.get("l7", {}))


def record(rounds: int, out: Path) -> dict[str, Any]:
    status = subprocess.run([*HEXLANE, "lab", "status", "--name", LAB], capture_output=True,
                            text=True, timeout=60)
    if status.returncode != 0:
        lab("up", "--name", LAB, "--nodes", "2", timeout=600)
    try:
        kubectl("apply", "-f", "-", stdin=MANIFESTS)
        pods = wait_pods()
        traffic(pods, rounds)
        time.sleep(1)  # the agents hand flows over every 50 ms
        observed = lab("exec", "--name", LAB, "cp", "--", "hexlane", "hubble", "observe",
                       "--all", "-o", "jsonpb", timeout=120).stdout
    finally:
        lab("down", "--name", LAB, timeout=300)
    lines = [line for line in observed.splitlines()
             if line.strip() and kept(json.loads(line))]
    out.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(out, "wt", compresslevel=9) as f:
        f.write("\n".join(lines) + "\n")
    return summarize([json.loads(line) for line in lines]) | {"bytes": out.stat().st_size}


def summarize(responses: list[dict[str, Any]]) -> dict[str, Any]:
    """What the recording holds: flows per node, verdict and kind."""
    kinds: dict[str, int] = {}
    for r in responses:
        flow = r["flow"]
        l7 = flow.get("l7", {})
        kind = ("dns" if "dns" in l7 else "http" if "http" in l7
                else next(iter(flow.get("l4", {"other": 0}))))
        key = f"{r.get('node_name')} {flow.get('verdict')} {kind}"
        kinds[key] = kinds.get(key, 0) + 1
    return {"flows": len(responses), "kinds": dict(sorted(kinds.items()))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    print(json.dumps(record(args.rounds, args.out), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
