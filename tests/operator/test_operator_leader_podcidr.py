"""End to end: two operator processes elect one leader on Lease
kube-system/cilium-operator-resource-lock; only the leader writes (the standby's client made
no PATCH, POST or DELETE besides its Lease), and when the leader is killed the standby takes
over. With `ipam.mode: cluster-pool` the leader gives every Node a CiliumNode with a distinct
/24 pod CIDR from the cluster pool; a new leader keeps them, new Nodes get free ones, and a
deleted Node's CiliumNode goes."""

from __future__ import annotations

import ipaddress

import pytest
from operator_helpers import (
    POOLS,
    OperatorFactory,
    OperatorProcess,
    ip_pool,
    lb_service,
    lease_holder,
    satisfaction,
)

from helpers.apiserver import Apiserver
from helpers.wait import wait_for

pytestmark = pytest.mark.slow
NS = "leader"
POOL_ARGS = ("--set", "ipam.mode=cluster-pool",
             "--set", "ipam.operator.clusterPoolIPv4PodCIDRList={10.42.0.0/16}")


def writes(op: OperatorProcess) -> float:
    """API writes the operator's client made, other than Lease ones (PUT is only Leases)."""
    return sum(v for k, v in op.metrics().items()
               if k.startswith("hexlane_k8s_client_api_calls_total")
               and any(f'method="{m}"' in k for m in ("PATCH", "DELETE")))


def pod_cidrs(server: Apiserver) -> dict[str, list[str]]:
    items = (server.api.read("/apis/cilium.io/v2/ciliumnodes") or {}).get("items", [])
    return {o["metadata"]["name"]: o.get("spec", {}).get("ipam", {}).get("podCIDRs", [])
            for o in items}


def add_node(server: Apiserver, name: str) -> None:
    server.api.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                        "metadata": {"name": name}})


def test_one_leader_writes_and_the_other_takes_over(apiserver: Apiserver,
                                                    operators: OperatorFactory) -> None:
    apiserver.api.create("/api/v1/namespaces", {"metadata": {"name": NS}})
    apiserver.api.create(POOLS, ip_pool("le", {"cidr": "10.3.0.0/24"}))
    for name in ("n1", "n2", "n3"):
        add_node(apiserver, name)
    ops = {name: operators(name, *POOL_ARGS) for name in ("op-a", "op-b")}
    holder = wait_for("a leader", lambda: lease_holder(apiserver))
    leader, standby = ops[holder], ops[next(n for n in ops if n != holder)]
    wait_for("the leader's metrics", lambda: leader.metrics().get("hexlane_operator_is_leader"))
    wait_for("the standby's metrics", lambda: "hexlane_operator_is_leader" in standby.metrics())
    assert standby.healthz() == "ok" and leader.healthz() == "ok"

    apiserver.api.create(f"/api/v1/namespaces/{NS}/services", lb_service(NS, "before"))
    wait_for("before", lambda: satisfaction(apiserver, NS, "before") == (["10.3.0.0"],
                                                                         "satisfied"))
    wait_for("three CiliumNodes", lambda: len(c := pod_cidrs(apiserver)) == 3
             and all(c.values()))
    cidrs = pod_cidrs(apiserver)
    nets = [ipaddress.IPv4Network(v[0]) for v in cidrs.values()]
    assert len(set(nets)) == 3
    assert all(n.prefixlen == 24 and n.subnet_of(ipaddress.IPv4Network("10.42.0.0/16"))
               for n in nets)
    assert standby.metrics().get("hexlane_operator_is_leader") == 0
    assert writes(leader) > 0 and writes(standby) == 0

    leader.kill()
    wait_for("the standby to take over", lambda: lease_holder(apiserver) == standby.identity,
             timeout=15)
    apiserver.api.create(f"/api/v1/namespaces/{NS}/services", lb_service(NS, "after"))
    wait_for("after", lambda: satisfaction(apiserver, NS, "after") == (["10.3.0.1"],
                                                                       "satisfied"))
    assert satisfaction(apiserver, NS, "before") == (["10.3.0.0"], "satisfied")
    assert standby.metrics().get("hexlane_operator_is_leader") == 1

    # The new leader keeps every node's CIDR, gives a new node a free one, frees n2's.
    add_node(apiserver, "n4")
    wait_for("n4's CiliumNode", lambda: pod_cidrs(apiserver).get("n4"))
    now = pod_cidrs(apiserver)
    assert {k: v for k, v in now.items() if k != "n4"} == cidrs
    assert now["n4"][0] not in {v[0] for v in cidrs.values()}
    code, _ = apiserver.api.request("DELETE", "/api/v1/nodes/n2")
    assert code == 200
    wait_for("n2's CiliumNode to go", lambda: "n2" not in pod_cidrs(apiserver))
