"""`hexlane ipam plan`: what LB-IPAM will do with these manifests, offline.

    hexlane ipam plan -f PATH... [--values F...] [-o text|json]

`-f` takes files and directories (their *.yaml/*.yml, sorted; subdirectories with -R). Every
CiliumLoadBalancerIPPool and Service found is handed to the same pure allocator the operator
runs (`hexlane.ipam.lbipam.allocate`); other kinds are ignored (`hexlane validate` checks
them). Objects count in file order: one without creationTimestamp counts as created right
after the objects before it (so it is older than those after it, and a new pool added after
a dump of the cluster is the newest). A Service's `status.loadBalancer.ingress` is taken back
as the operator would after a restart. `--values` supplies `ipv4.enabled`/`ipv6.enabled`,
which decide the address families a Service without ipFamilies asks for.

Output: per LoadBalancer Service its IPs and its `cilium.io/IPAMRequestSatisfied` condition,
per pool its conflict condition and counters. Bad input (an invalid pool CIDR, a malformed
Service) is reported as problems with file, line, object and field, and exits 2; a path
that holds no object at all exits 1 ("no objects found in PATH").
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import replace
from datetime import datetime
from typing import Any

from hexlane.ipam.inputs import options_from_values, pool_input_from_model, service_input_from_model
from hexlane.ipam.lbipam import LBIPAMPlan, PoolInput, ServiceInput, allocate
from hexlane.model.cilium import LBIPPool
from hexlane.model.errors import InputError, Problem, no_objects
from hexlane.model.manifests import Manifest, expand_paths, read_manifests
from hexlane.model.registry import parse_object
from hexlane.model.service import Service

from . import flags

_KINDS = (LBIPPool.KIND, Service.KIND)


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ipam", help="LB-IPAM tools (offline plan)",
        description="LB-IPAM: LoadBalancer IPs from CiliumLoadBalancerIPPools.")
    sub = flags.commands(parser, "ipam_command")
    plan = sub.add_parser(
        "plan", help="what LB-IPAM would give each Service, offline",
        description="Read pools and Services from manifests and print what LB-IPAM would "
                    "give each LoadBalancer Service (IPs and condition) and each pool's "
                    "status, without a cluster.")
    flags.manifests(plan, required=True)
    flags.helm_values(plan, set_flags=False)
    flags.output(plan)
    plan.set_defaults(func=cmd_plan)


def read_inputs(paths: list[str], skip: list[str], *, recursive: bool = False
                ) -> tuple[list[PoolInput], list[ServiceInput], list[Problem]]:
    """Pools and Services from the manifests in file order, and the warnings found.

    Raises InputError carrying every error (with file:line, object and field)."""
    problems: list[Problem] = []
    pools: list[PoolInput] = []
    services: list[ServiceInput] = []
    skipped = {os.path.normpath(s) for s in skip}
    order = 0
    # An object without creationTimestamp counts as created right after the objects before
    # it in the files: as old as the last timestamp seen, and newer by file order. So a new
    # pool added after a dump of the cluster is the newest, and with no timestamps at all
    # file order decides.
    clock: datetime | None = None
    empty: list[Problem] = []
    for arg in paths:
        objects = 0
        problems_before = len(problems)
        for path in expand_paths([arg], recursive=recursive):
            if os.path.normpath(path) in skipped:
                continue
            if not os.path.exists(path):
                problems.append(Problem("no such file or directory", file=path))
                continue
            manifests, found = read_manifests(path)
            problems += found
            for m in manifests:
                documents = _documents(m.obj)
                objects += len(documents)
                for prefix, raw in documents:
                    parsed = _read_object(m, prefix, raw, order, clock, problems)
                    if parsed is None:
                        continue
                    if isinstance(parsed, PoolInput):
                        pools.append(parsed)
                    else:
                        services.append(parsed)
                    clock = parsed.created
                    order += 1
        if not objects and len(problems) == problems_before:
            empty.append(no_objects(arg))
    if any(p.severity == "error" for p in problems):
        raise InputError(problems + empty)
    if empty:
        # Nothing else wrong: the input was read and held nothing (exit 1, as `validate`).
        raise InputError(problems + empty, exit_code=1)
    return pools, services, problems


def _read_object(m: Manifest, prefix: str, raw: dict[str, Any], order: int,
                 clock: datetime | None, problems: list[Problem]
                 ) -> PoolInput | ServiceInput | None:
    """A pool or Service of document `m` as the allocator's input (None for other kinds and
    for objects with errors, which go to `problems` with the warnings)."""
    if raw.get("kind") not in _KINDS:
        return None  # other kinds, and values files lying beside the manifests
    try:
        obj = parse_object(raw, prefix)
    except InputError as e:
        problems += [p.located(file=m.where(p.path)) for p in e.problems]
        return None
    parsed: PoolInput | ServiceInput
    if isinstance(obj, LBIPPool):
        pool = pool_input_from_model(obj, order)
        parsed = replace(pool, created=pool.created or clock)
    elif isinstance(obj, Service):
        svc = service_input_from_model(obj, order)
        parsed = replace(svc, created=svc.created or clock)
    else:
        return None
    problems += [w.located(file=m.where(w.path)) for w in obj.warnings]
    return parsed


def _documents(obj: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The object, or the items of a `kind: List` (what `kubectl get -o yaml` prints for
    several objects), each with its field path prefix."""
    items = obj.get("items")
    if obj.get("kind") == "List" and isinstance(items, list):
        return [(f"items[{i}]", item) for i, item in enumerate(items) if isinstance(item, dict)]
    return [("", obj)]


def plan_view(plan: LBIPAMPlan, services: list[ServiceInput]) -> dict[str, Any]:
    """The JSON document: LoadBalancer Services only (others are not LB-IPAM's business)."""
    doc = plan.to_dict()
    lb = {s.key for s in services if s.type == "LoadBalancer"}
    doc["services"] = {k: v for k, v in doc["services"].items() if k in lb}
    return doc


def render_text(doc: dict[str, Any]) -> str:
    lines: list[str] = []
    if doc["idle"]:
        lines.append("No CiliumLoadBalancerIPPool: LB-IPAM stays idle and changes no Service.")
        return "\n".join(lines) + "\n"
    rows: list[tuple[str, ...]] = [("SERVICE", "IPS", "CONDITION")]
    for key, s in doc["services"].items():
        cond = s["condition"]
        if not s["handled"]:
            text = "not handled (loadBalancerClass of another controller)"
        else:
            text = f"{cond['status']} {cond['reason']}"
            if cond["message"]:
                text += f": {cond['message']}"
        rows.append((key, ",".join(s["ips"]) or "-", text))
    lines += _table(rows) if len(rows) > 1 else ["No LoadBalancer Service."]
    lines.append("")
    prow: list[tuple[str, ...]] = [("POOL", "CONFLICTING", "IPS TOTAL", "IPS AVAILABLE",
                                    "IPS USED")]
    notes = []
    for name, p in doc["pools"].items():
        c = p["counters"]
        prow.append((name, "True" if p["conflicting"] else "False", str(c["total"]),
                     str(c["available"]), str(c["used"])))
        if p["conflicting"]:
            notes.append(f"{name}: {p['conditions'][0]['message']}")
    lines += _table(prow)
    lines += notes
    return "\n".join(lines) + "\n"


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["   ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
            for r in rows]


def cmd_plan(args: argparse.Namespace) -> int:
    options = None
    if args.values:
        from hexlane.config import require_values

        options = options_from_values(require_values(args.values)[0])
    pools, services, warnings = read_inputs(args.paths, args.values,
                                             recursive=args.recursive)
    for w in warnings:
        print(str(w) if w.severity != "error" else f"error: {w}", file=sys.stderr)
    plan = allocate(pools, services, options=options)
    doc = plan_view(plan, services)
    if args.output == "json":
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(render_text(doc))
    return 0
