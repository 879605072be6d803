"""The agent's Hubble metrics for Prometheus: one registry per agent, served on :9965.

`HubbleMetrics(specs, lost=...)` wraps the handlers (`FlowMetrics`) in a prometheus_client
registry of its own (not the agent's :9962 one, as in Cilium): its collector turns every
family's series into Prometheus families when scraped, after removing the series of pods
deleted a minute ago, and adds `hubble_lost_events_total{source="perf_event_ring_buffer"}`
read from the datapath's counter of events the ring could not take (`lost()`). A family with
no series yet is left out, as Go's client does.

The agent calls `process(flow)` for every flow, `pod_deleted(namespace, name)` when a pod
goes, and `serve(addr)` for `/metrics` on `hubble.metrics.port`. All of it on the event
loop's thread: scrapes and counting never interleave.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Sequence

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from hexlane.config.hubble_metrics import MetricSpec
from hexlane.hubble.api.flow import flow_pb2
from hexlane.k8s.runtime import serve_metrics

from .handlers import PREFIX, FlowMetrics, Histogram

log = logging.getLogger(__name__)

LOST_EVENTS = PREFIX + "lost_events"
#: the datapath's ring buffer (Cilium: the perf ring between the datapath and the agent)
SOURCE_RING = "perf_event_ring_buffer"


class HubbleMetrics:
    """See the module docstring."""

    def __init__(self, specs: Sequence[MetricSpec], *, lost: Callable[[], int] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.specs = tuple(specs)
        self.flows = FlowMetrics(specs)
        self.lost = lost
        self.clock = clock
        self.registry = CollectorRegistry()
        self.registry.register(_FamiliesCollector(self))
        self._errors_logged = 0

    def process(self, flow: flow_pb2.Flow) -> None:
        self.flows.process(flow)

    def pod_deleted(self, namespace: str, name: str) -> None:
        self.flows.pod_deleted(namespace, name, self.clock())

    def expire(self) -> int:
        return self.flows.expire(self.clock())

    @property
    def names(self) -> list[str]:
        return [spec.name for spec in self.specs]

    async def serve(self, addr: tuple[str, int]) -> tuple[web.AppRunner, tuple[str, int]]:
        """`/metrics` on `addr` ("" = every address); the runner and the address bound."""
        runner, bound = await serve_metrics(self.registry, addr)
        log.info("hubble metrics (%s) on http://%s:%d/metrics", ", ".join(self.names),
                 addr[0] or "0.0.0.0", bound[1])
        return runner, bound

    def collect(self) -> Iterator[Metric]:
        self.expire()
        if self.flows.errors > self._errors_logged:
            log.error("hubble metrics: %d flows could not be counted by a handler",
                      self.flows.errors - self._errors_logged)
            self._errors_logged = self.flows.errors
        if self.lost is not None:
            lost = CounterMetricFamily(LOST_EVENTS, "Number of lost events",
                                       labels=["source"])
            lost.add_metric([SOURCE_RING], float(self.lost()))
            yield lost
        for fam in self.flows.families:
            if not fam.series:
                continue
            if fam.kind == "counter":
                counter = CounterMetricFamily(fam.name, fam.help, labels=fam.label_names)
                for labels, value in fam.series.items():
                    assert isinstance(value, float)
                    counter.add_metric(labels, value)
                yield counter
                continue
            hist = HistogramMetricFamily(fam.name, fam.help, labels=fam.label_names)
            edges = [floatToGoString(b) for b in fam.buckets] + ["+Inf"]
            for labels, h in fam.series.items():
                assert isinstance(h, Histogram)
                total, cumulative = 0, []
                for edge, count in zip(edges, h.buckets, strict=True):
                    total += count
                    cumulative.append((edge, float(total)))
                hist.add_metric(labels, cumulative, h.sum)
            yield hist


class _FamiliesCollector(Collector):
    def __init__(self, metrics: HubbleMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        return self.metrics.collect()

    def describe(self) -> Iterator[Metric]:
        return iter(())
