"""The agent's Prometheus metrics, in one registry per agent (tests run several in one process).

Served on `prometheus.port` (Cilium's agent port, 9962) at `/metrics` when
`prometheus.enabled`, with the process collector (`process_*`: CPU, memory, open files) and
the client layer's `hexlane_k8s_client_*`. Gauges read their value when scraped, from the
parts that own the facts (`watch`), so no number can go stale.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hexlane.k8s.controller import Controller
from hexlane.k8s.runtime import serve_metrics

from .endpoints import EndpointManager

log = logging.getLogger(__name__)


class AgentMetrics:
    """Everything the agent reports (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(registry=r)
        self.endpoints = Gauge("hexlane_endpoint", "Pod endpoints on this node", registry=r)
        self.ip_addresses = Gauge("hexlane_ip_addresses",
                                  "Pod IPs allocated from this node's pod CIDR", registry=r)
        self.ip_capacity = Gauge("hexlane_ip_addresses_capacity",
                                 "Pod IPs this node's pod CIDR can hand out", registry=r)
        self.nodes = Gauge("hexlane_nodes_routed", "Other nodes this node routes pods to",
                           registry=r)
        self.controllers_failing = Gauge("hexlane_controllers_failing",
                                         "Controllers whose last run failed", registry=r)
        self.last_sync = Gauge("hexlane_last_sync_timestamp_seconds",
                               "When the routing sync last succeeded (Unix time)", registry=r)

    def watch(self, endpoints: Callable[[], EndpointManager | None],
              controllers: Sequence[Controller], last_sync: Callable[[], float | None],
              reconcilers: Callable[[], Sequence[Any]]) -> None:
        """Read every gauge from the parts at each scrape: the endpoint manager (None before
        it starts), the controllers, the last routing sync, every reconciler by table."""
        def manager_value(read: Callable[[EndpointManager], float]) -> Callable[[], float]:
            def value() -> float:
                manager = endpoints()
                return read(manager) if manager is not None else 0.0
            return value

        self.endpoints.set_function(manager_value(lambda mgr: len(mgr.endpoints)))
        self.ip_addresses.set_function(manager_value(lambda mgr: len(mgr.allocator.allocations)))
        self.ip_capacity.set_function(manager_value(lambda mgr: mgr.allocator.capacity))
        self.nodes.set_function(manager_value(lambda mgr: len(mgr.nodes)))
        self.controllers_failing.set_function(
            lambda: sum(1 for c in controllers if c.consecutive_failures))
        self.last_sync.set_function(lambda: last_sync() or 0.0)
        self.registry.register(_ReconcilerCollector(reconcilers))

    async def serve(self, addr: tuple[str, int]) -> web.AppRunner:
        """`/metrics` on `addr` ("" = every address)."""
        runner, _ = await serve_metrics(self.registry, addr)
        host, port = addr
        log.info("metrics on http://%s:%d/metrics", host or "0.0.0.0", port)
        return runner


class _ReconcilerCollector(Collector):
    """hexlane_reconciler_*{table}: read from the reconcilers at every scrape."""

    def __init__(self, reconcilers: Callable[[], Sequence[Any]]) -> None:
        self.reconcilers = reconcilers

    def collect(self) -> Iterator[Metric]:
        repairs = CounterMetricFamily(
            "hexlane_reconciler_repairs", "Kernel objects found changed, missing or stale "
            "behind the agent's back by a resync, and repaired", labels=["table"])
        errors = CounterMetricFamily(
            "hexlane_reconciler_errors", "Writes of kernel objects that failed (retried with "
            "backoff)", labels=["table"])
        entries = GaugeMetricFamily("hexlane_reconciler_entries",
                                    "Kernel objects the agent wants in each table",
                                    labels=["table"])
        pending = GaugeMetricFamily("hexlane_reconciler_pending",
                                    "Kernel objects not written yet (changed or failing)",
                                    labels=["table"])
        for rec in self.reconcilers():
            repairs.add_metric([rec.name], rec.repairs)
            errors.add_metric([rec.name], rec.errors)
            entries.add_metric([rec.name], len(rec.desired))
            pending.add_metric([rec.name], rec.pending)
        yield from (repairs, errors, entries, pending)

    def describe(self) -> Iterator[Metric]:
        return iter(())
