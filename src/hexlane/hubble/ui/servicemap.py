"""The service map (pure): who talks to whom, from a window of recent flows.

`service_map(flows, now_ns=..., namespace=...)` turns flows (oldest first, as GetFlows sends
them) into what the Hubble UI draws:

- **nodes**, the boxes: a pod is its workload, `namespace/workload`, named by the flow's
  `workloads` (a Deployment, a DaemonSet, ...) or else by the pod's name without its
  ReplicaSet and pod hash suffixes (Cilium's `pod-short`); an end that is not a pod is its
  reserved identity, `world`, `host`, `remote-node`, `kube-apiserver` (by the
  `reserved:` label, else the identity number), and an address nobody named is `world`.
  Boxes are grouped by namespace (reserved ones have none);
- **edges**, client -> server, one per (source, destination, protocol, destination port,
  verdict): a request's flows count on it, a reply (`is_reply`) names its two ends but makes
  no edge of its own (the client -> server edge already says they talk). A flow whose
  direction is unknown (drops, mostly) counts as a request, as Hubble's filters take it.
  The protocol is the L7 one for DNS and HTTP flows, else the L4 one (`TCP`, `UDP`, `SCTP`,
  `ICMPv4`, `ICMPv6`); ICMP has port 0. An edge carries its flow count, the time of its last
  flow, its rate and, when it is `DROPPED`, the drop reasons (`dropped` is what is drawn red).

The rate is flows per second over the last `window_ns` (a minute by default), or over the
time the flows given span when they reach back less far (a UI that just started, or a window
of flows that filled faster than a minute), and never over less than a second. `now_ns` is
the caller's clock: the same flows and clock always give the same map.

`namespace` selects a view: "" is every namespace at once; a name keeps the edges with an
end in that namespace, the boxes at their ends, and every box of that namespace.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.filters import l4_ports
from hexlane.hubble.format import RESERVED_IDENTITIES, flow_type
from hexlane.hubble.metrics.context import reserved_identity, short_pod_name

RATE_WINDOW_NS = 60 * 10**9
MIN_SPAN_NS = 10**9
WORLD = "world"
# Cilium's split world identities are still the world to a reader of the map.
_WORLDS = frozenset({"world-ipv4", "world-ipv6"})
_L7_PROTOCOLS = {"dns": "DNS", "http": "HTTP", "kafka": "Kafka"}


@dataclass(frozen=True, order=True)
class MapNode:
    """A box: `id` is `namespace/workload` or a reserved name (`world`, `host`, ...)."""

    id: str
    namespace: str  # "" for reserved identities
    name: str
    kind: str  # "Deployment", "StatefulSet", ... ("" when unknown); "reserved" for those
    pods: tuple[str, ...] = ()  # the pods seen behind a workload, sorted

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "namespace": self.namespace, "name": self.name,
                "kind": self.kind, "reserved": self.kind == "reserved",
                "pods": list(self.pods)}


@dataclass(frozen=True, order=True)
class EdgeKey:
    source: str
    destination: str
    protocol: str
    port: int
    verdict: str


@dataclass(frozen=True)
class MapEdge:
    """An arrow client -> server: `flows` requests, `rate` of them per second."""

    key: EdgeKey
    flows: int
    rate: float
    last_ns: int
    drop_reasons: tuple[str, ...] = ()

    @property
    def dropped(self) -> bool:
        return self.key.verdict == "DROPPED"

    def as_dict(self) -> dict[str, Any]:
        k = self.key
        return {"source": k.source, "destination": k.destination, "protocol": k.protocol,
                "port": k.port, "verdict": k.verdict, "dropped": self.dropped,
                "flows": self.flows, "rate": round(self.rate, 3), "last_ns": self.last_ns,
                "drop_reasons": list(self.drop_reasons)}


@dataclass(frozen=True)
class ServiceMap:
    """The boxes and arrows of one view, sorted; `namespaces` are the view's groups."""

    nodes: tuple[MapNode, ...]
    edges: tuple[MapEdge, ...]
    namespace: str = ""
    window_ns: int = RATE_WINDOW_NS
    flows: int = 0  # flows read to make it (the whole window, every namespace)
    namespaces: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "namespaces",
                           tuple(sorted({n.namespace for n in self.nodes if n.namespace})))

    def as_dict(self) -> dict[str, Any]:
        return {"namespace": self.namespace, "namespaces": list(self.namespaces),
                "window_seconds": self.window_ns / 1e9, "flows": self.flows,
                "nodes": [n.as_dict() for n in self.nodes],
                "edges": [e.as_dict() for e in self.edges]}


def endpoint_box(ep: flow_pb2.Endpoint) -> tuple[str, str, str, str]:
    """(id, namespace, name, kind) of the box an endpoint is drawn in."""
    if ep.namespace and (ep.workloads or ep.pod_name):
        if ep.workloads:
            name, kind = ep.workloads[0].name, ep.workloads[0].kind
        else:
            name, kind = short_pod_name(ep.pod_name), ""
        return f"{ep.namespace}/{name}", ep.namespace, name, kind
    reserved = reserved_identity(ep.labels).removeprefix("reserved:")
    reserved = reserved or RESERVED_IDENTITIES.get(ep.identity, WORLD)
    if reserved in _WORLDS:
        reserved = WORLD
    return reserved, "", reserved, "reserved"


def edge_protocol(flow: flow_pb2.Flow) -> tuple[str, int]:
    """(protocol, destination port) an edge is labelled with."""
    ports = l4_ports(flow)
    port = ports[1] if ports else 0
    if flow.HasField("l7"):
        record = flow.l7.WhichOneof("record")
        if record in _L7_PROTOCOLS:
            return _L7_PROTOCOLS[record], port
    kind = flow.l4.WhichOneof("protocol") if flow.HasField("l4") else None
    return kind or "IP", port


def _flow_time_ns(flow: flow_pb2.Flow) -> int:
    return flow.time.seconds * 10**9 + flow.time.nanos


@dataclass
class _EdgeTally:
    times: list[int] = field(default_factory=list)
    reasons: set[str] = field(default_factory=set)


def service_map(flows: Iterable[flow_pb2.Flow], *, now_ns: int, namespace: str = "",
                window_ns: int = RATE_WINDOW_NS) -> ServiceMap:
    """The map of `flows` (see the module docstring) as seen at `now_ns`."""
    boxes: dict[str, tuple[str, str, str]] = {}
    pods: defaultdict[str, set[str]] = defaultdict(set)
    tallies: defaultdict[EdgeKey, _EdgeTally] = defaultdict(_EdgeTally)
    oldest: int | None = None
    count = 0
    for flow in flows:
        if not flow.HasField("IP"):
            continue  # not L3/L4 traffic between two addresses
        count += 1
        t = _flow_time_ns(flow)
        oldest = t if oldest is None else min(oldest, t)
        ends = []
        for ep in (flow.source, flow.destination):
            box, ns, name, kind = endpoint_box(ep)
            if box not in boxes or (kind and not boxes[box][2]):  # a kind once known stays
                boxes[box] = (ns, name, kind)
            if kind != "reserved" and ep.pod_name:
                pods[box].add(ep.pod_name)
            ends.append(box)
        if flow.HasField("is_reply") and flow.is_reply.value:
            continue
        protocol, port = edge_protocol(flow)
        tally = tallies[EdgeKey(ends[0], ends[1], protocol, port,
                                flow_pb2.Verdict.Name(flow.verdict))]
        tally.times.append(t)
        if flow.verdict == flow_pb2.DROPPED:
            tally.reasons.add(flow_type(flow))

    since = now_ns - window_ns
    if oldest is not None:
        since = max(since, oldest)
    span_s = max(now_ns - since, MIN_SPAN_NS) / 1e9
    edges = [MapEdge(key, len(tally.times), sum(t >= since for t in tally.times) / span_s,
                     max(tally.times), tuple(sorted(tally.reasons)))
             for key, tally in tallies.items()]
    if namespace:
        edges = [e for e in edges
                 if namespace in (boxes[e.key.source][0], boxes[e.key.destination][0])]
        shown = {e.key.source for e in edges} | {e.key.destination for e in edges}
        shown |= {box for box, (ns, _, _) in boxes.items() if ns == namespace}
    else:
        shown = set(boxes)
    nodes = [MapNode(box, *boxes[box], pods=tuple(sorted(pods[box]))) for box in shown]
    return ServiceMap(tuple(sorted(nodes)), tuple(sorted(edges, key=lambda e: e.key)),
                      namespace=namespace, window_ns=window_ns, flows=count)

