"""Exponential backoff for retries against the API (pure: no clock, no sleeping).

`Backoff()` starts at 250 ms and doubles up to 5 minutes, the shape client-go's and Cilium's
controllers use for failed reconciles. With `jitter=f`, each delay is stretched by a random
factor in [1, 1+f) so that many retriers do not hit the API in step; the random source is
injected so tests are deterministic. The caller sleeps; this only says for how long.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

INITIAL_DELAY = 0.25
MAX_DELAY = 300.0


@dataclass(slots=True)
class Backoff:
    """Delays for consecutive failures: `next_delay()` after each failure, `reset()` on success."""

    initial: float = INITIAL_DELAY
    maximum: float = MAX_DELAY
    factor: float = 2.0
    jitter: float = 0.0
    rand: Callable[[], float] = field(default=random.random, repr=False)
    failures: int = 0

    def __post_init__(self) -> None:
        if self.initial <= 0 or self.maximum < self.initial or self.factor < 1 \
                or self.jitter < 0:
            raise ValueError(f"bad backoff: initial={self.initial} maximum={self.maximum} "
                             f"factor={self.factor} jitter={self.jitter}")

    def peek(self) -> float:
        """The delay the next failure would get, without jitter and without counting it."""
        # min() before the power would overflow for long outages; cap the exponent instead.
        delay = self.initial
        for _ in range(self.failures):
            delay *= self.factor
            if delay >= self.maximum:
                return self.maximum
        return min(delay, self.maximum)

    def next_delay(self) -> float:
        """Count one failure and return how long to wait before the next attempt."""
        delay = self.peek()
        self.failures += 1
        if self.jitter:
            delay *= 1.0 + self.jitter * self.rand()
        return delay

    def reset(self) -> None:
        """A success: the next failure starts again at the initial delay."""
        self.failures = 0
