"""The Hubble wire contract: the committed Python modules are exactly what `make proto`
generates from the committed .proto files, and the names and numbers that Hubble clients rely
on (from Cilium's api/v1 protos, as listed in the reference) are the ones we declare."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_pb2
from hexlane.hubble.api.relay import relay_pb2

REPO = Path(__file__).resolve().parents[2]
API = REPO / "src" / "hexlane" / "hubble" / "api"


def test_committed_modules_match_a_regeneration(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    subprocess.run([sys.executable, str(REPO / "scripts" / "hubble_proto.py"), "--out",
                    str(tmp_path)], check=True)
    generated = {p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*")}
    committed = {p.relative_to(API) for p in API.rglob("*_pb2.py*")} | {
        p.relative_to(API) for p in API.rglob("*_grpc.py")}
    assert generated == committed
    for rel in sorted(generated):
        assert (tmp_path / rel).read_text() == (API / rel).read_text(), (
            f"{rel} differs from a regeneration: run `make proto` and commit")


def _numbers(message: type) -> dict[str, int]:
    return {f.name: f.number for f in message.DESCRIPTOR.fields}


def test_service_and_methods_are_cilium_s() -> None:
    service = observer_pb2.DESCRIPTOR.services_by_name["Observer"]
    assert service.full_name == "observer.Observer"
    methods = {m.name: (m.input_type.full_name, m.output_type.full_name, m.server_streaming)
               for m in service.methods}
    assert methods == {
        "GetFlows": ("observer.GetFlowsRequest", "observer.GetFlowsResponse", True),
        "GetAgentEvents": ("observer.GetAgentEventsRequest",
                           "observer.GetAgentEventsResponse", True),
        "GetDebugEvents": ("observer.GetDebugEventsRequest",
                           "observer.GetDebugEventsResponse", True),
        "GetNodes": ("observer.GetNodesRequest", "observer.GetNodesResponse", False),
        "GetNamespaces": ("observer.GetNamespacesRequest", "observer.GetNamespacesResponse",
                          False),
        "ServerStatus": ("observer.ServerStatusRequest", "observer.ServerStatusResponse",
                         False),
    }


def test_observer_messages_numbers() -> None:
    assert _numbers(observer_pb2.GetFlowsRequest) == {
        "number": 1, "first": 9, "follow": 3, "blacklist": 5, "whitelist": 6, "since": 7,
        "until": 8, "field_mask": 10, "experimental": 999, "extensions": 150000}
    assert _numbers(observer_pb2.GetFlowsResponse) == {
        "flow": 1, "node_status": 2, "lost_events": 3, "node_name": 1000, "time": 1001}
    assert _numbers(observer_pb2.ServerStatusResponse) == {
        "num_flows": 1, "max_flows": 2, "seen_flows": 3, "uptime_ns": 4,
        "num_connected_nodes": 5, "num_unavailable_nodes": 6, "unavailable_nodes": 7,
        "version": 8, "flows_rate": 9}
    assert _numbers(observer_pb2.Namespace) == {"cluster": 1, "namespace": 2}
    assert _numbers(relay_pb2.NodeStatusEvent) == {
        "state_change": 1, "node_names": 2, "message": 3}


def test_flow_numbers() -> None:
    expected = {
        "time": 1, "verdict": 2, "drop_reason": 3, "ethernet": 4, "IP": 5, "l4": 6,
        "source": 8, "destination": 9, "Type": 10, "node_name": 11, "source_names": 13,
        "destination_names": 14, "l7": 15, "reply": 16, "event_type": 19,
        "source_service": 20, "destination_service": 21, "traffic_direction": 22,
        "policy_match_type": 23, "trace_observation_point": 24, "drop_reason_desc": 25,
        "is_reply": 26, "interface": 28, "uuid": 34, "trace_reason": 36, "node_labels": 37,
        "tunnel": 39, "emitter": 41, "egress_allowed_by": 21001, "ingress_allowed_by": 21002,
        "Summary": 100000,
    }
    numbers = _numbers(flow_pb2.Flow)
    assert {k: numbers[k] for k in expected} == expected
    assert flow_pb2.Flow.DESCRIPTOR.fields_by_name["is_reply"].message_type.full_name == (
        "google.protobuf.BoolValue")
    assert _numbers(flow_pb2.Endpoint) == {
        "ID": 1, "identity": 2, "namespace": 3, "labels": 4, "pod_name": 5, "workloads": 6,
        "cluster_name": 7}
    assert _numbers(flow_pb2.IP) == {
        "source": 1, "destination": 2, "ipVersion": 3, "encrypted": 4, "source_xlated": 5}
    assert _numbers(flow_pb2.Layer4) == {"TCP": 1, "UDP": 2, "ICMPv4": 3, "ICMPv6": 4,
                                         "SCTP": 5}
    assert _numbers(flow_pb2.TCP) == {"source_port": 1, "destination_port": 2, "flags": 3}
    assert _numbers(flow_pb2.TCPFlags) == {
        name: i for i, name in enumerate(
            ("FIN", "SYN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS"), start=1)}
    assert _numbers(flow_pb2.Service) == {"name": 1, "namespace": 2}
    assert _numbers(flow_pb2.CiliumEventType) == {"type": 1, "sub_type": 2}
    layer7 = _numbers(flow_pb2.Layer7)
    assert layer7 == {"type": 1, "latency_ns": 2, "dns": 100, "http": 101, "kafka": 102}


def test_filter_numbers() -> None:
    numbers = _numbers(flow_pb2.FlowFilter)
    assert {k: numbers[k] for k in (
        "source_ip", "source_pod", "destination_ip", "destination_pod", "verdict",
        "event_type", "source_fqdn", "destination_fqdn", "http_status_code", "source_label",
        "destination_label", "protocol", "source_port", "destination_port", "reply",
        "source_service", "destination_service", "dns_query", "source_identity",
        "destination_identity", "http_method", "http_path", "tcp_flags", "node_name",
        "ip_version", "source_workload", "destination_workload", "trace_id", "uuid",
        "traffic_direction", "http_url", "http_header", "drop_reason_desc",
        "source_ip_xlated", "interface", "node_labels", "source_cluster_name",
        "destination_cluster_name", "experimental")} == {
        "source_ip": 1, "source_pod": 2, "destination_ip": 3, "destination_pod": 4,
        "verdict": 5, "event_type": 6, "source_fqdn": 7, "destination_fqdn": 8,
        "http_status_code": 9, "source_label": 10, "destination_label": 11, "protocol": 12,
        "source_port": 13, "destination_port": 14, "reply": 15, "source_service": 16,
        "destination_service": 17, "dns_query": 18, "source_identity": 19,
        "destination_identity": 20, "http_method": 21, "http_path": 22, "tcp_flags": 23,
        "node_name": 24, "ip_version": 25, "source_workload": 26, "destination_workload": 27,
        "trace_id": 28, "uuid": 29, "traffic_direction": 30, "http_url": 31,
        "http_header": 32, "drop_reason_desc": 33, "source_ip_xlated": 34, "interface": 35,
        "node_labels": 36, "source_cluster_name": 37, "destination_cluster_name": 38,
        "experimental": 999}


def test_enums() -> None:
    assert dict(flow_pb2.Verdict.items()) == {
        "VERDICT_UNKNOWN": 0, "FORWARDED": 1, "DROPPED": 2, "ERROR": 3, "AUDIT": 4,
        "REDIRECTED": 5, "TRACED": 6, "TRANSLATED": 7}
    assert dict(flow_pb2.FlowType.items()) == {"UNKNOWN_TYPE": 0, "L3_L4": 1, "L7": 2,
                                               "SOCK": 3}
    assert dict(flow_pb2.TrafficDirection.items()) == {
        "TRAFFIC_DIRECTION_UNKNOWN": 0, "INGRESS": 1, "EGRESS": 2}
    points = dict(flow_pb2.TraceObservationPoint.items())
    assert (points["FROM_NETWORK"], points["TO_NETWORK"], points["TO_ENDPOINT"]) == (10, 11, 101)
    reasons = dict(flow_pb2.DropReason.items())
    assert (reasons["POLICY_DENIED"], reasons["SERVICE_BACKEND_NOT_FOUND"],
            reasons["POLICY_DENY"]) == (133, 158, 181)
    assert dict(relay_pb2.NodeState.items()) == {
        "UNKNOWN_NODE_STATE": 0, "NODE_CONNECTED": 1, "NODE_UNAVAILABLE": 2, "NODE_GONE": 3,
        "NODE_ERROR": 4}


def test_proto_file_names_are_cilium_s() -> None:
    """Reflection hands out files by name; clients resolve imports by Cilium's paths."""
    assert flow_pb2.DESCRIPTOR.name == "flow/flow.proto"
    assert relay_pb2.DESCRIPTOR.name == "relay/relay.proto"
    assert observer_pb2.DESCRIPTOR.name == "observer/observer.proto"
    assert [d.name for d in observer_pb2.DESCRIPTOR.public_dependencies] == ["flow/flow.proto"]
