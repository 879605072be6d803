"""The agent's status: the document it answers, whether it is healthy and why not, its text.

`AgentStatus.document()` gathers the parts' facts into one JSON document (`GET /v1/status`,
see docs/agent.md for every key); `health(status)` decides from that document alone whether
the agent is healthy — the datapath programs it expects are attached, the API server
answered recently and every informer synced, the last routing sync is recent, every
controller succeeded on its last run — and lists the reasons when not. `format_status`
renders it like `cilium status` (`hexlane status`). `health` and `format_status` are pure
and take the document's own `now`, so they need no clock.

`ApiContact` keeps what the document says of the API server: when it last answered (the
`heartbeat` controller's GET /version) and when an informer last told of a change.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hexlane import __version__
from hexlane.config import Values
from hexlane.datapath import netlink
from hexlane.datapath.masq import PROGRAM_EGRESS, PROGRAM_INGRESS
from hexlane.k8s.client import KubeClient
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.routing.nodes import pod_cidr_source
from hexlane.routing.routes import HOST_DEVICE

from . import cniconf
from .endpoints import EndpointManager
from .hubble import HubblePart
from .l2 import L2Announcer
from .loadbalancer import LoadBalancer
from .nodemanager import NodeManager
from .policy import PolicyEnforcer
from .programs import attached_programs

#: A sync older than this many sync intervals makes the agent unhealthy.
STALE_SYNC_INTERVALS = 3.0


class ApiContact:
    """When the API server last answered (and why not since), and last told of a change."""

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.last_contact: float | None = None
        self.error = ""
        self.last_event: float | None = None

    def event(self, *_objects: Any) -> None:
        """An informer handler (add, update or delete): a change was told."""
        self.last_event = time.time()

    async def heartbeat(self) -> None:
        try:
            await self.client.version()
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"
            raise
        self.last_contact = time.time()
        self.error = ""


def find_kube_proxy(proc: Path = Path("/proc")) -> int | None:
    """The pid of a kube-proxy process on this machine, or None."""
    for entry in proc.iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "comm").read_text().strip() == "kube-proxy":
                    return int(entry.name)
    return None


class AgentStatus:
    """The status document, gathered from the agent's parts at each request."""

    def __init__(self, node: str, values: Values, *, sync_interval: float,
                 cni: cniconf.CniFiles, api: ApiContact,
                 informers: Mapping[str, Informer], nodes: NodeManager,
                 endpoints: Callable[[], EndpointManager | None], lb: LoadBalancer | None,
                 l2: L2Announcer | None, controllers: Sequence[Controller],
                 reconcilers: Callable[[], Sequence[Any]],
                 hubble: HubblePart | None = None,
                 policy: PolicyEnforcer | None = None) -> None:
        self.node = node
        self.values = values
        self.sync_interval = sync_interval
        self.cni = cni
        self.api = api
        self.informers = informers
        self.nodes = nodes
        self.endpoints = endpoints
        self.lb = lb
        self.policy = policy
        self.l2 = l2
        self.controllers = controllers
        self.reconcilers = reconcilers
        self.hubble = hubble

    def _expected_programs(self) -> list[dict[str, str]]:
        manager = self.endpoints()
        device = self.nodes.device
        expected = []
        if manager is not None and manager.masquerade is not None:
            expected += [{"device": device, "direction": "egress", "name": PROGRAM_EGRESS},
                         {"device": device, "direction": "ingress", "name": PROGRAM_INGRESS}]
        if self.lb is not None:
            # the tunnel exists once there is a peer to reach through it
            expected += self.lb.expected_programs(
                tunnel=self.values.routing_mode == "tunnel" and bool(self.nodes.peers))
        return expected

    async def _datapath(self) -> dict[str, Any]:
        datapath: dict[str, Any] = {"expected": self._expected_programs(), "programs": []}
        try:
            async with netlink.iproute_in() as ipr:
                programs = await attached_programs(ipr)
            datapath["programs"] = [p.to_dict() for p in programs if p.is_ours]
        except Exception as err:  # the report must come out even when a query fails
            datapath["error"] = f"tc query failed: {err}"
        return datapath

    def _kube_proxy_replacement(self) -> dict[str, Any]:
        enabled = self.values.kube_proxy_replacement
        doc: dict[str, Any] = {"enabled": enabled}
        if self.lb is not None and self.lb.reconciler is not None:
            doc.update(self.lb.status())
        elif enabled:
            doc["note"] = "service load balancer not loaded yet"
        elif (pid := find_kube_proxy()) is not None:
            doc["note"] = f"kube-proxy handles Services (pid {pid})"
        else:
            doc["note"] = ("Services will not work on this node: kubeProxyReplacement is "
                           "off and no kube-proxy runs here")
        return doc

    def _hubble(self) -> dict[str, Any]:
        if self.hubble is not None:
            return self.hubble.status()
        doc: dict[str, Any] = {"enabled": False}
        if self.values.hubble.enabled:
            doc["note"] = ("flows come from the service load balancer's programs: "
                           "kubeProxyReplacement is off")
        return doc

    async def document(self) -> dict[str, Any]:
        """The document `GET /v1/status` answers (see docs/agent.md)."""
        values = self.values
        now = time.time()
        manager = self.endpoints()
        ep = manager.status() if manager is not None else {}
        local = self.nodes.local
        device = self.nodes.device
        allocator = manager.allocator if manager is not None else None
        api = self.api
        doc: dict[str, Any] = {
            "node": self.node,
            "version": __version__,
            "now": now,
            "waitingFor": "" if manager is not None else self.nodes.waiting_for,
            "kubeProxyReplacement": self._kube_proxy_replacement(),
            "l2": self.l2.status() if self.l2 is not None else {"enabled": False},
            "hubble": self._hubble(),
            "policy": self.policy.document() if self.policy is not None else {
                "mode": "never" if self.lb is not None else "",
                "note": "" if self.lb is not None else
                "network policy is enforced in the service load balancer's programs: "
                "kubeProxyReplacement is off"},
            "kubernetes": {
                "server": api.client.server,
                # k8sClientRateLimit as the client enforces it (qps <= 0: unlimited)
                "rateLimit": {"qps": api.client.limiter.qps, "burst": api.client.limiter.burst},
                "reachable": api.last_contact is not None and not api.error,
                "error": api.error,
                "lastContact": api.last_contact,
                "lastEvent": api.last_event,
                "informers": {name: {"synced": inf.synced.is_set(), "objects": len(inf.cache),
                                     "events": inf.stats.events, "errors": inf.stats.errors}
                              for name, inf in self.informers.items()},
            },
            "ipam": {
                "mode": values.ipam.mode,
                "source": pod_cidr_source(values.ipam.mode),
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
                "device": device,
                "nodes": [{"name": n.name, "nodeIP": str(n.node_ip),
                           "podCIDRs": [str(c) for c in n.pod_cidrs]}
                          for n in (manager.nodes if manager is not None else ())],
                "lastReconcile": ep.get("lastReconcile", {}),
                "problems": self.nodes.problems,
            },
            "masquerading": {
                "enabled": manager is not None and manager.masquerade is not None,
                "mode": "BPF",
                "device": device,
                "nativeRoutingCIDR": str(values.ipv4_native_routing_cidr or ""),
                **({"counters": ep["masquerade"].get("counters", {})}
                   if ep.get("masquerade", {}).get("counters") else {}),
            },
            "datapath": await self._datapath(),
            "endpointManager": {"started": bool(manager and manager.started),
                                "endpoints": ep.get("endpoints", 0)},
            "cni": {"confFile": str(self.cni.conf_dir / cniconf.CONF_NAME),
                    "plugin": str(self.cni.bin_dir / cniconf.PLUGIN_NAME)},
            "controllers": [c.status() for c in self.controllers],
            "reconcilers": {"resyncInterval": values.resync_interval,
                            "tables": [r.status() for r in self.reconcilers()]},
            "lastSync": self.nodes.last_sync,
            "syncInterval": self.sync_interval,
        }
        reasons = health(doc)
        doc["health"] = {"ok": not reasons, "reasons": reasons}
        return doc


def _age(now: float, then: Any) -> float | None:
    return now - float(then) if isinstance(then, (int, float)) else None


def health(status: Mapping[str, Any]) -> list[str]:
    """Why the agent is not healthy; an empty list means healthy."""
    reasons: list[str] = []
    now = float(status.get("now") or 0.0)
    if not status.get("endpointManager", {}).get("started"):
        waiting = status.get("waitingFor")
        reasons.append("endpoint manager not started: "
                       + (f"waiting for {waiting}" if waiting else "starting"))
    datapath = status.get("datapath") or {}
    attached = {(p.get("device"), p.get("direction"), p.get("name"))
                for p in datapath.get("programs") or []}
    for want in datapath.get("expected") or []:
        key = (want.get("device"), want.get("direction"), want.get("name"))
        if key not in attached:
            reasons.append(f"datapath: {key[2]} not attached at tc {key[1]} of {key[0]}")
    if datapath.get("error"):
        reasons.append(f"datapath: {datapath['error']}")
    k8s = status.get("kubernetes") or {}
    unsynced = [name for name, inf in (k8s.get("informers") or {}).items()
                if not inf.get("synced")]
    if unsynced:
        reasons.append("kubernetes: not synced yet: " + ", ".join(sorted(unsynced)))
    if not k8s.get("reachable"):
        reasons.append(f"kubernetes: API server {k8s.get('server', '')} unreachable"
                       + (f": {k8s['error']}" if k8s.get("error") else ""))
    interval = float(status.get("syncInterval") or 0.0)
    age = _age(now, status.get("lastSync"))
    if age is None:
        reasons.append("no routing sync yet")
    elif interval and age > STALE_SYNC_INTERVALS * interval:
        reasons.append(f"last sync {age:.0f}s ago (every {interval:.0f}s expected)")
    for ctrl in status.get("controllers") or []:
        if ctrl.get("consecutiveFailures"):
            reasons.append(f"controller {ctrl.get('name')} failing: {ctrl.get('lastError')}")
    return reasons


def _rate_limit_text(limit: Any) -> str:
    """The API client's limiter (`k8sClientRateLimit.qps/burst`) as the agent uses it."""
    if not isinstance(limit, dict):
        return ""
    qps = float(limit.get("qps") or 0)
    if qps <= 0:
        return "   client rate limit: none"
    return f"   client rate limit: {qps:g} qps, burst {int(limit.get('burst') or 0)}"


def _ago(now: float, then: Any) -> str:
    age = _age(now, then)
    if age is None:
        return "never"
    return f"{max(age, 0.0):.1f}s ago"


def _onoff(value: Any) -> str:
    return "Enabled" if value else "Disabled"


def _rows(status: Mapping[str, Any]) -> list[tuple[str, str]]:
    now = float(status.get("now") or 0.0)
    rows: list[tuple[str, str]] = []
    kpr = status.get("kubeProxyReplacement") or {}
    detail = kpr.get("note") or ""
    if "services" in kpr:
        detail = (f"{kpr['services']} services, {kpr.get('backends', 0)} backends, "
                  f"{kpr.get('algorithm', '')}, {kpr.get('mode', '')}"
                  + (f", error: {kpr['lastError']}" if kpr.get("lastError") else ""))
    rows.append(("KubeProxyReplacement",
                 f"{'True' if kpr.get('enabled') else 'False'}"
                 + (f"   [{detail}]" if detail else "")))
    l2 = status.get("l2") or {}
    if l2.get("enabled"):
        rows.append(("L2 announcements",
                     f"Enabled   {len(l2.get('announcements') or [])} IPs announced on "
                     f"{', '.join(l2.get('devices') or []) or '(no device)'}   leading "
                     f"{l2.get('leading', 0)}/{l2.get('candidates', 0)} Services competed for"
                     + (f"   election hexlane, alive {', '.join(hb.get('alive') or [])}"
                        + (f", unreachable {', '.join(hb['unreachable'])}"
                           if hb.get("unreachable") else "")
                        if (hb := l2.get("heartbeat")) is not None
                        else f"   election lease, lease {l2.get('leaseDuration', 0):g}s")
                     + (f"   error: {l2['lastError']}" if l2.get("lastError") else "")))
    else:
        rows.append(("L2 announcements", "Disabled"))
    hubble = status.get("hubble") or {}
    if hubble.get("enabled"):
        events = hubble.get("events") or {}
        max_flows = int(hubble.get("maxFlows") or 0)
        state = ("Ok" if hubble.get("serving") else
                 f"Warning: {hubble['error']}" if hubble.get("error") else "Starting")
        rows.append(("Hubble",
                     f"{state}   Current/Max Flows: "
                     f"{hubble.get('flows', 0):,}/{max_flows:,} "
                     f"({100 * int(hubble.get('flows', 0)) / max(max_flows, 1):.2f}%), "
                     f"Flows/s: {hubble.get('flowsRate', 0):.2f}   events received "
                     f"{events.get('received', 0):,}, lost {events.get('lost', 0):,}"
                     + (f"   {hubble['listenAddress']} "
                        f"({'mTLS' if hubble.get('tls') else 'plaintext'})"
                        if hubble.get("listenAddress") else "")
                     + _l7_text(hubble.get("l7"), events)
                     + f"   Metrics: {_hubble_metrics(hubble.get('metrics') or {})}"))
    else:
        rows.append(("Hubble", "Disabled" + (f"   [{hubble['note']}]"
                                            if hubble.get("note") else "")))
    rows.append(("Policy", _policy_text(status.get("policy") or {})))
    k8s = status.get("kubernetes") or {}
    informers = k8s.get("informers") or {}
    synced = sum(1 for i in informers.values() if i.get("synced"))
    rows.append(("Kubernetes",
                 f"{'Ok' if k8s.get('reachable') else 'Unreachable'}   {k8s.get('server', '')}"
                 f"   (last contact {_ago(now, k8s.get('lastContact'))}, "
                 f"last event {_ago(now, k8s.get('lastEvent'))}, "
                 f"informers synced {synced}/{len(informers)})"
                 + _rate_limit_text(k8s.get("rateLimit"))))
    ipam = status.get("ipam") or {}
    if ipam.get("podCIDR"):
        rows.append(("IPAM", f"{ipam.get('mode')}   pod CIDR {ipam.get('podCIDR')} "
                             f"(from {ipam.get('source')})   router {ipam.get('routerIP')}   "
                             f"{ipam.get('allocated')}/{ipam.get('capacity')} allocated"))
    else:
        rows.append(("IPAM", f"{ipam.get('mode')}   waiting for a pod CIDR "
                             f"({ipam.get('source')})"))
    routing = status.get("routing") or {}
    rows.append(("Routing", f"Network: {str(routing.get('mode', '')).capitalize()}   "
                            f"autoDirectNodeRoutes: {_onoff(routing.get('autoDirectNodeRoutes'))}"
                            f"   endpointRoutes: {_onoff(routing.get('endpointRoutes'))}   "
                            f"Host: {routing.get('hostDevice', '')}"))
    for node in routing.get("nodes") or []:
        rows.append(("", f"node {node['name']} {node['nodeIP']} "
                         f"pod CIDRs {', '.join(node['podCIDRs'])}"))
    masq = status.get("masquerading") or {}
    if masq.get("enabled"):
        rows.append(("Masquerading", f"BPF   [{masq.get('device')}]   "
                                     f"{masq.get('nativeRoutingCIDR') or '(no native CIDR)'}"
                                     "   [IPv4: Enabled]"))
    else:
        rows.append(("Masquerading", "Disabled"))
    datapath = status.get("datapath") or {}
    programs = datapath.get("programs") or []
    if programs:
        for i, p in enumerate(programs):
            rows.append(("Datapath programs" if i == 0 else "",
                         f"{p['device']} tc {p['direction']}: {p['name']} (id {p['id']})"))
    else:
        rows.append(("Datapath programs", "none attached"))
    rows.append(("Endpoints", str((status.get("endpointManager") or {}).get("endpoints", 0))))
    controllers = status.get("controllers") or []
    healthy = sum(1 for c in controllers if c.get("healthy"))
    rows.append(("Controllers", f"{healthy}/{len(controllers)} healthy"))
    for c in controllers:
        if not c.get("healthy"):
            rows.append(("", f"{c['name']}: {c.get('lastError') or 'not run yet'}"))
    recs = status.get("reconcilers") or {}
    tables = recs.get("tables") or []
    if tables:
        repairs = sum(int(t.get("repairs", 0)) for t in tables)
        pending = sum(int(t.get("pending", 0)) for t in tables)
        rows.append(("Kernel objects", f"{sum(int(t.get('entries', 0)) for t in tables)} in "
                                       f"{len(tables)} tables   pending {pending}   repaired "
                                       f"{repairs}   resync every "
                                       f"{recs.get('resyncInterval', 0):g}s"))
        for t in tables:
            for key, error in (t.get("failing") or {}).items():
                rows.append(("", f"{t['table']} {key}: {error}"))
    rows.append(("Last sync", _ago(now, status.get("lastSync"))))
    reasons = health(status)
    rows.append(("Health", "OK" if not reasons else "Not healthy"))
    rows.extend(("", r) for r in reasons)
    return rows


def _l7_text(l7: dict[str, Any] | None, events: dict[str, Any]) -> str:
    if not l7:
        return ""
    if not l7.get("enabled"):
        return "   L7: off"
    ports = [f"DNS {','.join(map(str, l7.get('dnsPorts') or ()))}" if l7.get("dnsPorts")
             else "", f"HTTP {','.join(map(str, l7.get('httpPorts') or ()))}"
             if l7.get("httpPorts") else ""]
    unreadable = int(events.get("unreadable") or 0)
    return (f"   L7: {', '.join(p for p in ports if p) or 'no ports'}"
            + (f" ({unreadable:,} unreadable)" if unreadable else ""))


def format_status(status: Mapping[str, Any]) -> str:
    """The readable summary `hexlane status` prints."""
    rows = _rows(status)
    width = max(len(k) for k, _ in rows) + 2
    lines = [f"{(k + ':') if k else '':<{width}}{v}" for k, v in rows]
    return "\n".join(lines) + "\n"


def brief(status: Mapping[str, Any]) -> tuple[bool, Sequence[str]]:
    """`hexlane status --brief`: (healthy, reasons)."""
    reasons = health(status)
    return not reasons, reasons


def _hubble_metrics(metrics: dict[str, Any]) -> str:
    """Cilium's "Metrics:" of the Hubble line, with where they are served."""
    if not metrics.get("enabled"):
        return "Disabled"
    if metrics.get("error"):
        return f"Warning: {metrics['error']}"
    if not metrics.get("serving"):
        return "Starting"
    return f"Ok ({metrics.get('address')}/metrics: {', '.join(metrics.get('metrics') or ())})"


def _policy_text(policy: Mapping[str, Any]) -> str:
    if not policy.get("loaded"):
        return "Disabled" + (f"   [{policy['note']}]" if policy.get("note") else
                             "   (policyEnforcementMode never)" if policy.get("mode") == "never"
                             else "")
    endpoints = policy.get("endpoints") or {}
    text = (f"{'Auditing' if policy.get('audit') else 'Enforcing'} "
            f"(mode {policy.get('mode')})   {policy.get('enforced', 0)}/"
            f"{len(endpoints)} endpoints enforced, {policy.get('policyEntries', 0)} policy "
            f"entries, {policy.get('ipcacheEntries', 0)} ipcache entries")
    if policy.get("waiting"):
        text += f"   waiting for identities: {', '.join(policy['waiting'])}"
    if policy.get("problems"):
        text += f"   problems: {'; '.join(policy['problems'])}"
    return text
