"""`hexlane connectivity test`: like `cilium connectivity test`, Service paths probed end to end.

    hexlane connectivity test [--lab NAME | --kubeconfig F [--values F] [--image IMAGE]]
                              [--keep] [--connections N] [-o text|json]
    hexlane connectivity serve [--tcp PORT]... [--udp PORT]... [--plan CONFIGMAP]

Deploys probe pods and Services in the namespace `hexlane-conncheck`, probes every cell of
the matrix (source x destination x protocol x Service variant; see `hexlane.lab.conncheck`),
prints a table and the summary `N passed, M failed, K not testable`, and removes what it
made (also on failure or Ctrl-C; `--keep` leaves it). Exits 1 when a cell fails.

`--lab NAME` (default `$HEXLANE_LAB` or `hl`): the probes run inside the lab's network
namespaces (`hexlane.lab.connectivity`), from pods, node1 and the LAN client. `--kubeconfig
F`: any cluster running hexlane; the probes run inside the test's pods, which run hexlane's
image (`--image`, default the one `hexlane manifests` renders) as `hexlane connectivity
serve` and report through the API (`hexlane.lab.clustercheck`); the cells of node and LAN
sources and of externalIPs need the lab and say so. `--values F`: the cluster's values (else
its ConfigMap kube-system/hexlane-config, else the defaults).

`serve` is what those pods run: the echo the backends answer with, and with `--plan` the
probing of the cells the test's plan gives the pod (`hexlane.lab.podprobe`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from hexlane.k8s.runtime import log_to_stderr
from hexlane.lab import clustercheck, conncheck, connectivity, manager, podprobe
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
                        help="any cluster running hexlane: the probes run in the test's pods")
    test.add_argument("--values", metavar="F",
                      help="--kubeconfig: the cluster's hexlane values (default: its "
                           "ConfigMap kube-system/hexlane-config, else the defaults)")
    test.add_argument("--image", metavar="IMAGE",
                      help="--kubeconfig: hexlane's image for the probe pods (default: the "
                           "one `hexlane manifests` renders)")
    test.add_argument("--keep", action="store_true",
                      help="leave the namespace, pool and client routes for debugging")
    test.add_argument("--connections", type=_connections, default=60, metavar="N",
                      help="new connections per cell (default 60)")
    flags.output(test)
    test.set_defaults(func=cmd_test)
    serve = sub.add_parser(
        "serve", help="what the probe pods of --kubeconfig run: echo, and probe on a plan",
        description="Answer /whoami over HTTP on each --tcp port and echo datagrams on each "
                    "--udp port (as the lab's workload does); with --plan, also run the "
                    "probes the ConfigMap of that name gives this pod and write their results "
                    "to a ConfigMap. Runs until SIGTERM.")
    serve.add_argument("--tcp", type=int, action="append", default=[], metavar="PORT")
    serve.add_argument("--udp", type=int, action="append", default=[], metavar="PORT")
    serve.add_argument("--plan", metavar="CONFIGMAP",
                       help="the plan's ConfigMap in the pod's namespace")
    serve.add_argument("--pod", default=os.environ.get("POD_NAME", ""),
                       help="this pod's name (default $POD_NAME)")
    serve.add_argument("--namespace", default=os.environ.get("POD_NAMESPACE", ""),
                       help="this pod's namespace (default $POD_NAMESPACE)")
    serve.add_argument("--ready-file", default=os.environ.get("HEXLANE_READY_FILE") or None,
                       metavar="F", help="written once every port is bound (default "
                       "$HEXLANE_READY_FILE: the lab kubelet's readiness)")
    serve.set_defaults(func=cmd_serve)


def cmd_serve(args: argparse.Namespace) -> int:
    if not args.pod or (args.plan and not args.namespace):
        raise InputError(Problem("want the pod's name and namespace ($POD_NAME, "
                                 "$POD_NAMESPACE: the downward API)", "--pod"))
    log_to_stderr()
    try:
        asyncio.run(podprobe.main(args.pod, args.namespace, args.tcp, args.udp, args.plan,
                                  Path(args.ready_file) if args.ready_file else None))
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _interrupt(_signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt


def cmd_test(args: argparse.Namespace) -> int:
    if args.kubeconfig is None and (args.values or args.image):
        raise InputError(Problem("--values and --image go with --kubeconfig", "--values"))
    # SIGTERM cleans up as Ctrl-C does.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        if args.kubeconfig is not None:
            report = clustercheck.run(args.kubeconfig, values_file=args.values,
                                      image=args.image, connections=args.connections,
                                      keep=args.keep)
        else:
            lab = args.lab or check_lab_name(default_lab_name(), "$HEXLANE_LAB")
            if os.geteuid() != 0:
                print("error: the lab needs root (network namespaces)", file=sys.stderr)
                return 1
            report = connectivity.run(lab, connections=args.connections, keep=args.keep)
    except manager.LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; what the test made is removed", file=sys.stderr)
        return 130
    if args.output == "json":
        print(json.dumps({
            "cluster" if report.facts.in_pods else "lab": report.lab,
            "summary": report.summary, "failed": report.failed,
            "warnings": report.warnings,
            "seconds": {"setup": round(report.setup_s, 1), "matrix": round(report.matrix_s, 1),
                        "cleanup": round(report.cleanup_s, 1)},
            "cells": [conncheck.row_json(r, report.facts) for r in report.rows]}, indent=2))
    else:
        facts = report.facts
        what = "cluster" if facts.in_pods else "lab"
        print(f"{what} {report.lab}: routingMode {facts.routing_mode}, loadBalancer.mode "
              f"{facts.lb_mode}, algorithm {facts.lb_algorithm}; {len(facts.nodes)} node(s)")
        for warning in report.warnings:
            print(f"warning: {warning}")
        print(conncheck.render_table(report.rows, facts))
        print(f"\n{report.summary} (matrix {report.matrix_s:.1f}s, set up "
              f"{report.setup_s:.1f}s, clean up {report.cleanup_s:.1f}s)")
    return 1 if report.failed else 0
