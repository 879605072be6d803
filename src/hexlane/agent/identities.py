"""The agent's security identities: one for each of this node's pods, through CiliumIdentity.

For each pod on this node (not host-network, not finished) the allocator computes the
identity label set (`hexlane.policy.identity.pod_identity_labels`: the pod's labels, its
namespace's labels from the Namespace informer, its namespace, service account and cluster
name, through Cilium's label filter) and finds its number: an existing CiliumIdentity with
exactly those labels (the informer's cache) is reused; otherwise `plan_allocation` gives the
lowest free number from 256 and the allocator creates `CiliumIdentity/<number>`
(`identity_object`). A 409 means another agent created that number meanwhile: when it holds
the same labels (two agents racing for one label set) it is reused, else the number counts
as taken and the next one is planned.

Nothing is kept on disk: every sync recomputes pod -> identity from the API (pods,
namespaces, identities), so a restarted (or SIGKILLed) agent finds the same numbers again. A
relabelled pod gets the identity of its new label set; the old one is left to the operator's
garbage collection. Numbers created but not yet seen back by the informer are remembered
(`_created`) so one sync never creates two identities for one label set.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from hexlane.k8s.client import ApiError, KubeClient
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumIdentity, kind_of
from hexlane.policy.identity import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_FILTER,
    LabelFilter,
    LabelSet,
    ReservedIdentity,
    format_labels,
    identity_object,
    is_endpoint_pod,
    parse_identity_object,
    plan_allocation,
    pod_labels,
    reserved_labels,
)

log = logging.getLogger(__name__)

IDENTITY = kind_of(CiliumIdentity)
#: The informers the allocator reads (the agent's `pods` is this node's pods).
KINDS = ("pods", "namespaces", "ciliumidentities")
MAX_CONFLICTS = 64  # a create that keeps conflicting this often is an error (retried later)


def pod_key(pod: Mapping[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


class IdentityAllocator:
    """See the module docstring. `sync()` is the agent's `identities` controller."""

    def __init__(self, client: KubeClient, informers: Mapping[str, Informer], *,
                 cluster: str = DEFAULT_CLUSTER_NAME,
                 label_filter: LabelFilter = DEFAULT_FILTER) -> None:
        self.client = client
        self.informers = informers
        self.cluster = cluster
        self.label_filter = label_filter
        #: "namespace/name" -> identity of every local endpoint pod allocated for
        self.pod_identity: dict[str, int] = {}
        #: pods waiting for their namespace (not yet in the informer)
        self.waiting: list[str] = []
        self._created: dict[int, LabelSet] = {}
        self.allocated = 0  # identities this agent created
        self.conflicts = 0  # creates that met a 409

    def known(self) -> dict[int, LabelSet]:
        """Every allocated identity the API shows, and those created but not yet seen."""
        out: dict[int, LabelSet] = {}
        for obj in self.informers["ciliumidentities"].cache.objects():
            parsed = parse_identity_object(obj)
            if parsed is not None:
                out[parsed[0]] = parsed[1]
        for n, labels in list(self._created.items()):
            if n in out:
                del self._created[n]  # the informer has it: the API is the record
            else:
                out[n] = labels
        return out

    async def sync(self) -> None:
        pods = [p for p in self.informers["pods"].cache.objects() if is_endpoint_pod(p)]
        namespaces = self.informers["namespaces"].cache
        existing = self.known()
        result: dict[str, int] = {}
        waiting: list[str] = []
        for pod in sorted(pods, key=pod_key):
            ns = namespaces.get_object(str(pod["metadata"].get("namespace", "")))
            if ns is None:
                waiting.append(pod_key(pod))
                continue
            labels = pod_labels(pod, ns, self.cluster, self.label_filter)
            result[pod_key(pod)] = await self.allocate(labels, existing)
        changed = {k: v for k, v in result.items() if self.pod_identity.get(k) != v}
        for key, n in sorted(changed.items()):
            log.info("identity %d for pod %s", n, key)
        self.pod_identity = result
        self.waiting = waiting

    async def allocate(self, labels: LabelSet, existing: dict[int, LabelSet]) -> int:
        """The number of `labels`: reused, or created (conflicts resolved); `existing` is
        updated with what was learnt."""
        conflicts: set[int] = set()
        for _ in range(MAX_CONFLICTS):
            plan = plan_allocation(labels, existing, conflicts)
            if plan.reused:
                return plan.identity
            n = plan.identity
            try:
                await self.client.request("POST", IDENTITY.path(),
                                          body=identity_object(n, labels))
            except ApiError as err:
                if not err.conflict:
                    raise
                self.conflicts += 1
                theirs = await self._read(n)
                if theirs is not None:
                    existing[n] = theirs
                    if theirs == labels:
                        return n  # another agent allocated the same labels: share it
                conflicts.add(n)
                continue
            self.allocated += 1
            self._created[n] = labels
            existing[n] = labels
            log.info("allocated identity %d: %s", n, " ".join(format_labels(labels)))
            return n
        raise RuntimeError(f"identity allocation conflicted {MAX_CONFLICTS} times")

    async def _read(self, n: int) -> LabelSet | None:
        try:
            obj = await self.client.request("GET", IDENTITY.path(None, str(n)))
        except ApiError as err:
            if err.not_found:
                return None  # deleted meanwhile: the next plan may try it again
            raise
        parsed = parse_identity_object(obj)
        return parsed[1] if parsed is not None else None

    # -- what `hexlane identity list` / `endpoint list` read ------------------------------------

    def document(self) -> dict[str, Any]:
        """The identities this agent knows (reserved ones first), each with the local
        endpoints using it, and the local pods' identities."""
        users: dict[int, list[str]] = {}
        for key, n in sorted(self.pod_identity.items()):
            users.setdefault(n, []).append(key)
        rows: list[dict[str, Any]] = [
            {"id": int(r), "labels": format_labels(reserved_labels(r)), "reserved": True,
             "endpoints": []} for r in ReservedIdentity]
        for n, labels in sorted(self.known().items()):
            rows.append({"id": n, "labels": format_labels(labels), "reserved": False,
                         "endpoints": users.get(n, [])})
        return {"identities": rows, "pods": dict(sorted(self.pod_identity.items())),
                "waiting": self.waiting, "allocated": self.allocated,
                "conflicts": self.conflicts}

