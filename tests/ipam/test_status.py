"""The operator's pure reconcile step: status writes only where the status differs; Cilium's
condition bookkeeping (lastTransitionTime moves only when the status flips, observedGeneration
follows metadata.generation); other conditions and ingress fields kept; Services LB-IPAM never
managed are never written; after the writes are applied, reconciling again (or after a
restart, with no memory) writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hexlane.ipam.lbipam import Condition as PlanCondition
from hexlane.ipam.status import StatusWrite, applied, reconcile, set_condition
from hexlane.model.cilium import LBIPPool
from hexlane.model.meta import Condition
from hexlane.model.service import Service

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
LATER = datetime(2024, 5, 1, 13, 0, 0, tzinfo=UTC)


def pool(name: str = "pool-a", cidr: str = "10.0.10.0/24", **status: Any) -> LBIPPool:
    obj: dict[str, Any] = {
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": name, "generation": 1, "resourceVersion": "10"},
        "spec": {"blocks": [{"cidr": cidr}]}}
    if status:
        obj["status"] = status
    return LBIPPool.parse(obj)


def service(name: str, *, type: str = "LoadBalancer", generation: int = 1,
            status: dict[str, Any] | None = None, **spec: Any) -> Service:
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default", "generation": generation,
                     "resourceVersion": "20"},
        "spec": {"type": type, "ports": [{"port": 80}], **spec}}
    if status:
        obj["status"] = status
    return Service.parse(obj)


def cond(status: str, reason: str, message: str = "", ltt: str = "2024-01-01T00:00:00Z",
         generation: int = 1, type: str = "cilium.io/IPAMRequestSatisfied") -> dict[str, Any]:
    return {"type": type, "status": status, "reason": reason, "message": message,
            "lastTransitionTime": ltt, "observedGeneration": generation}


def by_name(writes: list[StatusWrite]) -> dict[str, StatusWrite]:
    return {w.name: w for w in writes}


def test_fresh_objects_get_ingress_and_conditions() -> None:
    plan, writes = reconcile([pool()], [service("a")], NOW)
    w = by_name(writes)
    assert w["a"] == StatusWrite("Service", "default", "a", "20", {
        "loadBalancer": {"ingress": [{"ip": "10.0.10.0"}]},
        "conditions": [cond("True", "satisfied", ltt="2024-05-01T12:00:00Z")]})
    assert w["pool-a"].kind == "CiliumLoadBalancerIPPool"
    assert w["pool-a"].resource_version == "10"
    assert w["pool-a"].status == {"conditions": [
        cond("False", "resolved", ltt="2024-05-01T12:00:00Z", type="cilium.io/PoolConflict"),
        cond("Unknown", "noreason", "256", "2024-05-01T12:00:00Z", type="cilium.io/IPsTotal"),
        cond("Unknown", "noreason", "255", "2024-05-01T12:00:00Z",
             type="cilium.io/IPsAvailable"),
        cond("Unknown", "noreason", "1", "2024-05-01T12:00:00Z", type="cilium.io/IPsUsed")]}
    assert w["a"].merge_patch == {"status": w["a"].status}
    assert w["pool-a"].merge_patch == {"status": w["pool-a"].status}
    assert plan.services["default/a"].ips == ("10.0.10.0",)


def test_converged_state_writes_nothing_even_after_restart() -> None:
    pools = [pool()]
    services = [service("a"), service("b", loadBalancerIP="10.0.10.7"),
                service("c", loadBalancerIP="20.0.0.1"), service("d", type="ClusterIP")]
    plan, writes = reconcile(pools, services, NOW)
    objs = {("CiliumLoadBalancerIPPool", p.name): p for p in pools}
    objs.update({("Service", s.name): s for s in services})
    for w in writes:
        objs[(w.kind, w.name)] = applied(objs[(w.kind, w.name)], w)
    new_pools = [o for k, o in objs.items() if k[0] != "Service"]
    new_services = [o for k, o in objs.items() if k[0] == "Service"]
    assert reconcile(new_pools, new_services, LATER, previous=plan)[1] == []  # type: ignore[arg-type]
    assert reconcile(new_pools, new_services, LATER)[1] == []  # type: ignore[arg-type]
    assert {w.name for w in writes} == {"pool-a", "a", "b", "c"}


def test_unchanged_status_is_not_written_and_other_conditions_are_kept() -> None:
    other = cond("True", "Ready", type="example.com/Other")
    svc = service("a", status={"loadBalancer": {"ingress": [{"ip": "10.0.10.0",
                                                             "ipMode": "VIP"}]},
                               "conditions": [other, cond("True", "satisfied")]})
    _, writes = reconcile([pool()], [svc], NOW)
    assert "a" not in by_name(writes)


def test_reason_change_keeps_transition_time_status_flip_moves_it() -> None:
    old = Condition("cilium.io/IPAMRequestSatisfied", "False", "no_pool", "x",
                    datetime(2024, 1, 1, tzinfo=UTC), 1)
    same_status = set_condition((old,), PlanCondition(old.type, "False", "out_of_ips", "y"),
                                1, NOW)
    assert same_status[0].last_transition_time == datetime(2024, 1, 1, tzinfo=UTC)
    assert (same_status[0].reason, same_status[0].message) == ("out_of_ips", "y")
    flipped = set_condition((old,), PlanCondition(old.type, "True", "satisfied", ""), 1, NOW)
    assert flipped[0].last_transition_time == NOW
    regen = set_condition((old,), PlanCondition(old.type, "False", "no_pool", "x"), 2, NOW)
    assert regen[0].observed_generation == 2
    assert regen[0].last_transition_time == datetime(2024, 1, 1, tzinfo=UTC)


def test_kept_ingress_entry_keeps_its_fields_hostname_entries_dropped() -> None:
    svc = service("a", status={"loadBalancer": {"ingress": [
        {"hostname": "lb.example"}, {"ip": "10.0.10.9", "ipMode": "Proxy"}]}})
    _, writes = reconcile([pool()], [svc], NOW)
    assert by_name(writes)["a"].status["loadBalancer"] == {
        "ingress": [{"ip": "10.0.10.9", "ipMode": "Proxy"}]}


def test_service_leaving_lb_ipam_is_stripped_once() -> None:
    other = cond("True", "Ready", type="example.com/Other")
    managed = service("a", type="NodePort", status={
        "loadBalancer": {"ingress": [{"ip": "10.0.10.0"}]},
        "conditions": [cond("True", "satisfied"), other]})
    never = service("b", loadBalancerClass="example.com/other", status={
        "loadBalancer": {"ingress": [{"ip": "192.0.2.1"}]}})
    _, writes = reconcile([pool()], [managed, never], NOW)
    w = by_name(writes)
    assert w["a"].status == {"loadBalancer": {}, "conditions": [other]}
    # A merge patch must say null to remove the ingress list.
    assert w["a"].merge_patch == {"status": {"loadBalancer": {"ingress": None},
                                             "conditions": [other]}}
    assert "b" not in w


def test_idle_without_pools_writes_nothing() -> None:
    svc = service("a", status={"loadBalancer": {"ingress": [{"ip": "10.0.10.0"}]}})
    plan, writes = reconcile([], [svc], NOW)
    assert plan.idle and writes == []


def test_pool_counters_change_rewrites_only_counters() -> None:
    st = {"conditions": [
        cond("False", "resolved", type="cilium.io/PoolConflict"),
        cond("Unknown", "noreason", "256", type="cilium.io/IPsTotal"),
        cond("Unknown", "noreason", "256", type="cilium.io/IPsAvailable"),
        cond("Unknown", "noreason", "0", type="cilium.io/IPsUsed")]}
    _, writes = reconcile([pool(**st)], [service("a")], NOW)
    got = by_name(writes)["pool-a"].status["conditions"]
    assert got[:2] == st["conditions"][:2]
    assert got[2] == cond("Unknown", "noreason", "255", type="cilium.io/IPsAvailable")
    assert got[3] == cond("Unknown", "noreason", "1", type="cilium.io/IPsUsed")
