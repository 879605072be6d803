"""Datapath events into Hubble flows (Hubble's "threefour" parser, for hexlane's events).

`FlowParser(node_name, lookup, wall_offset_ns).flow(event)` turns one decoded
`hexlane.datapath.events.Event` into a `flow.Flow` as Cilium's Hubble fills it for a trace or
drop notification: time, uuid, verdict (FORWARDED / DROPPED), drop reason (Cilium's numbers),
IP (with the source the packet left with when it was SNATed), L4 with TCP flags or the ICMP
type, source and destination endpoints, the Service a translated flow went through (the
destination's for a request, the source's for its reply), is_reply, the traffic direction
relative to this node's endpoint, the observation point, node and interface, event type.

Who an address is comes from a `Lookup` (the agent's, built from the API's Pods, Nodes and
Services): a pod (namespace, name, labels, workloads), this node (reserved identity host),
another node (remote-node), else the world. Identities are the reserved ones, or 0 for pods
until policy brings allocated identities. No I/O here: the wall clock offset is given.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from hexlane.datapath.events import (
    EVENT_DROP,
    EVENT_TRACE,
    Event,
    EventBatch,
    EventFlag,
    ObservationPoint,
)
from hexlane.hubble.api.flow import flow_pb2

_F_L4 = int(EventFlag.L4)
_TO_ENDPOINT = int(ObservationPoint.TO_ENDPOINT)

# Cilium's reserved identities
IDENTITY_UNKNOWN = 0
IDENTITY_HOST = 1
IDENTITY_WORLD = 2
IDENTITY_REMOTE_NODE = 6

RESERVED_LABELS = {IDENTITY_HOST: "reserved:host", IDENTITY_WORLD: "reserved:world",
                   IDENTITY_REMOTE_NODE: "reserved:remote-node"}

#: hexlane's drop reasons (hexlane.datapath.lb.maps.DropReason) as Cilium's (flow.DropReason)
DROP_REASONS = {
    1: flow_pb2.CT_TRUNCATED_OR_INVALID_HEADER,  # TRUNCATED
    2: flow_pb2.INVALID_PACKET_DROPPED,  # INVALID_IP
    3: flow_pb2.CT_TRUNCATED_OR_INVALID_HEADER,  # INVALID_L4
    4: flow_pb2.SERVICE_BACKEND_NOT_FOUND,  # NO_BACKEND
    5: flow_pb2.SERVICE_BACKEND_NOT_FOUND,  # BACKEND_MISSING
    6: flow_pb2.ERROR_WRITING_TO_PACKET,  # WRITE
    7: flow_pb2.ERROR_WHILE_CORRECTING_L3_CHECKSUM,  # CSUM
    8: flow_pb2.CT_MAP_INSERTION_FAILED,  # CT_CREATE
    9: flow_pb2.NO_MAPPING_FOR_NAT_MASQUERADE,  # REPLY_NAT
    10: flow_pb2.NO_MAPPING_FOR_NAT_MASQUERADE,  # SNAT_PORTS
    11: flow_pb2.INVALID_PACKET_DROPPED,  # DSR_OPT
    12: flow_pb2.NO_MAPPING_FOR_NAT_MASQUERADE,  # NO_NODE_IP
}

#: flow.TraceObservationPoint -> the monitor's trace sub-type (event_type.sub_type)
TRACE_SUB_TYPES = {
    ObservationPoint.TO_ENDPOINT: 0, ObservationPoint.TO_HOST: 2, ObservationPoint.TO_STACK: 3,
    ObservationPoint.TO_OVERLAY: 4, ObservationPoint.TO_NETWORK: 11,
}

_TCP_FLAG_BITS = (("FIN", 0x01), ("SYN", 0x02), ("RST", 0x04), ("PSH", 0x08), ("ACK", 0x10),
                  ("URG", 0x20), ("ECE", 0x40), ("CWR", 0x80))
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
_PROTO_NAMES = {IPPROTO_TCP: "TCP", IPPROTO_UDP: "UDP"}


@dataclass(frozen=True)
class PodInfo:
    """What Hubble shows of a pod."""

    namespace: str
    name: str
    labels: tuple[str, ...] = ()  # "k8s:key=value", sorted
    workloads: tuple[tuple[str, str], ...] = ()  # (kind, name)
    node_name: str = ""


@dataclass(frozen=True)
class Who:
    """Who an address is: a pod, or a reserved identity (host, remote-node, world)."""

    identity: int
    pod: PodInfo | None = None
    labels: tuple[str, ...] = field(default=())


class Lookup(Protocol):
    def who(self, address: str) -> Who: ...

    def service(self, address: str, port: int, protocol: str) -> tuple[str, str] | None:
        """(namespace, name) of the Service with this frontend, if any."""
        ...


@lru_cache(maxsize=256)
def tcp_flags(bits: int) -> flow_pb2.TCPFlags:
    """The flags message of a TCP flags byte (shared: copy it into a flow, never change it)."""
    return flow_pb2.TCPFlags(**{name: True for name, bit in _TCP_FLAG_BITS if bits & bit})


@lru_cache(maxsize=4096)
def endpoint(who: Who, cluster: str) -> flow_pb2.Endpoint:
    """Hubble's Endpoint of `who` (shared: copy it into a flow, never change it)."""
    if who.pod is not None:
        pod = who.pod
        return flow_pb2.Endpoint(
            identity=who.identity, cluster_name=cluster, namespace=pod.namespace,
            labels=pod.labels, pod_name=pod.name,
            workloads=[flow_pb2.Workload(kind=kind, name=name) for kind, name in pod.workloads])
    labels = who.labels or ((RESERVED_LABELS[who.identity],)
                            if who.identity in RESERVED_LABELS else ())
    return flow_pb2.Endpoint(identity=who.identity, labels=labels)


class FlowParser:
    """Events of one node into flows (see the module docstring)."""

    def __init__(self, node_name: str, lookup: Lookup, wall_offset_ns: int, *,
                 cluster: str = "default", interfaces: dict[int, str] | None = None,
                 local_node: str | None = None) -> None:
        self.node_name = node_name  # as flows name it (Cilium's: <cluster>/<node>)
        #: the Node's own name, as pods' spec.nodeName gives it
        self.local_node = local_node if local_node is not None else node_name
        self.lookup = lookup
        self.wall_offset_ns = wall_offset_ns
        self.cluster = cluster
        #: ifindex -> name, as the caller knows them (missing: the index alone)
        self.interfaces = interfaces if interfaces is not None else {}
        self.errors = 0  # events that could not be read

    def flow(self, ev: Event, lookup: Lookup | None = None) -> flow_pb2.Flow:
        """The flow of `ev`, naming endpoints through `lookup` (default: the parser's)."""
        lookup = lookup or self.lookup
        f = flow_pb2.Flow()
        ns = ev.ktime_ns + self.wall_offset_ns
        f.time.seconds, f.time.nanos = divmod(ns, 1_000_000_000)
        f.uuid = str(uuid.uuid4())
        f.Type = flow_pb2.L3_L4
        f.node_name = self.node_name
        f.IP.source = ev.saddr
        f.IP.destination = ev.daddr
        f.IP.ipVersion = flow_pb2.IPv4
        if ev.xlated_saddr:
            f.IP.source_xlated = ev.xlated_saddr
        self._l4(f, ev)
        source = lookup.who(ev.saddr)
        f.source.CopyFrom(endpoint(source, self.cluster))
        f.destination.CopyFrom(endpoint(lookup.who(ev.daddr), self.cluster))
        f.interface.index = ev.ifindex
        name = self.interfaces.get(ev.ifindex)
        if name:
            f.interface.name = name
        if ev.svc_addr is not None and ev.proto in _PROTO_NAMES:
            svc = lookup.service(ev.svc_addr, ev.svc_port, _PROTO_NAMES[ev.proto])
            if svc is not None:
                target = f.source_service if ev.is_reply else f.destination_service
                target.namespace, target.name = svc
        if ev.type == EVENT_DROP:
            reason = DROP_REASONS.get(ev.reason, flow_pb2.DROP_REASON_UNKNOWN)
            f.verdict = flow_pb2.DROPPED
            f.drop_reason = reason
            f.drop_reason_desc = reason
            f.event_type.type = EVENT_DROP
            f.event_type.sub_type = reason
            # Leaving a pod of this node, or on the way into the node
            local = source.pod is not None and source.pod.node_name == self.local_node
            f.traffic_direction = flow_pb2.EGRESS if local else flow_pb2.INGRESS
        else:
            obs = ev.obs_point
            f.verdict = flow_pb2.FORWARDED
            f.event_type.type = EVENT_TRACE
            f.event_type.sub_type = TRACE_SUB_TYPES.get(obs, 0)  # type: ignore[call-overload]
            f.trace_observation_point = obs  # type: ignore[assignment]
            reply = ev.is_reply
            f.is_reply.SetInParent()
            f.is_reply.value = reply
            f.reply = reply
            ingress = obs == _TO_ENDPOINT
            if ev.is_reply:
                ingress = not ingress
            f.traffic_direction = flow_pb2.INGRESS if ingress else flow_pb2.EGRESS
        return f

    @staticmethod
    def _l4(f: flow_pb2.Flow, ev: Event) -> None:
        if not ev.flags & _F_L4:
            return
        if ev.proto == IPPROTO_TCP:
            f.l4.TCP.source_port = ev.sport
            f.l4.TCP.destination_port = ev.dport
            f.l4.TCP.flags.CopyFrom(tcp_flags(ev.tcp_flags))
        elif ev.proto == IPPROTO_UDP:
            f.l4.UDP.source_port = ev.sport
            f.l4.UDP.destination_port = ev.dport
        elif ev.proto == IPPROTO_ICMP:
            f.l4.ICMPv4.type = ev.icmp_type
            f.l4.ICMPv4.code = ev.icmp_code


class EventFlows:
    """A batch of events read from the ring as the store's pending flows: each flow built
    when the store asks for it, naming endpoints as they were when the batch was read."""

    __slots__ = ("batch", "lookup", "parser")

    def __init__(self, batch: EventBatch, parser: FlowParser, lookup: Lookup) -> None:
        self.batch, self.parser, self.lookup = batch, parser, lookup

    def __len__(self) -> int:
        return len(self.batch)

    def flow(self, i: int) -> flow_pb2.Flow:
        try:
            return self.parser.flow(self.batch.event(i), self.lookup)
        except Exception as exc:  # a bad record must not cost the others
            self.parser.errors += 1
            f = flow_pb2.Flow(node_name=self.parser.node_name, verdict=flow_pb2.ERROR)
            f.Summary = f"hexlane could not read this event: {exc}"
            return f
