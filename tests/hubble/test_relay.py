"""Hubble Relay on real sockets: `hexlane hubble relay` (the CLI, a subprocess) in front of
three real Hubble servers holding interleaved flows, judged by grpcurl and by `hexlane hubble
observe` as a user runs it.

Pins down: the stored flows of all nodes come as one stream in time order, and `number` /
`first` select across the cluster; filters reach the nodes and a bad one is refused by the
relay itself; ServerStatus adds the nodes up and counts them, GetNodes and GetNamespaces
cover every node; a follower gets new flows of every node merged in time order, hears a node
go (NODE_UNAVAILABLE, ServerStatus counts it) and come back (NODE_CONNECTED, its flows
again, none twice); bad flags are refused with the flag named.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubble_helpers import (
    BASE_NS,
    HEXLANE,
    SEC,
    Follower,
    RunningHubble,
    flow,
    grpcurl,
    hexlane,
    json_stream,
)

from helpers.wait import wait_for

NODES = ("default/node1", "default/node2", "default/node3")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def node_flow(k: int, node: str, ns: str = "bar") -> Any:
    """The k-th flow of the cluster (k seconds after BASE_NS), seen on `node`."""
    return flow(time_ns=BASE_NS + k * SEC, node=node, src_ns=ns, src_pod=f"client-{k}",
                dst_ns=ns, dst_pod="echo-0", sport=40000 + k)


class Cluster:
    """Three Hubble servers and a relay dialing them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.servers: dict[str, RunningHubble] = {}
        self.relay_port = free_port()
        self.relay: subprocess.Popen[str] | None = None

    def start_node(self, node: str, port: int = 0) -> RunningHubble:
        directory = self.root / node.replace("/", "-") / str(time.monotonic_ns())
        directory.mkdir(parents=True)
        server = RunningHubble(directory, node=node, listen=f"127.0.0.1:{port}").__enter__()
        self.servers[node] = server
        return server

    def stop_node(self, node: str) -> int:
        server = self.servers.pop(node)
        server.__exit__(None, None, None)
        return server.port

    def start_relay(self) -> None:
        peers = [f"--peer={n}=127.0.0.1:{s.port}" for n, s in self.servers.items()]
        self.log = (self.root / "relay.log").open("w")
        self.relay = subprocess.Popen(
            [*HEXLANE, "hubble", "relay", "--listen-address", f"127.0.0.1:{self.relay_port}",
             "--dial-timeout", "1s", "--retry-timeout", "200ms", *peers],
            stdout=self.log, stderr=subprocess.STDOUT, text=True)
        wait_for("the relay connected to every node", lambda: self.status().get(
            "num_connected_nodes") == len(self.servers), timeout=15, interval=0.2)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.relay_port}"

    def call(self, method: str, data: object = None) -> list[Any]:
        out = grpcurl("-plaintext", self.address, f"observer.Observer/{method}", data=data,
                      check=False)
        return json_stream(out.stdout) if out.returncode == 0 else []

    def status(self) -> dict[str, Any]:
        answer = self.call("ServerStatus")
        return answer[0] if answer else {}

    def close(self) -> None:
        if self.relay is not None:
            self.relay.terminate()
            try:
                self.relay.wait(10)
            except subprocess.TimeoutExpired:
                self.relay.kill()
                self.relay.wait()
            self.log.close()
        for node in list(self.servers):
            self.stop_node(node)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Flows 0-8 spread over three nodes (flow k on node k % 3), and the relay (the follow
    test, last, adds flows and restarts node3)."""
    c = Cluster(tmp_path_factory.mktemp("relay"))
    try:
        for node in NODES:
            c.start_node(node)
        for k in range(9):
            node = NODES[k % 3]
            c.servers[node].add(node_flow(k, node, ns="bar" if k % 2 else "foo"))
        c.start_relay()
        yield c
    finally:
        c.close()


def flow_times(responses: list[Any]) -> list[int]:
    return [int(r["flow"]["source"]["pod_name"].split("-")[1]) for r in responses
            if "flow" in r]


def test_stored_flows_of_every_node_in_time_order(cluster: Cluster) -> None:
    everything = cluster.call("GetFlows", {})
    assert flow_times(everything) == list(range(9))
    assert [r["node_name"] for r in everything] == [NODES[k % 3] for k in range(9)]
    assert flow_times(cluster.call("GetFlows", {"number": 4})) == [5, 6, 7, 8]
    assert flow_times(cluster.call("GetFlows", {"number": 2, "first": True})) == [0, 1]
    # hexlane hubble observe through the relay: the same order, node names printed.
    out = hexlane("hubble", "observe", "--server", cluster.address, "--last", "3",
                  "--print-node-name")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [ln.split("[")[1].split("]")[0] for ln in lines] == [NODES[k % 3] for k in (6, 7, 8)]


def test_filters_reach_the_nodes_and_a_bad_one_is_refused(cluster: Cluster) -> None:
    picked = cluster.call("GetFlows", {"whitelist": [{"source_pod": ["foo/"]}]})
    assert flow_times(picked) == [0, 2, 4, 6, 8]
    bad = grpcurl("-plaintext", "-d", json.dumps({"whitelist": [{"source_ip": ["nope"]}]}),
                  cluster.address, "observer.Observer/GetFlows", check=False)
    assert bad.returncode != 0 and "InvalidArgument" in bad.stderr and "source_ip" in bad.stderr


def test_status_nodes_and_namespaces_cover_the_cluster(cluster: Cluster) -> None:
    status = cluster.status()
    assert status["num_flows"] == "9" and status["seen_flows"] == "9"
    assert status["max_flows"] == str(3 * 63)
    assert status["num_connected_nodes"] == 3 and status["num_unavailable_nodes"] == 0
    nodes = cluster.call("GetNodes")[0]["nodes"]
    assert [(n["name"], n["state"], n["num_flows"]) for n in nodes] == [
        (name, "NODE_CONNECTED", "3") for name in NODES]
    namespaces = cluster.call("GetNamespaces")[0]["namespaces"]
    assert [n["namespace"] for n in namespaces] == ["bar", "foo"]
    out = hexlane("hubble", "status", "--server", cluster.address)
    assert "Connected Nodes: 3/3" in out.stdout, out.stdout + out.stderr


def test_a_follower_gets_every_node_in_order_and_hears_a_node_go_and_return(
        cluster: Cluster) -> None:
    # From flow 9 on, whether the flows come before or after the streams open.
    follower = Follower([*HEXLANE, "hubble", "observe", "--server", cluster.address, "-f",
                         "-o", "json", "--since", "2024-12-04T10:00:09Z"])
    try:
        for k in range(9, 18):
            node = NODES[k % 3]
            cluster.servers[node].add(node_flow(k, node))
        assert flow_times(follower.take(9)) == list(range(9, 18))

        port = cluster.stop_node("default/node3")
        event = follower.take(1)[0]["node_status"]
        assert event["state_change"] == "NODE_UNAVAILABLE"
        assert event["node_names"] == ["default/node3"]
        status = cluster.status()
        assert status["num_connected_nodes"] == 2
        assert status["unavailable_nodes"] == ["default/node3"]
        # The others' flows are not held back by the dead node.
        cluster.servers["default/node1"].add(node_flow(18, "default/node1"))
        assert flow_times(follower.take(1)) == [18]

        back = cluster.start_node("default/node3", port)
        back.add(node_flow(20, "default/node3"))
        event = follower.take(1)[0]["node_status"]
        assert event == {"state_change": "NODE_CONNECTED", "node_names": ["default/node3"]}
        assert flow_times(follower.take(1)) == [20]
        back.add(node_flow(21, "default/node3"))
        assert flow_times(follower.take(1)) == [21]  # no flow twice after the rejoin
        assert cluster.status()["num_connected_nodes"] == 3
    finally:
        follower.close()


def test_bad_flags_are_refused_naming_the_flag() -> None:
    out = subprocess.run([*HEXLANE, "hubble", "relay", "--peer", "node1"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "--peer" in out.stderr and "NAME=HOST:PORT" in out.stderr
    out = subprocess.run([*HEXLANE, "hubble", "relay", "--peer", "n=127.0.0.1:1",
                          "--sort-buffer-drain-timeout", "soon"], capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 2 and "--sort-buffer-drain-timeout" in out.stderr


def test_peers_follow_the_kubernetes_nodes(apiservers: Any, tmp_path: Path) -> None:
    """With a kubeconfig the relay's peers are the Nodes: a Node added joins (its server at
    the Node's InternalIP and hubble.listenAddress's port), a Node deleted leaves
    (NODE_GONE to a follower), over a real apiserver's list and watch."""
    server = apiservers()
    port = free_port()
    hubble = RunningHubble(tmp_path, node="default/k1", listen=f"127.0.0.2:{port}").__enter__()
    relay_port = free_port()
    relay = subprocess.Popen(
        [*HEXLANE, "hubble", "relay", "--kubeconfig", str(server.kubeconfig),
         "--set", f"hubble.listenAddress=:{port}", "--set", "hubble.tls.enabled=false",
         "--listen-address", f"127.0.0.1:{relay_port}", "--dial-timeout", "1s",
         "--retry-timeout", "200ms"],
        stdout=(tmp_path / "relay.log").open("w"), stderr=subprocess.STDOUT)
    address = f"127.0.0.1:{relay_port}"

    def connected() -> int | None:
        out = grpcurl("-plaintext", address, "observer.Observer/ServerStatus", check=False)
        return json_stream(out.stdout)[0].get("num_connected_nodes", 0) \
            if out.returncode == 0 else None
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "k1"},
            "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.2"}]}}
    follower = None
    try:
        wait_for("the relay serving, with no nodes", lambda: connected() == 0, timeout=15,
                 interval=0.2)
        code, _ = server.api.post("/api/v1/nodes", node)
        assert code == 201
        wait_for("node k1 joined", lambda: connected() == 1, timeout=10, interval=0.2)
        hubble.add(node_flow(1, "default/k1"))
        follower = Follower([*HEXLANE, "hubble", "observe", "--server", address, "-f", "-o",
                             "json", "--since", "2024-12-04T10:00:00Z"])
        assert flow_times(follower.take(1)) == [1]
        code, _ = server.api.delete("/api/v1/nodes/k1")
        assert code == 200
        event = follower.until(lambda r: "node_status" in r)["node_status"]
        assert event["state_change"] == "NODE_GONE" and event["node_names"] == ["default/k1"]
        wait_for("no node left", lambda: connected() == 0, timeout=10, interval=0.2)
    finally:
        if follower is not None:
            follower.close()
        relay.terminate()
        relay.wait(10)
        hubble.__exit__(None, None, None)
