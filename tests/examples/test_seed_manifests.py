"""The seeds' manifests parse with hexlane's model into what their authors wrote.

Pins down: every manifest file in examples/ outside `other/` loads with
`hexlane.model.load_manifests` and every document parses with `parse_object` into the typed
view of its kind (Service, CiliumLoadBalancerIPPool, CiliumL2AnnouncementPolicy), without an
error or a warning; the parsed views carry the seeds' pools, interfaces and selectors; and
seed 004's Service fragments (kept in `other/` because they lack a name and a spec) are
rejected with problems naming those fields, not a traceback.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from hexlane.model import InputError, L2AnnouncementPolicy, LBIPPool, Service
from hexlane.model.manifests import load_manifests
from hexlane.model.registry import parse_object

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

VIEWS: dict[str, type] = {
    "Service": Service,
    "CiliumLoadBalancerIPPool": LBIPPool,
    "CiliumL2AnnouncementPolicy": L2AnnouncementPolicy,
}


def manifest_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.glob("seed-*/**/*.yaml")
                  if "other" not in p.relative_to(EXAMPLES).parts
                  and not p.name.startswith("values"))


def parsed(name: str) -> list[Any]:
    return [parse_object(m.obj) for m in load_manifests([str(EXAMPLES / name)])]


def ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


@pytest.mark.parametrize("name", [p.relative_to(EXAMPLES).as_posix() for p in manifest_files()])
def test_manifest_parses_without_problems(name: str) -> None:
    try:
        manifests = load_manifests([str(EXAMPLES / name)])
    except InputError as e:
        pytest.fail(f"{name}: {[str(p) for p in e.problems]}")
    assert manifests
    for m in manifests:
        try:
            view = parse_object(m.obj)
        except InputError as e:
            pytest.fail(f"{m.where()}: {[str(p) for p in e.problems]}")
        assert isinstance(view, VIEWS[m.obj["kind"]]), f"{m.where()}: {view!r}"
        assert view.name == m.obj["metadata"]["name"]
        assert [str(w) for w in view.warnings] == []


def test_every_seed_contributes_manifests() -> None:
    seeds = {p.relative_to(EXAMPLES).parts[0] for p in manifest_files()}
    assert seeds == {"seed-000", "seed-001", "seed-002", "seed-004"}


def test_seed_000_pool_policy_and_service() -> None:
    pool, policy = parsed("seed-000/cilium-config.yaml")
    assert pool.name == "first-pool"
    assert [(b.first, b.last) for b in pool.blocks] == [(ip("10.0.0.100"), ip("10.0.0.200"))]
    assert policy.external_ips and policy.load_balancer_ips
    assert policy.interfaces == () and policy.matches_interface("eth0")
    (svc,) = parsed("seed-000/service-blue.yaml")
    assert (svc.namespace, svc.name, svc.type) == ("example", "service-blue", "LoadBalancer")
    assert svc.annotations["io.cilium/lb-ipam-ips"] == "20.0.10.100,20.0.10.200"
    assert [p.port for p in svc.ports] == [1234]


def test_seed_001_policy_interfaces_and_cidr_pool() -> None:
    (policy,) = parsed("seed-001/cilium-l2-announcement-policy.yaml")
    assert policy.interfaces == ("ens192", "^eth[0-9]+")
    assert policy.matches_interface("eth0") and policy.matches_interface("ens192")
    assert not policy.matches_interface("enp0s25")
    assert policy.selects_node({"kubernetes.io/hostname": "node1"})  # nodeSelector: {}
    (pool,) = parsed("seed-001/cilium-load-balancer-ip-pool.yaml")
    assert [b.cidr for b in pool.blocks] == ["10.20.30.100/30"]


def test_seed_002_linux_nodes_and_first_last_ips() -> None:
    policy, pool = parsed("seed-002/cilium-l2.yaml")
    assert policy.load_balancer_ips and not policy.external_ips
    assert policy.selects_node({"kubernetes.io/os": "linux"})
    assert not policy.selects_node({"kubernetes.io/os": "windows"})
    assert pool.allow_first_last_ips == "Yes"
    assert [(b.first, b.last) for b in pool.blocks] == [
        (ip("192.168.0.220"), ip("192.168.0.239"))]


def test_seed_004_summary_and_in_text_versions() -> None:
    (pool,) = parsed("seed-004/ip-pool.yaml")
    assert [(b.first, b.last) for b in pool.blocks] == [
        (ip("10.0.0.224"), ip("10.0.0.239")), (ip("10.0.0.240"), ip("10.0.0.250"))]
    (policy,) = parsed("seed-004/announce.yaml")
    assert policy.interfaces == () and policy.external_ips and policy.load_balancer_ips
    (first_pool,) = parsed("seed-004/in-text/lb-ipam-pool.yaml")
    assert first_pool.name == pool.name == "default-pool"
    assert [b.cidr for b in first_pool.blocks] == ["192.168.1.128/25"]
    (first_policy,) = parsed("seed-004/in-text/l2-announcement-policy.yaml")
    assert first_policy.interfaces == ("enp0s25",)
    assert first_policy.matches_interface("enp0s25") and not first_policy.matches_interface("eth0")


@pytest.mark.parametrize("name", ["seed-004/other/service-metallb-before.yaml",
                                  "seed-004/other/service-cilium-after.yaml"])
def test_seed_004_service_fragments_are_rejected_with_fields(name: str) -> None:
    (manifest,) = load_manifests([str(EXAMPLES / name)])
    with pytest.raises(InputError) as excinfo:
        parse_object(manifest.obj)
    paths = {p.path for p in excinfo.value.problems}
    assert "metadata.name" in paths
