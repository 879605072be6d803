"""Reading Pods and Nodes as the lab's controllers and kubelet need them (pure).

Objects are the API's JSON as plain dicts (what informers cache). These helpers answer the
questions every lab controller asks: is the pod terminating, ready, bound; which ports does
its workload serve; is a node Ready and may it take this pod.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hexlane.model.errors import InputError, Problem
from hexlane.model.selectors import LabelSelector

Obj = Mapping[str, Any]

TERMINAL_PHASES = ("Succeeded", "Failed")


def meta(obj: Obj) -> Mapping[str, Any]:
    return obj.get("metadata") or {}


def name_of(obj: Obj) -> str:
    return str(meta(obj).get("name") or "")


def namespace_of(obj: Obj) -> str:
    return str(meta(obj).get("namespace") or "")


def uid_of(obj: Obj) -> str:
    return str(meta(obj).get("uid") or "")


def labels_of(obj: Obj) -> Mapping[str, str]:
    return meta(obj).get("labels") or {}


def is_terminating(obj: Obj) -> bool:
    return bool(meta(obj).get("deletionTimestamp"))


def node_name(pod: Obj) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def phase(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("phase") or "Pending")


def condition(obj: Obj, kind: str) -> str | None:
    """The status ("True", "False", "Unknown") of condition `kind`, None when absent."""
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if isinstance(cond, Mapping) and cond.get("type") == kind:
            return str(cond.get("status"))
    return None


def is_pod_ready(pod: Obj) -> bool:
    return condition(pod, "Ready") == "True"


def pod_ip(pod: Obj) -> str:
    return str((pod.get("status") or {}).get("podIP") or "")


def is_active(pod: Obj) -> bool:
    """Counted by a Deployment: not terminating and not finished."""
    return not is_terminating(pod) and phase(pod) not in TERMINAL_PHASES


def container_ports(pod: Obj) -> list[tuple[str, int, str]]:
    """Every (name, containerPort, protocol) the pod's containers declare, in order."""
    out = []
    for container in (pod.get("spec") or {}).get("containers") or []:
        for port in container.get("ports") or []:
            if isinstance(port, Mapping) and isinstance(port.get("containerPort"), int):
                out.append((str(port.get("name") or ""), int(port["containerPort"]),
                            str(port.get("protocol") or "TCP")))
    return out


def workload_ports(pod: Obj) -> tuple[list[int], list[int]]:
    """(TCP ports, UDP ports) the lab workload serves: the declared ones, else TCP 80."""
    tcp: list[int] = []
    udp: list[int] = []
    for _, port, proto in container_ports(pod):
        target = udp if proto == "UDP" else tcp if proto == "TCP" else None
        if target is not None and port not in target:
            target.append(port)
    if not tcp and not udp:
        tcp = [80]
    return tcp, udp


def pre_stop_seconds(pod: Obj) -> float:
    """How long the first container's preStop hook sleeps: `sleep: {seconds: N}` or an exec of
    `sleep N` (the usual drain trick); 0 without one."""
    for container in (pod.get("spec") or {}).get("containers") or []:
        hook = ((container.get("lifecycle") or {}).get("preStop")) or {}
        if isinstance(hook.get("sleep"), Mapping):
            return float(hook["sleep"].get("seconds") or 0)
        words = [str(w) for w in ((hook.get("exec") or {}).get("command") or [])]
        if len(words) == 3 and words[0].endswith("sh") and words[1] == "-c":
            words = words[2].split()
        if len(words) == 2 and words[0] in ("sleep", "/bin/sleep"):
            try:
                return float(words[1])
            except ValueError:
                return 0.0
    return 0.0


def grace_seconds(pod: Obj) -> float:
    value = meta(pod).get("deletionGracePeriodSeconds")
    if value is None:
        value = (pod.get("spec") or {}).get("terminationGracePeriodSeconds", 30)
    return float(value)


# --- nodes -------------------------------------------------------------


def is_node_ready(node: Obj) -> bool:
    return condition(node, "Ready") == "True"


def node_internal_ip(node: Obj) -> str:
    for address in (node.get("status") or {}).get("addresses") or []:
        if isinstance(address, Mapping) and address.get("type") == "InternalIP":
            return str(address.get("address") or "")
    return ""


def _tolerates(pod: Obj, taint: Mapping[str, Any]) -> bool:
    for tol in (pod.get("spec") or {}).get("tolerations") or []:
        if not isinstance(tol, Mapping):
            continue
        if tol.get("effect") and tol.get("effect") != taint.get("effect"):
            continue
        if tol.get("operator") == "Exists":
            if not tol.get("key") or tol.get("key") == taint.get("key"):
                return True
        elif tol.get("key") == taint.get("key") and \
                str(tol.get("value") or "") == str(taint.get("value") or ""):
            return True
    return False


def _term_matches(term: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    try:
        selector = LabelSelector.parse({"matchExpressions": term.get("matchExpressions") or []})
    except InputError:  # Gt/Lt and other operators the lab does not evaluate
        return False
    return selector.matches(labels)


def fits(pod: Obj, node: Obj) -> bool:
    """Whether the scheduler may put `pod` on `node`: Ready, schedulable, nodeSelector and
    required node affinity terms of `matchExpressions` matched, NoSchedule/NoExecute taints
    tolerated."""
    spec = node.get("spec") or {}
    if not is_node_ready(node) or spec.get("unschedulable"):
        return False
    labels = labels_of(node)
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    if any(labels.get(k) != v for k, v in selector.items()):
        return False
    affinity = (((pod.get("spec") or {}).get("affinity") or {}).get("nodeAffinity") or {})
    required = (affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {})
    terms = required.get("nodeSelectorTerms") or []
    if terms and not any(_term_matches(t, labels) for t in terms if isinstance(t, Mapping)):
        return False
    for taint in spec.get("taints") or []:
        if isinstance(taint, Mapping) and taint.get("effect") in ("NoSchedule", "NoExecute") \
                and not _tolerates(pod, taint):
            return False
    return True


def _first_container(pod: Obj) -> Mapping[str, Any]:
    return ((pod.get("spec") or {}).get("containers") or [{}])[0] or {}


def is_hexlane_image(image: str) -> bool:
    """Whether `image` is hexlane's own image (`hexlane manifests`' `image.repository`,
    `localhost/hexlane` by default, or any registry's `.../hexlane`), at any tag or digest."""
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[0] == "hexlane"


def hexlane_command(pod: Obj) -> list[str] | None:
    """The first container's command line (`command` + `args`) when the lab kubelet runs it
    itself: the image is hexlane's own and the command is `hexlane ...`. None otherwise (the
    lab's echo workload runs instead)."""
    container = _first_container(pod)
    if not is_hexlane_image(str(container.get("image") or "")):
        return None
    argv = [str(a) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
    if not argv or argv[0].rsplit("/", 1)[-1] != "hexlane":
        return None
    return argv


FIELD_PATHS = ("metadata.name", "metadata.namespace", "metadata.uid", "spec.nodeName",
               "spec.serviceAccountName", "status.podIP", "status.hostIP")


def container_env(pod: Obj, *, pod_ip: str, host_ip: str) -> dict[str, str]:
    """The first container's `env`: plain values and the downward API's `fieldRef`s of
    FIELD_PATHS (`pod_ip` and `host_ip` are what the kubelet assigned); other sources
    (Secrets, ConfigMaps, resources) InputError naming the variable."""
    fields = {"metadata.name": name_of(pod), "metadata.namespace": namespace_of(pod),
              "metadata.uid": uid_of(pod), "spec.nodeName": node_name(pod),
              "spec.serviceAccountName": str((pod.get("spec") or {}).get(
                  "serviceAccountName") or "default"),
              "status.podIP": pod_ip, "status.hostIP": host_ip}
    out: dict[str, str] = {}
    for var in _first_container(pod).get("env") or []:
        name = str(var.get("name") or "")
        if "value" in var or not var.get("valueFrom"):
            out[name] = str(var.get("value") or "")
            continue
        path = str(((var.get("valueFrom") or {}).get("fieldRef") or {}).get("fieldPath") or "")
        if path not in fields:
            raise InputError(Problem(f"the lab kubelet resolves only fieldRef "
                                     f"{', '.join(FIELD_PATHS)}", f"env {name}"))
        out[name] = fields[path]
    return out
