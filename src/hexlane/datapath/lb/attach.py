"""Where the load balancer's programs sit: tc attachments as a table for the one reconciler.

`attachments(lan, links)` (pure) says which program goes on which hook: on every LAN device
hl_from_netdev at ingress (priority 3, after the masquerade's 2) and hl_to_netdev at egress;
hl_from_lo on lo's egress (the node's own NodePorts); hl_from_host on hexlane_host's egress
(the node's own connections to ClusterIPs); hl_from_pod/hl_to_pod on every pod veth (lxc*);
hl_from_overlay/hl_to_overlay on the VXLAN device. `TcTable` reads what sits there (only
filters with hexlane's handle whose program is one of ours, `hl_*`, or slots hexlane wants),
attaches and detaches, in the calling thread's network namespace. A filter detached behind
the agent's back, or a program left from a previous agent, is repaired by a resync (the
value is the program id, so a restarted agent replaces the old programs with its own).
"""

from __future__ import annotations

import errno
import json
import socket
import subprocess
from collections.abc import Callable, Iterable, Mapping, Sequence

from hexlane.datapath import libbpf
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
from hexlane.routing.routes import HOST_DEVICE, VXLAN_DEVICE

POD_DEVICE_PREFIX = "lxc"
LOOPBACK = "lo"
PROGRAM_PREFIX = "hl_"

#: (device, direction, priority): one tc slot with hexlane's handle
Slot = tuple[str, str, int]
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


class TcTable(Table[Slot, int]):
    """tc slots -> the id of the program attached there (see the module docstring)."""

    name = "tc_attachments"

    def __init__(self, datapath: LbDatapath) -> None:
        self.datapath = datapath
        self._ids: dict[str, int] = {}  # program name -> id of this agent's program
        self._fds: dict[int, int] = {}
        self._names: dict[int, str | None] = {}
        self.wanted: set[Slot] = set()

    def program_id(self, program: str) -> int:
        """The desired value for a slot holding `program`."""
        pid = self._ids.get(program)
        if pid is None:
            fd = self.datapath.program_fd(program)
            pid = libbpf.program_id(fd)
            self._ids[program] = pid
            self._fds[pid] = fd
        return pid

    def _ours(self, prog_id: int) -> bool:
        if prog_id in self._fds:
            return True
        if prog_id not in self._names:
            self._names[prog_id] = libbpf.program_name(prog_id)
        name = self._names[prog_id]
        return name is not None and name.startswith(PROGRAM_PREFIX)

    def read(self) -> Mapping[Slot, int]:
        out: dict[Slot, int] = {}
        for index, device in socket.if_nameindex():
            for direction, priority in SLOTS:
                try:
                    pid = libbpf.tc_query(index, direction, handle=TC_HANDLE,
                                          priority=priority)
                except libbpf.BpfError:
                    continue
                slot = (device, direction, priority)
                if pid is not None and (slot in self.wanted or self._ours(pid)):
                    out[slot] = pid
        return out

    def update(self, key: Slot, value: int) -> None:
        device, direction, priority = key
        fd = self._fds.get(value)
        if fd is None:
            raise ValueError(f"program id {value} is not one this agent loaded")
        libbpf.tc_attach(socket.if_nametoindex(device), fd, direction, handle=TC_HANDLE,
                         priority=priority)

    def delete(self, key: Slot) -> None:
        device, direction, priority = key
        try:
            libbpf.tc_detach(socket.if_nametoindex(device), direction, handle=TC_HANDLE,
                             priority=priority)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EINVAL):
                raise


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
            proc = subprocess.run(["ip", "-j", "link", "show", "dev", device],
                                  capture_output=True, text=True)
            if proc.returncode == 0 and proc.stdout.strip():
                flags = json.loads(proc.stdout)[0].get("flags", [])
                out[device] = "NOARP" in flags
        return out

    def update(self, key: str, value: bool) -> None:
        subprocess.run(["ip", "link", "set", "dev", key, "arp", "off" if value else "on"],
                       check=True, capture_output=True, text=True)

    def delete(self, key: str) -> None:
        """Nothing: the device keeps its flag (it is hexlane's own, and goes with cleanup)."""
