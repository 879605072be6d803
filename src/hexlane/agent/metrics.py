"""The agent's Prometheus metrics, in one registry per agent (tests run several in one process).

Served on `prometheus.port` (Cilium's agent port, 9962) at `/metrics` when
`prometheus.enabled`, with the process collector (`process_*`: CPU, memory, open files) and
the client layer's `hexlane_k8s_client_*`. Gauges read their value when scraped, from the
parts that own the facts, so no number can go stale.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


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

    def watch_reconcilers(self, reconcilers: Callable[[], Sequence[Any]]) -> None:
        """Report every reconciler's counters (`hexlane.datapath.reconcile`) by table."""
        self.registry.register(_ReconcilerCollector(reconcilers))

    @staticmethod
    def bind(gauge: Gauge, read: Callable[[], float]) -> None:
        """Have `gauge` report `read()` at every scrape."""
        gauge.set_function(read)


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
