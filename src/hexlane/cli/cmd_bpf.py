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
from collections import Counter
from typing import Any

from hexlane.datapath.lb import view as lbview

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("bpf", help="inspect the eBPF datapath's maps",
                                   description="Read what the eBPF datapath holds.")
    sub = flags.commands(parser, "bpf_command")

    def common(p: argparse.ArgumentParser) -> None:
        flags.bpf_root(p)
        flags.output(p)

    lb = sub.add_parser("lb", help="service load balancer maps")
    lb_sub = flags.commands(lb, "lb_command")
    lb_list = lb_sub.add_parser("list", help="frontends and their backends")
    common(lb_list)
    lb_list.set_defaults(func=cmd_lb_list)
    maglev = lb_sub.add_parser("maglev", help="Maglev tables")
    maglev_sub = flags.commands(maglev, "maglev_command")
    maglev_list = maglev_sub.add_parser("list", help="every Maglev table, slot by slot")
    common(maglev_list)
    maglev_list.add_argument("--slots", action="store_true",
                             help="print every slot's backend (text output)")
    maglev_list.set_defaults(func=cmd_maglev_list)
    drops = sub.add_parser("drops", help="packets dropped by the datapath, by reason")
    common(drops)
    drops.set_defaults(func=cmd_drops)


def cmd_lb_list(args: argparse.Namespace) -> int:
    return flags.show(args, lbview.services, _lb_text)


def _lb_text(rows: list[dict[str, Any]]) -> None:
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


def cmd_maglev_list(args: argparse.Namespace) -> int:
    def text(rows: list[dict[str, Any]]) -> None:
        for row in rows:
            print(f"{row['frontend'] or '?'} (service id {row['rev_nat_index']}), "
                  f"{row['table_size']} slots")
            if args.slots:
                for slot, address in enumerate(row["slots"]):
                    print(f"  {slot:>6}  {address}")
                continue
            for address, count in sorted(Counter(row["slots"]).items(),
                                         key=lambda kv: str(kv[0])):
                print(f"  {address!s:<28} {count:>7} slots  {count / row['table_size']:7.2%}")

    return flags.show(args, lbview.maglev_tables, text,
                      lambda rows: [{k: v for k, v in r.items() if k != "backend_ids"}
                                    for r in rows])


def cmd_drops(args: argparse.Namespace) -> int:
    def text(counts: dict[str, int]) -> None:
        for reason, count in sorted(counts.items()):
            print(f"{reason:<20} {count}")

    return flags.show(args, lbview.drops, text)
