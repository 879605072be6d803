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

`KubeClient` makes every request through one `Transport` (`transport.py`: aiohttp, msgspec,
the rate limiter and metrics): JSON dicts in and out (`request`, `watch_lines`), paths from
`Kind.path` (`resources.py`). lightkube stays for what it is good at and costs nothing per
request: parsing kubeconfigs and naming the built-in kinds. Errors are `ApiError`s that say
which request failed and what the server answered, or `OSError`s (`TransportError`,
`TimeoutError`) when no answer came.
"""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import lightkube
import yaml
from lightkube.config.kubeconfig import SingleConfig
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import ConfigError
from prometheus_client import CollectorRegistry

from hexlane.config import Values
from hexlane.model.errors import InputError, Problem

from .ratelimit import ClientMetrics, RateLimiter
from .resources import kind_of
from .transport import (
    JSON,
    JSON_PATCH,
    MERGE_PATCH,
    ApiError,
    Credentials,
    Transport,
    TransportError,
)

__all__ = ["JSON", "JSON_PATCH", "MERGE_PATCH", "ApiError", "KubeClient", "TransportError",
           "load_client_config", "make_client", "override_server"]

SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
DEFAULT_KUBECONFIG = Path("~/.kube/config")


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


def _file_or_data(config: SingleConfig, file: str | None, data: str | None,
                  keep: list[Any]) -> str | None:
    """A kubeconfig file field as a path (relative to the kubeconfig), or its `-data` twin
    written to a temporary file kept alive in `keep` (ssl wants files for certificates)."""
    if data:
        f = tempfile.NamedTemporaryFile(prefix="hexlane-kubeconfig-")  # noqa: SIM115
        f.write(base64.b64decode(data))
        f.flush()
        keep.append(f)
        return f.name
    if file:
        return str(config.abs_file(file))
    return None


def ssl_context(config: SingleConfig) -> ssl.SSLContext | None:
    """The TLS context for the configured server: its CA (or the system's, or none when
    `insecure-skip-tls-verify`), and the user's client certificate. None for http://."""
    if urlsplit(config.cluster.server).scheme != "https":
        return None
    cluster, user = config.cluster, config.user or User()
    keep: list[Any] = []
    ca = _file_or_data(config, cluster.certificate_auth, cluster.certificate_auth_data, keep)
    if ca is not None:
        ctx = ssl.create_default_context(cafile=ca)
    else:
        ctx = ssl.create_default_context()
        if cluster.insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
    cert = _file_or_data(config, user.client_cert, user.client_cert_data, keep)
    if cert is not None:
        key = _file_or_data(config, user.client_key, user.client_key_data, keep)
        ctx.load_cert_chain(cert, key)
    for f in keep:
        f.close()
    return ctx


def credentials(user: User | None) -> Credentials:
    """The `Authorization` a kubeconfig user gives (lightkube's order: token file, token,
    exec plugin, basic auth)."""
    if user is None:
        return Credentials()
    if user.auth_provider:
        raise ConfigError("auth-provider is not supported; use an exec plugin or a token")
    if user.token_file is not None:
        return Credentials(token_file=user.token_file)
    if user.token is not None:
        return Credentials(token=user.token)
    if user.exec:
        if user.exec.apiVersion not in ("client.authentication.k8s.io/v1alpha1",
                                        "client.authentication.k8s.io/v1beta1",
                                        "client.authentication.k8s.io/v1"):
            raise ConfigError(f"auth exec apiVersion {user.exec.apiVersion} not supported")
        env = {v.name: v.value for v in user.exec.env or []}
        return Credentials(exec_command=[user.exec.command, *(user.exec.args or [])],
                           exec_env=env)
    return Credentials(username=user.username, password=user.password)


class KubeClient:
    """One API server's client: every request through one `Transport` (JSON dicts)."""

    def __init__(self, config: SingleConfig, limiter: RateLimiter,
                 metrics: ClientMetrics | None = None, *, timeout: float = 30.0) -> None:
        self.config = config
        self.limiter = limiter
        self.metrics = metrics
        self.transport = Transport(config.cluster.server, ssl_context(config),
                                   credentials(config.user), limiter, metrics, timeout=timeout)

    @property
    def server(self) -> str:
        return str(self.config.cluster.server)

    async def request(self, method: str, path: str, *, params: Mapping[str, str] | None = None,
                      body: Any = None, content_type: str = JSON) -> dict[str, Any]:
        """One JSON request; the decoded answer, or `ApiError` for an error status."""
        return await self.transport.request(method, path, params=params, body=body,
                                            content_type=content_type)

    # -- by kind: the paths come from `Kind.path`, never built by hand ------------------------

    async def get(self, kind: Any, name: str, namespace: str | None = None) -> dict[str, Any]:
        return await self.request("GET", kind_of(kind).path(namespace, name))

    async def list(self, kind: Any, namespace: str | None = None, *,
                   params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Every object of a kind (all namespaces without `namespace`), one request."""
        answer = await self.request("GET", kind_of(kind).path(namespace), params=params)
        return list(answer.get("items") or [])

    async def create(self, kind: Any, body: Any, namespace: str | None = None,
                     ) -> dict[str, Any]:
        return await self.request("POST", kind_of(kind).path(namespace), body=body)

    async def replace(self, kind: Any, name: str, body: Any, namespace: str | None = None,
                      *, subresource: str | None = None) -> dict[str, Any]:
        """PUT (a 409 `ApiError` when the body's resourceVersion is not current)."""
        return await self.request("PUT", kind_of(kind).path(namespace, name, subresource),
                                  body=body)

    async def patch(self, kind: Any, name: str, patch: Any, namespace: str | None = None, *,
                    subresource: str | None = None, content_type: str = MERGE_PATCH,
                    ) -> dict[str, Any]:
        return await self.request("PATCH", kind_of(kind).path(namespace, name, subresource),
                                  body=patch, content_type=content_type)

    async def delete(self, kind: Any, name: str, namespace: str | None = None,
                     ) -> dict[str, Any]:
        return await self.request("DELETE", kind_of(kind).path(namespace, name))

    async def version(self) -> dict[str, Any]:
        """The server's `/version` (what `kubectl version` shows)."""
        return await self.request("GET", "/version")

    async def text(self, path: str) -> str:
        """A GET answered with text (the apiserver's `/metrics`)."""
        return await self.transport.text(path)

    @asynccontextmanager
    async def watch_lines(self, path: str, params: Mapping[str, str],
                          ) -> AsyncIterator[AsyncIterator[bytes]]:
        """A watch stream's lines (one JSON event each); `ApiError` if it does not open."""
        async with self.transport.stream(path, {**params, "watch": "true"}) as lines:
            yield lines

    async def aclose(self) -> None:
        await self.transport.aclose()

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


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
