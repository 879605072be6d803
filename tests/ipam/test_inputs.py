"""Adapters from `hexlane.model` objects to the allocator's inputs: blocks (cidr, start/stop,
start alone, v2alpha1 `cidrs`), allowFirstLastIPs, selectors, Service fields and ingress IPs
carry over unchanged; Helm values set the address families."""

from __future__ import annotations

import ipaddress

from hexlane.config.values import defaults, resolve_values
from hexlane.ipam.inputs import options_from_values, pool_input_from_model, service_input_from_model
from hexlane.ipam.lbipam import BlockInput, PortInput
from hexlane.model.cilium import LBIPPool
from hexlane.model.service import Service


def test_pool_blocks_and_fields() -> None:
    pool = LBIPPool.parse({
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": "p", "creationTimestamp": "2024-01-01T00:00:00Z"},
        "spec": {"blocks": [{"cidr": "10.0.0.0/30"}, {"start": "10.0.1.5"},
                            {"start": "10.0.2.1", "stop": "10.0.2.9"}],
                 "cidrs": [{"cidr": "fd00::/126"}],
                 "allowFirstLastIPs": "No", "disabled": True,
                 "serviceSelector": {"matchLabels": {"color": "red"}}}})
    p = pool_input_from_model(pool, order=7)
    ip = ipaddress.ip_address
    assert p.blocks == (
        BlockInput(ip("10.0.0.0"), ip("10.0.0.3"), True),
        BlockInput(ip("10.0.1.5"), ip("10.0.1.5"), False),
        BlockInput(ip("10.0.2.1"), ip("10.0.2.9"), False),
        BlockInput(ip("fd00::"), ip("fd00::3"), True))
    assert (p.name, p.order, p.allow_first_last_ips, p.disabled) == ("p", 7, "No", True)
    assert p.created is not None and p.created.year == 2024
    assert p.service_selector is not None
    assert p.service_selector.matches({"color": "red"})


def test_service_fields_and_ingress() -> None:
    svc = Service.parse({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "dns", "namespace": "pihole", "labels": {"app": "pihole"},
                     "annotations": {"lbipam.cilium.io/sharing-key": "k"}},
        "spec": {"type": "LoadBalancer", "loadBalancerIP": "10.0.0.5",
                 "loadBalancerClass": "io.cilium/l2-announcer",
                 "externalTrafficPolicy": "Local", "selector": {"app": "pihole"},
                 "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
                 "ports": [{"name": "a", "port": 53, "protocol": "UDP"},
                           {"name": "b", "port": 53}]},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.5"}, {"hostname": "x"}]}}})
    s = service_input_from_model(svc, order=3)
    assert (s.key, s.order, s.type, s.load_balancer_class) == (
        "pihole/dns", 3, "LoadBalancer", "io.cilium/l2-announcer")
    assert s.ports == (PortInput(53, "UDP"), PortInput(53, "TCP"))
    assert (s.external_traffic_policy, dict(s.selector)) == ("Local", {"app": "pihole"})
    assert (s.ip_families, s.ip_family_policy) == (("IPv4",), "SingleStack")
    assert s.load_balancer_ip == "10.0.0.5"
    assert s.current_ingress_ips == ("10.0.0.5",)
    assert dict(s.annotations) == {"lbipam.cilium.io/sharing-key": "k"}


def test_service_without_namespace_is_in_default() -> None:
    svc = Service.parse({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
                         "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}})
    assert service_input_from_model(svc).key == "default/web"


def test_options_from_values() -> None:
    assert options_from_values(defaults()).ipv6_enabled is False
    values, _ = resolve_values([("v.yaml", {"ipv6": {"enabled": True}})], [])
    opts = options_from_values(values)
    assert (opts.ipv4_enabled, opts.ipv6_enabled) == (True, True)


def test_pool_conflict_mark_comes_from_status() -> None:
    raw = {"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
           "metadata": {"name": "p"}, "spec": {"blocks": [{"cidr": "10.0.0.0/30"}]},
           "status": {"conditions": [{"type": "cilium.io/PoolConflict", "status": "True",
                                      "reason": "cidr_overlap", "message": "m"}]}}
    assert pool_input_from_model(LBIPPool.parse(raw)).conflict == "m"
    raw["status"]["conditions"][0]["status"] = "False"  # type: ignore[index]
    assert pool_input_from_model(LBIPPool.parse(raw)).conflict is None
