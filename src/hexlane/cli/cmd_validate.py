"""`hexlane validate`: every problem in manifests and Helm values, offline, with file and field.

    hexlane validate -f PATH... [--values F...] [--set k=v ...] [-o json]

`-f` takes files and directories (their *.yaml/*.yml, sorted; subdirectories only with -R,
like kubectl; `-` is standard input), and `kind: List` documents are checked item by item.
Every document
is parsed as the kind it declares; kinds hexlane does not read are reported as warnings.
Across objects it also warns about pools whose blocks overlap (Cilium marks the newer pool
conflicting) and objects defined twice. Values files and `--set` flags go through the same
loader the daemons use (`hexlane.config.load_values`).

Each problem is one line: `error: FILE:LINE: Kind/name: field.path: message`, said once;
names are cut to 253 characters and control characters escaped. Files are read one document
at a time within hexlane's input limits (`hexlane.inputlimits`: nesting 100 deep, YAML
aliases adding at most 100,000 nodes, finite numbers, at most 10,000 documents per file).
Exit status: 0 when there is no error (warnings allowed), 1 when problems were found (a path
that holds no object at all is one: "no objects found in PATH"), 2 when input could not be
used at all (a file that does not exist or cannot be read).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hexlane.model.cilium import LBIPPool
from hexlane.model.errors import SHOWN_NAME, InputError, Problem, cut, no_objects
from hexlane.model.manifests import Manifest, expand_paths, read_manifests, read_text
from hexlane.model.registry import Unread, object_ref, parse_object

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "validate", help="check manifests and Helm values offline",
        description="Check Kubernetes/Cilium manifests and Helm values files offline and "
                    "print every problem with its file, object and field. Exit 0 when "
                    "there is no error, 1 when there are problems, 2 when input cannot be "
                    "read.")
    flags.manifests(parser)
    flags.helm_values(parser)
    flags.output(parser)
    parser.set_defaults(func=cmd_validate)


@dataclass
class Report:
    """What validation found: checked objects, problems, and whether input was unusable."""

    files: list[str] = field(default_factory=list)
    objects: list[dict[str, Any]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    unusable: bool = False

    @property
    def errors(self) -> int:
        return sum(1 for p in self.problems if p.severity == "error")

    @property
    def warnings(self) -> int:
        return len(self.problems) - self.errors

    @property
    def exit_code(self) -> int:
        return 2 if self.unusable else 1 if self.errors else 0


def validate_manifests(report: Report, paths: Sequence[str], skip: Sequence[str] = (),
                       *, recursive: bool = False) -> list[tuple[Manifest, Any]]:
    """Parse every document of every file into report; the (manifest, typed) pairs parsed.

    Files in `skip` (the values files, when a directory holds both) are left out.
    """
    parsed: list[tuple[Manifest, Any]] = []
    skipped = {os.path.normpath(s) for s in skip}
    for arg in paths:
        found = 0
        problems_before = len(report.problems)
        for path in expand_paths([arg], recursive=recursive):
            if os.path.normpath(path) in skipped:
                continue
            if path != "-" and not os.path.exists(path):
                report.problems.append(Problem("no such file or directory", file=path))
                report.unusable = True
                continue
            manifests, problems = read_manifests(path)
            if problems and problems[0].message.startswith("cannot read file"):
                report.problems += problems
                report.unusable = True
                continue
            report.files.append(path)
            report.problems += problems
            for m in manifests:
                found += _check_manifest(report, parsed, m, path)
        if not found and len(report.problems) == problems_before:
            report.problems.append(no_objects(arg))
    return parsed


def _check_manifest(report: Report, parsed: list[tuple[Manifest, Any]], m: Manifest,
                    path: str) -> int:
    """Check the object(s) of one document; how many objects it held."""
    if "apiVersion" not in m.obj and "kind" not in m.obj:
        # Not a Kubernetes object at all: most likely a Helm values file in the same
        # directory as the manifests. Said once per file, not an error.
        if not any(p.file.startswith(f"{path}:") and "not a Kubernetes object"
                   in p.message for p in report.problems):
            report.problems.append(Problem(
                "not a Kubernetes object (no apiVersion and kind): skipped; a Helm "
                "values file is checked with --values FILE", file=m.where(),
                severity="warning"))
        return 0
    items = m.obj.get("items")
    if m.obj.get("kind") == "List" and isinstance(items, list):
        # `kubectl get -o yaml` output: check every item where it stands.
        for i, item in enumerate(items):
            check_object(report, parsed, m, item, f"items[{i}]")
        return len(items)
    check_object(report, parsed, m, m.obj, "")
    return 1


def check_object(report: Report, parsed: list[tuple[Manifest, Any]], m: Manifest, raw: Any,
                 path: str) -> None:
    """Parse one object of manifest m (at `path` inside it) into report and parsed."""
    entry: dict[str, Any] = {"file": m.file, "line": m.line_of(path) if path else m.line,
                             "document": m.index + 1}
    if path:
        entry["path"] = path
    ident = _ident(raw if isinstance(raw, dict) else {})
    try:
        obj = parse_object(raw, path)
    except InputError as e:
        report.problems += [p.located(file=m.where(p.path)) for p in e.problems]
        report.objects.append(entry | ident | {"ok": False})
        return
    if isinstance(obj, Unread):
        w = obj.warning
        report.problems.append(w.located(file=m.where(f"{path}.kind" if path else "kind")))
        report.objects.append(entry | ident | {"ok": True, "read": False})
        return
    report.problems += [w.located(file=m.where(w.path)) for w in obj.warnings]
    report.objects.append(entry | ident | {"ok": True, "read": True})
    parsed.append((m, obj))


def cross_checks(report: Report, parsed: list[tuple[Manifest, Any]]) -> None:
    """Problems between objects: the same object twice, pools whose blocks overlap."""
    seen: dict[tuple[str, str, str], Manifest] = {}
    for m, obj in parsed:
        key = (obj.KIND, getattr(obj.meta, "namespace", ""), obj.meta.name)
        if key in seen:
            first = seen[key]
            report.problems.append(Problem(
                f"defined again (first at {first.where()}); the later one wins when applied",
                obj=object_ref(obj.KIND, obj.meta.name), file=m.where(),
                severity="warning"))
        else:
            seen[key] = m
    pools = [(m, obj) for m, obj in parsed if isinstance(obj, LBIPPool)]
    for i, (ma, a) in enumerate(pools):
        for mb, b in pools[i + 1:]:
            if a.name == b.name:
                continue
            for ib, blk_b in enumerate(b.blocks):
                hit = next((blk_a for blk_a in a.blocks if blk_a.overlaps(blk_b)), None)
                if hit is not None:
                    path = f"spec.blocks[{ib}]"
                    report.problems.append(Problem(
                        f"range '{blk_b.describe()}' overlaps range '{hit.describe()}' of pool "
                        f"{a.name!r} ({ma.where()}): Cilium marks the newer pool conflicting "
                        "and allocates nothing from it", path=path,
                        obj=object_ref(b.KIND, b.name), file=mb.where(path),
                        severity="warning"))
                    break


def validate_values(report: Report, values: Sequence[str], set_flags: Sequence[str]) -> None:
    for path in values:
        if path == "-":
            continue
        try:
            read_text(path)
        except InputError as e:
            report.problems += e.problems
            report.unusable = True
            return
    from hexlane.config import load_values  # the values layer, owned by hexlane.config

    try:
        _, problems = load_values(values, set_flags)
    except InputError as e:
        problems = list(e.problems)
    report.files += [v for v in values if v not in report.files]
    report.problems += problems


def _ident(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return {k: cut(v, SHOWN_NAME) if isinstance(v, str) else "" for k, v in (
        ("apiVersion", obj.get("apiVersion")), ("kind", obj.get("kind")),
        ("name", meta.get("name")), ("namespace", meta.get("namespace")))}


def render_text(report: Report) -> str:
    lines = [f"error: {p}" if p.severity == "error" else str(p) for p in report.problems]
    n_obj = len(report.objects)
    verdict = "OK" if report.exit_code == 0 else "FAILED"
    lines.append(f"{verdict}: {len(report.files)} file(s), {n_obj} object(s) checked: "
                 f"{report.errors} error(s), {report.warnings} warning(s)")
    return "\n".join(lines) + "\n"


def render_json(report: Report) -> str:
    return json.dumps({
        "ok": report.exit_code == 0,
        "exitCode": report.exit_code,
        "files": report.files,
        "objects": report.objects,
        "errors": report.errors,
        "warnings": report.warnings,
        "problems": [{"severity": p.severity, "file": p.file, "object": p.obj,
                      "path": p.path, "message": p.message} for p in report.problems],
    }, indent=2) + "\n"


def cmd_validate(args: argparse.Namespace) -> int:
    if not args.paths and not args.values and not args.set_flags:
        raise InputError(Problem("nothing to validate: expected -f PATH (manifests) and/or "
                                 "--values FILE"))
    report = Report()
    parsed = validate_manifests(report, args.paths, skip=args.values,
                                recursive=args.recursive)
    cross_checks(report, parsed)
    if args.values or args.set_flags:
        validate_values(report, args.values, args.set_flags)
    out = render_json(report) if args.output == "json" else render_text(report)
    sys.stdout.write(out)
    return report.exit_code
