"""`hexlane dev`: parts of the agent run alone, for tests, benchmarks and experiments.

    hexlane dev endpoints --node-name NAME --node-ip IP --pod-cidr CIDR [--state-dir D]
        [--netns /run/netns/X] [--routing-mode native|tunnel] [--auto-direct-node-routes]
        [--lan-mtu N] [--peer NAME,IP,CIDR]... [--masquerade-device DEV]
        [--native-routing-cidr CIDR] [--bpf-root D] [--abstract-name NAME]
    hexlane dev services --node NAME --manifests DIR [--bpf-root D] [--values F]
        [--lan IFNAME]... [--service-cidr CIDR]

`endpoints` serves the endpoint API (the CNI plugin's calls, `hexlane.agent.api`) in a node
namespace, with routes to the given peers: the agent's `EndpointManager` without an API
server. `services` programs the Services, EndpointSlices and Nodes of the YAML manifests in
DIR (read as everywhere, `hexlane.model.manifests`) into the eBPF load balancer whenever they
change (`ServiceReconciler`), printing one JSON line per apply, and serves kube-proxy's
health servers. Both run until SIGTERM or SIGINT.

Hidden from `hexlane --help` (no help text is registered): the `hexlane agent` daemon wires
the same parts, and a user wants that.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from hexlane.config import Values
from hexlane.ipam.podcidr import parse_pod_cidr
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.errors import InputError, errors_only
from hexlane.model.manifests import load_manifests
from hexlane.model.node import Node
from hexlane.model.registry import parse_object
from hexlane.model.service import Service
from hexlane.routing.routes import NodeRouting

from . import flags

#: how often `dev services` expires idle conntrack entries, and looks for changed manifests
CONNTRACK_GC_S = 10.0
POLL_S = 0.2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(  # no help: not listed by `hexlane --help`
        "dev", description="Parts of the agent run alone (tests, benchmarks, experiments).")
    sub = flags.commands(parser, "dev_command")
    ep = sub.add_parser("endpoints", help="serve the endpoint API alone in a node namespace")
    flags.state_dir(ep)
    ep.add_argument("--node-name", required=True)
    ep.add_argument("--node-ip", type=IPv4Address, required=True)
    ep.add_argument("--pod-cidr", required=True)
    ep.add_argument("--netns", help="enter this network namespace first (setns)")
    ep.add_argument("--routing-mode", choices=("native", "tunnel"), default="tunnel")
    ep.add_argument("--auto-direct-node-routes", action="store_true")
    ep.add_argument("--lan-mtu", type=int, default=1500)
    ep.add_argument("--peer", type=_peer, action="append", default=[],
                    metavar="NAME,IP,CIDR", help="another node to route to (repeatable)")
    ep.add_argument("--masquerade-device",
                    help="masquerade pods' traffic leaving through this interface (eBPF)")
    flags.bpf_root(ep)
    ep.add_argument("--native-routing-cidr", type=IPv4Network,
                    help="ipv4NativeRoutingCIDR: destinations reached without masquerading")
    ep.add_argument("--abstract-name", default="hexlane-agent",
                    help="abstract socket name ('' for none)")
    ep.set_defaults(func=run_endpoints)
    svc = sub.add_parser("services", help="program the Services of a manifest directory")
    flags.bpf_root(svc)
    svc.add_argument("--node", required=True)
    svc.add_argument("--manifests", type=Path, required=True, metavar="DIR")
    svc.add_argument("--values", metavar="F")
    svc.add_argument("--lan", action="append", default=[], metavar="IFNAME")
    svc.add_argument("--service-cidr", type=IPv4Network, metavar="CIDR",
                     help="route it to hexlane_host (the agent's endpoint manager does)")
    svc.set_defaults(func=run_services)


def _peer(text: str) -> NodeRouting:
    parts = text.split(",")
    if len(parts) < 3:
        raise argparse.ArgumentTypeError(f"--peer wants NAME,IP,CIDR[,CIDR...], got {text!r}")
    try:
        return NodeRouting(parts[0], IPv4Address(parts[1]),
                           tuple(parse_pod_cidr(c, "--peer") for c in parts[2:]))
    except (ValueError, InputError) as err:
        raise argparse.ArgumentTypeError(f"--peer {text!r}: {err}") from None


# --- endpoints --------------------------------------------------------------------------------


def run_endpoints(args: argparse.Namespace) -> int:
    from hexlane.datapath import netlink
    from hexlane.k8s.runtime import log_to_stderr

    log_to_stderr()
    if args.netns:
        # Before asyncio starts any thread: the whole process moves, sockets included.
        netlink.setns(args.netns)
    try:
        return asyncio.run(_endpoints(args))
    except (RuntimeError, OSError) as err:
        print(f"hexlane dev endpoints: {err}", file=sys.stderr)
        return 1


async def _endpoints(args: argparse.Namespace) -> int:
    from hexlane.agent.api import SOCKET_NAME, serve_api
    from hexlane.agent.endpoints import EndpointManager, MasqueradeSettings
    from hexlane.k8s.runtime import stop_on_signals
    from hexlane.routing.routes import RoutingSettings

    local = NodeRouting(args.node_name, args.node_ip,
                        (parse_pod_cidr(args.pod_cidr, "--pod-cidr"),))
    settings = RoutingSettings(mode=args.routing_mode,
                               auto_direct_node_routes=args.auto_direct_node_routes,
                               lan_mtu=args.lan_mtu)
    masq = None
    if args.masquerade_device:
        masq = MasqueradeSettings(args.masquerade_device, args.bpf_root,
                                  args.native_routing_cidr)
    manager = EndpointManager(args.state_dir, local, settings, masquerade=masq)
    manager.nodes = tuple(sorted(args.peer))
    await manager.start()
    server = await serve_api(args.state_dir, manager, abstract_name=args.abstract_name or None)
    stop = stop_on_signals()
    print(f"hexlane endpoint API ready on {args.state_dir / SOCKET_NAME}", flush=True)
    await stop.wait()
    await server.close()
    await manager.close()
    return 0


# --- services ---------------------------------------------------------------------------------


def read_objects(directory: Path) -> tuple[list[Service], list[EndpointSlice], list[Node]]:
    """The Services, EndpointSlices and Nodes of every *.yaml/*.yml file in `directory`."""
    objects = [parse_object(m.obj) for m in load_manifests([str(directory)])]
    return ([o for o in objects if isinstance(o, Service)],
            [o for o in objects if isinstance(o, EndpointSlice)],
            [o for o in objects if isinstance(o, Node)])


def _stamp(directory: Path) -> tuple[tuple[str, int], ...]:
    return tuple((p.name, p.stat().st_mtime_ns) for p in sorted(directory.iterdir()))


def run_services(args: argparse.Namespace) -> int:
    from hexlane.config import load_values
    from hexlane.k8s.runtime import log_to_stderr

    log_to_stderr()
    values, problems = load_values([args.values] if args.values else [])
    errors = errors_only(problems)
    if errors:
        print(json.dumps({"error": "; ".join(str(p) for p in errors)}), flush=True)
        return 2
    return asyncio.run(_services(args, values))


async def _services(args: argparse.Namespace, values: Values) -> int:
    from hexlane.agent.healthz import HealthServers
    from hexlane.agent.loadbalancer import ServiceReconciler
    from hexlane.datapath import netlink
    from hexlane.datapath.lb.loader import LbDatapath
    from hexlane.k8s.runtime import stop_on_signals
    from hexlane.routing.routes import HOST_DEVICE, RouteSpec

    lb = LbDatapath.load(args.bpf_root, table_size=values.maglev.table_size,
                         hash_seed=values.maglev.hash_seed)
    rec = ServiceReconciler(lb, args.node, values)
    rec.attach(args.lan)
    if args.service_cidr:  # the agent's endpoint manager routes it; here, once
        async with netlink.iproute_in() as ipr:
            await netlink.install_route(ipr, RouteSpec(args.service_cidr, device=HOST_DEVICE,
                                                       scope_link=True))
    health = HealthServers(rec, values.kube_proxy_replacement_healthz_bind_addr)
    await health.start()
    stop = stop_on_signals()
    seen: tuple[tuple[str, int], ...] = ()
    last_gc = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() - last_gc > CONNTRACK_GC_S:
                rec.gc_conntrack()
                last_gc = time.monotonic()
            stamp = _stamp(args.manifests)
            if stamp != seen:
                seen = stamp
                try:
                    report = rec.update(*read_objects(args.manifests))
                    await health.sync()
                    print(json.dumps({"applied": report.services, "backends": report.backends,
                                      "updated": report.updated, "deleted": report.deleted,
                                      "seconds": round(report.seconds, 4)}), flush=True)
                except Exception as exc:  # bad input: report, keep the last state
                    print(json.dumps({"error": str(exc)}), flush=True)
            rec.attach_links()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), POLL_S)
    finally:
        await health.stop()
        lb.close()
    return 0

