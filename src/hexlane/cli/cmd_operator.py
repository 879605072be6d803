"""`hexlane operator`: the per-cluster daemon (LB-IPAM, cluster-pool pod CIDRs).

    hexlane operator [--kubeconfig F] [--values F]... [--set k=v]...
                     [--metrics-addr 0.0.0.0:9963] [--identity NAME]
                     [--leader-election-lease-duration 15s] [...renew-deadline 10s]
                     [...retry-period 2s]
                     [--identity-gc-interval 15m] [--identity-heartbeat-timeout 15m]

Values are Cilium's Helm values (`k8sClientRateLimit.operator.qps/burst`, `ipam.*`,
`operator.prometheus.*`, ...); an error in them is printed with file and key and exits 2
before anything starts. The leader-election flags are Cilium's operator flags of the same
names (Go durations), as are the identity GC's: how often unused CiliumIdentities are looked
for, and how long one must have been unused to be deleted. See docs/operator.md and
docs/policy.md.
"""

from __future__ import annotations

import argparse
import asyncio
from datetime import timedelta
from typing import Any

from hexlane.k8s.election import LeaseTiming
from hexlane.model.errors import InputError, Problem

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "operator", help="run the cluster-wide operator (LB-IPAM, pod CIDRs)",
        description="Run hexlane's operator: LB-IPAM (CiliumLoadBalancerIPPool -> Service "
                    "status) and, with ipam.mode cluster-pool, one pod CIDR per node in its "
                    "CiliumNode. Only the holder of Lease "
                    "kube-system/cilium-operator-resource-lock runs controllers.")
    flags.daemon(parser, "serve /metrics and /healthz here (default 0.0.0.0 and "
                         "operator.prometheus.port, 9963; 'off' disables)")
    parser.add_argument("--identity", metavar="NAME",
                        help="leader-election identity (default: host name and a random "
                             "suffix)")
    parser.add_argument("--leader-election-lease-duration", default="15s", metavar="D",
                        help="how long a lease is respected after its last renewal (15s)")
    parser.add_argument("--leader-election-renew-deadline", default="10s", metavar="D",
                        help="how long the leader retries renewing before giving up (10s)")
    parser.add_argument("--leader-election-retry-period", default="2s", metavar="D",
                        help="time between renewals and acquisition attempts (2s)")
    parser.add_argument("--identity-gc-interval", default="15m", metavar="D",
                        help="how often CiliumIdentities no pod uses are looked for (15m)")
    parser.add_argument("--identity-heartbeat-timeout", default="15m", metavar="D",
                        help="how long an identity must be unused before it is deleted "
                             "(15m)")
    parser.set_defaults(func=run)


def build_timing(lease_duration: str, renew_deadline: str, retry_period: str) -> LeaseTiming:
    """The lease timing from the three flags' texts, checked as client-go checks them."""
    duration = flags.duration(lease_duration, "--leader-election-lease-duration")
    renew = flags.duration(renew_deadline, "--leader-election-renew-deadline")
    retry = flags.duration(retry_period, "--leader-election-retry-period")
    # client-go refuses these too (NewLeaderElector's checks).
    if renew >= duration:
        raise InputError(Problem("the renew deadline must be shorter than the lease duration",
                                 "--leader-election-renew-deadline"))
    if retry >= renew:
        raise InputError(Problem("the retry period must be shorter than the renew deadline",
                                 "--leader-election-retry-period"))
    return LeaseTiming(duration, renew, retry)


def run(args: argparse.Namespace) -> int:
    # Imported here: the daemon pulls in aiohttp and the client layer, which the other
    # commands do not need.
    from hexlane.operator.daemon import OperatorConfig, default_identity, run_operator

    values = flags.start_daemon(args)
    timing = build_timing(args.leader_election_lease_duration,
                          args.leader_election_renew_deadline,
                          args.leader_election_retry_period)
    config = OperatorConfig(values=values, kubeconfig=args.kubeconfig,
                            metrics_addr=flags.metrics_addr(args.metrics_addr,
                                                            values.operator.prometheus_enabled,
                                                            values.operator.prometheus_port),
                            identity=args.identity or default_identity(), timing=timing,
                            identity_gc_interval=timedelta(seconds=flags.duration(
                                args.identity_gc_interval, "--identity-gc-interval")),
                            identity_gc_grace=timedelta(seconds=flags.duration(
                                args.identity_heartbeat_timeout,
                                "--identity-heartbeat-timeout")))
    return asyncio.run(run_operator(config))
