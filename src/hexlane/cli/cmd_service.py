"""`hexlane service list`: what the node's load balancer serves, like `cilium service list`.

    hexlane service list [--bpf-root DIR] [-o text|json]

Reads the pinned maps under `--bpf-root` (env HEXLANE_BPF_ROOT, default /sys/fs/bpf/hexlane),
so it works while the agent runs or after it stopped: one row per frontend with its service
id, type, algorithm, forwarding mode for traffic from outside (snat or dsr), flags, and the
backends with their state and whether they are on this node. Internal-scope entries (the
INT half of a two-scope service, eTP/iTP Local) are marked.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from hexlane.datapath.lb import view as lbview

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("service", help="services programmed on this node",
                                   description="Services programmed in this node's datapath.")
    sub = flags.commands(parser, "service_command")
    lst = sub.add_parser("list", help="frontends and their backends (like cilium service list)")
    flags.bpf_root(lst)
    flags.output(lst)
    lst.set_defaults(func=cmd_list)


def service_rows(bpf_root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """One row per frontend scope, sorted by service id."""
    rows = []
    for row in lbview.services(bpf_root):
        rows.append({
            "id": row["rev_nat_index"],
            "frontend": row["frontend"],
            "type": row["type"],
            "scope": row["scope"],
            "algorithm": row["algorithm"],
            "mode": row["mode"],
            "flags": row["flags"],
            "affinity_timeout_s": row["affinity_timeout_s"],
            "backends": [{"id": b["id"], "address": b["address"], "state": b["state"],
                          "local": b.get("local", False)} for b in row["backends"]],
        })
    return sorted(rows, key=lambda r: r["id"])


def cmd_list(args: argparse.Namespace) -> int:
    return flags.show(args, service_rows, _text)


def _text(rows: list[dict[str, Any]]) -> None:
    print(f"{'ID':<6} {'Frontend':<26} {'Service Type':<14} {'Algorithm':<10} {'Mode':<5} "
          "Backend")
    for row in rows:
        svc_type = row["type"] + (" (internal)" if row["scope"] == "internal" else "")
        head = (f"{row['id']:<6} {row['frontend']:<26} {svc_type:<14} {row['algorithm']:<10} "
                f"{row['mode']:<5} ")
        if not row["backends"]:
            print(head + "(no backends: rejects)")
        for i, be in enumerate(row["backends"], start=1):
            where = ", local" if be["local"] else ""
            line = f"{i} => {be['address']} ({be['state']}{where})"
            print((head if i == 1 else " " * len(head)) + line)
        if row["flags"]:
            print(" " * len(head) + "flags: " + ", ".join(row["flags"]))
