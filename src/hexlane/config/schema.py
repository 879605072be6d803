"""Which Helm keys hexlane knows, their types, and how values are normalised (pure).

`SPECS` lists every key hexlane accepts: the ones it acts on (with a type and what it does)
and the ones it accepts without effect (deployment details such as `rollOutCiliumPods`,
dashboards, ServiceMonitors, ingress, cgroup, resources). `check_tree` walks an effective
values tree, normalises what Helm and Cilium accept loosely (`"true"` for true, `"6443"` for
a port, `strict` for kubeProxyReplacement, a CIDR string for a CIDR list,
`endpointRoutes: true`), and reports every wrong type or value as a `Problem` naming the
source file, the key path and what was expected. Unknown keys are kept and reported as
warnings. Values that turn on a Cilium feature hexlane does not build yet (`NOT_BUILT`:
encryption, BGP, Local Redirect Policies, policy enforcement, ...) are accepted with a
warning naming the key and what hexlane does instead; their Helm defaults (off) are silent.
Relations between keys are checked in `hexlane.config.values`.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.config.duration import parse_duration
from hexlane.config.hubble_metrics import MetricOptionError, parse_metric_list
from hexlane.model.errors import Problem, join_path

# Cilium's Maglev table sizes (pkg/maglev, Documentation/network/kubernetes/kubeproxy-free.rst):
# primes, so that every backend's permutation visits every slot.
MAGLEV_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
# Hubble's ring buffer capacity must be 2^n - 1 (pkg/hubble/container/ring.go), at most 65535.
_RING_CAPACITIES = frozenset(2**n - 1 for n in range(1, 17))
_DNS_NAME = re.compile(
    r"(?=.{1,253}$)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?")
_CLUSTER_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?")
_DIGITS = re.compile(r"[+-]?[0-9]+")
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


@dataclass(frozen=True, slots=True)
class KeySpec:
    """One accepted key: its dotted path, kind, and what hexlane does with it.

    `kind` "any" accepts any value and everything below it (used for keys accepted without
    effect). `acts` is False for keys hexlane accepts but ignores.
    """

    path: str
    kind: str
    effect: str
    acts: bool = True
    choices: tuple[str, ...] = ()
    nullable: bool = False
    # A feature hexlane does not build (yet): the value of `switch` (a key below this one,
    # or "" for this key itself) that turns it on, with one of the values in `on`, gets a
    # warning naming that key: "hexlane does not build <not_built> yet; <instead>".
    not_built: str = ""
    instead: str = ""
    switch: str = ""
    on: tuple[Any, ...] = (True,)


class Invalid(ValueError):
    """A value of the wrong type or out of range; the message says what was expected.

    `at` locates the bad part inside the value (`[1]` for a list item).
    """

    def __init__(self, message: str, at: str = "") -> None:
        super().__init__(message)
        self.at = at


Note = tuple[str, str]  # (severity, message) about a value that was accepted


def _bool(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if isinstance(value, bool):
        return value, []
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true", []
    raise Invalid(f"expected true or false, got {value!r}")


def _int(value: Any, spec: KeySpec, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise Invalid(f"expected an integer, got {value!r}")
    if isinstance(value, int):
        out = value
    elif isinstance(value, float) and value.is_integer():
        out = int(value)
    elif isinstance(value, str) and _DIGITS.fullmatch(value.strip()):
        out = int(value.strip())
    else:
        raise Invalid(f"expected an integer, got {value!r}")
    if (low is not None and out < low) or (high is not None and out > high):
        if high is None:
            raise Invalid(f"expected an integer of at least {low}, got {out}")
        raise Invalid(f"expected an integer from {low} to {high}, got {out}")
    return out


def _count(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    return _int(value, spec, low=0), []


def _positive_int(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    return _int(value, spec, low=1), []


def _rate(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if isinstance(value, bool):
        raise Invalid(f"expected a positive number of requests per second, got {value!r}")
    if isinstance(value, int | float):
        out: int | float = value
    elif isinstance(value, str) and _NUMBER.fullmatch(value.strip()):
        text = value.strip()
        out = int(text) if _DIGITS.fullmatch(text) else float(text)
    else:
        raise Invalid(f"expected a positive number of requests per second, got {value!r}")
    if out <= 0:
        raise Invalid(f"expected a positive number of requests per second, got {out}")
    return out, []


def _port(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value == "" and spec.nullable:
        return "", []
    try:
        return _int(value, spec, low=1, high=65535), []
    except Invalid:
        raise Invalid(f"expected a port number from 1 to 65535, got {value!r}") from None


def _port_list(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of port numbers, got {value!r}")
    for i, item in enumerate(value):
        if isinstance(item, bool) or not isinstance(item, int) or not 1 <= item <= 65535:
            raise Invalid(f"expected a port number from 1 to 65535, got {item!r}", at=f"[{i}]")
    if len(value) > 16:
        raise Invalid(f"at most 16 ports, got {len(value)}")
    return value, []


def _str(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if isinstance(value, str):
        return value, []
    if isinstance(value, int | float) and not isinstance(value, bool):
        # `--set cluster.name=123` arrives as an int; Helm would render it as text.
        return str(value), []
    raise Invalid(f"expected a string, got {value!r}")


def _enum(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if isinstance(value, str) and value in spec.choices:
        return value, []
    raise Invalid(f"expected one of {', '.join(spec.choices)}, got {value!r}")


def _duration(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if not isinstance(value, str):
        raise Invalid(f"expected a duration such as 15s, 200ms or 1m30s, got {value!r}")
    try:
        seconds = parse_duration(value)
    except ValueError as e:
        raise Invalid(str(e)) from None
    if seconds <= 0:
        raise Invalid(f"expected a positive duration, got {value!r}")
    return value, []


def _cidr(text: Any) -> ipaddress.IPv4Network:
    if not isinstance(text, str):
        raise Invalid(f"expected an IPv4 CIDR such as 10.42.0.0/16, got {text!r}")
    try:
        net = ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise Invalid(f"expected an IPv4 CIDR such as 10.42.0.0/16, got {text!r}") from None
    if not isinstance(net, ipaddress.IPv4Network) or "/" not in text:
        raise Invalid(f"expected an IPv4 CIDR such as 10.42.0.0/16, got {text!r}")
    return net


def _host_bits_note(text: str, net: ipaddress.IPv4Network) -> list[Note]:
    if str(net) != text.strip():
        return [("warning", f"{text} has host bits set; it is used as {net}")]
    return []


def _cidr_or_empty(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value == "":
        return "", []
    net = _cidr(value)
    return value.strip(), _host_bits_note(value, net)


def _cidr_list(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if isinstance(value, str):
        # Cilium's chart joins the list into one space-separated flag, so a single string
        # (seed 000 writes "10.42.0.0/16") works there too.
        items: list[Any] = [p for p in re.split(r"[\s,]+", value) if p]
    elif isinstance(value, list):
        items = value
    else:
        raise Invalid(f"expected a list of IPv4 CIDRs, got {value!r}")
    if not items:
        raise Invalid("expected at least one IPv4 CIDR")
    out: list[str] = []
    notes: list[Note] = []
    for i, item in enumerate(items):
        try:
            net = _cidr(item)
        except Invalid as e:
            raise Invalid(str(e), at=f"[{i}]") from None
        notes += _host_bits_note(item, net)
        out.append(item.strip())
    return out, notes


def _str_list(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value is None and spec.nullable:
        return None, []
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise Invalid(f"expected a list of names, got {value!r}")
    return value, []


def _hubble_metrics(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    """Hubble's metric list with Cilium's option syntax (`hexlane.config.hubble_metrics`):
    an unknown metric, option or context is an error naming the entry."""
    out, _ = _str_list(value, spec)
    if out is None:
        return out, []
    try:
        _, warnings = parse_metric_list(out)
    except MetricOptionError as e:
        raise Invalid(str(e), at=f"[{e.index}]") from None
    return out, [("warning", w) for w in warnings]


def split_host_port(text: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` as (host, port); Invalid when it is not one."""
    m = re.fullmatch(r"(\[[^\]]*\]|[^:\[\]]*):([0-9]+)", text)
    if not m:
        raise Invalid(f"expected host:port such as 0.0.0.0:10256, got {text!r}")
    host, port = m.group(1), int(m.group(2))
    if not 1 <= port <= 65535:
        raise Invalid(f"expected a port from 1 to 65535 in {text!r}")
    bare = host[1:-1] if host.startswith("[") else host
    if bare:
        try:
            ipaddress.ip_address(bare)
        except ValueError:
            if host.startswith("[") or not _DNS_NAME.fullmatch(bare):
                raise Invalid(f"expected an IP address or host name in {text!r}") from None
    return bare, port


def _host_port(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value == "" and spec.nullable:
        return "", []
    if not isinstance(value, str):
        raise Invalid(f"expected host:port such as 0.0.0.0:10256, got {value!r}")
    split_host_port(value)
    return value, []


def _host(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    text, _ = _str(value, spec)
    if text in ("", "auto"):
        return text, []
    try:
        ipaddress.ip_address(text)
    except ValueError:
        if not _DNS_NAME.fullmatch(text):
            raise Invalid(f"expected an IP address or host name, got {text!r}") from None
    return text, []


def _kube_proxy_replacement(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    # Cilium 1.14 removed strict/partial/probe/disabled; only true/false remain.
    if isinstance(value, bool):
        return value, []
    if isinstance(value, str):
        low = value.lower()
        if low in ("true", "false"):
            return low == "true", []
        if low == "strict":
            return True, [("warning", "'strict' was removed in Cilium 1.14; hexlane reads it "
                                      "as true (full kube-proxy replacement)")]
        if low == "disabled":
            return False, [("warning", "'disabled' was removed in Cilium 1.14; hexlane reads it "
                                       "as false")]
        if low in ("partial", "probe"):
            return False, [("warning", f"{value!r} was removed in Cilium 1.14; hexlane treats "
                                       "it as false (kube-proxy stays in charge of services)")]
    raise Invalid(f"expected true or false, got {value!r}")


def _table_size(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    size = _int(value, spec)
    if size not in MAGLEV_TABLE_SIZES:
        raise Invalid("expected one of Cilium's Maglev table sizes "
                      f"{', '.join(map(str, MAGLEV_TABLE_SIZES))}, got {size}")
    return size, []


def _hash_seed(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if not isinstance(value, str):
        raise Invalid(f"expected 12 bytes in base64 (16 characters), got {value!r}")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 12:
        raise Invalid("expected 12 bytes in base64 (16 characters, e.g. from "
                      f"`head -c12 /dev/urandom | base64 -w0`), got {value!r}")
    return value, []


def _mask_size(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    return _int(value, spec, low=1, high=30), []


def _ring_capacity(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    size = _int(value, spec)
    if size not in _RING_CAPACITIES:
        raise Invalid(f"expected 2^n-1 from 1 to 65535 (e.g. 4095), got {size}")
    return size, []


def _cluster_id(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    return _int(value, spec, low=0, high=255), []


def _cluster_name(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    text, _ = _str(value, spec)
    if not _CLUSTER_NAME.fullmatch(text):
        raise Invalid("expected at most 32 lower-case letters, digits and dashes, starting "
                      f"and ending with a letter or digit, got {text!r}")
    return text, []


def _listen_address(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value == "":
        return "", []
    if not isinstance(value, str):
        raise Invalid(f"expected an address such as :4244, got {value!r}")
    split_host_port(value)
    return value, []


def _routing_mode(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    # The chart allows "" for the default, which is tunnel.
    if value == "":
        return "tunnel", []
    return _enum(value, spec)


def _tunnel_protocol(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value == "":
        return "vxlan", []
    if value == "geneve":
        raise Invalid("Geneve is not available on this kernel; hexlane tunnels with vxlan")
    return _enum(value, spec)


def _ipv4_enabled(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    out, _ = _bool(value, spec)
    if not out:
        raise Invalid("hexlane is IPv4-only; ipv4.enabled must be true")
    return out, []


def _pem_base64(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value == "":
        return "", []
    expected = "expected base64 of a PEM block (`base64 -w0 < file.pem`) or \"\""
    if not isinstance(value, str):
        raise Invalid(f"{expected}, got {value!r}")
    try:
        pem = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise Invalid(f"{expected}: not base64") from None
    if b"-----BEGIN " not in pem:
        raise Invalid(f"{expected}: the decoded text has no -----BEGIN line")
    return value.strip(), []


def _ip_list(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if not isinstance(value, list):
        raise Invalid(f"expected a list of IP addresses, got {value!r}")
    for i, item in enumerate(value):
        try:
            ipaddress.ip_address(item)
        except ValueError:
            raise Invalid(f"expected an IP address, got {item!r}", at=f"[{i}]") from None
    return value, []


def _any(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    return value, []


def _object(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    """A map copied as it is into a rendered object (affinity, resources, updateStrategy);
    Kubernetes' own schemas check its inside when the manifests are validated."""
    if value is None and spec.nullable:
        return None, []
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a map, got {value!r}")
    return dict(value), []


def _object_list(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    """A list of maps (tolerations, extraEnv, relabelings); null when nullable."""
    if value is None and spec.nullable:
        return None, []
    if not isinstance(value, list):
        raise Invalid(f"expected a list of maps, got {value!r}")
    for i, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise Invalid(f"expected a map, got {item!r}", at=f"[{i}]")
    return value, []


def _str_map(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    """Labels, annotations, a nodeSelector: names to strings (Kubernetes takes no other
    value there, so `\"true\"` must be quoted)."""
    if not isinstance(value, Mapping):
        raise Invalid(f"expected a map of names to strings, got {value!r}")
    for key, item in value.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise Invalid(f"expected a string (quote it), got {item!r}", at=f".{key}")
    return dict(value), []


def _str_or_null(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if value is None:
        return None, []
    return _str(value, spec)


# Prometheus' duration, as prometheus-operator's ServiceMonitor CRD checks `interval`.
_PROM_DURATION = re.compile(
    r"0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?"
    r"(([0-9]+)ms)?")


def _prom_duration(value: Any, spec: KeySpec) -> tuple[Any, list[Note]]:
    if not isinstance(value, str) or not value or not _PROM_DURATION.fullmatch(value):
        raise Invalid(f"expected a Prometheus duration such as 10s or 1m30s, got {value!r}")
    return value, []


NORMALISERS: dict[str, Callable[[Any, KeySpec], tuple[Any, list[Note]]]] = {
    "bool": _bool, "count": _count, "positive_int": _positive_int, "rate": _rate,
    "port": _port, "str": _str, "enum": _enum, "duration": _duration,
    "cidr_or_empty": _cidr_or_empty, "cidr_list": _cidr_list, "str_list": _str_list,
    "hubble_metrics": _hubble_metrics,
    "host_port": _host_port, "host": _host, "kube_proxy_replacement": _kube_proxy_replacement,
    "table_size": _table_size, "hash_seed": _hash_seed, "mask_size": _mask_size,
    "ring_capacity": _ring_capacity, "cluster_id": _cluster_id, "cluster_name": _cluster_name,
    "listen_address": _listen_address, "routing_mode": _routing_mode,
    "tunnel_protocol": _tunnel_protocol, "ipv4_enabled": _ipv4_enabled, "any": _any,
    "pem_base64": _pem_base64, "ip_list": _ip_list, "port_list": _port_list,
    "object": _object, "object_list": _object_list, "str_map": _str_map,
    "str_or_null": _str_or_null, "prom_duration": _prom_duration,
}


def _acts(path: str, kind: str, effect: str, **kw: Any) -> KeySpec:
    return KeySpec(path, kind, effect, **kw)


def _ignored(path: str, effect: str = "accepted, no effect in hexlane") -> KeySpec:
    return KeySpec(path, "any", effect, acts=False)


def _not_built(path: str, feature: str, instead: str, *, switch: str = "enabled",
               on: tuple[Any, ...] = (True,), kind: str = "any",
               choices: tuple[str, ...] = ()) -> KeySpec:
    """A Cilium key (with `switch` the map of a feature, everything below it accepted) whose
    `on` values turn on `feature`, which hexlane does not build: a warning then."""
    key = f"{path}.{switch}" if switch else path
    effect = (f"{' or '.join(_shown(v) for v in on)} at {key} gives a warning: hexlane does "
              f"not build {feature} yet; {instead}.")
    return KeySpec(path, kind, effect, acts=False, choices=choices, not_built=feature,
                   instead=instead, switch=switch, on=on)


def _shown(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _turned_on(value: Any, spec: KeySpec) -> tuple[str, Any] | None:
    """(the key below spec.path that turns its feature on, its value), when it does."""
    if spec.switch:
        if not isinstance(value, Mapping):
            return None
        value = value.get(spec.switch)
    if isinstance(value, str) and value.lower() in ("true", "false"):
        value = value.lower() == "true"  # as Cilium reads "true"
    if any(value == v and type(value) is type(v) for v in spec.on):
        return (f".{spec.switch}" if spec.switch else ""), value
    return None


# What `hexlane manifests` renders from (Cilium's chart keys of the same meaning): one
# group per workload, "" the agent's DaemonSet.
_WORKLOADS = {"": "the agent DaemonSet", "operator.": "the operator Deployment",
              "hubble.relay.": "the hubble-relay Deployment",
              "hubble.ui.": "the hubble-ui Deployment"}
_WORKLOAD_KEYS = (
    ("nodeSelector", "str_map", "node labels its pods need"),
    ("tolerations", "object_list", "taints its pods tolerate"),
    ("affinity", "object", "its pods' affinity"),
    ("priorityClassName", "str", "its pods' PriorityClass (\"\" = system-node-critical for "
                                 "the agent, system-cluster-critical for the operator, as "
                                 "Cilium's chart in kube-system; none for relay and UI)"),
    ("resources", "object", "its container's resource requests and limits"),
    ("podAnnotations", "str_map", "annotations of its pods"),
    ("podLabels", "str_map", "more labels of its pods"),
    ("annotations", "str_map", "annotations of the workload object"),
    ("updateStrategy", "object", "its update strategy"),
    ("extraArgs", "str_list", "more command-line flags of its hexlane command"),
    ("extraEnv", "object_list", "more environment variables of its container"),
)
_MONITORS = {"prometheus.serviceMonitor.": "the agent's (:9962)",
             "operator.prometheus.serviceMonitor.": "the operator's (:9963)",
             "hubble.metrics.serviceMonitor.": "Hubble's (:9965)"}
_DASHBOARDS = {"dashboards.": "the agent's", "operator.dashboards.": "the operator's",
               "hubble.metrics.dashboards.": "Hubble's"}
_MANIFEST_KEYS = (
    *(_acts(f"{prefix}{key}", kind, f"`hexlane manifests`, {workload}: {what}.")
      for prefix, workload in _WORKLOADS.items() for key, kind, what in _WORKLOAD_KEYS),
    _acts("rollOutCiliumPods", "bool",
          "`hexlane manifests`: a checksum of the config in the agent pods' annotations, so "
          "they roll when the values change."),
    *(_acts(f"{prefix}rollOutPods", "bool",
            f"`hexlane manifests`: a checksum of the config in the annotations of the pods of "
            f"{workload}, so they roll when the values change.")
      for prefix, workload in _WORKLOADS.items() if prefix),
    _acts("hubble.relay.replicas", "count", "`hexlane manifests`: hubble-relay replicas."),
    _acts("hubble.ui.replicas", "count", "`hexlane manifests`: hubble-ui replicas."),
    *(_acts(f"hubble.{part}.service.type", "enum",
            f"`hexlane manifests`: the type of the hubble-{part} Service.",
            choices=("ClusterIP", "NodePort", "LoadBalancer"))
      for part in ("relay", "ui")),
    *(_acts(f"hubble.{part}.service.nodePort", "port",
            f"`hexlane manifests`: the hubble-{part} Service's node port (type NodePort).")
      for part in ("relay", "ui")),
    _acts("image.repository", "str",
          "`hexlane manifests`: the hexlane image every component runs (one image: agent, "
          "operator, relay and UI are commands of one program)."),
    _acts("image.tag", "str", "`hexlane manifests`: its tag (\"\" = this hexlane's version)."),
    _acts("image.pullPolicy", "enum", "`hexlane manifests`: its pull policy.",
          choices=("Always", "IfNotPresent", "Never")),
    _acts("securityContext.privileged", "bool",
          "`hexlane manifests`: run the agent privileged instead of with the capabilities "
          "below."),
    _acts("securityContext.capabilities.ciliumAgent", "str_list",
          "`hexlane manifests`: the agent container's capabilities. hexlane's default is what "
          "it needs (Cilium's list also has CHOWN, KILL, SYS_MODULE, DAC_OVERRIDE, FOWNER, "
          "SETGID, SETUID: hexlane loads no module and owns no files of others)."),
    *(_acts(f"{prefix}enabled", "bool",
            f"`hexlane manifests`: a ServiceMonitor for {what} metrics (and the headless "
            "Service it selects), for a Prometheus Operator.")
      for prefix, what in _MONITORS.items()),
    *(_acts(f"{prefix}labels", "str_map", f"`hexlane manifests`: labels of {what} "
                                          "ServiceMonitor (a Prometheus selects by them).")
      for prefix, what in _MONITORS.items()),
    *(_acts(f"{prefix}annotations", "str_map",
            f"`hexlane manifests`: annotations of {what} ServiceMonitor.")
      for prefix, what in _MONITORS.items()),
    *(_acts(f"{prefix}interval", "prom_duration",
            f"`hexlane manifests`: how often {what} metrics are scraped.")
      for prefix, what in _MONITORS.items()),
    *(_acts(f"{prefix}relabelings", "object_list",
            f"`hexlane manifests`: relabelings of {what} ServiceMonitor endpoint.",
            nullable=True)
      for prefix, what in _MONITORS.items()),
    *(_acts(f"{prefix}metricRelabelings", "object_list",
            f"`hexlane manifests`: metric relabelings of {what} ServiceMonitor endpoint.",
            nullable=True)
      for prefix, what in _MONITORS.items()),
    *(_acts(f"{prefix}enabled", "bool",
            f"`hexlane manifests`: {what} Grafana dashboard as a ConfigMap (Grafana's "
            "sidecar picks it up by its label).")
      for prefix, what in _DASHBOARDS.items()),
    *(_acts(f"{prefix}label", "str",
            f"`hexlane manifests`: the label that marks {what} dashboard ConfigMap.")
      for prefix, what in _DASHBOARDS.items()),
    *(_acts(f"{prefix}labelValue", "str", "`hexlane manifests`: that label's value.")
      for prefix in _DASHBOARDS),
    *(_acts(f"{prefix}namespace", "str_or_null",
            f"`hexlane manifests`: the namespace of {what} dashboard ConfigMap (null = the "
            "release's).", nullable=True)
      for prefix, what in _DASHBOARDS.items()),
    *(_acts(f"{prefix}annotations", "str_map",
            f"`hexlane manifests`: annotations of {what} dashboard ConfigMap (e.g. "
            "grafana_folder).")
      for prefix, what in _DASHBOARDS.items()),
)

_ACTING = (
    _acts("kubeProxyReplacement", "kube_proxy_replacement",
          "true: the agent load-balances every Service in eBPF (ClusterIP, NodePort, "
          "LoadBalancer, externalIPs); no kube-proxy needed. Also accepts the pre-1.14 "
          "strings (strict = true; disabled, partial, probe = false, with a warning)."),
    _acts("kubeProxyReplacementHealthzBindAddr", "host_port",
          "address of the kube-proxy-compatible health server (`/healthz`); empty = off.",
          nullable=True),
    _acts("k8sServiceHost", "host",
          "API server host the agent and operator connect to (k3s 127.0.0.1, Talos "
          "127.0.0.1 with port 7445); empty = the kubeconfig's server."),
    _acts("k8sServicePort", "port", "API server port that goes with k8sServiceHost.",
          nullable=True),
    _acts("k8sClientRateLimit.qps", "rate",
          "sustained Kubernetes API requests per second of each agent (and the operator "
          "unless k8sClientRateLimit.operator.qps is set)."),
    _acts("k8sClientRateLimit.burst", "positive_int",
          "burst of Kubernetes API requests above qps."),
    _acts("k8sClientRateLimit.operator.qps", "rate",
          "the operator's own qps (null = k8sClientRateLimit.qps).", nullable=True),
    _acts("k8sClientRateLimit.operator.burst", "positive_int",
          "the operator's own burst (null = k8sClientRateLimit.burst).", nullable=True),
    _acts("l2announcements.enabled", "bool",
          "answer ARP for LoadBalancer and external IPs selected by a "
          "CiliumL2AnnouncementPolicy; needs kubeProxyReplacement: true."),
    _acts("l2announcements.leaseDuration", "duration",
          "lease duration of the per-Service leader election (failover time)."),
    _acts("l2announcements.leaseRenewDeadline", "duration",
          "how long the leader keeps retrying to renew before it gives up."),
    _acts("l2announcements.leaseRetryPeriod", "duration",
          "wait between lease acquire/renew attempts."),
    _acts("l2announcements.election", "enum",
          "hexlane's own: hexlane (agents hear each other's heartbeats on the LAN and hash "
          "each IP to one live node: sub-second failover, no API writes) or lease (one Lease "
          "per Service, as Cilium).", choices=("hexlane", "lease")),
    _acts("l2announcements.heartbeat.interval", "duration",
          "hexlane's own: how often each agent sends its heartbeat (election: hexlane)."),
    _acts("l2announcements.heartbeat.deadAfter", "duration",
          "hexlane's own: a node not heard from for this long is dead; its IPs move and its "
          "backends leave every node's load balancer (election: hexlane)."),
    _acts("l2announcements.heartbeat.port", "port",
          "hexlane's own: the UDP port of the heartbeats (LAN broadcast)."),
    _acts("externalIPs.enabled", "bool",
          "load-balance Service spec.externalIPs (always on with kubeProxyReplacement)."),
    _acts("policyEnforcementMode", "enum",
          "default: a pod is enforced in a direction once a policy selects it for that "
          "direction; always: every pod is, in both (default deny); never: nothing is "
          "enforced (docs/policy.md). Enforced in the load balancer's pod hooks: needs "
          "kubeProxyReplacement.", choices=("default", "always", "never")),
    _acts("policyAuditMode", "bool",
          "enforced pods let what their policy denies pass; the verdicts are recorded as "
          "AUDIT (Hubble's policy verdicts, hubble_policy_verdicts_total) so policies can "
          "be written from them before they are enforced (docs/policy.md)."),
    _acts("loadBalancer.algorithm", "enum",
          "backend selection: random, or maglev consistent hashing.",
          choices=("random", "maglev")),
    _acts("loadBalancer.mode", "enum",
          "snat: replies return through the load-balancing node; dsr: backends reply "
          "directly (needs routingMode native); hybrid: DSR for TCP, SNAT for UDP.",
          choices=("snat", "dsr", "hybrid")),
    _acts("loadBalancer.dsrDispatch", "enum",
          "how DSR carries the service address to the backend node; hexlane implements opt "
          "(IPv4 option); ipip and geneve need kernel modules this machine lacks.",
          choices=("opt", "ipip", "geneve")),
    _acts("loadBalancer.acceleration", "enum",
          "XDP acceleration; only disabled is built (native and best-effort give a warning).",
          choices=("disabled", "native", "best-effort"), not_built="XDP acceleration",
          instead="Services are load-balanced at tc", on=("native", "best-effort")),
    _acts("maglev.tableSize", "table_size",
          "Maglev lookup table size per service (a prime from Cilium's list)."),
    _acts("maglev.hashSeed", "hash_seed",
          "seed of the Maglev hash (12 bytes, base64); same seed = same backend choice "
          "on every node."),
    _acts("ipam.mode", "enum",
          "cluster-pool: the operator hands each node a pod CIDR from "
          "ipam.operator.clusterPoolIPv4PodCIDRList; kubernetes: use Node spec.podCIDR.",
          choices=("cluster-pool", "kubernetes")),
    _acts("ipam.operator.clusterPoolIPv4PodCIDRList", "cidr_list",
          "IPv4 CIDRs the operator carves node pod CIDRs from (cluster-pool)."),
    _acts("ipam.operator.clusterPoolIPv4MaskSize", "mask_size",
          "prefix length of each node's pod CIDR (cluster-pool)."),
    _acts("routingMode", "routing_mode",
          "tunnel: pod traffic between nodes in VXLAN; native: routed as is (needs "
          "ipv4NativeRoutingCIDR while masquerading).", choices=("native", "tunnel")),
    _acts("tunnelProtocol", "tunnel_protocol",
          "tunnel encapsulation; vxlan only (no Geneve on this kernel).",
          choices=("vxlan",)),
    _acts("tunnelPort", "port", "UDP port of the VXLAN tunnel."),
    _acts("reconciler.resyncInterval", "duration",
          "hexlane's own: how often the agent reads back every kernel object it owns (BPF "
          "map entries, tc filters, routes, neighbours, sysctls, CNI files) and repairs what "
          "changed behind its back (counted in hexlane_reconciler_repairs_total)."),
    _acts("ipv4NativeRoutingCIDR", "cidr_or_empty",
          "traffic to this CIDR is routed without masquerading (pod network)."),
    _acts("autoDirectNodeRoutes", "bool",
          "install a route to every other node's pod CIDR via that node (native routing, "
          "nodes on one L2 segment)."),
    _acts("endpointRoutes.enabled", "bool",
          "one route per pod instead of one via the host device. `endpointRoutes: true` "
          "is read as `endpointRoutes.enabled: true`."),
    _acts("enableIPv4Masquerade", "bool",
          "masquerade pod traffic leaving the node to its address."),
    _acts("bpf.masquerade", "bool",
          "masquerade in eBPF instead of iptables (needs kubeProxyReplacement or "
          "nodePort.enabled)."),
    _acts("bpf.lbAlgorithmAnnotation", "bool",
          "honour the Service annotation service.cilium.io/lb-algorithm (random|maglev)."),
    _acts("bpf.lbModeAnnotation", "bool",
          "honour the Service annotation service.cilium.io/forwarding-mode (snat|dsr; "
          "hexlane also takes hybrid)."),
    _acts("ipMasqAgent.enabled", "bool",
          "Cilium's ip-masq-agent; not implemented in hexlane, read only for the "
          "ipv4NativeRoutingCIDR requirement."),
    _acts("nodePort.enabled", "bool",
          "NodePort services without full kube-proxy replacement (implied by "
          "kubeProxyReplacement: true)."),
    _acts("ipv4.enabled", "ipv4_enabled", "must be true: hexlane is IPv4-only."),
    _acts("ipv6.enabled", "bool",
          "IPv6 is not built (true gives a warning); LB-IPAM reads it as Cilium does, to "
          "decide which pools' IPv6 blocks to hand out.", not_built="IPv6",
          instead="the cluster is IPv4-only"),
    _acts("hubble.enabled", "bool", "record flows in each agent and serve the Hubble API."),
    _acts("hubble.socketPath", "str", "UNIX socket of the agent's Hubble API."),
    _acts("hubble.listenAddress", "listen_address",
          "TCP address of the agent's Hubble API (relay connects here); empty = none."),
    _acts("hubble.eventBufferCapacity", "ring_capacity",
          "flows kept in each agent's ring buffer (2^n-1)."),
    _acts("hubble.tls.enabled", "bool",
          "serve hubble.listenAddress with TLS and require client certificates signed by "
          "the Hubble CA (mutual TLS); the UNIX sockets stay plaintext."),
    _acts("hubble.tls.auto.enabled", "bool",
          "make the Hubble CA (unless tls.ca.cert is given) and the agents' certificates "
          "when hubble.tls.server.cert/key are not given."),
    _acts("hubble.tls.auto.method", "enum",
          "how Cilium's chart makes certificates (helm, cronJob, certmanager); hexlane makes "
          "them itself whichever is chosen (cronJob and certmanager give a warning).",
          choices=("helm", "cronJob", "certmanager"),
          not_built="certificates from a CronJob or cert-manager",
          instead="hexlane makes the Hubble certificates itself", on=("cronJob", "certmanager")),
    _acts("hubble.tls.auto.certValidityDuration", "positive_int",
          "days the certificates hexlane makes are valid."),
    _acts("hubble.tls.server.cert", "pem_base64",
          "base64 PEM certificate of the agents' Hubble server (\"\" = made by hexlane); "
          "Cilium names it *.<cluster.name>.hubble-grpc.cilium.io."),
    _acts("hubble.tls.server.key", "pem_base64",
          "base64 PEM private key of hubble.tls.server.cert."),
    _acts("hubble.tls.server.extraDnsNames", "str_list",
          "more DNS names in the server certificate hexlane makes."),
    _acts("hubble.tls.server.extraIpAddresses", "ip_list",
          "more IP addresses in the server certificate hexlane makes (the node's own are "
          "always in)."),
    _acts("tls.ca.cert", "pem_base64",
          "base64 PEM of the CA that signs Hubble's certificates and whose client "
          "certificates agents accept (\"\" = made by hexlane)."),
    _acts("tls.ca.key", "pem_base64",
          "base64 PEM private key of tls.ca.cert (needed to sign the agents' certificates)."),
    _acts("tls.ca.certValidityDuration", "positive_int",
          "days the CA hexlane makes is valid."),
    _acts("hubble.metrics.enabled", "hubble_metrics",
          "Hubble metrics each agent counts and serves on hubble.metrics.port (dns, drop, "
          "flow, flows-to-world, http, httpV2, icmp, port-distribution, tcp; options after "
          "':' separated by ';', e.g. dns:query;ignoreAAAA or "
          "flow:sourceContext=pod|ip;labelsContext=traffic_direction); null or [] = none.",
          nullable=True),
    _acts("hubble.metrics.port", "port",
          "port of each agent's Hubble metrics endpoint (/metrics on every address)."),
    _acts("hubble.l7.enabled", "bool",
          "hexlane's own: DNS and HTTP/1.x flows (l7.dns, l7.http with latency) from the first "
          "bytes of messages on hubble.l7.dnsPorts and hubble.l7.httpPorts, seen by the "
          "datapath without a proxy (Cilium needs an L7 policy and Envoy for them)."),
    _acts("hubble.l7.dnsPorts", "port_list",
          "hexlane's own: ports whose UDP and TCP traffic is read as DNS (hubble.l7.enabled)."),
    _acts("hubble.l7.httpPorts", "port_list",
          "hexlane's own: ports whose TCP traffic is read as HTTP/1.x (hubble.l7.enabled)."),
    _acts("hubble.relay.enabled", "bool", "run hubble relay (flows of all nodes)."),
    _acts("hubble.relay.listenPort", "port", "port hubble relay listens on."),
    _acts("hubble.relay.listenHost", "str",
          "address hubble relay listens on (\"\" = every address)."),
    _acts("hubble.relay.dialTimeout", "duration",
          "how long hubble relay waits for a node's Hubble server to answer before it "
          "counts the node unavailable (null = 5s, Cilium's relay default).", nullable=True),
    _acts("hubble.relay.retryTimeout", "duration",
          "how often hubble relay tries an unavailable node again (null = 30s, Cilium's "
          "relay default).", nullable=True),
    _acts("hubble.relay.sortBufferLenMax", "positive_int",
          "flows hubble relay holds per follower to sort them by time across nodes; more "
          "are sent at once, oldest first (null = 4096).", nullable=True),
    _acts("hubble.relay.sortBufferDrainTimeout", "duration",
          "the most a flow waits in hubble relay for earlier flows of slower nodes: follow "
          "mode orders flows within this window, and a silent node never holds the stream "
          "back longer (null = 20ms; Cilium's relay waits 1s).", nullable=True),
    _acts("hubble.ui.enabled", "bool", "serve the Hubble web UI."),
    _acts("prometheus.enabled", "bool", "serve agent metrics."),
    _acts("prometheus.port", "port", "port of the agent metrics endpoint."),
    _acts("operator.replicas", "count",
          "replicas of the operator Deployment `hexlane manifests` renders (one leads; the "
          "lab starts one operator)."),
    _acts("operator.prometheus.enabled", "bool", "serve operator metrics."),
    _acts("operator.prometheus.port", "port", "port of the operator metrics endpoint."),
    _acts("cluster.name", "cluster_name", "cluster name shown in flows and status."),
    _acts("cluster.id", "cluster_id", "cluster ID (0-255), shown in status."),
    _acts("cni.binPath", "str", "where the agent puts the hexlane-cni plugin (the node's "
          "CNI bin directory; mounted from the host by `hexlane manifests`)."),
    _acts("cni.confPath", "str", "where the agent writes 05-hexlane.conflist (the node's "
          "CNI config directory; mounted from the host by `hexlane manifests`)."),
    *_MANIFEST_KEYS,
)

# Deployment details `hexlane manifests` does not render (yet): valid Cilium keys, silent.
_POD_KEYS = (
    "securityContext", "podSecurityContext", "extraVolumes", "extraVolumeMounts", "image",
    "podDisruptionBudget", "topologySpreadConstraints",
)
# Cilium features hexlane does not build yet: accepted, and a warning when turned on.
NOT_BUILT = (
    _not_built("localRedirectPolicy", "Local Redirect Policies",
               "hexlane does not act on it: CiliumLocalRedirectPolicy objects are not read, "
               "traffic goes to the Services' backends as without it", switch="",
               kind="bool"),
    _not_built("encryption", "transparent encryption (WireGuard, IPsec)",
               "traffic between nodes is not encrypted"),
    _not_built("bgpControlPlane", "the BGP control plane",
               "nothing is announced over BGP; LoadBalancer IPs are announced over L2 (ARP) "
               "with l2announcements.enabled"),
    _not_built("ingressController", "the Ingress controller",
               "Ingress objects are not served"),
    _not_built("gatewayAPI", "Gateway API support",
               "Gateway and HTTPRoute objects are not served"),
    _not_built("envoy", "the Envoy L7 proxy",
               "no traffic goes through a proxy (hubble.l7 reads DNS and HTTP flows without "
               "one)"),
    _not_built("loadBalancer.l7", "L7 load balancing of Services through Envoy",
               "Services are load-balanced at L4", switch="backend", on=("envoy",)),
    _not_built("clustermesh", "Cluster Mesh", "the cluster is not connected to others",
               switch="useAPIServer"),
    _not_built("hostFirewall", "the host firewall", "host policies are not enforced"),
    _not_built("bandwidthManager", "the bandwidth manager",
               "pods' kubernetes.io/egress-bandwidth annotations are not enforced"),
    _not_built("egressGateway", "the egress gateway",
               "pods' traffic leaves through their own node, masqueraded to its address"),
    _not_built("socketLB", "socket-level load balancing",
               "Services are load-balanced per packet at tc"),
    _not_built("hostPort", "hostPort mapping in eBPF", "pods' hostPorts are not mapped"),
    _not_built("authentication.mutual.spire", "mutual authentication (SPIRE)",
               "connections are not authenticated"),
    _not_built("hubble.relay.prometheus", "metrics of Hubble Relay",
               "the relay serves no metrics and `hexlane manifests` renders no ServiceMonitor "
               "for it"),
    _not_built("hubble.ui.ingress", "an Ingress for the Hubble UI",
               "`hexlane manifests` renders none; reach the UI through its Service"),
)

_IGNORED = (
    _ignored("cgroup"),
    _ignored("prometheus.metrics"),
    _ignored("prometheus.controllerGroupMetrics"),
    *(_ignored(f"{prefix}{key}") for prefix in _MONITORS
      for key in ("trustCRDsExist", "jobLabel", "scrapeTimeout", "namespace")),
    _ignored("hubble.metrics.enableOpenMetrics"),
    _ignored("hubble.metrics.serviceAnnotations"),
    *(_ignored(f"hubble.{part}.service.{key}") for part in ("relay", "ui")
      for key in ("annotations", "labels")),
    _ignored("image.digest"),
    _ignored("image.useDigest"),
    _ignored("image.override"),
    _ignored("securityContext.seLinuxOptions"),
    *(_ignored(f"securityContext.capabilities.{key}")
      for key in ("mountCgroup", "applySysctlOverwrites", "cleanCiliumState")),
    _ignored("hubble.tls.auto.schedule"),
    _ignored("hubble.tls.auto.certManagerIssuerRef"),
    _ignored("hubble.tls.server.existingSecret"),
    _ignored("hubble.peerService"),
    _ignored("debug"),
    *(
        _ignored(f"{prefix}{key}")
        for prefix in _WORKLOADS
        for key in _POD_KEYS
        if prefix or key not in ("image", "securityContext")  # the agent's act
    ),
)

SPECS: dict[str, KeySpec] = {s.path: s for s in (*_ACTING, *NOT_BUILT, *_IGNORED)}

# Every map on the way to a known key: these must be maps, and their unknown children are
# reported.
_MAPS: frozenset[str] = frozenset(
    ".".join(s.path.split(".")[:i]) for s in SPECS.values()
    for i in range(1, s.path.count(".") + 1)
)

# Helpful hints for keys people put in the wrong place (seen in the wild).
_HINTS = {
    "hubble.serviceMonitor": "Cilium's key is hubble.metrics.serviceMonitor",
    "hubble.dashboards": "Cilium's key is hubble.metrics.dashboards",
    "tunnel": "removed in Cilium 1.14; use routingMode and tunnelProtocol",
    "l2announcements.interfaces": "interfaces are chosen per CiliumL2AnnouncementPolicy",
}


def check_tree(tree: Mapping[str, Any], origin: Callable[[str], str]) -> tuple[dict[str, Any],
                                                                              list[Problem]]:
    """The normalised tree and every problem in it; bad values are left as they were.

    `origin(path)` names the source that set `path` (a file name or "--set").
    """
    problems: list[Problem] = []
    out = _walk(tree, "", origin, problems)
    return out, problems


def _walk(node: Mapping[str, Any], prefix: str, origin: Callable[[str], str],
          problems: list[Problem]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in node.items():
        path = join_path(prefix, str(key))
        if path == "endpointRoutes" and isinstance(value, bool):
            # Seed 002 writes `endpointRoutes: true`; Cilium's key is endpointRoutes.enabled.
            problems.append(Problem(
                "read as endpointRoutes.enabled: " + str(value).lower() +
                " (Cilium's key is endpointRoutes.enabled)",
                path=path, file=origin(path), severity="warning"))
            value = {"enabled": value}
        spec = SPECS.get(path)
        if spec is not None:
            if value is None and spec.nullable:
                out[key] = None
                continue
            try:
                out[key], notes = NORMALISERS[spec.kind](value, spec)
            except Invalid as e:
                problems.append(Problem(str(e), path=path + e.at, file=origin(path + e.at)))
                out[key] = value
                continue
            problems += [Problem(msg, path=path, file=origin(path), severity=sev)
                         for sev, msg in notes]
            if spec.not_built and (turned := _turned_on(out[key], spec)):
                at, on = turned
                problems.append(Problem(
                    f"{_shown(on)}: hexlane does not build {spec.not_built} yet; "
                    f"{spec.instead}", path=path + at, file=origin(path + at),
                    severity="warning"))
        elif path in _MAPS:
            if not isinstance(value, Mapping):
                children = sorted(p[len(path) + 1:].split(".")[0] for p in SPECS
                                  if p.startswith(path + "."))
                problems.append(Problem(
                    f"expected a map (with keys such as {', '.join(dict.fromkeys(children))}), "
                    f"got {value!r}", path=path, file=origin(path)))
                out[key] = value
                continue
            out[key] = _walk(value, path, origin, problems)
        else:
            hint = _HINTS.get(path)
            problems.append(Problem(
                "unknown key, kept but not used by hexlane" + (f" ({hint})" if hint else ""),
                path=path, file=origin(path), severity="warning"))
            out[key] = value
    return out
