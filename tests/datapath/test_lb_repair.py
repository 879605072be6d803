"""Drift in the load balancer's kernel objects is repaired by one resync; a crash converges.

The tables the service side owns, each tampered with behind the reconciler's back (one entry
changed, one deleted) in a namespace the test creates, then repaired by one `resync()`:

- lb4_services (hl_lb4_services), lb4_backends, lb4_reverse_nat, lb_affinity_match,
- lb4_maglev (the map of maps: one service's inner table swapped for a wrong one, one gone),
- lb_config (the node IP NodePort SNAT uses; an array map: changed only, never deleted),
- tc_attachments (one program detached, one slot holding the wrong program),
- sysctls (accept_local on lo and hexlane_net set back to 0; a sysctl cannot be deleted),
- link_noarp (ARP turned back on on hexlane_host).

Each repair is counted (`repairs`); a foreign pin under the bpf root and a foreign tc filter
(another handle) are left alone. A crash in the middle of a sync (the writes cut after k
entries, for several k) and a new process starting on the same pinned maps converges to the
same contents, with the same ids.
"""

from __future__ import annotations

import ctypes
import socket
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest

from hexlane.agent.loadbalancer import ServiceReconciler
from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, TC_HANDLE, LbDatapath
from hexlane.datapath.lb.maps import LbNodeConfig
from hexlane.datapath.reconcile import Reconciler
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns
from hexlane.lb.services import LbSettings
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service
from hexlane.routing.routes import HOST_DEVICE, HOST_PEER_DEVICE

pytestmark = [pytest.mark.slow, pytest.mark.root]

SETTINGS = LbSettings(algorithm="maglev")  # the loaded datapath's default table size


T = TypeVar("T")


@pytest.fixture
def netns() -> Iterator[str]:
    with Topology("hl-rep") as topo:
        name = topo.add("node")
        for cmd in (["link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                    ["link", "add", HOST_DEVICE, "type", "veth", "peer", "name",
                     HOST_PEER_DEVICE],
                    ["link", "add", "lxc0a1b2c", "type", "veth", "peer", "name", "pod0"]):
            run(name, ["ip", *cmd])
        for dev in ("eth0", HOST_DEVICE, HOST_PEER_DEVICE, "lxc0a1b2c"):
            run(name, ["ip", "link", "set", dev, "up"])
        yield name


def in_netns(name: str, work: Callable[[], T]) -> T:
    return run_in_netns(netns_path(name), work)


def _objects(n: int = 3) -> tuple[list[Service], list[EndpointSlice], list[Node]]:
    services, slices = [], []
    for i in range(n):
        services.append(Service.parse({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"web{i}", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "clusterIP": f"10.43.0.{10 + i}",
                     "clusterIPs": [f"10.43.0.{10 + i}"], "sessionAffinity": "ClientIP",
                     "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                                "protocol": "TCP", "nodePort": 30080 + i}]},
            "status": {"loadBalancer": {"ingress": [{"ip": f"10.0.0.{200 + i}"}]}}}))
        slices.append(EndpointSlice.parse({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"web{i}-a", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": f"web{i}"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [f"10.42.{j}.{5 + i}"], "nodeName": f"n{j}",
                           "conditions": {"ready": True}} for j in (1, 2)],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}))
    node = Node.parse({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                       "status": {"addresses": [{"type": "InternalIP",
                                                 "address": "10.0.0.11"}]}})
    return services, slices, [node]


def _kernel(rec: ServiceReconciler, netns: str) -> dict[str, Any]:
    """What the kernel holds of every table (tc slots are read in the namespace)."""
    return in_netns(netns, lambda: {r.name: dict(r.table.read()) for r in rec.reconcilers})


def _wanted(rec: ServiceReconciler) -> dict[str, Any]:
    return {r.name: dict(r.desired) for r in rec.reconcilers}


def _two_keys(rec: Reconciler[Any, Any]) -> tuple[Any, Any]:
    keys = list(rec.desired)
    assert len(keys) >= 2, f"{rec.name}: need two entries to tamper with"
    return keys[0], keys[-1]


def _flip(value: bytes) -> bytes:
    return bytes([value[0] ^ 0x5A]) + value[1:]


def test_every_lb_table_is_repaired_by_one_resync(lb: LbDatapath, netns: str) -> None:
    rec = ServiceReconciler(lb, "n1", settings=SETTINGS)
    rec.update(*_objects())
    in_netns(netns, lambda: rec.attach(["eth0"]))
    assert _kernel(rec, netns) == _wanted(rec)
    sync = rec.sync
    foreign_pin = lb.bpf_root / "someone_elses_map"
    with libbpf.create_map(libbpf.BPF_MAP_TYPE_HASH, "foreign", 4, 4, 4) as foreign:
        libbpf.pin_object(foreign.fd, foreign_pin)
    try:
        # the plain maps: one value changed, one entry deleted
        tampered = 0
        for r in (sync.services, sync.backends, sync.revnat, sync.affinity_match):
            changed, deleted = _two_keys(r)
            table: Any = r.table
            table.map.update(changed, _flip(r.desired[changed]))
            table.map.delete(deleted)
            tampered += 2
        # Maglev: one table swapped for a wrong one, one removed
        changed, deleted = _two_keys(sync.maglev)
        wrong = tuple(reversed(sync.maglev.desired[changed]))
        sync.maglev.table.update(changed, wrong)
        lb.maps.maglev.delete(deleted)
        # the node config: another node IP
        lb.maps.config.update(ctypes.c_uint32(0), LbNodeConfig(node_ip=ip4("6.6.6.6")))
        # tc: lo's program detached, eth0's egress slot given another program; a foreign
        # filter (another handle) beside ours
        lo_slot = ("lo", "egress", 1)
        eth_slot = ("eth0", "egress", 1)
        assert lo_slot in rec.attachments.desired and eth_slot in rec.attachments.desired

        def tamper_tc() -> None:
            lo = _index("lo")
            libbpf.tc_detach(lo, "egress", handle=TC_HANDLE, priority=1)
            libbpf.tc_attach(_index("eth0"), lb.program_fd(PROGRAM_FROM_POD), "egress",
                             handle=TC_HANDLE, priority=1)
            libbpf.tc_attach(_index("eth0"), lb.program_fd(PROGRAM_FROM_POD), "ingress",
                             handle=7, priority=7)

        in_netns(netns, tamper_tc)
        for sysctl in ("net.ipv4.conf.lo.accept_local",
                       f"net.ipv4.conf.{HOST_PEER_DEVICE}.accept_local"):
            run(netns, ["sysctl", "-qw", f"{sysctl}=0"])
        run(netns, ["ip", "link", "set", HOST_DEVICE, "arp", "on"])
        tampered += 2 + 1 + 2 + 2 + 1
        assert _kernel(rec, netns) != _wanted(rec)

        before = sum(r.repairs for r in rec.reconcilers)
        in_netns(netns, rec.resync)
        assert _kernel(rec, netns) == _wanted(rec)
        assert sum(r.repairs for r in rec.reconcilers) - before == tampered
        assert {r.name: r.repairs for r in rec.reconcilers if r.repairs} == {
            "lb4_services": 2, "lb4_backends": 2, "lb4_reverse_nat": 2,
            "lb_affinity_match": 2, "lb4_maglev": 2, "lb_config": 1, "tc_attachments": 2,
            "sysctls": 2, "link_noarp": 1}
        # a second resync finds nothing; the foreign pin and filter are still there
        in_netns(netns, rec.resync)
        assert sum(r.repairs for r in rec.reconcilers) - before == tampered
        assert foreign_pin.exists()
        assert in_netns(netns, lambda: libbpf.tc_query(_index("eth0"), "ingress", handle=7,
                                                      priority=7)) is not None
    finally:
        foreign_pin.unlink()


def _index(name: str) -> int:
    return socket.if_nametoindex(name)


class _Crash(BaseException):
    """A kill -9 in the middle of a write (nothing after it runs)."""


@pytest.mark.parametrize("cut", [0, 1, 7, 20, 40])
def test_a_sync_killed_midway_converges_when_started_again(lb: LbDatapath, cut: int) -> None:
    for r in ServiceReconciler(lb, "n1", settings=SETTINGS).reconcilers[:-1]:
        r.set_all({})  # start from empty maps
        r.resync()
    first = ServiceReconciler(lb, "n1", settings=SETTINGS)
    services, slices, nodes = _objects(4)
    first.update(services[:2], slices[:2], nodes)
    ids_before = first.model.ids()
    writes = 0

    def crash_after(table: Any) -> None:
        original = table.update

        def update(key: Any, value: Any) -> None:
            nonlocal writes
            if writes >= cut:
                raise _Crash()
            writes += 1
            original(key, value)

        table.update = update
        # one by one (no batches), so the cut falls anywhere
        table.update_many = lambda pairs: _one_by_one(table, pairs)

    for r in first.sync.reconcilers:
        crash_after(r.table)
    # a change while running: two more Services, one of the old ones gone
    with pytest.raises(_Crash):
        first.update(services[1:], slices[1:], nodes)
    # A new process on the same pins: ids recovered, then everything converges.
    second = ServiceReconciler(lb, "n1", settings=SETTINGS)
    second.update(services[1:], slices[1:], nodes)
    assert _kernel_maps(second) == {r.name: dict(r.desired) for r in second.sync.reconcilers}
    fresh = ServiceReconciler(lb, "n1", settings=SETTINGS)
    fresh.update(services[1:], slices[1:], nodes)
    assert {e.frontend: e.backend_ids for e in fresh.desired.services} == \
        {e.frontend: e.backend_ids for e in second.desired.services}
    kept = {fe: sid for fe, sid in ids_before.services.items()
            if fe in second.model.service_ids}
    assert kept and all(second.model.service_ids[fe] == sid for fe, sid in kept.items())


def _one_by_one(table: Any, pairs: Any) -> dict[Any, Exception]:
    failed: dict[Any, Exception] = {}
    for key, value in pairs:
        try:
            table.update(key, value)
        except Exception as exc:
            failed[key] = exc
    return failed


def _kernel_maps(rec: ServiceReconciler) -> dict[str, Any]:
    return {r.name: dict(r.table.read()) for r in rec.sync.reconcilers}
