"""`parse_object`: any decoded object to its typed view, chosen by kind and apiVersion.

A kind hexlane reads with an apiVersion it does not know (a `cilium.io/v1` pool) is an error;
a kind hexlane does not read at all (a Deployment, an HTTPRoute) gives an `Unread` result, which
callers report as a warning, not an error.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.model.cilium import L2AnnouncementPolicy, LBIPPool
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.errors import InputError, Problem, shown
from hexlane.model.netpol import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    NetworkPolicy,
)
from hexlane.model.node import Lease, Node, Pod
from hexlane.model.reader import describe
from hexlane.model.service import Service

TypedObject = (Service | EndpointSlice | Node | Pod | Lease | LBIPPool | L2AnnouncementPolicy
               | NetworkPolicy | CiliumNetworkPolicy)

KINDS: dict[str, Any] = {cls.KIND: cls for cls in (
    Service, EndpointSlice, Node, Pod, Lease, LBIPPool, L2AnnouncementPolicy, NetworkPolicy,
    CiliumNetworkPolicy, CiliumClusterwideNetworkPolicy)}

# (apiVersion, kind) -> parser class: what hexlane reads, every version of it.
REGISTRY: dict[tuple[str, str], Any] = {
    (version, kind): cls for kind, cls in KINDS.items() for version in cls.API_VERSIONS}


def lookup(api_version: str, kind: str) -> Any | None:
    """The parser class for (apiVersion, kind), or None if hexlane does not read it."""
    return REGISTRY.get((api_version, kind))


@dataclass(frozen=True, slots=True)
class Unread:
    """An object of a kind hexlane does not read; kept so callers can say so."""

    api_version: str
    kind: str
    name: str = ""
    namespace: str = ""

    @property
    def warning(self) -> Problem:
        return Problem(f"{self.kind} ({self.api_version}) is not read by hexlane; it is "
                       "skipped", obj=object_ref(self.kind, self.name), severity="warning")


def object_ref(kind: str, name: str) -> str:
    """How an object is named in problems: `Kind/name`."""
    return f"{shown(kind) or 'object'}/{shown(name) or '<unnamed>'}"


def describe_object(obj: Any) -> str:
    """`Kind/name` of a raw object, as far as it can be told."""
    if not isinstance(obj, Mapping):
        return "object"
    kind = obj.get("kind") if isinstance(obj.get("kind"), str) else ""
    meta = obj.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return object_ref(kind or "", name if isinstance(name, str) else "")


def parse_object(obj: Any, path: str = "") -> TypedObject | Unread:
    """The typed view of `obj`; InputError (problems carrying `Kind/name`) if it is bad."""
    ref = describe_object(obj)
    if not isinstance(obj, Mapping):
        raise InputError(Problem(f"expected a Kubernetes object, got {describe(obj)}", path))
    problems = []
    api_version = obj.get("apiVersion")
    kind = obj.get("kind")
    if not isinstance(api_version, str) or not api_version:
        problems.append(Problem("required field is missing: expected an apiVersion such as "
                                "v1 or cilium.io/v2alpha1" if api_version is None else
                                f"expected an apiVersion string, got {describe(api_version)}",
                                _join(path, "apiVersion"), ref))
    if not isinstance(kind, str) or not kind:
        problems.append(Problem("required field is missing: expected a kind such as Service"
                                if kind is None else
                                f"expected a kind string, got {describe(kind)}",
                                _join(path, "kind"), ref))
    if problems:
        raise InputError(problems)
    assert isinstance(api_version, str) and isinstance(kind, str)
    cls = KINDS.get(kind)
    if cls is None:
        meta = obj.get("metadata")
        name = meta.get("name") if isinstance(meta, Mapping) else ""
        namespace = meta.get("namespace") if isinstance(meta, Mapping) else ""
        return Unread(api_version, kind, name if isinstance(name, str) else "",
                      namespace if isinstance(namespace, str) else "")
    if api_version not in cls.API_VERSIONS:
        raise InputError(Problem(
            f"unknown apiVersion {api_version!r} for {kind}: expected "
            f"{' or '.join(cls.API_VERSIONS)}", _join(path, "apiVersion"), ref))
    try:
        parsed: TypedObject = cls.parse(obj, path)
    except InputError as e:
        raise e.located(obj=ref) from None
    if parsed.warnings:
        parsed = dataclasses.replace(parsed, warnings=tuple(
            w.located(obj=ref) for w in parsed.warnings))
    return parsed


def _join(prefix: str, key: str) -> str:
    return f"{prefix}.{key}" if prefix else key
