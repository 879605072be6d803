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
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from hexlane.model.meta import (
    Condition,
    ObjectView,
    find_condition,
    omit_empty,
    omit_none,
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

    pod_cidr: str = ""
    pod_cidrs: tuple[str, ...] = ()
    addresses: tuple[NodeAddress, ...] = ()
    unschedulable: bool = False
    conditions: tuple[Condition, ...] = ()

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
        spec = omit_empty(podCIDR=self.pod_cidr, podCIDRs=list(self.pod_cidrs),
                          unschedulable=self.unschedulable)
        status = omit_empty(
            addresses=[{"type": a.type, "address": a.address} for a in self.addresses],
            conditions=[c.to_dict() for c in self.conditions])
        return self.object_dict(spec=spec, status=status)


@dataclass(frozen=True, slots=True)
class ContainerPort:
    container_port: int
    protocol: str = "TCP"
    name: str = ""
    host_port: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"containerPort": self.container_port, "protocol": self.protocol,
                **omit_empty(name=self.name, hostPort=self.host_port)}


@dataclass(frozen=True, slots=True)
class Container:
    name: str
    image: str = ""
    ports: tuple[ContainerPort, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name,
                **omit_empty(image=self.image, ports=[pt.to_dict() for pt in self.ports])}


@dataclass(frozen=True, slots=True)
class Pod(ObjectView):
    KIND = "Pod"
    API_VERSIONS = ("v1",)
    NAMESPACED = True

    node_name: str = ""
    service_account: str = ""  # spec.serviceAccountName (part of its security identity)
    containers: tuple[Container, ...] = ()
    host_network: bool = False
    phase: str = ""
    pod_ip: str = ""
    pod_ips: tuple[str, ...] = ()
    conditions: tuple[Condition, ...] = ()

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
        pod = cls(meta=meta, node_name=spec.string("nodeName"),
                  service_account=spec.string("serviceAccountName"), containers=tuple(containers),
                  host_network=spec.boolean("hostNetwork"),
                  phase=status.string("phase", choices=POD_PHASES), pod_ip=pod_ip,
                  pod_ips=tuple(pod_ips), conditions=parse_conditions(status),
                  api_version=api_version)
        return dataclasses.replace(pod, warnings=r.problems.check())

    def to_dict(self) -> dict[str, Any]:
        spec = {"containers": [c.to_dict() for c in self.containers],
                **omit_empty(nodeName=self.node_name, serviceAccountName=self.service_account,
                             hostNetwork=self.host_network)}
        status = omit_empty(phase=self.phase, podIP=self.pod_ip,
                            podIPs=[{"ip": ip} for ip in self.pod_ips],
                            conditions=[c.to_dict() for c in self.conditions])
        return self.object_dict(spec=spec, status=status)


@dataclass(frozen=True, slots=True)
class Lease(ObjectView):
    KIND = "Lease"
    API_VERSIONS = ("coordination.k8s.io/v1",)
    NAMESPACED = True

    holder_identity: str | None = None
    lease_duration_seconds: int | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    lease_transitions: int | None = None

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
        return self.object_dict(spec=omit_none(
            holderIdentity=self.holder_identity,
            leaseDurationSeconds=self.lease_duration_seconds,
            acquireTime=_opt_micro_time(self.acquire_time),
            renewTime=_opt_micro_time(self.renew_time),
            leaseTransitions=self.lease_transitions))


def _opt_micro_time(dt: datetime | None) -> str | None:
    return None if dt is None else format_micro_time(dt)
