"""Reading the few Kubernetes protobuf request bodies kubectl sends, as JSON-shaped dicts.

hexlane always answers JSON, but kubectl's typed commands (`kubectl create namespace`,
`create configmap|secret|serviceaccount|service|deployment`) send their body as
`application/vnd.kubernetes.protobuf` and client-go has no JSON fallback for it. The wire
format is Kubernetes' envelope (magic `k8s\\0`, then a `runtime.Unknown` holding apiVersion,
kind and the raw message) around the generated messages of `k8s.io/api`; this module decodes
that envelope and the messages of those kinds with a small table of field numbers (the
fields those commands set, and the common ones beside them; others are skipped). Other kinds
are refused with a message saying so (the server answers 415).
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"
MEDIA_TYPE = "application/vnd.kubernetes.protobuf"

# A message is {field number: (json name, type)}; a type is a scalar name ("string", "bytes",
# "int", "bool", "time", "intorstring"; "int*" and "bool*" for Go pointer fields, whose zero
# is kept), a nested message, ("map", value type) or ("list", element type).
Schema = dict[int, tuple[str, Any]]

_TIME: Schema = {1: ("seconds", "int"), 2: ("nanos", "int")}
_OWNER_REF: Schema = {1: ("kind", "string"), 3: ("name", "string"), 4: ("uid", "string"),
                      5: ("apiVersion", "string"), 6: ("controller", "bool*"),
                      7: ("blockOwnerDeletion", "bool*")}
_OBJECT_META: Schema = {
    1: ("name", "string"), 2: ("generateName", "string"), 3: ("namespace", "string"),
    5: ("uid", "string"), 6: ("resourceVersion", "string"), 7: ("generation", "int"),
    8: ("creationTimestamp", "time"), 10: ("deletionGracePeriodSeconds", "int*"),
    11: ("labels", ("map", "string")), 12: ("annotations", ("map", "string")),
    13: ("ownerReferences", ("list", _OWNER_REF)), 14: ("finalizers", ("list", "string")),
}
_OBJECT_REF: Schema = {1: ("kind", "string"), 2: ("namespace", "string"),
                       3: ("name", "string"), 4: ("uid", "string"),
                       5: ("apiVersion", "string"), 6: ("resourceVersion", "string"),
                       7: ("fieldPath", "string")}
_LABEL_SELECTOR: Schema = {
    1: ("matchLabels", ("map", "string")),
    2: ("matchExpressions", ("list", {1: ("key", "string"), 2: ("operator", "string"),
                                      3: ("values", ("list", "string"))})),
}
_CONTAINER_PORT: Schema = {1: ("name", "string"), 2: ("hostPort", "int"),
                           3: ("containerPort", "int"), 4: ("protocol", "string"),
                           5: ("hostIP", "string")}
_ENV_VAR: Schema = {1: ("name", "string"), 2: ("value", "string")}
_CONTAINER: Schema = {
    1: ("name", "string"), 2: ("image", "string"), 3: ("command", ("list", "string")),
    4: ("args", ("list", "string")), 5: ("workingDir", "string"),
    6: ("ports", ("list", _CONTAINER_PORT)), 7: ("env", ("list", _ENV_VAR)),
    14: ("imagePullPolicy", "string"),
}
_POD_SPEC: Schema = {
    2: ("containers", ("list", _CONTAINER)), 3: ("restartPolicy", "string"),
    4: ("terminationGracePeriodSeconds", "int*"), 6: ("dnsPolicy", "string"),
    7: ("nodeSelector", ("map", "string")), 8: ("serviceAccountName", "string"),
    10: ("nodeName", "string"), 11: ("hostNetwork", "bool"),
    20: ("initContainers", ("list", _CONTAINER)),
}
_INT_OR_STRING: Schema = {1: ("type", "int"), 2: ("intVal", "int"), 3: ("strVal", "string")}
_SERVICE_PORT: Schema = {1: ("name", "string"), 2: ("protocol", "string"), 3: ("port", "int"),
                         4: ("targetPort", "intorstring"), 5: ("nodePort", "int"),
                         6: ("appProtocol", "string")}
_SERVICE_SPEC: Schema = {
    1: ("ports", ("list", _SERVICE_PORT)), 2: ("selector", ("map", "string")),
    3: ("clusterIP", "string"), 4: ("type", "string"), 5: ("externalIPs", ("list", "string")),
    7: ("sessionAffinity", "string"), 8: ("loadBalancerIP", "string"),
    10: ("externalName", "string"), 11: ("externalTrafficPolicy", "string"),
}
KINDS: dict[str, Schema] = {
    "Namespace": {1: ("metadata", _OBJECT_META),
                  2: ("spec", {1: ("finalizers", ("list", "string"))}),
                  3: ("status", {1: ("phase", "string")})},
    "ConfigMap": {1: ("metadata", _OBJECT_META), 2: ("data", ("map", "string")),
                  3: ("binaryData", ("map", "bytes")), 4: ("immutable", "bool*")},
    "Secret": {1: ("metadata", _OBJECT_META), 2: ("data", ("map", "bytes")),
               3: ("type", "string"), 4: ("stringData", ("map", "string")),
               5: ("immutable", "bool*")},
    "Service": {1: ("metadata", _OBJECT_META), 2: ("spec", _SERVICE_SPEC)},
    "Deployment": {1: ("metadata", _OBJECT_META), 2: ("spec", {
        1: ("replicas", "int*"), 2: ("selector", _LABEL_SELECTOR),
        3: ("template", {1: ("metadata", _OBJECT_META), 2: ("spec", _POD_SPEC)}),
        5: ("minReadySeconds", "int"), 6: ("revisionHistoryLimit", "int*"),
        7: ("paused", "bool"), 9: ("progressDeadlineSeconds", "int*")})},
    "ServiceAccount": {1: ("metadata", _OBJECT_META), 2: ("secrets", ("list", _OBJECT_REF)),
                       3: ("imagePullSecrets", ("list", {1: ("name", "string")})),
                       4: ("automountServiceAccountToken", "bool*")},
}
_ENVELOPE: Schema = {1: ("typeMeta", {1: ("apiVersion", "string"), 2: ("kind", "string")}),
                     2: ("raw", "raw")}


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf message of a kind hexlane can read."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        if shift > 63:  # ten bytes at most: a longer run would build an unbounded integer
            raise ProtobufError("varint longer than 64 bits")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _fields(data: bytes) -> list[tuple[int, int, Any]]:
    """(field number, wire type, value) in order; length-delimited values stay bytes."""
    out = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if length > len(data) - pos:
                raise ProtobufError("truncated length-delimited field")
            value, pos = data[pos:pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos:pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos:pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, wire, value))
    return out


def _scalar(kind: Any, value: Any) -> Any:
    if kind in ("bool", "bool*", "int", "int*") and not isinstance(value, int):
        raise ProtobufError(f"a {kind.rstrip('*')} field sent as bytes")
    if kind not in ("bool", "bool*", "int", "int*") and not isinstance(value, bytes):
        # bytes(n) of a number would allocate n bytes
        raise ProtobufError("a length-delimited field sent as a number")
    if isinstance(kind, dict):
        return _message(value, kind)
    if kind == "string":
        return value.decode("utf-8")
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "raw":
        return value
    if kind in ("bool", "bool*"):
        return bool(value)
    if kind in ("int", "int*"):
        return value - (1 << 64) if value >= 1 << 63 else value
    if kind == "intorstring":  # intstr.IntOrString: type 0 is an int, 1 a string
        ios = _message(value, _INT_OR_STRING)
        return ios.get("strVal", "") if ios.get("type") == 1 else ios.get("intVal", 0)
    if kind == "time":
        seconds = _message(value, _TIME).get("seconds", 0)
        if not seconds:
            return None  # the zero time: Go writes null
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    raise ProtobufError(f"unknown field type {kind!r}")


def _message(data: bytes, schema: Schema) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for number, _wire, value in _fields(data):
        if number not in schema:
            continue  # a field hexlane does not read
        name, kind = schema[number]
        if isinstance(kind, tuple) and kind[0] == "map":
            if not isinstance(value, bytes):
                raise ProtobufError(f"{name}: a map entry sent as a number")
            entry = _message(value, {1: ("key", "string"), 2: ("value", kind[1])})
            out.setdefault(name, {})[entry.get("key", "")] = entry.get("value", "")
        elif isinstance(kind, tuple) and kind[0] == "list":
            out.setdefault(name, []).append(_scalar(kind[1], value))
        else:
            decoded = _scalar(kind, value)
            # proto2 carries non-pointer Go fields even when zero, and Go's JSON omits them
            # (omitempty); pointer fields ("int*", "bool*") keep an explicit zero.
            if decoded is None or (kind in ("string", "int", "bool") and not decoded):
                continue
            out[name] = decoded
    return out


def decode(body: bytes) -> dict[str, Any]:
    """The JSON form of a protobuf-encoded object of one of `KINDS`."""
    if not body.startswith(MAGIC):
        raise ProtobufError("not a Kubernetes protobuf message (no k8s magic prefix)")
    try:
        envelope = _message(body[len(MAGIC):], _ENVELOPE)
    except (ValueError, TypeError, OverflowError) as e:
        raise ProtobufError(f"not a valid Kubernetes protobuf envelope: {e}") from None
    type_meta = envelope.get("typeMeta", {})
    kind = type_meta.get("kind", "")
    schema = KINDS.get(kind)
    if schema is None:
        raise ProtobufError(f"hexlane reads protobuf bodies only for "
                            f"{', '.join(sorted(KINDS))}, not {kind or 'this kind'}; send "
                            "JSON (kubectl apply -f, or kubectl create -f FILE)")
    try:
        obj = _message(envelope.get("raw", b""), schema)
    except (ValueError, TypeError, OverflowError) as e:  # a field of the wrong wire type, ...
        raise ProtobufError(f"not a valid {kind} message: {e}") from None
    return {"apiVersion": type_meta.get("apiVersion", "v1"), "kind": kind, **obj}
