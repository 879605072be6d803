"""The netlink edge of pod networking: veth pairs, addresses, routes, VXLAN, FDB and sysctls.

Everything here acts in the network namespace of the calling thread (the node's, where the
agent runs) or, for the pod side of an endpoint, in the pod's namespace through a netlink
socket opened there. It carries out what `hexlane.ipam.routes` planned and decides nothing
itself: the node's links (`hexlane_host`, `hexlane_vxlan`), FDB, permanent neighbour entries
and routes are four tables (`LinkTable`, `FdbTable`, `NeighborTable`, `RouteTable`) converged
by the one reconciler (`hexlane.datapath.reconcile`), held together by `NodeNetwork`; each
reads back only what is hexlane's (protocol 104 routes, entries on hexlane's own links), so
nothing foreign is ever removed. Inspect what it made with `ip link`,
`ip route show proto 104`, `ip neigh show nud permanent` and
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
import re
import socket
import threading
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from hexlane.datapath import sysctl
from hexlane.datapath.reconcile import (
    AsyncReconciler,
    AsyncTable,
    FlushResult,
    K,
    V,
    flush_group_async,
)
from hexlane.ipam.routes import (
    HOST_DEVICE,
    HOST_PEER_DEVICE,
    ROUTE_PROTO,
    VXLAN_DEVICE,
    FdbSpec,
    RoutePlan,
    RouteSpec,
    VxlanSpec,
)

CLONE_NEWNET = 0x40000000
NETLINK_ROUTE = 0
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RT_SCOPE_NOWHERE = 255
RTN_UNREACHABLE = 7
RTNH_F_ONLINK = 4
NUD_NOARP = 0x40
NUD_PERMANENT = 0x80
NTF_SELF = 0x02

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
    """Set a net.* sysctl of the calling thread's network namespace (`net.ipv4.ip_forward`),
    once; `hexlane.datapath.sysctl.SysctlTable` keeps sysctls set (read back by a resync)."""
    sysctl.write_sysctl(name, value)


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


# --- links, FDB, neighbours, routes: tables for the one reconciler --------------------------------
#
# Each kind of object is an `AsyncTable` of `hexlane.datapath.reconcile` that reads back only
# what is hexlane's (routes of protocol `ROUTE_PROTO`; FDB and permanent neighbour entries on
# hexlane's own links; the links by their names), so a resync never removes anything foreign.
# `NodeNetwork` holds one `AsyncReconciler` per table; `apply_plan` is a one-shot use of it.

_POD_LINK = re.compile(r"^lxc[0-9a-f]{12}$")
OWN_LINKS = (HOST_DEVICE, HOST_PEER_DEVICE, VXLAN_DEVICE)


def owns_link(name: str) -> bool:
    """Whether a link is hexlane's: the host pair, the tunnel, a pod's host-side veth."""
    return name in OWN_LINKS or bool(_POD_LINK.match(name))


#: What tables wrote, in order: ("added" or "removed", "route 10.86.2.0/24").
Journal = list[tuple[str, str]]


@dataclass
class ReconcileReport:
    """What a run wrote (`added`, `removed`), and what is still failing (retried later)."""

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
    """Delete hexlane's route to `dst` (only one with its protocol); False when there was none."""
    try:
        # Scope "nowhere" matches a route of any scope (as `ip route del` asks): scope
        # link routes (endpoints', service addresses') included.
        await ipr.route("del", dst=str(dst), table=RT_TABLE_MAIN, proto=ROUTE_PROTO,
                        scope=RT_SCOPE_NOWHERE)
    except NetlinkError as err:
        if err.code in (errno.ESRCH, errno.ENOENT):
            return False
        raise
    return True


class _NetlinkTable(AsyncTable[K, V]):
    """A table read and written through the netlink socket `ipr`; what it writes goes to
    `journal`. Upserts go in key order."""

    def __init__(self, ipr: AsyncIPRoute, journal: Journal | None = None) -> None:
        self.ipr = ipr
        self.journal: Journal = journal if journal is not None else []
        self.order = _by_value

    async def _delete_on(self, device: str, kind: str, said: str, **entry: Any) -> None:
        """Delete one `kind` ("neigh" or "fdb") entry of `device`, journalled as `said`;
        gone already, or with its device, is not an error."""
        index = await link_index(self.ipr, device)
        if index is None:
            return
        try:
            await getattr(self.ipr, kind)("del", ifindex=index, **entry)
        except NetlinkError as err:
            if err.code not in (errno.ENOENT, errno.ESRCH):
                raise
            return
        self.journal.append(("removed", said))


class RouteTable(_NetlinkTable[IPv4Network, RouteSpec]):
    """hexlane's routes in the main table, by destination. Only routes with protocol
    `ROUTE_PROTO` are read or deleted; another protocol's route is never touched (a desired
    route to the same destination does replace it, as `ip route replace` would)."""

    name = "routes"

    async def read(self) -> dict[IPv4Network, RouteSpec]:
        return await owned_routes(self.ipr)

    async def update(self, key: IPv4Network, value: RouteSpec) -> None:
        await install_route(self.ipr, value)
        self.journal.append(("added", f"route {key}"))

    async def delete(self, key: IPv4Network) -> None:
        if await remove_route(self.ipr, key):
            self.journal.append(("removed", f"route {key}"))

    def equal(self, want: RouteSpec, have: RouteSpec) -> bool:
        return _route_matches(want, have)


FdbKey = tuple[str, IPv4Address]  # (MAC, remote node IP)


class FdbTable(_NetlinkTable[FdbKey, FdbSpec]):
    """The FDB entries of the VXLAN device (every one is hexlane's: learning is off), by
    (MAC, remote IP); a MAC re-pointed elsewhere reads as one stale key and one missing.
    Entries of any other device are never read. A missing device reads as empty; writing to
    it fails (ENODEV) until it exists again."""

    name = "fdb"

    def __init__(self, ipr: AsyncIPRoute, journal: Journal | None = None,
                 device: str = VXLAN_DEVICE) -> None:
        super().__init__(ipr, journal)
        self.device = device

    async def read(self) -> dict[FdbKey, FdbSpec]:
        index = await link_index(self.ipr, self.device)
        if index is None:
            return {}
        out: dict[FdbKey, FdbSpec] = {}
        async for msg in await self.ipr.fdb("dump", ifindex=index):
            dst = msg.get_attr("NDA_DST")
            if msg["ifindex"] == index and dst:
                spec = FdbSpec(msg.get_attr("NDA_LLADDR"), IPv4Address(dst), self.device)
                out[(spec.mac, spec.dst)] = spec
        return out

    async def update(self, key: FdbKey, value: FdbSpec) -> None:
        index = await link_index(self.ipr, value.device)
        if index is None:
            raise NetnsError(errno.ENODEV, f"fdb {value.mac}: no device {value.device}")
        # A unicast MAC has one remote in a VXLAN FDB (appending a second is a no-op for
        # the kernel): writing (MAC, dst) replaces whatever remote the MAC had.
        await self.ipr.fdb("replace", ifindex=index, lladdr=value.mac, dst=str(value.dst),
                           state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)
        self.journal.append(("added", f"fdb {value.mac} dst {value.dst}"))

    async def delete(self, key: FdbKey) -> None:
        mac, dst = key
        await self._delete_on(self.device, "fdb", f"fdb {mac} dst {dst}", lladdr=mac,
                              dst=str(dst))


NeighborKey = tuple[str, IPv4Address]  # (device, IP)


class NeighborTable(_NetlinkTable[NeighborKey, str]):
    """Permanent IPv4 neighbour entries on hexlane's own links (`owns_link`), by (device, IP),
    the MAC as value. Entries the kernel learned (not NUD_PERMANENT) and entries on any other
    link are never read, so never removed."""

    name = "neighbors"

    async def read(self) -> dict[NeighborKey, str]:
        names = await _link_names(self.ipr)
        out: dict[NeighborKey, str] = {}
        async for msg in await self.ipr.neigh("dump", family=socket.AF_INET):
            device = names.get(msg["ifindex"])
            dst, mac = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
            if (device is not None and owns_link(device) and msg["state"] & NUD_PERMANENT
                    and dst and mac):
                out[(device, IPv4Address(dst))] = mac
        return out

    async def update(self, key: NeighborKey, value: str) -> None:
        device, ip = key
        index = await link_index(self.ipr, device)
        if index is None:
            raise NetnsError(errno.ENODEV, f"neigh {ip}: no device {device}")
        await self.ipr.neigh("replace", dst=str(ip), lladdr=value, ifindex=index,
                             state=NUD_PERMANENT)
        self.journal.append(("added", f"neigh {ip} {value} dev {device}"))

    async def delete(self, key: NeighborKey) -> None:
        device, ip = key
        await self._delete_on(device, "neigh", f"neigh {ip} dev {device}", dst=str(ip))


@dataclass(frozen=True)
class HostDeviceSpec:
    """The `hexlane_host`/`hexlane_net` pair: the MTU of both and the /32 addresses on
    `hexlane_host` (wanted: the router IP; read back: every /32 it holds)."""

    mtu: int
    addresses: frozenset[IPv4Address]


@dataclass(frozen=True)
class LinkState:
    """A link hexlane ensures, as wanted or as read back: its spec (None when a link of
    another kind has the name) and whether it is up (a veth: both ends)."""

    spec: VxlanSpec | HostDeviceSpec | None
    up: bool = True


class LinkTable(_NetlinkTable[str, LinkState]):
    """hexlane's ensured links by name: the tunnel device (`VxlanSpec`) and the host pair
    (`HostDeviceSpec`). Only the names given are read. Writing one is `ensure_vxlan` /
    `ensure_host_device` (a link of the wrong kind or VXLAN identity is made again: what
    hung on it, FDB, neighbours and routes, goes with it); deleting it deletes the link."""

    name = "links"

    def __init__(self, ipr: AsyncIPRoute, names: Iterable[str] = (HOST_DEVICE, VXLAN_DEVICE),
                 journal: Journal | None = None) -> None:
        super().__init__(ipr, journal)
        self.names = tuple(names)
        # The host device first: tunnel routes take their source address from it.
        self.order = lambda name: name != HOST_DEVICE

    async def read(self) -> dict[str, LinkState]:
        out: dict[str, LinkState] = {}
        for name in self.names:
            info = await link_info(self.ipr, name)
            if info is None:
                continue
            if info["kind"] == "vxlan":
                out[name] = LinkState(await _read_vxlan(self.ipr, info), info["up"])
            elif info["kind"] == "veth" and name == HOST_DEVICE:
                peer = await link_info(self.ipr, HOST_PEER_DEVICE)
                addresses = frozenset([
                    IPv4Address(a.get_attr("IFA_ADDRESS"))
                    async for a in await self.ipr.addr("dump", index=info["index"])
                    if a["index"] == info["index"] and a["family"] == socket.AF_INET
                    and a["prefixlen"] == 32])
                out[name] = LinkState(HostDeviceSpec(info["mtu"], addresses),
                                      info["up"] and peer is not None and peer["up"])
            else:
                out[name] = LinkState(None, info["up"])
        return out

    async def update(self, key: str, value: LinkState) -> None:
        spec = value.spec
        if isinstance(spec, VxlanSpec):
            await ensure_vxlan(self.ipr, spec, self.journal)
        elif isinstance(spec, HostDeviceSpec):
            info = await link_info(self.ipr, key)
            if info is not None and info["kind"] != "veth":
                await delete_link(self.ipr, key)
                self.journal.append(("removed", f"link {key} ({info['kind']})"))
            for address in sorted(spec.addresses):
                await ensure_host_device(self.ipr, address, spec.mtu)
            self.journal.append(("added", f"link {key}"))
        else:
            raise ValueError(f"link {key}: nothing to ensure")

    async def delete(self, key: str) -> None:
        if await delete_link(self.ipr, key):
            self.journal.append(("removed", f"link {key}"))

    def equal(self, want: LinkState, have: LinkState) -> bool:
        if want.up != have.up:
            return False
        w, h = want.spec, have.spec
        if isinstance(w, HostDeviceSpec) and isinstance(h, HostDeviceSpec):
            return w.mtu == h.mtu and w.addresses <= h.addresses  # others' addresses may stay
        return w == h


def _by_value(key: Any) -> Any:
    return key


async def _read_vxlan(ipr: AsyncIPRoute, info: dict[str, Any]) -> VxlanSpec:
    msg = (await ipr.link("get", index=info["index"]))[0]
    data = msg.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    local = data.get_attr("IFLA_VXLAN_LOCAL")
    return VxlanSpec(info["name"], data.get_attr("IFLA_VXLAN_ID"),
                     data.get_attr("IFLA_VXLAN_PORT"),
                     IPv4Address(local) if local else IPv4Address(0), info["mac"], info["mtu"])


async def ensure_vxlan(ipr: AsyncIPRoute, spec: VxlanSpec,
                       journal: Journal | None = None) -> int:
    """The VXLAN device as `spec` says (made again when VNI, port, local IP or the link's kind
    differ; MAC, MTU and up-ness set in place). Returns its index."""
    said: Journal = journal if journal is not None else []
    info = await link_info(ipr, spec.name)
    if info is not None:
        current = await _read_vxlan(ipr, info) if info["kind"] == "vxlan" else None
        if current is None or (current.vni, current.port, current.local_ip) != (
                spec.vni, spec.port, spec.local_ip):
            await delete_link(ipr, spec.name)
            what = (f"vni {current.vni} port {current.port} local {current.local_ip}"
                    if current is not None else str(info["kind"]))
            said.append(("removed", f"link {spec.name} ({what})"))
            info = None
    if info is None:
        await ipr.link("add", ifname=spec.name, kind="vxlan", vxlan_id=spec.vni,
                       vxlan_port=spec.port, vxlan_local=str(spec.local_ip),
                       vxlan_learning=0, address=spec.mac, mtu=spec.mtu)
        said.append(("added", f"link {spec.name}"))
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
        await ipr.link("set", index=info["index"], **changes)
        said.append(("added", f"link {spec.name} {sorted(changes)}"))
    return int(info["index"])


class NodeNetwork:
    """The node's links, FDB, neighbours and routes, each converged by its own long-lived
    `AsyncReconciler`, all through one netlink socket (the node's namespace).

    `set_plan` hands over a `RoutePlan` (and the host device); only what differs from the
    previous plan becomes dirty, so `flush()` after a change among many entries writes that
    change alone. `resync()` reads all four tables back first (`detect`) and repairs what
    changed behind the agent's back, counted in each reconciler's `repairs`.

    Order: links first, then FDB, neighbours and routes (their upserts in that order, their
    deletes in reverse), and links that go away last. When a link was written (made again,
    brought up), what hung on it may be gone with the old one: the other three tables are read
    back at once (`detect`), and what they miss is written in the same flush.
    """

    def __init__(self, ipr: AsyncIPRoute, *,
                 links: Iterable[str] = (HOST_DEVICE, VXLAN_DEVICE)) -> None:
        self.journal: Journal = []
        self.links = AsyncReconciler(LinkTable(ipr, links, self.journal))
        self.fdb = AsyncReconciler(FdbTable(ipr, self.journal))
        self.neighbors = AsyncReconciler(NeighborTable(ipr, self.journal))
        self.routes = AsyncReconciler(RouteTable(ipr, self.journal))

    @property
    def reconcilers(self) -> list[AsyncReconciler[Any, Any]]:
        return [self.links, self.fdb, self.neighbors, self.routes]

    def set_plan(self, plan: RoutePlan, host: HostDeviceSpec | None = None) -> None:
        """The desired tables: `plan`'s VXLAN device, FDB, neighbours and routes, and the host
        device when given (without it, the host device is not this reconciler's)."""
        links: dict[str, LinkState] = {}
        if host is not None:
            links[HOST_DEVICE] = LinkState(host)
        if plan.vxlan is not None:
            links[plan.vxlan.name] = LinkState(plan.vxlan)
        self.links.set_all(links)
        self.fdb.set_all({(f.mac, f.dst): f for f in plan.fdb})
        self.neighbors.set_all({(n.device, n.ip): n.mac for n in plan.neighbors})
        self.routes.set_all({r.dst: r for r in plan.routes})

    async def detect(self) -> int:
        """Read every table back; mark what differs. The new repairs."""
        return sum([await rec.detect() for rec in self.reconcilers])

    async def flush(self) -> FlushResult:
        """Write what is dirty (see the class docstring for the order)."""
        result = await self.links.flush_upserts()
        if result.updated:
            for rec in (self.fdb, self.neighbors, self.routes):
                await rec.detect()
        result.add(await flush_group_async([self.fdb, self.neighbors, self.routes]))
        result.add(await self.links.flush_deletes())
        return result

    async def resync(self) -> FlushResult:
        await self.detect()
        return await self.flush()

    def report(self) -> ReconcileReport:
        """What was written since the last report, and every entry still failing."""
        report = ReconcileReport(
            added=[what for act, what in self.journal if act == "added"],
            removed=[what for act, what in self.journal if act == "removed"])
        self.journal.clear()
        for rec in self.reconcilers:
            report.failed += [f"{rec.name} {_key_text(key)}: {err}"
                              for key, err in rec.last_errors.items()]
        return report


def _key_text(key: Any) -> str:
    return " ".join(map(str, key)) if isinstance(key, tuple) else str(key)


async def apply_plan(ipr: AsyncIPRoute, plan: RoutePlan) -> ReconcileReport:
    """Converge the node's VXLAN device, FDB, neighbours and hexlane routes to `plan`, once
    (read back, then written: a `NodeNetwork` used for one resync). The host device is left
    as it is; the agent keeps a `NodeNetwork` instead (`EndpointManager`)."""
    net = NodeNetwork(ipr, links=(VXLAN_DEVICE,))
    net.set_plan(plan)
    await net.resync()
    return net.report()
