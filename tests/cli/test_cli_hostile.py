"""Hostile files given to the CLI (`validate -f`, `ipam plan -f`, `config show --values`): each
answers with a clean error naming the file (and line), exits 1 or 2, never prints a
traceback, and stays within 5 s and a 1 GiB address space (issue 22's CLI cases: deep
nesting, a "billion laughs" file, 100,000 documents, an empty file or directory, a 30 MB
name, control characters in names, one message per problem)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.bounded import HEXLANE, run_bounded

BILLION_LAUGHS = "\n".join(
    ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    + [f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi",
                                                                  strict=True)]) + "\n"
MANIFEST_COMMANDS = [["validate", "-f"], ["ipam", "plan", "-f"]]


def run(*args: str, stdin: str | None = None, seconds: float = 5.0):
    done = run_bounded([*HEXLANE, *args], stdin=stdin, seconds=seconds)
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    return done


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


HOSTILE = {
    "deep-lists.yaml": ("[" * 20_000, "nested more than 100 levels deep"),
    "deep-maps.yaml": ("".join(" " * i + "a:\n" for i in range(5_000)),
                       "nested more than 100 levels deep"),
    "deep-flow-maps.yaml": ("{a: " * 5_000 + "1" + "}" * 5_000,
                            "nested more than 100 levels deep"),
    "laughs.yaml": (BILLION_LAUGHS, "aliases expand this document by more than 100000 nodes"),
    "recursive-alias.yaml": ("a: &a [1, *a]\n", "is inside its own anchor"),
    "not-finite.yaml": ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec:\n"
                        "  ports: [{port: .inf}]\n", "'.inf' is not a finite number"),
    "huge-int.yaml": ("a: " + "9" * 5_000 + "\n", "the integer cannot be read"),
}


@pytest.mark.parametrize("command", MANIFEST_COMMANDS, ids=["validate", "ipam-plan"])
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_manifests_are_refused_with_file_and_line(tmp_path: Path, command: list[str],
                                                           name: str) -> None:
    text, expected = HOSTILE[name]
    path = write(tmp_path, name, text)
    done = run(*command, path)
    assert done.returncode in (1, 2)
    assert expected in done.stdout + done.stderr
    assert f"{path}:" in done.stdout + done.stderr  # the file and line of the problem


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_values_files_are_refused(tmp_path: Path, name: str) -> None:
    text, expected = HOSTILE[name]
    done = run("config", "show", "--values", write(tmp_path, name, text))
    assert done.returncode == 2
    assert expected in done.stderr


def test_a_hundred_thousand_documents_stop_at_the_documented_limit(tmp_path: Path) -> None:
    docs = "".join(f"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n"
                   for i in range(100_000))
    path = write(tmp_path, "many.yaml", docs)
    done = run("validate", "-f", path)
    assert done.returncode == 1
    assert "more than 10000 documents in one file (hexlane's limit)" in done.stdout
    assert "10000 object(s) checked" in done.stdout


@pytest.mark.parametrize("command", MANIFEST_COMMANDS, ids=["validate", "ipam-plan"])
def test_an_empty_file_or_directory_holds_no_objects(tmp_path: Path, command: list[str]) -> None:
    empty = write(tmp_path, "empty.yaml", "")
    comments = write(tmp_path, "comments.yaml", "# nothing here\n---\n---\n")
    folder = tmp_path / "no-yaml"
    folder.mkdir()
    (folder / "README.txt").write_text("not yaml\n")
    for path in (empty, comments, str(folder)):
        done = run(*command, path)
        assert done.returncode == 1, (path, done.stdout, done.stderr)
        assert f"no objects found in {path}" in done.stdout + done.stderr


def test_one_empty_path_among_good_ones_is_named(tmp_path: Path) -> None:
    good = write(tmp_path, "pool.yaml", "apiVersion: cilium.io/v2alpha1\n"
                 "kind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\nspec:\n"
                 "  blocks: [{cidr: 10.0.0.0/24}]\n")
    empty = write(tmp_path, "empty.yaml", "")
    done = run("validate", "-f", good, "-f", empty)
    assert done.returncode == 1
    assert f"no objects found in {empty}" in done.stdout
    assert f"no objects found in {good}" not in done.stdout


def test_a_30_mb_name_is_cut_to_253_characters(tmp_path: Path) -> None:
    name = "a" * (30 << 20)
    path = write(tmp_path, "big.yaml", f"apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n"
                 "spec:\n  ports: [{port: 80}]\n")
    done = run("validate", "-f", path)
    assert done.returncode == 1
    assert len(done.stdout) + len(done.stderr) < 4000
    assert "a" * 253 + "... (" in done.stdout
    assert "a" * 254 not in done.stdout
    as_json = run("validate", "-o", "json", "-f", path)
    assert len(as_json.stdout) < 4000
    assert json.loads(as_json.stdout)["objects"][0]["name"].startswith("a" * 253 + "...")


def test_control_characters_in_names_are_escaped(tmp_path: Path) -> None:
    path = write(tmp_path, "bidi.yaml", 'apiVersion: v1\nkind: Service\nmetadata:\n'
                 '  name: "evil\\u202Eexe\\0\\e[31mred"\nspec:\n  ports: [{port: 80}]\n')
    done = run("validate", "-f", path)
    assert done.returncode == 1
    out = done.stdout + done.stderr
    assert "evil\\u202eexe\\x00\\x1b[31mred" in out
    assert not any(ch in out for ch in ("\u202e", "\0", "\x1b"))


def test_a_boolean_name_is_one_problem_with_one_message(tmp_path: Path) -> None:
    path = write(tmp_path, "off.yaml", "apiVersion: cilium.io/v2alpha1\n"
                 "kind: CiliumLoadBalancerIPPool\nmetadata: {name: off}\nspec:\n"
                 "  blocks: [{cidr: 10.0.0.0/24}]\n")
    done = run("validate", "-f", path)
    assert done.returncode == 1
    errors = [line for line in done.stdout.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stdout
    assert "metadata.name: expected a name, got a boolean (false)" in errors[0]
