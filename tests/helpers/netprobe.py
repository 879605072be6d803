"""Probe many TCP and UDP targets at once from wherever this runs (a pod's namespace).

    python netprobe.py '{"timeout": 0.5, "targets": [["10.42.0.5", 80, "TCP"], ...]}'

prints a JSON list of booleans, one per target: whether the target answered. TCP: the
connection was accepted or refused (a RST came back: the path is open, nothing listens); UDP:
a datagram came back, or an ICMP port unreachable did (sent twice, at 0 and half the
timeout); ICMP: an echo request answered (`ping -c 1`, the port ignored). A target that stays
silent for the timeout is False: what a policy drop looks like.
Standard library only: it runs with the test's interpreter inside a pod's namespace.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
from typing import Any


async def tcp(ip: str, port: int, timeout: float) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(ip, port), timeout)
    except ConnectionRefusedError:
        return True
    except (TimeoutError, OSError):
        return False
    writer.close()
    return True


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, done: asyncio.Future[bool]) -> None:
        self.done = done

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not self.done.done():
            self.done.set_result(True)

    def error_received(self, exc: Exception) -> None:
        if isinstance(exc, ConnectionRefusedError) and not self.done.done():
            self.done.set_result(True)


async def udp(ip: str, port: int, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bool] = loop.create_future()
    transport, _ = await loop.create_datagram_endpoint(lambda: _Udp(done),
                                                       remote_addr=(ip, port),
                                                       family=socket.AF_INET)
    try:
        transport.sendto(b"probe")
        try:
            return await asyncio.wait_for(asyncio.shield(done), timeout / 2)
        except TimeoutError:
            transport.sendto(b"probe")
        try:
            return await asyncio.wait_for(done, timeout / 2)
        except TimeoutError:
            return False
    finally:
        transport.close()


async def icmp(ip: str, _port: int, timeout: float) -> bool:
    proc = await asyncio.create_subprocess_exec(
        "ping", "-n", "-q", "-c", "1", "-W", str(max(timeout, 0.2)), ip,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0


async def probe(targets: list[list[Any]], timeout: float) -> list[bool]:
    kinds = {"TCP": tcp, "UDP": udp, "ICMP": icmp}
    return list(await asyncio.gather(*(kinds[proto](ip, int(port), timeout)
                                       for ip, port, proto in targets)))


def main() -> None:
    spec = json.loads(sys.argv[1])
    print(json.dumps(asyncio.run(probe(spec["targets"], float(spec["timeout"])))))


if __name__ == "__main__":
    main()
