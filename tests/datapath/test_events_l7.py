"""L7 records (DNS and HTTP/1.x) from the LB programs on real packets, read as the agent does.

On a client, a node with two pods (lxc veths) and the programs attached as the agent attaches
them, the backend pod serving HTTP on 8080 and DNS on 53 (UDP and TCP) behind Services:
- from the client (not a pod) each message is handed up once, at the server pod: the request
  coming to it, the response leaving it (side SERVER);
- from the other pod (a client pod of this node) once, at the client: the request leaving
  it, the response coming back (side CLIENT), with the Service's frontend on both;
- the agent's reader (`L7Reader`, `FlowParser`) makes L7 flows of them: the DNS query and
  answer, the HTTP method, URL and status, a response's latency;
- nothing is handed up for ports that are not listed, for the body of a response that spans
  several packets, or with L7 off.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
from bpf_lbsetup import (
    BACKEND_IP,
    CLIENT_IP,
    POD2_IP,
    Services,
    attach_as_agent,
    client_node_two_pods,
)

from helpers import packets
from hexlane.datapath.events import (
    EVENT_L7,
    EventReader,
    L7Kind,
    L7Side,
    l7_port_entries,
    trace_config,
)
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.parser import FlowParser, L7Reader, Who
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns
from hexlane.lb.services import CLUSTER_IP, LOAD_BALANCER

pytestmark = [pytest.mark.slow, pytest.mark.root]

LB_VIP, CLUSTER_VIP, HAIRPIN_VIP = "10.96.0.120", "10.43.0.120", "10.43.0.121"

# HTTP on 8080 and 9090 (9090 not listed), DNS on 53 over UDP and TCP: dnspython answers
# every A question with 10.1.2.3 and NXDOMAIN for names under "missing."
SERVER = r"""
import socket, sys, threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
import dns.message, dns.rcode, dns.rrset

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"x" * (20000 if self.path == "/big" else 10)
        self.send_response(404 if self.path == "/missing" else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a): pass

def answer(wire):
    q = dns.message.from_wire(wire)
    r = dns.message.make_response(q)
    name = q.question[0].name
    if name.to_text().endswith("missing."):
        r.set_rcode(dns.rcode.NXDOMAIN)
    else:
        r.answer.append(dns.rrset.from_text(name, 5, "IN", "A", "10.1.2.3"))
    return r.to_wire()

def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 53))
    while True:
        data, peer = s.recvfrom(2048); s.sendto(answer(data), peer)

def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 53)); s.listen(8)
    while True:
        c, _ = s.accept()
        n = int.from_bytes(c.recv(2), "big"); data = b""
        while len(data) < n: data += c.recv(n - len(data))
        out = answer(data); c.sendall(len(out).to_bytes(2, "big") + out); c.close()

for port in (8080, 9090):
    threading.Thread(target=ThreadingHTTPServer(("0.0.0.0", port), H).serve_forever,
                     daemon=True).start()
for f in (udp, tcp):
    threading.Thread(target=f, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = r"""
import sys, urllib.request, urllib.error
import dns.message, dns.query
kind, host, port, arg = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if kind == "http":
    try:
        with urllib.request.urlopen(f"http://{host}:{port}{arg}", timeout=5) as r:
            r.read(); print(r.status)
    except urllib.error.HTTPError as e:
        print(e.code)
else:
    q = dns.message.make_query(arg, "A")
    send = dns.query.tcp if kind == "dns-tcp" else dns.query.udp
    r = send(q, host, port=port, timeout=5)
    print(dns.rcode.to_text(r.rcode()), *[rr.to_text() for rr in r.answer])
"""


@pytest.fixture(scope="module")
def topo(lb: LbDatapath) -> Iterator[Topology]:
    with Topology("hl-l7") as t:
        client_node_two_pods(t)
        for pod in ("be", "p2"):
            server = t.start(pod, [sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        run_in_netns(netns_path(t["node"]), lambda: attach_as_agent(lb, ["toclient"]))
        yield t


def set_l7(services: Services, on: bool) -> None:
    """Through the agent's own path: this node's pod CIDR 10.78.0.0/24, the cluster's
    10.78.0.0/16; HTTP on 80 and 8080, DNS on 53."""
    services.sync.set_trace_config(trace_config(
        on=on, pod_cidr=IPv4Network("10.78.0.0/24"), overlay_ifindex=0, host_ifindex=0,
        l7=on, cluster_cidr=IPv4Network("10.78.0.0/16")))
    services.sync.set_l7_ports(l7_port_entries([53], [80, 8080]) if on else {})
    assert not services.sync.flush().failed


@pytest.fixture
def reader(lb: LbDatapath, services: Services, topo: Topology) -> Iterator[EventReader]:
    services.add(LB_VIP, 80, packets.TCP, 21, [(21, BACKEND_IP, 8080)], type=LOAD_BALANCER,
                 local=True)
    services.add(CLUSTER_VIP, 80, packets.TCP, 22, [(22, BACKEND_IP, 8080)], type=CLUSTER_IP,
                 local=True)
    services.add(CLUSTER_VIP, 9090, packets.TCP, 25, [(25, BACKEND_IP, 9090)],
                 type=CLUSTER_IP, local=True)
    services.add(CLUSTER_VIP, 53, packets.UDP, 23, [(23, BACKEND_IP, 53)], type=CLUSTER_IP,
                 local=True)
    services.add(CLUSTER_VIP, 53, packets.TCP, 24, [(24, BACKEND_IP, 53)], type=CLUSTER_IP,
                 local=True)
    services.add(HAIRPIN_VIP, 80, packets.TCP, 26, [(26, POD2_IP, 8080)], type=CLUSTER_IP,
                 local=True)
    set_l7(services, True)
    with EventReader(lb.maps.events) as r:
        r.consume_batch()
        yield r
    set_l7(services, False)


def call(t: Topology, source: str, *args: object) -> str:
    return run(t[source], [sys.executable, "-c", CLIENT, *map(str, args)],
               timeout=20).stdout.strip()


class Lookup:
    def who(self, address: str) -> Who:
        return Who(0)

    def service(self, address: str, port: int, protocol: str) -> tuple[str, str] | None:
        return ("default", "echo") if address == CLUSTER_VIP else None


def l7_flows(reader: EventReader) -> list[flow_pb2.Flow]:
    """The L7 records now in the ring, as the agent makes flows of them."""
    time.sleep(0.2)
    batch = reader.consume_batch()
    infos = L7Reader().read_batch(batch)
    parser = FlowParser("default/node", Lookup(), 0)
    return [parser.flow(batch.event(i), l7=infos[i]) for i in sorted(infos)]


def records(reader: EventReader) -> list[tuple[object, ...]]:
    time.sleep(0.2)
    batch = reader.consume_batch()
    out = []
    for i in batch.l7:
        ev, payload = batch.event(i), batch.payload(i)
        assert ev.type == EVENT_L7
        out.append((L7Kind(payload.kind).name, L7Side(payload.side).name, ev.saddr, ev.daddr,
                    payload.data[:4]))
    return out


def test_http_from_outside_is_seen_once_at_the_server_pod(topo: Topology,
                                                          reader: EventReader) -> None:
    assert call(topo, "client", "http", LB_VIP, 80, "/hello") == "200"
    got = records(reader)
    assert got == [("HTTP", "SERVER", CLIENT_IP, BACKEND_IP, b"GET "),
                   ("HTTP", "SERVER", BACKEND_IP, CLIENT_IP, b"HTTP")], got


def test_http_from_a_pod_is_seen_once_at_the_client_with_its_service(
        topo: Topology, reader: EventReader) -> None:
    assert call(topo, "p2", "http", CLUSTER_VIP, 80, "/missing") == "404"
    flows = l7_flows(reader)
    assert [(f.l7.type, f.traffic_direction) for f in flows] == [
        (flow_pb2.REQUEST, flow_pb2.EGRESS), (flow_pb2.RESPONSE, flow_pb2.EGRESS)], flows
    request, response = flows
    assert (request.IP.source, request.IP.destination) == (POD2_IP, BACKEND_IP)
    assert request.destination_service.name == "echo"
    assert response.source_service.name == "echo"
    assert request.l7.http.method == "GET"
    assert request.l7.http.url == f"http://{CLUSTER_VIP}:80/missing"  # the Host header
    assert request.l7.http.protocol == "HTTP/1.1"
    assert response.l7.http.code == 404
    # the response names its request, and how long it took
    assert (response.l7.http.method, response.l7.http.url) == ("GET", request.l7.http.url)
    assert 0 < response.l7.latency_ns < 5 * 10**9
    assert response.is_reply.value and not request.is_reply.value
    assert response.Type == flow_pb2.L7 and response.event_type.type == EVENT_L7


def test_dns_over_udp_and_tcp(topo: Topology, reader: EventReader) -> None:
    out = call(topo, "p2", "dns", CLUSTER_VIP, 53, "echo.default.svc.cluster.local")
    assert out.startswith("NOERROR") and "10.1.2.3" in out, out
    assert call(topo, "p2", "dns-tcp", CLUSTER_VIP, 53, "gone.missing").startswith("NXDOMAIN")
    flows = l7_flows(reader)
    dns = [(f.l7.type, f.l7.dns.query, tuple(f.l7.dns.qtypes), f.l7.dns.rcode,
            tuple(f.l7.dns.ips), f.l4.WhichOneof("protocol")) for f in flows]
    assert dns == [
        (flow_pb2.REQUEST, "echo.default.svc.cluster.local.", ("A",), 0, (), "UDP"),
        (flow_pb2.RESPONSE, "echo.default.svc.cluster.local.", ("A",), 0, ("10.1.2.3",), "UDP"),
        (flow_pb2.REQUEST, "gone.missing.", ("A",), 0, (), "TCP"),
        (flow_pb2.RESPONSE, "gone.missing.", ("A",), 3, (), "TCP"),
    ], dns
    assert flows[1].l7.dns.ttl == 5 and tuple(flows[1].l7.dns.rrtypes) == ("A",)
    assert all(f.l7.latency_ns > 0 for f in flows[1::2])
    assert flows[1].Summary.startswith('DNS Answer "10.1.2.3" TTL: 5')


def test_a_pod_reaching_itself_is_seen_once(topo: Topology, reader: EventReader) -> None:
    assert call(topo, "p2", "http", HAIRPIN_VIP, 80, "/") == "200"
    got = records(reader)
    assert got == [("HTTP", "CLIENT", POD2_IP, POD2_IP, b"GET "),
                   ("HTTP", "CLIENT", POD2_IP, POD2_IP, b"HTTP")], got


def test_only_listed_ports_and_message_heads_are_handed_up(
        topo: Topology, reader: EventReader) -> None:
    # 9090 is not an HTTP port; /big's 20 kB body spans many packets, its head is one
    assert call(topo, "p2", "http", CLUSTER_VIP, 9090, "/") == "200"
    assert call(topo, "p2", "http", CLUSTER_VIP, 80, "/big") == "200"
    got = records(reader)
    assert got == [("HTTP", "CLIENT", POD2_IP, BACKEND_IP, b"GET "),
                   ("HTTP", "CLIENT", BACKEND_IP, POD2_IP, b"HTTP")], got


def test_nothing_with_l7_off(services: Services, topo: Topology, reader: EventReader) -> None:
    set_l7(services, False)
    services.sync.set_trace_config(trace_config(
        on=True, pod_cidr=IPv4Network("10.78.0.0/24"), overlay_ifindex=0, host_ifindex=0,
        cluster_cidr=IPv4Network("10.78.0.0/16")))
    assert not services.sync.flush().failed
    assert call(topo, "p2", "http", CLUSTER_VIP, 80, "/") == "200"
    assert records(reader) == []
