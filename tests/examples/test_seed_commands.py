"""The hexlane commands examples/README.md gives for the seeds work as it says.

Pins down: every `hexlane validate ...` and `hexlane config show ...` command quoted in
examples/README.md, run from the repository root, exits 0 (warnings allowed, no error); and
validating seed 004's whole directory fails exactly as the README warns, on the Service
fragments in other/ (no metadata.name), which is why the README names its files instead.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from hexlane.cli.main import main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "examples" / "README.md"
COMMAND = re.compile(r"`(hexlane (?:validate|config show) [^`]+)`")


def readme_commands() -> list[str]:
    return sorted(set(COMMAND.findall(README.read_text(encoding="utf-8"))))


def test_readme_quotes_commands_for_every_seed() -> None:
    commands = readme_commands()
    for seed in ("seed-000", "seed-001", "seed-002", "seed-004"):
        assert any(c.startswith("hexlane validate") and seed in c for c in commands), seed
        assert any(c.startswith("hexlane config show") and seed in c for c in commands), seed


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_exits_zero(command: str, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(REPO)
    code = main(shlex.split(command)[1:])
    out, err = capsys.readouterr()
    assert code == 0, f"{command}\n{out}{err}"
    assert not [line for line in (out + err).splitlines() if line.startswith("error:")]


def test_whole_seed_004_directory_reports_the_fragments(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """With -R, like kubectl, subdirectories are read too: other/ holds the fragments."""
    monkeypatch.chdir(REPO)
    code = main(["validate", "-R", "-f", "examples/seed-004/"])
    out, err = capsys.readouterr()
    text = out + err
    assert code == 1, text
    error_lines = [line for line in text.splitlines() if line.startswith("error:")]
    assert error_lines
    for line in error_lines:
        assert "examples/seed-004/other/service-" in line, line
    assert any("metadata.name" in line for line in error_lines)
