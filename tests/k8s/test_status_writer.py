"""Status writers against the real apiserver:

- `patch_status` merge-patches `/status` (fields it does not name stay; null removes);
- `update_status` PUTs `/status` with the resourceVersion it read: when another writer
  changes the object in between, the server answers 409, the writer re-reads, re-applies its
  change on top of the other writer's, and both changes survive;
- starting from a stale cached copy costs one conflict, not a lost update; a change that
  finds nothing to do writes nothing; endless conflicts end in a 409 `ApiError` after
  `attempts`; an absent object is a 404 `ApiError`.
"""

from __future__ import annotations

import asyncio
import copy
import uuid
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver, Plain
from hexlane.k8s.client import ApiError, KubeClient, make_client
from hexlane.k8s.resources import CiliumLoadBalancerIPPool
from hexlane.k8s.statuswriter import StatusChange, patch_status, update_status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]
POOLS = "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools"
MERGE = "application/merge-patch+json"


def condition(kind: str, status: str = "True") -> dict[str, Any]:
    return {"type": kind, "status": status, "reason": "Test", "message": kind,
            "lastTransitionTime": "2026-01-01T00:00:00Z"}


def add_condition(kind: str) -> StatusChange:
    def change(obj: dict[str, Any]) -> dict[str, Any] | None:
        conditions = obj.setdefault("status", {}).setdefault("conditions", [])
        if any(c["type"] == kind for c in conditions):
            return None
        conditions.append(condition(kind))
        return obj
    return change


async def new_pool(plain: Plain) -> str:
    name = f"pool-{uuid.uuid4().hex[:8]}"
    status, body = await plain.call("POST", POOLS, {
        "apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
        "metadata": {"name": name}, "spec": {"blocks": [{"cidr": "10.7.0.0/24"}]}})
    assert status == 201, body
    return name


def run(apiserver: Apiserver, body: Any) -> None:
    async def main() -> None:
        async with apiserver.plain() as plain, make_client(
                None, apiserver.kubeconfig, registry=CollectorRegistry()) as client:
            await body(plain, client)
    asyncio.run(main())


def test_merge_patch_status(apiserver: Apiserver) -> None:
    async def body(plain: Plain, client: KubeClient) -> None:
        name = await new_pool(plain)
        out = await patch_status(client, CiliumLoadBalancerIPPool, name,
                                 {"conditions": [condition("io.cilium/ips-available")],
                                  "note": "x"})
        assert out["status"]["conditions"][0]["type"] == "io.cilium/ips-available"
        out = await patch_status(client, CiliumLoadBalancerIPPool, name, {"note": None})
        assert "note" not in out["status"] and len(out["status"]["conditions"]) == 1
        assert out["spec"]["blocks"] == [{"cidr": "10.7.0.0/24"}]

    run(apiserver, body)


def test_conflict_retry_keeps_both_writers_changes(apiserver: Apiserver) -> None:
    async def body(plain: Plain, client: KubeClient) -> None:
        name = await new_pool(plain)
        calls = 0
        mine = add_condition("Mine")

        def change(obj: dict[str, Any]) -> dict[str, Any] | None:
            nonlocal calls
            calls += 1
            return mine(obj)

        async def interfere() -> None:
            status, _ = await plain.call("PATCH", f"{POOLS}/{name}/status",
                                         {"status": {"conditions": [condition("Theirs")]}},
                                         MERGE)
            assert status == 200

        # Read first (as a reconciler would from its cache), then someone else writes.
        status, current = await plain.call("GET", f"{POOLS}/{name}")
        assert status == 200
        await interfere()
        out = await update_status(client, CiliumLoadBalancerIPPool, name, change,
                                  current=current)
        assert out is not None and calls == 2  # the stale copy, then the re-read one
        assert [c["type"] for c in out["status"]["conditions"]] == ["Theirs", "Mine"]
        assert int(out["metadata"]["resourceVersion"]) > \
            int(current["metadata"]["resourceVersion"])
        # Nothing to do: no write at all.
        before = out["metadata"]["resourceVersion"]
        again = await update_status(client, CiliumLoadBalancerIPPool, name, mine)
        assert again is None
        status, now = await plain.call("GET", f"{POOLS}/{name}")
        assert now["metadata"]["resourceVersion"] == before

    run(apiserver, body)


def test_interference_during_the_read_modify_write(apiserver: Apiserver) -> None:
    async def body(plain: Plain, client: KubeClient) -> None:
        name = await new_pool(plain)
        seen: list[str] = []

        async def other_writer(tag: str) -> None:
            await plain.call("PATCH", f"{POOLS}/{name}", {"metadata": {"labels": {
                "touched": tag}}}, MERGE)

        pending: list[asyncio.Task[None]] = []

        def change(obj: dict[str, Any]) -> dict[str, Any]:
            seen.append(obj["metadata"]["resourceVersion"])
            if len(seen) == 1:
                # Someone writes between our read and our PUT.
                pending.append(asyncio.ensure_future(other_writer("x")))
            obj = copy.deepcopy(obj)
            obj.setdefault("status", {})["conditions"] = [condition("Mine")]
            return obj

        # The label patch must land before our PUT: hold the PUT back until it has.
        original = client.request

        async def request(method: str, path: str, **kw: Any) -> dict[str, Any]:
            if method == "PUT" and pending:
                await asyncio.gather(*pending)
                pending.clear()
            return await original(method, path, **kw)

        client.request = request  # type: ignore[method-assign]
        out = await update_status(client, CiliumLoadBalancerIPPool, name, change)
        assert out is not None and len(seen) == 2 and seen[0] != seen[1]
        assert out["metadata"]["labels"] == {"touched": "x"}
        assert out["status"]["conditions"][0]["type"] == "Mine"

    run(apiserver, body)


def test_endless_conflicts_and_absent_objects_are_errors(apiserver: Apiserver) -> None:
    async def body(plain: Plain, client: KubeClient) -> None:
        name = await new_pool(plain)
        _status, stale = await plain.call("GET", f"{POOLS}/{name}")
        await plain.call("PATCH", f"{POOLS}/{name}", {"metadata": {"labels": {"a": "b"}}},
                         MERGE)

        def always_stale(obj: dict[str, Any]) -> dict[str, Any]:
            out = copy.deepcopy(stale)
            out["status"] = {"conditions": [condition("X")]}
            return out

        with pytest.raises(ApiError) as err:
            await update_status(client, CiliumLoadBalancerIPPool, name, always_stale,
                                attempts=3)
        assert err.value.conflict
        with pytest.raises(ApiError) as err:
            await update_status(client, CiliumLoadBalancerIPPool, "no-such-pool",
                                add_condition("X"))
        assert err.value.not_found
        with pytest.raises(ApiError) as err:
            await patch_status(client, CiliumLoadBalancerIPPool, "no-such-pool", {"a": 1})
        assert err.value.not_found

    run(apiserver, body)
