"""The HTTP face of the embedded apiserver: Kubernetes' REST paths over aiohttp.

Routing follows Kubernetes: `/api/v1/...` for the core group, `/apis/<group>/<version>/...`
for the others, `namespaces/<ns>/` before namespaced resources, `/status` subresources, and
the legacy `/watch/` prefix. Reads (get, list, watch) are served from the store's in-memory
copy; writes go through `Store.transact` and are answered once durable. Discovery (`/api`,
`/apis`, resource lists), `/version` (v1.32 so kubectl's dispatcher picks a 1.32 client),
`/openapi/v3` (just enough for kubectl to see that the server validates fields itself) and
`/metrics` (request counts by verb) are served beside the resources.

What kubectl and lightkube look at is kept Kubernetes-shaped: `Status` errors with reason and
code, list metadata (resourceVersion, continue), watch streams of newline-delimited JSON with
BOOKMARK events and a 410 `Expired` ERROR event for a resourceVersion older than the kept
history, and `Table` responses when the client asks for `as=Table`.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import hmac
import itertools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from hexlane.apiserver import bootstrap, discovery, openapi, protobuf, validation
from hexlane.apiserver import patch as patching
from hexlane.apiserver.audit import ADMIN_USER, AuditLog
from hexlane.apiserver.objects import DeleteOptions, Rules, Target, scale_of
from hexlane.apiserver.query import (
    JSON,
    FieldRequirement,
    Filter,
    decode_continue,
    encode_continue,
    filter_from,
    truthy,
    wants_table,
)
from hexlane.apiserver.resources import CRD_KEY, Registry, ResourceInfo
from hexlane.apiserver.status import ApiError, bad_request, expired, not_found, status_object
from hexlane.apiserver.storage import ADDED, DELETED, MODIFIED, Event, Store, Stored, dumps
from hexlane.apiserver.tables import to_table
from hexlane.inputlimits import MAX_REQUEST_BYTES, loads_json
from hexlane.model.errors import InputError
from hexlane.model.manifests import load_yaml_document

log = logging.getLogger(__name__)

DEFAULT_WATCH_TIMEOUT = 1800.0
_YAML = "application/yaml"


def _unsupported_media_type(accepted: tuple[str, ...]) -> ApiError:
    return ApiError(415, "UnsupportedMediaType", "the body of the request was in an unknown "
                    f"format - accepted media types include: {', '.join(accepted)}")


@dataclass(frozen=True, slots=True)
class ServerConfig:
    """How one apiserver runs (the CLI fills it from its flags)."""

    data_dir: Path
    host: str = "127.0.0.1"
    port: int = 6443
    token: str | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    service_cidr: str = "10.43.0.0/16"
    watch_history: int = 10000
    bookmark_interval: float = 60.0
    advertise_address: str | None = None
    # More identities: token -> user (`--token-auth-file`); `token` is ADMIN_USER's.
    tokens: Mapping[str, str] = field(default_factory=dict)
    audit_log: Path | None = None  # one JSON line per API request (hexlane.apiserver.audit)

    @property
    def database(self) -> Path:
        return self.data_dir / "state.db"


# --- request parsing ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ResourcePath:
    info: ResourceInfo
    namespace: str
    name: str
    subresource: str
    watch_prefix: bool


# --- metrics --------------------------------------------------------------------------------


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "apiserver_request", "API requests by verb, resource and HTTP code",
            ["verb", "group", "resource", "code"], registry=self.registry)
        self.watchers = Gauge("apiserver_registered_watchers", "Open watch streams",
                              registry=self.registry)
        self.write_seconds = Counter("apiserver_write_seconds",
                                     "Seconds spent waiting for durable writes",
                                     registry=self.registry)
        self._requests: dict[tuple[str, str, str, int], Any] = {}

    def request(self, verb: str, group: str, resource: str, code: int) -> Any:
        """The request counter of these labels (looked up once: `labels()` checks and locks
        on every call, a cost every request would pay)."""
        key = (verb, group, resource, code)
        child = self._requests.get(key)
        if child is None:
            child = self._requests[key] = self.requests.labels(verb, group, resource, str(code))
        return child


# --- the server ---------------------------------------------------------------------------


class ApiServer:
    """One apiserver: its store, registry, object rules and aiohttp application."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.store = Store(config.database, history=config.watch_history)
        self.registry = Registry()
        self.rules = Rules(service_cidr=config.service_cidr)
        self.metrics = Metrics()
        self.app = web.Application(middlewares=[self._middleware],
                                   client_max_size=MAX_REQUEST_BYTES)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.app.on_startup.append(self._on_startup)
        self.app.on_cleanup.append(self._on_cleanup)
        self.runner: web.AppRunner | None = None
        self.bound_port = config.port
        self.audit = AuditLog(config.audit_log) if config.audit_log is not None else None
        self._users = {f"Bearer {t}".encode(): user for t, user in config.tokens.items()}
        if config.token is not None:
            self._users[f"Bearer {config.token}".encode()] = ADMIN_USER
        self._watch_tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    async def _on_startup(self, app: web.Application) -> None:
        validation.compile_builtin()
        await self.store.start()
        if self.audit is not None:
            self.audit.start()
        for stored in list(self.store.objects.get(CRD_KEY, {}).values()):
            self.registry.set_crd(stored.obj["metadata"]["name"], stored.obj)
        self.store.listeners.append(self._on_event)

    async def _on_cleanup(self, app: web.Application) -> None:
        self._stopping.set()
        await self.store.stop()
        if self.audit is not None:
            self.audit.close()

    def _on_event(self, ev: Event) -> None:
        if ev.resource == CRD_KEY:
            self.registry.set_crd(ev.name, None if ev.type == DELETED else ev.obj)

    async def start(self) -> None:
        """Listen, then bootstrap (namespaces, CRDs, the kubernetes Service)."""
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False,
                                    shutdown_timeout=1.0)
        await self.runner.setup()
        ssl_ctx = None
        if self.config.tls_cert and self.config.tls_key:
            ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ssl_ctx.load_cert_chain(str(self.config.tls_cert), str(self.config.tls_key))
        site = web.TCPSite(self.runner, self.config.host, self.config.port, ssl_context=ssl_ctx,
                           backlog=1024, reuse_address=True)
        await site.start()
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.bound_port = int(sockets[0].getsockname()[1])
        await self.store.transact(lambda txn: bootstrap.bootstrap(
            txn, self.rules, self.registry, advertise=self.advertise_address,
            port=self.bound_port))

    async def stop(self) -> None:
        self._stopping.set()
        for task in list(self._watch_tasks):
            task.cancel()
        if self.runner is not None:
            await self.runner.cleanup()
            self.runner = None

    @property
    def advertise_address(self) -> str:
        if self.config.advertise_address:
            return self.config.advertise_address
        if self.config.host in ("", "0.0.0.0", "::"):
            return "127.0.0.1"
        return self.config.host

    @property
    def url(self) -> str:
        scheme = "https" if self.config.tls_cert else "http"
        host = self.advertise_address if self.config.host in ("", "0.0.0.0", "::") \
            else self.config.host
        if ":" in host:
            host = f"[{host}]"
        return f"{scheme}://{host}:{self.bound_port}"

    # -- plumbing ----------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                          ) -> web.StreamResponse:
        if self._users:
            user = self._user(request.headers.get("Authorization", "").encode())
            if user is None:
                return self._json(status_object(401, "Unauthorized", "Unauthorized"), 401)
            request["user"] = user
        try:
            return await handler(request)
        except ApiError as e:
            return self._json(e.status(), e.code)
        except web.HTTPException:
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            raise
        except Exception as e:  # a bug must become a 500 Status, never a dropped connection
            log.exception("internal error serving %s %s", request.method, request.path)
            return self._json(status_object(500, "InternalError", f"Internal error: {e}"), 500)

    def _user(self, given: bytes) -> str | None:
        """The user of an Authorization header, compared in constant time with every
        token (a client learns nothing from how long a refusal took)."""
        found = None
        for header, user in self._users.items():
            if hmac.compare_digest(given, header):
                found = user
        return found

    @staticmethod
    def _json(body: Any, status: int = 200) -> web.Response:
        text = body if isinstance(body, str) else dumps(body)
        # body=, not text=: aiohttp would add "; charset=utf-8", and lightkube turns an error into
        # its ApiError only for exactly "application/json", which is what Kubernetes sends.
        return web.Response(body=text.encode(), status=status, content_type=JSON)

    def _count(self, verb: str, info: ResourceInfo | None, code: int,
               request: web.Request | None = None, rp: ResourcePath | None = None) -> None:
        self.metrics.request(verb, info.group if info else "", info.plural if info else "",
                             code).inc()
        if self.audit is not None and request is not None and rp is not None:
            self.audit.record(user=request.get("user", ""), verb=verb, group=rp.info.group,
                              resource=rp.info.plural, subresource=rp.subresource,
                              namespace=rp.namespace, name=rp.name, code=code)

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        segs = [s for s in path.split("/") if s]
        if path in ("/healthz", "/livez", "/readyz"):
            return web.Response(text="ok")
        if path == "/version":
            return self._json(discovery.KUBE_VERSION)
        if path == "/metrics":
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})
        if segs and segs[0] == "openapi":
            return self._openapi(request, segs)
        if segs and segs[0] == "api":
            if len(segs) == 1:
                return self._json(discovery.api_versions(
                    f"{self.advertise_address}:{self.bound_port}"))
            return await self._api(request, "", segs[1], segs[2:])
        if segs and segs[0] == "apis":
            if len(segs) == 1:
                return self._json(discovery.api_group_list(self.registry))
            if len(segs) == 2:
                group = discovery.api_group(self.registry, segs[1])
                if group is None:
                    raise ApiError(404, "NotFound", "the server could not find the requested "
                                   "resource")
                return self._json({"kind": "APIGroup", "apiVersion": "v1", **group})
            return await self._api(request, segs[1], segs[2], segs[3:])
        raise ApiError(404, "NotFound", "the server could not find the requested resource")

    # -- discovery ---------------------------------------------------------------------------

    def _openapi(self, request: web.Request, segs: list[str]) -> web.Response:
        if segs[1:] == ["v2"]:
            if "protobuf" in request.headers.get("Accept", ""):
                return web.Response(body=openapi.openapi_v2_protobuf(),
                                    content_type=openapi.OPENAPI_V2_PROTOBUF_TYPE)
            return self._json(openapi.openapi_v2())
        if segs[1:2] != ["v3"]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if len(segs) == 2:
            return self._json(openapi.openapi_v3_index(self.registry))
        return self._json(openapi.openapi_v3(self.registry, "/".join(segs[2:])))

    # -- resources ---------------------------------------------------------------------------

    def _resolve(self, group: str, version: str, rest: list[str]) -> ResourcePath | None:
        watch_prefix = bool(rest) and rest[0] == "watch"
        if watch_prefix:
            rest = rest[1:]
        if not rest:
            return None
        namespace = ""
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        info = self.registry.lookup(group, version, rest[0])
        if info is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        name = rest[1] if len(rest) > 1 else ""
        sub = rest[2] if len(rest) > 2 else ""
        if namespace and not info.namespaced:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if sub and not (sub == "status" and info.has_status) and \
                not (sub == "finalize" and info.storage_key == "core/namespaces") and \
                not (sub == "binding" and info.storage_key == "core/pods") and \
                not (sub == "scale" and info.storage_key == "apps/deployments"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        return ResourcePath(info, namespace, name, sub, watch_prefix)

    async def _api(self, request: web.Request, group: str, version: str,
                   rest: list[str]) -> web.StreamResponse:
        if not rest:
            if request.method != "GET":
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method")
            return self._json(discovery.resource_list(self.registry, group, version))
        rp = self._resolve(group, version, rest)
        if rp is None:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        method = request.method
        info = rp.info
        verb = ""
        code = 500
        try:
            if method == "GET":
                if rp.name and not rp.watch_prefix:
                    verb = "get"
                    resp = self._get(request, rp)
                elif rp.watch_prefix or truthy(request.query.get("watch")):
                    verb = "watch"
                    self._count(verb, info, 200, request, rp)
                    return await self._watch(request, rp)
                else:
                    verb = "list"
                    resp = await self._list(request, rp)
            elif method == "POST" and not rp.name:
                verb = "create"
                resp = await self._create(request, rp)
            elif method == "POST" and rp.subresource == "binding":
                verb = "create"
                resp = await self._bind(request, rp)
            elif method in ("PUT", "PATCH") and rp.subresource == "scale":
                verb = "update" if method == "PUT" else "patch"
                resp = await self._scale(request, rp)
            elif method == "PUT" and rp.name:
                verb = "update"
                resp = await self._update(request, rp)
            elif method == "PATCH" and rp.name:
                verb = "patch"
                resp = await self._patch(request, rp)
            elif method == "DELETE":
                verb = "delete" if rp.name else "deletecollection"
                resp = await (self._delete(request, rp) if rp.name
                              else self._delete_collection(request, rp))
            else:
                raise ApiError(405, "MethodNotAllowed", "the server does not allow this method "
                               "on the requested resource")
            code = resp.status
            return resp
        except ApiError as e:
            code = e.code
            raise
        finally:
            if verb != "watch":
                self._count(verb or method.lower(), info, code, request, rp)

    def _present(self, rp: ResourcePath, obj: dict[str, Any]) -> dict[str, Any]:
        """The object as the requested version shows it (custom resources: apiVersion)."""
        info = rp.info
        if info.storage_version and obj.get("apiVersion") != info.group_version:
            return {**obj, "apiVersion": info.group_version}
        return obj

    def _written(self, rp: ResourcePath, obj: dict[str, Any], status: int = 200
                 ) -> web.Response:
        """The answer to a write: the JSON the store made of `obj` when it is the stored
        object (no second encoding), else `obj` encoded (a dry run, a write of nothing)."""
        meta = obj.get("metadata") or {}
        stored = self.store.get(rp.info.storage_key, meta.get("namespace", ""),
                                meta.get("name", ""))
        if stored is not None and stored.obj is obj:
            return self._json(self._raw(rp, stored), status)
        return self._json(self._present(rp, obj), status)

    def _raw(self, rp: ResourcePath, stored: Stored) -> str:
        info = rp.info
        if info.storage_version and stored.obj.get("apiVersion") != info.group_version:
            return dumps(self._present(rp, stored.obj))
        return stored.raw

    def _table(self, rp: ResourcePath, objs: list[dict[str, Any]], request: web.Request,
               version: str) -> dict[str, Any]:
        # kubectl hides priority columns itself unless -o wide, so always send them all.
        info = rp.info
        include = request.query.get("includeObject", "Metadata")
        table = to_table(info.kind, [self._present(rp, o) for o in objs], wide=True,
                         crd_columns=list(info.printer_columns) if info.is_custom else None,
                         now=datetime.now(UTC), include_object=include)
        table["apiVersion"] = f"meta.k8s.io/{version}"
        for row in table.get("rows", []):
            obj = row.get("object")
            if isinstance(obj, dict) and obj.get("kind") == "PartialObjectMetadata":
                obj["apiVersion"] = f"meta.k8s.io/{version}"
        return table

    def _get(self, request: web.Request, rp: ResourcePath) -> web.Response:
        stored = self.store.get(rp.info.storage_key, rp.namespace, rp.name)
        if stored is None:
            raise not_found(rp.info.group, rp.info.plural, rp.name)
        if rp.subresource == "scale":
            return self._json(scale_of(stored.obj))
        table_version = wants_table(request.headers.get("Accept", ""))
        if table_version:
            return self._json(self._table(rp, [stored.obj], request, table_version))
        return self._json(self._raw(rp, stored))

    async def _wait_for_rv(self, rv: int) -> None:
        deadline = time.monotonic() + 3.0
        while self.store.rv < rv:
            if time.monotonic() > deadline:
                raise ApiError(504, "Timeout", f"Too large resource version: {rv}, current: "
                               f"{self.store.rv}", {"causes": [{
                                   "reason": "ResourceVersionTooLarge",
                                   "message": "Too large resource version"}],
                                   "retryAfterSeconds": 1})
            await asyncio.sleep(0.01)

    def _snapshot(self, resource: str, rv: int, namespace: str = "",
                  after: tuple[str, str] | None = None
                  ) -> Iterator[tuple[tuple[str, str], Stored]]:
        """(key, object) in key order as the resource was at `rv` (current if rv is now),
        only in `namespace` when given, only keys after `after` when given."""
        objs: Mapping[tuple[str, str], Stored | None] = self.store.objects.get(resource, {})
        if rv >= self.store.rv:
            keys = self.store.sorted_keys(resource)
        else:
            if rv < self.store.compacted:
                raise expired(f"too old resource version: {rv} ({self.store.compacted})")
            overrides = self.store.state_at(resource, rv)
            keys = sorted(set(self.store.sorted_keys(resource)) | set(overrides))
            objs = {**objs, **overrides}
        lo = 0
        if namespace:
            lo = bisect.bisect_left(keys, (namespace, ""))
        if after is not None:
            lo = max(lo, bisect.bisect_right(keys, after))
        for key in itertools.islice(keys, lo, None):
            if namespace and key[0] != namespace:
                break
            stored = objs.get(key)
            if stored is not None:
                yield key, stored

    async def _list(self, request: web.Request, rp: ResourcePath) -> web.Response:
        info = rp.info
        q = request.query
        filt = filter_from(request.query, info, rp.namespace)
        limit = int(q.get("limit") or 0) if (q.get("limit") or "0").isdigit() else 0
        token = q.get("continue", "")
        start: tuple[str, str] | None = None
        if token:
            list_rv, start = decode_continue(token)
            if list_rv < self.store.compacted:
                raise expired("The provided continue parameter is too old to display a "
                              "consistent list result. You can start a new list without the "
                              "continue parameter.")
        else:
            list_rv = self.store.rv
            rv_param = q.get("resourceVersion", "")
            if rv_param and rv_param != "0":
                if not rv_param.isdigit():
                    raise bad_request(f"invalid resource version: {rv_param}")
                wanted = int(rv_param)
                if q.get("resourceVersionMatch") == "Exact":
                    list_rv = wanted
                await self._wait_for_rv(wanted)
        items: list[Stored] = []
        more = 0
        next_key: tuple[str, str] | None = None
        for key, stored in self._snapshot(info.storage_key, list_rv, rp.namespace, start):
            if not filt.only_namespace and not filt.matches(stored.obj):
                continue
            if limit and len(items) >= limit:
                more += 1
                continue
            items.append(stored)
            next_key = key
        meta: dict[str, Any] = {"resourceVersion": str(list_rv)}
        if more and next_key is not None:
            meta["continue"] = encode_continue(list_rv, next_key)
            meta["remainingItemCount"] = more
        table_version = wants_table(request.headers.get("Accept", ""))
        if table_version:
            table = self._table(rp, [s.obj for s in items], request, table_version)
            table["metadata"] = meta
            return self._json(table)
        head = dumps({"kind": f"{info.kind}List", "apiVersion": info.group_version,
                      "metadata": meta})
        body = head[:-1] + ',"items":[' + ",".join(self._raw(rp, s) for s in items) + "]}"
        return self._json(body)

    async def _body(self, request: web.Request, *, patch: bool = False) -> Any:
        """The decoded request body (None when empty), within the input limits.

        As Kubernetes: no Content-Type means JSON; a media type it does not read is 415; a
        body over 3 MiB is 413; a body that does not decode is 400."""
        ctype = patching.media_type(request.headers.get("Content-Type", ""))
        if patch:
            if ctype not in (*patching.PATCH_TYPES, patching.APPLY_PATCH):
                raise _unsupported_media_type((*patching.PATCH_TYPES, patching.APPLY_PATCH))
        elif ctype not in ("", JSON, _YAML, protobuf.MEDIA_TYPE):
            raise _unsupported_media_type((JSON, _YAML, protobuf.MEDIA_TYPE))
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge as e:
            raise ApiError(413, "RequestEntityTooLarge", "Request entity too large: limit is "
                           f"{MAX_REQUEST_BYTES}") from e
        if not raw:
            return None
        try:
            if ctype in (_YAML, patching.APPLY_PATCH):
                return load_yaml_document(raw.decode(), "the request body")
            if ctype == protobuf.MEDIA_TYPE:
                return protobuf.decode(raw)
            return loads_json(raw)
        except protobuf.ProtobufError as e:
            raise ApiError(415, "UnsupportedMediaType", str(e)) from e
        except InputError as e:
            raise bad_request("; ".join(p.message for p in e.problems)) from e
        except ValueError as e:
            raise bad_request(f"the request body is not valid JSON: {e}") from e

    @staticmethod
    def _dry_run(request: web.Request) -> bool:
        return "All" in request.query.getall("dryRun", [])

    @staticmethod
    def _strict(request: web.Request) -> bool:
        return request.query.get("fieldValidation", "") == "Strict"

    async def _create(self, request: web.Request, rp: ResourcePath) -> web.Response:
        body = await self._body(request)
        target = Target(rp.info, rp.namespace)
        dry, strict = self._dry_run(request), self._strict(request)
        obj = await self.store.transact(
            lambda txn: self.rules.create(txn, target, body, dry_run=dry, strict=strict))
        return self._written(rp, obj, 201)

    async def _bind(self, request: web.Request, rp: ResourcePath) -> web.Response:
        """POST pods/<name>/binding: what a scheduler does to put a Pod on a node."""
        body = await self._body(request)
        target = Target(rp.info, rp.namespace, rp.name)
        await self.store.transact(lambda txn: self.rules.bind(txn, target, body))
        return self._json(status_object(201, "", "Success"), 201)

    async def _scale(self, request: web.Request, rp: ResourcePath) -> web.Response:
        """PUT or PATCH deployments/<name>/scale: an autoscaling/v1 Scale of spec.replicas."""
        body = await self._body(request, patch=request.method == "PATCH")
        ctype = request.headers.get("Content-Type", "") if request.method == "PATCH" else ""
        target = Target(rp.info, rp.namespace, rp.name)
        obj = await self.store.transact(lambda txn: self.rules.scale(txn, target, body, ctype))
        return self._json(scale_of(obj))

    async def _update(self, request: web.Request, rp: ResourcePath) -> web.Response:
        body = await self._body(request)
        target = Target(rp.info, rp.namespace, rp.name)
        dry, strict = self._dry_run(request), self._strict(request)
        obj = await self.store.transact(lambda txn: self.rules.update(
            txn, target, body, subresource=rp.subresource, dry_run=dry, strict=strict))
        return self._written(rp, obj)

    async def _patch(self, request: web.Request, rp: ResourcePath) -> web.Response:
        ctype = request.headers.get("Content-Type", "")
        body = await self._body(request, patch=True)
        target = Target(rp.info, rp.namespace, rp.name)
        dry, strict = self._dry_run(request), self._strict(request)
        obj = await self.store.transact(lambda txn: self.rules.patch(
            txn, target, body, ctype, subresource=rp.subresource, dry_run=dry, strict=strict))
        return self._written(rp, obj)

    def _delete_options(self, request: web.Request, body: Any) -> DeleteOptions:
        opts = body if isinstance(body, dict) else {}
        grace = opts.get("gracePeriodSeconds", request.query.get("gracePeriodSeconds"))
        pre = opts.get("preconditions") or {}
        dry = self._dry_run(request) or "All" in (opts.get("dryRun") or [])
        try:
            grace_int = None if grace in (None, "") else int(grace)
        except (TypeError, ValueError) as e:
            raise bad_request(f"invalid gracePeriodSeconds: {grace!r}") from e
        return DeleteOptions(grace_period=grace_int, uid=pre.get("uid"),
                             resource_version=pre.get("resourceVersion"), dry_run=dry)

    async def _delete(self, request: web.Request, rp: ResourcePath) -> web.Response:
        opts = self._delete_options(request, await self._body(request))
        target = Target(rp.info, rp.namespace, rp.name)
        obj = await self.store.transact(lambda txn: self.rules.delete(txn, target, opts))
        return self._json(self._present(rp, obj))

    async def _delete_collection(self, request: web.Request, rp: ResourcePath) -> web.Response:
        opts = self._delete_options(request, await self._body(request))
        filt = filter_from(request.query, rp.info, rp.namespace)
        names = [key for key, stored in self._snapshot(rp.info.storage_key, self.store.rv,
                                                       rp.namespace)
                 if filt.matches(stored.obj)]

        def delete_all(txn: Any) -> list[dict[str, Any]]:
            out = []
            for ns, name in names:
                try:
                    out.append(self.rules.delete(txn, Target(rp.info, ns, name), opts))
                except ApiError as e:
                    if e.code != 404:
                        raise
            return out

        objs = await self.store.transact(delete_all)
        info = rp.info
        return self._json({"kind": f"{info.kind}List", "apiVersion": info.group_version,
                           "metadata": {"resourceVersion": str(self.store.rv)},
                           "items": [self._present(rp, o) for o in objs]})

    # -- watch -------------------------------------------------------------------------------

    async def _watch(self, request: web.Request, rp: ResourcePath) -> web.StreamResponse:
        info = rp.info
        q = request.query
        filt = filter_from(request.query, info, rp.namespace)
        if rp.name:  # the legacy /watch/.../<name> path watches one object
            filt.fields.append(FieldRequirement("metadata.name", rp.name, True))
        table_version = wants_table(request.headers.get("Accept", ""))
        bookmarks = truthy(q.get("allowWatchBookmarks"))
        timeout = DEFAULT_WATCH_TIMEOUT
        if q.get("timeoutSeconds"):
            try:
                timeout = float(q["timeoutSeconds"])
            except ValueError as e:
                raise bad_request(f"invalid timeoutSeconds: {q['timeoutSeconds']}") from e
        rv_param = q.get("resourceVersion", "")
        if rv_param and not rv_param.isdigit():
            raise bad_request(f"invalid resource version: {rv_param}")
        send_initial = truthy(q.get("sendInitialEvents"))
        start_rv = int(rv_param) if rv_param else 0
        initial = not rv_param or rv_param == "0" or send_initial

        resp = web.StreamResponse(status=200, headers={"Content-Type": JSON,
                                                       "Transfer-Encoding": "chunked"})
        await resp.prepare(request)

        if not initial and start_rv < self.store.compacted:
            err = status_object(410, "Expired", f"too old resource version: {start_rv} "
                                f"({self.store.compacted})")
            await resp.write(dumps({"type": "ERROR", "object": err}).encode() + b"\n")
            await resp.write_eof()
            return resp

        # Subscribing and taking the starting state happen in one step of the event loop,
        # so no committed event falls between them.
        sub = self.store.subscribe(info.storage_key)
        self.metrics.watchers.inc()
        task = asyncio.current_task()
        if task is not None:
            self._watch_tasks.add(task)
        try:
            first: list[bytes] = []
            if initial:
                from_rv = self.store.rv
                for _key, stored in self._snapshot(info.storage_key, from_rv, rp.namespace):
                    if filt.matches(stored.obj):
                        first.append(self._line(rp, ADDED, stored.obj, stored.raw,
                                                table_version, request))
                if send_initial and bookmarks:
                    first.append(self._bookmark(rp, from_rv, initial_end=True))
            else:
                from_rv = start_rv
                for ev in self.store.events_since(info.storage_key, start_rv):
                    if (line := self._event_line(rp, ev, filt, table_version, request)):
                        first.append(line)
            last_sent = max(from_rv, self.store.rv)
            if first:
                await resp.write(b"".join(first))
            deadline = time.monotonic() + timeout
            next_bookmark = time.monotonic() + self.config.bookmark_interval
            # One timer per tick instead of a timeout per event: a tick (None in the queue)
            # wakes the loop to end the watch or send a bookmark.
            loop = asyncio.get_running_loop()

            def arm() -> asyncio.TimerHandle:
                due = min(deadline, next_bookmark) if bookmarks else deadline
                return loop.call_at(loop.time() + max(0.0, due - time.monotonic()),
                                    sub.queue.put_nowait, None)

            timer = arm()
            try:
                while not self._stopping.is_set() and not sub.closed:
                    first_item = await sub.queue.get()
                    batch = [first_item]
                    while not sub.queue.empty():
                        batch.append(sub.queue.get_nowait())
                    out = []
                    for item in batch:
                        if item is None or item.rv <= from_rv:
                            continue
                        last_sent = item.rv
                        if (line := self._event_line(rp, item, filt, table_version, request)):
                            out.append(line)
                    if out:
                        await resp.write(b"".join(out))
                    if None not in batch:
                        continue
                    now = time.monotonic()
                    if now >= deadline:
                        if bookmarks:
                            # As Kubernetes' watch cache does before a timeout: a last
                            # bookmark lets the client resume from a fresh resourceVersion.
                            if sub.queue.empty():
                                last_sent = max(last_sent, self.store.rv)
                            await resp.write(self._bookmark(rp, last_sent))
                        break
                    if bookmarks and now >= next_bookmark:
                        if sub.queue.empty():
                            last_sent = max(last_sent, self.store.rv)
                            await resp.write(self._bookmark(rp, last_sent))
                        next_bookmark = now + self.config.bookmark_interval
                    timer = arm()
            finally:
                timer.cancel()
            await resp.write_eof()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.store.unsubscribe(sub)
            self.metrics.watchers.dec()
            if task is not None:
                self._watch_tasks.discard(task)
        return resp

    def _bookmark(self, rp: ResourcePath, rv: int, *, initial_end: bool = False) -> bytes:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": rp.info.kind, "apiVersion": rp.info.group_version, "metadata": meta}
        return dumps({"type": "BOOKMARK", "object": obj}).encode() + b"\n"

    def _line(self, rp: ResourcePath, etype: str, obj: dict[str, Any], raw: str,
              table_version: str | None, request: web.Request) -> bytes:
        if table_version:
            body = dumps(self._table(rp, [obj], request, table_version))
        elif rp.info.storage_version and obj.get("apiVersion") != rp.info.group_version:
            body = dumps(self._present(rp, obj))
        else:
            body = raw
        return f'{{"type":"{etype}","object":{body}}}\n'.encode()

    def _event_line(self, rp: ResourcePath, ev: Event, filt: Filter,
                    table_version: str | None, request: web.Request) -> bytes | None:
        """The line a watcher with this filter sees for `ev` (None: not its business).

        With selectors, an object that stops matching is DELETED for this watcher and one
        that starts matching is ADDED, as Kubernetes' watch cache does."""
        if filt.only_namespace:
            if filt.namespace and ev.namespace != filt.namespace:
                return None
            etype = ev.type
        else:
            now = filt.matches(ev.obj)
            before = ev.old is not None and ev.type != ADDED and filt.matches(ev.old)
            if ev.type == DELETED:
                if not before:
                    return None
                etype = DELETED
            elif now and before:
                etype = MODIFIED
            elif now:
                etype = ADDED
            elif before:
                etype = DELETED
            else:
                return None
        plain = not table_version and not (
            rp.info.storage_version and ev.obj.get("apiVersion") != rp.info.group_version)
        if plain and etype == ev.type:
            return ev.line()
        return self._line(rp, etype, ev.obj, ev.raw, table_version, request)


def write_kubeconfig(path: Path, *, server: str, token: str | None,
                     ca_file: Path | None) -> None:
    """A kubeconfig for the embedded apiserver (context `hexlane`)."""
    cluster: dict[str, Any] = {"server": server}
    if ca_file is not None:
        cluster["certificate-authority-data"] = base64.b64encode(
            Path(ca_file).read_bytes()).decode()
    user: dict[str, Any] = {"token": token} if token else {}
    config = {
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "hexlane", "cluster": cluster}],
        "users": [{"name": "hexlane", "user": user}],
        "contexts": [{"name": "hexlane", "context": {"cluster": "hexlane", "user": "hexlane"}}],
        "current-context": "hexlane",
        "preferences": {},
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(path)


async def serve(config: ServerConfig, *, ready: Callable[[ApiServer], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Run an apiserver until `stop` is set (or forever)."""
    server = ApiServer(config)
    await server.start()
    try:
        if ready is not None:
            ready(server)
        await (stop or asyncio.Event()).wait()
    finally:
        await server.stop()

