"""The lab's pod workload: what a lab kubelet runs inside a pod's network namespace.

- HTTP on every TCP port: `/` answers `<pod-name>\\n`, `/whoami` answers JSON
  `{"pod", "node", "client_ip", "client_port"}` (the address the pod saw: whether a load
  balancer or masquerading translated it shows here), anything else 404. A request body
  (`Content-Length`; `Expect: 100-continue` is answered) is read whole, and a POST or PUT
  answers as a GET does, with `"received": <body bytes>` added to `/whoami`'s JSON;
- UDP echo on every UDP port: a datagram `X` is answered with `<pod-name> X`, from the
  address `X` was sent to (IP_PKTINFO), as DNS servers answer: a socket bound to 0.0.0.0
  would otherwise answer from the address of the route back to the client, which on a host
  network can be another one (a tunnel route's 10.42.x.1 instead of the node's 10.0.0.12),
  and the client's reverse NAT would not know it.

Once every socket is bound it writes `--ready-file` (the kubelet's readiness signal), and on
SIGTERM it stops at once (the kubelet applies preStop and the grace period around it).

    python -m hexlane.lab.workload --pod web-1 --node node1 --tcp 80 --udp 53 --ready-file F
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import socket
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# IP_PKTINFO (linux/in.h), which the socket module may not name.
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)
_PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr


def reply_pktinfo(ancdata: Sequence[tuple[int, int, bytes]]) -> bytes | None:
    """The in_pktinfo to send an answer with, from a datagram's ancillary data (pure):
    spec_dst = the local address the datagram arrived on, ifindex 0 (routed as usual).
    None when the data holds no IP_PKTINFO."""
    for level, kind, data in ancdata:
        if level == socket.IPPROTO_IP and kind == IP_PKTINFO and len(data) >= _PKTINFO.size:
            _ifindex, spec_dst, _addr = _PKTINFO.unpack_from(data)
            return _PKTINFO.pack(0, spec_dst, b"\0\0\0\0")
    return None


class _Echo:
    """The UDP echo on one socket: each datagram answered from the address it was sent to."""

    def __init__(self, pod: str, sock: socket.socket) -> None:
        self.pod = pod.encode()
        self.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)

    def readable(self) -> None:
        space = socket.CMSG_SPACE(_PKTINFO.size)
        while True:
            try:
                data, ancdata, _flags, addr = self.sock.recvmsg(65535, space)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error of an earlier answer (reported once): next time
            info = reply_pktinfo(ancdata)
            cmsg = [(socket.IPPROTO_IP, IP_PKTINFO, info)] if info is not None else []
            with contextlib.suppress(OSError):
                self.sock.sendmsg([self.pod + b" " + data], cmsg, 0, addr)

    def close(self) -> None:
        self.sock.close()


def http_answer(path: str, pod: str, node: str, peer: tuple[str, int],
                received: int | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body) for a GET of `path`, or for a POST or PUT whose body
    had `received` bytes (pure)."""
    path = path.split("?", 1)[0]
    if path == "/":
        return 200, "text/plain", f"{pod}\n".encode()
    if path == "/whoami":
        body: dict[str, Any] = {"pod": pod, "node": node, "client_ip": peer[0],
                                "client_port": peer[1]}
        if received is not None:
            body["received"] = received
        return 200, "application/json", (json.dumps(body) + "\n").encode()
    if path == "/healthz":
        return 200, "text/plain", b"ok\n"
    return 404, "text/plain", b"not found\n"


REASONS = {100: "Continue", 200: "OK", 400: "Bad Request", 404: "Not Found"}
TIMEOUT = 30.0  # for each line of a request, and for its body


async def _read_body(reader: asyncio.StreamReader, length: int) -> int:
    """Read `length` bytes of a request body (in chunks, not kept); how many came."""
    got = 0
    while got < length:
        chunk = await asyncio.wait_for(reader.read(min(65536, length - got)), TIMEOUT)
        if not chunk:
            raise asyncio.IncompleteReadError(b"", length - got)
        got += len(chunk)
    return got


async def _http(pod: str, node: str, reader: asyncio.StreamReader,
                writer: asyncio.StreamWriter) -> None:
    peer = writer.get_extra_info("peername") or ("", 0)
    try:
        while True:
            request = await asyncio.wait_for(reader.readline(), TIMEOUT)
            if not request:
                break
            headers = []
            while (line := await asyncio.wait_for(reader.readline(), TIMEOUT)) not in (
                    b"\r\n", b"\n", b""):
                headers.append(line.decode(errors="replace").strip().lower())
            parts = request.decode(errors="replace").split()
            method = parts[0] if parts else "GET"
            path = parts[1] if len(parts) >= 2 else "/"
            length = next((h.split(":", 1)[1].strip() for h in headers
                           if h.startswith("content-length:")), None)
            close = "connection: close" in headers or (len(parts) > 2 and
                                                       parts[2] == "HTTP/1.0")
            received: int | None = None
            if length is not None and not length.isdigit():
                status, ctype, body = 400, "text/plain", b"bad content-length\n"
                close = True
            else:
                if length is not None and int(length):
                    if any(h.replace(" ", "") == "expect:100-continue" for h in headers):
                        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                        await writer.drain()
                    received = await _read_body(reader, int(length))
                if method in ("POST", "PUT"):
                    received = received or 0
                status, ctype, body = http_answer(path, pod, node,
                                                  (str(peer[0]), int(peer[1])), received)
            head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\n"
                    f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                    f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n")
            writer.write(head.encode() + (b"" if method == "HEAD" else body))
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
    echoes = []
    for port in udp:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("0.0.0.0", port))
        echo = _Echo(pod, sock)
        loop.add_reader(sock.fileno(), echo.readable)
        echoes.append(echo)
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if ready_file is not None:
        ready_file.write_text("ready\n")
    await stop.wait()
    for s in servers:
        s.close()
    for echo in echoes:
        loop.remove_reader(echo.sock.fileno())
        echo.close()


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
