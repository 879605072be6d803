"""Durable object storage on SQLite, with one monotonic resourceVersion and a watch history.

Layout (one database file, WAL mode, `synchronous=FULL`, so a commit survives power loss):

- `objects(resource, namespace, name, rv, data)`: the current objects, `data` their JSON;
- `events(rv, type, resource, namespace, name, data, old)`: one row per change, the last
  `history` of them kept so watches can resume; `old` is the object before the change;
- `meta(key, value)`: `rv` (the counter, never decreasing, so resourceVersions keep growing
  across restarts) and `compacted` (the newest rv no longer in `events`);
- `allocations(kind, value, owner)`: ClusterIPs and NodePorts in use, so a Service write asks
  whether a value is taken without parsing every Service (indexed by owner too, so a write
  or delete of one Service finds its own rows without a scan).

Every write goes through `transact(fn)`: `fn` runs with a `Txn` (reads and writes in one
SQLite transaction) on the event loop. Writes that arrive while a commit is in flight wait,
and are then run together in one transaction (group commit, each under its own SAVEPOINT so
one failure does not spoil the others) whose COMMIT, with its one fsync, runs on the
committer thread; each caller is answered only after the COMMIT that holds its write
returned, so an acknowledged write is always on disk. After a commit the event loop applies
the changes to an in-memory copy (reads, lists and watches are served from it) and publishes
them to watchers, in resourceVersion order.
"""

from __future__ import annotations

import asyncio
import copy
import json
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import msgspec

T = TypeVar("T")

ADDED, MODIFIED, DELETED = "ADDED", "MODIFIED", "DELETED"
MAX_BATCH = 256
CHECKPOINT_SECONDS = 1.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    resource TEXT NOT NULL, namespace TEXT NOT NULL, name TEXT NOT NULL,
    rv INTEGER NOT NULL, data TEXT NOT NULL,
    PRIMARY KEY (resource, namespace, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    rv INTEGER PRIMARY KEY, type TEXT NOT NULL, resource TEXT NOT NULL,
    namespace TEXT NOT NULL, name TEXT NOT NULL, data TEXT NOT NULL, old TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS allocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, owner TEXT NOT NULL,
    PRIMARY KEY (kind, value)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS allocations_by_owner ON allocations (owner, kind);
"""


_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder()


def dumps(obj: Any) -> str:
    """Compact JSON, as `json.dumps(obj, separators=(",", ":"), ensure_ascii=False)` makes it
    (msgspec: about a tenth of the CPU; json for what msgspec refuses, e.g. a NaN)."""
    try:
        return _ENCODER.encode(obj).decode()
    except (TypeError, msgspec.EncodeError, OverflowError):
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def loads(raw: str | bytes) -> Any:
    """Decode JSON this store wrote (trusted: the request's limits were checked before)."""
    return _DECODER.decode(raw)


def clone(obj: Any) -> Any:
    """A deep copy of a JSON-shaped value (dicts, lists, strings, numbers, booleans, None),
    through msgspec: a fifth of `copy.deepcopy`'s CPU for an object."""
    try:
        return _DECODER.decode(_ENCODER.encode(obj))
    except (TypeError, msgspec.EncodeError, OverflowError):
        return copy.deepcopy(obj)


@dataclass(slots=True)
class Stored:
    """A current object: its dict (never mutated once stored) and its JSON."""

    rv: int
    obj: dict[str, Any]
    raw: str


@dataclass(slots=True)
class Event:
    """One committed change. `obj` carries the new resourceVersion (also for DELETED)."""

    rv: int
    type: str
    resource: str
    namespace: str
    name: str
    obj: dict[str, Any]
    raw: str
    old: dict[str, Any] | None
    _line: bytes | None = field(default=None, repr=False)

    def line(self) -> bytes:
        """The watch stream line for this event, built once and shared by every watcher."""
        if self._line is None:
            self._line = f'{{"type":"{self.type}","object":{self.raw}}}\n'.encode()
        return self._line


class Txn:
    """Reads and writes inside a batch's transaction, on the event loop while no COMMIT runs."""

    def __init__(self, store: Store, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn
        self.events: list[Event] = []

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT data FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name)).fetchone()
        return loads(row[0]) if row else None

    def deletion_of(self, resource: str, namespace: str, name: str) -> tuple[bool, Any]:
        """Whether the object exists, and its `metadata.deletionTimestamp`, read by SQLite
        without decoding the whole object (a create checks its namespace this way)."""
        row = self._conn.execute(
            "SELECT json_extract(data, '$.metadata.deletionTimestamp') FROM objects "
            "WHERE resource=? AND namespace=? AND name=?", (resource, namespace, name)).fetchone()
        return (row is not None), (row[0] if row else None)

    def list_objects(self, resource: str,
                     namespace: str | None = None) -> list[dict[str, Any]]:
        if namespace is None:
            rows = self._conn.execute("SELECT data FROM objects WHERE resource=? "
                                      "ORDER BY namespace, name", (resource,))
        else:
            rows = self._conn.execute("SELECT data FROM objects WHERE resource=? AND "
                                      "namespace=? ORDER BY name", (resource, namespace))
        return [loads(r[0]) for r in rows]

    def count_in_namespace(self, namespace: str) -> int:
        row = self._conn.execute("SELECT count(*) FROM objects WHERE namespace=?",
                                 (namespace,)).fetchone()
        return int(row[0])

    def resources_in_namespace(self, namespace: str) -> list[str]:
        return [r[0] for r in self._conn.execute(
            "SELECT DISTINCT resource FROM objects WHERE namespace=?", (namespace,))]

    def put(self, resource: str, namespace: str, name: str, obj: dict[str, Any],
            old: dict[str, Any] | None) -> Event:
        """Store `obj` (ADDED when `old` is None, else MODIFIED) under a new resourceVersion."""
        return self._write(ADDED if old is None else MODIFIED, resource, namespace, name, obj,
                           old)

    def delete(self, resource: str, namespace: str, name: str, obj: dict[str, Any]) -> Event:
        """Remove the object; the DELETED event carries it with the deletion's rv."""
        gone = {**obj, "metadata": dict(obj.get("metadata") or {})}
        return self._write(DELETED, resource, namespace, name, gone, obj)

    def _write(self, etype: str, resource: str, namespace: str, name: str,
               obj: dict[str, Any], old: dict[str, Any] | None) -> Event:
        rv = self._store._next_rv()
        obj.setdefault("metadata", {})["resourceVersion"] = str(rv)
        raw = dumps(obj)
        if etype == DELETED:
            self._conn.execute("DELETE FROM objects WHERE resource=? AND namespace=? AND name=?",
                               (resource, namespace, name))
            self._conn.execute("DELETE FROM allocations WHERE owner=?",
                               (f"{resource}/{namespace}/{name}",))
        else:
            self._conn.execute("INSERT OR REPLACE INTO objects VALUES (?,?,?,?,?)",
                               (resource, namespace, name, rv, raw))
        self._conn.execute("INSERT INTO events VALUES (?,?,?,?,?,?,?)",
                           (rv, etype, resource, namespace, name, raw,
                            dumps(old) if old is not None else None))
        ev = Event(rv, etype, resource, namespace, name, obj, raw, old)
        self.events.append(ev)
        return ev

    def allocated(self, kind: str) -> Allocated:
        """The allocated values of `kind`, asked of the database one value at a time."""
        return Allocated(self._conn, kind)

    def set_allocations(self, owner: str, kind: str, values: set[str]) -> None:
        self._conn.execute("DELETE FROM allocations WHERE owner=? AND kind=?", (owner, kind))
        self._conn.executemany("INSERT OR REPLACE INTO allocations VALUES (?,?,?)",
                               [(kind, v, owner) for v in sorted(values)])


class Allocated:
    """`value in allocated` and `len(allocated)` for one kind of allocation (values as
    stored: canonical IP strings; node ports are asked for as numbers), each a query by the
    table's key, so a Service create costs the same with 10 Services or 10,000."""

    __slots__ = ("_conn", "_kind", "_len")

    def __init__(self, conn: sqlite3.Connection, kind: str) -> None:
        self._conn = conn
        self._kind = kind
        self._len: int | None = None

    def __contains__(self, value: object) -> bool:
        return self._conn.execute("SELECT 1 FROM allocations WHERE kind=? AND value=?",
                                  (self._kind, str(value))).fetchone() is not None

    def __len__(self) -> int:
        if self._len is None:
            self._len = int(self._conn.execute("SELECT count(*) FROM allocations WHERE kind=?",
                                               (self._kind,)).fetchone()[0])
        return self._len


class Subscription:
    """A watcher's queue of events for one resource; `closed` when it fell too far behind.
    The watcher itself may put None in the queue to wake up (timers)."""

    __slots__ = ("closed", "queue", "resource")

    def __init__(self, resource: str) -> None:
        self.resource = resource
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.closed = False


@dataclass(slots=True)
class _Job:
    fn: Callable[[Txn], Any]
    future: asyncio.Future[Any]


# A batch ready for its COMMIT: its events, each job's outcome, the rv before it.
_Commit = tuple[list[Event], list[tuple[_Job, bool, Any]], int]


class Store:
    """The database, its in-memory copy and the watch fan-out. Open with `open()`."""

    def __init__(self, path: Path, *, history: int = 10000, max_queue: int = 100000) -> None:
        self.path = Path(path)
        self.history = max(1, history)
        self.max_queue = max_queue
        # Loop-side state: what has been committed and applied, in rv order.
        self.objects: dict[str, dict[tuple[str, str], Stored]] = {}
        self.events: deque[Event] = deque(maxlen=self.history)
        self.rv = 0
        self.compacted = 0
        self.listeners: list[Callable[[Event], None]] = []
        self._subs: dict[str, set[Subscription]] = {}
        self._sorted: dict[str, list[tuple[str, str]]] = {}
        # Writer-side state.
        self._writer_rv = 0
        # Jobs wait on the loop while a batch commits; they then run together as the next
        # batch, whose COMMIT goes to the committer thread: one hand-off per batch.
        self._commits: queue.SimpleQueue[_Commit | None] = queue.SimpleQueue()
        self._pending: list[_Job] = []
        self._committing = False
        self._scheduled = False
        self.commits = 0  # durable COMMITs (batches that wrote), for tests and metrics
        self._thread: threading.Thread | None = None
        self._checkpointer: threading.Thread | None = None
        self._stop_checkpoints = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: sqlite3.Connection | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def open(self) -> None:
        """Open (creating if needed) the database and load it into memory."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        # Checkpoints (copying the WAL into the database, with an fsync of its own) run on a
        # thread of their own, so no commit waits for one.
        conn.execute("PRAGMA wal_autocheckpoint=0")
        conn.executescript(_SCHEMA)
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        self.rv = self._writer_rv = int(meta.get("rv", 0))
        for resource, ns, name, rv, data in conn.execute(
                "SELECT resource, namespace, name, rv, data FROM objects"):
            self.objects.setdefault(resource, {})[(ns, name)] = Stored(rv, loads(data), data)
        rows = conn.execute("SELECT rv, type, resource, namespace, name, data, old FROM events "
                            "ORDER BY rv DESC LIMIT ?", (self.history,)).fetchall()
        for rv, etype, resource, ns, name, data, old in reversed(rows):
            obj = loads(data)
            self.events.append(Event(rv, etype, resource, ns, name, obj, data,
                                     loads(old) if old else None))
        self.compacted = int(meta.get("compacted", 0))
        if self.events:
            self.compacted = max(self.compacted, self.events[0].rv - 1)
        else:
            self.compacted = self.rv
        self._conn = conn

    async def start(self) -> None:
        """Start the committer thread (call from the event loop that will serve requests)."""
        if self._conn is None:
            self.open()
        self._loop = asyncio.get_running_loop()
        # The switch interval stays Python's 5 ms: the committer needs the GIL only twice
        # per batch and gets it whenever the loop sends, receives or waits; a shorter one
        # (0.5 ms, when a writer thread ran the writes) forced hand-overs that stalled the
        # loop until the committer was scheduled, costly on a loaded machine.
        self._thread = threading.Thread(target=self._committer, name="hexlane-store-commit",
                                        daemon=True)
        self._thread.start()
        self._checkpointer = threading.Thread(target=self._checkpoint_loop,
                                              name="hexlane-store-checkpoint", daemon=True)
        self._checkpointer.start()

    def _checkpoint_loop(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        try:
            conn.execute("PRAGMA synchronous=FULL")
            while not self._stop_checkpoints.wait(CHECKPOINT_SECONDS):
                try:
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                except sqlite3.Error:
                    continue  # busy or locked now: the next round does it
        finally:
            conn.close()

    async def stop(self) -> None:
        self._stop_checkpoints.set()
        if self._checkpointer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._checkpointer.join)
            self._checkpointer = None
        if self._thread is not None:
            self._commits.put(None)
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    # -- writes ----------------------------------------------------------------------------

    async def transact(self, fn: Callable[[Txn], T]) -> T:
        """Run `fn` in a write transaction; return its result once durably committed."""
        assert self._loop is not None, "Store.start() first"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._pending.append(_Job(fn, fut))
        if not self._committing and not self._scheduled:
            # Next loop turn, so the writes of requests read in the same turn join this batch.
            self._scheduled = True
            self._loop.call_soon(self._start_batch)
        return await fut

    def _next_rv(self) -> int:
        self._writer_rv += 1
        return self._writer_rv

    def _start_batch(self) -> None:
        """Run the waiting jobs (at most MAX_BATCH) in one transaction, here on the event
        loop, and give its COMMIT to the committer thread.

        The jobs' Python (the object rules, encoding) runs on the loop because it needs the
        GIL anyway: on a thread of its own it fought the busy loop for the GIL after every
        SQLite call (half a switch interval each, several per write). Only the COMMIT, whose
        fsync releases the GIL for its whole length, runs elsewhere; requests are read and
        their jobs queued meanwhile, and become the next batch when it returns."""
        self._scheduled = False
        if self._committing or not self._pending:
            return
        conn = self._conn
        assert conn is not None
        jobs, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        start_rv = self._writer_rv
        changes = conn.total_changes
        try:
            events, outcomes = self._run_batch(conn, jobs, start_rv)
        except BaseException as e:  # a bug or a failing BEGIN: these writes fail, not all
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._writer_rv = start_rv
            self._committed([], [(job, False, e) for job in jobs], None)
            return
        if conn.total_changes == changes:
            # Nothing written (reads, dry runs, failures): nothing to make durable.
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes = [(job, False, e) for job in jobs]
            self._committed(events, outcomes, None)
            return
        self._committing = True
        self._commits.put((events, outcomes, start_rv))

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job], start_rv: int
                   ) -> tuple[list[Event], list[tuple[_Job, bool, Any]]]:
        """Each job under its own SAVEPOINT (a failing one leaves no trace and takes no
        resourceVersion); the transaction is left open for the COMMIT."""
        outcomes: list[tuple[_Job, bool, Any]] = []
        events: list[Event] = []
        conn.execute("BEGIN IMMEDIATE")
        for job in jobs:
            before = self._writer_rv
            conn.execute("SAVEPOINT op")
            txn = Txn(self, conn)
            try:
                result = job.fn(txn)
            except Exception as e:  # the job's failure is its caller's answer
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                self._writer_rv = before
                outcomes.append((job, False, e))
                continue
            conn.execute("RELEASE op")
            events.extend(txn.events)
            outcomes.append((job, True, result))
        if self._writer_rv != start_rv:
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('rv', ?)", (self._writer_rv,))
            oldest_kept = self._writer_rv - self.history
            if oldest_kept > 0:
                conn.execute("DELETE FROM events WHERE rv <= ?", (oldest_kept,))
                conn.execute("INSERT OR REPLACE INTO meta VALUES ('compacted', "
                             "max(?, coalesce((SELECT value FROM meta WHERE "
                             "key='compacted'), 0)))", (oldest_kept,))
        return events, outcomes

    def _committer(self) -> None:
        """The committer thread: COMMIT (with its fsync) each batch the loop prepared."""
        conn = self._conn
        assert conn is not None and self._loop is not None
        while (item := self._commits.get()) is not None:
            events, outcomes, start_rv = item
            failed: int | None = None
            try:
                conn.execute("COMMIT")
            except sqlite3.Error as e:
                # The commit itself failed (disk full, I/O error): nothing of it is durable.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                outcomes = [(job, False, e) for job, _, _ in outcomes]
                events, failed = [], start_rv
            self._loop.call_soon_threadsafe(self._committed, events, outcomes, failed)

    def _committed(self, events: list[Event], outcomes: list[tuple[_Job, bool, Any]],
                   failed_from: int | None) -> None:
        """On the loop, after a batch's COMMIT returned: apply, answer, start the next."""
        self._committing = False
        if failed_from is not None:
            self._writer_rv = failed_from
        elif events:
            self.commits += 1
        self._apply(events, outcomes)
        if self._pending and not self._scheduled:
            self._start_batch()

    # -- loop side ---------------------------------------------------------------------------

    def _apply(self, events: list[Event], outcomes: list[tuple[_Job, bool, Any]]) -> None:
        for ev in events:
            objs = self.objects.setdefault(ev.resource, {})
            key = (ev.namespace, ev.name)
            if ev.type == DELETED:
                objs.pop(key, None)
                self._sorted.pop(ev.resource, None)
            else:
                if key not in objs:
                    self._sorted.pop(ev.resource, None)
                objs[key] = Stored(ev.rv, ev.obj, ev.raw)
            self.events.append(ev)
            self.rv = ev.rv
            if len(self.events) == self.history:
                self.compacted = max(self.compacted, self.events[0].rv - 1)
            for listener in self.listeners:
                listener(ev)
            for sub in self._subs.get(ev.resource, ()):
                if sub.closed:
                    continue
                if sub.queue.qsize() >= self.max_queue:
                    sub.closed = True  # too slow: the watch ends and the client re-watches
                sub.queue.put_nowait(ev)
        for job, ok, value in outcomes:
            if job.future.done():
                continue
            if ok:
                job.future.set_result(value)
            else:
                job.future.set_exception(value)

    def get(self, resource: str, namespace: str, name: str) -> Stored | None:
        return self.objects.get(resource, {}).get((namespace, name))

    def sorted_keys(self, resource: str) -> list[tuple[str, str]]:
        """(namespace, name) keys of a resource in storage order (cached until a key changes)."""
        keys = self._sorted.get(resource)
        if keys is None:
            keys = sorted(self.objects.get(resource, {}))
            self._sorted[resource] = keys
        return keys

    def subscribe(self, resource: str) -> Subscription:
        sub = Subscription(resource)
        self._subs.setdefault(resource, set()).add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.get(sub.resource, set()).discard(sub)

    def events_since(self, resource: str, rv: int) -> Iterator[Event]:
        """Retained events of `resource` newer than `rv` (caller checked rv >= compacted)."""
        for ev in self.events:
            if ev.rv > rv and ev.resource == resource:
                yield ev

    def state_at(self, resource: str, rv: int) -> dict[tuple[str, str], Stored | None]:
        """Overrides that turn the current objects of `resource` into their state at `rv`:
        key -> the object as it was then (None: it did not exist). Needs rv >= compacted."""
        out: dict[tuple[str, str], Stored | None] = {}
        for ev in self.events:
            if ev.rv <= rv or ev.resource != resource:
                continue
            key = (ev.namespace, ev.name)
            if key in out:
                continue
            if ev.type == ADDED or ev.old is None:
                out[key] = None
            else:
                old = ev.old
                old_rv = int(old.get("metadata", {}).get("resourceVersion", "0") or 0)
                out[key] = Stored(old_rv, old, dumps(old))
        return out
