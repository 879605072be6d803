"""Hubble's metric handlers: flows in, counts by label out (pure).

One handler per metric of `hubble.metrics.enabled`, with Cilium's names, labels, label order
and rules (pkg/hubble/metrics/<name>/handler.go), all under the `hubble_` prefix:

- flow: flows_processed_total{protocol,type,subtype,verdict}, every flow;
- drop: drop_total{reason,protocol}, DROPPED flows;
- tcp: tcp_flags_total{flag,family}, SYN, SYN-ACK, FIN and RST of forwarded TCP flows;
- port-distribution: port_distribution_total{protocol,port}, forwarded requests (not
  replies) by destination port;
- icmp: icmp_total{family,type}, ICMP flows by type ("EchoRequest",
  "DestinationUnreachable(Port)");
- dns: dns_queries_total and dns_responses_total{rcode,qtypes,ips_returned},
  dns_response_types_total{type,qtypes}, L7 DNS flows (`query` adds a query label,
  `ignoreAAAA` skips those asking for AAAA alone);
- http: http_requests_total{method,protocol,reporter},
  http_responses_total{method,protocol,status,reporter},
  http_request_duration_seconds{method,reporter}, L7 HTTP requests and responses;
- httpV2: http_requests_total{method,protocol,status,reporter} and
  http_request_duration_seconds{method,reporter}, L7 HTTP responses labelled as their request;
- flows-to-world: flows_to_world_total{protocol,verdict}, non-reply flows to reserved:world
  (`any-drop`, `port`, `syn-only`);
- policy: policy_verdicts_total{direction,match,action}, the datapath's policy verdicts on
  new connections (not the host's); hexlane has no L7 policy, so no `l7/...` matches.

Every metric also carries its context labels (`hexlane.hubble.metrics.context`), where
Cilium puts them (after the metric's own labels, except for drop, dns and http: before).

`FlowMetrics(specs)` holds the handlers and their `Family`s (series by label values);
`process(flow)` counts one flow in every handler. `pod_deleted(namespace, name, now)` and
`expire(now)` remove, a minute after a pod was deleted, the series that name it (the clock is
given, so tests need no sleeping). The Prometheus side is `hexlane.hubble.metrics.exporter`.
"""

from __future__ import annotations

import bisect
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from hexlane.config.hubble_metrics import MetricSpec
from hexlane.hubble.api.flow import flow_pb2

from .context import ContextLabels

PREFIX = "hubble_"
#: Cilium removes a deleted pod's series after this long (pkg/hubble/metrics: gracefulPeriod)
POD_GRACE_S = 60.0
#: Prometheus' default histogram buckets (Go's prometheus.DefBuckets)
DEFAULT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

# Cilium's monitor message types (pkg/monitor/api: event_type.type)
MSG_DROP, MSG_CAPTURE, MSG_TRACE, MSG_POLICY_VERDICT, MSG_ACCESS_LOG = 1, 3, 4, 5, 129
#: trace observation points by event_type.sub_type (pkg/monitor/api: TraceObservationPoints)
TRACE_POINTS = {0: "to-endpoint", 1: "to-proxy", 2: "to-host", 3: "to-stack",
                4: "to-overlay", 5: "from-endpoint", 6: "from-proxy", 7: "from-host",
                8: "from-stack", 9: "from-overlay", 10: "from-network", 11: "to-network",
                12: "to-crypto", 13: "from-crypto"}
_L4_NAMES = {"TCP": "TCP", "UDP": "UDP", "ICMPv4": "ICMPv4", "ICMPv6": "ICMPv6",
             "SCTP": "SCTP"}
_L7_NAMES = {"dns": "DNS", "http": "HTTP", "kafka": "Kafka"}
_L4_TYPES = frozenset({MSG_DROP, MSG_TRACE, MSG_POLICY_VERDICT, MSG_CAPTURE})
_FORWARDED = frozenset({flow_pb2.FORWARDED, flow_pb2.REDIRECTED})
_DROPPED = flow_pb2.DROPPED
_WORLD = "reserved:world"

#: DNS response codes as Hubble names them (pkg/hubble/metrics/dns/rcode.go)
RCODE_NAMES = {
    0: "No Error", 1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
    4: "Not Implemented", 5: "Query Refused", 6: "Name Exists when it should not",
    7: "RR Set Exists when it should not", 8: "RR Set that should exist does not",
    9: "Not Authorized", 10: "Name not contained in zone", 11: "DSO-TYPE Not Implemented",
    16: "Bad OPT Version", 17: "Key not recognized", 18: "Signature out of time window",
    19: "Bad TKEY Mode", 20: "Duplicate key name", 21: "Algorithm not supported",
    22: "Bad Truncation", 23: "Bad/missing Server Cookie",
}

# ICMP types and codes as gopacket's ICMPv4TypeCode / ICMPv6TypeCode print them
_ICMP4: dict[int, tuple[str, dict[int, str] | None]] = {
    0: ("EchoReply", None),
    3: ("DestinationUnreachable", {
        0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
        5: "SourceRoutingFailed", 6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated",
        9: "NetAdminProhibited", 10: "HostAdminProhibited", 11: "NetTOS", 12: "HostTOS",
        13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff"}),
    4: ("SourceQuench", None),
    5: ("Redirect", {0: "Net", 1: "Host", 2: "TOS+Net", 3: "TOS+Host"}),
    8: ("EchoRequest", None), 9: ("RouterAdvertisement", None),
    10: ("RouterSolicitation", None),
    11: ("TimeExceeded", {0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}),
    12: ("ParameterProblem", {0: "PointerIndicatesError", 1: "MissingOption",
                              2: "BadLength"}),
    13: ("TimestampRequest", None), 14: ("TimestampReply", None), 15: ("InfoRequest", None),
    16: ("InfoReply", None), 17: ("AddressMaskRequest", None), 18: ("AddressMaskReply", None),
}
_ICMP6: dict[int, tuple[str, dict[int, str] | None]] = {
    1: ("DestinationUnreachable", {
        0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc",
        3: "AddressUnreachable", 4: "PortUnreachable", 5: "SrcAddressFailedPolicy",
        6: "RejectRouteToDst"}),
    2: ("PacketTooBig", None),
    3: ("TimeExceeded", {0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}),
    4: ("ParameterProblem", {0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader",
                             2: "UnrecognizedIPv6Option"}),
    128: ("EchoRequest", None), 129: ("EchoReply", None), 133: ("RouterSolicitation", None),
    134: ("RouterAdvertisement", None), 135: ("NeighborSolicitation", None),
    136: ("NeighborAdvertisement", None), 137: ("Redirect", None),
}


def _enum_names(enum: object) -> dict[int, str]:
    return {v.number: v.name for v in enum.DESCRIPTOR.values}  # type: ignore[attr-defined]


_VERDICTS = _enum_names(flow_pb2.Verdict)
_DROP_REASONS = _enum_names(flow_pb2.DropReason)
_IP_VERSIONS = _enum_names(flow_pb2.IPVersion)


def _name(names: dict[int, str], value: int) -> str:
    return names.get(value) or str(value)


def icmp_type(table: dict[int, tuple[str, dict[int, str] | None]], typ: int, code: int) -> str:
    """"EchoRequest", "DestinationUnreachable(Port)", "TimeExceeded(Code: 9)", "42(0)"."""
    known = table.get(typ)
    if known is None:
        return f"{typ}({code})"
    name, codes = known
    if codes is None:
        return name if code == 0 else f"{name}(Code: {code})"
    return f"{name}({codes[code]})" if code in codes else f"{name}(Code: {code})"


def flow_protocol(f: flow_pb2.Flow) -> str:
    """The protocol best describing the flow: the L7 one, else the L4 one (Hubble's
    FlowProtocol)."""
    t = f.event_type.type
    if t == MSG_ACCESS_LOG:
        if f.HasField("l7"):
            return _L7_NAMES.get(f.l7.WhichOneof("record") or "", "Unknown L7")
        return "Unknown L7"
    if t in _L4_TYPES:
        if f.HasField("l4"):
            return _L4_NAMES.get(f.l4.WhichOneof("protocol") or "", "Unknown L4")
        return "Unknown L4"
    return "Unknown flow"


class Histogram:
    """One histogram series: counts per bucket (not cumulative), sum and count."""

    __slots__ = ("buckets", "count", "sum")

    def __init__(self, size: int) -> None:
        self.buckets = [0] * (size + 1)  # the last: +Inf
        self.sum = 0.0
        self.count = 0


@dataclass
class Family:
    """One metric: its series, by label values in the order of `label_names`."""

    name: str  # with the prefix; a counter's is shown with _total
    help: str
    kind: str  # "counter" | "histogram"
    label_names: tuple[str, ...]
    context: ContextLabels
    buckets: tuple[float, ...] = DEFAULT_BUCKETS
    series: dict[tuple[str, ...], float | Histogram] = field(default_factory=dict)

    def inc(self, labels: tuple[str, ...]) -> None:
        series = self.series
        series[labels] = series.get(labels, 0.0) + 1.0  # type: ignore[operator]

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        h = self.series.get(labels)
        if h is None:
            h = self.series[labels] = Histogram(len(self.buckets))
        assert isinstance(h, Histogram)
        h.buckets[bisect.bisect_left(self.buckets, value)] += 1
        h.sum += value
        h.count += 1

    def remove(self, match: dict[str, str]) -> int:
        """Drop every series whose labels include `match`; how many (none when the family
        lacks one of the labels)."""
        try:
            where = [(self.label_names.index(k), v) for k, v in match.items()]
        except ValueError:
            return 0
        gone = [key for key in self.series if all(key[i] == v for i, v in where)]
        for key in gone:
            del self.series[key]
        return len(gone)


class Handler:
    """A metric's handler: its families, and what one flow adds to them."""

    def __init__(self, spec: MetricSpec) -> None:
        self.spec = spec
        self.ctx = ContextLabels(spec.context)
        self.families: list[Family] = []

    def family(self, name: str, help: str, labels: Sequence[str], *,
               context_first: bool = False, kind: str = "counter") -> Family:
        names = ((*self.ctx.names, *labels) if context_first else (*labels, *self.ctx.names))
        fam = Family(PREFIX + name, help, kind, tuple(names), self.ctx)
        self.families.append(fam)
        return fam

    def process(self, f: flow_pb2.Flow) -> None:
        raise NotImplementedError


class FlowHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.flows = self.family("flows_processed", "Total number of flows processed",
                                 ("protocol", "type", "subtype", "verdict"))

    def process(self, f: flow_pb2.Flow) -> None:
        t = f.event_type.type
        subtype = ""
        if t == MSG_ACCESS_LOG:
            kind = "L7"
            if f.HasField("l7"):
                subtype = _L7_NAMES.get(f.l7.WhichOneof("record") or "", "")
        elif t == MSG_DROP:
            kind = "Drop"
        elif t == MSG_TRACE:
            kind = "Trace"
            subtype = TRACE_POINTS.get(f.event_type.sub_type, "")
        elif t == MSG_CAPTURE:
            kind = "Capture"
        elif t == MSG_POLICY_VERDICT:
            kind = "PolicyVerdict"
        else:
            kind, subtype = "Unknown", str(t)
        self.flows.inc((flow_protocol(f), kind, subtype, _name(_VERDICTS, f.verdict),
                        *self.ctx.values(f)))


class DropHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.drops = self.family("drop", "Number of drops", ("reason", "protocol"),
                                 context_first=True)

    def process(self, f: flow_pb2.Flow) -> None:
        if f.verdict != _DROPPED:
            return
        self.drops.inc((*self.ctx.values(f), _name(_DROP_REASONS, f.drop_reason_desc),
                        flow_protocol(f)))


class TcpHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.flags = self.family("tcp_flags", "TCP flag occurrences", ("flag", "family"))

    def process(self, f: flow_pb2.Flow) -> None:
        if f.verdict not in _FORWARDED or f.l4.WhichOneof("protocol") != "TCP" \
                or not f.HasField("IP") or not f.l4.TCP.HasField("flags"):
            return
        flags = f.l4.TCP.flags
        rest = (_name(_IP_VERSIONS, f.IP.ipVersion), *self.ctx.values(f))
        if flags.FIN:
            self.flags.inc(("FIN", *rest))
        if flags.SYN:
            self.flags.inc(("SYN-ACK" if flags.ACK else "SYN", *rest))
        if flags.RST:
            self.flags.inc(("RST", *rest))


class PortDistributionHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.ports = self.family("port_distribution",
                                 "Numbers of packets distributed by destination port",
                                 ("protocol", "port"))

    def process(self, f: flow_pb2.Flow) -> None:
        # Not sure it is a request (no is_reply): its destination port may be ephemeral.
        if f.verdict not in _FORWARDED or not f.HasField("is_reply") or f.is_reply.value:
            return
        l4 = f.l4.WhichOneof("protocol")
        if l4 in ("TCP", "UDP", "SCTP"):
            port = str(getattr(f.l4, l4).destination_port)
        elif l4 in ("ICMPv4", "ICMPv6"):
            port = "0"
        else:
            return
        self.ports.inc((l4, port, *self.ctx.values(f)))


class IcmpHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.icmp = self.family("icmp", "Number of ICMP messages", ("family", "type"))

    def process(self, f: flow_pb2.Flow) -> None:
        l4 = f.l4.WhichOneof("protocol")
        if l4 == "ICMPv4":
            icmp = f.l4.ICMPv4
            labels = ("IPv4", icmp_type(_ICMP4, icmp.type, icmp.code))
        elif l4 == "ICMPv6":
            icmp6 = f.l4.ICMPv6
            labels = ("IPv6", icmp_type(_ICMP6, icmp6.type, icmp6.code))
        else:
            return
        self.icmp.inc((*labels, *self.ctx.values(f)))


class DnsHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.query = "query" in spec.flags
        self.ignore_aaaa = "ignoreAAAA" in spec.flags
        extra = ("query",) if self.query else ()
        self.queries = self.family("dns_queries", "Number of DNS queries observed",
                                   ("rcode", "qtypes", "ips_returned", *extra),
                                   context_first=True)
        self.responses = self.family("dns_responses", "Number of DNS responses observed",
                                     ("rcode", "qtypes", "ips_returned", *extra),
                                     context_first=True)
        self.types = self.family("dns_response_types", "Number of DNS response types",
                                 ("type", "qtypes", *extra), context_first=True)

    def process(self, f: flow_pb2.Flow) -> None:
        if not f.HasField("l7") or f.l7.WhichOneof("record") != "dns":
            return
        dns = f.l7.dns
        qtypes = list(dns.qtypes)
        if self.ignore_aaaa and qtypes == ["AAAA"]:
            return
        ctx = self.ctx.values(f)
        joined, ips = ",".join(qtypes), str(len(dns.ips))
        extra = (dns.query,) if self.query else ()
        if f.verdict == _DROPPED:
            self.queries.inc((*ctx, "Policy denied", joined, ips, *extra))
        elif not f.is_reply.value:
            self.queries.inc((*ctx, "", joined, ips, *extra))
        else:
            rcode = RCODE_NAMES.get(dns.rcode, "")
            self.responses.inc((*ctx, rcode, joined, ips, *extra))
            for rrtype in dns.rrtypes:
                self.types.inc((*ctx, rrtype, joined, *extra))


def _reporter(f: flow_pb2.Flow) -> str:
    """client for what a pod sends (egress), server for what it receives (ingress)."""
    direction = f.traffic_direction
    return ("client" if direction == flow_pb2.EGRESS else
            "server" if direction == flow_pb2.INGRESS else "unknown")


class HttpHandler(Handler):
    """`http`: requests and responses counted apart, the duration from the response."""

    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.requests = self.family("http_requests", "Count of HTTP requests",
                                    ("method", "protocol", "reporter"), context_first=True)
        self.responses = self.family("http_responses", "Count of HTTP responses",
                                     ("method", "protocol", "status", "reporter"),
                                     context_first=True)
        self.duration = self.family("http_request_duration_seconds",
                                    "Quantiles of HTTP request duration in seconds",
                                    ("method", "reporter"), context_first=True,
                                    kind="histogram")

    def process(self, f: flow_pb2.Flow) -> None:
        if not f.HasField("l7") or f.l7.WhichOneof("record") != "http":
            return
        kind = f.l7.type
        if kind not in (flow_pb2.REQUEST, flow_pb2.RESPONSE):
            return
        http, reporter, ctx = f.l7.http, _reporter(f), self.ctx.values(f)
        if kind == flow_pb2.REQUEST:
            self.requests.inc((*ctx, http.method, http.protocol, reporter))
        else:
            self.responses.inc((*ctx, http.method, http.protocol, str(http.code), reporter))
            self.duration.observe((*ctx, http.method, reporter), f.l7.latency_ns / 1e9)


class HttpV2Handler(Handler):
    """`httpV2`: responses only, labelled from the request's point of view."""

    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.requests = self.family("http_requests", "Count of HTTP requests",
                                    ("method", "protocol", "status", "reporter"),
                                    context_first=True)
        self.duration = self.family("http_request_duration_seconds",
                                    "Quantiles of HTTP request duration in seconds",
                                    ("method", "reporter"), context_first=True,
                                    kind="histogram")

    def process(self, f: flow_pb2.Flow) -> None:
        if not f.HasField("l7") or f.l7.WhichOneof("record") != "http" \
                or f.l7.type != flow_pb2.RESPONSE:
            return
        http, reporter = f.l7.http, _reporter(f)
        ctx = self.ctx.values(f, invert=True)
        self.requests.inc((*ctx, http.method, http.protocol, str(http.code), reporter))
        self.duration.observe((*ctx, http.method, reporter), f.l7.latency_ns / 1e9)


class FlowsToWorldHandler(Handler):
    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.any_drop = "any-drop" in spec.flags
        self.port = "port" in spec.flags
        self.syn_only = "syn-only" in spec.flags
        self.flows = self.family("flows_to_world", "Total number of flows to reserved:world",
                                 ("protocol", "verdict", *(("port",) if self.port else ())))

    def process(self, f: flow_pb2.Flow) -> None:
        if _WORLD not in f.destination.labels or not f.HasField("l4"):
            return
        dropped = f.verdict == _DROPPED
        if dropped and not self.any_drop and f.drop_reason_desc != flow_pb2.POLICY_DENIED:
            return
        reply = f.HasField("is_reply") and f.is_reply.value
        if not dropped and reply:
            return  # a reply's destination port is ephemeral
        l4 = f.l4.WhichOneof("protocol")
        if self.syn_only and (l4 != "TCP" or not f.l4.TCP.flags.SYN or reply):
            return
        labels: tuple[str, ...] = (flow_protocol(f), _name(_VERDICTS, f.verdict))
        if self.port:
            labels += (str(getattr(f.l4, l4).destination_port)
                       if l4 in ("TCP", "UDP", "SCTP") else "",)
        self.flows.inc((*labels, *self.ctx.values(f)))


#: Cilium's policy match type names (pkg/monitor/api: PolicyMatchType.String), lower-cased
_MATCH_NAMES = {0: "none", 1: "l3-only", 2: "l3-l4", 3: "l4-only", 4: "all", 5: "l3-proto",
                6: "proto-only"}
_DIRECTIONS = _enum_names(flow_pb2.TrafficDirection)
_HOST_IDENTITY = 1


class PolicyHandler(Handler):
    """Policy verdicts of new connections, but not the host's (always let into its pods)."""

    def __init__(self, spec: MetricSpec) -> None:
        super().__init__(spec)
        self.verdicts = self.family("policy_verdicts", "Total number of Cilium network "
                                    "policy verdicts", ("direction", "match", "action"))

    def process(self, f: flow_pb2.Flow) -> None:
        if f.event_type.type != MSG_POLICY_VERDICT or f.source.identity == _HOST_IDENTITY:
            return
        self.verdicts.inc((_DIRECTIONS.get(f.traffic_direction, "").lower(),
                           _MATCH_NAMES.get(f.policy_match_type, str(f.policy_match_type)),
                           _name(_VERDICTS, f.verdict).lower(), *self.ctx.values(f)))


HANDLERS: dict[str, Callable[[MetricSpec], Handler]] = {
    "flow": FlowHandler, "drop": DropHandler, "tcp": TcpHandler,
    "port-distribution": PortDistributionHandler, "icmp": IcmpHandler, "dns": DnsHandler,
    "http": HttpHandler, "httpV2": HttpV2Handler, "flows-to-world": FlowsToWorldHandler,
    "policy": PolicyHandler,
}


class FlowMetrics:
    """Every enabled handler, the flows they counted, the pods whose series go soon."""

    def __init__(self, specs: Sequence[MetricSpec], *, grace_s: float = POD_GRACE_S) -> None:
        self.handlers = [HANDLERS[spec.name](spec) for spec in specs]
        self.families = [fam for h in self.handlers for fam in h.families]
        self.grace_s = grace_s
        self.errors = 0  # flows a handler could not count (a bug: logged by the caller)
        self._deleted: deque[tuple[float, str, str]] = deque()

    def process(self, f: flow_pb2.Flow) -> None:
        for handler in self.handlers:
            try:
                handler.process(f)
            except Exception:  # one handler's failure must not cost the others
                self.errors += 1

    def pod_deleted(self, namespace: str, name: str, now: float) -> None:
        """The pod is gone: its series go `grace_s` after `now`."""
        self._deleted.append((now + self.grace_s, namespace, name))

    def expire(self, now: float) -> int:
        """Remove the series of pods deleted at least `grace_s` ago; how many."""
        removed = 0
        while self._deleted and self._deleted[0][0] <= now:
            _, namespace, name = self._deleted.popleft()
            for fam in self.families:
                for match in fam.context.pod_series(namespace, name):
                    removed += fam.remove(match)
        return removed
