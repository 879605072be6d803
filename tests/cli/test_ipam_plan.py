"""`hexlane ipam plan`: offline, from manifests in file order, the same allocator the operator
runs says what each LoadBalancer Service gets and each pool's status; text and `-o json`;
bad input exits 2 with file, line, object and field, never a traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hexlane.cli.main import main

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "ipam" / "data"
EXAMPLES = REPO / "examples"


def plan_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict:
    assert main(["ipam", "plan", *args, "-o", "json"]) == 0
    return json.loads(capsys.readouterr().out)


def assert_conflict(doc: dict, conflicting: str, *, besides: tuple[str, ...],
                    message: str | None = None) -> None:
    """Pool `conflicting` is marked conflicting (with `message` when given); `besides` not."""
    for name in besides:
        assert doc["pools"][name]["conflicting"] is False, name
    assert doc["pools"][conflicting]["conflicting"] is True
    if message is not None:
        assert doc["pools"][conflicting]["conditions"][0]["message"] == message


def test_seed_000_requested_ips_outside_the_pool_say_no_pool(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(EXAMPLES / "seed-000"))
    assert doc["services"] == {"example/service-blue": {
        "ips": [], "handled": True,
        "condition": {"status": "False", "reason": "no_pool",
                      "message": "No pool exists with a CIDR containing '20.0.10.200'"}}}
    pool = doc["pools"]["first-pool"]
    assert pool["counters"] == {"total": 101, "available": 101, "used": 0}
    assert pool["conditions"][0] == {"type": "cilium.io/PoolConflict", "status": "False",
                                     "reason": "resolved", "message": ""}
    assert [c["type"] for c in pool["conditions"]] == [
        "cilium.io/PoolConflict", "cilium.io/IPsTotal", "cilium.io/IPsAvailable",
        "cilium.io/IPsUsed"]


def test_seed_000_text_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ipam", "plan", "-f", str(EXAMPLES / "seed-000")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["SERVICE", "IPS", "CONDITION"]
    assert out[1].split(None, 2) == [
        "example/service-blue", "-",
        "False no_pool: No pool exists with a CIDR containing '20.0.10.200'"]
    assert out[3].split() == ["POOL", "CONFLICTING", "IPS", "TOTAL", "IPS", "AVAILABLE", "IPS",
                              "USED"]
    assert out[4].split() == ["first-pool", "False", "101", "101", "0"]


@pytest.mark.parametrize(("seed", "pool", "total"), [
    ("seed-001/cilium-load-balancer-ip-pool.yaml", "default-pool", 4),
    ("seed-002/cilium-l2.yaml", "pool", 20),
    ("seed-004/ip-pool.yaml", "default-pool", 16 + 11),
])
def test_seed_pools_counters(capsys: pytest.CaptureFixture[str], seed: str, pool: str,
                             total: int) -> None:
    doc = plan_json(capsys, "-f", str(EXAMPLES / seed))
    assert doc["pools"][pool]["counters"] == {"total": total, "available": total, "used": 0}


def test_seed_004_pihole_shares_tcp_and_udp_53_via_metallb_annotations(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(DATA / "pihole-metallb.yaml"))
    sat = {"status": "True", "reason": "satisfied", "message": ""}
    assert doc["services"]["pihole/pihole-dns-tcp"] == {
        "ips": ["192.168.1.153"], "handled": True, "condition": sat}
    assert doc["services"]["pihole/pihole-dns-udp"] == {
        "ips": ["192.168.1.153"], "handled": True, "condition": sat}
    # The pool's first address: the range holds 192.168.1.153 (split), then the smaller
    # lower block [.128-.152] is used first, from its lowest address.
    assert doc["services"]["default/web"]["ips"] == ["192.168.1.128"]
    assert doc["pools"]["default-pool"]["counters"] == {"total": 128, "available": 126,
                                                        "used": 2}


def test_restart_from_dumped_status_moves_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(DATA / "restart.yaml"))
    ips = {k: v["ips"] for k, v in doc["services"].items()}
    assert ips == {"default/a": ["10.0.0.102"], "default/b": ["10.0.0.100"],
                   "default/c": ["10.0.0.101"], "default/d": []}
    assert doc["services"]["default/d"]["condition"]["reason"] == "out_of_ips"


def test_file_order_makes_later_pool_newer_and_directories_are_read(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(DATA / "order"))
    assert_conflict(doc, "lan-high", besides=("lan",), message=(
        "Pool conflicts since range '10.0.0.200 - 10.0.0.250' overlaps range "
        "'10.0.0.0 - 10.0.0.255' from IP Pool 'lan'"))
    # Only LoadBalancer Services are listed; another controller's class is not handled.
    assert set(doc["services"]) == {"default/dual", "default/other-class"}
    assert doc["services"]["default/other-class"] == {"ips": [], "handled": False,
                                                      "condition": None}
    assert doc["services"]["default/dual"]["ips"] == ["10.0.0.0"]


def test_values_enable_ipv6_for_dual_stack(capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(DATA / "order"), str(DATA / "v6pool.yaml"),
                    "--values", str(DATA / "values-dual.yaml"))
    assert doc["services"]["default/dual"]["ips"] == ["10.0.0.0", "fd00:10::"]
    assert doc["pools"]["v6"]["counters"] == {"total": 256, "available": 255, "used": 1}


def test_no_pool_is_idle(capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(EXAMPLES / "seed-000" / "service-blue.yaml"))
    assert doc == {"idle": True, "services": {}, "pools": {}}
    assert main(["ipam", "plan", "-f", str(EXAMPLES / "seed-000" / "service-blue.yaml")]) == 0
    assert "LB-IPAM stays idle" in capsys.readouterr().out


def test_bad_input_exits_2_naming_file_object_and_field(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ipam", "plan", "-f", str(DATA / "bad-pool.yaml")]) == 2
    err = capsys.readouterr().err
    assert f"{DATA / 'bad-pool.yaml'}:9: CiliumLoadBalancerIPPool/broken: spec.blocks[0].cidr" \
        in err
    assert "prefix length 33" in err
    assert "Service/web: spec.loadBalancerIP" in err
    assert "Traceback" not in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["ipam", "plan", "-f", str(tmp_path / "nope.yaml")]) == 2
    assert "no such file or directory" in capsys.readouterr().err


def test_real_command_line() -> None:
    proc = subprocess.run([sys.executable, "-m", "hexlane.cli.main", "ipam", "plan", "-f",
                           str(EXAMPLES / "seed-000"), "-o", "json"],
                          capture_output=True, text=True, check=False, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["services"]["example/service-blue"]["condition"][
        "reason"] == "no_pool"


@pytest.mark.parametrize("args", [["examples/seed-000/"],
                                  ["tests/ipam/data/pihole-metallb.yaml"]])
def test_docs_examples_match_real_output(capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch,
                                         args: list[str]) -> None:
    doc = (REPO / "docs" / "lb-ipam.md").read_text()
    marker = f"$ hexlane ipam plan -f {' '.join(args)}\n"
    assert marker in doc
    shown = doc.split(marker, 1)[1].split("```", 1)[0]
    monkeypatch.chdir(REPO)
    assert main(["ipam", "plan", "-f", *args]) == 0
    assert capsys.readouterr().out == shown


def test_objects_without_timestamp_after_a_dump_are_the_newest(
        capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(DATA / "dump"))
    assert_conflict(doc, "added", besides=("existing",), message=(
        "Pool conflicts since range '10.0.0.8 - 10.0.0.15' overlaps range "
        "'10.0.0.0 - 10.0.0.15' from IP Pool 'existing'"))
    assert doc["services"]["default/old"]["ips"] == ["10.0.0.5"]
    # [0-4] (5 addresses) is smaller than [6-15] (10): Cilium's allocator takes it first.
    assert doc["services"]["default/new"]["ips"] == ["10.0.0.0"]


def test_without_any_timestamp_file_order_decides(capsys: pytest.CaptureFixture[str]) -> None:
    doc = plan_json(capsys, "-f", str(DATA / "dump" / "2-new.yaml"),
                    str(DATA / "order" / "pools.yaml"))
    assert_conflict(doc, "lan", besides=("added", "lan-high"))


def test_kubectl_list_output_is_read(capsys: pytest.CaptureFixture[str],
                                     tmp_path: Path) -> None:
    text = (DATA / "kubectl-list.yaml").read_text()
    assert main(["ipam", "plan", "-f", str(DATA / "kubectl-list.yaml")]) == 2
    err = capsys.readouterr().err
    assert ":34: Service/broken: items[2].spec.loadBalancerIP: invalid IP address" in err
    good = tmp_path / "list.yaml"
    good.write_text(text.split("  - apiVersion: v1\n    kind: Service\n    metadata:\n"
                               "      name: broken")[0])
    doc = plan_json(capsys, "-f", str(good))
    assert doc["services"]["default/web"]["ips"] == ["10.0.0.107"]
    assert doc["pools"]["lan"]["counters"] == {"total": 11, "available": 10, "used": 1}
