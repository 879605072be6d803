"""What Helm and Cilium accept loosely comes out in one normal form, with a note where it matters.

Pins down: kubeProxyReplacement's pre-1.14 strings (strict -> true; disabled -> false;
partial/probe -> false with a warning), booleans and numbers given as strings, ports as ints,
a CIDR string for the pod CIDR list, `endpointRoutes: true` read as
`endpointRoutes.enabled: true` with a note, "" meaning the default routing mode and tunnel
protocol, unknown keys kept with a warning naming file and key, accepted-without-effect keys
silent, Cilium's L2 lease sanitising, Go durations as seconds, and the typed view (immutable,
`.tree` a copy, fallbacks between keys).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from typing import Any

import pytest

from hexlane.config import Values, defaults, resolve_values
from hexlane.model.errors import Problem, errors_only


def resolve(doc: dict[str, Any], flags: tuple[str, ...] = ()) -> tuple[Values, list[Problem]]:
    values, problems = resolve_values([("v.yaml", doc)], flags)
    assert errors_only(problems) == [], problems
    return values, problems


@pytest.mark.parametrize("given,expected,warns", [
    (True, True, False), (False, False, False), ("true", True, False), ("False", False, False),
    ("strict", True, True), ("disabled", False, True), ("partial", False, True),
    ("probe", False, True),
])
def test_kube_proxy_replacement(given: Any, expected: bool, warns: bool) -> None:
    values, problems = resolve({"kubeProxyReplacement": given})
    assert values.kube_proxy_replacement is expected
    assert values.tree["kubeProxyReplacement"] is expected
    warnings = [p for p in problems if p.path == "kubeProxyReplacement"]
    assert bool(warnings) is warns
    for w in warnings:
        assert w.severity == "warning" and w.file == "v.yaml"
        assert "Cilium 1.14" in w.message


def test_partial_warning_says_false() -> None:
    _, problems = resolve({"kubeProxyReplacement": "partial"})
    assert "treats it as false" in problems[0].message


def test_strict_from_set_flag() -> None:
    values, problems = resolve({}, ("kubeProxyReplacement=strict",))
    assert values.kube_proxy_replacement is True
    assert problems[0].file == "--set"


def test_string_booleans_and_numbers() -> None:
    values, problems = resolve({
        "kubeProxyReplacement": "true",
        "l2announcements": {"enabled": "true"},
        "k8sServicePort": "6443",
        "k8sClientRateLimit": {"qps": "50", "burst": "100"},
        "maglev": {"tableSize": "65521"},
        "hubble": {"relay": {"listenPort": "4245"}},
    })
    assert problems == []
    tree = values.tree
    assert tree["l2announcements"]["enabled"] is True
    assert tree["k8sServicePort"] == 6443
    assert tree["k8sClientRateLimit"] == {"qps": 50, "burst": 100,
                                          "operator": {"qps": None, "burst": None}}
    assert tree["maglev"]["tableSize"] == 65521
    assert tree["hubble"]["relay"]["listenPort"] == 4245
    assert values.k8s_service_port == 6443
    assert values.k8s_client_rate_limit.qps == 50.0


def test_set_flags_are_typed_like_helm() -> None:
    values, _ = resolve({}, ("k8sServicePort=6443,k8sServiceHost=10.0.0.10",
                             "l2announcements.enabled=true,kubeProxyReplacement=true"))
    assert values.k8s_service_port == 6443
    assert values.k8s_service_host == "10.0.0.10"
    assert values.l2announcements.enabled is True


def test_fractional_qps() -> None:
    values, _ = resolve({"k8sClientRateLimit": {"qps": 32.5}})
    assert values.k8s_client_rate_limit.qps == 32.5


def test_numbers_for_string_keys_become_strings() -> None:
    values, _ = resolve({}, ("cluster.name=123",))
    assert values.cluster.name == "123"


def test_cidr_string_becomes_list() -> None:
    values, problems = resolve(
        {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": "10.42.0.0/16"}}})
    assert problems == []
    assert values.tree["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"] == ["10.42.0.0/16"]
    assert values.ipam.cluster_pool_ipv4_pod_cidrs == (ipaddress.IPv4Network("10.42.0.0/16"),)


def test_cidr_with_host_bits_warns() -> None:
    values, problems = resolve({"ipv4NativeRoutingCIDR": "10.244.1.5/16"})
    assert values.ipv4_native_routing_cidr == ipaddress.IPv4Network("10.244.0.0/16")
    [warning] = problems
    assert warning.severity == "warning"
    assert "10.244.0.0/16" in warning.message


def test_endpoint_routes_bool_is_read_as_enabled() -> None:
    values, problems = resolve({"endpointRoutes": True})
    assert values.endpoint_routes_enabled is True
    assert values.tree["endpointRoutes"] == {"enabled": True}
    [note] = problems
    assert (note.severity, note.file, note.path) == ("warning", "v.yaml", "endpointRoutes")
    assert "endpointRoutes.enabled" in note.message


def test_empty_routing_mode_and_tunnel_protocol_mean_defaults() -> None:
    values, problems = resolve({"routingMode": "", "tunnelProtocol": ""})
    assert (values.routing_mode, values.tunnel_protocol) == ("tunnel", "vxlan")
    assert problems == []


def test_unknown_keys_are_kept_and_warned() -> None:
    values, problems = resolve({"devices": "eth0", "hubble": {"serviceMonitor": {
        "enabled": True}}, "bpf": {"hostLegacyRouting": True}})
    assert values.tree["devices"] == "eth0"
    assert values.tree["hubble"]["serviceMonitor"] == {"enabled": True}
    assert values.tree["bpf"]["hostLegacyRouting"] is True
    assert {(p.path, p.severity, p.file) for p in problems} == {
        ("devices", "warning", "v.yaml"), ("hubble.serviceMonitor", "warning", "v.yaml"),
        ("bpf.hostLegacyRouting", "warning", "v.yaml")}
    hint = next(p for p in problems if p.path == "hubble.serviceMonitor")
    assert "hubble.metrics.serviceMonitor" in hint.message


def test_accepted_without_effect_keys_are_silent() -> None:
    """(Keys of features not built are silent while off: tests/config/test_not_built.py.)"""
    doc = {
        "rollOutCiliumPods": True, "localRedirectPolicy": False,
        "cgroup": {"autoMount": {"enabled": False}, "hostRoot": "/sys/fs/cgroup"},
        "dashboards": {"enabled": True, "annotations": {"grafana_folder": "Cilium"}},
        "operator": {"rollOutPods": True, "nodeSelector": {"node-role.kubernetes.io/master":
                                                            "true"},
                     "dashboards": {"enabled": True},
                     "prometheus": {"serviceMonitor": {"enabled": True}}},
        "prometheus": {"serviceMonitor": {"enabled": True, "interval": "10s",
                                          "trustCRDsExist": True}},
        "hubble": {"metrics": {"serviceMonitor": {"enabled": True}, "dashboards": {}},
                   "relay": {"rollOutPods": True, "prometheus": {"enabled": False}},
                   "ui": {"rollOutPods": True, "ingress": {"enabled": False, "hosts": ["x"]}}},
    }
    values, problems = resolve(doc)
    assert problems == []
    assert values.tree["cgroup"]["hostRoot"] == "/sys/fs/cgroup"
    assert values.get("hubble.ui.ingress.hosts") == ["x"]


def test_l2_lease_sanitising_like_cilium() -> None:
    values, problems = resolve({"l2announcements": {
        "leaseDuration": "500ms", "leaseRenewDeadline": "2s", "leaseRetryPeriod": "1s"}})
    l2 = values.l2announcements
    # 500ms -> 1s; renew 2s >= 1s -> 0.5s; retry 1s >= 0.5/1.2 -> 0.25s
    assert (l2.lease_duration, l2.lease_renew_deadline, l2.lease_retry_period) == (
        1.0, 0.5, 0.25)
    assert [p.path for p in problems] == [
        "l2announcements.leaseDuration", "l2announcements.leaseRenewDeadline",
        "l2announcements.leaseRetryPeriod"]
    assert all(p.severity == "warning" for p in problems)
    # the tree keeps what the user wrote
    assert values.tree["l2announcements"]["leaseDuration"] == "500ms"


def test_l2_fast_failover_values_pass_unchanged() -> None:
    values, problems = resolve({"l2announcements": {
        "leaseDuration": "3s", "leaseRenewDeadline": "1s", "leaseRetryPeriod": "200ms"}})
    assert problems == []
    l2 = values.l2announcements
    assert (l2.lease_duration, l2.lease_renew_deadline, l2.lease_retry_period) == (
        3.0, 1.0, 0.2)


def test_go_durations() -> None:
    values, _ = resolve({"l2announcements": {"leaseDuration": "1m30s",
                                             "leaseRenewDeadline": "1.5s"}})
    assert values.l2announcements.lease_duration == 90.0
    assert values.l2announcements.lease_renew_deadline == 1.5


def test_operator_rate_limit_falls_back_to_agent_limit() -> None:
    values, _ = resolve({"k8sClientRateLimit": {"qps": 50, "burst": 200}})
    assert values.k8s_client_rate_limit == dataclasses.replace(
        values.k8s_client_rate_limit, operator_qps=50.0, operator_burst=200)
    values, _ = resolve({"k8sClientRateLimit": {"qps": 50, "operator": {"qps": 100,
                                                                        "burst": 300}}})
    assert values.k8s_client_rate_limit.operator_qps == 100.0
    assert values.k8s_client_rate_limit.operator_burst == 300
    assert values.k8s_client_rate_limit.burst == 20


def test_kube_proxy_replacement_implies_external_ips_and_node_port() -> None:
    values, _ = resolve({"kubeProxyReplacement": True})
    assert values.external_ips_enabled and values.node_port_enabled
    plain = defaults()
    assert not plain.external_ips_enabled and not plain.node_port_enabled


def test_healthz_bind_addr_parsed() -> None:
    values, _ = resolve({"kubeProxyReplacementHealthzBindAddr": "0.0.0.0:10256"})
    assert values.kube_proxy_replacement_healthz_bind_addr == ("0.0.0.0", 10256)
    values, _ = resolve({"kubeProxyReplacementHealthzBindAddr": "[::]:10256"})
    assert values.kube_proxy_replacement_healthz_bind_addr == ("::", 10256)
    assert defaults().kube_proxy_replacement_healthz_bind_addr is None


def test_hubble_metrics_list() -> None:
    values, _ = resolve({}, ("hubble.metrics.enabled={dns:query;ignoreAAAA,drop,tcp}",))
    assert values.hubble.metrics == ("dns:query;ignoreAAAA", "drop", "tcp")
    assert defaults().hubble.metrics == ()


def test_unknown_hubble_metric_is_an_error_naming_the_entry() -> None:
    _, problems = resolve_values([("v.yaml", {"hubble": {"metrics": {
        "enabled": ["drop", "latency:x"]}}})])
    [error] = problems
    assert (error.path, error.severity) == ("hubble.metrics.enabled[1]", "error")
    assert "unknown Hubble metric 'latency'" in error.message


def test_values_are_immutable_and_tree_is_a_copy() -> None:
    values = defaults()
    with pytest.raises(dataclasses.FrozenInstanceError):
        values.routing_mode = "native"  # type: ignore[misc]
    tree = values.tree
    tree["routingMode"] = "native"
    tree["hubble"]["enabled"] = False
    assert values.tree["routingMode"] == "tunnel"
    assert values.tree["hubble"]["enabled"] is True
    got = values.get("hubble")
    got["enabled"] = False
    assert values.get("hubble.enabled") is True
    assert values.get("no.such.key", "fallback") == "fallback"


def test_defaults_are_cilium_v1_16() -> None:
    v = defaults()
    assert v.kube_proxy_replacement is False
    assert (v.k8s_service_host, v.k8s_service_port) == (None, None)
    assert (v.k8s_client_rate_limit.qps, v.k8s_client_rate_limit.burst) == (10.0, 20)
    assert (v.l2announcements.lease_duration, v.l2announcements.lease_renew_deadline,
            v.l2announcements.lease_retry_period) == (15.0, 5.0, 2.0)
    assert (v.load_balancer.algorithm, v.load_balancer.mode) == ("random", "snat")
    assert (v.maglev.table_size, v.maglev.hash_seed) == (16381, "JLfvgnHc2kaSUFaI")
    assert v.ipam.mode == "cluster-pool"
    assert v.ipam.cluster_pool_ipv4_pod_cidrs == (ipaddress.IPv4Network("10.0.0.0/8"),)
    assert v.ipam.cluster_pool_ipv4_mask_size == 24
    assert (v.routing_mode, v.tunnel_protocol, v.tunnel_port) == ("tunnel", "vxlan", 8472)
    assert v.ipv4_native_routing_cidr is None
    assert not v.auto_direct_node_routes and not v.endpoint_routes_enabled
    assert v.enable_ipv4_masquerade and not v.bpf_masquerade
    assert v.hubble.enabled and v.hubble.listen_address == ":4244"
    assert v.hubble.event_buffer_capacity == 4095
    assert (v.hubble.metrics_port, v.hubble.relay_listen_port) == (9965, 4245)
    assert not v.hubble.relay_enabled and not v.hubble.ui_enabled
    assert (v.prometheus.enabled, v.prometheus.port) == (False, 9962)
    assert (v.operator.replicas, v.operator.prometheus_enabled,
            v.operator.prometheus_port) == (2, True, 9963)
    assert (v.cluster.name, v.cluster.id) == ("default", 0)
