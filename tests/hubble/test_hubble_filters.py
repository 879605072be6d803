"""FlowFilter semantics as Hubble's: fields AND-ed, values OR-ed, whitelist filters OR-ed,
blacklist removes (properties over generated flows and filters), and each field's own syntax
(pods with namespace defaults, CIDRs, label selectors with sources, FQDN and node-name
patterns, HTTP status prefixes, TCP flags, reply), with bad values refused by name."""

from __future__ import annotations

import itertools

import pytest
from hubble_helpers import flow
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.filters import FilterError, compile_filter, compile_filters

FF = flow_pb2.FlowFilter

NAMESPACES = ("bar", "foo", "default")
PODS = ("echo-abc", "echo-def", "client-1")


@st.composite
def flows(draw: st.DrawFn) -> flow_pb2.Flow:
    verdict = draw(st.sampled_from([flow_pb2.FORWARDED, flow_pb2.DROPPED]))
    return flow(
        src=draw(st.sampled_from(["10.42.1.10", "10.42.2.20", "192.168.1.5"])),
        dst=draw(st.sampled_from(["10.42.1.10", "10.42.2.20", "10.43.0.10"])),
        sport=draw(st.sampled_from([53412, 80, 8080])),
        dport=draw(st.sampled_from([80, 8080, 53])),
        proto=draw(st.sampled_from(["TCP", "UDP", "ICMPv4"])),
        flags=tuple(draw(st.sets(st.sampled_from(["SYN", "ACK", "FIN", "RST"])))),
        src_ns=draw(st.sampled_from(("", *NAMESPACES))),
        dst_ns=draw(st.sampled_from(("", *NAMESPACES))),
        src_pod=draw(st.sampled_from(("", *PODS))),
        dst_pod=draw(st.sampled_from(("", *PODS))),
        src_labels=tuple(draw(st.sets(st.sampled_from(
            ["k8s:app=echo", "k8s:app=client", "k8s:tier=web", "reserved:world"])))),
        verdict=verdict,
        drop_reason=158 if verdict == flow_pb2.DROPPED else 0,
        is_reply=draw(st.sampled_from([None, True, False])),
        src_identity=draw(st.sampled_from([0, 2, 1234])),
    )


# One field per entry: (field, strategy of a list of values).
FIELDS = {
    "source_pod": st.lists(st.sampled_from(
        ["bar/", "foo/echo", "echo-abc", "/client", "bar/echo-d"]), min_size=1, max_size=2),
    "destination_pod": st.lists(st.sampled_from(["bar/", "default/", "/echo"]), min_size=1,
                                max_size=2),
    "source_ip": st.lists(st.sampled_from(["10.42.0.0/16", "192.168.1.5", "10.42.2.20"]),
                          min_size=1, max_size=2),
    "destination_port": st.lists(st.sampled_from(["80", "8080", "53"]), min_size=1,
                                 max_size=2),
    "verdict": st.lists(st.sampled_from([flow_pb2.FORWARDED, flow_pb2.DROPPED]), min_size=1,
                        max_size=2),
    "protocol": st.lists(st.sampled_from(["tcp", "udp", "icmp"]), min_size=1, max_size=2),
    "source_label": st.lists(st.sampled_from(["app=echo", "k8s:tier=web", "!app",
                                              "app in (echo, client)"]),
                             min_size=1, max_size=2),
    "source_identity": st.lists(st.sampled_from([0, 2, 1234]), min_size=1, max_size=2),
    "reply": st.lists(st.booleans(), min_size=1, max_size=2),
}


@st.composite
def filters(draw: st.DrawFn) -> flow_pb2.FlowFilter:
    ff = FF()
    for name in draw(st.sets(st.sampled_from(sorted(FIELDS)), max_size=3)):
        getattr(ff, name).extend(draw(FIELDS[name]))
    if draw(st.booleans()):
        ff.tcp_flags.add(**{n: True for n in draw(st.sets(st.sampled_from(["SYN", "ACK"]),
                                                          min_size=1))})
    return ff


@settings(max_examples=150)
@given(flows(), filters())
def test_blacklisting_a_filter_is_its_complement(f: flow_pb2.Flow, ff: flow_pb2.FlowFilter
                                                 ) -> None:
    assert compile_filters([], [ff])(f) == (not compile_filters([ff])(f))


@settings(max_examples=100)
@given(flows(), st.lists(filters(), min_size=1, max_size=4))
def test_whitelist_is_an_order_free_or(f: flow_pb2.Flow, wl: list[flow_pb2.FlowFilter]
                                       ) -> None:
    expected = any(compile_filter(w)(f) for w in wl)
    for order in itertools.islice(itertools.permutations(wl), 6):
        assert compile_filters(list(order))(f) == expected


@settings(max_examples=100)
@given(flows(), st.lists(filters(), max_size=3), st.lists(filters(), max_size=3))
def test_answer_is_whitelist_minus_blacklist(f: flow_pb2.Flow, wl: list, bl: list) -> None:
    allowed = not wl or any(compile_filter(w)(f) for w in wl)
    denied = any(compile_filter(b)(f) for b in bl)
    assert compile_filters(wl, bl)(f) == (allowed and not denied)


@settings(max_examples=100)
@given(flows(), filters(), filters())
def test_fields_of_one_filter_are_anded(f: flow_pb2.Flow, a: flow_pb2.FlowFilter,
                                        b: flow_pb2.FlowFilter) -> None:
    a_fields = {d.name for d, _ in a.ListFields()}
    b_fields = {d.name for d, _ in b.ListFields()}
    if a_fields & b_fields:
        return
    merged = FF()
    merged.MergeFrom(a)
    merged.MergeFrom(b)
    assert compile_filter(merged)(f) == (compile_filter(a)(f) and compile_filter(b)(f))


@settings(max_examples=100)
@given(flows(), st.sampled_from(sorted(FIELDS)), st.data())
def test_values_of_one_field_are_ored(f: flow_pb2.Flow, name: str, data: st.DataObject
                                      ) -> None:
    values = data.draw(FIELDS[name])
    whole = FF()
    getattr(whole, name).extend(values)
    singles = []
    for v in values:
        one = FF()
        getattr(one, name).append(v)
        singles.append(compile_filter(one)(f))
    assert compile_filter(whole)(f) == any(singles)


def test_empty_filter_matches_everything() -> None:
    assert compile_filter(FF())(flow())
    assert compile_filters()(flow())


# --- each field's syntax ------------------------------------------------------------------

def _m(f: flow_pb2.Flow, **fields: object) -> bool:
    return compile_filter(FF(**fields))(f)


def test_pod_names_namespaces_and_prefixes() -> None:
    f = flow(src_ns="bar", src_pod="echo-abc", dst_ns="default", dst_pod="web-1")
    assert _m(f, source_pod=["bar/echo"])
    assert _m(f, source_pod=["bar/"])
    assert _m(f, source_pod=["/echo-a"])            # any namespace
    assert not _m(f, source_pod=["echo-abc"])       # no namespace means "default"
    assert _m(f, destination_pod=["web"])           # ... which the destination is in
    assert not _m(f, source_pod=["foo/echo"])
    assert not _m(flow(), source_pod=["/"])         # no pod, no namespace: never
    with pytest.raises(FilterError, match="source_pod"):
        compile_filter(FF(source_pod=[""]))


def test_services_like_pods() -> None:
    f = flow(dst_service=("bar", "echo"))
    assert _m(f, destination_service=["bar/echo"])
    assert not _m(f, destination_service=["echo"])


def test_ips_and_cidrs() -> None:
    f = flow(src="10.42.1.10", dst="10.43.0.10")
    assert _m(f, source_ip=["10.42.0.0/16"]) and _m(f, destination_ip=["10.43.0.10"])
    assert not _m(f, source_ip=["10.43.0.0/16"])
    with pytest.raises(FilterError, match="source_ip"):
        compile_filter(FF(source_ip=["10.0.0.300"]))


def test_ports_and_protocols() -> None:
    f = flow(sport=40000, dport=8080)
    assert _m(f, destination_port=["8080"]) and not _m(f, source_port=["8080"])
    assert _m(f, protocol=["TCP"]) and not _m(f, protocol=["udp"])
    assert _m(flow(proto="ICMPv4"), protocol=["icmp"])
    assert not _m(flow(proto="ICMPv4"), destination_port=["0"])
    with pytest.raises(FilterError, match="destination_port"):
        compile_filter(FF(destination_port=["http"]))
    with pytest.raises(FilterError, match="protocol"):
        compile_filter(FF(protocol=["quic"]))


def test_labels_with_and_without_source() -> None:
    f = flow(src_labels=("k8s:app=echo", "k8s:app.kubernetes.io/name=web", "reserved:host"))
    assert _m(f, source_label=["app=echo"])
    assert _m(f, source_label=["k8s:app=echo"])
    assert _m(f, source_label=["any:app=echo"])
    assert not _m(f, source_label=["container:app=echo"])
    assert _m(f, source_label=["app.kubernetes.io/name=web"])
    assert _m(f, source_label=["reserved:host"])
    assert _m(f, source_label=["app in (web, echo),!canary"])
    assert not _m(f, source_label=["app notin (echo)"])
    with pytest.raises(FilterError, match="source_label"):
        compile_filter(FF(source_label=["app in (a"]))


def test_fqdn_and_node_name_patterns() -> None:
    f = flow(dst_names=("api.example.com.",), node="prod/node-1.example.com")
    assert _m(f, destination_fqdn=["*.example.com"])
    assert _m(f, destination_fqdn=["API.example.com"])
    assert not _m(f, destination_fqdn=["*.example.org"])
    assert _m(f, node_name=["node-1*"]) and _m(f, node_name=["prod/"])
    assert _m(f, node_name=["prod/*.example.com"]) and not _m(f, node_name=["dev/"])
    assert _m(flow(node="node1"), node_name=["node1"])
    assert not _m(flow(node="node1"), node_name=["prod/node1"])
    with pytest.raises(FilterError, match="node_name"):
        compile_filter(FF(node_name=["a/b/c"]))
    with pytest.raises(FilterError, match="destination_fqdn"):
        compile_filter(FF(destination_fqdn=["exa mple.com"]))


def test_verdicts_drop_reasons_directions_identities() -> None:
    d = flow(verdict=flow_pb2.DROPPED, drop_reason=158)
    assert _m(d, verdict=[flow_pb2.DROPPED]) and not _m(d, verdict=[flow_pb2.FORWARDED])
    assert _m(d, drop_reason_desc=[flow_pb2.SERVICE_BACKEND_NOT_FOUND])
    assert _m(d, traffic_direction=[flow_pb2.INGRESS])
    assert _m(flow(src_identity=2), source_identity=[2])
    assert _m(d, event_type=[flow_pb2.EventTypeFilter(type=1)])
    assert _m(d, event_type=[flow_pb2.EventTypeFilter(type=1, match_sub_type=True,
                                                      sub_type=158)])
    assert not _m(d, event_type=[flow_pb2.EventTypeFilter(type=1, match_sub_type=True,
                                                          sub_type=133)])
    assert not _m(d, event_type=[flow_pb2.EventTypeFilter(type=4)])


def test_reply_treats_unknown_drops_as_not_replies() -> None:
    assert _m(flow(is_reply=True), reply=[True])
    assert not _m(flow(is_reply=None), reply=[False])
    assert _m(flow(is_reply=None, verdict=flow_pb2.DROPPED), reply=[False])


def test_tcp_flags_subset() -> None:
    f = flow(flags=("SYN", "ACK"))
    assert _m(f, tcp_flags=[flow_pb2.TCPFlags(SYN=True)])
    assert _m(f, tcp_flags=[flow_pb2.TCPFlags(FIN=True), flow_pb2.TCPFlags(ACK=True)])
    assert not _m(f, tcp_flags=[flow_pb2.TCPFlags(SYN=True, FIN=True)])
    assert not _m(flow(proto="UDP"), tcp_flags=[flow_pb2.TCPFlags(SYN=True)])


def test_http_fields() -> None:
    f = flow()
    f.l7.type = flow_pb2.RESPONSE
    f.l7.http.code, f.l7.http.method = 404, "GET"
    f.l7.http.url = "http://echo.bar:8080/api/v1?x=1"
    f.l7.http.headers.add(key="X-Test", value="1")
    assert _m(f, http_status_code=["404"]) and _m(f, http_status_code=["4+"])
    assert _m(f, http_status_code=["40+"]) and not _m(f, http_status_code=["5+"])
    assert _m(f, http_method=["get"]) and _m(f, http_path=["^/api/v[0-9]$"])
    assert _m(f, http_url=["echo\\.bar"]) and _m(f, http_header=[
        flow_pb2.HTTPHeader(key="X-Test", value="1")])
    assert not _m(flow(), http_status_code=["4+"])
    with pytest.raises(FilterError, match="http_status_code"):
        compile_filter(FF(http_status_code=["4xx"]))
    with pytest.raises(FilterError, match="l7"):
        compile_filter(FF(http_method=["GET"], event_type=[flow_pb2.EventTypeFilter(type=4)]))
    with pytest.raises(FilterError, match="http_path"):
        compile_filter(FF(http_path=["("]))


def test_dns_query_and_uuid_and_workloads() -> None:
    f = flow()
    f.l7.dns.query = "echo.bar.svc.cluster.local."
    f.uuid = "u-1"
    f.source.workloads.add(name="client", kind="Deployment")
    assert _m(f, dns_query=["cluster\\.local"]) and not _m(flow(), dns_query=[".*"])
    assert _m(f, uuid=["u-1", "u-2"]) and not _m(f, uuid=["u-3"])
    assert _m(f, source_workload=[flow_pb2.Workload(kind="deployment")])
    assert _m(f, source_workload=[flow_pb2.Workload(name="client")])
    assert not _m(f, source_workload=[flow_pb2.Workload(name="client", kind="DaemonSet")])


def test_cel_is_refused() -> None:
    ff = FF()
    ff.experimental.cel_expression.append("true")
    with pytest.raises(FilterError, match="CEL"):
        compile_filter(ff)
