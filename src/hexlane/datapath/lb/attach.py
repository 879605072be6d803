"""Where the load balancer's programs sit: tc attachments as a table for the one reconciler.

`attachments(lan, links)` (pure) says which program goes on which hook: on every LAN device
hl_from_netdev at ingress (priority 3, after the masquerade's 2) and hl_to_netdev at egress;
hl_from_lo on lo's egress (the node's own NodePorts); hl_from_host on hexlane_host's egress
(the node's own connections to ClusterIPs); hl_from_pod/hl_to_pod on every pod veth (lxc*);
hl_from_overlay/hl_to_overlay on the VXLAN device. `TcTable(datapath)` is the tc table
(`hexlane.datapath.tc`) of those slots under the load balancer's handle, in the calling
thread's network namespace. A filter detached behind the agent's back, or a program left from
a previous agent, is repaired by a resync (the value is the program id, so a restarted agent
replaces the old programs with its own). `NoArpTable`: devices that must not do ARP.
"""

from __future__ import annotations

import errno
import fcntl
import socket
import struct
from collections.abc import Callable, Iterable, Sequence

from hexlane.datapath import tc
from hexlane.datapath.lb.loader import (
    NETDEV_TC_PRIORITY,
    PROGRAM_FROM_HOST,
    PROGRAM_FROM_LOOPBACK,
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_OVERLAY,
    PROGRAM_FROM_POD,
    PROGRAM_TO_NETDEV,
    PROGRAM_TO_OVERLAY,
    PROGRAM_TO_POD,
    TC_HANDLE,
    TC_PRIORITY,
    LbDatapath,
)
from hexlane.datapath.reconcile import Table
from hexlane.ipam.routes import HOST_DEVICE, VXLAN_DEVICE

POD_DEVICE_PREFIX = "lxc"
LOOPBACK = "lo"

Slot = tc.Slot
#: the slots hexlane uses on any device (for finding its own filters)
SLOTS = (("ingress", TC_PRIORITY), ("ingress", NETDEV_TC_PRIORITY), ("egress", TC_PRIORITY))


def attachments(lan: Sequence[str], links: Iterable[str]) -> dict[Slot, str]:
    """Which program each slot should hold, given the LAN devices and the links present."""
    out: dict[Slot, str] = {}
    for name in lan:
        out[name, "ingress", NETDEV_TC_PRIORITY] = PROGRAM_FROM_NETDEV
        out[name, "egress", TC_PRIORITY] = PROGRAM_TO_NETDEV
    out[LOOPBACK, "egress", TC_PRIORITY] = PROGRAM_FROM_LOOPBACK
    for name in links:
        if name == HOST_DEVICE:
            out[name, "egress", TC_PRIORITY] = PROGRAM_FROM_HOST
        elif name == VXLAN_DEVICE:
            out[name, "ingress", TC_PRIORITY] = PROGRAM_FROM_OVERLAY
            out[name, "egress", TC_PRIORITY] = PROGRAM_TO_OVERLAY
        elif name.startswith(POD_DEVICE_PREFIX):
            out[name, "ingress", TC_PRIORITY] = PROGRAM_FROM_POD
            out[name, "egress", TC_PRIORITY] = PROGRAM_TO_POD
    return out


class TcTable(tc.TcTable):
    """The load balancer's tc slots -> the id of the program attached there."""

    def __init__(self, datapath: LbDatapath) -> None:
        super().__init__(datapath.program_fd, handle=TC_HANDLE, slots=SLOTS)
        self.datapath = datapath


# ioctl(2) on a socket of the calling thread's namespace, as `ip link set DEV arp off` sets
# the flag by netlink: struct ifreq is the name (16 bytes) and the flags (a short), padded.
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_NOARP = 0x80
_IFREQ = struct.Struct("16sH22x")


def _link_flags(device: str, new: int | None = None) -> int | None:
    """The device's flags (None: no such device); with `new`, set them first."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = SIOCGIFFLAGS if new is None else SIOCSIFFLAGS
        try:
            out = fcntl.ioctl(sock, request, _IFREQ.pack(device.encode(), new or 0))
        except OSError as err:
            if err.errno == errno.ENODEV:
                return None
            raise
    return int(_IFREQ.unpack(out)[1])


class NoArpTable(Table[str, bool]):
    """Devices that must not answer or send ARP (`ip link set DEV arp off`): hexlane_host,
    so the node's packets to service addresses reach hl_from_host at once. `read()` reads
    the devices `names()` gives (the desired table's); no longer wanted leaves the flag."""

    name = "link_noarp"

    def __init__(self, names: Callable[[], Iterable[str]] = tuple) -> None:
        self.names = names

    def read(self) -> dict[str, bool]:
        out: dict[str, bool] = {}
        for device in self.names():
            flags = _link_flags(device)
            if flags is not None:
                out[device] = bool(flags & IFF_NOARP)
        return out

    def update(self, key: str, value: bool) -> None:
        flags = _link_flags(key)
        if flags is None:
            raise OSError(errno.ENODEV, f"no device {key}")
        _link_flags(key, flags | IFF_NOARP if value else flags & ~IFF_NOARP)

    def delete(self, key: str) -> None:
        """Nothing: the device keeps its flag (it is hexlane's own, and goes with cleanup)."""
