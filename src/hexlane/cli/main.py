"""The `hexlane` command: one sub-command per module `hexlane.cli.cmd_<name>`.

Each command module defines `register(subparsers)` which adds its parser and sets
`func(args) -> int`. Only modules that exist are registered, so no command that does not
work is ever offered. User-input errors (`InputError`) are printed as one line per problem
with file, object and field, and exit 2 (1 for input that was read and held no object);
never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from hexlane import __version__
from hexlane.model.errors import InputError

# Order is the order of `hexlane --help` (`dev` registers no help: it is not listed).
COMMAND_MODULES = (
    "config", "validate", "ipam", "apiserver", "operator", "agent", "status", "endpoint",
    "identity", "policy", "service",
    "bpf", "l2", "hubble", "lab", "connectivity", "manifests", "cleanup", "cni", "dev",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hexlane",
        description="Kubernetes networking in Python and eBPF, in the spirit of Cilium.",
    )
    parser.add_argument("--version", action="version", version=f"hexlane {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        modname = f"hexlane.cli.cmd_{name}"
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as e:
            if e.name == modname:
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what the user typed, for hints
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, where a closed pipe can still be handled
        return code
    except BrokenPipeError:
        # The reader went away (`hexlane bpf lb maglev list | head`): stop quietly, as a
        # command killed by SIGPIPE does, and keep Python from failing again at exit's flush.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13
    except InputError as e:
        for p in e.problems:
            print(f"error: {p}" if p.severity == "error" else str(p), file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
