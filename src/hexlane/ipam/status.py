"""The operator's LB-IPAM reconcile step, pure: from informer state to the status writes.

`reconcile(pools, services, now)` runs the allocator on the typed objects the informers hold
(their current status included) and returns the plan and the `StatusWrite`s that bring each
object's status to what the plan says, only for objects whose status differs. The edge writes
each one (PUT to `/status` carrying `resource_version`, or a merge patch of `status`) and, on
a conflict or error, simply runs the reconcile again later: writing the same plan twice is
harmless, and a restart at any moment converges to the same statuses.

Condition bookkeeping is Kubernetes' `meta.SetStatusCondition`, as Cilium uses it: a condition
is rewritten only when its status, reason, message or observedGeneration changes, and its
lastTransitionTime moves only when its status changes. Other controllers' conditions and
ingress fields are left alone; an ingress entry LB-IPAM keeps is kept as it is (ipMode and
all), new ones are `{ip}`. A Service that is not LB-IPAM's (any more) loses its ingress and
the IPAMRequestSatisfied condition, but only if it carries that condition (the sign LB-IPAM
managed it); Services it never touched are never written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hexlane.ipam.inputs import pool_input_from_model, service_input_from_model
from hexlane.ipam.lbipam import (
    SERVICE_CONDITION,
    LBIPAMPlan,
    Options,
    allocate,
)
from hexlane.ipam.lbipam import (
    Condition as PlanCondition,
)
from hexlane.model.cilium import LBIPPool
from hexlane.model.meta import Condition
from hexlane.model.service import LoadBalancerIngress, Service


@dataclass(frozen=True, slots=True)
class StatusWrite:
    """The whole new `status` of one object, with the resourceVersion it was computed from."""

    kind: str  # "Service" | "CiliumLoadBalancerIPPool"
    namespace: str
    name: str
    resource_version: str
    status: dict[str, Any]

    @property
    def merge_patch(self) -> dict[str, Any]:
        """A JSON merge patch body for `/status`: lists are replaced whole, and the fields
        LB-IPAM owns that the new status lacks are null, so the patch removes them."""
        status = dict(self.status)
        if self.kind == "Service":
            lb = dict(status.get("loadBalancer") or {})
            lb.setdefault("ingress", None)
            status["loadBalancer"] = lb
            status.setdefault("conditions", None)
        return {"status": status}


def set_condition(conditions: Sequence[Condition], want: PlanCondition, generation: int,
                  now: datetime) -> tuple[Condition, ...]:
    """`conditions` with `want` set, as meta.SetStatusCondition does (see module doc)."""
    out = list(conditions)
    for i, c in enumerate(out):
        if c.type != want.type:
            continue
        if (c.status, c.reason, c.message, c.observed_generation) == (
                want.status, want.reason, want.message, generation):
            return tuple(out)
        ltt = c.last_transition_time if c.status == want.status else now
        out[i] = Condition(want.type, want.status, want.reason, want.message,
                           ltt or now, generation)
        return tuple(out)
    out.append(Condition(want.type, want.status, want.reason, want.message, now, generation))
    return tuple(out)


def _ingress(current: Sequence[LoadBalancerIngress], ips: Sequence[str]
             ) -> tuple[LoadBalancerIngress, ...]:
    by_ip = {i.ip: i for i in current if i.ip}
    return tuple(by_ip.get(ip, LoadBalancerIngress(ip=ip)) for ip in ips)


def _service_status(ingress: Sequence[LoadBalancerIngress],
                    conditions: Sequence[Condition]) -> dict[str, Any]:
    status: dict[str, Any] = {"loadBalancer": {}}
    if ingress:
        status["loadBalancer"]["ingress"] = [i.to_dict() for i in ingress]
    if conditions:
        status["conditions"] = [c.to_dict() for c in conditions]
    return status


def service_writes(plan: LBIPAMPlan, services: Iterable[Service],
                   now: datetime) -> list[StatusWrite]:
    writes = []
    for svc in services:
        key = f"{svc.namespace or 'default'}/{svc.name}"
        result = plan.services.get(key)
        if result is None:
            continue
        if result.handled and result.condition is not None:
            ingress = _ingress(svc.ingress, result.ips)
            conditions = set_condition(svc.conditions, result.condition, svc.meta.generation,
                                       now)
        elif any(c.type == SERVICE_CONDITION for c in svc.conditions):
            ingress = ()
            conditions = tuple(c for c in svc.conditions if c.type != SERVICE_CONDITION)
        else:
            continue
        if ingress == svc.ingress and conditions == svc.conditions:
            continue
        writes.append(StatusWrite("Service", svc.namespace or "default", svc.name,
                                  svc.meta.resource_version,
                                  _service_status(ingress, conditions)))
    return writes


def pool_writes(plan: LBIPAMPlan, pools: Iterable[LBIPPool], now: datetime) -> list[StatusWrite]:
    writes = []
    for pool in pools:
        st = plan.pools.get(pool.name)
        if st is None:
            continue
        conditions = tuple(pool.conditions)
        for want in st.conditions:
            conditions = set_condition(conditions, want, pool.meta.generation, now)
        if conditions == pool.conditions:
            continue
        writes.append(StatusWrite("CiliumLoadBalancerIPPool", "", pool.name,
                                  pool.meta.resource_version,
                                  {"conditions": [c.to_dict() for c in conditions]}))
    return writes


def reconcile(pools: Sequence[LBIPPool], services: Sequence[Service], now: datetime,
              previous: LBIPAMPlan | None = None, options: Options | None = None
              ) -> tuple[LBIPAMPlan, list[StatusWrite]]:
    """The plan for this informer state and the status writes it needs (pools first)."""
    plan, chunks = reconcile_chunks(pools, services, now, previous, options)
    return plan, [w for chunk in chunks for w in chunk]


def reconcile_chunks(pools: Sequence[LBIPPool], services: Sequence[Service], now: datetime,
                     previous: LBIPAMPlan | None = None, options: Options | None = None,
                     chunk: int = 1000) -> tuple[LBIPAMPlan, Iterator[list[StatusWrite]]]:
    """`reconcile`, with the writes computed lazily `chunk` Services at a time (the pools'
    with the first): a caller can start writing while the rest are still being worked out."""
    plan = allocate([pool_input_from_model(p) for p in pools],
                    [service_input_from_model(s) for s in services],
                    previous=previous, options=options)

    def chunks() -> Iterator[list[StatusWrite]]:
        if plan.idle:
            return
        first = pool_writes(plan, pools, now)
        for i in range(0, len(services), chunk):
            writes = first + service_writes(plan, services[i:i + chunk], now)
            if writes:
                yield writes
                first = []
        if first:
            yield first

    return plan, chunks()


def applied(obj: Service | LBIPPool, write: StatusWrite) -> Service | LBIPPool:
    """`obj` as it reads back after `write` (for tests and for a cache updated in place)."""
    if isinstance(obj, Service):
        return Service.parse({**obj.to_dict(), "status": write.status})
    return LBIPPool.parse({**obj.to_dict(), "status": write.status})
