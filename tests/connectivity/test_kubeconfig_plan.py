"""`hexlane connectivity test --kubeconfig`'s pure parts and its in-pod probes: the cells a
cluster gets (pod sources only, no externalIP, LoadBalancer only when IPs were assigned),
the objects deployed (hexlane's image running `connectivity serve`, the least-privilege
Role), the plan and results as they travel through ConfigMaps, what the lab kubelet reads
from a pod to run hexlane's own command, and the Python probes the pods run (against the
lab workload's echo on this machine's loopback: answers, and a refused port's errors)."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import tempfile
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hexlane.cli.main import main
from hexlane.lab import conncheck as cc
from hexlane.lab import podprobe
from hexlane.lab.podspec import container_env, hexlane_command, is_hexlane_image
from hexlane.lab.workload import serve
from hexlane.model.errors import InputError

LAN = IPv4Network("10.0.0.0/24")
TUNNEL = cc.LabFacts(("node1", "node2"), ("10.0.0.11", "10.0.0.12"), "10.0.0.2", LAN,
                     mode_annotation=True, algorithm_annotation=True, external_ips=True)
PODS = dataclasses.replace(TUNNEL, in_pods=True, image="localhost/hexlane:0.1.0",
                           client_ip="", lan=None)


def by_key(facts: cc.LabFacts) -> dict[tuple[str, str, str, str], cc.Cell]:
    return {c.key: c for c in cc.cells(facts)}


def test_a_cluster_gets_the_pod_sources_cells_and_says_why_not_the_others() -> None:
    lab, pods = by_key(TUNNEL), by_key(PODS)
    assert lab.keys() == pods.keys()  # the same table, every cell listed
    for key, c in pods.items():
        source = key[0]
        if source in ("node1", "client"):
            assert c.expect.kind == cc.NOT_TESTABLE and c.expect.why == cc.PODS_ONLY, key
        elif c.dest.kind == cc.EXTERNAL_IP:
            assert c.expect.why == cc.NO_EXTERNAL_IP, key
        else:  # a pod source: what the lab expects of it
            assert c.expect == lab[key].expect, key
    probed = {k for k, c in pods.items() if c.probed}
    assert {k[0] for k in probed} == {"backend@node1", "pod@node1", "pod@node2"}
    assert any(k[1] == cc.KUBERNETES for k in probed)  # HTTPS from pods
    assert any(k[2] == "NodePort node2" for k in probed)
    assert any(c.check == cc.CHECK_UPLOAD for k, c in pods.items() if k in probed)
    # Without LoadBalancer IPs, the LoadBalancer cells say so; the others stay.
    no_lb = by_key(dataclasses.replace(PODS, lb_ips=False))
    for key, c in no_lb.items():
        if c.dest.kind == cc.LOAD_BALANCER and key[0] not in ("node1", "client"):
            assert c.expect.why == cc.NO_LB_IP, key
        else:
            assert c.expect == pods[key].expect, key


def test_the_cluster_objects_run_hexlanes_image_with_least_privilege() -> None:
    objects = cc.manifests(PODS, None)
    kinds = [o["kind"] for o in objects]
    assert kinds[0] == "Namespace" and "CiliumLoadBalancerIPPool" not in kinds
    assert {"ServiceAccount", "Role", "RoleBinding"} <= set(kinds)
    role = next(o for o in objects if o["kind"] == "Role")
    assert role["metadata"]["namespace"] == cc.NAMESPACE
    assert role["rules"] == [
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": [cc.PLAN_CONFIGMAP],
         "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]
    assert all("externalIPs" not in o["spec"] for o in objects if o["kind"] == "Service")
    specs = {o["metadata"]["name"]: (o["spec"]["template"]["spec"] if o["kind"] ==
                                     "Deployment" else o["spec"])
             for o in objects if o["kind"] in ("Pod", "Deployment")}
    for name, spec in specs.items():
        (container,) = spec["containers"]
        assert container["image"] == PODS.image
        assert spec["serviceAccountName"] == cc.SERVICE_ACCOUNT
        command = hexlane_command({"spec": spec})
        assert command is not None and command[:3] == ["hexlane", "connectivity", "serve"]
        probes = ("--plan" in command)
        assert probes == (not spec.get("hostNetwork")), name
        assert spec["automountServiceAccountToken"] == probes
    assert specs["echo-node1"]["containers"][0]["command"][3:7] == [
        "--tcp", "8080", "--udp", "5353"]
    # The lab's own path keeps its pool and the lab workload.
    lab = cc.manifests(TUNNEL, cc.address_plan(LAN, IPv4Address("10.0.0.12")))
    assert "CiliumLoadBalancerIPPool" in [o["kind"] for o in lab]
    assert all(hexlane_command(o) is None for o in lab if o["kind"] == "Pod")


def test_plan_probes_lists_what_cannot_be_probed() -> None:
    cells = cc.cells(PODS)
    services = {v.name: cc.ServiceAddresses("10.43.0.9", {cc.TCP: 80, cc.UDP: 53},
                                            {cc.TCP: 30001, cc.UDP: 30002}, "10.0.0.240", ())
                for v in cc.VARIANTS if v.name != "echo-itp"}
    _, targets = cc.inventory(PODS, [])
    targets = {"backend@node1": cc.POD_TARGET + "echo-node1-a", "pod@node1":
               cc.POD_TARGET + "client-node1"}  # no pod@node2
    rows, probes = cc.plan_probes(cells, services, PODS, targets)
    assert sorted([*rows, *(p.index for p in probes)]) == list(range(len(cells)))
    details = {cells[i].key: r.verdict.detail for i, r in rows.items()}
    assert details[("pod@node2", "echo", "ClusterIP", "TCP")] == "cannot probe: no such source"
    assert details[("pod@node1", "echo-itp", "ClusterIP", "UDP")] == \
        "cannot probe: no such Service"
    assert all(p.cell.probed and p.source in targets.values() for p in probes)
    assert ("backend@node1", "echo", "ClusterIP", "TCP") in {p.cell.key for p in probes}


answers = st.builds(cc.Answer, st.text(min_size=1, max_size=20),
                    st.none() | st.ip_addresses(v=4).map(str),
                    st.none() | st.text(max_size=25), st.none() | st.integers(0, 10**6),
                    st.none() | st.sampled_from(["200", "401"]))


@given(st.builds(cc.ProbeResult, st.text(min_size=1, max_size=25), st.integers(0, 100),
                 st.lists(answers, max_size=5).map(tuple),
                 st.lists(st.text(max_size=10), max_size=5).map(tuple),
                 st.lists(st.integers(1, 65535), max_size=5).map(tuple), st.text(max_size=20),
                 st.integers(0, 5)))
def test_results_travel_through_a_configmap_unchanged(r: cc.ProbeResult) -> None:
    cm = cc.result_configmap("echo-node1-a", "run1", {7: r})
    assert cm["metadata"]["name"] == "conncheck-result-echo-node1-a"
    assert cc.read_results(cm, "run1") == {7: r}
    assert cc.read_results(cm, "run2") is None  # another run's


def test_the_plan_gives_each_pod_its_jobs() -> None:
    c = next(c for c in cc.cells(PODS) if c.check == cc.CHECK_HTTPS and c.probed)
    job = cc.Job.of(3, c, "10.43.0.1", 443, 60, "10.0.0.10")
    assert (job.connections, job.backend) == (cc.CHECK_CONNECTIONS[cc.CHECK_HTTPS], "10.0.0.10")
    echo = next(c for c in cc.cells(PODS) if c.check == cc.CHECK_ECHO and c.probed)
    assert cc.Job.of(4, echo, "10.43.0.9", 80, 60, "10.0.0.10").backend == ""
    cm = cc.plan_configmap("r1", {"client-node1": [job]})
    assert cc.read_plan(cm, "client-node1") == ("r1", [job])
    assert cc.read_plan(cm, "client-node2") == ("r1", [])
    bad = cc.plan_configmap("r1", {"p": [dataclasses.replace(job, connections=0)]})
    with pytest.raises(ValueError, match="connections"):
        cc.read_plan(bad, "p")


def test_the_lab_kubelet_runs_only_hexlanes_own_command() -> None:
    assert is_hexlane_image("localhost/hexlane:0.1.0")
    assert is_hexlane_image("ghcr.io/x/hexlane@sha256:abc") and is_hexlane_image("hexlane")
    assert not is_hexlane_image("nginx:1") and not is_hexlane_image("hexlane-ui:1")

    def pod(image: str, command: list[str], env: list[dict[str, object]] | None = None
            ) -> dict[str, object]:
        return {"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
                "spec": {"nodeName": "node1", "containers": [
                    {"image": image, "command": command, "args": ["--x"], "env": env or []}]}}
    assert hexlane_command(pod("localhost/hexlane:1", ["hexlane", "a"])) == [
        "hexlane", "a", "--x"]
    assert hexlane_command(pod("localhost/hexlane:1", ["/opt/hexlane/bin/hexlane"])) == [
        "/opt/hexlane/bin/hexlane", "--x"]
    assert hexlane_command(pod("localhost/hexlane:1", ["sh", "-c", "x"])) is None
    assert hexlane_command(pod("busybox", ["hexlane", "a"])) is None
    env = container_env(pod("localhost/hexlane:1", ["hexlane"], [
        {"name": "A", "value": "1"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]),
        pod_ip="10.42.0.5", host_ip="10.0.0.11")
    assert env == {"A": "1", "POD_NAME": "p", "NODE": "node1", "IP": "10.42.0.5"}
    with pytest.raises(InputError, match="env S"):
        container_env(pod("localhost/hexlane:1", ["hexlane"], [
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]),
            pod_ip="", host_ip="")


def test_parse_response() -> None:
    job = cc.Job(1, cc.CHECK_ECHO, cc.TCP, "10.43.0.9", 80, 1)
    ok = b'HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{"pod": "p", "client_ip": "1.2.3.4"}'
    assert podprobe.parse_response(job, ok) == (cc.Answer("p", client_ip="1.2.3.4"), "")
    assert podprobe.parse_response(job, b"") == (None, "empty reply")
    assert podprobe.parse_response(job, b"HTTP/1.1 404 Not Found\r\n\r\n") == (None, "HTTP 404")
    assert podprobe.parse_response(job, b"HTTP/1.1 200 OK\r\n\r\nnope") == (None, "bad answer")
    https = dataclasses.replace(job, check=cc.CHECK_HTTPS, backend="10.0.0.10")
    assert podprobe.parse_response(https, b"HTTP/1.1 401 Unauthorized\r\n\r\n{}") == (
        cc.Answer("10.0.0.10", http_status="401"), "")


def _free_port(kind: int) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def echo() -> Iterator[tuple[asyncio.AbstractEventLoop, int, int]]:
    """The lab workload's echo (what `connectivity serve` serves) on loopback ports."""
    tcp, udp = _free_port(socket.SOCK_STREAM), _free_port(socket.SOCK_DGRAM)
    loop = asyncio.new_event_loop()
    with tempfile.TemporaryDirectory() as d:
        ready = Path(d) / "ready"
        task = loop.create_task(serve("echo-a", "node1", [tcp], [udp], ready))
        while not ready.exists():
            loop.run_until_complete(asyncio.sleep(0.02))
        yield loop, tcp, udp
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            loop.run_until_complete(task)
    loop.close()


def test_the_pods_probes_answer_and_fail_as_curl_says(
        echo: tuple[asyncio.AbstractEventLoop, int, int]) -> None:
    loop, tcp, udp = echo
    refused = _free_port(socket.SOCK_STREAM)
    jobs = [cc.Job(1, cc.CHECK_ECHO, cc.TCP, "127.0.0.1", tcp, 30),
            cc.Job(2, cc.CHECK_UPLOAD, cc.TCP, "127.0.0.1", tcp, 3),
            cc.Job(3, cc.CHECK_ECHO, cc.UDP, "127.0.0.1", udp, 10),
            cc.Job(4, cc.CHECK_ECHO, cc.TCP, "127.0.0.1", refused, 4)]
    # On the echo's loop: serve() and the probes side by side.
    results = loop.run_until_complete(podprobe.run_jobs(jobs))
    assert [a.pod for a in results[1].answers] == ["echo-a"] * 30
    assert {a.client_ip for a in results[1].answers} == {"127.0.0.1"}
    assert len(set(results[1].source_ports)) == 30 and results[1].errors == ()
    assert [a.received for a in results[2].answers] == [cc.UPLOAD_BYTES] * 3
    assert [a.pod for a in results[3].answers] == ["echo-a"] * 10
    assert results[4].answers == () and results[4].errors == ("refused",) * 4


def test_cli(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["connectivity", "test", "--kubeconfig", str(tmp_path / "none")]) == 2
    assert "none" in capsys.readouterr().err
    assert main(["connectivity", "test", "--lab", "x1", "--values", "f"]) == 2
    assert "--values and --image go with --kubeconfig" in capsys.readouterr().err
    assert main(["connectivity", "serve", "--plan", "p", "--pod", ""]) == 2
    assert "POD_NAME" in capsys.readouterr().err
