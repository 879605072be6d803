"""Discovery and OpenAPI documents, as functions of the registry of served resources.

- `/version` reports v1.32 (`KUBE_VERSION`): the machine's kubectl is a dispatcher that runs
  the bundled client matching the server's minor version;
- `/api`, `/apis`, `/apis/<group>`, `/api/v1`, `/apis/<group>/<version>`: the legacy
  discovery documents (kubectl falls back to them from aggregated discovery);
- `/openapi/v3`: per group/version only the PATCH operations with their `fieldValidation`
  parameter, which is what kubectl looks for to leave field validation to the server
  instead of validating against downloaded schemas;
- `/openapi/v2`: an empty document (as protobuf for kubectl 1.20, which downloads it to
  validate manifests and skips kinds it does not describe).
"""

from __future__ import annotations

import hashlib
from typing import Any

from hexlane.apiserver.resources import Registry, ResourceInfo
from hexlane.apiserver.status import ApiError
from hexlane.apiserver.storage import dumps

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-hexlane",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"}


def _pb_string(field_number: int, text: str) -> bytes:
    """One length-delimited protobuf field (short values only: one-byte length)."""
    data = text.encode()
    assert len(data) < 128
    return bytes([field_number << 3 | 2, len(data)]) + data


# gnostic's openapi_v2.Document{swagger: "2.0", info: {title, version}}.
_INFO = _pb_string(1, "Kubernetes") + _pb_string(2, KUBE_VERSION["gitVersion"])
OPENAPI_V2_PROTOBUF = _pb_string(1, "2.0") + bytes([2 << 3 | 2, len(_INFO)]) + _INFO
OPENAPI_V2_PROTOBUF_TYPE = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


def _not_found() -> ApiError:
    return ApiError(404, "NotFound", "the server could not find the requested resource")


def api_versions(server_address: str) -> dict[str, Any]:
    """`/api`."""
    return {"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0",
                                            "serverAddress": server_address}]}


def api_group(registry: Registry, name: str) -> dict[str, Any] | None:
    """One group's entry (versions, preferred first), or None if no such group."""
    versions = registry.group_versions().get(name)
    if not versions:
        return None
    vs = [{"groupVersion": f"{name}/{v}", "version": v} for v in versions]
    return {"name": name, "versions": vs, "preferredVersion": vs[0]}


def api_group_list(registry: Registry) -> dict[str, Any]:
    """`/apis`."""
    groups = [g for g in (api_group(registry, n) for n in registry.group_versions()) if g]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def resource_list(registry: Registry, group: str, version: str) -> dict[str, Any]:
    """`/api/v1` or `/apis/<group>/<version>` (404 for an unknown group/version)."""
    infos = registry.resources(group, version)
    if not infos:
        raise _not_found()
    return {"kind": "APIResourceList", "apiVersion": "v1",
            "groupVersion": f"{group}/{version}" if group else version,
            "resources": [entry for info in infos for entry in info.discovery()]}


def _by_openapi_path(registry: Registry) -> dict[str, list[ResourceInfo]]:
    out: dict[str, list[ResourceInfo]] = {}
    for info in registry.all():
        key = f"apis/{info.group}/{info.version}" if info.group else f"api/{info.version}"
        out.setdefault(key, []).append(info)
    return out


def openapi_v3_index(registry: Registry) -> dict[str, Any]:
    """`/openapi/v3`: one URL per group/version, with a hash that changes with its content."""
    index = {}
    for key, infos in _by_openapi_path(registry).items():
        digest = hashlib.sha256(dumps(sorted((i.plural, i.kind, i.namespaced)
                                             for i in infos)).encode()).hexdigest()
        index[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest[:32]}"}
    return {"paths": index}


def openapi_v3(registry: Registry, key: str) -> dict[str, Any]:
    """`/openapi/v3/<api/v1 | apis/group/version>`: the PATCH operations, no schemas."""
    infos = _by_openapi_path(registry).get(key)
    if not infos:
        raise _not_found()
    paths: dict[str, Any] = {}
    for info in infos:
        prefix = f"/{key}/namespaces/{{namespace}}" if info.namespaced else f"/{key}"
        gvk = {"group": info.group, "version": info.version, "kind": info.kind}
        params = [{"name": n, "in": "query", "schema": {"type": "string"}}
                  for n in ("dryRun", "fieldManager", "fieldValidation", "force")]
        paths[f"{prefix}/{info.plural}/{{name}}"] = {"patch": {
            "operationId": f"patch{info.kind}", "parameters": params,
            "x-kubernetes-action": "patch", "x-kubernetes-group-version-kind": gvk,
            "responses": {"200": {"description": "OK"}}}}
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes", "version": "v1.32.0"},
            "paths": paths, "components": {"schemas": {}}}


def openapi_v2() -> dict[str, Any]:
    """`/openapi/v2` as JSON: no paths, no definitions."""
    return {"swagger": "2.0", "info": {"title": "Kubernetes",
                                       "version": KUBE_VERSION["gitVersion"]},
            "paths": {}, "definitions": {}}
