"""Security identities on the shared lab: its agents give every pod an identity from 256
through CiliumIdentity objects, the replicas of one Deployment share one (wherever they run),
another label set gets another, and `hexlane identity list` / `hexlane endpoint list` on a node
show them (enforcement "disabled": no NetworkPolicy selects them)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from helpers.lab import Lab
from helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

NS = f"id-{secrets.token_hex(2)}"
MANIFESTS = f"""apiVersion: v1
kind: Namespace
metadata: {{name: {NS}, labels: {{team: blue}}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: hexlane/workload}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: other, namespace: {NS}, labels: {{app: other}}}}
spec:
  nodeName: node1
  containers: [{{name: other, image: hexlane/workload}}]
"""


def pods(lab: Lab) -> list[dict[str, Any]]:
    out = lab.kubectl("get", "pods", "-n", NS, "-o", "json").stdout
    return list(json.loads(out)["items"])


def node_json(lab: Lab, node: str, *argv: str) -> Any:
    return json.loads(lab.exec(node, "hexlane", *argv, "-o", "json").stdout)


def pod_identities(lab: Lab, nodes: set[str]) -> dict[str, int]:
    """"ns/name" -> identity, as each node's `endpoint list` shows its pods."""
    out = {}
    for node in nodes:
        for row in node_json(lab, node, "endpoint", "list"):
            if row["pod"].startswith(f"{NS}/") and row["identity"] is not None:
                out[row["pod"]] = row["identity"]
    return out


@pytest.fixture(scope="module")
def placed(lab: Lab) -> Iterator[dict[str, str]]:
    """The pods running ("ns/name" -> node), each with its identity on its node."""
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    try:
        def running() -> dict[str, str] | None:
            ps = pods(lab)
            if len(ps) != 4 or any(p["status"].get("phase") != "Running" for p in ps):
                return None
            return {f"{NS}/{p['metadata']['name']}": p["spec"]["nodeName"] for p in ps}
        where = wait_for("the pods running", running, timeout=90, interval=0.5)
        wait_for("every pod's identity on its node",
                 lambda: len(pod_identities(lab, set(where.values()))) == 4,
                 timeout=30, interval=0.5)
        yield where
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def test_pods_have_identities_and_replicas_share_one(lab: Lab, placed: dict[str, str]
                                                     ) -> None:
    ids = pod_identities(lab, set(placed.values()))
    web = {ids[p] for p in placed if p != f"{NS}/other"}
    assert len(web) == 1, f"one Deployment, one identity: {ids}"
    (web_id,) = web
    assert web_id >= 256 and ids[f"{NS}/other"] >= 256
    assert ids[f"{NS}/other"] != web_id
    assert len(set(placed.values())) >= 2, f"the replicas ran on one node only: {placed}"
    # The CiliumIdentity in the API, as Cilium writes it.
    obj = json.loads(lab.kubectl("get", "ciliumidentities", str(web_id), "-o", "json").stdout)
    sec = obj["security-labels"]
    assert sec["k8s:app"] == "web"
    assert sec["k8s:io.kubernetes.pod.namespace"] == NS
    assert sec["k8s:io.cilium.k8s.namespace.labels.team"] == "blue"
    assert not any("pod-template-hash" in k for k in sec), "the label filter drops it"
    assert obj["metadata"]["labels"]["app"] == "web"


def test_identity_and_endpoint_list_on_a_node(lab: Lab, placed: dict[str, str]) -> None:
    ids = pod_identities(lab, {"node1"})
    other = ids[f"{NS}/other"]
    rows = {r["id"]: r for r in node_json(lab, "node1", "identity", "list")}
    assert rows[1]["labels"] == ["reserved:host"]
    assert rows[2]["labels"] == ["reserved:world"]
    assert f"{NS}/other" in rows[other]["endpoints"]
    assert "k8s:app=other" in rows[other]["labels"]
    eps = {r["pod"]: r for r in node_json(lab, "node1", "endpoint", "list")}
    ep = eps[f"{NS}/other"]
    assert ep["policyEnforcement"] == {"ingress": "disabled", "egress": "disabled"}
    pod = next(p for p in pods(lab) if p["metadata"]["name"] == "other")
    assert ep["ipv4"] == pod["status"]["podIP"]
    text = lab.exec("node1", "hexlane", "endpoint", "list").stdout
    assert f"{NS}/other" in text and str(other) in text and "disabled" in text
    text = lab.exec("node1", "hexlane", "identity", "list").stdout
    assert "reserved:host" in text and "k8s:app=other" in text
