"""Identity garbage collection: CiliumIdentities no pod uses are deleted after a grace period.

Cilium's operator (CRD identity allocation mode) marks an identity unused when no
CiliumEndpoint references it and deletes it after a heartbeat timeout, checking every
`identity-gc-interval` (15 minutes). hexlane has no CiliumEndpoints; its rule is the same
idea on what it has: an identity is in use while its `security-labels` are the identity labels
of some existing pod (not host-network, not finished; `identities_in_use`), computed with the
agents' label filter and cluster name. An identity not in use for `grace` (first seen by this
operator counts as in use then, so a restarted or newly leading operator waits a whole grace)
is deleted (`unused`). The clock is injected (`now`) so the pure part is tested without
waiting; the controller runs every `interval`.

The race with an agent that allocates while the operator deletes is harmless: an agent
reuses an identity only while it exists, and re-creates one on its next sync if its pod's
identity was deleted from under it (a pod that exists keeps its identity in use, so this
takes a pod created and its identity unused for a whole grace at once).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from hexlane.k8s.client import ApiError, KubeClient
from hexlane.k8s.controller import Controller
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumIdentity, Namespace, Pod, kind_of
from hexlane.policy.identity import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_FILTER,
    LabelFilter,
    LabelSet,
    identities_in_use,
    is_endpoint_pod,
    observe_use,
    parse_identity_object,
    pod_labels,
    unused,
)

from .metrics import OperatorMetrics

log = logging.getLogger(__name__)

CONTROLLER = "identity-gc"
IDENTITY = kind_of(CiliumIdentity)
DEFAULT_INTERVAL = timedelta(minutes=15)  # Cilium's identity-gc-interval
DEFAULT_GRACE = timedelta(minutes=15)


def _now() -> datetime:
    return datetime.now(UTC)


class IdentityGC:
    """See the module docstring. `run()` until cancelled; `run_once()` for one pass."""

    def __init__(self, client: KubeClient, metrics: OperatorMetrics | None = None, *,
                 interval: timedelta = DEFAULT_INTERVAL, grace: timedelta = DEFAULT_GRACE,
                 now: Callable[[], datetime] = _now, cluster: str = DEFAULT_CLUSTER_NAME,
                 label_filter: LabelFilter = DEFAULT_FILTER) -> None:
        self.client = client
        self.metrics = metrics
        self.grace = grace
        self.now = now
        self.cluster = cluster
        self.label_filter = label_filter
        self.pods = Informer(client, Pod)
        self.namespaces = Informer(client, Namespace)
        self.identities = Informer(client, CiliumIdentity)
        self.last_seen: dict[int, datetime] = {}
        self.deleted = 0
        self.controller = Controller(CONTROLLER, self._reconcile,
                                     interval=interval.total_seconds())

    @property
    def informers(self) -> list[Informer]:
        return [self.pods, self.namespaces, self.identities]

    async def run(self) -> None:
        await self.controller.run(self.informers)

    async def _reconcile(self) -> None:
        await self.run_once()

    def _pod_label_sets(self) -> set[LabelSet]:
        out = set()
        for pod in self.pods.cache.objects():
            if not is_endpoint_pod(pod):
                continue
            ns = self.namespaces.cache.get_object(str(pod["metadata"].get("namespace", "")))
            out.add(pod_labels(pod, ns, self.cluster, self.label_filter))
        return out

    async def run_once(self) -> list[int]:
        """One pass: what is in use noted, the identities unused for the grace deleted;
        returns the numbers deleted."""
        identities: dict[int, LabelSet] = {}
        for obj in self.identities.cache.objects():
            parsed = parse_identity_object(obj)
            if parsed is not None:
                identities[parsed[0]] = parsed[1]
        now = self.now()
        in_use = identities_in_use(identities, self._pod_label_sets())
        self.last_seen = observe_use(self.last_seen, identities, in_use, now)
        doomed = unused(self.last_seen, in_use, now, self.grace)
        done = []
        for n in doomed:
            try:
                await self.client.request("DELETE", IDENTITY.path(None, str(n)))
            except ApiError as err:
                if not err.not_found:
                    raise
            done.append(n)
            self.last_seen.pop(n, None)
            log.info("identity-gc: deleted identity %d (unused for %s)", n, self.grace)
        self.deleted += len(done)
        if self.metrics is not None and done:
            self.metrics.writes.labels(CONTROLLER, IDENTITY.kind, "ok").inc(len(done))
        return done
