"""A node-local API proxy: TCP from `--listen ADDR:PORT` to `--target ADDR:PORT`.

k3s (127.0.0.1:6444) and Talos (127.0.0.1:7445) give every node a local address for the API
server, which is what Cilium's `k8sServiceHost/Port` point at before any Service works. The lab
starts this forwarder in each node's namespace (and in the control plane's, for the operator)
on the address the values name. Bytes are copied as they are: TLS is end to end.

    python -m hexlane.lab.proxy --listen 127.0.0.1:6444 --target 10.0.0.10:6443
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import Sequence


def _addr(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"want ADDR:PORT, got {text!r}")
    return host.strip("[]"), int(port)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction of a relayed connection until EOF (then half-close), quietly
    ending when either side goes away (also the port-forward's relay)."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass


async def _forward(target: tuple[str, int], reader: asyncio.StreamReader,
                   writer: asyncio.StreamWriter) -> None:
    try:
        up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*target), 10)
    except (OSError, TimeoutError):
        writer.close()
        return
    try:
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
    finally:
        for w in (writer, up_writer):
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()


async def serve(listen: tuple[str, int], target: tuple[str, int]) -> None:
    """Forward until SIGTERM/SIGINT."""
    server = await asyncio.start_server(lambda r, w: _forward(target, r, w), *listen,
                                        reuse_address=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"hexlane lab proxy {listen[0]}:{listen[1]} -> {target[0]}:{target[1]}", flush=True)
    async with server:
        await stop.wait()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hexlane.lab.proxy")
    p.add_argument("--listen", type=_addr, required=True)
    p.add_argument("--target", type=_addr, required=True)
    args = p.parse_args(argv)
    try:
        asyncio.run(serve(args.listen, args.target))
    except OSError as e:
        print(f"hexlane lab proxy: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
