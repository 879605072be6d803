"""The agent's service side: programs Services into the eBPF load balancer, serves health.

API for the agent daemon (construct once, drive from the informers):

    lb = LbDatapath.load(bpf_root, table_size=values.maglev.table_size,
                         hash_seed=values.maglev.hash_seed)
    rec = ServiceReconciler(lb, node_name, values)     # ids recovered from the pinned maps
    rec.attach(lan_ifnames=["eth0"])                  # in the node's netns
    rec.model.set_service(svc) / set_slice / delete_… # as objects change (parsed once)
    report = rec.commit()                              # via asyncio.to_thread: only what changed
    rec.resync()                                       # every reconciler.resyncInterval
    rec.gc_conntrack()                                 # every ~10 s: expire idle flows
    rec.attach_links()                                 # after a CNI ADD (new lxc*, the tunnel)
    health = HealthServers(rec, values.kube_proxy_replacement_healthz_bind_addr)
    await health.start(); await health.sync()          # after each commit; await health.stop()

`commit` asks the pure `hexlane.lb.services.LbModel` what the Services touched since the last
commit change (a `Delta`: only their entries, whatever the number of Services) and hands it
to `hexlane.datapath.lb.sync.LbSync`, whose reconcilers write those keys only (new backends,
reverse NAT, affinity and Maglev tables before the service entries, a service's slots before
its slot 0, stale entries last). The first commit of a process is a resync: it reads the maps
and writes only what they lack (so it converges after any restart); `resync()` does the same
later, and repairs whatever changed behind the agent's back. `update(services, slices,
nodes)` replaces the whole picture at once (the standalone driver, benchmarks). Backend and
service ids are recovered from the pinned maps at construction, so conntrack entries stay
valid. Closing the agent leaves maps and programs pinned and attached: traffic keeps flowing
through the last programmed state.

Health: `/healthz` on `kubeProxyReplacementHealthzBindAddr` answers as kube-proxy's does
(`{"lastUpdated", "currentTime"}`, 200 while the last sync succeeded, else 503), and every
`externalTrafficPolicy: Local` Service with a `healthCheckNodePort` gets a listener answering
`{"service":{"namespace","name"},"localEndpoints":N}` with `X-Load-Balancing-Endpoint-Weight`
(200 when N > 0, else 503).

Standalone (tests, experiments): `python -m hexlane.agent.services --bpf-root DIR --node NAME
--manifests DIR [--values F] [--lan IFNAME]... [--service-cidr CIDR]` reconciles the YAML
manifests in DIR (Services, EndpointSlices, Nodes) whenever they change.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from hexlane.datapath.lb.attach import NoArpTable, TcTable, attachments
from hexlane.datapath.lb.conntrack import gc_conntrack
from hexlane.datapath.lb.encode import recover_ids
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.sync import LbSync
from hexlane.datapath.reconcile import FlushResult, Reconciler
from hexlane.datapath.sysctl import sysctl_reconciler
from hexlane.lb.services import (
    DesiredState,
    HealthCheck,
    LbModel,
    LbSettings,
    settings_from_values,
)
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service
from hexlane.routing.routes import HOST_DEVICE, HOST_PEER_DEVICE

log = logging.getLogger("hexlane.agent.services")


@dataclass(frozen=True)
class ApplyReport:
    services: int  # frontend scopes programmed
    backends: int
    updated: int
    deleted: int
    recomputed: int  # Services recomputed by this commit
    seconds: float
    problems: tuple[str, ...] = ()
    failed: int = 0  # entries whose write failed (retried with backoff)


class ServiceReconciler:
    """The load balancer of one node: model, map reconcilers, attachments (module doc)."""

    def __init__(self, datapath: LbDatapath, node_name: str, values: Any = None, *,
                 settings: LbSettings | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if settings is None:
            if values is None:
                raise ValueError("ServiceReconciler needs values or settings")
            settings = settings_from_values(values)
        self.datapath = datapath
        self.node_name = node_name
        self.settings = settings
        self.clock = clock
        m = datapath.maps
        self.model = LbModel(node_name, settings, recover_ids(m.services, m.backends))
        self.sync = LbSync(datapath)
        self.tc = TcTable(datapath)
        self.attachments: Reconciler[Any, int] = Reconciler(self.tc)
        self.sysctls = sysctl_reconciler()
        noarp = NoArpTable()
        self.noarp: Reconciler[str, bool] = Reconciler(noarp)
        noarp.names = lambda: list(self.noarp.desired)
        self.lan: tuple[str, ...] = ()
        self.last_updated: float | None = None  # wall clock of the last successful commit
        self.last_error: str | None = None
        self._resynced = False

    @property
    def reconcilers(self) -> list[Reconciler[Any, Any]]:
        return [*self.sync.reconcilers, self.attachments, self.sysctls, self.noarp]

    # --- desired state -> maps ---------------------------------------------------------

    def update(self, services: Iterable[Service], slices: Iterable[EndpointSlice],
               nodes: Iterable[Node]) -> ApplyReport:
        """Make the model exactly these objects and commit."""
        self.model.replace_all(services, slices, nodes)
        return self.commit()

    def commit(self) -> ApplyReport:
        """Recompute what changed since the last commit and write it."""
        start = time.monotonic()
        try:
            delta = self.model.commit()
            self.sync.stage(delta)
            self.sync.set_node_ip(self.model.node_ips[0] if self.model.node_ips else None)
            if self._resynced:
                result = self.sync.flush()
            else:
                result = self.sync.resync()
                self._resynced = True
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise
        for problem in delta.problems:
            log.warning("%s", problem)
        self._record(result)
        return ApplyReport(services=len(self.model.entries), backends=len(self.model.backends),
                           updated=result.updated, deleted=result.deleted,
                           recomputed=delta.services_recomputed,
                           seconds=time.monotonic() - start, problems=delta.problems,
                           failed=len(result.failed))

    def _record(self, result: FlushResult) -> None:
        if result.failed:
            some = "; ".join(f"{v}" for v in list(result.failed.values())[:3])
            self.last_error = f"{len(result.failed)} entries not written (retried): {some}"
            log.warning("load balancer: %s", self.last_error)
        elif self.pending_failures == 0:
            self.last_error = None
        if self.last_error is None:
            self.last_updated = self.clock()

    @property
    def pending_failures(self) -> int:
        return sum(len(r.last_errors) for r in self.sync.reconcilers)

    def resync(self) -> FlushResult:
        """Read every LB map, tc slot, sysctl and link flag back; repair what differs."""
        result = self.sync.resync()
        self._resynced = True
        self._record(result)
        self._set_attachments()  # links that came or went since (a re-created device)
        for rec in (self.attachments, self.sysctls, self.noarp):
            result.add(rec.resync())
        return result

    @property
    def desired(self) -> DesiredState:
        """The whole desired state (built on demand: O(number of frontends))."""
        return self.model.state()

    def health_checks(self) -> tuple[HealthCheck, ...]:
        return self.model.health_checks()

    def gc_conntrack(self) -> int:
        """Expire idle flows (Cilium's timeouts); the agent calls it every few seconds."""
        m = self.datapath.maps
        return gc_conntrack(m.ct, m.backends, m.revnat, time.monotonic_ns())

    @property
    def healthy(self) -> bool:
        return self.last_updated is not None and self.last_error is None

    # --- attach points (in the node's network namespace) -------------------------------

    def attach(self, lan_ifnames: Sequence[str]) -> list[str]:
        """Attach to the LAN interfaces, lo, hexlane_host, every pod veth and the tunnel
        device (reading back what sits there first: a previous agent's programs are
        replaced); returns the slots written. What is routed to hexlane_host (the service
        CIDR, LoadBalancer and external IPs) is the endpoint manager's."""
        self.lan = tuple(lan_ifnames)
        # The node's own connections to its own addresses (its NodePorts) take lo. Their
        # replies come back in through lo with one of the node's addresses as source (as
        # Cilium sets it on cilium_host, accept_local lets such a packet in; traffic looped
        # back by the kernel itself never meets this check).
        sysctls = {"net.ipv4.conf.lo.accept_local": "1"}
        try:
            socket.if_nametoindex(HOST_DEVICE)
        except OSError:
            log.warning("no %s device: the node's own connections to ClusterIPs are not "
                        "load-balanced", HOST_DEVICE)
        else:
            # Nothing answers ARP for service addresses: without ARP on hexlane_host the
            # node's packets to them reach the tc egress program at once (only that program
            # sends anything out of it; pods reach the router IP through their own veths
            # with permanent neighbour entries).
            self.noarp.put(HOST_DEVICE, True)
            # A translated packet whose next hop is not resolved yet goes on out of
            # hexlane_host to the kernel's forwarding, in through its peer with the router IP
            # (one of the node's own addresses) as source.
            sysctls[f"net.ipv4.conf.{HOST_PEER_DEVICE}.accept_local"] = "1"
        self.sysctls.set_all(sysctls)
        for rec in (self.sysctls, self.noarp):
            result = rec.resync()
            if result.failed:
                raise RuntimeError(f"{rec.name}: {'; '.join(map(str, result.failed.values()))}")
        self._set_attachments()
        result = self.attachments.resync()
        return _slot_names(self.attachments.desired, result)

    def _set_attachments(self) -> None:
        wanted = attachments(self.lan, (name for _, name in socket.if_nameindex()))
        self.tc.wanted = set(wanted)
        self.attachments.set_all({slot: self.tc.program_id(program)
                                  for slot, program in wanted.items()})

    def attach_links(self) -> int:
        """Attach to links that appeared (pod veths, the tunnel device), forget gone ones;
        the number of slots written."""
        self._set_attachments()
        return self.attachments.flush().updated


def _slot_names(desired: dict[Any, int], result: FlushResult) -> list[str]:
    return [f"{device}:{direction}" for device, direction, priority in sorted(desired)
            if (device, direction, priority) not in result.failed]


# --- health servers --------------------------------------------------------------------


def go_time(ts: float) -> str:
    """A time as Go's time.Time prints it (kube-proxy's healthz body uses that format)."""
    dt = datetime.fromtimestamp(ts, UTC)
    return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond:06d}000 +0000 UTC"


def healthz_response(last_updated: float | None, healthy: bool,
                     now: float) -> tuple[int, dict[str, str]]:
    """kube-proxy's /healthz answer: status and body."""
    body = {"lastUpdated": go_time(last_updated) if last_updated else "",
            "currentTime": go_time(now)}
    return (200 if healthy else 503), body


def node_port_health_response(check: HealthCheck) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The healthCheckNodePort answer: status, body, headers."""
    body = {"service": {"namespace": check.namespace, "name": check.name},
            "localEndpoints": check.local_endpoints}
    headers = {"X-Load-Balancing-Endpoint-Weight": str(check.local_endpoints)}
    return (200 if check.local_endpoints > 0 else 503), body, headers


class HealthServers:
    """`/healthz` on the configured address and one listener per healthCheckNodePort."""

    def __init__(self, reconciler: ServiceReconciler, healthz: tuple[str, int] | None,
                 *, clock: Callable[[], float] = time.time) -> None:
        self.reconciler = reconciler
        self.healthz_addr = healthz
        self.clock = clock
        self._healthz: web.AppRunner | None = None
        self._ports: dict[int, tuple[web.AppRunner, HealthCheck]] = {}

    async def _serve(self, handler: Any, host: str, port: int) -> web.AppRunner:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port, reuse_address=True).start()
        return runner

    async def start(self) -> None:
        if self.healthz_addr is not None:
            host, port = self.healthz_addr
            self._healthz = await self._serve(self._handle_healthz, host or "0.0.0.0", port)

    async def _handle_healthz(self, request: web.Request) -> web.Response:
        if request.path != "/healthz":
            return web.Response(status=404, text="404 page not found\n")
        status, body = healthz_response(self.reconciler.last_updated,
                                        self.reconciler.healthy, self.clock())
        return web.json_response(body, status=status)

    async def sync(self) -> None:
        """Open, update or close the healthCheckNodePort listeners to match the state."""
        wanted = {h.port: h for h in self.reconciler.health_checks()}
        for port in [p for p in self._ports if p not in wanted]:
            runner, _ = self._ports.pop(port)
            await runner.cleanup()
        for port, check in wanted.items():
            if port in self._ports:
                self._ports[port] = (self._ports[port][0], check)
                continue

            async def handler(_request: web.Request, port: int = port) -> web.Response:
                status, body, headers = node_port_health_response(self._ports[port][1])
                return web.json_response(body, status=status, headers=headers)

            try:
                runner = await self._serve(handler, "0.0.0.0", port)
            except OSError as exc:
                log.warning("healthCheckNodePort %d of %s/%s: %s", port, check.namespace,
                            check.name, exc)
                continue
            self._ports[port] = (runner, check)

    @property
    def ports(self) -> list[int]:
        return sorted(self._ports)

    async def stop(self) -> None:
        for runner, _ in self._ports.values():
            await runner.cleanup()
        self._ports.clear()
        if self._healthz is not None:
            await self._healthz.cleanup()
            self._healthz = None


# --- standalone driver -----------------------------------------------------------------


def read_manifests(directory: Path) -> tuple[list[Service], list[EndpointSlice], list[Node]]:
    """Services, EndpointSlices and Nodes from every *.yaml/*.json file in `directory`."""
    import yaml  # the driver only; the daemon gets objects from its informers

    services: list[Service] = []
    slices: list[EndpointSlice] = []
    nodes: list[Node] = []
    for path in sorted(directory.iterdir()):
        if path.suffix not in (".yaml", ".yml", ".json"):
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):
                continue
            kind = doc.get("kind")
            if kind == "Service":
                services.append(Service.parse(doc, str(path)))
            elif kind == "EndpointSlice":
                slices.append(EndpointSlice.parse(doc, str(path)))
            elif kind == "Node":
                nodes.append(Node.parse(doc, str(path)))
    return services, slices, nodes


def _stamp(directory: Path) -> tuple[tuple[str, int], ...]:
    return tuple((p.name, p.stat().st_mtime_ns) for p in sorted(directory.iterdir()))


async def _run(args: argparse.Namespace) -> int:
    from hexlane.config import load_values

    values, problems = load_values([args.values] if args.values else [])
    errors = [p for p in problems if p.severity == "error"]
    if errors:
        print(json.dumps({"error": "; ".join(str(p) for p in errors)}), flush=True)
        return 2
    lb = LbDatapath.load(args.bpf_root, table_size=values.maglev.table_size,
                         hash_seed=values.maglev.hash_seed)
    rec = ServiceReconciler(lb, args.node, values)
    rec.attach(args.lan)
    if args.service_cidr:  # the agent's endpoint manager routes it; here, by hand
        subprocess.run(["ip", "route", "replace", args.service_cidr, "dev", HOST_DEVICE],
                       check=True, capture_output=True)
    health = HealthServers(rec, values.kube_proxy_replacement_healthz_bind_addr)
    await health.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    manifests = Path(args.manifests)
    seen: tuple[tuple[str, int], ...] = ()
    last_gc = time.monotonic()
    try:
        while not stop.is_set():
            if time.monotonic() - last_gc > 10:
                rec.gc_conntrack()
                last_gc = time.monotonic()
            stamp = _stamp(manifests)
            if stamp != seen:
                seen = stamp
                try:
                    report = rec.update(*read_manifests(manifests))
                    await health.sync()
                    print(json.dumps({"applied": report.services, "backends": report.backends,
                                      "updated": report.updated, "deleted": report.deleted,
                                      "seconds": round(report.seconds, 4)}), flush=True)
                except Exception as exc:  # bad input: report, keep the last state
                    print(json.dumps({"error": str(exc)}), flush=True)
            rec.attach_links()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.2)
    finally:
        await health.stop()
        lb.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hexlane.agent.services",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--bpf-root", default=os.environ.get("HEXLANE_BPF_ROOT",
                                                             "/sys/fs/bpf/hexlane"))
    parser.add_argument("--node", required=True)
    parser.add_argument("--manifests", required=True)
    parser.add_argument("--values")
    parser.add_argument("--lan", action="append", default=[])
    parser.add_argument("--service-cidr")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    return asyncio.run(_run(args))


if __name__ == "__main__":
    raise SystemExit(main())

