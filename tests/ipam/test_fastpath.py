"""The LB-IPAM fast path for added Services (pure): on ranges without holes it gives exactly
what a full run of the allocator gives (IPs, conditions, pool counters), for random pools with
selectors and reserved first/last addresses; with holes it gives valid, unused addresses that
a later full run keeps; and it declines (None) whatever it cannot answer exactly."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.ipam.fastpath import HeldAddresses, allocate_added, free_blocks
from hexlane.ipam.inputs import pool_input_from_model
from hexlane.ipam.lbipam import LBIPAMPlan
from hexlane.ipam.status import reconcile
from hexlane.model.cilium import LBIPPool
from hexlane.model.service import Service

NOW_TS = "2026-01-01T00:00:00Z"


def pool(name: str, cidr: str, *, created: str = NOW_TS, select: str | None = None,
         first_last: str | None = None, disabled: bool = False) -> LBIPPool:
    spec: dict[str, Any] = {"blocks": [{"cidr": cidr}], "disabled": disabled}
    if select:
        spec["serviceSelector"] = {"matchLabels": {"team": select}}
    if first_last:
        spec["allowFirstLastIPs"] = first_last
    return LBIPPool.parse({"apiVersion": "cilium.io/v2alpha1",
                           "kind": "CiliumLoadBalancerIPPool",
                           "metadata": {"name": name, "creationTimestamp": created,
                                        "resourceVersion": "1", "generation": 1},
                           "spec": spec})


def svc(name: str, *, team: str = "", created: str = NOW_TS, ips: list[str] | None = None,
        annotations: dict[str, str] | None = None, svc_type: str = "LoadBalancer") -> Service:
    status = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ips or []]}}
    return Service.parse({"apiVersion": "v1", "kind": "Service",
                          "metadata": {"name": name, "namespace": "ns",
                                       "labels": {"team": team} if team else {},
                                       "annotations": annotations or {},
                                       "creationTimestamp": created, "uid": name,
                                       "resourceVersion": "1", "generation": 1},
                          "spec": {"type": svc_type, "ports": [{"port": 80}]},
                          "status": status})


def settle(pools: list[LBIPPool], services: list[Service]) -> tuple[LBIPAMPlan, list[Service]]:
    """A full run, and the Services as they read back after its writes."""
    plan, _ = reconcile(pools, services, datetime(2026, 1, 1, tzinfo=UTC))
    settled = [svc(s.name, team=s.labels.get("team", ""), ips=list(plan.services[
        f"ns/{s.name}"].ips)) for s in services]
    return plan, settled


@settings(max_examples=40, deadline=None)
@given(existing=st.lists(st.sampled_from(["", "a", "b"]), max_size=12),
       added=st.lists(st.sampled_from(["", "a", "b"]), min_size=1, max_size=6),
       first_last=st.sampled_from([None, "No"]))
def test_same_as_a_full_run_without_holes(existing: list[str], added: list[str],
                                          first_last: str | None) -> None:
    pools = [pool("all", "10.9.0.0/28", first_last=first_last, created="2026-01-01T00:00:00Z"),
             pool("team-a", "10.9.1.0/29", select="a", created="2026-01-01T00:00:01Z"),
             pool("team-b", "10.9.2.0/30", select="b", created="2026-01-01T00:00:02Z",
                  first_last=first_last)]
    old = [svc(f"old{i}", team=t, created="2026-01-01T00:00:00Z")
           for i, t in enumerate(existing)]
    plan, settled = settle(pools, old)
    new = [svc(f"new{i}", team=t, created="2026-01-01T00:01:00Z") for i, t in enumerate(added)]
    fast = allocate_added(plan, pools, new, HeldAddresses.of(plan))
    full, _ = settle(pools, settled + new)
    if fast is None:
        # Declined only when some new Service cannot be satisfied.
        assert not all(full.services[f"ns/{s.name}"].satisfied for s in new)
        return
    assert fast.services == full.services
    assert fast.pools == full.pools


def test_with_holes_gives_free_valid_addresses_that_stay() -> None:
    pools = [pool("p", "10.9.0.0/29")]
    old = [svc(f"s{i}") for i in range(6)]
    plan, settled = settle(pools, old)
    # Two Services go: their addresses are holes now.
    remaining = [s for s in settled if s.name not in ("s1", "s4")]
    plan, settled = settle(pools, remaining)
    new = [svc("n0", created="2026-01-01T00:01:00Z"), svc("n1", created="2026-01-01T00:01:00Z")]
    fast = allocate_added(plan, pools, new, HeldAddresses.of(plan))
    assert fast is not None
    given_ips = [fast.services[f"ns/{n.name}"].ips[0] for n in new]
    held = {ip for s in remaining for ip in s.ingress_ips}
    assert not set(given_ips) & held and len(set(given_ips)) == 2
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network("10.9.0.0/29")
               for ip in given_ips)
    # A full run afterwards keeps them.
    after = [*remaining, *(svc(n.name, ips=[ip]) for n, ip in zip(new, given_ips, strict=True))]
    full, _ = settle(pools, after)
    assert [full.services[f"ns/{n.name}"].ips[0] for n in new] == given_ips
    assert fast.pools == full.pools


def test_declines_what_it_cannot_answer_exactly() -> None:
    pools = [pool("p", "10.9.0.0/30")]
    plan, _ = settle(pools, [svc("a")])
    held = HeldAddresses.of(plan)
    special = [svc("req", annotations={"lbipam.cilium.io/ips": "10.9.0.3"}),
               svc("shared", annotations={"lbipam.cilium.io/sharing-key": "k"}),
               svc("had", ips=["10.9.0.2"])]
    for s in special:
        assert allocate_added(plan, pools, [s], held) is None, s.name
    # Out of addresses: the reason must come from a full run.
    assert allocate_added(plan, pools, [svc(f"x{i}") for i in range(4)], held) is None
    # Pools changed since the plan: a full run.
    assert allocate_added(plan, [*pools, pool("q", "10.9.9.0/30")], [svc("b")], held) is None
    conflicting = [pool("p", "10.9.0.0/30"), pool("q", "10.9.0.0/31",
                                                    created="2026-01-01T00:00:09Z")]
    plan2, _ = settle(conflicting, [])
    assert allocate_added(plan2, conflicting, [svc("b")], HeldAddresses.of(plan2)) is None


def test_services_lb_ipam_does_not_handle_are_recorded_and_not_written() -> None:
    pools = [pool("p", "10.9.0.0/30")]
    plan, _ = settle(pools, [])
    fast = allocate_added(plan, pools, [svc("c", svc_type="ClusterIP")], HeldAddresses.of(plan))
    assert fast is not None and not fast.services["ns/c"].handled
    assert fast.pools == plan.pools


def test_free_blocks_cut_to_what_is_needed() -> None:
    p = pool("p", "10.9.0.0/29", first_last="No")
    held = {(4, int(ipaddress.ip_address("10.9.0.2"))), (4, int(ipaddress.ip_address("10.9.0.3")))}
    blocks = free_blocks(pool_input_from_model(p), held, need=1)
    assert [(str(b.first), str(b.last)) for b in blocks] == [("10.9.0.1", "10.9.0.1")]
    blocks = free_blocks(pool_input_from_model(p), held, need=5)
    assert [(str(b.first), str(b.last)) for b in blocks] == [("10.9.0.1", "10.9.0.1"),
                                                             ("10.9.0.4", "10.9.0.6")]
