"""Who asked for what: the apiserver's identities (bearer tokens) and its audit log.

Kubernetes names the client of every request (a user from its token or certificate) and can
log each request's user, verb and resource (`--audit-log-path`). hexlane's embedded server
does the same, in a small way:

- `read_token_auth_file(path)` reads kube-apiserver's static token file format
  (`--token-auth-file`: one `token,user,uid[,"group1,group2"]` per line, `#` comments), so
  the lab can give its agents, operator and relay identities of their own
  (`system:serviceaccount:kube-system:hexlane`, ...), as a real cluster's service accounts;
- `AuditLog(path)` appends one JSON line per request: `user`, `verb` (Kubernetes' verbs: get,
  list, watch, create, update, patch, delete, deletecollection), `group`, `resource`,
  `subresource`, `namespace`, `name` and the answer's `code`. Writes go to a buffer that is
  flushed once a second and at stop, so logging costs a request no system call.

The server does not authorise by these identities (no RBAC here); the log is what
`tests/deploy/test_rbac_audit.py` checks the rendered ClusterRoles against.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path
from typing import IO, Any

from hexlane.model.errors import InputError, Problem

ADMIN_USER = "admin"  # the user of the server's own token (`--token-file`, DIR/token)
FLUSH_INTERVAL = 1.0  # seconds between flushes of the audit log's buffer
_BUFFER = 1 << 16


def read_token_auth_file(path: Path) -> dict[str, str]:
    """token -> user name, from a kube-apiserver static token file; InputError naming the
    file and line for a line without a token and a user."""
    try:
        text = path.read_text()
    except OSError as e:
        raise InputError(Problem(f"cannot read the token file: {e.strerror}",
                                 file=str(path))) from e
    tokens: dict[str, str] = {}
    for number, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or row[0].lstrip().startswith("#"):
            continue
        if len(row) < 2 or not row[0].strip() or not row[1].strip():
            raise InputError(Problem("expected token,user[,uid[,\"groups\"]]",
                                     file=f"{path}:{number}"))
        tokens[row[0].strip()] = row[1].strip()
    return tokens


class AuditLog:
    """Request records appended to a JSON-lines file through a buffer (see the module
    docstring). `start()` arms the periodic flush in the running loop; `close()` flushes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: IO[str] | None = open(path, "a", buffering=_BUFFER)  # noqa: SIM115
        self._timer: asyncio.TimerHandle | None = None
        # The JSON of (user, verb, group, resource, subresource, namespace), made once: a
        # client repeats the same few requests, and encoding whole records costs a request
        # a tenth of its time on a fast path.
        self._heads: dict[tuple[str, ...], str] = {}

    def start(self) -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            self.flush()
            self._timer = loop.call_later(FLUSH_INTERVAL, tick)

        self._timer = loop.call_later(FLUSH_INTERVAL, tick)

    def record(self, user: str, verb: str, group: str, resource: str, subresource: str,
               namespace: str, name: str, code: int) -> None:
        if self._file is None:
            return
        key = (user, verb, group, resource, subresource, namespace)
        head = self._heads.get(key)
        if head is None:
            if len(self._heads) > 10_000:  # bounded, whatever clients send
                self._heads.clear()
            head = self._heads[key] = json.dumps(
                dict(zip(("user", "verb", "group", "resource", "subresource", "namespace"),
                         key, strict=True)), separators=(",", ":"))[:-1]
        self._file.write(f'{head},"name":{json.dumps(name)},"code":{int(code)}}}\n')

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._file is not None:
            self._file.close()
            self._file = None


def read_audit_log(path: Path) -> list[dict[str, Any]]:
    """Every record of an audit log (a line cut short by a crash is skipped)."""
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
