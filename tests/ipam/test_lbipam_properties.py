"""Properties of the LB-IPAM allocator over random pools and Services (hypothesis):

- no IP is given to two Services unless they are compatible sharers (same non-empty key,
  permitted namespaces, disjoint (protocol, port) pairs, matching traffic policy);
- every IP given was requested (or is of a requested family) and lies in a range of an
  enabled, non-conflicting pool selecting the Service, or is one the Service already held
  (kept from a disabled or conflicting pool);
- the answer does not depend on the order of the input lists;
- restart stability: feeding the answer back as the Services' ingress IPs (and the pools'
  conflict marks) changes nothing;
- removing one Service moves nobody else (others keep their IPs; they may only gain).
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import defaultdict

from hypothesis import given, settings
from hypothesis import strategies as st
from lbipam_helpers import at

from hexlane.ipam.lbipam import (
    BlockInput,
    LBIPAMPlan,
    Options,
    PoolInput,
    PortInput,
    ServiceInput,
    allocate,
    requested_families,
    requested_ips,
    selector_labels,
    sharing_incompatibility,
    sharing_key,
)
from hexlane.model.selectors import LabelSelector

V4 = [f"10.0.0.{i}" for i in range(24)]
V6 = [f"fd00::{i:x}" for i in range(8)]


@st.composite
def blocks(draw: st.DrawFn) -> BlockInput:
    if draw(st.integers(0, 9)) == 0:
        a, b = sorted(draw(st.lists(st.integers(0, 7), min_size=2, max_size=2)))
        return BlockInput.range(V6[a], V6[b])
    if draw(st.booleans()):
        bits = draw(st.integers(29, 32))
        base = draw(st.integers(0, 23)) & ~((1 << (32 - bits)) - 1)
        return BlockInput.cidr(f"10.0.0.{base}/{bits}")
    a, b = sorted(draw(st.lists(st.integers(0, 23), min_size=2, max_size=2)))
    return BlockInput.range(V4[a], V4[b] if draw(st.booleans()) else None)


@st.composite
def pools(draw: st.DrawFn) -> list[PoolInput]:
    n = draw(st.integers(0, 4))
    out = []
    for i in range(n):
        color = draw(st.sampled_from([None, "red", "blue"]))
        out.append(PoolInput(
            name=f"pool-{i}",
            blocks=tuple(draw(st.lists(blocks(), min_size=1, max_size=3))),
            created=draw(st.sampled_from([None, at(1), at(2), at(3)])),
            order=i,
            allow_first_last_ips=draw(st.sampled_from(["", "No", "Yes"])),
            service_selector=(None if color is None
                              else LabelSelector.parse({"matchLabels": {"color": color}})),
            disabled=draw(st.integers(0, 5)) == 0,
        ))
    return out


PORTS = [PortInput(53, "TCP"), PortInput(53, "UDP"), PortInput(80, "TCP"), PortInput(81, "TCP")]


@st.composite
def services(draw: st.DrawFn) -> list[ServiceInput]:
    n = draw(st.integers(0, 9))
    out = []
    for i in range(n):
        ns = draw(st.sampled_from(["a", "b"]))
        ann: dict[str, str] = {}
        key = draw(st.sampled_from([None, "k1", "k2"]))
        if key:
            ann["lbipam.cilium.io/sharing-key"] = key
            cross = draw(st.sampled_from([None, "*", "a", "b"]))
            if cross:
                ann["lbipam.cilium.io/sharing-cross-namespace"] = cross
        requested = draw(st.lists(st.sampled_from(V4 + V6[:2]), max_size=2))
        if requested:
            ann["lbipam.cilium.io/ips"] = ",".join(requested)
        color = draw(st.sampled_from([None, "red", "blue"]))
        out.append(ServiceInput(
            namespace=ns, name=f"s{i}",
            created=draw(st.sampled_from([None, at(1), at(2)])),
            order=i,
            type=draw(st.sampled_from(["LoadBalancer"] * 6 + ["ClusterIP"])),
            labels={"color": color} if color else {},
            annotations=ann,
            ports=tuple(draw(st.lists(st.sampled_from(PORTS), max_size=2, unique=True))),
            external_traffic_policy=draw(st.sampled_from(["Cluster", "Local"])),
            selector=draw(st.sampled_from([{}, {"app": "x"}, {"app": "y"}])),
            ip_families=tuple(draw(st.sampled_from([(), ("IPv4",), ("IPv6",),
                                                    ("IPv4", "IPv6")]))),
            ip_family_policy=draw(st.sampled_from([None, "SingleStack", "PreferDualStack",
                                                   "RequireDualStack"])),
            current_ingress_ips=tuple(draw(st.lists(st.sampled_from(V4 + V6[:2]),
                                                    max_size=2))),
        ))
    return out


options = st.builds(Options, ipv4_enabled=st.just(True), ipv6_enabled=st.booleans())


def fed_back(svcs: list[ServiceInput], plan: LBIPAMPlan) -> list[ServiceInput]:
    return [dataclasses.replace(s, current_ingress_ips=plan.services[s.key].ips)
            if s.key in plan.services else s for s in svcs]


def _contains(b: BlockInput, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return ip.version == b.first.version and int(b.first) <= int(ip) <= int(b.last)


@settings(max_examples=100, deadline=None)
@given(pools(), services(), options)
def test_no_ip_given_twice_except_to_compatible_sharers(ps: list[PoolInput],
                                                       ss: list[ServiceInput],
                                                       opts: Options) -> None:
    plan = allocate(ps, ss, options=opts)
    by_key = {s.key: s for s in ss}
    holders: dict[str, list[str]] = defaultdict(list)
    for key, r in plan.services.items():
        assert len(set(r.ips)) == len(r.ips)
        for ip in r.ips:
            holders[ip].append(key)
    for ip, keys in holders.items():
        if len(keys) == 1:
            continue
        for i, a in enumerate(keys):
            assert sharing_key(by_key[a]) != "", (ip, keys)
            for b in keys[i + 1:]:
                assert sharing_incompatibility(by_key[a], by_key[b]) is None, (ip, a, b)


@settings(max_examples=100, deadline=None)
@given(pools(), services(), options)
def test_every_ip_inside_an_enabled_matching_pool_or_kept(ps: list[PoolInput],
                                                         ss: list[ServiceInput],
                                                         opts: Options) -> None:
    plan = allocate(ps, ss, options=opts)
    for s in ss:
        r = plan.services.get(s.key)
        if r is None or not r.handled:
            assert r is None or (r.ips == () and r.condition is None)
            continue
        labels = selector_labels(s)
        wanted = requested_ips(s)
        v4, v6 = requested_families(s, opts)
        for text in r.ips:
            ip = ipaddress.ip_address(text)
            # Requested, or (with no request) of a requested family.
            assert ip in wanted if wanted else (v4 if ip.version == 4 else v6), (s.key, text)
            homes = [p for p in ps
                     if any(_contains(b, ip) for b in p.blocks)
                     and (p.service_selector is None or p.service_selector.matches(labels))]
            assert homes, (s.key, text)
            # Kept from the Service's status (compared as addresses: a status may spell one
            # as `fd00::0`, the plan writes it canonically, `fd00::`).
            if ip in {ipaddress.ip_address(c) for c in s.current_ingress_ips}:
                continue
            assert any(not p.disabled and not plan.pools[p.name].conflicting for p in homes), (
                s.key, text)


@settings(max_examples=60, deadline=None)
@given(pools(), services(), options, st.randoms(use_true_random=False))
def test_deterministic_under_permutation(ps: list[PoolInput], ss: list[ServiceInput],
                                         opts: Options, rnd: object) -> None:
    plan = allocate(ps, ss, options=opts)
    ps2, ss2 = list(ps), list(ss)
    rnd.shuffle(ps2)  # type: ignore[attr-defined]
    rnd.shuffle(ss2)  # type: ignore[attr-defined]
    assert allocate(ps2, ss2, options=opts) == plan


@settings(max_examples=100, deadline=None)
@given(pools(), services(), options)
def test_restart_moves_nothing(ps: list[PoolInput], ss: list[ServiceInput],
                               opts: Options) -> None:
    plan = allocate(ps, ss, options=opts)
    marked = [dataclasses.replace(p, conflict=plan.pools[p.name].conflict_message)
              if plan.pools.get(p.name) and plan.pools[p.name].conflicting else p for p in ps]
    assert allocate(ps, fed_back(ss, plan), options=opts) == plan
    assert allocate(marked, fed_back(ss, plan), options=opts) == plan
    # The operator's own memory (previous plan) gives the same answer as the status.
    assert allocate(ps, ss, previous=plan, options=opts) == plan


@settings(max_examples=60, deadline=None)
@given(pools(), services(), options, st.integers(0, 8))
def test_removing_a_service_moves_nobody_else(ps: list[PoolInput], ss: list[ServiceInput],
                                              opts: Options, victim: int) -> None:
    settled = fed_back(ss, allocate(ps, ss, options=opts))
    before = allocate(ps, settled, options=opts)
    if not settled:
        return
    gone = settled[victim % len(settled)]
    after = allocate(ps, [s for s in settled if s is not gone], options=opts)
    for key, r in after.services.items():
        old = before.services[key].ips
        assert r.ips[:len(old)] == old, key
