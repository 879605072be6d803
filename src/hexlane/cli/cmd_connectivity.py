"""`hexlane connectivity test`: like `cilium connectivity test`, Service paths probed end to end.

    hexlane connectivity test [--lab NAME | --kubeconfig F] [--keep] [--connections N]
                              [-o text|json]

Deploys probe pods and Services in the namespace `hexlane-conncheck`, probes every cell of
the matrix (source x destination x protocol x Service variant; see `hexlane.lab.conncheck`),
prints a table and the summary `N passed, M failed, K not testable`, and removes what it
made (also on failure or Ctrl-C; `--keep` leaves it). Exits 1 when a cell fails.

Only `--lab NAME` (default `$HEXLANE_LAB` or `hl`) works: the probes run inside the lab's
network namespaces. `--kubeconfig` would need exec into pods of a real cluster; not built.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any

from hexlane.lab import conncheck, connectivity, manager
from hexlane.lab.topology import check_lab_name, default_lab_name
from hexlane.model.errors import InputError, Problem

from . import flags


def _lab_name(text: str) -> str:
    try:
        return check_lab_name(text, "--lab")
    except InputError as e:
        raise argparse.ArgumentTypeError(e.problems[0].message) from None


def _connections(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 1000:
        raise argparse.ArgumentTypeError(f"want 1 to 1000 connections, got {text!r}")
    return value


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "connectivity", help="probe Service paths end to end (like cilium connectivity test)",
        description="Probe Service paths end to end, like `cilium connectivity test`.")
    sub = flags.commands(parser, "connectivity_command")
    test = sub.add_parser(
        "test", help="deploy probes, run the matrix, print a table, clean up",
        description="Deploy probe pods and Services in namespace hexlane-conncheck, probe "
                    "every source x destination x protocol x Service variant, print a "
                    "table, remove what was made. Exits 1 when a cell fails.")
    target = test.add_mutually_exclusive_group()
    target.add_argument("--lab", type=_lab_name, default=None, metavar="NAME",
                        help="the lab to test (default $HEXLANE_LAB or hl)")
    target.add_argument("--kubeconfig", metavar="F",
                        help="a real cluster (not built yet: needs exec into pods)")
    test.add_argument("--keep", action="store_true",
                      help="leave the namespace, pool and client routes for debugging")
    test.add_argument("--connections", type=_connections, default=60, metavar="N",
                      help="new connections per cell (default 60)")
    flags.output(test)
    test.set_defaults(func=cmd_test)


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_test(args: argparse.Namespace) -> int:
    if args.kubeconfig is not None:
        raise InputError(Problem(
            "testing a cluster through a kubeconfig is not built yet (its probes need exec "
            "into pods); use --lab NAME", "--kubeconfig"))
    lab = args.lab or check_lab_name(default_lab_name(), "$HEXLANE_LAB")
    if os.geteuid() != 0:
        print("error: the lab needs root (network namespaces)", file=sys.stderr)
        return 1
    # SIGTERM cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        report = connectivity.run(lab, connections=args.connections, keep=args.keep)
    except manager.LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; what the test made is removed", file=sys.stderr)
        return 130
    if args.output == "json":
        print(json.dumps({
            "lab": report.lab, "summary": report.summary, "failed": report.failed,
            "warnings": report.warnings,
            "seconds": {"setup": round(report.setup_s, 1), "matrix": round(report.matrix_s, 1),
                        "cleanup": round(report.cleanup_s, 1)},
            "cells": [conncheck.row_json(r, report.facts) for r in report.rows]}, indent=2))
    else:
        facts = report.facts
        print(f"lab {report.lab}: routingMode {facts.routing_mode}, loadBalancer.mode "
              f"{facts.lb_mode}, algorithm {facts.lb_algorithm}; {len(facts.nodes)} node(s)")
        for warning in report.warnings:
            print(f"warning: {warning}")
        print(conncheck.render_table(report.rows, facts))
        print(f"\n{report.summary} (matrix {report.matrix_s:.1f}s, set up "
              f"{report.setup_s:.1f}s, clean up {report.cleanup_s:.1f}s)")
    return 1 if report.failed else 0
