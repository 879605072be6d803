"""DNS and HTTP/1.x heads read from a packet's first bytes, and requests paired with responses
(hexlane.hubble.l7, pure), and the L7 flows the parser makes of them."""

from __future__ import annotations

import contextlib

import dns.message
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given
from hypothesis import strategies as st

from hexlane.datapath.events import EVENT_L7, Event, EventFlag, L7Kind, L7Payload, L7Side
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.l7 import L7Error, L7Pairs, parse_dns, parse_http
from hexlane.hubble.parser import FlowParser, L7Reader, Who


def query(name: str = "echo.default.svc.cluster.local", qtype: str = "A") -> bytes:
    return dns.message.make_query(name, qtype, id=4242).to_wire()


def response(name: str = "echo.default.svc.cluster.local", ips: tuple[str, ...] = ("10.43.0.9",),
             rcode: int = 0, cname: str = "") -> bytes:
    q = dns.message.make_query(name, "A", id=4242)
    r = dns.message.make_response(q)
    name = q.question[0].name.to_text()
    r.set_rcode(rcode)
    if cname:
        r.answer.append(dns.rrset.from_text(name, 30, "IN", "CNAME", cname))
    for ip in ips:
        r.answer.append(dns.rrset.from_text(cname or name, 5, "IN", "A", ip))
    return r.to_wire()


def test_a_query() -> None:
    rec = parse_dns(query())
    assert (rec.id, rec.response, rec.query, rec.qtypes) == (
        4242, False, "echo.default.svc.cluster.local.", ("A",))


def test_an_answer_with_a_cname() -> None:
    rec = parse_dns(response(ips=("10.0.0.1", "10.0.0.2"), cname="real.example."))
    assert rec.response and rec.rcode == 0
    assert rec.ips == ("10.0.0.1", "10.0.0.2")
    assert rec.cnames == ("real.example.",)
    assert rec.rrtypes == ("CNAME", "A", "A")
    assert rec.ttl == 5


def test_nxdomain_and_tcp_framing() -> None:
    wire = response(ips=(), rcode=dns.rcode.NXDOMAIN)
    rec = parse_dns(len(wire).to_bytes(2, "big") + wire, tcp=True)
    assert rec.rcode == 3 and rec.ips == () and rec.query == "echo.default.svc.cluster.local."


def test_a_response_cut_short_keeps_its_header_and_question() -> None:
    wire = response(ips=tuple(f"10.0.{i}.1" for i in range(60)))
    assert len(wire) > 512
    rec = parse_dns(wire[:512])
    assert rec.response and rec.id == 4242 and rec.query == "echo.default.svc.cluster.local."
    assert rec.qtypes == ("A",)


def test_not_dns() -> None:
    with pytest.raises(L7Error):
        parse_dns(b"short")


@given(st.binary(max_size=600))
def test_any_bytes_read_or_refused_cleanly(data: bytes) -> None:
    with contextlib.suppress(L7Error):
        parse_dns(data)
    for resp in (False, True):
        with contextlib.suppress(L7Error):
            parse_http(data, response=resp)


def test_an_http_request() -> None:
    rec = parse_http(b"GET /a?b=1 HTTP/1.1\r\nHost: echo\r\nUser-Agent: curl/8\r\n\r\n",
                     response=False)
    assert (rec.method, rec.url, rec.protocol) == ("GET", "http://echo/a?b=1", "HTTP/1.1")
    assert rec.headers == (("Host", "echo"), ("User-Agent", "curl/8"))


def test_a_head_cut_short_keeps_the_whole_header_lines() -> None:
    rec = parse_http(b"POST /x HTTP/1.0\r\nHost: h\r\nCookie: abc", response=False)
    assert rec.headers == (("Host", "h"),) and rec.protocol == "HTTP/1.0"


def test_an_http_response() -> None:
    rec = parse_http(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", response=True)
    assert (rec.code, rec.protocol) == (404, "HTTP/1.1")


@pytest.mark.parametrize(("data", "resp"), [
    (b"HELLO world", False), (b"GET / SPDY/3\r\n", False), (b"HTTP/2 200\r\n", True),
    (b"HTTP/1.1 abc OK\r\n", True)])
def test_not_http(data: bytes, resp: bool) -> None:
    with pytest.raises(L7Error):
        parse_http(data, response=resp)


def test_pairs_answer_in_order_and_forget_the_old() -> None:
    pairs = L7Pairs(max_waiting=3, max_age_ns=1000)
    pairs.request(("c",), 10, "first")
    pairs.request(("c",), 20, "second")
    assert pairs.response(("c",), 50) == (40, "first")
    assert pairs.response(("c",), 60) == (40, "second")
    assert pairs.response(("c",), 70) is None
    for i in range(5):
        pairs.request((i,), 100 + i)
    assert len(pairs) == 3 and pairs.response((0,), 200) is None  # the oldest forgotten
    assert pairs.expire(2000) == 3 and len(pairs) == 0
    pairs.request(("late",), 0)
    assert pairs.response(("late",), 5000) is None  # waited longer than max_age_ns


class NoOne:
    def who(self, address: str) -> Who:
        return Who(0)

    def service(self, address: str, port: int, protocol: str) -> tuple[str, str] | None:
        return None


def event(ktime: int, src: str, sport: int, dst: str, dport: int, *, response: bool,
          proto: int = 6) -> Event:
    flags = int(EventFlag.L4) | (int(EventFlag.RESPONSE) if response else 0)
    return Event(ktime, EVENT_L7, 0, 0, 0x18, proto, flags, 0, 0, 3, 100, src, dst, sport,
                 dport, None, 0, None)


def test_the_parser_makes_l7_flows_with_latency() -> None:
    reader = L7Reader()
    parser = FlowParser("default/n1", NoOne(), 0)
    req = event(1_000_000, "10.42.0.5", 40000, "10.42.1.7", 80, response=False)
    resp = event(4_000_000, "10.42.1.7", 80, "10.42.0.5", 40000, response=True)
    head = b"GET /x HTTP/1.1\r\nHost: web\r\n\r\n"
    f1 = parser.flow(req, l7=reader.read(req, L7Payload(L7Kind.HTTP, L7Side.CLIENT, head)))
    info = reader.read(resp, L7Payload(L7Kind.HTTP, L7Side.CLIENT, b"HTTP/1.1 200 OK\r\n\r\n"))
    f2 = parser.flow(resp, l7=info)
    assert f1.Summary == "HTTP/1.1 GET http://web/x"
    assert f2.l7.latency_ns == 3_000_000 and f2.l7.http.code == 200
    assert f2.Summary == "HTTP/1.1 200 3ms (GET http://web/x)"
    assert f1.traffic_direction == f2.traffic_direction == flow_pb2.EGRESS
    assert f2.l4.TCP.destination_port == 40000


def test_dns_pairs_by_id_and_unreadable_records_are_counted() -> None:
    reader = L7Reader()
    parser = FlowParser("default/n1", NoOne(), 0)
    q = event(10, "10.42.0.5", 5353, "10.43.0.10", 53, response=False, proto=17)
    a = event(90, "10.43.0.10", 53, "10.42.0.5", 5353, response=True, proto=17)
    reader.read(q, L7Payload(L7Kind.DNS, L7Side.SERVER, query()))
    info = reader.read(a, L7Payload(L7Kind.DNS, L7Side.SERVER, response()))
    f = parser.flow(a, l7=info)
    assert f.l7.latency_ns == 80 and f.traffic_direction == flow_pb2.INGRESS
    assert list(f.l7.dns.ips) == ["10.43.0.9"] and f.l7.dns.observation_source == "datapath"
    bad = reader.read(q, L7Payload(L7Kind.HTTP, L7Side.CLIENT, b"\x00\x01binary"))
    assert reader.errors == 1 and bad.record is None
    assert parser.flow(q, l7=bad).Summary.startswith("L7 message not read")
