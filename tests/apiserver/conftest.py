"""Fixtures for the embedded apiserver: the real `hexlane apiserver` process on a free loopback
port with a temporary data directory, and a small synchronous HTTPS client for it."""

from __future__ import annotations

import http.client
import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml


class Api:
    """A keep-alive HTTPS client speaking JSON to one apiserver."""

    def __init__(self, host: str, port: int, token: str | None, ca: Path | None) -> None:
        self.host, self.port, self.token = host, port, token
        self.ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
        self._conn: http.client.HTTPConnection | None = None

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        if self.ctx is not None:
            return http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                               timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Accept": "application/json"}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        out.update(extra or {})
        return out

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        hdrs = self.headers(headers)
        if data is not None:
            hdrs["Content-Type"] = content_type
        for attempt in range(2):
            if self._conn is None:
                self._conn = self.connection()
            try:
                self._conn.request(method, path, body=data, headers=hdrs)
                resp = self._conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                self._conn.close()
                self._conn = None
                if attempt:
                    raise
        text = raw.decode()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def get(self, path: str, **kw: Any) -> tuple[int, Any]:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return self.request("POST", path, body, **kw)

    def put(self, path: str, body: Any, **kw: Any) -> tuple[int, Any]:
        return self.request("PUT", path, body, **kw)

    def patch(self, path: str, body: Any, content_type: str = "application/merge-patch+json",
              **kw: Any) -> tuple[int, Any]:
        return self.request("PATCH", path, body, content_type=content_type, **kw)

    def delete(self, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        return self.request("DELETE", path, body, **kw)

    def watch(self, path: str, timeout: float = 10.0) -> Watch:
        return Watch(self, path, timeout)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


class Watch:
    """A watch stream: `next()` returns the next event dict (None at the end of the stream)."""

    def __init__(self, api: Api, path: str, timeout: float) -> None:
        self.conn = api.connection(timeout)
        self.conn.request("GET", path, headers=api.headers())
        self.resp = self.conn.getresponse()
        self.status = self.resp.status

    def next(self) -> dict[str, Any] | None:
        line = self.resp.readline()
        if not line:
            return None
        return json.loads(line)

    def close(self) -> None:
        self.conn.close()


class ServerProcess:
    """A running `hexlane apiserver` and how to reach it."""

    def __init__(self, data_dir: Path, extra_args: list[str]) -> None:
        self.data_dir = data_dir
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.api: Api
        self.kubeconfig = data_dir / "kubeconfig"

    def start(self, timeout: float = 30.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.unlink(missing_ok=True)
        log = open(self.data_dir / "server.log", "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "apiserver", "--data-dir",
             str(self.data_dir), "--listen", "127.0.0.1:0", *self.extra_args],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.kubeconfig.exists():
            if self.proc.poll() is not None:
                raise RuntimeError("apiserver exited: "
                                   + (self.data_dir / "server.log").read_text()[-3000:])
            if time.monotonic() > deadline:
                raise RuntimeError("apiserver did not write its kubeconfig in time")
            time.sleep(0.05)
        config = yaml.safe_load(self.kubeconfig.read_text())
        server = config["clusters"][0]["cluster"]["server"]
        hostport = server.split("://", 1)[1]
        host, _, port = hostport.rpartition(":")
        token = config["users"][0]["user"].get("token")
        ca = self.data_dir / "tls.crt" if server.startswith("https") else None
        self.url = server
        self.api = Api(host, int(port), token, ca)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        if hasattr(self, "api"):
            self.api.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        if hasattr(self, "api"):
            self.api.close()

    def metrics(self) -> dict[tuple[str, str], float]:
        """(verb, resource) -> request count, from /metrics."""
        status, text = self.api.get("/metrics")
        assert status == 200
        counts: dict[tuple[str, str], float] = {}
        for line in str(text).splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels_text, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
            labels = dict(part.split("=", 1) for part in labels_text.split(","))
            key = (labels["verb"].strip('"'), labels["resource"].strip('"'))
            counts[key] = counts.get(key, 0.0) + float(value)
        return counts


def start_server(data_dir: Path, *extra_args: str) -> ServerProcess:
    server = ServerProcess(data_dir, list(extra_args))
    server.start()
    return server


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One apiserver shared by the tests that need no special flags (each test uses its own
    namespace or names)."""
    srv = start_server(tmp_path_factory.mktemp("apiserver"), "--bookmark-interval", "0.5")
    try:
        yield srv
    finally:
        srv.kill()


@pytest.fixture
def api(server: ServerProcess) -> Api:
    return server.api


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Any]:
    """A factory of apiservers owned by one test, each killed at the end."""
    started: list[ServerProcess] = []

    def make(*extra_args: str, data_dir: Path | None = None) -> ServerProcess:
        srv = start_server(data_dir or tmp_path / f"srv{len(started)}", *extra_args)
        started.append(srv)
        return srv

    try:
        yield make
    finally:
        for srv in started:
            srv.kill()
