"""The agent's status report: whether it is healthy and why not, and how it reads (pure).

The daemon gathers facts into one JSON document (`GET /v1/status`, see docs/agent.md);
`health(status)` decides from that document alone whether the agent is healthy — the
datapath programs it expects are attached, the API server answered recently and every
informer synced, the last routing sync is recent, every controller succeeded on its last
run — and lists the reasons when not. `format_status` renders it like `cilium status`.
Both take the document's own `now`, so they need no clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: A sync older than this many sync intervals makes the agent unhealthy.
STALE_SYNC_INTERVALS = 3.0


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
    k8s = status.get("kubernetes") or {}
    informers = k8s.get("informers") or {}
    synced = sum(1 for i in informers.values() if i.get("synced"))
    rows.append(("Kubernetes",
                 f"{'Ok' if k8s.get('reachable') else 'Unreachable'}   {k8s.get('server', '')}"
                 f"   (last contact {_ago(now, k8s.get('lastContact'))}, "
                 f"last event {_ago(now, k8s.get('lastEvent'))}, "
                 f"informers synced {synced}/{len(informers)})"))
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
