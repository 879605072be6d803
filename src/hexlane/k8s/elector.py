"""The asyncio driver of leader election on a coordination.k8s.io/v1 Lease.

`LeaderElector` feeds `hexlane.k8s.election.step` with ticks (every retry period; candidates
wait a jittered period, as client-go's `JitterUntil` with factor 1.2) and with the outcomes of
the requests it asks for, and calls `on_started_leading` / `on_stopped_leading` (plain
functions; start or cancel your own tasks there). Each request is bounded by the renew
deadline so a hung connection cannot keep a stale leader leading. Cancelling `run()` (or
`stop()`) releases a held lease before returning.

Usage::

    elector = LeaderElector(client, "cilium-l2announce-default-web", "kube-system",
                            identity=node_name, timing=LeaseTiming.sanitised(15, 5, 2),
                            on_started_leading=announce, on_stopped_leading=withdraw)
    elector.start()
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from . import election
from .client import ApiError, KubeClient
from .resources import Lease, kind_of
from .runtime import BackgroundTask

log = logging.getLogger(__name__)
LEASE = kind_of(Lease)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class LeaderElector:
    """One candidate for one Lease."""

    def __init__(self, client: KubeClient, name: str, namespace: str, identity: str,
                 timing: election.LeaseTiming, *,
                 on_started_leading: Callable[[], Any] | None = None,
                 on_stopped_leading: Callable[[], Any] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _utcnow,
                 jitter: float = 1.2, rand: Callable[[], float] = random.random) -> None:
        self.client = client
        self.name, self.namespace = name, namespace
        self.timing = timing
        self.identity = identity
        self.state = election.ElectionState(identity)
        self.on_started_leading = on_started_leading
        self.on_stopped_leading = on_stopped_leading
        self.clock, self.wall = clock, wall
        self.jitter, self.rand = jitter, rand
        self.starts = 0  # times this candidate started leading
        self.stops = 0  # ... and stopped
        self._lease: dict[str, Any] | None = None  # the Lease as last read or written
        self._task = BackgroundTask(self.run, lambda: repr(self))

    def __repr__(self) -> str:
        role = "leader" if self.leading else "candidate"
        return f"<LeaderElector {self.namespace}/{self.name} {self.identity} {role}>"

    @property
    def leading(self) -> bool:
        return self.state.leading

    @property
    def holder(self) -> str:
        """The Lease's holder as last read or written ("" when unknown or released)."""
        spec = (self._lease or {}).get("spec") or {}
        return str(spec.get("holderIdentity") or "")

    def start(self) -> asyncio.Task[None]:
        return self._task.start()

    async def stop(self) -> None:
        """Stop campaigning, releasing the lease if held."""
        await self._task.stop()

    async def run(self) -> None:
        """Campaign and renew until cancelled; release on the way out."""
        try:
            while True:
                await self._feed(election.Tick())
                period = self.timing.retry_period
                if not self.leading:
                    period *= 1.0 + self.jitter * self.rand()
                await asyncio.sleep(period)
        finally:
            # Runs on cancellation too: a bounded release, then (if the release did not get
            # that far) the stop callback.
            was_leading, stops = self.leading, self.stops
            with contextlib.suppress(Exception, asyncio.CancelledError):
                async with asyncio.timeout(self.timing.renew_deadline):
                    await self._feed(election.Release())
            if was_leading and self.stops == stops:
                self.state = election.ElectionState(self.identity)
                self.stops += 1
                self._callback(self.on_stopped_leading)

    async def _feed(self, event: election.Event) -> None:
        pending: list[election.Event] = [event]
        while pending:
            actions, self.state = election.step(self.timing, self.state, pending.pop(0),
                                                self.clock(), self.wall())
            for action in actions:
                outcome = await self._perform(action)
                if outcome is not None:
                    pending.append(outcome)

    async def _perform(self, action: election.Action) -> election.Event | None:
        if isinstance(action, election.StartedLeading):
            self.starts += 1
            log.info("%s started leading %s/%s", self.identity, self.namespace, self.name)
            self._callback(self.on_started_leading)
            return None
        if isinstance(action, election.StoppedLeading):
            self.stops += 1
            log.info("%s stopped leading %s/%s", self.identity, self.namespace, self.name)
            self._callback(self.on_stopped_leading)
            return None
        try:
            # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
            # that arrives as the request completes, and stop() would then wait forever.
            async with asyncio.timeout(self.timing.renew_deadline):
                return await self._request(action)
        except (ApiError, OSError, TimeoutError) as e:
            log.debug("%r: %s failed: %s", self, type(action).__name__, e)
            if isinstance(action, election.Get):
                return election.ReadFailed()
            conflict = isinstance(e, ApiError) and (
                e.conflict or (isinstance(action, election.Create) and e.code == 409))
            return election.WriteFailed(conflict=conflict)

    async def _request(self, action: election.Action) -> election.Event:
        if isinstance(action, election.Get):
            try:
                lease = await self.client.request(
                    "GET", LEASE.path(self.namespace, self.name))
            except ApiError as e:
                if e.not_found:
                    self._lease = None
                    return election.Observed(None)
                raise
            self._lease = lease
            return election.Observed(election.LeaseRecord.from_lease(lease),
                            str(lease["metadata"].get("resourceVersion") or ""))
        body: dict[str, Any]
        if isinstance(action, election.Create):
            body = {"apiVersion": LEASE.api_version, "kind": LEASE.kind,
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": action.record.to_spec()}
            lease = await self.client.request("POST", LEASE.path(self.namespace), body=body)
        elif isinstance(action, election.Update):
            # Keep what others put on the Lease (labels, annotations): replace the spec only.
            body = copy.deepcopy(self._lease) if self._lease else {
                "apiVersion": LEASE.api_version, "kind": LEASE.kind,
                "metadata": {"name": self.name, "namespace": self.namespace}}
            body["metadata"]["resourceVersion"] = action.resource_version
            body["spec"] = action.record.to_spec()
            lease = await self.client.request("PUT", LEASE.path(self.namespace, self.name),
                                              body=body)
        else:
            raise TypeError(f"not a request: {action!r}")
        self._lease = lease
        return election.Written(election.LeaseRecord.from_lease(lease),
                       str(lease["metadata"].get("resourceVersion") or ""))

    def _callback(self, func: Callable[[], Any] | None) -> None:
        if func is None:
            return
        try:
            func()
        except Exception:  # the elector keeps its own state right even if a callback fails
            log.exception("%r: leadership callback %r failed", self, func)
