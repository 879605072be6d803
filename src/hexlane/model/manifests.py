"""Manifest files: multi-document YAML read into `Manifest(file, index, obj)`.

YAML is read as kubectl reads it: PyYAML's safe loader (YAML 1.1 scalars, so an unquoted
`yes` is a boolean), except that timestamps stay strings (Kubernetes decodes them itself) and
a key repeated in one mapping is an error (kubectl refuses it too). Empty documents are
skipped; a document that is not a mapping, and a syntax error, become problems naming the
file and line. Every manifest remembers the line of each field, so a problem at
`spec.blocks[0].start` can be shown at its line.

Only `read_text` and `expand_paths` touch the file system; the rest parses text.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from hexlane.model.errors import InputError, Problem
from hexlane.model.reader import FrozenMap, describe

MANIFEST_SUFFIXES = (".yaml", ".yml")
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Loader(yaml.SafeLoader):
    """Safe loader without timestamps and with duplicate-key detection."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                continue  # the base class reports unhashable keys
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    f"while reading a mapping (line {node.start_mark.line + 1})",
                    node.start_mark,
                    f"key {key!r} appears twice (also on line {seen[key]}): expected each "
                    "key once", key_node.start_mark)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclass(frozen=True, slots=True)
class Manifest:
    """One YAML document: `index` counts documents from 0, `line` is where it starts."""

    file: str
    index: int
    obj: dict[str, Any]
    line: int = 0
    lines: FrozenMap[str, int] = field(default_factory=FrozenMap, compare=False, repr=False)

    def line_of(self, path: str) -> int:
        """The line of the field at `path`, or of its nearest parent that exists."""
        while path:
            if path in self.lines:
                return self.lines[path]
            path = _parent(path)
        return self.line

    def where(self, path: str = "") -> str:
        """`file:line` of the field (for messages)."""
        line = self.line_of(path)
        return f"{self.file}:{line}" if line else self.file


def _parent(path: str) -> str:
    if path.endswith("]"):
        return path[:path.rindex("[")]
    dot = path.rfind(".")
    bracket = path.rfind("]")
    return path[:dot] if dot > bracket else path[:bracket + 1] if bracket >= 0 else ""


def _index_lines(node: yaml.Node, path: str, out: dict[str, int]) -> None:
    if path:
        out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else "?"
            child = f"{path}.{key}" if path else str(key)
            out.setdefault(child, key_node.start_mark.line + 1)
            _index_lines(value_node, child, out)
            out.setdefault(f"{path}[{key}]", key_node.start_mark.line + 1)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, f"{path}[{i}]", out)


def yaml_error_problem(err: yaml.YAMLError, file: str) -> Problem:
    """A YAML error as a problem at `file:line` saying what the parser expected."""
    if isinstance(err, yaml.MarkedYAMLError) and err.problem_mark is not None:
        mark = err.problem_mark
        context = f"{err.context}: " if err.context else ""
        problem = err.problem or "syntax error"
        hint = "" if "expected" in problem else " (expected valid YAML: check indentation, " \
                                                "quoting and ':' after keys)"
        return Problem(f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                       f"{context}{problem}{hint}", file=f"{file}:{mark.line + 1}")
    return Problem(f"invalid YAML: {err}", file=file)


def scan_manifests(text: str, file: str = "<stdin>") -> tuple[list[Manifest], list[Problem]]:
    """Every usable document of `text`, and the problems (syntax errors, non-mappings).

    Documents before a syntax error are kept, so one typo does not hide everything else.
    """
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    loader = _Loader(text)
    index = 0
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                break
            line = node.start_mark.line + 1
            obj = loader.construct_document(node)
            if obj is None:
                index += 1
                continue  # an empty document (`---` twice, or comments only)
            if not isinstance(obj, Mapping):
                problems.append(Problem(f"document {index + 1} is {describe(obj)}: expected "
                                        "a Kubernetes object (a mapping with apiVersion, "
                                        "kind and metadata)", file=f"{file}:{line}"))
            else:
                lines: dict[str, int] = {}
                _index_lines(node, "", lines)
                manifests.append(Manifest(file, index, dict(obj), line, FrozenMap(lines)))
            index += 1
    except yaml.YAMLError as e:
        problems.append(yaml_error_problem(e, file))
    finally:
        loader.dispose()
    return manifests, problems


def parse_manifests(text: str, file: str = "<stdin>") -> list[Manifest]:
    """Every document of `text`; InputError listing every problem if there is any."""
    manifests, problems = scan_manifests(text, file)
    if problems:
        raise InputError(problems)
    return manifests


def parse_mapping(text: str, file: str = "<stdin>", *, what: str = "a mapping") -> dict[str, Any]:
    """A YAML document that must be a mapping (a Helm values file); empty means {}."""
    loader = _Loader(text)
    try:
        obj = loader.get_single_data()
    except yaml.YAMLError as e:
        raise InputError(yaml_error_problem(e, file)) from None
    finally:
        loader.dispose()
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise InputError(Problem(f"the file holds {describe(obj)}: expected {what} "
                                 "(key: value pairs at the top level)", file=file))
    return dict(obj)


def read_text(path: str) -> str:
    """A file's text (`-` is standard input); InputError naming the file if unreadable."""
    try:
        if path == "-":
            import sys
            return sys.stdin.read()
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise InputError(Problem(f"cannot read file: {reason}", file=path)) from None


def expand_paths(paths: Iterable[str], *, recursive: bool = False) -> list[str]:
    """Files as given; a directory is replaced by its *.yaml/*.yml files, sorted.

    Like `kubectl apply -f DIR`, subdirectories are read only when `recursive` (kubectl's -R),
    so a seed's `other/` folder of kinds hexlane does not serve is left alone by default.
    """
    out: list[str] = []
    for p in paths:
        if not os.path.isdir(p):
            out.append(p)
            continue
        found: list[str] = []
        for root, dirs, files in os.walk(p):
            dirs.sort()
            found += [os.path.join(root, f) for f in files if f.endswith(MANIFEST_SUFFIXES)]
            if not recursive:
                break
        out += sorted(found)
    return out


def read_manifests(path: str) -> tuple[list[Manifest], list[Problem]]:
    """Every document of one file and the problems found (one that cannot be read: none)."""
    try:
        return scan_manifests(read_text(path), path)
    except InputError as e:
        return [], list(e.problems)


def load_manifests(paths: Sequence[str], *, recursive: bool = False) -> list[Manifest]:
    """Every document of every file (directories expanded); InputError listing all problems."""
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    for path in expand_paths(paths, recursive=recursive):
        found, probs = read_manifests(path)
        manifests += found
        problems += probs
    if problems:
        raise InputError(problems)
    return manifests


def load_mapping_file(path: str, *, what: str = "a mapping") -> dict[str, Any]:
    """A YAML file that must be a mapping (Helm values)."""
    return parse_mapping(read_text(path), path, what=what)
