"""The LB-IPAM controller: pools and Services from informers, the pure allocator, status writes.

Shape (Cilium's operator/pkg/lbipam does the same job event by event; we recompute):

1. two informers, CiliumLoadBalancerIPPool (cilium.io/v2alpha1) and Service; every event only
   triggers the controller (`hexlane.k8s.controller`);
2. once both caches are synced, a run starts after a short debounce: the objects are parsed
   into `hexlane.model` (each object once per resourceVersion: the parse cache), and
   `hexlane.ipam.status.reconcile` — the allocator plus "which statuses differ" — runs over
   the whole cache, with the previous plan as memory. Events that arrive during a run make
   one more run afterwards, so N events cost at most a few runs, never N (10,000 Services
   created at once are one or two allocations, not 10,000). The run happens in a worker
   thread so the event loop keeps renewing the leader lease and writing. When the only
   events are added plain LoadBalancer Services, `hexlane.ipam.fastpath` answers for
   them without a full run (a new Service's latency must not grow with the cluster);
3. the writes go to a `WriteQueue`: a JSON merge patch of `status` (Service
   `status.loadBalancer.ingress` + the `cilium.io/IPAMRequestSatisfied` condition, pool
   conditions and counters) through `hexlane.k8s.statuswriter.patch_status`, each object
   retried on its own backoff (250 ms doubling to 5 min). A newer plan replaces a write
   still waiting.

Correct with events in any order and across restarts because each run starts from the
cluster's state: a Service's current ingress IPs are taken back first (the allocator's rule),
so restarting the operator at any moment moves no IP. The operator's own writes coming back
through the watch start no run, and a write whose echo has not come back yet is not
repeated (`_echoes`): the cache still shows the old status until the watch event arrives,
and the plan's memory keeps the IP meanwhile.

Inspect: `hexlane ipam plan` answers offline what this controller writes; the operator's
metrics (`hexlane_operator_lbipam_*`) count satisfied Services and pool IPs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from hexlane.ipam.fastpath import HeldAddresses, allocate_added
from hexlane.ipam.lbipam import SERVICE_CONDITION, LBIPAMPlan, Options
from hexlane.ipam.status import StatusWrite, pool_writes, reconcile_chunks, service_writes
from hexlane.k8s.cache import Obj, object_key, resource_version
from hexlane.k8s.client import ApiError, KubeClient
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumLoadBalancerIPPool, Service, kind_of
from hexlane.k8s.statuswriter import patch_status
from hexlane.model.cilium import LBIPPool
from hexlane.model.errors import InputError
from hexlane.model.service import Service as ServiceModel

from .metrics import OperatorMetrics
from .writer import WriteQueue

log = logging.getLogger(__name__)

CONTROLLER = "lbipam"
SERVICE = kind_of(Service)
POOL = kind_of(CiliumLoadBalancerIPPool)
DEFAULT_DEBOUNCE = 0.005
WRITTEN_KEPT = 4  # recent statuses per object whose echoes are told from others' writes

T = TypeVar("T")
WriteKey = tuple[str, str, str]  # (kind, namespace, name)


class ParseCache(Generic[T]):
    """Typed views of API objects, parsed once per resourceVersion.

    An object the model rejects is skipped (logged once per resourceVersion with its field
    paths): a bad object must not stop the controller, and the apiserver should not have
    accepted it in the first place."""

    def __init__(self, kind: str, parse: Callable[[Obj], T]) -> None:
        self.kind = kind
        self.parse = parse
        self._entries: dict[str, tuple[str, T | None]] = {}
        self.invalid = 0

    def parse_one(self, obj: Obj) -> T | None:
        """One object's typed view (cached like the others; None when it does not parse)."""
        key, rv = object_key(obj), resource_version(obj)
        entry = self._entries.get(key)
        if entry is None or entry[0] != rv or not rv:
            entry = (rv, self._parse(key, obj))
            self._entries[key] = entry
        return entry[1]

    def _parse(self, key: str, obj: Obj) -> T | None:
        try:
            return self.parse(obj)
        except InputError as e:
            log.warning("skipping %s %s: %s", self.kind, key,
                        "; ".join(str(p) for p in e.problems))
            return None

    def warm(self, objects: Sequence[Obj]) -> None:
        """Parse these objects now (a list page while the next one is on its way), so the
        run after the list finds them parsed. Safe in a worker thread beside the event loop:
        it only adds entries, and `models` is not called meanwhile (see `run_once`)."""
        for obj in objects:
            self.parse_one(obj)

    def models(self, objects: Sequence[Obj]) -> list[T]:
        out: list[T] = []
        fresh: dict[str, tuple[str, T | None]] = {}
        invalid = 0
        for obj in objects:
            key, rv = object_key(obj), resource_version(obj)
            entry = self._entries.get(key)
            if entry is None or entry[0] != rv or not rv:
                entry = (rv, self._parse(key, obj))
            fresh[key] = entry
            if entry[1] is None:
                invalid += 1
            else:
                out.append(entry[1])
        self._entries = fresh
        self.invalid = invalid
        return out


def _parse_service(obj: Obj) -> ServiceModel:
    return ServiceModel.parse(obj)


def _parse_pool(obj: Obj) -> LBIPPool:
    return LBIPPool.parse(obj)


def status_patch(write: StatusWrite) -> dict[str, Any]:
    """The merge-patch `status` for a write: lists are replaced whole, and fields the new
    status lacks are nulled so the patch removes them (a Service that lost its IP)."""
    status = dict(write.status)
    if write.kind == SERVICE.kind:
        lb = dict(status.get("loadBalancer") or {})
        lb.setdefault("ingress", None)
        status["loadBalancer"] = lb
        status.setdefault("conditions", None)
    return status


def same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two planned statuses say the same, ignoring when their conditions were
    stamped: each run stamps a new condition with its own `now`, and writing the status
    again for that alone would double the writes while an echo is on its way."""
    return _unstamped(a) == _unstamped(b)


def _unstamped(status: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(status)
    if "conditions" in out:
        out["conditions"] = [{k: v for k, v in c.items() if k != "lastTransitionTime"}
                             for c in out["conditions"] or []]
    return out


def _stored_like(stored: Mapping[str, Any], written: Mapping[str, Any]) -> bool:
    """Whether a status read back says what we wrote: same ingress IPs and the same
    conditions (type, status, reason, message); the server may default other fields."""
    def ips(status: Mapping[str, Any]) -> list[Any]:
        return [i.get("ip") for i in (status.get("loadBalancer") or {}).get("ingress") or []]

    def conditions(status: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        return [(c.get("type"), c.get("status"), c.get("reason"), c.get("message"))
                for c in status.get("conditions") or []]

    return ips(stored) == ips(written) and conditions(stored) == conditions(written)


def _status_only(old: Obj, new: Obj) -> bool:
    """Whether an update changed nothing the allocator reads but the status (spec, labels,
    annotations, generation and deletion are the same)."""
    if old.get("spec") != new.get("spec"):
        return False
    old_meta, new_meta = old.get("metadata") or {}, new.get("metadata") or {}
    return all(old_meta.get(f) == new_meta.get(f)
               for f in ("labels", "annotations", "generation", "deletionTimestamp"))


@dataclass(frozen=True, slots=True)
class RunResult:
    plan: LBIPAMPlan
    writes: list[StatusWrite]
    seconds: float


class LBIPAMController:
    """See the module docstring. `run()` until cancelled."""

    def __init__(self, client: KubeClient, metrics: OperatorMetrics, *,
                 options: Options | None = None, debounce: float = DEFAULT_DEBOUNCE,
                 workers: int = 32, now: Callable[[], datetime] = lambda: datetime.now(UTC)
                 ) -> None:
        self.client = client
        self.metrics = metrics
        self.options = options or Options()
        self.now = now
        self.pools = Informer(client, CiliumLoadBalancerIPPool)
        self.services = Informer(client, Service, on_list_page=self._warm)
        self._warming: list[asyncio.Future[None]] = []
        self.plan: LBIPAMPlan | None = None
        self.runs = 0
        self._pool_parser = ParseCache("CiliumLoadBalancerIPPool", _parse_pool)
        self._service_parser = ParseCache("Service", _parse_service)
        self._events = 0
        self._full = True
        self._added: set[str] = set()
        self._held = HeldAddresses()
        self.fast_runs = 0
        # key -> (resourceVersion the write was computed from, status written)
        self._echoes: dict[WriteKey, tuple[str, dict[str, Any]]] = {}
        # key -> the statuses written whose echoes may still come back, oldest first
        self._written: dict[WriteKey, list[dict[str, Any]]] = {}
        self.writer: WriteQueue[WriteKey, StatusWrite] = WriteQueue(
            self._write, workers=workers,
            on_change=lambda n: metrics.write_queue.labels(CONTROLLER).set(n))
        self.pools.add_handler(self._on_change, self._on_pool_update, self._on_pool_delete)
        self.services.add_handler(self._on_service_add, self._on_service_update,
                                  self._on_service_delete)
        self.echoes_ignored = 0
        self._queued = 0
        self.foreign_ignored = 0
        self.controller = Controller(CONTROLLER, self._reconcile, interval=None,
                                     debounce=debounce)

    # -- events ------------------------------------------------------------------------------

    def _on_change(self, _obj: Obj) -> None:
        """A change that needs a full run."""
        self._full = True
        self._events += 1
        self.controller.trigger()

    def _on_service_add(self, obj: Obj) -> None:
        # A new Service may take the fast path (see hexlane.ipam.fastpath).
        self._added.add(object_key(obj))
        self._events += 1
        self.controller.trigger()

    def _on_pool_update(self, old: Obj, new: Obj) -> None:
        self._on_update(POOL.kind, old, new)

    def _on_service_update(self, old: Obj, new: Obj) -> None:
        self._on_update(SERVICE.kind, old, new)

    def _on_update(self, kind: str, old: Obj, new: Obj) -> None:
        if self._own_echo(kind, old, new):
            # Our own status write coming back changes nothing the plan did not already
            # say; recomputing for it would make every write cost a run. The next run
            # (for any other change) reads it from the cache as usual.
            self.echoes_ignored += 1
            return
        if kind == SERVICE.kind and self._foreign_status(old, new):
            # Another controller's status on a Service LB-IPAM does not handle (another
            # loadBalancerClass, not a LoadBalancer): the plan reads nothing of it, and a
            # full run for it would cost seconds at 10,000 Services.
            self.foreign_ignored += 1
            return
        self._on_change(new)

    def _foreign_status(self, old: Obj, new: Obj) -> bool:
        if not _status_only(old, new):
            return False
        key = object_key(new)
        if key in self._added:
            return True  # its add is not handled yet: that run reads the cache as it is then
        if self.plan is None:
            return False
        result = self.plan.services.get(key)
        if result is None or result.handled:
            return False
        conditions = (new.get("status") or {}).get("conditions") or []
        return not any(c.get("type") == SERVICE_CONDITION for c in conditions)

    def _own_echo(self, kind: str, old: Obj, new: Obj) -> bool:
        if not _status_only(old, new):
            return False
        new_meta = new.get("metadata") or {}
        key = (kind, str(new_meta.get("namespace") or ""), str(new_meta.get("name") or ""))
        stored = new.get("status") or {}
        # The one in flight too, not only a newer one waiting: its echo may come back
        # before its answer does.
        if any(_stored_like(stored, w.status) for w in self.writer.pending(key)):
            return True
        # Any of our recent writes: with writes to one object back to back (the pool's
        # counters, one write per new Service) the echo of an older one may come back
        # after a newer write was done; only the newest one's echo ends the history.
        written = self._written.get(key) or []
        for i in range(len(written) - 1, -1, -1):
            if _stored_like(stored, written[i]):
                if i == len(written) - 1:
                    del written[:-1]
                return True
        return False

    def _on_pool_delete(self, obj: Obj) -> None:
        self._on_delete(POOL.kind, obj)

    def _on_service_delete(self, obj: Obj) -> None:
        self._on_delete(SERVICE.kind, obj)

    def _on_delete(self, kind: str, obj: Obj) -> None:
        meta = obj.get("metadata") or {}
        key = (kind, str(meta.get("namespace") or ""), str(meta.get("name") or ""))
        self.writer.discard(key)
        self._echoes.pop(key, None)
        self._written.pop(key, None)
        self._on_change(obj)

    def _warm(self, items: list[Obj]) -> None:
        """Pipelining the cold start: each page of the Services' list is parsed in a worker
        thread while the event loop reads the next page, so the first run only allocates."""
        self._warming.append(asyncio.ensure_future(
            asyncio.to_thread(self._service_parser.warm, items)))

    # -- the loop ----------------------------------------------------------------------------

    async def run(self) -> None:
        await self.controller.run([self.pools, self.services], also=[self.writer])

    async def _reconcile(self) -> None:
        events, self._events = self._events, 0
        await self.run_once(events)

    async def run_once(self, events: int = 0) -> RunResult:
        """One allocation over the caches as they are now, and its writes queued."""
        if self._warming:
            warming, self._warming = self._warming, []
            await asyncio.gather(*warming)
        added, full = self._added, self._full
        self._added, self._full = set(), False
        pools = self.pools.cache.objects()
        services = self.services.cache.objects()
        self._prune_echoes()
        self._queued = 0
        result = None if full or not added else self._fast(added)
        if result is None:
            # The writes are queued chunk by chunk from the worker thread as they are worked
            # out: the writers start while the rest of a cold start's 10,000 are computed.
            loop = asyncio.get_running_loop()
            result = await asyncio.to_thread(
                self._compute, pools, services, self.plan,
                lambda chunk: loop.call_soon_threadsafe(self._queue, chunk))
            # (every chunk's callback ran before this: the loop runs them in order)
        else:
            self.fast_runs += 1
            self._queue(result.writes)
        queued = self._queued
        self.plan = result.plan
        self.runs += 1
        self.metrics.reconcile_seconds.labels(CONTROLLER).observe(result.seconds)
        self.metrics.reconcile_batch.labels(CONTROLLER).observe(events)
        self._report(result.plan)
        if queued or events > 1:
            log.info("lbipam: run %d over %d pools, %d services (%d events): %d writes in "
                     "%.3fs", self.runs, len(pools), len(services), events, queued,
                     result.seconds)
        return result

    def _queue(self, writes: Sequence[StatusWrite]) -> None:
        """Put a run's writes on the write queue, but not those already done or waiting."""
        for write in writes:
            key = (write.kind, write.namespace, write.name)
            echo = self._echoes.get(key)
            if echo is not None and echo[0] == write.resource_version \
                    and same_status(echo[1], write.status):
                continue  # written already; the cache has not seen the echo yet
            pending = self.writer.current(key)
            if pending is not None and pending.resource_version == write.resource_version \
                    and same_status(pending.status, write.status):
                continue  # the same write is waiting or in flight
            self.writer.put(key, write)
            self._queued += 1

    def _prune_echoes(self) -> None:
        """Forget echoes that came back (or were overtaken by another change)."""
        for key, (rv, _status) in list(self._echoes.items()):
            informer = self.services if key[0] == SERVICE.kind else self.pools
            obj = informer.cache.get(f"{key[1]}/{key[2]}" if key[1] else key[2])
            if obj is None or resource_version(obj) != rv:
                del self._echoes[key]

    def _compute(self, pools: Sequence[Obj], services: Sequence[Obj],
                 previous: LBIPAMPlan | None,
                 emit: Callable[[list[StatusWrite]], object]) -> RunResult:
        """A full run: the allocator over every pool and Service (in a worker thread); each
        chunk of writes goes to `emit` as soon as it is worked out."""
        started = time.perf_counter()
        pool_models = self._pool_parser.models(pools)
        service_models = self._service_parser.models(services)
        plan, chunks = reconcile_chunks(pool_models, service_models, self.now(),
                                        previous=previous, options=self.options)
        writes: list[StatusWrite] = []
        for chunk in chunks:
            emit(chunk)
            writes += chunk
        self._held = HeldAddresses.of(plan)
        return RunResult(plan, writes, time.perf_counter() - started)

    def _fast(self, added: set[str]) -> RunResult | None:
        """The fast path for added Services, or None when a full run is needed."""
        if self.plan is None:
            return None
        started = time.perf_counter()
        models: list[ServiceModel] = []
        for key in sorted(added):
            obj = self.services.cache.get(key)
            if obj is None:
                return None  # gone again: its delete asks for a full run
            model = self._service_parser.parse_one(obj)
            if model is not None:
                models.append(model)
        pool_models = self._pool_parser.models(self.pools.cache.objects())
        plan = allocate_added(self.plan, pool_models, models, self._held, self.options)
        if plan is None:
            return None
        now = self.now()
        writes = pool_writes(plan, pool_models, now) + service_writes(plan, models, now)
        for model in models:
            result = plan.services.get(f"{model.namespace or 'default'}/{model.name}")
            if result is not None and result.handled:
                self._held.add(result.ips)
        return RunResult(plan, writes, time.perf_counter() - started)

    def _report(self, plan: LBIPAMPlan) -> None:
        m = self.metrics
        m.invalid_objects.labels(CONTROLLER, POOL.kind).set(self._pool_parser.invalid)
        m.invalid_objects.labels(CONTROLLER, SERVICE.kind).set(self._service_parser.invalid)
        satisfied = unsatisfied = 0
        for result in plan.services.values():
            if not result.handled:
                continue
            if result.satisfied:
                satisfied += 1
            else:
                unsatisfied += 1
        m.services_satisfied.set(satisfied)
        m.services_unsatisfied.set(unsatisfied)
        m.pool_ips.clear()
        m.pool_conflicting.clear()
        for name, pool in plan.pools.items():
            m.pool_ips.labels(name, "total").set(pool.total)
            m.pool_ips.labels(name, "available").set(pool.available)
            m.pool_ips.labels(name, "used").set(pool.used)
            m.pool_conflicting.labels(name).set(1 if pool.conflicting else 0)

    # -- writes ------------------------------------------------------------------------------

    async def _write(self, key: WriteKey, write: StatusWrite) -> None:
        resource = Service if write.kind == SERVICE.kind else CiliumLoadBalancerIPPool
        try:
            await patch_status(self.client, resource, write.name, status_patch(write),
                               namespace=write.namespace or None)
        except ApiError as e:
            if e.not_found:  # deleted meanwhile: its delete event drops the rest
                self.metrics.writes.labels(CONTROLLER, write.kind, "gone").inc()
                return
            self.metrics.writes.labels(CONTROLLER, write.kind, "error").inc()
            raise
        except Exception:
            self.metrics.writes.labels(CONTROLLER, write.kind, "error").inc()
            raise
        self.metrics.writes.labels(CONTROLLER, write.kind, "ok").inc()
        self._echoes[key] = (write.resource_version, write.status)
        written = self._written.setdefault(key, [])
        written.append(write.status)
        del written[:-WRITTEN_KEPT]
