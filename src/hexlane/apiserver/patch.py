"""PATCH bodies applied to stored objects: JSON merge, JSON patch and strategic merge.

`apply_patch(current, patch, content_type, kind=...)` returns the patched object (a new
dict; `current` is never modified) or raises `PatchError` (the server answers 422, or 400 for
a malformed body) or `UnsupportedPatchType` (415, as Kubernetes answers a strategic merge
patch on a custom resource or a server-side apply request).

Strategic merge follows Kubernetes' `apimachinery/pkg/util/strategicpatch` for the kinds
hexlane serves: lists are merged by the `patchMergeKey` of the Go struct tags in
`k8s.io/api` (containers by `name`, container ports by `containerPort`, Service ports by
`port`, conditions by `type`, ownerReferences by `uid`, ...), lists without a strategy
(tolerations, EndpointSlice endpoints, NetworkPolicy rules, ...) are replaced, maps are
merged and `null` deletes a key. The directives `kubectl apply` and `kubectl patch` send are
honoured: `$patch: replace|delete|merge` in maps and list elements, `$retainKeys`,
`$deleteFromPrimitiveList/<field>` and `$setElementOrder/<field>`.

One deliberate difference: Service ports are merged by `port` as in Kubernetes, but when the
object holds the same port number twice (53/TCP and 53/UDP) an element is matched on
(`port`, `protocol`) so the two are not folded into one, which is a long-standing Kubernetes
bug (kubernetes/kubernetes#39188).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jsonpatch
import jsonpointer

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"
PATCH_TYPES = (JSON_PATCH, MERGE_PATCH, STRATEGIC_MERGE_PATCH)

_DIRECTIVE = "$patch"
_RETAIN_KEYS = "$retainKeys"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"


class PatchError(ValueError):
    """The patch cannot be applied to this object (bad body, failed test, bad directive)."""


class UnsupportedPatchType(PatchError):
    """The patch content type is not accepted for this kind (HTTP 415)."""


# --- where lists merge instead of being replaced -------------------------------------------------


@dataclass(frozen=True)
class Struct:
    """The fields of an object whose lists do not simply replace (all others do)."""

    fields: Mapping[str, Field] = field(default_factory=dict)


@dataclass(frozen=True)
class Field:
    """How one field merges: `merge_key` for lists of objects merged by a key,
    `primitive_set` for lists of scalars merged as a set, `elem` for nested structure."""

    merge_key: str | None = None
    primitive_set: bool = False
    elem: Struct | None = None


def _s(**fields: Field) -> Struct:
    return Struct(fields=fields)


def _obj(elem: Struct) -> Field:
    return Field(elem=elem)


def _by(key: str, elem: Struct | None = None) -> Field:
    return Field(merge_key=key, elem=elem)


_SET = Field(primitive_set=True)
_CONDITIONS = _by("type")

_OBJECT_META = _s(finalizers=_SET, ownerReferences=_by("uid"))
_CONTAINER = _s(
    ports=_by("containerPort"),
    env=_by("name"),
    volumeMounts=_by("mountPath"),
    volumeDevices=_by("devicePath"),
)
_POD_SPEC = _s(
    volumes=_by("name"),
    initContainers=_by("name", _CONTAINER),
    containers=_by("name", _CONTAINER),
    ephemeralContainers=_by("name", _CONTAINER),
    imagePullSecrets=_by("name"),
    hostAliases=_by("ip"),
    topologySpreadConstraints=_by("topologyKey"),
    schedulingGates=_by("name"),
    resourceClaims=_by("name"),
)
_POD_STATUS = _s(conditions=_CONDITIONS, podIPs=_by("ip"), hostIPs=_by("ip"))
_POD_TEMPLATE = _s(metadata=_obj(_OBJECT_META), spec=_obj(_POD_SPEC))
_META_ONLY = _s(metadata=_obj(_OBJECT_META))
_WITH_STATUS_CONDITIONS = _s(
    metadata=_obj(_OBJECT_META), status=_obj(_s(conditions=_CONDITIONS)),
)
_WORKLOAD = _s(
    metadata=_obj(_OBJECT_META),
    spec=_obj(_s(template=_obj(_POD_TEMPLATE),
)),
    status=_obj(_s(conditions=_CONDITIONS)),
)

# Kinds Kubernetes serves from Go structs, so strategic merge applies; anything else is a
# custom resource and gets 415 as from a real apiserver.
_KIND_STRUCTURE: dict[str, Struct] = {
    "Pod": _s(metadata=_obj(_OBJECT_META), spec=_obj(_POD_SPEC), status=_obj(_POD_STATUS)),
    "PodTemplate": _s(metadata=_obj(_OBJECT_META), template=_obj(_POD_TEMPLATE)),
    "Service": _s(
        metadata=_obj(_OBJECT_META),
        spec=_obj(_s(ports=_by("port"))),
        status=_obj(_s(conditions=_CONDITIONS)),
    ),
    "Node": _s(
        metadata=_obj(_OBJECT_META),
        spec=_obj(_s(podCIDRs=_SET)),
        status=_obj(_s(conditions=_CONDITIONS, addresses=_by("type"))),
    ),
    "Namespace": _WITH_STATUS_CONDITIONS,
    "Deployment": _WORKLOAD,
    "ReplicaSet": _WORKLOAD,
    "DaemonSet": _WORKLOAD,
    "StatefulSet": _WORKLOAD,
    "Job": _s(metadata=_obj(_OBJECT_META),
              spec=_obj(_s(template=_obj(_POD_TEMPLATE))),
              status=_obj(_s(conditions=_CONDITIONS))),
    "ReplicationController": _s(
        metadata=_obj(_OBJECT_META), spec=_obj(_s(template=_obj(_POD_TEMPLATE))),
        status=_obj(_s(conditions=_CONDITIONS)),
    ),
    "PersistentVolumeClaim": _WITH_STATUS_CONDITIONS,
    "ServiceAccount": _s(metadata=_obj(_OBJECT_META), secrets=_by("name"),
                         imagePullSecrets=_by("name")),
    "CustomResourceDefinition": _WITH_STATUS_CONDITIONS,
    "APIService": _WITH_STATUS_CONDITIONS,
    "NetworkPolicy": _META_ONLY,
    "EndpointSlice": _META_ONLY,  # endpoints and ports are atomic lists
    "Endpoints": _META_ONLY,  # subsets have no patch strategy
    "ConfigMap": _META_ONLY,
    "Secret": _META_ONLY,
    "Event": _META_ONLY,
    "Lease": _META_ONLY,
    "LimitRange": _META_ONLY,
    "ResourceQuota": _META_ONLY,
    "PriorityClass": _META_ONLY,
    "IngressClass": _META_ONLY,
    "Ingress": _META_ONLY,
    "PodDisruptionBudget": _WITH_STATUS_CONDITIONS,
    "Role": _META_ONLY,
    "ClusterRole": _META_ONLY,
    "RoleBinding": _META_ONLY,
    "ClusterRoleBinding": _META_ONLY,
}

STRATEGIC_KINDS = frozenset(_KIND_STRUCTURE)


def supports_strategic_merge(kind: str) -> bool:
    """Whether Kubernetes accepts a strategic merge patch for objects of this kind."""
    return kind in _KIND_STRUCTURE


# --- the entry point -----------------------------------------------------------------------------


def media_type(content_type: str) -> str:
    """`application/merge-patch+json; charset=utf-8` -> `application/merge-patch+json`."""
    return content_type.split(";", 1)[0].strip().lower()


def apply_patch(current: dict, patch: Any, content_type: str, *, kind: str) -> dict:
    """Apply `patch` (already decoded from JSON) to `current` according to `content_type`."""
    mt = media_type(content_type)
    if mt == JSON_PATCH:
        return _json_patch(current, patch)
    if mt == MERGE_PATCH:
        if not isinstance(patch, dict):
            raise PatchError("a merge patch must be a JSON object")
        result = merge_patch(current, patch)
        if not isinstance(result, dict):  # pragma: no cover - a dict patch keeps a dict
            raise PatchError("the patched document is not an object")
        return result
    if mt == STRATEGIC_MERGE_PATCH:
        structure = _KIND_STRUCTURE.get(kind)
        if structure is None:
            # Kubernetes' wording for a custom resource (kubectl prefixes the media type).
            raise UnsupportedPatchType(
                f"the body of the request was in an unknown format - accepted media types "
                f"include: {JSON_PATCH}, {MERGE_PATCH}, {APPLY_PATCH}"
            )
        if not isinstance(patch, dict):
            raise PatchError("a strategic merge patch must be a JSON object")
        return strategic_merge(current, patch, structure)
    raise UnsupportedPatchType(
        f"the body of the request was in an unknown format - accepted media types include: "
        f"{', '.join(PATCH_TYPES)}"
    )


# --- RFC 7386 JSON merge patch -------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else replaces.

    Neither argument is changed; the result shares with `target` the values the patch does
    not reach (only the maps on the patch's paths are copied, one level each, not the
    whole object at every level)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 JSON patch -------------------------------------------------------------------------


def _json_patch(current: dict, patch: Any) -> dict:
    if not isinstance(patch, list):
        raise PatchError("a JSON patch must be a JSON array of operations")
    try:
        result = jsonpatch.JsonPatch(patch).apply(current, in_place=False)
    except jsonpatch.JsonPatchTestFailed as exc:
        raise PatchError(f"the server rejected our request due to an error in our request: "
                         f"testing value failed: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException,
            KeyError, IndexError, TypeError) as exc:
        raise PatchError(f"the JSON patch cannot be applied: {exc}") from exc
    if not isinstance(result, dict):
        raise PatchError("the JSON patch replaced the whole object with a non-object")
    return result


# --- strategic merge patch -----------------------------------------------------------------------


def strategic_merge(current: dict, patch: dict, structure: Struct) -> dict:
    """Strategic merge of `patch` into `current` for objects shaped like `structure`."""
    result = _merge_map(copy.deepcopy(current), patch, structure, path="")
    if result is None:
        raise PatchError("the patch deletes the whole object ($patch: delete at the root)")
    return result


def _merge_map(original: dict, patch: dict, structure: Struct | None, *, path: str) -> dict | None:
    """Merge `patch` into `original` (which this function owns and may modify)."""
    directive = patch.get(_DIRECTIVE)
    if directive is not None:
        if directive == "delete":
            return None
        if directive == "replace":
            return _strip_directives(patch)
        if directive != "merge":
            raise PatchError(f"{_at(path)}unknown patch directive {directive!r} in a map "
                             "(expected replace, delete or merge)")
    fields = structure.fields if structure else {}

    retained = patch.get(_RETAIN_KEYS)
    # Kubernetes accepts $retainKeys only on fields tagged retainKeys; kubectl sends it
    # nowhere else, so it is honoured wherever it appears.
    if retained is not None:
        if not isinstance(retained, list) or not all(isinstance(k, str) for k in retained):
            raise PatchError(f"{_at(path)}$retainKeys must be a list of field names")
        for key in list(original):
            if key not in retained:
                del original[key]

    orders: dict[str, list[Any]] = {}
    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS):
            continue
        if key.startswith(_SET_ORDER):
            if not isinstance(value, list):
                raise PatchError(f"{_at(path)}{key} must be a list")
            orders[key[len(_SET_ORDER):]] = value
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            name = key[len(_DELETE_PRIMITIVE):]
            if not isinstance(value, list):
                raise PatchError(f"{_at(path)}{key} must be a list")
            current = original.get(name)
            if isinstance(current, list):
                original[name] = [v for v in current if v not in value]
            continue

    for key, value in patch.items():
        if key in (_DIRECTIVE, _RETAIN_KEYS) or key.startswith((_SET_ORDER, _DELETE_PRIMITIVE)):
            continue
        sub = _join(path, key)
        if value is None:
            original.pop(key, None)
            continue
        spec = fields.get(key)
        current = original.get(key)
        if isinstance(value, dict):
            if isinstance(current, dict):
                merged = _merge_map(current, value, spec.elem if spec else None, path=sub)
            else:
                merged = _merge_map({}, value, spec.elem if spec else None, path=sub)
            if merged is None:
                original.pop(key, None)
            else:
                original[key] = merged
        elif isinstance(value, list) and spec and (spec.merge_key or spec.primitive_set):
            original[key] = _merge_list(current if isinstance(current, list) else [], value,
                                        spec, path=sub)
        elif isinstance(value, list) and key in original:
            original[key] = copy.deepcopy(value)  # an atomic list is replaced as sent
        else:
            # A new value: Kubernetes discards the nulls in it (IgnoreUnmatchedNulls).
            original[key] = _strip_directives(value)

    for name, order in orders.items():
        spec = fields.get(name)
        if isinstance(original.get(name), list) and spec and (spec.merge_key
                                                              or spec.primitive_set):
            original[name] = _apply_order(original[name], order, spec)
    return original


def _merge_list(original: list[Any], patch: list[Any], spec: Field, *, path: str) -> list[Any]:
    if spec.primitive_set:
        if any(isinstance(v, dict) and v.get(_DIRECTIVE) == "replace" for v in patch):
            return [v for v in patch if not isinstance(v, dict)]
        merged = list(original)
        for v in patch:
            if isinstance(v, (dict, list)):
                raise PatchError(f"{path}: expected a list of scalars, got {type(v).__name__}")
            if v not in merged:
                merged.append(v)
        return merged

    key = spec.merge_key
    assert key is not None
    # A `{$patch: replace}` element replaces the whole list with the remaining elements.
    if any(isinstance(v, dict) and v.get(_DIRECTIVE) == "replace" for v in patch):
        return [_strip_directives(v) for v in patch
                if not (isinstance(v, dict) and v.get(_DIRECTIVE) == "replace")]
    result = list(original)
    for i, item in enumerate(patch):
        if not isinstance(item, dict):
            raise PatchError(f"{path}[{i}]: expected an object with merge key {key!r}")
        directive = item.get(_DIRECTIVE)
        if key not in item:
            if directive == "delete" and len(item) == 1:
                continue  # nothing identifies the element; Kubernetes ignores it too
            raise PatchError(f"{path}[{i}]: map does not contain declared merge key: {key}")
        index = _find(result, item, key)
        if directive == "delete":
            if index is not None:
                del result[index]
            continue
        if directive not in (None, "merge"):
            raise PatchError(f"{path}[{i}]: unknown patch directive {directive!r} in a list "
                             "element (expected delete or merge)")
        if index is None:
            result.append(_strip_directives(item))
        else:
            element = _merge_map(result[index], item, spec.elem, path=f"{path}[{index}]")
            if element is not None:
                result[index] = element
    return result


def _find(items: list[Any], item: dict, key: str) -> int | None:
    matches = [i for i, v in enumerate(items) if isinstance(v, dict) and v.get(key) == item[key]]
    if len(matches) > 1 and "protocol" in item:
        # 53/TCP and 53/UDP share the merge key `port`; tell them apart by protocol.
        by_proto = [i for i in matches
                    if items[i].get("protocol", "TCP") == item.get("protocol", "TCP")]
        if by_proto:
            return by_proto[0]
    return matches[0] if matches else None


def _apply_order(items: list[Any], order: list[Any], spec: Field) -> list[Any]:
    """Order `items` as `$setElementOrder` says; items it does not name keep their place
    relative to the item they followed."""
    if spec.primitive_set:
        ids: list[Any] = list(items)
        wanted = list(order)
    else:
        key = spec.merge_key
        ids = [v.get(key) if isinstance(v, dict) else None for v in items]
        wanted = [o.get(key) if isinstance(o, dict) else o for o in order]
    rank = {ident: n for n, ident in enumerate(wanted)}
    slots = sorted((i for i, ident in enumerate(ids) if ident in rank),
                   key=lambda i: rank[ids[i]])
    for i in range(len(items)):
        if i in slots:
            continue
        # Put a server-only item right after its original predecessor, or first.
        anchor = next((j for j in range(i - 1, -1, -1) if j in slots), None)
        slots.insert(0 if anchor is None else slots.index(anchor) + 1, i)
    return [items[i] for i in slots]


def _strip_directives(value: Any) -> Any:
    """A patch value stored as is, minus any directives it carries."""
    if isinstance(value, dict):
        return {k: _strip_directives(v) for k, v in value.items()
                if not (k in (_DIRECTIVE, _RETAIN_KEYS)
                        or k.startswith((_SET_ORDER, _DELETE_PRIMITIVE)))
                and v is not None}
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _at(path: str) -> str:
    return f"{path}: " if path else ""
