"""kube-proxy's health servers, as the agent serves them when it replaces kube-proxy.

`/healthz` on `kubeProxyReplacementHealthzBindAddr` answers as kube-proxy's does
(`{"lastUpdated", "currentTime"}`, 200 while the load balancer's last sync succeeded, else
503), and every `externalTrafficPolicy: Local` Service with a `healthCheckNodePort` gets a
listener answering `{"service":{"namespace","name"},"localEndpoints":N}` with
`X-Load-Balancing-Endpoint-Weight` (200 when N > 0, else 503), so an external load balancer
sends traffic only to nodes with a local backend.

    health = HealthServers(reconciler, values.kube_proxy_replacement_healthz_bind_addr)
    await health.start(); await health.sync()   # after each commit; await health.stop()
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from aiohttp import web

from hexlane.lb.services import HealthCheck

log = logging.getLogger(__name__)


class Reconciled(Protocol):
    """What the health servers read from the load balancer."""

    last_updated: float | None

    @property
    def healthy(self) -> bool: ...

    def health_checks(self) -> tuple[HealthCheck, ...]: ...


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

    def __init__(self, reconciler: Reconciled, healthz: tuple[str, int] | None,
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
