"""The agent daemon: a short list of parts, wired once (Cilium's `daemon/cmd/cells.go`).

    Infrastructure
      client        one rate-limited API client (`k8sClientRateLimit.qps/burst`)   k8s.client
      informers     Nodes, CiliumNodes (cluster-pool), Services, EndpointSlices,
                    this node's Pods, Namespaces, CiliumIdentities                k8s.informer
      metrics       `/metrics` on prometheus.port (9962) when prometheus.enabled  metrics.py
    Control plane
      nodes         this node's IP and pod CIDR (waited for once, remembered in
                    node.json), the other nodes                                   nodemanager.py
      loadbalancer  (kubeProxyReplacement) Services, EndpointSlices, this Node
                    -> the eBPF maps, kube-proxy's health servers                 loadbalancer.py
      l2            (l2announcements.enabled) L2 policies, Services, this Node
                    -> one Lease per Service, the ARP responder, GARPs            l2.py
      status        the status document, its health                              status.py
    Datapath
      endpoints     host device, veths, pod IPs, routes, eBPF masquerade on the
                    device holding the node IP; queued CNI DELs drained at start  endpoints.py
      cni           the CNI config and plugin in their directories               cniconf.py
      api           `$STATE_DIR/agent.sock` and `@hexlane-agent`: CNI calls,
                    `/v1/status` (before the endpoints start: status alone)       api.py

    Controllers (`hexlane.k8s.controller`: triggered by their informers, and every interval)
      routes        nodes, ciliumnodes -> nodes.sync: routes / VXLAN to the other nodes
      identities    pods, namespaces, ciliumidentities -> each local pod's security
                    identity, a CiliumIdentity created when none has its labels    identities.py
      heartbeat     GET /version, so `status` knows the API server answers
      cni-config    cni.install: the CNI files, put back when changed
      resync        every kernel object read back, what differs repaired
      bpf-map-pressure  (metrics served) the maps the kernel writes counted
                    (conntrack, affinity, Hubble's trace, NAT) every 10 s        metrics.py
      services      services, endpointslices, nodes -> loadbalancer.sync
      conntrack-gc  loadbalancer.gc_conntrack: idle flows expire (Cilium's timeouts)
      l2            ciliuml2announcementpolicies, services, nodes -> l2.sync
      l2-tick       l2.tick every 100 ms: the responder's liveness stamp, GARPs due
      l2-leases     l2.collect_leases every minute: announcement Leases nobody holds

What a restart relies on: the endpoint manager re-reads endpoints and IP allocations from the
state dir; pinned maps, attached tc programs, veths and routes stay in the kernel when the
agent stops (SIGTERM) or dies (SIGKILL), so traffic keeps flowing; the node's IP and pod CIDR
and the peers it routed are remembered, so a restarted agent serves the CNI plugin at once,
before the API server answers, and its first reconcile keeps every route in place. Each
controller converges from the cluster's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path
from typing import Any

from aiohttp import web

from hexlane import __version__
from hexlane.config import Values
from hexlane.datapath import libbpf
from hexlane.datapath.bpffs import ensure_bpffs, on_bpffs
from hexlane.datapath.l2 import arp_replies
from hexlane.hubble.server import ABSTRACT_NAME as HUBBLE_ABSTRACT_NAME
from hexlane.ipam.podcidr import router_ip
from hexlane.k8s.client import KubeClient, make_client
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import (
    CiliumClusterwideNetworkPolicy,
    CiliumIdentity,
    CiliumL2AnnouncementPolicy,
    CiliumNetworkPolicy,
    CiliumNode,
    EndpointSlice,
    Namespace,
    NetworkPolicy,
    Node,
    Pod,
    Service,
)
from hexlane.k8s.runtime import stop_on_signals
from hexlane.routing.routes import NodeRouting, RoutingSettings

from . import api, cniconf, l2
from .endpoints import EndpointManager, MasqueradeSettings
from .hubble import HubblePart
from .identities import KINDS as identities_kinds
from .identities import IdentityAllocator
from .loadbalancer import LoadBalancer
from .metrics import MAP_COUNT_S, AgentMetrics, KernelMapCounts
from .nodemanager import NodeManager
from .policy import KINDS as policy_kinds
from .policy import PolicyEnforcer, enforcement_mode
from .status import AgentStatus, ApiContact

log = logging.getLogger(__name__)

DEFAULT_SYNC_INTERVAL = 10.0
CONNTRACK_GC_S = 10.0  # how often idle conntrack entries are expired
BPFFS = Path("/sys/fs/bpf")


@dataclass
class AgentConfig:
    node: str
    values: Values
    state_dir: Path
    bpf_root: Path
    cni_conf_dir: Path = cniconf.DEFAULT_CONF_DIR
    cni_bin_dir: Path = cniconf.DEFAULT_BIN_DIR
    kubeconfig: str | None = None
    metrics_addr: tuple[str, int] | None = None
    #: A real node runs the agent in the machine's own namespace; tests and the lab never do,
    #: and without this the endpoint manager refuses anything but a named namespace.
    host_namespace: bool = False
    sync_interval: float = DEFAULT_SYNC_INTERVAL
    abstract_name: str | None = api.ABSTRACT_NAME
    #: The cluster's ClusterIP range, routed to hexlane_host so the node's own connections
    #: to ClusterIPs meet the load balancer (None: they are not load-balanced).
    service_cidr: str | None = None
    #: The Hubble CA every node's certificate is signed by (hubble.tls; None: made in
    #: $STATE_DIR/hubble-tls/ca unless the values give tls.ca.*)
    hubble_ca_dir: Path | None = None
    #: What the CNI wrapper execs (None: this installation's hexlane-cni; a real node's
    #: runtime needs one on the host: `hexlane cni install-plugin`).
    cni_plugin: Path | None = None


def _informers(client: KubeClient, node: str, values: Values) -> dict[str, Informer]:
    informers = {
        "nodes": Informer(client, Node),
        "services": Informer(client, Service),
        "endpointslices": Informer(client, EndpointSlice),
        "pods": Informer(client, Pod, field_selector=f"spec.nodeName={node}"),
        # security identities of this node's pods (identities.py)
        "namespaces": Informer(client, Namespace),
        "ciliumidentities": Informer(client, CiliumIdentity),
    }
    if values.ipam.mode == "cluster-pool":
        informers["ciliumnodes"] = Informer(client, CiliumNode)
    if values.l2announcements.enabled:
        informers["ciliuml2announcementpolicies"] = Informer(client, CiliumL2AnnouncementPolicy)
    if values.kube_proxy_replacement and (values.hubble.enabled or _enforcing(values)):
        # Flows name the pods of every node, not only this one's; the ipcache holds them all.
        informers["all-pods"] = Informer(client, Pod)
    if values.kube_proxy_replacement and _enforcing(values):
        informers["networkpolicies"] = Informer(client, NetworkPolicy)
        informers["ciliumnetworkpolicies"] = Informer(client, CiliumNetworkPolicy)
        informers["ciliumclusterwidenetworkpolicies"] = Informer(
            client, CiliumClusterwideNetworkPolicy)
    return informers


def _enforcing(values: Values) -> bool:
    return enforcement_mode(values) != "never"


class Agent:
    """The wired daemon: `await run(stop)` until `stop` is set."""

    def __init__(self, config: AgentConfig, client: KubeClient | None = None) -> None:
        self.config = config
        values = config.values
        interval = config.sync_interval
        # Infrastructure
        self.metrics = AgentMetrics()
        self.client = client or make_client(values, config.kubeconfig, component="agent",
                                            registry=self.metrics.registry)
        self.informers = _informers(self.client, config.node, values)
        self.contact = ApiContact(self.client)
        self.identities = IdentityAllocator(self.client, self.informers,
                                            cluster=values.cluster.name)
        # Control plane
        self.nodes = NodeManager(config.node, values.ipam.mode, config.state_dir,
                                 self.informers)
        self.lb = LoadBalancer(config.node, values, config.bpf_root, self.informers,
                               service_cidr=config.service_cidr,
                               state_dir=config.state_dir) \
            if values.kube_proxy_replacement else None
        # (the values refuse l2announcements without kubeProxyReplacement: the responder is
        # in the load balancer's program)
        self.l2 = l2.L2Announcer(self.client, config.node, values, self.informers,
                                 state_dir=config.state_dir,
                                 on_unreachable=self._unreachable) \
            if values.l2announcements.enabled and self.lb is not None else None
        # Flows: the load balancer's programs report them (so with kubeProxyReplacement only)
        self.hubble = HubblePart(config.node, values, self.informers, self.lb,
                                 config.state_dir, ca_dir=config.hubble_ca_dir,
                                 abstract_name=None if config.abstract_name is None
                                 else HUBBLE_ABSTRACT_NAME) \
            if values.hubble.enabled and self.lb is not None else None
        # Network policy: enforced in the load balancer's pod hooks; flows name the pods'
        # identities it resolves
        self.policy = PolicyEnforcer(
            config.node, self.informers, self.identities, mode=enforcement_mode(values),
            cluster=values.cluster.name, host_ips=self._host_ips,
            remote_host_ips=self._remote_host_ips,
            on_identities=self.hubble.observer.endpoints.set_identities
            if self.hubble is not None else None,
            on_policies=self.hubble.observer.endpoints.set_policies
            if self.hubble is not None else None,
            audit=bool(values.get("policyAuditMode", False))) \
            if self.lb is not None and _enforcing(values) else None
        # Datapath (the endpoint manager and the API once this node is known)
        self.endpoints: EndpointManager | None = None
        self.cni = cniconf.CniFiles(config.cni_conf_dir, config.cni_bin_dir, config.state_dir,
                                    plugin=config.cni_plugin)
        self.api: api.ApiServer | None = None
        self.kernel_maps = KernelMapCounts(self._kernel_written_maps)
        # Controllers, and the informers that trigger them
        self.controllers = [
            Controller("routes", self._sync_routes, interval=interval),
            Controller("heartbeat", self.contact.heartbeat, interval=interval),
            Controller("cni-config", self._install_cni, interval=interval),
            # Every kernel object the agent owns is read back and repaired this often.
            Controller("resync", self._resync, interval=values.resync_interval),
            Controller("identities", self.identities.sync, interval=interval),
        ]
        if config.metrics_addr is not None:
            self.controllers.append(Controller("bpf-map-pressure", self.kernel_maps.refresh,
                                               interval=MAP_COUNT_S))
        self._follow(("nodes", "ciliumnodes"), self.controller("routes"))
        self._follow(identities_kinds, self.controller("identities"))
        if self.lb is not None:
            self.controllers += [
                Controller("services", self.lb.sync, interval=interval),
                Controller("conntrack-gc", self.lb.gc_conntrack, interval=CONNTRACK_GC_S),
            ]
            self._follow(("services", "endpointslices", "nodes"), self.controller("services"))
        if self.policy is not None:
            self.controllers.append(Controller("policy", self.policy.sync, interval=interval))
            self._follow(policy_kinds, self.controller("policy"))
        if self.l2 is not None:
            self.controllers += [
                Controller("l2", self.l2.sync, interval=interval),
                Controller("l2-tick", self.l2.tick, interval=l2.TICK_S),
                Controller("l2-leases", self.l2.collect_leases, interval=l2.LEASE_GC_S),
            ]
            self._follow(l2.KINDS, self.controller("l2"))
        self.status = AgentStatus(
            config.node, values, sync_interval=interval, cni=self.cni, api=self.contact,
            informers=self.informers, nodes=self.nodes, endpoints=lambda: self.endpoints,
            lb=self.lb, l2=self.l2, controllers=self.controllers,
            reconcilers=self.reconcilers, hubble=self.hubble, policy=self.policy)
        self.metrics.watch(endpoints=lambda: self.endpoints, controllers=self.controllers,
                           last_sync=lambda: self.nodes.last_sync,
                           reconcilers=self.reconcilers, counters=self._counters_map,
                           kernel_maps=self.kernel_maps, l2=lambda: self.l2,
                           arp_replies=self._arp_replies)

    def _follow(self, kinds: tuple[str, ...], controller: Controller) -> None:
        """Trigger `controller` on every change of these informers' objects."""
        def changed(*_objects: Any) -> None:
            self.contact.event()
            controller.trigger()

        for kind in kinds:
            if kind in self.informers:
                self.informers[kind].add_handler(changed, changed, changed)

    def controller(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    def reconcilers(self) -> list[Any]:
        """Every reconciler of this agent (for metrics and status)."""
        out: list[Any] = list(self.lb.reconcilers) if self.lb is not None else []
        if self.l2 is not None:
            out += self.l2.reconcilers
        if self.policy is not None:
            out += self.policy.reconcilers
        if self.endpoints is not None:
            out += self.endpoints.reconcilers
        return out + self.cni.reconcilers

    # -- what the metrics read ---------------------------------------------------------------

    def _counters_map(self) -> libbpf.Map | None:
        """The datapath's forward and drop counters (hl_metrics), through whichever object
        holds it: the load balancer's, else the masquerade's."""
        if self.lb is not None and self.lb.datapath is not None:
            return self.lb.datapath.maps.metrics
        masq = self.endpoints.masq if self.endpoints is not None else None
        return masq.metrics if masq is not None else None

    def _kernel_written_maps(self) -> list[libbpf.Map]:
        """The maps the programs fill themselves (LRU): conntrack, session affinity, Hubble's
        trace aggregation, the masquerade's NAT."""
        out = []
        if self.lb is not None and self.lb.datapath is not None:
            m = self.lb.datapath.maps
            out += [m.ct, m.affinity, m.trace]
        masq = self.endpoints.masq if self.endpoints is not None else None
        if masq is not None:
            out.append(masq.snat)
        return out

    def _arp_replies(self) -> int | None:
        if self.lb is None or self.lb.datapath is None:
            return None
        return arp_replies(self.lb.datapath.obj)

    # -- controllers -------------------------------------------------------------------------

    async def _sync_routes(self) -> None:
        await self.nodes.sync(self.endpoints)

    async def _install_cni(self) -> None:
        if self.api is None:
            raise RuntimeError("the endpoint API is not served yet")
        for path in await asyncio.to_thread(self.cni.install):
            log.info("installed %s", path)

    async def _resync(self) -> None:
        """Read back every kernel object the agent owns; repair what differs."""
        recs = [*(self.endpoints.reconcilers if self.endpoints is not None else []),
                *(self.lb.reconcilers if self.lb is not None else []),
                *(self.l2.reconcilers if self.l2 is not None else []),
                *(self.policy.reconcilers if self.policy is not None else [])]
        before = sum(r.repairs for r in recs)
        # The endpoint manager's first: it re-creates a device (hexlane_host) that the load
        # balancer then attaches to in the same pass.
        if self.endpoints is not None:
            await self.endpoints.resync()
        if self.lb is not None:
            await self.lb.resync()
        if self.l2 is not None:
            await self.l2.resync()
        if self.policy is not None:
            await self.policy.resync()
        repaired = sum(r.repairs for r in recs) - before
        if repaired:
            log.warning("resync: repaired %d kernel objects changed behind the agent's back",
                        repaired)

    def _host_ips(self) -> list[str]:
        """This node's own addresses besides its Node's: hexlane_host's (the router IP its
        connections to local pods come from)."""
        return [str(self.endpoints.router_ip)] if self.endpoints is not None else []

    def _remote_host_ips(self) -> list[str]:
        """The other nodes' router IPs (their hexlane_host's: what their own connections to
        pods come from through the tunnel): remote-node in the ipcache, as their Node IPs."""
        if self.endpoints is None:
            return []
        return [str(router_ip(cidr)) for node in self.endpoints.nodes
                for cidr in node.pod_cidrs]

    def _identities_document(self) -> dict[str, Any]:
        """`GET /v1/identities`: the identities, and each endpoint's policy enforcement."""
        doc = self.identities.document()
        doc["policy"] = self.policy.document() if self.policy is not None else None
        return doc

    def _unreachable(self, nodes: frozenset[str]) -> None:
        """The L2 heartbeat lost (or found again) nodes: their backends leave (or rejoin)
        every Service at once, ahead of the node-lifecycle grace period."""
        if self.lb is not None:
            self.lb.set_unreachable_nodes(nodes)
            self.controller("services").trigger()

    def _after_cni_add(self) -> None:
        """A pod veth appeared: put the load balancer on it before the pod's first packet."""
        if self.lb is not None:
            self.lb.attach_links()
        if self.hubble is not None:
            self.hubble.links_changed()

    # -- running -----------------------------------------------------------------------------

    async def _local_node(self, stop: asyncio.Event) -> NodeRouting | None:
        """This node, remembered or (the socket file answering status meanwhile) from the
        API; None when stopped first."""
        local = self.nodes.recall()
        if local is not None:
            return local
        early = await api.serve_starting(self.config.state_dir, self.status.document,
                                         lambda: self.nodes.waiting_for)
        try:
            return await self.nodes.wait_for_local(stop)
        finally:
            await early.cleanup()

    def _prepare_bpf_root(self) -> None:
        root = self.config.bpf_root
        if not on_bpffs(root) and root.is_relative_to(BPFFS):
            ensure_bpffs(BPFFS)  # as Cilium's agent, on nodes whose init system did not

    async def _start_datapath(self, local: NodeRouting) -> None:
        values = self.config.values
        mtu = await self.nodes.find_device()
        settings = RoutingSettings(mode="native" if values.routing_mode == "native"
                                   else "tunnel",
                                   auto_direct_node_routes=values.auto_direct_node_routes,
                                   vxlan_port=values.tunnel_port, lan_mtu=mtu)
        masq = None
        if values.enable_ipv4_masquerade:
            masq = MasqueradeSettings(self.nodes.device, self.config.bpf_root,
                                      values.ipv4_native_routing_cidr)
        self.endpoints = EndpointManager(self.config.state_dir, local, settings,
                                         masquerade=masq,
                                         allow_host_netns=self.config.host_namespace)
        # The peers a previous run routed: the first reconcile keeps their routes instead of
        # dropping them until the informers sync (connections to other nodes would stall).
        self.endpoints.nodes = tuple(sorted(self.nodes.peers))
        # Likewise the service CIDR the load balancer routes to hexlane_host: dropped until
        # the load balancer loads, the node's own connections to ClusterIPs would fail.
        if self.lb is not None and self.lb.service_cidr:
            self.endpoints.service_routes = (IPv4Network(self.lb.service_cidr, strict=False),)
        await self.endpoints.start()
        if self.lb is not None:
            await self.lb.load(self.nodes.device, self.endpoints)
            if self.policy is not None and self.lb.datapath is not None:
                self.policy.load(self.lb.datapath.obj)
            if self.l2 is not None and self.lb.datapath is not None:
                self.l2.load(self.lb.datapath, [self.nodes.device], str(local.node_ip))
            if self.hubble is not None:
                await self.hubble.start([str(local.node_ip)],
                                        [str(self.endpoints.router_ip)])

    async def run(self, stop: asyncio.Event) -> None:
        config = self.config
        config.state_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_bpf_root()
        metrics: web.AppRunner | None = None
        if config.metrics_addr is not None:
            metrics = await self.metrics.serve(config.metrics_addr)
        for inf in self.informers.values():
            inf.start()
        self.controller("heartbeat").start()
        try:
            local = await self._local_node(stop)
            if local is None:
                return
            self.nodes.settle(local)
            await self._start_datapath(local)
            self.api = await api.serve_api(config.state_dir, self.endpoints_or_fail,
                                           abstract_name=config.abstract_name,
                                           status=self.status.document,
                                           identities=self._identities_document,
                                           policy=self.policy,
                                           after_add=self._after_cni_add)
            for ctrl in self.controllers:
                ctrl.start()
            log.info("node %s ready: %s on %s, pod CIDR %s, %s routing", local.name,
                     local.node_ip, self.nodes.device, ", ".join(map(str, local.pod_cidrs)),
                     config.values.routing_mode)
            await stop.wait()
        finally:
            log.info("stopping (the datapath stays in place)")
            for ctrl in self.controllers:
                await ctrl.stop()
            if self.api is not None:
                await self.api.close()
            if self.l2 is not None:
                # Leases released and answers withdrawn: another node takes over at once.
                await self.l2.close()
            if self.hubble is not None:
                await self.hubble.close()
            if self.lb is not None:
                await self.lb.close()  # maps and programs stay pinned and attached
            if self.endpoints is not None:
                await self.endpoints.close()
            for inf in self.informers.values():
                await inf.stop()
            if metrics is not None:
                await metrics.cleanup()
            await self.client.aclose()

    @property
    def endpoints_or_fail(self) -> EndpointManager:
        if self.endpoints is None:
            raise RuntimeError("endpoint manager not started")
        return self.endpoints


async def run_agent(config: AgentConfig) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop."""
    stop = stop_on_signals()
    agent = Agent(config)
    log.info("hexlane agent %s on node %s: API %s (client rate limit %g qps, burst %d), "
             "ipam.mode %s, routingMode %s, state %s, bpf %s", __version__, config.node,
             agent.client.server, agent.client.limiter.qps, agent.client.limiter.burst,
             config.values.ipam.mode, config.values.routing_mode, config.state_dir,
             config.bpf_root)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run(stop)
    return 0
