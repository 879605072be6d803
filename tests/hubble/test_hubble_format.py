"""What `hexlane hubble` prints, line for line as the hubble CLI: compact lines (identities,
reserved names, reply arrows, drop reasons, policy verdicts, L7), dict and table layouts,
protobuf JSON with proto field names, the L4 summary Cilium's parser writes, `hubble status`
and `hubble list`."""

from __future__ import annotations

import json

from hubble_helpers import BASE_NS, flow

from hexlane.hubble import format as fmt
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_pb2
from hexlane.hubble.api.relay import relay_pb2

MS = 1_000_000


def pods(**kw: object) -> flow_pb2.Flow:
    return flow(src_ns="bar", src_pod="echo-abc", dst_ns="bar", dst_pod="echo-def",
                time_ns=BASE_NS + 123 * MS, **kw)  # type: ignore[arg-type]


def test_compact_forwarded_trace() -> None:
    assert fmt.compact(pods()) == (
        "Dec  4 10:00:00.123: bar/echo-abc:53412 (ID:0) -> bar/echo-def:8080 (ID:0) "
        "to-endpoint FORWARDED (TCP Flags: SYN)")


def test_compact_reply_swaps_ends_and_unknown_direction_is_both_ways() -> None:
    reply = pods(is_reply=True, flags=("SYN", "ACK"))
    assert fmt.compact(reply) == (
        "Dec  4 10:00:00.123: bar/echo-def:8080 (ID:0) <- bar/echo-abc:53412 (ID:0) "
        "to-endpoint FORWARDED (TCP Flags: SYN, ACK)")
    assert " <> " in fmt.compact(pods(is_reply=None))


def test_compact_drop_with_reason_and_reserved_identity() -> None:
    f = flow(src="10.0.0.2", sport=41000, dst_ns="bar", dst_pod="echo-def", src_identity=2,
             verdict=flow_pb2.DROPPED, drop_reason=158, is_reply=None,
             time_ns=BASE_NS + 5 * MS)
    assert fmt.compact(f) == (
        "Dec  4 10:00:00.005: 10.0.0.2:41000 (world) <> bar/echo-def:8080 (ID:0) "
        "Service backend not found DROPPED (TCP Flags: SYN)")
    host = flow(src_identity=1, dst_identity=6, proto="ICMPv4")
    assert "10.42.1.10 (host) -> 10.42.2.20 (remote-node)" in fmt.compact(host)
    assert fmt.compact(host).endswith("(ICMPv4 EchoRequest)")


def test_compact_service_names_dns_names_ipv6_and_node_name() -> None:
    f = flow(dst_service=("bar", "echo"), src_names=("client.example.com",))
    assert "client.example.com:53412 (ID:0) -> bar/echo:8080" in fmt.compact(f)
    v6 = flow(src="fd00::1", dst="fd00::2")
    v6.IP.ipVersion = flow_pb2.IPv6
    assert "[fd00::1]:53412 (ID:0) -> [fd00::2]:8080" in fmt.compact(v6)
    assert fmt.compact(pods(), node_name=True).startswith(
        "Dec  4 10:00:00.123 [default/node1]: bar/echo-abc")


def test_policy_verdict_and_l7_types() -> None:
    pv = pods(verdict=flow_pb2.DROPPED, is_reply=None)
    pv.event_type.type, pv.policy_match_type = 5, 0
    assert "policy-verdict:none INGRESS DENIED (TCP Flags: SYN)" in fmt.compact(pv)
    pv.verdict, pv.policy_match_type = flow_pb2.FORWARDED, 2
    assert "policy-verdict:L3-L4 INGRESS ALLOWED" in fmt.compact(pv)
    l7 = pods()
    l7.event_type.type = 129
    l7.l7.type = flow_pb2.REQUEST
    l7.l7.http.method = "GET"
    assert " http-request FORWARDED " in fmt.compact(l7)


def test_summary_as_cilium_s_parser() -> None:
    assert fmt.summary(flow(flags=("ACK", "FIN", "PSH"))) == "TCP Flags: ACK, FIN, PSH"
    assert fmt.summary(flow(proto="UDP")) == "UDP"
    icmp = flow(proto="ICMPv4")
    icmp.l4.ICMPv4.type, icmp.l4.ICMPv4.code = 3, 3
    assert fmt.summary(icmp) == "ICMPv4 DestinationUnreachable(Port)"
    icmp.l4.ICMPv4.type, icmp.l4.ICMPv4.code = 8, 1
    assert fmt.summary(icmp) == "ICMPv4 EchoRequest(Code: 1)"
    bare = flow_pb2.Flow()
    bare.IP.source = "10.0.0.1"
    assert fmt.summary(bare) == "IPv4"


def test_dict_and_table() -> None:
    assert fmt.dict_record(pods()) == "\n".join([
        "  TIMESTAMP: Dec  4 10:00:00.123",
        "     SOURCE: bar/echo-abc:53412",
        "DESTINATION: bar/echo-def:8080",
        "       TYPE: to-endpoint",
        "    VERDICT: FORWARDED",
        "    SUMMARY: TCP Flags: SYN"])
    table = fmt.Table(fmt.flow_table_header())
    table.add(fmt.table_row(pods()))
    assert table.render() == (
        "TIMESTAMP             SOURCE               DESTINATION         TYPE          "
        "VERDICT     SUMMARY\n"
        "Dec  4 10:00:00.123   bar/echo-abc:53412   bar/echo-def:8080   to-endpoint   "
        "FORWARDED   TCP Flags: SYN\n")


def test_jsonpb_uses_proto_field_names_on_one_line() -> None:
    resp = observer_pb2.GetFlowsResponse(flow=pods(), node_name="default/node1")
    resp.time.FromNanoseconds(BASE_NS)
    line = fmt.json_line(resp)
    assert "\n" not in line and ", " not in line
    doc = json.loads(line)
    assert doc["node_name"] == "default/node1" and doc["time"] == "2024-12-04T10:00:00Z"
    f = doc["flow"]
    assert f["verdict"] == "FORWARDED" and f["IP"]["ipVersion"] == "IPv4"
    assert f["l4"]["TCP"] == {"source_port": 53412, "destination_port": 8080,
                              "flags": {"SYN": True}}
    assert f["source"]["pod_name"] == "echo-abc" and f["is_reply"] is False
    assert f["time"] == "2024-12-04T10:00:00.123Z"


def test_status_and_lists() -> None:
    status = observer_pb2.ServerStatusResponse(num_flows=123, max_flows=4095, seen_flows=500,
                                               flows_rate=1.234)
    assert fmt.status_text("unix:///run/hubble.sock", True, status) == (
        "Healthcheck (via unix:///run/hubble.sock): Ok\n"
        "Current/Max Flows: 123/4,095 (3.00%)\n"
        "Flows/s: 1.23\n")
    node = observer_pb2.Node(name="default/node1", state=relay_pb2.NODE_CONNECTED,
                             uptime_ns=380 * 10**9, num_flows=1506, max_flows=4095,
                             seen_flows=3800)
    assert fmt.nodes_table([node]) == (
        "NAME            STATUS      AGE     FLOWS/S   CURRENT/MAX-FLOWS\n"
        "default/node1   Connected   6m20s   10.00     1506/4095 ( 36.78%)\n")
    ns = [observer_pb2.Namespace(namespace="bar"), observer_pb2.Namespace(namespace="foo")]
    assert fmt.namespaces_table(ns) == "NAMESPACE\nbar\nfoo\n"
    assert fmt.go_duration(3723 * 10**9) == "1h2m3s" and fmt.go_duration(0) == "0s"
