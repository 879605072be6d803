"""The lab's cluster DNS, decided (pure): the names CoreDNS's kubernetes plugin serves, built
from the API's Services, EndpointSlices and Namespaces, and each pod's resolv.conf.

A k3s user gets CoreDNS behind the `kube-dns` Service with this Corefile's kubernetes block:
`kubernetes cluster.local in-addr.arpa ip6.arpa { pods insecure; fallthrough in-addr.arpa
ip6.arpa }`. `ClusterZone` is that block's view of the cluster, and `lookup` its answers
(TTL 5, the plugin's default):

- `<svc>.<ns>.svc.cluster.local`: A for the ClusterIP; for a headless Service one A per
  ready endpoint (NXDOMAIN while it has none); an ExternalName Service a CNAME to its name;
- `<endpoint>.<svc>.<ns>.svc.cluster.local`: the endpoint whose hostname (or address with
  dashes, `10-42-0-5`) is `<endpoint>`;
- `_<port>._<proto>.<svc>.<ns>.svc.cluster.local` SRV: priority 0, weight 100/n, the port,
  and the target (the Service's name, or each endpoint's for a headless one) with its A
  record in the additional section; without `_<port>._<proto>`, every port;
- `<a-b-c-d>.<ns>.pod.cluster.local`: A a.b.c.d for any namespace that exists (`pods
  insecure`, k3s's choice: the address is not checked against a pod);
- PTR in in-addr.arpa for ClusterIPs (`<svc>.<ns>.svc.cluster.local`) and endpoint
  addresses (`<endpoint>.<svc>.<ns>.svc.cluster.local`);
- a name that exists with no record of the type asked (AAAA of an IPv4 Service): NOERROR, no
  answer, the zone's SOA in the authority section; a name that does not exist: NXDOMAIN with
  the SOA (`cluster.local. 5 SOA ns.dns.cluster.local. hostmaster.cluster.local. <serial>
  7200 1800 86400 5`); `dns-version.cluster.local` TXT "1.1.0", the apex's SOA and NS
  (`ns.dns.cluster.local`, the kube-dns Service's address);
- names CoreDNS would hand to its `forward` plugin (outside cluster.local, and reverse names
  the cluster does not know): REFUSED, at once. The lab has no upstream resolver (its hosts
  reach nothing outside their namespaces), and REFUSED says "not this server's to answer"
  without a timeout; SERVFAIL would read as a failure worth retrying.

`respond` and `respond_wire` turn a query (dnspython's message, or bytes off a socket) into
the answer; `pod_resolv_conf` is what the kubelet writes into a pod for its `dnsPolicy` and
`dnsConfig`. No I/O here: the server (`lab/dnsserver.py`) feeds the objects and the bytes.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.errors import InputError
from hexlane.model.service import Service

CLUSTER_DOMAIN = "cluster.local"
TTL = 5  # the kubernetes plugin's default `ttl`
SOA_TTL_CAP = 300
DNS_VERSION = "1.1.0"  # the Kubernetes DNS specification version the plugin serves
DNS_VERSION_TTL = 28800
DNS_SERVICE = ("kube-system", "kube-dns")
EDNS_PAYLOAD = 1232  # what we announce and the most a UDP answer carries
UDP_PLAIN = 512  # a UDP answer to a query without EDNS
TCP_MAX = 65535
CNAME_DEPTH = 8  # CNAMEs followed inside the zone, as the plugin's loop guard

IN_ADDR_ARPA = dns.name.from_text("in-addr.arpa.")
A, AAAA, CNAME, NS, PTR, SOA, SRV, TXT = (
    dns.rdatatype.A, dns.rdatatype.AAAA, dns.rdatatype.CNAME, dns.rdatatype.NS,
    dns.rdatatype.PTR, dns.rdatatype.SOA, dns.rdatatype.SRV, dns.rdatatype.TXT)
NOERROR, NXDOMAIN, REFUSED, FORMERR, NOTIMP = (
    dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.REFUSED, dns.rcode.FORMERR,
    dns.rcode.NOTIMP)


# --- the cluster, as the zone sees it ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NamedPort:
    """A port as SRV names it: `_<name>._<protocol>`; `port` None is a slice without ports."""

    name: str
    protocol: str  # lower case: tcp, udp, sctp
    port: int | None


@dataclass(frozen=True, slots=True)
class DnsService:
    namespace: str
    name: str
    cluster_ips: tuple[str, ...]  # none for headless and ExternalName Services
    headless: bool
    external_name: str  # "" unless type ExternalName
    ports: tuple[NamedPort, ...]


@dataclass(frozen=True, slots=True)
class DnsEndpoint:
    """A ready endpoint address of a Service."""

    ip: str
    hostname: str  # its label under the Service: spec hostname, else the address with dashes
    ports: tuple[NamedPort, ...]


@dataclass(frozen=True)
class ClusterZone:
    """The cluster's names under `domain` at one moment (`serial` is the SOA's: the time of
    the last change, as CoreDNS has it)."""

    domain: str = CLUSTER_DOMAIN
    ttl: int = TTL
    serial: int = 0
    namespaces: frozenset[str] = frozenset()
    services: Mapping[tuple[str, str], DnsService] = field(default_factory=dict)
    endpoints: Mapping[tuple[str, str], tuple[DnsEndpoint, ...]] = field(default_factory=dict)
    reverse: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # ip -> PTR targets

    @property
    def origin(self) -> dns.name.Name:
        return dns.name.from_text(self.domain)

    def svc_name(self, namespace: str, name: str, endpoint: str = "") -> str:
        """`[endpoint.]name.namespace.svc.<domain>.`"""
        head = f"{endpoint}." if endpoint else ""
        return f"{head}{name}.{namespace}.svc.{self.domain}."

    @classmethod
    def build(cls, services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]],
              namespaces: Iterable[str], *, domain: str = CLUSTER_DOMAIN, ttl: int = TTL,
              serial: int = 0) -> ClusterZone:
        """The zone from the API's objects (as informers cache them); objects that do not
        parse are left out, as a Service the agent cannot read serves nothing either."""
        by_key: dict[tuple[str, str], DnsService] = {}
        for obj in services:
            svc = _read_service(obj)
            if svc is not None:
                by_key[(svc.namespace, svc.name)] = svc
        endpoints: dict[tuple[str, str], list[DnsEndpoint]] = {}
        for obj in slices:
            read = _read_slice(obj)
            if read is not None:
                endpoints.setdefault(read[0], []).extend(read[1])
        zone = cls(domain=domain.strip(".").lower(), ttl=ttl, serial=serial,
                   namespaces=frozenset(n.lower() for n in namespaces), services=by_key,
                   endpoints={k: tuple(v) for k, v in endpoints.items()})
        object.__setattr__(zone, "reverse", zone._reverse_index())
        return zone

    def _reverse_index(self) -> dict[str, tuple[str, ...]]:
        """A ClusterIP names its Service (the first in name order when two claim one); an
        address that is no ClusterIP names every endpoint it is."""
        out: dict[str, tuple[str, ...]] = {}
        for key in sorted(self.services):
            svc = self.services[key]
            for ip in svc.cluster_ips:
                out.setdefault(ip, (self.svc_name(svc.namespace, svc.name),))
        by_ip: dict[str, list[str]] = {}
        for (namespace, name), eps in sorted(self.endpoints.items()):
            for ep in eps:
                target = self.svc_name(namespace, name, ep.hostname)
                if ep.ip not in out and target not in by_ip.setdefault(ep.ip, []):
                    by_ip[ep.ip].append(target)
        out.update({ip: tuple(targets) for ip, targets in by_ip.items()})
        return out


def _read_service(obj: Mapping[str, Any]) -> DnsService | None:
    try:
        svc = Service.parse(obj)
    except InputError:
        return None
    ports = tuple(NamedPort(p.name.lower(), p.protocol.lower(), p.port) for p in svc.ports)
    external = svc.external_name.rstrip(".").lower() if svc.type == "ExternalName" else ""
    ips: tuple[str, ...] = ()
    if not external and not svc.headless:
        ips = tuple(ip for ip in (svc.cluster_ips or (svc.cluster_ip,)) if _is_ip(ip))
    return DnsService(svc.namespace.lower(), svc.name.lower(), ips,
                      svc.headless and not external, external, ports)


def _read_slice(obj: Mapping[str, Any]) -> tuple[tuple[str, str], list[DnsEndpoint]] | None:
    try:
        eps = EndpointSlice.parse(obj)
    except InputError:
        return None
    if not eps.service_name or eps.address_type not in ("IPv4", "IPv6"):
        return None
    ports = tuple(NamedPort(p.name.lower(), p.protocol.lower(), p.port) for p in eps.ports) \
        or (NamedPort("", "", None),)
    out = []
    for ep in eps.endpoints:
        if not ep.conditions.is_ready:  # what CoreDNS reads as the Endpoints' addresses
            continue
        for ip in ep.addresses:
            hostname = ep.hostname.lower() or ip.replace(".", "-").replace(":", "-")
            out.append(DnsEndpoint(ip, hostname, ports))
    return (eps.meta.namespace.lower(), eps.service_name.lower()), out


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


# --- lookups -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record: owner, type, TTL and its data in presentation format."""

    name: str
    rdtype: int
    ttl: int
    data: str


@dataclass(frozen=True, slots=True)
class Answer:
    rcode: dns.rcode.Rcode
    answer: tuple[Record, ...] = ()
    additional: tuple[Record, ...] = ()
    soa: Record | None = None  # for the authority section (NXDOMAIN and NODATA)


@dataclass(frozen=True, slots=True)
class _Target:
    """What a name resolves to before the query type picks records: an address or a name
    (CNAME), the port (SRV) and the name an SRV record points at."""

    host: str
    port: int | None
    srv_target: str


def lookup(zone: ClusterZone, qname: dns.name.Name, qtype: int) -> Answer:
    """What the cluster DNS answers for (qname, qtype) in class IN."""
    if qname.is_subdomain(zone.origin):
        return _forward(zone, qname, qtype, depth=0)
    if qname.is_subdomain(IN_ADDR_ARPA):
        return _reverse(zone, qname, qtype)
    return Answer(REFUSED)  # CoreDNS would forward it; the lab has no upstream


def soa_record(zone: ClusterZone) -> Record:
    ttl = min(zone.ttl, SOA_TTL_CAP)
    return Record(f"{zone.domain}.", SOA, ttl,
                  f"ns.dns.{zone.domain}. hostmaster.{zone.domain}. {zone.serial} 7200 1800 "
                  f"86400 {zone.ttl}")


def _labels(qname: dns.name.Name, origin: dns.name.Name) -> list[str]:
    rel = qname.relativize(origin)
    return [label.decode("ascii", "replace").lower() for label in rel.labels]


def _dns_service_ips(zone: ClusterZone) -> tuple[str, ...]:
    svc = zone.services.get(DNS_SERVICE)
    return svc.cluster_ips if svc is not None else ()


def _forward(zone: ClusterZone, qname: dns.name.Name, qtype: int, *, depth: int) -> Answer:
    owner = qname.to_text()
    soa = soa_record(zone)
    nodata, nxdomain = Answer(NOERROR, soa=soa), Answer(NXDOMAIN, soa=soa)
    segs = _labels(qname, zone.origin)
    if not segs:  # the apex
        if qtype == SOA:
            return Answer(NOERROR, (Record(owner, SOA, soa.ttl, soa.data),))
        if qtype == NS:
            ns = f"ns.dns.{zone.domain}."
            glue = tuple(Record(ns, A, zone.ttl, ip) for ip in _dns_service_ips(zone))
            return Answer(NOERROR, (Record(owner, NS, zone.ttl, ns),), glue)
        return nodata
    if segs == ["dns-version"] and qtype == TXT:
        return Answer(NOERROR, (Record(owner, TXT, DNS_VERSION_TTL, f'"{DNS_VERSION}"'),))
    if segs == ["ns", "dns"]:
        records = tuple(Record(owner, A, zone.ttl, ip) for ip in _dns_service_ips(zone)
                        if qtype == A and _family(ip) == 4)
        return Answer(NOERROR, records) if records else nodata
    kind = segs[-1]
    if kind not in ("svc", "pod"):
        return nxdomain
    if len(segs) == 1:
        return nodata
    namespace = segs[-2]
    if namespace not in zone.namespaces:
        return nxdomain
    if len(segs) == 2:
        return nodata
    name, rest = segs[-3], segs[:-3]
    if len(rest) > 2:
        return nxdomain
    targets = _pod_targets(name, rest, owner) if kind == "pod" else \
        _service_targets(zone, namespace, name, rest)
    if targets is None:
        return nxdomain
    answer = _records(zone, owner, qtype, targets, depth)
    if not answer.answer:
        return nodata
    return answer


def _pod_targets(name: str, rest: list[str], owner: str) -> list[_Target] | None:
    """`a-b-c-d.<ns>.pod`: the address itself (pods insecure)."""
    if rest:
        return None
    text = name.replace("-", ".") if name.count("-") == 3 and "--" not in name \
        else name.replace("-", ":")
    if not _is_ip(text):
        return None
    return [_Target(str(ipaddress.ip_address(text)), None, owner)]


def _strip(label: str) -> str:
    return label[1:] if label.startswith("_") else label


def _matches(want_port: str, want_proto: str, port: NamedPort) -> bool:
    """CoreDNS's matchPortAndProtocol: an empty wish matches anything."""
    return (not want_port or want_port == port.name) and \
        (not want_proto or want_proto == port.protocol)


def _service_targets(zone: ClusterZone, namespace: str, name: str,
                     rest: list[str]) -> list[_Target] | None:
    """The addresses (or external name) behind a Service name; None when nothing matches
    (NXDOMAIN), as the plugin's `findServices`."""
    svc = zone.services.get((namespace, name))
    if svc is None:
        return None
    endpoint = rest[0] if len(rest) == 1 else ""
    want_port, want_proto = (_strip(rest[0]), _strip(rest[1])) if len(rest) == 2 else ("", "")
    if svc.external_name:
        if endpoint:
            return None
        return [_Target(svc.external_name + ".", None, zone.svc_name(namespace, name))]
    out: list[_Target] = []
    if svc.headless or endpoint:
        for ep in zone.endpoints.get((namespace, name), ()):
            if endpoint and endpoint != ep.hostname:
                continue
            target = zone.svc_name(namespace, name, ep.hostname)
            out += [_Target(ep.ip, p.port, target) for p in ep.ports
                    if _matches(want_port, want_proto, p)]
        return out or None
    for p in svc.ports:
        if _matches(want_port, want_proto, p):
            out += [_Target(ip, p.port, zone.svc_name(namespace, name)) for ip in svc.cluster_ips]
    return out or None


def _family(host: str) -> int:
    try:
        return ipaddress.ip_address(host).version
    except ValueError:
        return 0  # a name


def _records(zone: ClusterZone, owner: str, qtype: int, targets: Sequence[_Target],
             depth: int) -> Answer:
    """The records of type `qtype` for a name that exists."""
    ttl = zone.ttl
    if qtype in (A, AAAA):
        family = 4 if qtype == A else 6
        records: list[Record] = []
        for t in targets:
            if _family(t.host) == family:
                record = Record(owner, qtype, ttl, t.host)
                if record not in records:
                    records.append(record)
            elif _family(t.host) == 0:
                records += _follow_cname(zone, owner, qtype, t.host, depth)
        return Answer(NOERROR, tuple(records))
    if qtype == CNAME:
        names = [t.host for t in targets if _family(t.host) == 0]
        return Answer(NOERROR, (Record(owner, CNAME, ttl, names[0]),) if names else ())
    if qtype == SRV:
        usable = [t for t in targets if _family(t.host) and t.port is not None]
        weight = max(1, 100 // len(usable)) if usable else 0
        srv: list[Record] = []
        extra: list[Record] = []
        for t in usable:
            record = Record(owner, SRV, ttl, f"0 {weight} {t.port} {t.srv_target}")
            if record not in srv:
                srv.append(record)
            glue = Record(t.srv_target, A if _family(t.host) == 4 else AAAA, ttl, t.host)
            if glue not in extra:
                extra.append(glue)
        return Answer(NOERROR, tuple(srv), tuple(extra))
    return Answer(NOERROR)  # the name exists; no records of other types


def _follow_cname(zone: ClusterZone, owner: str, qtype: int, target: str,
                  depth: int) -> list[Record]:
    """A CNAME to `target`, followed while it stays in the zone (no answer there: nothing, as
    the plugin drops the CNAME); out of the zone the CNAME alone, there is no upstream."""
    cname = Record(owner, CNAME, zone.ttl, target)
    name = dns.name.from_text(target)
    if not name.is_subdomain(zone.origin):
        return [cname]
    if depth >= CNAME_DEPTH or target.lower() == owner.lower():
        return []
    chased = _forward(zone, name, qtype, depth=depth + 1)
    return [cname, *chased.answer] if chased.answer else []


def _reverse(zone: ClusterZone, qname: dns.name.Name, qtype: int) -> Answer:
    """PTR for an address the cluster knows; anything else in in-addr.arpa falls through to
    the (absent) upstream: REFUSED."""
    octets = _labels(qname, IN_ADDR_ARPA)
    if qtype != PTR or len(octets) != 4 or not all(o.isdigit() for o in octets):
        return Answer(REFUSED)
    try:
        ip = str(ipaddress.IPv4Address(".".join(reversed(octets))))
    except ValueError:
        return Answer(REFUSED)
    targets = zone.reverse.get(ip)
    if not targets:
        return Answer(REFUSED)
    owner = qname.to_text()
    return Answer(NOERROR, tuple(Record(owner, PTR, zone.ttl, t) for t in targets))


# --- messages ----------------------------------------------------------------------------------


def respond(zone: ClusterZone, query: dns.message.Message) -> dns.message.Message:
    """The answer to one query: authoritative (AA) for the cluster's names, recursion
    available (RA) as CoreDNS says, EDNS when the query has it."""
    response = dns.message.make_response(query, recursion_available=True,
                                         our_payload=EDNS_PAYLOAD)
    if query.opcode() != dns.opcode.QUERY:
        response.set_rcode(NOTIMP)
        return response
    if len(query.question) != 1:
        response.set_rcode(FORMERR)
        return response
    question = query.question[0]
    if question.rdclass != dns.rdataclass.IN or question.rdtype in (
            dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        response.set_rcode(REFUSED)
        return response
    answer = lookup(zone, question.name, question.rdtype)
    response.set_rcode(answer.rcode)
    if answer.rcode in (NOERROR, NXDOMAIN):
        response.flags |= dns.flags.AA
    for section, records in ((response.answer, answer.answer),
                             (response.additional, answer.additional),
                             (response.authority, (answer.soa,) if answer.soa else ())):
        for record in records:
            _add(response, section, record)
    return response


def _add(message: dns.message.Message, section: list[dns.rrset.RRset], record: Record) -> None:
    rdtype = dns.rdatatype.RdataType.make(record.rdtype)
    rrset = message.find_rrset(section, dns.name.from_text(record.name), dns.rdataclass.IN,
                               rdtype, create=True)
    rrset.add(dns.rdata.from_text(dns.rdataclass.IN, rdtype, record.data), record.ttl)


def respond_wire(zone: ClusterZone, wire: bytes, *, tcp: bool) -> bytes | None:
    """The answer to a query's bytes, or None when nothing should be sent (a response, or
    less than a header). A query that does not parse gets FORMERR; an answer larger than
    the client takes over UDP (512 bytes, or its EDNS size up to 1232) is sent truncated
    (TC, no records) so the client asks again over TCP."""
    try:
        query = dns.message.from_wire(wire)
    except Exception:  # hostile or broken bytes of any kind: answered, never raised
        return _formerr(wire)
    if query.flags & dns.flags.QR:
        return None
    response = respond(zone, query)
    if tcp:
        limit = TCP_MAX
    elif query.edns >= 0:
        limit = min(max(UDP_PLAIN, query.payload), EDNS_PAYLOAD)
    else:
        limit = UDP_PLAIN
    try:
        return response.to_wire(max_size=limit)
    except dns.exception.TooBig:
        response.flags |= dns.flags.TC
        for section in (response.answer, response.authority, response.additional):
            section.clear()
        return response.to_wire(max_size=limit)


def _formerr(wire: bytes) -> bytes | None:
    """FORMERR with the query's id, opcode and RD bit and nothing else (RFC 1035 4.1.1)."""
    if len(wire) < 12:
        return None
    ident, flags = struct.unpack("!HH", wire[:4])
    if flags & dns.flags.QR:
        return None
    reply_flags = dns.flags.QR | (flags & (0x7800 | dns.flags.RD)) | FORMERR
    return struct.pack("!HHHHHH", ident, reply_flags, 0, 0, 0, 0)


# --- the pods' resolv.conf ------------------------------------------------------------------------

MAX_NAMESERVERS = 3  # the resolver reads no more (kubelet keeps the first 3)
MAX_SEARCH_PATHS = 32  # kubelet's limits since Kubernetes 1.28
MAX_SEARCH_CHARS = 2048


@dataclass(frozen=True, slots=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()

    def text(self) -> str:
        lines = []
        if self.searches:
            lines.append("search " + " ".join(self.searches))
        lines += [f"nameserver {ns}" for ns in self.nameservers]
        if self.options:
            lines.append("options " + " ".join(self.options))
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> ResolvConf:
        """The parts of a resolv.conf the kubelet reads (the last `search` line wins, as in
        glibc)."""
        nameservers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
        for line in text.splitlines():
            words = line.split("#", 1)[0].split(";", 1)[0].split()
            if not words:
                continue
            if words[0] == "nameserver" and len(words) > 1:
                nameservers.append(words[1])
            elif words[0] in ("search", "domain"):
                searches = [w.rstrip(".") for w in words[1:]]
            elif words[0] == "options":
                options += words[1:]
        return cls(tuple(nameservers), tuple(searches), tuple(options))


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(i for i in items if i))


def _merge_options(base: Sequence[str], extra: Sequence[str]) -> tuple[str, ...]:
    """Options by name, a later one replacing an earlier (kubelet's mergeDNSOptions)."""
    by_name: dict[str, str] = {}
    for option in [*base, *extra]:
        by_name[option.split(":", 1)[0]] = option
    return tuple(by_name.values())


def pod_resolv_conf(pod: Mapping[str, Any], *, cluster_dns: str, host: str,
                    domain: str = CLUSTER_DOMAIN) -> str | None:
    """The resolv.conf the kubelet gives `pod`, or None when the pod sees the host's as it
    is (dnsPolicy Default, and ClusterFirst on the host network, without a dnsConfig).

    ClusterFirst (the default) and ClusterFirstWithHostNet: `search <ns>.svc.<domain>
    svc.<domain> <domain>` then the host's search domains, `nameserver <cluster_dns>`,
    `options ndots:5`; Default: the host's file (`host`, its text); None: only dnsConfig.
    dnsConfig's nameservers and searches are appended and its options override by name;
    at most 3 nameservers and 32 search domains (2048 characters) are kept, as kubelet
    does."""
    spec = pod.get("spec") or {}
    policy = str(spec.get("dnsPolicy") or "ClusterFirst")
    config = spec.get("dnsConfig") or {}
    host_network = bool(spec.get("hostNetwork"))
    host_conf = ResolvConf.parse(host)
    if policy == "ClusterFirstWithHostNet" or (policy == "ClusterFirst" and not host_network):
        namespace = str((pod.get("metadata") or {}).get("namespace") or "default")
        base = ResolvConf((cluster_dns,),
                          (f"{namespace}.svc.{domain}", f"svc.{domain}", domain,
                           *host_conf.searches), ("ndots:5",))
    elif policy == "None":
        base = ResolvConf()
    else:  # Default, and ClusterFirst on the host network
        if not config:
            return None
        base = host_conf
    options = []
    for option in config.get("options") or []:
        if isinstance(option, Mapping) and option.get("name"):
            value = option.get("value")
            options.append(f"{option['name']}:{value}" if value not in (None, "")
                           else str(option["name"]))
    nameservers = _unique([*base.nameservers, *map(str, config.get("nameservers") or [])])
    searches = list(_unique([*base.searches,
                             *(str(s).rstrip(".") for s in config.get("searches") or [])]))
    searches = searches[:MAX_SEARCH_PATHS]
    while searches and len(" ".join(searches)) > MAX_SEARCH_CHARS:
        searches.pop()
    return ResolvConf(nameservers[:MAX_NAMESERVERS], tuple(searches),
                      _merge_options(base.options, options)).text()
