"""Adapters from `hexlane.model`'s typed objects to the LB-IPAM allocator's inputs.

The allocator (`hexlane.ipam.lbipam`) takes small frozen inputs so it never depends on how a
manifest or an API object was parsed; parsing and validation (with file, object and field in
every problem) are the model's job, and this module only carries values across.
"""

from __future__ import annotations

from hexlane.config.values import Values
from hexlane.ipam.lbipam import (
    POOL_CONFLICT_CONDITION,
    BlockInput,
    Options,
    PoolInput,
    PortInput,
    ServiceInput,
)
from hexlane.model.cilium import LBIPPool
from hexlane.model.service import Service


def pool_input_from_model(pool: LBIPPool, order: int = 0) -> PoolInput:
    """The allocator's view of a parsed pool (its current conflict mark included); `order`
    breaks creationTimestamp ties."""
    return PoolInput(
        name=pool.name,
        blocks=tuple(BlockInput(b.first, b.last, b.from_cidr) for b in pool.blocks),
        created=pool.meta.creation_timestamp,
        order=order,
        allow_first_last_ips=pool.allow_first_last_ips or "",
        service_selector=pool.service_selector,
        disabled=pool.disabled,
        conflict=next((c.message for c in pool.conditions
                       if c.type == POOL_CONFLICT_CONDITION and c.status == "True"), None),
    )


def service_input_from_model(svc: Service, order: int = 0) -> ServiceInput:
    """The allocator's view of a parsed Service, its current ingress IPs included."""
    return ServiceInput(
        namespace=svc.namespace or "default",
        name=svc.name,
        uid=svc.meta.uid,
        created=svc.meta.creation_timestamp,
        order=order,
        type=svc.type,
        load_balancer_class=svc.load_balancer_class,
        labels=dict(svc.labels),
        annotations=dict(svc.annotations),
        ports=tuple(PortInput(p.port, p.protocol) for p in svc.ports),
        external_traffic_policy=svc.external_traffic_policy,
        selector=dict(svc.selector or {}),
        ip_families=svc.ip_families,
        ip_family_policy=svc.ip_family_policy,
        load_balancer_ip=svc.load_balancer_ip,
        current_ingress_ips=svc.ingress_ips,
    )


def options_from_values(values: Values) -> Options:
    """The allocator's settings from Helm values: `ipv4.enabled` and `ipv6.enabled` decide
    which families a Service without ipFamilies asks for (Cilium's defaults: IPv4 only)."""
    return Options(ipv4_enabled=bool(values.get("ipv4.enabled", True)),
                   ipv6_enabled=bool(values.get("ipv6.enabled", False)))
