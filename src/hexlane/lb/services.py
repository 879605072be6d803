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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TypeVar

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
    state: str  # STATE_ACTIVE | STATE_TERMINATING
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


def _slice_backends(port: ServicePort, slices: Sequence[EndpointSlice]
                    ) -> tuple[list[_Candidate], list[_Candidate]]:
    """The Service port's backends from its slices: (chosen, kept). Chosen are the ready
    ones, else the serving terminating ones; kept are those that stay in the backend map
    though not chosen (serving terminating beside ready ones), so established connections
    to them go on until they end."""
    ready: dict[BackendKey, _Candidate] = {}
    terminating: dict[BackendKey, _Candidate] = {}
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
                    if c.is_ready and not c.is_terminating:
                        ready.setdefault(key, _Candidate(key, STATE_ACTIVE, ep.node_name))
                    elif c.is_serving:
                        terminating.setdefault(
                            key, _Candidate(key, STATE_TERMINATING, ep.node_name))
    chosen = ready if ready else terminating
    kept = terminating if ready else {}
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


_K = TypeVar("_K", FrontendKey, BackendKey)


def _sort_key(k: FrontendKey | BackendKey) -> tuple[str | int, ...]:
    # plain tuples compare several times faster than order=True dataclasses
    return tuple(getattr(k, f) for f in k.__slots__)


def _allocate(wanted: Iterable[_K], current: Mapping[_K, int], limit: int,
              last: int) -> tuple[dict[_K, int], list[_K], int]:
    """Keep the ids of objects still wanted; give new ones, in the objects' sorted order
    (deterministic), the free ids after `last`, wrapping from `limit` to 1. Returns the
    allocation, what did not fit, and the last id given."""
    keys = sorted(set(wanted), key=_sort_key)
    result = {k: current[k] for k in keys if k in current}
    used = set(result.values())
    overflow: list[_K] = []
    candidate = last
    for k in keys:
        if k in result:
            continue
        if len(used) >= limit:
            overflow.append(k)
            continue
        candidate = candidate % limit + 1
        while candidate in used:
            candidate = candidate % limit + 1
        result[k] = candidate
        used.add(candidate)
        last = candidate
    return result, overflow, last


@lru_cache(maxsize=4096)
def _maglev_table(backends: tuple[MaglevBackend, ...], table_size: int,
                  hash_seed: str) -> tuple[int, ...]:
    # Many frontends (ClusterIP, NodePort per node IP, LB IP) share one backend set.
    return tuple(build_table(backends, table_size, hash_seed))


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


def _select(cands: Sequence[_Candidate], local_only: bool,
            node_name: str) -> tuple[BackendKey, ...]:
    return tuple(c.key for c in cands if not local_only or c.node_name == node_name)


def desired_state(
    services: Iterable[Service],
    slices: Iterable[EndpointSlice],
    nodes: Iterable[Node],
    node_name: str,
    settings: LbSettings,
    ids: IdAllocations | None = None,
) -> DesiredState:
    """Every frontend, backend, Maglev table and health check this node should program."""
    ids = ids.copy() if ids is not None else IdAllocations()
    if settings.algorithm not in ALGORITHMS:
        raise ValueError(f"loadBalancer.algorithm {settings.algorithm!r}: expected one of "
                         f"{', '.join(ALGORITHMS)}")
    if settings.mode not in MODES:
        raise ValueError(f"loadBalancer.mode {settings.mode!r}: expected one of "
                         f"{', '.join(MODES)}")
    node_ips = node_addresses(nodes, node_name)
    by_service: dict[tuple[str, str], list[EndpointSlice]] = {}
    for sl in slices:
        if sl.service_name:
            by_service.setdefault((sl.namespace, sl.service_name), []).append(sl)

    planned: dict[FrontendKey, _Planned] = {}
    candidates: dict[BackendKey, _Candidate] = {}
    draining: set[BackendKey] = set()
    health: list[HealthCheck] = []
    problems: list[str] = []
    for svc in sorted(services, key=lambda s: (s.namespace, s.name)):
        if svc.type == "ExternalName" or svc.headless:
            continue
        svc_slices = by_service.get((svc.namespace, svc.name), [])
        etp_local = svc.external_traffic_policy == "Local"
        itp_local = svc.internal_traffic_policy == "Local"
        local_count = 0
        algorithm, mode, found = service_options(svc, settings)
        problems += found
        for port in svc.ports:
            if port.protocol not in ("TCP", "UDP"):
                continue  # SCTP: not in the datapath
            cands, kept = _slice_backends(port, svc_slices)
            for c in (*cands, *kept):
                candidates.setdefault(c.key, c)
            draining.update(c.key for c in kept)
            local_count = max(local_count, sum(1 for c in cands if c.node_name == node_name))
            dsr = mode == "dsr" or (mode == "hybrid" and port.protocol == "TCP")
            for ftype, address, fport in _frontends(svc, port, node_ips, settings):
                external = ftype != CLUSTER_IP
                ext = FrontendKey(address, fport, port.protocol, SCOPE_EXT)
                if ext in planned:
                    other = planned[ext].svc
                    problems.append(f"{svc.namespace}/{svc.name}: frontend {address}:{fport}/"
                                    f"{port.protocol} is already {other.namespace}/{other.name}'s")
                    continue
                if not external:
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
        if etp_local and svc.health_check_node_port and svc.type in ("LoadBalancer", "NodePort"):
            health.append(HealthCheck(svc.health_check_node_port, svc.namespace, svc.name,
                                      local_count))

    svc_ids, svc_overflow, last_service = _allocate(planned, ids.services, MAX_SERVICE_ID,
                                                    ids.last_service)
    for fe in svc_overflow:
        problems.append(f"frontend {fe}: no free service id (at most {MAX_SERVICE_ID})")
        planned.pop(fe)
    used_backends = {b for p in planned.values() for b in p.backends} | draining
    be_ids, be_overflow, last_backend = _allocate(used_backends, ids.backends, MAX_BACKEND_ID,
                                                  ids.last_backend)
    for be in be_overflow:
        problems.append(f"backend {be}: no free backend id")

    backends: dict[int, Backend] = {}
    for key, bid in be_ids.items():
        c = candidates[key]
        backends[bid] = Backend(bid, c.key.address, c.key.port, c.key.protocol, c.state,
                                c.node_name, c.node_name == node_name)

    entries: list[ServiceEntry] = []
    for fe in sorted(planned, key=_sort_key):
        p = planned[fe]
        bids = tuple(be_ids[b] for b in p.backends if b in be_ids)
        affinity = p.svc.session_affinity_timeout if p.svc.session_affinity == "ClientIP" else 0
        table: tuple[int, ...] = ()
        if p.algorithm == "maglev" and bids:
            mb = tuple(MaglevBackend(backends[b].id, backends[b].address, backends[b].port,
                                     backends[b].protocol) for b in bids)
            table = _maglev_table(mb, settings.table_size, settings.hash_seed)
        entries.append(ServiceEntry(
            id=svc_ids[fe], frontend=fe, type=p.type, namespace=p.svc.namespace,
            name=p.svc.name, port_name=p.port.name, backend_ids=bids,
            algorithm=p.algorithm, affinity_timeout_s=affinity,
            ext_local=p.ext_local, int_local=p.int_local, two_scopes=p.two_scopes,
            dsr=p.dsr, maglev=table,
        ))
    new_ids = IdAllocations(services=svc_ids, backends=be_ids, last_service=last_service,
                            last_backend=last_backend)
    return DesiredState(services=tuple(entries), backends=backends,
                        health_checks=tuple(sorted(health, key=lambda h: h.port)),
                        ids=new_ids, problems=tuple(problems))
