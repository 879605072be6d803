"""The node's L2 announcer (`l2announcements.enabled`): policies and Services in; Leases, ARP
responder entries and gratuitous ARPs out (Cilium's election: one Lease per Service).

The agent's `l2` controller calls `sync()` when a policy, Service or Node changes (and every
sync interval), `l2-tick` calls `tick()` every 100 ms, `l2-leases` calls `collect_leases()`
every minute; `load()` once the load balancer's object (which holds the responder) is loaded.

On every change of the policies, the Services or the node's labels, `sync()` asks the pure
core (`hexlane.l2`) which Services this node competes for and starts or stops one
`LeaderElector` per Service (Lease `cilium-l2announce-<ns>-<name>` in the agent's namespace,
holder the node name, `l2announcements.lease*` timings sanitised as Cilium does). Whenever
leadership changes, the responder table (`hl_l2_responder_v4`, through the one reconciler)
is set to the entries of the Services this node leads, and newly held entries get their
gratuitous ARPs (five, 1.1 s apart). `tick()` (every 100 ms) stamps the datapath's liveness
and sends the GARPs due. `write_conditions()` keeps the policies' `io.cilium/bad-*`
conditions; `collect_leases()` deletes announcement Leases nobody holds.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from hexlane.config import Values
from hexlane.datapath.l2 import Liveness, ResponderTable, device_mac, open_maps, send_garp
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.reconcile import Reconciler
from hexlane.k8s.client import ApiError, KubeClient
from hexlane.k8s.election import LeaseTiming
from hexlane.k8s.elector import LeaderElector
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumL2AnnouncementPolicy, Lease, kind_of
from hexlane.l2.announce import (
    Candidate,
    Entry,
    ServiceKey,
    candidates,
    responder_entries,
    stale_leases,
)
from hexlane.l2.garp import GarpSchedule
from hexlane.l2.policy import PolicyRead, policy_conditions, read_policy
from hexlane.model.errors import InputError
from hexlane.model.service import Service

log = logging.getLogger(__name__)
POLICY = kind_of(CiliumL2AnnouncementPolicy)
LEASE = kind_of(Lease)
LEASE_NAMESPACE = "kube-system"  # Cilium's namespace, where its agents keep these Leases
TICK_S = 0.1
LEASE_GC_S = 60.0
#: The informers whose changes the announcer follows.
KINDS = ("ciliuml2announcementpolicies", "services", "nodes")


def _utcnow() -> datetime:
    return datetime.now(UTC)


class L2Announcer:
    """One node's announcer (see the module docstring)."""

    def __init__(self, client: KubeClient, node: str, values: Values,
                 informers: Mapping[str, Informer], *, namespace: str = LEASE_NAMESPACE,
                 mac_of: Callable[[str], str] = device_mac,
                 garp: Callable[[str, str], None] = send_garp,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _utcnow) -> None:
        l2 = values.l2announcements
        self.client = client
        self.node, self.namespace = node, namespace
        self.timing = LeaseTiming.sanitised(l2.lease_duration, l2.lease_renew_deadline,
                                            l2.lease_retry_period)
        self.informers = {name: informers[name] for name in KINDS}
        self.mac_of, self.garp = mac_of, garp
        self.clock, self.wall = clock, wall
        self.responder: Reconciler[Entry, str] | None = None
        self.liveness: Liveness | None = None
        self.devices: tuple[str, ...] = ()
        self.reads: dict[str, PolicyRead] = {}
        self.raw_policies: dict[str, Mapping[str, Any]] = {}
        self.candidates: dict[ServiceKey, Candidate] = {}
        self.electors: dict[ServiceKey, LeaderElector] = {}
        self.garps: GarpSchedule[Entry] = GarpSchedule()
        self.held: dict[Entry, tuple[ServiceKey, ...]] = {}
        self.garps_sent = 0
        self.last_error: str | None = None

    def load(self, datapath: LbDatapath, devices: Sequence[str]) -> None:
        """Take the responder and liveness maps of the loaded load balancer; announce on
        these devices (the node's LAN device)."""
        self.devices = tuple(devices)
        table, self.liveness = open_maps(datapath.obj, max_age=self.timing.duration)
        self.responder = Reconciler(table)
        self.liveness.stamp()

    @property
    def reconcilers(self) -> list[Reconciler[Any, Any]]:
        return [self.responder] if self.responder is not None else []

    # -- inputs ----------------------------------------------------------------------------

    async def sync(self) -> None:
        """The `l2` controller: recompute from the informers' caches, set the policies'
        conditions."""
        if self.responder is None or not all(i.synced.is_set()
                                             for i in self.informers.values()):
            return  # not loaded, or a partial picture (it would withdraw live IPs)
        node = self.informers["nodes"].cache.get_object(self.node) or {}
        labels = (node.get("metadata") or {}).get("labels") or {}
        services = [svc for raw in self.informers["services"].cache.objects()
                    if _announceable(raw) and (svc := _service(raw)) is not None]
        await self.update(self.informers["ciliuml2announcementpolicies"].cache.objects(),
                          services, labels)
        await self.write_conditions()

    async def update(self, policies: Iterable[Mapping[str, Any]], services: Iterable[Service],
                     node_labels: Mapping[str, str]) -> None:
        """Recompute what this node competes for; start and stop electors to match."""
        self.raw_policies = {str((p.get("metadata") or {}).get("name", "")): p
                             for p in policies}
        self.reads = {name: read_policy(p) for name, p in self.raw_policies.items()}
        usable = [r.policy for r in self.reads.values() if r.policy is not None]
        self.candidates = candidates(node_labels, self.devices, usable, services)
        for key in [k for k in self.electors if k not in self.candidates]:
            await self.electors.pop(key).stop()  # releases a held Lease
        for key, cand in self.candidates.items():
            if key not in self.electors:
                elector = LeaderElector(self.client, cand.lease, self.namespace, self.node,
                                        self.timing, on_started_leading=self.apply,
                                        on_stopped_leading=self.apply)
                self.electors[key] = elector
                elector.start()
        self.apply()

    # -- outputs ---------------------------------------------------------------------------

    @property
    def leading(self) -> list[ServiceKey]:
        return sorted(k for k, e in self.electors.items() if e.leading)

    def apply(self) -> None:
        """Make the responder hold the entries of the Services this node leads."""
        if self.responder is None:
            return
        self.held = responder_entries(self.candidates, self.leading)
        desired: dict[Entry, str] = {}
        for entry in self.held:
            try:
                desired[entry] = self.mac_of(entry[1])
            except OSError as err:  # the device went away: nothing to answer on
                log.warning("L2 announcement of %s on %s: %s", entry[0], entry[1], err)
        self.responder.set_all(desired)
        result = self.responder.flush()
        self.last_error = (f"{len(result.failed)} responder entries not written: "
                           f"{next(iter(result.failed.values()))}" if result.failed else None)
        for entry in self.garps.update(desired, self.clock()):
            log.info("announcing %s on %s for %s", entry[0], entry[1],
                     ", ".join(f"{ns}/{n}" for ns, n in self.held[entry]))
        self._send_due()

    async def tick(self) -> None:
        """The `l2-tick` controller (every 100 ms): the liveness stamp, the GARPs due."""
        if self.liveness is not None:
            self.liveness.stamp()
        self._send_due()

    def _send_due(self) -> None:
        for ip, device in self.garps.due(self.clock()):
            try:
                self.garp(device, ip)
                self.garps_sent += 1
            except OSError as err:
                log.warning("gratuitous ARP for %s on %s: %s", ip, device, err)

    async def write_conditions(self) -> int:
        """Set the policies' io.cilium/bad-* conditions; the number written."""
        written = 0
        for name, read in self.reads.items():
            raw = self.raw_policies.get(name) or {}
            current = (raw.get("status") or {}).get("conditions") or []
            new = policy_conditions(read, current, self.wall())
            if new is None:
                continue
            try:
                await self.client.request("PATCH", POLICY.path(name=name, subresource="status"),
                                          body={"status": {"conditions": new}},
                                          content_type="application/merge-patch+json")
                written += 1
            except ApiError as err:
                if err.code != 404:
                    raise
        return written

    async def collect_leases(self) -> None:
        """The `l2-leases` controller: delete the announcement Leases nobody holds."""
        listing = await self.client.request("GET", LEASE.path(namespace=self.namespace))
        gone = []
        for name in stale_leases(listing.get("items") or []):
            try:
                await self.client.request("DELETE", LEASE.path(namespace=self.namespace,
                                                               name=name))
                gone.append(name)
            except ApiError as err:
                if err.code != 404:
                    raise
        if gone:
            log.info("deleted %d announcement Leases nobody holds: %s", len(gone),
                     ", ".join(gone))

    async def resync(self) -> None:
        """The responder read back; entries changed or removed behind our back repaired."""
        if self.responder is not None:
            await asyncio.to_thread(self.responder.resync)

    async def close(self) -> None:
        """Stop every election (releasing held Leases) and withdraw every entry."""
        for elector in self.electors.values():
            await elector.stop()
        self.electors.clear()
        self.apply()

    def status(self) -> dict[str, Any]:
        """For `hexlane status` and `hexlane l2 list`."""
        replies: dict[Entry, int] = {}
        if self.responder is not None and isinstance(self.responder.table, ResponderTable):
            try:
                replies = {(s.ip, s.device): s.replies for s in self.responder.table.entries()}
            except OSError:
                replies = {}
        return {
            "enabled": True,
            "leaseNamespace": self.namespace,
            "leaseDuration": self.timing.duration,
            "devices": list(self.devices),
            "candidates": len(self.candidates),
            "leading": len(self.leading),
            "garpsSent": self.garps_sent,
            "lastError": self.last_error or "",
            "badPolicies": sorted(n for n, r in self.reads.items() if r.policy is None),
            "announcements": [
                {"ip": ip, "device": device, "node": self.node,
                 "services": [f"{ns}/{n}" for ns, n in keys],
                 "policies": sorted({p for k in keys for p in self.candidates[k].policies}),
                 "replies": replies.get((ip, device), 0)}
                for (ip, device), keys in sorted(self.held.items())],
            "competing": [
                {"service": f"{ns}/{n}", "lease": cand.lease,
                 "leading": key in self.electors and self.electors[key].leading,
                 "holder": self.electors[key].holder if key in self.electors else ""}
                for key, cand in sorted(self.candidates.items()) for ns, n in [key]],
        }


def _announceable(raw: Mapping[str, Any]) -> bool:
    """A Service object worth parsing: it has an external IP or an ingress IP."""
    spec, status = raw.get("spec") or {}, raw.get("status") or {}
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    return bool(spec.get("externalIPs")) or any(i.get("ip") for i in ingress
                                                if isinstance(i, Mapping))


def _service(raw: Mapping[str, Any]) -> Service | None:
    try:
        return Service.parse(raw)
    except (InputError, ValueError) as err:
        meta = raw.get("metadata") or {}
        log.warning("L2: skipping Service %s/%s: %s", meta.get("namespace", ""),
                    meta.get("name", ""), err)
        return None
