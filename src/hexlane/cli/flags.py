"""The flags several commands share, and what a daemon command does with them, written once.

- `state_dir`, `bpf_root`: where a node's agent keeps its state and pins its BPF objects
  (env `HEXLANE_STATE_DIR`, `HEXLANE_BPF_ROOT`);
- `output`: `-o text|json`; `show(args, read, text)` prints what `read(bpf_root)` finds
  that way (a read failure is one `error:` line and exit 1);
- `manifests`: `-f PATH...` and `-R`;
- `helm_values`: `--values F` (repeatable, later wins) and `--set K=V`;
- `daemon`: what `hexlane agent` and `hexlane operator` share: `--kubeconfig`, Helm values,
  `--metrics-addr`, `-v`; `start_daemon(args)` sets up logging and loads the values (warnings
  printed, errors raised with file and key), `metrics_addr` decides where metrics go;
- `no_local_agent`: what to say when the node commands find no agent (or datapath) at the
  default place: a lab's `hexlane lab exec --name X node1 -- <the same command>`, or how to
  start one;
- `commands`: a group of sub-commands whose bare name prints its help and exits 2;
- `parse_addr`, `duration`: flag values checked, an `InputError` naming the flag otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hexlane.config import Values, parse_duration, require_values
from hexlane.model.errors import InputError, Problem

DEFAULT_STATE_DIR = "/var/run/hexlane"
DEFAULT_BPF_ROOT = "/sys/fs/bpf/hexlane"


def state_dir(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("HEXLANE_STATE_DIR", DEFAULT_STATE_DIR)),
                        help=help or "the agent's state directory (env HEXLANE_STATE_DIR, "
                                     "default %(default)s)")


def bpf_root(parser: argparse.ArgumentParser, help: str | None = None) -> None:
    parser.add_argument("--bpf-root", type=Path,
                        default=Path(os.environ.get("HEXLANE_BPF_ROOT", DEFAULT_BPF_ROOT)),
                        help=help or "where the datapath's maps are pinned (env "
                                     "HEXLANE_BPF_ROOT, default %(default)s)")


def output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", choices=("text", "json"), default="text",
                        help="output format (default text)")


def no_local_agent(args: argparse.Namespace, flag: str, *, host: str = "node1",
                   what: str = "no hexlane agent answers on this machine itself; a lab's "
                               "agents run in its nodes") -> str:
    """A hint for a node command (`hexlane status`, `service list`, `l2 list`, `bpf ...`) that
    found nothing at the default state dir or BPF root (`flag`: "state_dir" or "bpf_root"):
    on a machine with a lab, the agents run inside its nodes, so the same command through
    `hexlane lab exec`; without one, how to start an agent. "" when the user pointed the
    command elsewhere (a flag or the environment, as `lab exec node<i>` does) or it runs in
    another network namespace (`lab exec cp`): the error itself says what is wrong there."""
    default = DEFAULT_STATE_DIR if flag == "state_dir" else DEFAULT_BPF_ROOT
    if Path(getattr(args, flag)) != Path(default) or not _in_machines_netns():
        return ""
    from hexlane.lab.manager import lab_names  # the lab's layer: only when there is a hint

    argv = getattr(args, "argv", None) or sys.argv[1:]
    command = shlex.join(["hexlane", *argv])
    labs = lab_names()
    if labs:
        return (f"{what}: `hexlane lab exec "
                f"--name {labs[0]} {host} -- {command}` (labs here: {', '.join(labs)})")
    return ("no hexlane agent answers on this machine: start one with `hexlane agent --node NAME "
            "...` (docs/agent.md), or a whole cluster in network namespaces with `hexlane lab "
            "up` (docs/lab.md)")


def _in_machines_netns() -> bool:
    """This process is not in a named network namespace (a lab host's, as after `lab exec
    cp`, where `lab exec` would be no way in); True when that cannot be told."""
    from hexlane.lab import netns  # only when there is a hint to give

    try:
        here = os.stat("/proc/self/ns/net").st_ino
        named = os.listdir(netns.NETNS_DIR)
    except OSError:
        return True
    for name in named:
        try:
            if os.stat(os.path.join(netns.NETNS_DIR, name)).st_ino == here:
                return False
        except OSError:
            continue
    return True


def show(args: argparse.Namespace, read: Callable[[Path], Any],
         text: Callable[[Any], None], json_view: Callable[[Any], Any] = lambda rows: rows
         ) -> int:
    """Print `read(args.bpf_root)` as JSON (`json_view` of it) or with `text`."""
    from hexlane.datapath.libbpf import BpfError  # the listing commands' edge

    try:
        rows = read(args.bpf_root)
    except (FileNotFoundError, BpfError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        if isinstance(exc, FileNotFoundError) and (hint := no_local_agent(args, "bpf_root")):
            print(hint, file=sys.stderr)
        return 1
    if args.output == "json":
        print(json.dumps(json_view(rows), indent=2))
    else:
        text(rows)
    return 0


def manifests(parser: argparse.ArgumentParser, *, required: bool = False) -> None:
    parser.add_argument("-f", "--filename", dest="paths", action="extend", nargs="+",
                        default=[], metavar="PATH", required=required,
                        help="manifest file or directory (repeatable; directories are "
                             "searched for *.yaml and *.yml)")
    parser.add_argument("-R", "--recursive", action="store_true",
                        help="also read the subdirectories of directories given with -f "
                             "(like kubectl -R)")


def helm_values(parser: argparse.ArgumentParser, *, set_flags: bool = True) -> None:
    parser.add_argument("--values", dest="values", action="extend", nargs="+", default=[],
                        metavar="FILE", help="Helm values file (repeatable, later wins)")
    if set_flags:
        parser.add_argument("--set", dest="set_flags", action="append", default=[],
                            metavar="K=V", help="a value in Helm's --set syntax (repeatable)")


def daemon(parser: argparse.ArgumentParser, metrics_help: str) -> None:
    """`--kubeconfig`, Helm values, `--metrics-addr`, `-v`."""
    parser.add_argument("--kubeconfig", metavar="F",
                        help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    helm_values(parser)
    parser.add_argument("--metrics-addr", metavar="ADDR:PORT", help=metrics_help)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def start_daemon(args: argparse.Namespace) -> Values:
    """Logging on standard error; the values, their warnings printed (an error: InputError,
    before anything starts)."""
    from hexlane.k8s.runtime import log_to_stderr  # the daemons' layer, not every command's

    log_to_stderr(args.verbose)
    values, warnings = require_values(args.values, args.set_flags)
    for problem in warnings:
        print(str(problem), file=sys.stderr)
    return values


def metrics_addr(flag: str | None, enabled: bool, port: int) -> tuple[str, int] | None:
    """Where a daemon serves /metrics: the flag (`off`: nowhere), else every address on
    the values' port when they enable metrics."""
    if flag == "off":
        return None
    if flag:
        return parse_addr(flag)
    return ("0.0.0.0", port) if enabled else None


def parse_addr(text: str, flag: str = "--metrics-addr") -> tuple[str, int]:
    """"host:port", ":port" or "[v6]:port" -> (host, port); host "" means every address."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InputError(Problem(f"expected ADDR:PORT, got {text!r}", flag))
    return host.strip("[]"), int(port_text)


def duration(text: str, flag: str) -> float:
    """A positive Go duration ("10s", "1m30s") in seconds."""
    try:
        seconds = parse_duration(text)
    except ValueError as e:
        raise InputError(Problem(f"not a duration: {text!r} ({e})", flag)) from None
    if seconds <= 0:
        raise InputError(Problem(f"must be positive, got {text!r}", flag))
    return seconds


def commands(parser: argparse.ArgumentParser, dest: str,
             metavar: str = "COMMAND") -> Any:
    """The sub-command group of `parser`; `parser` alone prints its help and exits 2."""
    parser.set_defaults(func=_usage(parser))
    return parser.add_subparsers(dest=dest, metavar=metavar)


def _usage(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2
    return usage
