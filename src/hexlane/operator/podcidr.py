"""The pod CIDR controller (`ipam.mode: cluster-pool`): one CiliumNode per Node, carrying
the node's pod CIDR in `spec.ipam.podCIDRs`, as Cilium's operator does.

For every Node the controller makes sure a CiliumNode (cilium.io/v2, same name, owned by the
Node through an ownerReference) exists whose `spec.ipam.podCIDRs` is `[cidr]`, with `cidr`
from `hexlane.ipam.podcidr.carve_node_cidrs`: cut at `clusterPoolIPv4MaskSize` out of
`clusterPoolIPv4PodCIDRList`. Existing CiliumNodes are read first (the informer's cache), so a
node keeps its CIDR across operator restarts and other nodes joining or leaving; CIDRs asked
for but not yet seen back from the API count as taken (`_intended`), so two nodes created
in quick succession never get the same one.

Release: when a Node is deleted its CiliumNode is deleted at once, which frees the CIDR for
the next node (Cilium's operator garbage-collects such CiliumNodes on an interval; we do not
wait, since a deleted Node's pods are gone with it). Under `ipam.mode: kubernetes` this
controller is not started: the lab's controller sets `node.spec.podCIDR` instead.

`plan_ciliumnodes` is the pure decision; the controller only carries it out.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from typing import Any

from hexlane.ipam.podcidr import NodeCIDRPlan, carve_node_cidrs
from hexlane.k8s.cache import Obj
from hexlane.k8s.client import MERGE_PATCH, ApiError, KubeClient
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumNode, Node, kind_of

from .metrics import OperatorMetrics
from .writer import WriteQueue

log = logging.getLogger(__name__)

CONTROLLER = "podcidr"
CILIUM_NODE = kind_of(CiliumNode)
DEFAULT_DEBOUNCE = 0.05


@dataclass(frozen=True, slots=True)
class NodeAction:
    """What to do to one node's CiliumNode: "create", "patch" (podCIDRs) or "delete"."""

    verb: str
    name: str
    cidr: IPv4Network | None = None
    node_uid: str = ""


@dataclass(frozen=True, slots=True)
class CiliumNodePlan:
    carve: NodeCIDRPlan
    actions: tuple[NodeAction, ...] = field(default=())


def ciliumnode_cidr(obj: Mapping[str, Any]) -> IPv4Network | None:
    """The first IPv4 pod CIDR in a CiliumNode's `spec.ipam.podCIDRs`, if any."""
    cidrs = ((obj.get("spec") or {}).get("ipam") or {}).get("podCIDRs") or []
    for text in cidrs:
        try:
            net = ipaddress.ip_network(str(text), strict=True)
        except ValueError:
            continue
        if isinstance(net, IPv4Network):
            return net
    return None


def plan_ciliumnodes(pool: Sequence[IPv4Network], mask_size: int,
                     nodes: Mapping[str, str], ciliumnodes: Mapping[str, IPv4Network | None],
                     intended: Mapping[str, IPv4Network] | None = None) -> CiliumNodePlan:
    """The CiliumNode writes that give every node (name -> uid) its carved CIDR.

    `ciliumnodes` are the existing CiliumNodes (name -> their pod CIDR or None); `intended`
    are CIDRs already asked for and not yet seen back, which count as existing."""
    existing = {name: cidr for name, cidr in ciliumnodes.items() if cidr is not None}
    existing.update(intended or {})
    carve = carve_node_cidrs(pool, mask_size, nodes, existing)
    actions: list[NodeAction] = []
    for name in sorted(nodes):
        cidr = carve.assignments.get(name)
        if cidr is None:
            continue
        if name not in ciliumnodes:
            actions.append(NodeAction("create", name, cidr, nodes[name]))
        elif ciliumnodes[name] != cidr:
            actions.append(NodeAction("patch", name, cidr))
    for name in sorted(ciliumnodes):
        if name not in nodes:
            actions.append(NodeAction("delete", name))
    return CiliumNodePlan(carve, tuple(actions))


class PodCIDRController:
    """See the module docstring. `run()` until cancelled."""

    def __init__(self, client: KubeClient, metrics: OperatorMetrics,
                 pool: Sequence[IPv4Network], mask_size: int, *,
                 debounce: float = DEFAULT_DEBOUNCE, workers: int = 4) -> None:
        self.client = client
        self.metrics = metrics
        self.pool = tuple(pool)
        self.mask_size = mask_size
        self.nodes = Informer(client, Node)
        self.ciliumnodes = Informer(client, CiliumNode)
        self._intended: dict[str, IPv4Network] = {}
        self.writer: WriteQueue[str, NodeAction] = WriteQueue(
            self._perform, workers=workers,
            on_change=lambda n: metrics.write_queue.labels(CONTROLLER).set(n))
        self.controller = Controller(CONTROLLER, self._reconcile, interval=None,
                                     debounce=debounce)
        for informer in (self.nodes, self.ciliumnodes):
            informer.add_handler(self._mark, lambda _old, _new: self._mark(_new), self._mark)

    def _mark(self, _obj: Obj) -> None:
        self.controller.trigger()

    async def run(self) -> None:
        await self.controller.run([self.nodes, self.ciliumnodes], also=[self.writer])

    async def _reconcile(self) -> None:
        self.run_once()

    def run_once(self) -> CiliumNodePlan:
        nodes = {str(o["metadata"]["name"]): str(o["metadata"].get("uid") or "")
                 for o in self.nodes.cache.objects()}
        ciliumnodes = {str(o["metadata"]["name"]): ciliumnode_cidr(o)
                       for o in self.ciliumnodes.cache.objects()}
        # An intention is done once the API shows it, or moot once its node is gone.
        for name, cidr in list(self._intended.items()):
            if name not in nodes or ciliumnodes.get(name) == cidr:
                del self._intended[name]
        plan = plan_ciliumnodes(self.pool, self.mask_size, nodes, ciliumnodes, self._intended)
        for action in plan.actions:
            if action.cidr is not None:
                self._intended[action.name] = action.cidr
            self.writer.put(action.name, action)
        for problem in plan.carve.problems:
            log.warning("podcidr: %s", problem)
        self.metrics.node_cidrs.labels("assigned").set(len(plan.carve.assignments))
        self.metrics.node_cidrs.labels("unassigned").set(len(plan.carve.unassigned))
        if plan.actions:
            log.info("podcidr: %s", ", ".join(f"{a.verb} {a.name}"
                                               + (f" {a.cidr}" if a.cidr else "")
                                               for a in plan.actions))
        return plan

    async def _perform(self, name: str, action: NodeAction) -> None:
        try:
            if action.verb == "create":
                body = {
                    "apiVersion": CILIUM_NODE.api_version, "kind": CILIUM_NODE.kind,
                    "metadata": {"name": name, "ownerReferences": [{
                        "apiVersion": "v1", "kind": "Node", "name": name,
                        "uid": action.node_uid}]},
                    "spec": {"ipam": {"podCIDRs": [str(action.cidr)]}}}
                await self.client.request("POST", CILIUM_NODE.path(), body=body)
            elif action.verb == "patch":
                await self.client.request(
                    "PATCH", CILIUM_NODE.path(None, name), content_type=MERGE_PATCH,
                    body={"spec": {"ipam": {"podCIDRs": [str(action.cidr)]}}})
            else:
                await self.client.request("DELETE", CILIUM_NODE.path(None, name))
        except ApiError as e:
            # Created meanwhile (409) or already gone (404): the informer shows the truth and
            # the next run decides again.
            if e.conflict or e.not_found:
                self.metrics.writes.labels(CONTROLLER, CILIUM_NODE.kind, "conflict").inc()
                return
            self.metrics.writes.labels(CONTROLLER, CILIUM_NODE.kind, "error").inc()
            raise
        self.metrics.writes.labels(CONTROLLER, CILIUM_NODE.kind, "ok").inc()
