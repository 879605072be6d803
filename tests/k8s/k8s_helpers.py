"""Helpers for the client layer's tests: the real `hexlane apiserver` process (HTTPS, token,
its own kubeconfig), a plain aiohttp client that is not the code under test (to make changes
behind the informer's back and to read the truth), and a TCP proxy in front of the server that
a test can cut or hold, to break watches at chosen moments."""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml


class ServerProcess:
    """A running `hexlane apiserver` subprocess."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "kubeconfig"
        data_dir.mkdir(parents=True, exist_ok=True)
        # The server writes its kubeconfig once listening: one from an earlier run must not
        # pass for readiness.
        self.kubeconfig.unlink(missing_ok=True)
        log = open(data_dir / "server.log", "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "apiserver", "--data-dir", str(data_dir),
             "--listen", "127.0.0.1:0", "--bookmark-interval", "0.5", *extra],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + 30
        while not self.kubeconfig.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("apiserver exited: "
                                   + (data_dir / "server.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("apiserver did not write its kubeconfig in time")
            time.sleep(0.05)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url: str = config["clusters"][0]["cluster"]["server"]
        self.token: str = config["users"][0]["user"]["token"]
        host_port = self.url.split("://", 1)[1]
        host, _, port = host_port.rpartition(":")
        self.host, self.port = host, int(port)
        self.ca = data_dir / "tls.crt"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def plain(self) -> Plain:
        return Plain(self.url, self.token, self.ca)


class Plain:
    """An independent JSON client (aiohttp) for changes and ground truth."""

    def __init__(self, url: str, token: str, ca: Path) -> None:
        self.url, self.token = url, token
        self.ssl = ssl.create_default_context(cafile=str(ca))
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Plain:
        self._session = aiohttp.ClientSession(headers={"Authorization": f"Bearer {self.token}"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._session is not None
        await self._session.close()

    async def call(self, method: str, path: str, body: Any = None,
                   content_type: str = "application/json") -> tuple[int, Any]:
        assert self._session is not None
        data = None if body is None else json.dumps(body)
        async with self._session.request(method, self.url + path, data=data, ssl=self.ssl,
                                         headers={"Content-Type": content_type}) as resp:
            return resp.status, await resp.json(content_type=None)

    async def metrics(self) -> dict[tuple[str, str], float]:
        """(verb, resource) -> requests served, from the server's /metrics."""
        assert self._session is not None
        async with self._session.get(self.url + "/metrics", ssl=self.ssl) as resp:
            text = await resp.text()
        counts: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
            labels = dict(part.split("=", 1) for part in labels_text.split(","))
            key = (labels["verb"].strip('"'), labels["resource"].strip('"'))
            counts[key] = counts.get(key, 0.0) + float(value)
        return counts


class Proxy:
    """A TCP relay to the apiserver that can cut every connection (`cut()`) and hold new ones
    off (`hold()` / `release()`): a network that fails, for real sockets."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.held = False
        self.connections = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> Proxy:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.server.wait_closed()

    def cut(self) -> None:
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def hold(self) -> None:
        self.held = True
        self.cut()

    def release(self) -> None:
        self.held = False

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.held:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        pumps = [asyncio.create_task(self._pump(reader, up_writer)),
                 asyncio.create_task(self._pump(up_reader, writer))]
        self._tasks.update(pumps)
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in pumps:
                task.cancel()
                self._tasks.discard(task)
            for w in (writer, up_writer):
                self._writers.discard(w)
                w.transport.abort()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
