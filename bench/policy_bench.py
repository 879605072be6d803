"""Network policy benchmark (issue 19): the datapath's cost of enforcing, and how fast a policy
change is enforced on every node, each against its reference in the same run.

(A) New-connection rate through enforced pods, in namespaces only (the topology of
bench/datapath_bench.py, with two pods): a node, a client pod and a server pod, each on an lxc
veth with a /32 route, the load balancer's programs on both veths as the agent attaches them
(`hexlane.datapath.lb.attach.attachments`: hl_from_pod at ingress, hl_to_pod at egress). The
client opens new TCP connections as fast as it can (bench/c/connrate.c: connect, one byte,
answer, RST close) to the server pod's address. The policy tables are computed by the pure
core exactly as the agent computes them (`hexlane.policy.node.node_policy` over the pods with
their identity label sets from `policy.identity.pod_labels`, then `datapath_tables`) and
written by `hexlane.datapath.policy.PolicyDatapath` (`set` + `flush`). Variants, interleaved
in every round (`--repeat`):

- none: no NetworkPolicy: no pod enforced (no hl_endpoints entry), the ipcache written;
- ingress_N (N in 1 and `--policies`): the server's ingress enforced by N NetworkPolicies
  selecting it: one allows the client on the server's port, each other one allows, on port
  10000+i, the client (even i) or one of 50 other pods' identities (odd i): one real policy
  entry each;
- egress_N (1 and the largest of `--policies`): the same on the client's egress (the server
  and the other pods as destinations).

Every connection is to be decided by the policy: an enforced pod's connection is decided on
its first packet and the verdict kept (a CT_F_POLICY entry), and a closed connection's entry
stays until the agent's conntrack GC (10 s after the RST), so a new connection that reuses its
addresses and ports is passed on the old verdict without a policy lookup. The client's
connect() takes its ports from one parity of the range (about 32,000), which at this rate
come round in about a second: so a measurement of `--seconds` runs in chunks of `--chunk`
(0.75 s), the conntrack map emptied before each; printed is the share of connections decided
(verdict entries created / connections; 1.00 when no port came round). `--keep-conntrack`
measures in one go without emptying (most connections then pass on a reused verdict). Each
round starts one variant later than the one before (none is not always first). The kernel's
own account of the programs' time (BPF_ENABLE_STATS, on for part A only: run_time_ns of
hl_from_pod and hl_to_pod) gives their cost per connection, which other work on the machine
disturbs far less than the rate. Printed:
each variant's rate / none's (the median of each round's ratio to that round's none; target
>= 0.95x, flat in the number of policies), its rate / the same direction's with 1 policy
(flatness, same median of rounds), the programs' ns per connection (against none's), its
policy entries, and the pure core's time to compute the tables. Before measuring, the path is
checked to enforce: with a policy that allows the server another port only, a connection fails
and a policy drop is counted.

(B) Time from a change in the API to what the datapath holds on every node, in a 2-node lab
(`hexlane lab up --name pbXXXX --nodes 2`, the default values, always taken down): a pod on
each node (label app=pb, namespace pbench), then `--changes` pairs, interleaved:

- a policy change: a NetworkPolicy `pol-i` selecting both pods and allowing them from each
  other on TCP 20000+i, timed from just before the create request until the entry it adds
  ({pod, the pods' identity, ingress, TCP, 20000+i}) is in BOTH nodes' pinned hl_policy map;
- a Service change: a ClusterIP Service `svc-i` (selector app=pb: endpoints on both nodes,
  port 30000+i) timed from just before the create until its frontend is in BOTH nodes'
  pinned hl_lb4_services map (also recorded: until it has both backends there).

The maps are read from this process (the lab's node bpf roots, `LabPlan.bpf_root`), polled
every `--poll-ms`; the API calls go from the lab's client host through one client. Printed:
p50 / p99 / max of each, and policy p99 / Service p99 (target <= 1.5x).

Run as root: `.venv/bin/python bench/policy_bench.py [--part a|b|both] [--seconds 3]
[--threads 8] [--repeat 3] [--chunk 0.75] [--keep-conntrack] [--policies 100,1000]
[--changes 100] [--poll-ms 3] [-o json]`.
Not part of the test suite. About 2 minutes for (A) with the defaults, 2-3 for (B).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from hexlane.datapath import libbpf
from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.datapath.lb import view
from hexlane.datapath.lb.attach import attachments
from hexlane.datapath.lb.encode import lb4_key
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, PROGRAM_TO_POD, TC_HANDLE, LbDatapath
from hexlane.datapath.lb.maps import CT_MAP, SERVICES_MAP
from hexlane.datapath.policy import (
    IPCACHE_MAP,
    POLICY_MAP,
    PolicyDatapath,
    ipcache_key,
    policy_key,
)
from hexlane.k8s.client import KubeClient, RateLimiter, load_client_config
from hexlane.lab.manager import LabState
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns
from hexlane.lb.services import FrontendKey
from hexlane.model.netpol import NetworkPolicy
from hexlane.model.node import Pod
from hexlane.policy.identity import LabelSet, pod_labels
from hexlane.policy.maps import INGRESS, PolicyEntry
from hexlane.policy.node import datapath_tables, node_policy
from hexlane.policy.resolve import PodInfo, PodKey

C_SOURCE = Path(__file__).resolve().parent / "c" / "connrate.c"
NS = "bench"
SERVER_IP, CLIENT_IP, ROUTER = "10.42.1.5", "10.42.2.5", "10.42.0.1"
PORT = 8080
OTHERS = 50  # pods elsewhere in the cluster, each an identity of its own
TCP = 6


# --- (A) the tables, as the agent computes them ---------------------------------------------


def pod_object(name: str, app: str, ip: str, node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running", "podIP": ip}}


NAMESPACE = {"apiVersion": "v1", "kind": "Namespace",
             "metadata": {"name": NS, "labels": {"kubernetes.io/metadata.name": NS}}}


class Cluster:
    """The pods (client and server on this node, OTHERS elsewhere) and their identities,
    numbered from 256 as agents allocate them."""

    def __init__(self) -> None:
        objs = [pod_object("server", "server", SERVER_IP, "node"),
                pod_object("client", "client", CLIENT_IP, "node")]
        objs += [pod_object(f"other-{k}", f"other-{k}", f"10.42.3.{k + 10}", "elsewhere")
                 for k in range(OTHERS)]
        self.pods: list[tuple[PodInfo, LabelSet]] = [
            (PodInfo.from_pod(Pod.parse(o)), pod_labels(o, NAMESPACE)) for o in objs]
        self.identities: dict[int, LabelSet] = {256 + i: labels
                                                for i, (_, labels) in enumerate(self.pods)}
        self.local: set[PodKey] = {(NS, "server"), (NS, "client")}

    def tables(self, policies: list[NetworkPolicy]) -> tuple[Any, float]:
        begin = time.perf_counter()
        state = node_policy(self.pods, self.local, self.identities, policies,
                            local_node_ips=[ROUTER])
        tables = datapath_tables(state)
        return tables, time.perf_counter() - begin


def netpol(name: str, app: str, direction: str, peer: str, port: int) -> NetworkPolicy:
    rule_key, peer_key = ("ingress", "from") if direction == "ingress" else ("egress", "to")
    return NetworkPolicy.parse({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"podSelector": {"matchLabels": {"app": app}},
                 "policyTypes": [direction.capitalize()],
                 rule_key: [{peer_key: [{"podSelector": {"matchLabels": {"app": peer}}}],
                             "ports": [{"protocol": "TCP", "port": port}]}]}})


def policy_set(direction: str, n: int, allow_port: int = PORT) -> list[NetworkPolicy]:
    """n policies selecting the enforced pod (server for ingress, client for egress): one
    allows the other pod on `allow_port`, the rest add one entry each (module docstring)."""
    me, peer = ("server", "client") if direction == "ingress" else ("client", "server")
    out = [netpol("allow", me, direction, peer, allow_port)]
    for i in range(1, n):
        other = peer if i % 2 == 0 else f"other-{i % OTHERS}"
        out.append(netpol(f"p{i}", me, direction, other, 10000 + i))
    return out


# --- (A) topology and measurement -------------------------------------------------------------


def build_topology(t: Topology) -> None:
    """A node with two pods on lxc veths (/32 routes; the pods' default route via ROUTER,
    which the node holds on a veth of its own, as cilium_host)."""
    node = t.add("node")
    run(node, ["ip", "link", "add", "hlhost", "type", "veth", "peer", "name", "hlhostp"])
    run(node, ["ip", "addr", "add", f"{ROUTER}/32", "dev", "hlhost"])
    run(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for role, ip in (("server", SERVER_IP), ("client", CLIENT_IP)):
        pod, dev = t.add(role), f"lxc{role}"
        run(node, ["ip", "link", "add", dev, "type", "veth", "peer", "name", "eth0",
                   "netns", pod])
        for ns, d in ((node, dev), (pod, "eth0"), (pod, "lo")):
            run(ns, ["ip", "link", "set", d, "up"])
        run(pod, ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"])
        run(node, ["ip", "route", "add", f"{ip}/32", "dev", dev])
        mac = json.loads(run(node, ["ip", "-j", "link", "show", dev]).stdout)[0]["address"]
        run(pod, ["ip", "neigh", "replace", ROUTER, "lladdr", mac, "dev", "eth0", "nud",
                  "permanent"])
        run(pod, ["ip", "route", "add", f"{ROUTER}/32", "dev", "eth0", "scope", "link"])
        run(pod, ["ip", "route", "add", "default", "via", ROUTER, "dev", "eth0"])
    for dev in ("hlhost", "hlhostp"):
        run(node, ["ip", "link", "set", dev, "up"])
    run(t["client"], ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])


def attach(lb: LbDatapath) -> list[tuple[str, str, str]]:
    """The programs on the pod veths, in the slots the agent's attachment table gives them
    (in the node's namespace); what went where."""
    done = []
    for (dev, direction, priority), prog in sorted(attachments([], ["lxcserver",
                                                                    "lxcclient"]).items()):
        libbpf.tc_attach(socket.if_nametoindex(dev), lb.program_fd(prog), direction,
                         handle=TC_HANDLE, priority=priority)
        done.append((dev, direction, prog))
    return done


def clear(ct: libbpf.Map) -> int:
    """Every conntrack entry gone (here only the policy's verdicts: no Service is used);
    how many there were."""
    keys = list(ct.raw_keys())
    for k in keys:
        ct.delete(k)
    return len(keys)


def measure_decided(t: Topology, binary: str, args: argparse.Namespace,
                    ct: libbpf.Map) -> dict[str, Any]:
    """`args.seconds` of connections in chunks of `args.chunk` s, the conntrack map emptied
    before each (unless --keep-conntrack): the rate over all chunks, the chunks' median
    latencies, and how many verdict entries the connections created ("decided")."""
    chunks, left, decided = [], args.seconds, 0
    if not args.keep_conntrack:
        clear(ct)
    while left > 1e-6:
        chunk = min(args.chunk, left) if not args.keep_conntrack else left
        chunks.append(measure(t, binary, chunk, args.threads))
        chunks[-1]["seconds"] = chunk
        left -= chunk
        decided += clear(ct) if not args.keep_conntrack else sum(1 for _ in ct.raw_keys())
    return {"conns": sum(c["conns"] for c in chunks), "errors": sum(c["errors"] for c in chunks),
            "rate": round(sum(c["rate"] * c["seconds"] for c in chunks) / args.seconds, 1),
            "p50_us": statistics.median(c["p50_us"] for c in chunks),
            "p99_us": statistics.median(c["p99_us"] for c in chunks), "decided": decided}


# The kernel's own account of the programs' time (BPF_ENABLE_STATS: run_time_ns and run_cnt
# in struct bpf_prog_info, at these offsets), on while the fd from bpf_enable_stats is open.
_LIBBPF = ctypes.CDLL("libbpf.so.1", use_errno=True)
BPF_STATS_RUN_TIME = 0
_PROG_INFO_SIZE, _RUN_TIME_OFFSET = 256, 192


def program_time(fds: list[int]) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the programs."""
    total_ns = total_runs = 0
    for fd in fds:
        buf = ctypes.create_string_buffer(_PROG_INFO_SIZE)
        size = ctypes.c_uint32(_PROG_INFO_SIZE)
        if _LIBBPF.bpf_obj_get_info_by_fd(fd, buf, ctypes.byref(size)) < 0:
            raise OSError(ctypes.get_errno(), "bpf_obj_get_info_by_fd")
        ns, runs = struct.unpack_from("<QQ", buf.raw, _RUN_TIME_OFFSET)
        total_ns, total_runs = total_ns + ns, total_runs + runs
    return total_ns, total_runs


def measure(t: Topology, binary: str, seconds: float, threads: int) -> dict[str, Any]:
    out = run(t["client"], [binary, "client", SERVER_IP, str(PORT), str(seconds),
                            str(threads)], timeout=seconds + 60).stdout
    return dict(json.loads(out))


def connects(t: Topology, timeout: float = 0.5) -> bool:
    code = (f"import socket; socket.create_connection(({SERVER_IP!r}, {PORT}), "
            f"timeout={timeout}).close()")
    return run(t["client"], [sys.executable, "-c", code], check=False).returncode == 0


def part_a(binary: str, args: argparse.Namespace, bpf_root: Path) -> dict[str, Any]:
    cluster = Cluster()
    sizes = sorted({1, *args.policies})
    variants: dict[str, list[NetworkPolicy]] = {"none": []}
    variants.update({f"ingress_{n}": policy_set("ingress", n) for n in sizes})
    variants.update({f"egress_{n}": policy_set("egress", n) for n in sorted({1, max(sizes)})})
    tables, compute = {}, {}
    for name, policies in variants.items():
        tables[name], compute[name] = cluster.tables(policies)
    result: dict[str, Any] = {"variants": {}}
    rounds: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
    with Topology("pb-a") as t:
        build_topology(t)
        server = t.start("server", [binary, "server", str(PORT), "2"],
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lb = LbDatapath.load(bpf_root / "a", table_size=251)
        try:
            pd = PolicyDatapath(lb.obj)
            ct = lb.obj.map(CT_MAP)
            fds = [lb.program_fd(PROGRAM_FROM_POD), lb.program_fd(PROGRAM_TO_POD)]
            stats_fd = _LIBBPF.bpf_enable_stats(BPF_STATS_RUN_TIME)
            if stats_fd < 0:
                raise OSError(-stats_fd, "bpf_enable_stats")

            def apply(tb: Any) -> None:
                pd.set(tb.ipcache, tb.endpoints, tb.entries)
                res = pd.flush()
                assert not res.failed, res.failed

            result["attached"] = run_in_netns(netns_path(t["node"]), lambda: attach(lb))
            # the path enforces: another port allowed only, the connection is dropped
            apply(cluster.tables(policy_set("ingress", 1, allow_port=PORT + 1))[0])
            before = view.drops(lb.bpf_root).get("policy", 0)
            denied = not connects(t)
            result["deny_check"] = {"refused": denied, "policy_drops":
                                    view.drops(lb.bpf_root).get("policy", 0) - before}
            apply(tables["ingress_1"])
            assert connects(t, 2.0), "the allowing policy must let the client in"
            assert denied and result["deny_check"]["policy_drops"] > 0, result["deny_check"]
            names = list(variants)
            for r in range(args.repeat):
                # each round starts one variant later: none is not always first
                for name in names[r % len(names):] + names[:r % len(names)]:
                    apply(tables[name])
                    ns0, runs0 = program_time(fds)
                    got = measure_decided(t, binary, args, ct)
                    ns1, runs1 = program_time(fds)
                    got["bpf_ns"], got["bpf_runs"] = ns1 - ns0, runs1 - runs0
                    print(f"  [{r}] {name}: {got}", file=sys.stderr, flush=True)
                    rounds[name].append(got)
            apply(cluster.tables([])[0])
            os.close(stats_fd)
        finally:
            lb.unpin()
            lb.close()
    for name in variants:
        rs = rounds[name]
        ratios = [x["rate"] / n["rate"] for x, n in zip(rs, rounds["none"], strict=True)]
        result["variants"][name] = {
            "policies": len(variants[name]),
            "entries": len(tables[name].entries),
            "enforced": len(tables[name].endpoints),
            "compute_s": round(compute[name], 4),
            "rate": round(statistics.median(x["rate"] for x in rs), 1),
            "p50_us": statistics.median(x["p50_us"] for x in rs),
            "p99_us": statistics.median(x["p99_us"] for x in rs),
            "errors": sum(x["errors"] for x in rs),
            # connections decided by a policy lookup (a verdict entry created) per connection
            "decided_share": round(sum(x["decided"] for x in rs)
                                   / max(1, sum(x["conns"] for x in rs)), 3),
            "ratio": round(statistics.median(ratios), 3),
            "ratio_range": [round(min(ratios), 3), round(max(ratios), 3)],
        }
        per_conn = [x["bpf_ns"] / max(1, x["conns"]) for x in rs]
        result["variants"][name]["bpf_ns_per_conn"] = round(statistics.median(per_conn), 1)
        result["variants"][name]["bpf_ns_per_run"] = round(statistics.median(
            x["bpf_ns"] / max(1, x["bpf_runs"]) for x in rs), 1)
        one = rounds[name.rsplit("_", 1)[0] + "_1"] if name != "none" else rs
        flat = [x["rate"] / o["rate"] for x, o in zip(rs, one, strict=True)]
        result["variants"][name]["vs_1_policy"] = round(statistics.median(flat), 3)
    return result


# --- (B) the lab ------------------------------------------------------------------------------


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def hexlane(*argv: str, timeout: float = 600) -> str:
    done = subprocess.run([sys.executable, "-m", "hexlane.cli.main", *argv],
                          capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"hexlane {' '.join(argv)} exited {done.returncode}:\n"
                           f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    return done.stdout


@contextmanager
def lab(name: str) -> Iterator[LabState]:
    log(f"lab {name} up (2 nodes, the default values)")
    try:
        hexlane("lab", "up", "--name", name, "--nodes", "2")
        state = LabState.load(name)
        assert state is not None
        yield state
    finally:
        log(f"lab {name} down")
        subprocess.run([sys.executable, "-m", "hexlane.cli.main", "lab", "down", "--name",
                        name], capture_output=True, timeout=180, check=False)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile (of 100 values, p99 is the second largest)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


class NodeMaps:
    """One node's pinned maps, opened from this process."""

    def __init__(self, bpf_root: Path) -> None:
        self.ipcache = libbpf.Map.from_pin(bpf_root / IPCACHE_MAP)
        self.policy = libbpf.Map.from_pin(bpf_root / POLICY_MAP)
        self.services = libbpf.Map.from_pin(bpf_root / SERVICES_MAP)

    def identity(self, ip: str) -> int | None:
        raw = self.ipcache.lookup(ipcache_key(IPv4Network(f"{ip}/32")))
        return None if raw is None else int.from_bytes(bytes(raw)[:4], "little")

    def close(self) -> None:
        for m in (self.ipcache, self.policy, self.services):
            m.close()


def pb_pod(node: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"pb-{node}", "namespace": "pbench", "labels": {"app": "pb"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "serve", "image": "hexlane/workload",
                                     "ports": [{"containerPort": 80}]}]}}


def pb_policy(i: int) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": f"pol-{i}", "namespace": "pbench"},
            "spec": {"podSelector": {"matchLabels": {"app": "pb"}},
                     "policyTypes": ["Ingress"],
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "pb"}}}],
                                  "ports": [{"protocol": "TCP", "port": 20000 + i}]}]}}


def pb_service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i}", "namespace": "pbench"},
            "spec": {"selector": {"app": "pb"},
                     "ports": [{"port": 30000 + i, "targetPort": 80, "protocol": "TCP"}]}}


async def changes(state: LabState, args: argparse.Namespace) -> dict[str, Any]:
    """In the lab's client host: the pods, then the interleaved changes (module docstring)."""
    plan = state.plan
    client = KubeClient(load_client_config(None, plan.dir / "kubeconfig"),
                        RateLimiter(100, 200), timeout=10)
    nodes = {role: NodeMaps(plan.bpf_root(role)) for role in ("node1", "node2")}
    poll = args.poll_ms / 1000
    try:
        await client.request("POST", "/api/v1/namespaces", body={
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "pbench"}})
        for node in nodes:
            await client.request("POST", "/api/v1/namespaces/pbench/pods", body=pb_pod(node))
        ips: dict[str, str] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            items = (await client.request("GET", "/api/v1/namespaces/pbench/pods"))["items"]
            ips = {p["spec"]["nodeName"]: p["status"].get("podIP", "") for p in items
                   if p["status"].get("phase") == "Running"}
            ids = {m.identity(ip) or 0 for m in nodes.values() for ip in ips.values() if ip}
            if len(ips) == 2 and all(ips.values()) and len(ids) == 1 and min(ids) >= 256:
                break
            await asyncio.sleep(0.5)
        else:
            raise RuntimeError(f"the pods' identities never reached both ipcaches: {ips}")
        identity = nodes["node1"].identity(ips["node1"])
        assert identity is not None
        log(f"pods {ips}, identity {identity}")

        async def timed(create: Any, **checks: Any) -> dict[str, float]:
            """Seconds from just before `create()` to its answer (create_s) and to the
            first poll at which each check held (inf: not within --change-timeout)."""
            begin = time.perf_counter()
            obj = await create()
            out = {"create_s": time.perf_counter() - begin}
            limit = begin + args.change_timeout
            while True:
                now = time.perf_counter()
                for key, check in checks.items():
                    if key not in out and check(obj):
                        out[key] = now - begin
                if len(out) > len(checks) or now > limit:
                    break
                await asyncio.sleep(poll)
            return {**dict.fromkeys(checks, float("inf")), **out}

        def policy_seen(i: int) -> Any:
            keys = {role: policy_key(ips[role], PolicyEntry(INGRESS, identity, TCP, 20000 + i,
                                                            16)) for role in nodes}
            return lambda _obj: all(nodes[r].policy.lookup(k) is not None
                                    for r, k in keys.items())

        def service_key(obj: dict[str, Any], i: int) -> bytes:
            return bytes(lb4_key(FrontendKey(obj["spec"]["clusterIP"], 30000 + i, "TCP")))

        def service_seen(i: int) -> Any:
            return lambda obj: all(m.services.lookup(service_key(obj, i)) is not None
                                   for m in nodes.values())

        def service_full(i: int) -> Any:
            def check(obj: dict[str, Any]) -> bool:
                for m in nodes.values():
                    raw = m.services.lookup(service_key(obj, i))
                    if raw is None or int.from_bytes(bytes(raw)[4:6], "little") < 2:
                        return False
                return True
            return check

        policy_times: list[dict[str, float]] = []
        service_times: list[dict[str, float]] = []
        for i in range(args.changes):
            first_policy = i % 2 == 0
            for kind in (("policy", "service") if first_policy else ("service", "policy")):
                if kind == "policy":
                    got = await timed(lambda i=i: client.request(
                        "POST", "/apis/networking.k8s.io/v1/namespaces/pbench/networkpolicies",
                        body=pb_policy(i)), seen_s=policy_seen(i))
                    policy_times.append(got)
                else:
                    got = await timed(lambda i=i: client.request(
                        "POST", "/api/v1/namespaces/pbench/services", body=pb_service(i)),
                        seen_s=service_seen(i), full_s=service_full(i))
                    service_times.append(got)
                print(f"  [{i}] {kind}: " + ", ".join(f"{k} {v * 1000:.1f} ms"
                                                       for k, v in got.items()),
                      file=sys.stderr, flush=True)
                await asyncio.sleep(args.pause)
    finally:
        for m in nodes.values():
            m.close()
        await client.aclose()

    def stats(times: list[dict[str, float]], key: str) -> dict[str, float]:
        values = [t[key] for t in times]
        return {"p50_ms": round(percentile(values, 0.5) * 1000, 1),
                "p99_ms": round(percentile(values, 0.99) * 1000, 1),
                "max_ms": round(max(values) * 1000, 1),
                "timeouts": sum(1 for v in values if v == float("inf"))}

    policy = stats(policy_times, "seen_s")
    service = stats(service_times, "seen_s")
    return {"changes": args.changes, "identity": identity, "policy": policy,
            "policy_create": stats(policy_times, "create_s"),
            "service": service, "service_with_backends": stats(service_times, "full_s"),
            "service_create": stats(service_times, "create_s"),
            "p99_ratio": round(policy["p99_ms"] / service["p99_ms"], 3)}


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    name = f"pb{secrets.token_hex(2)}"
    with lab(name) as state:
        load = os.getloadavg()
        result = run_in_netns(netns_path(state.plan.client.netns),
                              lambda: asyncio.run(changes(state, args)))
    result["lab"] = name
    result["loadavg_at_start"] = [round(x, 2) for x in load]
    return result


# --- main -------------------------------------------------------------------------------------


def report_a(a: dict[str, Any]) -> None:
    dc = a["deny_check"]
    print(f"(A) new connections/s, client pod -> server pod (enforcement checked: a "
          f"connection the policy does not allow refused {dc['refused']}, "
          f"{dc['policy_drops']} policy drops)")
    none = a["variants"]["none"]
    print(f"  none: {none['rate']:.0f} conn/s (p50 {none['p50_us']} us, p99 "
          f"{none['p99_us']} us); the programs' time {none['bpf_ns_per_conn']:.0f} ns per "
          f"connection ({none['bpf_ns_per_run']:.0f} ns per packet)")
    for name, v in a["variants"].items():
        if name == "none":
            continue
        print(f"  {name}: {v['ratio']:.3f}x (rounds {v['ratio_range'][0]:.3f}-"
              f"{v['ratio_range'][1]:.3f}; {v['rate']:.0f} conn/s, p50 {v['p50_us']} us; "
              f"{v['policies']} policies, {v['entries']} entries, tables computed in "
              f"{v['compute_s'] * 1000:.1f} ms; errors {v['errors']}; connections "
              f"decided {v['decided_share']:.2f}; / 1 policy "
              f"{v['vs_1_policy']:.3f}x; programs {v['bpf_ns_per_conn']:.0f} ns per "
              f"connection, {v['bpf_ns_per_conn'] - none['bpf_ns_per_conn']:+.0f} vs none)")
    print("  target: each >= 0.95x of none, flat in the number of policies")


def report_b(b: dict[str, Any]) -> None:
    p, s, f = b["policy"], b["service"], b["service_with_backends"]
    print(f"(B) change in the API -> in both nodes' maps, {b['changes']} of each, interleaved "
          f"(lab {b['lab']}):")
    print(f"  policy  -> hl_policy:       p50 {p['p50_ms']} ms, p99 {p['p99_ms']} ms, max "
          f"{p['max_ms']} ms (timeouts {p['timeouts']})")
    print(f"  Service -> hl_lb4_services: p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms, max "
          f"{s['max_ms']} ms (with both backends: p50 {f['p50_ms']} ms, p99 {f['p99_ms']} ms)")
    print(f"  create requests: policy p50 {b['policy_create']['p50_ms']} ms, Service p50 "
          f"{b['service_create']['p50_ms']} ms")
    print(f"  policy p99 / Service p99: {b['p99_ratio']:.2f}x (target <= 1.5x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("a", "b", "both"), default="both")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--policies", type=lambda s: [int(x) for x in s.split(",")],
                        default=[100, 1000], help="policy counts besides 1 (100,1000)")
    parser.add_argument("--chunk", type=float, default=0.75,
                        help="(A) seconds per chunk, conntrack emptied between chunks")
    parser.add_argument("--keep-conntrack", action="store_true",
                        help="(A) one go per measurement, earlier verdicts left in conntrack")
    parser.add_argument("--changes", type=int, default=100,
                        help="(B) changes of each kind (100: p99 is the second largest)")
    parser.add_argument("--poll-ms", type=float, default=3.0)
    parser.add_argument("--pause", type=float, default=0.2,
                        help="seconds between changes (their work must not overlap)")
    parser.add_argument("--change-timeout", type=float, default=30.0)
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("error: needs root", file=sys.stderr)
        return 1
    def terminate(*_: object) -> None:  # the lab comes down on SIGTERM too
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminate)
    out: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                           "loadavg": [round(x, 2) for x in os.getloadavg()]}
    if args.part in ("a", "both"):
        work = Path(tempfile.mkdtemp(prefix="hexlane-policybench-"))
        binary = str(work / "connrate")
        subprocess.run(["cc", "-O2", "-pthread", "-o", binary, str(C_SOURCE)], check=True)
        try:
            with scratch_bpf_dir("hexlane-policy-bench") as root:
                out["a"] = part_a(binary, args, root)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        if args.output == "text":
            report_a(out["a"])
    if args.part in ("b", "both"):
        out["b"] = part_b(args)
        if args.output == "text":
            report_b(out["b"])
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    if args.output == "json":
        print(json.dumps(out, indent=2))
    else:
        print(f"date {out['date']}, load average {out['loadavg']} at start, "
              f"{out['loadavg_end']} at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
