"""Pod IP allocation and cluster-pool node CIDR carving (pure).

Pins down: a pod IP never goes to two owners, whatever the order of allocations and releases;
the router IP, network and broadcast addresses are never handed out; a repeated allocation for
the same owner returns the same IP; freed IPs are not reused at once; the persisted form
round-trips exactly (so restarts cannot double-assign); cluster-pool carving is deterministic,
keeps existing node CIDRs, never gives one CIDR to two nodes, and reports exhaustion and bad
pools with field paths.
"""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.ipam.podcidr import (
    PodIPAllocator,
    PodIPsExhausted,
    carve_node_cidrs,
    parse_cluster_pool,
    parse_pod_cidr,
    router_ip,
)
from hexlane.model.errors import InputError

CIDR = IPv4Network("10.42.1.0/28")  # 13 pod addresses: .2 .. .14


def test_first_pod_ip_follows_the_router_ip() -> None:
    alloc = PodIPAllocator(CIDR)
    assert alloc.router_ip == IPv4Address("10.42.1.1") == router_ip(CIDR)
    assert alloc.allocate("c1/eth0") == IPv4Address("10.42.1.2")
    assert alloc.allocate("c2/eth0") == IPv4Address("10.42.1.3")
    assert alloc.capacity == 13


def test_same_owner_gets_same_ip() -> None:
    alloc = PodIPAllocator(CIDR)
    first = alloc.allocate("c1/eth0")
    alloc.allocate("c2/eth0")
    assert alloc.allocate("c1/eth0") == first


def test_freed_ip_is_not_reused_at_once() -> None:
    alloc = PodIPAllocator(CIDR)
    ip = alloc.allocate("a")
    assert alloc.release("a") == ip
    assert alloc.allocate("b") != ip
    assert alloc.release("nobody") is None


def test_exhaustion_is_reported_and_release_makes_room() -> None:
    alloc = PodIPAllocator(CIDR)
    ips = {alloc.allocate(f"o{i}") for i in range(alloc.capacity)}
    assert len(ips) == 13
    assert IPv4Address("10.42.1.15") not in ips and IPv4Address("10.42.1.1") not in ips
    with pytest.raises(PodIPsExhausted, match=r"10\.42\.1\.0/28"):
        alloc.allocate("one-too-many")
    freed = alloc.release("o5")
    assert alloc.allocate("late") == freed


def test_claim_refuses_an_ip_of_another_owner() -> None:
    alloc = PodIPAllocator(CIDR)
    ip = alloc.allocate("a")
    with pytest.raises(ValueError, match="already belongs"):
        alloc.claim("b", ip)
    with pytest.raises(ValueError, match="both"):
        PodIPAllocator(CIDR, {"x": ip, "y": ip})


def test_changed_cidr_keeps_old_allocations_owned() -> None:
    alloc = PodIPAllocator(CIDR)
    old = alloc.allocate("a")
    moved = PodIPAllocator.from_dict(json.loads(json.dumps(alloc.to_dict())),
                                     cidr=IPv4Network("10.42.2.0/29"))
    assert moved.get("a") == old
    assert moved.allocate("b") == IPv4Address("10.42.2.2")
    assert moved.release("a") == old


def test_parse_pod_cidr_errors_name_the_field() -> None:
    with pytest.raises(InputError, match="podCIDR: not an IPv4 CIDR"):
        parse_pod_cidr("10.0.0.1/24")
    with pytest.raises(InputError, match="too small"):
        parse_pod_cidr("10.0.0.0/31")
    with pytest.raises(InputError, match="only IPv4"):
        parse_pod_cidr("fd00::/64")


ops = st.lists(st.tuples(st.booleans(), st.integers(0, 30)), max_size=120)


@settings(max_examples=200, deadline=None)
@given(ops)
def test_no_ip_ever_has_two_owners_and_state_round_trips(script: list[tuple[bool, int]]
                                                         ) -> None:
    alloc = PodIPAllocator(CIDR)
    for is_alloc, n in script:
        owner = f"pod{n}/eth0"
        if is_alloc:
            try:
                ip = alloc.allocate(owner)
            except PodIPsExhausted:
                assert len(alloc.allocations) == alloc.capacity
                continue
            assert ip in CIDR and ip not in (CIDR.network_address, CIDR.broadcast_address,
                                             alloc.router_ip)
        else:
            alloc.release(owner)
        assert len(set(alloc.allocations.values())) == len(alloc.allocations)
        # Restart at any point: the persisted form gives back the very same allocator.
        reloaded = PodIPAllocator.from_dict(json.loads(json.dumps(alloc.to_dict())))
        assert reloaded.allocations == alloc.allocations
        assert reloaded.cursor == alloc.cursor
        alloc = reloaded


# --- cluster-pool ------------------------------------------------------------------------------


def test_carving_is_by_name_in_pool_order() -> None:
    pool = parse_cluster_pool(["10.42.0.0/23", "10.50.0.0/24"], 24)
    plan = carve_node_cidrs(pool, 24, ["n3", "n1", "n2"], {})
    assert plan.assignments == {"n1": IPv4Network("10.42.0.0/24"),
                                "n2": IPv4Network("10.42.1.0/24"),
                                "n3": IPv4Network("10.50.0.0/24")}
    assert plan.unassigned == () and plan.problems == ()


def test_existing_nodes_keep_their_cidr_when_others_come_and_go() -> None:
    pool = parse_cluster_pool(["10.42.0.0/16"], 24)
    first = carve_node_cidrs(pool, 24, ["b", "c"], {})
    second = carve_node_cidrs(pool, 24, ["a", "c"], first.assignments)
    assert second.assignments["c"] == first.assignments["c"]
    assert second.assignments["a"] == first.assignments["b"]  # b left, a takes the free one


def test_exhaustion_lists_unassigned_nodes() -> None:
    pool = parse_cluster_pool(["10.42.0.0/23"], 24)
    plan = carve_node_cidrs(pool, 24, ["a", "b", "c"], {})
    assert plan.unassigned == ("c",)
    assert "Node/c" in str(plan.problems[0]) and "exhausted" in str(plan.problems[0])


def test_bad_pool_reports_every_problem_with_paths() -> None:
    with pytest.raises(InputError) as info:
        parse_cluster_pool(["10.0.0.0/8", "nope", "10.1.0.0/16", "10.9.0.0/26"], 24)
    text = str(info.value)
    assert "clusterPoolIPv4PodCIDRList[1]" in text
    assert "clusterPoolIPv4PodCIDRList[2]" in text and "overlaps" in text
    assert "clusterPoolIPv4PodCIDRList[3]" in text and "smaller" in text


names = st.lists(st.text("abcdefgh", min_size=1, max_size=3), max_size=12)


@settings(max_examples=200, deadline=None)
@given(names, names, st.sampled_from([25, 26, 27]))
def test_carving_properties(before: list[str], after: list[str], mask: int) -> None:
    pool = parse_cluster_pool(["10.42.0.0/25", "10.42.4.0/24"], mask)
    first = carve_node_cidrs(pool, mask, before, {})
    second = carve_node_cidrs(pool, mask, after, first.assignments)
    for plan, nodes in ((first, before), (second, after)):
        cidrs = list(plan.assignments.values())
        assert len(set(cidrs)) == len(cidrs)  # never one CIDR for two nodes
        assert set(plan.assignments) | set(plan.unassigned) == set(nodes)
        assert all(c.prefixlen == mask and any(c.subnet_of(p) for p in pool) for c in cidrs)
    for node in set(before) & set(after):
        if node in first.assignments:
            assert second.assignments[node] == first.assignments[node]
    assert carve_node_cidrs(pool, mask, after, first.assignments) == second  # deterministic
