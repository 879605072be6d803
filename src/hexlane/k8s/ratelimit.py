"""Client-side rate limiting of API requests (`k8sClientRateLimit.qps/burst`), with metrics.

client-go throttles every request a client makes with a token bucket (qps tokens a second,
at most `burst` saved up) and Cilium exposes the time requests spent waiting for it; so do we:

- `TokenBucket` is the pure core: `reserve(now)` takes a token and says how long the caller
  must wait for it (tokens may go negative, so concurrent callers queue up in order, as with
  Go's `rate.Limiter.Reserve`). No clock inside: `now` is an argument.
- `RateLimiter` is the asyncio shell: it reads an injected clock, reserves, records the wait
  in `ClientMetrics` and sleeps. Waiters queue in order behind one lock and only the head
  holds a reservation, so a request cancelled while it waits (an elector's renew deadline)
  gives its token back or never takes one, as Go's `rate.Limiter.Wait` does with a context:
  a backlog of cancelled requests cannot starve the ones that follow.
- `hexlane.k8s.transport.Transport` awaits the limiter before every request the layer
  makes — lists, watch starts, writes, lease renewals — and counts each answered request
  by method and code.

Metrics (in the registry given to `ClientMetrics`, the process's default registry otherwise):
`hexlane_k8s_client_rate_limiter_wait_seconds` (histogram of every request's wait, by
method), `hexlane_k8s_client_rate_limiter_throttled_requests_total` (requests that had to
wait) and `hexlane_k8s_client_api_calls_total{method,return_code}`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram

WAIT_BUCKETS = (0.0, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class TokenBucket:
    """A token bucket with `qps` tokens a second and room for `burst` (pure; qps <= 0: no limit)."""

    def __init__(self, qps: float, burst: int, now: float) -> None:
        if qps > 0 and burst < 1:
            raise ValueError(f"burst must be at least 1 with qps {qps}, got {burst}")
        self.qps = qps
        self.burst = burst
        self.tokens = float(burst)
        self.last = now

    def _advance(self, now: float) -> None:
        if now > self.last:
            self.tokens = min(float(self.burst), self.tokens + (now - self.last) * self.qps)
            self.last = now

    def reserve(self, now: float) -> float:
        """Take one token; the seconds from `now` until it is really available (0: go now)."""
        if self.qps <= 0:
            return 0.0
        self._advance(now)
        self.tokens -= 1.0
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.qps

    def available(self, now: float) -> float:
        """Tokens available at `now` (negative: that many reservations are still queued)."""
        if self.qps <= 0:
            return float("inf")
        self._advance(now)
        return self.tokens


class ClientMetrics:
    """The client layer's metrics in one registry (one set per registry, shared by clients)."""

    _by_registry: ClassVar[dict[int, ClientMetrics]] = {}

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.wait_seconds = Histogram(
            "hexlane_k8s_client_rate_limiter_wait_seconds",
            "Seconds API requests waited for the client-side rate limiter "
            "(k8sClientRateLimit.qps/burst)", ["method"], buckets=WAIT_BUCKETS,
            registry=registry)
        self.throttled = Counter(
            "hexlane_k8s_client_rate_limiter_throttled_requests",
            "API requests that had to wait for the client-side rate limiter", ["method"],
            registry=registry)
        self.api_calls = Counter(
            "hexlane_k8s_client_api_calls", "API requests answered, by method and HTTP code",
            ["method", "return_code"], registry=registry)

    @classmethod
    def for_registry(cls, registry: CollectorRegistry | None = None) -> ClientMetrics:
        """The metrics in `registry` (default: the process's), created on first use."""
        registry = REGISTRY if registry is None else registry
        # prometheus-client refuses to register a name twice, and several clients (agent and
        # operator code in one lab process, many tests) share one registry.
        found = cls._by_registry.get(id(registry))
        if found is None or found.registry is not registry:
            found = cls(registry)
            cls._by_registry[id(registry)] = found
        return found


class RateLimiter:
    """The asyncio shell around a `TokenBucket`: `await wait(method)` before each request."""

    def __init__(self, qps: float, burst: int, *, metrics: ClientMetrics | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep) -> None:
        self.clock = clock
        self.sleep = sleep
        self.qps, self.burst = qps, burst
        self.bucket = TokenBucket(qps, burst, clock())
        self.metrics = metrics
        self._lock = asyncio.Lock()

    async def wait(self, method: str = "GET") -> float:
        """Wait for a token; returns the seconds this request was held back (as reserved)."""
        start = self.clock()
        delay = 0.0
        if not self._lock.locked():
            delay = self.bucket.reserve(self.clock())
            if delay > 0:
                self.bucket.tokens += 1.0  # not free now: give it back and wait in line
        if self._lock.locked() or delay > 0:
            async with self._lock:
                delay = self.bucket.reserve(self.clock())
                if delay > 0:
                    try:
                        await self.sleep(delay)
                    except asyncio.CancelledError:
                        self.bucket.tokens += 1.0  # the only pending reservation: back
                        raise
            delay = max(delay, self.clock() - start)
        if self.metrics is not None:
            self.metrics.wait_seconds.labels(method).observe(delay)
            if delay > 0:
                self.metrics.throttled.labels(method).inc()
        return delay
