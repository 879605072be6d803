"""The node's L2 announcer (`l2announcements.enabled`): policies and Services in; ARP
responder entries and gratuitous ARPs out, for the IPs this node wins in one of two elections
(`l2announcements.election`):

- `hexlane` (the default): no API writes. Every agent sends authenticated heartbeats on the
  LAN (`heartbeat.py`, `hexlane.l2.heartbeat`) and so knows which nodes are alive within
  `heartbeat.deadAfter`; from the same API objects every agent computes which nodes are
  eligible for each IP (`hexlane.l2.announce.eligible_nodes`) and, with the live set, the
  same owner for each IP (`hexlane.l2.owner`: rendezvous hashing with bounded load). A node
  answers for the IPs it owns while its LAN link is up. Nodes heard once and silent since
  are handed to the load balancer (`on_unreachable`), which drops their backends at once.
  A fresh agent claims nothing until it has listened for `deadAfter` (it must hear the
  others first).
- `lease` (Cilium's): one Lease per Service, below.

The agent's `l2` controller calls `sync()` when a policy, Service or Node changes (and every
sync interval), `l2-tick` calls `tick()` every 100 ms, `l2-leases` calls `collect_leases()`
every minute; `load()` once the load balancer's object (which holds the responder) is loaded.

In lease mode, on every change of the policies, the Services or the node's labels, `sync()`
asks the pure core (`hexlane.l2`) which Services this node competes for and starts or stops one
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
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
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
    eligible_nodes,
    local_endpoint_nodes,
    owned_entries,
    responder_entries,
    stale_leases,
)
from hexlane.l2.garp import GarpSchedule
from hexlane.l2.heartbeat import Membership
from hexlane.l2.owner import assign, ranking
from hexlane.l2.policy import PolicyRead, policy_conditions, read_policy
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.errors import InputError
from hexlane.model.service import Service

from .heartbeat import Heartbeat, load_key, next_incarnation

log = logging.getLogger(__name__)
POLICY = kind_of(CiliumL2AnnouncementPolicy)
LEASE = kind_of(Lease)
LEASE_NAMESPACE = "kube-system"  # Cilium's namespace, where its agents keep these Leases
TICK_S = 0.1
LEASE_GC_S = 60.0
#: The informers whose changes the announcer follows.
KINDS = ("ciliuml2announcementpolicies", "services", "nodes", "endpointslices")
SIOCGIFFLAGS = 0x8913
IFF_RUNNING = 0x40


def link_running(device: str) -> bool:
    """Whether `device` (this thread's namespace) is up with carrier: a node whose LAN link
    is down announces nothing on it."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, struct.pack("256s", device.encode()))
        except OSError:
            return False
    return bool(struct.unpack_from("H", raw, 16)[0] & IFF_RUNNING)


def _utcnow() -> datetime:
    return datetime.now(UTC)


class L2Announcer:
    """One node's announcer (see the module docstring)."""

    def __init__(self, client: KubeClient, node: str, values: Values,
                 informers: Mapping[str, Informer], *, state_dir: Path | None = None,
                 namespace: str = LEASE_NAMESPACE,
                 on_unreachable: Callable[[frozenset[str]], None] | None = None,
                 mac_of: Callable[[str], str] = device_mac,
                 garp: Callable[[str, str], None] = send_garp,
                 link_up: Callable[[str], bool] = link_running,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = _utcnow) -> None:
        l2 = values.l2announcements
        self.client = client
        self.node, self.namespace = node, namespace
        self.election = l2.election
        self.l2 = l2
        self.state_dir = state_dir
        self.on_unreachable = on_unreachable
        self.link_up = link_up
        # hexlane's election
        self.heartbeat: Heartbeat | None = None
        self.listening_since: float | None = None
        self.heard: set[str] = set()  # nodes heard since start (silent ones: unreachable)
        self.unreachable: frozenset[str] = frozenset()
        self.eligible: dict[str, frozenset[str]] = {}
        self.owners: dict[str, str | None] = {}
        self.alive_now: frozenset[str] = frozenset()  # the nodes alive at the last election
        self.links: dict[str, bool] = {}
        self.node_ip = ""
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
        self.taken = 0  # entries this node started answering for (takeovers included)
        self.released = 0  # entries it stopped answering for (moved away, withdrawn)
        self._answered: frozenset[Entry] = frozenset()
        self.last_error: str | None = None

    def load(self, datapath: LbDatapath, devices: Sequence[str], node_ip: str) -> None:
        """Take the responder and liveness maps of the loaded load balancer; announce on
        these devices (the node's LAN device, whose address is `node_ip`)."""
        self.devices = tuple(devices)
        self.node_ip = node_ip
        max_age = self.l2.dead_after if self.election == "hexlane" else self.timing.duration
        table, self.liveness = open_maps(datapath.obj, max_age=max_age)
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
        nodes = {str((n.get("metadata") or {}).get("name", "")):
                 dict((n.get("metadata") or {}).get("labels") or {})
                 for n in self.informers["nodes"].cache.objects()}
        services = [svc for raw in self.informers["services"].cache.objects()
                    if _announceable(raw) and (svc := _service(raw)) is not None]
        policies = self.informers["ciliuml2announcementpolicies"].cache.objects()
        if self.election == "hexlane":
            slices = [eps for raw in self.informers["endpointslices"].cache.objects()
                      if (eps := _slice(raw)) is not None]
            await self._start_heartbeat()
            self.update_hexlane(policies, services, nodes, local_endpoint_nodes(slices))
        else:
            await self.update(policies, services, nodes.get(self.node, {}))
        await self.write_conditions()

    def _read_policies(self, policies: Iterable[Mapping[str, Any]]) -> None:
        self.raw_policies = {str((p.get("metadata") or {}).get("name", "")): p
                             for p in policies}
        self.reads = {name: read_policy(p) for name, p in self.raw_policies.items()}

    async def update(self, policies: Iterable[Mapping[str, Any]], services: Iterable[Service],
                     node_labels: Mapping[str, str]) -> None:
        """Lease mode: recompute what this node competes for; start and stop electors to
        match."""
        self._read_policies(policies)
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

    # -- hexlane's election ------------------------------------------------------------------

    async def _start_heartbeat(self) -> None:
        if self.heartbeat is not None or not self.devices:
            return
        if self.state_dir is None:
            raise RuntimeError("hexlane's L2 election needs the agent's state directory")
        key = await load_key(self.client, self.state_dir)
        membership = Membership(self.node, key, address=self.node_ip,
                                incarnation=next_incarnation(self.state_dir),
                                interval=self.l2.heartbeat_interval,
                                dead_after=self.l2.dead_after)
        heartbeat = Heartbeat(membership, self.devices[0], self.l2.heartbeat_port,
                              self._alive_changed, clock=self.clock)
        await heartbeat.start()
        self.heartbeat = heartbeat
        self.listening_since = self.clock()
        log.info("L2 heartbeat on %s, UDP %d, every %gs, dead after %gs", self.devices[0],
                 self.l2.heartbeat_port, self.l2.heartbeat_interval, self.l2.dead_after)

    def update_hexlane(self, policies: Iterable[Mapping[str, Any]],
                       services: Iterable[Service], nodes: Mapping[str, Mapping[str, str]],
                       local_endpoints: Mapping[ServiceKey, frozenset[str]]) -> None:
        """Recompute eligibility (every agent alike) and this node's own entries."""
        self._read_policies(policies)
        usable = [r.policy for r in self.reads.values() if r.policy is not None]
        services = list(services)
        self.candidates = candidates(nodes.get(self.node, {}), self.devices, usable, services)
        self.eligible = eligible_nodes(nodes, usable, services, local_endpoints)
        self.apply()

    def _alive_changed(self, alive: frozenset[str]) -> None:
        self.heard |= alive
        unreachable = frozenset(self.heard - alive - {self.node})
        if unreachable != self.unreachable:
            gone, back = unreachable - self.unreachable, self.unreachable - unreachable
            if gone:
                log.warning("L2 heartbeat: %s silent for %gs: unreachable",
                            ", ".join(sorted(gone)), self.l2.dead_after)
            if back:
                log.info("L2 heartbeat: %s heard again", ", ".join(sorted(back)))
            self.unreachable = unreachable
            if self.on_unreachable is not None:
                self.on_unreachable(unreachable)
        self.apply()

    def _owned_ips(self) -> set[str]:
        """The IPs this node owns now (none while it is still listening after its start,
        or when its LAN link is down)."""
        if self.heartbeat is None or self.listening_since is None:
            return set()
        if self.clock() - self.listening_since < self.l2.dead_after:
            return set()
        alive = self.heartbeat.alive | {self.node}
        if not all(self.links.get(d, True) for d in self.devices[:1]):
            alive = alive - {self.node}
        members = sorted(set().union(*self.eligible.values()) | alive) \
            if self.eligible else sorted(alive)
        self.alive_now = frozenset(alive)
        self.owners = assign(self.eligible, members, self.alive_now)
        return {ip for ip, owner in self.owners.items() if owner == self.node}

    # -- outputs ---------------------------------------------------------------------------

    @property
    def leading(self) -> list[ServiceKey]:
        return sorted(k for k, e in self.electors.items() if e.leading)

    def apply(self) -> None:
        """Make the responder hold the entries of the IPs this node wins."""
        if self.responder is None:
            return
        if self.election == "hexlane":
            self.held = owned_entries(self.candidates, self._owned_ips())
        else:
            self.held = responder_entries(self.candidates, self.leading)
        desired: dict[Entry, str] = {}
        for entry in self.held:
            try:
                desired[entry] = self.mac_of(entry[1])
            except OSError as err:  # the device went away: nothing to answer on
                log.warning("L2 announcement of %s on %s: %s", entry[0], entry[1], err)
        self.responder.set_all(desired)
        self.released += len(self._answered - desired.keys())
        self._answered = frozenset(desired)
        result = self.responder.flush()
        self.last_error = (f"{len(result.failed)} responder entries not written: "
                           f"{next(iter(result.failed.values()))}" if result.failed else None)
        for entry in self.garps.update(desired, self.clock()):
            self.taken += 1
            log.info("announcing %s on %s for %s", entry[0], entry[1],
                     ", ".join(f"{ns}/{n}" for ns, n in self.held[entry]))
        self._send_due()

    async def tick(self) -> None:
        """The `l2-tick` controller (every 100 ms): the liveness stamp, the GARPs due; in
        hexlane's election, the LAN link's state, and the end of the first listening."""
        if self.liveness is not None:
            self.liveness.stamp()
        if self.election == "hexlane" and self.heartbeat is not None:
            links = {d: self.link_up(d) for d in self.devices}
            listened = self.listening_since is not None and \
                self.clock() - self.listening_since >= self.l2.dead_after
            if links != self.links or (listened and not self.owners and self.eligible):
                self.links = links
                self.apply()
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
        """Stop every election (releasing held Leases; silencing the heartbeat) and withdraw
        every entry."""
        for elector in self.electors.values():
            await elector.stop()
        self.electors.clear()
        if self.heartbeat is not None:
            await self.heartbeat.stop()
            self.heartbeat = None
        self.candidates = {}
        self.apply()

    def _holder(self, key: ServiceKey, cand: Candidate) -> str:
        """Who announces a Service's (first) IP: the Lease holder, or the hashed owner."""
        if self.election != "hexlane":
            return self.electors[key].holder if key in self.electors else ""
        ips = sorted({ip for ip, _ in cand.entries})
        return next((o for ip in ips if (o := self.owners.get(ip))), "") if ips else ""

    def _why(self, ip: str) -> dict[str, Any]:
        """Why this node owns `ip` in hexlane's election: the nodes eligible for it (selected
        by an applying policy; for eTP=Local, with a ready endpoint), those of them alive, and
        their rendezvous ranking (the owner is the first below the load cap, see
        hexlane.l2.owner)."""
        eligible = self.eligible.get(ip, frozenset())
        alive = eligible & self.alive_now
        return {"eligible": sorted(eligible), "alive": sorted(alive),
                "ranking": ranking(ip, alive), "owner": self.owners.get(ip) or ""}

    def status(self) -> dict[str, Any]:
        """For `hexlane status` and `hexlane l2 list`."""
        replies: dict[Entry, int] = {}
        if self.responder is not None and isinstance(self.responder.table, ResponderTable):
            try:
                replies = {(s.ip, s.device): s.replies for s in self.responder.table.entries()}
            except OSError:
                replies = {}
        hexlane = self.election == "hexlane"
        hb = self.heartbeat
        return {
            "enabled": True,
            "election": self.election,
            **({"heartbeat": {"alive": sorted(hb.alive | {self.node}) if hb else [],
                              "unreachable": sorted(self.unreachable),
                              "sent": hb.sent if hb else 0,
                              "accepted": hb.membership.accepted if hb else 0,
                              # its own broadcasts come back to it: not a rejection
                              "rejected": {k: v for k, v in hb.membership.rejected.items()
                                           if k != "self"} if hb else {},
                              "deadAfter": self.l2.dead_after,
                              "port": self.l2.heartbeat_port}} if hexlane else {}),
            "leaseNamespace": self.namespace,
            "leaseDuration": self.timing.duration,
            "devices": list(self.devices),
            "candidates": len(self.candidates),
            "leading": len({k for keys in self.held.values() for k in keys}) if hexlane
            else len(self.leading),
            "garpsSent": self.garps_sent,
            "taken": self.taken,
            "lastError": self.last_error or "",
            "badPolicies": sorted(n for n, r in self.reads.items() if r.policy is None),
            "announcements": [
                {"ip": ip, "device": device, "node": self.node,
                 "services": [f"{ns}/{n}" for ns, n in keys],
                 "policies": sorted({p for k in keys for p in self.candidates[k].policies}),
                 "replies": replies.get((ip, device), 0),
                 **({"why": self._why(ip)} if hexlane else {})}
                for (ip, device), keys in sorted(self.held.items())],
            "competing": [
                {"service": f"{ns}/{n}", "lease": "" if hexlane else cand.lease,
                 "leading": (self._holder(key, cand) == self.node) if hexlane
                 else key in self.electors and self.electors[key].leading,
                 "holder": self._holder(key, cand)}
                for key, cand in sorted(self.candidates.items()) for ns, n in [key]],
        }


def _slice(raw: Mapping[str, Any]) -> EndpointSlice | None:
    try:
        return EndpointSlice.parse(raw)
    except (InputError, ValueError):
        return None  # the load balancer logs it


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
