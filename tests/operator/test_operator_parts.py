"""The operator's parts without processes: the keyed write queue (latest write wins, per-object
backoff 250 ms doubling, other objects not held up), the pure CiliumNode plan (stable CIDRs,
intended CIDRs count as taken, deleted nodes released), the status merge patch (fields a
Service lost are nulled), the parse cache, and the command line's address and lease flags."""

from __future__ import annotations

import asyncio
from ipaddress import IPv4Network
from typing import Any

import pytest

from hexlane.cli.cmd_operator import build_timing
from hexlane.cli.flags import parse_addr
from hexlane.ipam.status import StatusWrite
from hexlane.k8s.backoff import Backoff
from hexlane.model.errors import InputError
from hexlane.operator.lbipam import ParseCache, status_patch
from hexlane.operator.podcidr import NodeAction, ciliumnode_cidr, plan_ciliumnodes
from hexlane.operator.writer import WriteQueue

POOL = [IPv4Network("10.42.0.0/16")]


async def test_write_queue_retries_with_backoff_and_latest_write_wins() -> None:
    attempts: list[tuple[str, int, float]] = []
    loop = asyncio.get_running_loop()
    start = loop.time()
    fail_a = 2

    async def perform(key: str, value: int) -> None:
        nonlocal fail_a
        attempts.append((key, value, loop.time() - start))
        if key == "a" and fail_a:
            fail_a -= 1
            raise RuntimeError("server unavailable")

    queue: WriteQueue[str, int] = WriteQueue(
        perform, workers=2, backoff=lambda: Backoff(initial=0.05, maximum=1.0))
    queue.start()
    try:
        queue.put("a", 1)
        queue.put("b", 1)
        await asyncio.sleep(0.01)
        queue.put("a", 2)  # replaces the failed write waiting for its retry
        await asyncio.wait_for(queue.wait_idle(), 5)
    finally:
        await queue.stop()
    a = [(v, t) for k, v, t in attempts if k == "a"]
    b = [v for k, v, _ in attempts if k == "b"]
    assert b == [1]  # b was not held up by a's failures
    assert [v for v, _ in a] == [1, 2, 2]
    # Backoff between a's attempts: 50 ms, then 100 ms.
    assert a[1][1] - a[0][1] >= 0.045 and a[2][1] - a[1][1] >= 0.095
    assert queue.failures == 2 and queue.done == 2


async def test_write_queue_discard_drops_a_waiting_write() -> None:
    done: list[str] = []

    async def perform(key: str, _value: int) -> None:
        done.append(key)
        raise RuntimeError("always fails")

    queue: WriteQueue[str, int] = WriteQueue(
        perform, workers=1, backoff=lambda: Backoff(initial=0.05))
    queue.start()
    try:
        queue.put("gone", 1)
        await asyncio.sleep(0.02)
        queue.discard("gone")
        await asyncio.wait_for(queue.wait_idle(), 1)
        await asyncio.sleep(0.1)
    finally:
        await queue.stop()
    assert done == ["gone"] and len(queue) == 0


def test_plan_creates_patches_and_deletes() -> None:
    plan = plan_ciliumnodes(POOL, 24, {"a": "uid-a", "b": "uid-b", "c": "uid-c"},
                            {"b": IPv4Network("10.42.7.0/24"), "c": None, "old": None})
    assert plan.carve.assignments == {"a": IPv4Network("10.42.0.0/24"),
                                      "b": IPv4Network("10.42.7.0/24"),
                                      "c": IPv4Network("10.42.1.0/24")}
    assert plan.actions == (NodeAction("create", "a", IPv4Network("10.42.0.0/24"), "uid-a"),
                            NodeAction("patch", "c", IPv4Network("10.42.1.0/24")),
                            NodeAction("delete", "old"))


def test_plan_counts_intended_cidrs_as_taken() -> None:
    # "b" was asked to take 10.42.0.0/24 and the API has not shown it yet: "a" (earlier by
    # name, new) must not be given the same one.
    plan = plan_ciliumnodes(POOL, 24, {"a": "", "b": ""}, {},
                            intended={"b": IPv4Network("10.42.0.0/24")})
    assert plan.carve.assignments == {"a": IPv4Network("10.42.1.0/24"),
                                      "b": IPv4Network("10.42.0.0/24")}


def test_plan_of_a_converged_cluster_is_empty() -> None:
    existing = {"a": IPv4Network("10.42.3.0/24"), "b": IPv4Network("10.42.0.0/24")}
    assert plan_ciliumnodes(POOL, 24, {"a": "", "b": ""}, existing).actions == ()


def test_ciliumnode_cidr_reads_the_first_ipv4_cidr() -> None:
    assert ciliumnode_cidr({"spec": {"ipam": {"podCIDRs": ["fd00::/64", "10.42.2.0/24"]}}}) \
        == IPv4Network("10.42.2.0/24")
    assert ciliumnode_cidr({"spec": {"ipam": {"podCIDRs": ["bogus"]}}}) is None
    assert ciliumnode_cidr({}) is None


def test_status_patch_nulls_what_a_service_lost() -> None:
    lost = StatusWrite("Service", "ns", "web", "5", {"loadBalancer": {}})
    assert status_patch(lost) == {"loadBalancer": {"ingress": None}, "conditions": None}
    kept = StatusWrite("Service", "ns", "web", "5",
                       {"loadBalancer": {"ingress": [{"ip": "10.0.0.100"}]},
                        "conditions": [{"type": "t"}]})
    assert status_patch(kept) == kept.status
    pool = StatusWrite("CiliumLoadBalancerIPPool", "", "p", "3", {"conditions": []})
    assert status_patch(pool) == {"conditions": []}


def test_parse_cache_parses_once_per_resource_version_and_skips_bad_objects() -> None:
    calls: list[str] = []

    def parse(obj: dict[str, Any]) -> str:
        calls.append(obj["metadata"]["name"])
        if obj["metadata"]["name"] == "bad":
            raise InputError([])
        return f"{obj['metadata']['name']}@{obj['metadata']['resourceVersion']}"

    cache = ParseCache("Thing", parse)

    def obj(name: str, rv: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "resourceVersion": rv}}

    assert cache.models([obj("a", "1"), obj("bad", "1")]) == ["a@1"]
    assert cache.invalid == 1
    assert cache.models([obj("a", "1"), obj("bad", "1")]) == ["a@1"]
    assert calls == ["a", "bad"]
    assert cache.models([obj("a", "2")]) == ["a@2"] and cache.invalid == 0


def test_addresses_and_lease_flags() -> None:
    assert parse_addr("0.0.0.0:9963") == ("0.0.0.0", 9963)
    assert parse_addr(":9963") == ("", 9963)
    assert parse_addr("[::1]:9963") == ("::1", 9963)
    with pytest.raises(InputError):
        parse_addr("9963")
    timing = build_timing("15s", "10s", "2s")
    assert (timing.duration, timing.renew_deadline, timing.retry_period) == (15, 10, 2)
    with pytest.raises(InputError, match="renew deadline"):
        build_timing("5s", "10s", "2s")
    with pytest.raises(InputError, match="not a duration"):
        build_timing("soon", "10s", "2s")


def test_an_older_writes_echo_after_a_newer_write_starts_no_run(tmp_path: Any) -> None:
    """The pool's counters are written once per new Service: the echo of write A may come
    back after write B was done, or while A is in flight with B waiting. Those echoes are
    ours (no run); once B's echo is seen, A's status coming back again is someone else's
    doing (a run)."""
    from prometheus_client import CollectorRegistry

    from hexlane.k8s.client import KubeClient, load_client_config
    from hexlane.k8s.ratelimit import RateLimiter
    from hexlane.operator.lbipam import LBIPAMController
    from hexlane.operator.metrics import OperatorMetrics

    config = tmp_path / "kubeconfig"
    config.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        "clusters: [{name: c, cluster: {server: 'https://127.0.0.1:9'}}]\n"
        "users: [{name: u, user: {token: t}}]\n"
        "contexts: [{name: c, context: {cluster: c, user: u}}]\n")
    client = KubeClient(load_client_config(None, config), RateLimiter(0, 1))
    controller = LBIPAMController(client, OperatorMetrics(CollectorRegistry()))

    def counters(used: int) -> dict[str, Any]:
        return {"conditions": [{"type": "cilium.io/IPsUsed", "status": "Unknown",
                                "reason": "noreason", "message": str(used)}]}

    def pool(rv: str, status: dict[str, Any]) -> dict[str, Any]:
        return {"metadata": {"name": "p", "resourceVersion": rv}, "spec": {"blocks": []},
                "status": status}

    controller._full = False  # as after the first run
    key = ("CiliumLoadBalancerIPPool", "", "p")

    def write(status: dict[str, Any]) -> StatusWrite:
        return StatusWrite("CiliumLoadBalancerIPPool", "", "p", "1", status)

    controller._written[key] = [counters(1), counters(2)]  # A, then B, both done
    controller._on_pool_update(pool("1", counters(0)), pool("2", counters(1)))  # A's echo
    controller._on_pool_update(pool("2", counters(1)), pool("3", counters(2)))  # B's echo
    assert (controller.echoes_ignored, controller._full) == (2, False)
    controller._on_pool_update(pool("3", counters(2)), pool("4", counters(1)))  # not ours
    assert (controller.echoes_ignored, controller._full) == (2, True)
    # C in flight and D waiting behind it: C's echo, before C's answer, is ours too.
    controller._full = False
    controller.writer._in_flight[key] = write(counters(3))
    controller.writer._desired[key] = write(counters(4))
    controller._on_pool_update(pool("4", counters(1)), pool("5", counters(3)))
    assert (controller.echoes_ignored, controller._full) == (3, False)
