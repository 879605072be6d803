"""Synthetic flows for Hubble tests: shaped as the agent builds them (trace at to-endpoint,
drops with their reason), with pods, services, labels and L4 set from keyword arguments."""

from __future__ import annotations

from google.protobuf.wrappers_pb2 import BoolValue

from hexlane.hubble.api.flow import flow_pb2

TRACE, DROP, POLICY_VERDICT = 4, 1, 5
BASE_NS = 1_733_306_400_000_000_000  # 2024-12-04 10:00:00 UTC


def flow(*, src: str = "10.42.1.10", dst: str = "10.42.2.20", sport: int = 53412,
         dport: int = 8080, proto: str = "TCP", flags: tuple[str, ...] = ("SYN",),
         src_pod: str = "", dst_pod: str = "", src_ns: str = "", dst_ns: str = "",
         src_labels: tuple[str, ...] = (), dst_labels: tuple[str, ...] = (),
         src_identity: int = 0, dst_identity: int = 0, verdict: int = flow_pb2.FORWARDED,
         drop_reason: int = 0, is_reply: bool | None = False, time_ns: int = BASE_NS,
         node: str = "default/node1", dst_service: tuple[str, str] | None = None,
         src_names: tuple[str, ...] = (), dst_names: tuple[str, ...] = (),
         direction: int = flow_pb2.INGRESS) -> flow_pb2.Flow:
    f = flow_pb2.Flow(verdict=verdict, node_name=node, Type=flow_pb2.L3_L4,
                      traffic_direction=direction)
    f.time.FromNanoseconds(time_ns)
    f.IP.source, f.IP.destination, f.IP.ipVersion = src, dst, flow_pb2.IPv4
    if proto == "TCP":
        f.l4.TCP.source_port, f.l4.TCP.destination_port = sport, dport
        for name in flags:
            setattr(f.l4.TCP.flags, name, True)
    elif proto == "UDP":
        f.l4.UDP.source_port, f.l4.UDP.destination_port = sport, dport
    elif proto == "ICMPv4":
        f.l4.ICMPv4.type = 8
    f.source.namespace, f.source.pod_name = src_ns, src_pod
    f.destination.namespace, f.destination.pod_name = dst_ns, dst_pod
    f.source.identity, f.destination.identity = src_identity, dst_identity
    f.source.labels.extend(src_labels)
    f.destination.labels.extend(dst_labels)
    f.source_names.extend(src_names)
    f.destination_names.extend(dst_names)
    if dst_service:
        f.destination_service.namespace, f.destination_service.name = dst_service
    if verdict == flow_pb2.DROPPED:
        f.event_type.type, f.event_type.sub_type = DROP, drop_reason
        f.drop_reason_desc = drop_reason
        f.drop_reason = drop_reason
    else:
        f.event_type.type, f.event_type.sub_type = TRACE, 0
        f.trace_observation_point = flow_pb2.TO_ENDPOINT
    if is_reply is not None:
        f.is_reply.CopyFrom(BoolValue(value=is_reply))
    return f


def pod_flow(i: int, *, ns: str = "bar", **kw: object) -> flow_pb2.Flow:
    """The i-th flow between two pods of `ns`, one second apart."""
    return flow(src_ns=ns, dst_ns=ns, src_pod=f"client-{i}", dst_pod="echo-def",
                time_ns=BASE_NS + i * 1_000_000_000, sport=40000 + i, **kw)  # type: ignore[arg-type]
