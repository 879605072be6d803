"""Pod networking across two nodes built in namespaces, in native and in tunnel (VXLAN) mode.

A LAN bridge namespace, two node namespaces plugged into it, an endpoint agent in each, and
pods created through the real `hexlane-cni` ADD. Pins down: pod to pod on one node and across
nodes (ping and a TCP/HTTP transfer bigger than one MTU), node to remote pod; in native mode
the remote pod CIDR is routed via the other node's IP, in tunnel mode through `hexlane_vxlan`
(and the VXLAN device really carries the packets); an agent restart keeps existing pods
connected, new pods still come up, and no IP is handed out twice across restarts; DEL of
every pod leaves no veth or endpoint route behind.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from helpers.cni import Agent, cni, conf, start_agents
from hexlane.lab import netns
from hexlane.lab.netns import Topology

pytestmark = [pytest.mark.slow, pytest.mark.root]

NODES = {"node1": ("10.77.0.11", "10.245.1.0/24"), "node2": ("10.77.0.12", "10.245.2.0/24")}


@dataclass
class Cluster:
    mode: str
    topo: Topology
    agents: dict[str, Agent]
    pods: dict[str, tuple[str, str, str]] = field(default_factory=dict)  # name -> node, ns, ip
    served: set[str] = field(default_factory=set)

    def add_pod(self, name: str, node: str) -> str:
        ns = self.topo.add(name)
        rc, result = cni(self.topo[node], "ADD", conf(), container_id=f"ctr-{name}",
                         netns_path=netns.netns_path(ns),
                         args=f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}")
        assert rc == 0, result
        ip = result["ips"][0]["address"].split("/")[0]
        self.pods[name] = (node, ns, ip)
        return ip

    def del_pod(self, name: str) -> None:
        node, ns, _ = self.pods.pop(name)
        rc, out = cni(self.topo[node], "DEL", conf(), container_id=f"ctr-{name}",
                      netns_path=netns.netns_path(ns))
        assert rc == 0, out

    def ping(self, src: str, dst_ip: str) -> None:
        ns = self.pods[src][1] if src in self.pods else self.topo[src]
        netns.run(ns, ["busybox", "ping", "-c1", "-W2", dst_ip])

    def serve(self, name: str, tmp: Path) -> None:
        """busybox httpd on :8080 in the pod, serving a 3 MB file (many MTUs)."""
        root = tmp / f"www-{name}"
        root.mkdir(exist_ok=True)
        (root / "big").write_bytes(bytes(range(256)) * 12288)
        (root / "name").write_text(name)
        self.topo.start(name, ["busybox", "httpd", "-f", "-p", "8080", "-h", str(root)])
        self.served.add(name)

    def fetch(self, src: str, dst: str, path: str) -> bytes:
        ns = self.pods[src][1]
        out = netns.run(ns, ["curl", "-sS", "--fail", "--max-time", "10",
                             f"http://{self.pods[dst][2]}:8080/{path}"], text=False)
        return out.stdout


@pytest.fixture(scope="module", params=["native", "tunnel"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
            ) -> Iterator[Cluster]:
    mode = request.param
    tmp = tmp_path_factory.mktemp(f"podnet-{mode}")
    with Topology("hxn") as topo:
        topo.lan()
        yield Cluster(mode, topo, start_agents(topo, NODES, tmp, mode=mode))
        made = list(topo.created)
    assert not any(netns.exists(n) for n in made)


def test_routes_follow_the_routing_mode(cluster: Cluster) -> None:
    route = netns.run(cluster.topo["node1"], ["ip", "route", "get", "10.245.2.5"]).stdout
    if cluster.mode == "native":
        assert "via 10.77.0.12 dev eth0" in route
        assert "hexlane_vxlan" not in netns.run(cluster.topo["node1"], ["ip", "link"]).stdout
    else:
        assert "via 10.245.2.1 dev hexlane_vxlan" in route and "src 10.245.1.1" in route
        fdb = netns.run(cluster.topo["node1"],
                        ["bridge", "fdb", "show", "dev", "hexlane_vxlan"]).stdout
        assert "0e:68:0a:4d:00:0c dst 10.77.0.12" in fdb
        link = json.loads(netns.run(cluster.topo["node1"], [
            "ip", "-d", "-j", "link", "show", "hexlane_vxlan"]).stdout)[0]
        data = link["linkinfo"]["info_data"]
        assert (data["port"], data["learning"], link["mtu"]) == (8472, False, 1450)
    own = netns.run(cluster.topo["node1"], ["ip", "route", "show", "proto", "104"]).stdout
    assert "unreachable 10.245.1.0/24" in own


def test_pod_to_pod_same_node_and_across_nodes(cluster: Cluster, tmp_path: Path) -> None:
    a1 = cluster.add_pod("a1", "node1")
    cluster.add_pod("a2", "node1")
    b1 = cluster.add_pod("b1", "node2")
    assert ipaddress.ip_address(a1) in ipaddress.ip_network("10.245.1.0/24")
    assert ipaddress.ip_address(b1) in ipaddress.ip_network("10.245.2.0/24")
    cluster.ping("a2", a1)
    cluster.ping("a1", b1)
    cluster.ping("b1", a1)
    cluster.ping("node1", b1)  # the node reaches a remote pod too
    for name in ("a1", "b1"):
        cluster.serve(name, tmp_path)
    tx_before = _vxlan_tx(cluster)
    assert cluster.fetch("a2", "a1", "name") == b"a1"
    assert cluster.fetch("a1", "b1", "name") == b"b1"
    big = bytes(range(256)) * 12288
    assert cluster.fetch("a1", "b1", "big") == big
    assert cluster.fetch("b1", "a1", "big") == big
    if cluster.mode == "tunnel":
        assert _vxlan_tx(cluster) > tx_before + 100  # the transfer went through the tunnel


def _vxlan_tx(cluster: Cluster) -> int:
    if cluster.mode != "tunnel":
        return 0
    link = json.loads(netns.run(cluster.topo["node1"], [
        "ip", "-s", "-j", "link", "show", "hexlane_vxlan"]).stdout)[0]
    return int(link["stats64"]["tx"]["packets"])


def test_agent_restart_keeps_pods_and_never_reuses_ips(cluster: Cluster) -> None:
    if "a1" not in cluster.pods:
        cluster.add_pod("a1", "node1")
        cluster.add_pod("b1", "node2")
    before = {name: ip for name, (_, _, ip) in cluster.pods.items()}
    agent = cluster.agents["node1"]
    agent.stop()
    cluster.ping("a1", cluster.pods["b1"][2])  # the datapath does not need the agent
    rc, out = cni(cluster.topo["node1"], "ADD", conf(), container_id="ctr-while-down",
                  netns_path=netns.netns_path(cluster.pods["a1"][1]), ifname="eth9")
    assert rc != 0 and out["code"] == 50
    agent.start()
    eps = {e["pod_name"]: e["ip"] for e in agent.get("/v1/endpoints")}
    assert {n: ip for n, ip in eps.items()} == {
        n: ip for n, (node, _, ip) in cluster.pods.items() if node == "node1"}
    new = [cluster.add_pod(f"c{i}", "node1") for i in range(3)]
    agent.stop()
    agent.start()
    new.append(cluster.add_pod("c3", "node1"))
    ips = [ip for _, _, ip in cluster.pods.values()]
    assert len(ips) == len(set(ips)), ips  # no IP twice, across two restarts
    assert not set(new) & set(before.values())
    for name in ("a1", "c0", "c3"):
        cluster.ping("b1", cluster.pods[name][2])
    cluster.ping("c3", cluster.pods["a1"][2])


def test_del_removes_links_and_routes(cluster: Cluster) -> None:
    if not cluster.pods:
        cluster.add_pod("z1", "node1")
    for name in list(cluster.pods):
        cluster.del_pod(name)
    for node, agent in cluster.agents.items():
        assert agent.get("/v1/endpoints") == []
        links = netns.run(cluster.topo[node], ["ip", "link"]).stdout
        assert "lxc" not in links
        routes = netns.run(cluster.topo[node], ["ip", "route", "show", "proto", "104"]).stdout
        assert "/32" not in routes and "scope link" not in routes
