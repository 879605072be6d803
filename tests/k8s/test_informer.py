"""Informers against the real `hexlane apiserver` process, over HTTPS, through a TCP proxy
that breaks connections on demand (the client reaches the proxy through `k8sServiceHost` /
`k8sServicePort`, as an agent reaches k3s's node-local proxy):

- property: after any random sequence of creates, PUT updates, merge patches, label changes
  and deletes (made with a separate aiohttp client), with the watch connection cut at random
  points, the informer's cache equals the server's state, the add/update/delete callbacks
  replayed in order give the same state (nothing missed, nothing twice), and the informer
  LISTed exactly once — every cut was resumed from the last resourceVersion;
- a watch whose resourceVersion fell out of the server's history (`--watch-history 5`) gets
  410 and the informer relists exactly then, once, converging again;
- BOOKMARKs move a quiet informer's resourceVersion on, so after a cut it resumes without a
  410 even though the history moved past its last event;
- cluster-scoped cilium.io kinds and all-namespace label-selected watches work, extra
  indexes answer, a reconciler's key queue sees each changed key (deduplicated), and a
  handler that raises does not stop the cache from following the server;
- a list comes in pages, and `on_list_page` sees each page as it arrives (every object once,
  before the informer is synced);
- an apiserver restarted on its data directory is followed (retries with backoff, then a
  resume or a relist, whichever its history allows).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from k8s_helpers import Proxy
from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver, Apiservers, Plain
from hexlane.config import load_values
from hexlane.k8s import informer as informer_module
from hexlane.k8s.backoff import Backoff
from hexlane.k8s.cache import by_field, by_label, object_key, resource_version
from hexlane.k8s.client import KubeClient, make_client
from hexlane.k8s.informer import Informer
from hexlane.k8s.resources import CiliumLoadBalancerIPPool, ConfigMap, Service

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

NAMES = ("a", "b", "c", "d")
WRITE = st.tuples(st.sampled_from(("create", "update", "patch", "label", "delete")),
                  st.sampled_from(NAMES), st.integers(0, 9))
STEP = st.one_of(WRITE, st.tuples(st.just("cut"), st.just(""), st.just(0)),
                 st.tuples(st.just("pause"), st.just(""), st.integers(1, 30)))


@pytest.fixture(scope="module")
def short_history_server(apiservers: Apiservers) -> Apiserver:
    """An apiserver that keeps only 5 changes for resuming watches (older: 410 Gone)."""
    return apiservers("--bookmark-interval", "0.5", "--watch-history", "5")


def client_via(apiserver: Apiserver, proxy: Proxy) -> KubeClient:
    values, problems = load_values([], [
        "k8sServiceHost=127.0.0.1", f"k8sServicePort={proxy.port}",
        "k8sClientRateLimit.qps=1000", "k8sClientRateLimit.burst=1000"])
    assert not [p for p in problems if p.severity == "error"], problems
    client = make_client(values, apiserver.kubeconfig, registry=CollectorRegistry())
    assert client.server == f"https://127.0.0.1:{proxy.port}"
    return client


async def new_namespace(plain: Plain) -> str:
    name = f"k8s-{uuid.uuid4().hex[:8]}"
    status, body = await plain.call("POST", "/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name


async def write(plain: Plain, path: str, op: str, name: str, value: int) -> None:
    """One change; operations on absent (or present, for create) objects are no-ops."""
    if op == "create":
        await plain.call("POST", path, {"metadata": {"name": name, "labels": {"app": "x"}},
                                        "data": {"v": str(value)}})
    elif op == "update":
        status, obj = await plain.call("GET", f"{path}/{name}")
        if status == 200:
            obj["data"] = {"v": str(value), "put": "yes"}
            await plain.call("PUT", f"{path}/{name}", obj)
    elif op == "patch":
        await plain.call("PATCH", f"{path}/{name}", {"data": {"p": str(value)}},
                         "application/merge-patch+json")
    elif op == "label":
        await plain.call("PATCH", f"{path}/{name}", {"metadata": {"labels": {
            "app": f"app{value % 3}"}}}, "application/merge-patch+json")
    elif op == "delete":
        await plain.call("DELETE", f"{path}/{name}")
    else:
        raise AssertionError(op)


async def truth(plain: Plain, path: str, api_version: str, kind: str) -> dict[str, Any]:
    status, listing = await plain.call("GET", path)
    assert status == 200, listing
    out = {}
    for item in listing["items"]:
        item.setdefault("apiVersion", api_version)
        item.setdefault("kind", kind)
        out[object_key(item)] = item
    return out


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[Informer]:
    """The informer started, and stopped on leaving."""
    informer.start()
    try:
        yield informer
    finally:
        await informer.stop()


async def eventually(check: Callable[[], bool], timeout: float = 15.0,
                     what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


class Replay:
    """The state the informer's callbacks describe, checked as they come."""

    def __init__(self, informer: Informer) -> None:
        self.state: dict[str, Any] = {}
        self.calls = 0
        informer.add_handler(self.add, self.update, self.delete)

    def add(self, obj: dict[str, Any]) -> None:
        key = object_key(obj)
        assert key not in self.state, f"add of {key} which is already there"
        self.state[key] = obj
        self.calls += 1

    def update(self, old: dict[str, Any], new: dict[str, Any]) -> None:
        key = object_key(new)
        assert self.state[key] is old, f"update of {key} from a state not seen"
        assert int(resource_version(new)) > int(resource_version(old))
        self.state[key] = new
        self.calls += 1

    def delete(self, obj: dict[str, Any]) -> None:
        assert self.state.pop(object_key(obj), None) is not None
        self.calls += 1


async def with_everything(apiserver: Apiserver,
                          body: Callable[[Plain, Proxy, KubeClient], Awaitable[None]]) -> None:
    async with apiserver.plain() as plain, Proxy(apiserver.host, apiserver.port) as proxy:
        client = client_via(apiserver, proxy)
        try:
            await body(plain, proxy, client)
        finally:
            await client.aclose()


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(before=st.lists(WRITE, max_size=6), steps=st.lists(STEP, max_size=24))
def test_cache_equals_server_after_random_changes_and_cuts(
        apiserver: Apiserver, before: list[tuple[str, str, int]],
        steps: list[tuple[str, str, int]]) -> None:
    async def body(plain: Plain, proxy: Proxy, client: KubeClient) -> None:
        ns = await new_namespace(plain)
        path = f"/api/v1/namespaces/{ns}/configmaps"
        for op in before:
            await write(plain, path, *op)
        lists_before = (await plain.metrics()).get(("list", "configmaps"), 0.0)
        informer = Informer(client, ConfigMap, namespace=ns,
                            indexers={"app": by_label("app")},
                            backoff=Backoff(initial=0.02, maximum=0.2))
        replay = Replay(informer)
        async with running(informer):
            await informer.wait_synced(10)
            for op, name, value in steps:
                if op == "cut":
                    proxy.cut()
                elif op == "pause":
                    await asyncio.sleep(value / 1000)
                else:
                    await write(plain, path, op, name, value)
            expected = await truth(plain, path, "v1", "ConfigMap")
            await eventually(lambda: {k: informer.cache.get(k) for k in informer.cache}
                             == expected, what="the cache to equal the server")
            assert replay.state == expected
            for app in ("x", "app0", "app1", "app2"):
                assert sorted(object_key(o) for o in informer.cache.by_index("app", app)) == \
                    sorted(k for k, o in expected.items() if o["metadata"]["labels"].get(
                        "app") == app)
            lists = (await plain.metrics()).get(("list", "configmaps"), 0.0) - lists_before
            # One list by the informer, one by `truth` above: every cut was a resume.
            assert lists == 2, (lists, informer.stats)
            assert informer.stats.lists == 1 and informer.stats.expired == 0

    asyncio.run(with_everything(apiserver, body))


def test_relists_exactly_once_after_410(short_history_server: Apiserver) -> None:
    async def body(plain: Plain, proxy: Proxy, client: KubeClient) -> None:
        ns = await new_namespace(plain)
        path = f"/api/v1/namespaces/{ns}/configmaps"
        await write(plain, path, "create", "a", 1)
        informer = Informer(client, ConfigMap, namespace=ns,
                            backoff=Backoff(initial=0.02, maximum=0.2))
        replay = Replay(informer)
        async with running(informer):
            await informer.wait_synced(10)
            metrics = await plain.metrics()
            lists0 = metrics.get(("list", "configmaps"), 0.0)
            watches0 = metrics.get(("watch", "configmaps"), 0.0)
            proxy.hold()  # the watch breaks, and no new connection gets through
            for i in range(12):  # more changes than the server keeps (--watch-history 5)
                await write(plain, path, "create" if i < 6 else "patch", f"n{i % 6}", i)
            await write(plain, path, "delete", "a", 0)
            await asyncio.sleep(0.3)
            assert (await plain.metrics()).get(("list", "configmaps"), 0.0) == lists0
            proxy.release()
            await eventually(lambda: informer.stats.lists == 2, what="the relist")
            expected = await truth(plain, path, "v1", "ConfigMap")
            await eventually(lambda: {k: informer.cache.get(k) for k in informer.cache}
                             == expected, what="the cache to converge")
            assert replay.state == expected and "default/a" not in replay.state
            metrics = await plain.metrics()
            # The informer's relist, and `truth`'s list.
            assert metrics.get(("list", "configmaps"), 0.0) - lists0 == 2
            assert metrics.get(("watch", "configmaps"), 0.0) - watches0 >= 2
            assert informer.stats.expired == 1

    asyncio.run(with_everything(short_history_server, body))


def test_bookmarks_let_a_quiet_informer_resume_without_relisting(
        short_history_server: Apiserver) -> None:
    async def body(plain: Plain, proxy: Proxy, client: KubeClient) -> None:
        quiet = await new_namespace(plain)
        busy = await new_namespace(plain)
        informer = Informer(client, ConfigMap, namespace=quiet,
                            backoff=Backoff(initial=0.02, maximum=0.2))
        async with running(informer):
            await informer.wait_synced(10)
            rv0 = int(informer.resource_version)
            busy_path = f"/api/v1/namespaces/{busy}/configmaps"
            for i in range(10):  # history moves on, none of it in the informer's namespace
                await write(plain, busy_path, "create", f"x{i}", i)
            status, last = await plain.call("GET", f"{busy_path}/x9")
            assert status == 200
            last_rv = int(last["metadata"]["resourceVersion"])
            # The server bookmarks every 0.5 s (the fixture's --bookmark-interval).
            await eventually(lambda: int(informer.resource_version) >= last_rv, 5,
                             "a bookmark past the busy namespace's writes")
            assert informer.stats.bookmarks >= 1 and rv0 < last_rv
            watches = informer.stats.watch_requests
            proxy.cut()
            await eventually(lambda: informer.stats.watch_requests > watches, 5, "a rewatch")
            await write(plain, f"/api/v1/namespaces/{quiet}/configmaps", "create", "q", 1)
            await eventually(lambda: f"{quiet}/q" in informer.cache, 5, "the new object")
            assert informer.stats.lists == 1 and informer.stats.expired == 0

    asyncio.run(with_everything(short_history_server, body))


def test_cluster_scoped_crd_indexes_and_key_queue(apiserver: Apiserver) -> None:
    async def body(plain: Plain, proxy: Proxy, client: KubeClient) -> None:
        tag = uuid.uuid4().hex[:6]
        pools = "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools"
        informer = Informer(client, CiliumLoadBalancerIPPool, label_selector=f"test={tag}",
                            indexers={"color": by_label("color")})
        informer.add_handler(on_add=lambda obj: 1 / 0)  # a consumer's bug is logged only
        async with running(informer):
            await informer.wait_synced(10)
            queue = informer.key_queue()
            for i, color in enumerate(("blue", "red", "blue")):
                status, obj = await plain.call("POST", pools, {
                    "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                    "metadata": {"name": f"p{i}-{tag}", "labels": {"test": tag,
                                                                   "color": color}},
                    "spec": {"blocks": [{"cidr": f"10.{i}.0.0/24"}]}})
                assert status == 201, obj
            # Another pool without the label: outside the selection.
            await plain.call("POST", pools, {
                "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
                "metadata": {"name": f"other-{tag}"},
                "spec": {"blocks": [{"cidr": "10.9.0.0/24"}]}})
            await eventually(lambda: len(informer.cache) == 3, what="three pools")
            assert [o["metadata"]["name"] for o in informer.cache.by_index("color", "blue")] \
                == [f"p0-{tag}", f"p2-{tag}"]
            assert informer.cache.get_object(f"p1-{tag}") is not None
            assert informer.cache.get(f"p1-{tag}")["kind"] == "CiliumLoadBalancerIPPool"
            for _ in range(3):  # three changes to one pool: queued once
                await plain.call("PATCH", f"{pools}/p1-{tag}",
                                 {"spec": {"disabled": True}} if _ == 0 else
                                 {"metadata": {"annotations": {"n": str(_)}}},
                                 "application/merge-patch+json")
            await eventually(lambda: informer.cache.get(f"p1-{tag}")["metadata"].get(
                "annotations", {}).get("n") == "2", what="the last patch")
            keys = [queue.get_nowait() for _ in range(len(queue))]
            assert sorted(keys) == sorted({f"p0-{tag}", f"p1-{tag}", f"p2-{tag}"})
            # Leaving the selection is a delete for this informer.
            await plain.call("PATCH", f"{pools}/p0-{tag}", {"metadata": {"labels": {
                "test": None}}}, "application/merge-patch+json")
            await eventually(lambda: f"p0-{tag}" not in informer.cache, what="p0 gone")
            assert await asyncio.wait_for(queue.get(), 5) == f"p0-{tag}"

    asyncio.run(with_everything(apiserver, body))


def test_all_namespaces_with_field_index(apiserver: Apiserver) -> None:
    async def body(plain: Plain, proxy: Proxy, client: KubeClient) -> None:
        tag = uuid.uuid4().hex[:6]
        informer = Informer(client, Service, label_selector=f"test={tag}",
                            indexers={"type": by_field("spec.type")})
        async with running(informer):
            await informer.wait_synced(10)
            spaces = [await new_namespace(plain) for _ in range(2)]
            for ns, svc_type in zip(spaces, ("ClusterIP", "NodePort"), strict=True):
                status, obj = await plain.call("POST", f"/api/v1/namespaces/{ns}/services", {
                    "metadata": {"name": "web", "labels": {"test": tag}},
                    "spec": {"type": svc_type, "ports": [{"port": 80}]}})
                assert status == 201, obj
            await eventually(lambda: len(informer.cache) == 2, what="two services")
            assert [object_key(o) for o in informer.cache.by_index("type", "NodePort")] == \
                [f"{spaces[1]}/web"]
            assert [object_key(o) for o in informer.cache.objects(spaces[0])] == \
                [f"{spaces[0]}/web"]
            # The server's defaulting (clusterIP) is what the cache holds.
            assert informer.cache.get(f"{spaces[0]}/web")["spec"]["clusterIP"]

    asyncio.run(with_everything(apiserver, body))


def test_list_pages_are_told_as_they_arrive(apiserver: Apiserver,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(informer_module, "LIST_PAGE_SIZE", 2)

    async def body(plain: Plain, proxy: Proxy, client: KubeClient) -> None:
        ns = await new_namespace(plain)
        for i in range(5):
            status, obj = await plain.call("POST", f"/api/v1/namespaces/{ns}/configmaps",
                                           {"metadata": {"name": f"cm{i}"}})
            assert status == 201, obj
        pages: list[tuple[bool, list[str]]] = []
        informer = Informer(client, ConfigMap, namespace=ns, on_list_page=lambda items:
                            pages.append((informer.synced.is_set(),
                                          [o["metadata"]["name"] for o in items])))
        async with running(informer):
            await informer.wait_synced(10)
        assert [names for _synced, names in pages] == [["cm0", "cm1"], ["cm2", "cm3"], ["cm4"]]
        assert not any(synced for synced, _names in pages)

    asyncio.run(with_everything(apiserver, body))


def test_follows_the_server_through_a_restart(apiservers: Apiservers) -> None:
    server = apiservers("--bookmark-interval", "0.5")

    async def run() -> None:
        client = make_client(None, server.kubeconfig, registry=CollectorRegistry())
        informer = Informer(client, ConfigMap, namespace="default",
                            backoff=Backoff(initial=0.05, maximum=0.5))
        informer.start()
        try:
            await informer.wait_synced(10)
            path = "/api/v1/namespaces/default/configmaps"
            async with server.plain() as plain:
                await write(plain, path, "create", "before", 1)
            await eventually(lambda: "default/before" in informer.cache, what="before")
            server.stop()
            await asyncio.sleep(0.3)  # the informer is retrying against nothing
            # Same data directory (token, certificate, database) and the same address.
            server.start(same_address=True)
            async with server.plain() as plain:
                await write(plain, path, "delete", "before", 0)
                await write(plain, path, "create", "after", 2)
                expected = await truth(plain, path, "v1", "ConfigMap")
            await eventually(lambda: {k: informer.cache.get(k) for k in informer.cache}
                             == expected, what="the cache to follow the restarted server")
            assert informer.stats.errors >= 1
        finally:
            await informer.stop()
            await client.aclose()

    asyncio.run(run())
