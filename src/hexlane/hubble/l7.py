"""DNS and HTTP/1.x messages from the first bytes of a packet, as Hubble's L7 records (pure).

The datapath hands up the first bytes (at most 512) of each DNS message (UDP or TCP, on the
DNS ports) and of each HTTP/1.x request or response head (on the HTTP ports) where the
message's client is, or its server pod when the client is not a pod
(`hexlane.datapath.events`, ``HL_L7_CAPTURE`` in ``bpf/events.h``). This module reads them:

- `parse_dns(data, tcp)`: the query name and types; for a response its code, the addresses
  and types of its answers, their smallest TTL and the CNAMEs. A response cut short (more than
  the bytes handed up) keeps what could be read: the header always, the answers that fit.
- `parse_http(data, response)`: a request's method, target and version and its headers (the
  ones that fit); a response's status code and version.
- `L7Pairs`: requests waiting for their response, so a response carries the latency
  (Hubble's `l7.latency_ns`): DNS by client, server and message ID; HTTP/1.x by connection, in
  order (a connection's responses come in the order of its requests). Bounded: the oldest
  waiting request is forgotten first, and none waits longer than `max_age_ns`.
Cilium needs its proxy (an L7 policy and Envoy, or its DNS proxy) for these records; here
they come from the datapath, so `l7.dns.observation_source` says "datapath".
"""

from __future__ import annotations

import struct
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

OBSERVATION_SOURCE = "datapath"
_HEADER = struct.Struct(">HHHHHH")
_QR = 0x8000


class L7Error(ValueError):
    """Bytes that are not the start of a DNS message or an HTTP/1.x head."""


@dataclass(frozen=True, slots=True)
class DnsRecord:
    id: int
    response: bool
    query: str = ""  # with its trailing dot, as Hubble shows it
    qtypes: tuple[str, ...] = ()
    rcode: int = 0
    ips: tuple[str, ...] = ()
    rrtypes: tuple[str, ...] = ()
    ttl: int = 0
    cnames: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpRecord:
    response: bool
    method: str = ""
    url: str = ""  # http://<Host><target> for a request, as Hubble shows it
    protocol: str = ""
    code: int = 0
    headers: tuple[tuple[str, str], ...] = ()


def parse_dns(data: bytes, *, tcp: bool = False) -> DnsRecord:
    """A DNS message (`tcp`: behind its two-byte length) from its first bytes."""
    if tcp:
        data = data[2:]
    if len(data) < _HEADER.size:
        raise L7Error(f"a DNS message is at least {_HEADER.size} bytes, got {len(data)}")
    ident, flags, qdcount, *_ = _HEADER.unpack_from(data)
    response = bool(flags & _QR)
    try:
        msg = dns.message.from_wire(data, ignore_trailing=True, one_rr_per_rrset=True)
    except (dns.exception.DNSException, ValueError, IndexError):
        return _partial_dns(data, ident, flags, qdcount)
    query: str = ""
    qtypes: tuple[str, ...] = ()
    if msg.question:
        query = msg.question[0].name.to_text()
        qtypes = tuple(dns.rdatatype.to_text(q.rdtype) for q in msg.question)
    if not response:
        return DnsRecord(ident, False, query, qtypes)
    ips: list[str] = []
    rrtypes: list[str] = []
    cnames: list[str] = []
    ttls: list[int] = []
    for rrset in msg.answer:
        rrtypes.append(dns.rdatatype.to_text(rrset.rdtype))
        ttls.append(rrset.ttl)
        for rdata in rrset:
            if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
                ips.append(rdata.address)
            elif rrset.rdtype == dns.rdatatype.CNAME:
                cnames.append(rdata.target.to_text())
    return DnsRecord(ident, True, query, qtypes, msg.rcode(), tuple(ips), tuple(rrtypes),
                     min(ttls, default=0), tuple(cnames))


def _partial_dns(data: bytes, ident: int, flags: int, qdcount: int) -> DnsRecord:
    """What a message cut short (or not quite DNS) still says: its header, and its question
    when that is whole."""
    query: str = ""
    qtypes: tuple[str, ...] = ()
    if qdcount:
        try:
            name, used = dns.name.from_wire(data, _HEADER.size)
            (qtype,) = struct.unpack_from(">H", data, _HEADER.size + used)
            query, qtypes = name.to_text(), (dns.rdatatype.to_text(qtype),)
        except (dns.exception.DNSException, struct.error, IndexError):
            pass
    response = bool(flags & _QR)
    return DnsRecord(ident, response, query, qtypes, flags & 0xF if response else 0)


_METHODS = frozenset({"GET", "POST", "PUT", "HEAD", "DELETE", "PATCH", "OPTIONS", "CONNECT",
                      "TRACE"})


def parse_http(data: bytes, *, response: bool) -> HttpRecord:
    """An HTTP/1.x request or response head from its first bytes."""
    text = data.decode("latin-1")
    line, _, rest = text.partition("\r\n")
    parts = line.split(" ", 2)
    if response:
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise L7Error(f"not an HTTP/1.x status line: {line[:60]!r}")
        return HttpRecord(True, protocol=parts[0], code=int(parts[1]),
                          headers=_headers(rest))
    if len(parts) != 3 or parts[0] not in _METHODS or not parts[2].startswith("HTTP/1."):
        raise L7Error(f"not an HTTP/1.x request line: {line[:60]!r}")
    method, target, protocol = parts
    headers = _headers(rest)
    host = next((value for key, value in headers if key.lower() == "host"), "")
    url = target if "://" in target else f"http://{host}{target}"
    return HttpRecord(False, method=method, url=url, protocol=protocol, headers=headers)


def _headers(text: str) -> tuple[tuple[str, str], ...]:
    """The header lines that arrived whole (the last one may be cut short: it is left)."""
    head, ended, _ = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not ended:
        lines = lines[:-1]
    out = []
    for line in lines:
        key, colon, value = line.partition(":")
        if colon and key and " " not in key:
            out.append((key, value.strip()))
    return tuple(out)


@dataclass
class L7Pairs:
    """Requests waiting for their responses (module docstring). Keys are what the caller
    makes of a message: for DNS (client, client port, server, server port, id), for HTTP the
    connection (client, client port, server, server port); each request keeps its time and
    what the caller gives with it (an HTTP response names its request's method and URL)."""

    max_waiting: int = 65536
    max_age_ns: int = 30 * 10**9
    _waiting: OrderedDict[tuple[object, ...], deque[tuple[int, object]]] = field(
        default_factory=OrderedDict)
    _count: int = 0

    def request(self, key: tuple[object, ...], ktime_ns: int, info: object = None) -> None:
        queue = self._waiting.get(key)
        if queue is None:
            queue = self._waiting[key] = deque()
        else:
            self._waiting.move_to_end(key)
        queue.append((ktime_ns, info))
        self._count += 1
        while self._count > self.max_waiting:
            self._forget_oldest()

    def response(self, key: tuple[object, ...], ktime_ns: int) -> tuple[int, object] | None:
        """(latency, what came with the request) of the request this response answers;
        None when none waited for it (or it waited too long)."""
        queue = self._waiting.get(key)
        if not queue:
            return None
        sent, info = queue.popleft()
        self._count -= 1
        if not queue:
            del self._waiting[key]
        if ktime_ns < sent or ktime_ns - sent > self.max_age_ns:
            return None
        return ktime_ns - sent, info

    def expire(self, now_ns: int) -> int:
        """Forget requests older than max_age_ns; how many."""
        gone = 0
        for key in list(self._waiting):
            queue = self._waiting[key]
            while queue and now_ns - queue[0][0] > self.max_age_ns:
                queue.popleft()
                gone += 1
            if not queue:
                del self._waiting[key]
        self._count -= gone
        return gone

    def __len__(self) -> int:
        return self._count

    def _forget_oldest(self) -> None:
        key, queue = next(iter(self._waiting.items()))
        queue.popleft()
        self._count -= 1
        if not queue:
            del self._waiting[key]


def rcode_name(rcode: int) -> str:
    """Hubble's rcode label text (Cilium's metrics use the number; the CLI prints names)."""
    try:
        return dns.rcode.to_text(dns.rcode.Rcode(rcode))
    except ValueError:
        return str(rcode)
