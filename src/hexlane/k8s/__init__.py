"""The one Kubernetes client layer: client config, informers, status writers, leases, rate limit.

Every daemon talks to the API through this package, and the same code runs against the
embedded `hexlane apiserver` and a real cluster: plain REST (list, watch, GET, POST, PUT,
merge patch); no server-side apply, no protobuf.

Getting a client (`client.py`)::

    values, problems = hexlane.config.load_values(["values.yaml"])
    client = make_client(values, args.kubeconfig)             # component="operator" too
    async with client:
        ns = await client.get(Namespace, "default")            # plain JSON dicts
        nodes = await client.list(Node)
        await client.patch(Service, "web", {"metadata": {...}}, "default")
        raw = await client.request("GET", kind_of(Node).path())  # the same, by hand

Every request goes through one transport (`transport.py`: aiohttp with pooled keep-alive
TLS connections, msgspec JSON, the rate limiter and client metrics); paths come from
`Kind.path`, never built by hand. lightkube only parses kubeconfigs and names the built-in
kinds. Configuration comes from `--kubeconfig`, else `$KUBECONFIG`, else the in-cluster
service account, else ~/.kube/config; `k8sServiceHost`/`k8sServicePort` then replace the
server address and keep the credentials, as Cilium's agent does. Problems are `InputError`s
naming the file and field. API errors are `ApiError` (`.code`, `.reason`, `.not_found`,
`.conflict`, `.gone`); no answer at all is an `OSError` (`TransportError`, `TimeoutError`).

Informers (`informer.py`, `cache.py`)::

    services = Informer(client, Service, indexers={"app": by_label("app")})
    nodes = Informer(client, Node, field_selector="metadata.name=" + node_name)
    services.add_handler(on_add=..., on_update=..., on_delete=...)   # or:
    queue = services.key_queue()                                     # "ns/name" keys
    services.start(); await services.wait_synced()
    svc = services.cache.get_object("web", "default")
    web = services.cache.by_index("app", "web")

An informer LISTs once, then WATCHes from the list's resourceVersion with bookmarks,
resumes from the last resourceVersion after a timeout or a broken connection (backoff 250 ms
doubling to 5 min), and LISTs again only after 410 Gone. Cached objects are the API's JSON
as dicts, read-only; `hexlane.model.parse_object` gives typed views. cilium.io kinds are in
`resources.py` (`CiliumLoadBalancerIPPool`, `CiliumL2AnnouncementPolicy`, ...), built-ins
are lightkube's classes (re-exported there).

Status writers (`statuswriter.py`): `patch_status(client, Kind, name, {...})` merge-patches
`/status`; `update_status(client, Kind, name, change, current=cached)` PUTs `/status` with
the resourceVersion and retries on 409 by re-reading and re-applying `change`.

Leader election (`election.py` pure, `elector.py` asyncio): `LeaderElector(client, name,
namespace, identity, LeaseTiming.sanitised(15, 5, 2), on_started_leading=...,
on_stopped_leading=...)` on a coordination.k8s.io/v1 Lease, client-go's rules, released on
stop.

Rate limiting (`ratelimit.py`): every request of a client waits for a token bucket of
`k8sClientRateLimit.qps/burst` (the operator: `k8sClientRateLimit.operator.*`). Inspect it
where the daemon serves its metrics (agent :9962, operator :9963), or in a test with
`registry.get_sample_value(...)` on the registry passed as `make_client(registry=...)`:

- `hexlane_k8s_client_rate_limiter_wait_seconds{method}` — histogram of every request's
  wait (`_sum` / `_count` give the mean; high buckets mean qps is too low for the load);
- `hexlane_k8s_client_rate_limiter_throttled_requests_total{method}` — requests that waited;
- `hexlane_k8s_client_api_calls_total{method,return_code}` — requests answered.

Retries (`backoff.py`): `Backoff()` gives 250 ms doubling to 5 minutes (`jitter=` to spread
many retriers); the caller sleeps `next_delay()` and calls `reset()` on success.

Controllers (`controller.py`, Cilium's `pkg/controller`): `Controller(name, func,
interval=10.0)` runs `func` when `trigger()`ed (an informer handler) and every interval, and
retries a failure with backoff, keeping a health record (`status()`); the agent's and the
operator's loops are all controllers.

What every daemon runs on (`runtime.py`): `BackgroundTask` (one task started and stopped;
informers, the elector and controllers run in one), `stop_on_signals()`, `log_to_stderr()`,
`serve_metrics(registry, addr)`.
"""

from hexlane.k8s.backoff import Backoff
from hexlane.k8s.cache import Cache, by_field, by_label, object_key, split_key
from hexlane.k8s.client import (
    ApiError,
    KubeClient,
    TransportError,
    load_client_config,
    make_client,
    override_server,
)
from hexlane.k8s.controller import Controller
from hexlane.k8s.election import LeaseRecord, LeaseTiming
from hexlane.k8s.elector import LeaderElector
from hexlane.k8s.informer import Informer, KeyQueue
from hexlane.k8s.ratelimit import ClientMetrics, RateLimiter, TokenBucket
from hexlane.k8s.resources import Kind, kind_of
from hexlane.k8s.statuswriter import patch_status, update_status

__all__ = [
    "ApiError",
    "Backoff",
    "Cache",
    "ClientMetrics",
    "Controller",
    "Informer",
    "KeyQueue",
    "Kind",
    "KubeClient",
    "LeaderElector",
    "LeaseRecord",
    "LeaseTiming",
    "RateLimiter",
    "TokenBucket",
    "TransportError",
    "by_field",
    "by_label",
    "kind_of",
    "load_client_config",
    "make_client",
    "object_key",
    "override_server",
    "patch_status",
    "split_key",
    "update_status",
]
