"""eBPF masquerading of pod traffic on the node's LAN interface (bpf/masq.c), for real.

A LAN with two nodes (agents with `--masquerade-device eth0`, ipv4NativeRoutingCIDR set to the
pod range) and a client that knows nothing of pod CIDRs. Pins down: a pod's TCP and UDP flows
to the client leave with the node's IP and a NAT port in 61000-65535, and the replies find
their way back to the pod, and so do ICMP echos (ping); pod to pod across nodes and pod to
another node's IP keep the pod's own source address; the NAT state and counters are visible
in the agent's status; the programs show in `bpftool net` and no iptables/nftables rule
exists in the node; masquerading keeps working across an agent restart (pinned maps, filters
left attached).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cni import Agent, cni, conf, start_agents
from hexlane.lab import netns
from hexlane.lab.netns import Topology

pytestmark = [pytest.mark.slow, pytest.mark.root]

NODES = {"node1": ("10.79.0.11", "10.247.1.0/24"), "node2": ("10.79.0.12", "10.247.2.0/24")}
CLIENT = "10.79.0.2"

# Answers every TCP connection / UDP datagram with the peer's "address:port".
WHOAMI = r"""
import socket, sys, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 7000)); s.listen(16)
    while True:
        c, a = s.accept(); c.sendall(f"{a[0]}:{a[1]}\n".encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 7001))
    while True:
        _, a = s.recvfrom(100); s.sendto(f"{a[0]}:{a[1]}\n".encode(), a)
threading.Thread(target=udp, daemon=True).start()
tcp()
"""

ASK = r"""
import socket, sys
host, proto = sys.argv[1], sys.argv[2]
if proto == "tcp":
    s = socket.create_connection((host, 7000), timeout=5); print(s.recv(100).decode().strip())
else:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
    s.sendto(b"hi", (host, 7001)); print(s.recv(100).decode().strip())
"""


@pytest.fixture(scope="module")
def lab(bpffs: Path, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[tuple[Topology, dict[str, Agent]]]:
    tmp = tmp_path_factory.mktemp("masq")
    bpf_root = bpffs / "masquerade"
    with Topology("hxm") as topo:
        topo.lan()
        topo.add("client")
        topo.plug("lan", "client", f"{CLIENT}/24")
        topo.start("client", [sys.executable, "-c", WHOAMI])
        yield topo, start_agents(topo, NODES, tmp, extra_args=lambda name: [
            "--masquerade-device", "eth0", "--bpf-root", str(bpf_root / name),
            "--native-routing-cidr", "10.247.0.0/16"])
        made = list(topo.created)
    assert not any(netns.exists(n) for n in made)


def add_pod(topo: Topology, node: str, name: str) -> str:
    ns = topo.add(name)
    rc, result = cni(topo[node], "ADD", conf(), container_id=f"ctr-{name}",
                     netns_path=netns.netns_path(ns))
    assert rc == 0, result
    return str(result["ips"][0]["address"].split("/")[0])


def ask(topo: Topology, role: str, host: str, proto: str, tries: int = 40
        ) -> tuple[str, int]:
    """Who the whoami server at `host` sees; retried while the server is still starting."""
    for _ in range(tries):
        out = netns.run(topo[role], [sys.executable, "-c", ASK, host, proto], check=False)
        if out.returncode == 0:
            addr, port = out.stdout.strip().rsplit(":", 1)
            return addr, int(port)
        if "ConnectionRefused" not in out.stderr:
            break
        time.sleep(0.25)
    raise AssertionError(f"{role} -> {host} {proto}: {out.stderr.strip()[-500:]}")


def test_pod_to_world_leaves_with_the_node_ip(lab: tuple[Topology, dict[str, Agent]]) -> None:
    topo, agents = lab
    pod_ip = add_pod(topo, "node1", "a")
    for proto in ("tcp", "udp"):
        addr, port = ask(topo, "a", CLIENT, proto)
        assert addr == "10.79.0.11", proto
        assert 61000 <= port <= 65535, (proto, port)
    # ICMP echo too: the client has no route to pod CIDRs, so a reply only comes back
    # through the translation.
    netns.run(topo["a"], ["busybox", "ping", "-c2", "-W3", CLIENT])
    status = agents["node1"].get("/v1/cni/status")["masquerade"]
    assert status["enabled"] and status["device"] == "eth0"
    assert status["counters"]["egress"] >= 2 and status["counters"]["ingress"] >= 2
    assert {(t["proto"], t["pod_ip"], t["remote_ip"]) for t in status["translations"]} >= {
        (6, pod_ip, CLIENT), (17, pod_ip, CLIENT), (1, pod_ip, CLIENT)}
    assert "10.247.0.0/16" in status["nonMasqueradeCIDRs"]
    assert "10.79.0.12/32" in status["nonMasqueradeCIDRs"]


def test_cluster_traffic_keeps_the_pod_source(lab: tuple[Topology, dict[str, Agent]]) -> None:
    topo, _ = lab
    a_ip = add_pod(topo, "node1", "a2")
    b_ip = add_pod(topo, "node2", "b")
    topo.start("b", [sys.executable, "-c", WHOAMI])
    topo.start("node2", [sys.executable, "-c", WHOAMI])
    assert ask(topo, "a2", b_ip, "tcp")[0] == a_ip  # pod to pod: native routing CIDR
    assert ask(topo, "a2", "10.79.0.12", "tcp")[0] == a_ip  # pod to another node's IP


def test_no_iptables_rules_and_programs_listed(lab: tuple[Topology, dict[str, Agent]]) -> None:
    topo, _ = lab
    net = json.loads(netns.run(topo["node1"], ["bpftool", "-j", "net", "show"]).stdout)
    names = json.dumps(net)
    assert "hl_masq_egress" in names and "hl_masq_ingress" in names
    if shutil.which("nft"):
        assert netns.run(topo["node1"], ["nft", "list", "ruleset"]).stdout.strip() == ""


def test_masquerade_survives_an_agent_restart(lab: tuple[Topology, dict[str, Agent]]) -> None:
    topo, agents = lab
    if "a" not in topo.namespaces:
        add_pod(topo, "node1", "a")
    agents["node1"].stop()
    assert ask(topo, "a", CLIENT, "tcp")[0] == "10.79.0.11"  # filters stay attached
    agents["node1"].start()
    assert ask(topo, "a", CLIENT, "udp")[0] == "10.79.0.11"

