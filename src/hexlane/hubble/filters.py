"""FlowFilter semantics, as Hubble's (pure): which flows a GetFlows request selects.

Within one `flow.FlowFilter` every field that is set must match (AND) and a field matches
when any of its values does (OR). A request's whitelist filters are OR-ed (no whitelist:
every flow), and a flow matching any blacklist filter is left out: the answer is whitelist
minus blacklist. `compile_filters(whitelist, blacklist)` turns the protobuf filters into one
predicate once, so checking a flow costs no parsing; a value that cannot mean anything (a bad
CIDR, port, regular expression, pattern) raises `FilterError` naming the field, which the
server answers with INVALID_ARGUMENT as Cilium does.

Value syntax, as Hubble's:
- pods and services: `[namespace/][name-prefix]`; no slash means namespace `default`, an empty
  namespace (`/xwing`) any namespace, an empty name (`kube-system/`) any name;
- IPs: an address or a CIDR; ports: a number 0-65535;
- labels: Kubernetes selector syntax (`app=x`, `tier in (a,b)`, `!canary`) over labels written
  `source:key=value`; a key without a source matches any source, `k8s:app=x` only k8s labels;
- FQDNs and node names: lower-case patterns where `*` stands for any run of name characters;
  node names are `cluster/node` (`k8s*`, `prod/`, `prod/*.example.com`);
- HTTP status: `404` or a prefix `4+`, `50+`; HTTP path and URL and DNS query: regular
  expressions (searched, not anchored);
- protocols: tcp, udp, sctp, icmp (v4 or v6), icmpv4, icmpv6, http, dns, kafka;
- TCP flags: a flow matches an entry when it carries every flag the entry sets.

Not supported: the experimental CEL expressions (refused with FilterError).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable, Sequence
from urllib.parse import urlsplit

from hexlane.hubble.api.flow import flow_pb2
from hexlane.model.errors import InputError
from hexlane.model.netaddr import parse_ip_or_cidr
from hexlane.model.selectors import LabelSelector

Flow = flow_pb2.Flow
FlowFilter = flow_pb2.FlowFilter
Predicate = Callable[[flow_pb2.Flow], bool]

# The CiliumEventType of L7 access-log flows; HTTP filters only make sense on those.
MESSAGE_TYPE_ACCESS_LOG = 129


class FilterError(ValueError):
    """A filter value that cannot be used; the message names the field and the value."""


def compile_filters(whitelist: Sequence[flow_pb2.FlowFilter] = (),
                    blacklist: Sequence[flow_pb2.FlowFilter] = ()) -> Predicate:
    """One predicate for a request: any whitelist filter (all flows if none), no blacklist."""
    allow = [compile_filter(f) for f in whitelist]
    deny = [compile_filter(f) for f in blacklist]

    def selected(flow: flow_pb2.Flow) -> bool:
        if allow and not any(p(flow) for p in allow):
            return False
        return not any(p(flow) for p in deny)

    return selected


def compile_filter(ff: flow_pb2.FlowFilter) -> Predicate:
    """The predicate of one FlowFilter: every field set must match (no field: any flow)."""
    parts = [p for build in _BUILDERS if (p := build(ff)) is not None]

    def matches(flow: flow_pb2.Flow) -> bool:
        return all(p(flow) for p in parts)

    return matches


# --- building blocks ---------------------------------------------------------------------


def _any_of(values: Iterable[object]) -> frozenset[object]:
    return frozenset(values)


def _ips(field: str, values: Sequence[str],
         get: Callable[[flow_pb2.Flow], str]) -> Predicate | None:
    if not values:
        return None
    nets = []
    for v in values:
        try:
            nets.append(parse_ip_or_cidr(v))
        except ValueError as e:
            raise FilterError(f"{field}: {e}") from None

    def match(flow: flow_pb2.Flow) -> bool:
        text = get(flow)
        if not text:
            return False
        try:
            addr = ipaddress.ip_address(text)
        except ValueError:
            return False
        return any(addr in net for net in nets)

    return match


def parse_namespaced(field: str, value: str) -> tuple[str | None, str]:
    """(namespace or None for any, name prefix) of a pod or service filter value."""
    if value == "":
        raise FilterError(f"{field}: invalid empty value, expected [namespace/][name]")
    if "/" not in value:
        return "default", value
    ns, _, prefix = value.partition("/")
    if "/" in prefix:
        raise FilterError(f"{field}: invalid value {value!r}, expected [namespace/][name]")
    return (ns or None), prefix


def _namespaced(field: str, values: Sequence[str],
                get: Callable[[flow_pb2.Flow], tuple[str, str]]) -> Predicate | None:
    if not values:
        return None
    wanted = [parse_namespaced(field, v) for v in values]

    def match(flow: flow_pb2.Flow) -> bool:
        ns, name = get(flow)
        if not ns and not name:
            return False
        return any((want_ns is None or want_ns == ns) and name.startswith(prefix)
                   for want_ns, prefix in wanted)

    return match


_PATTERN_CHARS = re.compile(r"[-0-9_a-z.*]*")
_NAME_RE = r"[-0-9_a-z]+(?:\.[-0-9_a-z]+)*"


def _pattern_regex(field: str, pattern: str) -> str:
    text = pattern.strip().lower()
    if text.endswith("."):
        text = text[:-1]
    if not text:
        raise FilterError(f"{field}: empty pattern")
    if text.endswith(".") or not _PATTERN_CHARS.fullmatch(text):
        raise FilterError(f"{field}: invalid pattern {pattern!r} (letters, digits, '-', '_', "
                          "'.' and '*' only)")
    return "".join(r"[-.0-9a-z]*" if c == "*" else re.escape(c) for c in text)


def _canonical_name(name: str) -> str:
    return name.lower().removesuffix(".")


def _fqdns(field: str, patterns: Sequence[str],
           get: Callable[[flow_pb2.Flow], Iterable[str]]) -> Predicate | None:
    if not patterns:
        return None
    regex = re.compile("(?:" + "|".join(_pattern_regex(field, p) for p in patterns) + r")\Z")

    def match(flow: flow_pb2.Flow) -> bool:
        return any(regex.match(_canonical_name(n)) for n in get(flow))

    return match


def _node_names(patterns: Sequence[str]) -> Predicate | None:
    if not patterns:
        return None
    compiled: list[tuple[re.Pattern[str] | None, re.Pattern[str] | None]] = []
    for p in patterns:
        if p == "":
            raise FilterError("node_name: empty pattern")
        parts = p.split("/")
        if len(parts) > 2:
            raise FilterError(f"node_name: too many slashes in {p!r} (expected cluster/node)")
        cluster, node = parts if len(parts) == 2 else ("", parts[0])
        compiled.append((
            re.compile(_pattern_regex("node_name", cluster) + r"\Z") if cluster else None,
            re.compile(_pattern_regex("node_name", node) + r"\Z") if node else None))

    def match(flow: flow_pb2.Flow) -> bool:
        cluster, _, node = flow.node_name.rpartition("/")
        if not node:
            return False
        cluster, node = _canonical_name(cluster), _canonical_name(node)
        return any((c is None or (cluster and c.match(cluster)))
                   and (n is None or n.match(node)) for c, n in compiled)

    return match


_SOURCE_PREFIX = re.compile(r"(^|[,(!\s])\s*([a-z0-9-]+):([A-Za-z0-9])")


def _parse_selector(field: str, text: str) -> LabelSelector:
    # Cilium labels carry a source ("k8s:app=x"); the selector grammar has no colon in keys,
    # so "k8s:app" is written "k8s.app" on both sides (as Hubble does).
    translated = _SOURCE_PREFIX.sub(r"\1\2.\3", text)
    try:
        return LabelSelector.parse_string(translated)
    except InputError as e:
        raise FilterError(f"{field}: invalid label selector {text!r}: "
                          f"{e.problems[0].message}") from None


def label_map(labels: Iterable[str]) -> dict[str, str]:
    """Cilium labels (`source:key=value`) as selector keys: `key`, `source.key` and
    `any.key` each map to the value."""
    out: dict[str, str] = {}
    for label in labels:
        head, _, value = label.partition("=")
        source, sep, key = head.partition(":")
        if not sep:
            source, key = "", head
        out[key] = value
        out["any." + key] = value
        if source:
            out[f"{source}.{key}"] = value
    return out


def _labels(field: str, selectors: Sequence[str],
            get: Callable[[flow_pb2.Flow], Iterable[str]]) -> Predicate | None:
    if not selectors:
        return None
    parsed = [_parse_selector(field, s) for s in selectors]

    def match(flow: flow_pb2.Flow) -> bool:
        labels = label_map(get(flow))
        return any(s.matches(labels) for s in parsed)

    return match


def _port_number(field: str, text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise FilterError(f"{field}: invalid port {text!r}, expected 0-65535")
    return int(text)


def l4_ports(flow: flow_pb2.Flow) -> tuple[int, int] | None:
    """(source port, destination port) of a TCP, UDP or SCTP flow, else None."""
    l4 = flow.l4
    kind = l4.WhichOneof("protocol")
    if kind == "TCP":
        return l4.TCP.source_port, l4.TCP.destination_port
    if kind == "UDP":
        return l4.UDP.source_port, l4.UDP.destination_port
    if kind == "SCTP":
        return l4.SCTP.source_port, l4.SCTP.destination_port
    return None


def _ports(field: str, values: Sequence[str], index: int) -> Predicate | None:
    if not values:
        return None
    wanted = {_port_number(field, v) for v in values}

    def match(flow: flow_pb2.Flow) -> bool:
        ports = l4_ports(flow)
        return ports is not None and ports[index] in wanted

    return match


def _regexes(field: str, values: Sequence[str]) -> list[re.Pattern[str]]:
    out = []
    for v in values:
        try:
            out.append(re.compile(v))
        except re.error as e:
            raise FilterError(f"{field}: invalid regular expression {v!r}: {e}") from None
    return out


_STATUS_FULL = re.compile(r"[1-5][0-9]{2}")
_STATUS_PREFIX = re.compile(r"[1-5][0-9]?\+")


def _http(ff: flow_pb2.FlowFilter) -> Predicate | None:
    parts: list[Predicate] = []
    used = [name for name in ("http_status_code", "http_method", "http_path", "http_url",
                              "http_header") if len(getattr(ff, name))]
    if not used:
        return None
    if ff.event_type and not any(t.type == MESSAGE_TYPE_ACCESS_LOG for t in ff.event_type):
        raise FilterError(f"{used[0]}: filtering on HTTP needs the event type filter to match "
                          "'l7' events")
    if ff.http_status_code:
        full, prefixes = set(), []
        for code in ff.http_status_code:
            if _STATUS_FULL.fullmatch(code):
                full.add(code)
            elif _STATUS_PREFIX.fullmatch(code):
                prefixes.append(code[:-1])
            else:
                raise FilterError(f"http_status_code: invalid status code {code!r}, expected "
                                  "e.g. 404, 4+ or 50+")

        def status(flow: flow_pb2.Flow) -> bool:
            code = flow.l7.http.code if flow.l7.HasField("http") else 0
            if not code:
                return False
            text = f"{code:03d}"
            return text in full or any(text.startswith(p) for p in prefixes)

        parts.append(status)
    if ff.http_method:
        methods = {m.upper() for m in ff.http_method}
        parts.append(lambda flow: flow.l7.HasField("http") and bool(flow.l7.http.method)
                     and flow.l7.http.method.upper() in methods)
    if ff.http_path:
        paths = _regexes("http_path", ff.http_path)

        def path(flow: flow_pb2.Flow) -> bool:
            if not flow.l7.HasField("http") or not flow.l7.http.url:
                return False
            try:
                p = urlsplit(flow.l7.http.url).path
            except ValueError:
                return False
            return any(r.search(p) for r in paths)

        parts.append(path)
    if ff.http_url:
        urls = _regexes("http_url", ff.http_url)
        parts.append(lambda flow: flow.l7.HasField("http") and bool(flow.l7.http.url)
                     and any(r.search(flow.l7.http.url) for r in urls))
    if ff.http_header:
        headers = {(h.key, h.value) for h in ff.http_header}
        parts.append(lambda flow: flow.l7.HasField("http") and any(
            (h.key, h.value) in headers for h in flow.l7.http.headers))
    return lambda flow: all(p(flow) for p in parts)


_L4 = {"tcp": ("TCP",), "udp": ("UDP",), "sctp": ("SCTP",), "icmp": ("ICMPv4", "ICMPv6"),
       "icmpv4": ("ICMPv4",), "icmpv6": ("ICMPv6",)}
_L7 = {"http": "http", "dns": "dns", "kafka": "kafka"}


def _protocols(values: Sequence[str]) -> Predicate | None:
    if not values:
        return None
    l4: set[str] = set()
    l7: set[str] = set()
    for v in values:
        name = v.lower()
        if name in _L4:
            l4.update(_L4[name])
        elif name in _L7:
            l7.add(_L7[name])
        else:
            raise FilterError(f"protocol: unknown protocol {v!r}, expected one of "
                              f"{', '.join([*_L4, *_L7])}")

    def match(flow: flow_pb2.Flow) -> bool:
        if flow.HasField("l4") and flow.l4.WhichOneof("protocol") in l4:
            return True
        return flow.HasField("l7") and flow.l7.WhichOneof("record") in l7

    return match


_FLAG_NAMES = ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")


def _tcp_flags(values: Sequence[flow_pb2.TCPFlags]) -> Predicate | None:
    if not values:
        return None
    wanted = [frozenset(n for n in _FLAG_NAMES if getattr(v, n)) for v in values]

    def match(flow: flow_pb2.Flow) -> bool:
        if flow.l4.WhichOneof("protocol") != "TCP":
            return False
        flags = flow.l4.TCP.flags
        have = {n for n in _FLAG_NAMES if getattr(flags, n)}
        return any(w <= have for w in wanted)

    return match


def _reply(values: Sequence[bool]) -> Predicate | None:
    if not values:
        return None
    wanted = set(values)

    def match(flow: flow_pb2.Flow) -> bool:
        # A dropped flow whose direction is unknown counts as "not a reply", for the clients
        # that still think in terms of the old `reply` field (as Hubble does).
        if not flow.HasField("is_reply"):
            return flow.verdict == flow_pb2.DROPPED and False in wanted
        return flow.is_reply.value in wanted

    return match


def _event_types(values: Sequence[flow_pb2.EventTypeFilter]) -> Predicate | None:
    if not values:
        return None
    wanted = [(t.type, t.sub_type if t.match_sub_type else None) for t in values]

    def match(flow: flow_pb2.Flow) -> bool:
        et = flow.event_type
        return any(et.type == t and (s is None or et.sub_type == s) for t, s in wanted)

    return match


def _workloads(values: Sequence[flow_pb2.Workload],
               get: Callable[[flow_pb2.Flow], Iterable[flow_pb2.Workload]]
               ) -> Predicate | None:
    if not values:
        return None
    wanted = [(w.name, w.kind.lower()) for w in values]

    def match(flow: flow_pb2.Flow) -> bool:
        return any((not name or name == w.name) and (not kind or kind == w.kind.lower())
                   for w in get(flow) for name, kind in wanted)

    return match


def _interfaces(values: Sequence[flow_pb2.NetworkInterface]) -> Predicate | None:
    if not values:
        return None
    wanted = [(i.index, i.name) for i in values]

    def match(flow: flow_pb2.Flow) -> bool:
        if not flow.HasField("interface"):
            return False
        iface = flow.interface
        return any((not index or index == iface.index) and (not name or name == iface.name)
                   for index, name in wanted)

    return match


def _member(values: Sequence[object], get: Callable[[flow_pb2.Flow], object]
            ) -> Predicate | None:
    if not values:
        return None
    wanted = _any_of(values)
    return lambda flow: get(flow) in wanted


def _cel(ff: flow_pb2.FlowFilter) -> Predicate | None:
    if ff.HasField("experimental") and ff.experimental.cel_expression:
        raise FilterError("experimental.cel_expression: CEL filters are not supported by "
                          "hexlane")
    return None


def _dns_query(values: Sequence[str]) -> Predicate | None:
    if not values:
        return None
    regexes = _regexes("dns_query", values)
    return lambda flow: flow.l7.HasField("dns") and any(
        r.search(flow.l7.dns.query) for r in regexes)


def _src_ns_name(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.source.namespace, flow.source.pod_name


def _dst_ns_name(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.destination.namespace, flow.destination.pod_name


def _src_service(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.source_service.namespace, flow.source_service.name


def _dst_service(flow: flow_pb2.Flow) -> tuple[str, str]:
    return flow.destination_service.namespace, flow.destination_service.name


_Builder = Callable[[flow_pb2.FlowFilter], Predicate | None]

_BUILDERS: tuple[_Builder, ...] = (
    lambda ff: _member(ff.uuid, lambda f: f.uuid),
    lambda ff: _event_types(ff.event_type),
    lambda ff: _member(ff.verdict, lambda f: f.verdict),
    lambda ff: _member(ff.drop_reason_desc, lambda f: f.drop_reason_desc),
    lambda ff: _member(ff.traffic_direction, lambda f: f.traffic_direction),
    lambda ff: _reply(ff.reply),
    lambda ff: _member(ff.source_identity, lambda f: f.source.identity),
    lambda ff: _member(ff.destination_identity, lambda f: f.destination.identity),
    lambda ff: _protocols(ff.protocol),
    lambda ff: _ips("source_ip", ff.source_ip, lambda f: f.IP.source),
    lambda ff: _ips("source_ip_xlated", ff.source_ip_xlated, lambda f: f.IP.source_xlated),
    lambda ff: _ips("destination_ip", ff.destination_ip, lambda f: f.IP.destination),
    lambda ff: _namespaced("source_pod", ff.source_pod, _src_ns_name),
    lambda ff: _namespaced("destination_pod", ff.destination_pod, _dst_ns_name),
    lambda ff: _namespaced("source_service", ff.source_service, _src_service),
    lambda ff: _namespaced("destination_service", ff.destination_service, _dst_service),
    lambda ff: _workloads(ff.source_workload, lambda f: f.source.workloads),
    lambda ff: _workloads(ff.destination_workload, lambda f: f.destination.workloads),
    lambda ff: _member(ff.source_cluster_name, lambda f: f.source.cluster_name),
    lambda ff: _member(ff.destination_cluster_name, lambda f: f.destination.cluster_name),
    lambda ff: _fqdns("source_fqdn", ff.source_fqdn, lambda f: f.source_names),
    lambda ff: _fqdns("destination_fqdn", ff.destination_fqdn, lambda f: f.destination_names),
    lambda ff: _dns_query(ff.dns_query),
    lambda ff: _labels("source_label", ff.source_label, lambda f: f.source.labels),
    lambda ff: _labels("destination_label", ff.destination_label,
                       lambda f: f.destination.labels),
    lambda ff: _labels("node_labels", ff.node_labels, lambda f: f.node_labels),
    lambda ff: _ports("source_port", ff.source_port, 0),
    lambda ff: _ports("destination_port", ff.destination_port, 1),
    _http,
    lambda ff: _tcp_flags(ff.tcp_flags),
    lambda ff: _node_names(ff.node_name),
    lambda ff: _member(ff.ip_version, lambda f: f.IP.ipVersion),
    lambda ff: _member(ff.trace_id, lambda f: f.trace_context.parent.trace_id),
    lambda ff: _interfaces(ff.interface),
    lambda ff: _member(ff.encrypted, lambda f: f.IP.encrypted),
    _cel,
)
