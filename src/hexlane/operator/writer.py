"""A keyed write queue: the latest desired write per object, done by a few workers, each
object retried on its own backoff (250 ms doubling to 5 min) when a write fails.

Controllers compute whole desired states and `put(key, write)` what differs; a newer `put`
for the same key replaces a write still waiting, so an object is never written twice for
the same state and a slow object never holds up the others. `perform(key, write)` returns
normally when the write is done *or* need not be retried (conflict: the informer brings the
newer object and the controller recomputes; gone: nothing to write), and raises for a
failure worth retrying. Nothing here knows about Kubernetes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from hexlane.k8s.backoff import Backoff

log = logging.getLogger(__name__)

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")


class WriteQueue(Generic[K, W]):
    """See the module docstring. Start with `start()`, stop with `stop()`."""

    def __init__(self, perform: Callable[[K, W], Awaitable[None]], *, workers: int = 32,
                 backoff: Callable[[], Backoff] = Backoff,
                 on_change: Callable[[int], None] | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        self.perform = perform
        self.workers = workers
        self.new_backoff = backoff
        self.on_change = on_change
        self._desired: dict[K, W] = {}
        self._queue: asyncio.Queue[K] = asyncio.Queue()
        self._queued: set[K] = set()
        self._in_flight: dict[K, W] = {}
        self._backoffs: dict[K, Backoff] = {}
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()
        self._idle.set()
        self.done = 0
        self.failures = 0

    def __len__(self) -> int:
        """Objects with a write waiting, in flight or backing off."""
        # O(workers), not O(queue): the union of both sets cost a copy of the whole queue on
        # every change, quadratic over a cold start of 10,000 writes.
        return len(self._desired) + sum(1 for k in self._in_flight if k not in self._desired)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._worker(), name=f"writer-{i}")
                           for i in range(self.workers)]

    async def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def put(self, key: K, write: W) -> None:
        """Make `write` the object's next write (replacing one still waiting)."""
        self._desired[key] = write
        self._idle.clear()
        if key not in self._in_flight and key not in self._timers:
            self._enqueue(key)
        self._changed()

    def discard(self, key: K) -> None:
        """Forget a waiting write (the object is gone); one in flight finishes."""
        self._desired.pop(key, None)
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._backoffs.pop(key, None)
        self._check_idle()

    def current(self, key: K) -> W | None:
        """The write that will be or is being done for `key` (None: nothing pending)."""
        write = self._desired.get(key)
        return write if write is not None else self._in_flight.get(key)

    def pending(self, key: K) -> list[W]:
        """Every write for `key` not yet done: the one in flight, then the one waiting."""
        return [w for w in (self._in_flight.get(key), self._desired.get(key)) if w is not None]

    async def wait_idle(self) -> None:
        """Until nothing is waiting or in flight (backing-off writes count as waiting)."""
        await self._idle.wait()

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change(len(self))

    def _check_idle(self) -> None:
        if not self._desired and not self._in_flight:
            self._idle.set()
        self._changed()

    def _enqueue(self, key: K) -> None:
        if key not in self._queued:
            self._queued.add(key)
            self._queue.put_nowait(key)

    def _retry(self, key: K) -> None:
        self._timers.pop(key, None)
        if key in self._desired:
            self._enqueue(key)

    async def _worker(self) -> None:
        while True:
            key = await self._queue.get()
            self._queued.discard(key)
            write = self._desired.pop(key, None)
            if write is None:
                self._check_idle()
                continue
            self._in_flight[key] = write
            try:
                await self.perform(key, write)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # every failure is retried with backoff
                self.failures += 1
                backoff = self._backoffs.setdefault(key, self.new_backoff())
                delay = backoff.next_delay()
                log.warning("write of %s failed (%s); retrying in %.2fs", key, e, delay)
                # A newer desired write (put while this one ran) wins; else retry this one.
                self._desired.setdefault(key, write)
                self._timers[key] = asyncio.get_running_loop().call_later(
                    delay, self._retry, key)
            else:
                self.done += 1
                self._backoffs.pop(key, None)
                if key in self._desired and self._desired[key] == write:
                    del self._desired[key]  # put again while in flight: already done
                if key in self._desired:
                    self._enqueue(key)
            finally:
                self._in_flight.pop(key, None)
                self._check_idle()
