"""`hexlane agent`: the per-node daemon (pod networking, and the datapath parts as they land).

    hexlane agent --node NAME [--kubeconfig F] [--values F]... [--set k=v]...
                  [--state-dir DIR] [--bpf-root DIR] [--cni-conf-dir DIR] [--cni-bin-dir DIR]
                  [--metrics-addr ADDR:PORT|off] [--service-cidr CIDR] [--host-namespace]
                  [--sync-interval 10s]

Values are Cilium's Helm values (`ipam.mode`, `routingMode`, `autoDirectNodeRoutes`,
`ipv4NativeRoutingCIDR`, `enableIPv4Masquerade`, `k8sServiceHost/Port`,
`k8sClientRateLimit.*`, `prometheus.*`, `cni.confPath`, `cni.binPath`); an error in them is
printed with file and key and exits 2 before anything starts. See docs/agent.md.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hexlane.config import load_values, parse_duration
from hexlane.model.errors import InputError, Problem

DEFAULT_STATE_DIR = "/var/run/hexlane"
DEFAULT_BPF_ROOT = "/sys/fs/bpf/hexlane"


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "agent", help="run the per-node agent (pod networking, eBPF datapath)",
        description="Run hexlane's node agent: pod IPs and interfaces for the CNI plugin, "
                    "routes to other nodes (native or VXLAN), eBPF masquerading, the local "
                    "API (`hexlane status`) and metrics.")
    parser.add_argument("--node", default=os.environ.get("K8S_NODE_NAME"), metavar="NAME",
                        help="this node's name (default $K8S_NODE_NAME)")
    parser.add_argument("--kubeconfig", metavar="F",
                        help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    parser.add_argument("--values", dest="values", action="append", default=[], metavar="F",
                        help="Helm values file (repeatable, later wins)")
    parser.add_argument("--set", dest="set_flags", action="append", default=[],
                        metavar="K=V", help="Helm-style value (repeatable)")
    parser.add_argument("--state-dir", type=Path,
                        default=Path(os.environ.get("HEXLANE_STATE_DIR", DEFAULT_STATE_DIR)),
                        help="endpoints, IP allocations and the API socket "
                             "(env HEXLANE_STATE_DIR, default %(default)s)")
    parser.add_argument("--bpf-root", type=Path,
                        default=Path(os.environ.get("HEXLANE_BPF_ROOT", DEFAULT_BPF_ROOT)),
                        help="where BPF maps and programs are pinned "
                             "(env HEXLANE_BPF_ROOT, default %(default)s)")
    parser.add_argument("--cni-conf-dir", type=Path, metavar="DIR",
                        help="where the CNI config goes (default cni.confPath, /etc/cni/net.d)")
    parser.add_argument("--cni-bin-dir", type=Path, metavar="DIR",
                        help="where the CNI plugin goes (default cni.binPath, /opt/cni/bin)")
    parser.add_argument("--metrics-addr", metavar="ADDR:PORT",
                        help="serve /metrics here (default 0.0.0.0 and prometheus.port, 9962, "
                             "when prometheus.enabled; 'off' disables)")
    parser.add_argument("--service-cidr", metavar="CIDR",
                        help="the cluster's ClusterIP range: routed to hexlane_host so the "
                             "node's own connections to ClusterIPs are load-balanced")
    parser.add_argument("--host-namespace", action="store_true",
                        help="allow running in a network namespace that is not a named one "
                             "(a real node's own namespace; the lab and tests never need it)")
    parser.add_argument("--sync-interval", default="10s", metavar="D",
                        help="how often controllers converge without an event (10s)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.set_defaults(func=run)


def _service_cidr(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        return str(ipaddress.IPv4Network(text, strict=True))
    except ValueError as e:
        raise InputError(Problem(f"not an IPv4 CIDR: {text!r} ({e})", "--service-cidr")) \
            from None


def run(args: argparse.Namespace) -> int:
    # Imported here: the daemon pulls in aiohttp, pyroute2 and the client layer.
    from hexlane.agent.cniconf import DEFAULT_BIN_DIR, DEFAULT_CONF_DIR
    from hexlane.agent.daemon import AgentConfig, run_agent
    from hexlane.cli.cmd_operator import parse_addr

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    if not args.verbose:
        logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per request otherwise
    if not args.node:
        raise InputError(Problem("the node's name is required (or set $K8S_NODE_NAME)",
                                 "--node"))
    values, problems = load_values(args.values, args.set_flags)
    errors = [p for p in problems if p.severity == "error"]
    for p in problems:
        if p.severity != "error":
            print(str(p), file=sys.stderr)
    if errors:
        raise InputError(errors)
    try:
        interval = parse_duration(args.sync_interval)
    except ValueError as e:
        raise InputError(Problem(f"not a duration: {args.sync_interval!r} ({e})",
                                 "--sync-interval")) from None
    if interval <= 0:
        raise InputError(Problem(f"must be positive, got {args.sync_interval!r}",
                                 "--sync-interval"))
    if args.metrics_addr == "off":
        metrics_addr = None
    elif args.metrics_addr:
        metrics_addr = parse_addr(args.metrics_addr)
    elif values.prometheus.enabled:
        metrics_addr = ("0.0.0.0", values.prometheus.port)
    else:
        metrics_addr = None
    conf_dir = args.cni_conf_dir or Path(str(values.get("cni.confPath") or DEFAULT_CONF_DIR))
    bin_dir = args.cni_bin_dir or Path(str(values.get("cni.binPath") or DEFAULT_BIN_DIR))
    config = AgentConfig(node=args.node, values=values, state_dir=args.state_dir,
                         bpf_root=args.bpf_root, cni_conf_dir=conf_dir, cni_bin_dir=bin_dir,
                         kubeconfig=args.kubeconfig, metrics_addr=metrics_addr,
                         host_namespace=args.host_namespace, sync_interval=interval,
                         service_cidr=_service_cidr(args.service_cidr))
    try:
        return asyncio.run(run_agent(config))
    except (OSError, RuntimeError) as err:
        print(f"hexlane agent: {err}", file=sys.stderr)
        return 1
