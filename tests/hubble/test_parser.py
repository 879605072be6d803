"""Datapath events into flows, and who an address is (hexlane.hubble.parser, .endpoints).

Pins down: a pod's address names the pod with Cilium's labels and its Deployment (from its
ReplicaSet), a host-network pod names nobody, node addresses are host / remote-node, the rest
world; a trace becomes a FORWARDED flow with its observation point, TCP flags, is_reply,
direction relative to the node's endpoint and the Service of the frontend (destination for a
request, source for its reply); a drop becomes DROPPED with Cilium's reason number; SNAT shows
as source_xlated; ICMP and UDP carry their L4.
"""

from __future__ import annotations

from typing import Any

from hexlane.datapath.events import (
    EVENT_DROP,
    EVENT_POLICY_VERDICT,
    EVENT_TRACE,
    Event,
    EventFlag,
    ObservationPoint,
    VerdictFlag,
)
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.endpoints import Endpoints
from hexlane.hubble.format import flow_type as format_flow_type
from hexlane.hubble.format import summary_text, verdict_text
from hexlane.hubble.parser import IDENTITY_HOST, IDENTITY_REMOTE_NODE, IDENTITY_WORLD, FlowParser
from hexlane.policy.maps import PolicyRef

SYN, ACK = 0x02, 0x10


def pod(name: str, ip: str, node: str, *, labels: dict[str, str] | None = None,
        owner: str | None = None, host_network: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "bar", "labels": labels or {}}
    if owner:
        meta["ownerReferences"] = [{"kind": "ReplicaSet", "name": owner, "controller": True}]
    return {"metadata": meta, "spec": {"nodeName": node, "hostNetwork": host_network},
            "status": {"podIP": ip, "podIPs": [{"ip": ip}]}}


def node(name: str, ip: str) -> dict[str, Any]:
    return {"metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}


def endpoints() -> Endpoints:
    eps = Endpoints("n1", services=lambda a, p, proto: ("bar", "echo")
                    if (a, p, proto) == ("10.43.0.10", 80, "TCP") else None)
    eps.set_pod(pod("echo-abc", "10.42.0.5", "n1", labels={"app": "echo",
                                                            "pod-template-hash": "5d8f"},
                    owner="echo-5d8f"))
    eps.set_pod(pod("client", "10.42.1.7", "n2"))
    eps.set_pod(pod("hostnet", "10.0.0.11", "n1", host_network=True))
    eps.set_node(node("n1", "10.0.0.11"))
    eps.set_node(node("n2", "10.0.0.12"))
    return eps


def event(**kw: Any) -> Event:
    base: dict[str, Any] = dict(
        ktime_ns=5, type=EVENT_TRACE, obs_point=ObservationPoint.TO_ENDPOINT, reason=0,
        tcp_flags=SYN, proto=6, flags=EventFlag.L4, icmp_type=0, icmp_code=0, ifindex=7,
        length=60, saddr="10.42.1.7", daddr="10.42.0.5", sport=40000, dport=8080,
        svc_addr=None, svc_port=0, xlated_saddr=None)
    base.update(kw)
    return Event(**base)


def test_who_an_address_is() -> None:
    eps = endpoints()
    echo = eps.who("10.42.0.5")
    assert echo.pod is not None
    assert (echo.pod.namespace, echo.pod.name, echo.pod.workloads) == (
        "bar", "echo-abc", (("Deployment", "echo"),))
    assert echo.pod.labels == ("k8s:app=echo", "k8s:io.cilium.k8s.policy.cluster=default",
                               "k8s:io.cilium.k8s.policy.serviceaccount=default",
                               "k8s:io.kubernetes.pod.namespace=bar")
    assert eps.who("10.0.0.11").identity == IDENTITY_HOST  # the host-network pod's too
    assert eps.who("10.0.0.12").identity == IDENTITY_REMOTE_NODE
    assert eps.who("192.168.1.50").identity == IDENTITY_WORLD
    eps.delete_pod(pod("echo-abc", "10.42.0.5", "n1"))
    assert eps.who("10.42.0.5").identity == IDENTITY_WORLD
    assert eps.namespaces() == {"bar"}


def test_a_translated_request_and_its_reply() -> None:
    parser = FlowParser("n1", endpoints(), wall_offset_ns=1_000_000_000)
    request = parser.flow(event(flags=EventFlag.L4 | EventFlag.SERVICE,
                                svc_addr="10.43.0.10", svc_port=80))
    assert request.verdict == flow_pb2.FORWARDED
    assert (request.time.seconds, request.time.nanos) == (1, 5)
    assert (request.source.pod_name, request.destination.pod_name) == ("client", "echo-abc")
    assert (request.destination_service.namespace, request.destination_service.name) == (
        "bar", "echo")
    assert not request.HasField("source_service")
    assert request.trace_observation_point == flow_pb2.TO_ENDPOINT
    assert request.traffic_direction == flow_pb2.INGRESS
    assert request.l4.TCP.flags.SYN and not request.l4.TCP.flags.ACK
    assert request.is_reply.value is False and request.HasField("is_reply")
    assert (request.event_type.type, request.event_type.sub_type) == (4, 0)
    assert request.node_name == "n1" and request.uuid

    reply = parser.flow(event(saddr="10.42.0.5", daddr="10.42.1.7", sport=8080, dport=40000,
                              tcp_flags=SYN | ACK, obs_point=ObservationPoint.TO_OVERLAY,
                              flags=EventFlag.L4 | EventFlag.SERVICE | EventFlag.REPLY,
                              svc_addr="10.43.0.10", svc_port=80))
    assert reply.is_reply.value is True
    assert reply.source_service.name == "echo" and not reply.HasField("destination_service")
    # the reply of a connection into the endpoint: still that endpoint's ingress
    assert reply.traffic_direction == flow_pb2.INGRESS
    assert (reply.event_type.sub_type, reply.trace_observation_point) == (4, flow_pb2.TO_OVERLAY)


def test_snat_udp_and_icmp() -> None:
    parser = FlowParser("n1", endpoints(), 0)
    snat = parser.flow(event(saddr="192.168.1.50", daddr="10.42.1.7", proto=17, tcp_flags=0,
                             obs_point=ObservationPoint.TO_OVERLAY,
                             flags=EventFlag.L4 | EventFlag.XLATED_SRC,
                             xlated_saddr="10.0.0.11"))
    assert (snat.IP.source, snat.IP.source_xlated) == ("192.168.1.50", "10.0.0.11")
    assert snat.source.identity == IDENTITY_WORLD and snat.source.labels == ["reserved:world"]
    assert (snat.l4.UDP.source_port, snat.l4.UDP.destination_port) == (40000, 8080)
    assert snat.traffic_direction == flow_pb2.EGRESS
    ping = parser.flow(event(proto=1, tcp_flags=0, icmp_type=8, sport=33, dport=0))
    assert (ping.l4.ICMPv4.type, ping.l4.WhichOneof("protocol")) == (8, "ICMPv4")


def test_a_drop() -> None:
    parser = FlowParser("n1", endpoints(), 0)
    drop = parser.flow(event(type=EVENT_DROP, reason=4, saddr="10.42.0.5", daddr="10.43.0.10",
                             dport=80, flags=EventFlag.L4 | EventFlag.SERVICE,
                             svc_addr="10.43.0.10", svc_port=80))
    assert drop.verdict == flow_pb2.DROPPED
    assert drop.drop_reason_desc == flow_pb2.SERVICE_BACKEND_NOT_FOUND
    assert drop.drop_reason == 158
    assert (drop.event_type.type, drop.event_type.sub_type) == (1, 158)
    assert drop.destination_service.name == "echo"
    assert drop.traffic_direction == flow_pb2.EGRESS  # leaving a pod of this node


def test_a_policy_verdict_names_its_direction_match_and_policies() -> None:
    """Cilium's policy verdict flow: event type 5, the direction and match type from the
    flags, FORWARDED / DROPPED (Policy denied) / AUDIT, the remote identity as the datapath
    saw it (a CIDR identity for a world address), and the deciding policies by number."""
    eps = endpoints()
    refs = (PolicyRef("NetworkPolicy", "bar", "allow-client"),
            PolicyRef("CiliumClusterwideNetworkPolicy", "", "lab-wide"))
    eps.set_policies({9: refs})
    parser = FlowParser("n1", eps, 0, policies=eps.policies)
    ingress = int(VerdictFlag.INGRESS)
    allowed = parser.flow(event(type=EVENT_POLICY_VERDICT, obs_point=ingress | 2 << 3,
                                identity=301, cookie=9))
    assert allowed.event_type.type == 5 and allowed.verdict == flow_pb2.FORWARDED
    assert allowed.traffic_direction == flow_pb2.INGRESS and allowed.policy_match_type == 2
    assert allowed.source.identity == 301 and allowed.source.pod_name == "client"
    assert [(p.kind, p.namespace, p.name) for p in allowed.ingress_allowed_by] == [
        ("NetworkPolicy", "bar", "allow-client"),
        ("CiliumClusterwideNetworkPolicy", "", "lab-wide")]
    assert "k8s:io.cilium.k8s.policy.name=allow-client" in allowed.ingress_allowed_by[0].labels
    assert format_flow_type(allowed) == "policy-verdict:L3-L4 INGRESS"
    assert verdict_text(allowed) == "ALLOWED"
    assert "Policy: NetworkPolicy bar/allow-client" in summary_text(allowed)

    denied = parser.flow(event(type=EVENT_POLICY_VERDICT, obs_point=int(VerdictFlag.EGRESS),
                               reason=13, saddr="10.42.0.5", daddr="203.0.113.9",
                               identity=16777217, cookie=0))
    assert denied.verdict == flow_pb2.DROPPED
    assert denied.drop_reason_desc == flow_pb2.POLICY_DENIED
    assert denied.traffic_direction == flow_pb2.EGRESS
    assert denied.destination.identity == 16777217 and not denied.destination.labels
    assert not denied.egress_denied_by and verdict_text(denied) == "DENIED"

    audited = parser.flow(event(type=EVENT_POLICY_VERDICT,
                                obs_point=int(VerdictFlag.INGRESS | VerdictFlag.AUDITED),
                                identity=301, cookie=9))
    assert audited.verdict == flow_pb2.AUDIT and verdict_text(audited) == "AUDITED"
    assert [p.name for p in audited.ingress_denied_by] == ["allow-client", "lab-wide"]
