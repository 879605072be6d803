"""The operator's identity GC against an apiserver of this module's own (it deletes every
identity no pod uses): an identity whose labels match no pod is deleted once unused for the
grace period, not before; one a pod uses is kept; a pod deleted starts its identity's grace.
The clock is injected, so no test waits for the grace."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver
from hexlane.k8s.client import make_client
from hexlane.operator.identitygc import IdentityGC
from hexlane.policy.identity import identity_object, pod_identity_labels

IDENTITIES = "/apis/cilium.io/v2/ciliumidentities"
GRACE = timedelta(minutes=15)


async def eventually(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def test_unused_identities_are_deleted_after_the_grace(apiserver: Apiserver) -> None:
    api = apiserver.api
    ns = f"id-{uuid.uuid4().hex[:8]}"
    api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    api.create(f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "p", "namespace": ns, "labels": {"app": "kept"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]}})
    # hostNetwork pods have no identity: theirs does not keep one alive
    api.create(f"/api/v1/namespaces/{ns}/pods", {
        "metadata": {"name": "h", "namespace": ns, "labels": {"app": "host"}},
        "spec": {"nodeName": "n1", "hostNetwork": True,
                 "containers": [{"name": "c", "image": "x"}]}})
    # the namespace's labels as the apiserver keeps them (it adds kubernetes.io/metadata.name)
    ns_labels = api.read(f"/api/v1/namespaces/{ns}")["metadata"].get("labels", {})
    kept = pod_identity_labels({"app": "kept"}, ns, ns_labels)
    for n, labels in ((300, kept), (301, pod_identity_labels({"app": "gone"}, ns, ns_labels)),
                      (302, pod_identity_labels({"app": "host"}, ns, ns_labels))):
        api.create(IDENTITIES, identity_object(n, labels))
    # an object whose name is no allocated number is not the GC's business
    api.create(IDENTITIES, {"apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
                            "metadata": {"name": "7"}, "security-labels": {"reserved:x": ""}})

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    clock = [t0]
    client = make_client(None, apiserver.kubeconfig, registry=CollectorRegistry())
    gc = IdentityGC(client, grace=GRACE, now=lambda: clock[0])
    for inf in gc.informers:
        inf.start()
    try:
        for inf in gc.informers:
            await inf.wait_synced(timeout=20)
        await eventually("the objects", lambda: len(gc.identities.cache) == 4
                         and len(gc.pods.cache) == 2)
        assert await gc.run_once() == []  # first seen: the grace starts now
        clock[0] = t0 + GRACE - timedelta(seconds=1)
        assert await gc.run_once() == []
        clock[0] = t0 + GRACE
        assert await gc.run_once() == [301, 302]
        names = {o["metadata"]["name"] for o in api.read(IDENTITIES)["items"]}
        assert names == {"300", "7"}

        # the pod goes: its identity is unused from the next pass on
        api.delete(f"/api/v1/namespaces/{ns}/pods/p",
                   {"kind": "DeleteOptions", "apiVersion": "v1", "gracePeriodSeconds": 0})
        await eventually("the pod gone", lambda: gc.pods.cache.get_object("p", ns) is None)
        # (last seen in use by the pass at t0 + GRACE)
        clock[0] = t0 + 2 * GRACE - timedelta(seconds=1)
        assert await gc.run_once() == []
        clock[0] = t0 + 2 * GRACE
        assert await gc.run_once() == [300]
        assert {o["metadata"]["name"] for o in api.read(IDENTITIES)["items"]} == {"7"}
        assert gc.deleted == 3
    finally:
        for inf in gc.informers:
            await inf.stop()
        await client.aclose()
