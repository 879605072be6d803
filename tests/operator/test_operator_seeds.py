"""End to end: every seed's pools and Services applied with the machine's kubectl to the
embedded apiserver, with a real `hexlane operator` process writing statuses; what a homelab
user reads back over the API (Service ingress IPs and IPAMRequestSatisfied conditions with
Cilium's reasons and messages, pool conflict conditions and counters).

The tests run in order on one cluster: seed 004's `default-pool` replaces seed 001's (same
name), so the Service that requested an address of the old pool loses it."""

from __future__ import annotations

import pytest
from operator_helpers import (
    EXAMPLES,
    OperatorFactory,
    apply,
    lb_service,
    leading,
    satisfaction,
    satisfied_condition,
    wait_for_counters,
    wait_for_ips,
)

from helpers.apiserver import Apiserver
from helpers.wait import wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def operator(apiserver: Apiserver, operators: OperatorFactory) -> None:
    apiserver.kubectl("create", "namespace", "example")
    leading(operators, "seeds", "--set", "ipam.mode=kubernetes")


def test_seed_000_pool_and_service_blue(apiserver: Apiserver) -> None:
    seed = EXAMPLES / "seed-000"
    apiserver.kubectl("apply", "-f", str(seed / "cilium-config.yaml"),
                      "-f", str(seed / "service-blue.yaml"))
    # service-blue asks for 20.0.10.100 and 20.0.10.200, which no pool holds.
    ips, reason = wait_for("service-blue's condition",
                           lambda: (r := satisfaction(apiserver, "example", "service-blue"))[1]
                           and r)
    assert (ips, reason) == ([], "no_pool")
    cond = satisfied_condition(apiserver, "example", "service-blue")
    assert cond is not None and cond["status"] == "False"
    assert cond["message"] == "No pool exists with a CIDR containing '20.0.10.200'"
    wait_for_counters(apiserver, "first-pool",
                      conflict="resolved", total="101", available="101", used="0")

    # A plain LoadBalancer Service gets the pool's first address.
    apply(apiserver, lb_service("example", "plain"))
    ips, reason = wait_for_ips(apiserver, "example", "plain")
    assert (ips, reason) == (["10.0.0.100"], "satisfied")
    cond = satisfied_condition(apiserver, "example", "plain")
    assert cond is not None and cond["status"] == "True" and cond["message"] == ""
    wait_for_counters(apiserver, "first-pool",
                      conflict="resolved", total="101", available="100", used="1")


def test_seed_001_pool(apiserver: Apiserver) -> None:
    seed = EXAMPLES / "seed-001"
    apiserver.kubectl("apply", "-f", str(seed / "cilium-load-balancer-ip-pool.yaml"),
                      "-f", str(seed / "cilium-l2-announcement-policy.yaml"))
    apply(apiserver, lb_service("example", "want-001",
                                annotations={"lbipam.cilium.io/ips": "10.20.30.101"}))
    assert wait_for_ips(apiserver, "example", "want-001") == (["10.20.30.101"], "satisfied")
    # 10.20.30.100/30 without allowFirstLastIPs "No": all four addresses are allocatable.
    wait_for_counters(apiserver, "default-pool",
                      conflict="resolved", total="4", available="3", used="1")


def test_seed_002_pool(apiserver: Apiserver) -> None:
    apiserver.kubectl("apply", "-f", str(EXAMPLES / "seed-002" / "cilium-l2.yaml"))
    apply(apiserver, lb_service("example", "want-002",
                                annotations={"io.cilium/lb-ipam-ips": "192.168.0.239"}))
    assert wait_for_ips(apiserver, "example", "want-002") == (["192.168.0.239"], "satisfied")
    wait_for_counters(apiserver, "pool",
                      conflict="resolved", total="20", available="19", used="1")
    # Earlier Services kept their addresses.
    assert satisfaction(apiserver, "example", "plain") == (["10.0.0.100"], "satisfied")


def test_seed_004_pool_replaces_seed_001s(apiserver: Apiserver) -> None:
    seed = EXAMPLES / "seed-004"
    apiserver.kubectl("apply", "-f", str(seed / "ip-pool.yaml"),
                      "-f", str(seed / "announce.yaml"))
    # default-pool now holds 10.0.0.224/28 and 10.0.0.240-10.0.0.250: want-001's address left.
    assert wait_for("want-001 to lose its IP",
                    lambda: (r := satisfaction(apiserver, "example", "want-001"))[1] == "no_pool"
                    and r) == ([], "no_pool")
    cond = satisfied_condition(apiserver, "example", "want-001")
    assert cond is not None
    assert cond["message"] == "No pool exists with a CIDR containing '10.20.30.101'"
    apply(apiserver, lb_service("example", "want-004",
                                annotations={"lbipam.cilium.io/ips": "10.0.0.245"}))
    assert wait_for_ips(apiserver, "example", "want-004") == (["10.0.0.245"], "satisfied")
    wait_for_counters(apiserver, "default-pool",
                      conflict="resolved", total="27", available="26", used="1")
    for name, ips in (("plain", ["10.0.0.100"]), ("want-002", ["192.168.0.239"])):
        assert satisfaction(apiserver, "example", name) == (ips, "satisfied")
