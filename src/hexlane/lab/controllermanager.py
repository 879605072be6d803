"""The lab's controllers in one process on the control-plane host (what kube-scheduler and
kube-controller-manager do on a real cluster, reduced to what the lab needs).

Every controller reads the informers' caches (`hexlane.k8s.informer`) and asks a pure function
of `hexlane.lab.decide` what to write; any change to a watched kind wakes one level-triggered
pass over all of them (one `hexlane.k8s.controller.Controller`, with a tick every second for
time-driven decisions), which converges from whatever state it finds, so a restart at any
moment is safe:

- scheduler: binds pending pods to Ready nodes (a Binding, as kube-scheduler);
- deployments: pods owned directly by their Deployment, scale, roll, status;
- garbage collector: pods and EndpointSlices whose owner is gone are deleted;
- EndpointSlices: per Service with a selector;
- node pod CIDRs: spec.podCIDR(s) for `ipam.mode: kubernetes`;
- node lifecycle: a node whose Lease is older than the grace period gets Ready=Unknown and
  its pods' Ready condition False (so endpoints on it stop being ready).

    python -m hexlane.lab.controllermanager --kubeconfig F [--values F] [--cluster-cidr C]
        [--node-monitor-grace-period S]
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from ipaddress import IPv4Network
from typing import Any

from hexlane.config import require_values
from hexlane.k8s.cache import by_field
from hexlane.k8s.client import MERGE_PATCH, ApiError, KubeClient, load_client_config
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.k8s.resources import Deployment, EndpointSlice, Lease, Node, Pod, Service, kind_of
from hexlane.k8s.runtime import log_to_stderr, run_until_stopped
from hexlane.k8s.statuswriter import patch_status, update_status
from hexlane.model.errors import InputError

from . import decide
from .podspec import is_terminating, name_of, namespace_of, uid_of

log = logging.getLogger(__name__)

# kube-controller-manager's client defaults are 20 qps / burst 30; the lab's cluster is small
# but a rollout creates a burst of writes.
QPS, BURST = 50.0, 100
NODE_LEASE_NAMESPACE = "kube-node-lease"
TICK_S = 1.0  # a pass at least this often (time-driven decisions)
SETTLE_S = 0.02  # after a change, to let a burst of events land in the caches


class ControllerManager:
    """The caches and one reconciling pass over every controller."""

    def __init__(self, client: KubeClient, *, ipam_mode: str, cluster_cidr: IPv4Network,
                 node_grace: float) -> None:
        self.client = client
        self.ipam_mode = ipam_mode
        self.cluster_cidr = cluster_cidr
        self.node_grace = node_grace
        self.nodes = Informer(client, Node)
        self.pods = Informer(client, Pod, indexers={"owner": _controller_index,
                                                    "node": by_field("spec.nodeName")})
        self.deployments = Informer(client, Deployment)
        self.services = Informer(client, Service)
        self.slices = Informer(client, EndpointSlice,
                               label_selector=f"{decide.MANAGED_BY_LABEL}={decide.MANAGED_BY}")
        self.leases = Informer(client, Lease, namespace=NODE_LEASE_NAMESPACE)
        self.informers = [self.nodes, self.pods, self.deployments, self.services, self.slices,
                          self.leases]
        self.controller = Controller("lab", self.reconcile, interval=TICK_S, debounce=SETTLE_S)
        for inf in self.informers:
            inf.add_handler(lambda *_: self.controller.trigger(),
                            lambda *_: self.controller.trigger(),
                            lambda *_: self.controller.trigger())

    async def run(self) -> None:
        """Until cancelled; a failed pass is logged and retried (a bug in one must not stop
        the control plane)."""
        await self.controller.run(self.informers)

    async def reconcile(self) -> None:
        for step in (self.node_cidrs, self.node_lifecycle, self.schedule, self.deploy,
                     self.collect_garbage, self.endpoint_slices):
            try:
                await step()
            except (ApiError, OSError) as e:
                log.warning("%s: %s", step.__name__, e)

    # -- writes that also update our cache, so the next pass does not act twice ---------------

    async def _write(self, method: str, path: str, body: Any = None,
                     content_type: str = "application/json",
                     informer: Informer | None = None) -> dict[str, Any] | None:
        try:
            obj = await self.client.request(method, path, body=body, content_type=content_type)
        except ApiError as e:
            if e.not_found or e.conflict:
                log.info("%s %s: %s (will retry from the cache)", method, path, e.reason)
                return None
            raise
        if informer is not None and obj.get("kind") != "Status":
            obj.setdefault("apiVersion", informer.kind.api_version)
            obj.setdefault("kind", informer.kind.kind)
            _remember(informer, obj, existing_only=method == "DELETE")
        return obj

    # -- scheduler -----------------------------------------------------------------------------

    async def schedule(self) -> None:
        nodes = self.nodes.cache.objects()
        for pod in self.pods.cache.objects():
            if not decide.wants_scheduling(pod):
                continue
            target = decide.choose_node(pod, nodes, self.pods.cache.objects())
            if target is None:
                await self._unschedulable(pod, decide.unschedulable_reason(pod, nodes))
                continue
            log.info("bind %s/%s to %s", namespace_of(pod), name_of(pod), target)
            # As kube-scheduler does: a Binding to the pods/binding subresource.
            path = kind_of(Pod).path(namespace_of(pod), name_of(pod), "binding")
            binding = {"apiVersion": "v1", "kind": "Binding",
                       "metadata": {"name": name_of(pod), "namespace": namespace_of(pod),
                                    "uid": uid_of(pod)},
                       "target": {"apiVersion": "v1", "kind": "Node", "name": target}}
            if await self._write("POST", path, binding) is not None:
                # The answer is a Status: note the binding in the cache for this pass's
                # count (the watch event brings the real object).
                bound = copy.deepcopy(pod)
                bound.setdefault("spec", {})["nodeName"] = target
                self.pods.cache.put(bound)

    async def _unschedulable(self, pod: dict[str, Any], message: str) -> None:
        """PodScheduled=False, reason Unschedulable, as kube-scheduler reports it (written
        only when the message changes)."""
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") == "PodScheduled" and cond.get("message") == message:
                return
        status = {"phase": "Pending", "conditions": [{
            "type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": message, "lastTransitionTime": _stamp(datetime.now(UTC))}]}
        try:
            stored = await patch_status(self.client, Pod, name_of(pod), status,
                                        namespace=namespace_of(pod))
        except ApiError as e:
            if not e.not_found:
                raise
            return
        _remember(self.pods, stored, existing_only=True)

    # -- deployments -----------------------------------------------------------------------------

    async def deploy(self) -> None:
        pod_kind = kind_of(Pod)
        for dep in self.deployments.cache.objects():
            if is_terminating(dep):
                continue
            owned = self.pods.cache.by_index("owner", uid_of(dep))
            plan = decide.plan_deployment(dep, owned)
            ns = namespace_of(dep)
            for body in plan.create:
                await self._write("POST", pod_kind.path(ns), body, informer=self.pods)
            for name in plan.delete:
                log.info("deployment %s/%s: delete pod %s", ns, name_of(dep), name)
                await self._write("DELETE", pod_kind.path(ns, name), informer=self.pods)
            if plan.create or plan.delete:
                owned = self.pods.cache.by_index("owner", uid_of(dep))
                plan.status = decide.plan_deployment(dep, owned).status
            if not decide.same_status(dep.get("status") or {}, plan.status):
                try:
                    stored = await patch_status(self.client, Deployment, name_of(dep),
                                                _with_times(plan.status), namespace=ns)
                    self.deployments.cache.put(stored)
                except ApiError as e:
                    if not e.not_found:
                        raise

    # -- garbage collection ---------------------------------------------------------------------

    async def collect_garbage(self) -> None:
        owners = {"Deployment": {uid_of(d) for d in self.deployments.cache.objects()}}
        for pod in decide.orphans(self.pods.cache.objects(), owners):
            if is_terminating(pod):
                continue
            log.info("gc: pod %s/%s lost its owner", namespace_of(pod), name_of(pod))
            await self._write("DELETE", kind_of(Pod).path(namespace_of(pod), name_of(pod)),
                              informer=self.pods)

    # -- endpoint slices -------------------------------------------------------------------------

    async def endpoint_slices(self) -> None:
        kind = kind_of(EndpointSlice)
        wanted: dict[str, dict[str, Any]] = {}
        for svc in self.services.cache.objects():
            if not decide.selects_pods(svc) or is_terminating(svc):
                continue
            pods = self.pods.cache.objects(namespace_of(svc))
            for want in decide.desired_slices(svc, pods):
                wanted[f"{namespace_of(want)}/{name_of(want)}"] = want
        for key, want in wanted.items():
            have = self.slices.cache.get(key)
            ns, name = namespace_of(want), name_of(want)
            if have is None:
                await self._write("POST", kind.path(ns), want, informer=self.slices)
            elif decide.slice_differs(have, want):
                body = {**want, "metadata": {**want["metadata"],
                                             "resourceVersion": have["metadata"]
                                             ["resourceVersion"]}}
                await self._write("PUT", kind.path(ns, name), body, informer=self.slices)
        for key in list(self.slices.cache):
            have = self.slices.cache.get(key)
            if have is not None and key not in wanted and self._owns_slice(have):
                await self._write("DELETE", kind.path(namespace_of(have), name_of(have)))
                self.slices.cache.remove(key)

    def _owns_slice(self, eps: dict[str, Any]) -> bool:
        service = decide.slice_service_key(eps)
        return decide.controller_owns_slice(
            self.services.cache.get(service) if service else None)

    # -- nodes ------------------------------------------------------------------------------------

    async def node_cidrs(self) -> None:
        if self.ipam_mode != "kubernetes":
            return
        for name, cidr in decide.assign_pod_cidrs(self.nodes.cache.objects(),
                                                  self.cluster_cidr).items():
            log.info("node %s: podCIDR %s", name, cidr)
            await self._write("PATCH", kind_of(Node).path(None, name),
                              {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}, MERGE_PATCH,
                              self.nodes)

    async def node_lifecycle(self) -> None:
        leases = {name_of(lease): lease for lease in self.leases.cache.objects()}
        now = datetime.now(UTC)
        for name in decide.stale_nodes(self.nodes.cache.objects(), leases, now,
                                       self.node_grace):
            log.warning("node %s stopped renewing its lease: Ready=Unknown", name)
            stored = await update_status(self.client, Node, name, _ready_unknown(now),
                                         current=self.nodes.cache.get(name))
            if stored is not None:
                self.nodes.cache.put(stored)
            for pod in self.pods.cache.by_index("node", name):
                await update_status(self.client, Pod, name_of(pod), _pod_not_ready(now),
                                    namespace=namespace_of(pod), current=pod)


def _remember(informer: Informer, obj: dict[str, Any], *, existing_only: bool) -> None:
    """Put what a write returned into the cache unless the watch already brought something
    as new (or, for a delete, already removed it): the next pass must not act twice."""
    key = f"{namespace_of(obj)}/{name_of(obj)}" if namespace_of(obj) else name_of(obj)
    cached = informer.cache.get(key)
    if cached is None and existing_only:
        return
    if cached is not None and _rv(cached) >= _rv(obj):
        return
    informer.cache.put(obj)


def _rv(obj: dict[str, Any]) -> int:
    text = str(obj.get("metadata", {}).get("resourceVersion") or "0")
    return int(text) if text.isdigit() else 0


def _controller_index(obj: dict[str, Any]) -> list[str]:
    uid = decide.controller_uid(obj)
    return [uid] if uid else []


def _stamp(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_times(status: dict[str, Any]) -> dict[str, Any]:
    stamp = _stamp(datetime.now(UTC))
    out = dict(status)
    out["conditions"] = [{**c, "lastUpdateTime": stamp, "lastTransitionTime": stamp}
                         for c in status.get("conditions") or []]
    return out


def _ready_unknown(now: datetime) -> Any:
    def change(node: dict[str, Any]) -> dict[str, Any] | None:
        conditions = node.setdefault("status", {}).setdefault("conditions", [])
        for cond in conditions:
            if cond.get("type") == "Ready":
                if cond.get("status") == "Unknown":
                    return None
                cond.update(status="Unknown", reason="NodeStatusUnknown",
                            message="Kubelet stopped posting node status.",
                            lastTransitionTime=_stamp(now))
        return node
    return change


def _pod_not_ready(now: datetime) -> Any:
    def change(pod: dict[str, Any]) -> dict[str, Any] | None:
        changed = False
        for cond in (pod.get("status") or {}).get("conditions") or []:
            if cond.get("type") in ("Ready", "ContainersReady") and cond.get("status") != "False":
                cond.update(status="False", reason="NodeNotReady" if cond["type"] == "Ready"
                            else cond.get("reason"), lastTransitionTime=_stamp(now))
                changed = True
        return pod if changed else None
    return change


async def _main(args: argparse.Namespace) -> int:
    ipam_mode, cluster_cidr = "cluster-pool", IPv4Network(args.cluster_cidr or "10.42.0.0/16")
    if args.values:
        values, _ = require_values([args.values])
        ipam_mode = values.ipam.mode
        if not args.cluster_cidr and values.ipam.cluster_pool_ipv4_pod_cidrs:
            cluster_cidr = values.ipam.cluster_pool_ipv4_pod_cidrs[0]
    client = KubeClient(load_client_config(None, args.kubeconfig), RateLimiter(QPS, BURST))
    manager = ControllerManager(client, ipam_mode=ipam_mode, cluster_cidr=cluster_cidr,
                                node_grace=args.node_monitor_grace_period)
    await run_until_stopped(manager.run(), "the controller manager")
    await client.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hexlane.lab.controllermanager")
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--values")
    p.add_argument("--cluster-cidr", help="pod CIDRs of ipam.mode kubernetes are cut from it "
                   "(default: the first clusterPoolIPv4PodCIDRList entry)")
    p.add_argument("--node-monitor-grace-period", type=float, default=40.0)
    args = p.parse_args(argv)
    log_to_stderr()
    try:
        return asyncio.run(_main(args))
    except InputError as e:
        for problem in e.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
