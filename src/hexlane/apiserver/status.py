"""Kubernetes `Status` objects and the error that carries one to the HTTP layer.

Every failure the apiserver reports is an `ApiError` holding the HTTP code, the reason
(`NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `Expired`, ...), a message worded like
Kubernetes' own, and optional details (name, group, kind, causes). Clients such as kubectl and
lightkube decide what to do from `reason` and `code`, so these must match Kubernetes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hexlane.apiserver.schema import cause_reason
from hexlane.model.errors import Problem


def status_object(code: int, reason: str, message: str,
                  details: dict[str, Any] | None = None) -> dict[str, Any]:
    """A `Status` of kind Failure (or Success for code < 400)."""
    out: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success" if code < 400 else "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }
    if code < 400:
        out.pop("reason")
    if details:
        out["details"] = details
    return out


class ApiError(Exception):
    """A request that fails with a Kubernetes `Status`."""

    def __init__(self, code: int, reason: str, message: str,
                 details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        return status_object(self.code, self.reason, self.message, self.details)


def _details(name: str, group: str, plural: str) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "kind": plural}
    if group:
        out["group"] = group
    return out


def _qualified(group: str, plural: str) -> str:
    return f"{plural}.{group}" if group else plural


def not_found(group: str, plural: str, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{_qualified(group, plural)} "{name}" not found',
                    _details(name, group, plural))


def already_exists(group: str, plural: str, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists",
                    f'{_qualified(group, plural)} "{name}" already exists',
                    _details(name, group, plural))


def conflict(group: str, plural: str, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict",
                    f'Operation cannot be fulfilled on {_qualified(group, plural)} "{name}": '
                    f"{why}", _details(name, group, plural))


STALE = ("the object has been modified; please apply your changes to the latest version and "
         "try again")


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def invalid(group: str, kind: str, name: str, problems: Sequence[Problem]) -> ApiError:
    """422 Invalid naming every bad field, as Kubernetes' field validation does."""
    causes = [{"reason": cause_reason(p), "message": p.message, "field": p.path}
              for p in problems]
    summary = ", ".join(f"{p.path}: {p.message}" if p.path else p.message for p in problems)
    details: dict[str, Any] = {"name": name, "kind": kind, "causes": causes}
    if group:
        details["group"] = group
    return ApiError(422, "Invalid", f'{kind}.{group or "core"} "{name}" is invalid: [{summary}]'
                    if len(problems) > 1 else
                    f'{kind}.{group or "core"} "{name}" is invalid: {summary}', details)
