"""Service, EndpointSlice, Node, Pod, Lease and the parse_object registry: defaults as in
Kubernetes, every problem reported with its field path, cluster-scoped kinds ignoring
metadata.namespace, unknown apiVersions rejected and unknown kinds marked unread."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from model_helpers import errors

from hexlane.model import (
    EndpointSlice,
    InputError,
    LBIPPool,
    Lease,
    Node,
    Pod,
    Service,
    Unread,
    parse_object,
)


def svc(spec: dict[str, Any], **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", **meta}, "spec": spec}


def test_service_defaults() -> None:
    s = Service.parse(svc({"type": "LoadBalancer", "ports": [{"port": 1234}]}))
    assert s.type == "LoadBalancer" and s.selector is None
    (p,) = s.ports
    assert (p.protocol, p.target_port, p.node_port) == ("TCP", 1234, 0)
    assert s.external_traffic_policy == "Cluster" and s.internal_traffic_policy == "Cluster"
    assert s.session_affinity == "None" and s.session_affinity_timeout == 10800
    assert s.allocate_load_balancer_node_ports and s.load_balancer_class is None


def test_service_full() -> None:
    s = Service.parse(svc({
        "type": "LoadBalancer", "selector": {"app": "web"},
        "ports": [{"name": "http", "port": 80, "targetPort": "http-alt"},
                  {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353,
                   "nodePort": 30053}],
        "clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
        "externalIPs": ["192.168.1.10"], "loadBalancerIP": "10.0.0.100",
        "loadBalancerClass": "io.cilium/l2-announcer", "externalTrafficPolicy": "Global",
        "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP":
                                                                 {"timeoutSeconds": 60}},
        "ipFamilies": ["IPv4"], "ipFamilyPolicy": "SingleStack",
        "allocateLoadBalancerNodePorts": False, "healthCheckNodePort": 32000},
        annotations={"lbipam.cilium.io/sharing-key": "pi-hole"}) | {
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.100", "ipMode": "VIP"}]},
                   "conditions": [{"type": "cilium.io/IPAMRequestSatisfied",
                                   "status": "True", "reason": "satisfied", "message": "",
                                   "lastTransitionTime": "2024-01-01T00:00:00Z"}]}})
    assert s.external_traffic_policy == "Cluster"  # legacy "Global"
    assert s.ports[0].target_port == "http-alt" and s.ports[1].node_port == 30053
    assert s.selector == {"app": "web"} and s.session_affinity_timeout == 60
    assert s.ingress_ips == ("10.0.0.100",) and s.conditions[0].status == "True"
    assert s.annotations["lbipam.cilium.io/sharing-key"] == "pi-hole"
    assert Service.parse(s.to_dict()) == s


@pytest.mark.parametrize(("spec", "path", "fragment"), [
    ({"ports": [{"port": 0}]}, "spec.ports[0].port", "out of range"),
    ({"ports": [{"port": 80, "protocol": "tcp"}]}, "spec.ports[0].protocol", "'TCP'"),
    ({"ports": [{"port": 80, "targetPort": 0}]}, "spec.ports[0].targetPort", "out of range"),
    ({"ports": [{"port": 80, "targetPort": "Not_A_Name"}]}, "spec.ports[0].targetPort",
     "IANA"),
    ({"ports": [{"port": 80}, {"port": 81}]}, "spec.ports[0].name", "more than one port"),
    ({"ports": [{"port": 80, "name": "a"}, {"port": 80, "name": "b"}]}, "spec.ports[1].port",
     "duplicate"),
    ({"ports": "80"}, "spec.ports", "expected a list"),
    ({}, "spec.ports", "at least one port"),
    ({"type": "Balancer", "ports": [{"port": 80}]}, "spec.type", "'LoadBalancer'"),
    ({"ports": [{"port": 80}], "clusterIP": "10.43.0.999"}, "spec.clusterIP", "invalid IP"),
    ({"ports": [{"port": 80}], "externalTrafficPolicy": "local"},
     "spec.externalTrafficPolicy", "'Local'"),
    ({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
      "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
     "spec.sessionAffinityConfig.clientIP.timeoutSeconds", "out of range"),
    ({"ports": [{"port": 80}], "ipFamilies": ["IPv5"]}, "spec.ipFamilies[0]", "IPv4 or IPv6"),
    ({"ports": [{"port": 80}], "selector": {"app": True}}, "spec.selector[app]",
     "quote it"),
    ({"ports": [{"port": 80}], "loadBalancerSourceRanges": ["10.0.0.0/40"]},
     "spec.loadBalancerSourceRanges[0]", "prefix length"),
    ({"type": "ExternalName"}, "spec.externalName", "required"),
])
def test_service_problems(spec: dict[str, Any], path: str, fragment: str) -> None:
    found = errors(Service, svc(spec))
    assert any(p == path and fragment in m for p, m in found), found


def test_service_name_must_be_dns1035() -> None:
    found = errors(Service, svc({"ports": [{"port": 80}]}, name="1web"))
    assert found[0][0] == "metadata.name" and "DNS-1035" in found[0][1]


def test_headless_service_needs_no_ports() -> None:
    assert Service.parse(svc({"clusterIP": "None"})).headless


def test_bad_lbipam_annotation_is_a_warning() -> None:
    s = Service.parse(svc({"type": "LoadBalancer", "ports": [{"port": 80}]},
                          annotations={"io.cilium/lb-ipam-ips": "10.0.0.1, nope"}))
    assert [w.path for w in s.warnings] == ["metadata.annotations[io.cilium/lb-ipam-ips]"]
    # MetalLB's newer spelling is checked as the older one (LB-IPAM reads both)
    s = Service.parse(svc({"type": "LoadBalancer", "ports": [{"port": 80}]},
                          annotations={"metallb.io/loadBalancerIPs": "10.0.0.300"}))
    assert [w.path for w in s.warnings] == ["metadata.annotations[metallb.io/loadBalancerIPs]"]


def slice_(endpoints: list[Any], **kw: Any) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-abc", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], **kw}


def test_endpointslice() -> None:
    es = EndpointSlice.parse(slice_([
        {"addresses": ["10.42.1.5"], "nodeName": "node1",
         "targetRef": {"kind": "Pod", "name": "web-1", "namespace": "default"}},
        {"addresses": ["10.42.2.5"], "conditions": {"ready": False, "serving": True,
                                                   "terminating": True}},
    ]))
    assert es.service_name == "web"
    a, b = es.endpoints
    assert a.conditions.is_ready and a.conditions.is_serving and not a.conditions.is_terminating
    assert not b.conditions.is_ready and b.conditions.is_serving and b.conditions.is_terminating
    assert a.target_ref is not None and a.target_ref.name == "web-1"
    assert es.ports[0].port == 8080
    assert EndpointSlice.parse(es.to_dict()) == es


def test_endpointslice_problems() -> None:
    found = errors(EndpointSlice, slice_([{"addresses": ["fd00::1"]}, {"addresses": []},
                                          {"addresses": ["10.0.0.1"],
                                           "conditions": {"ready": "yes"}}]))
    paths = {p for p, _ in found}
    assert paths == {"endpoints[0].addresses[0]", "endpoints[1].addresses",
                     "endpoints[2].conditions.ready"}


def test_node() -> None:
    n = Node.parse({"apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": "node1", "namespace": "ignored",
                                 "labels": {"kubernetes.io/os": "linux"}},
                    "spec": {"podCIDR": "10.42.1.0/24", "podCIDRs": ["10.42.1.0/24"]},
                    "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.11"},
                                             {"type": "Hostname", "address": "node1"}],
                               "conditions": [{"type": "Ready", "status": "True"}]}})
    assert n.meta.namespace == "" and n.internal_ips == ("10.0.0.11",) and n.ready is True
    assert Node.parse(n.to_dict()) == n
    assert Node.parse({"metadata": {"name": "n"}}).ready is None
    found = errors(Node, {"metadata": {"name": "n"}, "spec": {"podCIDR": "10.42.1.0"},
                          "status": {"addresses": [{"type": "InternalIP", "address": "x"}]}})
    assert {p for p, _ in found} == {"spec.podCIDR", "status.addresses[0].address"}


def test_pod() -> None:
    p = Pod.parse({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "web-1", "namespace": "default",
                                "deletionTimestamp": "2024-01-01T00:00:00Z",
                                "ownerReferences": [{"apiVersion": "apps/v1",
                                                     "kind": "ReplicaSet", "name": "web-x",
                                                     "uid": "u1", "controller": True}]},
                   "spec": {"nodeName": "node1", "containers": [
                       {"name": "web", "image": "busybox",
                        "ports": [{"containerPort": 8080, "name": "http"},
                                  {"containerPort": 53, "protocol": "UDP"}]}]},
                   "status": {"phase": "Running", "podIP": "10.42.1.5",
                              "podIPs": [{"ip": "10.42.1.5"}],
                              "conditions": [{"type": "Ready", "status": "True"}]}})
    assert p.terminating and p.ready and p.phase == "Running"
    assert p.resolve_port("http") == 8080 and p.resolve_port("dns") is None
    assert p.resolve_port(80) == 80
    assert p.meta.owner_references[0].controller
    assert Pod.parse(p.to_dict()) == p
    found = errors(Pod, {"metadata": {"name": "p"}, "spec": {"containers": [
        {"name": "c", "ports": [{"containerPort": 0, "protocol": "ICMP"}]}]},
        "status": {"phase": "Dancing"}})
    assert {p for p, _ in found} == {"spec.containers[0].ports[0].containerPort",
                                     "spec.containers[0].ports[0].protocol", "status.phase"}
    found = errors(Pod, {"metadata": {"name": "p"}, "spec": {"containers": []}})
    assert found == [("spec.containers", found[0][1])] and "at least one" in found[0][1]


def test_lease() -> None:
    obj = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "metadata": {"name": "cilium-l2announce-default-web", "namespace": "kube-system"},
           "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 15,
                    "acquireTime": "2024-01-01T00:00:00.000000Z",
                    "renewTime": "2024-01-01T00:00:10.123456Z", "leaseTransitions": 2}}
    lease = Lease.parse(obj)
    assert lease.renew_time == datetime(2024, 1, 1, 0, 0, 10, 123456, tzinfo=UTC)
    assert lease.to_dict()["spec"]["renewTime"] == "2024-01-01T00:00:10.123456Z"
    assert not lease.expired(lease.renew_time + timedelta(seconds=15))  # type: ignore[operator]
    assert lease.expired(lease.renew_time + timedelta(seconds=16))  # type: ignore[operator]
    found = errors(Lease, {"metadata": {"name": "l"}, "spec": {"renewTime": "yesterday",
                                                             "leaseDurationSeconds": 0}})
    assert {p for p, _ in found} == {"spec.renewTime", "spec.leaseDurationSeconds"}


def test_registry_picks_types_and_names_objects() -> None:
    pool = {"apiVersion": "cilium.io/v2", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "p", "namespace": "kube-system"},
            "spec": {"blocks": [{"cidr": "10.0.0.0/24"}]}}
    assert isinstance(parse_object(pool), LBIPPool)
    unread = parse_object({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "web"}})
    assert isinstance(unread, Unread) and unread.warning.severity == "warning"
    assert "not read by hexlane" in unread.warning.message
    with pytest.raises(InputError) as e:
        parse_object({**pool, "apiVersion": "cilium.io/v1"})
    (p,) = e.value.problems
    assert (p.path, p.obj) == ("apiVersion", "CiliumLoadBalancerIPPool/p")
    assert "expected cilium.io/v2alpha1 or cilium.io/v2" in p.message
    with pytest.raises(InputError) as e:
        parse_object({**pool, "spec": {"blocks": [{"cidr": "x"}]}})
    assert e.value.problems[0].obj == "CiliumLoadBalancerIPPool/p"
    with pytest.raises(InputError) as e:
        parse_object({"metadata": {}})
    assert {p.path for p in e.value.problems} == {"apiVersion", "kind"}
    with pytest.raises(InputError):
        parse_object(["not", "an", "object"])


def test_parse_reports_wrong_kind() -> None:
    found = errors(Service, {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                             "spec": {"ports": [{"port": 1}]}})
    assert found[0][0] == "kind"


def test_not_an_object_at_all() -> None:
    found = errors(LBIPPool, "pool")  # type: ignore[arg-type]
    assert found[0] == ("", "expected a CiliumLoadBalancerIPPool object, got a string "
                            "('pool')")
