"""The seeds' Helm values files load with hexlane's configuration reader, as the seeds mean them.

Pins down: every values file in examples/ loads with `hexlane.config.load_values` without an
error, alone and layered in the order examples/README.md gives (base `values.yaml` first);
the settings each seed relies on come out as the seed intends (kube-proxy replacement, API
server address, L2 announcements, client rate limit, Maglev/DSR, native routing, Hubble); and
seed 002's "Native Routing" snippet, whose `endpointRoutes: true` is not the chart's shape, is
reported against its file and key rather than crashing.
"""

from __future__ import annotations

import ipaddress

import pytest

from helpers.seeds import EXAMPLES, LAYERS
from hexlane.config import Values, load_values
from hexlane.model.errors import Problem


def load(seed: str, names: list[str]) -> tuple[Values, list[Problem]]:
    return load_values([str(EXAMPLES / seed / n) for n in names])


def errors(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems if p.severity == "error"]


@pytest.mark.parametrize("seed,name", [(s, n) for s, names in LAYERS.items() for n in names])
def test_each_values_file_loads_alone(seed: str, name: str) -> None:
    _, problems = load(seed, [name])
    assert errors(problems) == []


@pytest.mark.parametrize("seed", sorted(LAYERS))
def test_layered_values_load_without_errors(seed: str) -> None:
    values, problems = load(seed, LAYERS[seed])
    assert errors(problems) == []
    # Every seed replaces kube-proxy and announces LoadBalancer IPs over L2.
    assert values.kube_proxy_replacement is True
    assert values.l2announcements.enabled is True
    for p in problems:  # warnings name the file they come from
        assert p.file.startswith(str(EXAMPLES / seed)), str(p)


def test_seed_000_k3s_values_with_monitoring_and_hubble() -> None:
    values, _ = load("seed-000", LAYERS["seed-000"])
    assert (values.k8s_service_host, values.k8s_service_port) == ("127.0.0.1", 6444)
    assert values.kube_proxy_replacement_healthz_bind_addr == ("0.0.0.0", 10256)
    assert (values.k8s_client_rate_limit.qps, values.k8s_client_rate_limit.burst) == (50, 200)
    assert values.external_ips_enabled is True
    assert values.ipam.cluster_pool_ipv4_pod_cidrs == (ipaddress.ip_network("10.42.0.0/16"),)
    # values.yaml's operator keys survive values-monitoring.yaml's operator block (deep merge).
    assert values.get("operator.rollOutPods") is True
    # Maps merge with the chart's defaults, as Helm merges them.
    assert values.get("operator.nodeSelector") == {"node-role.kubernetes.io/master": "true",
                                                   "kubernetes.io/os": "linux"}
    assert values.operator.prometheus_enabled is True
    assert values.prometheus.enabled is True
    assert values.hubble.relay_enabled and values.hubble.ui_enabled
    assert values.hubble.metrics == (
        "dns:query", "drop", "tcp", "flow", "port-distribution", "icmp", "http")


def test_seed_001_set_flags_and_reuse_values_upgrade() -> None:
    base, _ = load("seed-001", ["values.yaml"])
    assert base.kube_proxy_replacement is True  # "strict", removed in Cilium 1.14
    assert (base.k8s_service_host, base.k8s_service_port) == ("10.0.0.10", 6443)
    assert (base.k8s_client_rate_limit.qps, base.k8s_client_rate_limit.burst) == (50, 100)
    assert base.operator.replicas == 1
    assert base.external_ips_enabled is True
    upgraded, _ = load("seed-001", LAYERS["seed-001"])
    assert upgraded.hubble.relay_enabled and upgraded.hubble.ui_enabled
    # --reuse-values: everything the install set is still there after the upgrade.
    assert upgraded.k8s_service_host == "10.0.0.10"
    assert upgraded.operator.replicas == 1


def test_seed_002_talos_native_routing_maglev_dsr() -> None:
    values, _ = load("seed-002", LAYERS["seed-002"])
    assert (values.k8s_service_host, values.k8s_service_port) == ("127.0.0.1", 7445)
    assert (values.load_balancer.algorithm, values.load_balancer.mode) == ("maglev", "dsr")
    assert values.routing_mode == "native"
    assert values.ipv4_native_routing_cidr == ipaddress.ip_network("10.244.0.0/16")
    assert values.auto_direct_node_routes is True
    assert values.endpoint_routes_enabled is True
    assert values.bpf_masquerade is True
    assert values.ipam.mode == "kubernetes"
    assert (values.cluster.name, values.cluster.id) == ("home-ops", 1)
    assert values.operator.replicas == 2
    assert "dns:query;ignoreAAAA" in values.hubble.metrics


def test_seed_004_summary_values() -> None:
    values, _ = load("seed-004", LAYERS["seed-004"])
    assert (values.k8s_service_host, values.k8s_service_port) == ("10.0.0.10", 6443)
    assert (values.k8s_client_rate_limit.qps, values.k8s_client_rate_limit.burst) == (50, 100)
    assert values.external_ips_enabled is True
    assert values.operator.replicas == 1


def test_seed_002_native_routing_snippet_is_reported_not_fatal() -> None:
    path = EXAMPLES / "seed-002" / "other" / "values-native-routing-snippet.yaml"
    values, problems = load_values([str(path)])
    assert values.routing_mode == "native"
    assert any(p.path == "endpointRoutes" and p.file.startswith(str(path)) for p in problems), [
        str(p) for p in problems]
