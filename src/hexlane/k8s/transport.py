"""The one HTTP transport every API request of every daemon goes through (aiohttp, msgspec).

Measured first (issue 21): with httpx2/httpcore2/anyio about 80% of the operator's CPU during
an LB-IPAM cold start went to building, sending and reading each status PATCH over TLS.
This transport is what is left when that machinery goes:

- one `aiohttp.ClientSession` per client, created on first use in the running loop, with a
  pool of persistent (keep-alive) TLS connections (no limit on their number: watches hold
  one each, writers borrow one per request in flight);
- bodies encoded and answers decoded by msgspec's JSON codec (`encode`, `decode`);
- the client-side rate limiter (`RateLimiter`) awaited before every request, watch opens
  included, and every answered request counted in `ClientMetrics.api_calls`;
- credentials from the kubeconfig's user: a bearer token, a token file re-read after a 401
  (the kubelet rotates projected tokens), an exec plugin's token (run again after a 401),
  basic auth; client certificates live in the TLS context;
- errors: an answer that is not 2xx JSON is an `ApiError` (the server's `Status` when it
  sent one: `.code`, `.reason`, `.not_found`, `.conflict`, `.gone`); a connection that fails
  or breaks is a `TransportError`, an `OSError` (as a refused connection always was), and
  a request with no answer in time a `TimeoutError` — so callers catch `(ApiError, OSError)`.

Watches: `stream(path, params)` yields the answer's lines (one JSON event each) as they
arrive, with no read timeout (the server ends a watch after its `timeoutSeconds`).
"""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import msgspec

from .ratelimit import ClientMetrics, RateLimiter

JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


def encode(obj: Any) -> bytes:
    """JSON bytes of `obj` (msgspec: dicts, lists, str, numbers, bool, None, datetimes)."""
    return _encoder.encode(obj)


def decode(data: bytes | str) -> Any:
    """The JSON value in `data`; `ValueError` when it is not JSON."""
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError as e:
        raise ValueError(str(e)) from e


class ApiError(Exception):
    """The API answered a request with an error `Status` (or a connection gave none)."""

    def __init__(self, method: str, path: str, code: int, reason: str, message: str,
                 status: Mapping[str, Any] | None = None) -> None:
        super().__init__(f"{method} {path}: {code} {reason}: {message}")
        self.method, self.path, self.code = method, path, code
        self.reason, self.message = reason, message
        self.status = dict(status or {})

    @property
    def not_found(self) -> bool:
        return self.code == 404

    @property
    def conflict(self) -> bool:
        return self.code == 409

    @property
    def gone(self) -> bool:
        return self.code == 410

    @classmethod
    def from_status(cls, method: str, path: str, status: Mapping[str, Any],
                    code: int | None = None) -> ApiError:
        return cls(method, path, int(status.get("code") or code or 0),
                   str(status.get("reason") or ""), str(status.get("message") or ""), status)


class TransportError(ConnectionError):
    """A request that got no answer: the connection failed, broke or was closed."""

    def __init__(self, method: str, path: str, cause: BaseException) -> None:
        super().__init__(f"{method} {path}: {type(cause).__name__}: {cause}")
        self.method, self.path = method, path


def answer(method: str, path: str, code: int, content: bytes) -> dict[str, Any]:
    """The decoded JSON object of a 2xx answer; `ApiError` for anything else."""
    try:
        data = _decoder.decode(content) if content else {}
    except msgspec.DecodeError:
        data = None
    if 200 <= code < 300 and isinstance(data, dict):
        return data
    if isinstance(data, dict) and data.get("kind") == "Status":
        raise ApiError.from_status(method, path, data, code)
    text = content[:200].decode(errors="replace")
    raise ApiError(method, path, code, "Unexpected" if code < 300 else "Failure",
                   f"unexpected answer: {text!r}")


class Credentials:
    """The `Authorization` header for a kubeconfig user (None: no credentials)."""

    def __init__(self, *, token: str | None = None, token_file: str | None = None,
                 exec_command: list[str] | None = None, exec_env: Mapping[str, str] | None = None,
                 username: str | None = None, password: str | None = None) -> None:
        self.token, self.token_file = token, token_file
        self.exec_command, self.exec_env = exec_command, dict(exec_env or {})
        self._basic = None
        if username and password:
            pair = base64.b64encode(f"{username}:{password}".encode()).decode()
            self._basic = f"Basic {pair}"
        self._header: str | None = None

    async def header(self) -> str | None:
        if self._header is None:
            self._header = await self._fetch()
        return self._header

    async def renew(self) -> bool:
        """After a 401: fetch the credentials again; whether one retry is worth it."""
        if self.token_file is None and self.exec_command is None:
            return False
        old, self._header = self._header, None
        return await self.header() != old

    async def _fetch(self) -> str | None:
        if self.token_file is not None:
            try:
                return "Bearer " + Path(self.token_file).read_text().strip()
            except OSError as e:
                raise TransportError("AUTH", self.token_file, e) from e
        if self.exec_command is not None:
            return "Bearer " + await self._exec()
        if self.token is not None:
            return "Bearer " + self.token
        return self._basic

    async def _exec(self) -> str:
        assert self.exec_command is not None
        proc = await asyncio.create_subprocess_exec(
            *self.exec_command, env={**os.environ, **self.exec_env},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await proc.communicate()
        command = self.exec_command[0]
        if proc.returncode != 0:
            raise TransportError("AUTH", command, RuntimeError(
                f"exited {proc.returncode}: {err.decode(errors='replace').strip()}"))
        try:
            return str(decode(out)["status"]["token"])
        except (ValueError, KeyError, TypeError) as e:
            raise TransportError("AUTH", command,
                                 ValueError(f"no status.token in its ExecCredential: {e}")) from e


class Transport:
    """JSON requests and watch streams to one API server (see the module docstring)."""

    def __init__(self, server: str, ssl_context: ssl.SSLContext | None,
                 credentials: Credentials, limiter: RateLimiter,
                 metrics: ClientMetrics | None = None, *, timeout: float = 30.0) -> None:
        self.server = server.rstrip("/")
        self.ssl_context = ssl_context
        self.credentials = credentials
        self.limiter = limiter
        self.metrics = metrics
        self.timeout = timeout
        self._request_timeout = aiohttp.ClientTimeout(total=timeout)
        # A watch has no read deadline: the server ends it after its timeoutSeconds.
        self._watch_timeout = aiohttp.ClientTimeout(total=None, connect=timeout,
                                                    sock_connect=timeout)
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if self._session is None or self._loop is not loop or self._session.closed:
            # Created in the loop that uses it (a client may outlive one asyncio.run).
            connector = aiohttp.TCPConnector(ssl=self.ssl_context or False, limit=0)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=True)
            self._loop = loop
        return self._session

    def url(self, path: str, params: Mapping[str, str] | None = None) -> str:
        url = self.server + path
        if params:
            url += ("&" if "?" in path else "?") + urlencode(params)
        return url

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = {"Accept": JSON}
        if content_type is not None:
            headers["Content-Type"] = content_type
        auth = await self.credentials.header()
        if auth is not None:
            headers["Authorization"] = auth
        return headers

    def _count(self, method: str, code: int) -> None:
        if self.metrics is not None:
            self.metrics.api_calls.labels(method, str(code)).inc()

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = JSON) -> dict[str, Any]:
        """One JSON request; the decoded answer, or `ApiError` for an error status."""
        data = None if body is None else encode(body)
        url = self.url(path, params)
        session = self._get_session()
        for attempt in range(2):
            await self.limiter.wait(method)
            headers = await self._headers(content_type if data is not None else None)
            try:
                async with session.request(method, url, data=data, headers=headers,
                                           timeout=self._request_timeout) as resp:
                    code = resp.status
                    content = await resp.read()
            except aiohttp.ClientError as e:
                raise TransportError(method, path, e) from e
            except TimeoutError as e:
                raise TimeoutError(f"{method} {path}: no answer in {self.timeout:g}s") from e
            self._count(method, code)
            if code == 401 and attempt == 0 and await self.credentials.renew():
                continue
            break
        return answer(method, path, code, content)

    async def text(self, path: str) -> str:
        """A GET whose answer is text, not JSON (`/metrics`); `ApiError` unless 2xx."""
        session = self._get_session()
        await self.limiter.wait("GET")
        headers = await self._headers(None)
        headers["Accept"] = "text/plain, */*"
        try:
            async with session.get(self.url(path), headers=headers,
                                   timeout=self._request_timeout) as resp:
                code, content = resp.status, await resp.read()
        except aiohttp.ClientError as e:
            raise TransportError("GET", path, e) from e
        except TimeoutError as e:
            raise TimeoutError(f"GET {path}: no answer in {self.timeout:g}s") from e
        self._count("GET", code)
        if not 200 <= code < 300:
            answer("GET", path, code, content)  # raises
        return content.decode(errors="replace")

    @asynccontextmanager
    async def stream(self, path: str, params: Mapping[str, str] | None = None,
                     ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A streamed GET's non-empty lines; `ApiError` if it does not open with 200."""
        url = self.url(path, params)
        session = self._get_session()
        resp: aiohttp.ClientResponse | None = None
        for attempt in range(2):
            await self.limiter.wait("GET")
            headers = await self._headers(None)
            try:
                resp = await session.get(url, headers=headers, timeout=self._watch_timeout)
            except aiohttp.ClientError as e:
                raise TransportError("GET", path, e) from e
            except TimeoutError as e:
                raise TimeoutError(f"GET {path}: no answer in {self.timeout:g}s") from e
            self._count("GET", resp.status)
            if resp.status == 401 and attempt == 0 and await self.credentials.renew():
                resp.release()
                continue
            break
        assert resp is not None
        try:
            if resp.status != 200:
                answer("GET", path, resp.status, await resp.read())
            yield _lines(resp, path)
        finally:
            if resp.content.at_eof():
                resp.release()  # read to its end: the connection goes back to the pool
            else:
                resp.close()  # abandoned mid-stream: the connection cannot be reused

    async def aclose(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
        self._session = None


async def _lines(resp: aiohttp.ClientResponse, path: str) -> AsyncIterator[bytes]:
    """Lines of any length (aiohttp's own line reader refuses lines over its buffer)."""
    pending = b""
    try:
        async for chunk in resp.content.iter_any():
            pending += chunk
            if b"\n" not in chunk:
                continue
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip():
                    yield line
    except aiohttp.ClientError as e:
        raise TransportError("GET", path, e) from e
    if pending.strip():
        yield pending
