"""The Observer API over real sockets, judged by grpcurl (a client no one here wrote): the
services and messages it finds by reflection, ServerStatus, GetFlows with number, first,
whitelist and blacklist, GetNodes, GetNamespaces, the health check `hubble status` makes,
INVALID_ARGUMENT for bad filters; the socket file's mode; mutual TLS on TCP (a client
certificate of the Hubble CA is required, others and plaintext are refused); and a follower
that falls behind the ring told exactly how many flows it lost; TCP connections without
Nagle's delay."""

from __future__ import annotations

import asyncio
import shutil
import socket
import stat
import subprocess

import pytest
from grpclib.client import Channel
from hubble_helpers import RunningHubble, grpcurl, json_stream, pod_flow

from hexlane.hubble.api.observer import observer_grpc, observer_pb2
from hexlane.hubble.certs import CertPair
from hexlane.hubble.server import tcp_socket

GET_FLOWS = "observer.Observer/GetFlows"


def _ports(flows: list[dict]) -> list[int]:
    return [f["flow"]["l4"]["TCP"]["source_port"] for f in flows]


def test_reflection_lists_the_services_on_both_unix_sockets(hubble: RunningHubble) -> None:
    for target in (str(hubble.socket), "@" + hubble.abstract):
        services = grpcurl("-plaintext", "-unix", target, "list").stdout.split()
        assert "observer.Observer" in services and "grpc.health.v1.Health" in services
    methods = grpcurl("-plaintext", "-unix", str(hubble.socket), "list",
                      "observer.Observer").stdout.split()
    assert methods == [f"observer.Observer.{m}" for m in (
        "GetAgentEvents", "GetDebugEvents", "GetFlows", "GetNamespaces", "GetNodes",
        "ServerStatus")]
    described = grpcurl("-plaintext", "-unix", str(hubble.socket), "describe",
                        "observer.GetFlowsRequest").stdout
    assert "uint64 number = 1;" in described and "bool first = 9;" in described
    assert "repeated .flow.FlowFilter whitelist = 6;" in described


def test_socket_file_is_private(hubble: RunningHubble) -> None:
    assert stat.S_IMODE(hubble.socket.stat().st_mode) == 0o600


def test_server_status(hubble: RunningHubble) -> None:
    status = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket),
                                 "observer.Observer/ServerStatus").stdout)[0]
    assert status["num_flows"] == "8" and status["max_flows"] == "63"
    assert status["seen_flows"] == "8" and int(status["uptime_ns"]) > 0
    assert status["version"].endswith("+hexlane")
    assert "num_connected_nodes" not in status and "num_unavailable_nodes" not in status


def test_get_flows_last_and_first(hubble: RunningHubble) -> None:
    last = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS,
                               data={"number": 3}).stdout)
    assert len(last) == 3
    assert [f["flow"]["destination"].get("pod_name") for f in last] == [
        "echo-def", "db-0", "client-0"]
    assert all(f["node_name"] == "default/node1" for f in last)
    assert last[0]["flow"]["drop_reason_desc"] == "SERVICE_BACKEND_NOT_FOUND"
    first = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS,
                                data={"number": 2, "first": True}).stdout)
    assert _ports(first) == [40000, 40001]
    everything = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS,
                                     data={}).stdout)
    assert len(everything) == 8


def test_get_flows_whitelist_and_blacklist(hubble: RunningHubble) -> None:
    pods = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS, data={
        "number": 10, "whitelist": [{"source_pod": ["bar/client-1", "bar/client-3"]}]}).stdout)
    assert _ports(pods) == [40001, 40003]
    dropped = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS, data={
        "number": 10, "whitelist": [{"verdict": ["DROPPED"]}]}).stdout)
    assert [f["flow"]["IP"]["source"] for f in dropped] == ["10.0.0.2"]
    # either side of namespace foo, minus the SYN-only flows
    rest = json_stream(grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS, data={
        "number": 10,
        "whitelist": [{"source_pod": ["bar/"]}, {"destination_pod": ["foo/"]}],
        "blacklist": [{"source_pod": ["bar/client-"]}]}).stdout)
    assert [f["flow"]["source"].get("pod_name") for f in rest] == ["web-1", "echo-def"]


def test_bad_filter_is_invalid_argument(hubble: RunningHubble) -> None:
    proc = grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS,
                   data={"whitelist": [{"source_ip": ["10.0.0.300"]}]}, check=False)
    assert proc.returncode != 0
    assert "InvalidArgument" in proc.stderr and "source_ip" in proc.stderr
    proc = grpcurl("-plaintext", "-unix", str(hubble.socket), GET_FLOWS,
                   data={"first": True, "follow": True}, check=False)
    assert "InvalidArgument" in proc.stderr


def test_nodes_namespaces_and_health(hubble: RunningHubble) -> None:
    sock = str(hubble.socket)
    nodes = json_stream(grpcurl("-plaintext", "-unix", sock,
                                "observer.Observer/GetNodes").stdout)[0]["nodes"]
    assert len(nodes) == 1 and nodes[0]["name"] == "default/node1"
    assert nodes[0]["state"] == "NODE_CONNECTED" and nodes[0]["num_flows"] == "8"
    namespaces = json_stream(grpcurl("-plaintext", "-unix", sock,
                                     "observer.Observer/GetNamespaces").stdout)[0]
    assert [n["namespace"] for n in namespaces["namespaces"]] == ["bar", "foo"]
    for service in ("hubble.server.Observer", ""):
        health = json_stream(grpcurl("-plaintext", "-unix", sock,
                                     "grpc.health.v1.Health/Check",
                                     data={"service": service}).stdout)[0]
        assert health == {"status": "SERVING"}
    unknown = grpcurl("-plaintext", "-unix", sock, "grpc.health.v1.Health/Check",
                      data={"service": "nope"}, check=False)
    assert "NotFound" in unknown.stderr
    agent = grpcurl("-plaintext", "-unix", sock, "observer.Observer/GetAgentEvents",
                    data={}, check=False)
    assert "Unimplemented" in agent.stderr


def test_mutual_tls_on_tcp(tls_hubble: RunningHubble, pki: dict[str, CertPair]) -> None:
    addr = f"127.0.0.1:{tls_hubble.port}"
    name = "node1.default.hubble-grpc.cilium.io"
    ca, client, stranger = pki["ca"], pki["client"], pki["stranger"]
    mtls = ("-cacert", str(ca.cert), "-cert", str(client.cert), "-key", str(client.key))
    assert "observer.Observer" in grpcurl(*mtls, "-servername", name, addr, "list").stdout
    status = json_stream(grpcurl(*mtls, addr, "observer.Observer/ServerStatus").stdout)[0]
    assert status["num_flows"] == "8"  # the node's IP is in the certificate too
    flows = json_stream(grpcurl(*mtls, "-servername", name, addr, GET_FLOWS,
                                data={"number": 2}).stdout)
    assert len(flows) == 2
    nodes = json_stream(grpcurl(*mtls, addr, "observer.Observer/GetNodes").stdout)[0]
    assert nodes["nodes"][0]["tls"] == {"enabled": True, "server_name": name}
    no_cert = grpcurl("-cacert", str(ca.cert), "-servername", name, addr, "list", check=False,
                      connect_timeout=1)
    other = grpcurl("-cacert", str(ca.cert), "-cert", str(stranger.cert), "-key",
                    str(stranger.key), "-servername", name, addr, "list", check=False,
                    connect_timeout=1)
    plain = grpcurl("-plaintext", addr, "list", check=False, connect_timeout=1)
    for refused in (no_cert, other, plain):
        assert refused.returncode != 0 and "Failed to dial" in refused.stderr, refused.stderr
    # the UNIX socket stays plaintext for the node's own tools
    assert "observer.Observer" in grpcurl("-plaintext", "-unix", str(tls_hubble.socket),
                                          "list").stdout


def test_socket_removed_on_stop(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with RunningHubble(tmp_path) as server:
        assert server.socket.exists()
    assert not server.socket.exists()


def test_a_follower_behind_the_ring_gets_lost_events(fresh_hubble: RunningHubble) -> None:
    """received + lost = added, exactly, with the losses as LostEvent HUBBLE_RING_BUFFER."""
    added = 2000

    async def follow() -> tuple[int, int, list[int]]:
        channel = Channel(path=str(fresh_hubble.socket))
        received = lost = 0
        sources = []
        try:
            stub = observer_grpc.ObserverStub(channel)
            async with stub.GetFlows.open() as stream:
                await stream.send_message(observer_pb2.GetFlowsRequest(follow=True), end=True)
                await asyncio.wait_for(stream.recv_initial_metadata(), 5)
                # the server side is following now; flood it while we do not read
                await asyncio.to_thread(fresh_hubble.add, *(pod_flow(i) for i in range(added)))
                while received + lost < added:
                    r = await asyncio.wait_for(stream.recv_message(), 5)
                    assert r is not None
                    if r.HasField("lost_events"):
                        lost += r.lost_events.num_events_lost
                        sources.append(r.lost_events.source)
                    else:
                        received += 1
                await stream.cancel()  # a follow stream has no end of its own
        finally:
            channel.close()
        return received, lost, sources

    received, lost, sources = asyncio.run(follow())
    assert received + lost == added
    assert lost > 0 and set(sources) == {3}  # flow.HUBBLE_RING_BUFFER


# Connect to an abstract socket, send HTTP/2's preface and an empty SETTINGS frame, print
# how many bytes the server answers before closing (its SETTINGS: > 0; cut off: 0).
_H2_PROBE = r"""
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(5)
s.connect("\0" + sys.argv[1])
try:  # a refused caller may be cut off before its preface is even sent (EPIPE)
    s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0]))
    print(len(s.recv(1024)))
except (ConnectionResetError, BrokenPipeError):
    print(0)
"""


def test_the_abstract_socket_serves_root_and_cap_net_admin_only(hubble: RunningHubble) -> None:
    """The abstract socket has no file permissions: a caller that is neither root nor holds
    CAP_NET_ADMIN is cut off (the socket file's mode 0600 does the same for the file)."""
    if shutil.which("runuser") is None:
        pytest.skip("needs runuser")

    def probe(*prefix: str) -> int:
        out = subprocess.run([*prefix, "/usr/bin/python3", "-c", _H2_PROBE, hubble.abstract],
                             capture_output=True, text=True, timeout=30, check=True)
        return int(out.stdout)

    assert probe("runuser", "-u", "nobody", "--") == 0
    assert probe() > 0


def test_tcp_connections_send_without_nagle() -> None:
    """Accepted connections carry TCP_NODELAY: asyncio and grpclib set it only on sockets
    made with proto IPPROTO_TCP, which create_server's are not, and with Nagle a follower's
    next flow waited for the client's delayed ACK (~40 ms)."""
    listener = tcp_socket("127.0.0.1:0")
    with listener, socket.create_connection(listener.getsockname()[:2]):
        accepted, _ = listener.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
