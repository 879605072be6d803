"""Datapath events into Hubble flows (Hubble's "threefour" parser, for hexlane's events).

`FlowParser(node_name, lookup, wall_offset_ns).flow(event)` turns one decoded
`hexlane.datapath.events.Event` into a `flow.Flow` as Cilium's Hubble fills it for a trace or
drop notification: time, uuid, verdict (FORWARDED / DROPPED), drop reason (Cilium's numbers),
IP (with the source the packet left with when it was SNATed), L4 with TCP flags or the ICMP
type, source and destination endpoints, the Service a translated flow went through (the
destination's for a request, the source's for its reply), is_reply, the traffic direction
relative to this node's endpoint, the observation point, node and interface, event type.

An L7 record (a DNS message or an HTTP/1.x head the datapath handed up) becomes an L7 flow
as Cilium's proxy reports it: `l7.dns` or `l7.http`, REQUEST or RESPONSE, a response with its
latency and (HTTP) its request's method and URL, egress when seen at the client pod, ingress
at the server pod. `L7Reader` reads the records in the order they came (it pairs a response
with its request), when the batch is taken from the ring; the flow is built later like the
others.

Who an address is comes from a `Lookup` (the agent's, built from the API's Pods, Nodes and
Services): a pod (namespace, name, labels, workloads), this node (reserved identity host),
another node (remote-node), else the world. Identities are the reserved ones, or 0 for pods
until policy brings allocated identities. No I/O here: the wall clock offset is given.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Protocol

from hexlane.datapath.events import (
    EVENT_DROP,
    EVENT_L7,
    EVENT_POLICY_VERDICT,
    EVENT_TRACE,
    VERDICT_MATCH_MASK,
    VERDICT_MATCH_SHIFT,
    Event,
    EventBatch,
    EventFlag,
    L7Kind,
    L7Payload,
    L7Side,
    ObservationPoint,
    VerdictFlag,
)
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.l7 import (
    OBSERVATION_SOURCE,
    DnsRecord,
    HttpRecord,
    L7Error,
    L7Pairs,
    parse_dns,
    parse_http,
)
from hexlane.policy.maps import PolicyRef

_F_L4 = int(EventFlag.L4)
_F_RESPONSE = int(EventFlag.RESPONSE)
_TO_ENDPOINT = int(ObservationPoint.TO_ENDPOINT)
_V_EGRESS = int(VerdictFlag.EGRESS)
_V_AUDITED = int(VerdictFlag.AUDITED)

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
    13: flow_pb2.POLICY_DENIED,  # POLICY
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
_RCODES = {1: "Format Error", 2: "Server Failure", 3: "Non-Existent Domain",
           4: "Not Implemented", 5: "Refused"}


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


@dataclass(frozen=True, slots=True)
class L7Info:
    """What an L7 record says, read when its batch was taken (L7Reader)."""

    kind: int  # L7Kind
    side: int  # L7Side
    response: bool
    record: DnsRecord | HttpRecord | None  # None: the bytes could not be read
    latency_ns: int = 0
    request: HttpRecord | None = None  # an HTTP response's request
    error: str = ""


class L7Reader:
    """L7 records of one node, read in the order they came (module docstring)."""

    def __init__(self, pairs: L7Pairs | None = None) -> None:
        self.pairs = pairs if pairs is not None else L7Pairs()
        self.errors = 0  # records that were not DNS or HTTP after all

    def read(self, ev: Event, payload: L7Payload) -> L7Info:
        response = bool(ev.flags & _F_RESPONSE)
        kind, side = payload.kind, payload.side
        # client first: a request goes from it, a response to it
        if response:
            conn: tuple[object, ...] = (ev.daddr, ev.dport, ev.saddr, ev.sport, ev.proto)
        else:
            conn = (ev.saddr, ev.sport, ev.daddr, ev.dport, ev.proto)
        try:
            if kind == L7Kind.DNS:
                dns = parse_dns(payload.data, tcp=ev.proto == IPPROTO_TCP)
                key = (*conn, dns.id)
                if not response:
                    self.pairs.request(key, ev.ktime_ns)
                    return L7Info(kind, side, False, dns)
                paired = self.pairs.response(key, ev.ktime_ns)
                return L7Info(kind, side, True, dns, paired[0] if paired else 0)
            http = parse_http(payload.data, response=response)
        except L7Error as err:
            self.errors += 1
            return L7Info(kind, side, response, None, error=str(err))
        if not response:
            self.pairs.request(conn, ev.ktime_ns, http)
            return L7Info(kind, side, False, http)
        paired = self.pairs.response(conn, ev.ktime_ns)
        if paired is None:
            return L7Info(kind, side, True, http)
        request = paired[1] if isinstance(paired[1], HttpRecord) else None
        return L7Info(kind, side, True, http, paired[0], request)

    def read_batch(self, batch: EventBatch) -> dict[int, L7Info]:
        """Every L7 record of `batch`, by index; requests waiting too long are forgotten."""
        out: dict[int, L7Info] = {}
        ev = None
        for i in batch.l7:
            ev = batch.event(i)
            if ev.type == EVENT_L7:
                out[i] = self.read(ev, batch.payload(i))
        if ev is not None:
            self.pairs.expire(ev.ktime_ns)
        return out


class FlowParser:
    """Events of one node into flows (see the module docstring)."""

    def __init__(self, node_name: str, lookup: Lookup, wall_offset_ns: int, *,
                 cluster: str = "default", interfaces: dict[int, str] | None = None,
                 local_node: str | None = None,
                 policies: Callable[[int], Sequence[PolicyRef]] | None = None) -> None:
        self.node_name = node_name  # as flows name it (Cilium's: <cluster>/<node>)
        #: the Node's own name, as pods' spec.nodeName gives it
        self.local_node = local_node if local_node is not None else node_name
        self.lookup = lookup
        self.wall_offset_ns = wall_offset_ns
        self.cluster = cluster
        #: ifindex -> name, as the caller knows them (missing: the index alone)
        self.interfaces = interfaces if interfaces is not None else {}
        self.errors = 0  # events that could not be read
        #: the policies behind a policy verdict's number (the policy controller's table)
        self.policies = policies

    def flow(self, ev: Event, lookup: Lookup | None = None,
             l7: L7Info | None = None) -> flow_pb2.Flow:
        """The flow of `ev`, naming endpoints through `lookup` (default: the parser's);
        an L7 record's flow needs what its `L7Info` says."""
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
                reply = ev.is_reply or (ev.type == EVENT_L7 and ev.flags & _F_RESPONSE)
                target = f.source_service if reply else f.destination_service
                target.namespace, target.name = svc
        if ev.type == EVENT_L7:
            self._l7(f, ev, l7)
        elif ev.type == EVENT_POLICY_VERDICT:
            self._verdict(f, ev)
        elif ev.type == EVENT_DROP:
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

    def _verdict(self, f: flow_pb2.Flow, ev: Event) -> None:
        """A policy verdict as Cilium's parser makes one of its notification: the direction,
        the match type, FORWARDED / DROPPED (Policy denied) / AUDIT, the remote side's
        identity as the datapath looked it up, and the policies that decided (allowed_by,
        or denied_by for a deny rule)."""
        f.event_type.type = EVENT_POLICY_VERDICT
        egress = bool(ev.obs_point & _V_EGRESS)
        f.traffic_direction = flow_pb2.EGRESS if egress else flow_pb2.INGRESS
        f.policy_match_type = (ev.obs_point & VERDICT_MATCH_MASK) >> VERDICT_MATCH_SHIFT
        if ev.obs_point & _V_AUDITED:
            f.verdict = flow_pb2.AUDIT
        elif ev.reason:
            reason = DROP_REASONS.get(ev.reason, flow_pb2.DROP_REASON_UNKNOWN)
            f.verdict = flow_pb2.DROPPED
            f.drop_reason = reason
            f.drop_reason_desc = reason
        else:
            f.verdict = flow_pb2.FORWARDED
        remote = f.destination if egress else f.source
        if ev.identity and remote.identity != ev.identity:
            remote.identity = ev.identity
            if not remote.pod_name:  # a CIDR identity: the labels of world no longer fit
                del remote.labels[:]
        refs = self.policies(ev.cookie) if ev.cookie and self.policies else ()
        if refs:
            denied = f.verdict != flow_pb2.FORWARDED
            target = ((f.egress_denied_by if denied else f.egress_allowed_by) if egress
                      else (f.ingress_denied_by if denied else f.ingress_allowed_by))
            target.extend(flow_pb2.Policy(name=r.name, namespace=r.namespace, kind=r.kind,
                                          labels=r.labels) for r in refs)

    @staticmethod
    def _l7(f: flow_pb2.Flow, ev: Event, info: L7Info | None) -> None:
        f.Type = flow_pb2.L7
        f.verdict = flow_pb2.FORWARDED
        f.event_type.type = EVENT_L7
        response = bool(ev.flags & _F_RESPONSE)
        f.is_reply.SetInParent()
        f.is_reply.value = response
        f.reply = response
        client = info is None or info.side == L7Side.CLIENT
        f.traffic_direction = flow_pb2.EGRESS if client else flow_pb2.INGRESS
        f.l7.type = flow_pb2.RESPONSE if response else flow_pb2.REQUEST
        if info is None or info.record is None:
            f.Summary = f"L7 message not read: {info.error if info else 'no record'}"
            return
        f.l7.latency_ns = info.latency_ns
        record = info.record
        if isinstance(record, DnsRecord):
            d = f.l7.dns
            d.query = record.query
            d.qtypes.extend(record.qtypes)
            d.observation_source = OBSERVATION_SOURCE
            types = " ".join(record.qtypes)
            if response:
                d.rcode = record.rcode
                d.ips.extend(record.ips)
                d.rrtypes.extend(record.rrtypes)
                d.ttl = record.ttl
                d.cnames.extend(record.cnames)
                answer = ",".join(f'"{ip}"' for ip in record.ips)
                f.Summary = (f"DNS Answer {answer} TTL: {record.ttl} "
                             f"({OBSERVATION_SOURCE} {record.query} {types})"
                             if record.rcode == 0 else
                             f"DNS Answer RCode: {_RCODES.get(record.rcode, record.rcode)} "
                             f"({OBSERVATION_SOURCE} {record.query} {types})")
            else:
                f.Summary = f"DNS Query {record.query} {types}"
            return
        h = f.l7.http
        h.protocol = record.protocol
        h.headers.extend(flow_pb2.HTTPHeader(key=k, value=v) for k, v in record.headers)
        if response:
            h.code = record.code
            request = info.request
            if request is not None:
                h.method, h.url = request.method, request.url
            ms = info.latency_ns // 1_000_000
            f.Summary = (f"{record.protocol} {record.code} {ms}ms ({h.method} {h.url})"
                         if request is not None else f"{record.protocol} {record.code}")
        else:
            h.method, h.url = record.method, record.url
            f.Summary = f"{record.protocol} {record.method} {record.url}"

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
    when the store asks for it, naming endpoints as they were when the batch was read (and
    its L7 records as `L7Reader` read them then)."""

    __slots__ = ("batch", "l7", "lookup", "parser")

    def __init__(self, batch: EventBatch, parser: FlowParser, lookup: Lookup,
                 l7: dict[int, L7Info] | None = None) -> None:
        self.batch, self.parser, self.lookup = batch, parser, lookup
        self.l7 = l7 or {}

    def __len__(self) -> int:
        return len(self.batch)

    def flow(self, i: int) -> flow_pb2.Flow:
        try:
            return self.parser.flow(self.batch.event(i), self.lookup, self.l7.get(i))
        except Exception as exc:  # a bad record must not cost the others
            self.parser.errors += 1
            f = flow_pb2.Flow(node_name=self.parser.node_name, verdict=flow_pb2.ERROR)
            f.Summary = f"hexlane could not read this event: {exc}"
            return f
