"""Named, supervised loops with a health record, as Cilium's `pkg/controller`.

A `Controller` runs one async function whenever it is triggered (an informer event) and at
least every `interval` seconds (never without a trigger when `interval` is None); with a
`debounce` it waits that long after a trigger, so a burst of events makes one run. A failure
is logged, counted and retried after a backoff (0.2 s doubling to 10 s), and never stops the
daemon. `status()` is what `hexlane status` shows per controller: runs and failures, the last
success and the last error, so a stuck part is named rather than guessed.

    routes = Controller("routes", sync_routes, interval=10.0)
    informer.add_handler(lambda _: routes.trigger(), ...)
    routes.start() ... await routes.stop()

A controller that owns its informers (the operator's) runs in the caller's task instead:
`await controller.run(informers, also=[write_queue])` starts them, makes the first run once
every cache is synced, and stops them when cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

from .backoff import Backoff
from .informer import Informer
from .runtime import BackgroundTask

log = logging.getLogger(__name__)

RETRY_INITIAL = 0.2
RETRY_MAXIMUM = 10.0


class Startable(Protocol):
    """What runs beside a controller and stops with it (a write queue)."""

    def start(self) -> Any: ...

    async def stop(self) -> None: ...


class Controller:
    """One named loop (see the module docstring)."""

    def __init__(self, name: str, func: Callable[[], Awaitable[None]], *,
                 interval: float | None, debounce: float = 0.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.func = func
        self.interval = interval
        self.debounce = debounce
        self.clock = clock
        self.successes = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error = ""
        self._wake = asyncio.Event()
        self._task = BackgroundTask(self._loop, lambda: f"controller-{self.name}")
        self._backoff = Backoff(initial=RETRY_INITIAL, maximum=RETRY_MAXIMUM)

    def trigger(self) -> None:
        """Run again soon (several triggers before the run count once)."""
        self._wake.set()

    async def run_once(self) -> bool:
        """One run, recorded; True on success."""
        try:
            await self.func()
        except asyncio.CancelledError:
            raise
        except Exception as err:
            self.failures += 1
            self.consecutive_failures += 1
            self.last_failure = self.clock()
            self.last_error = f"{type(err).__name__}: {err}"
            log.warning("controller %s failed (%d in a row): %s", self.name,
                        self.consecutive_failures, self.last_error,
                        exc_info=self.consecutive_failures == 1)
            return False
        self.successes += 1
        self.consecutive_failures = 0
        self.last_success = self.clock()
        self._backoff.reset()
        return True

    async def _loop(self) -> None:
        while True:
            if self.debounce:
                await asyncio.sleep(self.debounce)
            self._wake.clear()
            if await self.run_once():
                delay = self.interval
            else:
                retry = self._backoff.next_delay()
                delay = retry if self.interval is None else min(self.interval, retry)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def run(self, informers: Sequence[Informer] = (),
                  also: Sequence[Startable] = ()) -> None:
        """The loop in this task, until cancelled: `informers` and `also` start first, the
        first run waits for the informers' caches, and all of them stop with the loop."""
        parts = [*informers, *also]
        for part in parts:
            part.start()
        try:
            for informer in informers:
                await informer.wait_synced()
            if informers:
                log.info("controller %s: caches synced; running", self.name)
            await self._loop()
        finally:
            for part in reversed(parts):
                await part.stop()

    def start(self) -> None:
        """The loop in a task of its own (`stop()` ends it)."""
        self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    @property
    def healthy(self) -> bool:
        return self.successes > 0 and self.consecutive_failures == 0

    def status(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "healthy": self.healthy,
            "successes": self.successes,
            "failures": self.failures,
            "consecutiveFailures": self.consecutive_failures,
            "lastSuccess": self.last_success,
            "lastFailure": self.last_failure,
            "lastError": self.last_error,
            "interval": self.interval,
        }
