"""`hexlane lab up|upgrade|down|status|exec|kubectl|kill|revive|freeze|thaw|port-forward|demo
--name NAME ...`: a
whole homelab cluster in network namespaces on this machine (see docs/lab.md and
`hexlane.lab.manager`).

Every verb takes `--name NAME` (at most 8 of [a-z0-9]; default `$HEXLANE_LAB` or `hl`), so
several labs can exist at once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from typing import Any

from hexlane.lab import manager
from hexlane.lab.topology import (
    DEFAULT_LAN,
    DEFAULT_LAN_IFNAME,
    DEFAULT_NODES,
    check_lab_name,
    default_lab_name,
    lab_dir,
)
from hexlane.model.errors import InputError


def _name(text: str) -> str:
    try:
        return check_lab_name(text)
    except InputError as e:  # argparse turns this into a usage error naming the flag
        raise argparse.ArgumentTypeError(e.problems[0].message) from None


def _add_name(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", type=_name, default=None, metavar="NAME",
                   help="lab name, at most 8 of [a-z0-9] (default $HEXLANE_LAB or hl)")


def register(subparsers: Any) -> None:
    lab = subparsers.add_parser("lab", help="a whole cluster in network namespaces",
                                description="Build and use a homelab cluster in network "
                                            "namespaces on this machine (see docs/lab.md). "
                                            "`hexlane lab demo` tells seed 000's story on one "
                                            "(docs/lab.md, section Demo).")
    sub = lab.add_subparsers(dest="lab_command", metavar="VERB")

    p = sub.add_parser("up", help="build and start a lab")
    _add_name(p)
    p.add_argument("--nodes", type=int, default=DEFAULT_NODES, help="number of nodes (3)")
    p.add_argument("--lan", default=DEFAULT_LAN, metavar="CIDR", help="LAN (10.0.0.0/24)")
    p.add_argument("--lan-ifname", default=DEFAULT_LAN_IFNAME, metavar="NAME",
                   help="nodes' LAN interface name (eth0)")
    p.add_argument("--values", "-f", action="append", default=[], metavar="F",
                   help="Helm values file (repeatable, layered on the lab's base values)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="value override, as helm --set (repeatable)")
    p.add_argument("--node-monitor-grace-period", type=float, default=40.0, metavar="S",
                   help="seconds without a Lease renewal before a node is marked not Ready")
    p.add_argument("--timeout", type=float, default=180.0, metavar="S",
                   help="how long to wait for nodes and agents")
    p.set_defaults(func=_up)

    p = sub.add_parser("upgrade", help="layer values over a running lab's, as helm upgrade "
                                       "--reuse-values, and restart what reads them")
    _add_name(p)
    p.add_argument("--values", "-f", action="append", default=[], metavar="F",
                   help="Helm values file (repeatable, layered on the lab's current values)")
    p.add_argument("--set", action="append", default=[], metavar="K=V",
                   help="value override, as helm --set (repeatable)")
    p.add_argument("--timeout", type=float, default=120.0, metavar="S",
                   help="how long to wait for the agents")
    p.set_defaults(func=_upgrade)

    p = sub.add_parser("down", help="stop and remove a lab (also a broken one)")
    _add_name(p)
    p.set_defaults(func=_down)

    p = sub.add_parser("status", help="hosts, processes, nodes")
    _add_name(p)
    p.add_argument("-o", "--output", choices=("text", "json"), default="text")
    p.set_defaults(func=_status)

    # kubectl's own flags (`-n x`, `-A`) must pass untouched, so this parser takes only
    # `--name` and hands everything after it to kubectl.
    default_class = sub._parser_class
    sub._parser_class = _PassThroughParser
    p = sub.add_parser("kubectl", help="kubectl against the lab's apiserver",
                       usage="hexlane lab kubectl [--name NAME] [--] KUBECTL-ARGS...")
    p.set_defaults(func=_kubectl)
    p = sub.add_parser("exec", help="run a command in client, cp, node<i> or pod/<ns>/<name>",
                       usage="hexlane lab exec [--name NAME] TARGET [--] CMD...")
    p.set_defaults(func=_exec)
    sub._parser_class = default_class

    p = sub.add_parser("kill", help="a node's sudden death (processes killed, LAN link down)")
    _add_name(p)
    p.add_argument("node", metavar="NODE")
    p.set_defaults(func=_kill)

    p = sub.add_parser("revive", help="bring a killed node back")
    _add_name(p)
    p.add_argument("node", metavar="NODE")
    p.set_defaults(func=_revive)

    p = sub.add_parser("freeze", help="SIGSTOP every process of a host (a hung machine)")
    _add_name(p)
    p.add_argument("host", metavar="HOST", help="cp or node<i>")
    p.set_defaults(func=_freeze)

    p = sub.add_parser("thaw", help="SIGCONT a frozen host's processes")
    _add_name(p)
    p.add_argument("host", metavar="HOST", help="cp or node<i>")
    p.set_defaults(func=_thaw)
    p = sub.add_parser("port-forward", help="a lab host's TCP port on this machine's loopback",
                       description="Listen on this machine's 127.0.0.1 and connect each "
                                   "connection to HOST's PORT from inside the lab (as kubectl "
                                   "port-forward); e.g. `hexlane lab port-forward cp 8081` for "
                                   "the Hubble UI. Ctrl-C stops. See docs/lab.md.")
    _add_name(p)
    p.add_argument("host", metavar="HOST", help="client, cp or node<i>")
    p.add_argument("port", type=int, metavar="PORT", help="the TCP port on HOST")
    p.add_argument("--address", default="127.0.0.1", metavar="ADDR",
                   help="loopback address to listen on (127.0.0.1)")
    p.add_argument("--local-port", type=int, default=None, metavar="N",
                   help="local port (default: PORT; 0: any free one)")
    p.set_defaults(func=_port_forward)
    p = sub.add_parser("demo", help="seed 000's whole story on a lab of its own, about 30 s "
                                    "(docs/lab.md#demo)",
                       description="Build a 3-node lab with seed 000's values and tell its "
                                   "story: LB-IPAM, L2 announcements, traffic from the laptop, "
                                   "Hubble, a node's death; then remove the lab (see the Demo "
                                   "section of docs/lab.md).")
    _add_name(p)
    p.add_argument("--keep", action="store_true",
                   help="leave the lab up afterwards (and say how to open the Hubble UI)")
    p.set_defaults(func=_demo)
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])


class _PassThroughParser(argparse.ArgumentParser):
    """Parses a leading `--name NAME` (or `-h`) and puts every other argument, untouched and
    in order, into `args` (a leading `--` dropped)."""

    def _add_name_once(self) -> None:
        if not any("--name" in a.option_strings for a in self._actions):
            _add_name(self)

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        rest = list(sys.argv[1:] if args is None else args)
        head: list[str] = []
        while rest and (rest[0] in ("--name", "-h", "--help") or rest[0].startswith("--name=")):
            token = rest.pop(0)
            head.append(token)
            if token == "--name" and rest:
                head.append(rest.pop(0))
        self._add_name_once()
        ns, extras = super().parse_known_args(head, namespace)
        ns.args = rest[1:] if rest[:1] == ["--"] else rest
        return ns, extras


def _lab(args: argparse.Namespace) -> str:
    return args.name or check_lab_name(default_lab_name(), "$HEXLANE_LAB")


def _rest(argv: list[str]) -> list[str]:
    return argv[1:] if argv[:1] == ["--"] else argv


def _guard(fn: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        if os.geteuid() != 0:
            print("error: the lab needs root (network namespaces)", file=sys.stderr)
            return 1
        try:
            return int(fn(args) or 0)
        except manager.LabError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return run


@_guard
def _up(args: argparse.Namespace) -> int:
    name = _lab(args)
    existed = manager.lab_exists(name)
    try:
        state = manager.up(name, nodes=args.nodes, lan=args.lan, lan_ifname=args.lan_ifname,
                           values_files=args.values, sets=args.set,
                           node_grace=args.node_monitor_grace_period, timeout=args.timeout)
    except (manager.LabError, KeyboardInterrupt, OSError, subprocess.SubprocessError) as e:
        if existed:
            raise
        print(f"error: lab {name}: {e or 'interrupted'}\nwhat was made is left for inspection "
              f"(logs in {lab_dir(name)}); `hexlane lab down --name {name}` removes it",
              file=sys.stderr)
        return 1
    print(manager.usage(state.plan))
    return 0


@_guard
def _upgrade(args: argparse.Namespace) -> int:
    name = _lab(args)
    for line in manager.upgrade(name, values_files=args.values, sets=args.set,
                                timeout=args.timeout):
        print(line)
    print(f"lab {name} upgraded: values in {lab_dir(name) / 'values.yaml'}")
    return 0


@_guard
def _demo(args: argparse.Namespace) -> int:
    from hexlane.lab import demo

    return demo.run(_lab(args), keep=args.keep)


@_guard
def _port_forward(args: argparse.Namespace) -> int:
    from hexlane.lab import portforward

    return portforward.run(_lab(args), args.host, args.port, address=args.address,
                           local_port=args.local_port,
                           say=lambda text: print(text, flush=True))


@_guard
def _down(args: argparse.Namespace) -> int:
    name = _lab(args)
    left = manager.down(name)
    if left:
        print(f"error: lab {name}: could not remove: {', '.join(left)}", file=sys.stderr)
        return 1
    print(f"lab {name} removed")
    return 0


@_guard
def _status(args: argparse.Namespace) -> int:
    info = manager.status(_lab(args))
    if args.output == "json":
        print(json.dumps(info, indent=2))
        return 0 if info["exists"] else 1
    if not info["exists"]:
        print(f"no lab {info['name']}")
        return 1
    print(f"lab {info['name']}: {info['phase']}, LAN {info.get('lan', '?')}")
    for h in info.get("hosts", []):
        print(f"  {h['host']:<8} {h['netns']:<16} {h['address']:<16} {h['ifname']:<8} "
              f"link {h['link']}{'  FROZEN' if h.get('frozen') else ''}")
    for p in info.get("processes", []):
        state = ("FROZEN" if p.get("frozen") else "alive") if p["alive"] else "DEAD"
        print(f"  {p['name']:<16} pid {p['pid']:<8} {state}")
    for n in info.get("nodes", []):
        print(f"  Node {n['name']:<10} {'Ready' if n['ready'] else 'NotReady':<9} "
              f"{n['podCIDR']}")
    if info.get("apiError"):
        print(f"  API unreachable: {info['apiError']}")
    leftovers = [n for n in info["namespaces"]
                 if n not in {h["netns"] for h in info.get("hosts", [])}]
    if leftovers and not info.get("hosts"):
        print(f"  namespaces left behind: {', '.join(leftovers)} (hexlane lab down)")
    return 0


@_guard
def _exec(args: argparse.Namespace) -> int:
    target, command = (args.args[0], _rest(args.args[1:])) if args.args else ("", [])
    if not target or not command:
        print("error: want a target and a command (hexlane lab exec TARGET -- CMD ...)",
              file=sys.stderr)
        return 2
    return manager.run_exec(_lab(args), target, command)


@_guard
def _kubectl(args: argparse.Namespace) -> int:
    return manager.run_kubectl(_lab(args), args.args)


@_guard
def _kill(args: argparse.Namespace) -> int:
    manager.kill(_lab(args), args.node)
    print(f"{args.node} killed")
    return 0


@_guard
def _revive(args: argparse.Namespace) -> int:
    manager.revive(_lab(args), args.node)
    print(f"{args.node} is back and Ready")
    return 0


@_guard
def _freeze(args: argparse.Namespace) -> int:
    pids = manager.freeze(_lab(args), args.host)
    print(f"{args.host} frozen ({len(pids)} processes stopped; `hexlane lab thaw` resumes them)")
    return 0


@_guard
def _thaw(args: argparse.Namespace) -> int:
    pids = manager.thaw(_lab(args), args.host)
    print(f"{args.host} thawed ({len(pids)} processes continued)")
    return 0
