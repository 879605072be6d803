"""L2 announcement failover and API load, per election mode (issue 13): Cilium's Lease election
(`l2announcements.election: lease`) against hexlane's own (`hexlane`), in one run.

For each mode of `--modes` (default `lease,hexlane`), in a lab of its own (unique name, always
taken down, also on failure or Ctrl-C):

1. `hexlane lab up --nodes 3 --values examples/seed-000/values.yaml --set
   l2announcements.election=MODE`; lease mode with seed 000's lease timings, which are Cilium's
   defaults (15s/5s/2s, `--lease-timings`), set explicitly. Then seed 000's pool and L2 policy
   (examples/seed-000/cilium-config.yaml), and in namespace `l2bench` one backend per node
   (Deployments `echo-node<i>`, pinned by nodeSelector; the pod on node i carries
   `not-node<j>: "yes"` for every other node j) behind the LoadBalancer Service `echo`, which
   gets an IP from seed 000's pool. The LAN switch gets a static entry for each node's MAC on
   its port (`bridge fdb replace MAC dev p-node<i> master static` in `<lab>-lan`): without it
   the bridge forgets a killed node's MAC when its port goes down and floods the client's
   frames for it to every port, and the other nodes' datapath, which sees every frame on a
   veth, load-balances them although they are addressed to another host (a physical NIC
   would have dropped them), so the client would get through before any failover happened.
2. A probe in the lab's client namespace (one Python process): a new TCP connection to the
   LoadBalancer IP's port 80 every 20 ms, each with a 200 ms timeout; every attempt's start,
   end and result (connected or not) is streamed back with the machine's monotonic clock.
3. Failover, `--kills N` times for each backend placement of `--placements`:
   - `surviving`: the Service selects every pod but the announcer's (`not-<announcer>`), so
     no backend dies with the node: the figure the issue's target is about;
   - `local`: every node's pod is a backend, the killed node's too: connections the new
     announcer sends to the dead backend fail until it is dropped from the Service datapath
     (lease mode: when the Node goes NotReady, `--node-grace` s after its last Lease
     renewal, as Kubernetes; hexlane mode, as the issue asks: by its liveness, within the
     failover time).
   Each round finds the announcer (lease: the holder of the Lease
   `kube-system/cilium-l2announce-l2bench-echo`; hexlane: the one node whose
   `hexlane l2 list -o json` has the IP in `announcements`; in lease mode it must be the one
   node listing it too), waits until the probe has had 1 s without a failure, kills the
   announcer (`hexlane.lab.manager.kill`, what `lab kill` runs, called in this process so no
   interpreter start is timed; attempts begun while it runs are ignored) and measures:
   - outage: from the kill to the end of the first successful connection begun after it
     (the issue's figure);
   - whole: from the kill to the first success of the first 1 s without a failed attempt
     (traffic whole again: the dead backend dropped too). Equal to outage when no backend
     died and nothing flapped.
   Then `hexlane lab revive`, and a wait until the expected endpoints are ready and the probe
   is steady again. A kill whose outage exceeds `--max-outage` (whole: `--node-grace` + 30 s)
   counts as that bound, marked `>`.
4. API load, after the failover rounds: `l2bench/api-<k>` LoadBalancer Services (no selector,
   label `l2bench: api-load`; IPs from seed 000's pool and, once it is used up, a pool of the
   benchmark's, `l2bench-api` 10.0.16.0/22 — outside the LAN, nobody asks for them by ARP,
   the election does not care) added up to each size of `--api-services`. Once all have an IP
   and are announced (or `--api-settle` s passed: lease mode at 500 Services is rate-limited
   by seed 000's `k8sClientRateLimit` and may never get there; the table says how many were
   announced), the apiserver's request counters (`apiserver_request_total` on its
   `/metrics`, resource=leases, every verb) are read twice `--api-window` s apart. The
   baseline row (0) is the lab with only `echo`: kubelets' node Leases, the operator's lock,
   the one announcement Lease.

Prints per mode and placement the median and worst outage and whole recovery, the ratio
hexlane worst / lease median (targets: <= 0.1x, and hexlane's worst < 1 s) when both modes
ran, and the API load table (lease requests/s, above the baseline, per Service, by verb).
Progress goes to stderr.

Run as root: `.venv/bin/python bench/l2_failover.py [--modes lease,hexlane] [--kills 20]
[--placements surviving,local] [--api-services 10,100,500] [--api-window 20]
[--node-grace 40] [--lease-timings 15s,5s,2s] [--keep] [-o json]`. Not part of the test
suite.
`--keep` leaves each lab up afterwards. Duration, measured on the development VM: 20 s for
the lab, per kill about 20 s in lease mode with surviving backends (the failover, the revive,
the wait for steady traffic) and 40 s with a local one (the node grace period), API load 1-5
min (a size whose Services are never all announced waits `--api-settle`): some 25 minutes
for the lease mode with the defaults. A quick check, under 5 minutes: `--modes lease --kills
3 --api-services 10,100`.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hexlane.cli.cmd_status import fetch_status
from hexlane.k8s.client import ApiError, KubeClient, load_client_config
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.lab import manager, netns
from hexlane.lab.manager import LabState, api_request, in_netns

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
SEED = ROOT / "examples" / "seed-000"
NS = "l2bench"
LEASE = f"cilium-l2announce-{NS}-echo"
MODES = ("lease", "hexlane")
PLACEMENTS = ("surviving", "local")
EVERY_S, TIMEOUT_S = 0.020, 0.200  # the probe: a connection every 20 ms, 200 ms each
STEADY_S = 1.0  # "whole" and "steady": this long without a failed attempt
API_POOL = "10.0.16.0/22"

PROBE = r"""
import asyncio, sys, time
ip, port, every, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])

async def attempt(start):
    ok = 0
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
        ok = 1
        writer.close()
    except (OSError, asyncio.TimeoutError):
        pass
    sys.stdout.write(f"{start:.6f} {time.monotonic():.6f} {ok}\n")
    sys.stdout.flush()

async def main():
    pending = set()
    due = time.monotonic()
    while True:
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(attempt(time.monotonic()))
        pending.add(task)
        task.add_done_callback(pending.discard)
        due = max(due + every, time.monotonic() - every)  # fallen behind: no burst

asyncio.run(main())
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hexlane(*args: str, timeout: float = 600, stdin: str | None = None) -> str:
    argv = [sys.executable, "-m", "hexlane.cli.main", *args]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=stdin)
    if done.returncode != 0:
        raise RuntimeError(f"hexlane {' '.join(args)} exited {done.returncode}:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


def poll(what: str, check: Callable[[], T | None], timeout: float,
         interval: float = 0.2) -> T:
    deadline = time.monotonic() + timeout
    last: T | None = None
    err: Exception | None = None
    while time.monotonic() < deadline:
        try:
            last, err = check(), None
        except (ApiError, RuntimeError, OSError) as e:  # the API or an agent busy: again
            last, err = None, e
        if last:
            return last
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f}s waiting for {what} "
                       f"(last: {last!r}{f', {err}' if err else ''})")


def parse_request_counts(text: str) -> dict[tuple[str, str], float]:
    """(verb, resource) -> requests served, from the text of the apiserver's /metrics (as
    tests/helpers/apiserver.py reads it)."""
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in labels_text.split(","))
        key = (labels["verb"].strip('"'), labels["resource"].strip('"'))
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


# --- the workload ---------------------------------------------------------------------------


def workload(nodes: int) -> str:
    docs: list[dict[str, Any]] = [{"apiVersion": "v1", "kind": "Namespace",
                                   "metadata": {"name": NS}}]
    for i in range(1, nodes + 1):
        labels = {"app": "echo", **{f"not-node{j}": "yes" for j in range(1, nodes + 1)
                                    if j != i}}
        docs.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": f"echo-node{i}", "namespace": NS},
            "spec": {"replicas": 1,
                     "selector": {"matchLabels": {"app": "echo", "pinned": f"node{i}"}},
                     "template": {
                         "metadata": {"labels": {**labels, "pinned": f"node{i}"}},
                         "spec": {"nodeSelector": {"kubernetes.io/hostname": f"node{i}"},
                                  "terminationGracePeriodSeconds": 2,
                                  "containers": [{"name": "echo", "image": "hexlane/workload",
                                                  "ports": [{"containerPort": 80}]}]}}}})
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "echo", "namespace": NS},
                 "spec": {"type": "LoadBalancer", "selector": {"app": "echo"},
                          "ports": [{"port": 80, "targetPort": 80}]}})
    docs.append({"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                 "metadata": {"name": "l2bench-api"},
                 "spec": {"blocks": [{"cidr": API_POOL}],
                          "serviceSelector": {"matchLabels": {"l2bench": "api-load"}}}})
    return yaml.safe_dump_all(docs, sort_keys=False)


def api_service(k: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"api-{k}", "namespace": NS, "labels": {"l2bench": "api-load"}},
            "spec": {"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                     "ports": [{"port": 80, "targetPort": 80}]}}


# --- the probe ------------------------------------------------------------------------------


class Probe:
    """The connection loop in the client namespace, its attempts collected as (start, end,
    ok) in a list a reader thread appends to."""

    def __init__(self, client_ns: str, ip: str) -> None:
        self.attempts: list[tuple[float, float, bool]] = []
        self.proc = netns.popen(client_ns, [sys.executable, "-c", PROBE, ip, "80",
                                            str(EVERY_S), str(TIMEOUT_S)],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                start_new_session=True)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            start, end, ok = line.split()
            self.attempts.append((float(start), float(end), ok == "1"))

    def stop(self) -> None:
        netns.stop_process(self.proc)

    def since(self, t: float) -> list[tuple[float, float, bool]]:
        """Finished attempts begun at or after t, by start."""
        return sorted(a for a in list(self.attempts) if a[0] >= t)

    def steady(self) -> bool:
        """The last STEADY_S s of finished attempts all connected (and there were some)."""
        now = time.monotonic()
        window = [a for a in self.since(now - STEADY_S - TIMEOUT_S - 0.05)
                  if a[0] <= now - TIMEOUT_S - 0.05]
        return len(window) >= STEADY_S / EVERY_S * 0.8 and all(a[2] for a in window)

    def first_success(self, t: float) -> float | None:
        ok = [a for a in self.since(t) if a[2]]
        return min(a[1] for a in ok) if ok else None

    def whole_again(self, t: float) -> float | None:
        """The end of the first success begun after t that starts STEADY_S s of attempts
        without a failure (complete: the window's attempts have all finished)."""
        attempts = self.since(t)
        last_start = attempts[-1][0] if attempts else 0.0
        for i, (start, end, ok) in enumerate(attempts):
            if not ok:
                continue
            if start + STEADY_S > last_start:
                return None  # the window is not complete yet
            window = [a for a in attempts[i:] if a[0] <= start + STEADY_S]
            if all(a[2] for a in window):
                return end
        return None


# --- one lab --------------------------------------------------------------------------------


class BenchLab:
    def __init__(self, mode: str, args: argparse.Namespace) -> None:
        self.mode, self.args = mode, args
        self.name = f"l2b{secrets.token_hex(2)}"
        self.nodes = [f"node{i}" for i in range(1, 4)]
        self.state: LabState | None = None
        self.probe: Probe | None = None
        self.ip = ""
        self.pool_ips: dict[str, str] = {}
        self.macs: dict[str, str] = {}

    @property
    def plan(self) -> Any:
        assert self.state is not None
        return self.state.plan

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        return hexlane("lab", "kubectl", "--name", self.name, "--", *args, stdin=stdin,
                       timeout=120)

    def api(self, method: str, path: str, body: Any = None) -> Any:
        return api_request(self.plan, method, path, body=body, timeout=10)

    # -- up and down ---------------------------------------------------------------------

    def up(self) -> None:
        sets = [f"l2announcements.election={self.mode}"]
        if self.mode == "lease":
            duration, renew, retry = self.args.lease_timings.split(",")
            sets += [f"l2announcements.leaseDuration={duration}",
                     f"l2announcements.leaseRenewDeadline={renew}",
                     f"l2announcements.leaseRetryPeriod={retry}"]
        log(f"{self.mode}: lab {self.name} up (3 nodes, seed 000, {', '.join(sets)})")
        hexlane("lab", "up", "--name", self.name, "--nodes", "3", "--values",
                str(SEED / "values.yaml"), *[a for s in sets for a in ("--set", s)],
                "--node-monitor-grace-period", str(self.args.node_grace))
        self.state = LabState.load(self.name)
        self.kubectl("apply", "-f", str(SEED / "cilium-config.yaml"))
        self.kubectl("apply", "-f", "-", stdin=workload(len(self.nodes)))
        self.macs = {n: self._mac(n) for n in self.nodes}
        for node, mac in self.macs.items():
            netns.run(self.plan.lan_netns, ["bridge", "fdb", "replace", mac, "dev",
                                            self.plan.host(node).port, "master", "static"])
        self.ip = poll("echo's LoadBalancer IP", lambda: self._ingress("echo"), 60)
        self.pool_ips = poll("a ready pod on every node", self._pod_ips, 90)
        log(f"{self.mode}: LoadBalancer IP {self.ip}, backends {self.pool_ips}")

    def down(self) -> None:
        if self.probe is not None:
            self.probe.stop()
            self.probe = None
        log(f"{self.mode}: lab {self.name} down")
        subprocess.run([sys.executable, "-m", "hexlane.cli.main", "lab", "down", "--name",
                        self.name], capture_output=True, timeout=120, check=False)

    def _mac(self, node: str) -> str:
        out = netns.run(self.plan.netns(node), ["ip", "-j", "link", "show",
                                                self.plan.host(node).ifname]).stdout
        return str(json.loads(out)[0]["address"]).lower()

    def client_neighbour(self) -> str:
        """The node whose MAC the client's ARP entry for the IP holds ("" if none)."""
        out = netns.run(self.plan.client.netns, ["ip", "-j", "neigh", "show", self.ip],
                        check=False).stdout
        macs = {str(e.get("lladdr", "")).lower() for e in json.loads(out or "[]")}
        return next((n for n, m in self.macs.items() if m in macs), "")

    def _ingress(self, name: str) -> str:
        svc = self.api("GET", f"/api/v1/namespaces/{NS}/services/{name}")
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return str(ingress[0].get("ip") or "") if ingress else ""

    def _pod_ips(self) -> dict[str, str] | None:
        pods = self.api("GET", f"/api/v1/namespaces/{NS}/pods?labelSelector=app%3Decho")
        out = {}
        for p in pods.get("items") or []:
            ready = any(c["type"] == "Ready" and c["status"] == "True"
                        for c in (p.get("status") or {}).get("conditions") or [])
            if ready and not p["metadata"].get("deletionTimestamp") and p["status"].get("podIP"):
                out[p["spec"]["nodeName"]] = p["status"]["podIP"]
        return out if sorted(out) == self.nodes else None

    # -- who announces ---------------------------------------------------------------------

    def l2(self, node: str) -> dict[str, Any]:
        """What `hexlane l2 list -o json` prints in the node (its agent's status' l2 part)."""
        state_dir = manager.node_env(self.plan, node)["HEXLANE_STATE_DIR"]
        status = in_netns(self.plan.netns(node), lambda: fetch_status(state_dir, 5.0))
        return dict(status.get("l2") or {})

    def listing(self, ip: str) -> list[str]:
        """The nodes whose agent says it announces `ip`."""
        return [n for n in self.nodes
                if any(a["ip"] == ip for a in self.l2(n).get("announcements") or [])]

    def announcer(self) -> str | None:
        listing = self.listing(self.ip)
        if len(listing) != 1:
            return None
        if self.mode == "lease":
            lease = self.api("GET", "/apis/coordination.k8s.io/v1/namespaces/kube-system/"
                             f"leases/{LEASE}")
            holder = (lease.get("spec") or {}).get("holderIdentity") or ""
            return holder if holder == listing[0] else None
        return listing[0]

    # -- backends ----------------------------------------------------------------------------

    def select(self, placement: str, victim: str) -> dict[str, str]:
        """Point the Service at the placement's backends; their node -> pod IP."""
        selector = {"app": "echo"}
        if placement == "surviving":
            selector[f"not-{victim}"] = "yes"
        for _ in range(10):  # the operator writes the Service's status meanwhile: retry
            svc = self.api("GET", f"/api/v1/namespaces/{NS}/services/echo")
            if svc["spec"].get("selector") == selector:
                break
            svc["spec"]["selector"] = selector
            try:
                self.api("PUT", f"/api/v1/namespaces/{NS}/services/echo", body=svc)
                break
            except ApiError as e:
                if e.code != 409:
                    raise
        ips = poll("the backends' pods ready", self._pod_ips, 120)
        return {n: ip for n, ip in ips.items() if placement == "local" or n != victim}

    def endpoints_are(self, expected: dict[str, str]) -> bool:
        slices = self.api("GET", f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
                          "?labelSelector=kubernetes.io%2Fservice-name%3Decho")
        ready = {e["addresses"][0] for s in slices.get("items") or []
                 for e in s.get("endpoints") or [] if (e.get("conditions") or {}).get("ready")}
        return ready == set(expected.values())

    # -- failover --------------------------------------------------------------------------

    def failover(self, placement: str, kills: int) -> list[dict[str, Any]]:
        probe = self.probe
        assert probe is not None
        rounds: list[dict[str, Any]] = []
        max_outage, max_whole = self.args.max_outage, self.args.node_grace + 30.0
        while len(rounds) < kills:
            victim = poll("one announcer", self.announcer, 90)
            expected = self.select(placement, victim)
            poll(f"endpoints {sorted(expected.values())}",
                 functools.partial(self.endpoints_are, expected), 60)
            poll("the probe steady", probe.steady, 90, 0.1)
            if self.announcer() != victim:
                continue  # it moved meanwhile: choose again
            arp = self.client_neighbour()
            if arp != victim:
                log(f"{self.mode}: the client's ARP entry names {arp or 'no node'}, not the "
                    f"announcer {victim}")
            t0 = time.monotonic()
            manager.kill(self.name, victim)
            t1 = time.monotonic()
            first = poll_quiet(functools.partial(probe.first_success, t1), t0 + max_outage)
            whole = poll_quiet(functools.partial(probe.whole_again, t1), t0 + max_whole)
            outage = round(first - t0, 3) if first is not None else max_outage
            back = round(whole - t0, 3) if whole is not None else max_whole
            rounds.append({"victim": victim, "client_arp": arp,
                           "kill_ms": round((t1 - t0) * 1000, 1),
                           "outage_s": outage, "outage_capped": first is None,
                           "whole_s": back, "whole_capped": whole is None})
            log(f"{self.mode} {placement} kill {len(rounds)}/{kills}: {victim} "
                f"(kill took {(t1 - t0) * 1000:.0f} ms), outage "
                f"{fmt_s(outage, first is None)}, whole {fmt_s(back, whole is None)}")
            hexlane("lab", "revive", "--name", self.name, victim, timeout=300)
            poll("every pod ready again", self._pod_ips, 120)
        return rounds

    def run_failover(self) -> dict[str, list[dict[str, Any]]]:
        self.probe = Probe(self.plan.client.netns, self.ip)
        poll("the probe's first connections", self.probe.steady, 90, 0.1)
        out = {}
        try:
            for placement in self.args.placements:
                out[placement] = self.failover(placement, self.args.kills)
        finally:
            self.probe.stop()
            self.probe = None
        return out

    # -- API load ------------------------------------------------------------------------------

    def metrics(self) -> dict[tuple[str, str], float]:
        async def go() -> str:
            client = KubeClient(load_client_config(None, self.plan.dir / "kubeconfig"),
                                RateLimiter(50, 100), timeout=10)
            try:
                return await client.text("/metrics")
            finally:
                await client.aclose()
        return parse_request_counts(in_netns(self.plan.client.netns, lambda: asyncio.run(go())))

    def create_api_services(self, first: int, last: int) -> None:
        async def go() -> None:
            client = KubeClient(load_client_config(None, self.plan.dir / "kubeconfig"),
                                RateLimiter(500, 500), timeout=30)
            gate = asyncio.Semaphore(16)

            async def one(k: int) -> None:
                async with gate:
                    try:
                        await client.request("POST", f"/api/v1/namespaces/{NS}/services",
                                             body=api_service(k))
                    except ApiError as e:
                        if e.code != 409:
                            raise
            try:
                await asyncio.gather(*(one(k) for k in range(first, last)))
            finally:
                await client.aclose()
        in_netns(self.plan.client.netns, lambda: asyncio.run(go()))

    def api_ips(self, at_least: int = 0) -> dict[str, str] | None:
        """The API-load Services' IPs (name -> IP), when at least `at_least` have one."""
        items = self.api("GET", f"/api/v1/namespaces/{NS}/services?labelSelector="
                         "l2bench%3Dapi-load").get("items") or []
        out = {}
        for s in items:
            ingress = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
            if ingress and ingress[0].get("ip"):
                out[s["metadata"]["name"]] = str(ingress[0]["ip"])
        return out if len(out) >= at_least else None

    def all_announced(self, ips: set[str]) -> bool:
        return self.announced(ips) == len(ips)

    def announced(self, ips: set[str]) -> int:
        held: set[str] = set()
        for n in self.nodes:
            held |= {a["ip"] for a in self.l2(n).get("announcements") or []}
        return len(ips & held)

    def api_load(self, sizes: Sequence[int]) -> list[dict[str, Any]]:
        rows = []
        have = 0
        for size in [0, *sizes]:
            if size > have:
                log(f"{self.mode}: {size} API-load Services")
                self.create_api_services(have, size)
                have = size
            ips: dict[str, str] = {}
            if size:
                ips = poll(f"{size} Services with an IP",
                           functools.partial(self.api_ips, size), 120, 1.0)
                wanted = set(ips.values())
                try:
                    poll(f"{size} Services announced",
                         functools.partial(self.all_announced, wanted), self.args.api_settle,
                         1.0)
                except RuntimeError as e:
                    log(f"{self.mode}: {e}; measuring anyway")
                time.sleep(self.args.api_quiet)  # the creation's own burst of Lease writes
            before, t0 = self.metrics(), time.monotonic()
            time.sleep(self.args.api_window)
            after, t1 = self.metrics(), time.monotonic()
            verbs = {verb: (after.get((verb, res), 0.0) - before.get((verb, res), 0.0))
                     / (t1 - t0) for verb, res in after if res == "leases"}
            row: dict[str, Any] = {
                "services": size, "leases_rps": round(sum(verbs.values()), 2),
                "by_verb": {v: round(r, 2) for v, r in sorted(verbs.items()) if r},
                "announced": self.announced(set(ips.values())) if size else 0}
            rows.append(row)
            log(f"{self.mode}: {size} Services: {row['leases_rps']:.2f} lease requests/s "
                f"{row['by_verb']} (announced {row['announced']}/{size})")
        base = rows[0]["leases_rps"]
        for row in rows:
            row["above_baseline_rps"] = round(row["leases_rps"] - base, 2)
            row["per_service_rps"] = (round((row["leases_rps"] - base) / row["services"], 3)
                                      if row["services"] else None)
        return rows


def poll_quiet(check: Callable[[], float | None], deadline: float) -> float | None:
    while True:
        result = check()
        if result is not None or time.monotonic() > deadline:
            return result
        time.sleep(0.05)


def fmt_s(value: float, capped: bool = False) -> str:
    return f"{'>' if capped else ''}{value:.2f} s"


# --- the run --------------------------------------------------------------------------------


def run_mode(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    lab = BenchLab(mode, args)
    try:
        lab.up()
        result: dict[str, Any] = {"mode": mode, "lab": lab.name, "ip": lab.ip}
        if args.kills:
            result["failover"] = lab.run_failover()
        if args.api_services:
            result["api"] = lab.api_load(args.api_services)
        return result
    finally:
        if args.keep:
            log(f"{mode}: lab {lab.name} kept (`hexlane lab down --name {lab.name}`)")
        else:
            lab.down()


def summary(rounds: list[dict[str, Any]], key: str) -> tuple[float, float, bool]:
    values = [r[f"{key}_s"] for r in rounds]
    return statistics.median(values), max(values), any(r[f"{key}_capped"] for r in rounds)


def ratios(results: list[dict[str, Any]], placements: Sequence[str]) -> dict[str, Any]:
    """Per placement: hexlane's worst outage over the lease mode's median (both modes ran)."""
    by_mode = {r["mode"]: r for r in results}
    out = {}
    for placement in placements:
        lease = by_mode.get("lease", {}).get("failover", {}).get(placement)
        own = by_mode.get("hexlane", {}).get("failover", {}).get(placement)
        if lease and own:
            worst = summary(own, "outage")[1]
            out[placement] = {"hexlane_worst_over_lease_median":
                              round(worst / summary(lease, "outage")[0], 4),
                              "hexlane_worst_s": worst}
    return out


def report(results: list[dict[str, Any]], args: argparse.Namespace) -> None:
    if args.kills:
        print(f"Failover: a new TCP connection every {EVERY_S * 1000:.0f} ms "
              f"({TIMEOUT_S * 1000:.0f} ms timeout) from the client to the LoadBalancer IP; "
              "outage = kill to the first success, whole = kill to the first 1 s without a "
              "failure")
        print(f"{'mode':<8} {'backends':<10} {'kills':>5} {'outage median':>14} "
              f"{'worst':>9} {'whole median':>13} {'worst':>9}  victims")
        for r in results:
            for placement, rounds in r.get("failover", {}).items():
                om, ow, oc = summary(rounds, "outage")
                wm, ww, wc = summary(rounds, "whole")
                victims = ",".join(x["victim"] for x in rounds)
                print(f"{r['mode']:<8} {placement:<10} {len(rounds):>5} {om:>12.2f} s "
                      f"{fmt_s(ow, oc):>9} {wm:>11.2f} s {fmt_s(ww, wc):>9}  {victims}")
        found = ratios(results, args.placements)
        for placement in args.placements:
            if placement not in found:
                print(f"{placement}: hexlane worst / lease median: n/a (needs both modes)")
                continue
            ratio = found[placement]["hexlane_worst_over_lease_median"]
            worst = found[placement]["hexlane_worst_s"]
            print(f"{placement}: hexlane worst / lease median = {ratio:.3f}x (target <= 0.1x: "
                  f"{'met' if ratio <= 0.1 else 'NOT met'}); hexlane worst {worst:.2f} s "
                  f"(target < 1 s: {'met' if worst < 1 else 'NOT met'})")
    if args.api_services:
        print(f"\nAPI load: apiserver requests/s on resource=leases (all verbs) over "
              f"{args.api_window:.0f} s; baseline = 0 extra Services")
        print(f"{'mode':<8} {'Services':>8} {'leases req/s':>13} {'above base':>11} "
              f"{'per Service':>12} {'announced':>10}  by verb")
        for r in results:
            for row in r.get("api", []):
                per = row["per_service_rps"]
                print(f"{r['mode']:<8} {row['services']:>8} {row['leases_rps']:>13.2f} "
                      f"{row['above_baseline_rps']:>11.2f} "
                      f"{'' if per is None else f'{per:.3f}':>12} "
                      f"{row['announced'] if row['services'] else '':>10}  "
                      f"{row['by_verb']}")
        short = [f"{r['mode']} at {row['services']}" for r in results for row in r.get("api", [])
                 if row["announced"] < row["services"]]
        if short:
            print(f"Not every Service announced ({', '.join(short)}): the agents did not get "
                  "there (rate-limited or stuck: see `hexlane status` in the nodes, with "
                  "--keep); those rows are what they managed, not what the mode asks for.")


def _csv(kind: Callable[[str], T], allowed: Sequence[str] = ()) -> Callable[[str], list[T]]:
    def parse(text: str) -> list[T]:
        items = [s.strip() for s in text.split(",") if s.strip()]
        bad = [s for s in items if allowed and s not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)}: want "
                                             f"{', '.join(allowed)}")
        return [kind(s) for s in items]
    return parse


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", type=_csv(str, MODES), default=list(MODES),
                        help="election modes, each in a lab of its own (lease,hexlane)")
    parser.add_argument("--kills", type=int, default=20, help="kills per placement (20; 0: none)")
    parser.add_argument("--placements", type=_csv(str, PLACEMENTS), default=list(PLACEMENTS),
                        help="backends: surviving (none on the killed node), local (one on "
                             "it); default both")
    parser.add_argument("--api-services", type=_csv(int), default=[10, 100, 500],
                        help="API-load sizes (10,100,500; empty: none)")
    parser.add_argument("--api-window", type=float, default=20.0, metavar="S")
    parser.add_argument("--api-settle", type=float, default=120.0, metavar="S",
                        help="at most this long for a size's Services to be announced")
    parser.add_argument("--api-quiet", type=float, default=5.0, metavar="S",
                        help="wait after they are, before the window")
    parser.add_argument("--node-grace", type=float, default=40.0, metavar="S",
                        help="the lab's node-monitor grace period (40, Kubernetes')")
    parser.add_argument("--lease-timings", default="15s,5s,2s", metavar="D,R,P",
                        help="lease mode: leaseDuration,leaseRenewDeadline,leaseRetryPeriod")
    parser.add_argument("--max-outage", type=float, default=60.0, metavar="S")
    parser.add_argument("--keep", action="store_true",
                        help="leave each lab up afterwards (to look at it; then lab down)")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args()
    args.api_services = sorted(set(args.api_services))
    if os.geteuid() != 0:
        print("error: needs root (the lab)", file=sys.stderr)
        return 1

    def terminate(*_: object) -> None:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    results = [run_mode(mode, args) for mode in args.modes]
    if args.output == "json":
        print(json.dumps({"modes": results, "ratios": ratios(results, args.placements)},
                         indent=2))
    else:
        report(results, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
