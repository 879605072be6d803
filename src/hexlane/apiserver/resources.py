"""What the embedded apiserver serves: one `ResourceInfo` per resource, built in or from a CRD.

The registry is the single answer to "which resources exist" for URL routing, discovery,
OpenAPI and storage. Built-in kinds are a fixed table; CustomResourceDefinitions add entries
when they are committed (and drop them when deleted), so a CRD created at run time is served
at once. Storage is keyed by group and plural (`cilium.io/ciliumloadbalancerippools`), not by
version: every served version of a CRD reads and writes the same objects, like Kubernetes with
conversion strategy None.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

ALL_VERBS = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
STATUS_VERBS = ("get", "patch", "update")


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One served resource at one group/version."""

    group: str  # "" for the core group
    version: str
    plural: str
    singular: str
    kind: str
    namespaced: bool
    short_names: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()
    has_status: bool = False
    # Whether a create drops the status the client sent (Kubernetes does for Services, Pods,
    # Deployments and custom resources with a status subresource; not for Nodes).
    reset_status_on_create: bool = False
    # Field selectors served beyond metadata.name and metadata.namespace.
    field_labels: tuple[str, ...] = ()
    schema: dict[str, Any] | None = field(default=None, compare=False)
    printer_columns: tuple[dict[str, Any], ...] = field(default=(), compare=False)
    storage_version: str = ""  # the version objects are stored under (CRDs); "" = `version`

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def storage_key(self) -> str:
        """The storage name shared by every version: `core/services`, `cilium.io/...`."""
        return f"{self.group or 'core'}/{self.plural}"

    @property
    def is_custom(self) -> bool:
        return self.schema is not None or bool(self.storage_version)

    def discovery(self) -> list[dict[str, Any]]:
        """Entries for an APIResourceList: the resource, then its status subresource."""
        entry: dict[str, Any] = {
            "name": self.plural,
            "singularName": self.singular,
            "namespaced": self.namespaced,
            "kind": self.kind,
            "verbs": list(ALL_VERBS),
        }
        if self.short_names:
            entry["shortNames"] = list(self.short_names)
        if self.categories:
            entry["categories"] = list(self.categories)
        out = [entry]
        if self.has_status:
            out.append({"name": f"{self.plural}/status", "singularName": "",
                        "namespaced": self.namespaced, "kind": self.kind,
                        "verbs": list(STATUS_VERBS)})
        if self.storage_key == "apps/deployments":
            out.append({"name": "deployments/scale", "singularName": "", "namespaced": True,
                        "group": "autoscaling", "version": "v1", "kind": "Scale",
                        "verbs": ["get", "patch", "update"]})
        if self.storage_key == "core/pods":
            out.append({"name": "pods/binding", "singularName": "", "namespaced": True,
                        "kind": "Binding", "verbs": ["create"]})
        return out


def _core(plural: str, singular: str, kind: str, namespaced: bool, short: tuple[str, ...] = (),
          **kw: Any) -> ResourceInfo:
    return ResourceInfo("", "v1", plural, singular, kind, namespaced, short, **kw)


_POD_FIELDS = ("spec.nodeName", "spec.restartPolicy", "spec.schedulerName",
               "spec.serviceAccountName", "status.phase", "status.podIP",
               "status.nominatedNodeName", "spec.hostNetwork")
_EVENT_FIELDS = ("involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                 "involvedObject.uid", "involvedObject.apiVersion",
                 "involvedObject.resourceVersion", "involvedObject.fieldPath", "reason",
                 "reportingComponent", "source", "type")

BUILTIN: tuple[ResourceInfo, ...] = (
    _core("namespaces", "namespace", "Namespace", False, ("ns",), has_status=True,
          field_labels=("status.phase",)),
    _core("nodes", "node", "Node", False, ("no",), has_status=True,
          field_labels=("spec.unschedulable",)),
    _core("pods", "pod", "Pod", True, ("po",), categories=("all",), has_status=True,
          reset_status_on_create=True, field_labels=_POD_FIELDS),
    _core("services", "service", "Service", True, ("svc",), categories=("all",),
          has_status=True, reset_status_on_create=True),
    _core("endpoints", "endpoints", "Endpoints", True, ("ep",)),
    _core("configmaps", "configmap", "ConfigMap", True, ("cm",)),
    _core("secrets", "secret", "Secret", True, field_labels=("type",)),
    _core("serviceaccounts", "serviceaccount", "ServiceAccount", True, ("sa",)),
    _core("events", "event", "Event", True, ("ev",), field_labels=_EVENT_FIELDS),
    ResourceInfo("apps", "v1", "deployments", "deployment", "Deployment", True, ("deploy",),
                 ("all",), has_status=True, reset_status_on_create=True),
    # Stored and served for `kubectl apply` of what `hexlane manifests` renders; nothing
    # here runs their pods.
    ResourceInfo("apps", "v1", "daemonsets", "daemonset", "DaemonSet", True, ("ds",),
                 ("all",), has_status=True, reset_status_on_create=True),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "clusterroles", "clusterrole",
                 "ClusterRole", False),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "clusterrolebindings",
                 "clusterrolebinding", "ClusterRoleBinding", False),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "roles", "role", "Role", True),
    ResourceInfo("rbac.authorization.k8s.io", "v1", "rolebindings", "rolebinding",
                 "RoleBinding", True),
    ResourceInfo("discovery.k8s.io", "v1", "endpointslices", "endpointslice", "EndpointSlice",
                 True, field_labels=("addressType",)),
    ResourceInfo("coordination.k8s.io", "v1", "leases", "lease", "Lease", True),
    ResourceInfo("networking.k8s.io", "v1", "networkpolicies", "networkpolicy",
                 "NetworkPolicy", True, ("netpol",)),
    ResourceInfo("apiextensions.k8s.io", "v1", "customresourcedefinitions",
                 "customresourcedefinition", "CustomResourceDefinition", False,
                 ("crd", "crds"), ("api-extensions",), has_status=True),
)

CRD_KEY = "apiextensions.k8s.io/customresourcedefinitions"
NAMESPACE_KEY = "core/namespaces"
SERVICE_KEY = "core/services"


def infos_from_crd(crd: dict[str, Any]) -> list[ResourceInfo]:
    """The served versions of a CRD object (assumed already validated), one info each."""
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    versions = [v for v in spec.get("versions") or [] if isinstance(v, dict)]
    storage = next((v.get("name", "") for v in versions if v.get("storage")),
                   versions[0].get("name", "") if versions else "")
    out = []
    for v in versions:
        if not v.get("served", True):
            continue
        schema = ((v.get("schema") or {}).get("openAPIV3Schema")) or {}
        has_status = "status" in (v.get("subresources") or {})
        out.append(ResourceInfo(
            group=str(spec.get("group", "")),
            version=str(v.get("name", "")),
            plural=str(names.get("plural", "")),
            singular=str(names.get("singular") or str(names.get("kind", "")).lower()),
            kind=str(names.get("kind", "")),
            namespaced=spec.get("scope", "Namespaced") == "Namespaced",
            short_names=tuple(names.get("shortNames") or ()),
            categories=tuple(names.get("categories") or ()),
            has_status=has_status,
            reset_status_on_create=has_status,
            schema=schema,
            printer_columns=tuple(v.get("additionalPrinterColumns") or ()),
            storage_version=str(storage),
        ))
    return out


_VERSION_RE = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple[int, int, int, str]:
    """Sort key putting versions in Kubernetes' priority order: v2, v1, v1beta1, v1alpha1,
    then anything else alphabetically (the first is the group's preferred version)."""
    m = _VERSION_RE.match(version)
    if not m:
        return (3, 0, 0, version)
    stage = {None: 0, "beta": 1, "alpha": 2}[m.group(2)]
    return (stage, -int(m.group(1)), -int(m.group(3) or 0), version)


class Registry:
    """Served resources by group/version, rebuilt as CRDs come and go."""

    def __init__(self, builtin: Iterable[ResourceInfo] = BUILTIN) -> None:
        self._builtin = tuple(builtin)
        self._crds: dict[str, list[ResourceInfo]] = {}  # CRD name -> its versions
        self._by_gv: dict[str, dict[str, ResourceInfo]] = {}
        self._rebuild()

    def _rebuild(self) -> None:
        by_gv: dict[str, dict[str, ResourceInfo]] = {}
        for info in self._all():
            by_gv.setdefault(info.group_version, {})[info.plural] = info
        self._by_gv = by_gv

    def _all(self) -> Iterator[ResourceInfo]:
        yield from self._builtin
        for infos in self._crds.values():
            yield from infos

    def set_crd(self, name: str, crd: dict[str, Any] | None) -> None:
        """Serve (or, with None, stop serving) the resources of the CRD called `name`."""
        if crd is None:
            self._crds.pop(name, None)
        else:
            self._crds[name] = infos_from_crd(crd)
        self._rebuild()

    def lookup(self, group: str, version: str, plural: str) -> ResourceInfo | None:
        gv = f"{group}/{version}" if group else version
        return self._by_gv.get(gv, {}).get(plural)

    def group_versions(self) -> dict[str, list[str]]:
        """Group name -> served versions, preferred (storage, else first) version first."""
        out: dict[str, list[str]] = {}
        for info in self._all():
            if not info.group:
                continue
            versions = out.setdefault(info.group, [])
            if info.version not in versions:
                versions.append(info.version)
        for versions in out.values():
            versions.sort(key=version_priority)
        return out

    def resources(self, group: str, version: str) -> list[ResourceInfo]:
        gv = f"{group}/{version}" if group else version
        return list(self._by_gv.get(gv, {}).values())

    def all(self) -> list[ResourceInfo]:
        return list(self._all())
