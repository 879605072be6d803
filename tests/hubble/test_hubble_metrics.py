"""Hubble's metrics, pure: the option syntax, each handler's series, context labels, pod expiry.

Pins down, against Cilium's handlers (pkg/hubble/metrics): `hubble.metrics.enabled` as the
seeds write it parses, and every wrong entry (unknown metric, option, context or label, a
flag with a value, a context without one, a metric twice, http with httpV2) is an error
naming it; each handler counts what Cilium's counts with the same names, labels and label
values (flow type/subtype, drop reason, TCP flags, destination ports of requests only, ICMP
type names, DNS queries/responses/types with `query` and `ignoreAAAA`, HTTP requests,
responses and durations, httpV2 from the request's side, flows to the world); context labels
follow `|` fallbacks and the Egress/Ingress variants; a deleted pod's series go exactly a
minute later (the clock given); and for any options, every series has one value per label
name (hypothesis).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from hubble_helpers import flow
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.config.hubble_metrics import (
    CONTEXT_IDENTIFIERS,
    CONTEXT_LABELS,
    MetricOptionError,
    parse_metric,
    parse_metric_list,
)
from hexlane.config.loader import require_values
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.metrics.handlers import FlowMetrics, Histogram

SEED_002 = ["dns:query;ignoreAAAA", "drop", "tcp", "flow", "port-distribution", "icmp", "http"]


def metrics(*entries: str) -> FlowMetrics:
    specs, _ = parse_metric_list(list(entries))
    return FlowMetrics(specs)


def series(m: FlowMetrics, name: str) -> dict[tuple[str, ...], object]:
    fam = next(f for f in m.families if f.name == name)
    return dict(fam.series)


def labelled(m: FlowMetrics, name: str) -> dict[frozenset[tuple[str, str]], object]:
    """A family's series keyed by {label: value} (order-free)."""
    fam = next(f for f in m.families if f.name == name)
    return {frozenset(zip(fam.label_names, key, strict=True)): v for key, v in fam.series.items()}


def dns_flow(*, reply: bool, query: str = "echo.default.svc.cluster.local.",
             qtypes: tuple[str, ...] = ("A",), ips: tuple[str, ...] = (), rcode: int = 0,
             rrtypes: tuple[str, ...] = (), verdict: int = flow_pb2.FORWARDED,
             **kw: object) -> flow_pb2.Flow:
    f = flow(proto="UDP", dport=53, is_reply=reply, verdict=verdict, **kw)  # type: ignore[arg-type]
    f.Type = flow_pb2.L7
    f.event_type.type, f.event_type.sub_type = 129, 0
    f.l7.type = flow_pb2.RESPONSE if reply else flow_pb2.REQUEST
    f.l7.dns.query = query
    f.l7.dns.qtypes.extend(qtypes)
    f.l7.dns.ips.extend(ips)
    f.l7.dns.rcode = rcode
    f.l7.dns.rrtypes.extend(rrtypes)
    return f


def http_flow(*, response: bool, method: str = "GET", code: int = 200,
              latency_ns: int = 0, **kw: object) -> flow_pb2.Flow:
    f = flow(is_reply=response, **kw)  # type: ignore[arg-type]
    f.Type = flow_pb2.L7
    f.event_type.type, f.event_type.sub_type = 129, 0
    f.l7.type = flow_pb2.RESPONSE if response else flow_pb2.REQUEST
    f.l7.http.method, f.l7.http.protocol, f.l7.http.url = method, "HTTP/1.1", "/x"
    if response:
        f.l7.http.code = code
        f.l7.latency_ns = latency_ns
    return f


# --- the option syntax ----------------------------------------------------------------------


def test_the_seeds_lists_parse() -> None:
    specs, warnings = parse_metric_list(SEED_002)
    assert [s.name for s in specs] == ["dns", "drop", "tcp", "flow", "port-distribution",
                                       "icmp", "http"]
    assert specs[0].flags == {"query", "ignoreAAAA"} and warnings == []


def test_options_keys_ignore_case_and_contexts_keep_their_order() -> None:
    spec = parse_metric("flow:SOURCECONTEXT=Pod|IP;destinationContext=dns|ip;"
                        "labelsContext=traffic_direction,source_namespace")
    ctx = spec.context
    assert (ctx.source, ctx.destination) == (("pod", "ip"), ("dns", "ip"))
    # labelsContext labels come in Cilium's fixed order, whatever order they are given in
    assert ctx.label_names() == ("source_namespace", "traffic_direction", "source",
                                 "destination")
    assert parse_metric("dns:IGNOREaaaa").flags == {"ignoreAAAA"}


@pytest.mark.parametrize("entries,index,words", [
    (["drop", "latency"], 1, ["unknown Hubble metric 'latency'"]),
    (["Drop"], 0, ["unknown Hubble metric 'Drop'", "did you mean 'drop'"]),
    (["dns:qury"], 0, ["unknown option 'qury' of metric dns", "query, ignoreAAAA"]),
    (["tcp:query"], 0, ["unknown option 'query' of metric tcp"]),
    (["flow:sourceContext=pod|bogus"], 0, ["unknown context 'bogus' in sourceContext"]),
    (["flow:labelsContext=source_pod,colour"], 0, ["unknown label 'colour' in labelsContext"]),
    (["flow:sourceContext="], 0, ["option sourceContext of flow needs a value"]),
    (["dns:query=yes"], 0, ["option query of dns takes no value"]),
    (["httpV2:exemplars=maybe"], 0, ["exemplars of httpV2 takes true or false"]),
    (["drop", "tcp", "drop:sourceContext=pod"], 2, ["already enabled by entry 0"]),
    (["http", "httpV2"], 1, ["http and httpV2 cannot be enabled together"]),
])
def test_a_wrong_entry_is_an_error_naming_it(entries: list[str], index: int,
                                             words: list[str]) -> None:
    with pytest.raises(MetricOptionError) as err:
        parse_metric_list(entries)
    assert err.value.index == index
    assert str(err.value).startswith(repr(entries[index]))
    for word in words:
        assert word in str(err.value)


def test_metrics_without_flows_are_left_out_with_a_warning() -> None:
    specs, warnings = parse_metric_list(["kafka", "policy", "drop"])
    assert [s.name for s in specs] == ["policy", "drop"]
    assert len(warnings) == 1 and "'kafka' is left out" in warnings[0]


def test_policy_counts_verdicts_by_direction_match_and_action_but_not_the_hosts() -> None:
    m = metrics("policy")
    v = flow(flags=("SYN",))
    v.event_type.type = 5
    v.traffic_direction = flow_pb2.INGRESS
    v.policy_match_type = 2
    m.process(v)
    denied = flow_pb2.Flow()
    denied.CopyFrom(v)
    denied.verdict = flow_pb2.DROPPED
    denied.traffic_direction = flow_pb2.EGRESS
    denied.policy_match_type = 0
    m.process(denied)
    audited = flow_pb2.Flow()
    audited.CopyFrom(denied)
    audited.verdict = flow_pb2.AUDIT
    m.process(audited)
    host = flow_pb2.Flow()
    host.CopyFrom(v)
    host.source.identity = 1
    m.process(host)
    m.process(flow(flags=("SYN",)))  # a trace: not a verdict
    assert series(m, "hubble_policy_verdicts") == {
        ("ingress", "l3-l4", "forwarded"): 1, ("egress", "none", "dropped"): 1,
        ("egress", "none", "audit"): 1}


# --- handlers -----------------------------------------------------------------------------


def test_flow_counts_every_flow_by_type_subtype_and_verdict() -> None:
    m = metrics("flow")
    m.process(flow(flags=("SYN",)))  # trace at to-endpoint
    overlay = flow(flags=("SYN",))
    overlay.event_type.sub_type = 4
    m.process(overlay)
    m.process(flow(verdict=flow_pb2.DROPPED, drop_reason=flow_pb2.SERVICE_BACKEND_NOT_FOUND))
    m.process(dns_flow(reply=False))
    m.process(http_flow(response=True))
    assert series(m, "hubble_flows_processed") == {
        ("TCP", "Trace", "to-endpoint", "FORWARDED"): 1.0,
        ("TCP", "Trace", "to-overlay", "FORWARDED"): 1.0,
        ("TCP", "Drop", "", "DROPPED"): 1.0,
        ("DNS", "L7", "DNS", "FORWARDED"): 1.0,
        ("HTTP", "L7", "HTTP", "FORWARDED"): 1.0,
    }


def test_drop_counts_dropped_flows_by_reason_and_protocol() -> None:
    m = metrics("drop")
    for _ in range(3):
        m.process(flow(verdict=flow_pb2.DROPPED,
                       drop_reason=flow_pb2.SERVICE_BACKEND_NOT_FOUND))
    m.process(flow(proto="UDP", verdict=flow_pb2.DROPPED, drop_reason=flow_pb2.POLICY_DENIED))
    m.process(flow())  # forwarded: not a drop
    assert series(m, "hubble_drop") == {("SERVICE_BACKEND_NOT_FOUND", "TCP"): 3.0,
                                        ("POLICY_DENIED", "UDP"): 1.0}


def test_tcp_counts_syn_syn_ack_fin_rst_of_forwarded_flows() -> None:
    m = metrics("tcp")
    m.process(flow(flags=("SYN",)))
    m.process(flow(flags=("SYN", "ACK"), is_reply=True))
    m.process(flow(flags=("FIN", "ACK")))
    m.process(flow(flags=("RST",)))
    m.process(flow(flags=("ACK", "PSH")))  # none of the four
    m.process(flow(flags=("SYN",), verdict=flow_pb2.DROPPED, drop_reason=158))
    assert series(m, "hubble_tcp_flags") == {
        ("SYN", "IPv4"): 1.0, ("SYN-ACK", "IPv4"): 1.0, ("FIN", "IPv4"): 1.0,
        ("RST", "IPv4"): 1.0}


def test_port_distribution_counts_requests_not_replies() -> None:
    m = metrics("port-distribution")
    m.process(flow(dport=8080))
    m.process(flow(dport=8080, flags=("FIN",)))
    m.process(flow(sport=8080, dport=40000, is_reply=True))
    m.process(flow(dport=9999, is_reply=None))  # not known to be a request: left out
    m.process(flow(proto="UDP", dport=53))
    m.process(flow(proto="ICMPv4"))
    assert series(m, "hubble_port_distribution") == {
        ("TCP", "8080"): 2.0, ("UDP", "53"): 1.0, ("ICMPv4", "0"): 1.0}


@pytest.mark.parametrize("family,typ,code,name", [
    ("ICMPv4", 8, 0, "EchoRequest"), ("ICMPv4", 0, 0, "EchoReply"),
    ("ICMPv4", 3, 3, "DestinationUnreachable(Port)"),
    ("ICMPv4", 11, 0, "TimeExceeded(TTLExceeded)"),
    ("ICMPv4", 3, 99, "DestinationUnreachable(Code: 99)"),
    ("ICMPv4", 8, 1, "EchoRequest(Code: 1)"), ("ICMPv4", 42, 7, "42(7)"),
    ("ICMPv6", 128, 0, "EchoRequest"), ("ICMPv6", 1, 4, "DestinationUnreachable(PortUnreachable)"),
])
def test_icmp_names_types_as_hubble_does(family: str, typ: int, code: int, name: str) -> None:
    m = metrics("icmp")
    f = flow(proto="TCP")
    f.l4.ClearField("TCP")
    icmp = getattr(f.l4, family)
    icmp.type, icmp.code = typ, code
    m.process(f)
    assert series(m, "hubble_icmp") == {("IPv4" if family == "ICMPv4" else "IPv6", name): 1.0}


def test_dns_queries_responses_and_types() -> None:
    m = metrics("dns:query;ignoreAAAA")
    name = "echo.default.svc.cluster.local."
    m.process(dns_flow(reply=False, query=name))
    m.process(dns_flow(reply=True, query=name, ips=("10.96.0.10",), rrtypes=("A",)))
    m.process(dns_flow(reply=True, query="nx.example.", rcode=3))
    m.process(dns_flow(reply=False, qtypes=("AAAA",)))  # ignoreAAAA
    m.process(dns_flow(reply=False, qtypes=("A", "AAAA")))  # not AAAA alone: counted
    m.process(dns_flow(reply=False, query="x.", verdict=flow_pb2.DROPPED, drop_reason=133))
    assert series(m, "hubble_dns_queries") == {
        ("", "A", "0", name): 1.0, ("", "A,AAAA", "0", name): 1.0,
        ("Policy denied", "A", "0", "x."): 1.0}
    assert series(m, "hubble_dns_responses") == {
        ("No Error", "A", "1", name): 1.0, ("Non-Existent Domain", "A", "0", "nx.example."): 1.0}
    assert series(m, "hubble_dns_response_types") == {("A", "A", name): 1.0}
    without_query = metrics("dns")
    without_query.process(dns_flow(reply=False, qtypes=("AAAA",)))
    assert series(without_query, "hubble_dns_queries") == {("", "AAAA", "0"): 1.0}


def test_http_requests_responses_and_durations() -> None:
    m = metrics("http")
    m.process(http_flow(response=False, direction=flow_pb2.EGRESS))
    m.process(http_flow(response=True, code=404, latency_ns=30_000_000,
                        direction=flow_pb2.EGRESS))
    m.process(http_flow(response=True, code=200, latency_ns=7_000_000_000,
                        direction=flow_pb2.INGRESS))
    assert series(m, "hubble_http_requests") == {("GET", "HTTP/1.1", "client"): 1.0}
    assert series(m, "hubble_http_responses") == {("GET", "HTTP/1.1", "404", "client"): 1.0,
                                                  ("GET", "HTTP/1.1", "200", "server"): 1.0}
    client = series(m, "hubble_http_request_duration_seconds")[("GET", "client")]
    assert isinstance(client, Histogram)
    assert (client.count, client.sum) == (1, 0.03)
    assert client.buckets[3] == 1  # 0.03 s falls in the bucket up to 0.05
    server = series(m, "hubble_http_request_duration_seconds")[("GET", "server")]
    assert isinstance(server, Histogram) and server.buckets[10] == 1  # up to 10 s


def test_http_v2_counts_responses_labelled_as_their_request() -> None:
    m = metrics("httpV2:sourceContext=pod;destinationContext=pod")
    m.process(http_flow(response=False))
    m.process(http_flow(response=True, code=500, latency_ns=1_000_000, src_ns="a",
                        src_pod="server", dst_ns="a", dst_pod="client",
                        direction=flow_pb2.INGRESS))
    # the response goes server -> client; the series names the request's client as source
    assert series(m, "hubble_http_requests") == {
        ("a/client", "a/server", "GET", "HTTP/1.1", "500", "server"): 1.0}


def test_flows_to_world_counts_requests_to_the_world() -> None:
    m = metrics("flows-to-world:port;syn-only")
    world = ("reserved:world",)
    m.process(flow(dst_labels=world, dport=443, flags=("SYN",)))
    m.process(flow(dst_labels=world, dport=443, flags=("ACK",)))  # syn-only
    m.process(flow(dst_labels=world, flags=("SYN", "ACK"), is_reply=True))  # a reply
    m.process(flow(dst_labels=world, verdict=flow_pb2.DROPPED, drop_reason=158))  # not policy
    m.process(flow(dst_labels=("reserved:host",), flags=("SYN",)))
    assert series(m, "hubble_flows_to_world") == {("TCP", "FORWARDED", "443"): 1.0}
    any_drop = metrics("flows-to-world:any-drop")
    any_drop.process(flow(dst_labels=world, verdict=flow_pb2.DROPPED, drop_reason=158))
    assert series(any_drop, "hubble_flows_to_world") == {("TCP", "DROPPED"): 1.0}


# --- context labels -------------------------------------------------------------------------


POD_LABELS = ("k8s:app=echo", "k8s:io.kubernetes.pod.namespace=shop")


def pod_flow(**kw: object) -> flow_pb2.Flow:
    f = flow(src="10.42.1.10", src_ns="shop", src_pod="echo-7d9f8b6c4d-x2x9z",
             src_labels=POD_LABELS, dst="1.1.1.1", dst_labels=("reserved:world",),
             **kw)  # type: ignore[arg-type]
    f.source.workloads.add(kind="Deployment", name="echo")
    return f


@pytest.mark.parametrize("context,value", [
    ("namespace", "shop"), ("pod", "shop/echo-7d9f8b6c4d-x2x9z"),
    ("pod-name", "echo-7d9f8b6c4d-x2x9z"), ("pod-short", "shop/echo"),
    ("identity", ",".join(POD_LABELS)), ("ip", "10.42.1.10"), ("workload", "shop/echo"),
    ("workload-name", "echo"), ("app", "echo"), ("dns", ""), ("reserved-identity", ""),
    ("dns|ip", "10.42.1.10"), ("reserved-identity|namespace", "shop"),
])
def test_source_context(context: str, value: str) -> None:
    m = metrics(f"drop:sourceContext={context}")
    m.process(pod_flow(verdict=flow_pb2.DROPPED, drop_reason=158))
    assert list(series(m, "hubble_drop")) == [(value, "SERVICE_BACKEND_NOT_FOUND", "TCP")]


def test_destination_context_of_the_world_and_direction_variants() -> None:
    m = metrics("flow:destinationContext=pod|reserved-identity;"
                "destinationEgressContext=ip")
    m.process(pod_flow(direction=flow_pb2.INGRESS))
    m.process(pod_flow(direction=flow_pb2.EGRESS))
    assert {k[-1] for k in series(m, "hubble_flows_processed")} == {"reserved:world",
                                                                    "1.1.1.1"}
    names = next(f for f in m.families).label_names
    assert names == ("protocol", "type", "subtype", "verdict", "destination")


def test_labels_context() -> None:
    m = metrics("tcp:labelsContext=source_ip,source_namespace,source_pod,source_workload,"
                "source_workload_kind,source_app,destination_ip,destination_namespace,"
                "traffic_direction")
    m.process(pod_flow(direction=flow_pb2.EGRESS))
    assert labelled(m, "hubble_tcp_flags") == {frozenset({
        ("flag", "SYN"), ("family", "IPv4"), ("source_ip", "10.42.1.10"),
        ("source_namespace", "shop"), ("source_pod", "echo-7d9f8b6c4d-x2x9z"),
        ("source_workload", "echo"), ("source_workload_kind", "Deployment"),
        ("source_app", "echo"), ("destination_ip", "1.1.1.1"), ("destination_namespace", ""),
        ("traffic_direction", "egress")}): 1.0}


# --- a deleted pod's series -----------------------------------------------------------------


def test_a_deleted_pods_series_go_a_minute_later() -> None:
    m = metrics("flow:sourceContext=pod", "drop:labelsContext=source_namespace,source_pod",
                "tcp")
    m.process(pod_flow())
    m.process(pod_flow(verdict=flow_pb2.DROPPED, drop_reason=158))
    m.process(flow(src_ns="shop", src_pod="other"))
    m.pod_deleted("shop", "echo-7d9f8b6c4d-x2x9z", now=1000.0)
    assert m.expire(1059.9) == 0
    assert len(series(m, "hubble_flows_processed")) == 3
    assert m.expire(1060.0) == 3  # its two flow series (trace, drop), its drop series
    assert [k[-1] for k in series(m, "hubble_flows_processed")] == ["shop/other"]
    assert series(m, "hubble_drop") == {}
    assert len(series(m, "hubble_tcp_flags")) == 1  # names no pod: kept
    assert m.expire(2000.0) == 0


# --- any options: one value per label -------------------------------------------------------

contexts = st.lists(st.sampled_from(CONTEXT_IDENTIFIERS), min_size=1, max_size=3).map("|".join)
options = st.fixed_dictionaries({}, optional={
    "sourceContext": contexts, "destinationContext": contexts,
    "sourceIngressContext": contexts, "destinationEgressContext": contexts,
    "labelsContext": st.lists(st.sampled_from(CONTEXT_LABELS), min_size=1, unique=True)
    .map(",".join)})
FLOWS = [pod_flow(), pod_flow(verdict=flow_pb2.DROPPED, drop_reason=158),
         pod_flow(direction=flow_pb2.EGRESS, proto="ICMPv4"), dns_flow(reply=True),
         http_flow(response=False), http_flow(response=True, latency_ns=5)]


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(["flow", "drop", "tcp", "port-distribution", "icmp", "dns",
                             "http", "httpV2", "flows-to-world"]), opts=options)
def test_every_series_has_one_value_per_label(name: str, opts: dict[str, str]) -> None:
    text = name + (":" + ";".join(f"{k}={v}" for k, v in opts.items()) if opts else "")
    m = metrics(text)
    for f in FLOWS:
        m.process(f)
    assert m.errors == 0
    for fam in m.families:
        assert len(set(fam.label_names)) == len(fam.label_names)
        for key in fam.series:
            assert len(key) == len(fam.label_names), (fam.name, fam.label_names, key)


@pytest.mark.parametrize("files", [
    ("seed-000/values.yaml", "seed-000/values-monitoring.yaml", "seed-000/values-hubble.yaml"),
    ("seed-002/values.yaml",)])
def test_the_seeds_files_enable_every_metric_they_list(files: tuple[str, ...]) -> None:
    """The seeds' own values files, layered as examples/README.md says, as the agent reads
    them: every metric they list is built, no problem reported for the list."""
    examples = Path(__file__).resolve().parents[2] / "examples"
    values, problems = require_values([str(examples / f) for f in files])
    specs, warnings = parse_metric_list(list(values.hubble.metrics))
    assert {s.name for s in specs} == {"dns", "drop", "tcp", "flow", "port-distribution",
                                       "icmp", "http"}
    # (warnings about the seeds' other keys, e.g. a misplaced serviceMonitor, are theirs)
    assert warnings == [] and not [p for p in problems if p.path == "hubble.metrics.enabled"]
    handlers = FlowMetrics(specs)
    assert [h.spec.name for h in handlers.handlers] == [s.name for s in specs]
