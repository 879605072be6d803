"""`hexlane connectivity test --kubeconfig F` end to end, as a user runs it against a cluster:
here the session's lab, reached from this machine as any cluster is, through a kubeconfig
(the lab's, its server replaced by a `hexlane lab port-forward` to the apiserver). Its probe
pods run hexlane's own command (the lab kubelet runs it in the pods' namespaces) and report
through the API. With a LoadBalancer pool selecting the test's Services (the test's own,
removed after), every pod-source cell passes; the table lists every cell of the matrix; and
nothing of the test is left in the API or in the lab. With one backend frozen (SIGSTOP: still
Ready and listed, answering nothing: the host-network one), the run exits 1 and its table
names exactly the cells whose backend that is as FAIL."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
import yaml

from helpers.lab import HEXLANE, Lab, lab_namespaces
from hexlane.lab import conncheck as cc
from hexlane.lab.connectivity import lab_facts
from hexlane.lab.manager import LabState
from hexlane.lab.podspec import is_pod_ready, labels_of, node_name, uid_of

pytestmark = [pytest.mark.slow, pytest.mark.root]

POOL = "k9-conncheck"
ROW = re.compile(r"^(\S+)\s+(ClusterIP|NodePort node\d+|LoadBalancer|externalIP)(?: (\S+))?\s+"
                 r"(TCP|UDP|HTTPS|POST)\s+(\S+) \(.*?\)\s+(pass|FAIL|not testable|not routable)"
                 r"\s+(.*)$")
Key = tuple[str, str, str, str]  # source, Service, destination, PROTO


@pytest.fixture(scope="module")
def kubeconfig(lab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The lab's kubeconfig as a user's: its server a port-forward on this machine's
    loopback (the apiserver's certificate names 127.0.0.1)."""
    proc = subprocess.Popen([*HEXLANE, "lab", "port-forward", "--name", lab.name, "cp",
                             "6443", "--local-port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:"), (line, proc.stderr)
        port = int(line.split("127.0.0.1:", 1)[1].split(" ", 1)[0])
        config = yaml.safe_load((lab.dir / "kubeconfig").read_text())
        for cluster in config["clusters"]:
            cluster["cluster"]["server"] = f"https://127.0.0.1:{port}"
        path = tmp_path_factory.mktemp("kubeconfig") / "config"
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        yield path
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def pool(lab: Lab) -> Iterator[str]:
    """A LoadBalancer pool for the test's namespace (what a cluster with LB-IPAM has), at the
    top of the lab's LAN outside the other pools; removed after."""
    state = LabState.load(lab.name)
    assert state is not None
    plan = state.plan
    pools = lab.api("/apis/cilium.io/v2alpha1/ciliumloadbalancerippools").get("items") or []
    addresses = cc.address_plan(plan.lan, plan.node(plan.nodes).ip,
                                [r for p in pools for r in cc.pool_ranges(p)])
    lab.kubectl("apply", "-f", "-", stdin=json.dumps({
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": POOL},
        "spec": {"blocks": [{"start": str(addresses.pool_start),
                             "stop": str(addresses.pool_stop)}],
                 "serviceSelector": {"matchLabels": {
                     "io.kubernetes.service.namespace": cc.NAMESPACE}}}}))
    try:
        yield f"{addresses.pool_start}-{addresses.pool_stop}"
    finally:
        lab.kubectl("delete", "ciliumloadbalancerippool", POOL, "--ignore-not-found")


def cluster_cells(lab: Lab) -> dict[Key, cc.Cell]:
    state = LabState.load(lab.name)
    assert state is not None
    facts = dataclasses.replace(lab_facts(state.plan), in_pods=True, client_ip="", lan=None)
    return {c.key: c for c in cc.cells(facts)}


def rows(out: str) -> dict[Key, tuple[str, str, str]]:
    """The table's rows: (verdict, address, detail) by cell."""
    found = {}
    for line in out.splitlines():
        if m := ROW.match(line):
            found[(m[1], m[5], m[2], m[4])] = (m[6], m[3] or "", m[7])
    return found


def nothing_left(lab: Lab, namespaces_before: set[str]) -> None:
    assert lab.kubectl("get", "namespace", cc.NAMESPACE, check=False).returncode != 0
    pods = lab.api("/api/v1/pods").get("items") or []
    assert not [p for p in pods if p["metadata"]["namespace"] == cc.NAMESPACE]
    assert set(lab_namespaces(lab.name)) <= namespaces_before


def test_a_cluster_through_its_kubeconfig(lab: Lab, kubeconfig: Path, pool: str) -> None:
    before = set(lab_namespaces(lab.name))
    start = time.monotonic()
    done = subprocess.run([*HEXLANE, "connectivity", "test", "--kubeconfig", str(kubeconfig),
                           "--values", str(lab.dir / "values.yaml"), "--connections", "30"],
                          capture_output=True, text=True, timeout=300)
    took = time.monotonic() - start
    assert done.returncode == 0, done.stdout + done.stderr
    want = cluster_cells(lab)
    seen = rows(done.stdout)
    assert seen.keys() == want.keys(), (sorted(want.keys() - seen.keys()),
                                        sorted(seen.keys() - want.keys()))
    probed = {k for k, c in want.items() if c.probed}
    assert {k for k, (verdict, _, _) in seen.items() if verdict == "pass"} == probed
    assert {k[0] for k in probed} == {"backend@node1", "pod@node1", "pod@node2"}
    # LoadBalancer IPs from the pool, reached from every pod source; HTTPS to the API.
    assert {k[0] for k in probed if k[2] == "LoadBalancer"} == {
        "backend@node1", "pod@node1", "pod@node2"}
    first, last = (IPv4Address(a) for a in pool.split("-"))
    for key in (k for k in probed if k[2] == "LoadBalancer"):
        address = IPv4Address(seen[key][1].rsplit(":", 1)[0])
        assert first <= address <= last, (key, seen[key])
    assert ("pod@node2", cc.KUBERNETES, "ClusterIP", "HTTPS") in probed
    summary = done.stdout.strip().splitlines()[-1]
    assert re.match(rf"{len(probed)} passed, 0 failed, {len(want) - len(probed)} not "
                    "testable", summary), summary
    nothing_left(lab, before)
    print(f"\n--kubeconfig run: {took:.1f}s; {summary}", file=sys.stderr)


def _freeze_the_host_backend(lab: Lab, proc: subprocess.Popen[str]) -> int:
    """Once the host-network echo pod (on node2) is Ready: SIGSTOP its process (the
    kubelet's record names it); its pid."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        pods = lab.api(f"/api/v1/namespaces/{cc.NAMESPACE}/pods").get("items") or [] \
            if lab.kubectl("get", "namespace", cc.NAMESPACE, check=False).returncode == 0 \
            else []
        ready = [p for p in pods if labels_of(p).get("app") == "echo-host"
                 and node_name(p) == "node2" and is_pod_ready(p)]
        if ready:
            record = lab.dir / "node2" / "kubelet" / "pods" / f"{uid_of(ready[0])}.json"
            pid = int(json.loads(record.read_text())["pid"])
            os.kill(pid, signal.SIGSTOP)
            return pid
        time.sleep(0.2)
    raise AssertionError("the host-network echo pod did not become Ready")


def test_a_frozen_backend_fails_its_cells(lab: Lab, kubeconfig: Path, pool: str) -> None:
    before = set(lab_namespaces(lab.name))
    proc = subprocess.Popen([*HEXLANE, "connectivity", "test", "--kubeconfig",
                             str(kubeconfig), "--values", str(lab.dir / "values.yaml"),
                             "--connections", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pid = 0
    try:
        pid = _freeze_the_host_backend(lab, proc)
        out, err = proc.communicate(timeout=300)
    finally:
        if pid:  # the cleanup may have killed it already
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, out + err
    seen = rows(out)
    failed = {k: detail for k, (verdict, _, detail) in seen.items() if verdict == "FAIL"}
    # Exactly the cells whose only backend is the frozen pod fail, each saying how.
    host = {k for k, c in cluster_cells(lab).items()
            if c.probed and c.expect.group == "host" and c.expect.kind == cc.ANSWER}
    assert host and {k[1] for k in host} == {"echo-host"}, host
    assert failed.keys() == host, (sorted(failed), sorted(host))
    assert all("no answer (timeout" in detail for detail in failed.values()), failed
    assert seen[("pod@node2", "echo", "ClusterIP", "TCP")][0] == "pass"
    summary = out.strip().splitlines()[-1]
    assert re.match(rf"\d+ passed, {len(failed)} failed, \d+ not testable", summary), summary
    nothing_left(lab, before)
