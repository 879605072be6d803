"""Which Services one node competes for, and what its ARP responder holds (pure).

As Cilium's `pkg/l2announcer`:
- a Service is considered when it has an external IP or a LoadBalancer ingress IP and its
  `loadBalancerClass` is unset or `io.cilium/l2-announcer`;
- a policy applies on this node when its node selector matches the node's labels, and to a
  Service when its service selector matches the Service's labels plus
  `io.kubernetes.service.namespace` and `io.kubernetes.service.name`, and the policy announces
  a kind of IP the Service has (`externalIPs`, `loadBalancerIPs`); several policies may apply;
- the node competes for each such Service through one Lease, `cilium-l2announce-<ns>-<name>`
  in the agent's namespace, and while it holds it answers ARP for the Service's IPs of the
  applying policies' kinds on each device the policies select.

In hexlane's own election (`l2announcements.election: hexlane`) there are no Leases: every
agent computes, from the same API objects, which nodes are eligible for each IP
(`eligible_nodes`), and with the heartbeat's liveness the same owner for each IP
(`hexlane.l2.owner`); a node's responder holds the entries of the IPs it owns
(`owned_entries`).

One difference: a node none of whose devices a policy selects does not compete (Cilium's
would win the Lease and announce nothing, leaving the IP unreachable). IPv6 addresses are not
announced (no NDP responder).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.service import Service

from .policy import Policy

LB_CLASS_L2 = "io.cilium/l2-announcer"
LEASE_PREFIX = "cilium-l2announce"
SERVICE_NAMESPACE_LABEL = "io.kubernetes.service.namespace"
SERVICE_NAME_LABEL = "io.kubernetes.service.name"

ServiceKey = tuple[str, str]  # (namespace, name)
Entry = tuple[str, str]  # (IPv4 address, device): one responder map entry


def lease_name(service: ServiceKey) -> str:
    namespace, name = service
    return f"{LEASE_PREFIX}-{namespace}-{name}"


def service_labels(svc: Service) -> dict[str, str]:
    """The labels policies select a Service by (its own plus its namespace and name)."""
    return {**svc.labels, SERVICE_NAMESPACE_LABEL: svc.namespace, SERVICE_NAME_LABEL: svc.name}


@dataclass(frozen=True, slots=True)
class Candidate:
    """A Service this node competes for, and what it announces while it leads."""

    service: ServiceKey
    policies: tuple[str, ...]
    entries: frozenset[Entry]

    @property
    def lease(self) -> str:
        return lease_name(self.service)


def _ipv4(addresses: Iterable[str]) -> list[str]:
    out = []
    for a in addresses:
        try:
            if ipaddress.ip_address(a).version == 4:
                out.append(a)
        except ValueError:
            continue
    return out


def _announced_ips(svc: Service, policies: Sequence[Policy]
                   ) -> Iterator[tuple[Policy, list[str]]]:
    """Each policy (of these, in order) that applies to `svc`, with the IPv4 addresses of the
    Service it announces; nothing for a Service of another loadBalancerClass."""
    if svc.load_balancer_class not in (None, LB_CLASS_L2):
        return
    external = _ipv4(svc.external_ips)
    ingress = _ipv4(i.ip for i in svc.ingress if i.ip)
    if not external and not ingress:
        return
    labels = service_labels(svc)
    for policy in policies:
        ips = (external if policy.external_ips else []) + \
            (ingress if policy.load_balancer_ips else [])
        if ips and policy.selects_service(labels):
            yield policy, ips


def candidates(node_labels: Mapping[str, str], devices: Sequence[str],
               policies: Iterable[Policy], services: Iterable[Service]
               ) -> dict[ServiceKey, Candidate]:
    """Every Service this node competes for (see the module docstring)."""
    on_node = sorted((p for p in policies if p.selects_node(node_labels)),
                     key=lambda p: p.name)
    policy_devices = {p.name: p.devices(devices) for p in on_node}
    out: dict[ServiceKey, Candidate] = {}
    for svc in services:
        names: list[str] = []
        entries: set[Entry] = set()
        for policy, ips in _announced_ips(svc, on_node):
            names.append(policy.name)
            entries.update((ip, dev) for ip in ips for dev in policy_devices[policy.name])
        if entries:
            key = (svc.namespace, svc.name)
            out[key] = Candidate(key, tuple(names), frozenset(entries))
    return out


def responder_entries(candidates: Mapping[ServiceKey, Candidate],
                      leading: Iterable[ServiceKey]) -> dict[Entry, tuple[ServiceKey, ...]]:
    """What the ARP responder holds: every entry of the Services this node leads, with the
    Services that want it (two Services may share an IP)."""
    out: dict[Entry, list[ServiceKey]] = {}
    for key in sorted(set(leading)):
        cand = candidates.get(key)
        if cand is None:
            continue
        for entry in cand.entries:
            out.setdefault(entry, []).append(key)
    return {entry: tuple(keys) for entry, keys in out.items()}


def owned_entries(candidates: Mapping[ServiceKey, Candidate], owned: Iterable[str]
                  ) -> dict[Entry, tuple[ServiceKey, ...]]:
    """What the responder holds in hexlane's election: the entries of the IPs this node owns
    (`hexlane.l2.owner`), with the Services that want each."""
    ips = set(owned)
    out: dict[Entry, list[ServiceKey]] = {}
    for key in sorted(candidates):
        for entry in candidates[key].entries:
            if entry[0] in ips:
                out.setdefault(entry, []).append(key)
    return {entry: tuple(keys) for entry, keys in out.items()}


def local_endpoint_nodes(slices: Iterable[EndpointSlice]) -> dict[ServiceKey, frozenset[str]]:
    """Service -> the nodes with a ready endpoint of it (for externalTrafficPolicy: Local)."""
    out: dict[ServiceKey, set[str]] = {}
    for eps in slices:
        if not eps.service_name:
            continue
        nodes = out.setdefault((eps.namespace, eps.service_name), set())
        nodes.update(e.node_name for e in eps.endpoints
                     if e.node_name and e.conditions.is_ready)
    return {key: frozenset(nodes) for key, nodes in out.items()}


def eligible_nodes(nodes: Mapping[str, Mapping[str, str]], policies: Iterable[Policy],
                   services: Iterable[Service],
                   local_endpoints: Mapping[ServiceKey, frozenset[str]]
                   ) -> dict[str, frozenset[str]]:
    """IP -> the nodes that may announce it, from what every agent sees alike (the API's
    Nodes, policies, Services and EndpointSlices; not liveness): a node is eligible for a
    Service's IP when a policy applying to the Service for that kind of IP selects the node,
    and, for `externalTrafficPolicy: Local`, when it has a ready endpoint of the Service
    (elsewhere the datapath would drop the traffic: cilium#27800). Several Services on one
    IP (a sharing key): the nodes eligible for all of them."""
    pols = sorted(policies, key=lambda p: p.name)
    out: dict[str, frozenset[str]] = {}
    for svc in services:
        local = local_endpoints.get((svc.namespace, svc.name), frozenset()) \
            if svc.external_traffic_policy == "Local" else None
        per_ip: dict[str, set[str]] = {}
        for policy, ips in _announced_ips(svc, pols):
            chosen = {n for n, node_labels in nodes.items() if policy.selects_node(node_labels)
                      and (local is None or n in local)}
            for ip in ips:
                per_ip.setdefault(ip, set()).update(chosen)
        for ip, chosen in per_ip.items():
            out[ip] = out[ip] & frozenset(chosen) if ip in out else frozenset(chosen)
    return out


def stale_leases(leases: Iterable[Mapping[str, object]]) -> list[str]:
    """Names of announcement Leases nobody holds (released), to garbage-collect."""
    out = []
    for lease in leases:
        meta = lease.get("metadata")
        spec = lease.get("spec")
        name = meta.get("name") if isinstance(meta, Mapping) else None
        holder = spec.get("holderIdentity") if isinstance(spec, Mapping) else None
        if isinstance(name, str) and name.startswith(LEASE_PREFIX + "-") and not holder:
            out.append(name)
    return sorted(out)
