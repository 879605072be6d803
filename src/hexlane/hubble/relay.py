"""Hubble Relay: every node's flows through one Observer API (`hexlane hubble relay`).

    pool = PeerPool(tls=RelayTLS(ca, cert, key), dial_timeout=5, retry_timeout=30)
    relay = Relay(pool, listen_address=":4245", sort_window=0.020)
    await relay.start()
    pool.set_peers(peers_from_nodes(...))    # again whenever the Nodes change
    await relay.stop()

The relay dials each node's Hubble server (4244; mutual TLS with a client certificate of the
Hubble CA when the agents serve TLS) and serves `observer.Observer`, health and reflection on
its own port (4245, plaintext, as Cilium's relay by default) for the whole cluster:

- `GetFlows` asks every connected node the same question and merges the answers by flow
  time (`hexlane.hubble.merge`): without `follow`, all answers are in before anything goes
  out, so the stream is in time order and `number` selects across the cluster; with
  `follow`, flows are ordered within the sort window W. Nodes that are unavailable when the
  request starts are named in a `node_status` NODE_UNAVAILABLE event first; while a follow
  lasts, a node that stops answering is reported (NODE_UNAVAILABLE, its flows no longer
  waited for), one that answers again or joins is reported NODE_CONNECTED and followed from
  where it left off (no flow twice), and a node whose Node is deleted NODE_GONE.
- `ServerStatus` adds up the connected nodes' counters and counts the nodes:
  `num_connected_nodes`, `num_unavailable_nodes`, `unavailable_nodes`.
- `GetNodes` lists every peer with its state; `GetNamespaces` is the union of the nodes'.

A dead node is reported, never waited for: the pool probes every peer (gRPC health) every
second with `dial_timeout` to answer, and a peer that fails is marked unavailable, its
connection closed (which ends its streams), and probed again every `retry_timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server, Stream

from hexlane.hubble.api.observer import observer_grpc, observer_pb2
from hexlane.hubble.api.relay import relay_pb2
from hexlane.hubble.client import ClientTLS, open_channel, parse_address
from hexlane.hubble.merge import SortBuffer, merge_history
from hexlane.hubble.peers import Peer
from hexlane.hubble.server import (
    HEALTH_SERVICE,
    VERSION,
    Health,
    query_from_request,
    tcp_socket,
    validate_field_mask,
)

log = logging.getLogger("hexlane.hubble.relay")

DEFAULT_LISTEN_ADDRESS = ":4245"
PROBE_INTERVAL = 1.0  # seconds between health probes of a connected peer
QUEUE_LEN = 8192  # responses in flight from the nodes to one follower

CONNECTED = relay_pb2.NODE_CONNECTED
UNAVAILABLE = relay_pb2.NODE_UNAVAILABLE
GONE = relay_pb2.NODE_GONE
NODE_ERROR = relay_pb2.NODE_ERROR

T = TypeVar("T")


@dataclass(frozen=True)
class RelayTLS:
    """How the relay dials TLS peers: the CA files that sign the agents' certificates and
    the relay's client certificate (the agents require one)."""

    ca_files: tuple[str, ...]
    cert_file: str
    key_file: str

    def client(self, server_name: str) -> ClientTLS:
        return ClientTLS(enabled=True, ca_files=self.ca_files, cert_file=self.cert_file,
                         key_file=self.key_file, server_name=server_name)


def response_time_ns(response: observer_pb2.GetFlowsResponse) -> int:
    t = response.time
    return t.seconds * 1_000_000_000 + t.nanos


@dataclass
class PeerEvent:
    """A peer's state changed: CONNECTED, UNAVAILABLE or GONE (with why)."""

    name: str
    state: relay_pb2.NodeState
    message: str = ""


@dataclass
class PeerConn:
    """One peer: its state and the channel to it (made when first needed)."""

    peer: Peer
    tls: RelayTLS | None
    state: relay_pb2.NodeState = relay_pb2.UNKNOWN_NODE_STATE
    message: str = ""
    probed: asyncio.Event = field(default_factory=asyncio.Event)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    _channel: Channel | None = None

    @property
    def connected(self) -> bool:
        return self.state == CONNECTED

    def channel(self) -> Channel:
        if self._channel is None:
            client_tls = (self.tls.client(self.peer.tls_server_name)
                          if self.tls is not None and self.peer.tls_server_name
                          else ClientTLS())
            self._channel = open_channel(parse_address(self.peer.address), client_tls)
        return self._channel

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def node(self) -> observer_pb2.Node:
        """What GetNodes says of this peer without asking it."""
        return observer_pb2.Node(
            name=self.peer.name, address=self.peer.address, state=self.state,
            tls=observer_pb2.TLS(enabled=bool(self.peer.tls_server_name),
                                 server_name=self.peer.tls_server_name))


def _reason(err: BaseException) -> str:
    if isinstance(err, TimeoutError):
        return "no answer in time"
    if isinstance(err, GRPCError):
        return f"{err.status.name}: {err.message}"
    if isinstance(err, OSError):
        return err.strerror or str(err) or type(err).__name__
    return str(err) or type(err).__name__


class PeerPool:
    """The relay's peers, their states, and whoever wants to hear of changes."""

    def __init__(self, tls: RelayTLS | None = None, *, dial_timeout: float = 5.0,
                 retry_timeout: float = 30.0, probe_interval: float = PROBE_INTERVAL) -> None:
        self.tls = tls
        self.dial_timeout = dial_timeout
        self.retry_timeout = retry_timeout
        self.probe_interval = probe_interval
        self.conns: dict[str, PeerConn] = {}
        self._probes: dict[str, asyncio.Task[None]] = {}
        self._listeners: set[asyncio.Queue[PeerEvent]] = set()

    # --- peers ---------------------------------------------------------------------------

    def set_peers(self, peers: Iterable[Peer]) -> None:
        """The peers now (from the Nodes): new ones are probed at once, gone ones dropped."""
        wanted = {p.name: p for p in peers}
        for name in list(self.conns):
            if name not in wanted or wanted[name] != self.conns[name].peer:
                self._drop(name, "its Node was deleted" if name not in wanted
                           else "its address changed")
        for name, peer in wanted.items():
            if name not in self.conns:
                conn = PeerConn(peer, self.tls)
                self.conns[name] = conn
                self._probes[name] = asyncio.create_task(self._probe_loop(conn),
                                                         name=f"relay probe {name}")
                log.info("relay: peer %s at %s", name, peer.address)

    def _drop(self, name: str, why: str) -> None:
        conn = self.conns.pop(name)
        self._probes.pop(name).cancel()
        conn.close()
        log.info("relay: peer %s gone (%s)", name, why)
        self._publish(PeerEvent(name, GONE, why))

    async def close(self) -> None:
        tasks = list(self._probes.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for conn in self.conns.values():
            conn.close()
        self.conns.clear()
        self._probes.clear()

    def connected(self) -> list[PeerConn]:
        return [c for c in self.conns.values() if c.connected]

    def unavailable(self) -> list[PeerConn]:
        return [c for c in self.conns.values() if not c.connected]

    async def probed(self) -> None:
        """Return once every peer known now has been probed once (at most dial_timeout)."""
        waits = [c.probed.wait() for c in self.conns.values() if not c.probed.is_set()]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), self.dial_timeout + 0.5)

    # --- listeners -----------------------------------------------------------------------

    def subscribe(self) -> asyncio.Queue[PeerEvent]:
        queue: asyncio.Queue[PeerEvent] = asyncio.Queue()
        self._listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue[PeerEvent]) -> None:
        self._listeners.discard(queue)

    def _publish(self, event: PeerEvent) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)

    # --- probing -------------------------------------------------------------------------

    def suspect(self, name: str) -> None:
        """A stream to `name` broke: probe it now rather than at the next tick."""
        conn = self.conns.get(name)
        if conn is not None:
            conn.wake.set()

    async def _probe_loop(self, conn: PeerConn) -> None:
        while True:
            try:
                answer = await asyncio.wait_for(HealthStub(conn.channel()).Check(
                    HealthCheckRequest(service=HEALTH_SERVICE)), self.dial_timeout)
                ok = answer.status == HealthCheckResponse.SERVING
                why = "" if ok else "not serving"
            except asyncio.CancelledError:
                raise
            except Exception as err:  # any failure to answer is the peer's unavailability
                ok, why = False, _reason(err)
            self._set(conn, CONNECTED if ok else UNAVAILABLE, why)
            conn.probed.set()
            conn.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(conn.wake.wait(), self.probe_interval if ok
                                       else self.retry_timeout)

    def _set(self, conn: PeerConn, state: relay_pb2.NodeState, message: str) -> None:
        if state != CONNECTED:
            conn.close()  # a half-dead connection would hang the next call; dial afresh
        if state == conn.state:
            return
        was, conn.state, conn.message = conn.state, state, message
        if state == CONNECTED:
            log.info("relay: %s connected (%s)", conn.peer.name, conn.peer.address)
        else:
            log.warning("relay: %s unavailable: %s", conn.peer.name, message)
        if was != relay_pb2.UNKNOWN_NODE_STATE or state != CONNECTED:
            self._publish(PeerEvent(conn.peer.name, state, message))

    # --- calls ---------------------------------------------------------------------------

    async def each_connected(self, call: Callable[[PeerConn], Awaitable[T]]
                             ) -> list[tuple[PeerConn, T | BaseException]]:
        """`call` on every connected peer at once, each within dial_timeout; a failure is
        returned (and the peer probed again), not raised."""
        conns = self.connected()

        async def one(conn: PeerConn) -> T | BaseException:
            try:
                return await asyncio.wait_for(call(conn), self.dial_timeout)
            except asyncio.CancelledError:
                raise
            except Exception as err:
                self.suspect(conn.peer.name)
                return err
        results = await asyncio.gather(*(one(c) for c in conns))
        return list(zip(conns, results, strict=True))


def node_status(state: relay_pb2.NodeState, names: Iterable[str], message: str = ""
                ) -> observer_pb2.GetFlowsResponse:
    response = observer_pb2.GetFlowsResponse(node_status=relay_pb2.NodeStatusEvent(
        state_change=state, node_names=sorted(names), message=message))
    response.time.GetCurrentTime()
    return response


def unavailable_event(pool: PeerPool) -> observer_pb2.GetFlowsResponse | None:
    """What a request starts with when nodes are unavailable: one NODE_UNAVAILABLE event
    naming them and why; None when every node is connected."""
    down = pool.unavailable()
    if not down:
        return None
    return node_status(UNAVAILABLE, (c.peer.name for c in down),
                       "; ".join(f"{c.peer.name}: {c.message}" for c in down if c.message))


async def _node_flows(conn: PeerConn, request: observer_pb2.GetFlowsRequest,
                      timeout: float) -> AsyncIterator[observer_pb2.GetFlowsResponse]:
    """One node's answer to `request`; each message within `timeout` unless following."""
    async with observer_grpc.ObserverStub(conn.channel()).GetFlows.open() as stream:
        await asyncio.wait_for(stream.send_message(request, end=True), timeout)
        while True:
            wait = None if request.follow else timeout
            response = await asyncio.wait_for(stream.recv_message(), wait)
            if response is None:
                return
            if not response.node_name:
                response.node_name = conn.peer.name
            yield response


GRPC_MESSAGE_PREFIX = struct.Struct(">?I")  # gRPC's framing: compressed?, length


async def send_responses(stream: Stream[observer_pb2.GetFlowsRequest,
                                        observer_pb2.GetFlowsResponse],
                         responses: list[observer_pb2.GetFlowsResponse]) -> None:
    """Send `responses` in order, those of a burst in one HTTP/2 write.

    grpclib's send_message writes every message alone: an HTTP/2 DATA frame, its h2
    bookkeeping and a socket write for each flow, the larger part of the relay's CPU per
    flow, paid again by the follower to read each frame. gRPC messages are a byte stream
    within the response (each a flag byte and a length), so a burst is framed here and
    handed to the HTTP/2 stream at once, as grpclib's send_message would do for one (the
    initial metadata is sent before any flow)."""
    if len(responses) == 1:
        await stream.send_message(responses[0])
        return
    parts = []
    for response in responses:
        data = response.SerializeToString()
        parts.append(GRPC_MESSAGE_PREFIX.pack(False, len(data)))
        parts.append(data)
    await stream._stream.send_data(b"".join(parts))


class _Follow:
    """One follower: a stream per node into a queue, merged by a SortBuffer."""

    def __init__(self, pool: PeerPool, request: observer_pb2.GetFlowsRequest,
                 send: Callable[[list[observer_pb2.GetFlowsResponse]], Awaitable[None]],
                 window: float, max_len: int) -> None:
        self.pool = pool
        self.request = request
        self.send = send
        self.buffer: SortBuffer[observer_pb2.GetFlowsResponse] = SortBuffer(
            int(window * 1e9), max_len)
        # (node, response, its flow's time or None when it is no flow)
        self.queue: asyncio.Queue[tuple[str, observer_pb2.GetFlowsResponse, int | None]] = \
            asyncio.Queue(QUEUE_LEN)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.live: set[str] = set()  # nodes whose stream runs: only they hold flows back
        self.ended_at: dict[str, float] = {}
        # Where each node's stream is: the last flow time sent and the flows at that time.
        self.last: dict[str, tuple[int, set[str]]] = {}

    def _start(self, conn: PeerConn) -> None:
        name = conn.peer.name
        if name in self.live:
            return
        self.live.add(name)
        self.buffer.set_nodes(self.live)
        self.tasks[name] = asyncio.create_task(self._node(conn), name=f"relay follow {name}")

    def _stop(self, name: str) -> None:
        task = self.tasks.pop(name, None)
        if task is not None:
            task.cancel()
        self._ended(name)

    def _ended(self, name: str) -> None:
        self.live.discard(name)
        self.buffer.set_nodes(self.live)

    def _restart_quiet(self, now: float) -> None:
        """Follow again a connected node whose stream ended without it going unavailable
        (an agent restarted between two probes), at most once a probe interval."""
        for conn in self.pool.connected():
            name = conn.peer.name
            if name not in self.live and now - self.ended_at.get(name, 0.0) \
                    >= self.pool.probe_interval:
                self._start(conn)

    def _resume_request(self, name: str) -> observer_pb2.GetFlowsRequest:
        """The request again for a node that comes back: everything since its last flow."""
        request = observer_pb2.GetFlowsRequest()
        request.CopyFrom(self.request)
        if name in self.last:
            request.number = 0
            request.since.FromNanoseconds(self.last[name][0])
        return request

    async def _node(self, conn: PeerConn) -> None:
        name = conn.peer.name
        try:
            async for response in _node_flows(conn, self._resume_request(name),
                                              self.pool.dial_timeout):
                t = None
                if response.HasField("flow"):
                    t = response_time_ns(response)
                    uuid = response.flow.uuid
                    last = self.last.get(name)
                    if last is None or t > last[0]:
                        self.last[name] = (t, {uuid})
                    elif t < last[0] or (uuid and uuid in last[1]):
                        continue  # sent before the node went away
                    else:
                        last[1].add(uuid)
                await self.queue.put((name, response, t))
        except asyncio.CancelledError:
            raise
        except Exception as err:
            log.info("relay: follow of %s ended: %s", name, _reason(err))
            self.pool.suspect(name)
        finally:
            self.ended_at[name] = time.monotonic()
            if self.tasks.get(name) is asyncio.current_task():
                self._ended(name)

    async def run(self) -> None:
        events = self.pool.subscribe()
        try:
            await self._run(events)
        finally:
            self.pool.unsubscribe(events)
            for task in self.tasks.values():
                task.cancel()
            await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    async def _run(self, events: asyncio.Queue[PeerEvent]) -> None:
        until = (self.request.until.ToNanoseconds() if self.request.HasField("until")
                 else None)
        down = unavailable_event(self.pool)
        if down is not None:
            await self.send([down])
        for conn in self.pool.connected():
            self._start(conn)
        get_flow: asyncio.Task[Any] = asyncio.create_task(self.queue.get())
        get_event: asyncio.Task[Any] = asyncio.create_task(events.get())
        try:
            while True:
                now = time.monotonic_ns()
                deadline = self.buffer.deadline()
                timeout = self.pool.probe_interval if deadline is None \
                    else max(0.0, min((deadline - now) / 1e9, self.pool.probe_interval))
                if until is not None:
                    left = (until - time.time_ns()) / 1e9
                    if left <= 0:
                        break
                    timeout = left if timeout is None else min(timeout, left)
                done, _ = await asyncio.wait({get_flow, get_event}, timeout=timeout,
                                             return_when=asyncio.FIRST_COMPLETED)
                if get_event in done:
                    await self._peer_event(get_event.result())
                    get_event = asyncio.create_task(events.get())
                if get_flow in done:
                    await self._take(get_flow.result())
                    while not self.queue.empty():
                        await self._take(self.queue.get_nowait())
                    get_flow = asyncio.create_task(self.queue.get())
                ready = self.buffer.pop_ready(time.monotonic_ns())
                if ready:
                    await self.send(ready)
                self._restart_quiet(time.monotonic())
        finally:
            get_flow.cancel()
            get_event.cancel()
        rest = self.buffer.drain()
        if rest:
            await self.send(rest)

    async def _take(self, item: tuple[str, observer_pb2.GetFlowsResponse, int | None]
                    ) -> None:
        name, response, t = item
        if t is not None:
            self.buffer.push(name, t, response, time.monotonic_ns())
        else:  # lost events and the like: no time order to keep
            await self.send([response])

    async def _peer_event(self, event: PeerEvent) -> None:
        if event.state == CONNECTED:
            conn = self.pool.conns.get(event.name)
            if conn is not None:
                self._start(conn)
        else:
            self._stop(event.name)
        await self.send([node_status(event.state, [event.name], event.message)])


class RelayObserver(observer_grpc.ObserverBase):
    """observer.Observer over every peer of the pool."""

    def __init__(self, pool: PeerPool, *, sort_window: float, sort_buffer_len_max: int
                 ) -> None:
        self.pool = pool
        self.sort_window = sort_window
        self.sort_buffer_len_max = sort_buffer_len_max
        self.started = time.monotonic_ns()

    async def GetFlows(self, stream: Stream[observer_pb2.GetFlowsRequest,
                                            observer_pb2.GetFlowsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        query_from_request(request)  # INVALID_ARGUMENT before any node is asked
        validate_field_mask(request)
        await stream.send_initial_metadata()
        await self.pool.probed()
        if request.follow:
            await _Follow(self.pool, request, functools.partial(send_responses, stream),
                          self.sort_window, self.sort_buffer_len_max).run()
        else:
            await self._history(request, stream)

    async def _history(self, request: observer_pb2.GetFlowsRequest,
                       stream: Stream[observer_pb2.GetFlowsRequest,
                                      observer_pb2.GetFlowsResponse]) -> None:
        down = unavailable_event(self.pool)
        if down is not None:
            await stream.send_message(down)

        async def collect(conn: PeerConn) -> list[observer_pb2.GetFlowsResponse]:
            return [r async for r in _node_flows(conn, request, self.pool.dial_timeout)]

        conns = self.pool.connected()
        results = await asyncio.gather(*(collect(c) for c in conns), return_exceptions=True)
        per_node: list[list[observer_pb2.GetFlowsResponse]] = []
        for conn, result in zip(conns, results, strict=True):
            if isinstance(result, BaseException):
                if isinstance(result, asyncio.CancelledError):
                    raise result
                self.pool.suspect(conn.peer.name)
                await stream.send_message(node_status(NODE_ERROR, [conn.peer.name],
                                                      _reason(result)))
                continue
            flows = []
            for response in result:
                if response.HasField("flow"):
                    flows.append(response)
                else:
                    await stream.send_message(response)
            per_node.append(flows)
        for response in merge_history(per_node, response_time_ns, number=request.number,
                                      first=request.first):
            await stream.send_message(response)

    async def GetAgentEvents(self, stream: Stream[observer_pb2.GetAgentEventsRequest,
                                                  observer_pb2.GetAgentEventsResponse]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "hexlane's agents record flows only, no agent "
                                              "events")

    async def GetDebugEvents(self, stream: Stream[observer_pb2.GetDebugEventsRequest,
                                                  observer_pb2.GetDebugEventsResponse]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "hexlane's datapath emits no debug events")

    async def ServerStatus(self, stream: Stream[observer_pb2.ServerStatusRequest,
                                                observer_pb2.ServerStatusResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(await self.status())

    async def status(self) -> observer_pb2.ServerStatusResponse:
        await self.pool.probed()
        answers = await self.pool.each_connected(
            lambda c: observer_grpc.ObserverStub(c.channel()).ServerStatus(
                observer_pb2.ServerStatusRequest()))
        out = observer_pb2.ServerStatusResponse(version=VERSION,
                                                uptime_ns=time.monotonic_ns() - self.started)
        connected = 0
        unavailable = [c.peer.name for c in self.pool.unavailable()]
        for conn, answer in answers:
            if isinstance(answer, BaseException):
                unavailable.append(conn.peer.name)
                continue
            connected += 1
            out.num_flows += answer.num_flows
            out.max_flows += answer.max_flows
            out.seen_flows += answer.seen_flows
            out.flows_rate += answer.flows_rate
        out.num_connected_nodes.value = connected
        out.num_unavailable_nodes.value = len(unavailable)
        out.unavailable_nodes.extend(sorted(unavailable))
        return out

    async def GetNodes(self, stream: Stream[observer_pb2.GetNodesRequest,
                                            observer_pb2.GetNodesResponse]) -> None:
        await stream.recv_message()
        await self.pool.probed()
        answers = dict(
            (conn.peer.name, answer) for conn, answer in await self.pool.each_connected(
                lambda c: observer_grpc.ObserverStub(c.channel()).GetNodes(
                    observer_pb2.GetNodesRequest())))
        nodes = []
        for name, conn in sorted(self.pool.conns.items()):
            node = conn.node()
            answer = answers.get(name)
            if isinstance(answer, observer_pb2.GetNodesResponse) and answer.nodes:
                theirs = answer.nodes[0]
                node.version = theirs.version
                node.uptime_ns = theirs.uptime_ns
                node.num_flows = theirs.num_flows
                node.max_flows = theirs.max_flows
                node.seen_flows = theirs.seen_flows
            elif answer is not None:
                node.state = UNAVAILABLE
            nodes.append(node)
        await stream.send_message(observer_pb2.GetNodesResponse(nodes=nodes))

    async def GetNamespaces(self, stream: Stream[observer_pb2.GetNamespacesRequest,
                                                 observer_pb2.GetNamespacesResponse]) -> None:
        await stream.recv_message()
        await self.pool.probed()
        seen: set[tuple[str, str]] = set()
        for _, answer in await self.pool.each_connected(
                lambda c: observer_grpc.ObserverStub(c.channel()).GetNamespaces(
                    observer_pb2.GetNamespacesRequest())):
            if isinstance(answer, observer_pb2.GetNamespacesResponse):
                seen.update((ns.cluster, ns.namespace) for ns in answer.namespaces)
        await stream.send_message(observer_pb2.GetNamespacesResponse(namespaces=[
            observer_pb2.Namespace(cluster=c, namespace=n) for c, n in sorted(seen)]))


@dataclass
class Relay:
    """The relay's gRPC server over a PeerPool."""

    pool: PeerPool
    listen_address: str = DEFAULT_LISTEN_ADDRESS
    sort_window: float = 0.020
    sort_buffer_len_max: int = 4096
    _server: Server | None = field(default=None, init=False, repr=False)
    tcp_address: tuple[str, int] | None = field(default=None, init=False)

    def services(self) -> list[Any]:
        observer = RelayObserver(self.pool, sort_window=self.sort_window,
                                 sort_buffer_len_max=self.sort_buffer_len_max)
        health = Health(("", HEALTH_SERVICE, "observer.Observer"))
        return ServerReflection.extend([observer, health])

    async def start(self) -> None:
        sock = tcp_socket(self.listen_address)
        self.tcp_address = sock.getsockname()[:2]
        server = Server(self.services())
        try:
            await server.start(sock=sock)
        except BaseException:
            sock.close()
            raise
        self._server = server
        log.info("relay: serving on %s (plaintext)", self.listen_address)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.pool.close()

