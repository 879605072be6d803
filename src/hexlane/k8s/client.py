"""Getting a configured, rate-limited client: kubeconfig, in-cluster, `k8sServiceHost/Port`.

`make_client(values, kubeconfig)` is the one way a daemon gets its client:

1. credentials and server from, in order: the `--kubeconfig` file given, the first existing
   file of `$KUBECONFIG`, the in-cluster service account (token, CA and
   `KUBERNETES_SERVICE_HOST/PORT`), `~/.kube/config`;
2. `k8sServiceHost`/`k8sServicePort` from the values, when set, replace the server's address
   (keeping scheme and credentials) — Cilium's agent does the same, which is what lets it
   reach the API through k3s's or Talos's node-local proxy before kube-proxy exists;
3. a token bucket from `k8sClientRateLimit.qps/burst` (the operator's own pair for
   `component="operator"`) in front of every request, counted in `ClientMetrics`.

`KubeClient` carries a lightkube `AsyncClient` (`.lightkube`, typed objects) and a raw JSON
face (`request`, `watch_lines`) that informers, status writers and the elector use; both
share one transport, so both pass the rate limiter. Errors from the raw face are `ApiError`s
that say which request failed and what the server answered.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
import lightkube
import yaml
from lightkube.config import client_adapter
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import ConfigError
from prometheus_client import CollectorRegistry

from hexlane.config import Values
from hexlane.model.errors import InputError, Problem

from .ratelimit import ClientMetrics, RateLimitedTransport, RateLimiter

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")
JSON = "application/json"
MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


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


def _kubeconfig_problem(message: str, file: str | None, path: str = "") -> InputError:
    return InputError(Problem(message, path=path, file=file or ""))


def _from_file(path: Path, flag: str) -> SingleConfig:
    try:
        config = lightkube.KubeConfig.from_file(path).get()
    except ConfigError as e:
        raise _kubeconfig_problem(str(e), str(path), flag) from e
    except (OSError, ValueError, KeyError, TypeError, AttributeError, yaml.YAMLError) as e:
        raise _kubeconfig_problem(f"not a readable kubeconfig: {e}", str(path), flag) from e
    if config is None:
        raise _kubeconfig_problem("no current-context", str(path), "current-context")
    return config


def load_client_config(values: Values | None, kubeconfig: str | os.PathLike[str] | None, *,
                       environ: Mapping[str, str] | None = None,
                       service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> SingleConfig:
    """The server and credentials to use (see the module docstring for the order).

    Raises `InputError` naming the file and field when no usable configuration exists."""
    env = os.environ if environ is None else environ
    config: SingleConfig | None = None
    if kubeconfig:
        config = _from_file(Path(kubeconfig).expanduser(), "--kubeconfig")
    elif env.get("KUBECONFIG"):
        candidates = [Path(p).expanduser() for p in env["KUBECONFIG"].split(os.pathsep) if p]
        existing = [p for p in candidates if p.is_file()]
        if not existing:
            raise _kubeconfig_problem("no file of $KUBECONFIG exists", env["KUBECONFIG"],
                                      "KUBECONFIG")
        config = _from_file(existing[0], "KUBECONFIG")
    elif (service_account_dir / "token").is_file() and env.get("KUBERNETES_SERVICE_HOST"):
        config = _in_cluster(env, service_account_dir)
    elif DEFAULT_KUBECONFIG.expanduser().is_file():
        config = _from_file(DEFAULT_KUBECONFIG.expanduser(), "--kubeconfig")
    else:
        raise _kubeconfig_problem(
            "no Kubernetes configuration: give --kubeconfig, set $KUBECONFIG, or run in a "
            "pod with a service account", None, "--kubeconfig")
    if values is not None and values.k8s_service_host:
        config = override_server(config, values.k8s_service_host, values.k8s_service_port)
    return config


def _in_cluster(env: Mapping[str, str], account: Path) -> SingleConfig:
    host = env["KUBERNETES_SERVICE_HOST"]
    port = env.get("KUBERNETES_SERVICE_PORT") or "443"
    if ":" in host:
        host = f"[{host}]"
    namespace_file = account / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    token_file = str(account / "token")
    cluster = lightkube.KubeConfig.from_one(
        cluster=Cluster(server=f"https://{host}:{port}",
                                       certificate_auth=str(account / "ca.crt")),
        # The token file is re-read on 401: the kubelet rotates projected tokens.
        user=User(token_file=token_file),
        namespace=namespace)
    single = cluster.get()
    assert single is not None
    return single


def override_server(config: SingleConfig, host: str, port: int | None) -> SingleConfig:
    """`config` talking to `host:port` instead (scheme and credentials kept; no port given:
    the configured server's port)."""
    url = urlsplit(config.cluster.server)
    if port is None:
        port = url.port or (443 if url.scheme == "https" else 80)
    netloc = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    server = urlunsplit((url.scheme or "https", netloc, url.path, "", ""))
    cluster = Cluster(
        server=server, certificate_auth=config.cluster.certificate_auth,
        certificate_auth_data=config.cluster.certificate_auth_data,
        insecure=config.cluster.insecure)
    return config._replace(cluster=cluster)


class KubeClient:
    """One API connection: lightkube for typed objects, raw JSON for the layer's own use."""

    def __init__(self, config: SingleConfig, limiter: RateLimiter,
                 metrics: ClientMetrics | None = None, *, timeout: float = 30.0) -> None:
        # lightkube insists on a user entry; a kubeconfig without one means no credentials.
        config = config._replace(user=config.user or User())
        assert config.user is not None
        self.config = config
        self.limiter = limiter
        self.metrics = metrics
        verify = client_adapter.verify_cluster(config.cluster, config.user, config.abs_file)
        self.transport = RateLimitedTransport(httpx2.AsyncHTTPTransport(verify=verify),
                                              limiter, metrics)
        # lightkube annotates `transport` as the sync base class but hands it to
        # httpx2.AsyncClient, which wants exactly this async one.
        params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(timeout),
                                                 transport=self.transport)  # type: ignore[arg-type]
        self.http: httpx2.AsyncClient = client_adapter.AsyncClient(config, params)
        self.lightkube = lightkube.AsyncClient(config, timeout=httpx2.Timeout(timeout),
                                               transport=self.transport)

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = JSON) -> dict[str, Any]:
        """One JSON request; the decoded answer, or `ApiError` for an error status."""
        headers = {"Accept": JSON}
        content = None
        if body is not None:
            content = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        # params=None, not {}: an empty mapping would replace a query written into `path`.
        resp = await self.http.request(method, path, params=dict(params) if params else None,
                                       content=content, headers=headers)
        return _decode(method, path, resp.status_code, resp.content)

    @asynccontextmanager
    async def watch_lines(self, path: str, params: Mapping[str, str],
                          ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A watch stream's lines (one JSON event each); `ApiError` if it does not open."""
        query = {**params, "watch": "true"}
        request = self.http.build_request("GET", path, params=query, headers={"Accept": JSON},
                                          timeout=httpx2.Timeout(self.http.timeout.connect,
                                                                 read=None))
        resp = await self.http.send(request, stream=True)
        try:
            if resp.status_code != 200:
                _decode("GET", path, resp.status_code, await resp.aread())
            yield _lines(resp)
        finally:
            await resp.aclose()

    async def aclose(self) -> None:
        await self.http.aclose()
        await self.lightkube.close()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def _lines(resp: httpx2.Response) -> AsyncIterator[bytes]:
    async for line in resp.aiter_lines():
        if line.strip():
            yield line.encode()


def _decode(method: str, path: str, code: int, content: bytes) -> dict[str, Any]:
    try:
        data = json.loads(content) if content else {}
    except ValueError:
        data = None
    if 200 <= code < 300 and isinstance(data, dict):
        return data
    if isinstance(data, dict) and data.get("kind") == "Status":
        raise ApiError.from_status(method, path, data, code)
    text = content[:200].decode(errors="replace")
    raise ApiError(method, path, code, "Unexpected" if code < 300 else "Failure",
                   f"unexpected answer: {text!r}")


def make_client(values: Values | None, kubeconfig: str | os.PathLike[str] | None = None, *,
                component: str = "agent", registry: CollectorRegistry | None = None,
                environ: Mapping[str, str] | None = None,
                service_account_dir: Path = SERVICE_ACCOUNT_DIR) -> KubeClient:
    """A client configured from the values and kubeconfig (the module docstring says how).

    `component` picks the rate limit: "agent" uses `k8sClientRateLimit.qps/burst`,
    "operator" `k8sClientRateLimit.operator.qps/burst`. Metrics go to `registry` (default:
    the process's registry). Without values, client-go's default 5 qps / burst 10 applies."""
    config = load_client_config(values, kubeconfig, environ=environ,
                                service_account_dir=service_account_dir)
    if values is None:
        qps, burst = 5.0, 10
    elif component == "operator":
        rate = values.k8s_client_rate_limit
        qps, burst = rate.operator_qps, rate.operator_burst
    elif component == "agent":
        qps, burst = values.k8s_client_rate_limit.qps, values.k8s_client_rate_limit.burst
    else:
        raise ValueError(f"component must be 'agent' or 'operator', got {component!r}")
    metrics = ClientMetrics.for_registry(registry)
    try:
        return KubeClient(config, RateLimiter(qps, burst, metrics=metrics), metrics)
    except (OSError, ssl.SSLError, ConfigError) as e:
        # A missing or unreadable CA or client certificate is a configuration problem.
        where = str(config.fname or config.cluster.certificate_auth or "")
        raise _kubeconfig_problem(f"cannot set up TLS for {config.cluster.server}: {e}",
                                  where, "certificate-authority") from e
