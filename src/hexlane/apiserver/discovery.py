"""Discovery documents, as functions of the registry of served resources.

- `/version` reports v1.32 (`KUBE_VERSION`): the machine's kubectl is a dispatcher that runs
  the bundled client matching the server's minor version;
- `/api`, `/apis`, `/apis/<group>`, `/api/v1`, `/apis/<group>/<version>`: the legacy
  discovery documents (kubectl falls back to them from aggregated discovery).

The OpenAPI documents (`/openapi/v2`, `/openapi/v3`) are `apiserver.openapi`'s.
"""

from __future__ import annotations

from typing import Any

from hexlane.apiserver.resources import Registry
from hexlane.apiserver.status import ApiError

KUBE_VERSION = {"major": "1", "minor": "32", "gitVersion": "v1.32.0-hexlane",
                "gitCommit": "0000000000000000000000000000000000000000",
                "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.23.0", "compiler": "gc", "platform": "linux/amd64"}


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
