"""The netlink edge of pod networking: veth pairs, addresses, routes, VXLAN, FDB and sysctls.

Everything here acts in the network namespace of the calling thread (the node's, where the
agent runs) or, for the pod side of an endpoint, in the pod's namespace through a netlink
socket opened there. It carries out what `hexlane.ipam.routes` planned and decides nothing
itself. Inspect what it made with `ip link`, `ip route show proto 104` and
`bridge fdb show dev hexlane_vxlan` in the node's namespace.

pyroute2's own `netns=` argument forks a helper process and creates missing namespaces; a CNI
netns path must never be created by us, so sockets in other namespaces are opened here by a
short-lived thread that calls setns(2) and exits (setns only moves the calling thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import os
import socket
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hexlane.ipam.routes import (
    HOST_DEVICE,
    HOST_PEER_DEVICE,
    ROUTE_PROTO,
    VXLAN_DEVICE,
    FdbSpec,
    NeighborSpec,
    RoutePlan,
    RouteSpec,
    VxlanSpec,
)

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNREACHABLE = 7
RTNH_F_ONLINK = 4
NUD_PERMANENT = 0x80

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsError(OSError):
    """A network namespace path could not be opened or entered."""


# --- namespaces -------------------------------------------------------------------------------


def setns(path: str | os.PathLike[str]) -> None:
    """Move the calling thread into the network namespace at `path` (a /run/netns or /proc path).

    Called before any thread exists, this moves the whole process (later threads inherit it).
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise NetnsError(err.errno, f"cannot open network namespace {path}: {err.strerror}") \
            from None
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            code = ctypes.get_errno()
            raise NetnsError(code, f"setns({path}) failed: {os.strerror(code)}")
    finally:
        os.close(fd)


def netns_id(path: str | os.PathLike[str] = "/proc/thread-self/ns/net") -> str:
    """An identity of a network namespace ("dev:inode"), equal for equal namespaces."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}"


def is_named_netns(netns_dir: str = "/run/netns") -> bool:
    """True when the calling thread is in a namespace named under /run/netns (`ip netns add`).

    This is how a test or lab node namespace is told from the machine's own one positively:
    PID 1's namespace cannot always be read (containers), and guessing wrong would wire pods
    into the machine's own network.
    """
    me = netns_id()
    try:
        names = os.listdir(netns_dir)
    except OSError:
        return False
    for name in names:
        with contextlib.suppress(OSError):
            if netns_id(os.path.join(netns_dir, name)) == me:
                return True
    return False


def _in_netns_thread(path: str, make: Any) -> Any:
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            setns(path)
            result["value"] = make()
        except BaseException as err:  # handed back to the caller's thread
            result["error"] = err

    thread = threading.Thread(target=run, name="hexlane-setns")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def netlink_socket_in(path: str) -> socket.socket:
    """An rtnetlink socket living in the network namespace at `path` (which must exist)."""
    sock: socket.socket = _in_netns_thread(
        path, lambda: socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_ROUTE))
    return sock


@contextlib.asynccontextmanager
async def iproute_in(path: str | None = None) -> AsyncIterator[AsyncIPRoute]:
    """An AsyncIPRoute in the current namespace, or in the one at `path`."""
    ipr = AsyncIPRoute() if path is None else AsyncIPRoute(use_socket=netlink_socket_in(path))
    async with ipr:
        yield ipr


# --- sysctls --------------------------------------------------------------------------------


def write_sysctl(name: str, value: str) -> None:
    """Set a net.* sysctl of the calling thread's network namespace (`net.ipv4.ip_forward`)."""
    if not name.startswith("net."):
        raise ValueError(f"only per-namespace net.* sysctls are set here, not {name}")
    path = Path("/proc/sys") / name.replace(".", "/")
    current = path.read_text().strip()
    if current != value:
        path.write_text(value + "\n")



# --- links ---------------------------------------------------------------------------------


async def link_index(ipr: AsyncIPRoute, name: str) -> int | None:
    found = await ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


async def link_info(ipr: AsyncIPRoute, name: str) -> dict[str, Any] | None:
    """Name, index, MAC, MTU, up-ness and kind of a link, or None when it does not exist."""
    index = await link_index(ipr, name)
    if index is None:
        return None
    msg = (await ipr.link("get", index=index))[0]
    linkinfo = msg.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo is not None else None
    return {
        "name": name,
        "index": index,
        "mac": msg.get_attr("IFLA_ADDRESS"),
        "mtu": msg.get_attr("IFLA_MTU"),
        "up": bool(msg["flags"] & 1),
        "kind": kind,
    }


async def delete_link(ipr: AsyncIPRoute, name: str) -> bool:
    """Delete a link by name; False when there was none (deleting is idempotent)."""
    index = await link_index(ipr, name)
    if index is None:
        return False
    try:
        await ipr.link("del", index=index)
    except NetlinkError as err:
        if err.code != errno.ENODEV:
            raise
        return False
    return True


async def ensure_host_device(ipr: AsyncIPRoute, router: IPv4Address, mtu: int) -> int:
    """The `hexlane_host`/`hexlane_net` veth pair, up, with the router IP /32 on `hexlane_host`.

    As Cilium's `cilium_host`: the router IP is the pods' gateway and the node's source
    address towards pods. Returns the index of `hexlane_host`.
    """
    index = await link_index(ipr, HOST_DEVICE)
    if index is None:
        await ipr.link("add", ifname=HOST_DEVICE, kind="veth",
                       peer={"ifname": HOST_PEER_DEVICE})
        index = await link_index(ipr, HOST_DEVICE)
        assert index is not None
    peer = await link_index(ipr, HOST_PEER_DEVICE)
    for idx in (index, peer):
        if idx is not None:
            await ipr.link("set", index=idx, state="up", mtu=mtu)
    addresses = [a async for a in await ipr.addr("dump", index=index)]
    have = {(a.get_attr("IFA_ADDRESS"), a["prefixlen"]) for a in addresses}
    if (str(router), 32) not in have:
        await ipr.addr("add", index=index, address=str(router), prefixlen=32)
    return index


# --- endpoints -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EndpointLinks:
    host_ifname: str
    host_index: int
    host_mac: str
    pod_ifname: str
    pod_index: int
    pod_mac: str


async def create_endpoint_links(
    ipr: AsyncIPRoute, *, host_ifname: str, netns: str, pod_ifname: str, pod_mac: str,
    ip: IPv4Address, router: IPv4Address, mtu: int,
) -> EndpointLinks:
    """The endpoint's veth pair: host side here, peer created directly in the pod's namespace.

    In the pod: the interface gets `ip/32`, a link route to the router IP, the default route
    via the router IP and a permanent neighbour entry router IP -> host-side MAC (so the pod
    never has to ARP for its gateway); `lo` is brought up. A stale host link of the same name
    (from an ADD that died half-way) is removed first.
    """
    await delete_link(ipr, host_ifname)
    try:
        nsfd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        raise NetnsError(err.errno, f"cannot open pod network namespace {netns}: "
                                    f"{err.strerror}") from None
    try:
        await ipr.link("add", ifname=host_ifname, kind="veth", mtu=mtu,
                       peer={"ifname": pod_ifname, "net_ns_fd": nsfd, "address": pod_mac,
                             "mtu": mtu})
    finally:
        os.close(nsfd)
    host = await link_info(ipr, host_ifname)
    assert host is not None
    await ipr.link("set", index=host["index"], state="up")
    async with iproute_in(netns) as pod:
        pod_index = await link_index(pod, pod_ifname)
        if pod_index is None:
            raise NetnsError(errno.ENODEV, f"{pod_ifname} did not appear in {netns}")
        lo = await link_index(pod, "lo")
        if lo is not None:
            await pod.link("set", index=lo, state="up")
        await pod.link("set", index=pod_index, state="up")
        await pod.addr("replace", index=pod_index, address=str(ip), prefixlen=32)
        await pod.neigh("replace", dst=str(router), lladdr=host["mac"], ifindex=pod_index,
                        state=NUD_PERMANENT)
        await pod.route("replace", dst=f"{router}/32", oif=pod_index, scope=RT_SCOPE_LINK)
        await pod.route("replace", dst="0.0.0.0/0", gateway=str(router), oif=pod_index)
    return EndpointLinks(host_ifname, host["index"], host["mac"], pod_ifname, pod_index,
                         pod_mac)


@dataclass
class PodInterfaceFacts:
    """What CHECK compares: the pod interface's MAC, addresses and default gateway."""

    exists: bool
    mac: str | None = None
    addresses: list[str] = field(default_factory=list)
    default_gateway: str | None = None


async def inspect_pod_interface(netns: str, ifname: str) -> PodInterfaceFacts:
    async with iproute_in(netns) as pod:
        info = await link_info(pod, ifname)
        if info is None:
            return PodInterfaceFacts(False)
        addrs = [f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}"
                 async for a in await pod.addr("dump", index=info["index"])
                 if a["family"] == socket.AF_INET]
        gateway = None
        async for r in await pod.route("dump", table=RT_TABLE_MAIN):
            if r["family"] == socket.AF_INET and r["dst_len"] == 0 \
                    and r.get_attr("RTA_OIF") == info["index"]:
                gateway = r.get_attr("RTA_GATEWAY")
        return PodInterfaceFacts(True, info["mac"], addrs, gateway)


# --- routes, FDB, neighbours: the reconciler ----------------------------------------------------


@dataclass
class ReconcileReport:
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


def _route_from_msg(msg: Any, names: dict[int, str]) -> RouteSpec:
    dst = msg.get_attr("RTA_DST") or "0.0.0.0"
    gateway = msg.get_attr("RTA_GATEWAY")
    src = msg.get_attr("RTA_PREFSRC")
    oif = msg.get_attr("RTA_OIF")
    return RouteSpec(
        dst=IPv4Network(f"{dst}/{msg['dst_len']}"),
        kind="unreachable" if msg["type"] == RTN_UNREACHABLE else "unicast",
        gateway=IPv4Address(gateway) if gateway else None,
        device=names.get(oif) if oif is not None else None,
        onlink=bool(msg["flags"] & RTNH_F_ONLINK),
        src=IPv4Address(src) if src else None,
        scope_link=msg["scope"] == RT_SCOPE_LINK,
    )


def _route_matches(want: RouteSpec, have: RouteSpec) -> bool:
    # A desired route without a device lets the kernel pick it; do not compare that field.
    device_ok = want.device is None or want.device == have.device
    return device_ok and want == dataclasses.replace(have, device=want.device)


async def _link_names(ipr: AsyncIPRoute) -> dict[int, str]:
    return {link["index"]: link.get_attr("IFLA_IFNAME") async for link in await ipr.link("dump")}


async def owned_routes(ipr: AsyncIPRoute) -> dict[IPv4Network, RouteSpec]:
    """hexlane's routes in the main table (those with protocol `ROUTE_PROTO`), by destination."""
    names = await _link_names(ipr)
    routes: dict[IPv4Network, RouteSpec] = {}
    async for msg in await ipr.route("dump", table=RT_TABLE_MAIN):
        if msg["family"] == socket.AF_INET and msg["proto"] == ROUTE_PROTO:
            spec = _route_from_msg(msg, names)
            routes[spec.dst] = spec
    return routes


async def install_route(ipr: AsyncIPRoute, route: RouteSpec) -> None:
    """Add or replace one route, marked with hexlane's protocol number."""
    args: dict[str, Any] = {"dst": str(route.dst), "table": RT_TABLE_MAIN,
                            "proto": ROUTE_PROTO}
    if route.kind == "unreachable":
        args["type"] = RTN_UNREACHABLE
    else:
        if route.gateway is not None:
            args["gateway"] = str(route.gateway)
        if route.device is not None:
            index = await link_index(ipr, route.device)
            if index is None:
                raise NetnsError(errno.ENODEV, f"route {route.dst}: no device {route.device}")
            args["oif"] = index
        if route.onlink:
            args["flags"] = RTNH_F_ONLINK
        if route.src is not None:
            args["prefsrc"] = str(route.src)
        args["scope"] = RT_SCOPE_LINK if route.scope_link else RT_SCOPE_UNIVERSE
    await ipr.route("replace", **args)


async def remove_route(ipr: AsyncIPRoute, dst: IPv4Network) -> bool:
    try:
        await ipr.route("del", dst=str(dst), table=RT_TABLE_MAIN, proto=ROUTE_PROTO)
    except NetlinkError as err:
        if err.code in (errno.ESRCH, errno.ENOENT):
            return False
        raise
    return True


async def reconcile_routes(ipr: AsyncIPRoute, wanted: Iterable[RouteSpec],
                           report: ReconcileReport) -> None:
    """Make hexlane's routes equal `wanted`; routes of other protocols are never touched."""
    have = await owned_routes(ipr)
    want = {r.dst: r for r in wanted}
    for dst, route in sorted(want.items()):
        current = have.get(dst)
        if current is not None and _route_matches(route, current):
            continue
        try:
            await install_route(ipr, route)
            report.added.append(f"route {dst}")
        except (NetlinkError, NetnsError) as err:
            report.failed.append(f"route {dst}: {err}")
    for dst in sorted(set(have) - set(want)):
        if await remove_route(ipr, dst):
            report.removed.append(f"route {dst}")


async def ensure_vxlan(ipr: AsyncIPRoute, spec: VxlanSpec, report: ReconcileReport) -> int:
    """The VXLAN device as `spec` says (re-created when VNI, port or local IP differ)."""
    index = await link_index(ipr, spec.name)
    if index is not None:
        msg = (await ipr.link("get", index=index))[0]
        data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        current = (data.get_attr("IFLA_VXLAN_ID"), data.get_attr("IFLA_VXLAN_PORT"),
                   data.get_attr("IFLA_VXLAN_LOCAL"))
        if current != (spec.vni, spec.port, str(spec.local_ip)):
            await delete_link(ipr, spec.name)
            report.removed.append(f"link {spec.name} {current}")
            index = None
    if index is None:
        await ipr.link("add", ifname=spec.name, kind="vxlan", vxlan_id=spec.vni,
                       vxlan_port=spec.port, vxlan_local=str(spec.local_ip),
                       vxlan_learning=0, address=spec.mac, mtu=spec.mtu)
        report.added.append(f"link {spec.name}")
        index = await link_index(ipr, spec.name)
        assert index is not None
    info = await link_info(ipr, spec.name)
    assert info is not None
    changes: dict[str, Any] = {}
    # Setting the MAC, even to the same value, flushes the device's neighbour entries
    # (permanent ones included): only touch what differs.
    if info["mac"] != spec.mac:
        changes["address"] = spec.mac
    if info["mtu"] != spec.mtu:
        changes["mtu"] = spec.mtu
    if not info["up"]:
        changes["state"] = "up"
    if changes:
        await ipr.link("set", index=index, **changes)
    return index


async def reconcile_fdb(ipr: AsyncIPRoute, index: int, wanted: Iterable[FdbSpec],
                        report: ReconcileReport) -> None:
    have: set[tuple[str, str]] = set()
    async for msg in await ipr.fdb("dump", ifindex=index):
        if msg["ifindex"] == index and msg.get_attr("NDA_DST"):
            have.add((msg.get_attr("NDA_LLADDR"), msg.get_attr("NDA_DST")))
    want = {(f.mac, str(f.dst)) for f in wanted}
    for mac, dst in sorted(want - have):
        await ipr.fdb("append", ifindex=index, lladdr=mac, dst=dst, state=NUD_PERMANENT)
        report.added.append(f"fdb {mac} dst {dst}")
    for mac, dst in sorted(have - want):
        with contextlib.suppress(NetlinkError):
            await ipr.fdb("del", ifindex=index, lladdr=mac, dst=dst)
            report.removed.append(f"fdb {mac} dst {dst}")


async def reconcile_neighbors(ipr: AsyncIPRoute, index: int, wanted: Iterable[NeighborSpec],
                              report: ReconcileReport) -> None:
    have: set[tuple[str, str]] = set()
    async for msg in await ipr.neigh("dump", ifindex=index, family=socket.AF_INET):
        if msg["ifindex"] == index and msg["state"] & NUD_PERMANENT:
            have.add((msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")))
    want = {(str(n.ip), n.mac) for n in wanted}
    for ip, mac in sorted(want - have):
        await ipr.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=NUD_PERMANENT)
        report.added.append(f"neigh {ip} {mac}")
    for ip, mac in sorted(have - want):
        with contextlib.suppress(NetlinkError):
            await ipr.neigh("del", dst=ip, lladdr=mac, ifindex=index)
            report.removed.append(f"neigh {ip} {mac}")


async def apply_plan(ipr: AsyncIPRoute, plan: RoutePlan) -> ReconcileReport:
    """Converge the node's VXLAN device, FDB, neighbours and hexlane routes to `plan`."""
    report = ReconcileReport()
    by_device: dict[str, list[NeighborSpec]] = {}
    for n in plan.neighbors:
        by_device.setdefault(n.device, []).append(n)
    if plan.vxlan is not None:
        index = await ensure_vxlan(ipr, plan.vxlan, report)
        await reconcile_fdb(ipr, index, plan.fdb, report)
        await reconcile_neighbors(ipr, index, by_device.pop(VXLAN_DEVICE, []), report)
    elif await delete_link(ipr, VXLAN_DEVICE):
        report.removed.append(f"link {VXLAN_DEVICE}")
    for device, wanted in sorted(by_device.items()):  # endpoints' veths
        found = await link_index(ipr, device)
        if found is None:
            report.failed.append(f"neighbours on {device}: no such link")
            continue
        await reconcile_neighbors(ipr, found, wanted, report)
    await reconcile_routes(ipr, plan.routes, report)
    return report
