"""Informers: a local, indexed, always-converging copy of one kind, with change callbacks.

An `Informer` does what client-go's reflector and shared informer do:

1. LIST the kind (paged), replace the cache with the result, remember the list's
   resourceVersion, call the handlers for what changed, and set `synced`;
2. WATCH from that resourceVersion with `allowWatchBookmarks=true`; apply ADDED / MODIFIED /
   DELETED to the cache and call the handlers; a BOOKMARK only moves the resourceVersion on;
3. when the stream ends (the server's timeoutSeconds) watch again from the last
   resourceVersion seen, at once; when the connection breaks or the server is unreachable,
   watch again from it after a backoff (250 ms doubling to 5 min). Nothing is missed, because
   the server replays every change after that resourceVersion;
4. LIST again only when the server says the resourceVersion is too old (410 Gone / Expired,
   immediately) or answers the watch with an error that a retry cannot mend (after a
   backoff). A relist calls the handlers only for the difference, so a consumer sees the
   same sequence of states it would have seen without the gap.

Consumers either register callbacks (`add_handler(on_add, on_update, on_delete)`, called in
the informer's task, exceptions logged and dropped) or take a `KeyQueue` of "ns/name" keys to
reconcile (`key_queue()`, deduplicated, pre-filled with the cache's keys), and read objects
from `informer.cache` — never from the API — once `synced` is set.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .backoff import Backoff
from .cache import Cache, IndexFunc, Obj, object_key, resource_version
from .client import ApiError, KubeClient
from .resources import Kind, kind_of
from .runtime import BackgroundTask
from .transport import decode

log = logging.getLogger(__name__)

LIST_PAGE_SIZE = 500
# client-go picks a watch timeout between 5 and 10 minutes so a fleet of informers does not
# reconnect in step; ours is the same with the base configurable.
DEFAULT_WATCH_TIMEOUT = 300.0
# Status codes after which the same watch is worth retrying (from the same resourceVersion).
RETRY_WATCH_CODES = frozenset({429, 500, 502, 503, 504})

AddFunc = Callable[[Obj], Any]
UpdateFunc = Callable[[Obj, Obj], Any]
DeleteFunc = Callable[[Obj], Any]


@dataclass(slots=True)
class InformerStats:
    """What the informer has done, for tests and status output."""

    list_requests: int = 0
    lists: int = 0
    watch_requests: int = 0
    events: int = 0
    bookmarks: int = 0
    expired: int = 0
    reconnects: int = 0
    errors: int = 0


@dataclass(frozen=True, slots=True)
class Handler:
    on_add: AddFunc | None = None
    on_update: UpdateFunc | None = None
    on_delete: DeleteFunc | None = None


class KeyQueue:
    """Keys of changed objects for a reconciler: a key already waiting is not queued twice."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()
        self._pending: set[str] = set()

    def put(self, key: str) -> None:
        if key not in self._pending:
            self._pending.add(key)
            self._queue.put_nowait(key)

    async def get(self) -> str:
        key = await self._queue.get()
        self._pending.discard(key)
        return key

    def get_nowait(self) -> str:
        key = self._queue.get_nowait()
        self._pending.discard(key)
        return key

    def __len__(self) -> int:
        return self._queue.qsize()


class _Relist(Exception):
    """The watch cannot continue from its resourceVersion: list again."""

    def __init__(self, cause: ApiError, *, immediately: bool) -> None:
        super().__init__(str(cause))
        self.cause = cause
        self.immediately = immediately


class Informer:
    """A watch cache of one kind (optionally one namespace and selectors)."""

    def __init__(self, client: KubeClient, resource: Any, *, namespace: str | None = None,
                 label_selector: str | None = None, field_selector: str | None = None,
                 indexers: Mapping[str, IndexFunc] | None = None,
                 backoff: Backoff | None = None,
                 watch_timeout: float = DEFAULT_WATCH_TIMEOUT,
                 rand: Callable[[], float] = random.random,
                 on_list_page: Callable[[list[Obj]], None] | None = None) -> None:
        # `on_list_page(items)`: each page of a list as it arrives, before the list is
        # whole (a controller may start work on it while the next page is on its way).
        self.on_list_page = on_list_page
        self.client = client
        self.kind: Kind = kind_of(resource)
        self.namespace = namespace if self.kind.namespaced else None
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.cache = Cache(indexers)
        self.backoff = backoff or Backoff(jitter=0.2)
        self.watch_timeout = watch_timeout
        self.rand = rand
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.stats = InformerStats()
        self._handlers: list[Handler] = []
        self._queues: list[KeyQueue] = []
        self._task = BackgroundTask(self.run, lambda: repr(self))

    def __repr__(self) -> str:
        where = f" in {self.namespace}" if self.namespace else ""
        return f"<Informer {self.kind.plural}{where} rv={self.resource_version}>"

    # -- consumers ---------------------------------------------------------------------------

    def add_handler(self, on_add: AddFunc | None = None, on_update: UpdateFunc | None = None,
                    on_delete: DeleteFunc | None = None) -> None:
        """Call these for every change from now on (and, once synced, `on_add` is not
        replayed for objects already cached: read `cache` for those)."""
        self._handlers.append(Handler(on_add, on_update, on_delete))

    def key_queue(self) -> KeyQueue:
        """A queue of keys to reconcile, starting with every key cached now."""
        queue = KeyQueue()
        for key in self.cache:
            queue.put(key)
        self._queues.append(queue)
        return queue

    async def wait_synced(self, timeout: float | None = None) -> None:
        await asyncio.wait_for(self.synced.wait(), timeout)

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> asyncio.Task[None]:
        return self._task.start()

    async def stop(self) -> None:
        await self._task.stop()

    async def run(self) -> None:
        """List and watch until cancelled."""
        need_list = True
        while True:
            if need_list:
                try:
                    await self._list()
                except (ApiError, OSError) as e:
                    self.stats.errors += 1
                    delay = self.backoff.next_delay()
                    log.warning("%r: list failed (%s); retrying in %.2fs", self, e, delay)
                    await asyncio.sleep(delay)
                    continue
                need_list = False
            try:
                await self._watch()
            except _Relist as e:
                need_list = True
                if e.immediately:
                    self.stats.expired += 1
                    log.info("%r: %s; relisting", self, e.cause.message)
                    continue
                self.stats.errors += 1
                delay = self.backoff.next_delay()
                log.warning("%r: watch failed (%s); relisting in %.2fs", self, e, delay)
                await asyncio.sleep(delay)
            except (ApiError, OSError, ValueError) as e:
                # Transient (connection broken, server restarting, 429/5xx): the server still
                # has every change after our resourceVersion, so resume from it.
                self.stats.errors += 1
                self.stats.reconnects += 1
                delay = self.backoff.next_delay()
                log.info("%r: watch interrupted (%s); resuming in %.2fs", self, e, delay)
                await asyncio.sleep(delay)

    # -- list --------------------------------------------------------------------------------

    def _selectors(self) -> dict[str, str]:
        params = {}
        if self.label_selector:
            params["labelSelector"] = self.label_selector
        if self.field_selector:
            params["fieldSelector"] = self.field_selector
        return params

    async def _list(self) -> None:
        path = self.kind.path(self.namespace)
        items: list[Obj] = []
        params = {**self._selectors(), "limit": str(LIST_PAGE_SIZE)}
        list_rv = ""
        while True:
            self.stats.list_requests += 1
            try:
                page = await self.client.request("GET", path, params=params)
            except ApiError as e:
                if e.gone and "continue" in params:
                    # The continue token outlived the history: start the list over.
                    items, list_rv = [], ""
                    params.pop("continue")
                    continue
                raise
            meta = page.get("metadata") or {}
            list_rv = list_rv or str(meta.get("resourceVersion") or "")
            page_items = page.get("items") or []
            for item in page_items:
                # List items carry no kind/apiVersion, watch events do: make them alike.
                item.setdefault("apiVersion", self.kind.api_version)
                item.setdefault("kind", self.kind.kind)
            items.extend(page_items)
            if self.on_list_page is not None and page_items:
                self.on_list_page(page_items)
            if not meta.get("continue"):
                break
            params["continue"] = str(meta["continue"])
        added, updated, deleted = self.cache.replace(items)
        self.resource_version = list_rv
        self.stats.lists += 1
        for obj in added:
            self._notify_add(obj)
        for old, new in updated:
            self._notify_update(old, new)
        for obj in deleted:
            self._notify_delete(obj)
        self.synced.set()

    # -- watch -------------------------------------------------------------------------------

    async def _watch(self) -> None:
        path = self.kind.path(self.namespace)
        timeout = int(self.watch_timeout * (1.0 + self.rand()))
        params = {**self._selectors(), "resourceVersion": self.resource_version,
                  "allowWatchBookmarks": "true", "timeoutSeconds": str(max(1, timeout))}
        self.stats.watch_requests += 1
        started = time.monotonic()
        got_any = False
        try:
            async with self.client.watch_lines(path, params) as lines:
                async for line in lines:
                    self._apply(decode(line))
                    if not got_any:
                        got_any = True
                        self.backoff.reset()
        except ApiError as e:
            if e.gone:
                raise _Relist(e, immediately=True) from e
            if e.code not in RETRY_WATCH_CODES:
                raise _Relist(e, immediately=False) from e
            raise
        if not got_any and time.monotonic() - started < 1.0:
            # A server that closes watches at once would otherwise make us spin.
            raise ApiError("GET", path, 0, "WatchClosed", "watch closed without events")

    def _apply(self, event: Mapping[str, Any]) -> None:
        etype = event.get("type")
        obj = event.get("object")
        if not isinstance(obj, dict):
            raise ValueError(f"watch event without an object: {str(event)[:200]}")
        if etype == "ERROR":
            raise ApiError.from_status("WATCH", self.kind.path(self.namespace), obj)
        rv = resource_version(obj)
        if etype == "BOOKMARK":
            self.stats.bookmarks += 1
        elif etype in ("ADDED", "MODIFIED"):
            self.stats.events += 1
            old = self.cache.put(obj)
            if old is None:
                self._notify_add(obj)
            else:
                self._notify_update(old, obj)
        elif etype == "DELETED":
            self.stats.events += 1
            # An object never cached was never announced: no delete for it either.
            if self.cache.remove(object_key(obj)) is not None:
                self._notify_delete(obj)
        else:
            log.warning("%r: unknown watch event type %r", self, etype)
        if rv:
            self.resource_version = rv

    # -- handlers ----------------------------------------------------------------------------

    def _enqueue(self, obj: Obj) -> None:
        key = object_key(obj)
        for queue in self._queues:
            queue.put(key)

    def _call(self, func: Callable[..., Any] | None, *args: Obj) -> None:
        if func is None:
            return
        try:
            func(*args)
        except Exception:  # a consumer's bug must not stop the cache from converging
            log.exception("%r: event handler %r failed", self, func)

    def _notify_add(self, obj: Obj) -> None:
        self._enqueue(obj)
        for h in self._handlers:
            self._call(h.on_add, obj)

    def _notify_update(self, old: Obj, new: Obj) -> None:
        self._enqueue(new)
        for h in self._handlers:
            self._call(h.on_update, old, new)

    def _notify_delete(self, obj: Obj) -> None:
        self._enqueue(obj)
        for h in self._handlers:
            self._call(h.on_delete, obj)
