"""`meta.k8s.io/v1` Table responses: the columns `kubectl get` prints, computed on the server
as Kubernetes' printers (pkg/printers/internalversion) and the CRD table convertor do.

`to_table(kind, objects, wide=..., crd_columns=..., now=..., include_object=...)`:
- built-in kinds with a printer: Service (TYPE, CLUSTER-IP, EXTERNAL-IP, PORT(S), AGE;
  SELECTOR at priority 1), Pod, Node, Namespace, Deployment, EndpointSlice, Endpoints,
  Lease, ConfigMap, Event, NetworkPolicy; other built-in kinds get NAME and CREATED AT
  (Kubernetes' default table convertor, which prints the RFC 3339 timestamp);
- custom resources (`crd_columns` is the served version's `additionalPrinterColumns`, `[]`
  when it has none): NAME then each column's JSONPath (a simple subset: `.a.b`, `['a.b']`,
  `.a\\.b`, `[0]`, `[*]`, `[?(@.type=="X")]` filters), or NAME and AGE when the CRD has no
  columns. As in Kubernetes, only a path's first result is used and `date` cells are sent
  already formatted as an age.

Columns with priority > 0 are left out unless `wide=True`. NOTE for the server: kubectl
hides priority columns itself and asks for the same Table with or without `-o wide`, so the
apiserver must call with `wide=True`; `wide=False` is for hexlane's own listings.

AGE is Kubernetes' `duration.HumanDuration` of `now - creationTimestamp` (`45s`, `3m20s`,
`5h2m`, `2d4h`, `3y12d`). `include_object` follows `?includeObject=`: "Metadata" (default, a
PartialObjectMetadata, which kubectl uses for the NAMESPACE column of `-A`), "Object" or
"None".
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

_Row = Callable[[dict, datetime], list[Any]]
_NONE = "<none>"


# --- time ----------------------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Kubernetes' `duration.HumanDuration`, as kubectl prints ages."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        rest = secs % 60
        return f"{minutes}m" if rest == 0 else f"{minutes}m{rest}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        rest = minutes % 60
        return f"{hours}h" if rest == 0 else f"{hours}h{rest}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        rest = hours % 24
        return f"{hours // 24}d" if rest == 0 else f"{hours // 24}d{rest}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        days = (hours // 24) % 365
        years = hours // 24 // 365
        return f"{years}y" if days == 0 else f"{years}y{days}d"
    return f"{hours // 24 // 365}y"


def parse_timestamp(value: Any) -> datetime | None:
    """An RFC 3339 timestamp (`2024-05-01T10:00:00Z`, with or without fraction), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def age(value: Any, now: datetime) -> str:
    """How long ago `value` (a timestamp string) was, or `<unknown>`."""
    when = parse_timestamp(value)
    if when is None:
        return "<unknown>"
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    return human_duration((now - when).total_seconds())


# --- the entry point -----------------------------------------------------------------------------


def to_table(kind: str, objects: list[dict], *, wide: bool = False,
             crd_columns: list[dict] | None = None, now: datetime,
             include_object: str = "Metadata") -> dict:
    """A `meta.k8s.io/v1` Table of `objects` (all of `kind`) as kubectl expects it."""
    if crd_columns is not None:
        columns, row_fn = _crd_printer(crd_columns)
    else:
        columns, row_fn = _PRINTERS.get(kind, (_DEFAULT_COLUMNS, _default_row))
    keep = [i for i, col in enumerate(columns) if wide or col["priority"] == 0]
    rows = []
    for obj in objects:
        cells = row_fn(obj, now)
        row: dict[str, Any] = {"cells": [cells[i] for i in keep]}
        conditions = _row_conditions(kind, obj) if crd_columns is None else None
        if conditions:
            row["conditions"] = conditions
        if include_object == "Object":
            row["object"] = obj
        elif include_object != "None":
            row["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                             "metadata": _d(obj.get("metadata"))}
        rows.append(row)
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {},
        "columnDefinitions": [columns[i] for i in keep],
        "rows": rows,
    }


def _col(name: str, type_: str = "string", description: str = "", *, priority: int = 0,
         fmt: str = "") -> dict:
    return {"name": name, "type": type_, "format": fmt, "description": description,
            "priority": priority}


_NAME_COL = _col("Name", "string", "Name must be unique within a namespace.", fmt="name")
_AGE_COL = _col("Age", "string", "CreationTimestamp is a timestamp representing the server "
                "time when this object was created.")
_DEFAULT_COLUMNS = [_NAME_COL, _col("Created At", "date", "CreationTimestamp is a timestamp "
                                    "representing the server time when this object was "
                                    "created.")]


def _default_row(obj: dict, now: datetime) -> list[Any]:
    meta = _d(obj.get("metadata"))
    when = parse_timestamp(meta.get("creationTimestamp"))
    stamp = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if when else None
    return [meta.get("name", ""), stamp]


def _d(value: Any) -> dict:
    """`value` if it is an object, else {}: stored objects may be oddly shaped, and a listing
    must still render."""
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    """`value` if it is a list, else []."""
    return value if isinstance(value, list) else []


def _ds(value: Any) -> list[dict]:
    """The objects in `value` if it is a list, else []."""
    return [item for item in _l(value) if isinstance(item, dict)]


def _int(value: Any) -> int:
    """`value` as an integer, 0 when it is not a number."""
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0


def _name(obj: dict) -> str:
    return str(_d(obj.get("metadata")).get("name", ""))


def _age(obj: dict, now: datetime) -> str:
    return age(_d(obj.get("metadata")).get("creationTimestamp"), now)


def _row_conditions(kind: str, obj: dict) -> list[dict] | None:
    if kind != "Pod":
        return None
    phase = _d(obj.get("status")).get("phase")
    if phase in ("Succeeded", "Failed"):
        return [{"type": "Completed", "status": "True", "reason": phase,
                 "message": "The pod has completed successfully." if phase == "Succeeded"
                 else "The pod failed."}]
    return None


# --- selectors as kubectl prints them ------------------------------------------------------------


def format_labels(labels: Any) -> str:
    """`labels.FormatLabels`: `a=b,c=d` sorted by key, `<none>` when empty."""
    if not isinstance(labels, dict) or not labels:
        return _NONE
    return ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def format_label_selector(selector: Any) -> str:
    """`metav1.FormatLabelSelector`: `app=web,tier in (a,b),!legacy`, `<none>` when empty."""
    if not isinstance(selector, dict):
        return _NONE
    reqs: list[tuple[str, str]] = []
    for key, value in _d(selector.get("matchLabels")).items():
        reqs.append((key, f"{key}={value}"))
    for expr in _ds(selector.get("matchExpressions")):
        if not isinstance(expr, dict):
            continue
        key, op = str(expr.get("key", "")), expr.get("operator")
        values = ",".join(sorted(str(v) for v in _l(expr.get("values"))))
        text = {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})",
                "Exists": key, "DoesNotExist": f"!{key}"}.get(str(op))
        if text is None:
            return "<error>"
        reqs.append((key, text))
    reqs.sort(key=lambda r: r[0])
    return ",".join(text for _, text in reqs) or _NONE


# --- Service -------------------------------------------------------------------------------------


def service_external_ip(svc: dict) -> str:
    """EXTERNAL-IP as kubectl shows it: ingress IPs/hostnames then externalIPs;
    `<pending>` for a LoadBalancer without any, `<none>` otherwise."""
    spec = _d(svc.get("spec"))
    svc_type = spec.get("type") or "ClusterIP"
    external = [str(ip) for ip in _l(spec.get("externalIPs"))]
    if svc_type in ("ClusterIP", "NodePort"):
        return ",".join(external) if external else _NONE
    if svc_type == "LoadBalancer":
        ingress = _ds(_d(_d(svc.get("status")).get("loadBalancer")).get("ingress"))
        found = [str(i.get("ip") or i.get("hostname")) for i in ingress
                 if isinstance(i, dict) and (i.get("ip") or i.get("hostname"))]
        found += external
        return ",".join(found) if found else "<pending>"
    if svc_type == "ExternalName":
        return str(spec.get("externalName") or _NONE)
    return "<unknown>"


def service_ports(svc: dict) -> str:
    """PORT(S): `80:31234/TCP,53/UDP`, `<none>` without ports."""
    parts = []
    for port in _ds(_d(svc.get("spec")).get("ports")):
        if not isinstance(port, dict):
            continue
        proto = port.get("protocol") or "TCP"
        if port.get("nodePort"):
            parts.append(f"{port.get('port')}:{port['nodePort']}/{proto}")
        else:
            parts.append(f"{port.get('port')}/{proto}")
    return ",".join(parts) if parts else _NONE


def _service_row(obj: dict, now: datetime) -> list[Any]:
    spec = _d(obj.get("spec"))
    return [_name(obj), spec.get("type") or "ClusterIP", spec.get("clusterIP") or _NONE,
            service_external_ip(obj), service_ports(obj), _age(obj, now),
            format_labels(spec.get("selector"))]


_SERVICE_COLUMNS = [
    _NAME_COL,
    _col("Type", description="type determines how the Service is exposed."),
    _col("Cluster-IP", description="clusterIP is the IP address of the service."),
    _col("External-IP", description="List of IP addresses for which nodes in the cluster "
         "will also accept traffic for this service."),
    _col("Port(s)", description="The list of ports that are exposed by this service."),
    _AGE_COL,
    _col("Selector", description="Route service traffic to pods with label keys and values "
         "matching this selector.", priority=1),
]


# --- Pod -----------------------------------------------------------------------------------------


def _pod_row(obj: dict, now: datetime) -> list[Any]:
    spec = _d(obj.get("spec"))
    status = _d(obj.get("status"))
    containers = _ds(spec.get("containers"))
    init_specs = _ds(spec.get("initContainers"))
    reason = status.get("reason") or status.get("phase") or ""
    restarts = 0
    ready = 0
    last_restart: datetime | None = None

    def note_restart(cs: dict) -> None:
        nonlocal last_restart
        finished = parse_timestamp(_d(_d(cs.get("lastState")).get("terminated"))
                                   .get("finishedAt"))
        if finished and (last_restart is None or finished > last_restart):
            last_restart = finished

    initializing = False
    for i, cs in enumerate(_ds(status.get("initContainerStatuses"))):
        restarts += _int(cs.get("restartCount"))
        note_restart(cs)
        state = _d(cs.get("state"))
        term, wait = state.get("terminated"), state.get("waiting")
        if term and term.get("exitCode", 0) == 0:
            continue
        if term:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif term.get("signal"):
                reason = f"Init:Signal:{term['signal']}"
            else:
                reason = f"Init:ExitCode:{term.get('exitCode')}"
        elif wait and wait.get("reason") and wait.get("reason") != "PodInitializing":
            reason = "Init:" + wait["reason"]
        else:
            reason = f"Init:{i}/{len(init_specs)}"
        initializing = True
        break
    if not initializing:
        restarts = 0
        last_restart = None
        running = False
        for cs in reversed(_ds(status.get("containerStatuses"))):
            restarts += _int(cs.get("restartCount"))
            note_restart(cs)
            state = _d(cs.get("state"))
            term, wait = state.get("terminated"), state.get("waiting")
            if wait and wait.get("reason"):
                reason = wait["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                reason = (f"Signal:{term['signal']}" if term.get("signal")
                          else f"ExitCode:{term.get('exitCode')}")
            elif cs.get("ready") and state.get("running") is not None:
                running = True
                ready += 1
        if reason == "Completed" and running:
            ready_cond = any(c.get("type") == "Ready" and c.get("status") == "True"
                             for c in _ds(status.get("conditions")))
            reason = "Running" if ready_cond else "NotReady"
    if _d(obj.get("metadata")).get("deletionTimestamp"):
        reason = "Unknown" if status.get("reason") == "NodeLost" else "Terminating"
    restarts_text = str(restarts)
    if restarts and last_restart is not None:
        restarts_text = f"{restarts} ({age(last_restart.isoformat(), now)} ago)"

    gates = _ds(spec.get("readinessGates"))
    if gates:
        true_types = {c.get("type") for c in _ds(status.get("conditions"))
                      if c.get("status") == "True"}
        passed = sum(1 for g in gates if g.get("conditionType") in true_types)
        gates_text = f"{passed}/{len(gates)}"
    else:
        gates_text = _NONE
    return [_name(obj), f"{ready}/{len(containers)}", reason, restarts_text, _age(obj, now),
            status.get("podIP") or _NONE, spec.get("nodeName") or _NONE,
            status.get("nominatedNodeName") or _NONE, gates_text]


_POD_COLUMNS = [
    _NAME_COL,
    _col("Ready", description="The aggregate readiness state of this pod for accepting "
         "traffic."),
    _col("Status", description="The aggregate status of the containers in this pod."),
    _col("Restarts", description="The number of times the containers in this pod have been "
         "restarted and when the last container in this pod has restarted."),
    _AGE_COL,
    _col("IP", description="IP address allocated to the pod.", priority=1),
    _col("Node", description="Name of the Node this pod is running on.", priority=1),
    _col("Nominated Node", description="Name of the node the pod is nominated to.",
         priority=1),
    _col("Readiness Gates", description="Pod readiness gates.", priority=1),
]


# --- Node ----------------------------------------------------------------------------------------


def _node_row(obj: dict, now: datetime) -> list[Any]:
    spec = _d(obj.get("spec"))
    status = _d(obj.get("status"))
    states = []
    for cond in _ds(status.get("conditions")):
        if cond.get("type") == "Ready":
            states.append("Ready" if cond.get("status") == "True" else "NotReady")
    if not states:
        states.append("Unknown")
    if spec.get("unschedulable"):
        states.append("SchedulingDisabled")
    labels = _d(_d(obj.get("metadata")).get("labels"))
    roles = set()
    for key, value in labels.items():
        if key.startswith("node-role.kubernetes.io/") and key.split("/", 1)[1]:
            roles.add(key.split("/", 1)[1])
        elif key == "kubernetes.io/role" and value:
            roles.add(value)
    info = _d(status.get("nodeInfo"))

    def address(kind: str) -> str:
        for addr in _ds(status.get("addresses")):
            if addr.get("type") == kind and addr.get("address"):
                return str(addr["address"])
        return _NONE

    return [_name(obj), ",".join(states), ",".join(sorted(roles)) or _NONE, _age(obj, now),
            info.get("kubeletVersion", ""), address("InternalIP"), address("ExternalIP"),
            info.get("osImage") or "<unknown>", info.get("kernelVersion") or "<unknown>",
            info.get("containerRuntimeVersion") or "<unknown>"]


_NODE_COLUMNS = [
    _NAME_COL,
    _col("Status", description="The status of the node"),
    _col("Roles", description="The roles of the node"),
    _AGE_COL,
    _col("Version", description="Kubelet Version reported by the node."),
    _col("Internal-IP", description="List of addresses reachable to the node.", priority=1),
    _col("External-IP", description="List of addresses reachable to the node.", priority=1),
    _col("OS-Image", description="OS Image reported by the node.", priority=1),
    _col("Kernel-Version", description="Kernel Version reported by the node.", priority=1),
    _col("Container-Runtime", description="Container Runtime Version reported by the node.",
         priority=1),
]


# --- the smaller printers ------------------------------------------------------------------------


def _namespace_row(obj: dict, now: datetime) -> list[Any]:
    return [_name(obj), _d(obj.get("status")).get("phase") or "Active", _age(obj, now)]


def _deployment_row(obj: dict, now: datetime) -> list[Any]:
    spec = _d(obj.get("spec"))
    status = _d(obj.get("status"))
    containers = _ds(_d(_d(spec.get("template")).get("spec")).get("containers"))
    replicas = _int(spec.get("replicas", 1))
    return [_name(obj), f"{_int(status.get('readyReplicas'))}/{replicas}",
            _int(status.get("updatedReplicas")), _int(status.get("availableReplicas")),
            _age(obj, now), ",".join(str(c.get("name", "")) for c in containers),
            ",".join(str(c.get("image", "")) for c in containers),
            format_label_selector(spec.get("selector"))]


def _list_with_more(items: list[str], count: int, limit: int = 3,
                    empty: str = "<unset>") -> str:
    text = ",".join(items[:limit])
    if count > limit:
        return f"{text} + {count - limit} more..."
    return text or empty


def _endpointslice_row(obj: dict, now: datetime) -> list[Any]:
    ports = []
    for port in _ds(obj.get("ports")):
        if port.get("port") is not None:
            ports.append(str(port["port"]))
        elif port.get("name"):
            ports.append(str(port["name"]))
        else:
            ports.append("*")
    addresses = [str(a) for ep in _ds(obj.get("endpoints")) for a in _l(ep.get("addresses"))]
    return [_name(obj), obj.get("addressType", ""), _list_with_more(ports, len(ports)),
            _list_with_more(addresses, len(addresses)), _age(obj, now)]


def format_endpoints(endpoints: dict) -> str:
    """ENDPOINTS of an Endpoints object: `ip:port` pairs, three at most, `<none>`."""
    items: list[str] = []
    for subset in _ds(endpoints.get("subsets")):
        addresses = [str(a.get("ip", "")) for a in _ds(subset.get("addresses"))]
        ports = _ds(subset.get("ports"))
        if not ports:
            items.extend(addresses)
            continue
        for port in ports:
            for ip in addresses:
                host = f"[{ip}]" if ":" in ip else ip
                items.append(f"{host}:{port.get('port')}")
    return _list_with_more(items, len(items), empty=_NONE)


def _endpoints_row(obj: dict, now: datetime) -> list[Any]:
    return [_name(obj), format_endpoints(obj), _age(obj, now)]


def _lease_row(obj: dict, now: datetime) -> list[Any]:
    return [_name(obj), _d(obj.get("spec")).get("holderIdentity") or "", _age(obj, now)]


def _configmap_row(obj: dict, now: datetime) -> list[Any]:
    return [_name(obj), len(_d(obj.get("data"))) + len(_d(obj.get("binaryData"))),
            _age(obj, now)]


def _networkpolicy_row(obj: dict, now: datetime) -> list[Any]:
    return [_name(obj), format_label_selector(_d(obj.get("spec")).get("podSelector")),
            _age(obj, now)]


def _event_row(obj: dict, now: datetime) -> list[Any]:
    first = age(obj.get("firstTimestamp"), now) if obj.get("firstTimestamp") \
        else age(obj.get("eventTime"), now)
    last = age(obj.get("lastTimestamp"), now) if obj.get("lastTimestamp") else first
    count = obj.get("count") or 0
    series = obj.get("series")
    if isinstance(series, dict):
        last = age(series.get("lastObservedTime"), now)
        count = series.get("count") or 0
    elif not count:
        count = 1
    involved = _d(obj.get("involvedObject"))
    target = str(involved.get("kind", "")).lower()
    if involved.get("name"):
        target = f"{target}/{involved['name']}"
    source = _d(obj.get("source"))
    sources = [source.get("component") or obj.get("reportingComponent")
               or obj.get("reportingController") or ""]
    host = source.get("host") or obj.get("reportingInstance")
    if host:
        sources.append(host)
    return [last, obj.get("type", ""), obj.get("reason", ""), target,
            involved.get("fieldPath", ""), ", ".join(s for s in sources if s),
            str(obj.get("message", "")).strip(), first, _int(count), _name(obj)]


_PRINTERS: dict[str, tuple[list[dict], _Row]] = {
    "Service": (_SERVICE_COLUMNS, _service_row),
    "Pod": (_POD_COLUMNS, _pod_row),
    "Node": (_NODE_COLUMNS, _node_row),
    "Namespace": ([_NAME_COL, _col("Status", description="The status of the namespace"),
                   _AGE_COL], _namespace_row),
    "Deployment": ([
        _NAME_COL,
        _col("Ready", description="Number of the pod with ready state"),
        _col("Up-to-date", "integer", "Total number of non-terminated pods targeted by this "
             "deployment that have the desired template spec."),
        _col("Available", "integer", "Total number of available pods (ready for at least "
             "minReadySeconds) targeted by this deployment."),
        _AGE_COL,
        _col("Containers", description="Names of each container in the template.", priority=1),
        _col("Images", description="Images referenced by each container in the template.",
             priority=1),
        _col("Selector", description="Label selector for pods.", priority=1),
    ], _deployment_row),
    "EndpointSlice": ([
        _NAME_COL,
        _col("AddressType", description="addressType specifies the type of address carried "
             "by this EndpointSlice."),
        _col("Ports", description="ports specifies the list of network ports exposed by each "
             "endpoint in this slice."),
        _col("Endpoints", description="endpoints is a list of unique endpoints in this slice."),
        _AGE_COL,
    ], _endpointslice_row),
    "Endpoints": ([_NAME_COL, _col("Endpoints", description="Endpoints of the service"),
                   _AGE_COL], _endpoints_row),
    "Lease": ([_NAME_COL, _col("Holder", description="holderIdentity contains the identity "
                               "of the holder of a current lease."), _AGE_COL], _lease_row),
    "ConfigMap": ([_NAME_COL, _col("Data", "integer", "Number of keys in the config map."),
                   _AGE_COL], _configmap_row),
    "NetworkPolicy": ([_NAME_COL, _col("Pod-Selector", description="podSelector selects the "
                                       "pods to which this NetworkPolicy object applies."),
                       _AGE_COL], _networkpolicy_row),
    "Event": ([
        _col("Last Seen", description="The time at which the most recent occurrence of this "
             "event was recorded."),
        _col("Type", description="Type of this event (Normal, Warning)."),
        _col("Reason", description="This should be a short, machine understandable string "
             "that gives the reason for the transition into the object's current status."),
        _col("Object", description="The object that this event is about."),
        _col("Subobject", description="The subobject that this event is about.", priority=1),
        _col("Source", description="The component reporting this event.", priority=1),
        _col("Message", description="A human-readable description of the status of this "
             "operation."),
        _col("First Seen", description="The time at which the event was first recorded.",
             priority=1),
        _col("Count", "integer", "The number of times this event has occurred.", priority=1),
        _col("Name", description="Name must be unique within a namespace.", priority=1,
             fmt="name"),
    ], _event_row),
}


# --- custom resources ----------------------------------------------------------------------------


def _crd_printer(crd_columns: list[dict]) -> tuple[list[dict], _Row]:
    specs = list(crd_columns) or [{"name": "Age", "type": "date",
                                   "jsonPath": ".metadata.creationTimestamp"}]
    columns = [_NAME_COL] + [
        _col(str(c.get("name", "")), str(c.get("type", "string")),
             str(c.get("description", "")), priority=_int(c.get("priority")),
             fmt=str(c.get("format", "")))
        for c in specs]
    paths = [parse_jsonpath(str(c.get("jsonPath", ""))) for c in specs]

    def row(obj: dict, now: datetime) -> list[Any]:
        cells: list[Any] = [_name(obj)]
        for spec, path in zip(specs, paths, strict=True):
            results = evaluate_jsonpath(path, obj) if path is not None else []
            cells.append(_cell(str(spec.get("type", "string")), results[0], now)
                         if results else None)
        return cells

    return columns, row


def _cell(column_type: str, value: Any, now: datetime) -> Any:
    """Kubernetes' cellForJSONValue: a typed cell, or None when the value does not fit."""
    if value is None:
        return None
    if column_type == "string":
        if isinstance(value, str):
            return value
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, (dict, list)):
            return json.dumps(value, separators=(",", ":"), sort_keys=True)
        return str(value)
    if column_type == "integer":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return int(value)
        return None
    if column_type == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return None
    if column_type == "boolean":
        return value if isinstance(value, bool) else None
    if column_type == "date":
        if isinstance(value, str):
            return age(value, now) if parse_timestamp(value) else "<invalid>"
        return None
    return None


# --- JSONPath (the subset printer columns use) ---------------------------------------------------

_Step = tuple[str, Any]  # ("key", name) | ("index", n) | ("all", None) | ("filter", (...))
_FILTER_RE = re.compile(
    r"""^\?\(\s*@((?:\.[^\s=!<>]+)*)\s*(?:(==|!=|<=|>=|<|>)\s*(?:"([^"]*)"|'([^']*)'|([-\w.]+)))?\s*\)$""")


def parse_jsonpath(path: str) -> list[_Step] | None:
    """Parse `.a.b[0]`, `.a['b.c']`, `.a\\.b`, `[*]`, `[?(@.type=="X")].status` (optionally
    wrapped in `{...}`) into steps; None when it is not in the supported subset."""
    text = path.strip()
    if text.startswith("{") and text.endswith("}"):
        text = text[1:-1].strip()
    if text.startswith("$"):
        text = text[1:]
    steps: list[_Step] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == ".":
            i += 1
            name = []
            while i < len(text) and text[i] not in ".[":
                if text[i] == "\\" and i + 1 < len(text):
                    name.append(text[i + 1])
                    i += 2
                    continue
                name.append(text[i])
                i += 1
            key = "".join(name)
            steps.append(("all", None) if key == "*" else ("key", key))
        elif ch == "[":
            end = _closing_bracket(text, i)
            if end < 0:
                return None
            inner = text[i + 1:end].strip()
            i = end + 1
            if inner == "*":
                steps.append(("all", None))
            elif inner[:1] in "'\"" and inner[-1:] == inner[:1] and len(inner) >= 2:
                steps.append(("key", inner[1:-1]))
            elif re.fullmatch(r"-?\d+", inner):
                steps.append(("index", int(inner)))
            else:
                match = _FILTER_RE.match(inner)
                if not match:
                    return None
                field = [p for p in match.group(1).split(".") if p]
                literal: Any = None
                if match.group(3) is not None:
                    literal = match.group(3)
                elif match.group(4) is not None:
                    literal = match.group(4)
                elif match.group(5) is not None:
                    literal = _number_or_word(match.group(5))
                steps.append(("filter", (field, match.group(2), literal)))
        else:
            return None
    return steps


def _closing_bracket(text: str, start: int) -> int:
    quote = ""
    depth = 0
    for j in range(start, len(text)):
        ch = text[j]
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
            if depth == 0:
                return j
    return -1


def _number_or_word(text: str) -> Any:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def evaluate_jsonpath(steps: list[_Step], obj: Any) -> list[Any]:
    """Every value `steps` reaches in `obj`, in document order."""
    current = [obj]
    for kind, arg in steps:
        following: list[Any] = []
        for value in current:
            if kind == "key":
                if isinstance(value, dict) and arg in value:
                    following.append(value[arg])
            elif kind == "index":
                if isinstance(value, list) and -len(value) <= arg < len(value):
                    following.append(value[arg])
            elif kind == "all":
                if isinstance(value, list):
                    following.extend(value)
                elif isinstance(value, dict):
                    following.extend(value.values())
            elif kind == "filter" and isinstance(value, list):
                following.extend(item for item in value if _filter_matches(item, arg))
        current = following
    return current


def _filter_matches(item: Any, filt: tuple[list[str], str | None, Any]) -> bool:
    field, op, literal = filt
    value = item
    for part in field:
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    if op is None:
        return True
    if op == "==":
        return bool(value == literal)
    if op == "!=":
        return bool(value != literal)
    try:
        return bool({"<": value < literal, ">": value > literal,
                     "<=": value <= literal, ">=": value >= literal}[op])
    except TypeError:
        return False
