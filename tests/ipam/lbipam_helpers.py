"""Builders shared by the LB-IPAM tests: pools and Services in a few words, and a runner that
plays several steps the way the operator lives through them (each step's Services and pools
start from the ingress IPs and conflict marks the previous step wrote to their status)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from hexlane.ipam.lbipam import (
    BlockInput,
    LBIPAMPlan,
    Options,
    PoolInput,
    PortInput,
    ServiceInput,
    allocate,
)
from hexlane.model.selectors import LabelSelector

T0 = datetime(2024, 1, 1, tzinfo=UTC)

SAT = ("True", "satisfied", "")
NO_MATCH = ("False", "no_pool",
            "There are no enabled CiliumLoadBalancerIPPools that match this service")
OUT = ("False", "out_of_ips",
       "All enabled CiliumLoadBalancerIPPools that match this service ran out of allocatable IPs")


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def no_pool(ip: str) -> tuple[str, str, str]:
    return ("False", "no_pool", f"No pool exists with a CIDR containing '{ip}'")


def taken(ip: str) -> tuple[str, str, str]:
    return ("False", "already_allocated", f"The IP '{ip}' is already allocated to another service")


def incompatible(ip: str, why: str) -> tuple[str, str, str]:
    return ("False", "already_allocated_incompatible_service",
            f"The IP '{ip}' is already allocated to an incompatible service. Reason: {why}")


def mismatch(ip: str) -> tuple[str, str, str]:
    return ("False", "pool_selector_mismatch",
            f"The pool with the CIDR containing '{ip}', doesn't select this service")


def block(text: str) -> BlockInput:
    if "/" in text:
        return BlockInput.cidr(text)
    if "-" in text:
        start, stop = text.split("-")
        return BlockInput.range(start, stop)
    return BlockInput.range(text)


def pool(name: str, *blocks: str, created: datetime | None = None, allow: str = "",
         select: Mapping[str, Any] | None = None, disabled: bool = False) -> PoolInput:
    return PoolInput(
        name=name, blocks=tuple(block(b) for b in blocks), created=created,
        allow_first_last_ips=allow,
        service_selector=LabelSelector.parse(select) if select is not None else None,
        disabled=disabled)


def svc(name: str, ns: str = "default", *, created: datetime | None = None,
        type: str = "LoadBalancer", cls: str | None = None,
        labels: Mapping[str, str] | None = None, ann: Mapping[str, str] | None = None,
        ports: Sequence[str] = (), etp: str = "Cluster",
        selector: Mapping[str, str] | None = None, families: Sequence[str] = (),
        policy: str | None = None, lbip: str = "", ingress: Sequence[str] = ()) -> ServiceInput:
    port_inputs = []
    for p in ports:
        num, _, proto = p.partition("/")
        port_inputs.append(PortInput(int(num), proto or "TCP"))
    return ServiceInput(
        namespace=ns, name=name, created=created, type=type, load_balancer_class=cls,
        labels=dict(labels or {}), annotations=dict(ann or {}), ports=tuple(port_inputs),
        external_traffic_policy=etp, selector=dict(selector or {}),
        ip_families=tuple(families), ip_family_policy=policy, load_balancer_ip=lbip,
        current_ingress_ips=tuple(ingress))


Step = tuple[Sequence[PoolInput], Sequence[ServiceInput]]


def in_file_order(pools: Sequence[PoolInput], services: Sequence[ServiceInput]
                  ) -> tuple[list[PoolInput], list[ServiceInput]]:
    """Number inputs by position, as `hexlane ipam plan` does with file order."""
    return ([dataclasses.replace(p, order=i) for i, p in enumerate(pools)],
            [dataclasses.replace(s, order=i) for i, s in enumerate(services)])


def run(steps: Sequence[Step], options: Options | None = None) -> LBIPAMPlan:
    """Play the steps; a Service without explicit ingress starts each step from the IPs the
    previous step gave it, and a pool from the conflict mark it was given (its status)."""
    plan: LBIPAMPlan | None = None
    for pools, services in steps:
        ps, ss = in_file_order(pools, services)
        if plan is not None:
            ss = [s if s.current_ingress_ips or s.key not in plan.services
                  else dataclasses.replace(s, current_ingress_ips=plan.services[s.key].ips)
                  for s in ss]
            ps = [dataclasses.replace(p, conflict=plan.pools[p.name].conflict_message)
                  if p.name in plan.pools and plan.pools[p.name].conflicting else p
                  for p in ps]
        plan = allocate(ps, ss, options=options)
    assert plan is not None
    return plan


def outcome(plan: LBIPAMPlan) -> dict[str, tuple[tuple[str, ...], tuple[str, str, str] | None]]:
    out = {}
    for key, r in plan.services.items():
        c = r.condition
        out[key] = (r.ips, (c.status, c.reason, c.message) if c else None)
    return out
