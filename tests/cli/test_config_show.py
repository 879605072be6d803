"""`hexlane config show` prints the effective values and reports problems like helm would.

Pins down: YAML by default and JSON with `-o json`, both equal to the loaded tree; `-f` and
`--values` both take files, repeatable, later wins, then `--set`; warnings go to stderr with
exit 0; errors print one line per problem (file, key, expectation) with exit 2 and nothing
on stdout; and every `examples/*/values*.yaml` in the repository shows without errors. A
wrong Hubble metric option is such an error, and the agent refuses it before it starts.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hexlane.cli.main import main
from hexlane.config import load_values

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_VALUES = sorted(REPO.glob("examples/*/values*.yaml"))


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_yaml_by_default(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("kubeProxyReplacement: true\nl2announcements:\n  enabled: true\n")
    code, out, err = run(["config", "show", "-f", str(f)], capsys)
    assert (code, err) == (0, "")
    shown = yaml.safe_load(out)
    assert shown == load_values([str(f)])[0].tree
    assert shown["l2announcements"] == {
        "enabled": True, "leaseDuration": "15s", "leaseRenewDeadline": "5s",
        "leaseRetryPeriod": "2s", "election": "hexlane",
        "heartbeat": {"interval": "100ms", "deadAfter": "500ms", "port": 4251}}
    assert next(iter(shown)) == "kubeProxyReplacement"  # defaults' order, not sorted


def test_json_and_long_option_and_set(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("maglev:\n  tableSize: 251\nrollOutCiliumPods: true\n")
    b.write_text("maglev:\n  tableSize: 509\n")
    code, out, _ = run(["config", "show", "--values", str(a), "-f", str(b),
                        "--set", "maglev.tableSize=1021,cluster.name=lab", "-o", "json"],
                       capsys)
    assert code == 0
    shown = json.loads(out)
    assert shown["maglev"]["tableSize"] == 1021
    assert shown["cluster"]["name"] == "lab"
    assert shown["rollOutCiliumPods"] is True


def test_warnings_to_stderr_exit_zero(tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("kubeProxyReplacement: strict\nmyOwnKey: 1\n")
    code, out, err = run(["config", "show", "-f", str(f)], capsys)
    assert code == 0
    assert yaml.safe_load(out)["myOwnKey"] == 1
    lines = err.splitlines()
    assert len(lines) == 2
    assert all(line.startswith(f"{f}:") and "warning:" in line for line in lines)
    assert any(line.startswith(f"{f}:2: myOwnKey: warning: unknown key") for line in lines)
    assert any("kubeProxyReplacement" in line for line in lines)
    assert any("myOwnKey" in line for line in lines)


def test_errors_exit_two_one_line_each(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("l2announcements: yes-please\nloadBalancer:\n  mode: fast\n")
    code, out, err = run(["config", "show", "-f", str(f), "--set", "a.b"], capsys)
    assert code == 2
    assert out == ""
    errors = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3
    assert f"error: {f}:1: l2announcements: expected a map" in err
    assert f"error: {f}:3: loadBalancer.mode: expected one of snat, dsr, hybrid" in err
    assert "error: --set: cannot parse 'a.b'" in err


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "show", "-f", str(tmp_path / "none.yaml")], capsys)
    assert (code, out) == (2, "")
    assert "none.yaml: cannot read file" in err


def test_values_file_that_is_a_list(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("- kubeProxyReplacement: true\n")
    code, _, err = run(["config", "show", "-f", str(f)], capsys)
    assert code == 2
    assert "expected a map of Helm values" in err


def test_no_input_prints_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "show"], capsys)
    assert (code, err) == (0, "")
    shown = yaml.safe_load(out)
    assert shown["maglev"] == {"tableSize": 16381, "hashSeed": "JLfvgnHc2kaSUFaI"}
    assert shown["hubble"]["listenAddress"] == ":4244"


def test_examples_are_present_once_they_land() -> None:
    if not (REPO / "examples").is_dir():
        pytest.skip("examples/ not in this tree yet")
    assert EXAMPLE_VALUES, "examples/ exists but holds no values*.yaml"


@pytest.mark.parametrize("path", EXAMPLE_VALUES,
                         ids=[str(p.relative_to(REPO)) for p in EXAMPLE_VALUES])
def test_each_example_values_file_shows(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["config", "show", "-f", str(path)], capsys)
    assert code == 0, err
    assert "error:" not in err
    assert yaml.safe_load(out) == load_values([str(path)])[0].tree


@pytest.mark.parametrize("seed", sorted({p.parent for p in EXAMPLE_VALUES}),
                         ids=lambda p: p.name)
def test_each_example_seed_layered_shows(seed: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(seed.glob("values*.yaml"), key=lambda p: (p.name != "values.yaml", p.name))
    argv = ["config", "show", "-o", "json"]
    for f in files:
        argv += ["-f", str(f)]
    code, out, err = run(argv, capsys)
    assert code == 0, err
    assert json.loads(out)["kubeProxyReplacement"] is True


def test_a_wrong_hubble_metric_option_is_an_error_naming_it(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "v.yaml"
    f.write_text("hubble:\n  metrics:\n    enabled:\n      - drop\n      - dns:query;ignoreAAA\n")
    code, out, err = run(["config", "show", "-f", str(f)], capsys)
    assert (code, out) == (2, "")
    assert f"error: {f}:5: hubble.metrics.enabled[1]: 'dns:query;ignoreAAA': unknown option " \
           "'ignoreAAA' of metric dns (accepted: query, ignoreAAAA," in err


def test_the_agent_refuses_a_wrong_hubble_metric_before_starting(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "hexlane.cli.main", "agent", "--node", "n1", "--state-dir",
         str(tmp_path / "state"), "--bpf-root", str(tmp_path / "bpf"),
         "--set", "hubble.metrics.enabled={flow:sourceContext=pod|nodename}"],
        capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "unknown context 'nodename' in sourceContext" in done.stderr
    assert not (tmp_path / "state").exists()  # nothing started
