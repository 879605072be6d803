"""This node's Hubble: the datapath's events, read as they come, into flows, kept and served.

    events ring (hl_events) --EventReader--> decode --FlowParser--> store --> Observer API

`HubbleObserver.start(events, stats)` opens libbpf's ring buffer over the load balancer's pinned
``hl_events`` map and registers its epoll fd with the event loop: whenever records wait they
are all taken at once, turned into `flow.Flow`s (`hexlane.hubble.parser`, naming endpoints
from the Pods and Nodes the agent watches and Services from the load balancer's frontends)
and added to the store the Observer API serves (`hexlane.hubble.server`). Counts:
`received` (records read), the programs' `emitted` and `lost` (ring full), so received + lost
= emitted once the ring is drained (`stats()`, `hexlane status`, /metrics).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from hexlane.datapath import libbpf
from hexlane.datapath.events import EventReader, decode, read_stats
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.endpoints import Endpoints, ServiceLookup
from hexlane.hubble.parser import FlowParser
from hexlane.k8s.informer import Informer

log = logging.getLogger(__name__)

#: the informers whose objects name endpoints: every Pod of the cluster, the Nodes
KINDS = ("hubble-pods", "nodes")


class FlowSink(Protocol):
    def add(self, flow: flow_pb2.Flow) -> Any: ...


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
                 cluster: str = "default", services: ServiceLookup | None = None) -> None:
        self.node = node
        self.store = store
        self.endpoints = Endpoints(node, cluster, services)
        self.parser = FlowParser(node, self.endpoints, wall_offset_ns(), cluster=cluster,
                                 interfaces=_interfaces())
        self.informers = {name: informers[name] for name in KINDS if name in informers}
        self._reader: EventReader | None = None
        self._stats: libbpf.Map | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.parse_errors = 0
        self._watch()

    def _watch(self) -> None:
        pods = self.informers.get("hubble-pods")
        if pods is not None:
            pods.add_handler(self.endpoints.set_pod, _updated(self.endpoints.set_pod),
                             self.endpoints.delete_pod)
        nodes = self.informers.get("nodes")
        if nodes is not None:
            nodes.add_handler(self.endpoints.set_node, _updated(self.endpoints.set_node),
                              self.endpoints.delete_node)

    def start(self, events: libbpf.Map, stats: libbpf.Map, host_addresses: list[str]) -> None:
        """Read the datapath's events (the load balancer's `events` and `events_stats` maps)
        from now on (call from the event loop)."""
        self.endpoints.host_addresses(host_addresses)
        self._stats = stats
        self._reader = EventReader(events)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._reader.fileno(), self.drain)
        self.drain()  # what the ring holds from before (a restart)

    def drain(self) -> int:
        """Every event waiting, into flows; how many."""
        if self._reader is None:
            return 0
        records = self._reader.consume()
        parse, add = self.parser.flow, self.store.add
        for raw in records:
            try:
                flow = parse(decode(raw))
            except Exception as exc:  # one bad record must not stop the others
                self.parse_errors += 1
                if self.parse_errors <= 3:
                    log.warning("hubble: an event could not be read: %s", exc)
                continue
            add(flow)
        return len(records)

    def stats(self) -> HubbleStats:
        received = self._reader.received if self._reader else 0
        if self._stats is None:
            return HubbleStats(received, 0, 0, self.parse_errors)
        counts = read_stats(self._stats)
        return HubbleStats(received, counts.emitted, counts.lost, self.parse_errors)

    def refresh_interfaces(self) -> None:
        self.parser.interfaces = _interfaces()

    def close(self) -> None:
        if self._reader is not None:
            if self._loop is not None:
                self._loop.remove_reader(self._reader.fileno())
            self._reader.close()
            self._reader = None


def _updated(handler: Callable[[Any], None]) -> Callable[[Any, Any], None]:
    return lambda _old, new: handler(new)


def _interfaces() -> dict[int, str]:
    return {index: name for index, name in socket.if_nameindex()}
