"""The agent's endpoint side: pods' interfaces and IPs on this node, for the CNI plugin.

`EndpointManager` carries out CNI ADD/DEL/CHECK/GC/STATUS: it allocates the pod IP from the
node's pod CIDR (`hexlane.ipam.podcidr`), builds the veth pair through `hexlane.datapath.netlink`,
and keeps the node's kernel objects converged to the plans of `hexlane.routing` (`plan_routes`,
`plan_masquerade`): links, FDB, neighbours and routes (`netlink.NodeNetwork`), sysctls
(`hexlane.datapath.sysctl`) and the masquerade's maps (`MasqDatapath`), each a table kept by
its own long-lived reconciler (`hexlane.datapath.reconcile`). A change (a node, a pod, a
service address) writes only what it changed; `resync()` reads everything back and repairs
what changed behind the agent's back (the agent calls it every resync interval).

Every allocation is written to `$STATE_DIR/endpoints.json` (temp file, fsync, rename) before
the answer leaves, so no IP reaches two pods even when the agent dies at any moment. DELs the
plugin could not hand over while the agent was down wait in `$STATE_DIR/cni-del-queue/` and
are carried out by `start()` before the API is served.

Addressing (as Cilium): the pod gets `ip/32` with its default route via the node's router IP
(first address of the pod CIDR, held on `hexlane_host`), reached through a link route and a
permanent neighbour entry pointing at the host-side veth MAC; the node reaches the pod by a /32
route on the host-side veth `lxc<hash>`.

The `hexlane agent` daemon wires it; `hexlane dev endpoints` (hidden, for tests and
experiments) serves it alone in a node namespace with the endpoint API (`api.serve_api`).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hexlane.cnispec import (  # shared with the CNI plugin
    CONTAINER_ID,
    DEL_QUEUE_DIR,
    ERR_CHECK_MISMATCH,
    ERR_INVALID_ENV,
    ERR_IPAM_EXHAUSTED,
    ERR_NOT_AVAILABLE,
    ERR_SETUP_FAILED,
    ERR_UNKNOWN_CONTAINER,
    valid_ifname,
)
from hexlane.datapath import netlink
from hexlane.datapath.masq import MasqDatapath
from hexlane.datapath.reconcile import FlushResult
from hexlane.datapath.sysctl import sysctl_reconciler
from hexlane.ipam.podcidr import PodIPAllocator, PodIPsExhausted, router_ip
from hexlane.routing.masquerade import plan_masquerade
from hexlane.routing.routes import (
    HOST_DEVICE,
    LocalEndpoint,
    NodeRouting,
    RoutePlan,
    RoutingSettings,
    endpoint_mac,
    host_ifname,
    plan_routes,
)

log = logging.getLogger("hexlane.agent.endpoints")

STATE_FORMAT = 1
STATE_FILE = "endpoints.json"
#: The sysctls the endpoint manager keeps set in the node's namespace.
SYSCTLS = {"net.ipv4.ip_forward": "1"}



class CNIError(Exception):
    """An error the CNI plugin passes on to the runtime as `{code, msg, details}`."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"{msg}: {details}" if details else msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "msg": self.msg, "details": self.details}


@dataclass(frozen=True)
class CNIRequest:
    """One CNI call as the plugin hands it to the agent."""

    container_id: str
    ifname: str
    netns: str = ""
    network: str = ""
    args: Mapping[str, str] = field(default_factory=dict)
    prev_result: Mapping[str, Any] | None = None

    @property
    def owner(self) -> str:
        return f"{self.container_id}/{self.ifname}"

    @classmethod
    def from_json(cls, body: Mapping[str, Any], *, need_netns: bool) -> CNIRequest:
        """Validate a request body; bad fields are CNI error 4 (invalid environment)."""
        cid = body.get("containerID")
        if not isinstance(cid, str) or not CONTAINER_ID.match(cid):
            raise CNIError(ERR_INVALID_ENV, "invalid CNI_CONTAINERID",
                           f"want letters, digits, '_', '.', '-'; got {cid!r}")
        ifname = body.get("ifname")
        if not isinstance(ifname, str) or not valid_ifname(ifname):
            raise CNIError(ERR_INVALID_ENV, "invalid CNI_IFNAME",
                           "want 1-15 characters without '/', ':' or white space, not '.' or "
                           f"'..'; got {str(ifname)[:64]!r}")
        netns = body.get("netns") or ""
        if not isinstance(netns, str) or (need_netns and not netns.startswith("/")):
            raise CNIError(ERR_INVALID_ENV, "invalid CNI_NETNS",
                           f"want an absolute path; got {netns!r}")
        args = body.get("args") or {}
        if not isinstance(args, Mapping):
            raise CNIError(ERR_INVALID_ENV, "invalid CNI_ARGS", "want KEY=VALUE pairs")
        prev = body.get("prevResult")
        return cls(cid, ifname, netns, str(body.get("network") or ""),
                   {str(k): str(v) for k, v in args.items()},
                   prev if isinstance(prev, Mapping) else None)


@dataclass
class Endpoint:
    """A pod attachment on this node, as recorded in the state file."""

    container_id: str
    ifname: str
    netns: str
    network: str
    ip: IPv4Address
    host_ifname: str
    mac: str
    host_mac: str = ""
    pod_namespace: str = ""
    pod_name: str = ""
    state: str = "creating"  # creating -> ready
    created_at: float = 0.0

    @property
    def owner(self) -> str:
        return f"{self.container_id}/{self.ifname}"

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["ip"] = str(self.ip)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Endpoint:
        values = dict(data)
        values["ip"] = IPv4Address(str(values["ip"]))
        return cls(**values)


def write_json_atomic(path: Path, data: Any) -> None:
    """Replace `path` with `data` as JSON so that a crash leaves the old or the new file whole."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    finally:
        os.close(dirfd)


@dataclass(frozen=True)
class MasqueradeSettings:
    """Where and how pods' traffic leaving the cluster is masqueraded (eBPF, `bpf/masq.c`)."""

    device: str  # the node's external (LAN) interface
    bpf_root: Path
    native_routing_cidr: IPv4Network | None = None
    enabled: bool = True


class EndpointManager:
    """This node's pod endpoints, their IPs, and the routes that reach them and other nodes."""

    def __init__(self, state_dir: Path, local: NodeRouting, settings: RoutingSettings, *,
                 masquerade: MasqueradeSettings | None = None,
                 allow_host_netns: bool = False) -> None:
        if not local.pod_cidrs:
            raise ValueError(f"node {local.name} has no pod CIDR")
        self.state_dir = Path(state_dir)
        self.local = local
        self.settings = settings
        self.allow_host_netns = allow_host_netns
        self.masquerade = masquerade
        self._masq: MasqDatapath | None = None
        self.pod_cidr = local.pod_cidrs[0]
        self.router_ip = router_ip(self.pod_cidr)
        self.allocator = PodIPAllocator(self.pod_cidr)
        #: pod IPs allocated and released since the start ("allocate", "release"), and ADDs
        #: refused because the pod CIDR was full ("exhausted"), for the metrics
        self.ipam_events: collections.Counter[str] = collections.Counter()
        self.endpoints: dict[str, Endpoint] = {}
        self.nodes: tuple[NodeRouting, ...] = ()
        #: routed to hexlane_host (the service CIDR, LoadBalancer and external IPs)
        self.service_routes: tuple[IPv4Network, ...] = ()
        self.netns_id = ""
        self.started = False
        self.last_reconcile: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._ipr: AsyncIPRoute | None = None
        # The kernel objects this manager owns, each table kept by its own reconciler:
        # links, FDB, neighbours and routes (made in start), sysctls, and the masquerade's
        # maps (`self._masq`).
        self._net: netlink.NodeNetwork | None = None
        self._sysctls = sysctl_reconciler(SYSCTLS, name="endpoint_sysctls")

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Set up the node, reload state, converge what the kernel holds (read back first:
        after a restart, what is already right is not written again), carry out queued
        DELs."""
        if not self.allow_host_netns and not netlink.is_named_netns():
            raise RuntimeError("refusing to set up pod networking outside a named node "
                               "namespace (/run/netns/*); the agent daemon on a real node "
                               "allows its own namespace explicitly")
        self.netns_id = netlink.netns_id()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / DEL_QUEUE_DIR).mkdir(exist_ok=True)
        self._load()
        self._ipr = AsyncIPRoute()
        await self._ipr.__aenter__()
        self._net = netlink.NodeNetwork(self._ipr)
        async with self._lock:
            await self._apply(detect=True)
        # Without these nothing works: fail the start rather than retry behind its back.
        essential = {HOST_DEVICE: self._net.links.last_errors.get(HOST_DEVICE),
                     **self._sysctls.last_errors}
        failed = [f"{what}: {err}" for what, err in essential.items() if err is not None]
        if failed:
            raise RuntimeError(f"setting up the node failed: {'; '.join(failed)}")
        if self.masquerade is not None:
            await self._start_masquerade(self.masquerade)
        await self.drain_delete_queue()
        await self.reconcile()
        self.started = True

    async def _start_masquerade(self, masq: MasqueradeSettings) -> None:
        index = await netlink.link_index(self.ipr, masq.device)
        if index is None:
            raise RuntimeError(f"masquerade device {masq.device} does not exist on this node")
        self._masq = MasqDatapath.load(masq.bpf_root)
        self._configure_masquerade()  # before the programs see a packet
        # tc attaches in the calling thread's namespace: the node's, where the agent runs.
        self._masq.attach(index)

    def _configure_masquerade(self) -> None:
        if self._masq is None or self.masquerade is None:
            return
        result = self._masq.configure(plan_masquerade(self.local, self.nodes,
                                                      self.masquerade.native_routing_cidr,
                                                      enabled=self.masquerade.enabled))
        if result.failed:
            raise RuntimeError(f"masquerade maps not written: {result.failed}")

    async def close(self) -> None:
        self._net = None
        if self._masq is not None:
            self._masq.close()  # pins and tc filters stay: traffic flows while we are away
            self._masq = None
        if self._ipr is not None:
            await self._ipr.__aexit__(None, None, None)
            self._ipr = None
        self.started = False

    @property
    def masq(self) -> MasqDatapath | None:
        """The loaded masquerade (None before the start, or without masquerading)."""
        return self._masq

    @property
    def ipr(self) -> AsyncIPRoute:
        if self._ipr is None:
            raise CNIError(ERR_NOT_AVAILABLE, "endpoint manager not started")
        return self._ipr

    # --- persistence ---------------------------------------------------------------------------

    @property
    def state_path(self) -> Path:
        return self.state_dir / STATE_FILE

    def _load(self) -> None:
        try:
            data = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except ValueError as err:
            raise RuntimeError(f"{self.state_path}: not JSON ({err}); the agent will not "
                               "guess which pod IPs are taken: repair or remove it") from None
        try:
            if data.get("format") != STATE_FORMAT:
                raise ValueError(f"unknown state format {data.get('format')!r}")
            self.allocator = PodIPAllocator.from_dict(data["allocator"], cidr=self.pod_cidr)
            for raw in data.get("endpoints", []):
                ep = Endpoint.from_dict(raw)
                self.endpoints[ep.owner] = ep
                # The endpoint's IP is the truth even if the allocator record was lost.
                self.allocator.claim(ep.owner, ep.ip)
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise RuntimeError(f"{self.state_path}: unreadable state ({err!r})") from None

    def _save(self) -> None:
        write_json_atomic(self.state_path, {
            "format": STATE_FORMAT,
            "node": self.local.name,
            "allocator": self.allocator.to_dict(),
            "endpoints": [ep.to_dict() for _, ep in sorted(self.endpoints.items())],
        })

    # --- routes ---------------------------------------------------------------------------------

    async def set_nodes(self, nodes: Iterable[NodeRouting]) -> netlink.ReconcileReport:
        """Replace the list of other nodes and converge routes to it."""
        self.nodes = tuple(sorted(nodes))
        return await self.reconcile()

    async def set_service_routes(self, routes: Iterable[IPv4Network]
                                 ) -> netlink.ReconcileReport | None:
        """Replace the service addresses routed to hexlane_host; converge when they
        changed (None when they did not)."""
        wanted = tuple(sorted(set(routes)))
        if wanted == self.service_routes:
            return None
        self.service_routes = wanted
        return await self.reconcile()

    async def reconcile(self) -> netlink.ReconcileReport:
        """Converge to the current plan: write only what changed since the last run (the
        kernel is not read; `resync` does that)."""
        async with self._lock:
            return (await self._apply(detect=False))[1]

    async def resync(self) -> FlushResult:
        """Read back every kernel object this manager owns (links, FDB, neighbours, routes,
        sysctls, the masquerade's maps) and repair what differs from the plan: changed,
        missing or stale behind the agent's back. Each table's reconciler counts its repairs
        (`reconcilers`). Call it on the agent's event loop, in the node's namespace, every
        resync interval; it waits for a CNI call or reconcile in progress. Before `start` it
        does nothing."""
        if self._net is None:
            return FlushResult()
        async with self._lock:
            return (await self._apply(detect=True))[0]

    @property
    def reconcilers(self) -> list[Any]:
        """Every reconciler of this manager (their `name`, `repairs`, `errors`, `status()`)."""
        recs: list[Any] = list(self._net.reconcilers) if self._net is not None else []
        return recs + self._other_reconcilers()

    def _other_reconcilers(self) -> list[Any]:
        """The sysctls' and the masquerade maps' reconcilers (not netlink's)."""
        return [self._sysctls, *(self._masq.reconcilers if self._masq is not None else [])]

    def _plan(self) -> RoutePlan:
        ready = [LocalEndpoint(ep.ip, ep.host_ifname, ep.mac) for ep in self.endpoints.values()
                 if ep.state == "ready"]
        return plan_routes(self.local, self.nodes, self.settings, ready, self.service_routes)

    async def _apply(self, *, detect: bool) -> tuple[FlushResult, netlink.ReconcileReport]:
        """Hand the plan to every reconciler and flush them; with `detect`, read the kernel
        back first (a resync). Call with the lock held."""
        net = self._net
        if net is None:
            raise CNIError(ERR_NOT_AVAILABLE, "endpoint manager not started")
        plan = self._plan()
        net.set_plan(plan, netlink.HostDeviceSpec(self.settings.pod_mtu,
                                                  frozenset({self.router_ip})))
        if detect:
            await net.detect()
            self._sysctls.detect()
        result = await net.flush()
        result.add(self._sysctls.flush())
        if self._masq is not None and self.masquerade is not None:
            result.add(self._masq.configure(plan_masquerade(
                self.local, self.nodes, self.masquerade.native_routing_cidr,
                enabled=self.masquerade.enabled)))
            if detect:
                result.add(self._masq.resync())
        report = net.report()
        for rec in self._other_reconcilers():
            report.failed += [f"{rec.name} {key!r}: {err}" for key, err in
                              rec.last_errors.items()]
        for problem in plan.problems:
            log.warning("routing: %s", problem)
        if report.changed or report.failed:
            log.info("routes: added %s removed %s failed %s", report.added, report.removed,
                     report.failed)
        self.last_reconcile = {"at": time.time(), "added": report.added,
                               "removed": report.removed, "failed": report.failed,
                               "problems": [str(p) for p in plan.problems],
                               **({"resync": True} if detect else {})}
        return result, report

    # --- CNI -------------------------------------------------------------------------------------

    def _result(self, ep: Endpoint) -> dict[str, Any]:
        mtu = self.settings.pod_mtu
        return {
            "cniVersion": "1.1.0",
            "interfaces": [
                {"name": ep.host_ifname, "mac": ep.host_mac, "mtu": mtu},
                {"name": ep.ifname, "mac": ep.mac, "mtu": mtu, "sandbox": ep.netns},
            ],
            "ips": [{"address": f"{ep.ip}/32", "gateway": str(self.router_ip),
                     "interface": 1}],
            "routes": [{"dst": "0.0.0.0/0", "gw": str(self.router_ip)}],
            "dns": {},
        }

    async def add(self, req: CNIRequest) -> dict[str, Any]:
        """CNI ADD. A repeated ADD of the same attachment answers the same result."""
        if not os.path.exists(req.netns):
            raise CNIError(ERR_INVALID_ENV, "CNI_NETNS does not exist", req.netns)
        async with self._lock:
            existing = self.endpoints.get(req.owner)
            if existing is not None and existing.netns != req.netns:
                raise CNIError(ERR_SETUP_FAILED, "attachment exists in another namespace",
                               f"{req.owner} is attached in {existing.netns}; DEL it first")
            if existing is not None and existing.state == "ready":
                facts = await self._inspect(existing)
                if facts.exists and f"{existing.ip}/32" in facts.addresses:
                    return self._result(existing)
            name = host_ifname(req.container_id)
            for other in self.endpoints.values():
                if other.host_ifname == name and other.owner != req.owner:
                    raise CNIError(ERR_SETUP_FAILED, "host interface name in use",
                                   f"{name} belongs to {other.owner}")
            fresh = req.owner not in self.allocator.allocations
            try:
                ip = self.allocator.allocate(req.owner)
            except PodIPsExhausted as err:
                self.ipam_events["exhausted"] += 1
                raise CNIError(ERR_IPAM_EXHAUSTED, "no free pod IP", str(err)) from None
            if fresh:
                self.ipam_events["allocate"] += 1
            ep = existing or Endpoint(
                container_id=req.container_id, ifname=req.ifname, netns=req.netns,
                network=req.network, ip=ip, host_ifname=name,
                mac=endpoint_mac(req.container_id, req.ifname),
                pod_namespace=req.args.get("K8S_POD_NAMESPACE", ""),
                pod_name=req.args.get("K8S_POD_NAME", ""), created_at=time.time())
            ep.state = "creating"
            self.endpoints[ep.owner] = ep
            self._save()  # the IP is taken on disk before any interface exists
            try:
                links = await netlink.create_endpoint_links(
                    self.ipr, host_ifname=ep.host_ifname, netns=ep.netns,
                    pod_ifname=ep.ifname, pod_mac=ep.mac, ip=ep.ip, router=self.router_ip,
                    mtu=self.settings.pod_mtu)
                ep.host_mac = links.host_mac
            except (OSError, NetlinkError) as err:
                await self._forget(ep)
                raise CNIError(ERR_SETUP_FAILED, "endpoint setup failed", str(err)) from None
            # Its /32 route and permanent neighbour entry: the reconcilers write those two
            # (only what changed), before the pod is answered.
            ep.state = "ready"
            try:
                await self._apply(detect=False)
                failed = self._endpoint_errors(ep)
            except (OSError, NetlinkError) as err:
                failed = [str(err)]
            if failed:
                ep.state = "creating"
                await self._forget(ep)
                raise CNIError(ERR_SETUP_FAILED, "endpoint setup failed", "; ".join(failed))
            self._save()
            log.info("ADD %s: %s on %s (pod %s/%s)", ep.owner, ep.ip, ep.host_ifname,
                     ep.pod_namespace, ep.pod_name)
            return self._result(ep)

    def _endpoint_errors(self, ep: Endpoint) -> list[str]:
        """Why the endpoint's route or neighbour entry could not be written (if so)."""
        net = self._net
        if net is None:
            return ["endpoint manager not started"]
        route = net.routes.last_errors.get(IPv4Network(f"{ep.ip}/32"))
        neigh = net.neighbors.last_errors.get((ep.host_ifname, ep.ip))
        return [f"{what}: {err}" for what, err in (("route", route), ("neighbour", neigh))
                if err is not None]

    async def _forget(self, ep: Endpoint) -> None:
        """Remove the endpoint's veth (its route and neighbour entry go with it) and IP."""
        await netlink.delete_link(self.ipr, ep.host_ifname)
        self.endpoints.pop(ep.owner, None)
        self._release(ep.owner)
        self._save()
        await self._apply(detect=False)  # out of the desired tables

    def _release(self, owner: str) -> bool:
        """Free the owner's pod IP; False when it had none."""
        if self.allocator.release(owner) is None:
            return False
        self.ipam_events["release"] += 1
        return True

    async def delete(self, req: CNIRequest) -> bool:
        """CNI DEL: remove the veth, the route and the IP. Idempotent; False when nothing was."""
        async with self._lock:
            ep = self.endpoints.get(req.owner)
            if ep is None:
                # An ADD that died before recording leaves at most an unrecorded host link.
                name = host_ifname(req.container_id)
                if all(other.host_ifname != name for other in self.endpoints.values()):
                    await netlink.delete_link(self.ipr, name)
                if self._release(req.owner):
                    self._save()
                return False
            await self._forget(ep)
            log.info("DEL %s: released %s", ep.owner, ep.ip)
            return True

    async def _inspect(self, ep: Endpoint) -> netlink.PodInterfaceFacts:
        try:
            return await netlink.inspect_pod_interface(ep.netns, ep.ifname)
        except OSError:
            return netlink.PodInterfaceFacts(False)

    async def check(self, req: CNIRequest) -> None:
        """CNI CHECK: the attachment exists and matches what ADD returned."""
        ep = self.endpoints.get(req.owner)
        if ep is None:
            raise CNIError(ERR_UNKNOWN_CONTAINER, "unknown container",
                           f"no endpoint for {req.owner}")
        problems = []
        if ep.state != "ready":
            problems.append(f"endpoint is {ep.state}")
        if req.netns and req.netns != ep.netns:
            problems.append(f"netns is {ep.netns}, not {req.netns}")
        if await netlink.link_index(self.ipr, ep.host_ifname) is None:
            problems.append(f"host interface {ep.host_ifname} is missing")
        facts = await self._inspect(ep)
        if not facts.exists:
            problems.append(f"{ep.ifname} is missing in {ep.netns}")
        else:
            if f"{ep.ip}/32" not in facts.addresses:
                problems.append(f"{ep.ifname} lacks {ep.ip}/32 (has {facts.addresses})")
            if facts.default_gateway != str(self.router_ip):
                problems.append(f"default route via {facts.default_gateway}, "
                                f"want {self.router_ip}")
            if facts.mac != ep.mac:
                problems.append(f"{ep.ifname} MAC is {facts.mac}, want {ep.mac}")
        if req.prev_result is not None:
            prev_ips = {ip.get("address") for ip in req.prev_result.get("ips", [])
                        if isinstance(ip, Mapping)}
            if f"{ep.ip}/32" not in prev_ips:
                problems.append(f"prevResult has {sorted(map(str, prev_ips))}, "
                                f"endpoint has {ep.ip}/32")
        if problems:
            raise CNIError(ERR_CHECK_MISMATCH, "endpoint does not match", "; ".join(problems))

    async def gc(self, network: str, valid: Sequence[tuple[str, str]]) -> list[str]:
        """CNI GC: forget every attachment of `network` not in `valid` (containerID, ifname)."""
        keep = {f"{cid}/{ifname}" for cid, ifname in valid}
        removed = []
        for owner, ep in list(self.endpoints.items()):
            if owner not in keep and (not network or ep.network in ("", network)):
                await self.delete(CNIRequest(ep.container_id, ep.ifname, ep.netns, network))
                removed.append(owner)
        return removed

    def status(self) -> dict[str, Any]:
        free = self.allocator.capacity - sum(
            1 for ip in self.allocator.allocations.values() if ip in self.pod_cidr)
        return {
            "ready": self.started and free > 0,
            "node": self.local.name,
            "podCIDR": str(self.pod_cidr),
            "routerIP": str(self.router_ip),
            "routingMode": self.settings.mode,
            "autoDirectNodeRoutes": self.settings.auto_direct_node_routes,
            "endpoints": len(self.endpoints),
            "freeIPs": free,
            "nodes": [n.name for n in self.nodes],
            "lastReconcile": self.last_reconcile,
            "masquerade": self._masquerade_status(),
            "reconcilers": [rec.status() for rec in self.reconcilers],
        }

    def _masquerade_status(self) -> dict[str, Any]:
        if self.masquerade is None or self._masq is None:
            return {"enabled": False}
        return {
            "enabled": self.masquerade.enabled,
            "mode": "BPF",
            "device": self.masquerade.device,
            "nativeRoutingCIDR": str(self.masquerade.native_routing_cidr or ""),
            "nonMasqueradeCIDRs": sorted(map(str, self._masq.nonmasq_prefixes())),
            "counters": self._masq.counters(),
            "translations": [
                {k: str(v) if isinstance(v, IPv4Address) else v for k, v in asdict(e).items()}
                for e in self._masq.entries()],
        }

    def list_endpoints(self) -> list[dict[str, Any]]:
        return [ep.to_dict() for _, ep in sorted(self.endpoints.items())]

    # --- DELs queued by the plugin while the agent was down -------------------------------------

    async def drain_delete_queue(self) -> int:
        """Carry out the DELs the plugin queued; returns how many were done."""
        done = 0
        for path in sorted((self.state_dir / DEL_QUEUE_DIR).glob("*.json")):
            try:
                body = json.loads(path.read_text())
                await self.delete(CNIRequest.from_json(body, need_netns=False))
                done += 1
            except (ValueError, CNIError) as err:
                log.warning("queued DEL %s dropped: %s", path.name, err)
            path.unlink(missing_ok=True)
        if done:
            log.info("carried out %d queued DEL(s)", done)
        return done
