"""`hexlane agent`, `hexlane status` and `hexlane cleanup` for real, in network namespaces.

Two node namespaces on a LAN bridge, the embedded apiserver in a cp namespace, agents started
through nsenter with their own state dir, bpf root and CNI directories. Pins down, in order:

- agents become healthy (`hexlane status --brief` prints OK in the node) once their Node and
  CiliumNode exist, install the CNI config and plugin, and report IPAM, routing,
  masquerading and their tc programs;
- pods made through the installed plugin reach each other across nodes (native routing);
- a ClusterIP Service reaches a pod on another node (the service load balancer is wired);
- kernel objects changed behind the agent's back (a service map entry, the route to the
  other node's pod CIDR, the load balancer's tc filter on lo, the CNI config) are put back by
  the periodic resync and counted as repairs in `hexlane status -o json` and the metrics;
- routes to another node's pod CIDR appear when its Node+CiliumNode appear and go with them;
- `bpftool net` lists hexlane's programs; no iptables or nftables rule exists in any node;
- pod to a client outside the native routing CIDR leaves with the node's IP (eBPF masquerade);
- kill -9 and restart of an agent keeps existing pods connected, keeps their IPs and every
  route, carries out a DEL queued while it was down, and new pods come up;
- the API server going away is reported by `status --brief` while pods keep talking and
  new pods still come up; its return makes the agent healthy again;
- `hexlane cleanup` (in the node) refuses while the agent runs, lists without --yes, and
  leaves no hexlane link, route, pin or file, twice over;
- tunnel mode with `ipam.mode: kubernetes` (Node spec.podCIDR): until the Node has one,
  `status --brief` says so; then pods reach each other across nodes through hexlane_vxlan.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from agent_helpers import Cluster

from helpers.wait import wait_for
from hexlane.lab import netns

pytestmark = [pytest.mark.slow, pytest.mark.root]

POD_RANGE = "10.248.0.0/16"
CIDRS = {"node1": "10.248.1.0/24", "node2": "10.248.2.0/24"}

NATIVE = f"""
routingMode: native
autoDirectNodeRoutes: true
ipv4NativeRoutingCIDR: {POD_RANGE}
kubeProxyReplacement: true
ipam:
  mode: cluster-pool
  operator:
    clusterPoolIPv4PodCIDRList: ["{POD_RANGE}"]
reconciler:
  resyncInterval: 3s
"""

TUNNEL = f"""
routingMode: tunnel
ipv4NativeRoutingCIDR: {POD_RANGE}
ipam:
  mode: kubernetes
"""

# Answers every TCP connection with the peer's address.
WHOAMI = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(16)
while True:
    c, a = s.accept(); c.sendall(f"{a[0]}\n".encode()); c.close()
"""

ASK = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], 7000), timeout=3); print(s.recv(100).decode().strip())
"""


def routes(cluster: Cluster, node: str) -> str:
    return str(cluster.run(node, "ip", "route", "show", "proto", "104").stdout)


def links(cluster: Cluster, node: str) -> list[str]:
    out = json.loads(cluster.run(node, "ip", "-j", "link", "show").stdout)
    return [str(link["ifname"]) for link in out]


@pytest.fixture(scope="module")
def native(cluster: Cluster) -> Cluster:
    values = cluster.values("native", NATIVE)
    for i, node in ((1, "node1"), (2, "node2")):
        cluster.add_node(i)
        cluster.set_ciliumnode(node, CIDRS[node])
        cluster.start_agent(node, values)
    for node in ("node1", "node2"):
        cluster.agents[node].wait_ok()
    return cluster


def test_agents_become_healthy_and_report(native: Cluster) -> None:
    agent = native.agents["node1"]
    status = agent.status()
    assert status["health"] == {"ok": True, "reasons": []}
    assert status["ipam"]["mode"] == "cluster-pool"
    assert status["ipam"]["podCIDR"] == CIDRS["node1"]
    assert status["ipam"]["routerIP"] == "10.248.1.1"
    assert status["routing"]["mode"] == "native"
    assert status["routing"]["autoDirectNodeRoutes"] is True
    assert [n["name"] for n in status["routing"]["nodes"]] == ["node2"]
    assert status["masquerading"]["enabled"] and status["masquerading"]["device"] == "eth0"
    assert status["masquerading"]["nativeRoutingCIDR"] == POD_RANGE
    programs = {(p["device"], p["direction"], p["name"])
                for p in status["datapath"]["programs"]}
    assert {("eth0", "egress", "hl_masq_egress"), ("eth0", "ingress", "hl_masq_ingress")} \
        <= programs
    assert status["kubernetes"]["reachable"] is True
    assert all(i["synced"] for i in status["kubernetes"]["informers"].values())
    assert status["kubeProxyReplacement"]["enabled"] is True
    text = agent.hexlane("status").stdout
    assert "Health:" in text and "OK" in text and "10.248.1.0/24" in text
    # The CNI config and plugin are installed where the flags said.
    conflist = json.loads((agent.conf_dir / "05-hexlane.conflist").read_text())
    assert conflist["plugins"][0]["type"] == "hexlane-cni"
    assert (agent.bin_dir / "hexlane-cni").stat().st_mode & 0o111
    # Metrics on 127.0.0.1:9962 inside the node.
    metrics = native.run("node1", sys.executable, "-c",
                         "import urllib.request;print(urllib.request.urlopen("
                         "'http://127.0.0.1:9962/metrics').read().decode())").stdout
    assert "cilium_endpoint " in metrics and "cilium_process_cpu_seconds_total" in metrics


def test_pods_reach_each_other_across_nodes(native: Cluster) -> None:
    a = native.add_pod("node1", "a")
    b = native.add_pod("node2", "b")
    assert a.startswith("10.248.1.") and b.startswith("10.248.2.")
    assert native.ping("a", b, count=2)
    assert native.ping("b", a)
    assert "10.248.2.0/24 via 10.81.0.12" in routes(native, "node1")


def test_clusterip_reaches_a_pod_on_another_node(native: Cluster) -> None:
    """kubeProxyReplacement: the agent wires the service load balancer to its informers."""
    a = native.add_pod("node1", "sa")
    b = native.add_pod("node2", "sb")
    native.topo.start("sb", [sys.executable, "-c", WHOAMI])
    svc = native.api.ok("POST", "/api/v1/namespaces/default/services", {
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80, "targetPort": 7000, "protocol": "TCP"}]}})
    native.api.ok("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [b], "conditions": {"ready": True}, "nodeName": "node2"}],
        "ports": [{"port": 7000, "protocol": "TCP", "name": ""}]})
    vip = svc["spec"]["clusterIP"]

    def ask() -> str:
        out = native.run("sa", sys.executable, "-c", ASK.replace("7000", "80"), vip,
                         check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    # DNAT only: the backend sees the pod
    assert wait_for("the Service to answer", ask, timeout=20, interval=0.2) == a
    kpr = native.agents["node1"].status()["kubeProxyReplacement"]
    assert kpr["enabled"] and kpr["services"] >= 1 and kpr["lastError"] == ""


def repairs(agent: Any) -> dict[str, int]:
    tables = agent.status()["reconcilers"]["tables"]
    return {t["table"]: t["repairs"] for t in tables}


def test_changes_behind_the_agents_back_are_repaired(native: Cluster) -> None:
    """The resync controller (every 3 s here) reads every kernel object back."""
    agent = native.agents["node1"]
    if "sa" not in native.topo.namespaces:
        test_clusterip_reaches_a_pod_on_another_node(native)
    before = repairs(agent)
    pinned = str(agent.bpf_root / "hl_lb4_services")
    entries = json.loads(native.run("node1", "bpftool", "-j", "map", "dump", "pinned",
                                    pinned).stdout)
    assert entries, "the Service's frontend is in the map"
    for entry in entries:
        native.run("node1", "bpftool", "map", "delete", "pinned", pinned, "key", "hex",
                   *(k.removeprefix("0x") for k in entry["key"]))
    native.run("node1", "ip", "route", "del", CIDRS["node2"])
    native.run("node1", "tc", "filter", "del", "dev", "lo", "egress")
    conf = agent.conf_dir / "05-hexlane.conflist"
    text = conf.read_text()
    conf.unlink()
    assert f"{CIDRS['node2']} via" not in routes(native, "node1")

    def restored() -> bool:
        dump = json.loads(native.run("node1", "bpftool", "-j", "map", "dump", "pinned",
                                     pinned).stdout)
        lo = native.run("node1", "tc", "filter", "show", "dev", "lo", "egress").stdout
        return (len(dump) == len(entries) and f"{CIDRS['node2']} via" in routes(native, "node1")
                and "hl_" in lo and conf.is_file() and conf.read_text() == text)

    assert wait_for("every change to be put back", restored, timeout=20, interval=0.2)
    after = repairs(agent)
    grew = {t for t in after if after[t] > before.get(t, 0)}
    assert {"lb4_services", "routes", "tc_attachments", "cni_files"} <= grew, (before, after)
    metrics = native.run("node1", sys.executable, "-c",
                         "import urllib.request;print(urllib.request.urlopen("
                         "'http://127.0.0.1:9962/metrics').read().decode())").stdout
    assert 'hexlane_reconciler_repairs_total{table="lb4_services"}' in metrics
    # And the Service answers the pod again.
    vip = native.api.ok("GET", "/api/v1/namespaces/default/services/web")["spec"]["clusterIP"]
    out = native.run("sa", sys.executable, "-c", ASK.replace("7000", "80"), vip, check=False)
    assert out.returncode == 0 and out.stdout.strip().startswith("10.248.1."), out


def test_routes_follow_nodes_and_ciliumnodes(native: Cluster) -> None:
    native.create_node("node3", "10.81.0.13")
    assert "10.248.3.0/24" not in routes(native, "node1")
    native.set_ciliumnode("node3", "10.248.3.0/24")
    wait_for("the route to node3 on node1",
             lambda: "10.248.3.0/24 via 10.81.0.13" in routes(native, "node1"), 15, 0.2)
    native.api.ok("DELETE", "/apis/cilium.io/v2/ciliumnodes/node3")
    wait_for("the route to node3 on node2 to go",
             lambda: "10.248.3.0/24" not in routes(native, "node2"), 15, 0.2)
    native.set_ciliumnode("node3", "10.248.3.0/24")
    wait_for("the route to node3 on node2",
             lambda: "10.248.3.0/24" in routes(native, "node2"), 15, 0.2)
    native.api.ok("DELETE", "/api/v1/nodes/node3")
    native.api.ok("DELETE", "/apis/cilium.io/v2/ciliumnodes/node3")
    wait_for("the routes to node3 to go",
             lambda: "10.248.3.0/24" not in routes(native, "node1")
             and "10.248.3.0/24" not in routes(native, "node2"), 15, 0.2)


def test_programs_listed_and_no_iptables_or_nftables_rules(native: Cluster) -> None:
    for node in ("node1", "node2"):
        net = native.run(node, "bpftool", "-j", "net", "show").stdout
        assert "hl_masq_egress" in net and "hl_masq_ingress" in net
        assert native.run(node, "nft", "list", "ruleset").stdout.strip() == ""
        saved = native.run(node, "iptables-save").stdout
        assert not [line for line in saved.splitlines() if line.startswith("-A")], saved


def test_pod_to_outside_is_masqueraded(native: Cluster) -> None:
    native.topo.start("client", [sys.executable, "-c", WHOAMI])
    if "a" not in native.topo.namespaces:
        native.add_pod("node1", "a")

    def ask() -> str:
        out = native.run("a", sys.executable, "-c", ASK, Cluster.CLIENT, check=False)
        return out.stdout.strip() if out.returncode == 0 else ""

    assert wait_for("the client to answer", ask, 15, 0.2) == native.node_ip(1)


def test_kill_and_restart_keeps_pods_connected(native: Cluster) -> None:
    a = native.add_pod("node1", "ka")
    b = native.add_pod("node2", "kb")
    native.add_pod("node1", "kd")
    agent = native.agents["node1"]
    # Every route change in node1 while the agent dies and comes back.
    monitor = native.topo.start("node1", ["ip", "monitor", "route"], stdout=subprocess.PIPE,
                                text=True)
    agent.kill()
    assert native.ping("ka", b), "traffic must flow while the agent is down"
    deleted = native.cni("node1", "DEL", "kd")  # queued while no agent answers
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    assert list((agent.state_dir / "cni-del-queue").glob("*.json"))
    native.start_agent("node1", agent.values)
    agent.wait_ok()
    assert native.ping("ka", b)
    monitor.terminate()
    changes = monitor.communicate(timeout=10)[0]
    assert "10.248.2.0/24" not in changes, "the route to node2 must stay in place"
    state = json.loads((agent.state_dir / "endpoints.json").read_text())
    endpoints = {e["pod_name"]: e["ip"] for e in state["endpoints"]}
    assert endpoints["ka"] == a
    assert "kd" not in endpoints, "the queued DEL is carried out at start"
    assert not list((agent.state_dir / "cni-del-queue").glob("*.json"))
    c = native.add_pod("node1", "kc")
    assert c not in endpoints.values()
    assert native.ping("kc", b)
    # Killed again at a random moment of its start, it still comes back whole.
    agent.kill()
    native.start_agent("node1", agent.values)
    time.sleep(0.3)
    agent.kill()
    native.start_agent("node1", agent.values)
    agent.wait_ok()
    assert native.ping("kc", a) and native.ping("ka", b)


def test_api_outage_is_reported_and_survived(native: Cluster) -> None:
    agent = native.agents["node1"]
    a = native.add_pod("node1", "oa")
    b = native.add_pod("node2", "ob")
    native.stop_apiserver()
    try:
        def not_ok() -> str:
            out = agent.hexlane("status", "--brief")
            return out.stdout if out.returncode == 1 else ""

        assert "unreachable" in wait_for("the API to be reported away", not_ok, 15, 0.2)
        assert native.ping("oa", b), "pods keep talking while the API server is away"
        c = native.add_pod("node1", "oc")  # the CNI plugin is served from local state
        assert c not in (a, b) and native.ping("oc", b)
    finally:
        native.start_apiserver()
    agent.wait_ok()


def hexlane_leftovers(cluster: Cluster, node: str) -> list[str]:
    agent = cluster.agents[node]
    left = [name for name in links(cluster, node)
            if name.startswith(("hexlane_", "lxc"))]
    left += [line for line in routes(cluster, node).splitlines() if line]
    if "hl_" in cluster.run(node, "bpftool", "net", "show").stdout:
        left.append("tc programs")
    for path in (agent.state_dir, agent.bpf_root, agent.conf_dir / "05-hexlane.conflist",
                 agent.bin_dir / "hexlane-cni"):
        if path.exists():
            left.append(str(path))
    return left


def test_cleanup_removes_everything(native: Cluster) -> None:
    agent = native.agents["node2"]
    refused = agent.hexlane("cleanup", "--yes", "--cni-conf-dir", str(agent.conf_dir),
                            "--cni-bin-dir", str(agent.bin_dir))
    assert refused.returncode == 1 and "agent is running" in refused.stderr
    agent.stop()
    assert hexlane_leftovers(native, "node2")
    # Empty CNI directories on the command line: the agent's own are found in its record.
    empty = native.tmp / "no-cni"
    flags = ("--cni-conf-dir", str(empty), "--cni-bin-dir", str(empty))
    dry = agent.hexlane("cleanup", *flags)
    assert dry.returncode == 1 and "would remove link hexlane_host" in dry.stdout
    assert f"would remove file {agent.conf_dir / '05-hexlane.conflist'}" in dry.stdout
    assert "hexlane_host" in links(native, "node2")
    done = agent.hexlane("cleanup", "--yes", *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed tc eth0 egress hl_masq_egress" in done.stdout
    assert hexlane_leftovers(native, "node2") == []
    again = agent.hexlane("cleanup", "--yes", *flags)
    assert again.returncode == 0 and "nothing of hexlane's here" in again.stdout
    # The other node is untouched.
    assert "hexlane_host" in links(native, "node1")


def test_tunnel_mode_with_kubernetes_ipam(native: Cluster) -> None:
    """Both agents re-installed in tunnel mode, pod CIDRs from Node spec.podCIDR."""
    values = native.values("tunnel", TUNNEL)
    for node in ("node1", "node2"):
        agent = native.agents[node]
        agent.stop()
        out = agent.hexlane("cleanup", "--yes", "--cni-conf-dir", str(agent.conf_dir),
                            "--cni-bin-dir", str(agent.bin_dir))
        assert out.returncode == 0, out.stdout + out.stderr
    for node in ("node1", "node2"):
        native.start_agent(node, values)
    # No pod CIDR yet: the agent says what it waits for, and the plugin is told to retry.
    # (Right after its start it may first wait for the API or its Node: those pass.)
    def reason() -> str:
        out = native.agents["node1"].hexlane("status", "--brief")
        return out.stdout if out.returncode == 1 and "waiting for" in out.stdout else ""

    waiting = wait_for("status to say it waits for a pod CIDR",
                       lambda: (r := reason()) and "pod CIDR" in r and r, 30, 0.2)
    assert "a pod CIDR in Node spec.podCIDRs of node1" in waiting
    for i, node in ((1, "node1"), (2, "node2")):
        native.api.merge(f"/api/v1/nodes/{node}",
                         {"spec": {"podCIDR": f"10.248.{10 + i}.0/24",
                                   "podCIDRs": [f"10.248.{10 + i}.0/24"]}})
    for node in ("node1", "node2"):
        native.agents[node].wait_ok()
    status = native.agents["node1"].status()
    assert status["routing"]["mode"] == "tunnel"
    assert status["ipam"] == {**status["ipam"], "mode": "kubernetes",
                              "podCIDR": "10.248.11.0/24"}
    assert "hexlane_vxlan" in links(native, "node1")
    a = native.add_pod("node1", "ta")
    b = native.add_pod("node2", "tb")
    assert a.startswith("10.248.11.") and b.startswith("10.248.12.")
    assert native.ping("ta", b, count=2)
    assert "10.248.12.0/24 via 10.248.12.1 dev hexlane_vxlan" in routes(native, "node1")


def test_nothing_left_in_the_machine(native: Cluster) -> None:
    """The tests never touched the machine's own namespace (no hexlane link appears there)."""
    ours = [p for p in Path("/sys/class/net").iterdir()
            if p.name.startswith(("hexlane_", "lxc"))]
    assert ours == []
    assert all(netns.exists(n) for n in native.topo.created)
