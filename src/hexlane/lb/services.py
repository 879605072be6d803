"""Services, EndpointSlices and Nodes -> the desired contents of the load balancer's maps.

`desired_state(services, slices, nodes, node_name, settings, ids)` is a pure function: it
decides every frontend this node serves, the backends behind each (per scope), the Maglev
tables, and the health-check ports, and returns them with the id allocations it used.

Frontends (one per address, port number and protocol, so a TCP and a UDP Service may share
an address and port):
- ClusterIP: every address of `spec.clusterIPs` (IPv4), for traffic from pods and the node;
- NodePort: `nodePort` on every IPv4 address of this node's Node object (InternalIP and
  ExternalIP). Cilium also keeps a wildcard 0.0.0.0:nodePort entry that matches any local
  address; hexlane lists the node's addresses instead, so a listing shows exactly the
  addresses served and nothing answers on addresses the Node does not announce;
- LoadBalancer: every `status.loadBalancer.ingress[].ip` (type LoadBalancer);
- externalIPs: every `spec.externalIPs` address when `externalIPs.enabled`.

Backends come from the Service's EndpointSlices (label kubernetes.io/service-name, IPv4
address type): ready endpoints; only when none is ready, the serving terminating ones (KEP
1669, as Cilium). A backend is (address, port, protocol), shared by every frontend using it.

Unreachable nodes (`LbModel.set_unreachable_nodes`, from the agents' heartbeat; never this
node): an endpoint whose `nodeName` is one of them is not chosen for new connections, as if
it were not ready, before Kubernetes' node-lifecycle controller says so. It stays in the
backend map, quarantined (Cilium's BE_STATE_QUARANTINED) and in no slot, like a draining
terminating backend: its id is kept, established flows are not steered elsewhere (a node
wrongly thought dead loses none of them), and when the node is reachable again the backend
comes back with the same id. A Service whose backends are all on unreachable nodes has none
for new connections (ICMP reject, as with no ready endpoint).

Traffic policies follow Cilium's two scopes: with `externalTrafficPolicy: Local` an external
frontend's EXT scope holds only this node's backends (client address preserved) and its INT
scope (traffic from inside the cluster) all of them; with `internalTrafficPolicy: Local`
ClusterIP frontends hold only local backends, and external frontends get an INT scope of
local backends. The INT scope entry gets its own service id (so its own Maglev table).

Ids are stable: `IdAllocations` maps each frontend scope and each backend to its id; ids in
use stay as long as their object does, so conntrack entries (which name backend ids) stay
valid across recomputation and restarts (the agent rebuilds the allocations from the pinned
maps). New ids go on from the last one given, wrapping at the limit (Cilium's allocators do
the same): an id freed now is not given again soon, so a flow of a deleted Service or backend
still in conntrack cannot steer a new flow to whatever took its id.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from hexlane.lb.maglev import DEFAULT_HASH_SEED, DEFAULT_TABLE_SIZE, MaglevBackend, build_table
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service, ServicePort

# Frontend types, as `cilium service list` names them.
CLUSTER_IP = "ClusterIP"
NODE_PORT = "NodePort"
LOAD_BALANCER = "LoadBalancer"
EXTERNAL_IP = "ExternalIPs"
FRONTEND_TYPES = (CLUSTER_IP, NODE_PORT, LOAD_BALANCER, EXTERNAL_IP)

SCOPE_EXT = 0
SCOPE_INT = 1

STATE_ACTIVE = "active"
STATE_TERMINATING = "terminating"
STATE_QUARANTINED = "quarantined"  # on an unreachable node: kept, never chosen
# Which state wins when Services say different things of one backend.
_STATE_RANK = {STATE_ACTIVE: 0, STATE_TERMINATING: 1, STATE_QUARANTINED: 2}

ALGORITHMS = ("random", "maglev")
MODES = ("snat", "dsr", "hybrid")
ALGORITHM_ANNOTATION = "service.cilium.io/lb-algorithm"
MODE_ANNOTATION = "service.cilium.io/forwarding-mode"

MAX_SERVICE_ID = 0xFFFF  # lb4_service.rev_nat_index is a u16
MAX_BACKEND_ID = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class LbSettings:
    """The configuration keys the load balancer acts on (from `hexlane.config.Values`)."""

    algorithm: str = "random"
    mode: str = "snat"
    table_size: int = DEFAULT_TABLE_SIZE
    hash_seed: str = DEFAULT_HASH_SEED
    node_port: bool = True
    external_ips: bool = False
    #: bpf.lbAlgorithmAnnotation / bpf.lbModeAnnotation: honour the per-Service annotations
    algorithm_annotation: bool = False
    mode_annotation: bool = False
    #: routingMode native: DSR can reach another node (the tunnel carries no DSR option)
    dsr_possible: bool = True


@dataclass(frozen=True, slots=True, order=True)
class FrontendKey:
    """What a packet is matched on: destination address, port, protocol, and the scope."""

    address: str
    port: int
    protocol: str
    scope: int = SCOPE_EXT


@dataclass(frozen=True, slots=True, order=True)
class BackendKey:
    address: str
    port: int
    protocol: str


@dataclass(frozen=True, slots=True)
class Backend:
    id: int
    address: str
    port: int
    protocol: str
    state: str  # STATE_ACTIVE | STATE_TERMINATING | STATE_QUARANTINED
    node_name: str
    local: bool  # on this node


@dataclass(frozen=True, slots=True)
class ServiceEntry:
    """One frontend scope: what the service map's slot 0 and slots 1..n say."""

    id: int
    frontend: FrontendKey
    type: str
    namespace: str
    name: str
    port_name: str
    backend_ids: tuple[int, ...]
    algorithm: str
    affinity_timeout_s: int  # 0: no session affinity
    ext_local: bool  # externalTrafficPolicy: Local on an external frontend
    int_local: bool  # internalTrafficPolicy: Local
    two_scopes: bool  # an INT scope entry exists beside this EXT one
    dsr: bool  # forwarded by DSR when the backend is on another node
    maglev: tuple[int, ...] = ()  # the table (backend ids) when algorithm is maglev


@dataclass(frozen=True, slots=True)
class HealthCheck:
    """The healthCheckNodePort server of an eTP=Local LoadBalancer/NodePort Service."""

    port: int
    namespace: str
    name: str
    local_endpoints: int


@dataclass
class IdAllocations:
    """Ids in use: frontend scope -> service id, backend -> backend id (see module doc)."""

    services: dict[FrontendKey, int] = field(default_factory=dict)
    backends: dict[BackendKey, int] = field(default_factory=dict)
    #: the last id given (0: none yet); new ids are searched from the one after it
    last_service: int = 0
    last_backend: int = 0

    def copy(self) -> IdAllocations:
        return IdAllocations(dict(self.services), dict(self.backends), self.last_service,
                             self.last_backend)

    @classmethod
    def recovered(cls, services: dict[FrontendKey, int],
                  backends: dict[BackendKey, int]) -> IdAllocations:
        """Allocations read back from the kernel: new ids go on after the highest in use."""
        return cls(services, backends, max(services.values(), default=0),
                   max(backends.values(), default=0))


@dataclass(frozen=True)
class DesiredState:
    services: tuple[ServiceEntry, ...]
    backends: Mapping[int, Backend]
    health_checks: tuple[HealthCheck, ...]
    ids: IdAllocations
    problems: tuple[str, ...] = ()  # what could not be served, and why

    def by_frontend(self) -> dict[FrontendKey, ServiceEntry]:
        return {s.frontend: s for s in self.services}


def node_routed_addresses(desired: DesiredState) -> frozenset[str]:
    """The frontend addresses outside the service CIDR that the node's own connections must
    meet the load balancer at: LoadBalancer and external IPs (the agent routes them to
    hexlane_host, as it routes the service CIDR)."""
    return frozenset(s.frontend.address for s in desired.services
                     if s.type in (LOAD_BALANCER, EXTERNAL_IP))


def settings_from_values(values: object) -> LbSettings:
    """LbSettings from a `hexlane.config.Values` (duck-typed: the pure core imports no config)."""
    lb = values.load_balancer  # type: ignore[attr-defined]
    maglev = values.maglev  # type: ignore[attr-defined]
    return LbSettings(algorithm=lb.algorithm, mode=lb.mode, table_size=maglev.table_size,
                      hash_seed=maglev.hash_seed,
                      node_port=bool(values.node_port_enabled),  # type: ignore[attr-defined]
                      external_ips=bool(values.external_ips_enabled),  # type: ignore[attr-defined]
                      algorithm_annotation=lb.algorithm_annotation,
                      mode_annotation=lb.mode_annotation,
                      dsr_possible=values.routing_mode == "native")  # type: ignore[attr-defined]


def service_options(svc: Service, settings: LbSettings) -> tuple[str, str, tuple[str, ...]]:
    """The algorithm and forwarding mode of one Service, and what was wrong with its
    annotations: `service.cilium.io/lb-algorithm` (random|maglev) when
    `bpf.lbAlgorithmAnnotation`, `service.cilium.io/forwarding-mode` (snat|dsr, and hexlane's
    hybrid) when `bpf.lbModeAnnotation` (DSR only with native routing); as in Cilium an
    unknown value is reported and the cluster's setting used."""
    algorithm, mode = settings.algorithm, settings.mode
    problems: list[str] = []
    for enabled, key, choices in ((settings.algorithm_annotation, ALGORITHM_ANNOTATION,
                                   ALGORITHMS),
                                  (settings.mode_annotation, MODE_ANNOTATION, MODES)):
        raw = svc.annotations.get(key)
        if not enabled or raw is None:
            continue
        value = raw.strip().lower()
        if value not in choices:
            problems.append(f"{svc.namespace}/{svc.name}: annotation {key}: {raw!r} is not one "
                            f"of {', '.join(choices)}; using the cluster's setting")
        elif key == ALGORITHM_ANNOTATION:
            algorithm = value
        elif value != "snat" and not settings.dsr_possible:
            problems.append(f"{svc.namespace}/{svc.name}: annotation {key}: {value} needs "
                            "routingMode: native (in a tunnel Cilium carries DSR in Geneve "
                            "options, which this kernel lacks); using snat")
            mode = "snat"
        else:
            mode = value
    return algorithm, mode, tuple(problems)


@lru_cache(maxsize=65536)
def _ipv4(address: str) -> bool:
    # cached: the same addresses come back on every recomputation
    try:
        return ipaddress.ip_address(address).version == 4
    except ValueError:
        return False


def node_addresses(nodes: Iterable[Node], node_name: str) -> tuple[str, ...]:
    """This node's IPv4 addresses that NodePort frontends listen on (InternalIP, ExternalIP)."""
    for node in nodes:
        if node.name == node_name:
            return tuple(sorted({a.address for a in node.addresses
                                 if a.type in ("InternalIP", "ExternalIP")
                                 and _ipv4(a.address)}))
    return ()


@dataclass(frozen=True, slots=True)
class _Candidate:
    key: BackendKey
    state: str
    node_name: str


def _slice_backends(port: ServicePort, slices: Sequence[EndpointSlice],
                    unreachable: Collection[str] = frozenset()
                    ) -> tuple[list[_Candidate], list[_Candidate]]:
    """The Service port's backends from its slices: (chosen, kept). Chosen are the ready
    ones, else the serving terminating ones, on reachable nodes; kept are those that stay in
    the backend map though not chosen (serving terminating beside ready ones, and the
    serving ones on unreachable nodes, quarantined), so established connections to them go
    on until they end."""
    ready: dict[BackendKey, _Candidate] = {}
    terminating: dict[BackendKey, _Candidate] = {}
    quarantined: dict[BackendKey, _Candidate] = {}
    for sl in slices:
        if sl.address_type != "IPv4":
            continue
        for ep_port in sl.ports:
            if ep_port.name != port.name or ep_port.protocol != port.protocol:
                continue
            if ep_port.port is None:
                continue
            for ep in sl.endpoints:
                c = ep.conditions
                for address in ep.addresses[:1]:  # Kubernetes uses only the first address
                    key = BackendKey(address, ep_port.port, port.protocol)
                    if ep.node_name in unreachable:
                        if c.is_serving:
                            quarantined.setdefault(
                                key, _Candidate(key, STATE_QUARANTINED, ep.node_name))
                    elif c.is_ready and not c.is_terminating:
                        ready.setdefault(key, _Candidate(key, STATE_ACTIVE, ep.node_name))
                    elif c.is_serving:
                        terminating.setdefault(
                            key, _Candidate(key, STATE_TERMINATING, ep.node_name))
    chosen = ready if ready else terminating
    kept = {**quarantined, **terminating} if ready else quarantined
    return [chosen[k] for k in sorted(chosen)], [kept[k] for k in sorted(kept)]


def _frontends(svc: Service, port: ServicePort, node_ips: Sequence[str],
               settings: LbSettings) -> list[tuple[str, str, int]]:
    """(type, address, port) of every frontend of one Service port on this node."""
    out: list[tuple[str, str, int]] = []
    cluster_ips = svc.cluster_ips or ((svc.cluster_ip,) if svc.cluster_ip else ())
    for ip in cluster_ips:
        if ip and ip != "None" and _ipv4(ip):
            out.append((CLUSTER_IP, ip, port.port))
    if svc.type in ("NodePort", "LoadBalancer") and port.node_port and settings.node_port:
        for ip in node_ips:
            out.append((NODE_PORT, ip, port.node_port))
    if svc.type == "LoadBalancer":
        for ip in svc.ingress_ips:
            if _ipv4(ip):
                out.append((LOAD_BALANCER, ip, port.port))
    if settings.external_ips:
        for ip in svc.external_ips:
            if _ipv4(ip):
                out.append((EXTERNAL_IP, ip, port.port))
    return out




def _sort_key(k: FrontendKey | BackendKey) -> tuple[str | int, ...]:
    # plain tuples compare several times faster than order=True dataclasses
    return tuple(getattr(k, f) for f in k.__slots__)


@lru_cache(maxsize=4096)
def _maglev_table(backends: tuple[MaglevBackend, ...], table_size: int,
                  hash_seed: str) -> tuple[int, ...]:
    # Many frontends (ClusterIP, NodePort per node IP, LB IP) share one backend set.
    return tuple(build_table(backends, table_size, hash_seed))


ServiceKey = tuple[str, str]  # (namespace, name)


@dataclass(frozen=True, slots=True)
class _Planned:
    frontend: FrontendKey
    type: str
    svc: Service
    port: ServicePort
    backends: tuple[BackendKey, ...]
    ext_local: bool
    int_local: bool
    two_scopes: bool
    dsr: bool
    algorithm: str


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """What one Service asks of this node, before ids: its frontends (every scope), the
    backends it offers (chosen and draining), its health check and its problems."""

    key: ServiceKey
    frontends: tuple[_Planned, ...]
    candidates: tuple[_Candidate, ...]
    draining: frozenset[BackendKey]
    health: HealthCheck | None
    problems: tuple[str, ...]


def _select(cands: Sequence[_Candidate], local_only: bool,
            node_name: str) -> tuple[BackendKey, ...]:
    return tuple(c.key for c in cands if not local_only or c.node_name == node_name)


def plan_service(svc: Service, slices: Iterable[EndpointSlice], node_ips: Sequence[str],
                 node_name: str, settings: LbSettings,
                 unreachable: Collection[str] = frozenset()) -> ServicePlan:
    """One Service's frontends and backends on this node (pure; no ids, no other Service);
    endpoints on `unreachable` nodes are quarantined (module doc)."""
    key = (svc.namespace, svc.name)
    if svc.type == "ExternalName" or svc.headless:
        return ServicePlan(key, (), (), frozenset(), None, ())
    svc_slices = list(slices)
    etp_local = svc.external_traffic_policy == "Local"
    itp_local = svc.internal_traffic_policy == "Local"
    local_count = 0
    algorithm, mode, found = service_options(svc, settings)
    problems = list(found)
    planned: dict[FrontendKey, _Planned] = {}
    candidates: dict[BackendKey, _Candidate] = {}
    draining: set[BackendKey] = set()
    for port in svc.ports:
        if port.protocol not in ("TCP", "UDP"):
            continue  # SCTP: not in the datapath
        cands, kept = _slice_backends(port, svc_slices, unreachable)
        for c in (*cands, *kept):
            candidates.setdefault(c.key, c)
        draining.update(c.key for c in kept)
        local_count = max(local_count, sum(1 for c in cands if c.node_name == node_name))
        dsr = mode == "dsr" or (mode == "hybrid" and port.protocol == "TCP")
        for ftype, address, fport in _frontends(svc, port, node_ips, settings):
            ext = FrontendKey(address, fport, port.protocol, SCOPE_EXT)
            if ext in planned:
                problems.append(f"{svc.namespace}/{svc.name}: frontend {address}:{fport}/"
                                f"{port.protocol} is already {svc.namespace}/{svc.name}'s")
                continue
            if ftype == CLUSTER_IP:
                planned[ext] = _Planned(ext, ftype, svc, port,
                                        _select(cands, itp_local, node_name),
                                        False, itp_local, False, False, algorithm)
                continue
            two = etp_local != itp_local
            planned[ext] = _Planned(ext, ftype, svc, port,
                                    _select(cands, etp_local, node_name),
                                    etp_local, itp_local, two, dsr, algorithm)
            if two:
                intk = FrontendKey(address, fport, port.protocol, SCOPE_INT)
                planned[intk] = _Planned(intk, ftype, svc, port,
                                         _select(cands, itp_local, node_name),
                                         etp_local, itp_local, True, dsr, algorithm)
    health = None
    if etp_local and svc.health_check_node_port and svc.type in ("LoadBalancer", "NodePort"):
        health = HealthCheck(svc.health_check_node_port, svc.namespace, svc.name, local_count)
    return ServicePlan(key, tuple(planned.values()), tuple(candidates.values()),
                       frozenset(draining), health, tuple(problems))


@dataclass(frozen=True)
class Delta:
    """What one `LbModel.commit` changed: entries new or changed (`entries`) with the
    versions they replace or that went away (`old`), backends new or changed, backend ids
    freed, and the problems of the Services it recomputed."""

    entries: tuple[ServiceEntry, ...] = ()
    old: tuple[ServiceEntry, ...] = ()
    backends: tuple[Backend, ...] = ()
    removed_backends: tuple[int, ...] = ()
    problems: tuple[str, ...] = ()
    services_recomputed: int = 0

    @property
    def empty(self) -> bool:
        return not (self.entries or self.old or self.backends or self.removed_backends)


def _next_id(used: Collection[int], limit: int, last: int) -> int | None:
    """The first free id after `last`, wrapping from `limit` to 1 (None: all taken)."""
    if len(used) >= limit:
        return None
    candidate = last % limit + 1
    while candidate in used:
        candidate = candidate % limit + 1
    return candidate


class LbModel:
    """This node's load-balancer state, kept up to date one object at a time (pure: data in,
    data out, no I/O). Feed it Services, EndpointSlices and Nodes as they change
    (`set_service`, `delete_service`, `set_slice`, `delete_slice`, `set_nodes`), and the
    nodes the heartbeat finds dead (`set_unreachable_nodes`); `commit()`
    recomputes only the Services touched since the last commit and returns the `Delta` to
    write; `state()` is the whole `DesiredState` (for listings; it costs O(n)).

    Rules (the same as computing everything at once, which `desired_state` does with a fresh
    model): when two Services claim one frontend, the first in (namespace, name) order has
    it; a backend shared by Services is active when any of them says so; new ids go, in
    sorted order, from the one after the last given (`IdAllocations`), and `ids` given at
    construction (recovered from the pinned maps) are reused by the same frontends and
    backends on their first commit."""

    def __init__(self, node_name: str, settings: LbSettings,
                 ids: IdAllocations | None = None) -> None:
        if settings.algorithm not in ALGORITHMS:
            raise ValueError(f"loadBalancer.algorithm {settings.algorithm!r}: expected one "
                             f"of {', '.join(ALGORITHMS)}")
        if settings.mode not in MODES:
            raise ValueError(f"loadBalancer.mode {settings.mode!r}: expected one of "
                             f"{', '.join(MODES)}")
        self.node_name = node_name
        self.settings = settings
        ids = ids or IdAllocations()
        self._hint_services = dict(ids.services)
        self._hint_backends = dict(ids.backends)
        self.last_service = ids.last_service
        self.last_backend = ids.last_backend
        self.node_ips: tuple[str, ...] = ()
        self.services: dict[ServiceKey, Service] = {}
        self._slices: dict[ServiceKey, dict[str, EndpointSlice]] = {}
        self._slice_owner: dict[tuple[str, str], ServiceKey] = {}
        # node name -> Services with endpoints there -> how many of their slices say so
        # (what a node becoming unreachable, or reachable again, makes dirty)
        self._slice_nodes: dict[tuple[str, str], frozenset[str]] = {}
        self._node_services: dict[str, dict[ServiceKey, int]] = {}
        self.unreachable: frozenset[str] = frozenset()
        self._plans: dict[ServiceKey, ServicePlan] = {}
        self._claims: dict[FrontendKey, dict[ServiceKey, _Planned]] = {}
        # what the Services say of each backend: (state, node) -> how many say it
        self._offers: dict[BackendKey, dict[tuple[str, str], int]] = {}
        self._refs: dict[BackendKey, int] = {}
        self.entries: dict[FrontendKey, ServiceEntry] = {}
        self._entry_backends: dict[FrontendKey, tuple[BackendKey, ...]] = {}
        self.service_ids: dict[FrontendKey, int] = {}
        self._used_service_ids: set[int] = set()
        self.backend_ids: dict[BackendKey, int] = {}
        self.backends: dict[int, Backend] = {}
        self._health: dict[ServiceKey, HealthCheck] = {}
        self._conflicts: dict[FrontendKey, tuple[str, ...]] = {}
        self._overflow: dict[Any, str] = {}
        self._routed: dict[str, int] = {}  # LoadBalancer/external addresses -> entries
        self._dirty: set[ServiceKey] = set()

    # -- input ---------------------------------------------------------------------------

    def set_service(self, svc: Service) -> None:
        key = (svc.namespace, svc.name)
        if self.services.get(key) != svc:
            self.services[key] = svc
            self._dirty.add(key)

    def delete_service(self, namespace: str, name: str) -> None:
        if self.services.pop((namespace, name), None) is not None:
            self._dirty.add((namespace, name))

    def set_slice(self, sl: EndpointSlice) -> None:
        ident = (sl.namespace, sl.name)
        owner = self._slice_owner.get(ident)
        target = (sl.namespace, sl.service_name) if sl.service_name else None
        if owner is not None and owner != target:
            self.delete_slice(sl.namespace, sl.name)
        if target is None:
            return
        slices = self._slices.setdefault(target, {})
        if slices.get(sl.name) != sl:
            slices[sl.name] = sl
            self._slice_owner[ident] = target
            self._index_nodes(ident, target, frozenset(ep.node_name for ep in sl.endpoints
                                                       if ep.node_name))
            self._dirty.add(target)

    def delete_slice(self, namespace: str, name: str) -> None:
        owner = self._slice_owner.pop((namespace, name), None)
        if owner is None:
            return
        slices = self._slices.get(owner, {})
        slices.pop(name, None)
        if not slices:
            self._slices.pop(owner, None)
        self._index_nodes((namespace, name), owner, frozenset())
        self._dirty.add(owner)

    def _index_nodes(self, ident: tuple[str, str], owner: ServiceKey,
                     nodes: frozenset[str]) -> None:
        """The slice `ident` (of Service `owner`) now has endpoints on `nodes`."""
        old = self._slice_nodes.pop(ident, frozenset())
        if nodes:
            self._slice_nodes[ident] = nodes
        for name in old - nodes:
            services = self._node_services[name]
            services[owner] -= 1
            if not services[owner]:
                del services[owner]
                if not services:
                    del self._node_services[name]
        for name in nodes - old:
            services = self._node_services.setdefault(name, {})
            services[owner] = services.get(owner, 0) + 1

    def set_unreachable_nodes(self, names: Iterable[str]) -> None:
        """The nodes found dead (the agents' heartbeat): their endpoints are quarantined
        (module doc) until a later call leaves them out. This node is never unreachable to
        itself (its name is ignored). Only the Services with endpoints on a node that
        changed are recomputed by the next `commit()`."""
        wanted = frozenset(names) - {self.node_name}
        for name in wanted ^ self.unreachable:
            self._dirty.update(self._node_services.get(name, ()))
        self.unreachable = wanted

    def set_nodes(self, nodes: Iterable[Node]) -> None:
        """This node's addresses (NodePort frontends) from the Node objects."""
        ips = node_addresses(nodes, self.node_name)
        if ips != self.node_ips:
            self.node_ips = ips
            self._dirty.update(k for k, s in self.services.items()
                               if s.type in ("NodePort", "LoadBalancer"))

    def replace_all(self, services: Iterable[Service], slices: Iterable[EndpointSlice],
                    nodes: Iterable[Node]) -> None:
        """Make the inputs exactly these objects (only what differs becomes dirty)."""
        self.set_nodes(nodes)
        wanted = {(s.namespace, s.name): s for s in services}
        for key in [k for k in self.services if k not in wanted]:
            self.delete_service(*key)
        for svc in wanted.values():
            self.set_service(svc)
        slice_list = list(slices)
        present = {(sl.namespace, sl.name) for sl in slice_list}
        for ident in [i for i in self._slice_owner if i not in present]:
            self.delete_slice(*ident)
        for sl in slice_list:
            self.set_slice(sl)

    @property
    def dirty(self) -> int:
        return len(self._dirty)

    # -- recomputation -------------------------------------------------------------------

    def _owner(self, fe: FrontendKey) -> _Planned | None:
        claims = self._claims.get(fe)
        if not claims:
            return None
        return claims[min(claims)]

    def commit(self) -> Delta:
        """Recompute the Services touched since the last commit; what changed."""
        dirty = sorted(self._dirty)
        self._dirty = set()
        touched_fe: set[FrontendKey] = set()
        touched_be: set[BackendKey] = set()
        problems: list[str] = []
        for key in dirty:
            old = self._plans.pop(key, None)
            if old is not None:
                for p in old.frontends:
                    claims = self._claims[p.frontend]
                    del claims[key]
                    if not claims:
                        del self._claims[p.frontend]
                    touched_fe.add(p.frontend)
                for c in old.candidates:
                    self._offer(c, -1)
                    touched_be.add(c.key)
                for b in old.draining:
                    self._ref(b, -1)
                self._health.pop(key, None)
            svc = self.services.get(key)
            if svc is None:
                continue
            new = plan_service(svc, self._slices.get(key, {}).values(), self.node_ips,
                               self.node_name, self.settings, self.unreachable)
            self._plans[key] = new
            problems += new.problems
            for p in new.frontends:
                self._claims.setdefault(p.frontend, {})[key] = p
                touched_fe.add(p.frontend)
            for c in new.candidates:
                self._offer(c, +1)
                touched_be.add(c.key)
            for b in new.draining:
                self._ref(b, +1)
            if new.health is not None:
                self._health[key] = new.health

        # Frontend ownership and ids (new ones in sorted order, as a full computation).
        owners: dict[FrontendKey, _Planned | None] = {}
        for fe in sorted(touched_fe, key=_sort_key):
            owner = self._owner(fe)
            claims = self._claims.get(fe, {})
            if len(claims) > 1 and owner is not None:
                self._conflicts[fe] = tuple(
                    f"{ns}/{name}: frontend {fe.address}:{fe.port}/{fe.protocol} is already "
                    f"{owner.svc.namespace}/{owner.svc.name}'s"
                    for ns, name in sorted(claims) if (ns, name) != min(claims))
                problems += self._conflicts[fe]
            else:
                self._conflicts.pop(fe, None)
            self._overflow.pop(fe, None)
            if owner is None:
                sid = self.service_ids.pop(fe, None)
                if sid is not None:
                    self._used_service_ids.discard(sid)
            elif fe not in self.service_ids:
                sid = self._hint_services.get(fe)
                if sid is None or sid in self._used_service_ids:
                    sid = _next_id(self._used_service_ids, MAX_SERVICE_ID, self.last_service)
                    if sid is None:
                        self._overflow[fe] = (f"frontend {fe}: no free service id (at most "
                                              f"{MAX_SERVICE_ID})")
                        problems.append(self._overflow[fe])
                        owner = None
                    else:
                        self.last_service = sid
                if sid is not None:
                    self.service_ids[fe] = sid
                    self._used_service_ids.add(sid)
            owners[fe] = owner

        # Backend reference counts follow each frontend's backends.
        for fe, owner in owners.items():
            old_bks = self._entry_backends.pop(fe, ())
            new_bks = owner.backends if owner is not None else ()
            if new_bks:
                self._entry_backends[fe] = new_bks
            if old_bks != new_bks:
                for b in old_bks:
                    self._ref(b, -1)
                    touched_be.add(b)
                for b in new_bks:
                    self._ref(b, +1)
                    touched_be.add(b)

        changed_backends: list[Backend] = []
        removed_backends: list[int] = []
        for bk in sorted(touched_be, key=_sort_key):
            offered = self._offers.get(bk)
            if self._refs.get(bk, 0) <= 0 or not offered:
                self._overflow.pop(bk, None)
                bid = self.backend_ids.pop(bk, None)
                if bid is not None:
                    del self.backends[bid]
                    removed_backends.append(bid)
                continue
            bid = self.backend_ids.get(bk)
            if bid is None:
                bid = self._hint_backends.get(bk)
                if bid is None or bid in self.backends:
                    bid = _next_id(self.backends, MAX_BACKEND_ID, self.last_backend)
                    if bid is None:
                        self._overflow[bk] = f"backend {bk}: no free backend id"
                        problems.append(self._overflow[bk])
                        continue
                    self.last_backend = bid
                self.backend_ids[bk] = bid
            # Services that disagree (one slice still says terminating): active wins.
            state, node = min(offered, key=lambda o: (_STATE_RANK[o[0]], o[1]))
            backend = Backend(bid, bk.address, bk.port, bk.protocol, state, node,
                              node == self.node_name)
            if self.backends.get(bid) != backend:
                self.backends[bid] = backend
                changed_backends.append(backend)

        changed: list[ServiceEntry] = []
        old_entries: list[ServiceEntry] = []
        for fe, owner in owners.items():
            before = self.entries.get(fe)
            entry = self._entry(fe, owner) if owner is not None else None
            if entry == before:
                continue
            if before is not None:
                old_entries.append(before)
                if before.type in (LOAD_BALANCER, EXTERNAL_IP):
                    self._route(before.frontend.address, -1)
                del self.entries[fe]
            if entry is not None:
                self.entries[fe] = entry
                changed.append(entry)
                if entry.type in (LOAD_BALANCER, EXTERNAL_IP):
                    self._route(entry.frontend.address, +1)
        self._hint_services.clear()
        self._hint_backends.clear()
        return Delta(tuple(changed), tuple(old_entries), tuple(changed_backends),
                     tuple(removed_backends), tuple(problems), len(dirty))

    def _offer(self, c: _Candidate, n: int) -> None:
        offers = self._offers.setdefault(c.key, {})
        what = (c.state, c.node_name)
        count = offers.get(what, 0) + n
        if count > 0:
            offers[what] = count
        else:
            offers.pop(what, None)
            if not offers:
                del self._offers[c.key]

    def _ref(self, bk: BackendKey, n: int) -> None:
        count = self._refs.get(bk, 0) + n
        if count > 0:
            self._refs[bk] = count
        else:
            self._refs.pop(bk, None)

    def _route(self, address: str, n: int) -> None:
        count = self._routed.get(address, 0) + n
        if count > 0:
            self._routed[address] = count
        else:
            self._routed.pop(address, None)

    def _entry(self, fe: FrontendKey, p: _Planned) -> ServiceEntry | None:
        sid = self.service_ids.get(fe)
        if sid is None:
            return None
        bids = tuple(self.backend_ids[b] for b in p.backends if b in self.backend_ids)
        affinity = p.svc.session_affinity_timeout if p.svc.session_affinity == "ClientIP" else 0
        table: tuple[int, ...] = ()
        if p.algorithm == "maglev" and bids:
            mb = tuple(MaglevBackend(b, self.backends[b].address, self.backends[b].port,
                                     self.backends[b].protocol) for b in bids)
            table = _maglev_table(mb, self.settings.table_size, self.settings.hash_seed)
        return ServiceEntry(
            id=sid, frontend=fe, type=p.type, namespace=p.svc.namespace, name=p.svc.name,
            port_name=p.port.name, backend_ids=bids, algorithm=p.algorithm,
            affinity_timeout_s=affinity, ext_local=p.ext_local, int_local=p.int_local,
            two_scopes=p.two_scopes, dsr=p.dsr, maglev=table)

    # -- output --------------------------------------------------------------------------

    def routed_addresses(self) -> frozenset[str]:
        """The LoadBalancer and external IPs served (see `node_routed_addresses`)."""
        return frozenset(self._routed)

    def health_checks(self) -> tuple[HealthCheck, ...]:
        return tuple(sorted(self._health.values(), key=lambda h: h.port))

    def problems(self) -> tuple[str, ...]:
        out: list[str] = []
        for key in sorted(self._plans):
            out += self._plans[key].problems
        for fe in sorted(self._conflicts, key=_sort_key):
            out += self._conflicts[fe]
        out += self._overflow.values()
        return tuple(out)

    def ids(self) -> IdAllocations:
        return IdAllocations(dict(self.service_ids), dict(self.backend_ids),
                             self.last_service, self.last_backend)

    def state(self) -> DesiredState:
        return DesiredState(
            services=tuple(self.entries[fe] for fe in sorted(self.entries, key=_sort_key)),
            backends=dict(self.backends), health_checks=self.health_checks(), ids=self.ids(),
            problems=self.problems())


def desired_state(
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
    nodes: Iterable[Node],
    node_name: str,
    settings: LbSettings,
    ids: IdAllocations | None = None,
    unreachable: Iterable[str] = (),
) -> DesiredState:
    """Every frontend, backend, Maglev table and health check this node should program,
    computed at once (a fresh `LbModel` fed everything), with the endpoints on `unreachable`
    nodes quarantined."""
    model = LbModel(node_name, settings, ids)
    model.set_unreachable_nodes(unreachable)
    model.replace_all(services, slices, nodes)
    model.commit()
    return model.state()
