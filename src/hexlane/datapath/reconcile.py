"""The one reconciler: a desired table in, the kernel converged to it.

Every kernel object hexlane owns (BPF map entries, tc attachments, routes, FDB and neighbour
entries, sysctls, the CNI files) is a *table*: keys and values that pure code decided. A table
edge knows how to read what the kernel holds of it (only what is hexlane's: its route protocol,
its pins, its devices, so nothing foreign is ever touched), write one entry and delete one:

    class Table:                      # or AsyncTable, for netlink
        name: str
        def read(self) -> Mapping[K, V]: ...
        def update(self, key, value) -> None: ...
        def delete(self, key) -> None: ...        # an absent key is not an error

A `Reconciler` (or `AsyncReconciler`) holds the desired table and the keys that still have to
be written ("dirty"). Callers change the desired table incrementally (`put`, `remove`) or as a
whole (`set_all`, which marks only what differs); `flush()` writes the dirty keys, upserts
before prunes, and only those: a change among thousands of entries costs its own. `detect()`
reads the kernel and marks every entry that differs from the desired table (changed, missing
or stale behind the agent's back); those are counted as *repairs*. `resync()` is detect +
flush: the agent runs it periodically (`hexlane.resyncInterval`, default 60 s) and once when
it starts, so restarts and drift always converge.

An entry whose write fails stays dirty and is retried after a backoff (doubling from
`retry_initial` to `retry_max` seconds); the others are written regardless. `plan()` is the
pure core: what a desired table and an actual one differ by.

Several tables that reference each other (a service entry names a backend id) are flushed as
a group with `flush_group`: every table's upserts in order, then every table's deletes in
reverse order, so nothing ever points at an entry not yet written or already gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

RETRY_INITIAL = 0.5
RETRY_MAX = 60.0


@dataclass(frozen=True)
class Plan(Generic[K, V]):
    """What to write to make an actual table the desired one."""

    upserts: list[tuple[K, V]]
    deletes: list[K]

    @property
    def empty(self) -> bool:
        return not self.upserts and not self.deletes


def plan(desired: Mapping[K, V], actual: Mapping[K, V],
         equal: Callable[[V, V], bool] | None = None) -> Plan[K, V]:
    """Entries of `desired` that `actual` lacks or holds differently (in `desired`'s order),
    and keys of `actual` that `desired` does not have."""
    same = equal or (lambda a, b: a == b)
    upserts = [(k, v) for k, v in desired.items() if k not in actual or not same(v, actual[k])]
    deletes = [k for k in actual if k not in desired]
    return Plan(upserts, deletes)


@dataclass
class FlushResult:
    updated: int = 0
    deleted: int = 0
    failed: dict[Any, str] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.updated or self.deleted)

    def add(self, other: FlushResult) -> FlushResult:
        self.updated += other.updated
        self.deleted += other.deleted
        self.failed.update(other.failed)
        return self


class Table(Generic[K, V]):
    """A kernel object kind as a table (see the module docstring). Subclasses implement
    `read`, `update` and `delete`; `update_many`/`delete_many` may batch; `equal` compares a
    desired value with what `read` returned; `order` sorts upserts (None: desired order)."""

    name = "table"
    order: Callable[[K], Any] | None = None

    def read(self) -> Mapping[K, V]:
        raise NotImplementedError

    def update(self, key: K, value: V) -> None:
        raise NotImplementedError

    def delete(self, key: K) -> None:
        raise NotImplementedError

    def equal(self, want: V, have: V) -> bool:
        return want == have

    def update_many(self, pairs: Sequence[tuple[K, V]]) -> dict[K, Exception]:
        failed: dict[K, Exception] = {}
        for key, value in pairs:
            try:
                self.update(key, value)
            except Exception as exc:  # one bad entry never stops the others
                failed[key] = exc
        return failed

    def delete_many(self, keys: Sequence[K]) -> dict[K, Exception]:
        failed: dict[K, Exception] = {}
        for key in keys:
            try:
                self.delete(key)
            except Exception as exc:
                failed[key] = exc
        return failed


class AsyncTable(Generic[K, V]):
    """`Table` for edges that speak asyncio (netlink through pyroute2)."""

    name = "table"
    order: Callable[[K], Any] | None = None

    async def read(self) -> Mapping[K, V]:
        raise NotImplementedError

    async def update(self, key: K, value: V) -> None:
        raise NotImplementedError

    async def delete(self, key: K) -> None:
        raise NotImplementedError

    def equal(self, want: V, have: V) -> bool:
        return want == have


class _State(Generic[K, V]):
    """What both reconcilers keep: the desired table, dirty keys, retries, counters."""

    def __init__(self, name: str, equal: Callable[[V, V], bool],
                 order: Callable[[K], Any] | None, clock: Callable[[], float],
                 retry_initial: float, retry_max: float) -> None:
        self.name = name
        self._equal = equal
        self._order = order
        self.clock = clock
        self.retry_initial = retry_initial
        self.retry_max = retry_max
        self.desired: dict[K, V] = {}
        self._dirty: dict[K, None] = {}  # ordered: the order changes were made in
        self._retry: dict[K, tuple[int, float]] = {}  # key -> (failures, not before)
        #: entries found different in the kernel by `detect` (drift repaired), ever
        self.repairs = 0
        #: writes that failed, ever; and the last error per key still failing
        self.errors = 0
        self.last_errors: dict[K, str] = {}
        self.last_resync: float | None = None

    # -- the desired table ---------------------------------------------------------------

    def put(self, key: K, value: V) -> None:
        old = self.desired.get(key, _MISSING)
        if old is _MISSING or not self._equal(value, old):
            self.desired[key] = value
            self._dirty[key] = None

    def remove(self, key: K) -> None:
        if self.desired.pop(key, _MISSING) is not _MISSING:
            self._dirty[key] = None

    def set_all(self, desired: Mapping[K, V] | Iterable[tuple[K, V]]) -> None:
        """Replace the desired table; only what differs becomes dirty."""
        pairs = dict(desired.items() if isinstance(desired, Mapping) else desired)
        for key in [k for k in self.desired if k not in pairs]:
            self.remove(key)
        for key, value in pairs.items():
            self.put(key, value)

    @property
    def pending(self) -> int:
        """Keys not yet written (changed, or failing and waiting to be retried)."""
        return len(self._dirty)

    # -- drift ---------------------------------------------------------------------------

    def _mark_drift(self, actual: Mapping[K, V]) -> int:
        # Pending keys the kernel already holds as wanted (after a restart: everything
        # written by the previous run) need no write.
        for key in list(self._dirty):
            want = self.desired.get(key, _MISSING)
            have = actual.get(key, _MISSING)
            if (want is _MISSING and have is _MISSING) or (
                    want is not _MISSING and have is not _MISSING and self._equal(want, have)):
                del self._dirty[key]
                self._retry.pop(key, None)
                self.last_errors.pop(key, None)  # nothing left to fail
        found = plan(self.desired, actual, self._equal)
        drift = [k for k, _ in found.upserts] + found.deletes
        new = [k for k in drift if k not in self._dirty]
        for key in drift:
            self._dirty[key] = None
            self._retry.pop(key, None)  # a resync retries at once
        self.repairs += len(new)
        self.last_resync = time.time()  # wall clock, for people reading the status
        return len(new)

    # -- writing -------------------------------------------------------------------------

    def _due(self) -> tuple[list[tuple[K, V]], list[K]]:
        now = self.clock()
        upserts: list[tuple[K, V]] = []
        deletes: list[K] = []
        for key in self._dirty:
            retry = self._retry.get(key)
            if retry is not None and retry[1] > now:
                continue
            if key in self.desired:
                upserts.append((key, self.desired[key]))
            else:
                deletes.append(key)
        if self._order is not None:
            order = self._order
            upserts.sort(key=lambda kv: order(kv[0]))
        return upserts, deletes

    def _done(self, keys: Iterable[K], failed: Mapping[K, Exception],
              result: FlushResult, deleting: bool) -> None:
        now = self.clock()
        n = 0
        for key in keys:
            exc = failed.get(key)
            if exc is None:
                self._dirty.pop(key, None)
                self._retry.pop(key, None)
                self.last_errors.pop(key, None)
                n += 1
                continue
            failures = self._retry.get(key, (0, 0.0))[0] + 1
            delay = min(self.retry_initial * 2 ** min(failures - 1, 30), self.retry_max)
            self._retry[key] = (failures, now + delay)
            self.errors += 1
            self.last_errors[key] = f"{type(exc).__name__}: {exc}"
            result.failed[key] = self.last_errors[key]
        if deleting:
            result.deleted += n
        else:
            result.updated += n

    def status(self) -> dict[str, Any]:
        return {"table": self.name, "entries": len(self.desired), "pending": self.pending,
                "repairs": self.repairs, "errors": self.errors,
                "failing": {str(k): v for k, v in list(self.last_errors.items())[:5]},
                "lastResync": self.last_resync}


_MISSING: Any = object()


class Reconciler(_State[K, V]):
    """Converges one `Table` (see the module docstring)."""

    def __init__(self, table: Table[K, V], *, clock: Callable[[], float] = time.monotonic,
                 retry_initial: float = RETRY_INITIAL, retry_max: float = RETRY_MAX) -> None:
        super().__init__(table.name, table.equal, table.order, clock, retry_initial,
                         retry_max)
        self.table = table

    def flush_upserts(self) -> FlushResult:
        result = FlushResult()
        upserts, _ = self._due()
        if upserts:
            failed = self.table.update_many(upserts)
            self._done((k for k, _ in upserts), failed, result, deleting=False)
        return result

    def flush_deletes(self) -> FlushResult:
        result = FlushResult()
        _, deletes = self._due()
        if deletes:
            failed = self.table.delete_many(deletes)
            self._done(deletes, failed, result, deleting=True)
        return result

    def flush(self) -> FlushResult:
        """Write the dirty keys that are due: upserts, then deletes."""
        return self.flush_upserts().add(self.flush_deletes())

    def detect(self) -> int:
        """Read the kernel; mark what differs from the desired table. The new repairs."""
        return self._mark_drift(self.table.read())

    def resync(self) -> FlushResult:
        self.detect()
        return self.flush()


class AsyncReconciler(_State[K, V]):
    """`Reconciler` for an `AsyncTable`."""

    def __init__(self, table: AsyncTable[K, V], *,
                 clock: Callable[[], float] = time.monotonic,
                 retry_initial: float = RETRY_INITIAL, retry_max: float = RETRY_MAX) -> None:
        super().__init__(table.name, table.equal, table.order, clock, retry_initial,
                         retry_max)
        self.table = table

    async def _write(self, pairs: Sequence[tuple[K, V]], result: FlushResult) -> None:
        failed: dict[K, Exception] = {}
        for key, value in pairs:
            try:
                await self.table.update(key, value)
            except Exception as exc:
                failed[key] = exc
        self._done((k for k, _ in pairs), failed, result, deleting=False)

    async def _delete(self, keys: Sequence[K], result: FlushResult) -> None:
        failed: dict[K, Exception] = {}
        for key in keys:
            try:
                await self.table.delete(key)
            except Exception as exc:
                failed[key] = exc
        self._done(keys, failed, result, deleting=True)

    async def flush_upserts(self) -> FlushResult:
        result = FlushResult()
        upserts, _ = self._due()
        await self._write(upserts, result)
        return result

    async def flush_deletes(self) -> FlushResult:
        result = FlushResult()
        _, deletes = self._due()
        await self._delete(deletes, result)
        return result

    async def flush(self) -> FlushResult:
        return (await self.flush_upserts()).add(await self.flush_deletes())

    async def detect(self) -> int:
        return self._mark_drift(await self.table.read())

    async def resync(self) -> FlushResult:
        await self.detect()
        return await self.flush()


def flush_group(reconcilers: Sequence[Reconciler[Any, Any]]) -> FlushResult:
    """Every table's upserts in order, then every table's deletes in reverse order."""
    result = FlushResult()
    for rec in reconcilers:
        result.add(rec.flush_upserts())
    for rec in reversed(reconcilers):
        result.add(rec.flush_deletes())
    return result


async def flush_group_async(reconcilers: Sequence[AsyncReconciler[Any, Any]]) -> FlushResult:
    result = FlushResult()
    for rec in reconcilers:
        result.add(await rec.flush_upserts())
    for rec in reversed(reconcilers):
        result.add(await rec.flush_deletes())
    return result


class MapTable(Table[bytes, bytes]):
    """A BPF hash or array map as a table of raw keys and values (every entry is ours: the
    map is pinned under hexlane's bpf root). Batched writes where the map allows them."""

    def __init__(self, bpf_map: Any, name: str | None = None, *,
                 order: Callable[[bytes], Any] | None = None, batch: int = 4096) -> None:
        self.map = bpf_map
        self.name = name or bpf_map.name
        self.order = order
        self.batch = batch

    def read(self) -> dict[bytes, bytes]:
        out: dict[bytes, bytes] = {}
        for raw in self.map.raw_keys():
            value = self.map.lookup(raw)
            if value is not None:
                out[raw] = bytes(value)
        return out

    def update(self, key: bytes, value: bytes) -> None:
        self.map.update(key, value)

    def delete(self, key: bytes) -> None:
        self.map.delete(key)  # absent: False, not an error

    def update_many(self, pairs: Sequence[tuple[bytes, bytes]]) -> dict[bytes, Exception]:
        if len(pairs) < 64 or not hasattr(self.map, "update_batch"):
            return super().update_many(pairs)
        failed: dict[bytes, Exception] = {}
        for start in range(0, len(pairs), self.batch):
            chunk = pairs[start:start + self.batch]
            try:
                self.map.update_batch(chunk)
            except Exception:  # find the bad ones one by one
                failed.update(super().update_many(chunk))
        return failed


def reconcile_map(target: Any, desired: Mapping[Any, Any] | Iterable[tuple[Any, Any]]
                  ) -> FlushResult:
    """Make the map `target` hold exactly `desired` (ctypes or bytes keys and values), once."""
    pairs = desired.items() if isinstance(desired, Mapping) else desired
    rec: Reconciler[bytes, bytes] = Reconciler(MapTable(target))
    rec.set_all({bytes(k): bytes(v) for k, v in pairs})
    return rec.resync()
