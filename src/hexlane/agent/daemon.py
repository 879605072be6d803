"""The agent daemon: a short list of parts, wired once (Cilium's `daemon/cmd/cells.go`).

    Infrastructure
      config      Values (Helm values) + the command line (`AgentConfig`)
      client      one rate-limited API client (`k8sClientRateLimit.qps/burst`)
      informers   Nodes, CiliumNodes (cluster-pool), Services, EndpointSlices, this node's Pods
      metrics     `/metrics` on prometheus.port (9962) when prometheus.enabled
    Control plane
      node        this node's IP (Node InternalIP) and pod CIDR (`ipam.mode`), waited for once
      routes      controller: other nodes' pod CIDRs -> routes / VXLAN (`hexlane.ipam.routes`)
      heartbeat   controller: GET /version, so `status` knows the API server answers
      cni-config  controller: the CNI config and plugin in their directories
      services    controller (kubeProxyReplacement): Services/EndpointSlices/Nodes ->
                  `ServiceReconciler` (pinned LB maps, programs on the LAN device,
                  hexlane_host and every pod veth) + kube-proxy's healthz servers
    Datapath
      endpoints   `EndpointManager`: host device + router IP, veths, pod IPs, eBPF masquerade
                  on the device holding the node IP, queued CNI DELs drained at start
      api         `$STATE_DIR/agent.sock` and `@hexlane-agent`: CNI calls, `/v1/status`
                  (before the pod CIDR is known: the socket file answers status alone)

What a restart relies on: the endpoint manager re-reads endpoints and IP allocations from the
state dir; pinned maps, attached tc programs, veths and routes stay in the kernel when the
agent stops (SIGTERM) or dies (SIGKILL), so traffic keeps flowing; the node's IP and pod CIDR
and the peers it routed are remembered in `$STATE_DIR/node.json`, so a restarted agent serves
the CNI plugin at once, before the API server answers, and its first reconcile keeps every
route in place. Each controller converges from the cluster's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pyroute2 import AsyncIPRoute

from hexlane import __version__
from hexlane.config import Values
from hexlane.datapath import netlink
from hexlane.datapath.bpffs import ensure_bpffs, on_bpffs
from hexlane.datapath.lb.loader import (
    PROGRAM_FROM_HOST,
    PROGRAM_FROM_LOOPBACK,
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_OVERLAY,
    PROGRAM_TO_NETDEV,
    LbDatapath,
)
from hexlane.datapath.masq import PROGRAM_EGRESS, PROGRAM_INGRESS
from hexlane.k8s.client import KubeClient, make_client
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer, KeyQueue
from hexlane.k8s.resources import CiliumNode, EndpointSlice, Node, Pod, Service
from hexlane.lb.services import LbModel
from hexlane.model.endpointslice import EndpointSlice as EndpointSliceObject
from hexlane.model.errors import InputError
from hexlane.model.node import Node as NodeObject
from hexlane.model.service import Service as ServiceObject
from hexlane.routing.nodes import cluster_nodes, local_node, pod_cidr_source
from hexlane.routing.routes import HOST_DEVICE, VXLAN_DEVICE, NodeRouting, RoutingSettings

from . import cniconf
from .api import ABSTRACT_NAME, SOCKET_NAME, ApiServer, serve_api
from .endpoints import EndpointManager, MasqueradeSettings, write_json_atomic
from .metrics import AgentMetrics
from .programs import attached_programs
from .services import HealthServers, ServiceReconciler
from .status import health

log = logging.getLogger(__name__)

NODE_FILE = "node.json"
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
    abstract_name: str | None = ABSTRACT_NAME
    #: The cluster's ClusterIP range, routed to hexlane_host so the node's own connections
    #: to ClusterIPs meet the load balancer (None: they are not load-balanced).
    service_cidr: str | None = None


def find_kube_proxy(proc: Path = Path("/proc")) -> int | None:
    """The pid of a kube-proxy process on this machine, or None."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "kube-proxy":
                    return int(entry.name)
    return None


class Agent:
    """The wired daemon: `await run(stop)` until `stop` is set."""

    def __init__(self, config: AgentConfig, client: KubeClient | None = None) -> None:
        self.config = config
        values = config.values
        self.metrics = AgentMetrics()
        self.client = client or make_client(values, config.kubeconfig, component="agent",
                                            registry=self.metrics.registry)
        self.ipam_mode = values.ipam.mode
        self.informers: dict[str, Informer] = {
            "nodes": Informer(self.client, Node),
            "services": Informer(self.client, Service),
            "endpointslices": Informer(self.client, EndpointSlice),
            "pods": Informer(self.client, Pod, field_selector=f"spec.nodeName={config.node}"),
        }
        if self.ipam_mode == "cluster-pool":
            self.informers["ciliumnodes"] = Informer(self.client, CiliumNode)
        for name in ("nodes", "ciliumnodes"):
            if name in self.informers:
                self.informers[name].add_handler(self._node_event, self._node_update,
                                                 self._node_event)
        self.node_changed = asyncio.Event()
        self.last_event: float | None = None
        self.local: NodeRouting | None = None
        self.peers: list[NodeRouting] = []
        self._remembered_data: dict[str, Any] | None = None
        self.waiting_for = "the agent to start"
        self.device = ""
        self.manager: EndpointManager | None = None
        self.cni_files = cniconf.CniFiles(config.cni_conf_dir, config.cni_bin_dir,
                                          config.state_dir)
        self.api: ApiServer | None = None
        self.last_sync: float | None = None
        self.last_contact: float | None = None
        self.contact_error = ""
        self.problems: list[str] = []
        self.controllers = [
            Controller("routes", self._sync_routes, interval=config.sync_interval),
            Controller("heartbeat", self._heartbeat, interval=config.sync_interval),
            Controller("cni-config", self._install_cni, interval=config.sync_interval),
        ]
        self.lb: LbDatapath | None = None
        self.services: ServiceReconciler | None = None
        self.health_servers: HealthServers | None = None
        # Every kernel object the agent owns is read back and repaired this often.
        self.controllers.append(Controller("resync", self._resync,
                                           interval=values.resync_interval))
        self._lb_queues: dict[str, KeyQueue] = {}
        if values.kube_proxy_replacement:
            self.controllers += [
                Controller("services", self._sync_services, interval=config.sync_interval),
                # Cilium's conntrack GC: idle flows expire by its timeouts (CONNTRACK_GC_S).
                Controller("conntrack-gc", self._gc_conntrack, interval=CONNTRACK_GC_S),
            ]
            for name in ("services", "endpointslices", "nodes"):
                # The keys of changed objects: each is parsed once per change and handed
                # to the load balancer's model, which recomputes only those Services.
                self._lb_queues[name] = self.informers[name].key_queue()
                self.informers[name].add_handler(self._service_event, self._service_update,
                                                 self._service_event)
        self._bind_metrics()

    # -- informer events ---------------------------------------------------------------------

    def _node_event(self, _obj: Any) -> None:
        self.last_event = time.time()
        self.node_changed.set()
        self.controller("routes").trigger()

    def _node_update(self, _old: Any, new: Any) -> None:
        self._node_event(new)

    def _service_event(self, _obj: Any) -> None:
        self.last_event = time.time()
        self.controller("services").trigger()

    def _service_update(self, _old: Any, new: Any) -> None:
        self._service_event(new)

    def controller(self, name: str) -> Controller:
        return next(c for c in self.controllers if c.name == name)

    def _objects(self, name: str) -> list[dict[str, Any]]:
        inf = self.informers.get(name)
        return inf.cache.objects() if inf is not None else []

    # -- this node ---------------------------------------------------------------------------

    def _local_from_cache(self) -> NodeRouting | None:
        node = self.informers["nodes"].cache.get(self.config.node)
        cnodes = self.informers.get("ciliumnodes")
        cnode = cnodes.cache.get(self.config.node) if cnodes is not None else None
        found = local_node(self.config.node, node, cnode, self.ipam_mode)
        self.waiting_for = found.waiting_for
        return found.routing

    def _remembered(self) -> tuple[NodeRouting | None, list[NodeRouting]]:
        """This node and the other nodes as a previous run of this agent last knew them
        (None and [] when absent or written for another node)."""
        try:
            data = json.loads((self.config.state_dir / NODE_FILE).read_text())
            if data.get("node") != self.config.node:
                return None, []
            nodes = [_routing_from_dict(d) for d in [data, *data.get("peers", [])]]
            return nodes[0], nodes[1:]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, []

    def _remember(self, local: NodeRouting, peers: Sequence[NodeRouting]) -> None:
        """Keep this node's facts and the routed peers, so a restart routes at once."""
        data = {**_routing_to_dict(local), "peers": [_routing_to_dict(p) for p in peers]}
        if data != self._remembered_data:
            write_json_atomic(self.config.state_dir / NODE_FILE, data)
            self._remembered_data = data

    async def _wait_for_local_node(self, stop: asyncio.Event) -> NodeRouting | None:
        remembered, self.peers = self._remembered()
        if remembered is not None:
            log.info("node %s: %s, pod CIDR %s (remembered; checked against the API later)",
                     remembered.name, remembered.node_ip,
                     ", ".join(map(str, remembered.pod_cidrs)))
            return remembered
        early = await self._serve_while_waiting()
        try:
            said = ""
            while not stop.is_set():
                self.node_changed.clear()
                local = self._local_from_cache()
                if local is not None:
                    return local
                if self.waiting_for != said:
                    log.info("waiting for %s", self.waiting_for)
                    said = self.waiting_for
                waits = [asyncio.create_task(self.node_changed.wait()),
                         asyncio.create_task(stop.wait())]
                await asyncio.wait(waits, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
                for task in waits:
                    task.cancel()
            return None
        finally:
            await early.cleanup()

    async def _serve_while_waiting(self) -> web.AppRunner:
        """Until the endpoint API exists, the socket file answers `/v1/status` (saying what
        the agent waits for) and every CNI call with "try again" (CNI error 11)."""
        async def starting(_request: web.Request) -> web.Response:
            return web.json_response({"code": 11, "msg": "hexlane agent starting",
                                      "details": f"waiting for {self.waiting_for}"},
                                     status=503)

        app = web.Application()
        app.router.add_get("/v1/status", self._status_handler)
        app.router.add_route("*", "/{tail:.*}", starting)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        path = self.config.state_dir / SOCKET_NAME
        path.unlink(missing_ok=True)
        await web.UnixSite(runner, str(path)).start()
        return runner

    async def _external_device(self, ipr: AsyncIPRoute, ip: IPv4Address) -> tuple[str, int]:
        """The interface holding the node IP (the LAN side) and its MTU, via netlink."""
        async for msg in await ipr.addr("dump"):
            if msg.get_attr("IFA_ADDRESS") == str(ip):
                index = msg["index"]
                link = (await ipr.link("get", index=index))[0]
                return str(link.get_attr("IFLA_IFNAME")), int(link.get_attr("IFLA_MTU"))
        raise RuntimeError(f"no interface of this node holds its InternalIP {ip}: is the "
                           "agent running in the node's network namespace?")

    # -- controllers -------------------------------------------------------------------------

    async def _sync_routes(self) -> None:
        manager = self.manager
        if manager is None or self.local is None:
            raise RuntimeError(f"not started: waiting for {self.waiting_for}")
        synced = all(self.informers[n].synced.is_set()
                     for n in ("nodes", "ciliumnodes") if n in self.informers)
        if synced:
            nodes, problems = cluster_nodes(self._objects("nodes"), self._objects("ciliumnodes"),
                                            self.ipam_mode)
            self.problems = [str(p) for p in problems]
            current = self._local_from_cache()
            if current is not None and current != self.local:
                # Pods hold addresses of the old CIDR; moving them is not done behind their
                # back. Routes to the others still converge.
                self.problems.append(f"node {self.local.name} is now {current.node_ip} with "
                                     f"pod CIDR {', '.join(map(str, current.pod_cidrs))}; "
                                     "this agent serves the old ones until it restarts")
            self.peers = [n for n in nodes if n.name != self.local.name]
            report = await manager.set_nodes(self.peers)
            self._remember(self.local, self.peers)
        else:
            report = await manager.reconcile()  # local routes from what we know
        if report.failed:
            raise RuntimeError("; ".join(report.failed))
        if synced:
            self.last_sync = time.time()

    async def _gc_conntrack(self) -> None:
        if self.services is None:
            return  # the load balancer is not loaded yet: nothing to expire
        expired = await asyncio.to_thread(self.services.gc_conntrack)
        if expired:
            log.debug("conntrack: %d idle flow entries expired", expired)

    async def _sync_services(self) -> None:
        rec = self.services
        if rec is None:
            raise RuntimeError("the service load balancer is not loaded")
        names = ("services", "endpointslices", "nodes")
        if not all(self.informers[n].synced.is_set() for n in names):
            # Applying a partial picture would delete live services from the maps; the
            # informers' first lists trigger this controller again.
            return
        self._feed_model(rec.model)
        report = await asyncio.to_thread(rec.commit)
        if report.recomputed or report.updated or report.deleted:
            log.debug("services: %d recomputed, %d entries written, %d deleted in %.3fs",
                      report.recomputed, report.updated, report.deleted, report.seconds)
        await asyncio.to_thread(rec.attach_links)
        await self._route_service_addresses(rec.model.routed_addresses())
        if self.health_servers is not None:
            await self.health_servers.sync()

    def _feed_model(self, model: LbModel) -> None:
        """Hand the objects changed since the last run to the model (parsed once each)."""
        for name, queue in self._lb_queues.items():
            cache = self.informers[name].cache
            while len(queue):
                key = queue.get_nowait()
                raw = cache.get(key)
                namespace, _, obj_name = key.rpartition("/")
                if name == "nodes":
                    if obj_name == self.config.node:
                        model.set_nodes(_parsed(NodeObject, [raw] if raw else []))
                    continue
                parsed = _parsed(ServiceObject if name == "services" else EndpointSliceObject,
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

    async def _resync(self) -> None:
        """Read back every kernel object the agent owns; repair what differs."""
        repaired = 0
        # The endpoint manager's first: it re-creates a device (hexlane_host) that the load
        # balancer then attaches to in the same pass.
        if self.manager is not None:
            recs = self.manager.reconcilers
            before = sum(r.repairs for r in recs)
            await self.manager.resync()
            repaired += sum(r.repairs for r in recs) - before
        if self.services is not None:
            rec = self.services
            before = sum(r.repairs for r in rec.reconcilers)
            await asyncio.to_thread(rec.resync)
            repaired += sum(r.repairs for r in rec.reconcilers) - before
        if repaired:
            log.warning("resync: repaired %d kernel objects changed behind the agent's back",
                        repaired)

    def reconcilers(self) -> list[Any]:
        """Every reconciler of this agent (for metrics and status)."""
        out: list[Any] = []
        if self.services is not None:
            out += self.services.reconcilers
        if self.manager is not None:
            out += self.manager.reconcilers
        out += self.cni_files.reconcilers
        return out

    async def _route_service_addresses(self, addresses: frozenset[str]) -> None:
        """Route the service CIDR and these LoadBalancer/external IPs to hexlane_host, so
        the node's own connections to them meet the load balancer."""
        if self.manager is None:
            return
        routes = [IPv4Network(f"{a}/32") for a in addresses]
        if self.config.service_cidr:
            routes.append(IPv4Network(self.config.service_cidr, strict=False))
        report = await self.manager.set_service_routes(routes)
        if report is not None and report.failed:
            raise RuntimeError("; ".join(report.failed))

    def _after_cni_add(self) -> None:
        """A pod veth appeared: put the load balancer on it before the pod's first packet."""
        if self.services is not None:
            self.services.attach_links()

    @web.middleware
    async def _cni_middleware(self, request: web.Request, handler: Any
                              ) -> web.StreamResponse:
        response: web.StreamResponse = await handler(request)
        if request.path == "/v1/cni/add" and response.status == 200:
            try:
                self._after_cni_add()
            except OSError as err:  # retried by the services controller's next run
                log.warning("attaching the load balancer to a new pod: %s", err)
        return response

    async def _heartbeat(self) -> None:
        try:
            await self.client.request("GET", "/version")
        except Exception as err:
            self.contact_error = f"{type(err).__name__}: {err}"
            raise
        self.last_contact = time.time()
        self.contact_error = ""

    async def _install_cni(self) -> None:
        if self.api is None:
            raise RuntimeError("the endpoint API is not served yet")
        changed = await asyncio.to_thread(self.cni_files.install)
        for path in changed:
            log.info("installed %s", path)

    # -- status ------------------------------------------------------------------------------

    def _expected_programs(self) -> list[dict[str, str]]:
        expected = []
        if self.manager is not None and self.manager.masquerade is not None:
            expected += [{"device": self.device, "direction": "egress", "name": PROGRAM_EGRESS},
                         {"device": self.device, "direction": "ingress",
                          "name": PROGRAM_INGRESS}]
        if self.services is not None:
            expected += [{"device": self.device, "direction": "ingress",
                          "name": PROGRAM_FROM_NETDEV},
                         {"device": self.device, "direction": "egress",
                          "name": PROGRAM_TO_NETDEV},
                         {"device": HOST_DEVICE, "direction": "egress",
                          "name": PROGRAM_FROM_HOST},
                         {"device": "lo", "direction": "egress",
                          "name": PROGRAM_FROM_LOOPBACK}]
            if self.config.values.routing_mode == "tunnel" and self.peers:
                # the tunnel exists once there is a peer to reach through it
                expected.append({"device": VXLAN_DEVICE, "direction": "ingress",
                                 "name": PROGRAM_FROM_OVERLAY})
        return expected

    def _kpr_status(self) -> dict[str, Any]:
        values = self.config.values
        doc: dict[str, Any] = {"enabled": values.kube_proxy_replacement}
        rec = self.services
        if rec is None:
            if values.kube_proxy_replacement:
                doc["note"] = "service load balancer not loaded yet"
            elif (pid := find_kube_proxy()) is not None:
                doc["note"] = f"kube-proxy handles Services (pid {pid})"
            else:
                doc["note"] = ("Services will not work on this node: kubeProxyReplacement is "
                               "off and no kube-proxy runs here")
            return doc
        doc.update({
            "services": len(rec.model.entries),
            "backends": len(rec.model.backends),
            "algorithm": values.load_balancer.algorithm,
            "mode": values.load_balancer.mode,
            "lastUpdated": rec.last_updated,
            "lastError": rec.last_error or "",
            "healthzBindAddr": ":".join(map(str, values.kube_proxy_replacement_healthz_bind_addr
                                             or ())),
            "healthCheckNodePorts": self.health_servers.ports if self.health_servers else [],
        })
        return doc

    async def status(self) -> dict[str, Any]:
        """The document `GET /v1/status` answers (see docs/agent.md)."""
        values = self.config.values
        now = time.time()
        manager = self.manager
        ep = manager.status() if manager is not None else {}
        datapath: dict[str, Any] = {"expected": self._expected_programs(), "programs": []}
        try:
            async with netlink.iproute_in() as ipr:
                programs = await attached_programs(ipr)
            datapath["programs"] = [p.to_dict() for p in programs if p.is_ours]
        except Exception as err:  # the report must come out even when a query fails
            datapath["error"] = f"tc query failed: {err}"
        local = self.local
        allocator = manager.allocator if manager is not None else None
        doc: dict[str, Any] = {
            "node": self.config.node,
            "version": __version__,
            "now": now,
            "waitingFor": "" if manager is not None else self.waiting_for,
            "kubeProxyReplacement": self._kpr_status(),
            "kubernetes": {
                "server": self.client.server,
                "reachable": self.last_contact is not None and not self.contact_error,
                "error": self.contact_error,
                "lastContact": self.last_contact,
                "lastEvent": self.last_event,
                "informers": {name: {"synced": inf.synced.is_set(), "objects": len(inf.cache),
                                     "events": inf.stats.events, "errors": inf.stats.errors}
                              for name, inf in self.informers.items()},
            },
            "ipam": {
                "mode": self.ipam_mode,
                "source": pod_cidr_source(self.ipam_mode),
                "podCIDR": str(local.pod_cidrs[0]) if local is not None else "",
                "routerIP": ep.get("routerIP", ""),
                "allocated": len(allocator.allocations) if allocator is not None else 0,
                "capacity": allocator.capacity if allocator is not None else 0,
            },
            "routing": {
                "mode": values.routing_mode,
                "autoDirectNodeRoutes": values.auto_direct_node_routes,
                # Endpoints are always reached by a /32 route on their veth (no BPF redirect
                # on hexlane_host), which is what endpointRoutes.enabled asks for.
                "endpointRoutes": True,
                "hostDevice": HOST_DEVICE,
                "nodeIP": str(local.node_ip) if local is not None else "",
                "device": self.device,
                "nodes": [{"name": n.name, "nodeIP": str(n.node_ip),
                           "podCIDRs": [str(c) for c in n.pod_cidrs]}
                          for n in (manager.nodes if manager is not None else ())],
                "lastReconcile": ep.get("lastReconcile", {}),
                "problems": self.problems,
            },
            "masquerading": {
                "enabled": manager is not None and manager.masquerade is not None,
                "mode": "BPF",
                "device": self.device,
                "nativeRoutingCIDR": str(values.ipv4_native_routing_cidr or ""),
                **({"counters": ep["masquerade"].get("counters", {})}
                   if ep.get("masquerade", {}).get("counters") else {}),
            },
            "datapath": datapath,
            "endpointManager": {"started": bool(manager and manager.started),
                                "endpoints": ep.get("endpoints", 0)},
            "cni": {"confFile": str(self.config.cni_conf_dir / cniconf.CONF_NAME),
                    "plugin": str(self.config.cni_bin_dir / cniconf.PLUGIN_NAME)},
            "controllers": [c.status() for c in self.controllers],
            "reconcilers": {"resyncInterval": values.resync_interval,
                            "tables": [r.status() for r in self.reconcilers()]},
            "lastSync": self.last_sync,
            "syncInterval": self.config.sync_interval,
        }
        reasons = health(doc)
        doc["health"] = {"ok": not reasons, "reasons": reasons}
        return doc

    async def _status_handler(self, _request: web.Request) -> web.Response:
        return web.json_response(await self.status())

    # -- metrics -----------------------------------------------------------------------------

    def _bind_metrics(self) -> None:
        m = self.metrics

        def manager_value(read: Callable[[EndpointManager], float]) -> Callable[[], float]:
            return lambda: read(self.manager) if self.manager is not None else 0.0

        m.bind(m.endpoints, manager_value(lambda mgr: len(mgr.endpoints)))
        m.bind(m.ip_addresses, manager_value(lambda mgr: len(mgr.allocator.allocations)))
        m.bind(m.ip_capacity, manager_value(lambda mgr: mgr.allocator.capacity))
        m.bind(m.nodes, manager_value(lambda mgr: len(mgr.nodes)))
        m.bind(m.controllers_failing,
               lambda: sum(1 for c in self.controllers if c.consecutive_failures))
        m.bind(m.last_sync, lambda: self.last_sync or 0.0)
        m.watch_reconcilers(self.reconcilers)

    async def _serve_metrics(self) -> web.AppRunner | None:
        if self.config.metrics_addr is None:
            return None
        app = web.Application()

        async def metrics(_request: web.Request) -> web.Response:
            return web.Response(body=generate_latest(self.metrics.registry),
                                headers={"Content-Type": CONTENT_TYPE_LATEST})

        app.router.add_get("/metrics", metrics)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        host, port = self.config.metrics_addr
        await web.TCPSite(runner, host or None, port).start()
        log.info("metrics on http://%s:%d/metrics", host or "0.0.0.0", port)
        return runner

    # -- running -----------------------------------------------------------------------------

    def _prepare_bpf_root(self) -> None:
        root = self.config.bpf_root
        if not on_bpffs(root) and root.is_relative_to(BPFFS):
            ensure_bpffs(BPFFS)  # as Cilium's agent, on nodes whose init system did not

    async def _start_datapath(self, local: NodeRouting) -> None:
        values = self.config.values
        async with netlink.iproute_in() as ipr:
            self.device, mtu = await self._external_device(ipr, local.node_ip)
        settings = RoutingSettings(mode="native" if values.routing_mode == "native"
                                   else "tunnel",
                                   auto_direct_node_routes=values.auto_direct_node_routes,
                                   vxlan_port=values.tunnel_port, lan_mtu=mtu)
        masq = None
        if values.enable_ipv4_masquerade:
            masq = MasqueradeSettings(self.device, self.config.bpf_root,
                                      values.ipv4_native_routing_cidr)
        self.manager = EndpointManager(self.config.state_dir, local, settings,
                                       masquerade=masq,
                                       allow_host_netns=self.config.host_namespace)
        # The peers a previous run routed: the first reconcile keeps their routes instead of
        # dropping them until the informers sync (connections to other nodes would stall).
        self.manager.nodes = tuple(sorted(self.peers))
        await self.manager.start()
        if values.kube_proxy_replacement:
            await self._start_services()

    async def _start_services(self) -> None:
        values = self.config.values
        # Compiling and loading takes a while: off the loop (same namespace, other thread).
        self.lb = await asyncio.to_thread(LbDatapath.load, self.config.bpf_root,
                                          table_size=values.maglev.table_size,
                                          hash_seed=values.maglev.hash_seed)
        self.services = ServiceReconciler(self.lb, self.config.node, values)
        attached = await asyncio.to_thread(self.services.attach, [self.device])
        log.info("service load balancer attached: %s", ", ".join(attached))
        await self._route_service_addresses(frozenset())
        self.health_servers = HealthServers(self.services,
                                            values.kube_proxy_replacement_healthz_bind_addr)
        await self.health_servers.start()

    async def run(self, stop: asyncio.Event) -> None:
        self.config.state_dir.mkdir(parents=True, exist_ok=True)
        self._prepare_bpf_root()
        metrics_runner = await self._serve_metrics()
        for inf in self.informers.values():
            inf.start()
        heartbeat = self.controller("heartbeat")
        heartbeat.start()
        try:
            local = await self._wait_for_local_node(stop)
            if local is None:
                return
            self.local = local
            self._remember(local, self.peers)
            await self._start_datapath(local)
            app = web.Application(middlewares=[self._cni_middleware])
            app.router.add_get("/v1/status", self._status_handler)
            self.api = await serve_api(self.config.state_dir, self.manager_or_fail, app=app,
                                       abstract_name=self.config.abstract_name)
            for ctrl in self.controllers:
                ctrl.start()
            log.info("node %s ready: %s on %s, pod CIDR %s, %s routing", local.name,
                     local.node_ip, self.device, ", ".join(map(str, local.pod_cidrs)),
                     self.config.values.routing_mode)
            await stop.wait()
        finally:
            log.info("stopping (the datapath stays in place)")
            for ctrl in self.controllers:
                await ctrl.stop()
            if self.api is not None:
                await self.api.close()
            if self.health_servers is not None:
                await self.health_servers.stop()
            if self.lb is not None:
                self.lb.close()  # maps and programs stay pinned and attached
            if self.manager is not None:
                await self.manager.close()
            for inf in self.informers.values():
                await inf.stop()
            if metrics_runner is not None:
                await metrics_runner.cleanup()
            await self.client.aclose()

    @property
    def manager_or_fail(self) -> EndpointManager:
        if self.manager is None:
            raise RuntimeError("endpoint manager not started")
        return self.manager


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


def _routing_to_dict(node: NodeRouting) -> dict[str, Any]:
    return {"node": node.name, "nodeIP": str(node.node_ip),
            "podCIDRs": [str(c) for c in node.pod_cidrs]}


def _routing_from_dict(data: Mapping[str, Any]) -> NodeRouting:
    return NodeRouting(str(data["node"]), IPv4Address(data["nodeIP"]),
                       tuple(IPv4Network(c) for c in data["podCIDRs"]))


async def run_agent(config: AgentConfig) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    agent = Agent(config)
    log.info("hexlane agent %s on node %s: API %s, ipam.mode %s, routingMode %s, state %s, "
             "bpf %s", __version__, config.node, agent.client.server, config.values.ipam.mode,
             config.values.routing_mode, config.state_dir, config.bpf_root)
    with contextlib.suppress(asyncio.CancelledError):
        await agent.run(stop)
    return 0
