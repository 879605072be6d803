"""`hexlane config show`: the effective Helm-values configuration, as hexlane reads it.

Takes values files and `--set` flags exactly like `helm install -f ... --set ...` and prints
the merged, normalised tree (Cilium v1.16 defaults underneath) as YAML or JSON on stdout.
Warnings (unknown keys, normalisations) go to stderr and the exit code stays 0; errors (wrong
types, impossible combinations, unreadable files, bad --set syntax) are printed one per line
with file and key, and the exit code is 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import yaml

from hexlane.config import require_values


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "config", help="inspect the Helm-values configuration",
        description="Inspect the Cilium-Helm-values-compatible configuration.")
    sub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    sub.required = True
    show = sub.add_parser(
        "show", help="print the effective configuration (defaults + files + --set)",
        description="Print the effective configuration: Cilium v1.16 defaults, then each "
                    "values file in order, then --set flags, as `helm -f ... --set ...` "
                    "merges them.")
    show.add_argument("-f", "--values", dest="values", action="append", default=[],
                      metavar="FILE", help="a Helm values file (repeatable, later wins; - is "
                                           "standard input)")
    show.add_argument("--set", dest="set_flags", action="append", default=[], metavar="K=V",
                      help="a value in Helm's --set syntax, e.g. a.b=c,x={1,2} (repeatable)")
    show.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                      help="output format (default yaml)")
    show.set_defaults(func=cmd_show)


def cmd_show(args: argparse.Namespace) -> int:
    values, warnings = require_values(args.values, args.set_flags)
    for problem in warnings:
        print(str(problem), file=sys.stderr)
    print(render(values.tree, args.output), end="")
    return 0


def render(tree: dict[str, Any], output: str) -> str:
    """The tree as YAML (keys in defaults order) or indented JSON, ending in a newline."""
    if output == "json":
        return json.dumps(tree, indent=2) + "\n"
    return str(yaml.safe_dump(tree, sort_keys=False, default_flow_style=False,
                              allow_unicode=True))
