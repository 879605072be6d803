"""`hexlane cleanup`: remove every interface, route, BPF pin, tc filter and file hexlane made
(and put back the sysctl it recorded).

    hexlane cleanup [--state-dir D] [--bpf-root B] [--cni-conf-dir D] [--cni-bin-dir D]
                    [--yes] [--host-namespace] [-o text|json]

Acts on the network namespace it runs in (run it in a node's: `nsenter --net=...` or
`hexlane lab exec --name X node1 -- hexlane cleanup --yes`). Without `--yes` it only lists
what it would remove and exits 1. Outside a named namespace (/run/netns/*), i.e. in the
machine's own, it also wants `--host-namespace`: what a real node needs and a test never
gives. It refuses while an agent answers in this namespace or on the state dir's socket:
the agent would put everything back. Idempotent: a second run finds nothing and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from hexlane.model.errors import InputError, Problem

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "cleanup", help="remove everything hexlane made on this node",
        description="Remove every interface, route, BPF pin, tc filter and file hexlane "
                    "made on this node (in the current network namespace).")
    flags.state_dir(parser)
    flags.bpf_root(parser)
    parser.add_argument("--cni-conf-dir", type=Path, default=Path("/etc/cni/net.d"))
    parser.add_argument("--cni-bin-dir", type=Path, default=Path("/opt/cni/bin"))
    parser.add_argument("--yes", action="store_true",
                        help="remove for real (without it: list what would go, exit 1)")
    parser.add_argument("--host-namespace", action="store_true",
                        help="allow acting in the machine's own network namespace (a real "
                             "node)")
    flags.output(parser)
    parser.set_defaults(func=run)


def _in_named_netns() -> bool:
    from hexlane.datapath import netlink

    return netlink.is_named_netns()


def _agent_answers(state_dir: Path) -> bool:
    from hexlane.cni.main import AgentUnavailable, PluginError, call_agent

    try:
        call_agent(str(state_dir), "GET", "/v1/healthz", timeout=3)
    except AgentUnavailable:
        return False
    except PluginError:
        return True  # something listens but did not answer well: still an agent
    return True


def run(args: argparse.Namespace) -> int:
    from hexlane.agent.cleanup import CleanupPaths, find_leftovers, remove

    # Told positively, as the endpoint manager does: PID 1's namespace cannot always be read
    # (containers, sandboxes), and guessing wrong would strip the machine's own network.
    if not _in_named_netns() and not args.host_namespace:
        raise InputError(Problem(
            "this is not a named node namespace (/run/netns/*) but, most likely, the "
            "machine's own: give --host-namespace if this machine is a hexlane node, or run "
            "cleanup inside the node's namespace", "--host-namespace"))
    if _agent_answers(args.state_dir):
        print("hexlane cleanup: an agent is running for this node; stop it first (it would "
              "put everything back)", file=sys.stderr)
        return 1
    paths = CleanupPaths(args.state_dir, args.bpf_root, args.cni_conf_dir, args.cni_bin_dir)
    try:
        items = asyncio.run(find_leftovers(paths))
    except ValueError as err:
        print(f"hexlane cleanup: {err}", file=sys.stderr)
        return 2
    if not args.yes:
        if args.output == "json":
            print(json.dumps({"wouldRemove": [str(i) for i in items]}, indent=2))
        else:
            for item in items:
                print(f"would remove {item}")
            print(f"{len(items)} item(s); nothing removed: run again with --yes")
        return 1 if items else 0
    results = asyncio.run(remove(items))
    failed = [r for r in results if r[1].startswith("failed")]
    if args.output == "json":
        print(json.dumps([{"item": str(i), "result": r} for i, r in results], indent=2))
    else:
        for item, result in results:
            if result == "gone":  # went with something removed before it (a link's routes)
                print(f"removed {item} (with its link)" if item.kind == "route"
                      else f"already gone: {item}")
            else:
                print(f"{result} {item}")
        if not results:
            print("nothing of hexlane's here")
    return 1 if failed else 0
