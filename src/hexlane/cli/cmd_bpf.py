"""`hexlane bpf`: what the eBPF datapath holds, read from the pinned maps.

    hexlane bpf lb list [--bpf-root DIR] [-o text|json]
    hexlane bpf lb maglev list [--bpf-root DIR] [--slots] [-o text|json]
    hexlane bpf drops [--bpf-root DIR] [-o text|json]

`--bpf-root` (env HEXLANE_BPF_ROOT, default /sys/fs/bpf/hexlane) selects a node's datapath.
`lb list` shows every frontend with its backends by slot (like `cilium bpf lb list`);
`lb maglev list` every Maglev table with the backend address of every slot (text shows each
backend's share of the slots unless --slots; JSON always has every slot).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from typing import Any

from hexlane.datapath.lb import view as lbview
from hexlane.datapath.libbpf import BpfError

DEFAULT_BPF_ROOT = "/sys/fs/bpf/hexlane"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bpf", help="inspect the eBPF datapath's maps",
                                   description="Read what the eBPF datapath holds.")
    sub = parser.add_subparsers(dest="bpf_command", metavar="COMMAND")

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--bpf-root", default=os.environ.get("HEXLANE_BPF_ROOT",
                                                            DEFAULT_BPF_ROOT),
                       help="where the datapath's maps are pinned (default %(default)s)")
        p.add_argument("-o", "--output", choices=("text", "json"), default="text")

    lb = sub.add_parser("lb", help="service load balancer maps")
    lb_sub = lb.add_subparsers(dest="lb_command", metavar="COMMAND")
    lb_list = lb_sub.add_parser("list", help="frontends and their backends")
    common(lb_list)
    lb_list.set_defaults(func=cmd_lb_list)
    maglev = lb_sub.add_parser("maglev", help="Maglev tables")
    maglev_sub = maglev.add_subparsers(dest="maglev_command", metavar="COMMAND")
    maglev_list = maglev_sub.add_parser("list", help="every Maglev table, slot by slot")
    common(maglev_list)
    maglev_list.add_argument("--slots", action="store_true",
                             help="print every slot's backend (text output)")
    maglev_list.set_defaults(func=cmd_maglev_list)
    drops = sub.add_parser("drops", help="packets dropped by the datapath, by reason")
    common(drops)
    drops.set_defaults(func=cmd_drops)
    for p in (parser, lb, maglev):
        p.set_defaults(func=lambda _args, p=p: _usage(p))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return 2


def _read(what: Any, args: argparse.Namespace) -> Any:
    try:
        return what(args.bpf_root)
    except (FileNotFoundError, BpfError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def cmd_lb_list(args: argparse.Namespace) -> int:
    rows = _read(lbview.services, args)
    if rows is None:
        return 1
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'SERVICE ADDRESS':<28} {'BACKEND ADDRESS (ID) (SLOT)':<40} INFO")
    for row in rows:
        info = [row["type"], row["algorithm"], *row["flags"]]
        if row["scope"] == "internal":
            info.append("internal-scope")
        print(f"{row['frontend']:<28} {'(' + str(row['rev_nat_index']) + ')':<40} "
              f"{', '.join(info)}")
        for be in row["backends"]:
            label = f"{be['address']} ({be['id']}) ({be['slot']})"
            state = "" if be["state"] == "active" else be["state"]
            print(f"{'':<28} {label:<40} {state}")
    return 0


def cmd_maglev_list(args: argparse.Namespace) -> int:
    rows = _read(lbview.maglev_tables, args)
    if rows is None:
        return 1
    if args.output == "json":
        print(json.dumps([{k: v for k, v in r.items() if k != "backend_ids"} for r in rows],
                         indent=2))
        return 0
    for row in rows:
        print(f"{row['frontend'] or '?'} (service id {row['rev_nat_index']}), "
              f"{row['table_size']} slots")
        if args.slots:
            for slot, address in enumerate(row["slots"]):
                print(f"  {slot:>6}  {address}")
            continue
        for address, count in sorted(Counter(row["slots"]).items(), key=lambda kv: str(kv[0])):
            print(f"  {address!s:<28} {count:>7} slots  {count / row['table_size']:7.2%}")
    return 0


def cmd_drops(args: argparse.Namespace) -> int:
    counts = _read(lbview.drops, args)
    if counts is None:
        return 1
    if args.output == "json":
        print(json.dumps(counts, indent=2))
        return 0
    for reason, count in sorted(counts.items()):
        print(f"{reason:<20} {count}")
    return 0
