"""The node's Hubble server: the Observer API, health and reflection over gRPC.

    store = FlowStore(values.hubble.event_buffer_capacity, node_name="default/node1")
    server = HubbleServer(store, "default/node1", socket_path=state_dir / "hubble.sock",
                          listen_address=":4244", tls=HubbleTLS(cert, key, (client_ca,)))
    await server.start()      # listening on every address before it returns
    store.add(flow)           # from the agent's loop, for every flow
    await server.stop()       # ends the streams, removes the socket file

Three listeners serve the same services (grpclib, HTTP/2):
- the UNIX socket `socket_path` (mode 0600, plaintext; a stale file is replaced);
- the abstract UNIX socket `@hexlane-hubble` of the network namespace the server runs in, so
  a CLI started in a node's namespace finds that node with no configuration; it has no file
  permissions, so the server closes connections from callers that are neither root nor hold
  CAP_NET_ADMIN (`hexlane.peercred`), as the socket file's mode 0600 keeps them out;
- TCP `listen_address` (`hubble.listenAddress`, ":4244" = every address), plaintext or, with
  `tls`, TLS 1.3 with the server certificate, and client certificates required when client CA
  files are given (as Cilium's agent does on 4244).

Services: `observer.Observer` (GetFlows, ServerStatus, GetNodes, GetNamespaces; agent and
debug events are not recorded by hexlane and answer UNIMPLEMENTED), `grpc.health.v1.Health`
(SERVING for "", "hubble.server.Observer" and "observer.Observer"), and server reflection
(v1 and v1alpha, which grpcurl uses).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from grpclib.health.v1.health_grpc import HealthBase
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse
from grpclib.reflection.service import ServerReflection
from grpclib.server import Server, Stream

from hexlane import __version__
from hexlane.config import Values
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_grpc, observer_pb2
from hexlane.hubble.api.relay import relay_pb2
from hexlane.hubble.filters import FilterError, compile_filters
from hexlane.hubble.reading import FlowQuery
from hexlane.hubble.store import FlowStore
from hexlane.peercred import peer, privileged

log = logging.getLogger("hexlane.hubble.server")

SOCKET_NAME = "hubble.sock"
# Cilium's hubble.socketPath default; on hexlane it means this node's $STATE_DIR/hubble.sock
# (the lab runs several nodes on one machine, each with its own state directory).
CILIUM_SOCKET_PATH = "/var/run/cilium/hubble.sock"
ABSTRACT_NAME = "hexlane-hubble"
DEFAULT_LISTEN_ADDRESS = ":4244"
# The name `hubble status` (and Cilium's own health checks) ask the health service about.
HEALTH_SERVICE = "hubble.server.Observer"
VERSION = f"{__version__}+hexlane"


@dataclass(frozen=True)
class HubbleTLS:
    """TLS for the TCP listener: the server's certificate and key (PEM files) and the CAs
    whose client certificates are accepted; with client CAs a client must present one."""

    cert_file: Path
    key_file: Path
    client_ca_files: tuple[Path, ...] = ()
    server_name: str = ""  # reported in GetNodes (the name clients verify)

    def context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(str(self.cert_file), str(self.key_file))
        if self.client_ca_files:
            ctx.verify_mode = ssl.CERT_REQUIRED
            for ca in self.client_ca_files:
                ctx.load_verify_locations(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        return ctx


class Health(HealthBase):
    """Always SERVING for the names Hubble clients check; NOT_FOUND for others."""

    def __init__(self, names: Sequence[str]) -> None:
        self._names = frozenset(names)

    def _status(self, service: str) -> HealthCheckResponse:
        if service in self._names:
            return HealthCheckResponse(status=HealthCheckResponse.SERVING)
        return HealthCheckResponse(status=HealthCheckResponse.SERVICE_UNKNOWN)

    async def Check(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        if request.service not in self._names:
            raise GRPCError(Status.NOT_FOUND, f"unknown service {request.service!r}")
        await stream.send_message(self._status(request.service))

    async def Watch(self, stream: Stream[HealthCheckRequest, HealthCheckResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        await stream.send_message(self._status(request.service))
        await _forever()


async def _forever() -> None:
    await asyncio.Event().wait()


def query_from_request(request: observer_pb2.GetFlowsRequest) -> FlowQuery:
    """The FlowQuery of a GetFlows request; GRPCError(INVALID_ARGUMENT) naming what is
    wrong."""
    if request.first and request.follow:
        raise GRPCError(Status.INVALID_ARGUMENT, "first cannot be combined with follow")
    since = request.since.ToNanoseconds() if request.HasField("since") else None
    until = request.until.ToNanoseconds() if request.HasField("until") else None
    if since is not None and until is not None and since > until:
        raise GRPCError(Status.INVALID_ARGUMENT, "since must not be after until")
    try:
        predicate = compile_filters(request.whitelist, request.blacklist)
    except FilterError as e:
        raise GRPCError(Status.INVALID_ARGUMENT, f"invalid filter: {e}") from None
    return FlowQuery(predicate, number=request.number, first=request.first,
                     follow=request.follow, since_ns=since, until_ns=until)


def validate_field_mask(request: observer_pb2.GetFlowsRequest
                        ) -> field_mask_pb2.FieldMask | None:
    if not request.HasField("field_mask") or not request.field_mask.paths:
        return None
    mask = request.field_mask
    if not mask.IsValidForDescriptor(flow_pb2.Flow.DESCRIPTOR):
        raise GRPCError(Status.INVALID_ARGUMENT,
                        f"invalid field_mask {list(mask.paths)} for flow.Flow")
    return mask


class Observer(observer_grpc.ObserverBase):
    """observer.Observer over one node's FlowStore."""

    def __init__(self, store: FlowStore, node_name: str, node_info: observer_pb2.Node
                 ) -> None:
        self.store = store
        self.node_name = node_name
        self.node_info = node_info

    async def GetFlows(self, stream: Stream[observer_pb2.GetFlowsRequest,
                                            observer_pb2.GetFlowsResponse]) -> None:
        request = await stream.recv_message()
        assert request is not None
        query = query_from_request(request)
        mask = validate_field_mask(request)
        # Headers now, not with the first flow: a follower may wait long for one.
        await stream.send_initial_metadata()
        async for item in self.store.flows(query):
            if isinstance(item, int):
                response = observer_pb2.GetFlowsResponse(
                    lost_events=flow_pb2.LostEvent(
                        source=flow_pb2.HUBBLE_RING_BUFFER, num_events_lost=item),
                    node_name=self.node_name)
                response.time.GetCurrentTime()
            else:
                if mask is not None:
                    trimmed = flow_pb2.Flow()
                    mask.MergeMessage(item, trimmed)
                    item = trimmed
                response = observer_pb2.GetFlowsResponse(
                    flow=item, node_name=item.node_name or self.node_name, time=item.time)
            await stream.send_message(response)

    async def GetAgentEvents(self, stream: Stream[observer_pb2.GetAgentEventsRequest,
                                                  observer_pb2.GetAgentEventsResponse]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "hexlane's agent records flows only, no agent "
                                              "events")

    async def GetDebugEvents(self, stream: Stream[observer_pb2.GetDebugEventsRequest,
                                                  observer_pb2.GetDebugEventsResponse]) -> None:
        raise GRPCError(Status.UNIMPLEMENTED, "hexlane's datapath emits no debug events")

    async def GetNodes(self, stream: Stream[observer_pb2.GetNodesRequest,
                                            observer_pb2.GetNodesResponse]) -> None:
        await stream.recv_message()
        node = observer_pb2.Node()
        node.CopyFrom(self.node_info)
        node.uptime_ns = self.store.uptime_ns
        node.num_flows = self.store.num_flows
        node.max_flows = self.store.max_flows
        node.seen_flows = self.store.seen_flows
        await stream.send_message(observer_pb2.GetNodesResponse(nodes=[node]))

    async def GetNamespaces(self, stream: Stream[observer_pb2.GetNamespacesRequest,
                                                 observer_pb2.GetNamespacesResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(observer_pb2.GetNamespacesResponse(namespaces=[
            observer_pb2.Namespace(cluster=cluster, namespace=ns)
            for cluster, ns in self.store.namespaces()]))

    async def ServerStatus(self, stream: Stream[observer_pb2.ServerStatusRequest,
                                                observer_pb2.ServerStatusResponse]) -> None:
        await stream.recv_message()
        await stream.send_message(self.status())

    def status(self) -> observer_pb2.ServerStatusResponse:
        # num_connected_nodes/num_unavailable_nodes stay unset: an agent is not a relay.
        return observer_pb2.ServerStatusResponse(
            num_flows=self.store.num_flows, max_flows=self.store.max_flows,
            seen_flows=self.store.seen_flows, uptime_ns=self.store.uptime_ns,
            version=self.node_info.version, flows_rate=self.store.flows_rate())


def parse_listen_address(text: str) -> tuple[str, int]:
    """"host:port", ":port" or "[v6]:port" -> (host, port); port 0 picks a free one."""
    m = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):([0-9]{1,5})", text)
    if not m or int(m.group(2)) > 65535:
        raise ValueError(f"hubble.listenAddress: expected host:port such as :4244 or "
                         f"127.0.0.1:4244, got {text!r}")
    return m.group(1).strip("[]"), int(m.group(2))


def tcp_socket(listen_address: str) -> socket.socket:
    """A bound TCP socket for "host:port" (":port" = every address, v4 and v6), with
    TCP_NODELAY, which the connections it accepts inherit."""
    sock = _tcp_listener(listen_address)
    # asyncio and grpclib set TCP_NODELAY only on sockets made with proto IPPROTO_TCP, and
    # create_server's (and so the accepted ones) have proto 0: without this, Nagle holds a
    # stream's next small message until the client's delayed ACK, ~40 ms.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _tcp_listener(listen_address: str) -> socket.socket:
    host, port = parse_listen_address(listen_address)
    if not host:
        if socket.has_dualstack_ipv6():
            try:
                return socket.create_server(("::", port), family=socket.AF_INET6,
                                            dualstack_ipv6=True)
            except OSError:
                pass  # no IPv6 in this namespace
        return socket.create_server(("0.0.0.0", port))
    family, _, _, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return socket.create_server(addr[:2], family=family)


def unix_socket(path: Path) -> socket.socket:
    """A bound UNIX socket at `path`, mode 0600, replacing a stale socket file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)  # before listen(): nobody can connect yet
    except BaseException:
        sock.close()
        raise
    return sock


class PrivilegedOnlyServer(Server):
    """A grpclib server that closes every connection whose peer is neither root nor holds
    CAP_NET_ADMIN (for the abstract socket, which has no file permissions)."""

    def _protocol_factory(self) -> Any:
        protocol = super()._protocol_factory()
        made, lost = protocol.connection_made, protocol.connection_lost
        refused = False

        def connection_made(transport: asyncio.Transport) -> None:
            nonlocal refused
            caller = peer(transport.get_extra_info("socket"))
            if caller is not None and not privileged(*caller):
                # before the protocol sends a byte: the caller learns nothing
                refused = True
                log.warning("hubble: refused a connection from pid %d uid %d (neither root "
                            "nor CAP_NET_ADMIN)", *caller)
                transport.abort()
                return
            made(transport)

        def connection_lost(exc: BaseException | None) -> None:
            if not refused:
                lost(exc)

        protocol.connection_made = connection_made  # type: ignore[method-assign,assignment]
        protocol.connection_lost = connection_lost  # type: ignore[method-assign]
        return protocol


def abstract_socket(name: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("\0" + name)
    except OSError as err:
        sock.close()
        raise OSError(err.errno, f"abstract socket @{name} is taken in this network "
                                 "namespace (is another hubble server running here?)") from None
    return sock


@dataclass
class HubbleServer:
    """The Observer, health and reflection services on the node's sockets."""

    store: FlowStore
    node_name: str
    socket_path: Path | None = None
    abstract_name: str | None = ABSTRACT_NAME
    listen_address: str = ""
    tls: HubbleTLS | None = None
    node_address: str = ""  # what GetNodes reports; default: the TCP or socket address
    _servers: list[Server] = field(default_factory=list, init=False, repr=False)
    tcp_address: tuple[str, int] | None = field(default=None, init=False)

    def services(self) -> list[Any]:
        tls = observer_pb2.TLS(enabled=self.tls is not None,
                               server_name=self.tls.server_name if self.tls else "")
        node = observer_pb2.Node(name=self.node_name, version=VERSION,
                                 address=self.node_address or self._default_address(),
                                 state=relay_pb2.NODE_CONNECTED, tls=tls)
        observer = Observer(self.store, self.node_name, node)
        health = Health(("", HEALTH_SERVICE, "observer.Observer"))
        return ServerReflection.extend([observer, health])

    def _tls_text(self) -> str:
        if self.tls is None:
            return "plaintext"
        return "mTLS" if self.tls.client_ca_files else "TLS"

    def _default_address(self) -> str:
        if self.listen_address:
            return self.listen_address
        return f"unix://{self.socket_path}" if self.socket_path else ""

    async def start(self) -> None:
        """Listen on every configured address (all or none: a failure closes the rest)."""
        services = self.services()
        sockets: list[tuple[socket.socket, ssl.SSLContext | None, str]] = []
        try:
            if self.socket_path is not None:
                sockets.append((unix_socket(self.socket_path), None,
                                f"unix://{self.socket_path}"))
            if self.abstract_name:
                sockets.append((abstract_socket(self.abstract_name), None,
                                f"unix-abstract:{self.abstract_name} (root and CAP_NET_ADMIN)"))
            if self.listen_address:
                tcp = tcp_socket(self.listen_address)
                self.tcp_address = tcp.getsockname()[:2]
                sockets.append((tcp, self.tls.context() if self.tls else None,
                                f"{self.listen_address} ({self._tls_text()})"))
            for sock, ctx, where in sockets:
                server = (PrivilegedOnlyServer(services) if where.startswith("unix-abstract:")
                          else Server(services))
                await server.start(sock=sock, ssl=ctx)
                self._servers.append(server)
                log.info("hubble: serving on %s", where)
        except BaseException:
            for sock, _, _ in sockets[len(self._servers):]:
                sock.close()
            await self.stop()
            if self.socket_path is not None and sockets:
                with contextlib.suppress(FileNotFoundError):
                    self.socket_path.unlink()
            raise

    async def stop(self) -> None:
        """Stop listening, end every stream, remove the socket file."""
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()
        if self.socket_path is not None and servers:
            with contextlib.suppress(FileNotFoundError):
                self.socket_path.unlink()

    async def __aenter__(self) -> HubbleServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()


def socket_path(values_socket_path: str, state_dir: Path) -> Path:
    """Where the node's socket goes: `hubble.socketPath`, except that Cilium's default means
    `$STATE_DIR/hubble.sock`."""
    if not values_socket_path or values_socket_path == CILIUM_SOCKET_PATH:
        return state_dir / SOCKET_NAME
    return Path(values_socket_path)


def node_name(cluster: str, node: str) -> str:
    """The name a node's flows carry, as Cilium writes it: "<cluster>/<node>"."""
    return f"{cluster}/{node}"


def node_server(values: Values, *, state_dir: Path, node: str, tls: HubbleTLS | None = None,
                abstract_name: str | None = ABSTRACT_NAME, node_address: str = ""
                ) -> HubbleServer:
    """The node's server and an empty store as the values say (`hubble.eventBufferCapacity`,
    `hubble.socketPath`, `hubble.listenAddress`); `tls` from `certs.node_tls` (None: the TCP
    listener is plaintext). Nothing listens before `start()`."""
    name = node_name(values.cluster.name, node)
    store = FlowStore(values.hubble.event_buffer_capacity, node_name=name)
    return HubbleServer(store, name, socket_path=socket_path(values.hubble.socket_path,
                                                             state_dir),
                        abstract_name=abstract_name,
                        listen_address=values.hubble.listen_address, tls=tls,
                        node_address=node_address)
