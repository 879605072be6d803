"""Security identity allocation through CiliumIdentity, against the run's shared apiserver over
HTTPS: agents racing for one label set converge on one identity, different label sets get
different numbers (a create conflict moves on to the next), a relabelled pod gets a new
identity, and a fresh allocator (a restarted agent) finds the same numbers without creating
any."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver
from hexlane.agent.identities import IdentityAllocator
from hexlane.k8s.client import KubeClient, make_client
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumIdentity, Namespace, Pod
from hexlane.policy.identity import (
    MIN_ALLOCATED_IDENTITY,
    from_security_labels,
    pod_labels,
)

IDENTITIES = "/apis/cilium.io/v2/ciliumidentities"


def pod(ns: str, name: str, node: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}}


async def eventually(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


class Agents:
    """Allocators as agents run them, one per node, each with its own informers."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.informers: list[Informer] = []

    async def allocator(self, node: str) -> IdentityAllocator:
        infs = {"pods": Informer(self.client, Pod, field_selector=f"spec.nodeName={node}"),
                "namespaces": Informer(self.client, Namespace),
                "ciliumidentities": Informer(self.client, CiliumIdentity)}
        for inf in infs.values():
            self.informers.append(inf)
            inf.start()
        for inf in infs.values():
            await inf.wait_synced(timeout=20)
        return IdentityAllocator(self.client, infs)


@pytest.fixture
async def agents(apiserver: Apiserver) -> AsyncIterator[Agents]:
    client = make_client(None, apiserver.kubeconfig, registry=CollectorRegistry())
    out = Agents(client)
    try:
        yield out
    finally:
        for inf in out.informers:
            await inf.stop()
        await client.aclose()


@pytest.fixture
def ns(api: Any) -> Any:
    name = f"id-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"metadata": {"name": name, "labels": {"team": "a"}}})
    yield name
    api.delete(f"/api/v1/namespaces/{name}")


def identities_with(api: Any, ns: str) -> dict[int, Any]:
    """The API's CiliumIdentities of namespace `ns` (by their security labels)."""
    items = api.read(IDENTITIES)["items"]
    out = {}
    for obj in items:
        labels = from_security_labels(obj["security-labels"])
        if any(lbl.key == "io.kubernetes.pod.namespace" and lbl.value == ns for lbl in labels):
            out[int(obj["metadata"]["name"])] = labels
    return out


async def test_agents_racing_for_one_label_set_share_one_identity(
        api: Any, agents: Agents, ns: str) -> None:
    tag = uuid.uuid4().hex[:6]
    n1, n2 = f"{ns}-n1", f"{ns}-n2"
    api.create(f"/api/v1/namespaces/{ns}/pods", pod(ns, "web-1", n1, {"app": "web"}))
    api.create(f"/api/v1/namespaces/{ns}/pods", pod(ns, "web-2", n2, {"app": "web"}))
    api.create(f"/api/v1/namespaces/{ns}/pods", pod(ns, "x-db", n2, {"app": "db"}))
    a1, a2 = await agents.allocator(n1), await agents.allocator(n2)
    for a, count in ((a1, 1), (a2, 2)):
        await eventually("the pods in the informer",
                         lambda a=a, count=count: len(a.informers["pods"].cache) == count)
    # Both see no identity for app=web and try the same number at once.
    await asyncio.gather(a1.sync(), a2.sync())
    web1, web2 = a1.pod_identity[f"{ns}/web-1"], a2.pod_identity[f"{ns}/web-2"]
    db = a2.pod_identity[f"{ns}/x-db"]
    assert web1 == web2 >= MIN_ALLOCATED_IDENTITY, tag
    assert db != web1 and db >= MIN_ALLOCATED_IDENTITY
    assert a1.conflicts + a2.conflicts >= 1, "the two creates of one number met"
    assert a1.allocated + a2.allocated == 2  # web once, db once
    stored = identities_with(api, ns)
    assert sorted(stored) == sorted({web1, db})
    ns_obj = api.read(f"/api/v1/namespaces/{ns}")
    assert stored[web1] == pod_labels(api.read(f"/api/v1/namespaces/{ns}/pods/web-1"), ns_obj)
    obj = api.read(f"{IDENTITIES}/{web1}")
    assert obj["security-labels"]["k8s:app"] == "web"
    assert obj["security-labels"]["k8s:io.cilium.k8s.namespace.labels.team"] == "a"
    assert obj["metadata"]["labels"]["io.kubernetes.pod.namespace"] == ns


async def test_different_labels_racing_get_different_numbers(
        api: Any, agents: Agents, ns: str) -> None:
    n1, n2 = f"{ns}-n1", f"{ns}-n2"
    api.create(f"/api/v1/namespaces/{ns}/pods", pod(ns, "a", n1, {"app": "a"}))
    api.create(f"/api/v1/namespaces/{ns}/pods", pod(ns, "b", n2, {"app": "b"}))
    a1, a2 = await agents.allocator(n1), await agents.allocator(n2)
    for a in (a1, a2):
        await eventually("the pod in the informer",
                         lambda a=a: len(a.informers["pods"].cache) == 1)
    await asyncio.gather(a1.sync(), a2.sync())
    ida, idb = a1.pod_identity[f"{ns}/a"], a2.pod_identity[f"{ns}/b"]
    assert ida != idb
    assert a1.conflicts + a2.conflicts == 1, "both planned the lowest free number"
    stored = identities_with(api, ns)
    assert {n: dict((lbl.key, lbl.value) for lbl in labels)["app"]
            for n, labels in stored.items()} == {ida: "a", idb: "b"}


async def test_relabel_gives_a_new_identity_and_a_restart_finds_the_same(
        api: Any, agents: Agents, ns: str) -> None:
    node = f"{ns}-n1"
    api.create(f"/api/v1/namespaces/{ns}/pods", pod(ns, "p", node, {"app": "v1"}))
    a = await agents.allocator(node)
    await eventually("the pod", lambda: len(a.informers["pods"].cache) == 1)
    await a.sync()
    before = a.pod_identity[f"{ns}/p"]
    api.merge(f"/api/v1/namespaces/{ns}/pods/p", {"metadata": {"labels": {"app": "v2"}}})
    await eventually("the relabel", lambda: a.informers["pods"].cache.get_object("p", ns)
                     ["metadata"]["labels"]["app"] == "v2")
    await a.sync()
    after = a.pod_identity[f"{ns}/p"]
    assert after != before
    assert sorted(identities_with(api, ns)) == sorted({before, after})
    # A restarted agent: nothing but the API, the same answer, nothing created.
    fresh = await agents.allocator(node)
    await eventually("the identities", lambda: after in fresh.known())
    await fresh.sync()
    assert fresh.pod_identity == {f"{ns}/p": after}
    assert fresh.allocated == 0 and fresh.conflicts == 0
    doc = fresh.document()
    rows = {r["id"]: r for r in doc["identities"]}
    assert rows[1]["labels"] == ["reserved:host"] and rows[1]["reserved"]
    assert rows[after]["endpoints"] == [f"{ns}/p"]
    assert rows[before]["endpoints"] == []
