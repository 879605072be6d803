"""What every daemon built on this layer runs on: background tasks, signals, logging, metrics.

- `BackgroundTask(run, name)`: one asyncio task that `start()` starts (again, once it ended)
  and `stop()` cancels and waits for. Informers, the leader elector and controllers each run
  in one.
- `cancel(*tasks)`: cancel tasks and wait until they are gone.
- `stop_on_signals()`: an event that SIGTERM and SIGINT set; a daemon runs until it is set.
- `run_until_stopped(coro)`: run one coroutine until it ends or a signal stops it.
- `log_to_stderr(verbose)`: the daemons' log format on standard error, without a line per
  API request (the client's `aiohttp` log) unless verbose.
- `serve_metrics(registry, addr, routes)`: Prometheus' `/metrics` over HTTP (and whatever
  other routes the daemon answers beside it, the operator's `/healthz`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class BackgroundTask:
    """One named task: `start()` runs `run()` unless it runs already; `stop()` cancels it."""

    def __init__(self, run: Callable[[], Coroutine[Any, Any, None]],
                 name: Callable[[], str]) -> None:
        self._run = run
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name=self._name())
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            await cancel(self._task)
            self._task = None


async def cancel(*tasks: asyncio.Task[Any]) -> None:
    """Cancel `tasks` and wait for each to end (their cancellation is not passed on)."""
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task


def stop_on_signals() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (call it on the running loop)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


async def run_until_stopped(main: Coroutine[Any, Any, None], what: str) -> None:
    """Run `main` until it ends or SIGTERM/SIGINT; a failure of `main` is logged."""
    task = asyncio.create_task(main)
    stopper = asyncio.create_task(stop_on_signals().wait())
    await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %r", what, task.exception())
    await cancel(stopper)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


def log_to_stderr(verbose: bool = False) -> None:
    """The daemons' logging: time, level, logger and message on standard error."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, format=LOG_FORMAT,
                        stream=sys.stderr)
    if not verbose:
        logging.getLogger("aiohttp").setLevel(logging.WARNING)  # a line per request otherwise


async def serve_metrics(registry: CollectorRegistry, addr: tuple[str, int],
                        routes: Mapping[str, Handler] | None = None
                        ) -> tuple[web.AppRunner, tuple[str, int]]:
    """Serve `/metrics` from `registry` (and `routes`) on `addr` ("" = every address); the
    runner (`cleanup()` stops it) and the address bound (port 0 picks one)."""
    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=generate_latest(registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    for path, handler in (routes or {}).items():
        app.router.add_get(path, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    host, port = addr
    await web.TCPSite(runner, host or None, port).start()
    bound = runner.addresses[0] if runner.addresses else (host, port)
    return runner, (str(bound[0]), int(bound[1]))
