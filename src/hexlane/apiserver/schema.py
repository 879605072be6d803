"""Custom resources checked against their CRD's OpenAPI v3 structural schema, as the
Kubernetes apiserver does before it stores them.

- `prune_unknown_fields(obj, schema)` drops the fields the schema does not declare (unless
  `x-kubernetes-preserve-unknown-fields`), and `null` where the schema is not `nullable`,
  as Kubernetes does for structural schemas; `apiVersion`, `kind` and `metadata` at the root
  are left to the server.
- `apply_schema_defaults(obj, schema)` fills in `default:` values (Cilium's pools default
  `spec.disabled` to false, so `kubectl get ippools` shows it).
- `validate_against_schema(obj, schema)` returns every problem as a `Problem` whose path is
  the field path (`spec.blocks[0].cidr`) and whose message reads like Kubernetes':
  `Required value`, `Unsupported value: "x": supported values: "a", "b"`,
  `Invalid value: "string": spec.x in body must be of type integer: "string"`. The keywords
  are the structural subset: type, properties, additionalProperties, items, required, enum,
  pattern, minimum/maximum (and exclusive*), minLength/maxLength, minItems/maxItems,
  multipleOf, uniqueItems, format (ipv4, ipv6, cidr, date-time, date, uuid, byte, int32,
  int64; others pass), nullable, oneOf/anyOf/allOf/not, x-kubernetes-int-or-string,
  x-kubernetes-preserve-unknown-fields, x-kubernetes-embedded-resource.
  `x-kubernetes-validations` (CEL) rules are not evaluated: none of the CRDs hexlane ships
  carries one, and a user CRD's CEL rules are accepted without being enforced.
  Patterns are Go RE2 syntax evaluated with Python's `re`, which agrees on what CRDs use.
- `prepare_custom_resource(obj, schema)` does all three in Kubernetes' order and returns the
  object to store with its problems.
- `cause_reason(problem)` maps a message to the `reason` of a Status cause
  (`FieldValueRequired`, ...).
- `load_builtin_crds()` reads the CRDs hexlane serves from the start (Cilium v1.16's, in
  `crds/`), `crd_version(crd, name)` finds one served version in a CRD.
"""

from __future__ import annotations

import base64
import copy
import ipaddress
import math
import re
from datetime import datetime
from functools import lru_cache
from importlib import resources
from typing import Any

import yaml

from hexlane.model.errors import Problem

_ROOT_KEEP = ("apiVersion", "kind", "metadata")
_TYPE_NAMES = {bool: "boolean", int: "integer", float: "number", str: "string",
               list: "array", dict: "object"}


# --- pruning and defaulting ----------------------------------------------------------------------


def prune_unknown_fields(obj: dict, schema: dict) -> dict:
    """A copy of `obj` without the fields `schema` does not declare."""
    pruned = _prune(copy.deepcopy(obj), schema, root=True)
    return pruned if isinstance(pruned, dict) else {}


def _prune(value: Any, schema: dict, *, root: bool = False) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = bool(schema.get("x-kubernetes-preserve-unknown-fields"))
        # apiVersion, kind and metadata of the object (or of an embedded one) are kept.
        keep_meta = root or bool(schema.get("x-kubernetes-embedded-resource"))
        for key in list(value):
            if keep_meta and key in _ROOT_KEEP:
                continue
            sub: dict | None = None
            if isinstance(props, dict) and key in props:
                sub = props[key]
            elif isinstance(additional, dict):
                sub = additional
            elif additional is True or preserve or (props is None and additional is None
                                                    and "type" not in schema):
                continue
            if sub is None:
                del value[key]
                continue
            if value[key] is None and not sub.get("nullable"):
                del value[key]
                continue
            value[key] = _prune(value[key], sub)
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"]) for item in value]
    return value


def apply_schema_defaults(obj: dict, schema: dict) -> dict:
    """A copy of `obj` with the schema's `default:` values filled in where fields are absent."""
    result = _defaults(copy.deepcopy(obj), schema)
    return result if isinstance(result, dict) else {}


def _defaults(value: Any, schema: dict) -> Any:
    if not isinstance(schema, dict):
        return value
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, dict):
            for key, sub in props.items():
                if key not in value and isinstance(sub, dict) and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
        for key in list(value):
            sub = props.get(key) if isinstance(props, dict) else None
            if sub is None and isinstance(schema.get("additionalProperties"), dict):
                sub = schema["additionalProperties"]
            if isinstance(sub, dict):
                value[key] = _defaults(value[key], sub)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_defaults(item, schema["items"]) for item in value]
    return value


def prepare_custom_resource(obj: dict, schema: dict) -> tuple[dict, list[Problem]]:
    """What the apiserver does to a custom resource before storing it, in its order: prune
    unknown fields, fill in defaults, validate. Returns the object to store and the problems
    (non-empty means 422)."""
    prepared = apply_schema_defaults(prune_unknown_fields(obj, schema), schema)
    return prepared, validate_against_schema(prepared, schema)


# --- validation ----------------------------------------------------------------------------------


def validate_against_schema(obj: dict, schema: dict) -> list[Problem]:
    """Every way `obj` breaks `schema`, Kubernetes-style; an empty list when it conforms."""
    problems: list[Problem] = []
    _validate(obj, schema, "", problems, root=True)
    return problems


def _validate(value: Any, schema: dict, path: str, out: list[Problem], *,
              root: bool = False) -> None:
    if not isinstance(schema, dict):
        return
    if value is None:
        if schema.get("nullable") or not _declares_type(schema):
            return
        out.append(_invalid_type(path, "null", _expected_type(schema)))
        return

    if not _type_ok(value, schema, path, out):
        return
    _check_enum(value, schema, path, out)
    if isinstance(value, str):
        _check_string(value, schema, path, out)
    elif _is_number(value):
        _check_number(value, schema, path, out)
    elif isinstance(value, list):
        _check_array(value, schema, path, out)
    elif isinstance(value, dict):
        _check_object(value, schema, path, out, root=root)
    _check_combinators(value, schema, path, out)


def _declares_type(schema: dict) -> bool:
    return bool(schema.get("type")) or bool(schema.get("x-kubernetes-int-or-string"))


def _expected_type(schema: dict) -> str:
    if schema.get("x-kubernetes-int-or-string"):
        return "integer or string"  # pragma: no cover - reported through anyOf
    return str(schema.get("type"))


def _type_ok(value: Any, schema: dict, path: str, out: list[Problem]) -> bool:
    actual = _type_name(value)
    if schema.get("x-kubernetes-int-or-string"):
        if actual in ("integer", "string"):
            return True
        out.append(_invalid_type(path, actual, "integer,string"))
        return False
    wanted = schema.get("type")
    if not wanted:
        return True
    if wanted == actual or (wanted == "number" and actual == "integer"):
        return True
    if wanted == "integer" and isinstance(value, float) and value.is_integer():
        return True  # JSON has one number type: 3.0 is the integer 3
    out.append(_invalid_type(path, actual, str(wanted)))
    return False


def _check_enum(value: Any, schema: dict, path: str, out: list[Problem]) -> None:
    enum = schema.get("enum")
    if not isinstance(enum, list) or any(_json_equal(value, e) for e in enum):
        return
    supported = ", ".join(_quote(e) for e in enum)
    out.append(Problem(f"Unsupported value: {_quote(value)}: supported values: {supported}",
                       path))


def _check_string(value: str, schema: dict, path: str, out: list[Problem]) -> None:
    max_len = schema.get("maxLength")
    if isinstance(max_len, int) and len(value) > max_len:
        out.append(Problem(f"Too long: may not be more than {max_len} bytes", path))
    min_len = schema.get("minLength")
    if isinstance(min_len, int) and len(value) < min_len:
        out.append(_invalid(path, value, f"{_body(path)} should be at least {min_len} chars "
                                         "long"))
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        compiled = _compile(pattern)
        if compiled is not None and not compiled.search(value):
            out.append(_invalid(path, value, f"{_body(path)} should match '{pattern}'"))
    fmt = schema.get("format")
    if isinstance(fmt, str) and not format_ok(value, fmt):
        out.append(_invalid(path, value, f"{_body(path)} must be of type {fmt}: "
                                         f"{_quote(value)}"))


def _check_number(value: float, schema: dict, path: str, out: list[Problem]) -> None:
    minimum = schema.get("minimum")
    if isinstance(minimum, int | float):
        if schema.get("exclusiveMinimum") and value <= minimum:
            out.append(_invalid(path, value, f"{_body(path)} should be greater than {minimum}"))
        elif value < minimum:
            out.append(_invalid(path, value, f"{_body(path)} should be greater than or equal "
                                             f"to {minimum}"))
    maximum = schema.get("maximum")
    if isinstance(maximum, int | float):
        if schema.get("exclusiveMaximum") and value >= maximum:
            out.append(_invalid(path, value, f"{_body(path)} should be less than {maximum}"))
        elif value > maximum:
            out.append(_invalid(path, value, f"{_body(path)} should be less than or equal "
                                             f"to {maximum}"))
    multiple = schema.get("multipleOf")
    if isinstance(multiple, int | float) and multiple > 0 and not math.isclose(
            value / multiple, round(value / multiple)):
        out.append(_invalid(path, value, f"{_body(path)} should be a multiple of {multiple}"))
    fmt = schema.get("format")
    if fmt in ("int32", "int64") and isinstance(value, int):
        bits = 31 if fmt == "int32" else 63
        if not -(1 << bits) <= value < (1 << bits):
            out.append(_invalid(path, value, f"{_body(path)} must be of type {fmt}: "
                                             f"{_quote(value)}"))


def _check_size(size: int, schema: dict, path: str, out: list[Problem], keyword: str,
                noun: str) -> None:
    """`max<keyword>` and `min<keyword>` (Items of an array, Properties of an object)."""
    most = schema.get(f"max{keyword}")
    if isinstance(most, int) and size > most:
        out.append(Problem(f"Too many: {size}: must have at most {most} items", path))
    least = schema.get(f"min{keyword}")
    if isinstance(least, int) and size < least:
        out.append(_invalid(path, size, f"{_body(path)} should have at least {least} {noun}"))


def _check_array(value: list, schema: dict, path: str, out: list[Problem]) -> None:
    _check_size(len(value), schema, path, out, "Items", "items")
    if schema.get("uniqueItems") or schema.get("x-kubernetes-list-type") == "set":
        for i, item in enumerate(value):
            if any(_json_equal(item, earlier) for earlier in value[:i]):
                out.append(Problem(f"Duplicate value: {_quote(item)}", f"{path}[{i}]"))
    if schema.get("x-kubernetes-list-type") == "map":
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list[tuple[Any, ...]] = []
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                continue
            ident = tuple(item.get(k) for k in keys)
            if ident in seen:
                shown = ", ".join(f"{_quote(k)}:{_quote(item.get(k))}" for k in keys)
                out.append(Problem(f"Duplicate value: map[string]interface {{}}{{{shown}}}",
                                   f"{path}[{i}]"))
            seen.append(ident)
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", out)


def _check_object(value: dict, schema: dict, path: str, out: list[Problem], *,
                  root: bool) -> None:
    required = schema.get("required")
    if isinstance(required, list):
        for key in required:
            if key not in value or (value[key] is None and not _nullable(schema, key)):
                out.append(Problem("Required value", _join(path, key)))
    _check_size(len(value), schema, path, out, "Properties", "properties")
    declared = schema.get("properties")
    props: dict = declared if isinstance(declared, dict) else {}
    additional = schema.get("additionalProperties")
    for key, item in value.items():
        if root and key in _ROOT_KEEP and key not in props:
            continue
        sub = props.get(key)
        if sub is None and isinstance(additional, dict):
            sub = additional
        if sub is None:
            if additional is False:
                out.append(Problem(f'Unsupported value: "{key}"', _join(path, key)))
            continue
        if root and key == "metadata":
            continue  # ObjectMeta is the server's to check, whatever the schema says
        _validate(item, sub, _join(path, key), out)


def _check_combinators(value: Any, schema: dict, path: str, out: list[Problem]) -> None:
    one_of = schema.get("oneOf")
    if isinstance(one_of, list) and one_of:
        matches = sum(1 for alt in one_of if _conforms(value, alt))
        if matches != 1:
            detail = "Found none valid" if matches == 0 else f"Found {matches} valid alternatives"
            out.append(_invalid(path, _type_name(value), f"{_body(path)} must validate one "
                                                         f"and only one schema (oneOf). {detail}"))
    any_of = schema.get("anyOf")
    if isinstance(any_of, list) and any_of and not any(_conforms(value, alt) for alt in any_of):
        out.append(_invalid(path, _type_name(value), f"{_body(path)} must validate at least "
                                                     "one schema (anyOf)"))
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        for alt in all_of:
            _validate(value, alt, path, out)
    negated = schema.get("not")
    if isinstance(negated, dict) and _conforms(value, negated):
        out.append(_invalid(path, _type_name(value), f"{_body(path)} must not validate the "
                                                     "schema (not)"))


def _conforms(value: Any, schema: Any) -> bool:
    problems: list[Problem] = []
    if isinstance(schema, dict):
        _validate(value, schema, "", problems)
    return not problems


def _nullable(schema: dict, key: str) -> bool:
    props = schema.get("properties")
    sub = props.get(key) if isinstance(props, dict) else None
    return bool(isinstance(sub, dict) and sub.get("nullable"))


# --- formats -------------------------------------------------------------------------------------

_UUID_RE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?"
                      r"[0-9a-fA-F]{12}$")
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_HOSTNAME_RE = re.compile(r"^[a-zA-Z0-9]([-a-zA-Z0-9]{0,62})?(\.[a-zA-Z0-9]([-a-zA-Z0-9]{0,62})?)*"
                          r"\.?$")


def format_ok(value: str, fmt: str) -> bool:
    """Light checks for the formats Kubernetes checks; unknown formats pass, as there."""
    try:
        if fmt == "ipv4":
            ipaddress.IPv4Address(value)
        elif fmt == "ipv6":
            ipaddress.IPv6Address(value)
        elif fmt == "cidr":
            # Go's net.ParseCIDR accepts host bits (10.0.0.1/24); so does strict=False.
            if "/" not in value:
                return False
            ipaddress.ip_network(value, strict=False)
        elif fmt == "date-time":
            datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
            return "T" in value.upper()
        elif fmt == "date":
            if not _DATE_RE.match(value):
                return False
            datetime.strptime(value, "%Y-%m-%d")
        elif fmt == "uuid":
            return bool(_UUID_RE.match(value))
        elif fmt == "byte":
            base64.b64decode(value, validate=True)
        elif fmt == "hostname":
            return len(value) <= 255 and bool(_HOSTNAME_RE.match(value))
    except ValueError:
        return False
    return True


# --- message helpers -----------------------------------------------------------------------------


def cause_reason(problem: Problem) -> str:
    """The `reason` of the Status cause for this problem (`FieldValueInvalid`, ...)."""
    prefixes = (("Required value", "FieldValueRequired"),
                ("Unsupported value", "FieldValueNotSupported"),
                ("Duplicate value", "FieldValueDuplicate"),
                ("Forbidden", "FieldValueForbidden"),
                ("Too long", "FieldValueTooLong"),
                ("Too many", "FieldValueTooMany"),
                ("Internal error", "InternalError"),
                ("Not found", "FieldValueNotFound"))
    for prefix, reason in prefixes:
        if problem.message.startswith(prefix):
            return reason
    return "FieldValueInvalid"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    for py, name in _TYPE_NAMES.items():
        if type(value) is py:
            return name
    return type(value).__name__


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return bool(a == b)


def _quote(value: Any) -> str:
    """A value as Kubernetes prints it in a field error: strings quoted, numbers bare."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def _invalid(path: str, value: Any, detail: str) -> Problem:
    return Problem(f"Invalid value: {_quote(value)}: {detail}", path)


def _invalid_type(path: str, actual: str, wanted: str) -> Problem:
    return _invalid(path, actual, f"{_body(path)} must be of type {wanted}: {_quote(actual)}")


def _body(path: str) -> str:
    return f"{path} in body" if path else "body"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


@lru_cache(maxsize=512)
def _compile(pattern: str) -> re.Pattern[str] | None:
    try:
        return re.compile(pattern)
    except re.error:
        return None


# --- the CRDs hexlane serves from the start ------------------------------------------------------


def load_builtin_crds() -> list[dict]:
    """Cilium v1.16's CRDs that hexlane serves preinstalled (fresh copies on each call)."""
    return copy.deepcopy(_builtin_crds())


@lru_cache(maxsize=1)
def _builtin_crds() -> list[dict]:
    folder = resources.files("hexlane.apiserver").joinpath("crds")
    crds: list[dict] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if not entry.name.endswith(".yaml"):
            continue
        for doc in yaml.safe_load_all(entry.read_text(encoding="utf-8")):
            if isinstance(doc, dict) and doc.get("kind") == "CustomResourceDefinition":
                # YAML anchors share nodes; give every CRD its own tree.
                crds.append(copy.deepcopy(doc))
    return crds


def crd_version(crd: dict, name: str) -> dict | None:
    """The served version `name` of a CRD (its entry in spec.versions), or None."""
    for version in (crd.get("spec") or {}).get("versions") or []:
        if isinstance(version, dict) and version.get("name") == name and version.get("served"):
            return version
    return None


def crd_schema(crd: dict, version: str) -> dict | None:
    """The openAPIV3Schema of a served CRD version, or None."""
    entry = crd_version(crd, version)
    if entry is None:
        return None
    schema = (entry.get("schema") or {}).get("openAPIV3Schema")
    return schema if isinstance(schema, dict) else None
