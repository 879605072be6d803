"""Leader election decisions (`hexlane.k8s.election.step`) with a fake clock, no sleeping:

- Cilium's sanitising of lease timings, case by case;
- no Lease: create it and lead; the leader renews by updating with its last resourceVersion
  (no read), keeping acquireTime and moving renewTime;
- a Lease held by someone else is respected for the lease duration after this candidate last
  saw it change — a holder that keeps renewing is never displaced — and taken over (one more
  transition) once it stops changing;
- a leader that cannot renew stops leading once the renew deadline has passed, not before;
- a conflict makes the next tick read before writing; seeing another holder stops leading;
- release writes an empty holder, and a candidate takes a released lease at once;
- property: candidates on a simulated API (optimistic concurrency, lost requests, network
  partitions, crashes) never have two live leaders at once, and a leader appears whenever
  one live candidate is reachable long enough.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.k8s.election import (
    Create,
    ElectionState,
    Event,
    Get,
    LeaseRecord,
    LeaseTiming,
    Observed,
    ReadFailed,
    Release,
    StartedLeading,
    StoppedLeading,
    Tick,
    Update,
    WriteFailed,
    Written,
    micro_time,
    step,
)

T = LeaseTiming(duration=15.0, renew_deadline=5.0, retry_period=2.0)
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def wall(now: float) -> datetime:
    return EPOCH + timedelta(seconds=now)


@pytest.mark.parametrize(("given_", "expected"), [
    ((15, 5, 2), (15, 5, 2)),            # Cilium's defaults stand
    ((3, 1, 0.2), (3, 1, 0.2)),          # the fast failover setting from the docs
    ((0.5, 0.2, 0.1), (1, 0.2, 0.1)),    # duration under 1 s -> 1 s
    ((10, 10, 2), (10, 5, 2)),           # renew not below duration -> duration / 2
    ((10, 12, 2), (10, 5, 2)),
    ((10, 5, 5), (10, 5, 2.5)),          # renew <= 1.2 * retry -> retry = renew / 2
    ((10, 6, 5), (10, 6, 3)),            # 6 <= 1.2 * 5: exactly at the bound too
    ((0.1, 5, 5), (1, 0.5, 0.25)),       # all three rules in turn
])
def test_sanitising_like_cilium(given_: tuple[float, float, float],
                                expected: tuple[float, float, float]) -> None:
    t = LeaseTiming.sanitised(*given_)
    assert (t.duration, t.renew_deadline, t.retry_period) == pytest.approx(expected)


def test_micro_time_is_kubernetes_format() -> None:
    assert micro_time(EPOCH + timedelta(seconds=1.5)) == "2026-01-01T00:00:01.500000Z"


def lead(identity: str = "me", now: float = 0.0) -> ElectionState:
    """A candidate that created the Lease at `now` and leads."""
    state = ElectionState(identity)
    actions, state = step(T, state, Tick(), now, wall(now))
    assert actions == [Get()]
    actions, state = step(T, state, Observed(None), now, wall(now))
    [create] = actions
    assert isinstance(create, Create) and create.record.holder == identity
    assert create.record.transitions == 0 and create.record.duration_seconds == 15
    actions, state = step(T, state, Written(create.record, "10"), now, wall(now))
    assert actions == [StartedLeading()] and state.leading
    return state


def test_absent_lease_is_created_and_renewed_without_reads() -> None:
    state = lead(now=0.0)
    acquired = state.record.acquire_time if state.record else None
    actions, state = step(T, state, Tick(), 2.0, wall(2.0))
    [update] = actions
    assert isinstance(update, Update) and update.resource_version == "10"
    assert update.record.acquire_time == acquired
    assert update.record.renew_time == micro_time(wall(2.0))
    actions, state = step(T, state, Written(update.record, "11"), 2.0, wall(2.0))
    assert actions == [] and state.leading and state.renewed_at == 2.0


def other(holder: str = "them", renew: float = 0.0, transitions: int = 3) -> LeaseRecord:
    stamp = micro_time(wall(renew))
    return LeaseRecord(holder, 15, stamp, stamp, transitions)


def test_held_lease_is_respected_for_the_duration_after_the_last_change() -> None:
    state = ElectionState("me")
    actions, state = step(T, state, Observed(other(), "5"), 100.0, wall(100.0))
    assert actions == []
    # Unchanged for less than the duration (counted from when *we* saw it): still waiting.
    actions, state = step(T, state, Observed(other(), "5"), 114.9, wall(114.9))
    assert actions == []
    actions, state = step(T, state, Observed(other(), "5"), 115.0, wall(115.0))
    [update] = actions
    assert isinstance(update, Update) and update.resource_version == "5"
    assert update.record.holder == "me" and update.record.transitions == 4
    assert update.record.acquire_time == micro_time(wall(115.0))


def test_a_holder_that_keeps_renewing_is_never_displaced() -> None:
    state = ElectionState("me")
    for i in range(50):
        now = 2.0 * i
        actions, state = step(T, state, Observed(other(renew=now), str(i)), now, wall(now))
        assert actions == []


def test_leader_stops_exactly_when_the_renew_deadline_passes() -> None:
    state = lead(now=0.0)
    for now in (2.0, 4.0):
        actions, state = step(T, state, Tick(), now, wall(now))
        assert isinstance(actions[0], Update)
        actions, state = step(T, state, WriteFailed(), now, wall(now))
        assert actions == [] and state.leading
    actions, state = step(T, state, ReadFailed(), 4.99, wall(4.99))
    assert actions == [] and state.leading
    actions, state = step(T, state, WriteFailed(), 5.0, wall(5.0))
    assert actions == [StoppedLeading()] and not state.leading


def test_tick_after_the_deadline_stops_then_reads() -> None:
    state = lead(now=0.0)
    actions, state = step(T, state, Tick(), 6.0, wall(6.0))
    assert actions == [StoppedLeading(), Get()] and not state.leading


def test_conflict_makes_the_next_tick_read_first() -> None:
    state = lead(now=0.0)
    actions, state = step(T, state, WriteFailed(conflict=True), 1.0, wall(1.0))
    assert actions == [] and state.leading
    actions, state = step(T, state, Tick(), 2.0, wall(2.0))
    assert actions == [Get()]


def test_seeing_another_holder_stops_leading() -> None:
    state = lead(now=0.0)
    actions, state = step(T, state, Observed(other(renew=3.0), "20"), 3.0, wall(3.0))
    assert actions == [StoppedLeading()] and not state.leading


def test_release_and_immediate_takeover() -> None:
    state = lead("a", now=0.0)
    actions, state = step(T, state, Release(), 1.0, wall(1.0))
    [update, stopped] = actions
    assert stopped == StoppedLeading() and not state.leading
    assert isinstance(update, Update) and update.record.holder == ""
    assert update.record.duration_seconds == 1 and update.resource_version == "10"
    # Another candidate, which saw "a" hold the lease a moment ago, takes it at once.
    b = ElectionState("b")
    _, b = step(T, b, Observed(other("a", renew=0.0, transitions=0), "10"), 0.5, wall(0.5))
    actions, b = step(T, b, Observed(update.record, "11"), 1.2, wall(1.2))
    [take] = actions
    assert isinstance(take, Update) and take.record.holder == "b"
    assert take.record.transitions == 1


def test_release_when_not_leading_does_nothing() -> None:
    assert step(T, ElectionState("x"), Release(), 0.0, wall(0.0)) == ([], ElectionState("x"))


# --- simulation ---------------------------------------------------------------------------


class FakeApi:
    """A Lease store with Kubernetes' optimistic concurrency."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.rv = 0

    def write(self, record: LeaseRecord, rv: str | None) -> Written | WriteFailed:
        if rv is None:  # create
            if self.record is not None:
                return WriteFailed(conflict=True)
        elif self.record is None or rv != str(self.rv):
            return WriteFailed(conflict=True)
        self.rv += 1
        self.record = record
        return Written(record, str(self.rv))


STEP = 0.25
SIM = LeaseTiming(duration=3.0, renew_deadline=1.5, retry_period=0.5)


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 3), st.data())
def test_never_two_live_leaders(n: int, data: st.DataObject) -> None:
    api = FakeApi()
    states = [ElectionState(f"c{i}") for i in range(n)]
    next_tick = [data.draw(st.floats(0, 1), label="first tick") for _ in range(n)]
    crashed = [False] * n
    cut = [False] * n  # requests from a cut candidate fail
    quiet_since = 0.0  # last time the set of reachable live candidates changed
    leader_seen_after_quiet = True
    now = 0.0
    for _ in range(120):
        now += STEP
        # The environment changes: crashes (for good) and partitions (for a while).
        if data.draw(st.integers(0, 40), label="event") == 0:
            victim = data.draw(st.integers(0, n - 1), label="victim")
            if not crashed[victim] and sum(not c for c in crashed) > 1:
                if data.draw(st.booleans(), label="crash or cut"):
                    crashed[victim] = True
                else:
                    cut[victim] = not cut[victim]
                quiet_since, leader_seen_after_quiet = now, False
        for i in range(n):
            if crashed[i] or now < next_tick[i]:
                continue
            pending: list[Event] = [Tick()]
            while pending:
                actions, states[i] = step(SIM, states[i], pending.pop(0), now, wall(now))
                for action in actions:
                    if isinstance(action, Get):
                        pending.append(ReadFailed() if cut[i] else
                                       Observed(api.record, str(api.rv) if api.record else None))
                    elif isinstance(action, Create | Update):
                        rv = action.resource_version if isinstance(action, Update) else None
                        lost = data.draw(st.integers(0, 30), label="lost") == 0
                        if lost:  # a disturbance too: liveness is judged after quiet spells
                            quiet_since, leader_seen_after_quiet = now, False
                        pending.append(WriteFailed() if lost or cut[i]
                                       else api.write(action.record, rv))
            period = SIM.retry_period * (1 + (0 if states[i].leading else
                                              1.2 * data.draw(st.floats(0, 1), label="jit")))
            next_tick[i] = now + period
        live_leaders = [i for i in range(n) if states[i].leading and not crashed[i]]
        assert len(live_leaders) <= 1, (now, live_leaders, states)
        reachable = [i for i in range(n) if not crashed[i] and not cut[i]]
        if live_leaders and live_leaders[0] in reachable:
            leader_seen_after_quiet = True
        # Liveness: after a quiet spell of the lease duration plus a few (jittered) retry
        # periods — the change seen up to one period late, the takeover tried at the next —
        # a reachable candidate leads.
        if reachable and now - quiet_since > SIM.duration + 6 * SIM.retry_period:
            assert leader_seen_after_quiet, (now, quiet_since, states)


def test_state_is_a_value() -> None:
    s = ElectionState("x")
    assert replace(s, leading=True) != s and s.leading is False
