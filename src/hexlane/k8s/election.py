"""Lease-based leader election, the decisions only (sans-IO: no clock, no network).

This is client-go's `leaderelection` (which Cilium's L2 announcer and operator use) as a pure
state machine: `step(timing, state, event, now, wall) -> (actions, new state)`. The asyncio
driver in `hexlane.k8s.elector` turns actions (`Get`, `Create`, `Update`) into requests and
their outcomes back into events (`Observed`, `Written`, `WriteFailed`, `ReadFailed`), and a
timer into `Tick`s every retry period. `now` is a monotonic clock, `wall` the time written
into the Lease (acquireTime, renewTime).

The rules, as client-go's:
- a lease held by another identity is respected until `duration` has passed since this
  candidate *saw it change* (its own clock, so clocks of different nodes need not agree);
  an absent lease is created, an empty holder (released) or an expired one is taken over
  with an update carrying the resourceVersion read — the server's optimistic concurrency
  decides between two candidates racing for it;
- the leader renews every retry period by updating with the resourceVersion of its last write
  (no read in between while its lease is valid); it stops leading when it has not renewed
  for `renew_deadline`, or when it sees another holder;
- on shutdown the leader releases: holder "" and a 1 s duration, so a successor takes over
  at its next retry instead of waiting out the lease.

Timings are sanitised as Cilium does for l2announcements: `LeaseTiming.sanitised`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class LeaseTiming:
    """Lease duration, renew deadline and retry period in seconds."""

    duration: float = 15.0
    renew_deadline: float = 5.0
    retry_period: float = 2.0

    @classmethod
    def sanitised(cls, duration: float, renew_deadline: float,
                  retry_period: float) -> LeaseTiming:
        """Cilium's rules (pkg/l2announcer): a duration under 1 s becomes 1 s; a renew
        deadline not below the duration becomes half of it; a retry period not 20 % below
        the renew deadline becomes half of that."""
        if duration < 1.0:
            duration = 1.0
        if duration <= renew_deadline:
            renew_deadline = duration / 2
        if renew_deadline <= 1.2 * retry_period:
            retry_period = renew_deadline / 2
        return cls(duration, renew_deadline, retry_period)

    @property
    def duration_seconds(self) -> int:
        """What goes into spec.leaseDurationSeconds (whole seconds, as client-go writes)."""
        return max(1, int(self.duration))


def micro_time(wall: datetime) -> str:
    """Kubernetes' MicroTime text: RFC 3339 in UTC with microseconds."""
    return wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """The part of a Lease's spec that leader election reads and writes."""

    holder: str
    duration_seconds: int
    acquire_time: str | None
    renew_time: str | None
    transitions: int

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(holder=str(spec.get("holderIdentity") or ""),
                   duration_seconds=int(spec.get("leaseDurationSeconds") or 0),
                   acquire_time=spec.get("acquireTime"), renew_time=spec.get("renewTime"),
                   transitions=int(spec.get("leaseTransitions") or 0))

    def to_spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"holderIdentity": self.holder,
                                "leaseDurationSeconds": self.duration_seconds,
                                "leaseTransitions": self.transitions}
        if self.acquire_time:
            spec["acquireTime"] = self.acquire_time
        if self.renew_time:
            spec["renewTime"] = self.renew_time
        return spec


# --- events (what happened) -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """A retry period has passed: time to renew or to try to acquire."""


@dataclass(frozen=True, slots=True)
class Observed:
    """A read of the Lease: its record and resourceVersion (record None: no such Lease)."""

    record: LeaseRecord | None
    resource_version: str | None = None


@dataclass(frozen=True, slots=True)
class Written:
    """A create or update succeeded; the record as stored and its new resourceVersion."""

    record: LeaseRecord
    resource_version: str


@dataclass(frozen=True, slots=True)
class WriteFailed:
    """A create or update failed (conflict: someone else wrote first)."""

    conflict: bool = False


@dataclass(frozen=True, slots=True)
class ReadFailed:
    """The Lease could not be read (API unreachable, timeout, ...)."""


@dataclass(frozen=True, slots=True)
class Release:
    """Shutting down: give the lease up if held."""


Event = Tick | Observed | Written | WriteFailed | ReadFailed | Release


# --- actions (what to do) -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Get:
    """Read the Lease and report `Observed` (or `ReadFailed`)."""


@dataclass(frozen=True, slots=True)
class Create:
    """Create the Lease with this record and report `Written` (or `WriteFailed`)."""

    record: LeaseRecord


@dataclass(frozen=True, slots=True)
class Update:
    """Replace the Lease's record, carrying `resource_version`; report `Written` or
    `WriteFailed(conflict=True)` on 409."""

    record: LeaseRecord
    resource_version: str


@dataclass(frozen=True, slots=True)
class StartedLeading:
    """Call the on-started-leading callback."""


@dataclass(frozen=True, slots=True)
class StoppedLeading:
    """Call the on-stopped-leading callback."""


Action = Get | Create | Update | StartedLeading | StoppedLeading


@dataclass(frozen=True, slots=True)
class ElectionState:
    """What one candidate knows: whether it leads, the last record seen and when."""

    identity: str
    leading: bool = False
    record: LeaseRecord | None = None
    resource_version: str | None = None
    observed_at: float | None = None  # monotonic time the record last changed, as seen here
    renewed_at: float | None = None  # monotonic time of the last successful write as leader


def _own(state: ElectionState, timing: LeaseTiming, wall: datetime,
         previous: LeaseRecord | None) -> LeaseRecord:
    stamp = micro_time(wall)
    if previous is not None and previous.holder == state.identity:
        return replace(previous, duration_seconds=timing.duration_seconds, renew_time=stamp)
    transitions = previous.transitions + 1 if previous is not None else 0
    return LeaseRecord(state.identity, timing.duration_seconds, stamp, stamp, transitions)


def _deadline_passed(state: ElectionState, timing: LeaseTiming, now: float) -> bool:
    return state.renewed_at is None or now - state.renewed_at >= timing.renew_deadline


def step(timing: LeaseTiming, state: ElectionState, event: Event, now: float,
         wall: datetime) -> tuple[list[Action], ElectionState]:
    """The actions `event` calls for, and the state after it."""
    actions: list[Action] = []
    if isinstance(event, Tick):
        if state.leading and _deadline_passed(state, timing, now):
            state = replace(state, leading=False)
            actions.append(StoppedLeading())
        if state.leading and state.record is not None and state.resource_version:
            return [Update(_own(state, timing, wall, state.record), state.resource_version)], \
                state
        return [*actions, Get()], state

    if isinstance(event, Observed):
        record = event.record
        if record != state.record or event.resource_version != state.resource_version:
            state = replace(state, record=record, resource_version=event.resource_version,
                            observed_at=now)
        if record is None:
            return [Create(_own(state, timing, wall, None))], state
        held_elsewhere = record.holder not in ("", state.identity)
        assert state.observed_at is not None
        if held_elsewhere and now < state.observed_at + timing.duration:
            if state.leading:
                return [StoppedLeading()], replace(state, leading=False)
            return [], state
        return [Update(_own(state, timing, wall, record), event.resource_version or "")], state

    if isinstance(event, Written):
        state = replace(state, record=event.record, resource_version=event.resource_version,
                        observed_at=now)
        if event.record.holder != state.identity:
            return [], state
        state = replace(state, renewed_at=now)
        if not state.leading:
            return [StartedLeading()], replace(state, leading=True)
        return [], state

    if isinstance(event, WriteFailed | ReadFailed):
        if isinstance(event, WriteFailed) and event.conflict:
            # Our view is stale: the next tick reads the Lease before writing again.
            state = replace(state, resource_version=None)
        if state.leading and _deadline_passed(state, timing, now):
            return [StoppedLeading()], replace(state, leading=False)
        return [], state

    if isinstance(event, Release):
        if not state.leading:
            return [], state
        actions = [StoppedLeading()]
        if state.record is not None and state.resource_version:
            stamp = micro_time(wall)
            released = replace(state.record, holder="", duration_seconds=1,
                               acquire_time=stamp, renew_time=stamp)
            actions.insert(0, Update(released, state.resource_version))
        return actions, replace(state, leading=False)

    raise TypeError(f"not an election event: {event!r}")
