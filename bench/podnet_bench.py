"""Pod-to-pod across nodes: hexlane native and tunnel routing against a plain veth path.

Builds, in namespaces only, a LAN bridge with two node namespaces and measures, side by side in
one run, from a pod on node A to a pod on node B:

- direct: node A to node B over the LAN (no pods at all: the limit);
- plain: pods on hand-made veth pairs with kernel routes and no hexlane in the path;
- native: pods made by `hexlane-cni` with the endpoint agent in `routingMode: native` and
  `autoDirectNodeRoutes` (no masquerading: pod-to-pod traffic is never masqueraded);
- tunnel: the same in `routingMode: tunnel` (VXLAN, pod MTU 1450).

hexlane's paths carry the agent's full wiring: besides the endpoint agent (routes, veths,
masquerade), the service load balancer's programs are attached as the agent attaches them
(`hl_from_pod` on every pod veth, `hl_from_netdev` on the LAN interface, and in tunnel mode
`hl_from_overlay` on the VXLAN device), through the standalone `hexlane dev services` with no
Service: pod-to-pod packets pass through every program a real node runs.

Metrics: TCP request/response rate (1-byte ping-pong on one connection, TCP_NODELAY, a tiny C
client/server compiled here with clang, like netperf TCP_RR) and bulk TCP throughput (iperf3).
Each metric runs `--repeat` times, paths interleaved, and the median is reported, with ratios
against the plain path measured in the same batch (target: native >= 0.9x plain).

Run as root: `.venv/bin/python bench/podnet_bench.py [--seconds 4] [--repeat 3] [-o json]`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from hexlane.cni.main import AgentUnavailable, call_agent
from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.lab import netns
from hexlane.lab.netns import Topology

PLUGIN = str(Path(sys.executable).parent / "hexlane-cni")
NODES = {"nodea": ("10.80.0.11", "10.81.1.0/24"), "nodeb": ("10.80.0.12", "10.81.2.0/24")}
PLAIN = {"nodea": "10.82.1", "nodeb": "10.82.2"}  # plain pod subnets (/24), .1 = node side

RR_C = r"""
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t);
                          return t.tv_sec + t.tv_nsec / 1e9; }

int main(int argc, char **argv) {
    int one = 1; char b = 'x';
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
    if (argc < 4) return 2;
    if (!strcmp(argv[1], "server")) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        setsockopt(s, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        a.sin_addr.s_addr = INADDR_ANY;
        if (bind(s, (void *)&a, sizeof a) || listen(s, 8)) { perror("bind"); return 1; }
        for (;;) {
            int c = accept(s, 0, 0);
            setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            while (read(c, &b, 1) == 1 && write(c, &b, 1) == 1) ;
            close(c);
        }
    }
    double secs = atof(argv[4]), start, end; long n = 0;
    int s = socket(AF_INET, SOCK_STREAM, 0);
    inet_pton(AF_INET, argv[2], &a.sin_addr);
    for (int i = 0; connect(s, (void *)&a, sizeof a); i++) {
        if (i > 100) { perror("connect"); return 1; }
        close(s); s = socket(AF_INET, SOCK_STREAM, 0); usleep(50000);
    }
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    start = now(); end = start + secs;
    while (now() < end) {
        for (int i = 0; i < 100; i++) {
            if (write(s, &b, 1) != 1 || read(s, &b, 1) != 1) { perror("rr"); return 1; }
        }
        n += 100;
    }
    printf("%.1f\n", n / (now() - start));
    return 0;
}
"""


def build_rr(workdir: Path) -> str:
    src = workdir / "tcp_rr.c"
    src.write_text(RR_C)
    out = workdir / "tcp_rr"
    subprocess.run(["clang", "-O2", "-o", str(out), str(src)], check=True)
    return str(out)


def start_agent(topo: Topology, node: str, state: Path, mode: str) -> subprocess.Popen[Any]:
    ip, cidr = NODES[node]
    peers = [f"{o},{oip},{oc}" for o, (oip, oc) in NODES.items() if o != node]
    argv = [sys.executable, "-m", "hexlane.cli.main", "dev", "endpoints", "--state-dir", str(state),
            "--node-name", node, "--node-ip", ip, "--pod-cidr", cidr, "--routing-mode", mode]
    if mode == "native":
        argv.append("--auto-direct-node-routes")
    for peer in peers:
        argv += ["--peer", peer]
    log = open(state.parent / f"{node}-{mode}.log", "w")  # noqa: SIM115 - lives with the agent
    proc = topo.start(node, argv, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if call_agent(str(state), "GET", "/v1/healthz", timeout=2)[0] == 200:
                return proc
        except AgentUnavailable:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"agent on {node} did not come up")


def wire_load_balancer(topo: Topology, node: str, bpf_root: Path, work: Path) -> None:
    """Load and attach the service load balancer in `node` as the agent does (no Service),
    wait until the LAN interface and every pod veth carry their programs (the VXLAN device's
    is attached in the same pass, before the veths'), stop it."""
    manifests = work / f"{node}-manifests"
    manifests.mkdir(exist_ok=True)
    log = open(work / f"{node}-lb.log", "w")  # noqa: SIM115 - lives with the process
    proc = topo.start(node, [sys.executable, "-m", "hexlane.cli.main", "dev", "services",
                             "--bpf-root", str(bpf_root), "--node", node,
                             "--manifests", str(manifests), "--lan", "eth0"],
                      stdout=log, stderr=subprocess.STDOUT)
    links = netns.run(topo[node], ["ip", "-o", "link", "show"]).stdout
    wanted = [name for name in (line.split(":")[1].strip().split("@")[0]
                                for line in links.splitlines())
              if name.startswith("lxc") or name == "eth0"]  # the VXLAN device goes with them
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        shown = [netns.run(topo[node], ["tc", "filter", "show", "dev", name, "ingress"],
                           check=False).stdout for name in wanted]
        if all("hl_from_" in text for text in shown):
            break
        time.sleep(0.2)
    else:
        raise RuntimeError(f"load balancer not attached on {node}: see {log.name}")
    netns.stop_process(proc)  # programs stay attached, maps pinned
    topo.processes.remove(proc)


def cni_add(topo: Topology, node: str, pod_role: str, container_id: str) -> str:
    pod = topo.add(pod_role)
    env = {"PATH": os.environ["PATH"], "CNI_COMMAND": "ADD", "CNI_CONTAINERID": container_id,
           "CNI_NETNS": netns.netns_path(pod), "CNI_IFNAME": "eth0", "CNI_PATH": "/"}
    conf = json.dumps({"cniVersion": "1.0.0", "name": "hexlane", "type": "hexlane-cni"})
    out = netns.run(topo[node], [PLUGIN], input=conf, env=env)
    return str(json.loads(out.stdout)["ips"][0]["address"].split("/")[0])


def plain_pods(topo: Topology) -> tuple[str, str]:
    """Two pods wired by hand: veth, /24 with the node side as gateway, kernel routes."""
    ips = {}
    for node, net in PLAIN.items():
        role = f"plain-{node[-1]}"
        pod = topo.add(role)
        host_if = f"pl{node[-1]}"
        netns.run(topo[node], ["ip", "link", "add", host_if, "type", "veth", "peer", "name",
                               "eth0", "netns", pod])
        netns.run(topo[node], ["ip", "addr", "add", f"{net}.1/24", "dev", host_if])
        netns.run(topo[node], ["ip", "link", "set", host_if, "up"])
        netns.run(pod, ["ip", "addr", "add", f"{net}.2/24", "dev", "eth0"])
        netns.run(pod, ["ip", "link", "set", "eth0", "up"])
        netns.run(pod, ["ip", "route", "add", "default", "via", f"{net}.1"])
        netns.run(topo[node], ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        ips[node] = f"{net}.2"
    netns.run(topo["nodea"], ["ip", "route", "add", f"{PLAIN['nodeb']}.0/24", "via",
                              NODES["nodeb"][0]])
    netns.run(topo["nodeb"], ["ip", "route", "add", f"{PLAIN['nodea']}.0/24", "via",
                              NODES["nodea"][0]])
    return ips["nodea"], ips["nodeb"]


class Path_:
    """One measured path: client namespace -> server address (servers run in `server_ns`)."""

    def __init__(self, name: str, client_ns: str, server_ns: str, server_ip: str) -> None:
        self.name, self.client_ns, self.server_ns, self.server_ip = (
            name, client_ns, server_ns, server_ip)


def start_servers(topo: Topology, rr: str, role: str) -> None:
    topo.start(role, [rr, "server", "0", "7100"], stdout=subprocess.DEVNULL)
    topo.start(role, ["iperf3", "-s", "-p", "7101"], stdout=subprocess.DEVNULL,
               stderr=subprocess.DEVNULL)


def measure_rr(path: Path_, rr: str, seconds: float) -> float:
    out = netns.run(path.client_ns, [rr, "client", path.server_ip, "7100", str(seconds)],
                    timeout=seconds + 30)
    return float(out.stdout.strip())


def measure_bulk(path: Path_, seconds: float) -> float:
    for _ in range(50):
        out = netns.run(path.client_ns, ["iperf3", "-c", path.server_ip, "-p", "7101", "-t",
                                         str(seconds), "-J"], check=False,
                        timeout=seconds + 30)
        if out.returncode == 0:
            data = json.loads(out.stdout)
            return float(data["end"]["sum_received"]["bits_per_second"]) / 1e9
        time.sleep(0.2)  # the server is busy or still starting
    raise RuntimeError(f"iperf3 {path.name}: {out.stdout[-500:]}")


def run(seconds: float, repeat: int) -> dict[str, Any]:
    """Two batches, each measured with its paths interleaved: direct, plain and native; then
    direct, plain and tunnel (tunnel mode's routes replace native's for the same pod CIDRs)."""
    batches: dict[str, dict[str, dict[str, list[float]]]] = {}
    with Topology("hxb") as topo, tempfile.TemporaryDirectory(prefix="podnet-bench-") as tmp, \
            scratch_bpf_dir("hexlane-podnet-bench") as bpf:
        work = Path(tmp)
        rr = build_rr(work)
        topo.lan()
        for node, (ip, _) in NODES.items():
            topo.add(node)
            topo.plug("lan", node, f"{ip}/24")
        _, plain_b = plain_pods(topo)
        base = [Path_("direct", topo["nodea"], topo["nodeb"], NODES["nodeb"][0]),
                Path_("plain", topo["plain-a"], topo["plain-b"], plain_b)]
        start_servers(topo, rr, "nodeb")
        start_servers(topo, rr, "plain-b")
        for mode in ("native", "tunnel"):
            agents = []
            for node in NODES:
                state = work / mode / node / "state"
                state.mkdir(parents=True)
                agents.append(start_agent(topo, node, state, mode))
            cni_add(topo, "nodea", f"{mode}-a", f"{mode}-a")
            ip_b = cni_add(topo, "nodeb", f"{mode}-b", f"{mode}-b")
            start_servers(topo, rr, f"{mode}-b")
            for node in NODES:
                wire_load_balancer(topo, node, bpf / mode / node, work / mode)
            # The datapath is the kernel's: the agents can go (as during an agent restart).
            for proc in agents:
                netns.stop_process(proc)
                topo.processes.remove(proc)
            paths = [*base, Path_(mode, topo[f"{mode}-a"], topo[f"{mode}-b"], ip_b)]
            results: dict[str, dict[str, list[float]]] = {}
            for _ in range(repeat):
                for path in paths:
                    entry = results.setdefault(path.name, {"rr": [], "bulk_gbps": []})
                    entry["rr"].append(measure_rr(path, rr, seconds))
                    entry["bulk_gbps"].append(measure_bulk(path, seconds))
            batches[mode] = results
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "seconds": seconds,
        "repeat": repeat,
        "loadavg": os.getloadavg(),
        "batches": {mode: _summarize(results) for mode, results in batches.items()},
    }


def _summarize(results: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    med = {name: {k: statistics.median(v) for k, v in m.items()} for name, m in results.items()}
    plain = med["plain"]
    return {name: {**m, "rr_vs_plain": m["rr"] / plain["rr"],
                   "bulk_vs_plain": m["bulk_gbps"] / plain["bulk_gbps"],
                   "samples": results[name]}
            for name, m in med.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("podnet_bench: needs root (network namespaces)", file=sys.stderr)
        return 2
    for tool in ("clang", "iperf3", "nsenter"):
        if shutil.which(tool) is None:
            print(f"podnet_bench: needs {tool}", file=sys.stderr)
            return 2
    report = run(args.seconds, args.repeat)
    if args.output == "json":
        json.dump(report, sys.stdout, indent=1)
        print()
        return 0
    print(f"pod-to-pod across nodes, {args.repeat}x{args.seconds:.0f}s each, medians "
          f"(load average {report['loadavg'][0]:.1f})")
    print(f"{'batch':7} {'path':7} {'TCP RR/s':>10} {'vs plain':>9} {'bulk Gbit/s':>12} "
          f"{'vs plain':>9}")
    for mode, paths in report["batches"].items():
        for name in ("direct", "plain", mode):
            m = paths[name]
            print(f"{mode:7} {name:7} {m['rr']:>10.0f} {m['rr_vs_plain']:>8.2f}x "
                  f"{m['bulk_gbps']:>12.2f} {m['bulk_vs_plain']:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
