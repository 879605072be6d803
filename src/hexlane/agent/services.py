"""The agent's service side: programs Services into the eBPF load balancer, serves health.

API for the agent daemon (construct once, drive from the informers):

    lb = LbDatapath.load(bpf_root, table_size=values.maglev.table_size,
                         hash_seed=values.maglev.hash_seed)
    rec = ServiceReconciler(lb, node_name, values)     # ids recovered from the pinned maps
    rec.attach(lan_ifnames=["eth0"])                  # in the node's netns
    report = rec.update(services, slices, nodes)      # sync; call it via asyncio.to_thread
    ...                                                # again on every change (cheap: diffs)
    rec.gc_conntrack()                                 # every ~10 s: expire idle flows
    rec.attach_links()                                 # after a CNI ADD (new lxc*, the tunnel)
    health = HealthServers(rec, values.kube_proxy_replacement_healthz_bind_addr)
    await health.start(); await health.sync()          # after each update; await health.stop()

`update` computes `hexlane.lb.services.desired_state` and `apply`s it: new backends, reverse
NAT entries and Maglev tables first, then the service entries (a service's slots before its
slot 0), then what became stale (service entries, then backends and tables). The first
apply of a process compares with what the maps hold (so it converges after any restart),
later ones with what it wrote last (a change among thousands of Services costs only its own
entries); `apply(desired, full=True)` compares with the maps again (a periodic resync).
Backend and service ids are recovered from the pinned maps at construction, so conntrack
entries stay valid.
Closing the agent leaves maps and programs pinned and attached: traffic keeps flowing
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

from hexlane.datapath import libbpf, netlink
from hexlane.datapath.lb.conntrack import gc_conntrack
from hexlane.datapath.lb.encode import MapContents, encode, recover_ids
from hexlane.datapath.lb.loader import (
    NETDEV_TC_PRIORITY,
    PROGRAM_FROM_HOST,
    PROGRAM_FROM_LOOPBACK,
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_OVERLAY,
    PROGRAM_FROM_POD,
    PROGRAM_TO_NETDEV,
    PROGRAM_TO_OVERLAY,
    PROGRAM_TO_POD,
    TC_HANDLE,
    TC_PRIORITY,
    LbDatapath,
)
from hexlane.ipam.routes import HOST_DEVICE, HOST_PEER_DEVICE, VXLAN_DEVICE
from hexlane.lb.services import (
    DesiredState,
    HealthCheck,
    LbSettings,
    desired_state,
    node_addresses,
    settings_from_values,
)
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service

log = logging.getLogger("hexlane.agent.services")

POD_DEVICE_PREFIX = "lxc"


@dataclass(frozen=True)
class ApplyReport:
    services: int
    backends: int
    updated: int
    deleted: int
    tables_written: int
    seconds: float
    problems: tuple[str, ...] = ()


def _upsert(target: Any, pairs: Iterable[tuple[Any, Any]]) -> int:
    """Write the entries that differ, delete nothing (the first half of a reconcile)."""
    n = 0
    for key, value in pairs:
        current = target.lookup(key)
        if current is None or bytes(current) != bytes(value):
            target.update(key, value)
            n += 1
    return n


class ServiceReconciler:
    """Converges the pinned LB maps to the desired state (see the module docstring)."""

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
        self.ids = recover_ids(m.services, m.backends)
        # Tables written by this process; the first apply writes every one (a swap, harmless).
        self._tables: dict[int, tuple[int, ...]] = {}
        # What this process last wrote, per map (raw key -> raw value); empty: read the maps.
        self._written: dict[str, dict[bytes, bytes]] = {}
        self.desired: DesiredState | None = None
        self.last_updated: float | None = None  # wall clock of the last successful apply
        self.last_error: str | None = None
        self._attached_links: set[int] = set()

    # --- desired state -> maps ---------------------------------------------------------

    def update(self, services: Iterable[Service], slices: Iterable[EndpointSlice],
               nodes: Iterable[Node]) -> ApplyReport:
        """Compute the desired state from these objects and apply it."""
        nodes = list(nodes)
        try:
            desired = desired_state(services, slices, nodes, self.node_name, self.settings,
                                    self.ids)
            addresses = node_addresses(nodes, self.node_name)
            self.datapath.set_node_ip(addresses[0] if addresses else None)
            return self.apply(desired)
        except Exception as exc:
            self.last_error = f"{type(exc).__name__}: {exc}"
            raise

    def apply(self, desired: DesiredState, *, full: bool = False) -> ApplyReport:
        """Write `desired` to the maps. The first apply of this process (or `full=True`)
        compares with what the maps hold; later ones with what this process wrote last, so
        a change among thousands of services costs only its own entries."""
        start = time.monotonic()
        contents: MapContents = encode(desired)
        m = self.datapath.maps
        if full:
            self._written = {}
        want = {name: {bytes(k): bytes(v) for k, v in pairs} for name, pairs in (
            ("backends", contents.backends), ("revnat", contents.revnat),
            ("affinity_match", contents.affinity_match), ("services", contents.services))}
        maps = {"backends": m.backends, "revnat": m.revnat,
                "affinity_match": m.affinity_match, "services": m.services}
        updated = deleted = 0
        # New backends, reverse NAT and affinity entries before any service points at them.
        for name in ("backends", "revnat", "affinity_match"):
            updated += self._write(maps[name], want[name], self._written.get(name))
        changed_tables = {sid: table for sid, table in contents.maglev.items()
                          if self._tables.get(sid) != table}
        self.datapath.set_maglev_tables(changed_tables)
        self._tables.update(changed_tables)
        # The service map in order (a service's slots before its slot 0), then its stale
        # entries, then whatever no service uses any more.
        updated += self._write(m.services, want["services"], self._written.get("services"))
        for name in ("services", "affinity_match", "revnat", "backends"):
            deleted += self._prune(maps[name], want[name], self._written.get(name))
        stale = [sid for sid in (int.from_bytes(raw, "little") for raw in m.maglev.raw_keys())
                 if sid not in contents.maglev]
        self.datapath.delete_maglev_tables(stale)
        for sid in stale:
            self._tables.pop(sid, None)
        deleted += len(stale)
        self._written = want
        self.ids = desired.ids
        self.desired = desired
        self.last_updated = self.clock()
        self.last_error = None
        for problem in desired.problems:
            log.warning("%s", problem)
        return ApplyReport(services=len(desired.services), backends=len(desired.backends),
                           updated=updated, deleted=deleted, tables_written=len(changed_tables),
                           seconds=time.monotonic() - start, problems=desired.problems)

    @staticmethod
    def _write(target: Any, want: dict[bytes, bytes], written: dict[bytes, bytes] | None) -> int:
        """Write the entries of `want` that differ from the map (no record) or the record."""
        n = 0
        for key, value in want.items():
            if written is not None:
                if written.get(key) == value:
                    continue
            else:
                current = target.lookup(key)
                if current is not None and bytes(current) == value:
                    continue
            target.update(key, value)
            n += 1
        return n

    @staticmethod
    def _prune(target: Any, want: dict[bytes, bytes], written: dict[bytes, bytes] | None) -> int:
        keys = list(target.raw_keys()) if written is None else list(written)
        return sum(1 for k in keys if k not in want and target.delete(k))

    def gc_conntrack(self) -> int:
        """Expire idle flows (Cilium's timeouts); the agent calls it every few seconds."""
        m = self.datapath.maps
        return gc_conntrack(m.ct, m.backends, m.revnat, time.monotonic_ns())

    @property
    def healthy(self) -> bool:
        return self.last_updated is not None and self.last_error is None

    # --- attach points (in the node's network namespace) -------------------------------

    def _attach(self, ifindex: int, program: str, direction: str,
                priority: int = TC_PRIORITY) -> None:
        libbpf.tc_attach(ifindex, self.datapath.program_fd(program), direction,
                         handle=TC_HANDLE, priority=priority)

    def attach(self, lan_ifnames: Sequence[str]) -> list[str]:
        """Attach to the LAN interfaces, hexlane_host, every pod veth and the tunnel device;
        returns what was attached. Safe to repeat (filters replaced). What is routed to
        hexlane_host (the service CIDR, LoadBalancer and external IPs) is the endpoint
        manager's (`set_service_routes`)."""
        done = []
        for name in lan_ifnames:
            index = socket.if_nametoindex(name)
            # Agents before the masquerade came first sat at priority 1: not twice.
            with contextlib.suppress(OSError):
                libbpf.tc_detach(index, "ingress", handle=TC_HANDLE, priority=TC_PRIORITY)
            self._attach(index, PROGRAM_FROM_NETDEV, "ingress", NETDEV_TC_PRIORITY)
            self._attach(index, PROGRAM_TO_NETDEV, "egress")
            done += [f"{name}:ingress", f"{name}:egress"]
        # The node's own connections to its own addresses (its NodePorts) take lo. Their
        # replies come back in through lo with one of the node's addresses as source (as
        # Cilium sets it on cilium_host, accept_local lets such a packet in; traffic looped
        # back by the kernel itself never meets this check).
        self._attach(socket.if_nametoindex("lo"), PROGRAM_FROM_LOOPBACK, "egress")
        netlink.write_sysctl("net.ipv4.conf.lo.accept_local", "1")
        done.append("lo:egress")
        try:
            host = socket.if_nametoindex(HOST_DEVICE)
        except OSError:
            log.warning("no %s device: the node's own connections to ClusterIPs are not "
                        "load-balanced", HOST_DEVICE)
        else:
            self._attach(host, PROGRAM_FROM_HOST, "egress")
            done.append(f"{HOST_DEVICE}:egress")
            # Nothing answers ARP for service addresses: without ARP on hexlane_host the
            # node's packets to them reach the tc egress program at once (only that program
            # sends anything out of it; pods reach the router IP through their own veths
            # with permanent neighbour entries).
            subprocess.run(["ip", "link", "set", HOST_DEVICE, "arp", "off"], check=True,
                           capture_output=True)
            # A translated packet whose next hop is not resolved yet goes on out of
            # hexlane_host to the kernel's forwarding, in through its peer with the router IP
            # (one of the node's own addresses) as source.
            netlink.write_sysctl(f"net.ipv4.conf.{HOST_PEER_DEVICE}.accept_local", "1")
        done += self.attach_links()
        return done

    def attach_links(self) -> list[str]:
        """Attach hl_from_pod and hl_to_pod to every pod veth (lxc*), hl_from_overlay and
        hl_to_overlay to the tunnel device (it appears with the first peer in tunnel mode),
        once per link."""
        done = []
        for index, name in socket.if_nameindex():
            if index in self._attached_links:
                continue
            hooks: tuple[tuple[str, str], ...]
            if name.startswith(POD_DEVICE_PREFIX):
                hooks = ((PROGRAM_FROM_POD, "ingress"), (PROGRAM_TO_POD, "egress"))
            elif name == VXLAN_DEVICE:
                hooks = ((PROGRAM_FROM_OVERLAY, "ingress"), (PROGRAM_TO_OVERLAY, "egress"))
            else:
                continue
            try:
                for program, direction in hooks:
                    self._attach(index, program, direction)
            except OSError as exc:  # the pod went away meanwhile
                log.info("attach to %s: %s", name, exc)
                continue
            self._attached_links.add(index)
            done += [f"{name}:{direction}" for _, direction in hooks]
        return done


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
        desired = self.reconciler.desired
        wanted = {h.port: h for h in (desired.health_checks if desired else ())}
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

