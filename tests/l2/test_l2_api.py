"""The announcer's API side against a real apiserver over HTTPS: holderless announcement
Leases are deleted (held ones and other Leases stay), and a policy's `io.cilium/bad-*`
condition is written to its status subresource, then turned False once the policy is fixed.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

from prometheus_client import CollectorRegistry

from helpers.apiserver import Api, Apiserver
from hexlane.agent.l2 import KINDS, L2Announcer
from hexlane.config import load_values
from hexlane.k8s.client import make_client
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumL2AnnouncementPolicy, EndpointSlice, Node, Service


def lease(name: str, holder: str) -> dict[str, Any]:
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": name},
            "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}}


def run_announcer(apiserver: Apiserver, namespace: str, work: Any) -> Any:
    values, _ = load_values([])

    async def go() -> Any:
        async with make_client(None, apiserver.kubeconfig,
                               registry=CollectorRegistry()) as client:
            kinds = dict(zip(KINDS, (CiliumL2AnnouncementPolicy, Service, Node, EndpointSlice),
                             strict=True))
            informers = {name: Informer(client, kind) for name, kind in kinds.items()}
            return await work(L2Announcer(client, "node1", values, informers,
                                          namespace=namespace))
    return asyncio.run(go())


def test_holderless_announcement_leases_are_deleted(apiserver: Apiserver, api: Api) -> None:
    ns = f"l2gc-{secrets.token_hex(3)}"
    api.create("/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                      "metadata": {"name": ns}})
    path = f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases"
    for name, holder in (("cilium-l2announce-default-a", ""),
                         ("cilium-l2announce-default-b", "node2"),
                         ("someone-elses-lock", "")):
        api.create(path, lease(name, holder))

    async def work(announcer: L2Announcer) -> None:
        await announcer.collect_leases()

    run_announcer(apiserver, ns, work)
    names = sorted(item["metadata"]["name"] for item in api.read(path)["items"])
    assert names == ["cilium-l2announce-default-b", "someone-elses-lock"]


def test_a_bad_policy_gets_its_condition_and_loses_it_when_fixed(apiserver: Apiserver,
                                                                 api: Api) -> None:
    name = f"bad-{secrets.token_hex(3)}"
    path = "/apis/cilium.io/v2alpha1/ciliuml2announcementpolicies"
    api.create(path, {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
                      "metadata": {"name": name},
                      "spec": {"loadBalancerIPs": True, "nodeSelector": {
                          "matchExpressions": [{"key": "a", "operator": "In"}]}}})

    def write() -> int:
        async def work(announcer: L2Announcer) -> int:
            await announcer.update([api.read(f"{path}/{name}")], [], {})
            return await announcer.write_conditions()
        return int(run_announcer(apiserver, "kube-system", work))

    assert write() == 1
    conds = api.read(f"{path}/{name}")["status"]["conditions"]
    assert [(c["type"], c["status"], c["reason"]) for c in conds] == \
        [("io.cilium/bad-node-selector", "True", "error")]
    assert write() == 0  # already so: no write
    api.merge(f"{path}/{name}", {"spec": {"nodeSelector": None}})
    assert write() == 1
    conds = api.read(f"{path}/{name}")["status"]["conditions"]
    assert [(c["type"], c["status"], c["message"]) for c in conds] == \
        [("io.cilium/bad-node-selector", "False", "")]
