"""The heartbeat of hexlane's L2 election on the LAN: the key, the socket, the timer.

`load_key` reads the shared key from its Secret (`hexlane.l2.key`) and caches it 0600 in the
state directory; when the API server cannot be reached the cached key is used, so a
restarted agent keeps its place in the election while the control plane is away.

`Heartbeat` drives the pure protocol (`hexlane.l2.heartbeat.Membership`): one UDP socket
bound to the LAN device on `l2announcements.heartbeat.port`, a datagram broadcast every
interval, every datagram received handed to the membership, and `on_change` called whenever
the set of live nodes changes (a node heard for the first time, or silent for `deadAfter`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hexlane.k8s.client import ApiError, KubeClient
from hexlane.l2 import key as l2key
from hexlane.l2.heartbeat import Membership

log = logging.getLogger(__name__)

KEY_CACHE = "l2-heartbeat.key"
INCARNATION_FILE = "l2-heartbeat.incarnation"
BROADCAST = "255.255.255.255"


async def load_key(client: KubeClient, state_dir: Path) -> bytes:
    """The heartbeat key: from its Secret (refreshing the cache), else from the cache;
    `RuntimeError` when neither has it (the controller retries)."""
    cache = state_dir / KEY_CACHE
    path = f"/api/v1/namespaces/{l2key.SECRET_NAMESPACE}/secrets/{l2key.SECRET_NAME}"
    try:
        key = l2key.key_of(await client.request("GET", path))
    except (ApiError, ValueError) as err:
        try:
            return cache.read_bytes()
        except OSError:
            raise RuntimeError(f"no L2 heartbeat key yet ({err}); the operator creates "
                               f"{l2key.SECRET_NAMESPACE}/{l2key.SECRET_NAME}") from None
    try:
        if cache.read_bytes() == key:
            return key
    except OSError:
        pass
    tmp = cache.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    os.replace(tmp, cache)
    return key


def next_incarnation(state_dir: Path) -> int:
    """This run's incarnation: above every earlier run's (receivers accept only a larger
    (incarnation, seq) from a node), even with the clock stepped back; remembered."""
    path = state_dir / INCARNATION_FILE
    try:
        saved = int(path.read_text())
    except (OSError, ValueError):
        saved = 0
    value = max(time.time_ns(), saved + 1)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(f"{value}\n")
    os.replace(tmp, path)
    return value


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, received: Callable[[bytes], None]) -> None:
        self.received = received

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.received(data)

    def error_received(self, exc: Exception) -> None:  # e.g. the link went down
        log.debug("heartbeat socket: %s", exc)


class Heartbeat:
    """The membership on the wire (see the module docstring)."""

    def __init__(self, membership: Membership, device: str, port: int,
                 on_change: Callable[[frozenset[str]], None], *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.membership = membership
        self.device, self.port = device, port
        self.on_change = on_change
        self.clock = clock
        self.alive: frozenset[str] = frozenset()
        self.sent = 0
        self.send_errors = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.device.encode())
            sock.bind(("0.0.0.0", self.port))
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self._received), sock=sock)
        self._transport = transport
        self._task = asyncio.create_task(self._run(), name="l2-heartbeat")

    def _received(self, data: bytes) -> None:
        if self.membership.receive(data, self.clock()):
            self._check()

    def _check(self) -> None:
        alive = self.membership.alive(self.clock())
        if alive != self.alive:
            self.alive = alive
            self.on_change(alive)

    async def _run(self) -> None:
        while True:
            now = self.clock()
            data = self.membership.send(now)
            if data is not None and self._transport is not None:
                try:
                    self._transport.sendto(data, (BROADCAST, self.port))
                    self.sent += 1
                except OSError as err:  # the link is down: nobody hears us anyway
                    self.send_errors += 1
                    log.debug("heartbeat not sent: %s", err)
            self._check()
            wake = self.membership.next_deadline(now)
            delay = 0.1 if wake is None else wake - self.clock()
            await asyncio.sleep(max(0.005, min(delay, 0.1)))

    async def stop(self) -> None:
        """Say goodbye (a LEAVING heartbeat: the others take over at once), then close."""
        if self._transport is not None:
            with contextlib.suppress(OSError):
                self._transport.sendto(self.membership.leave(self.clock()),
                                       (BROADCAST, self.port))
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._transport is not None:
            self._transport.close()
            self._transport = None
