"""`hexlane manifests`: everything a real cluster needs to run hexlane, from the Helm values.

    hexlane manifests [--values F]... [--set K=V]... [--namespace kube-system]
                      [--hubble-ca-dir DIR] [-o yaml|json]

Prints the objects `hexlane.deploy.render` makes of the values as one multi-document YAML
stream (or, with `-o json`, one `v1` List) on standard output, for `kubectl apply -f -`. This
edge reads what the pure render takes as data: the values (an error exits 2 naming file and
key), the cilium.io CRDs the embedded apiserver serves (the same schemas), the Grafana
dashboards, and the Hubble CA when the agents serve Hubble with mutual TLS: `tls.ca.cert/key`
from the values, else the CA in `--hubble-ca-dir` (made there when missing), else a new one
for this render, as Cilium's chart makes one with `hubble.tls.auto.method: helm` (then say so
on stderr: applying a later render replaces it). See docs/deploy.md.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "manifests", help="print what a real cluster needs (CRDs, RBAC, DaemonSet, ...)",
        description="Render the Kubernetes objects of a hexlane install from Helm values: "
                    "the cilium.io CRDs, service accounts and least-privilege roles, the "
                    "config, the agent DaemonSet, the operator, relay and UI Deployments, "
                    "Services, ServiceMonitors and dashboards. Apply with kubectl apply -f -.")
    flags.helm_values(parser)
    parser.add_argument("--namespace", default="kube-system", metavar="NS",
                        help="the namespace of the release (default kube-system)")
    parser.add_argument("--hubble-ca-dir", type=Path, metavar="DIR",
                        help="the Hubble CA (ca.crt, ca.key), made there when missing, when "
                             "the values give no tls.ca.cert/key (default: a new CA for this "
                             "render)")
    parser.add_argument("-o", "--output", choices=("yaml", "json"), default="yaml",
                        help="output format (default yaml)")
    parser.set_defaults(func=run)


def crds() -> list[dict[str, Any]]:
    """The cilium.io CRDs the embedded apiserver serves, as objects."""
    from hexlane.apiserver.schema import load_builtin_crds

    return load_builtin_crds()


def dashboards() -> dict[str, str]:
    """The Grafana dashboards shipped with hexlane, by file stem."""
    folder = resources.files("hexlane.deploy").joinpath("dashboards")
    return {entry.name.removesuffix(".json"): entry.read_text("utf-8")
            for entry in sorted(folder.iterdir(), key=lambda e: e.name)
            if entry.name.endswith(".json")}


def hubble_ca(values: Any, ca_dir: Path | None) -> tuple[str, str]:
    """The Hubble CA's PEM texts: the values', else `ca_dir`'s (made when missing), else a
    new one (with a note on stderr)."""
    from hexlane.hubble import certs

    tls = values.hubble.tls
    if tls.ca_cert and tls.ca_key:
        return (base64.b64decode(tls.ca_cert).decode(), base64.b64decode(tls.ca_key).decode())
    if ca_dir is None:
        with tempfile.TemporaryDirectory(prefix="hexlane-ca-") as tmp:
            pair = certs.ensure_ca(Path(tmp), days=tls.ca_validity_days)
            pem = pair.cert.read_text(), pair.key.read_text()
        print("note: made a new Hubble CA for this render (Secret hexlane-hubble-ca), as "
              "Cilium's chart does with hubble.tls.auto.method helm; to keep it across "
              "renders give --hubble-ca-dir DIR or tls.ca.cert/key", file=sys.stderr)
        return pem
    pair = certs.ensure_ca(ca_dir, days=tls.ca_validity_days)
    return pair.cert.read_text(), pair.key.read_text()


def run(args: argparse.Namespace) -> int:
    from hexlane.config import require_values
    from hexlane.deploy.render import RenderInputs, check, needs_hubble_ca, render
    from hexlane.model.errors import InputError, errors_only

    values, warnings = require_values(args.values, args.set_flags)
    for problem in warnings:
        print(str(problem), file=sys.stderr)
    problems = check(values)
    if errors_only(problems):
        raise InputError(problems)
    for problem in problems:
        print(str(problem), file=sys.stderr)
    ca = hubble_ca(values, args.hubble_ca_dir) if needs_hubble_ca(values) else None
    objects = render(values, RenderInputs(crds=crds(), dashboards=dashboards(),
                                          hubble_ca=ca, namespace=args.namespace))
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects},
                         indent=2, sort_keys=True))
    else:
        sys.stdout.write(yaml.safe_dump_all(objects, sort_keys=True, explicit_start=True))
    return 0
