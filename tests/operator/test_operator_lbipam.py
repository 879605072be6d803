"""End to end: LB-IPAM behaviours through a real operator process and the API — sharing one IP
between TCP/53 and UDP/53 with a sharing key, MetalLB's annotations, a disabled pool keeps
what it gave and gives no more, a deleted pool's Services are re-satisfied from what remains,
and a Service that stops being a LoadBalancer loses its IP and condition (and the pool counts
it free); another controller's status writes on a Service of another loadBalancerClass cost
LB-IPAM no allocator run and are left alone. Each test has its own pools, selected by a
`case` label, so the tests do not meet."""

from __future__ import annotations

import time
from typing import Any

import pytest
from operator_helpers import (
    OperatorFactory,
    OperatorProcess,
    apply,
    ip_pool,
    lb_service,
    leading,
    pool_counters,
    satisfaction,
    satisfied_condition,
    wait_for_counters,
)

from helpers.apiserver import Apiserver
from helpers.wait import wait_for

pytestmark = pytest.mark.slow
NS = "lbipam"


@pytest.fixture(scope="module", autouse=True)
def operator(apiserver: Apiserver, operators: OperatorFactory) -> OperatorProcess:
    apiserver.kubectl("create", "namespace", NS)
    return leading(operators, "lbipam", "--set", "ipam.mode=kubernetes")


def ippool(name: str, case: str, *blocks: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A pool for the Services labelled with this test's `case`."""
    return ip_pool(name, *blocks, serviceSelector={"matchLabels": {"case": case}}, **spec)


def satisfied(server: Apiserver, name: str) -> list[str]:
    wait_for(f"{name} to be satisfied",
             lambda: satisfaction(server, NS, name)[1] == "satisfied")
    return satisfaction(server, NS, name)[0]


def test_tcp_and_udp_53_share_one_ip(apiserver: Apiserver) -> None:
    apply(apiserver, ippool("sharing", "sharing", {"cidr": "10.1.1.0/28"}))
    key = {"lbipam.cilium.io/sharing-key": "dns"}
    apply(apiserver,
          lb_service(NS, "dns-tcp", annotations=key, labels={"case": "sharing"},
                     ports=[(53, "TCP")]),
          lb_service(NS, "dns-udp", annotations=key, labels={"case": "sharing"},
                     ports=[(53, "UDP")]))
    tcp, udp = satisfied(apiserver, "dns-tcp"), satisfied(apiserver, "dns-udp")
    assert tcp == udp and len(tcp) == 1
    # A third Service on TCP/53 with the same key cannot share: it gets an address of its own.
    apply(apiserver, lb_service(NS, "dns-tcp-2", annotations=key, labels={"case": "sharing"},
                                ports=[(53, "TCP")]))
    other = satisfied(apiserver, "dns-tcp-2")
    assert other != tcp
    wait_for("sharing's counters", lambda: pool_counters(apiserver, "sharing").get("used") == "2")


def test_metallb_annotations(apiserver: Apiserver) -> None:
    apply(apiserver, ippool("metallb", "metallb", {"cidr": "10.1.2.0/28"}))
    annotations = {"metallb.universe.tf/loadBalancerIPs": "10.1.2.5",
                   "metallb.universe.tf/allow-shared-ip": "web"}
    apply(apiserver,
          lb_service(NS, "web-http", annotations=annotations, labels={"case": "metallb"},
                     ports=[(80, "TCP")]),
          lb_service(NS, "web-https", annotations=annotations, labels={"case": "metallb"},
                     ports=[(443, "TCP")]))
    assert satisfied(apiserver, "web-http") == ["10.1.2.5"]
    assert satisfied(apiserver, "web-https") == ["10.1.2.5"]


def test_disabled_then_deleted_pool(apiserver: Apiserver) -> None:
    apply(apiserver, ippool("move-a", "move", {"cidr": "10.1.3.0/29"}))
    apply(apiserver, lb_service(NS, "m1", labels={"case": "move"}))
    first = satisfied(apiserver, "m1")
    assert first == ["10.1.3.0"]
    apply(apiserver, ippool("move-b", "move", {"cidr": "10.1.4.0/29"}))
    # Disabled: m1 keeps its address, a new Service gets one from move-b.
    apply(apiserver, ippool("move-a", "move", {"cidr": "10.1.3.0/29"}, disabled=True))
    apply(apiserver, lb_service(NS, "m2", labels={"case": "move"}))
    assert satisfied(apiserver, "m2") == ["10.1.4.0"]
    assert satisfaction(apiserver, NS, "m1") == (first, "satisfied")
    # Deleted: m1 is re-satisfied from move-b, m2 does not move.
    apiserver.kubectl("delete", "ciliumloadbalancerippool", "move-a")
    wait_for("m1 to move to move-b",
             lambda: satisfaction(apiserver, NS, "m1") == (["10.1.4.1"], "satisfied"))
    assert satisfaction(apiserver, NS, "m2") == (["10.1.4.0"], "satisfied")
    wait_for_counters(apiserver, "move-b",
                      conflict="resolved", total="8", available="6", used="2")


def test_service_that_changes_type_loses_ip_and_condition(apiserver: Apiserver) -> None:
    apply(apiserver, ippool("retype", "retype", {"cidr": "10.1.5.0/29"}))
    apply(apiserver, lb_service(NS, "t1", labels={"case": "retype"}))
    assert satisfied(apiserver, "t1") == ["10.1.5.0"]
    wait_for("retype's counters", lambda: pool_counters(apiserver, "retype").get("used") == "1")
    code, body = apiserver.api.request(
        "PATCH", f"/api/v1/namespaces/{NS}/services/t1",
        {"spec": {"type": "ClusterIP", "allocateLoadBalancerNodePorts": None}},
        content_type="application/merge-patch+json")
    assert code == 200, body
    wait_for("t1 to lose its IP and condition",
             lambda: satisfaction(apiserver, NS, "t1") == ([], None))
    assert satisfied_condition(apiserver, NS, "t1") is None
    wait_for("retype to count it free",
             lambda: pool_counters(apiserver, "retype").get("used") == "0")


def lbipam_runs(op: OperatorProcess) -> float:
    return op.metrics().get(
        'hexlane_operator_reconcile_duration_seconds_count{controller="lbipam"}', -1.0)


def test_foreign_status_writes_start_no_run(apiserver: Apiserver,
                                            operator: OperatorProcess) -> None:
    other = lb_service(NS, "foreign")
    other["spec"]["loadBalancerClass"] = "example.com/other"
    apply(apiserver, other)
    path = f"/api/v1/namespaces/{NS}/services/foreign/status"

    def settled() -> bool:
        before = lbipam_runs(operator)
        time.sleep(0.5)
        return before >= 0 and lbipam_runs(operator) == before

    wait_for("LB-IPAM to settle after the create", settled)
    runs = lbipam_runs(operator)
    for i in range(1, 6):  # what another load-balancer controller writes
        status = {"loadBalancer": {"ingress": [{"ip": f"192.0.2.{i}"}]}}
        code, body = apiserver.api.patch(path, {"status": status})
        assert code == 200, body
    time.sleep(1.0)
    assert lbipam_runs(operator) == runs
    assert satisfaction(apiserver, NS, "foreign") == (["192.0.2.5"], None)
