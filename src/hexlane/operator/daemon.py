"""The operator daemon: a short list of parts, wired once (Cilium's operator cells).

    client     one rate-limited API client (`k8sClientRateLimit.operator.qps/burst`) for the
               controllers, and one for the Lease alone
    metrics    Prometheus registry + `/metrics` and `/healthz` on the metrics address
    elector    leader election on Lease kube-system/cilium-operator-resource-lock
    controllers, run only while leading (each a `hexlane.k8s.controller.Controller` with
    its own informers and write queue; a failed run is retried after a backoff):
      lbipam   CiliumLoadBalancerIPPool + Service -> Service and pool status
      podcidr  Node -> CiliumNode spec.ipam.podCIDRs (only with ipam.mode: cluster-pool)
      identity-gc  CiliumIdentities no pod's labels match for a grace period are deleted
               (--identity-gc-interval, --identity-heartbeat-timeout)       identitygc.py
      l2-key   the Secret kube-system/hexlane-l2-heartbeat, created once (hexlane's L2
               election: l2announcements.enabled with election: hexlane)

Only the leader runs controllers, so two replicas never both write. Losing the lease stops
them (their informers and pending writes go with them); winning it again starts them fresh
from the API, which is safe because each controller converges from the cluster's state.
SIGTERM/SIGINT stop the controllers and release the lease, so a standby takes over at its
next retry instead of waiting out the lease.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import socket
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiohttp import web

from hexlane.config import Values
from hexlane.ipam.inputs import options_from_values
from hexlane.ipam.podcidr import parse_cluster_pool
from hexlane.k8s.client import ApiError, KubeClient, make_client
from hexlane.k8s.election import LeaseTiming
from hexlane.k8s.elector import LeaderElector
from hexlane.k8s.runtime import cancel, serve_metrics, stop_on_signals
from hexlane.l2 import key as l2key

from . import identitygc
from .lbipam import LBIPAMController
from .metrics import OperatorMetrics
from .podcidr import PodCIDRController

log = logging.getLogger(__name__)

LEASE_NAME = "cilium-operator-resource-lock"
LEASE_NAMESPACE = "kube-system"
# Cilium's operator defaults (--leader-election-lease-duration/renew-deadline/retry-period).
DEFAULT_TIMING = LeaseTiming(15.0, 10.0, 2.0)


def default_identity() -> str:
    """Cilium's operator ID: the host name and a random suffix (two replicas on one host
    must not share an identity)."""
    return f"{socket.gethostname()}-{secrets.token_hex(5)}"


@dataclass
class OperatorConfig:
    values: Values
    kubeconfig: str | None = None
    metrics_addr: tuple[str, int] | None = ("0.0.0.0", 9963)
    identity: str = field(default_factory=default_identity)
    timing: LeaseTiming = DEFAULT_TIMING
    lease_namespace: str = LEASE_NAMESPACE
    lbipam_debounce: float = 0.005
    identity_gc_interval: timedelta = identitygc.DEFAULT_INTERVAL
    identity_gc_grace: timedelta = identitygc.DEFAULT_GRACE


class Operator:
    """The wired daemon: `await run(stop)` until `stop` is set."""

    def __init__(self, config: OperatorConfig, client: KubeClient | None = None) -> None:
        self.config = config
        values = config.values
        self.metrics = OperatorMetrics()
        self.client = client or make_client(values, config.kubeconfig, component="operator",
                                            registry=self.metrics.registry)
        # Checked before anything starts: a bad pool is a startup error naming the key.
        self.pod_pool = (parse_cluster_pool([str(c) for c in
                                             values.ipam.cluster_pool_ipv4_pod_cidrs],
                                            values.ipam.cluster_pool_ipv4_mask_size)
                         if values.ipam.mode == "cluster-pool" else None)
        # The Lease gets a connection pool of its own (as kube-controller-manager's leader
        # election gets its own client): renewals must not queue behind a burst of status
        # writes, or a busy leader would lose its lease to its own traffic.
        self.lease_client = make_client(values, config.kubeconfig, component="operator",
                                        registry=self.metrics.registry) \
            if client is None else client
        self.elector = LeaderElector(
            self.lease_client, LEASE_NAME, config.lease_namespace, config.identity, config.timing,
            on_started_leading=self._started_leading,
            on_stopped_leading=self._stopped_leading)
        self.lbipam: LBIPAMController | None = None
        self.podcidr: PodCIDRController | None = None
        self.identity_gc: identitygc.IdentityGC | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.bound_metrics_addr: tuple[str, int] | None = None

    # -- leadership --------------------------------------------------------------------------

    def _started_leading(self) -> None:
        self.metrics.is_leader.set(1)
        values = self.config.values
        self.lbipam = LBIPAMController(self.client, self.metrics,
                                       options=options_from_values(values),
                                       debounce=self.config.lbipam_debounce)
        parts: list[tuple[str, Callable[[], Coroutine[Any, Any, None]]]] = [
            ("lbipam", self.lbipam.run)]
        self.identity_gc = identitygc.IdentityGC(
            self.client, self.metrics, interval=self.config.identity_gc_interval,
            grace=self.config.identity_gc_grace, cluster=values.cluster.name)
        parts.append(("identity-gc", self.identity_gc.run))
        if self.pod_pool is not None:
            self.podcidr = PodCIDRController(self.client, self.metrics, self.pod_pool,
                                             values.ipam.cluster_pool_ipv4_mask_size)
            parts.append(("podcidr", self.podcidr.run))
        if values.l2announcements.enabled and values.l2announcements.election == "hexlane":
            parts.append(("l2-key", self._ensure_l2_key))
        self._tasks = [asyncio.create_task(run(), name=name) for name, run in parts]
        log.info("%s leads: started %s", self.config.identity,
                 ", ".join(name for name, _ in parts))

    async def _ensure_l2_key(self) -> None:
        """The L2 heartbeat key's Secret, made once (kept if it exists: agents hold it)."""
        path = f"/api/v1/namespaces/{l2key.SECRET_NAMESPACE}/secrets"
        delay = 0.25
        while True:
            try:
                await self.client.request("POST", path, body=l2key.new_secret())
                log.info("created the L2 heartbeat key %s/%s", l2key.SECRET_NAMESPACE,
                         l2key.SECRET_NAME)
                return
            except ApiError as err:
                if err.code == 409:
                    return
                log.warning("creating the L2 heartbeat key: %s (retrying)", err)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _stopped_leading(self) -> None:
        self.metrics.is_leader.set(0)
        log.info("%s no longer leads: controllers stopped", self.config.identity)
        for task in self._tasks:
            task.cancel()
        self._tasks = []

    # -- running -----------------------------------------------------------------------------

    async def serve_metrics(self) -> web.AppRunner | None:
        if self.config.metrics_addr is None:
            return None
        runner, self.bound_metrics_addr = await serve_metrics(
            self.metrics.registry, self.config.metrics_addr, {"/healthz": self._healthz})
        log.info("metrics and /healthz on http://%s:%d", *self.bound_metrics_addr)
        return runner

    async def _healthz(self, _request: web.Request) -> web.Response:
        # The operator is healthy when its loop answers; a standby is as healthy as a leader.
        return web.Response(text="ok")

    async def run(self, stop: asyncio.Event) -> None:
        runner = await self.serve_metrics()
        self.elector.start()
        try:
            await stop.wait()
        finally:
            log.info("stopping")
            tasks, self._tasks = self._tasks, []
            await cancel(*tasks)
            await self.elector.stop()  # releases the lease
            if runner is not None:
                await runner.cleanup()
            await self.client.aclose()
            if self.lease_client is not self.client:
                await self.lease_client.aclose()


async def run_operator(config: OperatorConfig) -> int:
    """Run until SIGTERM or SIGINT; 0 after a clean stop."""
    stop = stop_on_signals()
    operator = Operator(config)
    log.info("hexlane operator %s: lease %s/%s, ipam.mode %s, API %s (client rate limit "
             "%g qps, burst %d)", config.identity, config.lease_namespace, LEASE_NAME,
             config.values.ipam.mode, operator.client.server, operator.client.limiter.qps,
             operator.client.limiter.burst)
    await operator.run(stop)
    return 0
