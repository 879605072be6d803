"""`EndpointSlice` (discovery.k8s.io/v1): the backends of a Service.

Conditions keep Kubernetes' nil semantics: `ready` nil means ready, `serving` nil defers to
ready, `terminating` nil means not terminating. The raw tri-state values are kept (`None`) and
the effective ones are the `is_*` properties.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.model.meta import ObjectView, omit_empty, omit_none, read_object
from hexlane.model.netaddr import parse_ip
from hexlane.model.reader import Reader
from hexlane.model.service import PROTOCOLS

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


@dataclass(frozen=True, slots=True)
class EndpointConditions:
    ready: bool | None = None
    serving: bool | None = None
    terminating: bool | None = None

    @property
    def is_ready(self) -> bool:
        return self.ready is not False

    @property
    def is_serving(self) -> bool:
        return self.is_ready if self.serving is None else self.serving

    @property
    def is_terminating(self) -> bool:
        return self.terminating is True

    def to_dict(self) -> dict[str, Any]:
        return omit_none(ready=self.ready, serving=self.serving, terminating=self.terminating)


@dataclass(frozen=True, slots=True)
class ObjectReference:
    kind: str = ""
    name: str = ""
    namespace: str = ""
    uid: str = ""

    @classmethod
    def parse_from(cls, r: Reader) -> ObjectReference:
        return cls(kind=r.string("kind"), name=r.string("name"),
                   namespace=r.string("namespace"), uid=r.string("uid"))

    def to_dict(self) -> dict[str, Any]:
        return omit_empty(kind=self.kind, name=self.name, namespace=self.namespace, uid=self.uid)


@dataclass(frozen=True, slots=True)
class Endpoint:
    addresses: tuple[str, ...]
    conditions: EndpointConditions = EndpointConditions()
    node_name: str = ""
    hostname: str = ""
    zone: str = ""
    target_ref: ObjectReference | None = None

    @classmethod
    def parse_from(cls, r: Reader, address_type: str) -> Endpoint:
        addrs = []
        for a, apath in r.strings("addresses", required=True, nonempty=True,
                                  what="an address"):
            if address_type in ("IPv4", "IPv6"):
                ip = r.problems.try_parse(apath, parse_ip, a)
                if ip is not None and f"IPv{ip.version}" != address_type:
                    r.problems.error(apath, f"{a} is not an {address_type} address "
                                            f"(addressType is {address_type})")
            addrs.append(a)
        if len(addrs) > 100:
            r.error("addresses", "at most 100 addresses per endpoint")
        cond = r.mapping("conditions")
        conditions = EndpointConditions() if cond is None else EndpointConditions(
            ready=cond.opt_boolean("ready"), serving=cond.opt_boolean("serving"),
            terminating=cond.opt_boolean("terminating"))
        tr = r.mapping("targetRef")
        return cls(addresses=tuple(addrs), conditions=conditions,
                   node_name=r.string("nodeName"), hostname=r.string("hostname"),
                   zone=r.string("zone"),
                   target_ref=None if tr is None else ObjectReference.parse_from(tr))

    def to_dict(self) -> dict[str, Any]:
        target_ref = None if self.target_ref is None else self.target_ref.to_dict()
        return {"addresses": list(self.addresses), "conditions": self.conditions.to_dict(),
                **omit_empty(nodeName=self.node_name, hostname=self.hostname, zone=self.zone),
                **omit_none(targetRef=target_ref)}


@dataclass(frozen=True, slots=True)
class EndpointPort:
    """`port` None means "all ports" (Kubernetes allows it); name "" is the unnamed port."""

    port: int | None = None
    protocol: str = "TCP"
    name: str = ""
    app_protocol: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "protocol": self.protocol, **omit_none(port=self.port),
                **omit_empty(appProtocol=self.app_protocol)}


@dataclass(frozen=True, slots=True)
class EndpointSlice(ObjectView):
    KIND = "EndpointSlice"
    API_VERSIONS = ("discovery.k8s.io/v1",)
    NAMESPACED = True

    address_type: str = "IPv4"
    endpoints: tuple[Endpoint, ...] = ()
    ports: tuple[EndpointPort, ...] = ()

    @property
    def service_name(self) -> str:
        """The owning Service (label kubernetes.io/service-name), "" when unlabelled."""
        return self.meta.labels.get(SERVICE_NAME_LABEL, "")

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> EndpointSlice:
        r, api_version, meta = read_object(cls, obj, path)
        address_type = r.string("addressType", required=True, default="IPv4",
                                choices=ADDRESS_TYPES)
        endpoints = tuple(Endpoint.parse_from(e, address_type)
                          for e in r.objects("endpoints", what="an endpoint"))
        ports = []
        for pr in r.objects("ports", what="a port"):
            ports.append(EndpointPort(
                port=pr.opt_integer("port", lo=1, hi=65535, what="a port number"),
                protocol=pr.string("protocol", default="TCP", choices=PROTOCOLS),
                name=pr.string("name"),
                app_protocol=pr.string("appProtocol")))
        if SERVICE_NAME_LABEL not in meta.labels:
            r.warn("metadata.labels", f"no {SERVICE_NAME_LABEL} label: this slice belongs to "
                                      "no Service and is not used for load balancing")
        warnings = r.problems.check()
        return cls(meta=meta, address_type=address_type, endpoints=endpoints,
                   ports=tuple(ports), api_version=api_version, warnings=warnings)

    def to_dict(self) -> dict[str, Any]:
        return self.object_dict(addressType=self.address_type,
                                endpoints=[e.to_dict() for e in self.endpoints],
                                ports=[pt.to_dict() for pt in self.ports])
