"""`hexlane agent`: the per-node daemon (pod networking, and the datapath parts as they land).

    hexlane agent --node NAME [--kubeconfig F] [--values F]... [--set k=v]...
                  [--state-dir DIR] [--bpf-root DIR] [--cni-conf-dir DIR] [--cni-bin-dir DIR]
                  [--cni-plugin PATH]
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
import os
import sys
from pathlib import Path
from typing import Any

from hexlane.model.errors import InputError, Problem

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "agent", help="run the per-node agent (pod networking, eBPF datapath)",
        description="Run hexlane's node agent: pod IPs and interfaces for the CNI plugin, "
                    "routes to other nodes (native or VXLAN), eBPF masquerading, the local "
                    "API (`hexlane status`) and metrics.")
    parser.add_argument("--node", default=os.environ.get("K8S_NODE_NAME"), metavar="NAME",
                        help="this node's name (default $K8S_NODE_NAME)")
    flags.daemon(parser, "serve /metrics here (default 0.0.0.0 and prometheus.port, 9962, "
                         "when prometheus.enabled; 'off' disables)")
    flags.state_dir(parser, "endpoints, IP allocations and the API socket "
                            "(env HEXLANE_STATE_DIR, default %(default)s)")
    flags.bpf_root(parser, "where BPF maps and programs are pinned "
                           "(env HEXLANE_BPF_ROOT, default %(default)s)")
    parser.add_argument("--cni-conf-dir", type=Path, metavar="DIR",
                        help="where the CNI config goes (default cni.confPath, /etc/cni/net.d)")
    parser.add_argument("--cni-bin-dir", type=Path, metavar="DIR",
                        help="where the CNI plugin goes (default cni.binPath, /opt/cni/bin)")
    parser.add_argument("--cni-plugin", type=Path, metavar="PATH",
                        help="the plugin the hexlane-cni wrapper execs, as the node sees it "
                             "(default this installation's hexlane-cni; on a real node "
                             "CNI-BIN-DIR/hexlane-cni.pyz from `hexlane cni install-plugin`)")
    parser.add_argument("--service-cidr", metavar="CIDR",
                        help="the cluster's ClusterIP range: routed to hexlane_host so the "
                             "node's own connections to ClusterIPs are load-balanced")
    parser.add_argument("--host-namespace", action="store_true",
                        help="allow running in a network namespace that is not a named one "
                             "(a real node's own namespace; the lab and tests never need it)")
    parser.add_argument("--hubble-ca-dir", type=Path, metavar="DIR",
                        help="the Hubble CA (ca.crt, ca.key) every node's Hubble certificate "
                             "is signed by when hubble.tls.enabled and the values give no "
                             "tls.ca.* (default: one of this node's own in the state dir)")
    parser.add_argument("--sync-interval", default="10s", metavar="D",
                        help="how often controllers converge without an event (10s)")
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

    if not args.node:
        raise InputError(Problem("the node's name is required (or set $K8S_NODE_NAME)",
                                 "--node"))
    values = flags.start_daemon(args)
    interval = flags.duration(args.sync_interval, "--sync-interval")
    conf_dir = args.cni_conf_dir or Path(str(values.get("cni.confPath") or DEFAULT_CONF_DIR))
    bin_dir = args.cni_bin_dir or Path(str(values.get("cni.binPath") or DEFAULT_BIN_DIR))
    config = AgentConfig(node=args.node, values=values, state_dir=args.state_dir,
                         bpf_root=args.bpf_root, cni_conf_dir=conf_dir, cni_bin_dir=bin_dir,
                         kubeconfig=args.kubeconfig,
                         metrics_addr=flags.metrics_addr(args.metrics_addr,
                                                         values.prometheus.enabled,
                                                         values.prometheus.port),
                         host_namespace=args.host_namespace, sync_interval=interval,
                         service_cidr=_service_cidr(args.service_cidr),
                         hubble_ca_dir=args.hubble_ca_dir, cni_plugin=args.cni_plugin)
    try:
        return asyncio.run(run_agent(config))
    except (OSError, RuntimeError) as err:
        print(f"hexlane agent: {err}", file=sys.stderr)
        return 1
