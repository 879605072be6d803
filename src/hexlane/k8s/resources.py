"""The kinds hexlane reads and writes, as lightkube resources, and their REST paths.

Built-in kinds are lightkube's own classes (`lightkube.resources.core_v1.Service`, ...), the
cilium.io kinds are lightkube generic resources made here once (the versions Cilium v1.16
stores: v2alpha1 for pools and L2 policies, v2 for the rest). Whatever class a caller holds,
`kind_of(res)` gives the plain `Kind` the client layer builds its URLs from, so informers,
status writers and the elector work the same for built-ins and CRDs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from lightkube.core import resource as lk_resource
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.coordination_v1 import Lease
from lightkube.resources.core_v1 import (
    ConfigMap,
    Endpoints,
    Event,
    Namespace,
    Node,
    Pod,
    Service,
)
from lightkube.resources.discovery_v1 import EndpointSlice
from lightkube.resources.networking_v1 import NetworkPolicy

CILIUM_GROUP = "cilium.io"

CiliumLoadBalancerIPPool = create_global_resource(
    CILIUM_GROUP, "v2alpha1", "CiliumLoadBalancerIPPool", "ciliumloadbalancerippools")
CiliumL2AnnouncementPolicy = create_global_resource(
    CILIUM_GROUP, "v2alpha1", "CiliumL2AnnouncementPolicy", "ciliuml2announcementpolicies")
CiliumNetworkPolicy = create_namespaced_resource(
    CILIUM_GROUP, "v2", "CiliumNetworkPolicy", "ciliumnetworkpolicies")
CiliumClusterwideNetworkPolicy = create_global_resource(
    CILIUM_GROUP, "v2", "CiliumClusterwideNetworkPolicy", "ciliumclusterwidenetworkpolicies")
CiliumNode = create_global_resource(CILIUM_GROUP, "v2", "CiliumNode", "ciliumnodes")
CiliumIdentity = create_global_resource(CILIUM_GROUP, "v2", "CiliumIdentity", "ciliumidentities")


@dataclass(frozen=True, slots=True)
class Kind:
    """Where a kind lives in the API: group, version, plural and whether it is namespaced."""

    group: str
    version: str
    kind: str
    plural: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None,
             subresource: str | None = None) -> str:
        """The REST path: a collection (all namespaces without `namespace`), an object, or
        an object's subresource."""
        parts = ["api", self.version] if not self.group else ["apis", self.group, self.version]
        if self.namespaced and namespace:
            parts += ["namespaces", quote(namespace, safe="")]
        parts.append(self.plural)
        if name is not None:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/" + "/".join(parts)


def kind_of(res: Any) -> Kind:
    """The `Kind` of a lightkube resource class (built-in or generic) or of a `Kind`."""
    if isinstance(res, Kind):
        return res
    try:
        info = lk_resource.api_info(res)
    except AttributeError as e:
        raise TypeError(f"not a lightkube resource class or Kind: {res!r}") from e
    if info.parent is not None or info.action:
        raise TypeError(f"{res!r} is a subresource; give the resource itself")
    namespaced = issubclass(res, lk_resource.NamespacedResource)
    return Kind(info.resource.group, info.resource.version, info.resource.kind, info.plural,
                namespaced)


__all__ = [
    "CILIUM_GROUP",
    "CiliumClusterwideNetworkPolicy",
    "CiliumIdentity",
    "CiliumL2AnnouncementPolicy",
    "CiliumLoadBalancerIPPool",
    "CiliumNetworkPolicy",
    "CiliumNode",
    "ConfigMap",
    "Deployment",
    "EndpointSlice",
    "Endpoints",
    "Event",
    "Kind",
    "Lease",
    "Namespace",
    "NetworkPolicy",
    "Node",
    "Pod",
    "Service",
    "kind_of",
]
