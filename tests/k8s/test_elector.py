"""Leader election on a real coordination.k8s.io/v1 Lease in the real apiserver (timings
2 s / 1 s / 0.2 s, sanitised like Cilium's):

- two candidates: exactly one leads, the Lease names it, and leadership does not flap while
  both stay up; cancelling the leader releases the Lease and the other takes over within a
  couple of retry periods (far inside the lease duration);
- the leader in another process killed with SIGKILL (no release): the survivor takes over
  no earlier than the lease allows and within the lease duration plus the retry periods
  client-go's rule needs (the expiry is judged from when the survivor saw the last renewal);
- a leader whose API goes away stops leading once the renew deadline has passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from k8s_helpers import Proxy
from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver
from hexlane.config import load_values
from hexlane.k8s.client import KubeClient, make_client
from hexlane.k8s.election import LeaseTiming
from hexlane.k8s.elector import LeaderElector

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
TIMING = LeaseTiming.sanitised(2.0, 1.0, 0.2)
LEASES = "/apis/coordination.k8s.io/v1/namespaces/default/leases"


class Watcher:
    """Counts leadership changes of one elector."""

    def __init__(self) -> None:
        self.started = 0
        self.stopped = 0
        self.started_at: float | None = None

    def on_start(self) -> None:
        self.started += 1
        self.started_at = time.monotonic()

    def on_stop(self) -> None:
        self.stopped += 1


@contextlib.asynccontextmanager
async def candidate(client: KubeClient, name: str, identity: str
                    ) -> AsyncIterator[tuple[LeaderElector, Watcher]]:
    """A started elector for Lease default/`name` and its counter; stopped on leaving."""
    watcher = Watcher()
    elector = LeaderElector(client, name, "default", identity, TIMING,
                            on_started_leading=watcher.on_start,
                            on_stopped_leading=watcher.on_stop)
    elector.start()
    try:
        yield elector, watcher
    finally:
        await elector.stop()


async def until(check: object, timeout: float) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not within {timeout}s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def test_one_leads_and_cancel_hands_over_at_once(apiserver: Apiserver) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"

    async def run() -> None:
        async with apiserver.plain() as plain, make_client(
                None, apiserver.kubeconfig, registry=CollectorRegistry()) as client, \
                candidate(client, name, "a") as (a, wa), candidate(client, name, "b") as (b, wb):
            await until(lambda: a.leading or b.leading, 5)
            await asyncio.sleep(TIMING.duration)  # both keep campaigning
            assert [a.leading, b.leading].count(True) == 1
            leader, follower = (a, b) if a.leading else (b, a)
            lw, fw = (wa, wb) if leader is a else (wb, wa)
            assert (lw.started, lw.stopped, fw.started) == (1, 0, 0)
            status, lease = await plain.call("GET", f"{LEASES}/{name}")
            assert status == 200
            assert lease["spec"]["holderIdentity"] == leader.identity
            assert lease["spec"]["leaseDurationSeconds"] == 2
            await leader.stop()
            assert lw.stopped == 1 and not leader.leading
            took = await until(lambda: follower.leading, TIMING.duration)
            print(f"takeover {took:.2f}s after the leader released")
            # Released: the follower's next (jittered) retry takes it.
            assert took < TIMING.retry_period * 2.2 + 0.3, took
            status, lease = await plain.call("GET", f"{LEASES}/{name}")
            assert lease["spec"]["holderIdentity"] == follower.identity
            assert lease["spec"]["leaseTransitions"] >= 1

    asyncio.run(run())


def test_survivor_takes_over_from_a_killed_leader(apiserver: Apiserver) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"
    child = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("elector_child.py")),
         str(apiserver.kubeconfig), "default", name, "child",
         str(TIMING.duration), str(TIMING.renew_deadline), str(TIMING.retry_period)],
        stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"leading"

        async def run() -> None:
            async with make_client(None, apiserver.kubeconfig,
                                   registry=CollectorRegistry()) as client, \
                    candidate(client, name, "survivor") as (survivor, watcher):
                await asyncio.sleep(TIMING.duration + 0.5)
                assert not survivor.leading  # the child keeps renewing
                os.kill(child.pid, signal.SIGKILL)
                killed = time.monotonic()
                await until(lambda: survivor.leading, TIMING.duration * 3)
                assert watcher.started_at is not None
                took = watcher.started_at - killed
                print(f"takeover {took:.2f}s after SIGKILL of the leader")
                # Not before the lease could have expired (last renewal at most one retry
                # period before the kill), and within duration + the retries to see it.
                assert TIMING.duration - TIMING.retry_period - 0.05 <= took, took
                assert took <= TIMING.duration + 4.4 * TIMING.retry_period + 0.3, took

        asyncio.run(run())
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)


def test_leader_without_api_stops_after_the_renew_deadline(apiserver: Apiserver) -> None:
    name = f"lease-{uuid.uuid4().hex[:6]}"

    async def run() -> None:
        async with Proxy(apiserver.host, apiserver.port) as proxy:
            values, _ = load_values([], ["k8sServiceHost=127.0.0.1",
                                         f"k8sServicePort={proxy.port}"])
            async with make_client(values, apiserver.kubeconfig,
                                   registry=CollectorRegistry()) as client, \
                    candidate(client, name, "lonely") as (elector, watcher):
                await until(lambda: elector.leading, 5)
                proxy.hold()
                cut_at = time.monotonic()
                await until(lambda: not elector.leading, TIMING.duration)
                lost = time.monotonic() - cut_at
                print(f"leadership dropped {lost:.2f}s after the API went away")
                # Deadline counted from the last renewal (up to a retry before the cut).
                assert TIMING.renew_deadline - TIMING.retry_period - 0.05 <= lost
                assert lost <= TIMING.renew_deadline + TIMING.retry_period + 0.3
                assert watcher.stopped == 1
                proxy.release()
                await until(lambda: elector.leading, TIMING.duration * 2)
                assert watcher.started == 2

    asyncio.run(run())
