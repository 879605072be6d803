"""Every table the endpoint manager and the CNI installer own is repaired by one resync.

The tables (each kept by its own reconciler of `hexlane.datapath.reconcile`, named so in
`EndpointManager.reconcilers` and in the agent's metrics):

- `links`: `hexlane_vxlan` and `hexlane_host`. Changed: the VXLAN MTU; the host pair set
  down. Deleted: `hexlane_vxlan` (what hung on it goes too, and counts in its own table).
- `fdb`: FDB entries on `hexlane_vxlan`, by (MAC, remote). Changed: a peer's MAC re-pointed
  (one stale and one missing key). Deleted: a peer's entry.
- `neighbors`: permanent entries on hexlane's links. Changed: a remote router's MAC.
  Deleted: a pod's entry on its veth.
- `routes`: main table, protocol 104. Changed: a tunnel route's gateway. Deleted: a pod's
  /32. Stale: a route of ours nobody wants. A scope link route no longer wanted goes too.
- `endpoint_sysctls`: `net.ipv4.ip_forward`. Changed: set to 0 (a sysctl cannot be deleted).
- `hl_masq4_config`: the masquerade's config. Changed: its port range (an array's entry
  cannot be deleted).
- `hl_masq4_nonmasq`: non-masquerade prefixes (LPM). Changed: a prefix's value. Deleted: a
  node IP's prefix. Stale: a prefix added.
- `cni_files`: plugin wrapper, install record, conflist. Changed: the wrapper's text, then
  its mode. Deleted: the conflist.

A real `EndpointManager` (tunnel mode, two peers, a pod, masquerade on eth0) runs in a node
namespace the test makes; everything is tampered with by `ip`, `bridge`, `sysctl` and the
pinned maps, then one `resync()` must put it all back and each reconciler's `repairs` grows by
exactly what was tampered with. A second resync finds nothing. Left alone throughout: a route
of another protocol, a permanent neighbour on eth0, a learned neighbour on the pod's veth, an
FDB entry of another VXLAN device. Also: a normal run (a new peer) writes only that peer's
route, FDB and neighbour entries. About 2 s (and compiling masq.c once, when not cached).
"""

from __future__ import annotations

import asyncio
import ctypes
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

import pytest

from helpers.cni import node_with_eth0
from hexlane.agent import cniconf
from hexlane.agent.endpoints import CNIRequest, EndpointManager, MasqueradeSettings
from hexlane.datapath import libbpf
from hexlane.datapath.masq import CONFIG_MAP, NONMASQ_MAP, Masq4Config, Masq4NonmasqKey
from hexlane.lab import netns
from hexlane.lab.netns import Topology
from hexlane.routing.routes import NodeRouting, RoutingSettings, vxlan_mac


def node(i: int) -> NodeRouting:
    return NodeRouting(f"n{i}", IPv4Address(f"10.85.0.{10 + i}"),
                       (IPv4Network(f"10.86.{i}.0/24"),))


def be32(ip: str) -> int:
    return int.from_bytes(IPv4Address(ip).packed, "little")


@pytest.fixture
def world(bpffs: Path) -> Iterator[tuple[str, str, Path]]:
    """A node namespace with eth0 (10.85.0.11/24), a pod namespace, a bpffs directory."""
    bpf = bpffs / "resync"
    with Topology("hxy") as topo:
        ns = node_with_eth0(topo, "10.85.0.11/24")
        pod = topo.add("pod")
        yield ns, pod, bpf


def in_node(ns: str, scenario: Callable[[], Any]) -> None:
    """Run the coroutine function `scenario` on its own loop, in the node's namespace."""
    netns.run_in_netns(netns.netns_path(ns), lambda: asyncio.run(scenario()))


def repairs(manager: EndpointManager) -> dict[str, int]:
    return {rec.name: rec.repairs for rec in manager.reconcilers}


def grown(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {name: after[name] - before.get(name, 0) for name in after
            if after[name] != before.get(name, 0)}


@pytest.mark.slow
@pytest.mark.root
def test_one_resync_repairs_every_table_and_leaves_foreign_objects(
        world: tuple[str, str, Path], tmp_path: Path) -> None:
    ns, pod_ns, bpf = world

    def ip(*argv: str) -> str:
        return netns.run(ns, list(argv)).stdout

    async def scenario() -> None:
        manager = EndpointManager(
            tmp_path / "state", node(1), RoutingSettings("tunnel"),
            masquerade=MasqueradeSettings("eth0", bpf / "masq", IPv4Network("10.86.0.0/16")))
        await manager.start()
        try:
            await scenario_started(manager)
        finally:
            await manager.close()

    async def scenario_started(manager: EndpointManager) -> None:
        await manager.set_nodes([node(2), node(3)])
        result = await manager.add(CNIRequest("ctr-resync", "eth0", netns.netns_path(pod_ns)))
        pod_ip = result["ips"][0]["address"].split("/")[0]
        lxc = result["interfaces"][0]["name"]
        pod_mac = result["interfaces"][1]["mac"]
        # A normal run writes what changed and nothing else.
        report = await manager.set_nodes([node(2), node(3), node(4)])
        assert sorted(report.added) == sorted([
            "route 10.86.4.0/24", f"fdb {vxlan_mac(node(4).node_ip)} dst 10.85.0.14",
            f"neigh 10.86.4.1 {vxlan_mac(node(4).node_ip)} dev hexlane_vxlan"])
        assert not report.removed and not report.failed
        await manager.set_nodes([node(2), node(3)])

        # Someone else's objects: never touched by a resync.
        ip("ip", "route", "add", "192.0.2.0/24", "via", "10.85.0.1", "proto", "static")
        ip("ip", "neigh", "add", "10.85.0.99", "lladdr", "02:00:00:00:00:99", "dev", "eth0",
           "nud", "permanent")
        ip("ip", "neigh", "add", "10.86.1.200", "lladdr", "02:00:00:00:00:c8", "dev", lxc,
           "nud", "stale")
        ip("ip", "link", "add", "hxforeign", "type", "vxlan", "id", "42", "dstport", "4789",
           "local", "10.85.0.11")
        ip("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "hxforeign",
           "dst", "10.85.0.50")
        assert (await manager.resync()).changed is False  # nothing of ours differs yet
        before = repairs(manager)

        # -- round 1: an entry changed and one deleted in every table but the links' -----
        mac2, mac3 = vxlan_mac(node(2).node_ip), vxlan_mac(node(3).node_ip)
        ip("ip", "link", "set", "hexlane_vxlan", "mtu", "1400")
        ip("bridge", "fdb", "replace", mac2, "dev", "hexlane_vxlan", "dst", "10.85.0.77")
        ip("bridge", "fdb", "del", mac3, "dev", "hexlane_vxlan", "dst", "10.85.0.13")
        ip("ip", "neigh", "replace", "10.86.2.1", "lladdr", "02:00:00:00:00:01",
           "dev", "hexlane_vxlan", "nud", "permanent")
        ip("ip", "neigh", "del", pod_ip, "dev", lxc)
        ip("ip", "route", "replace", "10.86.2.0/24", "via", "10.86.2.99", "dev",
           "hexlane_vxlan", "onlink", "src", "10.86.1.1", "proto", "104")
        ip("ip", "route", "del", f"{pod_ip}/32", "proto", "104")
        ip("ip", "route", "add", "10.99.0.0/24", "dev", "eth0", "proto", "104")  # stale
        ip("sysctl", "-qw", "net.ipv4.ip_forward=0")
        with libbpf.Map.from_pin(bpf / "masq" / CONFIG_MAP, key_type=ctypes.c_uint32,
                                 value_type=Masq4Config) as config:
            cfg = config.lookup(ctypes.c_uint32(0))
            cfg.port_min = 40000
            config.update(ctypes.c_uint32(0), cfg)
        with libbpf.Map.from_pin(bpf / "masq" / NONMASQ_MAP, key_type=Masq4NonmasqKey,
                                 value_type=ctypes.c_uint8) as nonmasq:
            assert nonmasq.delete(Masq4NonmasqKey(32, be32("10.85.0.12")))
            nonmasq.update(Masq4NonmasqKey(24, be32("198.51.100.0")), ctypes.c_uint8(1))
            nonmasq.update(Masq4NonmasqKey(32, be32("10.85.0.13")), ctypes.c_uint8(0))

        result = await manager.resync()
        assert not result.failed
        assert grown(before, repairs(manager)) == {
            "links": 1, "fdb": 3, "neighbors": 2, "routes": 3, "endpoint_sysctls": 1,
            "hl_masq4_config": 1, "hl_masq4_nonmasq": 3}
        assert "mtu 1450" in ip("ip", "link", "show", "hexlane_vxlan")
        fdb = ip("bridge", "fdb", "show", "dev", "hexlane_vxlan")
        assert f"{mac2} dst 10.85.0.12" in fdb and f"{mac3} dst 10.85.0.13" in fdb
        assert "10.85.0.77" not in fdb
        neigh = ip("ip", "neigh", "show")
        assert f"10.86.2.1 dev hexlane_vxlan lladdr {mac2} PERMANENT" in neigh
        assert f"{pod_ip} dev {lxc} lladdr {pod_mac} PERMANENT" in neigh
        routes = ip("ip", "route", "show")
        assert "10.86.2.0/24 via 10.86.2.1 dev hexlane_vxlan proto 104 src 10.86.1.1 onlink" \
            in routes
        assert f"{pod_ip} dev {lxc} proto 104 scope link" in routes
        assert "10.99.0.0/24" not in routes
        assert ip("sysctl", "-n", "net.ipv4.ip_forward").strip() == "1"
        with libbpf.Map.from_pin(bpf / "masq" / CONFIG_MAP, key_type=ctypes.c_uint32,
                                 value_type=Masq4Config) as config:
            assert config.lookup(ctypes.c_uint32(0)).port_min == 61000
        with libbpf.Map.from_pin(bpf / "masq" / NONMASQ_MAP, key_type=Masq4NonmasqKey,
                                 value_type=ctypes.c_uint8) as nonmasq:
            assert {v.value for _, v in nonmasq.iter_items()} == {1}
        assert {str(n) for n in manager._masq.nonmasq_prefixes()} == {  # type: ignore[union-attr]
            "10.86.0.0/16", "10.85.0.11/32", "10.85.0.12/32", "10.85.0.13/32",
            "10.86.1.0/24", "10.86.2.0/24", "10.86.3.0/24"}
        assert not (await manager.resync()).changed
        assert grown(before, repairs(manager))["links"] == 1  # nothing new found

        # -- round 2: the tunnel device deleted, the host pair set down ---------------------
        before = repairs(manager)
        await manager.set_service_routes([IPv4Network("10.43.0.0/16")])
        ip("ip", "link", "del", "hexlane_vxlan")
        ip("ip", "link", "set", "hexlane_host", "down")
        result = await manager.resync()
        assert not result.failed
        # What hung on the tunnel device went with it, and the service route with the host
        # device's going down: each counted in its own table.
        assert grown(before, repairs(manager)) == {
            "links": 2, "fdb": 2, "neighbors": 2, "routes": 3}
        assert "state UP" in ip("ip", "link", "show", "hexlane_host")
        assert "vxlan id 2 " in ip("ip", "-d", "link", "show", "hexlane_vxlan")
        fdb = ip("bridge", "fdb", "show", "dev", "hexlane_vxlan")
        assert f"{mac2} dst 10.85.0.12" in fdb and f"{mac3} dst 10.85.0.13" in fdb
        neigh = ip("ip", "neigh", "show", "dev", "hexlane_vxlan")
        assert "10.86.2.1 lladdr" in neigh and "10.86.3.1 lladdr" in neigh
        routes = ip("ip", "route", "show")
        for want in ("10.86.2.0/24 via 10.86.2.1 dev hexlane_vxlan",
                     "10.86.3.0/24 via 10.86.3.1 dev hexlane_vxlan",
                     "10.43.0.0/16 dev hexlane_host proto 104"):
            assert want in routes
        assert not (await manager.resync()).changed
        # A scope link route of ours goes when no longer wanted (`ip route del` semantics).
        report = await manager.set_service_routes([])
        assert report is not None and report.removed == ["route 10.43.0.0/16"]
        routes = ip("ip", "route", "show")
        assert "10.43.0.0/16" not in routes

        # Someone else's objects are all still there.
        assert "192.0.2.0/24 via 10.85.0.1 dev eth0 proto static" in routes
        assert "10.85.0.99 dev eth0 lladdr 02:00:00:00:00:99 PERMANENT" in ip(
            "ip", "neigh", "show")
        assert "10.86.1.200 lladdr 02:00:00:00:00:c8" in ip("ip", "neigh", "show", "dev", lxc)
        assert "dst 10.85.0.50" in ip("bridge", "fdb", "show", "dev", "hxforeign")
        status = {r["table"]: r for r in manager.status()["reconcilers"]}
        assert status["routes"]["repairs"] >= 6 and status["routes"]["pending"] == 0

    in_node(ns, scenario)


def test_cni_files_are_repaired_by_a_resync(tmp_path: Path) -> None:
    conf_dir, bin_dir, state = tmp_path / "net.d", tmp_path / "bin", tmp_path / "state"
    files = cniconf.CniFiles(conf_dir, bin_dir, state)
    assert sorted(files.install()) == sorted([str(bin_dir / "hexlane-cni"),
                                              str(conf_dir / "05-hexlane.conflist")])
    assert files.install() == [] and files.rec.repairs == 0
    wrapper, conf = bin_dir / "hexlane-cni", conf_dir / "05-hexlane.conflist"
    wanted = wrapper.read_text()
    wrapper.write_text("#!/bin/sh\nexit 1\n")
    conf.unlink()
    foreign = conf_dir / "10-other.conflist"  # not ours: never read, never removed
    foreign.write_text("{}\n")
    # Written back: the wrapper first, the config last (a runtime never sees the network
    # before its plugin).
    assert files.install() == [str(wrapper), str(conf)]
    assert files.rec.repairs == 2
    assert wrapper.read_text() == wanted and wrapper.stat().st_mode & 0o777 == 0o755
    assert conf.is_file() and foreign.read_text() == "{}\n"
    wrapper.chmod(0o644)  # the mode counts too
    assert files.install() == [str(wrapper)] and files.rec.repairs == 3
