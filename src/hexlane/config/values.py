"""The effective configuration as an immutable typed view, and the checks across keys (pure).

`resolve_values(documents, set_flags)` does what `helm install -f a.yaml -f b.yaml --set ...`
does to values (defaults, files in order, then flags; see `hexlane.config.merge` and
`hexlane.config.strvals`), normalises and validates the result (`hexlane.config.schema`),
checks the relations Cilium enforces between keys, and returns a `Values` plus every problem,
each naming the file (or "--set") that set the offending key. Daemons read the typed fields
(`values.load_balancer.mode`, `values.maglev.table_size`, ...); `values.tree` is the whole
effective tree, unknown keys included, for output.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Protocol

import yaml

from hexlane.config.duration import parse_duration
from hexlane.config.merge import coalesce, merge_maps
from hexlane.config.schema import check_tree, split_host_port
from hexlane.config.strvals import StrvalsError, parse_set_into
from hexlane.model.errors import InputError, Problem, errors_only
from hexlane.model.manifests import Manifest, parse_mapping, scan_manifests

SET_SOURCE = "--set"
DEFAULTS_SOURCE = ""  # problems in hexlane's own defaults name no file


@functools.cache
def _defaults_text() -> str:
    return resources.files("hexlane.config").joinpath("defaults.yaml").read_text("utf-8")


def default_tree() -> dict[str, Any]:
    """Cilium v1.16's defaults for the keys hexlane knows (a fresh copy)."""
    return copy.deepcopy(_parsed_defaults())


@functools.cache
def _parsed_defaults() -> dict[str, Any]:
    data = yaml.safe_load(_defaults_text())
    assert isinstance(data, dict)
    return data


@dataclass(frozen=True, slots=True)
class K8sClientRateLimit:
    """Kubernetes API client limits; the operator's fall back to the agent's when unset."""

    qps: float
    burst: int
    operator_qps: float
    operator_burst: int


@dataclass(frozen=True, slots=True)
class L2Announcements:
    """L2 announcements and the per-Service lease timings, in seconds."""

    enabled: bool
    lease_duration: float  # seconds, after Cilium's sanitising
    lease_renew_deadline: float
    lease_retry_period: float
    election: str = "hexlane"  # "hexlane" | "lease"
    heartbeat_interval: float = 0.1
    dead_after: float = 0.5
    heartbeat_port: int = 4251


@dataclass(frozen=True, slots=True)
class LoadBalancer:
    """How Services are load-balanced (backend choice, return path, DSR encoding)."""

    algorithm: str  # "random" | "maglev"
    mode: str  # "snat" | "dsr" | "hybrid"
    dsr_dispatch: str  # "opt"
    acceleration: str
    algorithm_annotation: bool = False  # bpf.lbAlgorithmAnnotation
    mode_annotation: bool = False  # bpf.lbModeAnnotation


@dataclass(frozen=True, slots=True)
class Maglev:
    """Maglev table size (a prime from MAGLEV_TABLE_SIZES) and hash seed."""

    table_size: int
    hash_seed: str  # base64 of 12 bytes


@dataclass(frozen=True, slots=True)
class Ipam:
    """Pod IP address management: where node pod CIDRs come from."""

    mode: str  # "cluster-pool" | "kubernetes"
    cluster_pool_ipv4_pod_cidrs: tuple[ipaddress.IPv4Network, ...]
    cluster_pool_ipv4_mask_size: int


@dataclass(frozen=True, slots=True)
class HubbleTls:
    """TLS of the agents' Hubble TCP listener (hubble.tls.*, tls.ca.*); PEMs base64 as given."""

    enabled: bool
    auto_enabled: bool
    auto_method: str
    cert_validity_days: int
    server_cert: str  # "" = made by hexlane
    server_key: str
    extra_dns_names: tuple[str, ...]
    extra_ip_addresses: tuple[str, ...]
    ca_cert: str  # "" = made by hexlane
    ca_key: str
    ca_validity_days: int


@dataclass(frozen=True, slots=True)
class HubbleL7:
    """DNS and HTTP/1.x flows without a proxy (hubble.l7.*, hexlane's own keys)."""

    enabled: bool = True
    dns_ports: tuple[int, ...] = (53,)
    http_ports: tuple[int, ...] = (80, 8080)


@dataclass(frozen=True, slots=True)
class HubbleRelay:
    """hubble relay's settings beyond enabled/listenPort (seconds; Cilium's relay defaults
    where the chart leaves them null, except the sort window: see sort_window)."""

    listen_host: str = ""
    dial_timeout: float = 5.0
    retry_timeout: float = 30.0
    sort_buffer_len_max: int = 4096
    # W: the most a flow waits for earlier flows of other nodes (Cilium's relay: 1 s).
    sort_window: float = 0.020


@dataclass(frozen=True, slots=True)
class Hubble:
    """Flow observability: the agent's Hubble server, metrics, relay and UI."""

    enabled: bool
    socket_path: str
    listen_address: str  # "" = no TCP listener
    event_buffer_capacity: int
    tls: HubbleTls
    metrics: tuple[str, ...]  # empty = Hubble metrics off
    metrics_port: int
    relay_enabled: bool
    relay_listen_port: int
    ui_enabled: bool
    l7: HubbleL7 = HubbleL7()
    relay: HubbleRelay = HubbleRelay()


@dataclass(frozen=True, slots=True)
class Prometheus:
    """The agent's metrics endpoint."""

    enabled: bool
    port: int


@dataclass(frozen=True, slots=True)
class Operator:
    """The operator's replicas (informational) and metrics endpoint."""

    replicas: int
    prometheus_enabled: bool
    prometheus_port: int


@dataclass(frozen=True, slots=True)
class Cluster:
    """The cluster's name and ID."""

    name: str
    id: int


@dataclass(frozen=True)
class Values:
    """The effective configuration: typed fields for what hexlane acts on, plus the tree."""

    kube_proxy_replacement: bool
    kube_proxy_replacement_healthz_bind_addr: tuple[str, int] | None
    k8s_service_host: str | None
    k8s_service_port: int | None
    k8s_client_rate_limit: K8sClientRateLimit
    l2announcements: L2Announcements
    external_ips_enabled: bool
    node_port_enabled: bool
    load_balancer: LoadBalancer
    maglev: Maglev
    ipam: Ipam
    routing_mode: str  # "native" | "tunnel"
    tunnel_protocol: str
    tunnel_port: int
    resync_interval: float  # seconds (reconciler.resyncInterval, hexlane's own)
    ipv4_native_routing_cidr: ipaddress.IPv4Network | None
    auto_direct_node_routes: bool
    endpoint_routes_enabled: bool
    enable_ipv4_masquerade: bool
    bpf_masquerade: bool
    hubble: Hubble
    prometheus: Prometheus
    operator: Operator
    cluster: Cluster
    _tree: dict[str, Any] = field(repr=False, compare=False)

    @property
    def tree(self) -> dict[str, Any]:
        """The whole effective values tree (normalised, unknown keys kept), as a new dict."""
        return copy.deepcopy(self._tree)

    def get(self, path: str, default: Any = None) -> Any:
        """The value at a dotted path (`hubble.relay.enabled`), or `default` when absent."""
        node: Any = self._tree
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return default
            node = node[part]
        return copy.deepcopy(node)


def defaults() -> Values:
    """The configuration with no values files and no flags."""
    values, _ = resolve_values([], [])
    return values


@dataclass(frozen=True)
class ValuesDocument:
    """One values file as read: its name, its tree, and the line of each key (may be empty).

    `where(path)` is `file:line` of the key (or of its nearest parent in this file), the
    place a problem about that key is shown.
    """

    source: str
    tree: Mapping[str, Any]
    manifest: Manifest | None = None

    def where(self, path: str) -> str:
        if self.manifest is None:
            return self.source
        return self.manifest.where(path)


def parse_values_document(text: str, source: str) -> tuple[ValuesDocument, list[Problem]]:
    """One values file's text as a tree with line numbers; an empty file is `{}` as in Helm.

    YAML is read as the rest of hexlane reads it (`hexlane.model.manifests`: YAML 1.1
    scalars, dates kept as strings, a repeated key is an error, as in Helm).
    """
    try:
        tree = parse_mapping(text, source, what="a map of Helm values")
    except InputError as e:
        return ValuesDocument(source, {}), list(e.problems)
    bad_keys = [k for k in tree if not isinstance(k, str)]
    if bad_keys:
        return ValuesDocument(source, {}), [
            Problem(f"keys must be strings, got {bad_keys[0]!r}", file=source)]
    manifests, _ = scan_manifests(text, source)
    return ValuesDocument(source, tree, manifests[0] if manifests else None), []


_SET_DOCUMENT = ValuesDocument(SET_SOURCE, {})


class _Origins:
    """Which document last set each path, so problems name the file (and line) that set it."""

    def __init__(self) -> None:
        self._by_path: dict[str, ValuesDocument] = {}

    def record(self, tree: Mapping[str, Any], doc: ValuesDocument, prefix: str = "") -> None:
        for key, value in tree.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            self._by_path[path] = doc
            if isinstance(value, Mapping):
                self.record(value, doc, path)
            else:
                # A scalar or list replaces whatever was below it.
                below = path + "."
                for p in [p for p in self._by_path if p.startswith(below)]:
                    del self._by_path[p]

    def __call__(self, path: str) -> str:
        probe = path
        while True:
            if probe in self._by_path:
                return self._by_path[probe].where(path)
            cut = max(probe.rfind("."), probe.rfind("["))
            if cut <= 0:
                return DEFAULTS_SOURCE
            probe = probe[:cut]


def resolve_values(documents: Sequence[ValuesDocument | tuple[str, Mapping[str, Any]]],
                   set_flags: Sequence[str] = ()) -> tuple[Values, list[Problem]]:
    """Defaults, then each document (or (name, tree)) in order, then `--set` flags, checked.

    Always returns a usable `Values`: where a key is wrong, its default is used and the
    problem is in the list (the caller decides whether errors stop it).
    """
    origins = _Origins()
    problems: list[Problem] = []
    user: dict[str, Any] = {}
    for item in documents:
        doc = item if isinstance(item, ValuesDocument) else ValuesDocument(*item)
        user = merge_maps(user, doc.tree)
        origins.record(doc.tree, doc)
    for flag in set_flags:
        trial = copy.deepcopy(user)
        try:
            parse_set_into(flag, trial)
        except StrvalsError as e:
            problems.append(Problem(f"cannot parse {flag!r}: {e}", file=SET_SOURCE))
            continue
        user = trial
        origins.record(_changed(flag), _SET_DOCUMENT)
    effective = coalesce(_parsed_defaults(), user)
    tree, found = check_tree(effective, origins)
    problems += found
    # `list[1]` spoils the whole list.
    bad_paths = {p.path.split("[")[0] for p in errors_only(found)}
    values, relation_problems = _typed(tree, bad_paths, origins)
    problems += relation_problems
    return values, problems


def _changed(flag: str) -> dict[str, Any]:
    """The paths one (valid) flag sets, as a tree, for origin tracking."""
    tree: dict[str, Any] = {}
    parse_set_into(flag, tree)
    return tree


class _Reader:
    """Typed reads of the checked tree; a key with an error (or deleted) reads its default."""

    def __init__(self, tree: Mapping[str, Any], bad: set[str]) -> None:
        self.tree = tree
        self.bad = bad

    def __call__(self, path: str) -> Any:
        if path not in self.bad:
            found, value = _lookup(self.tree, path)
            if found:
                return value
        _, value = _lookup(_parsed_defaults(), path)
        return value


def _lookup(tree: Mapping[str, Any], path: str) -> tuple[bool, Any]:
    node: Any = tree
    for part in path.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


class _Report(Protocol):
    def __call__(self, path: str, message: str, severity: str = "error",
                 source_path: str | None = None) -> None: ...


def _typed(tree: dict[str, Any], bad: set[str], origin: _Origins) -> tuple[Values, list[Problem]]:
    # A problem on a map (`l2announcements: yes-please`) spoils every key below it.
    spoiled = set(bad)
    spoiled.update(k for k in _all_paths(_parsed_defaults())
                   for b in bad if k.startswith(b + "."))
    read = _Reader(tree, spoiled)
    problems: list[Problem] = []

    def report(path: str, message: str, severity: str = "error",
               source_path: str | None = None) -> None:
        # Relation problems are shown where the key they are about was set
        # (`source_path` when the fix is elsewhere, e.g. routingMode for a missing CIDR).
        problems.append(Problem(message, path=path, file=origin(source_path or path),
                                severity=severity))

    values = _build(tree, read, report)
    _check_relations(values, read, report)
    return values, problems


def _build(tree: dict[str, Any], read: _Reader, report: _Report) -> Values:
    kpr = bool(read("kubeProxyReplacement"))
    port = read("k8sServicePort")
    healthz = read("kubeProxyReplacementHealthzBindAddr")
    qps = read("k8sClientRateLimit.qps")
    burst = read("k8sClientRateLimit.burst")
    op_qps = read("k8sClientRateLimit.operator.qps")
    op_burst = read("k8sClientRateLimit.operator.burst")
    native_cidr = read("ipv4NativeRoutingCIDR")
    metrics = read("hubble.metrics.enabled")
    return Values(
        kube_proxy_replacement=kpr,
        kube_proxy_replacement_healthz_bind_addr=split_host_port(healthz) if healthz else None,
        k8s_service_host=read("k8sServiceHost") or None,
        k8s_service_port=int(port) if port not in ("", None) else None,
        k8s_client_rate_limit=K8sClientRateLimit(
            qps=float(qps), burst=int(burst),
            operator_qps=float(qps if op_qps is None else op_qps),
            operator_burst=int(burst if op_burst is None else op_burst)),
        l2announcements=_l2(read, report),
        external_ips_enabled=bool(read("externalIPs.enabled")) or kpr,
        node_port_enabled=kpr or bool(read("nodePort.enabled")),
        load_balancer=LoadBalancer(
            algorithm=read("loadBalancer.algorithm"), mode=read("loadBalancer.mode"),
            dsr_dispatch=read("loadBalancer.dsrDispatch"),
            acceleration=read("loadBalancer.acceleration"),
            algorithm_annotation=bool(read("bpf.lbAlgorithmAnnotation")),
            mode_annotation=bool(read("bpf.lbModeAnnotation"))),
        maglev=Maglev(table_size=int(read("maglev.tableSize")),
                      hash_seed=read("maglev.hashSeed")),
        ipam=Ipam(
            mode=read("ipam.mode"),
            cluster_pool_ipv4_pod_cidrs=tuple(
                ipaddress.IPv4Network(c, strict=False)
                for c in read("ipam.operator.clusterPoolIPv4PodCIDRList")),
            cluster_pool_ipv4_mask_size=int(read("ipam.operator.clusterPoolIPv4MaskSize"))),
        routing_mode=read("routingMode"),
        tunnel_protocol=read("tunnelProtocol"),
        tunnel_port=int(read("tunnelPort")),
        resync_interval=parse_duration(read("reconciler.resyncInterval")),
        ipv4_native_routing_cidr=(ipaddress.IPv4Network(native_cidr, strict=False)
                                  if native_cidr else None),
        auto_direct_node_routes=bool(read("autoDirectNodeRoutes")),
        endpoint_routes_enabled=bool(read("endpointRoutes.enabled")),
        enable_ipv4_masquerade=bool(read("enableIPv4Masquerade")),
        bpf_masquerade=bool(read("bpf.masquerade")),
        hubble=Hubble(
            enabled=bool(read("hubble.enabled")),
            socket_path=read("hubble.socketPath"),
            listen_address=read("hubble.listenAddress"),
            event_buffer_capacity=int(read("hubble.eventBufferCapacity")),
            tls=HubbleTls(
                enabled=bool(read("hubble.tls.enabled")),
                auto_enabled=bool(read("hubble.tls.auto.enabled")),
                auto_method=str(read("hubble.tls.auto.method")),
                cert_validity_days=int(read("hubble.tls.auto.certValidityDuration")),
                server_cert=str(read("hubble.tls.server.cert") or ""),
                server_key=str(read("hubble.tls.server.key") or ""),
                extra_dns_names=tuple(read("hubble.tls.server.extraDnsNames") or ()),
                extra_ip_addresses=tuple(read("hubble.tls.server.extraIpAddresses") or ()),
                ca_cert=str(read("tls.ca.cert") or ""),
                ca_key=str(read("tls.ca.key") or ""),
                ca_validity_days=int(read("tls.ca.certValidityDuration"))),
            metrics=tuple(metrics or ()),
            metrics_port=int(read("hubble.metrics.port")),
            l7=HubbleL7(enabled=bool(read("hubble.l7.enabled")),
                        dns_ports=tuple(read("hubble.l7.dnsPorts") or ()),
                        http_ports=tuple(read("hubble.l7.httpPorts") or ())),
            relay_enabled=bool(read("hubble.relay.enabled")),
            relay_listen_port=int(read("hubble.relay.listenPort")),
            relay=_hubble_relay(read),
            ui_enabled=bool(read("hubble.ui.enabled"))),
        prometheus=Prometheus(enabled=bool(read("prometheus.enabled")),
                              port=int(read("prometheus.port"))),
        operator=Operator(replicas=int(read("operator.replicas")),
                          prometheus_enabled=bool(read("operator.prometheus.enabled")),
                          prometheus_port=int(read("operator.prometheus.port"))),
        cluster=Cluster(name=read("cluster.name"), id=int(read("cluster.id"))),
        _tree=tree,
    )


def _check_relations(v: Values, read: _Reader, report: _Report) -> None:
    """The relations Cilium enforces at agent start (pkg/option/config.go, KPR and masquerade
    init in daemon/cmd), plus what this kernel cannot do (no Geneve, no IPIP)."""
    def valid(*paths: str) -> bool:
        # A key that already has an error reads its default here; relations built on that
        # default would only add noise.
        return not any(p in read.bad for p in paths)

    lb = v.load_balancer
    dsr = lb.mode in ("dsr", "hybrid") and valid("loadBalancer.mode")
    if dsr and v.routing_mode == "tunnel" and valid("routingMode"):
        # Cilium: "Node Port dsr mode cannot be used with vxlan tunneling"; Geneve would do.
        report("loadBalancer.mode",
               f"mode {lb.mode} with routingMode tunnel needs Geneve (Cilium carries the DSR "
               "information in Geneve options), and this kernel has no Geneve: "
               "use routingMode: native, or loadBalancer.mode: snat")
    if dsr and lb.dsr_dispatch != "opt" and valid("loadBalancer.dsrDispatch"):
        report("loadBalancer.dsrDispatch",
               f"dsrDispatch {lb.dsr_dispatch} needs a kernel module this machine lacks "
               "(no IPIP, no Geneve); hexlane implements opt (IPv4 option)")
    if dsr and not v.kube_proxy_replacement and valid("kubeProxyReplacement"):
        report("loadBalancer.mode", f"mode {lb.mode} needs kubeProxyReplacement: true")
    if v.routing_mode == "native" and v.enable_ipv4_masquerade \
            and v.ipv4_native_routing_cidr is None and not read("ipMasqAgent.enabled") \
            and valid("routingMode", "ipv4NativeRoutingCIDR", "enableIPv4Masquerade"):
        report("ipv4NativeRoutingCIDR",
               "routingMode native with enableIPv4Masquerade needs ipv4NativeRoutingCIDR "
               "(the pod network that is routed without masquerading), e.g. the "
               "cluster's pod CIDR", source_path="routingMode")
    if v.routing_mode == "tunnel" and v.auto_direct_node_routes and valid("routingMode"):
        report("autoDirectNodeRoutes",
               "autoDirectNodeRoutes cannot be used with routingMode tunnel (packets "
               "between nodes go through the tunnel device); use routingMode: native")
    if v.l2announcements.enabled and not v.kube_proxy_replacement \
            and valid("kubeProxyReplacement"):
        report("l2announcements.enabled",
               "L2 announcements need kubeProxyReplacement: true (Cilium answers ARP "
               "only for addresses its kube-proxy replacement serves)")
    if v.bpf_masquerade and not v.enable_ipv4_masquerade and valid("enableIPv4Masquerade"):
        report("bpf.masquerade",
               "BPF masquerading needs enableIPv4Masquerade: true (there is nothing to "
               "masquerade otherwise)")
    elif v.bpf_masquerade and not v.node_port_enabled and valid("kubeProxyReplacement"):
        report("bpf.masquerade",
               "BPF masquerading needs kubeProxyReplacement: true (or nodePort.enabled)")
    tls = v.hubble.tls
    if bool(tls.server_cert) != bool(tls.server_key) \
            and valid("hubble.tls.server.cert", "hubble.tls.server.key"):
        report("hubble.tls.server.key" if tls.server_cert else "hubble.tls.server.cert",
               "hubble.tls.server.cert and hubble.tls.server.key go together: give both or "
               "neither")
    if tls.enabled and not tls.auto_enabled and not tls.server_cert \
            and valid("hubble.tls.enabled", "hubble.tls.auto.enabled"):
        report("hubble.tls.server.cert",
               "hubble.tls.enabled with hubble.tls.auto.enabled false needs the server "
               "certificate and key in hubble.tls.server.cert/key",
               source_path="hubble.tls.auto.enabled")
    if tls.ca_cert and not tls.ca_key and tls.auto_enabled and not tls.server_cert \
            and valid("tls.ca.cert"):
        report("tls.ca.key", "tls.ca.cert without tls.ca.key cannot sign the agents' "
               "certificates: give tls.ca.key, or hubble.tls.server.cert/key")
    mask_key = "ipam.operator.clusterPoolIPv4MaskSize"
    if v.ipam.mode == "cluster-pool" \
            and valid("ipam.mode", mask_key, "ipam.operator.clusterPoolIPv4PodCIDRList"):
        size = v.ipam.cluster_pool_ipv4_mask_size
        for cidr in v.ipam.cluster_pool_ipv4_pod_cidrs:
            # Cilium's CIDR allocator (pkg/ipam/cidrset) allows at most 16 more bits.
            if size < cidr.prefixlen or size > cidr.prefixlen + 16:
                report(mask_key,
                       f"mask size /{size} does not fit clusterPoolIPv4PodCIDRList entry "
                       f"{cidr}: expected /{cidr.prefixlen} to /{min(cidr.prefixlen + 16, 30)}"
                       " (at most 65536 node CIDRs per entry)")


def _l2(read: _Reader, report: _Report) -> L2Announcements:
    """Lease timings after Cilium's sanitising (pkg/l2announcer), with a warning per change."""
    duration = parse_duration(read("l2announcements.leaseDuration"))
    renew = parse_duration(read("l2announcements.leaseRenewDeadline"))
    retry = parse_duration(read("l2announcements.leaseRetryPeriod"))
    if duration < 1:
        report("l2announcements.leaseDuration",
               f"lease duration {duration:g}s is below 1s; Cilium uses 1s", "warning")
        duration = 1.0
    if duration <= renew:
        report("l2announcements.leaseRenewDeadline",
               f"renew deadline {renew:g}s is not below the lease duration {duration:g}s; "
               f"Cilium uses {duration / 2:g}s", "warning")
        renew = duration / 2
    if renew <= 1.2 * retry:
        report("l2announcements.leaseRetryPeriod",
               f"retry period {retry:g}s is not 20% below the renew deadline {renew:g}s; "
               f"Cilium uses {renew / 2:g}s", "warning")
        retry = renew / 2
    interval = parse_duration(read("l2announcements.heartbeat.interval"))
    dead_after = parse_duration(read("l2announcements.heartbeat.deadAfter"))
    if interval <= 0:
        report("l2announcements.heartbeat.interval",
               f"heartbeat interval {interval:g}s must be above 0; hexlane uses 0.1s")
        interval = 0.1
    if dead_after < 3 * interval:
        report("l2announcements.heartbeat.deadAfter",
               f"{dead_after:g}s is less than three heartbeat intervals ({3 * interval:g}s): "
               "one lost datagram would kill a node; hexlane uses "
               f"{5 * interval:g}s", "warning")
        dead_after = 5 * interval
    return L2Announcements(enabled=bool(read("l2announcements.enabled")),
                           lease_duration=duration, lease_renew_deadline=renew,
                           lease_retry_period=retry,
                           election=str(read("l2announcements.election")),
                           heartbeat_interval=interval, dead_after=dead_after,
                           heartbeat_port=int(read("l2announcements.heartbeat.port")))


def _hubble_relay(read: _Reader) -> HubbleRelay:
    """hubble.relay.*: a null takes hexlane's default (HubbleRelay's)."""
    base = HubbleRelay()

    def seconds(path: str, default: float) -> float:
        value = read(path)
        return default if value is None else parse_duration(value)

    len_max = read("hubble.relay.sortBufferLenMax")
    return HubbleRelay(
        listen_host=str(read("hubble.relay.listenHost") or ""),
        dial_timeout=seconds("hubble.relay.dialTimeout", base.dial_timeout),
        retry_timeout=seconds("hubble.relay.retryTimeout", base.retry_timeout),
        sort_buffer_len_max=base.sort_buffer_len_max if len_max is None else int(len_max),
        sort_window=seconds("hubble.relay.sortBufferDrainTimeout", base.sort_window))


def _all_paths(tree: Mapping[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        out.append(path)
        if isinstance(value, Mapping):
            out += _all_paths(value, path)
    return out
