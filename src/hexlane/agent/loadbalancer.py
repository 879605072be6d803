"""The agent's service load balancer (kube-proxy replacement): Services into the eBPF maps.

A Service's way from the API to the maps goes through this file once (docs/code-map.md):

1. the informers (`hexlane.k8s.informer`) queue the keys of changed Services,
   EndpointSlices and Nodes; the `services` controller calls `LoadBalancer.sync()`;
2. `sync` parses each changed object once (`hexlane.model`) and hands it to the pure model
   (`hexlane.lb.services.LbModel`: `set_service`, `set_slice`, `set_nodes`, `delete_...`),
   with the nodes the agents' heartbeat last found dead (`LoadBalancer.set_unreachable_nodes`,
   kept until then: the model is never touched while a commit runs in its thread), whose
   backends leave every Service for new connections (quarantined: docs/service-lb.md);
3. `ServiceReconciler.commit()` asks the model what the Services touched since the last
   commit change (a `Delta`: only their entries, whatever the number of Services) and hands
   it to `hexlane.datapath.lb.sync.LbSync`, whose reconcilers (`hexlane.datapath.reconcile`)
   write those keys only: new backends, reverse NAT, affinity and Maglev tables before the
   service entries, a service's slots before its slot 0, stale entries last.

The first commit of a process is a resync: it reads the maps and writes only what they lack
(so it converges after any restart); `resync()` does the same later, and repairs whatever
changed behind the agent's back. Backend and service ids are recovered from the pinned maps
at construction, so conntrack entries stay valid. Closing the agent leaves maps and programs
pinned and attached: traffic keeps flowing through the last programmed state.

`ServiceReconciler` alone (tests, benchmarks, `hexlane dev services`)::

    lb = LbDatapath.load(bpf_root, table_size=values.maglev.table_size,
                         hash_seed=values.maglev.hash_seed)
    rec = ServiceReconciler(lb, node_name, values)     # ids recovered from the pinned maps
    rec.attach(lan_ifnames=["eth0"])                  # in the node's netns
    rec.model.set_service(svc) / set_slice / delete_… # as objects change (parsed once)
    report = rec.commit()                              # via asyncio.to_thread: only what changed
    rec.update(services, slices, nodes)                # or: the whole picture at once
    rec.resync()                                       # every reconciler.resyncInterval
    rec.gc_conntrack()                                 # every ~10 s: expire idle flows
    rec.attach_links()                                 # after a CNI ADD (new lxc*, the tunnel)

`LoadBalancer` is the agent's part around it: it loads the datapath, attaches it to the LAN
device, feeds the model from the informers, routes the service addresses to hexlane_host
through the endpoint manager, and runs kube-proxy's health servers (`healthz`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from hexlane.config import Values
from hexlane.datapath.events import l7_port_entries, trace_config
from hexlane.datapath.lb.attach import NoArpTable, TcTable, attachments
from hexlane.datapath.lb.conntrack import gc_conntrack
from hexlane.datapath.lb.encode import recover_ids
from hexlane.datapath.lb.loader import (
    PROGRAM_FROM_HOST,
    PROGRAM_FROM_LOOPBACK,
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_OVERLAY,
    PROGRAM_TO_NETDEV,
    LbDatapath,
)
from hexlane.datapath.lb.sync import LbSync
from hexlane.datapath.reconcile import FlushResult, Reconciler
from hexlane.datapath.sysctl import record_before, sysctl_reconciler
from hexlane.k8s.informer import Informer, KeyQueue
from hexlane.lb.services import (
    SCOPE_EXT,
    SCOPE_INT,
    DesiredState,
    FrontendKey,
    HealthCheck,
    LbModel,
    LbSettings,
    settings_from_values,
)
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.errors import InputError
from hexlane.model.node import Node
from hexlane.model.service import Service
from hexlane.routing.routes import HOST_DEVICE, HOST_PEER_DEVICE, VXLAN_DEVICE

from .endpoints import EndpointManager
from .healthz import HealthServers

log = logging.getLogger(__name__)

#: A sysctl of the node that outlives the agent; its value before is recorded for cleanup.
LO_ACCEPT_LOCAL = "net.ipv4.conf.lo.accept_local"
#: The informers whose changes the load balancer follows.
KINDS = ("services", "endpointslices", "nodes")


@dataclass(frozen=True)
class ApplyReport:
    services: int  # frontend scopes programmed
    backends: int
    updated: int
    deleted: int
    recomputed: int  # Services recomputed by this commit
    seconds: float
    problems: tuple[str, ...] = ()
    failed: int = 0  # entries whose write failed (retried with backoff)


class ServiceReconciler:
    """The load balancer of one node: model, map reconcilers, attachments (module doc)."""

    def __init__(self, datapath: LbDatapath, node_name: str, values: Any = None, *,
                 settings: LbSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if settings is None:
            if values is None:
                raise ValueError("ServiceReconciler needs values or settings")
            settings = settings_from_values(values)
        self.datapath = datapath
        self.node_name = node_name
        self.settings = settings
        self.clock = clock
        m = datapath.maps
        self.model = LbModel(node_name, settings, recover_ids(m.services, m.backends))
        self.sync = LbSync(datapath)
        self.tc = TcTable(datapath)
        self.attachments: Reconciler[Any, int] = Reconciler(self.tc)
        self.sysctls = sysctl_reconciler()
        noarp = NoArpTable()
        self.noarp: Reconciler[str, bool] = Reconciler(noarp)
        noarp.names = lambda: list(self.noarp.desired)
        self.lan: tuple[str, ...] = ()
        #: where `attach` records the sysctls' values before (for `hexlane cleanup`)
        self.state_dir: Path | None = None
        #: flow events for Hubble (hexlane.datapath.events): on, L7 records on, this node's
        #: pod CIDR and the cluster's
        self.events = False
        self.l7 = False
        self.pod_cidr: IPv4Network | None = None
        self.cluster_cidr: IPv4Network | None = None
        self.last_updated: float | None = None  # wall clock of the last successful commit
        self.last_error: str | None = None
        self._resynced = False

    @property
    def reconcilers(self) -> list[Reconciler[Any, Any]]:
        return [*self.sync.reconcilers, self.attachments, self.sysctls, self.noarp]

    # --- desired state -> maps ---------------------------------------------------------

    def update(self, services: Iterable[Service], slices: Iterable[EndpointSlice],
               nodes: Iterable[Node]) -> ApplyReport:
        """Make the model exactly these objects and commit."""
        self.model.replace_all(services, slices, nodes)
        return self.commit()

    def commit(self) -> ApplyReport:
        """Recompute what changed since the last commit and write it."""
        start = time.monotonic()
        try:
            delta = self.model.commit()
            self.sync.stage(delta)
            self.sync.set_node_ip(self.model.node_ips[0] if self.model.node_ips else None)
            if self._resynced:
                result = self.sync.flush()
            else:
                result = self.sync.resync()
                self._resynced = True
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        for problem in delta.problems:
            log.warning("%s", problem)
        self._record(result)
        return ApplyReport(services=len(self.model.entries), backends=len(self.model.backends),
                           updated=result.updated, deleted=result.deleted,
                           recomputed=delta.services_recomputed,
                           seconds=time.monotonic() - start, problems=delta.problems,
                           failed=len(result.failed))

    def _record(self, result: FlushResult) -> None:
        if result.failed:
            some = "; ".join(f"{v}" for v in list(result.failed.values())[:3])
            self.last_error = f"{len(result.failed)} entries not written (retried): {some}"
            log.warning("load balancer: %s", self.last_error)
        elif self.pending_failures == 0:
            self.last_error = None
        if self.last_error is None:
            self.last_updated = self.clock()

    @property
    def pending_failures(self) -> int:
        return sum(len(r.last_errors) for r in self.sync.reconcilers)

    def resync(self) -> FlushResult:
        """Read every LB map, tc slot, sysctl and link flag back; repair what differs."""
        result = self.sync.resync()
        self._resynced = True
        self._record(result)
        self._set_attachments()  # links that came or went since (a re-created device)
        for rec in (self.sync.trace_config, self.attachments, self.sysctls, self.noarp):
            result.add(rec.resync())
        return result

    @property
    def desired(self) -> DesiredState:
        """The whole desired state (built on demand: O(number of frontends))."""
        return self.model.state()

    def health_checks(self) -> tuple[HealthCheck, ...]:
        return self.model.health_checks()

    def gc_conntrack(self) -> int:
        """Expire idle flows (Cilium's timeouts); the agent calls it every few seconds."""
        m = self.datapath.maps
        return gc_conntrack(m.ct, m.backends, m.revnat, time.monotonic_ns())

    @property
    def healthy(self) -> bool:
        return self.last_updated is not None and self.last_error is None

    # --- attach points (in the node's network namespace) -------------------------------

    def attach(self, lan_ifnames: Sequence[str]) -> list[str]:
        """Attach to the LAN interfaces, lo, hexlane_host, every pod veth and the tunnel
        device (reading back what sits there first: a previous agent's programs are
        replaced); returns the slots written. What is routed to hexlane_host (the service
        CIDR, LoadBalancer and external IPs) is the endpoint manager's."""
        self.lan = tuple(lan_ifnames)
        # The node's own connections to its own addresses (its NodePorts) take lo. Their
        # replies come back in through lo with one of the node's addresses as source (as
        # Cilium sets it on cilium_host, accept_local lets such a packet in; traffic looped
        # back by the kernel itself never meets this check).
        sysctls = {LO_ACCEPT_LOCAL: "1"}
        try:
            socket.if_nametoindex(HOST_DEVICE)
        except OSError:
            log.warning("no %s device: the node's own connections to ClusterIPs are not "
                        "load-balanced", HOST_DEVICE)
        else:
            # Nothing answers ARP for service addresses: without ARP on hexlane_host the
            # node's packets to them reach the tc egress program at once (only that program
            # sends anything out of it; pods reach the router IP through their own veths
            # with permanent neighbour entries).
            self.noarp.put(HOST_DEVICE, True)
            # A translated packet whose next hop is not resolved yet goes on out of
            # hexlane_host to the kernel's forwarding, in through its peer with the router IP
            # (one of the node's own addresses) as source.
            sysctls[f"net.ipv4.conf.{HOST_PEER_DEVICE}.accept_local"] = "1"
        if self.state_dir is not None:
            # lo's outlives hexlane (hexlane_net's goes with the link): `hexlane cleanup`
            # puts back what the node had.
            record_before(self.state_dir, [LO_ACCEPT_LOCAL])
        self.sysctls.set_all(sysctls)
        for rec in (self.sysctls, self.noarp):
            result = rec.resync()
            if result.failed:
                raise RuntimeError(f"{rec.name}: {'; '.join(map(str, result.failed.values()))}")
        self._set_attachments()
        self.sync.l7_ports.flush()
        self.sync.trace_config.flush()
        result = self.attachments.resync()
        return _slot_names(self.attachments.desired, result)

    def _set_attachments(self) -> None:
        """The tc slots for the links there are, and the flow events' config, which names
        the tunnel device and hexlane_host by index (either may come or go)."""
        links = {name: index for index, name in socket.if_nameindex()}
        wanted = attachments(self.lan, links)
        self.tc.wanted = set(wanted)
        self.attachments.set_all({slot: self.tc.program_id(program)
                                  for slot, program in wanted.items()})
        self.sync.set_trace_config(trace_config(
            on=self.events, pod_cidr=self.pod_cidr,
            overlay_ifindex=links.get(VXLAN_DEVICE, 0), host_ifindex=links.get(HOST_DEVICE, 0),
            l7=self.l7, cluster_cidr=self.cluster_cidr))

    def set_events(self, on: bool, pod_cidr: IPv4Network | None, *,
                   cluster_cidr: IPv4Network | None = None, l7: bool = False,
                   dns_ports: Sequence[int] = (), http_ports: Sequence[int] = ()) -> None:
        """Switch the programs' flow events on or off, and their L7 records on the DNS and
        HTTP ports (written by the next attach_links)."""
        self.events = on
        self.l7 = l7
        self.pod_cidr = pod_cidr
        self.cluster_cidr = cluster_cidr
        self.sync.set_l7_ports(l7_port_entries(dns_ports, http_ports) if on and l7 else {})

    def attach_links(self) -> int:
        """Attach to links that appeared (pod veths, the tunnel device), forget gone ones;
        the number of slots written."""
        self._set_attachments()
        self.sync.trace_config.flush()
        return self.attachments.flush().updated


def cluster_pod_cidr(values: Values) -> IPv4Network | None:
    """The cluster's pod addresses, as one CIDR (L7 records ask whether a client is a pod):
    the cluster pool's first, else the native routing CIDR (kubernetes IPAM), else none."""
    pools = values.ipam.cluster_pool_ipv4_pod_cidrs
    if values.ipam.mode == "cluster-pool" and pools:
        return pools[0]
    return values.ipv4_native_routing_cidr


def _slot_names(desired: dict[Any, int], result: FlushResult) -> list[str]:
    return [f"{device}:{direction}" for device, direction, priority in sorted(desired)
            if (device, direction, priority) not in result.failed]


class LoadBalancer:
    """This node's service load balancer, fed from the informers (see the module docstring).

    The `services` controller calls `sync()`, the `conntrack-gc` controller `gc_conntrack()`,
    the `resync` controller `resync()`; `load()` once the node's LAN device is known."""

    def __init__(self, node: str, values: Values, bpf_root: Path,
                 informers: Mapping[str, Informer], *, service_cidr: str | None = None,
                 state_dir: Path | None = None) -> None:
        self.node = node
        #: where the sysctls' values before the first start are recorded (for cleanup)
        self.state_dir = state_dir
        self.values = values
        self.bpf_root = bpf_root
        #: routed to hexlane_host with the LoadBalancer and external IPs (None: the node's
        #: own connections to ClusterIPs are not load-balanced)
        self.service_cidr = service_cidr
        self.informers = {name: informers[name] for name in KINDS}
        # The keys of changed objects: each is parsed once per change and handed to the
        # model, which recomputes only those Services.
        self.queues: dict[str, KeyQueue] = {name: inf.key_queue()
                                            for name, inf in self.informers.items()}
        self.datapath: LbDatapath | None = None
        self.reconciler: ServiceReconciler | None = None
        self.health: HealthServers | None = None
        self.device = ""
        self._endpoints: EndpointManager | None = None
        #: the nodes found dead, handed to the model by the next `sync()`
        self.unreachable: frozenset[str] = frozenset()

    async def load(self, device: str, endpoints: EndpointManager) -> None:
        """Compile and load the programs and maps, attach them (LAN `device`, lo,
        hexlane_host, pod veths, the tunnel), route the service CIDR, start the health
        servers."""
        values = self.values
        self.device = device
        self._endpoints = endpoints
        # Compiling and loading takes a while: off the loop (same namespace, other thread).
        self.datapath = await asyncio.to_thread(LbDatapath.load, self.bpf_root,
                                                table_size=values.maglev.table_size,
                                                hash_seed=values.maglev.hash_seed)
        self.reconciler = ServiceReconciler(self.datapath, self.node, values)
        self.reconciler.state_dir = self.state_dir
        pod_cidr = endpoints.pod_cidr
        l7 = values.hubble.l7
        self.reconciler.set_events(values.hubble.enabled,
                                   pod_cidr if isinstance(pod_cidr, IPv4Network) else None,
                                   cluster_cidr=cluster_pod_cidr(values), l7=l7.enabled,
                                   dns_ports=l7.dns_ports, http_ports=l7.http_ports)
        attached = await asyncio.to_thread(self.reconciler.attach, [device])
        log.info("service load balancer attached: %s", ", ".join(attached))
        await self._route(frozenset())
        self.health = HealthServers(self.reconciler,
                                    values.kube_proxy_replacement_healthz_bind_addr)
        await self.health.start()

    def _loaded(self) -> ServiceReconciler:
        if self.reconciler is None:
            raise RuntimeError("the service load balancer is not loaded")
        return self.reconciler

    async def sync(self) -> None:
        """Hand what changed to the model, write what that changes in the maps, attach to
        new links, route the served addresses, open or close healthCheckNodePorts."""
        rec = self._loaded()
        if not all(inf.synced.is_set() for inf in self.informers.values()):
            # Applying a partial picture would delete live services from the maps; the
            # informers' first lists trigger this controller again.
            return
        self._feed(rec.model)
        report = await asyncio.to_thread(rec.commit)
        if report.recomputed or report.updated or report.deleted:
            log.debug("services: %d recomputed, %d entries written, %d deleted in %.3fs",
                      report.recomputed, report.updated, report.deleted, report.seconds)
        await asyncio.to_thread(rec.attach_links)
        await self._route(rec.model.routed_addresses())
        if self.health is not None:
            await self.health.sync()

    def set_unreachable_nodes(self, names: Iterable[str]) -> None:
        """The nodes the heartbeat finds dead now (the whole set each time; this node's name
        is ignored). Only kept: the next `sync()` (the `services` controller, which the caller
        triggers) hands it to the model, which recomputes the Services with endpoints on the
        nodes that changed."""
        self.unreachable = frozenset(names)

    def _feed(self, model: LbModel) -> None:
        """Hand the objects changed since the last run to the model (parsed once each)."""
        model.set_unreachable_nodes(self.unreachable)
        for name, queue in self.queues.items():
            cache = self.informers[name].cache
            while len(queue):
                key = queue.get_nowait()
                raw = cache.get(key)
                namespace, _, obj_name = key.rpartition("/")
                if name == "nodes":
                    if obj_name == self.node:
                        model.set_nodes(_parsed(Node, [raw] if raw else []))
                    continue
                parsed = _parsed(Service if name == "services" else EndpointSlice,
                                 [raw] if raw else [])
                if name == "services":
                    if parsed:
                        model.set_service(parsed[0])
                    else:  # deleted, or no longer parses: not served
                        model.delete_service(namespace, obj_name)
                elif parsed:
                    model.set_slice(parsed[0])
                else:
                    model.delete_slice(namespace, obj_name)

    async def _route(self, addresses: frozenset[str]) -> None:
        """Route the service CIDR and these LoadBalancer/external IPs to hexlane_host, so
        the node's own connections to them meet the load balancer."""
        if self._endpoints is None:
            return
        routes = [IPv4Network(f"{a}/32") for a in addresses]
        if self.service_cidr:
            routes.append(IPv4Network(self.service_cidr, strict=False))
        report = await self._endpoints.set_service_routes(routes)
        if report is not None and report.failed:
            raise RuntimeError("; ".join(report.failed))

    async def gc_conntrack(self) -> None:
        if self.reconciler is None:
            return  # not loaded yet: nothing to expire
        expired = await asyncio.to_thread(self.reconciler.gc_conntrack)
        if expired:
            log.debug("conntrack: %d idle flow entries expired", expired)

    async def resync(self) -> None:
        """Read back every map, tc slot, sysctl and link flag; repair what differs."""
        if self.reconciler is not None:
            await asyncio.to_thread(self.reconciler.resync)

    @property
    def reconcilers(self) -> list[Reconciler[Any, Any]]:
        return self.reconciler.reconcilers if self.reconciler is not None else []

    def attach_links(self) -> None:
        """A pod veth appeared: put the load balancer on it before the pod's first packet."""
        if self.reconciler is None:
            return
        try:
            self.reconciler.attach_links()
        except OSError as err:  # retried by the services controller's next run
            log.warning("attaching the load balancer to a new pod: %s", err)

    def service_at(self, address: str, port: int, protocol: str) -> tuple[str, str] | None:
        """(namespace, name) of the Service with this frontend (for flows), if served."""
        if self.reconciler is None:
            return None
        entries = self.reconciler.model.entries
        for scope in (SCOPE_EXT, SCOPE_INT):
            entry = entries.get(FrontendKey(address, port, protocol, scope))
            if entry is not None:
                return entry.namespace, entry.name
        return None

    def expected_programs(self, tunnel: bool) -> list[dict[str, str]]:
        """The programs `hexlane status` expects on the node's devices (pod veths aside);
        `tunnel`: the VXLAN device exists (tunnel mode with a peer to reach)."""
        if self.reconciler is None:
            return []
        expected = [{"device": self.device, "direction": "ingress", "name": PROGRAM_FROM_NETDEV},
                    {"device": self.device, "direction": "egress", "name": PROGRAM_TO_NETDEV},
                    {"device": HOST_DEVICE, "direction": "egress", "name": PROGRAM_FROM_HOST},
                    {"device": "lo", "direction": "egress", "name": PROGRAM_FROM_LOOPBACK}]
        if tunnel:
            expected.append({"device": VXLAN_DEVICE, "direction": "ingress",
                             "name": PROGRAM_FROM_OVERLAY})
        return expected

    def status(self) -> dict[str, Any]:
        """The `kubeProxyReplacement` section of the status document, once loaded."""
        rec = self._loaded()
        values = self.values
        return {
            "services": len(rec.model.entries),
            "backends": len(rec.model.backends),
            "algorithm": values.load_balancer.algorithm,
            "mode": values.load_balancer.mode,
            "lastUpdated": rec.last_updated,
            "lastError": rec.last_error or "",
            "healthzBindAddr": ":".join(map(str, values.kube_proxy_replacement_healthz_bind_addr
                                             or ())),
            "healthCheckNodePorts": self.health.ports if self.health else [],
        }

    async def close(self) -> None:
        """Stop the health servers; maps and programs stay pinned and attached."""
        if self.health is not None:
            await self.health.stop()
        if self.datapath is not None:
            self.datapath.close()


def _parsed(model: Any, objects: Sequence[Mapping[str, Any]]) -> list[Any]:
    """Typed views of cached objects; one that does not parse is logged and left out."""
    out = []
    for obj in objects:
        try:
            out.append(model.parse(obj))
        except (InputError, ValueError) as err:
            meta = obj.get("metadata") or {}
            log.warning("skipping %s %s/%s: %s", obj.get("kind"), meta.get("namespace", ""),
                        meta.get("name", ""), err)
    return out
