"""Durable object storage on SQLite, with one monotonic resourceVersion and a watch history.

Layout (one database file, WAL mode, `synchronous=FULL`, so a commit survives power loss):

- `objects(resource, namespace, name, rv, data)`: the current objects, `data` their JSON;
- `events(rv, type, resource, namespace, name, data, old)`: one row per change, the last
  `history` of them kept so watches can resume; `old` is the object before the change;
- `meta(key, value)`: `rv` (the counter, never decreasing, so resourceVersions keep growing
  across restarts) and `compacted` (the newest rv no longer in `events`);
- `allocations(kind, value, owner)`: ClusterIPs and NodePorts in use, so a Service write reads
  the taken set without parsing every Service.

Every write goes through `transact(fn)`: `fn` runs on the single writer thread with a `Txn`
(reads and writes in one SQLite transaction). Writes that arrive while a commit is in flight
wait, and are then committed together (group commit, each under its own SAVEPOINT so one
failure does not spoil the others); each caller is answered only after the COMMIT that holds
its write returned, so an acknowledged write is always on disk. After a commit the event loop
applies the changes to an in-memory copy (reads, lists and watches are served from it) and
publishes them to watchers, in resourceVersion order.
"""

from __future__ import annotations

import asyncio
import json
import queue
import sqlite3
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

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
"""


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


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
    """Reads and writes inside the writer's transaction. Only used on the writer thread."""

    def __init__(self, store: Store, conn: sqlite3.Connection) -> None:
        self._store = store
        self._conn = conn
        self.events: list[Event] = []

    def get(self, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
        row = self._conn.execute(
            "SELECT data FROM objects WHERE resource=? AND namespace=? AND name=?",
            (resource, namespace, name)).fetchone()
        return json.loads(row[0]) if row else None

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
        return [json.loads(r[0]) for r in rows]

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

    def taken(self, kind: str) -> dict[str, str]:
        """Allocated values of `kind` (e.g. `clusterip`, `nodeport`) -> owner key."""
        return dict(self._conn.execute("SELECT value, owner FROM allocations WHERE kind=?",
                                       (kind,)).fetchall())

    def set_allocations(self, owner: str, kind: str, values: set[str]) -> None:
        self._conn.execute("DELETE FROM allocations WHERE owner=? AND kind=?", (owner, kind))
        self._conn.executemany("INSERT OR REPLACE INTO allocations VALUES (?,?,?)",
                               [(kind, v, owner) for v in sorted(values)])


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
        # Jobs wait on the loop side while the writer commits; the whole waiting list is
        # handed over at once when it is free, so one thread hand-off per batch, not per job.
        self._jobs: queue.SimpleQueue[list[_Job] | None] = queue.SimpleQueue()
        self._pending: list[_Job] = []
        self._writer_busy = False
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
            self.objects.setdefault(resource, {})[(ns, name)] = Stored(rv, json.loads(data), data)
        rows = conn.execute("SELECT rv, type, resource, namespace, name, data, old FROM events "
                            "ORDER BY rv DESC LIMIT ?", (self.history,)).fetchall()
        for rv, etype, resource, ns, name, data, old in reversed(rows):
            obj = json.loads(data)
            self.events.append(Event(rv, etype, resource, ns, name, obj, data,
                                     json.loads(old) if old else None))
        self.compacted = int(meta.get("compacted", 0))
        if self.events:
            self.compacted = max(self.compacted, self.events[0].rv - 1)
        else:
            self.compacted = self.rv
        self._conn = conn

    async def start(self) -> None:
        """Start the writer thread (call from the event loop that will serve requests)."""
        if self._conn is None:
            self.open()
        self._loop = asyncio.get_running_loop()
        # The writer gives up the GIL around every SQLite call and must win it back from the
        # busy event loop each time; with the default 5 ms switch interval a batch of writes
        # waits tens of milliseconds for the GIL alone. 0.5 ms keeps commits prompt.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self._thread = threading.Thread(target=self._writer, name="hexlane-store-writer",
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
            self._jobs.put(None)
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
        if not self._writer_busy:
            self._hand_over()
        return await fut

    def _hand_over(self) -> None:
        """Give the waiting jobs (at most MAX_BATCH) to the writer thread."""
        jobs, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        self._writer_busy = bool(jobs)
        if jobs:
            self._jobs.put(jobs)

    def _next_rv(self) -> int:
        self._writer_rv += 1
        return self._writer_rv

    def _writer(self) -> None:
        conn = self._conn
        assert conn is not None and self._loop is not None
        while (jobs := self._jobs.get()) is not None:
            before = self._writer_rv
            try:
                self._run_batch(conn, jobs)
            except BaseException as e:  # a bug here must fail these writes, not stop all writes
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                self._writer_rv = before
                self._loop.call_soon_threadsafe(self._apply, [],
                                                [(job, False, e) for job in jobs])

    def _run_batch(self, conn: sqlite3.Connection, jobs: list[_Job]) -> None:
        start_rv = self._writer_rv
        outcomes: list[tuple[_Job, bool, Any]] = []
        events: list[Event] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for job in jobs:
                before = self._writer_rv
                conn.execute("SAVEPOINT op")
                txn = Txn(self, conn)
                try:
                    result = job.fn(txn)
                except BaseException as e:  # the job's failure is its caller's answer
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
            conn.execute("COMMIT")
        except sqlite3.Error as e:
            # The commit itself failed (disk full, I/O error): nothing of the batch is durable.
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            self._writer_rv = start_rv
            outcomes = [(job, False, e) for job in jobs]
            events = []
        self._loop.call_soon_threadsafe(self._apply, events, outcomes)  # type: ignore[union-attr]

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
        self._hand_over()

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
