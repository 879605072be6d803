"""`hexlane validate`: every kind of broken input under tests/data/bad/ is reported with its
file, field path and what was expected, exits non-zero and never prints a traceback; the seed
examples pass; unreadable input exits 2; `-o json` is machine-readable."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from hexlane.cli.main import main

REPO = Path(__file__).resolve().parents[2]
BAD = REPO / "tests" / "data" / "bad"
EXAMPLES = REPO / "examples"

# (fixture, field path in the output, what the output must say was expected/wrong)
CASES = [
    ("yaml-syntax.yaml", "line 9", "did not find expected"),
    ("not-a-mapping.yaml", "document 1", "expected a Kubernetes object"),
    ("wrong-type.yaml", "spec.blocks", "expected a list"),
    ("invalid-cidr.yaml", "spec.blocks[0].cidr", "prefix length 33"),
    ("invalid-start-ip.yaml", "spec.blocks[0].start", "expected an IPv4 address"),
    ("start-after-stop.yaml", "spec.blocks[0].stop", "expected start <= stop"),
    ("mixed-families.yaml", "spec.blocks[0].stop", "one address family"),
    ("stop-without-start.yaml", "spec.blocks[0].start", "expected start"),
    ("cidr-and-start.yaml", "spec.blocks[0]", "expected either cidr or start"),
    ("empty-block.yaml", "spec.blocks[1]", "expected cidr, or start"),
    ("allow-first-last-boolean.yaml", "spec.allowFirstLastIPs", 'expected "Yes" or "No"'),
    ("bad-interface-regex.yaml", "spec.interfaces[1]", "RE2"),
    ("unknown-selector-operator.yaml", "spec.nodeSelector.matchExpressions[0].operator",
     "expected one of In, NotIn, Exists, DoesNotExist"),
    ("in-without-values.yaml", "spec.serviceSelector.matchExpressions[0].values",
     "non-empty values list"),
    ("port-out-of-range.yaml", "spec.ports[0].port", "between 1 and 65535"),
    ("unknown-protocol.yaml", "spec.ports[0].protocol", "expected one of 'TCP', 'UDP', 'SCTP'"),
    ("bad-label-key.yaml", "metadata.labels[app name]", "invalid label key"),
    ("unknown-apiversion.yaml", "apiVersion", "expected cilium.io/v2alpha1 or cilium.io/v2"),
    ("missing-name.yaml", "metadata.name", "expected the object's name"),
    ("endport-below-port.yaml", "spec.ingress[0].ports[0].endPort", "expected endPort >= port"),
    ("duplicate-key.yaml", "line 9", "key 'spec' appears twice"),
    ("unknown-entity.yaml", "spec.egress[0].toEntities[0]", "unknown entity 'internet'"),
    ("except-outside-cidr.yaml", "spec.ingress[0].from[0].ipBlock.except[0]",
     "expected a strict subnet"),
    ("service-external-ip.yaml", "spec.externalIPs[0]", "invalid IP address '192.168.1.300'"),
]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(["validate", *argv])
    out = capsys.readouterr()
    return code, out.out + out.err


def test_every_fixture_is_covered() -> None:
    covered = {c[0] for c in CASES} | {"values-list.yaml"}
    assert covered == {p.name for p in BAD.glob("*.yaml")}
    assert len(covered) >= 15


@pytest.mark.parametrize(("fixture", "path", "expected"), CASES, ids=[c[0] for c in CASES])
def test_bad_manifest_is_reported(capsys: pytest.CaptureFixture[str], fixture: str,
                                  path: str, expected: str) -> None:
    code, out = run(capsys, "-f", str(BAD / fixture))
    assert code == 1, out
    error_lines = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    hits = [ln for ln in error_lines if fixture in ln and path in ln and expected in ln]
    assert hits, out
    assert "Traceback" not in out


def test_values_file_that_is_a_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "--values", str(BAD / "values-list.yaml"))
    assert code == 1, out
    assert any("values-list.yaml" in ln and "list" in ln and "map" in ln
               for ln in out.splitlines() if ln.startswith("error: ")), out


def test_all_problems_of_all_files_in_one_run(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "-f", str(BAD), "-o", "json")
    assert code == 1
    report = json.loads(out)
    files_with_errors = {Path(p["file"].rsplit(":", 1)[0]).name
                         for p in report["problems"] if p["severity"] == "error"}
    assert files_with_errors == {c[0] for c in CASES} | {"values-list.yaml"}
    assert report["ok"] is False and report["exitCode"] == 1


@pytest.mark.parametrize("seed", ["seed-000", "seed-001", "seed-002"])
def test_seed_examples_validate(capsys: pytest.CaptureFixture[str], seed: str) -> None:
    code, out = run(capsys, "-f", str(EXAMPLES / seed), "--values",
                    str(EXAMPLES / seed / "values.yaml"))
    assert code == 0, out
    assert "error" not in out.lower().replace("0 error(s)", "")


def test_seed_004_manifests_validate_and_its_fragments_do_not(
        capsys: pytest.CaptureFixture[str]) -> None:
    s4 = EXAMPLES / "seed-004"
    code, out = run(capsys, "-f", str(s4 / "ip-pool.yaml"), str(s4 / "announce.yaml"),
                    str(s4 / "in-text"))
    assert code == 0, out
    code, out = run(capsys, "-f", str(s4 / "other" / "service-cilium-after.yaml"))
    assert code == 1 and "metadata.name" in out


def test_unknown_kind_is_a_warning(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "deploy.yaml"
    f.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n")
    code, out = run(capsys, "-f", str(f))
    assert code == 0
    assert "Deployment/web: warning: Deployment (apps/v1) is not read by hexlane" in out


def test_missing_file_is_unusable_input(capsys: pytest.CaptureFixture[str],
                                        tmp_path: Path) -> None:
    code, out = run(capsys, "-f", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in out and "no such file" in out
    code, out = run(capsys, "--values", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml" in out


def test_directories_are_searched_sorted(capsys: pytest.CaptureFixture[str],
                                         tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "z.yml").write_text("apiVersion: v1\nkind: Foo\nmetadata: {name: z}\n")
    (tmp_path / "a.yaml").write_text("apiVersion: v1\nkind: Foo\nmetadata: {name: a}\n")
    (tmp_path / "notes.txt").write_text("- not yaml we read\n")
    code, out = run(capsys, "-f", str(tmp_path), "-o", "json")
    report = json.loads(out)
    assert code == 0
    assert [Path(f).name for f in report["files"]] == ["a.yaml"]  # kubectl: no -R, no subdirs
    code, out = run(capsys, "-R", "-f", str(tmp_path), "-o", "json")
    report = json.loads(out)
    assert code == 0
    assert [Path(f).name for f in report["files"]] == ["a.yaml", "z.yml"]


def test_overlapping_pools_warn(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    f = tmp_path / "pools.yaml"
    f.write_text("""\
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: a}
spec: {blocks: [{cidr: 10.0.0.0/24}]}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {name: b}
spec: {blocks: [{start: 10.0.1.1}, {start: 10.0.0.10, stop: 10.0.0.20}]}
""")
    code, out = run(capsys, "-f", str(f))
    assert code == 0
    assert "CiliumLoadBalancerIPPool/b: spec.blocks[1]: warning: range '10.0.0.10 - " \
           "10.0.0.20' overlaps" in out
    assert f"{f}:9" in out  # the line of the overlapping block


def test_subprocess_prints_no_traceback() -> None:
    """The installed entry point, as a user runs it, on every bad fixture at once."""
    exe = Path(sys.executable).parent / "hexlane"
    cmd = [str(exe), "validate", "-f", str(BAD), "--values", str(BAD / "values-list.yaml")]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    for fixture, path, _ in CASES:
        assert any(fixture in ln and path in ln for ln in proc.stdout.splitlines()), fixture


def test_list_items_are_checked_where_they_stand(capsys: pytest.CaptureFixture[str],
                                                 tmp_path: Path) -> None:
    f = tmp_path / "list.yaml"
    f.write_text("""\
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Service
    metadata: {name: a, namespace: default}
    spec:
      ports:
        - port: 80
  - apiVersion: v1
    kind: Service
    metadata: {name: b, namespace: default}
    spec:
      ports:
        - port: 99999
""")
    code, out = run(capsys, "-f", str(f))
    assert code == 1
    assert f"error: {f}:15: Service/b: items[1].spec.ports[0].port: 99999 is out of range" in out
    assert "2 object(s) checked" in out


def test_typo_in_a_field_name_is_a_warning(capsys: pytest.CaptureFixture[str],
                                           tmp_path: Path) -> None:
    f = tmp_path / "svc.yaml"
    f.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: web}\n"
                 "spec:\n  selecter: {app: web}\n  ports: [{port: 80}]\n")
    code, out = run(capsys, "-f", str(f))
    assert code == 0
    assert f"{f}:5: Service/web: spec.selecter: warning: unknown field 'selecter'" in out


def test_nothing_to_validate_is_unusable(capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys)
    assert code == 2 and "nothing to validate" in out


def test_standard_input() -> None:
    exe = Path(sys.executable).parent / "hexlane"
    proc = subprocess.run([str(exe), "validate", "-f", "-", "-o", "json"],
                          input=(BAD / "start-after-stop.yaml").read_text(),
                          capture_output=True, text=True, timeout=60, check=False)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [(p["file"], p["path"]) for p in report["problems"]] == [("-:9",
                                                                     "spec.blocks[0].stop")]
