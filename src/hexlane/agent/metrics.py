"""The agent's Prometheus metrics, in one registry per agent (tests run several in one process).

Served on `prometheus.port` (Cilium's agent port, 9962) at `/metrics` when
`prometheus.enabled`. Names are Cilium's where the number means what Cilium's metric of that
name means (so Cilium's dashboards and alerts read them), `hexlane_*` for the rest;
docs/metrics.md lists every one with its labels. Every value is read when scraped, from the
part that owns the fact (`watch`), so none can go stale:

- the datapath's forwards and drops (`cilium_forward_*`, `cilium_drop_*`) from the programs'
  per-CPU counters (`hexlane.datapath.metrics`); drop reasons with the texts Cilium's agent
  gives them (the Hubble parser's mapping of ours to Cilium's codes);
- map pressure (`cilium_bpf_map_pressure`): the maps the agent writes from their reconcilers'
  desired tables, the maps the kernel writes (conntrack, affinity, Hubble's trace, the
  masquerade's NAT) from `KernelMapCounts`, which the `bpf-map-pressure` controller refreshes
  in a thread (a full conntrack map is a quarter million entries: not a scrape's work);
- the reconcilers (`hexlane_reconciler_*{table}`: repairs, errors, entries, pending);
- the controllers (`cilium_controllers_*`), the endpoints and pod IPAM (`cilium_endpoint`,
  `cilium_ip_addresses`, `cilium_ipam_*`), the L2 announcer (`hexlane_l2_*`);
- the process (`cilium_process_*`: CPU, memory, open files) and the client layer's
  `hexlane_k8s_client_*` (rate-limiter waits, API calls by code).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Gauge, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from hexlane.datapath import libbpf
from hexlane.datapath.lb.maps import DropReason
from hexlane.datapath.metrics import read_counters
from hexlane.hubble.format import drop_reason_text
from hexlane.hubble.parser import DROP_REASONS
from hexlane.k8s.controller import Controller
from hexlane.k8s.runtime import serve_metrics

from .endpoints import EndpointManager
from .l2 import L2Announcer

log = logging.getLogger(__name__)

#: how often the maps the kernel writes are counted (the `bpf-map-pressure` controller)
MAP_COUNT_S = 10.0
#: map types whose fill means something (an array is always full)
_FILLED_TYPES = (libbpf.BPF_MAP_TYPE_HASH, libbpf.BPF_MAP_TYPE_LRU_HASH,
                 libbpf.BPF_MAP_TYPE_HASH_OF_MAPS, libbpf.BPF_MAP_TYPE_LPM_TRIE)
FAMILY = "ipv4"


def drop_reason_label(reason: DropReason) -> str:
    """The `reason` label of a drop: the text Cilium's agent gives the Cilium drop code ours
    maps to (several of ours can share one), else our own name for it."""
    code = DROP_REASONS.get(int(reason))
    return drop_reason_text(code) if code is not None else reason.name.lower()


@dataclass(frozen=True)
class MapFill:
    entries: int
    max_entries: int


class KernelMapCounts:
    """How full the maps are that the datapath writes itself, counted now and then (see the
    module docstring); `maps()` names them (none before the datapath is loaded)."""

    def __init__(self, maps: Callable[[], Sequence[libbpf.Map]]) -> None:
        self.maps = maps
        self.fill: dict[str, MapFill] = {}

    async def refresh(self) -> None:
        """The `bpf-map-pressure` controller: count every map, off the event loop."""
        maps = list(self.maps())
        self.fill = await asyncio.to_thread(
            lambda: {m.name: MapFill(m.count(), m.max_entries) for m in maps})


class AgentMetrics:
    """Everything the agent reports (see the module docstring)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        ProcessCollector(namespace="cilium", registry=r)
        self.last_sync = Gauge("hexlane_last_sync_timestamp_seconds",
                               "When the routing sync last succeeded (Unix time)", registry=r)

    def watch(self, *, endpoints: Callable[[], EndpointManager | None],
              controllers: Sequence[Controller], last_sync: Callable[[], float | None],
              reconcilers: Callable[[], Sequence[Any]],
              counters: Callable[[], libbpf.Map | None],
              kernel_maps: KernelMapCounts,
              l2: Callable[[], L2Announcer | None],
              arp_replies: Callable[[], int | None]) -> None:
        """Read every metric from the parts at each scrape: the endpoint manager (None before
        it starts), the controllers, the last routing sync, every reconciler, the datapath's
        counters map (``hl_metrics``; None before a datapath is loaded), the kernel-written
        maps' counts, the L2 announcer (None without l2announcements) and the ARP replies
        the responder sent (None without the load balancer)."""
        self.last_sync.set_function(lambda: last_sync() or 0.0)
        for collector in (_DatapathCollector(counters),
                          _MapPressureCollector(reconcilers, kernel_maps),
                          _ReconcilerCollector(reconcilers),
                          _ControllerCollector(controllers),
                          _EndpointCollector(endpoints),
                          _L2Collector(l2, arp_replies)):
            self.registry.register(collector)

    async def serve(self, addr: tuple[str, int]) -> web.AppRunner:
        """`/metrics` on `addr` ("" = every address)."""
        runner, _ = await serve_metrics(self.registry, addr)
        host, port = addr
        log.info("metrics on http://%s:%d/metrics", host or "0.0.0.0", port)
        return runner


class _Collector(Collector):
    """Read at every scrape; nothing to describe ahead (the registry then calls collect only
    when scraped)."""

    def describe(self) -> Iterator[Metric]:
        return iter(())


class _DatapathCollector(_Collector):
    """cilium_forward_{count,bytes}_total{direction} and cilium_drop_{count,bytes}_total
    {reason,direction}, from hl_metrics; several of our reasons summed under one label as
    Cilium sums its map's rows."""

    def __init__(self, counters: Callable[[], libbpf.Map | None]) -> None:
        self.counters = counters

    def collect(self) -> Iterator[Metric]:
        fwd_count = CounterMetricFamily(
            "cilium_forward_count", "Packets the datapath forwarded, by direction (INGRESS: "
            "into this node's pods, EGRESS: out of them, SERVICE: to Services at the node's "
            "other hooks)", labels=["direction"])
        fwd_bytes = CounterMetricFamily(
            "cilium_forward_bytes", "Bytes the datapath forwarded, by direction",
            labels=["direction"])
        drop_count = CounterMetricFamily(
            "cilium_drop_count", "Packets the datapath dropped, by reason and direction",
            labels=["reason", "direction"])
        drop_bytes = CounterMetricFamily(
            "cilium_drop_bytes", "Bytes the datapath dropped, by reason and direction",
            labels=["reason", "direction"])
        forwards: dict[str, list[int]] = {}
        drops: dict[tuple[str, str], list[int]] = {}
        counters = self.counters()
        try:
            rows = read_counters(counters) if counters is not None else {}
        except libbpf.BpfError as err:  # no partial numbers: none this time
            log.warning("reading the datapath's counters: %s", err)
            rows = {}
        for (reason, way), count in rows.items():
            name = way.name
            if reason == DropReason.NONE:
                total = forwards.setdefault(name, [0, 0])
            else:
                total = drops.setdefault((drop_reason_label(reason), name), [0, 0])
            total[0] += count.packets
            total[1] += count.bytes
        for name, (packets, size) in sorted(forwards.items()):
            fwd_count.add_metric([name], packets)
            fwd_bytes.add_metric([name], size)
        for labels, (packets, size) in sorted(drops.items()):
            drop_count.add_metric(list(labels), packets)
            drop_bytes.add_metric(list(labels), size)
        yield from (fwd_count, fwd_bytes, drop_count, drop_bytes)


def map_of(reconciler: Any) -> libbpf.Map | None:
    """The BPF map a reconciler's table writes, if it writes one."""
    bpf_map = getattr(reconciler.table, "map", None)
    return bpf_map if isinstance(bpf_map, libbpf.Map) else None


class _MapPressureCollector(_Collector):
    """cilium_bpf_map_pressure{map_name}: entries over max_entries, for the maps that fill
    (hash maps, LRU and LPM ones; not arrays)."""

    def __init__(self, reconcilers: Callable[[], Sequence[Any]],
                 kernel_maps: KernelMapCounts) -> None:
        self.reconcilers = reconcilers
        self.kernel_maps = kernel_maps

    def collect(self) -> Iterator[Metric]:
        fill: dict[str, MapFill] = {}
        for rec in self.reconcilers():
            bpf_map = map_of(rec)
            if bpf_map is not None and bpf_map.map_type in _FILLED_TYPES:
                fill[bpf_map.name] = MapFill(len(rec.desired), bpf_map.max_entries)
        fill.update(self.kernel_maps.fill)
        pressure = GaugeMetricFamily(
            "cilium_bpf_map_pressure", "How full a BPF map is: its entries over its "
            "max_entries (1: full; an LRU map then evicts)", labels=["map_name"])
        for name, f in sorted(fill.items()):
            pressure.add_metric([name], f.entries / f.max_entries if f.max_entries else 0.0)
        yield pressure


class _ReconcilerCollector(_Collector):
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


class _ControllerCollector(_Collector):
    """cilium_controllers_failing, cilium_controllers_runs_total{status} and, per controller,
    cilium_controllers_group_runs_total{group_name,status}."""

    def __init__(self, controllers: Sequence[Controller]) -> None:
        self.controllers = controllers

    def collect(self) -> Iterator[Metric]:
        failing = GaugeMetricFamily("cilium_controllers_failing",
                                    "Controllers whose last run failed")
        runs = CounterMetricFamily("cilium_controllers_runs", "Controller runs by outcome",
                                   labels=["status"])
        group = CounterMetricFamily("cilium_controllers_group_runs",
                                    "Runs of each controller by outcome",
                                    labels=["group_name", "status"])
        failing.add_metric([], sum(1 for c in self.controllers if c.consecutive_failures))
        runs.add_metric(["success"], sum(c.successes for c in self.controllers))
        runs.add_metric(["failure"], sum(c.failures for c in self.controllers))
        for c in self.controllers:
            group.add_metric([c.name, "success"], c.successes)
            group.add_metric([c.name, "failure"], c.failures)
        yield from (failing, runs, group)


class _EndpointCollector(_Collector):
    """The pod endpoints and their IPs: cilium_endpoint, cilium_ip_addresses{family},
    cilium_ipam_capacity{family}, cilium_ipam_events_total{action,family},
    hexlane_ipam_allocation_failures_total, hexlane_nodes_routed (0 before the endpoint
    manager starts)."""

    def __init__(self, endpoints: Callable[[], EndpointManager | None]) -> None:
        self.endpoints = endpoints

    def collect(self) -> Iterator[Metric]:
        mgr = self.endpoints()
        events: Mapping[str, int] = mgr.ipam_events if mgr is not None else {}
        endpoint = GaugeMetricFamily("cilium_endpoint", "Pod endpoints on this node")
        addresses = GaugeMetricFamily(
            "cilium_ip_addresses", "Pod IPs allocated from this node's pod CIDR",
            labels=["family"])
        capacity = GaugeMetricFamily(
            "cilium_ipam_capacity", "Pod IPs this node's pod CIDR can hand out",
            labels=["family"])
        ipam_events = CounterMetricFamily(
            "cilium_ipam_events", "Pod IPs allocated and released", labels=["action", "family"])
        failures = CounterMetricFamily(
            "hexlane_ipam_allocation_failures", "CNI ADDs refused: no free IP in the pod CIDR")
        nodes = GaugeMetricFamily("hexlane_nodes_routed", "Other nodes this node routes pods to")
        endpoint.add_metric([], len(mgr.endpoints) if mgr is not None else 0)
        addresses.add_metric([FAMILY], len(mgr.allocator.allocations) if mgr is not None else 0)
        capacity.add_metric([FAMILY], mgr.allocator.capacity if mgr is not None else 0)
        for action in ("allocate", "release"):
            ipam_events.add_metric([action, FAMILY], events.get(action, 0))
        failures.add_metric([], events.get("exhausted", 0))
        nodes.add_metric([], len(mgr.nodes) if mgr is not None else 0)
        yield from (endpoint, addresses, capacity, ipam_events, failures, nodes)


class _L2Collector(_Collector):
    """hexlane_l2_*: what this node announces, its election changes, GARPs and ARP replies
    (0 without l2announcements: this node announces nothing)."""

    def __init__(self, l2: Callable[[], L2Announcer | None],
                 arp_replies: Callable[[], int | None]) -> None:
        self.l2 = l2
        self.arp_replies = arp_replies

    def collect(self) -> Iterator[Metric]:
        l2 = self.l2()
        ips = GaugeMetricFamily(
            "hexlane_l2_announced_ips",
            "LoadBalancer and external IPs this node answers ARP for (IP and device pairs)")
        services = GaugeMetricFamily("hexlane_l2_announced_services",
                                     "Services this node announces")
        candidates = GaugeMetricFamily(
            "hexlane_l2_candidate_services",
            "Services an L2 announcement policy lets this node announce")
        changes = CounterMetricFamily(
            "hexlane_l2_election_changes", "Announcements this node took (started answering "
            "for) and released (stopped answering for)", labels=["change"])
        garps = CounterMetricFamily("hexlane_l2_garps_sent", "Gratuitous ARPs sent")
        replies = CounterMetricFamily("hexlane_l2_arp_replies",
                                      "ARP requests the datapath answered for announced IPs")
        unreachable = GaugeMetricFamily(
            "hexlane_l2_nodes_unreachable", "Nodes heard on the LAN and silent for "
            "l2announcements.heartbeat.deadAfter (hexlane's election)")
        if l2 is not None:
            status = l2.status()
            ips.add_metric([], len(status["announcements"]))
            services.add_metric([], status["leading"])
            candidates.add_metric([], status["candidates"])
            changes.add_metric(["taken"], l2.taken)
            changes.add_metric(["released"], l2.released)
            garps.add_metric([], l2.garps_sent)
            unreachable.add_metric([], len(l2.unreachable))
        else:
            for family in (ips, services, candidates, garps, unreachable):
                family.add_metric([], 0)
            changes.add_metric(["taken"], 0)
            changes.add_metric(["released"], 0)
        try:
            replies.add_metric([], self.arp_replies() or 0)
        except libbpf.BpfError as err:
            log.warning("reading the ARP replies: %s", err)
        yield from (ips, services, candidates, changes, garps, replies, unreachable)
