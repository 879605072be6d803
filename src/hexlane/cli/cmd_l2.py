"""`hexlane l2 list`: the LoadBalancer and external IPs this node's agent announces on the LAN.

    hexlane l2 list [-o text|json] [--state-dir DIR]

Asks this node's agent (as `hexlane status` does): one row per announced (IP, interface) with
the Service(s) it belongs to, the announcing node, the policies that selected it and how many
ARP requests the datapath answered for it; in hexlane's election, why this node won each IP
(the eligible nodes, those alive, their rendezvous ranking); then the Services this node
competes for without holding their Lease, with the node that holds it.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from . import flags
from .cmd_status import fetch_status


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("l2", help="L2 (ARP) announcements of this node",
                                   description="L2 announcements of this node's agent.")
    sub = flags.commands(parser, "l2_command")
    lst = sub.add_parser("list", help="announced IPs, interfaces, Services, replies sent")
    flags.output(lst)
    flags.state_dir(lst)
    lst.set_defaults(func=cmd_list)


def cmd_list(args: argparse.Namespace) -> int:
    try:
        status = fetch_status(args.state_dir)
    except RuntimeError as err:
        print(f"error: {err}", file=sys.stderr)
        if hint := flags.no_local_agent(args, "state_dir"):
            print(hint, file=sys.stderr)
        return 1
    l2 = status.get("l2") or {}
    if args.output == "json":
        print(json.dumps(l2, indent=2, sort_keys=True))
        return 0
    if not l2.get("enabled"):
        print("L2 announcements are disabled (l2announcements.enabled: false)")
        return 0
    sys.stdout.write(format_list(l2))
    return 0


def format_list(l2: dict[str, Any]) -> str:
    rows = [("IP", "SERVICE", "INTERFACE", "NODE", "POLICY", "REPLIES")]
    for a in l2.get("announcements") or []:
        rows.append((a["ip"], ",".join(a["services"]), a["device"], a["node"],
                     ",".join(a["policies"]), str(a["replies"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]
    whys = [(a["ip"], a["why"]) for a in l2.get("announcements") or [] if a.get("why")]
    if whys:
        lines.append("")
        lines.append("Why this node: hexlane's election, rendezvous hashing with bounded load "
                     "over the live eligible nodes:")
        for ip, why in dict(whys).items():
            lines.append(f"  {ip}  eligible {','.join(why['eligible']) or '-'}  "
                         f"alive {','.join(why['alive']) or '-'}  "
                         f"ranking {' > '.join(why['ranking']) or '-'}  "
                         f"owner {why.get('owner') or '-'}")
    others = [c for c in l2.get("competing") or [] if not c["leading"]]
    if others:
        lines.append("")
        lines.append("Competing, announced elsewhere:")
        for c in others:
            holder = c.get("holder") or "(nobody yet)"
            how = f"lease {c['lease']}  held by" if c.get("lease") else "announced by"
            lines.append(f"  {c['service']}  {how} {holder}")
    for name in l2.get("badPolicies") or []:
        lines.append(f"policy {name} is not used: see its io.cilium/bad-* conditions")
    if l2.get("lastError"):
        lines.append(f"error: {l2['lastError']}")
    return "\n".join(lines) + "\n"
