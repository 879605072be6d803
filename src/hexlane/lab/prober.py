"""The demo's HTTP prober, run on the lab's client (the laptop): one process opening many
connections, not one `lab exec curl` per request.

    python3 -m hexlane.lab.prober spread IP[:PORT] [--count 300] [--concurrency 10] [--timeout 1]
    python3 -m hexlane.lab.prober watch IP[:PORT] [--interval 0.02] [--timeout 1]
                                        [--settle 2] [--max 30]

Each connection is a new TCP connection with one `GET /` (the lab workload answers its pod's
name) and gives up after `--timeout` seconds, connect included. `spread` makes `--count`
requests, `--concurrency` at a time, and prints JSON `{"answers": {pod: n}, "failed": n}`.
`watch` opens a connection every `--interval` seconds; it prints `ready` once one was
answered, and stops when, after some connection failed, every one opened in the last
`--settle` seconds was answered (or after `--max` seconds, or on SIGTERM/SIGINT); then it
prints JSON `{"samples": [[start, end, ok, backend], ...]}` with CLOCK_MONOTONIC times (the
machine's clock, shared by every network namespace), read by `hexlane.lab.probe`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence

from hexlane.lab.probe import Sample


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.partition(":")
    return host, int(port or 80)


async def request(host: str, port: int, timeout: float) -> str | None:
    """One new connection with one GET /; the answer's body (stripped), None on failure."""
    async def go() -> str | None:
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = await reader.read()
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head, _, body = data.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.") or b" 200 " not in head.split(b"\r\n", 1)[0] + b" ":
            return None
        return body.decode(errors="replace").strip()
    try:
        return await asyncio.wait_for(go(), timeout)
    except (TimeoutError, OSError, EOFError):
        return None


async def spread(host: str, port: int, count: int, concurrency: int,
                 timeout: float) -> dict[str, object]:
    answers: Counter[str] = Counter()
    failed = 0
    todo = iter(range(count))

    async def worker() -> None:
        nonlocal failed
        for _ in todo:
            answer = await request(host, port, timeout)
            if answer:
                answers[answer] += 1
            else:
                failed += 1
    await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
    return {"answers": dict(sorted(answers.items())), "failed": failed}


async def watch(host: str, port: int, interval: float, timeout: float, settle: float,
                longest: float) -> list[Sample]:
    samples: list[Sample] = []
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = False

    async def one() -> None:
        nonlocal ready
        start = time.monotonic()
        answer = await request(host, port, timeout)
        samples.append(Sample(start, time.monotonic(), answer is not None, answer or ""))
        if answer and not ready:
            ready = True
            print("ready", flush=True)

    def settled(now: float) -> bool:
        failures = [s.start for s in samples if not s.ok]
        if not failures:
            return False
        recent = [s for s in samples if s.start > max(failures) and s.start >= now - settle]
        return (now - max(failures) >= settle + timeout and bool(recent)
                and all(s.ok for s in recent))

    tasks: set[asyncio.Task[None]] = set()
    began = time.monotonic()
    while not stop.is_set():
        now = time.monotonic()
        if now - began > longest or settled(now):
            break
        task = asyncio.create_task(one())
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)
    if tasks:
        await asyncio.wait(tasks)
    return sorted(samples, key=lambda s: s.start)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m hexlane.lab.prober",
                                     description="the demo's HTTP prober (see the module)")
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("spread", help="N requests; who answered how many")
    p.add_argument("address", metavar="IP[:PORT]")
    p.add_argument("--count", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--timeout", type=float, default=1.0)
    p = sub.add_parser("watch", help="a connection every INTERVAL until traffic settles")
    p.add_argument("address", metavar="IP[:PORT]")
    p.add_argument("--interval", type=float, default=0.02)
    p.add_argument("--timeout", type=float, default=1.0)
    p.add_argument("--settle", type=float, default=2.0)
    p.add_argument("--max", type=float, default=30.0)
    args = parser.parse_args(argv)
    host, port = _address(args.address)
    if args.mode == "spread":
        print(json.dumps(asyncio.run(spread(host, port, args.count, args.concurrency,
                                            args.timeout))), flush=True)
        return 0
    samples = asyncio.run(watch(host, port, args.interval, args.timeout, args.settle, args.max))
    print(json.dumps({"samples": [s.to_list() for s in samples]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
