"""hexlane's tc (clsact) filters as a table for the one reconciler, through libbpf.

A key is a slot (device, direction, priority) under one tc handle, its value the id of the
program attached there. `TcTable(program_fd, handle, slots)` reads the `slots` (direction,
priority) of every device in the calling thread's network namespace and keeps a filter only
where hexlane wants one or where the program is hexlane's (named `hl_*`: a previous agent's),
so a foreign filter is never touched; `update` attaches (creating clsact), `delete`
detaches. `program_id(name)` is the desired value of a slot holding the program `name`
(`program_fd(name)` gives its fd): its id, so a restarted agent replaces an old agent's
programs with its own. Every hexlane tc filter is attached here: the load balancer's
(`hexlane.datapath.lb.attach`) and the masquerade's (`hexlane.datapath.masq`).
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable, Mapping, Sequence

from hexlane.datapath import libbpf
from hexlane.datapath.reconcile import Table

PROGRAM_PREFIX = "hl_"

#: (device, direction, priority): one tc slot under the table's handle
Slot = tuple[str, str, int]


class TcTable(Table[Slot, int]):
    """tc slots -> the id of the program attached there (see the module docstring)."""

    def __init__(self, program_fd: Callable[[str], int], *, handle: int,
                 slots: Sequence[tuple[str, int]], name: str = "tc_attachments") -> None:
        self.program_fd = program_fd
        self.handle = handle
        self.slots = tuple(slots)
        self.name = name
        self._ids: dict[str, int] = {}  # program name -> id of this agent's program
        self._fds: dict[int, int] = {}
        self._names: dict[int, str | None] = {}
        self.wanted: set[Slot] = set()

    def program_id(self, program: str) -> int:
        """The desired value for a slot holding `program`."""
        pid = self._ids.get(program)
        if pid is None:
            fd = self.program_fd(program)
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
            for direction, priority in self.slots:
                try:
                    pid = libbpf.tc_query(index, direction, handle=self.handle,
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
        libbpf.tc_attach(socket.if_nametoindex(device), fd, direction, handle=self.handle,
                         priority=priority)

    def delete(self, key: Slot) -> None:
        device, direction, priority = key
        try:
            libbpf.tc_detach(socket.if_nametoindex(device), direction, handle=self.handle,
                             priority=priority)
        except OSError as err:
            if err.errno not in (errno.ENOENT, errno.ENODEV, errno.ENXIO, errno.EINVAL):
                raise
