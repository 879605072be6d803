"""`load_values` end to end on files: the seeds' shapes load, and errors name file and key."""

from __future__ import annotations

from pathlib import Path

from hexlane.config import load_values
from hexlane.model.errors import errors_only


def test_file_then_set_later_wins(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    a.write_text("loadBalancer:\n  algorithm: maglev\nk8sClientRateLimit:\n  qps: 50\n")
    values, problems = load_values([str(a)], ["k8sClientRateLimit.qps=70"])
    assert errors_only(problems) == []
    assert values.load_balancer.algorithm == "maglev"
    assert values.k8s_client_rate_limit.qps == 70


def test_bad_value_names_the_file_that_set_it(tmp_path: Path) -> None:
    a = tmp_path / "a.yaml"
    b = tmp_path / "b.yaml"
    a.write_text("loadBalancer:\n  mode: fast\n")
    b.write_text("hubble:\n  enabled: true\n")
    _, problems = load_values([str(a), str(b)])
    [err] = errors_only(problems)
    assert err.file == f"{a}:2"  # the file that set it, at the key's line
    assert err.path == "loadBalancer.mode"
    assert "snat, dsr, hybrid" in err.message


def test_missing_file_is_a_problem_not_a_traceback(tmp_path: Path) -> None:
    _, problems = load_values([str(tmp_path / "nope.yaml")])
    [err] = errors_only(problems)
    assert err.file.endswith("nope.yaml")
    assert "cannot read file" in err.message
