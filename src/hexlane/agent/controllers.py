"""Named, supervised loops with a health record, as Cilium's `pkg/controller`.

A `Controller` runs one async function whenever it is triggered (an informer event) and at
least every `interval` seconds; a failure is logged, counted and retried after a backoff, and
never stops the agent. `status()` is what `hexlane status` shows per controller: runs and
failures, the last success and the last error, so a stuck part is named rather than guessed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from hexlane.k8s.backoff import Backoff

log = logging.getLogger(__name__)


class Controller:
    """One named loop (see the module docstring)."""

    def __init__(self, name: str, func: Callable[[], Awaitable[None]], *,
                 interval: float, clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.func = func
        self.interval = interval
        self.clock = clock
        self.successes = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_success: float | None = None
        self.last_failure: float | None = None
        self.last_error = ""
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._backoff = Backoff(initial=0.2, maximum=10.0)

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
            self._wake.clear()
            ok = await self.run_once()
            delay = self.interval if ok else min(self.interval, self._backoff.next_delay())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name=f"controller-{self.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

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
