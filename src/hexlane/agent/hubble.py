"""This node's Hubble: the datapath's events, read as they come, into flows, kept and served.

    events ring (hl_events) --EventReader--> store (pending) --FlowParser, when read-->
    flows --> Observer API

`HubblePart` is the agent's part: the store (`hubble.eventBufferCapacity`), the observer and
the server (`$STATE_DIR/hubble.sock`, `@hexlane-hubble`, `hubble.listenAddress` with mTLS when
`hubble.tls.enabled`), started once the load balancer's maps are loaded.

`HubbleObserver.start(events, stats)` reads the load balancer's pinned ``hl_events`` ring
every 50 ms: every record waiting is taken at once and handed to the store as pending flows,
built into `flow.Flow`s when someone reads them (`hexlane.hubble.parser`, naming endpoints
from the Pods and Nodes the agent watches, as they were when the batch was read, and
Services from the load balancer's frontends); the Observer API (`hexlane.hubble.server`)
serves the store. Counts:
`received` (records read), the programs' `emitted` and `lost` (ring full), so received + lost
= emitted once the ring is drained (`stats()`, `hexlane status`, /metrics).

Hubble metrics (`hubble.metrics.enabled`, `hexlane.hubble.metrics`) need every flow, not
only those read: then each batch is built once as it is drained, METER_SLICE flows at a time
(the event loop serves others between slices), every flow counted by the handlers, and the
built flows go to the store, which builds nothing twice. The registry is served on
`hubble.metrics.port` (9965), apart from the agent's own :9962, as Cilium does; a deleted
pod's series go a minute later.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiohttp import web

from hexlane.config import Values
from hexlane.datapath import libbpf
from hexlane.datapath.events import EventReader, read_stats
from hexlane.hubble.certs import node_tls
from hexlane.hubble.endpoints import Endpoints, ServiceLookup
from hexlane.hubble.metrics import HubbleMetrics, parse_metric_list
from hexlane.hubble.parser import EventFlows, FlowParser, L7Reader
from hexlane.hubble.server import ABSTRACT_NAME, node_server
from hexlane.hubble.store import BuiltFlows, PendingFlows
from hexlane.k8s.informer import Informer

from .loadbalancer import LoadBalancer

log = logging.getLogger(__name__)

#: how often the ring is drained (the programs wake nobody): the most a flow waits before
#: `hubble observe --follow` can show it. The ring (4 MiB, 74,898 events) holds 0.75 s of
#: 100,000 events a second.
DRAIN_INTERVAL_S = 0.05

#: the informers whose objects name endpoints: every Pod of the cluster, the Nodes
KINDS = ("all-pods", "nodes")
#: with metrics on, flows are built and counted this many at a time before the event loop
#: serves others (about 10 ms of work)
METER_SLICE = 256


class FlowSink(Protocol):
    def add_pending(self, batch: PendingFlows) -> Any: ...


@dataclass(frozen=True)
class HubbleStats:
    received: int
    emitted: int
    lost: int
    parse_errors: int


def wall_offset_ns() -> int:
    """CLOCK_REALTIME - CLOCK_MONOTONIC now: a BPF timestamp (bpf_ktime_get_ns) plus this is
    the wall clock time of the event."""
    return time.time_ns() - time.monotonic_ns()


class HubbleObserver:
    """See the module docstring."""

    def __init__(self, node: str, informers: Mapping[str, Informer], store: FlowSink, *,
                 cluster: str = "default", services: ServiceLookup | None = None,
                 metrics: HubbleMetrics | None = None) -> None:
        self.node = node
        self.store = store
        self.metrics = metrics
        self.endpoints = Endpoints(node, cluster, services)
        # Flows name their node as Cilium's do: <cluster>/<node>
        self.parser = FlowParser(f"{cluster}/{node}", self.endpoints, wall_offset_ns(),
                                 cluster=cluster, interfaces=_interfaces(), local_node=node,
                                 policies=self.endpoints.policies)
        #: L7 records are read as they are taken (a response is paired with its request)
        self.l7 = L7Reader()
        self.informers = {name: informers[name] for name in KINDS if name in informers}
        self._reader: EventReader | None = None
        self._stats: libbpf.Map | None = None
        self._timer: asyncio.Task[None] | None = None
        self._watch()

    def _watch(self) -> None:
        pods = self.informers.get("all-pods")
        if pods is not None:
            pods.add_handler(self.endpoints.set_pod, _updated(self.endpoints.set_pod),
                             self._pod_deleted)
        nodes = self.informers.get("nodes")
        if nodes is not None:
            nodes.add_handler(self.endpoints.set_node, _updated(self.endpoints.set_node),
                              self.endpoints.delete_node)

    def start(self, events: libbpf.Map, stats: libbpf.Map, host_addresses: list[str]) -> None:
        """Read the datapath's events (the load balancer's `events` and `events_stats` maps)
        from now on, every DRAIN_INTERVAL_S (call from the event loop)."""
        self.endpoints.host_addresses(host_addresses)
        self._stats = stats
        self._reader = EventReader(events)
        if self.metrics is None:
            self.drain()  # what the ring holds from before (a restart)
        # (with metrics the first tick takes it, slice by slice: a full ring is 74,898 flows
        # to build)
        self._timer = asyncio.get_running_loop().create_task(self._drain_often(),
                                                             name="hubble-drain")

    def _pod_deleted(self, pod: Any) -> None:
        self.endpoints.delete_pod(pod)
        if self.metrics is not None:
            meta = pod.get("metadata") or {}
            self.metrics.pod_deleted(str(meta.get("namespace") or ""),
                                     str(meta.get("name") or ""))

    async def _drain_often(self) -> None:
        while True:
            await asyncio.sleep(DRAIN_INTERVAL_S)
            pending = self._take()
            if pending is None:
                continue
            if self.metrics is None:
                self.store.add_pending(pending)
                continue
            for start in range(0, len(pending), METER_SLICE):
                self.store.add_pending(self._count(pending, start, start + METER_SLICE))
                await asyncio.sleep(0)

    def drain(self) -> int:
        """Every event waiting, to the store: as pending flows (built when read), or with
        metrics on built and counted now; how many."""
        pending = self._take()
        if pending is None:
            return 0
        self.store.add_pending(pending if self.metrics is None
                               else self._count(pending, 0, len(pending)))
        return len(pending)

    def _take(self) -> EventFlows | None:
        """The events waiting in the ring, as flows naming endpoints as they are now."""
        if self._reader is None:
            return None
        batch = self._reader.consume_batch()
        if not len(batch):
            return None
        l7 = self.l7.read_batch(batch) if batch.l7 else None
        return EventFlows(batch, self.parser, self.endpoints.snapshot(), l7)

    def _count(self, pending: EventFlows, start: int, end: int) -> BuiltFlows:
        """Flows start..end of the batch built, and counted by every metric handler."""
        assert self.metrics is not None
        flows = [pending.flow(i) for i in range(start, min(end, len(pending)))]
        process = self.metrics.process
        for flow in flows:
            process(flow)
        return BuiltFlows(flows)

    def stats(self) -> HubbleStats:
        received = self._reader.received if self._reader else 0
        if self._stats is None:
            return HubbleStats(received, 0, 0, self.parser.errors)
        counts = read_stats(self._stats)
        return HubbleStats(received, counts.emitted, counts.lost,
                           self.parser.errors + self.l7.errors)

    def refresh_interfaces(self) -> None:
        self.parser.interfaces = _interfaces()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _updated(handler: Callable[[Any], None]) -> Callable[[Any, Any], None]:
    return lambda _old, new: handler(new)


def _interfaces() -> dict[int, str]:
    return {index: name for index, name in socket.if_nameindex()}


class HubblePart:
    """The agent's Hubble (see the module docstring)."""

    def __init__(self, node: str, values: Values, informers: Mapping[str, Informer],
                 lb: LoadBalancer, state_dir: Path, *, ca_dir: Path | None = None,
                 abstract_name: str | None = ABSTRACT_NAME,
                 metrics_addr: tuple[str, int] | None = None) -> None:
        self.node = node
        self.values = values
        self.lb = lb
        self.state_dir = state_dir
        self.ca_dir = ca_dir
        self.abstract_name = abstract_name
        self.cluster = values.cluster.name
        # Nothing listens before start()
        self.server = node_server(values, state_dir=state_dir, node=node,
                                  abstract_name=abstract_name)
        self.store = self.server.store
        # Hubble metrics when hubble.metrics.enabled lists any (the values were checked)
        self.metrics: HubbleMetrics | None = None
        self.metrics_addr = metrics_addr or ("", values.hubble.metrics_port)
        if values.hubble.metrics:
            specs, warnings = parse_metric_list(values.hubble.metrics)
            for warning in warnings:
                log.warning("hubble: %s", warning)
            self.metrics = HubbleMetrics(specs, lost=lambda: self.observer.stats().lost)
        self.observer = HubbleObserver(node, informers, self.store, cluster=self.cluster,
                                       services=lb.service_at, metrics=self.metrics)
        self.serving = False
        self.error = ""
        self._metrics_runner: web.AppRunner | None = None
        self.metrics_bound: tuple[str, int] | None = None
        self.metrics_error = ""

    async def start(self, node_ips: list[str], host_addresses: list[str]) -> None:
        """Read the load balancer's events and serve them (once its maps are loaded)."""
        datapath = self.lb.datapath
        if datapath is None:
            raise RuntimeError("hubble: the load balancer is not loaded")
        self.observer.start(datapath.maps.events, datapath.maps.events_stats,
                            [*node_ips, *host_addresses])
        if self.metrics is not None:
            try:
                self._metrics_runner, self.metrics_bound = await self.metrics.serve(
                    self.metrics_addr)
            except OSError as err:
                # Counted all the same; the status says why nobody can scrape them.
                self.metrics_error = f"Hubble metrics are not served: {err}"
                log.error("hubble: %s", self.metrics_error)
        hubble = self.values.hubble
        try:
            if hubble.listen_address:
                self.server.tls = await asyncio.to_thread(
                    node_tls, hubble.tls, self.state_dir / "hubble-tls", cluster=self.cluster,
                    node=self.node, ips=node_ips, ca_dir=self.ca_dir)
            await self.server.start()
        except (OSError, RuntimeError, ValueError) as err:
            # The node's networking does not depend on it: flows are still kept, and the
            # status says why nobody can read them.
            self.error = f"the Hubble API is not served: {err}"
            log.error("hubble: %s", self.error)
            return
        self.serving = True

    def links_changed(self) -> None:
        self.observer.refresh_interfaces()

    def status(self) -> dict[str, Any]:
        stats = self.observer.stats()
        store = self.store
        return {
            "enabled": True,
            "serving": self.serving,
            "flows": store.num_flows, "maxFlows": store.max_flows,
            "seenFlows": store.seen_flows, "flowsRate": round(store.flows_rate(), 2),
            "events": {"received": stats.received, "emitted": stats.emitted,
                       "lost": stats.lost, "unreadable": stats.parse_errors},
            "listenAddress": self.values.hubble.listen_address,
            "tls": self.server.tls is not None,
            "l7": {"enabled": self.values.hubble.l7.enabled,
                   "dnsPorts": list(self.values.hubble.l7.dns_ports),
                   "httpPorts": list(self.values.hubble.l7.http_ports)},
            "error": self.error,
            "metrics": self._metrics_status(),
        }

    def _metrics_status(self) -> dict[str, Any]:
        if self.metrics is None:
            return {"enabled": False}
        bound = self.metrics_bound
        return {"enabled": True, "serving": bound is not None,
                "address": f"{bound[0] if bound[0] not in ('', '0.0.0.0', '::') else ''}"
                           f":{bound[1]}" if bound else "",
                "metrics": list(self.values.hubble.metrics), "error": self.metrics_error}

    async def close(self) -> None:
        await self.server.stop()
        self.serving = False
        if self._metrics_runner is not None:
            await self._metrics_runner.cleanup()
            self._metrics_runner = None
        self.observer.close()
