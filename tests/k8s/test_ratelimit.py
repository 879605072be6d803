"""The client-side rate limiter (`k8sClientRateLimit.qps/burst`):

- the asyncio shell with an injected clock and sleep: a burst goes through, later requests
  sleep exactly their token's delay, and every wait is recorded (histogram by method,
  throttled counter) in the injected registry;
- against the real apiserver: with qps=5, burst=10 (Cilium's defaults) 20 requests, plain
  GETs and watch opens, take at least (20-10)/5 = 2 s, about 10 of them wait, and
  `hexlane_k8s_client_rate_limiter_*` and `hexlane_k8s_client_api_calls_total` count them
  (the informer's and elector's requests go through the same transport);
- waiters are served in order, and one cancelled while it waits gives its token back.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from helpers.apiserver import Apiserver
from hexlane.config import load_values
from hexlane.k8s.client import make_client
from hexlane.k8s.ratelimit import ClientMetrics, RateLimiter


class FakeTime:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_waits_with_injected_clock_are_counted() -> None:
    registry = CollectorRegistry()
    fake = FakeTime()
    limiter = RateLimiter(5, 10, metrics=ClientMetrics.for_registry(registry),
                          clock=fake.clock, sleep=fake.sleep)
    waits = [await limiter.wait("GET") for _ in range(12)]
    assert waits[:10] == [0.0] * 10
    # Each sleeper advanced the fake clock, so each later request waits one period.
    assert waits[10:] == pytest.approx([0.2, 0.2])
    assert fake.slept == pytest.approx([0.2, 0.2])
    fake.now += 10  # the bucket refills
    assert await limiter.wait("PUT") == 0.0
    assert sample(registry, "hexlane_k8s_client_rate_limiter_throttled_requests_total",
                  method="GET") == 2
    assert sample(registry, "hexlane_k8s_client_rate_limiter_wait_seconds_count",
                  method="GET") == 12
    assert sample(registry, "hexlane_k8s_client_rate_limiter_wait_seconds_sum",
                  method="GET") == pytest.approx(0.4)
    assert sample(registry, "hexlane_k8s_client_rate_limiter_wait_seconds_count",
                  method="PUT") == 1


async def test_concurrent_waiters_queue_in_order() -> None:
    # All reserve at the same instant (a clock that does not move, a sleep that only
    # yields): each waits one period longer than the one before it.
    limiter = RateLimiter(10, 1, clock=lambda: 5.0, sleep=lambda _s: asyncio.sleep(0))
    waits = await asyncio.gather(*(limiter.wait() for _ in range(5)))
    assert list(waits) == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_metrics_are_shared_per_registry() -> None:
    registry = CollectorRegistry()
    assert ClientMetrics.for_registry(registry) is ClientMetrics.for_registry(registry)
    assert ClientMetrics.for_registry(CollectorRegistry()) is not \
        ClientMetrics.for_registry(registry)


@pytest.mark.slow
def test_qps5_burst10_throttles_real_requests(apiserver: Apiserver) -> None:
    values, _ = load_values([], ["k8sClientRateLimit.qps=5", "k8sClientRateLimit.burst=10"])
    registry = CollectorRegistry()

    async def run() -> float:
        async with make_client(values, apiserver.kubeconfig, registry=registry) as client:
            assert (client.limiter.qps, client.limiter.burst) == (5.0, 10)
            start = time.monotonic()
            for i in range(20):
                if i % 2:
                    await client.request("GET", "/api/v1/namespaces/default")
                else:
                    async with client.watch_lines("/api/v1/namespaces",
                                                  {"timeoutSeconds": "1"}):
                        pass
            return time.monotonic() - start

    elapsed = asyncio.run(run())
    assert elapsed >= 1.8, elapsed  # (20 - 10) / 5 s, less what refilled meanwhile
    throttled = sample(registry, "hexlane_k8s_client_rate_limiter_throttled_requests_total",
                       method="GET")
    waited = sample(registry, "hexlane_k8s_client_rate_limiter_wait_seconds_sum",
                    method="GET")
    assert 8 <= throttled <= 10, throttled
    assert 1.5 <= waited <= elapsed, (waited, elapsed)
    assert sample(registry, "hexlane_k8s_client_rate_limiter_wait_seconds_count",
                  method="GET") == 20
    assert sample(registry, "hexlane_k8s_client_api_calls_total", method="GET",
                  return_code="200") == 20
    text = generate_latest(registry).decode()
    assert "hexlane_k8s_client_rate_limiter_wait_seconds_bucket" in text


def test_requests_cancelled_while_waiting_give_their_tokens_back() -> None:
    """An elector's renew deadline cancels requests queued behind a busy limiter: they must
    not leave their reservations behind, or every later request waits for the dead ones (the
    backlog grows without bound). Go's rate.Limiter.Wait with a context gives them back."""
    async def go() -> float:
        limiter = RateLimiter(20.0, 1)
        await limiter.wait()  # the one token
        for _ in range(100):  # 100 requests that give up after 10 ms: 5 s of reservations
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(limiter.wait(), 0.01)
        start = time.monotonic()
        await limiter.wait()
        return time.monotonic() - start

    assert asyncio.run(go()) < 0.2


def test_waiters_are_served_in_order() -> None:
    async def go() -> list[int]:
        limiter = RateLimiter(100.0, 1)
        order: list[int] = []

        async def one(i: int) -> None:
            await limiter.wait()
            order.append(i)
        await asyncio.gather(*(one(i) for i in range(10)))
        return order

    assert asyncio.run(go()) == list(range(10))
