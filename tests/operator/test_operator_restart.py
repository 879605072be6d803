"""End to end: `kill -9` of the operator while Services are being created into a pool that
ends up exactly full, then a restart — no Service's IP ever changes (every address seen on a
Service is the one it ends with), every Service is satisfied, no address is given twice, the
pool reads full, and one Service more is told out_of_ips."""

from __future__ import annotations

import threading

import pytest
from operator_helpers import (
    POOLS,
    OperatorFactory,
    ip_pool,
    lb_service,
    leading,
    satisfaction,
    wait_for_counters,
)

from helpers.apiserver import Apiserver
from helpers.wait import wait_for

pytestmark = pytest.mark.slow
NS = "restart"
COUNT = 32  # the pool's size: a /27 with every address allocatable


def test_kill_9_while_creating_moves_no_ip(apiserver: Apiserver,
                                           operators: OperatorFactory) -> None:
    apiserver.api.create("/api/v1/namespaces", {"metadata": {"name": NS}})
    apiserver.api.create(POOLS, ip_pool("full", {"cidr": "10.2.0.0/27"}))
    first = leading(operators, "first", "--set", "ipam.mode=kubernetes")

    names = [f"s{i:02d}" for i in range(COUNT)]
    seen: dict[str, list[list[str]]] = {}  # every IP list ever observed per Service

    def observe() -> int:
        done = 0
        listing = apiserver.api.read(f"/api/v1/namespaces/{NS}/services") or {}
        for obj in listing.get("items", []):
            name = obj["metadata"]["name"]
            ips = [i["ip"] for i in obj.get("status", {}).get("loadBalancer", {})
                   .get("ingress", []) or []]
            if ips:
                done += 1
                if ips not in seen.setdefault(name, []):
                    seen[name].append(ips)
        return done

    def create_all() -> None:
        for name in names:
            apiserver.api.create(f"/api/v1/namespaces/{NS}/services", lb_service(NS, name))

    creator = threading.Thread(target=create_all)
    creator.start()
    try:
        wait_for("some Services to be satisfied", lambda: observe() >= 8, timeout=30)
        first.kill()  # SIGKILL: no lease release, writes cut wherever they were
        before_restart = observe()
    finally:
        creator.join()
    assert before_restart < COUNT, "the kill came too late to test anything"

    # The lease held by the dead operator runs out (2 s) before the new one leads.
    second = operators("second", "--set", "ipam.mode=kubernetes")
    wait_for("all Services to be satisfied", lambda: observe() == COUNT, timeout=40)
    observe()
    final = {name: satisfaction(apiserver, NS, name) for name in names}
    assert all(reason == "satisfied" and len(ips) == 1 for ips, reason in final.values())
    moved = {name: ips for name, ips in seen.items() if len(ips) > 1}
    assert not moved, f"IPs moved: {moved}"
    addresses = [ips[0] for ips, _ in final.values()]
    assert len(set(addresses)) == COUNT
    wait_for_counters(apiserver, "full", conflict="resolved", total="32", available="0", used="32")

    apiserver.api.create(f"/api/v1/namespaces/{NS}/services", lb_service(NS, "one-more"))
    wait_for("one-more to be refused",
             lambda: satisfaction(apiserver, NS, "one-more") == ([], "out_of_ips"))
    assert second.alive()
