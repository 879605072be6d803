"""The Hubble UI's service map (`hexlane.hubble.ui.servicemap`, pure): which box an end is
drawn in (a workload by its `workloads` or its pod's short name, reserved identities by label
or number, anything unnamed the world), client -> server edges keyed by protocol, port and
verdict (replies make none, drops count and are flagged with their reasons), rates over the
window or the span the flows cover, and one namespace's view; then properties over random
flows (hypothesis): every request counted once on one edge, ends drawn, input order
irrelevant, namespace views partitioning the edges, rates bounded by the counts."""

from __future__ import annotations

import random
from typing import Any

from google.protobuf.wrappers_pb2 import BoolValue
from hubble_helpers import UI_EDGES, UI_NODES, flow, ui_flow, ui_flows
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.ui.servicemap import (
    RATE_WINDOW_NS,
    ServiceMap,
    edge_protocol,
    endpoint_box,
    service_map,
)

SEC = 10**9
NOW = 1_800_000_000 * SEC


def _ep(*, workloads: tuple[tuple[str, str], ...] = (), **kw: Any) -> flow_pb2.Endpoint:
    ep = flow_pb2.Endpoint(**kw)
    for name, kind in workloads:
        ep.workloads.add(name=name, kind=kind)
    return ep


def _edges(m: ServiceMap) -> dict[tuple[str, str, int, str], int]:
    return {(f"{e.key.source}->{e.key.destination}", e.key.protocol, e.key.port,
             e.key.verdict): e.flows for e in m.edges}


def test_which_box_an_end_is_drawn_in() -> None:
    assert endpoint_box(_ep(namespace="bar", pod_name="echo-5b6c7d8e9f-abcde",
                            workloads=(("echo", "Deployment"),))) == (
        "bar/echo", "bar", "echo", "Deployment")
    # no workload: the pod's name without its ReplicaSet and pod hashes (Cilium's pod-short)
    assert endpoint_box(_ep(namespace="bar", pod_name="client-6d9f7c8b5d-x2x4k"))[0] == (
        "bar/client")
    assert endpoint_box(_ep(namespace="foo", pod_name="db-0"))[0] == "foo/db"
    assert endpoint_box(_ep(identity=1, labels=["reserved:host"])) == (
        "host", "", "host", "reserved")
    assert endpoint_box(_ep(identity=6))[0] == "remote-node"
    # the apiserver's label names it even on the host's identity
    assert endpoint_box(_ep(identity=1, labels=["reserved:host", "reserved:kube-apiserver"])
                        )[0] == "kube-apiserver"
    assert endpoint_box(_ep(identity=9))[0] == "world"  # world-ipv4
    assert endpoint_box(_ep())[0] == "world"  # an address nobody named
    assert endpoint_box(_ep(namespace="bar"))[0] == "world"  # no pod: not a workload


def test_edge_protocols_and_ports() -> None:
    assert edge_protocol(flow(proto="UDP", dport=53)) == ("UDP", 53)
    assert edge_protocol(flow(proto="ICMPv4")) == ("ICMPv4", 0)
    dns = flow(proto="UDP", dport=53)
    dns.l7.dns.query = "echo.bar.svc.cluster.local."
    assert edge_protocol(dns) == ("DNS", 53)
    http = flow(dport=8080)
    http.l7.http.method = "GET"
    assert edge_protocol(http) == ("HTTP", 8080)


def test_known_traffic_gives_the_expected_map() -> None:
    m = service_map(ui_flows(NOW), now_ns=NOW)
    assert _edges(m) == UI_EDGES
    assert {n.id for n in m.nodes} == UI_NODES
    assert m.namespaces == ("bar", "foo", "kube-system") and m.flows == 23
    client = next(n for n in m.nodes if n.id == "bar/client")
    assert client.pods == ("client-6d9f7c8b5d-q7w8e", "client-6d9f7c8b5d-x2x4k")
    assert client.kind == "Deployment"
    # replies (echo -> client) name their ends but make no edge back
    assert not [e for e in m.edges if e.key.source == "bar/echo"]
    (drop,) = [e for e in m.edges if e.dropped]
    assert drop.key.source == "world" and drop.drop_reasons == ("Service backend not found",)
    assert m.as_dict()["edges"][0] == {
        "source": "bar/client", "destination": "bar/echo", "protocol": "TCP", "port": 8080,
        "verdict": "FORWARDED", "dropped": False, "flows": 6,
        "rate": round(6 / 5.5, 3), "last_ns": NOW - 3 * SEC,
        "drop_reasons": []}


def test_rates() -> None:
    def rate(times: list[int], *, now: int = NOW) -> float:
        flows = [flow(time_ns=t) for t in times]
        (edge,) = service_map(flows, now_ns=now).edges
        return edge.rate

    # flows of the last minute over the minute, older ones not counted
    assert rate([NOW - 120 * SEC, NOW - 30 * SEC, NOW - 20 * SEC, NOW - 10 * SEC]) == 3 / 60
    # flows covering less than the window: over the span they cover
    assert rate([NOW - 4 * SEC, NOW - 2 * SEC]) == 2 / 4
    # never over less than a second
    assert rate([NOW, NOW]) == 2.0
    # the window is the whole map's: an edge's only flow counts over the span of all flows
    flows = [flow(time_ns=NOW - 10 * SEC), flow(dport=443, time_ns=NOW - 5 * SEC)]
    assert [e.rate for e in service_map(flows, now_ns=NOW).edges] == [0.1, 0.1]
    # an edge whose flows are all older than the window stays, with rate 0
    assert rate([NOW - 2 * RATE_WINDOW_NS]) == 0.0


def test_one_namespace_view() -> None:
    m = service_map(ui_flows(NOW), now_ns=NOW, namespace="foo")
    assert {n.id for n in m.nodes} == {"foo/web", "foo/db", "kube-system/coredns",
                                       "remote-node"}
    assert _edges(m) == {k: v for k, v in UI_EDGES.items() if "foo/" in k[0]}
    assert m.namespaces == ("foo", "kube-system") and m.namespace == "foo"
    # a namespace's boxes are shown even when only replies name them
    reply = ui_flow("echo-5b6c7d8e9f-abcde", "web-7c9d8f6b4-zzt6m", dport=41000, sport=8080,
                    is_reply=True, time_ns=NOW)
    quiet = service_map([reply], now_ns=NOW, namespace="foo")
    assert [n.id for n in quiet.nodes] == ["foo/web"] and not quiet.edges
    assert service_map(ui_flows(NOW), now_ns=NOW, namespace="nope").nodes == ()


def test_flows_without_addresses_are_left_out() -> None:
    f = flow()
    f.ClearField("IP")
    assert service_map([f], now_ns=NOW).flows == 0


# --- properties -----------------------------------------------------------------------

ENDS = ["client-6d9f7c8b5d-x2x4k", "echo-5b6c7d8e9f-abcde", "web-7c9d8f6b4-zzt6m", "db-0",
        "coredns-7db6d8ff4d-4rl2p", "world", "host", "remote-node", "internet"]
VERDICTS = [flow_pb2.FORWARDED, flow_pb2.DROPPED, flow_pb2.ERROR]


@st.composite
def flows(draw: st.DrawFn) -> list[flow_pb2.Flow]:
    out = []
    for _ in range(draw(st.integers(0, 30))):
        src, dst = draw(st.sampled_from(ENDS)), draw(st.sampled_from(ENDS))
        f = ui_flow(src, dst, dport=draw(st.sampled_from([53, 80, 8080])),
                    proto=draw(st.sampled_from(["TCP", "UDP", "ICMPv4"])),
                    verdict=draw(st.sampled_from(VERDICTS)),
                    time_ns=NOW - draw(st.integers(0, 3 * RATE_WINDOW_NS)))
        for ep in (f.source, f.destination):
            if draw(st.booleans()):  # the same pod named by its pod's name only
                ep.ClearField("workloads")
        reply = draw(st.sampled_from([None, False, True]))
        if reply is None:
            f.ClearField("is_reply")
        else:
            f.is_reply.CopyFrom(BoolValue(value=reply))
        out.append(f)
    return out


def _requests(fs: list[flow_pb2.Flow]) -> list[flow_pb2.Flow]:
    return [f for f in fs if not (f.HasField("is_reply") and f.is_reply.value)]


@settings(max_examples=60, deadline=None)
@given(flows())
def test_every_request_counts_once_on_an_edge_between_drawn_boxes(
        fs: list[flow_pb2.Flow]) -> None:
    m = service_map(fs, now_ns=NOW)
    assert sum(e.flows for e in m.edges) == len(_requests(fs))
    ids = {n.id for n in m.nodes}
    assert len(ids) == len(m.nodes)
    assert len({e.key for e in m.edges}) == len(m.edges)
    for e in m.edges:
        assert {e.key.source, e.key.destination} <= ids
        assert e.dropped == (e.key.verdict == "DROPPED") == bool(e.drop_reasons)
        assert 0 <= e.rate <= e.flows


@settings(max_examples=40, deadline=None)
@given(flows(), st.randoms(use_true_random=False))
def test_the_order_of_the_flows_does_not_matter(fs: list[flow_pb2.Flow],
                                               rnd: random.Random) -> None:
    shuffled = list(fs)
    rnd.shuffle(shuffled)
    assert service_map(shuffled, now_ns=NOW).as_dict() == service_map(fs, now_ns=NOW).as_dict()


@settings(max_examples=40, deadline=None)
@given(flows())
def test_namespace_views_cover_every_edge_with_a_namespaced_end(
        fs: list[flow_pb2.Flow]) -> None:
    whole = service_map(fs, now_ns=NOW)
    namespace_of = {n.id: n.namespace for n in whole.nodes}
    seen = set()
    for ns in whole.namespaces:
        view = service_map(fs, now_ns=NOW, namespace=ns)
        for e in view.edges:
            assert ns in (namespace_of[e.key.source], namespace_of[e.key.destination])
            assert e in whole.edges
            seen.add(e.key)
        assert {n.id for n in whole.nodes if n.namespace == ns} <= {n.id for n in view.nodes}
    reserved_only = {e.key for e in whole.edges
                     if not namespace_of[e.key.source] and not namespace_of[e.key.destination]}
    assert seen | reserved_only == {e.key for e in whole.edges}


@settings(max_examples=40, deadline=None)
@given(flows())
def test_rates_add_up_to_the_requests_in_the_window(fs: list[flow_pb2.Flow]) -> None:
    m = service_map(fs, now_ns=NOW)
    if not m.edges:
        return
    oldest = min(f.time.ToNanoseconds() for f in fs)
    since = max(NOW - RATE_WINDOW_NS, oldest)
    span = max(NOW - since, SEC) / SEC
    recent = [f for f in _requests(fs) if f.time.ToNanoseconds() >= since]
    assert abs(sum(e.rate for e in m.edges) * span - len(recent)) < 1e-6
