"""What the lab's controllers decide, as pure functions of cached objects.

- `choose_node`: the scheduler — among nodes the pod fits (`podspec.fits`), the one with the
  fewest pods, ties broken by name;
- `plan_deployment`: the Deployment controller without ReplicaSets — the Deployment owns its
  pods directly (ownerReference, `pod-template-hash` label); it creates and deletes pods to
  reach `replicas` of the current template, replaces old-template pods as new ones become
  ready (RollingUpdate: never fewer ready pods than `replicas - maxUnavailable`; Recreate: old
  ones first), and computes the status;
- `orphans`: garbage collection — objects whose every controlling owner (by uid) is gone;
- `desired_slices`: the EndpointSlice controller — per Service with a selector, the endpoints
  of its pods (ready/serving/terminating, nodeName, targetRef), ports resolved by name, one
  slice per distinct port set;
- `assign_pod_cidrs`: node pod CIDRs for `ipam.mode: kubernetes`, as kube-controller-manager's
  range allocator (one /24 per node from the cluster CIDR, a given podCIDR never changes);
- `stale_nodes`: node lifecycle — nodes whose Lease was not renewed within the grace period.

Objects are plain dicts (the API's JSON); nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from ipaddress import IPv4Network
from typing import Any

from hexlane.ipam.podcidr import carve_node_cidrs
from hexlane.model.errors import InputError
from hexlane.model.selectors import LabelSelector

from .podspec import (
    container_ports,
    fits,
    is_active,
    is_node_ready,
    is_pod_ready,
    is_terminating,
    labels_of,
    meta,
    name_of,
    namespace_of,
    node_name,
    phase,
    pod_ip,
    uid_of,
)

Obj = Mapping[str, Any]
TEMPLATE_HASH_LABEL = "pod-template-hash"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
MANAGED_BY = "endpointslice-controller.k8s.io"
MAX_ENDPOINTS_PER_SLICE = 100


# --- scheduler -------------------------------------------------------------


def wants_scheduling(pod: Obj) -> bool:
    spec = pod.get("spec") or {}
    return (not node_name(pod) and not is_terminating(pod)
            and spec.get("schedulerName", "default-scheduler") == "default-scheduler"
            and phase(pod) not in ("Succeeded", "Failed"))


def choose_node(pod: Obj, nodes: Iterable[Obj], pods: Iterable[Obj]) -> str | None:
    """The node to bind `pod` to (least pods among those it fits, then by name), or None."""
    load: dict[str, int] = {}
    for p in pods:
        if node_name(p) and is_active(p):
            load[node_name(p)] = load.get(node_name(p), 0) + 1
    candidates = sorted((load.get(name_of(n), 0), name_of(n)) for n in nodes if fits(pod, n))
    return candidates[0][1] if candidates else None


def unschedulable_reason(pod: Obj, nodes: Sequence[Obj]) -> str:
    """kube-scheduler's message for a pod no node takes: "0/3 nodes are available: ..."."""
    counts: dict[str, int] = {}
    for n in nodes:
        spec = n.get("spec") or {}
        if not is_node_ready(n):
            reason = "node(s) were not ready"
        elif spec.get("unschedulable"):
            reason = "node(s) were unschedulable"
        elif not fits(pod, {**n, "spec": {k: v for k, v in spec.items() if k != "taints"}}):
            reason = "node(s) didn't match Pod's node affinity/selector"
        else:
            reason = "node(s) had untolerated taint"
        counts[reason] = counts.get(reason, 0) + 1
    detail = ", ".join(f"{c} {r}" for r, c in sorted(counts.items()))
    return f"0/{len(nodes)} nodes are available" + (f": {detail}." if detail else ".")


# --- deployments -------------------------------------------------------------


def template_hash(template: Obj) -> str:
    """A stable short hash of a pod template (what `pod-template-hash` carries)."""
    text = json.dumps(template, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def owner_reference(owner: Obj, *, controller: bool = True) -> dict[str, Any]:
    return {"apiVersion": str(owner.get("apiVersion") or ""), "kind": str(owner.get("kind")),
            "name": name_of(owner), "uid": uid_of(owner), "controller": controller,
            "blockOwnerDeletion": True}


def controller_uid(obj: Obj) -> str:
    for ref in meta(obj).get("ownerReferences") or []:
        if isinstance(ref, Mapping) and ref.get("controller"):
            return str(ref.get("uid") or "")
    return ""


def _percent(value: Any, total: int, *, round_up: bool, default: str) -> int:
    value = default if value is None else value
    if isinstance(value, int):
        return value
    text = str(value)
    if text.endswith("%"):
        fraction = float(text[:-1]) / 100 * total
        return math.ceil(fraction) if round_up else math.floor(fraction)
    return int(text)


@dataclass
class DeploymentPlan:
    """What to do for one Deployment: pods to create (bodies), pods to delete (names), status."""

    create: list[dict[str, Any]] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)


def _rank_for_deletion(pods: Iterable[Obj]) -> list[Obj]:
    """Pods in the order they are deleted (as the ReplicaSet controller ranks them):
    unscheduled, then not running, then not ready, then the newest first."""
    newest_first = sorted(pods, key=lambda p: str(meta(p).get("creationTimestamp") or ""),
                          reverse=True)
    return sorted(newest_first, key=lambda p: (bool(node_name(p)), phase(p) == "Running",
                                               is_pod_ready(p)))


def pod_for(deployment: Obj, pod_hash: str) -> dict[str, Any]:
    """A new pod of `deployment`'s template (name generated by the server)."""
    spec = deployment.get("spec") or {}
    template = spec.get("template") or {}
    tmeta = template.get("metadata") or {}
    labels = {**(tmeta.get("labels") or {}), TEMPLATE_HASH_LABEL: pod_hash}
    metadata: dict[str, Any] = {
        "generateName": f"{name_of(deployment)}-{pod_hash}-",
        "namespace": namespace_of(deployment),
        "labels": labels,
        "ownerReferences": [owner_reference(deployment)],
    }
    if tmeta.get("annotations"):
        metadata["annotations"] = dict(tmeta["annotations"])
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": json.loads(json.dumps(template.get("spec") or {}))}


def plan_deployment(deployment: Obj, pods: Sequence[Obj]) -> DeploymentPlan:
    """Converge `deployment`'s pods (those it controls, any state) one step."""
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    pod_hash = template_hash(spec.get("template") or {})
    active = [p for p in pods if is_active(p)]
    current = [p for p in active if labels_of(p).get(TEMPLATE_HASH_LABEL) == pod_hash]
    old = [p for p in active if labels_of(p).get(TEMPLATE_HASH_LABEL) != pod_hash]
    plan = DeploymentPlan()
    strategy = spec.get("strategy") or {}
    recreate = strategy.get("type") == "Recreate"
    if recreate and old:
        plan.delete += [name_of(p) for p in old]
    elif len(current) < replicas:
        plan.create = [pod_for(deployment, pod_hash) for _ in range(replicas - len(current))]
    elif len(current) > replicas:
        extra = _rank_for_deletion(current)[:len(current) - replicas]
        plan.delete += [name_of(p) for p in extra]
    if old and not recreate:
        rolling = strategy.get("rollingUpdate") or {}
        max_unavailable = _percent(rolling.get("maxUnavailable"), replicas, round_up=False,
                                   default="25%")
        ready_current = sum(1 for p in current if is_pod_ready(p))
        ready_old = [p for p in old if is_pod_ready(p)]
        # Old pods that are not ready serve nobody: they go at once.
        plan.delete += [name_of(p) for p in old if not is_pod_ready(p)]
        spare = ready_current + len(ready_old) - max(0, replicas - max_unavailable)
        plan.delete += [name_of(p) for p in _rank_for_deletion(ready_old)[:max(0, spare)]]
    plan.status = deployment_status(deployment, current, active)
    return plan


def deployment_status(deployment: Obj, current: Sequence[Obj],
                      active: Sequence[Obj]) -> dict[str, Any]:
    spec = deployment.get("spec") or {}
    replicas = int(spec.get("replicas", 1))
    ready = sum(1 for p in active if is_pod_ready(p))
    available = ready >= replicas
    status: dict[str, Any] = {
        "observedGeneration": int(meta(deployment).get("generation") or 0),
        "replicas": len(active),
        "updatedReplicas": len(current),
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": max(0, replicas - ready),
        "conditions": [
            {"type": "Available", "status": "True" if available else "False",
             "reason": "MinimumReplicasAvailable" if available
             else "MinimumReplicasUnavailable"},
            {"type": "Progressing", "status": "True",
             "reason": "NewReplicaSetAvailable" if len(current) == len(active) == replicas
             and available else "ReplicaSetUpdated"},
        ],
    }
    # Zero counts are written as 0, not left out: a merge patch would keep the old number.
    return status


def same_status(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """Whether writing `new` would change anything (condition timestamps ignored)."""
    def strip(status: Mapping[str, Any]) -> Any:
        out = dict(status)
        out["conditions"] = sorted(
            (tuple(sorted((k, str(v)) for k, v in c.items() if "Time" not in k))
             for c in status.get("conditions") or []), key=str)
        return out
    return bool(strip(old) == strip(new))


# --- garbage collection -------------------------------------------------------------


def orphans(objects: Iterable[Obj], owner_kinds: Mapping[str, set[str]]) -> list[Obj]:
    """Objects whose owners are all gone. `owner_kinds` maps a kind to the uids of its objects
    that exist; references to kinds not in it are not judged (the lab does not watch them)."""
    out = []
    for obj in objects:
        refs = [r for r in meta(obj).get("ownerReferences") or [] if isinstance(r, Mapping)]
        judged = [r for r in refs if str(r.get("kind")) in owner_kinds]
        if not refs or len(judged) < len(refs):
            continue
        if all(str(r.get("uid")) not in owner_kinds[str(r.get("kind"))] for r in judged):
            out.append(obj)
    return out


# --- endpoint slices -------------------------------------------------------------


def _resolve_ports(service: Obj, pod: Obj) -> tuple[tuple[str, int, str], ...]:
    """(name, port, protocol) of each Service port for this pod; a named targetPort the pod
    does not declare leaves that port out (as Kubernetes does)."""
    declared = container_ports(pod)
    out = []
    for sp in (service.get("spec") or {}).get("ports") or []:
        if not isinstance(sp, Mapping):
            continue
        protocol = str(sp.get("protocol") or "TCP")
        target = sp.get("targetPort", sp.get("port"))
        number: int | None = None
        if isinstance(target, int):
            number = target
        elif isinstance(target, str) and target.isdigit():
            number = int(target)
        elif isinstance(target, str):
            number = next((p for n, p, proto in declared if n == target and proto == protocol),
                          None)
        if number is not None:
            out.append((str(sp.get("name") or ""), number, protocol))
    return tuple(out)


def endpoint_for(pod: Obj, *, publish_not_ready: bool = False) -> dict[str, Any]:
    ready = is_pod_ready(pod)
    terminating = is_terminating(pod)
    endpoint: dict[str, Any] = {
        "addresses": [pod_ip(pod)],
        "conditions": {"ready": publish_not_ready or (ready and not terminating),
                       "serving": publish_not_ready or ready,
                       "terminating": terminating},
        "targetRef": {"kind": "Pod", "namespace": namespace_of(pod), "name": name_of(pod),
                      "uid": uid_of(pod)},
    }
    if node_name(pod):
        endpoint["nodeName"] = node_name(pod)
    return endpoint


def slice_name(service_name: str, ports: Sequence[tuple[str, int, str]], chunk: int) -> str:
    digest = hashlib.sha256(repr((tuple(ports), chunk)).encode()).hexdigest()[:5]
    return f"{service_name[:56]}-{digest}"


def desired_slices(service: Obj, pods: Iterable[Obj]) -> list[dict[str, Any]]:
    """The EndpointSlices the controller keeps for `service` (empty list: delete all; a
    Service whose pods all lack IPs still gets one empty slice, as Kubernetes keeps one)."""
    spec = service.get("spec") or {}
    selector = spec.get("selector") or {}
    groups: dict[tuple[tuple[str, int, str], ...], list[Obj]] = {}
    for pod in sorted(pods, key=name_of):
        if namespace_of(pod) != namespace_of(service) or not pod_ip(pod):
            continue
        if phase(pod) in ("Succeeded", "Failed"):
            continue
        if not all(labels_of(pod).get(k) == v for k, v in selector.items()):
            continue
        groups.setdefault(_resolve_ports(service, pod), []).append(pod)
    if not groups:
        groups[()] = []
    publish = bool(spec.get("publishNotReadyAddresses"))
    out = []
    for ports, members in sorted(groups.items()):
        for chunk in range(max(1, math.ceil(len(members) / MAX_ENDPOINTS_PER_SLICE))):
            part = members[chunk * MAX_ENDPOINTS_PER_SLICE:(chunk + 1) * MAX_ENDPOINTS_PER_SLICE]
            out.append({
                "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {
                    "name": slice_name(name_of(service), ports, chunk),
                    "namespace": namespace_of(service),
                    "labels": {SERVICE_NAME_LABEL: name_of(service),
                               MANAGED_BY_LABEL: MANAGED_BY},
                    "ownerReferences": [owner_reference(service)],
                },
                "addressType": "IPv4",
                "endpoints": [endpoint_for(p, publish_not_ready=publish) for p in part],
                "ports": [{"name": n, "port": p, "protocol": proto} for n, p, proto in ports],
            })
    return out


def selects_pods(service: Obj) -> bool:
    spec = service.get("spec") or {}
    return bool(spec.get("selector")) and spec.get("type") != "ExternalName"


def slice_service_key(eps: Obj) -> str | None:
    """`namespace/name` of the Service an EndpointSlice belongs to (its service-name label)."""
    service = (meta(eps).get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{namespace_of(eps)}/{service}" if service else None


def controller_owns_slice(service: Obj | None) -> bool:
    """Whether the EndpointSlice controller may delete a slice it no longer wants.

    Like Kubernetes' controller, it leaves alone the slices of Services without a selector:
    `default/kubernetes`, whose slice the apiserver keeps, and hand-made ones.
    """
    return service is None or selects_pods(service)


def slice_differs(have: Obj, want: Obj) -> bool:
    """Whether `have` must be rewritten to become `want` (endpoints, ports, labels, owner)."""
    hm, wm = meta(have), meta(want)
    if any((hm.get("labels") or {}).get(k) != v for k, v in (wm.get("labels") or {}).items()):
        return True
    if [r.get("uid") for r in hm.get("ownerReferences") or []] != \
            [r.get("uid") for r in wm.get("ownerReferences") or []]:
        return True
    return ((have.get("endpoints") or []) != want["endpoints"]
            or (have.get("ports") or []) != want["ports"] or have.get("addressType") != "IPv4")


# --- node pod CIDRs -------------------------------------------------------------


def assign_pod_cidrs(nodes: Iterable[Obj], cluster_cidr: IPv4Network,
                     mask_size: int = 24) -> dict[str, str]:
    """Pod CIDRs for the nodes that have none (name -> CIDR); a node's podCIDR once set is
    never changed, and one outside the cluster CIDR keeps its value and takes nothing."""
    existing: dict[str, IPv4Network] = {}
    names = []
    for node in nodes:
        name = name_of(node)
        names.append(name)
        text = (node.get("spec") or {}).get("podCIDR")
        if text:
            try:
                existing[name] = IPv4Network(str(text))
            except ValueError:
                existing[name] = IPv4Network("0.0.0.0/32")  # unusable, but set: not ours
    plan = carve_node_cidrs([cluster_cidr], mask_size, names, existing)
    return {name: str(cidr) for name, cidr in plan.assignments.items() if name not in existing}


# --- node lifecycle -------------------------------------------------------------


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None


def stale_nodes(nodes: Iterable[Obj], leases: Mapping[str, Obj], now: datetime,
                grace: float) -> list[str]:
    """Nodes marked Ready whose Lease (kube-node-lease/<node>) was last renewed more than
    `grace` seconds before `now` (or never, once the node is older than `grace`)."""
    out = []
    for node in nodes:
        name = name_of(node)
        ready = [c for c in (node.get("status") or {}).get("conditions") or []
                 if c.get("type") == "Ready" and c.get("status") == "True"]
        if not ready:
            continue
        lease = leases.get(name)
        renewed = parse_time(((lease or {}).get("spec") or {}).get("renewTime")) or \
            parse_time(str(meta(node).get("creationTimestamp") or ""))
        if renewed is None or (now - renewed).total_seconds() > grace:
            out.append(name)
    return out


def label_selector_matches(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """A Deployment's `spec.selector` (matchLabels/matchExpressions) against pod labels."""
    try:
        return LabelSelector.parse(dict(selector)).matches(labels)
    except InputError:
        return False
