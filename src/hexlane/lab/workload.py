"""The lab's pod workload: what a lab kubelet runs inside a pod's network namespace.

- HTTP on every TCP port: `/` answers `<pod-name>\\n`, `/whoami` answers JSON
  `{"pod", "node", "client_ip", "client_port"}` (the address the pod saw: whether a load
  balancer or masquerading translated it shows here), anything else 404;
- UDP echo on every UDP port: a datagram `X` is answered with `<pod-name> X`.

Once every socket is bound it writes `--ready-file` (the kubelet's readiness signal), and on
SIGTERM it stops at once (the kubelet applies preStop and the grace period around it).

    python -m hexlane.lab.workload --pod web-1 --node node1 --tcp 80 --udp 53 --ready-file F
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


class _Echo(asyncio.DatagramProtocol):
    def __init__(self, pod: str) -> None:
        self.pod = pod.encode()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # The selector loop's datagram transport is not a DatagramTransport subclass.
        self.transport = transport

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(self.pod + b" " + data, addr)


def http_answer(path: str, pod: str, node: str, peer: tuple[str, int]) -> tuple[int, str, bytes]:
    """(status, content type, body) for a GET of `path` (pure)."""
    path = path.split("?", 1)[0]
    if path == "/":
        return 200, "text/plain", f"{pod}\n".encode()
    if path == "/whoami":
        body = {"pod": pod, "node": node, "client_ip": peer[0], "client_port": peer[1]}
        return 200, "application/json", (json.dumps(body) + "\n").encode()
    if path == "/healthz":
        return 200, "text/plain", b"ok\n"
    return 404, "text/plain", b"not found\n"


async def _http(pod: str, node: str, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername") or ("", 0)
    try:
        while True:
            request = await asyncio.wait_for(reader.readline(), 30)
            if not request:
                break
            headers = []
            while (line := await asyncio.wait_for(reader.readline(), 30)) not in (b"\r\n",
                                                                                   b"\n", b""):
                headers.append(line.decode(errors="replace").strip().lower())
            length = next((h.split(":", 1)[1].strip() for h in headers
                           if h.startswith("content-length:")), "0")
            if length.isdigit() and int(length):
                await reader.readexactly(int(length))  # a request body is read and ignored
            parts = request.decode(errors="replace").split()
            path = parts[1] if len(parts) >= 2 else "/"
            status, ctype, body = http_answer(path, pod, node, (str(peer[0]), int(peer[1])))
            close = "connection: close" in headers or (len(parts) > 2 and
                                                       parts[2] == "HTTP/1.0")
            reason = "OK" if status == 200 else "Not Found"
            head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
            writer.write(head.encode() + (b"" if parts[:1] == ["HEAD"] else body))
            await writer.drain()
            if close:
                break
    except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(pod: str, node: str, tcp: Sequence[int], udp: Sequence[int],
                ready_file: Path | None) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for port in tcp:
        servers.append(await asyncio.start_server(
            lambda r, w: _http(pod, node, r, w), "0.0.0.0", port, reuse_address=True))
    transports = []
    for port in udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        transport, _ = await loop.create_datagram_endpoint(lambda: _Echo(pod), sock=sock)
        transports.append(transport)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    await stop.wait()
    for s in servers:
        s.close()
    for t in transports:
        t.close()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hexlane.lab.workload")
    p.add_argument("--pod", required=True)
    p.add_argument("--node", default="")
    p.add_argument("--tcp", type=int, action="append", default=[])
    p.add_argument("--udp", type=int, action="append", default=[])
    p.add_argument("--ready-file", type=Path)
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.pod, args.node, args.tcp, args.udp, args.ready_file))
    except OSError as e:
        print(f"hexlane lab workload: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
