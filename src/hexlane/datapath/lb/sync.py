"""Handing the load balancer's desired state to the kernel, through the one reconciler.

    sync = LbSync(datapath)                  # one Reconciler per LB map
    sync.apply(delta)                        # an `hexlane.lb.services.Delta`: its keys only
    sync.set_node_ip("10.0.0.11")            # the NodePort SNAT source (the config map)
    sync.set_trace_config(cfg)               # flow events on/off (hexlane.datapath.events)
    sync.set_l7_ports(entries)               # which ports carry DNS and HTTP
    sync.resync()                            # read every map, repair what differs

Tables, in the order their upserts are written (deletes go in reverse): backends, reverse
NAT, affinity matches, Maglev tables, services (a service's slots before its slot 0), the
node config, the flow events' config. A change to one Service touches only its own keys,
whatever the number of Services; `resync()` compares the whole desired state with what the
maps hold (entries changed, deleted or added behind the agent's back are repaired and
counted). The first call
after the agent starts should be `resync()`: it writes only what the pinned maps lack.
"""

from __future__ import annotations

import ctypes
from collections.abc import Mapping, Sequence
from typing import Any

from hexlane.datapath import libbpf
from hexlane.datapath.events import HlTraceConfig
from hexlane.datapath.layout import ip4
from hexlane.datapath.lb.encode import raw_backend, raw_entry, slot0_last
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.maps import LbNodeConfig, maglev_lut_type
from hexlane.datapath.reconcile import (
    FlushResult,
    MapTable,
    Reconciler,
    Table,
    flush_group,
)
from hexlane.lb.services import Delta, ServiceEntry


class MaglevTable(Table[bytes, tuple[int, ...]]):
    """The Maglev map of maps: service id -> its lookup table (an inner map swapped in whole,
    so the datapath never sees a half-written table)."""

    name = "lb4_maglev"

    def __init__(self, datapath: LbDatapath) -> None:
        self.datapath = datapath

    @property
    def map(self) -> libbpf.Map:
        """The outer map (one entry per service with a table)."""
        return self.datapath.maps.maglev

    def read(self) -> dict[bytes, tuple[int, ...]]:
        out: dict[bytes, tuple[int, ...]] = {}
        outer = self.datapath.maps.maglev
        lut_type = maglev_lut_type(self.datapath.table_size)
        for raw in outer.raw_keys():
            inner_id = outer.lookup(raw)
            if inner_id is None:
                continue
            try:
                with libbpf.Map.from_id(int(inner_id.value), value_type=lut_type) as inner:
                    lut = inner.lookup(ctypes.c_uint32(0))
            except libbpf.BpfError:
                continue  # replaced meanwhile
            out[raw] = tuple(lut) if lut is not None else ()
        return out

    def update(self, key: bytes, value: tuple[int, ...]) -> None:
        self.write([(key, value)])

    def update_many(self, pairs: Sequence[tuple[bytes, tuple[int, ...]]]
                    ) -> dict[bytes, Exception]:
        try:
            self.write(pairs)
        except Exception:
            return super().update_many(pairs)  # one by one, to find the bad ones
        return {}

    def delete(self, key: bytes) -> None:
        self.datapath.maps.maglev.delete(key)

    def write(self, pairs: Sequence[tuple[bytes, Sequence[int]]], batch: int = 4096) -> None:
        """Point each service id at a fresh inner map holding its table. Services with the
        same table share one inner map, and the outer map is written in batches: the kernel
        waits for an RCU grace period after every update call on a map of maps (~20 ms
        here), so per-entry updates would take minutes for thousands of services."""
        size = self.datapath.table_size
        lut_type = maglev_lut_type(size)
        inner_of: dict[tuple[int, ...], libbpf.Map] = {}
        try:
            outer: list[tuple[bytes, ctypes.c_uint32]] = []
            for key, table in pairs:
                if len(table) != size:
                    raise ValueError(f"Maglev table has {len(table)} slots, the datapath was "
                                     f"built for {size}")
                ids = tuple(table)
                inner = inner_of.get(ids)
                if inner is None:
                    inner = libbpf.create_map(libbpf.BPF_MAP_TYPE_ARRAY, "hl_lb4_maglev_i", 4,
                                              ctypes.sizeof(lut_type), 1)
                    inner_of[ids] = inner
                    inner.update(ctypes.c_uint32(0), lut_type(*ids))
                outer.append((key, ctypes.c_uint32(inner.fd)))
            for start in range(0, len(outer), batch):
                self.datapath.maps.maglev.update_batch(outer[start:start + batch])
        finally:
            for inner in inner_of.values():
                inner.close()  # the outer map holds its own references


class LbSync:
    """The LB maps' reconcilers (see the module docstring)."""

    def __init__(self, datapath: LbDatapath) -> None:
        m = datapath.maps
        self.backends: Reconciler[bytes, bytes] = Reconciler(
            MapTable(m.backends, "lb4_backends"))
        self.revnat: Reconciler[bytes, bytes] = Reconciler(
            MapTable(m.revnat, "lb4_reverse_nat"))
        self.affinity_match: Reconciler[bytes, bytes] = Reconciler(
            MapTable(m.affinity_match, "lb_affinity_match"))
        self.maglev: Reconciler[bytes, tuple[int, ...]] = Reconciler(MaglevTable(datapath))
        self.services: Reconciler[bytes, bytes] = Reconciler(
            MapTable(m.services, "lb4_services", order=slot0_last))
        self.config: Reconciler[bytes, bytes] = Reconciler(MapTable(m.config, "lb_config"))
        self.trace_config: Reconciler[bytes, bytes] = Reconciler(
            MapTable(m.trace_config, "trace_config"))
        self.l7_ports: Reconciler[bytes, bytes] = Reconciler(MapTable(m.l7_ports, "l7_ports"))
        self.group: list[Reconciler[bytes, Any]] = [
            self.backends, self.revnat, self.affinity_match, self.maglev, self.services]
        self.set_node_ip(None)
        self.set_trace_config(HlTraceConfig())

    @property
    def reconcilers(self) -> list[Reconciler[bytes, Any]]:
        return [*self.group, self.config, self.l7_ports, self.trace_config]

    def apply(self, delta: Delta) -> FlushResult:
        """Put the delta's entries into the desired tables and write them."""
        self.stage(delta)
        return self.flush()

    def stage(self, delta: Delta) -> None:
        new_keys = {e.frontend: self._keys(e) for e in delta.entries}
        for b in delta.backends:
            self.backends.put(*raw_backend(b))
        for old in delta.old:
            keep = new_keys.get(old.frontend, _NO_KEYS)
            o = raw_entry(old)
            for k, _ in o.services:
                if k not in keep[0]:
                    self.services.remove(k)
            if o.revnat[0] not in keep[1]:
                self.revnat.remove(o.revnat[0])
                self.maglev.remove(o.revnat[0])
            for k, _ in o.affinity_match:
                if k not in keep[2]:
                    self.affinity_match.remove(k)
        for entry in delta.entries:
            self._put_entry(entry)
        for bid in delta.removed_backends:
            self.backends.remove(bytes(ctypes.c_uint32(bid)))

    def _put_entry(self, entry: ServiceEntry) -> None:
        raw = raw_entry(entry)
        for k, v in raw.services:
            self.services.put(k, v)
        self.revnat.put(*raw.revnat)
        if entry.maglev:
            self.maglev.put(raw.revnat[0], entry.maglev)
        else:
            self.maglev.remove(raw.revnat[0])
        for k, v in raw.affinity_match:
            self.affinity_match.put(k, v)

    @staticmethod
    def _keys(entry: ServiceEntry) -> tuple[set[bytes], set[bytes], set[bytes]]:
        raw = raw_entry(entry)
        return ({k for k, _ in raw.services}, {raw.revnat[0]},
                {k for k, _ in raw.affinity_match})

    def set_node_ip(self, address: str | None) -> None:
        """The node address NodePort SNAT uses as source (None: SNAT impossible, counted)."""
        self.config.put(bytes(ctypes.c_uint32(0)),
                        bytes(LbNodeConfig(node_ip=ip4(address) if address else 0)))

    def set_trace_config(self, cfg: HlTraceConfig) -> None:
        """Flow events on or off, and what the programs need to know to report them
        (hexlane.datapath.events.trace_config)."""
        self.trace_config.put(bytes(ctypes.c_uint32(0)), bytes(cfg))

    def set_l7_ports(self, entries: Mapping[bytes, bytes]) -> None:
        """Which ports carry DNS and HTTP (hexlane.datapath.events.l7_port_entries)."""
        self.l7_ports.set_all(dict(entries))

    def flush(self) -> FlushResult:
        return (flush_group(self.group).add(self.config.flush()).add(self.l7_ports.flush())
                .add(self.trace_config.flush()))

    def resync(self) -> FlushResult:
        """Read every LB map; repair what differs from the desired tables."""
        for rec in self.reconcilers:
            rec.detect()
        return self.flush()

    @property
    def repairs(self) -> int:
        return sum(r.repairs for r in self.reconcilers)

    def status(self) -> list[Mapping[str, Any]]:
        return [r.status() for r in self.reconcilers]


_NO_KEYS: tuple[set[bytes], set[bytes], set[bytes]] = (set(), set(), set())
