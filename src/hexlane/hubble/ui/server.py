"""The Hubble UI's web server (edge): the page and the JSON API it reads, every answer from an
Observer over gRPC (a Hubble Relay, or one agent's Hubble server; nothing else is asked).

    GET /                          the page (static/index.html, app.js, style.css)
    GET /api/status                ServerStatus and GetNodes, and the map feed's state
    GET /api/namespaces            GetNamespaces
    GET /api/flows?FILTERS&last=N  the last N flows the filters select (100 by default)
    GET /api/flows/stream?...      the same, then new flows as they come: Server-Sent Events
                                   `flow`, `lost`, `error` (one upstream GetFlows follow per
                                   stream, cancelled when the browser goes)
    GET /api/map?namespace=NS      the service map of the recent flows ("" = every namespace)

FILTERS are the page's (`hexlane.hubble.ui.views`): namespace, verdict, pod, ip, port,
protocol. Errors are JSON `{"error": "..."}`: 400 for a parameter that cannot mean anything,
502 when the Observer cannot be reached or answers with an error (the one-line
`HubbleUnreachable` message), 503 from /api/map while its feed has lost the Observer.

The map is drawn from a bounded window of recent flows (the newest `MAP_FLOWS`), fed by one
GetFlows follow for the whole server that reconnects every `RETRY_SECONDS` when the Observer
goes away, and starts again from the Observer's newest flows when it is back. One gRPC
channel serves every call (grpclib reconnects it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import h2.exceptions
from aiohttp import web
from grpclib.exceptions import StreamTerminatedError

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_grpc, observer_pb2
from hexlane.hubble.client import Address, ClientTLS, HubbleUnreachable, call, open_channel
from hexlane.hubble.ui import views
from hexlane.hubble.ui.servicemap import service_map
from hexlane.k8s.runtime import BackgroundTask, cancel

log = logging.getLogger("hexlane.hubble.ui")

T = TypeVar("T")

MAP_FLOWS = 4095
RETRY_SECONDS = 1.0
HEARTBEAT_SECONDS = 15.0
STREAM_QUEUE = 256  # SSE chunks waiting for a slow browser before upstream waits too
STATIC = Path(__file__).parent / "static"
# A browser that goes cancels its stream's handler, so its upstream follow ends at once; the
# streams never end by themselves, so stopping cancels them after a second.
RUNNER_OPTIONS: dict[str, Any] = {"handler_cancellation": True, "shutdown_timeout": 1.0}
# The page loads nothing but its own files and API (no CDN, no inline code).
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


class Observer:
    """The Observer the UI reads, over one channel; every failure is a HubbleUnreachable."""

    def __init__(self, address: Address, tls: ClientTLS, timeout: float) -> None:
        self.address = address
        self.tls = tls
        self.timeout = timeout
        self._channel = open_channel(address, tls)
        self._stub = observer_grpc.ObserverStub(self._channel)

    async def ask(self, what: Awaitable[T]) -> T:
        return await call(self.address, what, self.timeout, self.tls)

    async def status(self) -> dict[str, Any]:
        status = await self.ask(self._stub.ServerStatus(observer_pb2.ServerStatusRequest()))
        nodes = await self.ask(self._stub.GetNodes(observer_pb2.GetNodesRequest()))
        return views.status_item(self.address.text, status, nodes.nodes)

    async def namespaces(self) -> list[dict[str, Any]]:
        answer = await self.ask(self._stub.GetNamespaces(observer_pb2.GetNamespacesRequest()))
        return [views.proto_dict(ns) for ns in answer.namespaces]

    @contextlib.asynccontextmanager
    async def flows(self, request: observer_pb2.GetFlowsRequest
                    ) -> AsyncIterator[AsyncIterator[observer_pb2.GetFlowsResponse]]:
        """GetFlows, open once the request is sent (an Observer that cannot be reached
        raises here); leaving the block ends the call upstream."""
        async with self._stub.GetFlows.open() as stream:
            await self.ask(stream.send_message(request, end=True))

            async def next_response() -> observer_pb2.GetFlowsResponse | None:
                try:
                    return await stream.recv_message()
                except (StreamTerminatedError, h2.exceptions.ProtocolError):
                    # the call was under way: the server went away (no TLS hint needed)
                    raise HubbleUnreachable(f"lost the Hubble server at "
                                            f"{self.address.text}") from None

            async def responses() -> AsyncIterator[observer_pb2.GetFlowsResponse]:
                while (response := await call(self.address, next_response(), None,
                                              self.tls)) is not None:
                    yield response

            yield responses()

    def close(self) -> None:
        self._channel.close()


class MapFeed:
    """The newest `capacity` flows of the Observer, followed by one GetFlows; `error` says
    why the feed is not connected (None while it is)."""

    def __init__(self, observer: Observer, capacity: int = MAP_FLOWS) -> None:
        self.observer = observer
        self.flows: deque[flow_pb2.Flow] = deque(maxlen=capacity)
        self.error: str | None = None
        self.task = BackgroundTask(self._run, lambda: "hubble-ui-map-feed")

    async def _run(self) -> None:
        request = observer_pb2.GetFlowsRequest(number=self.flows.maxlen or 0, follow=True)
        while True:
            try:
                async with self.observer.flows(request) as responses:
                    self.flows.clear()  # the Observer sends its newest flows again
                    if self.error is not None:
                        log.info("hubble ui: reading flows from %s again",
                                 self.observer.address.text)
                    self.error = None
                    async for response in responses:
                        if response.HasField("flow"):
                            self.flows.append(response.flow)
                self._lost(f"the Hubble server at {self.observer.address.text} ended the "
                           "stream of flows")
            except HubbleUnreachable as e:
                self._lost(str(e))
            except Exception as e:  # a bug here must not leave the map stale for good
                log.exception("hubble ui: the map's feed failed")
                self._lost(f"the map's feed failed: {e!r}")
            await asyncio.sleep(RETRY_SECONDS)

    def _lost(self, error: str) -> None:
        if error != self.error:
            log.warning("hubble ui: %s; trying again every %gs", error, RETRY_SECONDS)
        self.error = error


def _json_error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


@web.middleware
async def _errors(request: web.Request,
                  handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                  ) -> web.StreamResponse:
    try:
        return await handler(request)
    except views.ViewError as e:
        return _json_error(400, str(e))
    except HubbleUnreachable as e:
        return _json_error(502, str(e))


async def _security_headers(_request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(SECURITY_HEADERS)


class UiApp:
    """The routes over one Observer and its map feed (`app()` builds the aiohttp app)."""

    def __init__(self, observer: Observer, *, map_flows: int = MAP_FLOWS,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.observer = observer
        self.feed = MapFeed(observer, map_flows)
        self.clock = clock
        self.streams = 0  # upstream follows open for browsers now

    def app(self) -> web.Application:
        app = web.Application(middlewares=[_errors])
        app.on_response_prepare.append(_security_headers)
        app.router.add_get("/", self.index)
        app.router.add_static("/static/", STATIC)
        app.router.add_get("/api/status", self.status)
        app.router.add_get("/api/namespaces", self.namespaces)
        app.router.add_get("/api/flows", self.flows)
        app.router.add_get("/api/flows/stream", self.stream)
        app.router.add_get("/api/map", self.map)
        app.cleanup_ctx.append(self._running)
        return app

    async def _running(self, _app: web.Application) -> AsyncIterator[None]:
        self.feed.task.start()
        yield
        await self.feed.task.stop()
        self.observer.close()

    async def index(self, _request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    async def status(self, _request: web.Request) -> web.Response:
        answer = await self.observer.status()
        answer["ui"] = {"map_flows": len(self.feed.flows), "map_capacity": self.feed.flows.maxlen,
                        "map_error": self.feed.error, "streams": self.streams}
        return web.json_response(answer)

    async def namespaces(self, _request: web.Request) -> web.Response:
        return web.json_response({"namespaces": await self.observer.namespaces()})

    @staticmethod
    def _request(request: web.Request, *, follow: bool) -> observer_pb2.GetFlowsRequest:
        view = views.FlowView.from_params(request.query)
        return views.flows_request(view, last=views.parse_last(request.query.get("last", "")),
                                   follow=follow)

    async def flows(self, request: web.Request) -> web.Response:
        out: list[dict[str, Any]] = []
        lost = 0
        async with self.observer.flows(self._request(request, follow=False)) as responses:
            async for response in responses:
                if response.HasField("flow"):
                    out.append(views.flow_item(response))
                elif response.HasField("lost_events"):
                    lost += response.lost_events.num_events_lost
        return web.json_response({"flows": out, "lost": lost})

    async def stream(self, request: web.Request) -> web.StreamResponse:
        get_flows = self._request(request, follow=True)
        chunks: asyncio.Queue[bytes | None] = asyncio.Queue(STREAM_QUEUE)
        opened: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        pump = asyncio.create_task(self._pump(get_flows, chunks, opened))
        try:
            await asyncio.wait((opened, pump), return_when=asyncio.FIRST_COMPLETED)
            if not opened.done():
                pump.result()  # it failed before opening: its error is the answer
            opened.result()  # the Observer cannot be reached: 502, before any event
            response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                                   "Cache-Control": "no-cache"})
            await response.prepare(request)
            while True:
                try:
                    chunk = await asyncio.wait_for(chunks.get(), HEARTBEAT_SECONDS)
                except TimeoutError:
                    chunk = b": keep-alive\n\n"  # a browser gone is noticed, proxies wait
                if chunk is None:
                    return response
                await response.write(chunk)
        finally:
            await cancel(pump)

    async def _pump(self, request: observer_pb2.GetFlowsRequest,
                    chunks: asyncio.Queue[bytes | None], opened: asyncio.Future[None]) -> None:
        """One upstream follow into `chunks` (None at its end)."""
        self.streams += 1
        try:
            async with self.observer.flows(request) as responses:
                opened.set_result(None)
                async for response in responses:
                    if response.HasField("flow"):
                        await chunks.put(views.sse_event("flow", views.flow_item(response)))
                    elif response.HasField("lost_events"):
                        await chunks.put(views.sse_event("lost", views.lost_item(response)))
            await chunks.put(views.sse_event("end", {}))
        except HubbleUnreachable as e:
            if not opened.done():
                opened.set_exception(e)
                return
            await chunks.put(views.sse_event("error", {"error": str(e)}))
        finally:
            self.streams -= 1
        await chunks.put(None)

    async def map(self, request: web.Request) -> web.Response:
        if self.feed.error is not None:
            return _json_error(503, self.feed.error)
        view = service_map(list(self.feed.flows), now_ns=self.clock(),
                           namespace=request.query.get("namespace", "").strip())
        return web.json_response(view.as_dict())


def _url(host: str, port: int) -> str:
    if host in ("", "0.0.0.0", "::"):
        return f"http://localhost:{port}/ (every address)"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def serve(sock: socket.socket, address: Address, tls: ClientTLS, *, timeout: float
                ) -> None:
    """Serve the UI on the bound TCP socket `sock` (`hexlane.hubble.server.tcp_socket`)
    until cancelled; the socket is closed at the end."""
    runner = web.AppRunner(UiApp(Observer(address, tls, timeout)).app(), access_log=None,
                           **RUNNER_OPTIONS)
    try:
        await runner.setup()
        await web.SockSite(runner, sock).start()
        host, port = sock.getsockname()[:2]
        log.info("hubble ui: serving on %s, reading flows from %s", _url(host, port),
                 address.text)
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()
        sock.close()
