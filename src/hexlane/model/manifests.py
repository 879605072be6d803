"""Manifest files: multi-document YAML read into `Manifest(file, index, obj)`.

YAML is read as kubectl reads it: PyYAML's safe loader (YAML 1.1 scalars, so an unquoted
`yes` is a boolean), except that timestamps stay strings (Kubernetes decodes them itself) and
a key repeated in one mapping is an error (kubectl refuses it too). Empty documents are
skipped; a document that is not a mapping, and a syntax error, become problems naming the
file and line. Every manifest remembers the line of each field, so a problem at
`spec.blocks[0].start` can be shown at its line.

The loader keeps `hexlane.inputlimits`: nodes nested at most `MAX_DEPTH` deep (aliases
counted as what they repeat), at most `MAX_ALIAS_NODES` nodes added by aliases to a
document, no alias to its own anchor, finite numbers only. A file is read as a stream, one
document at a time, and reading stops after `MAX_YAML_DOCUMENTS` documents with a problem
saying so.

Only `read_text`, `read_manifests` and `expand_paths` touch the file system; the rest parses
text.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import yaml

from hexlane.inputlimits import MAX_ALIAS_NODES, MAX_DEPTH, MAX_YAML_DOCUMENTS
from hexlane.model.errors import InputError, Problem
from hexlane.model.reader import FrozenMap, describe

MANIFEST_SUFFIXES = (".yaml", ".yml")
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


class _Refused(yaml.MarkedYAMLError):
    """Valid YAML that hexlane does not read (a limit, a number that is not finite)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


# libyaml's parser (events) when PyYAML has it: the pure-Python scanner takes a minute over a
# 30 MB scalar. hexlane's own composer sits on top of either, so the limits are kept the same.
_PARSER: tuple[type, ...]
if getattr(yaml, "__with_libyaml__", False):
    from yaml._yaml import CParser

    _PARSER = (CParser,)
else:  # pragma: no cover - PyYAML's wheels carry libyaml
    _PARSER = (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser)


def _start_parser(loader: Any, stream: str | IO[str]) -> None:
    if len(_PARSER) == 1:
        CParser.__init__(loader, stream)
    else:  # pragma: no cover
        yaml.reader.Reader.__init__(loader, stream)
        yaml.scanner.Scanner.__init__(loader)
        yaml.parser.Parser.__init__(loader)


class _Loader(yaml.composer.Composer, *_PARSER, yaml.constructor.SafeConstructor,  # type: ignore[misc]
              yaml.resolver.Resolver):
    """Safe loader without timestamps, with duplicate-key detection and the input limits."""

    def __init__(self, stream: str | IO[str]) -> None:
        _start_parser(self, stream)
        yaml.composer.Composer.__init__(self)
        yaml.constructor.SafeConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)
        self._depth = 0
        self._open_anchors: list[str] = []  # of the nodes being composed, outermost first
        self._alias_nodes = 0
        # id(node) -> (nodes, height) of the tree it stands for, aliases expanded
        self._sizes: dict[int, tuple[int, int]] = {}

    def compose_document(self) -> yaml.Node | None:
        self._alias_nodes = 0
        self._sizes = {}
        return super().compose_document()

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            mark = event.start_mark
            if event.anchor in self._open_anchors:
                raise _Refused(f"the alias *{event.anchor} is inside its own anchor (a "
                               "recursive alias)", mark)
            node = super().compose_node(parent, index)
            if node is not None:
                nodes, height = self._measure(node)
                self._alias_nodes += nodes
                if self._alias_nodes > MAX_ALIAS_NODES:
                    raise _Refused(f"aliases expand this document by more than "
                                   f"{MAX_ALIAS_NODES} nodes (hexlane's limit)", mark)
                self._check_depth(self._depth + height, mark)
            return node
        self._depth += 1
        self._check_depth(self._depth, event.start_mark)
        anchor = getattr(event, "anchor", None)
        if anchor:
            self._open_anchors.append(anchor)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if anchor:
                self._open_anchors.pop()

    @staticmethod
    def _check_depth(depth: int, mark: Any) -> None:
        if depth > MAX_DEPTH:
            raise _Refused(f"nested more than {MAX_DEPTH} levels deep (hexlane's limit)", mark)

    def _measure(self, node: yaml.Node) -> tuple[int, int]:
        """(nodes, height) of the tree under `node` with aliases expanded, memoised so that
        shared nodes are measured once."""
        key = id(node)
        known = self._sizes.get(key)
        if known is not None:
            return known
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        nodes, height = 1, 0
        for child in children:
            n, h = self._measure(child)
            nodes, height = nodes + n, max(height, h)
        self._sizes[key] = (nodes, height + 1)
        return nodes, height + 1

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return super().construct_yaml_int(node)
        except ValueError as e:
            raise _Refused(f"the integer cannot be read: {e}", node.start_mark) from None

    def construct_yaml_float(self, node: yaml.ScalarNode) -> float:
        value = super().construct_yaml_float(node)
        if not math.isfinite(value):
            raise _Refused(f"{node.value!r} is not a finite number (Kubernetes objects hold "
                           "finite numbers only)", node.start_mark)
        return value

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


_Loader.add_constructor("tag:yaml.org,2002:int", _Loader.construct_yaml_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _Loader.construct_yaml_float)
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
        hint = "" if "expected" in problem or isinstance(err, _Refused) else \
            " (expected valid YAML: check indentation, quoting and ':' after keys)"
        return Problem(f"invalid YAML at line {mark.line + 1}, column {mark.column + 1}: "
                       f"{context}{problem}{hint}", file=f"{file}:{mark.line + 1}")
    return Problem(f"invalid YAML: {err}", file=file)


def scan_manifests(source: str | IO[str], file: str = "<stdin>"
                   ) -> tuple[list[Manifest], list[Problem]]:
    """Every usable document of `source` (text, or a text stream read one document at a
    time), and the problems (syntax errors, non-mappings, limits).

    Documents before a syntax error are kept, so one typo does not hide everything else;
    after `MAX_YAML_DOCUMENTS` documents reading stops with a problem saying so.
    """
    manifests: list[Manifest] = []
    problems: list[Problem] = []
    loader = _Loader(source)
    index = 0
    try:
        while loader.check_node():
            if index >= MAX_YAML_DOCUMENTS:
                problems.append(Problem(
                    f"more than {MAX_YAML_DOCUMENTS} documents in one file (hexlane's limit): "
                    "the rest is not read; split the file", file=file))
                break
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
    except UnicodeDecodeError as e:
        problems.append(Problem(f"cannot read file: {e}", file=file))
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
    obj = load_yaml_document(text, file)
    if obj is None:
        return {}
    if not isinstance(obj, Mapping):
        raise InputError(Problem(f"the file holds {describe(obj)}: expected {what} "
                                 "(key: value pairs at the top level)", file=file))
    return dict(obj)


def load_yaml_document(text: str, file: str = "<stdin>") -> Any:
    """The one YAML document of `text` (None when empty), read within the input limits;
    InputError naming `file` and the line otherwise."""
    loader = _Loader(text)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as e:
        raise InputError(yaml_error_problem(e, file)) from None
    finally:
        loader.dispose()


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
    """Every document of one file, read as a stream, and the problems found (one that
    cannot be read: none)."""
    if path == "-":
        import sys
        return scan_manifests(sys.stdin, path)
    try:
        with open(path, encoding="utf-8") as f:
            return scan_manifests(f, path)
    except OSError as e:
        return [], [Problem(f"cannot read file: {e.strerror or e}", file=path)]


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
