"""`Node`, `Pod` and `Lease`: what the agent, the operator and L2 leader election read.

- Node: labels (L2 node selectors), addresses (InternalIP is where other nodes reach it),
  pod CIDRs (assigned by the operator or Kubernetes), the Ready condition.
- Pod: where it runs, its IPs, phase, container ports (named targetPorts resolve here),
  owner references and deletion (graceful termination).
- Lease (coordination.k8s.io/v1): L2 announcement leader election; times are MicroTime.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hexlane.model.errors import Problem
from hexlane.model.meta import (
    Condition,
    ObjectMeta,
    ObjectView,
    find_condition,
    parse_conditions,
    read_object,
)
from hexlane.model.netaddr import parse_cidr, parse_ip
from hexlane.model.reader import format_micro_time
from hexlane.model.service import PROTOCOLS, port_name_problem

NODE_ADDRESS_TYPES = ("InternalIP", "ExternalIP", "Hostname", "InternalDNS", "ExternalDNS")
POD_PHASES = ("Pending", "Running", "Succeeded", "Failed", "Unknown")


@dataclass(frozen=True, slots=True)
class NodeAddress:
    type: str
    address: str


@dataclass(frozen=True, slots=True)
class Node(ObjectView):
    KIND = "Node"
    API_VERSIONS = ("v1",)
    NAMESPACED = False

    meta: ObjectMeta
    pod_cidr: str = ""
    pod_cidrs: tuple[str, ...] = ()
    addresses: tuple[NodeAddress, ...] = ()
    unschedulable: bool = False
    conditions: tuple[Condition, ...] = ()
    api_version: str = "v1"
    warnings: tuple[Problem, ...] = field(default=(), compare=False, repr=False)

    @property
    def ready(self) -> bool | None:
        """Ready condition: True/False, None when not reported (Unknown or missing)."""
        c = find_condition(self.conditions, "Ready")
        if c is None or c.status == "Unknown":
            return None
        return c.status == "True"

    @property
    def internal_ips(self) -> tuple[str, ...]:
        return tuple(a.address for a in self.addresses if a.type == "InternalIP")

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> Node:
        r, api_version, meta = read_object(cls, obj, path)
        spec = r.section("spec")
        pod_cidr = spec.string("podCIDR", what="a CIDR")
        if pod_cidr:
            spec.try_parse("podCIDR", parse_cidr, pod_cidr)
        pod_cidrs = []
        for c, cpath in spec.strings("podCIDRs", what="a CIDR"):
            spec.problems.try_parse(cpath, parse_cidr, c)
            pod_cidrs.append(c)
        if pod_cidr and pod_cidrs and pod_cidrs[0] != pod_cidr:
            spec.error("podCIDRs", f"podCIDRs[0] {pod_cidrs[0]!r} must equal podCIDR "
                                   f"{pod_cidr!r}")
        status = r.section("status")
        addresses = []
        for a in status.objects("addresses", what="a node address"):
            t = a.string("type", required=True, choices=NODE_ADDRESS_TYPES)
            addr = a.string("address", required=True)
            if addr and t in ("InternalIP", "ExternalIP"):
                a.try_parse("address", parse_ip, addr)
            addresses.append(NodeAddress(t, addr))
        node = cls(meta=meta, pod_cidr=pod_cidr, pod_cidrs=tuple(pod_cidrs),
                   addresses=tuple(addresses), unschedulable=spec.boolean("unschedulable"),
                   conditions=parse_conditions(status), api_version=api_version)
        return dataclasses.replace(node, warnings=r.problems.check())

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.pod_cidr:
            spec["podCIDR"] = self.pod_cidr
        if self.pod_cidrs:
            spec["podCIDRs"] = list(self.pod_cidrs)
        if self.unschedulable:
            spec["unschedulable"] = True
        status: dict[str, Any] = {}
        if self.addresses:
            status["addresses"] = [{"type": a.type, "address": a.address}
                                   for a in self.addresses]
        if self.conditions:
            status["conditions"] = [c.to_dict() for c in self.conditions]
        return self.object_dict(spec=spec, status=status)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str = ""
    host_port: int = 0


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str = ""
    ports: tuple[ContainerPort, ...] = ()


@dataclass(frozen=True, slots=True)
class Pod(ObjectView):
    KIND = "Pod"
    API_VERSIONS = ("v1",)
    NAMESPACED = True

    meta: ObjectMeta
    node_name: str = ""
    containers: tuple[Container, ...] = ()
    host_network: bool = False
    phase: str = ""
    pod_ip: str = ""
    pod_ips: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()
    api_version: str = "v1"
    warnings: tuple[Problem, ...] = field(default=(), compare=False, repr=False)

    @property
    def terminating(self) -> bool:
        return self.meta.deletion_timestamp is not None

    @property
    def ready(self) -> bool:
        c = find_condition(self.conditions, "Ready")
        return c is not None and c.status == "True"

    @property
    def ports(self) -> tuple[ContainerPort, ...]:
        return tuple(pt for c in self.containers for pt in c.ports)

    def resolve_port(self, target: int | str, protocol: str = "TCP") -> int | None:
        """A Service targetPort on this pod: a number as is, a name via containerPort."""
        if isinstance(target, int):
            return target
        for pt in self.ports:
            if pt.name == target and pt.protocol == protocol:
                return pt.container_port
        return None

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> Pod:
        r, api_version, meta = read_object(cls, obj, path)
        spec = r.section("spec", required=True, what="an object with containers")
        containers = []
        for cr in spec.objects("containers", required=r.has("spec"), nonempty=True,
                               what="a container"):
            ports = []
            for pr in cr.objects("ports", what="a container port"):
                name = pr.string("name")
                if name and (why := port_name_problem(name)) is not None:
                    pr.error("name", why)
                ports.append(ContainerPort(
                    container_port=pr.integer("containerPort", required=True, lo=1,
                                              hi=65535, what="a port number"),
                    protocol=pr.string("protocol", default="TCP", choices=PROTOCOLS),
                    name=name,
                    host_port=pr.integer("hostPort", lo=1, hi=65535, what="a port number")))
            containers.append(Container(name=cr.string("name", required=True),
                                        image=cr.string("image"), ports=tuple(ports)))
        status = r.section("status")
        pod_ip = status.string("podIP")
        if pod_ip:
            status.try_parse("podIP", parse_ip, pod_ip)
        pod_ips = []
        for ipr in status.objects("podIPs", what="an object with ip"):
            ip = ipr.string("ip", required=True)
            ipr.try_parse("ip", parse_ip, ip)
            pod_ips.append(ip)
        pod = cls(meta=meta, node_name=spec.string("nodeName"), containers=tuple(containers),
                  host_network=spec.boolean("hostNetwork"),
                  phase=status.string("phase", choices=POD_PHASES), pod_ip=pod_ip,
                  pod_ips=tuple(pod_ips), conditions=parse_conditions(status),
                  api_version=api_version)
        return dataclasses.replace(pod, warnings=r.problems.check())

    def to_dict(self) -> dict[str, Any]:
        containers = []
        for c in self.containers:
            cd: dict[str, Any] = {"name": c.name}
            if c.image:
                cd["image"] = c.image
            if c.ports:
                cd["ports"] = [
                    {"containerPort": pt.container_port, "protocol": pt.protocol}
                    | ({"name": pt.name} if pt.name else {})
                    | ({"hostPort": pt.host_port} if pt.host_port else {})
                    for pt in c.ports]
            containers.append(cd)
        spec: dict[str, Any] = {"containers": containers}
        if self.node_name:
            spec["nodeName"] = self.node_name
        if self.host_network:
            spec["hostNetwork"] = True
        status: dict[str, Any] = {}
        if self.phase:
            status["phase"] = self.phase
        if self.pod_ip:
            status["podIP"] = self.pod_ip
        if self.pod_ips:
            status["podIPs"] = [{"ip": ip} for ip in self.pod_ips]
        if self.conditions:
            status["conditions"] = [c.to_dict() for c in self.conditions]
        return self.object_dict(spec=spec, status=status)


@dataclass(frozen=True, slots=True)
class Lease(ObjectView):
    KIND = "Lease"
    API_VERSIONS = ("coordination.k8s.io/v1",)
    NAMESPACED = True

    meta: ObjectMeta
    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    lease_transitions: int | None = None
    api_version: str = "coordination.k8s.io/v1"
    warnings: tuple[Problem, ...] = field(default=(), compare=False, repr=False)

    def expired(self, now: datetime) -> bool:
        """True if nobody holds it or its holder has not renewed within the duration."""
        if not self.holder_identity or self.renew_time is None:
            return True
        duration = self.lease_duration_seconds or 0
        return (now - self.renew_time).total_seconds() > duration

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> Lease:
        r, api_version, meta = read_object(cls, obj, path)
        spec = r.section("spec")
        lease = cls(
            meta=meta,
            holder_identity=spec.opt_string("holderIdentity"),
            lease_duration_seconds=spec.opt_integer("leaseDurationSeconds", lo=1,
                                                    what="a number of seconds"),
            acquire_time=spec.opt_time("acquireTime"),
            renew_time=spec.opt_time("renewTime"),
            lease_transitions=spec.opt_integer("leaseTransitions", lo=0),
            api_version=api_version,
        )
        return dataclasses.replace(lease, warnings=r.problems.check())

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {}
        if self.holder_identity is not None:
            spec["holderIdentity"] = self.holder_identity
        if self.lease_duration_seconds is not None:
            spec["leaseDurationSeconds"] = self.lease_duration_seconds
        if self.acquire_time is not None:
            spec["acquireTime"] = format_micro_time(self.acquire_time)
        if self.renew_time is not None:
            spec["renewTime"] = format_micro_time(self.renew_time)
        if self.lease_transitions is not None:
            spec["leaseTransitions"] = self.lease_transitions
        return self.object_dict(spec=spec)
