"""Kubernetes `Service` (v1): the typed, immutable view hexlane's load balancer and LB-IPAM use.

Defaults are Kubernetes' (type ClusterIP, protocol TCP, targetPort = port, traffic policies
Cluster, sessionAffinity None with a 10800 s timeout, allocateLoadBalancerNodePorts true).
The legacy externalTrafficPolicy spelling "Global" means Cluster. Annotations are kept as they
are; the LB-IPAM ones (`lbipam.cilium.io/ips`, ...) are checked and bad addresses in them
reported as warnings, because Kubernetes itself accepts any annotation and Cilium only logs.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.model.errors import join_path
from hexlane.model.meta import (
    SPEC_STATUS_FIELDS,
    Condition,
    ObjectView,
    dns_label_problem,
    omit_empty,
    parse_conditions,
    read_object,
)
from hexlane.model.netaddr import parse_cidr, parse_ip
from hexlane.model.reader import FrozenMap, Problems, Reader

PROTOCOLS = ("TCP", "UDP", "SCTP")
SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName")
TRAFFIC_POLICIES = ("Cluster", "Local")
IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
DEFAULT_AFFINITY_TIMEOUT = 10800
# Annotations whose value is a comma-separated list of requested addresses.
IP_ANNOTATIONS = ("lbipam.cilium.io/ips", "io.cilium/lb-ipam-ips",
                  "metallb.universe.tf/loadBalancerIPs", "metallb.io/loadBalancerIPs")

SPEC_FIELDS = ("type", "selector", "ports", "clusterIP", "clusterIPs", "externalIPs",
               "loadBalancerIP", "loadBalancerClass", "loadBalancerSourceRanges",
               "externalTrafficPolicy", "internalTrafficPolicy", "sessionAffinity",
               "sessionAffinityConfig", "ipFamilies", "ipFamilyPolicy",
               "allocateLoadBalancerNodePorts", "healthCheckNodePort", "externalName",
               "publishNotReadyAddresses", "trafficDistribution")

_IANA_SVC_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?$")


def port_name_problem(name: str) -> str | None:
    """Why `name` is not an IANA service name (a named targetPort / containerPort name)."""
    if (not _IANA_SVC_NAME_RE.match(name) or "--" in name
            or not re.search(r"[a-z]", name)):
        return (f"invalid port name {name!r}: expected an IANA service name (at most 15 "
                "characters, lowercase letters, digits and '-', at least one letter, no '--')")
    return None


def read_port_ref(r: Reader, key: str, *, required: bool = False) -> int | str | None:
    """A port given as a number (1-65535) or a name, as in targetPort and policy ports."""
    v = r.get(key)
    if v is None:
        if required:
            r.error(key, "required field is missing: expected a port number or name")
        return None
    if isinstance(v, bool) or not isinstance(v, int | str):
        r.error(key, f"expected a port number (1-65535) or a port name, got "
                     f"{type(v).__name__}")
        return None
    if isinstance(v, int):
        if not 1 <= v <= 65535:
            r.error(key, f"port {v} is out of range: expected 1-65535 or a port name")
            return None
        return v
    if v.isdigit():
        n = int(v)
        if not 1 <= n <= 65535:
            r.error(key, f"port {v!r} is out of range: expected 1-65535 or a port name")
            return None
        return n
    if (why := port_name_problem(v)) is not None:
        r.error(key, why)
        return None
    return v


@dataclass(frozen=True, slots=True)
class ServicePort:
    port: int
    protocol: str = "TCP"
    name: str = ""
    target_port: int | str = 0  # parse() fills in `port` when absent, as Kubernetes does
    node_port: int = 0
    app_protocol: str = ""

    @classmethod
    def parse_from(cls, r: Reader) -> ServicePort:
        r.unknown_fields(("name", "protocol", "port", "targetPort", "nodePort", "appProtocol"),
                         what="a Service port")
        port = r.integer("port", required=True, lo=1, hi=65535, what="a port number")
        target = read_port_ref(r, "targetPort")
        name = r.string("name")
        if name and (why := dns_label_problem(name)) is not None:
            r.error("name", why.replace("invalid name", "invalid port name"))
        return cls(
            port=port,
            protocol=r.string("protocol", default="TCP", choices=PROTOCOLS),
            name=name,
            target_port=port if target is None else target,
            node_port=r.integer("nodePort", lo=1, hi=65535, what="a node port number"),
            app_protocol=r.string("appProtocol"),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"port": self.port, "protocol": self.protocol, "targetPort": self.target_port,
                **omit_empty(name=self.name, nodePort=self.node_port,
                             appProtocol=self.app_protocol)}


@dataclass(frozen=True, slots=True)
class LoadBalancerIngress:
    ip: str = ""
    hostname: str = ""
    ip_mode: str = ""  # "VIP" | "Proxy" | "" (unset)

    @classmethod
    def parse_from(cls, r: Reader) -> LoadBalancerIngress:
        ip = r.string("ip", what="an IP address")
        if ip:
            r.try_parse("ip", parse_ip, ip)
        return cls(ip=ip, hostname=r.string("hostname"),
                   ip_mode=r.string("ipMode", choices=("VIP", "Proxy")))

    def to_dict(self) -> dict[str, Any]:
        return omit_empty(ip=self.ip, hostname=self.hostname, ipMode=self.ip_mode)


@dataclass(frozen=True, slots=True)
class Service(ObjectView):
    """A Service; `selector` is None when the Service has none (endpoints managed by hand)."""

    KIND = "Service"
    API_VERSIONS = ("v1",)
    NAMESPACED = True
    NAME_RULE = "dns1035"

    type: str = "ClusterIP"
    selector: FrozenMap[str, str] | None = None
    ports: tuple[ServicePort, ...] = ()
    cluster_ip: str = ""
    cluster_ips: tuple[str, ...] = ()
    external_ips: tuple[str, ...] = ()
    load_balancer_ip: str = ""
    load_balancer_class: str | None = None
    load_balancer_source_ranges: tuple[str, ...] = ()
    external_traffic_policy: str = "Cluster"
    internal_traffic_policy: str = "Cluster"
    session_affinity: str = "None"
    session_affinity_timeout: int = DEFAULT_AFFINITY_TIMEOUT
    ip_families: tuple[str, ...] = ()
    ip_family_policy: str | None = None
    allocate_load_balancer_node_ports: bool = True
    health_check_node_port: int = 0
    external_name: str = ""
    publish_not_ready_addresses: bool = False
    ingress: tuple[LoadBalancerIngress, ...] = ()
    conditions: tuple[Condition, ...] = ()

    @property
    def headless(self) -> bool:
        return self.cluster_ip == "None"

    @property
    def ingress_ips(self) -> tuple[str, ...]:
        return tuple(i.ip for i in self.ingress if i.ip)

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> Service:
        r, api_version, meta = read_object(cls, obj, path)
        p = r.problems
        r.unknown_fields(SPEC_STATUS_FIELDS, what="a Service")
        spec = r.section("spec")
        spec.unknown_fields(SPEC_FIELDS, what="a Service spec")
        svc_type = spec.string("type", default="ClusterIP", choices=SERVICE_TYPES)

        selector = spec.labels("selector") if spec.has("selector") else None

        ports = tuple(ServicePort.parse_from(pr) for pr in spec.objects("ports", what="a port"))
        cluster_ip = spec.string("clusterIP", what="an IP address, \"None\" or \"\"")
        if svc_type != "ExternalName" and cluster_ip != "None" and not spec.get("ports"):
            spec.error("ports", "required field is missing: expected at least one port "
                                "(only headless and ExternalName Services may have none)")
        _check_ports(spec, ports)

        if cluster_ip and cluster_ip != "None":
            spec.try_parse("clusterIP", parse_ip, cluster_ip)
        cluster_ips = []
        for ip, ip_path in spec.strings("clusterIPs", what="an IP address"):
            if ip != "None":
                p.try_parse(ip_path, parse_ip, ip)
            cluster_ips.append(ip)
        if cluster_ip and cluster_ips and cluster_ips[0] != cluster_ip:
            spec.error("clusterIPs", f"clusterIPs[0] {cluster_ips[0]!r} must equal clusterIP "
                                     f"{cluster_ip!r}")
        external_ips = []
        for ip, ip_path in spec.strings("externalIPs", what="an IP address"):
            p.try_parse(ip_path, parse_ip, ip)
            external_ips.append(ip)
        lb_ip = spec.string("loadBalancerIP", what="an IP address")
        if lb_ip:
            spec.try_parse("loadBalancerIP", parse_ip, lb_ip)
        ranges = []
        for cidr, cidr_path in spec.strings("loadBalancerSourceRanges", what="a CIDR"):
            p.try_parse(cidr_path, parse_cidr, cidr.strip())
            ranges.append(cidr)

        etp = spec.string("externalTrafficPolicy", default="Cluster",
                          choices=(*TRAFFIC_POLICIES, "Global"))
        if etp == "Global":  # pre-1.x spelling Kubernetes still maps to Cluster
            etp = "Cluster"
        if etp == "Local" and svc_type not in ("NodePort", "LoadBalancer"):
            spec.warn("externalTrafficPolicy", "externalTrafficPolicy only applies to NodePort "
                                               "and LoadBalancer Services; it is ignored")
        itp = spec.string("internalTrafficPolicy", default="Cluster", choices=TRAFFIC_POLICIES)
        affinity = spec.string("sessionAffinity", default="None", choices=("None", "ClientIP"))
        timeout = DEFAULT_AFFINITY_TIMEOUT
        sac = spec.mapping("sessionAffinityConfig")
        cip = sac.mapping("clientIP") if sac is not None else None
        if cip is not None:
            timeout = cip.integer("timeoutSeconds", default=DEFAULT_AFFINITY_TIMEOUT,
                                  lo=1, hi=86400, what="a number of seconds")
        families = []
        for fam, fam_path in spec.strings("ipFamilies", what="an IP family"):
            if fam not in IP_FAMILIES:
                p.error(fam_path, f"unsupported IP family {fam!r}: expected IPv4 or IPv6")
            elif fam in families:
                p.error(fam_path, f"duplicate IP family {fam!r}")
            else:
                families.append(fam)
        if len(families) > 2:
            spec.error("ipFamilies", "at most two IP families may be given")
        policy = spec.opt_string("ipFamilyPolicy", choices=IP_FAMILY_POLICIES)
        if policy == "SingleStack" and len(families) > 1:
            spec.error("ipFamilies", "ipFamilyPolicy SingleStack allows one IP family")
        hc = spec.integer("healthCheckNodePort", lo=1, hi=65535, what="a node port number")
        ext_name = spec.string("externalName")
        if svc_type == "ExternalName" and not ext_name:
            spec.error("externalName", "required field is missing: expected a DNS name for "
                                       "an ExternalName Service")

        status = r.mapping("status")
        ingress: tuple[LoadBalancerIngress, ...] = ()
        conditions: tuple[Condition, ...] = ()
        if status is not None:
            if (lb := status.mapping("loadBalancer")) is not None:
                ingress = tuple(LoadBalancerIngress.parse_from(i)
                                for i in lb.objects("ingress", what="an ingress entry"))
            conditions = parse_conditions(status)

        _check_ip_annotations(p, r.at("metadata.annotations"), meta.annotations)
        svc = cls(
            meta=meta,
            type=svc_type,
            selector=selector,
            ports=ports,
            cluster_ip=cluster_ip,
            cluster_ips=tuple(cluster_ips),
            external_ips=tuple(external_ips),
            load_balancer_ip=lb_ip,
            load_balancer_class=spec.opt_string("loadBalancerClass"),
            load_balancer_source_ranges=tuple(ranges),
            external_traffic_policy=etp,
            internal_traffic_policy=itp,
            session_affinity=affinity,
            session_affinity_timeout=timeout,
            ip_families=tuple(families),
            ip_family_policy=policy,
            allocate_load_balancer_node_ports=spec.boolean(
                "allocateLoadBalancerNodePorts", default=True),
            health_check_node_port=hc,
            external_name=ext_name,
            publish_not_ready_addresses=spec.boolean("publishNotReadyAddresses"),
            ingress=ingress,
            conditions=conditions,
            api_version=api_version,
        )
        return dataclasses.replace(svc, warnings=p.check())

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"type": self.type}
        if self.selector is not None:
            spec["selector"] = self.selector.to_dict()
        spec |= omit_empty(ports=[pt.to_dict() for pt in self.ports], clusterIP=self.cluster_ip,
                           clusterIPs=list(self.cluster_ips), externalIPs=list(self.external_ips),
                           loadBalancerIP=self.load_balancer_ip)
        if self.load_balancer_class is not None:
            spec["loadBalancerClass"] = self.load_balancer_class
        if self.load_balancer_source_ranges:
            spec["loadBalancerSourceRanges"] = list(self.load_balancer_source_ranges)
        spec["externalTrafficPolicy"] = self.external_traffic_policy
        spec["internalTrafficPolicy"] = self.internal_traffic_policy
        spec["sessionAffinity"] = self.session_affinity
        if self.session_affinity == "ClientIP":
            spec["sessionAffinityConfig"] = {
                "clientIP": {"timeoutSeconds": self.session_affinity_timeout}}
        if self.ip_families:
            spec["ipFamilies"] = list(self.ip_families)
        if self.ip_family_policy is not None:
            spec["ipFamilyPolicy"] = self.ip_family_policy
        if not self.allocate_load_balancer_node_ports:
            spec["allocateLoadBalancerNodePorts"] = False
        spec |= omit_empty(healthCheckNodePort=self.health_check_node_port,
                           externalName=self.external_name,
                           publishNotReadyAddresses=self.publish_not_ready_addresses)
        status = omit_empty(
            loadBalancer=omit_empty(ingress=[i.to_dict() for i in self.ingress]),
            conditions=[c.to_dict() for c in self.conditions])
        return self.object_dict(spec=spec, **omit_empty(status=status))


def _check_ports(spec: Reader, ports: tuple[ServicePort, ...]) -> None:
    """Kubernetes' rules across ports: names required and unique when several, no repeats."""
    seen_names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    for i, pt in enumerate(ports):
        at = f"{spec.at('ports')}[{i}]"
        if len(ports) > 1 and not pt.name:
            spec.problems.error(join_path(at, "name"), "required when a Service has more than "
                                "one port: expected a port name")
        if pt.name:
            if pt.name in seen_names:
                spec.problems.error(join_path(at, "name"), f"duplicate port name {pt.name!r}")
            seen_names.add(pt.name)
        if pt.port and (pt.port, pt.protocol) in seen_ports:
            spec.problems.error(join_path(at, "port"),
                                f"duplicate port {pt.port}/{pt.protocol}")
        seen_ports.add((pt.port, pt.protocol))


def _check_ip_annotations(p: Problems, path: str, annotations: Mapping[str, str]) -> None:
    for key in IP_ANNOTATIONS:
        value = annotations.get(key)
        if value is None:
            continue
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            try:
                parse_ip(part)
            except ValueError as e:
                p.warn(f"{path}[{key}]", f"{e}; Cilium skips it")
