"""lightkube (the client library hexlane's k8s layer is built on) against the embedded
apiserver, configured only from the kubeconfig the server writes: typed and generic
resources, list then watch from the list's resourceVersion, status patches, and errors
surfacing as lightkube's ApiError with Kubernetes' codes."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from lightkube import ApiError, Client, KubeConfig
from lightkube.generic_resource import create_global_resource
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Service
from lightkube.types import PatchType

pytestmark = pytest.mark.timeout(120)

Pool = create_global_resource("cilium.io", "v2alpha1", "CiliumLoadBalancerIPPool",
                              "ciliumloadbalancerippools")


@pytest.fixture
def client(apiserver: Any) -> Client:
    return Client(config=KubeConfig.from_file(str(apiserver.kubeconfig)))


def test_list_then_watch_from_list_version(client: Client) -> None:
    client.create(ConfigMap(metadata=ObjectMeta(name="lk-a", namespace="default"),
                            data={"a": "1"}))
    listing = client.list(ConfigMap, namespace="default")
    names = {cm.metadata.name for cm in listing}
    assert "lk-a" in names
    rv = listing.resourceVersion
    seen: list[tuple[str, str]] = []
    done = threading.Event()

    def watch() -> None:
        for event, obj in client.watch(ConfigMap, namespace="default", resource_version=rv):
            if obj.metadata.name.startswith("lk-"):
                seen.append((event, obj.metadata.name))
            if event == "DELETED" and obj.metadata.name == "lk-b":
                done.set()
                return

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    client.create(ConfigMap(metadata=ObjectMeta(name="lk-b", namespace="default")))
    client.patch(ConfigMap, "lk-a", {"data": {"a": "2"}}, namespace="default",
                 patch_type=PatchType.MERGE)
    client.delete(ConfigMap, "lk-b", namespace="default")
    assert done.wait(20)
    assert seen == [("ADDED", "lk-b"), ("MODIFIED", "lk-a"), ("DELETED", "lk-b")]


def test_status_patch_and_errors(client: Client) -> None:
    client.create(Pool(metadata=ObjectMeta(name="lk-pool"),
                       spec={"blocks": [{"cidr": "10.0.10.0/24"}]}))
    condition = {"type": "cilium.io/IPsTotal", "status": "Unknown", "reason": "noreason",
                 "message": "256", "lastTransitionTime": "2026-01-01T00:00:00Z"}
    patched = client.patch(Pool.Status, "lk-pool", {"status": {"conditions": [condition]}},
                           patch_type=PatchType.MERGE)
    assert patched.status["conditions"] == [condition]
    assert patched.spec["blocks"] == [{"cidr": "10.0.10.0/24"}]
    with pytest.raises(ApiError) as missing:
        client.get(Service, "nope", namespace="default")
    assert missing.value.status.code == 404
    with pytest.raises(ApiError) as exists:
        client.create(Pool(metadata=ObjectMeta(name="lk-pool"), spec={}))
    assert exists.value.status.code == 409
    assert client.get(Service, "kubernetes", namespace="default").spec.clusterIP == "10.43.0.1"
