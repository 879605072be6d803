"""CiliumLoadBalancerIPPool and CiliumL2AnnouncementPolicy: what is accepted (every seed
form), what each block means, and that every problem is reported with its field path."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
from model_helpers import errors

from hexlane.model import IPBlock, L2AnnouncementPolicy, LBIPPool
from hexlane.model.selectors import LabelSelector


def pool(spec: dict[str, Any], api: str = "cilium.io/v2alpha1", **meta: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "first-pool", **meta}, "spec": spec}


def test_seed_pool_with_namespace_and_allow_first_last() -> None:
    p = LBIPPool.parse(pool({"allowFirstLastIPs": "Yes",
                             "blocks": [{"start": "10.0.0.100", "stop": "10.0.0.200"}]},
                            namespace="kube-system"))
    assert p.name == "first-pool"
    assert p.meta.namespace == ""  # cluster-scoped: namespace ignored
    assert p.allow_first_last_ips == "Yes" and not p.reserve_first_last
    (b,) = p.blocks
    assert (b.first, b.last, b.size) == (ipaddress.ip_address("10.0.0.100"),
                                         ipaddress.ip_address("10.0.0.200"), 101)
    assert not b.from_cidr
    assert p.service_selector is None and p.selects({"anything": "x"})


def test_cidr_start_alone_and_v2() -> None:
    p = LBIPPool.parse(pool({"allowFirstLastIPs": "No",
                             "blocks": [{"cidr": "10.20.30.100/30"}, {"start": "10.0.0.5"}]},
                            api="cilium.io/v2"))
    a, b = p.blocks
    assert a.from_cidr and str(a.first) == "10.20.30.100" and str(a.last) == "10.20.30.103"
    assert b.first == b.last and b.size == 1
    assert p.reserve_first_last and p.api_version == "cilium.io/v2"


def test_host_bits_are_masked_with_a_warning() -> None:
    p = LBIPPool.parse(pool({"blocks": [{"cidr": "10.0.0.5/24"}]}))
    assert str(p.blocks[0].first) == "10.0.0.0" and str(p.blocks[0].last) == "10.0.0.255"
    assert [w.path for w in p.warnings] == ["spec.blocks[0].cidr"]


def test_deprecated_cidrs_are_read_in_v2alpha1() -> None:
    p = LBIPPool.parse(pool({"cidrs": [{"cidr": "fd00::/120"}]}))
    assert p.blocks[0].family == "IPv6" and p.blocks[0].size == 256
    assert any("deprecated" in w.message for w in p.warnings)


def test_empty_selector_is_not_nil() -> None:
    p = LBIPPool.parse(pool({"blocks": [{"cidr": "10.0.0.0/24"}], "serviceSelector": {}}))
    assert p.service_selector == LabelSelector()
    p2 = LBIPPool.parse(pool({"blocks": [{"cidr": "10.0.0.0/24"}],
                              "serviceSelector": {"matchLabels": {"color": "blue"}}}))
    assert p2.selects({"color": "blue"}) and not p2.selects({"color": "red"})


@pytest.mark.parametrize(("blocks", "path", "fragment"), [
    ([{"cidr": "10.0.0.0/33"}], "spec.blocks[0].cidr", "prefix length 33"),
    ([{"cidr": "10.0.0.0"}], "spec.blocks[0].cidr", "no prefix length"),
    ([{"cidr": "10.0.0.0/255.255.255.0"}], "spec.blocks[0].cidr", "bad prefix length"),
    ([{"start": "10.0.0.300"}], "spec.blocks[0].start", "invalid IP address"),
    ([{"start": "10.0.0.1", "stop": "nope"}], "spec.blocks[0].stop", "invalid IP address"),
    ([{"start": "10.0.0.9", "stop": "10.0.0.1"}], "spec.blocks[0].stop", "after stop"),
    ([{"start": "10.0.0.1", "stop": "fd00::1"}], "spec.blocks[0].stop", "address family"),
    ([{"stop": "10.0.0.1"}], "spec.blocks[0].start", "without start"),
    ([{"cidr": "10.0.0.0/24", "start": "10.0.0.1"}], "spec.blocks[0]", "not both"),
    ([{}], "spec.blocks[0]", "empty block"),
    ([], "spec.blocks", "at least one block"),
    ("10.0.0.0/24", "spec.blocks", "expected a list"),
    ([{"start": "fe80::1%eth0"}], "spec.blocks[0].start", "zone"),
])
def test_bad_blocks(blocks: Any, path: str, fragment: str) -> None:
    found = errors(LBIPPool, pool({"blocks": blocks}))
    assert any(p == path and fragment in m for p, m in found), found


def test_every_problem_is_reported_at_once() -> None:
    found = errors(LBIPPool, pool({"allowFirstLastIPs": True,
                                   "blocks": [{"start": "x"}, {"cidr": "y"}],
                                   "serviceSelector": {"matchExpressions": [
                                       {"key": "a", "operator": "In"}]}},
                                  api="cilium.io/v1"))
    paths = {p for p, _ in found}
    assert paths == {"apiVersion", "spec.allowFirstLastIPs", "spec.blocks[0].start",
                     "spec.blocks[1].cidr", "spec.serviceSelector.matchExpressions[0].values"}


def test_overlapping_blocks_warn() -> None:
    p = LBIPPool.parse(pool({"blocks": [{"cidr": "10.0.0.0/24"},
                                        {"start": "10.0.0.10", "stop": "10.0.0.20"}]}))
    assert any(w.path == "spec.blocks[1]" and "overlaps" in w.message for w in p.warnings)


def test_ipblock_contains() -> None:
    b = IPBlock.parse({"start": "10.0.0.1", "stop": "10.0.0.3"})
    assert "10.0.0.2" in b and "10.0.0.4" not in b and "fd00::1" not in b and "x" not in b


def l2(spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
            "metadata": {"name": "default-l2-announcement-policy", "namespace": "kube-system"},
            "spec": spec}


def test_seed_l2_policy() -> None:
    p = L2AnnouncementPolicy.parse(l2({"nodeSelector": {}, "interfaces": ["ens192",
                                                                          "^eth[0-9]+"],
                                       "externalIPs": True, "loadBalancerIPs": True}))
    assert p.node_selector == LabelSelector() and p.service_selector is None
    assert p.matches_interface("eth0") and p.matches_interface("ens192")
    assert not p.matches_interface("wlan0")
    assert p.matches_interface("xens192y")  # unanchored, as Go's MatchString
    assert p.external_ips and p.load_balancer_ips


def test_l2_defaults_and_all_interfaces() -> None:
    p = L2AnnouncementPolicy.parse(l2({"loadBalancerIPs": True}))
    assert not p.external_ips and p.matches_interface("anything")
    q = L2AnnouncementPolicy.parse(l2({}))
    assert not q.load_balancer_ips and any("announces nothing" in w.message
                                           for w in q.warnings)


@pytest.mark.parametrize(("pattern", "fragment"), [
    ("(a)\\1", "backreference"),
    ("eth(?=0)", "lookahead"),
    ("(?<!x)eth", "lookbehind"),
    ("(?>eth)", "atomic group"),
    ("eth++", "possessive"),
    ("eth[0-", "invalid regular expression"),
    ("a{2000}", "limit"),
])
def test_bad_interface_regexes(pattern: str, fragment: str) -> None:
    found = errors(L2AnnouncementPolicy,
                   l2({"interfaces": ["eth0", pattern], "loadBalancerIPs": True}))
    assert any(p == "spec.interfaces[1]" and fragment in m for p, m in found), found


def test_round_trip() -> None:
    for obj in (pool({"blocks": [{"cidr": "10.0.0.0/24"}, {"start": "10.1.0.1"}],
                      "serviceSelector": {"matchLabels": {"a": "b"}}, "disabled": True}),
                l2({"interfaces": ["^eth"], "serviceSelector": {"matchLabels": {"x": "y"}},
                    "loadBalancerIPs": True})):
        cls: Any = LBIPPool if obj["kind"] == "CiliumLoadBalancerIPPool" else \
            L2AnnouncementPolicy
        parsed = cls.parse(obj)
        assert cls.parse(parsed.to_dict()) == parsed


@pytest.mark.parametrize(("pattern", "matches", "misses"), [
    ("^eth[0-9]+\\z", "eth0", "eth0x"),          # RE2's end of text
    ("^(?<kind>eth|ens)[0-9]", "ens192", "wlan0"),  # RE2/Go 1.22 named group
    ("enp0s25", "enp0s25", "enp0s2"),
    ("^(eth|ens)", "ens3", "veth0"),
])
def test_re2_spellings_python_lacks_are_translated(pattern: str, matches: str,
                                                   misses: str) -> None:
    p = L2AnnouncementPolicy.parse(l2({"interfaces": [pattern], "loadBalancerIPs": True}))
    assert p.matches_interface(matches) and not p.matches_interface(misses)
