"""Waiting for a condition that other processes bring about."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0,
             interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy, and return that; fail naming `what`
    and the last answer otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def wait_until(what: str, read: Callable[[], T], ok: Callable[[T], bool],
               timeout: float = 20.0, interval: float = 0.05) -> T:
    """Call `read` until `ok` holds for what it returned, and return that; fail naming
    `what` and the last value read otherwise (`wait_for` for values that may be falsy)."""
    last: list[T] = []

    def check() -> bool:
        last[:] = [read()]
        return ok(last[0])

    try:
        wait_for(what, check, timeout, interval)
    except AssertionError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what} "
                             f"(last read: {last[0] if last else None!r})") from None
    return last[0]
