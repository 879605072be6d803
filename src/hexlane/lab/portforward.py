"""`hexlane lab port-forward`: reach a lab host's TCP port from this machine's loopback, as
`kubectl port-forward` does for a pod.

A lab's addresses live in network namespaces; a browser on the machine cannot reach them,
and hexlane adds no address or route to the machine's own namespace. So a small asyncio
relay listens on a loopback address of the machine (127.0.0.1: nothing is added) and, for
each connection accepted, opens one from inside the lab host's namespace: the socket is
created by a thread that has entered the namespace with setns(2) (a socket stays in the
namespace it was created in, whichever thread uses it later), then connected and relayed
from the event loop. From a laptop, `ssh -L PORT:127.0.0.1:PORT machine` reaches it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import signal
import socket
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from hexlane.datapath.netlink import setns
from hexlane.lab import manager, netns
from hexlane.lab.proxy import pipe


def _loopback(address: str) -> str:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise manager.LabError(f"--address {address!r}: want an IP address") from None
    if not ip.is_loopback:
        raise manager.LabError(f"--address {address}: only a loopback address (the forward "
                               "is for this machine; from elsewhere use ssh -L)")
    return address


class Forwarder:
    """Listens on `address:local_port` of this machine; connects each accepted connection
    to `target_ip:port` from the network namespace `ns`."""

    def __init__(self, ns: str, target_ip: str, port: int, *, address: str = "127.0.0.1",
                 local_port: int | None = None) -> None:
        self.ns, self.target_ip, self.port = ns, target_ip, port
        self.address = _loopback(address)
        self.local_port = port if local_port is None else local_port
        self.server: asyncio.Server | None = None
        self.connections = 0
        # One thread that enters the namespace once and makes every socket there.
        self.pool = ThreadPoolExecutor(max_workers=1, initializer=setns,
                                       initargs=(netns.netns_path(ns),))
        self.tasks: set[asyncio.Task[None]] = set()

    def _socket(self) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        return sock

    async def start(self) -> int:
        """Listen; returns the local port (chosen by the kernel when 0 was asked)."""
        self.server = await asyncio.start_server(self._serve, self.address, self.local_port,
                                                 family=socket.AF_INET6 if ":" in self.address
                                                 else socket.AF_INET)
        self.local_port = int(self.server.sockets[0].getsockname()[1])
        return self.local_port

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        loop = asyncio.get_running_loop()
        try:
            sock = await loop.run_in_executor(self.pool, self._socket)
            try:
                await asyncio.wait_for(loop.sock_connect(sock, (self.target_ip, self.port)), 5)
            except (OSError, TimeoutError):
                sock.close()
                raise
            up_reader, up_writer = await asyncio.open_connection(sock=sock)
            self.connections += 1
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
            up_writer.close()
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            if task is not None:
                self.tasks.discard(task)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for task in list(self.tasks):
            task.cancel()
        self.pool.shutdown(wait=False)


def target(name: str, host: str) -> tuple[str, str]:
    """The namespace and address of a lab host (client, cp, node<i>)."""
    state = manager.LabState.load(name)
    if state is None:
        raise manager.LabError(f"no lab {name}")
    plan = state.plan
    if host not in [h.role for h in plan.hosts]:
        raise manager.LabError(f"the lab has no host {host!r} (want client, cp or "
                               f"node1..node{plan.nodes})")
    if not netns.exists(plan.netns(host)):
        raise manager.LabError(f"{host} of lab {name} has no namespace (lab down?)")
    return plan.netns(host), str(plan.host(host).ip)


def run(name: str, host: str, port: int, *, address: str = "127.0.0.1",
        local_port: int | None = None, say: Callable[[str], None] = print) -> int:
    """Forward until SIGINT or SIGTERM; then close everything."""
    ns, ip = target(name, host)

    async def go() -> None:
        fwd = Forwarder(ns, ip, port, address=address, local_port=local_port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            try:
                chosen = await fwd.start()
            except OSError as err:
                raise manager.LabError(f"cannot listen on {address}:{fwd.local_port}: "
                                       f"{err.strerror or err}") from None
            shown = f"[{address}]" if ":" in address else address
            say(f"Forwarding from {shown}:{chosen} -> {host} {ip}:{port} (lab {name}, from "
                f"inside its namespace {ns}); Ctrl-C stops")
            await stop.wait()
        finally:
            await fwd.close()
        say(f"stopped ({fwd.connections} connections forwarded)")

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())
    return 0
