"""`hexlane lab` argument handling: `--name` right after the verb (checked), kubectl's and
exec's own arguments passed on untouched and in order, an optional `--` dropped."""

from __future__ import annotations

from typing import Any

import pytest

from hexlane.cli.main import build_parser


def parse(*argv: str) -> Any:
    return build_parser().parse_args(["lab", *argv])


def test_kubectl_arguments_pass_through() -> None:
    args = parse("kubectl", "--name", "x1", "-n", "kube-system", "get", "pods", "-o", "wide")
    assert args.name == "x1"
    assert args.args == ["-n", "kube-system", "get", "pods", "-o", "wide"]
    args = parse("kubectl", "--name=x1", "--", "get", "--help")
    assert args.args == ["get", "--help"]
    assert parse("kubectl", "get", "nodes").name is None


def test_exec_target_and_command() -> None:
    args = parse("exec", "--name", "x1", "node1", "--", "ip", "-br", "addr")
    assert args.args == ["node1", "--", "ip", "-br", "addr"]
    args = parse("exec", "pod/default/web", "curl", "-s", "http://10.42.0.2/")
    assert args.args == ["pod/default/web", "curl", "-s", "http://10.42.0.2/"]


def test_bad_lab_names_are_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    for bad in ("UPPER", "toolongname", "a-b"):
        with pytest.raises(SystemExit) as err:
            parse("status", "--name", bad)
        assert err.value.code == 2
    assert "want 1 to 8 characters of [a-z0-9]" in capsys.readouterr().err


def test_up_options() -> None:
    args = parse("up", "--name", "x1", "--nodes", "2", "--lan-ifname", "enp0s25", "-f", "a.yaml",
                 "--values", "b.yaml", "--set", "k8sServicePort=6444")
    assert (args.nodes, args.lan_ifname, args.values, args.set) == (
        2, "enp0s25", ["a.yaml", "b.yaml"], ["k8sServicePort=6444"])


def test_freeze_and_thaw_take_a_host() -> None:
    assert (parse("freeze", "--name", "x1", "cp").host, parse("thaw", "node2").host) == (
        "cp", "node2")
