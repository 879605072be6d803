"""What a list or watch request asks for: namespace, label and field selectors (`Filter`),
whether the client wants a Table, and the opaque `continue` token of paged lists.

The token encodes the resourceVersion of the first page and the last key returned, so later
pages are served from the same snapshot (or 410 once that resourceVersion has left the
change history).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.apiserver.resources import ResourceInfo
from hexlane.apiserver.status import bad_request
from hexlane.inputlimits import loads_json
from hexlane.model.errors import InputError
from hexlane.model.selectors import LabelSelector

JSON = "application/json"


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


@dataclass(frozen=True, slots=True)
class FieldRequirement:
    path: str
    value: str
    equal: bool


def parse_field_selector(text: str, info: ResourceInfo) -> list[FieldRequirement]:
    """`metadata.name=x,spec.nodeName!=y` -> requirements; unsupported fields are a 400."""
    out: list[FieldRequirement] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        if "!=" in term:
            path, _, value = term.partition("!=")
            equal = False
        elif "==" in term:
            path, _, value = term.partition("==")
            equal = True
        elif "=" in term:
            path, _, value = term.partition("=")
            equal = True
        else:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        path = path.strip()
        if path not in ("metadata.name", "metadata.namespace") and \
                path not in info.field_labels:
            raise bad_request(f'field label not supported: {path}')
        out.append(FieldRequirement(path, value.strip(), equal))
    return out


# What a field selector sees for a field the object leaves out (Kubernetes' defaults).
_FIELD_DEFAULTS = {"spec.unschedulable": "false", "spec.hostNetwork": "false"}


def _field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return _FIELD_DEFAULTS.get(path, "")
        cur = cur.get(part)
    if cur is None:
        return _FIELD_DEFAULTS.get(path, "")
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, dict):
        return str(cur.get("component", ""))  # events' `source` selects on the component
    return str(cur)


class Filter:
    """Namespace, label and field selection of a list or watch."""

    def __init__(self, namespace: str, labels: LabelSelector | None,
                 fields: list[FieldRequirement]) -> None:
        self.namespace = namespace
        self.labels = labels
        self.fields = fields

    @property
    def only_namespace(self) -> bool:
        return self.labels is None and not self.fields

    def matches(self, obj: dict[str, Any]) -> bool:
        meta = obj.get("metadata") or {}
        if self.namespace and meta.get("namespace", "") != self.namespace:
            return False
        if self.labels is not None and not self.labels.matches(meta.get("labels") or {}):
            return False
        return all((_field_value(obj, req.path) == req.value) == req.equal
                   for req in self.fields)


def filter_from(query: Mapping[str, str], info: ResourceInfo, namespace: str) -> Filter:
    """The Filter of a list or watch request (400 for a malformed selector)."""
    labels = None
    text = query.get("labelSelector", "")
    if text.strip():
        try:
            labels = LabelSelector.parse_string(text)
        except InputError as e:
            raise bad_request("; ".join(p.message for p in e.problems)) from e
    fields = parse_field_selector(query.get("fieldSelector", ""), info)
    return Filter(namespace, labels, fields)


def wants_table(accept: str) -> str | None:
    """The meta.k8s.io version of a Table the client accepts first, or None."""
    for part in accept.split(","):
        params = {}
        for item in part.split(";")[1:]:
            key, _, value = item.strip().partition("=")
            params[key.strip()] = value.strip()
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return params.get("v", "v1")
        if part.split(";")[0].strip() in (JSON, "*/*", "application/*") and "as" not in params:
            return None
    return None


def encode_continue(rv: int, key: tuple[str, str]) -> str:
    raw = json.dumps({"rv": rv, "start": list(key)}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_continue(token: str) -> tuple[int, tuple[str, str]]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = loads_json(raw)
        return int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
    except (binascii.Error, ValueError, KeyError, IndexError, TypeError) as e:
        raise bad_request(f"invalid continue token: {e}") from e
