"""The real `hexlane apiserver` for tests, and clients of it that are not the code under test.

`Apiserver` runs the process (HTTPS on a free loopback port unless told another address; its
own data directory, token and certificate; in a network namespace when `spawn` starts it
there), waits for the kubeconfig it writes once listening, and stops, kills or restarts it.
Talking to it, always over HTTP: `api`, a small synchronous keep-alive JSON client (`Api`);
`plain()`, an aiohttp one for async tests (`Plain`); `kubectl(...)`, the machine's kubectl;
`metrics()`, its request counters. `Apiservers` starts several and stops them all at the end:
the fixtures `apiserver`, `api` and `apiservers` in tests/conftest.py are made of it.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from hexlane.lab import netns

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]
Spawn = Callable[..., subprocess.Popen[Any]]


def parse_request_counts(text: str) -> dict[tuple[str, str], float]:
    """(verb, resource) -> requests served, from the text of the server's /metrics."""
    counts: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels_text, value = line[len("apiserver_request_total{"):].rsplit("} ", 1)
        labels = dict(part.split("=", 1) for part in labels_text.split(","))
        key = (labels["verb"].strip('"'), labels["resource"].strip('"'))
        counts[key] = counts.get(key, 0.0) + float(value)
    return counts


class Api:
    """A keep-alive JSON client of one apiserver (HTTPS when given its CA), one connection per
    thread. With `netns` its sockets are opened inside that network namespace, so a server
    listening only there is reached without touching the machine's own namespace."""

    def __init__(self, host: str, port: int, token: str | None, ca: Path | None, *,
                 netns: str | None = None) -> None:
        self.host, self.port, self.token, self.netns = host, port, token, netns
        self.ctx = ssl.create_default_context(cafile=str(ca)) if ca else None
        self._local = threading.local()  # .conn: this thread's kept-alive connection
        self._opened: list[http.client.HTTPConnection] = []  # every thread's, for close()
        self._lock = threading.Lock()

    def connection(self, timeout: float = 30.0) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection
        if self.ctx is not None:
            conn = http.client.HTTPSConnection(self.host, self.port, context=self.ctx,
                                               timeout=timeout)
        else:
            conn = http.client.HTTPConnection(self.host, self.port, timeout=timeout)
        if self.netns is not None:
            address = (self.host, self.port)
            raw = netns.run_in_netns(netns.netns_path(self.netns),
                                     lambda: socket.create_connection(address, timeout))
            conn.sock = (self.ctx.wrap_socket(raw, server_hostname=self.host)
                         if self.ctx is not None else raw)
        return conn

    def headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        out = {"Accept": "application/json"}
        if self.token:
            out["Authorization"] = f"Bearer {self.token}"
        out.update(extra or {})
        return out

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json",
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, decoded JSON body; the text when it is not JSON; None when empty)."""
        data = None if body is None else json.dumps(body).encode()
        hdrs = self.headers(headers)
        if data is not None:
            hdrs["Content-Type"] = content_type
        for attempt in range(2):  # a kept-alive connection the server has closed: once more
            conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
            if conn is None or conn.sock is None:  # never opened, or closed since
                conn = self._local.conn = self.connection()
                with self._lock:
                    self._opened.append(conn)
            try:
                conn.request(method, path, body=data, headers=hdrs)
                resp = conn.getresponse()
                raw = resp.read()
                break
            except (http.client.HTTPException, ConnectionError, OSError):
                conn.close()
                self._local.conn = None
                if attempt:
                    raise
        text = raw.decode()
        if not text:
            return resp.status, None
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    def raw(self, method: str, path: str, data: bytes, content_type: str | None,
            timeout: float = 30.0) -> tuple[int, Any]:
        """One request with `data` as the body, sent as it is (hostile bodies: not JSON,
        too deep, too large, with any Content-Type or none), on a connection of its own;
        (status, decoded JSON body, or the text when it is not JSON)."""
        conn = self.connection(timeout)
        try:
            hdrs = self.headers()
            if content_type is not None:
                hdrs["Content-Type"] = content_type
            conn.request(method, path, body=data, headers=hdrs)
            resp = conn.getresponse()
            text = resp.read().decode(errors="replace")
        finally:
            conn.close()
        try:
            return resp.status, json.loads(text) if text else None
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

    def ok(self, method: str, path: str, body: Any = None,
           content_type: str = "application/json") -> Any:
        """The body of a request that must succeed (2xx)."""
        status, answer = self.request(method, path, body, content_type=content_type)
        assert status < 300, (method, path, status, answer)
        return answer

    def merge(self, path: str, body: Any) -> Any:
        """A merge patch that must succeed; the patched object."""
        return self.ok("PATCH", path, body, "application/merge-patch+json")

    def create(self, path: str, body: Any) -> Any:
        """A POST that must answer 201; the created object."""
        status, obj = self.post(path, body)
        assert status == 201, (status, obj)
        return obj

    def read(self, path: str) -> Any:
        """The object at `path`, or None when it cannot be read (404, ...)."""
        status, obj = self.get(path)
        return obj if status == 200 else None

    def watch(self, path: str, timeout: float = 10.0) -> Watch:
        return Watch(self, path, timeout)

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for conn in opened:
            conn.close()


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
        return dict(json.loads(line))

    def close(self) -> None:
        self.conn.close()


class Plain:
    """An independent async JSON client (aiohttp) for changes and ground truth."""

    def __init__(self, url: str, token: str | None, ca: Path) -> None:
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
            return parse_request_counts(await resp.text())


def _popen(argv: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    return subprocess.Popen(argv, start_new_session=True, **kwargs)


class Apiserver:
    """A `hexlane apiserver` process and how to reach it (see the module docstring)."""

    def __init__(self, data_dir: Path, *flags: str, listen: str = "127.0.0.1:0",
                 spawn: Spawn = _popen, netns: str | None = None) -> None:
        """`spawn(argv, stdout=, stderr=)` starts the process (`Topology.start` bound to a
        role, to run it in that namespace: then `netns` names it for the clients)."""
        self.data_dir, self.flags, self.listen = data_dir, flags, listen
        self.spawn, self.netns = spawn, netns
        self.kubeconfig = data_dir / "kubeconfig"
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[Any] | None = None

    def start(self, timeout: float = 30.0, *, same_address: bool = False) -> Apiserver:
        """Start the server and wait until it serves. Again after `stop()`: the same data
        directory (database, token, certificate), and with `same_address` the same port."""
        if same_address:
            self.listen = f"{self.host}:{self.port}"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        # The server writes its kubeconfig once listening: one from an earlier run must not
        # pass for readiness.
        self.kubeconfig.unlink(missing_ok=True)
        argv = [*HEXLANE, "apiserver", "--data-dir", str(self.data_dir),
                "--listen", self.listen, *self.flags]
        with open(self.log, "ab") as log:
            self.proc = self.spawn(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self.kubeconfig.exists():
            if self.proc.poll() is not None:
                raise RuntimeError(f"apiserver exited: {self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"apiserver did not write its kubeconfig in time: "
                                   f"{self.tail()}")
            time.sleep(0.05)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url: str = config["clusters"][0]["cluster"]["server"]
        host, _, port = self.url.split("://", 1)[1].rpartition(":")
        self.host, self.port = host, int(port)
        self.token: str | None = config["users"][0]["user"].get("token")
        self.ca = self.data_dir / "tls.crt"
        self.api = Api(host, self.port, self.token,
                       self.ca if self.url.startswith("https") else None, netns=self.netns)
        return self

    def tail(self) -> str:
        return self.log.read_text()[-3000:] if self.log.exists() else ""

    def stop(self) -> None:
        """SIGTERM, SIGKILL after 10 s."""
        if self.proc is not None:
            netns.stop_process(self.proc, timeout=10)
        self._close_clients()

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)
        self._close_clients()

    def _close_clients(self) -> None:
        if hasattr(self, "api"):
            self.api.close()

    def plain(self) -> Plain:
        return Plain(self.url, self.token, self.ca)

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        """The machine's kubectl against this server; its output (it must succeed)."""
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                              input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def metrics(self) -> dict[tuple[str, str], float]:
        """(verb, resource) -> requests served, from /metrics."""
        status, text = self.api.get("/metrics")
        assert status == 200
        return parse_request_counts(str(text))


class Apiservers:
    """Starts apiservers in directories below `base` (`apiservers(*flags, data_dir=None)`);
    as a context manager, stops every one it started on leaving, also after a failure."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.started: list[Apiserver] = []

    def __call__(self, *flags: str, data_dir: Path | None = None) -> Apiserver:
        server = Apiserver(data_dir or self.base / f"srv{len(self.started)}", *flags)
        self.started.append(server)
        return server.start()

    def __enter__(self) -> Apiservers:
        return self

    def __exit__(self, *exc: object) -> None:
        for server in self.started:
            server.stop()
