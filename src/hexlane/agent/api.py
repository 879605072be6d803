"""The agent's local API: HTTP/1.1 + JSON on `$STATE_DIR/agent.sock` and `@hexlane-agent`.

The abstract socket belongs to the network namespace the agent runs in, so a CNI plugin or a
CLI started in a node's namespace reaches that node's agent with no configuration; the socket
file is the fallback for callers elsewhere. An abstract socket has no file permissions: any
process of the namespace (any local user, any hostNetwork pod) can connect. So every request,
on either socket, is served only to a caller that is root or holds CAP_NET_ADMIN, as the
kernel reports it (`SO_PEERCRED`, then the caller's effective capabilities); others get 403
with CNI error 103. A caller may send `callerNetns` (the "dev:inode"
of its network namespace): a CNI request from another namespace than the agent's is refused,
because the pod's host side would land in the wrong node.

Routes (errors are `{code, msg, details}` with CNI error codes, HTTP 4xx/5xx):

- `POST /v1/cni/add|del|check` body `{containerID, ifname, netns, network, args, prevResult}`;
  add answers the CNI result (1.1.0 shape; the plugin converts it to the caller's version).
- `POST /v1/cni/gc` body `{network, validAttachments: [{containerID, ifname}]}`.
- `GET /v1/cni/status`, `GET /v1/endpoints`, `GET /v1/healthz`;
- `GET /v1/status`: the agent's status document (`hexlane status`), when the daemon gives one.
- `GET /v1/identities`: the security identities this agent knows and its pods' (`hexlane identity
  list`, `hexlane endpoint list`), when the daemon gives them.

`serve_api(state_dir, manager, status=..., after_add=...)` is what the agent daemon wires in
(`after_add` runs after every successful ADD, before the answer leaves: the load balancer
attaches to the new veth). Until the endpoint manager exists, `serve_starting` answers on the
socket file alone: `/v1/status`, and every CNI call with "try again" (CNI error 11).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from hexlane.agent.endpoints import CNIError, CNIRequest, EndpointManager
from hexlane.cnispec import (
    ERR_INVALID_CONFIG,
    ERR_NOT_AVAILABLE,
    ERR_PERMISSION,
    ERR_SETUP_FAILED,
)
from hexlane.inputlimits import loads_json
from hexlane.peercred import peer, privileged

log = logging.getLogger("hexlane.agent.api")

SOCKET_NAME = "agent.sock"
ABSTRACT_NAME = "hexlane-agent"

_MANAGER = web.AppKey("endpoint_manager", EndpointManager)
_AFTER_ADD: web.AppKey[Callable[[], None]] = web.AppKey("after_add")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
StatusFunc = Callable[[], Awaitable[Mapping[str, Any]]]


def _error(err: CNIError) -> web.Response:
    status = 403 if err.code == ERR_PERMISSION else 400 if err.code < 50 else \
        503 if err.code in (11, 50) else 500
    return web.json_response(err.to_dict(), status=status)


async def _body(request: web.Request, manager: EndpointManager) -> dict[str, Any]:
    try:
        body = loads_json(await request.read())
    except ValueError as err:
        raise CNIError(ERR_INVALID_CONFIG, "request body is not JSON", str(err)) from None
    if not isinstance(body, dict):
        raise CNIError(ERR_INVALID_CONFIG, "request body must be a JSON object")
    caller = body.get("callerNetns")
    if caller and manager.netns_id and caller != manager.netns_id:
        raise CNIError(ERR_NOT_AVAILABLE, "agent of another network namespace",
                       "this agent serves the node whose network namespace is "
                       f"{manager.netns_id}; the caller runs in {caller}")
    return body


def _caller(request: web.Request) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of the request's UNIX socket."""
    transport = request.transport
    return peer(transport.get_extra_info("socket") if transport is not None else None)


@web.middleware
async def _privileged_callers_only(request: web.Request, handler: Handler
                                   ) -> web.StreamResponse:
    caller = _caller(request)
    if caller is not None:
        pid, uid = caller
        if not privileged(pid, uid):
            log.warning("%s %s refused: caller pid %d uid %d is neither root nor holds "
                        "CAP_NET_ADMIN", request.method, request.path, pid, uid)
            return _error(CNIError(ERR_PERMISSION, "permission denied",
                                   f"the agent's API serves root or CAP_NET_ADMIN only; the "
                                   f"caller (pid {pid}) runs as uid {uid}"))
    return await handler(request)


def _handles_cni_errors(handler: Handler) -> Handler:
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except CNIError as err:
            log.info("%s %s: CNI error %s", request.method, request.path, err)
            return _error(err)
        except Exception as err:  # an agent bug must still reach the runtime as a CNI error
            log.exception("%s %s failed", request.method, request.path)
            return _error(CNIError(ERR_SETUP_FAILED, "hexlane agent failed",
                                   f"{type(err).__name__}: {err}"))
    return wrapped


@_handles_cni_errors
async def _add(request: web.Request) -> web.StreamResponse:
    manager = request.app[_MANAGER]
    body = await _body(request, manager)
    result = await manager.add(CNIRequest.from_json(body, need_netns=True))
    request.app[_AFTER_ADD]()
    return web.json_response(result)


@_handles_cni_errors
async def _del(request: web.Request) -> web.StreamResponse:
    manager = request.app[_MANAGER]
    body = await _body(request, manager)
    removed = await manager.delete(CNIRequest.from_json(body, need_netns=False))
    return web.json_response({"removed": removed})


@_handles_cni_errors
async def _check(request: web.Request) -> web.StreamResponse:
    manager = request.app[_MANAGER]
    body = await _body(request, manager)
    await manager.check(CNIRequest.from_json(body, need_netns=True))
    return web.json_response({})


@_handles_cni_errors
async def _gc(request: web.Request) -> web.StreamResponse:
    manager = request.app[_MANAGER]
    body = await _body(request, manager)
    valid = body.get("validAttachments") or []
    if not isinstance(valid, list) or not all(isinstance(v, dict) for v in valid):
        raise CNIError(ERR_INVALID_CONFIG, "validAttachments must be a list of objects")
    pairs = [(str(v.get("containerID", "")), str(v.get("ifname", ""))) for v in valid]
    removed = await manager.gc(str(body.get("network") or ""), pairs)
    return web.json_response({"removed": removed})


async def _status(request: web.Request) -> web.StreamResponse:
    status = request.app[_MANAGER].status()
    if not status["ready"]:
        reason = "no free pod IP" if status["freeIPs"] <= 0 else "agent starting"
        err = CNIError(ERR_NOT_AVAILABLE, "hexlane agent not ready", reason).to_dict()
        return web.json_response({**err, "status": status}, status=503)
    return web.json_response(status)


async def _endpoints(request: web.Request) -> web.StreamResponse:
    return web.json_response(request.app[_MANAGER].list_endpoints())


async def _healthz(request: web.Request) -> web.StreamResponse:
    manager = request.app[_MANAGER]
    ok = manager.started
    return web.json_response({"status": "ok" if ok else "starting", **manager.status()},
                             status=200 if ok else 503)


def _status_route(app: web.Application, status: StatusFunc) -> None:
    async def handler(_request: web.Request) -> web.StreamResponse:
        return web.json_response(await status())

    app.router.add_get("/v1/status", handler)


def add_routes(app: web.Application, manager: EndpointManager,
               after_add: Callable[[], None] = lambda: None) -> None:
    """Put the endpoint routes on `app`."""
    app[_MANAGER] = manager
    app[_AFTER_ADD] = after_add
    app.router.add_post("/v1/cni/add", _add)
    app.router.add_post("/v1/cni/del", _del)
    app.router.add_post("/v1/cni/check", _check)
    app.router.add_post("/v1/cni/gc", _gc)
    app.router.add_get("/v1/cni/status", _status)
    app.router.add_get("/v1/endpoints", _endpoints)
    app.router.add_get("/v1/healthz", _healthz)


class ApiServer:
    """The running API; `close()` stops serving and removes the socket file."""

    def __init__(self, runner: web.AppRunner, socket_path: Path) -> None:
        self.runner = runner
        self.socket_path = socket_path

    async def close(self) -> None:
        await self.runner.cleanup()
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()


def _abstract_socket(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"abstract socket @{name} is taken in this network namespace "
                                 "(is another agent running here?)") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


class PolicyApi(Protocol):
    """What `/v1/policy` and `/v1/policy/trace` answer from (agent/policy.py)."""

    def document(self) -> dict[str, Any]: ...

    def rules(self) -> dict[str, Any]: ...

    def trace(self, src: str, dst: str, port: int, protocol: str) -> Any: ...


def _policy_routes(app: web.Application, policy: PolicyApi) -> None:
    async def rules(_request: web.Request) -> web.StreamResponse:
        return web.json_response({**policy.document(), "rules": policy.rules()})

    async def trace(request: web.Request) -> web.StreamResponse:
        q = request.query
        dport = q.get("dport", "")
        port_text, _, proto = dport.partition("/")
        proto = (proto or "TCP").upper()
        if not port_text.isdigit() or proto not in ("TCP", "UDP", "SCTP", "ICMP") or \
                not q.get("src") or not q.get("dst"):
            return web.json_response(
                {"error": "want src=NS/POD, dst=NS/POD and dport=PORT[/TCP|UDP|SCTP|ICMP] "
                          "(ICMP: the port is the ICMP type)"}, status=400)
        try:
            result = policy.trace(q["src"], q["dst"], int(port_text), proto)
        except KeyError as err:
            return web.json_response({"error": str(err.args[0])}, status=404)
        return web.json_response(result.to_dict())

    app.router.add_get("/v1/policy", rules)
    app.router.add_get("/v1/policy/trace", trace)


async def serve_api(state_dir: Path, manager: EndpointManager, *,
                    abstract_name: str | None = ABSTRACT_NAME,
                    status: StatusFunc | None = None,
                    identities: Callable[[], dict[str, Any]] | None = None,
                    policy: PolicyApi | None = None,
                    after_add: Callable[[], None] = lambda: None) -> ApiServer:
    """Serve the endpoint API on `state_dir/agent.sock` and `@abstract_name` (this netns);
    `/v1/identities` answers `identities()` (the security identities, when given)."""
    app = web.Application(middlewares=[_privileged_callers_only])
    if status is not None:
        _status_route(app, status)
    if identities is not None:
        ident = identities

        async def identities_handler(_request: web.Request) -> web.StreamResponse:
            return web.json_response(ident())

        app.router.add_get("/v1/identities", identities_handler)
    if policy is not None:
        _policy_routes(app, policy)
    add_routes(app, manager, after_add)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = Path(state_dir) / SOCKET_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if abstract_name:
            await web.SockSite(runner, _abstract_socket(abstract_name)).start()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket from an agent that died
        await web.UnixSite(runner, str(path)).start()
        os.chmod(path, 0o600)
    except BaseException:
        await runner.cleanup()
        raise
    return ApiServer(runner, path)


async def serve_starting(state_dir: Path, status: StatusFunc,
                         waiting_for: Callable[[], str]) -> web.AppRunner:
    """Before the endpoint manager exists: the socket file answers `/v1/status`, and every
    CNI call with "try again" (CNI error 11) saying what the agent waits for."""
    async def starting(_request: web.Request) -> web.Response:
        return web.json_response({"code": 11, "msg": "hexlane agent starting",
                                  "details": f"waiting for {waiting_for()}"}, status=503)

    app = web.Application(middlewares=[_privileged_callers_only])
    _status_route(app, status)
    app.router.add_route("*", "/{tail:.*}", starting)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    path = state_dir / SOCKET_NAME
    path.unlink(missing_ok=True)
    await web.UnixSite(runner, str(path)).start()
    return runner
