"""The agent's network policy: NetworkPolicies, pods and identities into the datapath's tables.

The `policy` controller (triggered by the informers of every Pod, Namespaces,
CiliumIdentities, NetworkPolicies and Nodes, and every interval) runs `sync`:

1. every endpoint pod of the cluster with its identity label set (`policy.identity.pod_labels`,
   the same function the allocator uses, so the label sets match the CiliumIdentities'); this
   node's pods are the allocator's (`identities.py`), which allocates their numbers;
2. `policy.node.node_policy` (pure): the ipcache (pods by identity, this node as host, the
   others as remote-node, the policies' CIDRs, world) and each local endpoint's policy;
3. `datapath.policy.PolicyDatapath`: the three maps set to that and flushed, only what
   changed written (the one reconciler), read back at every resync.

Enforcement runs in the load balancer's pod hooks (`bpf/policy.h`), so it needs
kubeProxyReplacement; `policyEnforcementMode: never` leaves every table empty (nothing
enforced). Nothing is kept on disk: the API's objects decide everything, so a restarted agent
writes the same tables (the pinned maps kept enforcing meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from hexlane.datapath.policy import PolicyDatapath
from hexlane.datapath.reconcile import FlushResult, Reconciler
from hexlane.k8s.informer import Informer
from hexlane.model.errors import InputError
from hexlane.model.netpol import (
    CiliumClusterwideNetworkPolicy,
    CiliumNetworkPolicy,
    NetworkPolicy,
)
from hexlane.model.node import Node, Pod
from hexlane.policy.identity import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_FILTER,
    LabelFilter,
    LabelSet,
    ReservedIdentity,
    cidr_labels,
    is_endpoint_pod,
    pod_labels,
    reserved_labels,
)
from hexlane.policy.maps import IPv4Network, PolicyRef
from hexlane.policy.node import NodePolicy, datapath_tables, node_policy
from hexlane.policy.resolve import PodInfo, named_ports_by_identity
from hexlane.policy.trace import End, Trace, trace

from .identities import IdentityAllocator

log = logging.getLogger(__name__)

#: The informers the policy controller follows ("all-pods": every node's pods).
KINDS = ("all-pods", "namespaces", "ciliumidentities", "networkpolicies",
         "ciliumnetworkpolicies", "ciliumclusterwidenetworkpolicies", "nodes")


def enforcement_mode(values: Any) -> str:
    return str(values.get("policyEnforcementMode", "default") or "default").lower()


class PolicyEnforcer:
    """See the module docstring."""

    def __init__(self, node: str, informers: Mapping[str, Informer],
                 identities: IdentityAllocator, *, mode: str = "default",
                 cluster: str = DEFAULT_CLUSTER_NAME,
                 label_filter: LabelFilter = DEFAULT_FILTER,
                 host_ips: Callable[[], list[str]] = list,
                 remote_host_ips: Callable[[], list[str]] = list,
                 on_identities: Callable[[dict[str, int]], None] | None = None,
                 on_policies: Callable[[dict[int, tuple[PolicyRef, ...]]], None] | None = None,
                 audit: bool = False) -> None:
        self.node = node
        self.informers = informers
        self.identities = identities
        self.mode = mode
        self.cluster = cluster
        self.label_filter = label_filter
        self.host_ips = host_ips
        self.remote_host_ips = remote_host_ips
        #: told every pod's identity after each sync ("namespace/name" -> number: Hubble)
        self.on_identities = on_identities
        #: told after each sync which policies each number in the policy map stands for
        #: (Hubble names the policies of a verdict)
        self.on_policies = on_policies
        #: policyAuditMode: what policy denies passes, its verdicts are audited
        self.audit = audit
        self.datapath: PolicyDatapath | None = None
        self.state: NodePolicy | None = None
        self.problems: list[str] = []
        #: when the tables last held what the API said (time.time), and how long that took
        self.last_applied: float | None = None
        self.last_seconds = 0.0
        #: "namespace/name@resourceVersion" of the policies in the tables last written
        self.applied: list[str] = []
        self._versions: list[str] = []
        self._resynced = False
        #: parsed objects by version (a sync parses only what changed)
        self._pod_cache: dict[Any, Any] = {}
        self._policy_cache: dict[str, Any] = {}

    def load(self, obj: Any) -> None:
        """The loaded load balancer object whose pod hooks enforce (its maps are ours)."""
        self.datapath = PolicyDatapath(obj)

    @property
    def reconcilers(self) -> list[Reconciler[bytes, bytes]]:
        return self.datapath.reconcilers if self.datapath is not None else []

    # -- the desired state ---------------------------------------------------------------

    def _policies(self) -> tuple[list[NetworkPolicy], list[CiliumNetworkPolicy]]:
        """The NetworkPolicies and the Cilium policies (namespaced and clusterwide); one
        that does not parse is left out and named in `problems`."""
        k8s: list[NetworkPolicy] = []
        cilium: list[CiliumNetworkPolicy] = []
        problems: list[str] = []
        versions: list[str] = []
        seen: dict[str, Any] = {}
        for informer, kind, prefix in (("networkpolicies", NetworkPolicy, ""),
                                       ("ciliumnetworkpolicies", CiliumNetworkPolicy, "cnp:"),
                                       ("ciliumclusterwidenetworkpolicies",
                                        CiliumClusterwideNetworkPolicy, "ccnp:")):
            if informer not in self.informers:
                continue
            for obj in self.informers[informer].cache.objects():
                meta = obj.get("metadata") or {}
                where = (f"{meta.get('namespace')}/{meta.get('name')}"
                         if kind.NAMESPACED else str(meta.get("name")))
                version = f"{prefix}{where}@{meta.get('resourceVersion', '')}"
                versions.append(version)
                parsed = self._policy_cache.get(version)
                if parsed is None:
                    try:
                        parsed = kind.parse(obj)
                    except InputError as err:
                        problems.append(f"{kind.KIND} {where} ignored: {err}")
                        continue
                seen[version] = parsed
                if isinstance(parsed, CiliumNetworkPolicy):
                    cilium.append(parsed)
                else:
                    k8s.append(parsed)
        self.problems = problems
        self._versions = sorted(versions)
        self._policy_cache = seen
        return k8s, cilium

    def _pods(self) -> tuple[list[tuple[PodInfo, LabelSet]], set[tuple[str, str]]]:
        namespaces = self.informers["namespaces"].cache
        pods: list[tuple[PodInfo, LabelSet]] = []
        local: set[tuple[str, str]] = set()
        seen: dict[Any, Any] = {}
        for obj in self.informers["all-pods"].cache.objects():
            if not is_endpoint_pod(obj):
                continue
            meta = obj.get("metadata") or {}
            ns = namespaces.get_object(str(meta.get("namespace", "")))
            if ns is None:
                continue  # its identity waits for the Namespace too (identities.py)
            # parsed once per version of the pod and of its namespace (a sync runs on
            # every change anywhere in the cluster)
            key = (meta.get("uid"), meta.get("resourceVersion"),
                   (ns.get("metadata") or {}).get("resourceVersion"))
            hit = self._pod_cache.get(key)
            if hit is None:
                try:
                    pod = Pod.parse(obj)
                except InputError:
                    continue
                hit = (PodInfo.from_pod(pod), pod_labels(obj, ns, self.cluster,
                                                         self.label_filter), pod.node_name)
            seen[key] = hit
            info, labels, node = hit
            pods.append((info, labels))
            if node == self.node:
                local.add(info.key)
        self._pod_cache = seen
        return pods, local

    def _node_ips(self) -> tuple[list[str], list[str]]:
        local: list[str] = list(self.host_ips())
        remote: list[str] = list(self.remote_host_ips())
        for obj in self.informers["nodes"].cache.objects():
            try:
                node = Node.parse(obj)
            except InputError:
                continue
            (local if node.name == self.node else remote).extend(node.internal_ips)
        return local, remote

    def desired(self) -> NodePolicy:
        pods, local = self._pods()
        local_ips, remote_ips = self._node_ips()
        previous = self.state.cidr_identities if self.state is not None else None
        k8s, cilium = self._policies()
        return node_policy(pods, local, self.identities.known(), k8s,
                           local_node_ips=local_ips, remote_node_ips=remote_ips,
                           previous_cidr=previous, cilium=cilium,
                           always=self.mode == "always")

    # -- the controller ------------------------------------------------------------------

    async def sync(self) -> None:
        if self.datapath is None:
            return  # the load balancer is not loaded yet (the next trigger comes)
        start = time.monotonic()
        if self.mode == "never":
            state = NodePolicy(ipcache={}, endpoints={}, cidr_identities={}, pod_identity={})
            self._versions = []
        else:
            state = self.desired()
        versions = list(self._versions)
        tables = datapath_tables(state, audit=self.audit)
        if self.on_policies is not None:  # before the entries that carry the numbers
            self.on_policies(tables.policies)
        self.datapath.set(tables.ipcache, tables.endpoints, tables.entries, tables.cookies)
        # The first write of a process reads the maps first: what a previous run left there
        # and nobody wants any more goes too.
        write = self.datapath.flush if self._resynced else self.datapath.resync
        result = await asyncio.to_thread(write)
        self._resynced = True
        self._record(state, result, start)
        if not result.failed:
            self.applied = versions
        if self.on_identities is not None:
            self.on_identities({f"{ns}/{n}": i for (ns, n), i in state.pod_identity.items()})

    async def resync(self) -> None:
        if self.datapath is not None:
            result = await asyncio.to_thread(self.datapath.resync)
            if result.failed:
                log.warning("policy: %d entries not written: %s", len(result.failed),
                            "; ".join(list(result.failed.values())[:3]))

    def _record(self, state: NodePolicy, result: FlushResult, start: float) -> None:
        before = self.state
        self.state = state
        if result.failed:
            log.warning("policy: %d entries not written (retried): %s", len(result.failed),
                        "; ".join(list(result.failed.values())[:3]))
        else:
            self.last_applied = time.time()
        self.last_seconds = time.monotonic() - start
        if result.changed:
            enforced = sum(1 for ep in state.endpoints.values() if ep.flags)
            log.info("policy: %d of %d local endpoints enforced, %d ipcache entries "
                     "(%d written, %d deleted in %.3f s)", enforced, len(state.endpoints),
                     len(state.ipcache), result.updated, result.deleted, self.last_seconds)
        if before is None or before.waiting != state.waiting:
            for key in state.waiting:
                log.info("policy: pod %s/%s waits for its identity", *key)

    # -- what `hexlane endpoint list` and status read ----------------------------------------

    def endpoint_state(self) -> dict[str, dict[str, Any]]:
        """Per local pod ("namespace/name"): its enforcement in each direction and how many
        policy entries it has."""
        if self.state is None:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for (ns, name), ep in sorted(self.state.endpoints.items()):
            out[f"{ns}/{name}"] = {
                "ingress": ep.policy.ingress_enforced, "egress": ep.policy.egress_enforced,
                "entries": len(ep.policy.entries), "identity": ep.identity, "ip": ep.ip}
        return out

    def trace(self, src: str, dst: str, port: int, protocol: str) -> Trace:
        """`hexlane policy trace` between two pods ("namespace/name"), from the caches this
        node enforces from. KeyError naming what is unknown."""
        state = self.state
        if state is None:
            raise KeyError("the policy controller has not run yet")
        pods, _local = self._pods()
        infos = {p.key: p for p, _ in pods}
        ends = []
        for name in (src, dst):
            key = tuple(name.split("/", 1))
            if len(key) != 2 or key not in infos:
                raise KeyError(f"no pod {name} (an endpoint pod, namespace/name)")
            ident = state.pod_identity.get(key)
            if ident is None:
                raise KeyError(f"pod {name} has no security identity yet")
            ends.append(End(infos[key], ident))
        table: dict[int, Any] = {int(r): reserved_labels(r) for r in ReservedIdentity}
        table.update(self.identities.known())
        for prefix, ident in state.cidr_identities.items():
            table[ident] = cidr_labels(prefix)
        named = named_ports_by_identity([infos[k] for k in state.pod_identity if k in infos],
                                        state.pod_identity)
        k8s, cilium = self._policies()
        return trace(ends[0], ends[1], port, protocol, k8s, cilium, table, named,
                     state.cidr_identities, always=self.mode == "always")

    def rules(self) -> dict[str, Any]:
        """`hexlane policy get`: each local endpoint's enforcement and its entries."""
        state = self.state
        out: dict[str, Any] = {}
        if state is None:
            return out
        for (ns, name), ep in sorted(state.endpoints.items()):
            out[f"{ns}/{name}"] = {
                "identity": ep.identity, "ip": ep.ip,
                "ingress": ep.policy.ingress_enforced, "egress": ep.policy.egress_enforced,
                "entries": [{"direction": e.direction, "identity": e.identity,
                             "protocol": e.protocol, "port": e.port,
                             "portRange": list(e.port_range) if e.port_range else None,
                             "deny": e.deny, "text": e.describe(),
                             "policies": [str(r) for r in
                                          sorted(ep.policy.origins.get(e, ()))]}
                            for e in sorted(ep.policy.entries)]}
        return out

    def ipcache(self) -> dict[IPv4Network, int]:
        return dict(self.state.ipcache) if self.state is not None else {}

    def document(self) -> dict[str, Any]:
        state = self.state
        return {
            "mode": self.mode,
            "audit": self.audit,
            "loaded": self.datapath is not None,
            "endpoints": self.endpoint_state(),
            "enforced": sum(1 for ep in state.endpoints.values() if ep.flags) if state else 0,
            "ipcacheEntries": len(state.ipcache) if state else 0,
            "policyEntries": sum(len(ep.policy.entries) for ep in state.endpoints.values()
                                 if ep.flags) if state else 0,
            "waiting": [f"{ns}/{n}" for ns, n in state.waiting] if state else [],
            "problems": list(self.problems),
            "lastApplied": self.last_applied,
            "applied": list(self.applied),
            # every pod's identity as this node's ipcache holds it ("namespace/name")
            "pods": {f"{ns}/{n}": i for (ns, n), i in sorted(state.pod_identity.items())}
            if state else {},
        }
