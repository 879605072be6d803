"""The operator's reconcile loop over random clusters (hypothesis): whatever status writes get
lost and whenever the operator restarts (forgetting its previous plan), repeating reconcile
converges to a fixed point (no more writes, with or without memory) where no IP is held by two
Services unless they may share it."""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from test_lbipam_properties import pools, services

from hexlane.ipam.lbipam import LBIPAMPlan, PoolInput, ServiceInput
from hexlane.ipam.status import applied, reconcile, reconcile_chunks
from hexlane.model.cilium import LBIPPool
from hexlane.model.reader import format_time
from hexlane.model.service import Service

NOW = datetime(2025, 1, 1, tzinfo=UTC)


def pool_manifest(p: PoolInput) -> dict[str, Any]:
    blocks = []
    for b in p.blocks:
        if b.from_cidr:
            bits = b.first.max_prefixlen - (b.size.bit_length() - 1)
            blocks.append({"cidr": f"{b.first}/{bits}"})
        else:
            blocks.append({"start": str(b.first), "stop": str(b.last)})
    spec: dict[str, Any] = {"blocks": blocks, "disabled": p.disabled}
    if p.allow_first_last_ips:
        spec["allowFirstLastIPs"] = p.allow_first_last_ips
    if p.service_selector is not None:
        spec["serviceSelector"] = p.service_selector.to_dict()
    meta: dict[str, Any] = {"name": p.name, "generation": 1, "resourceVersion": "1"}
    if p.created is not None:
        meta["creationTimestamp"] = format_time(p.created)
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": meta, "spec": spec}


def service_manifest(s: ServiceInput) -> dict[str, Any]:
    ports = [{"name": f"p{i}", "port": p.port, "protocol": p.protocol}
             for i, p in enumerate(s.ports)] or [{"port": 8080}]
    spec: dict[str, Any] = {"type": s.type, "ports": ports,
                            "externalTrafficPolicy": s.external_traffic_policy}
    if s.selector:
        spec["selector"] = dict(s.selector)
    if s.ip_families:
        spec["ipFamilies"] = list(s.ip_families)
    if s.ip_family_policy and not (s.ip_family_policy == "SingleStack"
                                   and len(s.ip_families) > 1):
        spec["ipFamilyPolicy"] = s.ip_family_policy
    meta: dict[str, Any] = {"name": s.name, "namespace": s.namespace, "generation": 1,
                            "resourceVersion": "1", "labels": dict(s.labels),
                            "annotations": dict(s.annotations)}
    if s.created is not None:
        meta["creationTimestamp"] = format_time(s.created)
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}


@settings(max_examples=60, deadline=None)
@given(pools(), services(), st.lists(st.booleans(), min_size=40, max_size=40),
       st.lists(st.booleans(), min_size=6, max_size=6))
def test_reconcile_converges_despite_lost_writes_and_restarts(
        ps: list[PoolInput], ss: list[ServiceInput], lost: list[bool],
        restarts: list[bool]) -> None:
    objs: dict[tuple[str, str], Any] = {}
    for p in ps:
        objs[("pool", p.name)] = LBIPPool.parse(pool_manifest(p))
    for s in ss:
        objs[("svc", s.key)] = Service.parse(service_manifest(s))
    previous: LBIPAMPlan | None = None
    losses = iter(lost)
    for rnd in range(len(restarts)):
        pool_objs = [o for k, o in objs.items() if k[0] == "pool"]
        svc_objs = [o for k, o in objs.items() if k[0] == "svc"]
        plan, writes = reconcile(pool_objs, svc_objs, NOW,
                                 previous=None if restarts[rnd] else previous)
        previous = plan
        for w in writes:
            if rnd < 3 and next(losses, False):
                continue  # the write failed; a later round retries it
            key = ("pool", w.name) if w.kind != "Service" else ("svc", f"{w.namespace}/{w.name}")
            objs[key] = applied(objs[key], w)
    pool_objs = [o for k, o in objs.items() if k[0] == "pool"]
    svc_objs = [o for k, o in objs.items() if k[0] == "svc"]
    final, writes = reconcile(pool_objs, svc_objs, NOW, previous=previous)
    assert writes == []
    assert reconcile(pool_objs, svc_objs, NOW)[1] == []
    if final.idle:
        return
    holders: dict[str, list[Service]] = defaultdict(list)
    for svc in svc_objs:
        for ip in svc.ingress_ips:
            ipaddress.ip_address(ip)
            holders[ip].append(svc)
    for ip, group in holders.items():
        if len(group) > 1:
            keys = {s.annotations.get("lbipam.cilium.io/sharing-key") for s in group}
            assert len(keys) == 1 and None not in keys, ip


@given(pools(), services(), st.integers(min_value=1, max_value=5))
@settings(max_examples=100, deadline=None)
def test_chunked_writes_are_the_same_writes(ps: list[PoolInput], ss: list[ServiceInput],
                                            chunk: int) -> None:
    """The operator queues a run's writes chunk by chunk as they are worked out: together
    they are exactly `reconcile`'s, in its order, and no chunk is empty."""
    pool_objs = [LBIPPool.parse(pool_manifest(p)) for p in ps]
    svc_objs = [Service.parse(service_manifest(s)) for s in ss]
    plan, writes = reconcile(pool_objs, svc_objs, NOW)
    chunked_plan, chunks = reconcile_chunks(pool_objs, svc_objs, NOW, chunk=chunk)
    parts = list(chunks)
    assert chunked_plan == plan
    assert [w for part in parts for w in part] == writes
    assert all(parts)
