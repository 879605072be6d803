"""Values merge like `helm -f a.yaml -f b.yaml --set ...` over the chart's defaults.

Pins down Helm 3's documented behaviour (pkg/cli/values mergeMaps, pkg/chartutil coalesce):
maps merge key by key, later files win, lists are replaced not appended, a map and a scalar
replace each other, `null` deletes a key (the default too), `--set` applies after all files,
and keys come out in the defaults' order followed by the user's own.
"""

from __future__ import annotations

from typing import Any

import pytest

from hexlane.config import coalesce, merge_maps, resolve_values

MERGES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("maps merge", {"a": {"x": 1}}, {"a": {"y": 2}}, {"a": {"x": 1, "y": 2}}),
    ("later scalar wins", {"a": {"x": 1}}, {"a": {"x": 2}}, {"a": {"x": 2}}),
    ("lists replaced", {"l": [1, 2, 3]}, {"l": [4]}, {"l": [4]}),
    ("map replaces scalar", {"a": 1}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ("scalar replaces map", {"a": {"x": 1}}, {"a": 1}, {"a": 1}),
    ("list replaces map", {"a": {"x": 1}}, {"a": [1]}, {"a": [1]}),
    ("null kept until coalesce", {"a": 1}, {"a": None}, {"a": None}),
    ("deep", {"a": {"b": {"c": 1, "d": 2}}}, {"a": {"b": {"d": 3}}},
     {"a": {"b": {"c": 1, "d": 3}}}),
    ("empty overlay", {"a": 1}, {}, {"a": 1}),
]


@pytest.mark.parametrize("name,base,overlay,expected", MERGES, ids=[m[0] for m in MERGES])
def test_merge_maps(name: str, base: dict[str, Any], overlay: dict[str, Any],
                    expected: dict[str, Any]) -> None:
    assert merge_maps(base, overlay) == expected


def test_merge_does_not_mutate_inputs() -> None:
    base = {"a": {"x": [1]}}
    overlay = {"a": {"y": {"z": 1}}}
    out = merge_maps(base, overlay)
    out["a"]["x"].append(2)
    out["a"]["y"]["z"] = 9
    assert base == {"a": {"x": [1]}}
    assert overlay == {"a": {"y": {"z": 1}}}


COALESCES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("defaults fill in", {"a": 1, "b": {"c": 2}}, {}, {"a": 1, "b": {"c": 2}}),
    ("user wins", {"a": 1}, {"a": 5}, {"a": 5}),
    ("nested fill", {"b": {"c": 2, "d": 3}}, {"b": {"c": 9}}, {"b": {"c": 9, "d": 3}}),
    ("null deletes default", {"a": 1, "b": 2}, {"a": None}, {"b": 2}),
    ("null deletes default map", {"a": {"x": 1}}, {"a": None}, {}),
    ("nested null", {"b": {"c": 2, "d": 3}}, {"b": {"c": None}}, {"b": {"d": 3}}),
    ("null for unknown key", {}, {"u": None, "v": {"w": None}}, {"v": {}}),
    ("user map over default scalar", {"a": 1}, {"a": {"x": 1}}, {"a": {"x": 1}}),
    ("user scalar over default map", {"a": {"x": 1}}, {"a": "yes"}, {"a": "yes"}),
    ("user list replaces default list", {"l": ["10.0.0.0/8"]}, {"l": ["a", "b"]},
     {"l": ["a", "b"]}),
]


@pytest.mark.parametrize("name,defaults,user,expected", COALESCES, ids=[c[0] for c in COALESCES])
def test_coalesce(name: str, defaults: dict[str, Any], user: dict[str, Any],
                  expected: dict[str, Any]) -> None:
    assert coalesce(defaults, user) == expected


def test_coalesce_orders_defaults_first_then_user_keys() -> None:
    out = coalesce({"b": 1, "a": 2}, {"z": 0, "a": 3})
    assert list(out) == ["b", "a", "z"]


def test_files_then_set_in_order() -> None:
    a = {"loadBalancer": {"algorithm": "maglev", "mode": "dsr"}, "routingMode": "native",
         "ipv4NativeRoutingCIDR": "10.244.0.0/16", "kubeProxyReplacement": True}
    b = {"loadBalancer": {"mode": "snat"}}
    values, problems = resolve_values([("a.yaml", a), ("b.yaml", b)],
                                      ["loadBalancer.algorithm=random"])
    assert [p for p in problems if p.severity == "error"] == []
    assert values.load_balancer.mode == "snat"  # b wins over a
    assert values.load_balancer.algorithm == "random"  # --set wins over files
    assert values.routing_mode == "native"  # untouched keys from a survive b


def test_set_flags_apply_in_order() -> None:
    values, _ = resolve_values([], ["maglev.tableSize=251", "maglev.tableSize=65521"])
    assert values.maglev.table_size == 65521


def test_null_in_a_later_file_removes_earlier_value_and_default() -> None:
    values, problems = resolve_values(
        [("a.yaml", {"hubble": {"listenAddress": ":5000"}}),
         ("b.yaml", {"hubble": {"listenAddress": None}})])
    assert "listenAddress" not in values.tree["hubble"]
    # the typed view falls back to the built-in default of a deleted key
    assert values.hubble.listen_address == ":4244"
    assert problems == []


def test_set_scalar_after_null_file_sets_again() -> None:
    values, _ = resolve_values([("a.yaml", {"cluster": {"name": None}})], ["cluster.name=lab"])
    assert values.tree["cluster"] == {"name": "lab", "id": 0}


def test_set_below_a_null_map_is_refused_like_helm() -> None:
    # Helm's strvals asserts the existing value is a map and fails on null.
    values, problems = resolve_values([("a.yaml", {"cluster": None})], ["cluster.name=lab"])
    [problem] = problems
    assert problem.file == "--set"
    assert "'cluster' is not a map" in problem.message
    assert "cluster" not in values.tree


def test_set_null_deletes() -> None:
    values, _ = resolve_values([("a.yaml", {"custom": {"x": 1, "y": 2}})], ["custom.x=null"])
    assert values.tree["custom"] == {"y": 2}


def test_set_list_replaces_file_list() -> None:
    values, _ = resolve_values(
        [("a.yaml", {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": ["10.1.0.0/16"]}}})],
        ["ipam.operator.clusterPoolIPv4PodCIDRList={10.2.0.0/16,10.3.0.0/16}"])
    assert values.tree["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"] == [
        "10.2.0.0/16", "10.3.0.0/16"]
