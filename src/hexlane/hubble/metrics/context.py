"""The context labels of a Hubble metric: `source`, `destination` and `labelsContext`'s (pure).

`ContextLabels(options)` is built once per metric from its parsed options
(`hexlane.config.hubble_metrics.ContextOptions`); `values(flow)` gives the label values in
the order of `options.label_names()`, as Cilium's `ContextOptions.GetLabelValues` does:
`labelsContext`'s labels first (in their fixed order), then `source`, then `destination`,
each the first non-empty value of its `|`-separated identifiers (the `Egress`/`Ingress`
variants for flows of that direction). `values(flow, invert=True)` swaps source and
destination (httpV2 counts response flows from the request's point of view).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

from hexlane.config.hubble_metrics import ContextOptions
from hexlane.hubble.api.flow import flow_pb2

KUBE_APISERVER_LABEL = "reserved:kube-apiserver"
#: the labels a pod's app name is read from, as Cilium's `app` context does
APP_LABELS = ("k8s:app.kubernetes.io/name=", "k8s:k8s-app=", "k8s:app=")
_SHORT_POD = re.compile(r"^(.+?)(-[a-z0-9]+){1,2}$")
_EGRESS, _INGRESS = flow_pb2.EGRESS, flow_pb2.INGRESS
_DIRECTIONS = {flow_pb2.INGRESS: "ingress", flow_pb2.EGRESS: "egress"}

Endpoint = flow_pb2.Endpoint


def app_name(labels: Sequence[str]) -> str:
    """The first of the pod's app labels that has a value ("" when none)."""
    for label in labels:
        for prefix in APP_LABELS:
            if label.startswith(prefix) and len(label) > len(prefix):
                return label[len(prefix):]
    return ""


def reserved_identity(labels: Sequence[str]) -> str:
    """reserved:kube-apiserver when the endpoint has it, else its first reserved: label."""
    if KUBE_APISERVER_LABEL in labels:
        return KUBE_APISERVER_LABEL
    return next((label for label in labels if label.startswith("reserved:")), "")


def short_pod_name(name: str) -> str:
    """A pod's name without its ReplicaSet and pod suffixes (Cilium's pod-short)."""
    return _SHORT_POD.sub(r"\1", name)


def _in_namespace(ep: Endpoint, name: str) -> str:
    return f"{ep.namespace}/{name}" if ep.namespace else name


def _workload_name(ep: Endpoint) -> str:
    return ep.workloads[0].name if ep.workloads else ""


def _workload(ep: Endpoint) -> str:
    name = _workload_name(ep)
    return _in_namespace(ep, name) if name else ""


# identifier -> value from (endpoint, flow, is the endpoint the source)
_IDENTIFIERS: dict[str, Callable[[Endpoint, flow_pb2.Flow, bool], str]] = {
    "namespace": lambda ep, f, src: ep.namespace,
    "identity": lambda ep, f, src: ",".join(ep.labels),
    "pod": lambda ep, f, src: _in_namespace(ep, ep.pod_name),
    "pod-short": lambda ep, f, src: _in_namespace(ep, short_pod_name(ep.pod_name)),
    "pod-name": lambda ep, f, src: ep.pod_name,
    "dns": lambda ep, f, src: ",".join(f.source_names if src else f.destination_names),
    "ip": lambda ep, f, src: f.IP.source if src else f.IP.destination,
    "reserved-identity": lambda ep, f, src: reserved_identity(ep.labels),
    "workload": lambda ep, f, src: _workload(ep),
    "workload-name": lambda ep, f, src: _workload_name(ep),
    "app": lambda ep, f, src: app_name(ep.labels),
}


def _first(identifiers: Sequence[str], ep: Endpoint, f: flow_pb2.Flow, src: bool) -> str:
    value = ""
    for ident in identifiers:
        value = _IDENTIFIERS[ident](ep, f, src)
        if value:
            break
    return value


def _label(label: str, f: flow_pb2.Flow, invert: bool) -> str:
    side, _, what = label.partition("_")
    if side == "traffic":
        return _DIRECTIONS.get(f.traffic_direction, "unknown")
    source = (side == "source") != invert
    if what == "ip":
        return f.IP.source if source else f.IP.destination
    ep = f.source if source else f.destination
    if what == "pod":
        return ep.pod_name
    if what == "namespace":
        return ep.namespace
    if what == "workload":
        return _workload_name(ep)
    if what == "workload_kind":
        return ep.workloads[0].kind if ep.workloads else ""
    return app_name(ep.labels)  # app


class ContextLabels:
    """The context label values of one metric (see the module docstring)."""

    __slots__ = ("labels", "names", "options")

    def __init__(self, options: ContextOptions) -> None:
        self.options = options
        self.names = options.label_names()
        self.labels = options.labels

    def values(self, f: flow_pb2.Flow, invert: bool = False) -> tuple[str, ...]:
        if not self.names:
            return ()
        o = self.options
        out = [_label(label, f, invert) for label in self.labels]
        source = destination = ""
        direction = f.traffic_direction
        if o.source:
            idents = (o.source_ingress if o.source_ingress and direction == _INGRESS else
                      o.source_egress if o.source_egress and direction == _EGRESS else
                      o.source)
            source = _first(idents, f.source, f, True)
        if o.destination:
            idents = (o.destination_ingress if o.destination_ingress and direction == _INGRESS
                      else o.destination_egress
                      if o.destination_egress and direction == _EGRESS else o.destination)
            destination = _first(idents, f.destination, f, False)
        if invert:
            source, destination = destination, source
        if o.source:
            out.append(source)
        if o.destination:
            out.append(destination)
        return tuple(out)

    def pod_series(self, namespace: str, name: str) -> list[dict[str, str]]:
        """The label matches that bind a series to this pod (Cilium removes every series
        matching one of them a minute after the pod is deleted)."""
        o = self.options
        pod = f"{namespace}/{name}"
        out = []
        if "pod" in (*o.source, *o.source_egress, *o.source_ingress):
            out.append({"source": pod})
        if "pod" in (*o.destination, *o.destination_egress, *o.destination_ingress):
            out.append({"destination": pod})
        for side in ("source", "destination"):
            if f"{side}_namespace" in o.labels and f"{side}_pod" in o.labels:
                out.append({f"{side}_namespace": namespace, f"{side}_pod": name})
        return out
