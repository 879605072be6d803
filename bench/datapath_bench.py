"""Service datapath benchmark: hexlane's eBPF load balancer against kube-proxy's rulesets.

One topology per scale, in namespaces only: a client, a node, and a backend pod behind the
node (a /32 route on an lxc veth, two pod addresses so every Service has two endpoints).
With N Services (LoadBalancer type, one ClusterIP and one LB IP each, two endpoints each:
2N frontends), side by side in one run:

- direct: the client connects to the pod address, routed by the node, no rule at all (so
  no netfilter connection tracking either: the namespace has never loaded a rule);
- direct_ct: the same with one nftables forward rule (`ct state established,related
  accept`), which turns connection tracking on as on any real node;
- hexlane: the Services programmed by `ServiceReconciler` (Maglev, tableSize 251 at every
  scale: 251 x 4 bytes per frontend), hl_from_netdev on the node's client-facing interface
  and hl_from_pod on the pod's veth;
- iptables: kube-proxy's iptables ruleset as it writes it (KUBE-SERVICES -> KUBE-EXT-* ->
  KUBE-SVC-* with statistic random -> KUBE-SEP-* DNAT, KUBE-MARK-MASQ, KUBE-POSTROUTING
  masquerade), loaded with iptables-restore in the node namespace;
- nftables: kube-proxy's nftables ruleset (table ip kube-proxy, the service-ips verdict map,
  per-service chains with numgen random, endpoint chains with dnat).

Metric: new TCP connections per second and connection latency (connect, one byte, answer,
RST close; a small C client/server compiled here) to the middle Service's LB IP, as ratios
to the direct path measured in the same topology just before.

Each scale runs `--repeat` rounds, the four paths interleaved in every round; the figures are
medians (ratios: the median of each round's ratio to that round's direct path).

Control side, in the same run: the time to program every Service from nothing, and one
EndpointSlice change as the agent makes it (median of 40); with 1,000 and 10,000 among the
scales, the ratios one change at 10,000 / at 1,000 (target <= 1.5x) and one change /
programming all 10,000 (target <= 0.05x). `--control-only` measures only those (no traffic);
`--agent-cpu-before REV` adds bench/agent_change_cpu.py's CPU seconds for one change at the
largest scale, REV against this tree.

Run as root: `.venv/bin/python bench/datapath_bench.py [--scales 1,1000,10000] [--seconds 3]
[--threads 8] [--repeat 3] [--iptables legacy|nft] [--control-only] [--agent-cpu-before REV]
[-o json]`. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hexlane.agent.loadbalancer import ServiceReconciler
from hexlane.datapath import libbpf
from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.datapath.lb.loader import (
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_POD,
    TC_HANDLE,
    TC_PRIORITY,
    LbDatapath,
)
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns
from hexlane.lb.services import LbSettings
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service

CLIENT_IP, NODE_IP = "10.77.0.2", "10.77.0.1"
POD_IPS = ("10.42.1.5", "10.42.1.6")
ROUTER = "10.42.1.1"
POD_CIDR = "10.42.0.0/16"
PORT, TARGET_PORT = 80, 8080
C_SOURCE = Path(__file__).resolve().parent / "c" / "connrate.c"
PATHS = ("direct", "direct_ct", "hexlane", "iptables", "nftables")
# A node firewall's usual first rule: it turns netfilter connection tracking on for forwarded
# traffic, as on every real node (kube-proxy, k3s and Docker all load conntrack).
CONNTRACK_RULESET = """table ip hexlane-bench-ct {
  chain forward {
    type filter hook forward priority filter; policy accept;
    ct state established,related accept
  }
}
"""


def cluster_ip(i: int) -> str:
    return f"10.43.{i // 250}.{i % 250 + 1}"


def lb_ip(i: int) -> str:
    return f"10.96.{i // 250}.{i % 250 + 1}"


def objects(n: int, drop_endpoint_of: int | None = None
            ) -> tuple[list[Service], list[EndpointSlice], list[Node]]:
    services, slices = [], []
    for i in range(n):
        name = f"svc{i}"
        services.append(Service.parse({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "bench"},
            "spec": {"type": "LoadBalancer", "clusterIP": cluster_ip(i),
                     "clusterIPs": [cluster_ip(i)], "allocateLoadBalancerNodePorts": False,
                     "ports": [{"name": "http", "port": PORT, "targetPort": TARGET_PORT}]},
            "status": {"loadBalancer": {"ingress": [{"ip": lb_ip(i)}]}},
        }))
        slices.append(objects_slice(i, drop=i == drop_endpoint_of))
    node = Node.parse({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node"},
                       "status": {"addresses": [{"type": "InternalIP", "address": NODE_IP}]}})
    return services, slices, [node]


# --- kube-proxy's rulesets ---------------------------------------------------------------


def _hash(text: str) -> str:
    """kube-proxy's chain suffix: base32 of SHA-256, first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def iptables_ruleset(n: int) -> str:
    chains = [":KUBE-SERVICES - [0:0]", ":KUBE-POSTROUTING - [0:0]", ":KUBE-MARK-MASQ - [0:0]",
              ":KUBE-NODEPORTS - [0:0]"]
    rules = [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" '
        "-j KUBE-POSTROUTING",
        "-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000",
        "-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN",
        "-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" '
        "-j MASQUERADE --random-fully",
    ]
    svc_rules: list[str] = []
    for i in range(n):
        spn = f"bench/svc{i}:http"
        svc, ext = f"KUBE-SVC-{_hash(spn + 'tcp')}", f"KUBE-EXT-{_hash(spn + 'tcp')}"
        chains += [f":{svc} - [0:0]", f":{ext} - [0:0]"]
        svc_rules.append(f'-A KUBE-SERVICES -d {cluster_ip(i)}/32 -p tcp -m comment --comment '
                         f'"{spn} cluster IP" -m tcp --dport {PORT} -j {svc}')
        svc_rules.append(f'-A KUBE-SERVICES -d {lb_ip(i)}/32 -p tcp -m comment --comment '
                         f'"{spn} loadbalancer IP" -m tcp --dport {PORT} -j {ext}')
        rules.append(f'-A {ext} -m comment --comment "masquerade traffic for {spn} external '
                     f'destinations" -j KUBE-MARK-MASQ')
        rules.append(f"-A {ext} -j {svc}")
        rules.append(f"-A {svc} ! -s {POD_CIDR} -d {cluster_ip(i)}/32 -p tcp -m comment "
                     f'--comment "{spn} cluster IP" -m tcp --dport {PORT} -j KUBE-MARK-MASQ')
        for k, ip in enumerate(POD_IPS):
            sep = f"KUBE-SEP-{_hash(spn + 'tcp' + ip)}"
            chains.append(f":{sep} - [0:0]")
            prob = ("" if k == len(POD_IPS) - 1 else
                    f"-m statistic --mode random --probability {1 / (len(POD_IPS) - k):.11f} ")
            rules.append(f'-A {svc} -m comment --comment "{spn} -> {ip}:{TARGET_PORT}" '
                         f"{prob}-j {sep}")
            rules.append(f'-A {sep} -s {ip}/32 -m comment --comment "{spn}" -j KUBE-MARK-MASQ')
            rules.append(f'-A {sep} -p tcp -m comment --comment "{spn}" -m tcp '
                         f"-j DNAT --to-destination {ip}:{TARGET_PORT}")
    svc_rules.append('-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; '
                     'NOTE: this must be the last rule in this chain" -m addrtype --dst-type '
                     "LOCAL -j KUBE-NODEPORTS")
    return "\n".join(["*nat", *chains, *rules, *svc_rules, "COMMIT", ""])


def nftables_ruleset(n: int) -> str:
    out = ["table ip kube-proxy {",
           "  chain mark-for-masquerade {", "    meta mark set meta mark | 0x4000", "  }",
           "  chain masquerading {", "    meta mark & 0x4000 == 0 return",
           "    meta mark set meta mark ^ 0x4000", "    masquerade fully-random", "  }",
           "  chain nat-prerouting {",
           "    type nat hook prerouting priority dstnat; policy accept;",
           "    jump services", "  }",
           "  chain nat-output {", "    type nat hook output priority -100; policy accept;",
           "    jump services", "  }",
           "  chain nat-postrouting {",
           "    type nat hook postrouting priority srcnat; policy accept;",
           "    jump masquerading", "  }"]
    elements = []
    for i in range(n):
        h = _hash(f"bench/svc{i}:http" + "tcp")[:8]
        svc, ext = f"service-{h}-bench-svc{i}-tcp-http", f"external-{h}-bench-svc{i}-tcp-http"
        eps = [f"endpoint-{_hash(ip + str(i))[:8]}-bench-svc{i}-tcp-http-{ip.replace('.', '-')}"
               for ip in POD_IPS]
        vmap = ", ".join(f"{k} : goto {ep}" for k, ep in enumerate(eps))
        out += [f"  chain {svc} {{",
                f"    ip daddr {cluster_ip(i)} tcp dport {PORT} ip saddr != {POD_CIDR} "
                "jump mark-for-masquerade",
                f"    numgen random mod {len(eps)} vmap {{ {vmap} }}", "  }",
                f"  chain {ext} {{", "    jump mark-for-masquerade", f"    goto {svc}", "  }"]
        for ip, ep in zip(POD_IPS, eps, strict=True):
            out += [f"  chain {ep} {{", f"    ip saddr {ip} jump mark-for-masquerade",
                    f"    meta l4proto tcp dnat to {ip}:{TARGET_PORT}", "  }"]
        elements.append(f"{cluster_ip(i)} . tcp . {PORT} : goto {svc}")
        elements.append(f"{lb_ip(i)} . tcp . {PORT} : goto {ext}")
    out += ["  map service-ips {",
            "    type ipv4_addr . inet_proto . inet_service : verdict",
            f"    elements = {{ {', '.join(elements)} }}", "  }",
            "  chain services {", "    ip daddr . meta l4proto . th dport vmap @service-ips",
            "  }"]
    out.append("}")
    return "\n".join(out) + "\n"


# --- topology and measurement -------------------------------------------------------------


def build_topology(t: Topology) -> None:
    client, node, pod = t.add("client"), t.add("node"), t.add("pod")
    run(client, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "toclient",
                 "netns", node])
    run(node, ["ip", "link", "add", "lxcbench", "type", "veth", "peer", "name", "eth0",
               "netns", pod])
    for ns, dev in ((client, "eth0"), (node, "toclient"), (node, "lxcbench"), (pod, "eth0"),
                    (pod, "lo"), (client, "lo"), (node, "lo")):
        run(ns, ["ip", "link", "set", dev, "up"])
    run(client, ["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
    for cidr in ("10.42.0.0/16", "10.43.0.0/16", "10.96.0.0/16"):
        run(client, ["ip", "route", "add", cidr, "via", NODE_IP])
    run(client, ["sysctl", "-qw", "net.ipv4.ip_local_port_range=1024 65000"])
    run(node, ["ip", "addr", "add", f"{NODE_IP}/24", "dev", "toclient"])
    run(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    mac = json.loads(run(node, ["ip", "-j", "link", "show", "lxcbench"]).stdout)[0]["address"]
    for ip in POD_IPS:
        run(node, ["ip", "route", "add", f"{ip}/32", "dev", "lxcbench"])
        run(pod, ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"])
    run(pod, ["ip", "neigh", "replace", ROUTER, "lladdr", mac, "dev", "eth0", "nud",
              "permanent"])
    run(pod, ["ip", "route", "add", f"{ROUTER}/32", "dev", "eth0", "scope", "link"])
    run(pod, ["ip", "route", "add", "default", "via", ROUTER, "dev", "eth0"])


def measure(t: Topology, binary: str, host: str, seconds: float, threads: int) -> dict[str, Any]:
    out = run(t["client"], [binary, "client", host, str(TARGET_PORT if host in POD_IPS
                                                         else PORT), str(seconds), str(threads)],
              timeout=seconds + 60).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def one_change_seconds(rec: ServiceReconciler, n: int, changes: int = 40) -> float:
    """The median time of one EndpointSlice change as the agent makes it: the changed slice
    handed to the model, then a commit (recompute that Service, write its keys). Changes go
    in pairs over Services spread across the range: one endpoint less, then back."""
    times = []
    for k in range(changes):
        i = (n // 3 + 7 * (k // 2)) % n
        sl = objects_slice(i, drop=k % 2 == 0)
        begin = time.perf_counter()
        rec.model.set_slice(sl)
        rec.commit()
        times.append(time.perf_counter() - begin)
    return round(statistics.median(times), 6)


def program_and_change(lb: LbDatapath, n: int, result: dict[str, Any]) -> None:
    """Program n Services from nothing, then time single changes (see one_change_seconds)."""
    rec = ServiceReconciler(lb, "node", settings=LbSettings(algorithm="maglev", table_size=251))
    objs = objects(n)
    begin = time.perf_counter()
    report = rec.update(*objs)
    result["hexlane_program_s"] = round(time.perf_counter() - begin, 3)
    result["hexlane_frontends"] = report.services
    if n >= 1000:
        result["hexlane_update_one_s"] = one_change_seconds(rec, n)


def control_run(n: int, bpf_root: Path) -> dict[str, Any]:
    """Only the control side at one scale: programming and single changes, no traffic."""
    result: dict[str, Any] = {"services": n}
    lb = LbDatapath.load(bpf_root / f"c{n}", table_size=251)
    try:
        program_and_change(lb, n, result)
    finally:
        lb.unpin()
        lb.close()
    return result


def objects_slice(i: int, *, drop: bool) -> EndpointSlice:
    name = f"svc{i}"
    ips = POD_IPS[:1] if drop else POD_IPS
    return EndpointSlice.parse({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-a", "namespace": "bench",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "nodeName": "node",
                       "conditions": {"ready": True}} for ip in ips],
        "ports": [{"name": "http", "port": TARGET_PORT, "protocol": "TCP"}],
    })


def scale_run(n: int, binary: str, args: argparse.Namespace, bpf_root: Path) -> dict[str, Any]:
    """All four paths at one scale, `args.repeat` rounds interleaved; medians of the rates
    and of each round's ratio to that round's direct path."""
    result: dict[str, Any] = {"services": n}
    target = lb_ip(n // 2)
    restore = "iptables-legacy-restore" if args.iptables == "legacy" else "iptables-restore"
    flush = "iptables-legacy" if args.iptables == "legacy" else "iptables"
    rounds: dict[str, list[dict[str, Any]]] = {p: [] for p in PATHS}
    with Topology("hl-dpb") as t:
        build_topology(t)
        server = t.start("pod", [binary, "server", str(TARGET_PORT), "2"],
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        node_ns = netns_path(t["node"])

        def m(path: str, host: str) -> None:
            got = measure(t, binary, host, args.seconds, args.threads)
            print(f"  [{n}] {path} {host}: {got}", file=sys.stderr, flush=True)
            rounds[path].append(got)

        lb = LbDatapath.load(bpf_root / f"n{n}", table_size=251)
        try:
            program_and_change(lb, n, result)

            def attach() -> None:
                for dev, prog in (("toclient", PROGRAM_FROM_NETDEV),
                                  ("lxcbench", PROGRAM_FROM_POD)):
                    libbpf.tc_attach(socket.if_nametoindex(dev), lb.program_fd(prog),
                                     "ingress", handle=TC_HANDLE, priority=TC_PRIORITY)

            def detach() -> None:
                for dev in ("toclient", "lxcbench"):
                    libbpf.tc_hook_destroy(socket.if_nametoindex(dev))

            for _ in range(args.repeat):
                m("direct", POD_IPS[0])
                run(t["node"], ["nft", "-f", "-"], input=CONNTRACK_RULESET)
                m("direct_ct", POD_IPS[0])
                run(t["node"], ["nft", "delete", "table", "ip", "hexlane-bench-ct"])
                run_in_netns(node_ns, attach)
                m("hexlane", target)
                run_in_netns(node_ns, detach)
                begin = time.perf_counter()
                run(t["node"], [restore], input=iptables_ruleset(n), timeout=600)
                result["iptables_load_s"] = round(time.perf_counter() - begin, 2)
                m("iptables", target)
                run(t["node"], [flush, "-t", "nat", "-F"])
                run(t["node"], [flush, "-t", "nat", "-X"])
                begin = time.perf_counter()
                run(t["node"], ["nft", "-f", "-"], input=nftables_ruleset(n), timeout=600)
                result["nft_load_s"] = round(time.perf_counter() - begin, 2)
                m("nftables", target)
                run(t["node"], ["nft", "delete", "table", "ip", "kube-proxy"])
        finally:
            lb.unpin()
            lb.close()
    for path in PATHS:
        result[path] = {
            "rate": round(statistics.median(r["rate"] for r in rounds[path]), 1),
            "p50_us": statistics.median(r["p50_us"] for r in rounds[path]),
            "p99_us": statistics.median(r["p99_us"] for r in rounds[path]),
            "errors": sum(r["errors"] for r in rounds[path]),
        }
        if path != "direct":
            result[f"{path}_ratio"] = round(statistics.median(
                r["rate"] / d["rate"] for r, d in zip(rounds[path], rounds["direct"],
                                                      strict=True)), 3)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", default="1,1000,10000")
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--iptables", choices=("legacy", "nft"), default="legacy")
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text")
    parser.add_argument("--agent-cpu-before", metavar="REV",
                        help="also run bench/agent_change_cpu.py: the agent's CPU for one "
                             "EndpointSlice change at the largest scale, REV vs this tree")
    parser.add_argument("--control-only", action="store_true",
                        help="only program the Services and time single changes (no traffic)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hexlane-dpbench-"))
    binary = str(work / "connrate")
    subprocess.run(["cc", "-O2", "-pthread", "-o", binary, str(C_SOURCE)], check=True)
    results = []
    try:
        with scratch_bpf_dir("hexlane-bench") as root:
            for n in (int(s) for s in args.scales.split(",")):
                if args.control_only:
                    results.append(control_run(n, root))
                    r = results[-1]
                    if args.output == "text":
                        print(f"{n:>6} services: programmed in {r['hexlane_program_s']} s"
                              + (f", one change in {r['hexlane_update_one_s'] * 1000:.2f} ms"
                                 if "hexlane_update_one_s" in r else ""), flush=True)
                    continue
                results.append(scale_run(n, binary, args, root))
                if args.output == "text":
                    r = results[-1]
                    print(f"{n:>6} services: direct {r['direct']['rate']:>8.0f} conn/s "
                          f"(p50 {r['direct']['p50_us']} us) | direct+conntrack "
                          f"{r['direct_ct_ratio']:.2f}x | hexlane {r['hexlane_ratio']:.2f}x"
                          f" (p50 {r['hexlane']['p50_us']} us) | iptables "
                          f"{r['iptables_ratio']:.2f}x (p50 {r['iptables']['p50_us']} us) | "
                          f"nftables {r['nftables_ratio']:.2f}x (p50 "
                          f"{r['nftables']['p50_us']} us) | programmed in "
                          f"{r['hexlane_program_s']} s"
                          + (f", one change in {r['hexlane_update_one_s'] * 1000:.2f} ms"
                             if "hexlane_update_one_s" in r else ""), flush=True)
        by_n = {r["services"]: r for r in results}
        if 1000 in by_n and 10000 in by_n and args.output == "text":
            one_1k = by_n[1000]["hexlane_update_one_s"]
            one_10k = by_n[10000]["hexlane_update_one_s"]
            print(f"one change at 10,000 / at 1,000 Services: {one_10k / one_1k:.2f}x "
                  f"(target <= 1.5x); one change / programming all 10,000: "
                  f"{one_10k / by_n[10000]['hexlane_program_s']:.5f}x (target <= 0.05x)")
        if args.agent_cpu_before:
            cmd = [sys.executable, str(Path(__file__).with_name("agent_change_cpu.py")),
                   "--services", str(max(by_n)), "--before", args.agent_cpu_before,
                   "-o", args.output]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            if args.output == "json":
                results.append({"agent_cpu": json.loads(out)})
            else:
                print(out, end="", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.output == "json":
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
