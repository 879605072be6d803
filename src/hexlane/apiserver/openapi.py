"""Kubernetes v1.32's OpenAPI definitions of the built-in kinds, as the apiserver uses them.

The definitions are the ones the `kubernetes-validate` package ships (its
`kubernetes-json-schema/v1.32.0-local/_definitions.json`: Kubernetes' own OpenAPI
definitions in JSON Schema form, `type: [T, "null"]` and `$ref: #/$defs/NAME`). They are read
once, on first use, and serve three purposes:

- `definition_for(group, version, kind)`: the definition name of a built-in kind (by its
  `x-kubernetes-group-version-kind`), which `apiserver.validation` compiles a validator from;
- `openapi_v2()` and `openapi_v2_protobuf()`: `/openapi/v2` as Kubernetes serves it (the
  definitions of the built-in kinds; kubectl 1.20 reads the protobuf form for `explain` and
  for its client-side validation). Custom resources are not in it, so kubectl 1.20 leaves
  them to the server;
- `openapi_v3(registry, key)`: `/openapi/v3/<api/v1 | apis/group/version>` with the PATCH
  operations (their `fieldValidation` parameter tells kubectl 1.32 to leave field validation
  to the server) and `components.schemas`: the group/version's kinds with everything they
  refer to, custom resources' schemas from their CRD, so `kubectl explain` works.

The conversion back to OpenAPI form is Kubernetes': `type: [T, "null"]` becomes `type: T`,
references point into `#/definitions/` (v2) or `#/components/schemas/` (v3, wrapped in
`allOf` as Kubernetes does, so a description can stand beside them), IntOrString is a string
of format `int-or-string` and Quantity a string.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from typing import Any

import yaml

from hexlane.apiserver.resources import BUILTIN, Registry, ResourceInfo
from hexlane.apiserver.status import ApiError
from hexlane.apiserver.storage import dumps

KUBERNETES_VERSION = "v1.32.0"
_PACKAGE = "kubernetes_validate"
_DEFINITIONS = f"kubernetes-json-schema/{KUBERNETES_VERSION}-local/_definitions.json"
_REF_PREFIX = "#/$defs/"
INT_OR_STRING = "io.k8s.apimachinery.pkg.util.intstr.IntOrString"
QUANTITY = "io.k8s.apimachinery.pkg.api.resource.Quantity"
OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
_SCALAR_DEFINITIONS = {
    INT_OR_STRING: {"type": "string", "format": "int-or-string"},
    QUANTITY: {"type": "string"},
}


@lru_cache(maxsize=1)
def definitions() -> dict[str, dict[str, Any]]:
    """Every definition of Kubernetes v1.32 by name (JSON Schema form; never modify)."""
    spec = importlib.util.find_spec(_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec else []
    if not folders:
        raise RuntimeError(f"the Python package {_PACKAGE!r} (Kubernetes' OpenAPI schemas) is "
                           "not installed: run `make setup`")
    with open(os.path.join(folders[0], _DEFINITIONS), encoding="utf-8") as f:
        found: dict[str, dict[str, Any]] = json.load(f)["$defs"]
    return found


@lru_cache(maxsize=1)
def _by_gvk() -> dict[tuple[str, str, str], str]:
    out: dict[tuple[str, str, str], str] = {}
    for name, schema in definitions().items():
        for gvk in schema.get("x-kubernetes-group-version-kind") or ():
            out[(gvk.get("group", ""), gvk.get("version", ""), gvk.get("kind", ""))] = name
    return out


def definition_for(group: str, version: str, kind: str) -> str | None:
    """The definition name of a built-in kind, None for a kind Kubernetes does not have."""
    return _by_gvk().get((group, version, kind))


def ref_name(schema: dict[str, Any]) -> str | None:
    """The definition a `$ref` schema points at (None when it is not a reference)."""
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith(_REF_PREFIX):
        return ref[len(_REF_PREFIX):]
    return None


# --- back to OpenAPI -------------------------------------------------------------------------


def _openapi_schema(schema: Any, ref: str, *, wrap_refs: bool) -> Any:
    """One JSON Schema node of the definitions in OpenAPI form (references to `ref`+NAME)."""
    if not isinstance(schema, dict):
        return schema
    name = ref_name(schema)
    if name is not None:
        target = {"$ref": ref + name}
        rest = {k: v for k, v in schema.items() if k != "$ref"}
        if wrap_refs:
            return {"allOf": [target], **rest}
        return {**target, **rest}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "type" and isinstance(value, list):
            kinds = [t for t in value if t != "null"]
            out[key] = kinds[0] if len(kinds) == 1 else kinds
        elif key == "enum":
            continue  # only apiVersion and kind carry one here; Kubernetes' documents do not
        elif key == "properties" and isinstance(value, dict):
            out[key] = {k: _openapi_schema(v, ref, wrap_refs=wrap_refs) for k, v in value.items()}
        elif key in ("items", "additionalProperties"):
            out[key] = _openapi_schema(value, ref, wrap_refs=wrap_refs)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _openapi_definition(name: str, ref: str, *, wrap_refs: bool) -> dict[str, Any]:
    schema = definitions()[name]
    if name in _SCALAR_DEFINITIONS:
        return {"description": schema.get("description", ""), **_SCALAR_DEFINITIONS[name]}
    converted: dict[str, Any] = _openapi_schema(schema, ref, wrap_refs=wrap_refs)
    return converted


def _references(schema: Any) -> set[str]:
    found: set[str] = set()
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            name = ref_name(node)
            if name is not None:
                found.add(name)
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found


def closure(names: set[str]) -> set[str]:
    """`names` and every definition they refer to, directly or not."""
    todo, seen = list(names), set(names)
    while todo:
        for ref in _references(definitions()[todo.pop()]):
            if ref not in seen:
                seen.add(ref)
                todo.append(ref)
    return seen


# --- /openapi/v2 -----------------------------------------------------------------------------


def _builtin_definition_names() -> set[str]:
    names = {definition_for(i.group, i.version, i.kind) for i in BUILTIN}
    return closure({n for n in names if n is not None})


@lru_cache(maxsize=1)
def openapi_v2() -> dict[str, Any]:
    """`/openapi/v2` as JSON: the definitions of the built-in kinds (no paths)."""
    defs = {name: _openapi_definition(name, "#/definitions/", wrap_refs=False)
            for name in sorted(_builtin_definition_names())}
    return {"swagger": "2.0", "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": {}, "definitions": defs}


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _text(number: int, text: str) -> bytes:
    return _field(number, text.encode())


def _pb_schema(schema: dict[str, Any]) -> bytes:
    """gnostic's openapi_v2.Schema for one schema (the fields Kubernetes' definitions use)."""
    out = bytearray()
    if "$ref" in schema:
        out += _text(1, schema["$ref"])
    if "format" in schema:
        out += _text(2, schema["format"])
    if "description" in schema:
        out += _text(4, schema["description"])
    for name in schema.get("required") or ():
        out += _text(19, name)
    if isinstance(schema.get("additionalProperties"), dict):
        out += _field(21, _field(1, _pb_schema(schema["additionalProperties"])))
    if "type" in schema:
        kinds = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        out += _field(22, b"".join(_text(1, k) for k in kinds))
    if isinstance(schema.get("items"), dict):
        out += _field(23, _field(1, _pb_schema(schema["items"])))
    if isinstance(schema.get("properties"), dict):
        out += _field(25, b"".join(_field(1, _text(1, k) + _field(2, _pb_schema(v)))
                                   for k, v in schema["properties"].items()))
    for key, value in schema.items():
        if key.startswith("x-"):
            text = yaml.safe_dump(value, default_flow_style=False)
            out += _field(31, _text(1, key) + _field(2, _text(2, text)))
    return bytes(out)


@lru_cache(maxsize=1)
def openapi_v2_protobuf() -> bytes:
    """`/openapi/v2` as gnostic's protobuf `openapi_v2.Document` (what kubectl 1.20 asks for)."""
    doc = openapi_v2()
    info = _text(1, doc["info"]["title"]) + _text(2, doc["info"]["version"])
    named = b"".join(_field(1, _text(1, name) + _field(2, _pb_schema(schema)))
                     for name, schema in doc["definitions"].items())
    return _text(1, "2.0") + _field(2, info) + _field(9, named)


OPENAPI_V2_PROTOBUF_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


# --- /openapi/v3 -----------------------------------------------------------------------------


def _by_openapi_path(registry: Registry) -> dict[str, list[ResourceInfo]]:
    out: dict[str, list[ResourceInfo]] = {}
    for info in registry.all():
        key = f"apis/{info.group}/{info.version}" if info.group else f"api/{info.version}"
        out.setdefault(key, []).append(info)
    return out


def _digest(infos: list[ResourceInfo]) -> str:
    shown = sorted((i.plural, i.kind, i.namespaced, dumps(i.schema) if i.schema else "")
                   for i in infos)
    return hashlib.sha256(dumps(shown).encode()).hexdigest()[:32]


def openapi_v3_index(registry: Registry) -> dict[str, Any]:
    """`/openapi/v3`: one URL per group/version, with a hash that changes with its content."""
    return {"paths": {key: {"serverRelativeURL": f"/openapi/v3/{key}?hash={_digest(infos)}"}
                      for key, infos in _by_openapi_path(registry).items()}}


def _custom_schema_name(info: ResourceInfo) -> str:
    """Kubernetes' name for a custom resource's schema: the group reversed, then
    version and kind (`io.cilium.v2alpha1.CiliumLoadBalancerIPPool`)."""
    return ".".join([*reversed(info.group.split(".")), info.version, info.kind])


def _custom_schema(info: ResourceInfo) -> dict[str, Any]:
    schema = copy.deepcopy(info.schema or {})
    props = schema.setdefault("properties", {})
    props["metadata"] = {"allOf": [{"$ref": f"#/components/schemas/{OBJECT_META}"}],
                         "description": "Standard object's metadata."}
    props.setdefault("apiVersion", {"type": "string"})
    props.setdefault("kind", {"type": "string"})
    schema["x-kubernetes-group-version-kind"] = [
        {"group": info.group, "version": info.version, "kind": info.kind}]
    return schema


def openapi_v3(registry: Registry, key: str) -> dict[str, Any]:
    """`/openapi/v3/<api/v1 | apis/group/version>`: its PATCH operations and its schemas."""
    infos = _by_openapi_path(registry).get(key)
    if not infos:
        raise ApiError(404, "NotFound", "the server could not find the requested resource")
    paths: dict[str, Any] = {}
    builtin: set[str] = set()
    schemas: dict[str, Any] = {}
    for info in infos:
        prefix = f"/{key}/namespaces/{{namespace}}" if info.namespaced else f"/{key}"
        gvk = {"group": info.group, "version": info.version, "kind": info.kind}
        params = [{"name": n, "in": "query", "schema": {"type": "string"}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        paths[f"{prefix}/{info.plural}/{{name}}"] = {"patch": {
            "operationId": f"patch{info.kind}", "parameters": params,
            "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}}}}
        if info.is_custom:
            schemas[_custom_schema_name(info)] = _custom_schema(info)
            builtin.add(OBJECT_META)
        elif (name := definition_for(info.group, info.version, info.kind)) is not None:
            builtin.add(name)
    for name in sorted(closure(builtin)):
        schemas[name] = _openapi_definition(name, "#/components/schemas/", wrap_refs=True)
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": KUBERNETES_VERSION},
            "paths": paths, "components": {"schemas": schemas}}
