"""Built-in kinds checked against Kubernetes' OpenAPI definitions, as its decoder and
validation do, with one validator compiled per kind.

Kubernetes decodes a body into the kind's Go struct before anything else. What that decoding
refuses, hexlane refuses the same way: a value of the wrong type (`replicas: "three"`, a
status that is a list, finalizers that are a string, an int32 out of range, bad base64 in a
Secret, a time that is not RFC 3339) is 400 BadRequest worded as Kubernetes words it
(`Deployment in version "v1" cannot be handled as a Deployment: json: cannot unmarshal string
into Go struct field DeploymentSpec.spec.replicas of type int32`), one `details.causes` entry
per bad field. Fields the definitions do not have are dropped, as decoding drops them, and
listed so a `fieldValidation=Strict` request can be refused. Then validation: a required
field that is missing is 422 `Required value` naming it (the `required` lists of the
definitions, outside `status` and less the few Kubernetes' validation lets be empty).

`validator(group, version, kind)` compiles a kind's definition into nested closures once
(cached), so a write pays one walk of its object; `Validator.check(obj)` returns a `Checked`
and prunes `obj` in place.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from hexlane.apiserver import openapi
from hexlane.apiserver.resources import BUILTIN
from hexlane.apiserver.schema import format_ok
from hexlane.model.errors import Problem

# Fields the definitions mark required that Kubernetes' validation accepts absent or empty.
_OPTIONAL_IN_FACT = {
    ("io.k8s.api.discovery.v1.EndpointSlice", "endpoints"),
    ("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector"),
    ("io.k8s.api.core.v1.Event", "metadata"),
    ("io.k8s.api.core.v1.HTTPHeader", "value"),
    ("io.k8s.api.core.v1.Sysctl", "value"),
    ("io.k8s.api.core.v1.ISCSIVolumeSource", "lun"),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionVersion",
     "served"),
    ("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinitionVersion",
     "storage"),
}
_INT_BITS = {"int32": 31, "int64": 63}
# The scalar checks whose values a struct or map tests inline: check -> str or bool.
_PLAIN: dict[Any, type | None] = {}


@dataclass(frozen=True, slots=True)
class TypeProblem:
    """A value Kubernetes' decoder refuses: where, and Go's words for it."""

    path: str  # spec.template.spec.containers[0].env[0].value
    go_message: str  # json: cannot unmarshal number into Go struct field EnvVar.spec...

    def problem(self) -> Problem:
        return Problem(f"Invalid value: {self.go_message}", self.path)


@dataclass(slots=True)
class Checked:
    """What checking one object found."""

    type_problems: list[TypeProblem] = field(default_factory=list)
    required: list[Problem] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # field paths dropped


@dataclass(slots=True)
class _Walk:
    out: Checked
    in_status: bool = False


# Where a value is: None for the object itself, else (parent, key, how, struct): `how` is
# _FIELD (key is a struct field, `struct` the bare name of the struct holding it), _INDEX (a
# list index) or _KEY (a map key). Built as a chain of tuples while walking and turned into
# text only for a problem, so a write that is fine formats no path at all.
_FIELD, _INDEX, _KEY = 0, 1, 2
Loc = tuple[Any, Any, int, str] | None
# A compiled node: (value, loc, walk) -> None.
_Check = Callable[[Any, Loc, _Walk], None]


def _path(loc: Loc) -> str:
    """The field path (`spec.template.spec.containers[0].env[0].value`)."""
    parts = []
    while loc is not None:
        loc, key, how, _struct = loc
        parts.append(f".{key}" if how == _FIELD else f"[{key}]")
    return "".join(reversed(parts)).removeprefix(".")


def _go_field(loc: Loc) -> str:
    """How Go's decoder names the field in a type error: the struct holding it, then the
    dotted path without indices (`EnvVar.spec.template.spec.containers.env.value`); "" for
    the object itself."""
    keys: list[str] = []
    owner = ""
    while loc is not None:
        loc, key, how, struct = loc
        if how == _FIELD:
            keys.append(key)
            owner = owner or struct
    return f"{owner}.{'.'.join(reversed(keys))}" if owner else ""


def _value_kind(value: Any) -> str:
    """How Go's decoder names a JSON value in its type errors."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(name: str) -> str:
    """`io.k8s.api.core.v1.PodStatus` -> `v1.PodStatus` (Go's package.Type)."""
    parts = name.split(".")
    return ".".join(parts[-2:])


class _Compiler:
    """Turns definitions into checks; one per definition name, shared by every kind."""

    def __init__(self) -> None:
        self.defs = openapi.definitions()
        self.compiled: dict[str, _Check] = {}

    def definition(self, name: str) -> _Check:
        if name not in self.compiled:
            slot: list[_Check] = []
            # A placeholder first: definitions refer to themselves (JSONSchemaProps).
            self.compiled[name] = lambda v, loc, w: slot[0](v, loc, w)
            slot.append(self._schema(self.defs[name], name))
            self.compiled[name] = slot[0]
        return self.compiled[name]

    def go_type(self, schema: dict[str, Any]) -> str:
        ref = openapi.ref_name(schema)
        if ref is not None:
            return {openapi.INT_OR_STRING: "intstr.IntOrString",
                    openapi.QUANTITY: "resource.Quantity"}.get(ref, _short(ref))
        kinds = [t for t in schema.get("type") or () if t != "null"] \
            if isinstance(schema.get("type"), list) else [schema.get("type")]
        kind = kinds[0] if kinds else None
        fmt = schema.get("format")
        if kind == "integer":
            return fmt if fmt in _INT_BITS else "int"
        if kind == "number":
            return "float64"
        if kind == "boolean":
            return "bool"
        if kind == "string":
            return "[]uint8" if fmt == "byte" else "string"
        if kind == "array":
            return "[]" + self.go_type(schema.get("items") or {})
        if kind == "object" and isinstance(schema.get("additionalProperties"), dict):
            return "map[string]" + self.go_type(schema["additionalProperties"])
        return "interface {}"

    def _schema(self, schema: dict[str, Any], name: str) -> _Check:
        """The check of `schema`, a part of definition `name`."""
        ref = openapi.ref_name(schema)
        if ref is not None:
            return self.definition(ref)
        if "oneOf" in schema:  # IntOrString (string|integer) and Quantity (string|number)
            allowed = {t for alt in schema["oneOf"] for t in alt.get("type") or () if t != "null"}
            return _scalar(allowed, None)
        raw = schema.get("type")
        kinds = {t for t in raw if t != "null"} if isinstance(raw, list) else {raw} if raw \
            else set()
        if not kinds:
            return _anything
        if kinds == {"object"}:
            return self._object(schema, name)
        if kinds == {"array"}:
            items = schema.get("items") or {}
            return _array(self._schema(items, name), self.go_type(items))
        return _scalar(kinds, schema.get("format"))

    def _object(self, schema: dict[str, Any], name: str) -> _Check:
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        if not isinstance(props, dict):
            if isinstance(additional, dict):
                return _map(self._schema(additional, name), self.go_type(additional))
            return _object_anything
        fields = {key: self._schema(sub, name) for key, sub in props.items()}
        required = tuple(k for k in schema.get("required") or ()
                         if (name, k) not in _OPTIONAL_IN_FACT)
        return _struct(fields, required, name.split(".")[-1], _short(name))


def _type_error(walk: _Walk, loc: Loc, value: Any, go_type: str, detail: str = "") -> None:
    kind = _value_kind(value)
    if detail:
        kind = f"{kind} {detail}"
    go_field = _go_field(loc)
    where = f"Go struct field {go_field}" if go_field else "Go value"
    walk.out.type_problems.append(TypeProblem(
        _path(loc), f"json: cannot unmarshal {kind} into {where} of type {go_type}"))


def _anything(value: Any, loc: Loc, walk: _Walk) -> None:
    return None


def _object_anything(value: Any, loc: Loc, walk: _Walk) -> None:
    if value is not None and not isinstance(value, dict):
        _type_error(walk, loc, value, "map[string]interface {}")


def _scalar(kinds: set[str], fmt: str | None) -> _Check:
    want_int, want_num = "integer" in kinds, "number" in kinds
    want_str, want_bool = "string" in kinds, "boolean" in kinds
    go_type = ("intstr.IntOrString" if kinds == {"string", "integer"} else
               "resource.Quantity" if kinds == {"string", "number"} else
               (fmt if fmt in _INT_BITS else "int") if want_int else
               "float64" if want_num else "bool" if want_bool else
               "[]uint8" if fmt == "byte" else "string")
    bits = _INT_BITS.get(fmt or "")
    # A string without format, or a boolean: the caller tests `type(value) is plain` inline
    # and calls the check only for a value that is not (most fields of most objects).
    plain = str if kinds == {"string"} and fmt not in ("byte", "date-time") else \
        bool if kinds == {"boolean"} else None

    def check(value: Any, loc: Loc, walk: _Walk) -> None:
        if value is None:
            return
        if isinstance(value, bool):
            if not want_bool:
                _type_error(walk, loc, value, go_type)
            return
        if isinstance(value, int | float):
            if want_num:
                return
            if not want_int:
                _type_error(walk, loc, value, go_type)
                return
            if isinstance(value, float) and not value.is_integer():
                _type_error(walk, loc, value, go_type, str(value))
                return
            if bits is not None and not -(1 << bits) <= int(value) < (1 << bits):
                _type_error(walk, loc, value, go_type, str(int(value)))
            return
        if isinstance(value, str):
            if not want_str:
                _type_error(walk, loc, value, go_type)
            elif fmt == "byte":
                try:
                    base64.b64decode(value, validate=True)
                except (binascii.Error, ValueError):
                    walk.out.type_problems.append(TypeProblem(
                        _path(loc), f"illegal base64 data in Go struct field {_go_field(loc)}"))
            elif fmt == "date-time" and not format_ok(value, "date-time"):
                walk.out.type_problems.append(TypeProblem(
                    _path(loc), f'parsing time "{value[:64]}" as "2006-01-02T15:04:05Z07:00" '
                                f"in Go struct field {_go_field(loc)}: not an RFC 3339 time"))
            return
        _type_error(walk, loc, value, go_type)
    _PLAIN[check] = plain
    return check


def _array(item: _Check, go_item: str) -> _Check:
    def check(value: Any, loc: Loc, walk: _Walk) -> None:
        if value is None:
            return
        if not isinstance(value, list):
            _type_error(walk, loc, value, "[]" + go_item)
            return
        for i, entry in enumerate(value):
            item(entry, (loc, i, _INDEX, ""), walk)
    return check


def _map(item: _Check, go_item: str) -> _Check:
    plain = _PLAIN.get(item)

    def check(value: Any, loc: Loc, walk: _Walk) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            _type_error(walk, loc, value, "map[string]" + go_item)
            return
        for key, entry in value.items():
            if entry is None or type(entry) is plain:
                continue
            item(entry, (loc, key, _KEY, ""), walk)
    return check


def _struct(checks: dict[str, _Check], required: tuple[str, ...], struct: str,
            go_type: str) -> _Check:
    fields = {key: (check, _PLAIN.get(check)) for key, check in checks.items()}

    def check(value: Any, loc: Loc, walk: _Walk) -> None:
        if value is None:
            return
        if not isinstance(value, dict):
            _type_error(walk, loc, value, go_type)
            return
        unknown = None
        for key, entry in value.items():
            field_check = fields.get(key)
            if field_check is None:
                if unknown is None:
                    unknown = []
                unknown.append(key)
                walk.out.unknown.append(_path((loc, key, _FIELD, struct)))
                continue
            known, plain = field_check
            if entry is None or type(entry) is plain:
                continue
            if loc is None and key == "status":
                walk.in_status = True
                known(entry, (loc, key, _FIELD, struct), walk)
                walk.in_status = False
            else:
                known(entry, (loc, key, _FIELD, struct), walk)
        if unknown:
            for key in unknown:
                del value[key]
        if required and not walk.in_status:
            for key in required:
                if value.get(key) is None:
                    walk.out.required.append(
                        Problem("Required value", _path((loc, key, _FIELD, struct))))
    return check


class Validator:
    """The compiled check of one built-in kind."""

    def __init__(self, check: _Check, kind: str) -> None:
        self._check = check
        self.kind = kind

    def check(self, obj: dict[str, Any]) -> Checked:
        """Type problems, missing required fields and unknown fields of `obj`, whose
        unknown fields are dropped (in place)."""
        walk = _Walk(Checked())
        self._check(obj, None, walk)
        return walk.out


@lru_cache(maxsize=1)
def _compiler() -> _Compiler:
    return _Compiler()


def compile_builtin() -> None:
    """Compile the validators of every built-in kind served (at start, not on a first write)."""
    for info in BUILTIN:
        validator(info.group, info.version, info.kind)
    for group, version, kind in (("", "v1", "Binding"), ("autoscaling", "v1", "Scale")):
        validator(group, version, kind)


@cache
def validator(group: str, version: str, kind: str) -> Validator | None:
    """The validator of a built-in kind, compiled on first use (None: not a Kubernetes kind)."""
    name = openapi.definition_for(group, version, kind)
    if name is None:
        return None
    return Validator(_compiler().definition(name), kind)
