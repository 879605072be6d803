"""The pure core of `hexlane connectivity test`: the cells listed for each kind of lab, what
each expects, the objects deployed, the probes' output parsed, and the judge's verdicts on
crafted results (missing and foreign backends, a wrong client IP, partial failures, the
`kubernetes` Service over HTTPS, uploads not received whole)."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hexlane.cli.main import main
from hexlane.lab import conncheck as cc
from hexlane.model.errors import InputError

NODES = ("node1", "node2")
IPS = ("10.0.0.11", "10.0.0.12")
LAN = IPv4Network("10.0.0.0/24")


def facts(**kw: object) -> cc.LabFacts:
    base = cc.LabFacts(NODES, IPS, "10.0.0.2", LAN, mode_annotation=True,
                       algorithm_annotation=True, external_ips=True)
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


TUNNEL = facts()
NATIVE = facts(routing_mode="native")

INV = cc.Inventory(
    backends={"echo-node1-a": ("echo", "node1"), "echo-node1-b": ("echo", "node1"),
              "echo-node2-a": ("echo", "node2"), "echo-node2-b": ("echo", "node2"),
              "host-node2": ("host", "node2")},
    source_ips={"backend@node1": "10.42.0.3", "pod@node1": "10.42.0.2",
                "pod@node2": "10.42.1.2", "node1": "10.0.0.11", "client": "10.0.0.2"})
ECHO = sorted(p for p, (g, _) in INV.backends.items() if g == "echo")


def cell(f: cc.LabFacts, source: str, service: str, dest: str, proto: str) -> cc.Cell:
    found = [c for c in cc.cells(f)
             if c.key == (source, service, dest, proto)]
    assert len(found) == 1, (source, service, dest, proto)
    return found[0]


def answers(pods: list[str], client_ip: str | None = None) -> tuple[cc.Answer, ...]:
    return tuple(cc.Answer(p, client_ip=client_ip) for p in pods)


def result(pods: list[str], client_ip: str | None = None, *, errors: tuple[str, ...] = (),
           target: str = "10.43.0.5:80") -> cc.ProbeResult:
    found = answers(pods, client_ip)
    return cc.ProbeResult(target, len(found) + len(errors), found, errors,
                          tuple(range(40000, 40000 + len(found))))


def spread(pods: list[str], n: int = 60) -> list[str]:
    return [pods[i % len(pods)] for i in range(n)]


# --- the cells ----------------------------------------------------------------------------------


@pytest.mark.parametrize("f", [TUNNEL, NATIVE], ids=["tunnel", "native"])
def test_cells_are_unique_and_cover_every_source_and_variant(f: cc.LabFacts) -> None:
    cells = cc.cells(f)
    assert len({c.key for c in cells}) == len(cells)
    sources = [s.key for s in cc.sources(f)]
    assert sources == ["backend@node1", "pod@node1", "pod@node2", "node1", "client"]
    for source in sources:
        mine = [c for c in cells if c.source == source]
        # The default Service: every destination and protocol.
        assert {(str(c.dest), c.proto) for c in mine if c.service == "echo"} == {
            (d, p) for d in ("ClusterIP", "NodePort node1", "NodePort node2", "LoadBalancer",
                             "externalIP") for p in ("TCP", "UDP")}
        # Every mode, algorithm and traffic policy at least once, in both protocols.
        for variant in ("echo-snat", "echo-dsr", "echo-hybrid", "echo-random", "echo-maglev",
                        "echo-etp", "echo-itp"):
            assert {c.proto for c in mine if c.service == variant} == {"TCP", "UDP"}, variant
    for c in cells:
        assert c.expect.kind in (cc.ANSWER, cc.NO_ANSWER) or c.expect.why
    # The host-network backend: ClusterIP and NodePort, from a pod and from the client.
    host = {(c.source, str(c.dest)) for c in cells if c.service == "echo-host"}
    assert {("pod@node1", "ClusterIP"), ("pod@node2", "NodePort node2"),
            ("client", "NodePort node1"), ("client", "NodePort node2")} <= host


def test_tunnel_and_native_differ_in_dsr_only() -> None:
    tunnel = {c.key: c.expect for c in cc.cells(TUNNEL)}
    native = {c.key: c.expect for c in cc.cells(NATIVE)}
    assert tunnel.keys() == native.keys()
    differ = {k for k in tunnel if tunnel[k] != native[k]}
    assert differ and all(k[1] in ("echo-dsr", "echo-hybrid") for k in differ)
    for k in differ:
        assert tunnel[k].kind == cc.NOT_TESTABLE and "routingMode native" in tunnel[k].why
        assert native[k].kind == cc.ANSWER


def test_client_to_cluster_ip_is_not_routable_by_design() -> None:
    for proto in ("TCP", "UDP"):
        c = cell(TUNNEL, "client", "echo", "ClusterIP", proto)
        assert c.expect.kind == cc.NOT_ROUTABLE and "ClusterIP" in c.expect.why
        assert not c.probed


def test_client_cells_through_lb_and_external_ips_carry_the_routing_note() -> None:
    for dest in ("LoadBalancer", "externalIP"):
        assert cell(TUNNEL, "client", "echo", dest, "TCP").note == cc.ROUTED_NOTE
    assert cell(TUNNEL, "client", "echo", "NodePort node1", "TCP").note == ""
    assert cell(TUNNEL, "pod@node1", "echo", "LoadBalancer", "TCP").note == ""


def test_a_node_reaches_every_frontend() -> None:
    for dest in ("NodePort node1", "NodePort node2", "LoadBalancer", "externalIP"):
        e = cell(TUNNEL, "node1", "echo", dest, "TCP").expect
        assert e == cc.Expect(cc.ANSWER, "echo", None, False), dest


def test_external_traffic_policy_local() -> None:
    # From the client: only the entry node's backends, client address kept (TCP).
    for dest, node in (("NodePort node1", "node1"), ("NodePort node2", "node2"),
                       ("LoadBalancer", "node1")):
        tcp = cell(TUNNEL, "client", "echo-etp", dest, "TCP").expect
        udp = cell(TUNNEL, "client", "echo-etp", dest, "UDP").expect
        assert (tcp.kind, tcp.nodes, tcp.keep_source) == (cc.ANSWER, (node,), True)
        assert (udp.nodes, udp.keep_source) == ((node,), False)
    # From a pod, the LB IP is internal traffic: every backend.
    e = cell(TUNNEL, "pod@node1", "echo-etp", "LoadBalancer", "TCP").expect
    assert (e.nodes, e.keep_source) == (None, True)
    # Another node's NodePort from a pod or a node: that node's backends.
    assert cell(TUNNEL, "pod@node1", "echo-etp", "NodePort node2", "TCP").expect.nodes == (
        "node2",)
    assert cell(TUNNEL, "node1", "echo-etp", "NodePort node2", "UDP").expect.nodes == ("node2",)
    # Through a node with no local backend: dropped.
    e = cell(TUNNEL, "client", "echo-host-etp", "NodePort node1", "TCP").expect
    assert e.kind == cc.NO_ANSWER and "no local backend" in e.why
    e = cell(TUNNEL, "client", "echo-host-etp", "NodePort node2", "TCP").expect
    assert (e.kind, e.group, e.nodes, e.keep_source) == (cc.ANSWER, "host", ("node2",), True)


def test_internal_traffic_policy_local() -> None:
    for source, node in (("backend@node1", "node1"), ("pod@node1", "node1"),
                         ("pod@node2", "node2"), ("node1", "node1")):
        assert cell(TUNNEL, source, "echo-itp", "ClusterIP", "TCP").expect.nodes == (node,)
    # iTP does not limit traffic from outside.
    assert cell(TUNNEL, "client", "echo-itp", "NodePort node2", "TCP").expect.nodes is None


def test_client_address_kept_where_it_must_be() -> None:
    keep = {c.key: c.expect.keep_source for c in cc.cells(NATIVE) if c.probed}
    assert keep[("pod@node1", "echo", "ClusterIP", "TCP")]
    assert keep[("pod@node2", "echo", "NodePort node2", "TCP")]  # its own node: DNAT there
    assert not keep[("pod@node2", "echo", "NodePort node1", "TCP")]  # leaves the node
    assert not keep[("backend@node1", "echo", "ClusterIP", "TCP")]  # hairpin
    assert not keep[("node1", "echo", "ClusterIP", "TCP")]
    assert not keep[("client", "echo", "NodePort node1", "TCP")]  # snat
    assert keep[("client", "echo-dsr", "NodePort node1", "TCP")]
    assert keep[("client", "echo-hybrid", "LoadBalancer", "TCP")]
    assert not keep[("client", "echo-hybrid", "LoadBalancer", "UDP")]
    assert not any(v for k, v in keep.items() if k[3] == "UDP")
    # A host-network backend on another node is reached outside the pod network.
    assert not keep[("pod@node1", "echo-host", "ClusterIP", "TCP")]
    assert keep[("pod@node2", "echo-host", "ClusterIP", "TCP")]
    # With loadBalancer.mode dsr the default Service keeps it too.
    dsr = cell(facts(routing_mode="native", lb_mode="dsr"), "client", "echo", "NodePort node2",
               "TCP")
    assert dsr.expect.keep_source


def test_disabled_features_are_not_testable_with_the_reason() -> None:
    off = facts(mode_annotation=False, algorithm_annotation=False, external_ips=False)
    assert "bpf.lbModeAnnotation" in cell(off, "client", "echo-snat", "NodePort node1",
                                          "TCP").expect.why
    assert "bpf.lbAlgorithmAnnotation" in cell(off, "pod@node1", "echo-maglev", "ClusterIP",
                                               "UDP").expect.why
    assert "externalIPs" in cell(off, "client", "echo", "externalIP", "TCP").expect.why
    no_np = facts(node_port=False)
    assert "NodePort" in cell(no_np, "client", "echo", "NodePort node1", "TCP").expect.why
    assert cell(no_np, "pod@node1", "echo", "ClusterIP", "TCP").expect.kind == cc.ANSWER


def test_one_node_lab() -> None:
    one = facts(nodes=("node1",), node_ips=("10.0.0.11",))
    cells = cc.cells(one)
    for c in cells:
        if c.source == "pod@node2" or c.dest.node == "node2" or c.service.startswith(
                "echo-host") or c.service == "echo-remote":
            assert c.expect.kind == cc.NOT_TESTABLE, c.key
    assert cell(one, "pod@node1", "echo", "ClusterIP", "TCP").expect.kind == cc.ANSWER
    assert cell(one, "node1", cc.KUBERNETES, "ClusterIP", "HTTPS").expect.kind == cc.ANSWER
    assert cell(one, "client", "echo", "NodePort node1", "POST").expect.kind == cc.ANSWER
    assert "second node" in cell(one, "client", "echo-remote", "NodePort node1",
                                 "POST").expect.why
    assert cc.expected_pods(one) == 3
    kinds = Counter(o["kind"] for o in cc.manifests(one, cc.address_plan(LAN, IPS_1)))
    assert kinds["Pod"] == 1 and kinds["Deployment"] == 1


IPS_1 = IPv4Address("10.0.0.11")


def test_kubernetes_service_cells() -> None:
    """default/kubernetes, whose backend is the apiserver on the control-plane host (outside
    the pod CIDR, no node): over HTTPS from a backend pod on node1, a pod on node2 and node1,
    10 connections at most; any HTTP status answers, the client IP is not checked."""
    found = [c for c in cc.cells(TUNNEL) if c.service == cc.KUBERNETES]
    assert [c.key for c in found] == [
        (src, cc.KUBERNETES, "ClusterIP", "HTTPS") for src in ("backend@node1", "pod@node2",
                                                               "node1")]
    for c in found:
        assert (c.check, c.proto) == (cc.CHECK_HTTPS, "TCP")
        assert c.expect == cc.Expect(cc.ANSWER, cc.API_GROUP)
        assert c.expect.describe() == "answers from the apiserver"
        assert c.connections(60) == 10 and c.connections(3) == 3
    assert cc.api_backends(TUNNEL) == {"10.0.0.10": (cc.API_GROUP, "cp")}
    assert cc.Inventory(cc.api_backends(TUNNEL), {}).allowed(found[0].expect) == {"10.0.0.10"}


def test_upload_cells() -> None:
    """200 kB POSTs from the client through node1's NodePort to echo-remote (backends on
    node2 only: behind the tunnel) and to the default Service, and from a pod on node1 to
    echo-remote's ClusterIP; 5 connections at most."""
    found = {c.key: c for c in cc.cells(TUNNEL) if c.check == cc.CHECK_UPLOAD}
    assert set(found) == {("client", "echo-remote", "NodePort node1", "POST"),
                          ("client", "echo", "NodePort node1", "POST"),
                          ("pod@node1", "echo-remote", "ClusterIP", "POST")}
    for c in found.values():
        assert c.proto == "TCP" and c.connections(60) == 5 and c.expect.kind == cc.ANSWER
    remote = found[("client", "echo-remote", "NodePort node1", "POST")].expect
    assert remote.nodes == ("node2",) and not remote.keep_source
    assert found[("client", "echo", "NodePort node1", "POST")].expect == cell(
        TUNNEL, "client", "echo", "NodePort node1", "TCP").expect
    pod = found[("pod@node1", "echo-remote", "ClusterIP", "POST")].expect
    assert pod.nodes == ("node2",) and pod.keep_source
    # echo-remote has no echo cells of its own: only the uploads.
    assert all(c.check == cc.CHECK_UPLOAD for c in cc.cells(TUNNEL)
               if c.service == "echo-remote")
    # Its GET twins stay: an upload is a cell of its own, not a replacement.
    assert cell(TUNNEL, "client", "echo", "NodePort node1", "TCP").check == cc.CHECK_ECHO


# --- what is deployed ---------------------------------------------------------------------------


def test_address_plan() -> None:
    plan = cc.address_plan(LAN, IPv4Address("10.0.0.12"))
    assert (str(plan.pool_start), str(plan.pool_stop), str(plan.external_ip)) == (
        "10.0.0.240", "10.0.0.247", "10.0.0.248")
    plan = cc.address_plan(IPv4Network("192.168.0.0/16"), IPv4Address("192.168.0.12"))
    assert str(plan.pool_start) == "192.168.255.240"
    plan = cc.address_plan(IPv4Network("10.0.0.0/27"), IPv4Address("10.0.0.13"))
    assert (str(plan.pool_start), str(plan.external_ip)) == ("10.0.0.16", "10.0.0.24")
    for lan, last in (("10.0.0.0/27", "10.0.0.16"), ("10.0.0.0/28", "10.0.0.12")):
        with pytest.raises(InputError):
            cc.address_plan(IPv4Network(lan), IPv4Address(last))
    # Other pools' ranges are avoided (seed 004's 10.0.0.224/28 and .240-.250 here).
    seed4 = {"spec": {"blocks": [{"cidr": "10.0.0.224/28"},
                                 {"start": "10.0.0.240", "stop": "10.0.0.250"}]}}
    taken = cc.pool_ranges(seed4)
    assert taken == [(IPv4Address("10.0.0.224"), IPv4Address("10.0.0.239")),
                     (IPv4Address("10.0.0.240"), IPv4Address("10.0.0.250"))]
    plan = cc.address_plan(LAN, IPv4Address("10.0.0.12"), taken)
    assert (str(plan.pool_start), str(plan.external_ip)) == ("10.0.0.208", "10.0.0.216")
    assert cc.pool_ranges({"spec": {"cidrs": [{"cidr": "bad"}, {"start": "10.0.0.9"}]}}) == [
        (IPv4Address("10.0.0.9"), IPv4Address("10.0.0.9"))]
    with pytest.raises(InputError):
        cc.address_plan(LAN, IPv4Address("10.0.0.12"),
                        [(IPv4Address("10.0.0.13"), IPv4Address("10.0.0.255"))])


def test_manifests() -> None:
    objs = cc.manifests(TUNNEL, cc.address_plan(LAN, IPv4Address("10.0.0.12")))
    assert objs[0] == {"apiVersion": "v1", "kind": "Namespace",
                       "metadata": {"name": cc.NAMESPACE, "labels": cc.MANAGED_BY}}
    pool = objs[1]
    assert pool["spec"] == {
        "blocks": [{"start": "10.0.0.240", "stop": "10.0.0.247"}],
        "serviceSelector": {"matchLabels": {"io.kubernetes.service.namespace": cc.NAMESPACE}}}
    assert "namespace" not in pool["metadata"]
    by_name = {o["metadata"]["name"]: o for o in objs[2:]}
    for node in NODES:
        dep = by_name[f"echo-{node}"]
        assert dep["spec"]["replicas"] == 2
        spec = dep["spec"]["template"]["spec"]
        assert spec["nodeSelector"] == {"kubernetes.io/hostname": node}
        assert [(p["containerPort"], p["protocol"]) for p in spec["containers"][0]["ports"]] \
            == [(8080, "TCP"), (5353, "UDP")]
        assert by_name[f"client-{node}"]["metadata"]["labels"]["app"] == "client"
    host = by_name["host-node2"]["spec"]
    assert host["hostNetwork"] is True and host["nodeSelector"] == {
        "kubernetes.io/hostname": "node2"}
    services = {n: o for n, o in by_name.items() if o["kind"] == "Service"}
    assert set(services) == {v.name for v in cc.VARIANTS}
    echo = services["echo"]["spec"]
    assert echo["type"] == "LoadBalancer" and echo["externalIPs"] == ["10.0.0.248"]
    assert [(p["port"], p["targetPort"], p["protocol"]) for p in echo["ports"]] == [
        (80, 8080, "TCP"), (53, 5353, "UDP")]
    assert services["echo-dsr"]["metadata"]["annotations"] == {
        "service.cilium.io/forwarding-mode": "dsr"}
    assert services["echo-maglev"]["metadata"]["annotations"] == {
        "service.cilium.io/lb-algorithm": "maglev"}
    assert services["echo-etp"]["spec"]["externalTrafficPolicy"] == "Local"
    assert services["echo-itp"]["spec"]["internalTrafficPolicy"] == "Local"
    assert services["echo-host"]["spec"]["selector"] == {"app": "echo-host"}
    remote = services["echo-remote"]["spec"]
    assert remote["type"] == "NodePort"
    assert remote["selector"] == {"app": "echo", "conncheck-node": "node2"}
    assert [p["targetPort"] for p in services["echo-host"]["spec"]["ports"]] == [18080, 15353]
    # No more LoadBalancer IPs than the pool has.
    assert sum(s["spec"]["type"] == "LoadBalancer" for s in services.values()) <= 8
    assert cc.expected_pods(TUNNEL) == 7


def test_targets_from_service_objects() -> None:
    obj = {"spec": {"clusterIP": "10.43.0.9", "externalIPs": ["10.0.0.248"],
                    "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30080},
                              {"port": 53, "protocol": "UDP", "nodePort": 30053}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.240"}]}}}
    svc = cc.ServiceAddresses.from_object(obj)
    assert cc.target(cell(TUNNEL, "pod@node1", "echo", "ClusterIP", "UDP"), svc, TUNNEL) == (
        "10.43.0.9", 53)
    assert cc.target(cell(TUNNEL, "client", "echo", "NodePort node2", "TCP"), svc, TUNNEL) == (
        "10.0.0.12", 30080)
    assert cc.target(cell(TUNNEL, "client", "echo", "LoadBalancer", "TCP"), svc, TUNNEL) == (
        "10.0.0.240", 80)
    assert cc.target(cell(TUNNEL, "client", "echo", "externalIP", "UDP"), svc, TUNNEL) == (
        "10.0.0.248", 53)
    assert cc.routed_addresses([svc]) == ["10.0.0.240", "10.0.0.248"]
    bare = cc.ServiceAddresses.from_object({"spec": {"clusterIP": "10.43.0.9", "ports": [
        {"port": 80, "protocol": "TCP"}]}})
    assert cc.target(cell(TUNNEL, "client", "echo", "LoadBalancer", "TCP"), bare, TUNNEL) is None


# --- the probes' output -------------------------------------------------------------------------


def test_curl_argv_opens_new_connections() -> None:
    argv = cc.curl_argv("10.43.0.9", 80, 60)
    assert argv[0] == "curl" and argv[-1] == "http://10.43.0.9:80/whoami?[1-60]"
    assert "Connection: close" in argv and "0.9" in argv


def test_parse_curl() -> None:
    bodies = [json.dumps({"pod": f"echo-{i % 2}", "node": "node1", "client_ip": "10.42.0.2",
                          "client_port": 40000 + i}) for i in range(3)]
    stderr = ("DL% UL%  Dled  Uled  Xfers  Live ... @@ 0 200 40000 \n"
              "@@ 0 200 40001 \n"
              "--  --   0  0  3 @@ 28 000 0 Failed to connect to 10.43.0.9 port 80 after 900 ms:"
              " Timeout was reached\n"
              "@@ 7 000 0 Failed to connect to 10.43.0.9 port 80: Connection refused\n"
              "@@ 7 000 0 Failed to connect to 10.43.0.9 port 80 after 0 ms: Couldn't connect"
              " to server\n"
              "@@ 0 200 40002 \n")
    r = cc.parse_curl("\n".join(bodies) + "\n", stderr, 7, "10.43.0.9", 80)
    assert r.target == "10.43.0.9:80"
    assert [a.pod for a in r.answers] == ["echo-0", "echo-1", "echo-0"]
    assert {a.client_ip for a in r.answers} == {"10.42.0.2"}
    assert r.errors == ("timeout", "refused", "connect failed", "no output")
    assert r.source_ports == (40000, 40001, 40002)


def test_parse_udp() -> None:
    def rec(i: int, reply: str, src: str = "10.43.0.9:53", **kw: object) -> str:
        return json.dumps({"i": i, "port": 50000 + i, "from": src, "reply": reply, **kw})
    lines = [rec(0, "echo-a probe-n1-0"),
             json.dumps({"i": 1, "error": "timeout"}),
             rec(2, "echo-b probe-n1-2", "10.42.1.1:5353"),
             rec(3, "garbage"),
             rec(4, "echo-a probe-old-7", stray=True),
             rec(4, "echo-a probe-n1-3"),  # another socket's payload
             "not json"]
    r = cc.parse_udp("\n".join(lines), 6, "10.43.0.9", 53, "n1")
    assert r.target == "10.43.0.9:53"
    assert [(a.pod, a.reply_from) for a in r.answers] == [("echo-a", "10.43.0.9:53"),
                                                         ("echo-b", "10.42.1.1:5353")]
    assert r.errors == ("timeout", "bad answer", "bad answer", "no output")
    assert r.source_ports == (50000, 50002)
    assert r.strays == 1


def test_https_and_upload_argv() -> None:
    https = cc.https_argv("10.43.0.1", 443, 10)
    assert https[0] == "curl" and https[-1] == "https://10.43.0.1:443/version?[1-10]"
    assert "-k" in https and "Connection: close" in https
    upload = cc.upload_argv("10.0.0.11", 30080, 5, "/run/hexlane/lab/x/up.bin")
    assert upload[-1] == "http://10.0.0.11:30080/whoami?[1-5]"
    assert upload[upload.index("--data-binary") + 1] == "@/run/hexlane/lab/x/up.bin"
    assert upload[upload.index("-m") + 1] == "5"
    c = cell(TUNNEL, "client", "echo", "NodePort node1", "POST")
    assert cc.probe_argv(c, "10.0.0.11", 30080, 5, python="py", nonce="n",
                         upload="/f") == cc.upload_argv("10.0.0.11", 30080, 5, "/f")
    assert cc.probe_timeout(c, 5) == 10.0
    udp = cell(TUNNEL, "client", "echo", "NodePort node1", "UDP")
    assert cc.probe_argv(udp, "10.0.0.11", 30053, 60, python="py", nonce="n",
                         upload="/f") == cc.udp_argv("py", "10.0.0.11", 30053, 60, "n")


def test_parse_curl_upload_answers() -> None:
    bodies = [json.dumps({"pod": "echo-node2-a", "node": "node2", "client_ip": "10.0.0.11",
                          "client_port": 40000, "received": n}) for n in (200_000, 65_536)]
    r = cc.parse_curl("\n".join(bodies) + "\n", "@@ 0 200 40000 \n@@ 0 200 40001 \n", 2,
                      "10.0.0.11", 30080)
    assert [a.received for a in r.answers] == [200_000, 65_536] and r.errors == ()
    # A GET's answer has no count.
    r = cc.parse_curl('{"pod": "p", "client_ip": "10.0.0.2"}\n', "@@ 0 200 40000 \n", 1,
                      "10.0.0.11", 30080)
    assert r.answers == (cc.Answer("p", client_ip="10.0.0.2"),)


def test_parse_https() -> None:
    stderr = ("@@ 0 401 40000 \n@@ 0 200 40001 \n"
              "@@ 35 000 0 OpenSSL SSL_connect: Connection reset by peer\n"
              "@@ 28 000 0 Connection timed out after 900 milliseconds\n")
    r = cc.parse_https(stderr, 5, "10.43.0.1", 443, "10.0.0.10")
    assert r.target == "10.43.0.1:443"
    assert r.answers == (cc.Answer("10.0.0.10", http_status="401"),
                         cc.Answer("10.0.0.10", http_status="200"))
    assert r.errors == ("reset", "timeout", "no output")
    assert r.source_ports == (40000, 40001)


def test_udp_probe_is_python() -> None:
    compile(cc.UDP_PROBE, "<conncheck.UDP_PROBE>", "exec")
    argv = cc.udp_argv("/usr/bin/python3", "10.43.0.9", 53, 60, "n1")
    assert argv[1] == "-c" and argv[3:] == ["10.43.0.9", "53", "60", "0.9", "n1"]


# --- the judge ----------------------------------------------------------------------------------


def test_judge_passes_a_clean_cell() -> None:
    c = cell(TUNNEL, "pod@node1", "echo", "ClusterIP", "TCP")
    v = cc.judge(c, result(spread(ECHO), "10.42.0.2"), INV)
    assert v.status == cc.PASS, v.detail
    assert v.detail == ("60/60 answered, 4/4 backends (node1 30 node2 30), client IP 10.42.0.2 "
                        "kept")
    assert sum(v.reached.values()) == 60


def test_judge_missing_backend() -> None:
    c = cell(TUNNEL, "pod@node1", "echo", "ClusterIP", "TCP")
    v = cc.judge(c, result(spread(ECHO[:3]), "10.42.0.2"), INV)
    assert v.status == cc.FAIL and v.detail == f"missed {ECHO[3]}"
    # With few connections a miss is no proof: not required.
    v = cc.judge(c, result(spread(ECHO[:3], 6), "10.42.0.2"), INV)
    assert v.status == cc.PASS


def test_judge_foreign_backend() -> None:
    c = cell(TUNNEL, "client", "echo-etp", "NodePort node1", "TCP")
    v = cc.judge(c, result(spread(ECHO), "10.0.0.2", target="10.0.0.11:30080"), INV)
    assert v.status == cc.FAIL
    assert "not allowed: echo-node2-a x15, echo-node2-b x15" in v.detail
    good = cc.judge(c, result(spread(ECHO[:2]), "10.0.0.2", target="10.0.0.11:30080"), INV)
    assert good.status == cc.PASS and "2/2 backends (node1 60)" in good.detail


def test_judge_wrong_client_ip() -> None:
    c = cell(TUNNEL, "client", "echo-etp", "NodePort node2", "TCP")
    v = cc.judge(c, result(spread(ECHO[2:]), "10.0.0.12"), INV)
    assert v.status == cc.FAIL and v.detail == "client IP 10.0.0.12 x60, want 10.0.0.2"
    # Where nothing is required, whatever was seen is reported, not judged.
    snat = cell(TUNNEL, "client", "echo", "NodePort node2", "TCP")
    v = cc.judge(snat, result(spread(ECHO), "10.0.0.12"), INV)
    assert v.status == cc.PASS and v.detail.endswith("client IP 10.0.0.12")


def test_judge_partial_failures_and_no_answer() -> None:
    c = cell(TUNNEL, "pod@node2", "echo", "LoadBalancer", "UDP")
    v = cc.judge(c, result(spread(ECHO, 45), errors=("timeout",) * 15), INV)
    assert v.status == cc.FAIL and v.detail == "15/60 failed (timeout x15)"
    v = cc.judge(c, result([], errors=("timeout",) * 58 + ("refused",) * 2), INV)
    assert v.status == cc.FAIL and v.detail == "no answer (timeout x58, refused x2)"
    v = cc.judge(c, cc.ProbeResult("10.0.0.240:53", 60, failure="exit 1: nsenter: no such file"),
                 INV)
    assert v.status == cc.FAIL and v.detail.startswith("probe did not run")


def test_judge_expected_no_answer() -> None:
    c = cell(TUNNEL, "client", "echo-host-etp", "NodePort node1", "TCP")
    v = cc.judge(c, result([], errors=("refused",) * 60, target="10.0.0.11:30080"), INV)
    assert v.status == cc.PASS and v.detail == "no answer, as expected (refused x60)"
    v = cc.judge(c, result(["host-node2"] * 60, target="10.0.0.11:30080"), INV)
    assert v.status == cc.FAIL and v.detail.startswith("60/60 answered (host-node2 x60); want none")


def test_judge_udp_answers_from_the_wrong_address() -> None:
    c = cell(TUNNEL, "pod@node2", "echo-host", "ClusterIP", "UDP")
    found = tuple(cc.Answer("host-node2", reply_from="10.0.0.12:15353") for _ in range(60))
    v = cc.judge(c, cc.ProbeResult("10.43.0.9:53", 60, found, (), tuple(range(60))), INV)
    assert v.status == cc.FAIL
    assert v.detail == "answers from 10.0.0.12:15353 x60, want 10.43.0.9:53"


API_INV = cc.Inventory({**INV.backends, **cc.api_backends(TUNNEL)}, INV.source_ips)


def test_judge_kubernetes_service() -> None:
    c = cell(TUNNEL, "pod@node2", cc.KUBERNETES, "ClusterIP", "HTTPS")

    def https(backend: str, n: int = 10, errors: tuple[str, ...] = ()) -> cc.ProbeResult:
        found = tuple(cc.Answer(backend, http_status="401") for _ in range(n))
        return cc.ProbeResult("10.43.0.1:443", n + len(errors), found, errors,
                              tuple(range(40000, 40000 + n)))
    v = cc.judge(c, https("10.0.0.10"), API_INV)
    assert v.status == cc.PASS, v.detail
    assert v.detail == "10/10 answered, 1/1 backends (cp 10), HTTP 401 x10"
    # The API lists another backend set than the apiserver's address.
    v = cc.judge(c, https("10.0.0.10,10.0.0.99"), API_INV)
    assert v.status == cc.FAIL and "not allowed: 10.0.0.10,10.0.0.99 x10" in v.detail
    v = cc.judge(c, https("10.0.0.10", 8, ("timeout",) * 2), API_INV)
    assert v.status == cc.FAIL and v.detail == "2/10 failed (timeout x2)"
    v = cc.judge(c, https("10.0.0.10", 0, ("reset",) * 10), API_INV)
    assert v.status == cc.FAIL and v.detail == "no answer (reset x10)"
    # An echo pod is no backend of it.
    v = cc.judge(c, https("echo-node2-a"), API_INV)
    assert v.status == cc.FAIL and "not allowed: echo-node2-a x10" in v.detail


def test_judge_uploads() -> None:
    c = cell(TUNNEL, "client", "echo-remote", "NodePort node1", "POST")

    def uploads(*received: int | None) -> cc.ProbeResult:
        found = tuple(cc.Answer(ECHO[2 + i % 2], client_ip="10.0.0.11", received=n)
                      for i, n in enumerate(received))
        return cc.ProbeResult("10.0.0.11:30080", len(found), found, (),
                              tuple(range(40000, 40000 + len(found))))
    v = cc.judge(c, uploads(*[cc.UPLOAD_BYTES] * 5), INV)
    assert v.status == cc.PASS, v.detail
    assert v.detail == ("5/5 uploads of 200000 bytes received whole, 2/2 backends (node2 5), "
                        "client IP 10.0.0.11")
    v = cc.judge(c, uploads(cc.UPLOAD_BYTES, 65_536, None, cc.UPLOAD_BYTES, 65_536), INV)
    assert v.status == cc.FAIL
    assert v.detail == ("3/5 uploads not received whole (received 65536 x2, no count; sent "
                        "200000 bytes)")
    # Only node2's pods are backends of echo-remote.
    found = tuple(cc.Answer(ECHO[0], received=cc.UPLOAD_BYTES) for _ in range(5))
    v = cc.judge(c, cc.ProbeResult("10.0.0.11:30080", 5, found, (), tuple(range(5))), INV)
    assert v.status == cc.FAIL and "not allowed: echo-node1-a x5" in v.detail
    # A stalled upload (the GSO drop into the tunnel) is a curl timeout.
    stalled = cc.ProbeResult("10.0.0.11:30080", 5, errors=("timeout",) * 5)
    v = cc.judge(c, stalled, INV)
    assert v.status == cc.FAIL and v.detail == "no answer (timeout x5)"


def test_not_probed_cells_have_their_reason() -> None:
    c = cell(TUNNEL, "client", "echo", "ClusterIP", "UDP")
    v = cc.not_probed(c)
    assert (v.status, v.detail) == (cc.NOT_ROUTABLE, c.expect.why)
    assert cc.judge(c, result([]), INV) == v


def test_coverage_required() -> None:
    assert cc.coverage_required(4, 60) and cc.coverage_required(6, 60)
    assert cc.coverage_required(1, 1)
    assert not cc.coverage_required(4, 10)
    assert not cc.coverage_required(0, 60) and not cc.coverage_required(4, 0)


@given(st.lists(st.sampled_from(ECHO), min_size=40, max_size=120), st.data())
def test_judge_properties(extra: list[str], data: st.DataObject) -> None:
    """Answers from every allowed backend, and only those, with the right address pass;
    one foreign answer, one failure, one wrong address, or a whole backend missing fail."""
    c = cell(TUNNEL, "pod@node1", "echo", "ClusterIP", "TCP")
    pods = ECHO + extra
    assert cc.judge(c, result(pods, "10.42.0.2"), INV).status == cc.PASS
    assert cc.judge(c, result([*pods, "host-node2"], "10.42.0.2"), INV).status == cc.FAIL
    assert cc.judge(c, result(pods, "10.42.0.2", errors=("timeout",)), INV).status == cc.FAIL
    wrong = list(answers(pods, "10.42.0.2"))
    i = data.draw(st.integers(0, len(wrong) - 1))
    wrong[i] = cc.Answer(wrong[i].pod, client_ip="10.0.0.11")
    r = cc.ProbeResult("10.43.0.5:80", len(wrong), tuple(wrong), (), tuple(range(len(wrong))))
    assert cc.judge(c, r, INV).status == cc.FAIL
    gone = data.draw(st.sampled_from(ECHO))
    rest = [p for p in pods if p != gone]
    verdict = cc.judge(c, result(rest, "10.42.0.2"), INV)
    assert (verdict.status == cc.FAIL) == cc.coverage_required(4, len(rest))


# --- output -------------------------------------------------------------------------------------


def test_summary_and_table() -> None:
    rows = []
    for c in cc.cells(TUNNEL):
        v = cc.not_probed(c) if not c.probed else cc.Verdict(
            cc.FAIL if c.source == "node1" else cc.PASS, "detail")
        rows.append(cc.Row(c, v, "10.0.0.1:80" if c.probed else ""))
    text = cc.summary(r.verdict for r in rows)
    failed = sum(r.verdict.status == cc.FAIL for r in rows)
    assert text.startswith(f"{sum(r.verdict.status == cc.PASS for r in rows)} passed, "
                           f"{failed} failed, ")
    assert text.endswith("not testable (2 of them not routable by design)")
    table = cc.render_table(rows, TUNNEL).splitlines()
    assert table[0].split()[:5] == ["SOURCE", "DESTINATION", "PROTO", "SERVICE", "RESULT"]
    assert len(table) == len(rows) + 1
    assert any("echo (snat, random)" in line and "externalIP 10.0.0.1:80" in line
               and cc.ROUTED_NOTE in line for line in table)
    row = cc.row_json(rows[0], TUNNEL)
    assert row["source"] == "backend@node1" and row["expect"]["kind"] == cc.ANSWER
    assert (row["check"], row["probe"]) == (cc.CHECK_ECHO, row["protocol"])
    # The special cells: their check in the PROTO column, the Service labelled.
    assert any(line.split()[:4] == ["node1", "ClusterIP", "10.0.0.1:80", "HTTPS"]
               and "default/kubernetes (apiserver 10.0.0.10)" in line for line in table)
    assert any(line.split()[:5] == ["client", "NodePort", "node1", "10.0.0.1:80", "POST"]
               and "echo-remote (backends on node2 only)" in line for line in table)
    api = cc.row_json(next(r for r in rows if r.cell.service == cc.KUBERNETES), TUNNEL)
    assert (api["protocol"], api["probe"], api["check"], api["variant"]) == (
        "TCP", "HTTPS", cc.CHECK_HTTPS, "apiserver")


def test_cli_rejects_lab_and_kubeconfig_together(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as err:
        main(["connectivity", "test", "--lab", "x1", "--kubeconfig", "f"])
    assert err.value.code == 2
    with pytest.raises(SystemExit):
        main(["connectivity", "test", "--connections", "0"])
    capsys.readouterr()
