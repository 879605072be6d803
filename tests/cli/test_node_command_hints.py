"""The node commands (`hexlane status`, `service list`, `l2 list`, `bpf ...`) run on the
machine itself find no agent at the default state dir or BPF root: with a lab on the machine
they say to run the same command in a node through `hexlane lab exec --name X node1 -- ...`
(`hexlane hubble observe|status|list`, finding no Hubble server, on the lab's cp, where the
relay is),
without one that no agent answers here and how to start one; pointed elsewhere (a flag or
the environment, as `lab exec node<i>` does) they say no more than the error.

Labs are found as `lab status`/`lab down` find them (a state file under the lab root, or a
host namespace `<lab>-lan|cp|client|node<i>`): here a lab root and a netns directory of the
test's own, so other labs on the machine do not matter. The lab's own end-to-end test runs
the hint's command against the shared lab (tests/lab/test_lab_e2e.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from hexlane.cli import main as cli_main
from hexlane.lab import manager, netns


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty lab root and netns directory, and no HEXLANE_* variables, and a default
    state dir / BPF root where nothing is."""
    root, ns_dir = tmp_path / "lab", tmp_path / "netns"
    root.mkdir()
    ns_dir.mkdir()
    monkeypatch.setattr(manager, "LAB_ROOT", root)
    monkeypatch.setattr(netns, "NETNS_DIR", str(ns_dir))
    monkeypatch.delenv("HEXLANE_STATE_DIR", raising=False)
    monkeypatch.delenv("HEXLANE_BPF_ROOT", raising=False)
    from hexlane.cli import flags
    monkeypatch.setattr(flags, "DEFAULT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(flags, "DEFAULT_BPF_ROOT", str(tmp_path / "bpf"))
    return root, ns_dir


COMMANDS = [["status"], ["service", "list"], ["l2", "list"], ["bpf", "lb", "list"],
            ["bpf", "lb", "maglev", "list"], ["bpf", "drops", "-o", "json"]]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_with_a_lab_the_hint_is_lab_exec_of_the_same_command(
        machine: tuple[Path, Path], argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    root, ns_dir = machine
    (root / "ab1").mkdir()
    (root / "ab1" / manager.STATE_FILE).write_text("{}")
    (ns_dir / "zz9-lan").touch()  # a half-made lab, found by its namespace
    (ns_dir / "zz9-p0a1b").touch()  # a pod's namespace names no lab
    assert cli_main.main(argv) == 1
    err = capsys.readouterr().err
    assert (f"`hexlane lab exec --name ab1 node1 -- hexlane {' '.join(argv)}` "
            "(labs here: ab1, zz9)") in err, err


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_without_a_lab_the_hint_says_how_to_start_an_agent(
        machine: tuple[Path, Path], argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main.main(argv) == 1
    err = capsys.readouterr().err
    assert "no hexlane agent answers on this machine: start one with `hexlane agent" in err
    assert "`hexlane lab up`" in err and "lab exec" not in err


def test_pointed_elsewhere_no_hint(machine: tuple[Path, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    root, _ = machine
    (root / "ab1").mkdir()
    (root / "ab1" / manager.STATE_FILE).write_text("{}")
    assert cli_main.main(["status", "--state-dir", str(tmp_path / "elsewhere")]) == 1
    monkeypatch.setenv("HEXLANE_BPF_ROOT", str(tmp_path / "node1-bpf"))
    assert cli_main.main(["service", "list"]) == 1
    err = capsys.readouterr().err
    assert "unreachable" in err and "no pinned map" in err
    assert "lab exec" not in err and "no hexlane agent answers" not in err


@pytest.mark.parametrize("argv", [["hubble", "observe", "--last", "3"], ["hubble", "status"],
                                  ["hubble", "list", "nodes"]], ids=" ".join)
def test_hubble_clients_are_sent_to_the_labs_relay(
        machine: tuple[Path, Path], argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """(Nothing listens on the machine's localhost:4245, the relay's default address.)"""
    root, _ = machine
    (root / "ab1").mkdir()
    (root / "ab1" / manager.STATE_FILE).write_text("{}")
    assert cli_main.main([*argv, "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert (f"no Hubble server answers on this machine itself; a lab's Hubble Relay runs on its "
            f"control plane: `hexlane lab exec --name ab1 cp -- hexlane {' '.join(argv)} "
            "--timeout 1` (labs here: ab1)") in err, err
    assert cli_main.main([*argv, "--server", "127.0.0.1:1", "--timeout", "1"]) == 1
    assert "lab exec" not in capsys.readouterr().err


@pytest.mark.root
def test_inside_a_named_namespace_no_hint() -> None:
    """`hexlane lab exec cp -- hexlane status` (no agent on the cp): `lab exec` is no way in
    from there, so the error stands alone."""
    import os
    import sys

    name = f"nc{os.urandom(3).hex()}"
    netns.create(name)
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEXLANE_")}
        done = netns.run(name, [sys.executable, "-m", "hexlane.cli.main", "status"],
                         check=False, env=env, timeout=30)
        assert done.returncode == 1 and "agent unreachable" in done.stderr, done.stderr
        assert "lab exec" not in done.stderr and "no hexlane agent answers" not in done.stderr
    finally:
        netns.delete(name)
