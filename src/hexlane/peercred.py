"""Who is at the other end of a UNIX socket, and whether hexlane serves them (standard library
only: the agent's API and the Hubble server both ask).

An abstract UNIX socket (`@hexlane-agent`, `@hexlane-hubble`) has no file, so no permissions:
any process of the network namespace can connect. The kernel says who connected
(`SO_PEERCRED`: pid, uid, gid at connect time); hexlane serves root and holders of
CAP_NET_ADMIN (read from /proc/<pid>/status), as a socket file of mode 0600 owned by root
would, plus the capability a containerised caller has.
"""

from __future__ import annotations

import socket
import struct

CAP_NET_ADMIN = 12
_UCRED = struct.Struct("3i")  # pid, uid, gid


def peer(sock: socket.socket | None) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a connected UNIX socket; None for any
    other socket."""
    if sock is None or sock.family != socket.AF_UNIX:
        return None
    pid, uid, _gid = _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED,
                                                   _UCRED.size))
    return pid, uid


def has_net_admin(pid: int) -> bool:
    """Whether process `pid` holds CAP_NET_ADMIN in its effective set (False when gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError):
        pass
    return False


def privileged(pid: int, uid: int) -> bool:
    """Root, or a process holding CAP_NET_ADMIN."""
    return uid == 0 or (pid > 0 and has_net_admin(pid))
