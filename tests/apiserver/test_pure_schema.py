"""CRD schema handling as the Kubernetes apiserver does it: the preinstalled Cilium CRDs
(names, scope, versions, printer columns), validation of good and bad pools, L2 policies and
network policies against the real schemas with Kubernetes' messages and field paths, each
schema keyword on its own, pruning of unknown fields and defaulting."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.apiserver.schema import (
    apply_schema_defaults,
    cause_reason,
    crd_schema,
    crd_version,
    load_builtin_crds,
    prepare_custom_resource,
    prune_unknown_fields,
    validate_against_schema,
)
from hexlane.model.errors import Problem

REPO = Path(__file__).resolve().parents[2]
CRDS = {c["spec"]["names"]["kind"]: c for c in load_builtin_crds()}


def schema_of(kind: str, version: str | None = None) -> dict:
    crd = CRDS[kind]
    version = version or crd["spec"]["versions"][0]["name"]
    schema = crd_schema(crd, version)
    assert schema is not None
    return schema


def check(kind: str, obj: dict, version: str | None = None) -> list[tuple[str, str]]:
    """What the server does: prune, default, validate."""
    _, problems = prepare_custom_resource(obj, schema_of(kind, version))
    return [(p.path, p.message) for p in problems]


def pool(spec: dict) -> dict:
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "p", "namespace": "kube-system"}, "spec": spec}


def l2(spec: dict) -> dict:
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
            "metadata": {"name": "l2"}, "spec": spec}


def cnp(spec: dict) -> dict:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": "np", "namespace": "default"}, "spec": spec}


# --- the CRDs ----------------------------------------------------------------------------------


def test_builtin_crds_names_scope_versions() -> None:
    expected = {
        "CiliumLoadBalancerIPPool": ("ciliumloadbalancerippools", "Cluster",
                                     ["v2alpha1", "v2"], ["ippools", "ippool", "lbippool",
                                                          "lbippools"]),
        "CiliumL2AnnouncementPolicy": ("ciliuml2announcementpolicies", "Cluster",
                                       ["v2alpha1"], ["l2announcement"]),
        "CiliumNetworkPolicy": ("ciliumnetworkpolicies", "Namespaced", ["v2"],
                                ["cnp", "ciliumnp"]),
        "CiliumClusterwideNetworkPolicy": ("ciliumclusterwidenetworkpolicies", "Cluster",
                                           ["v2"], ["ccnp"]),
        "CiliumNode": ("ciliumnodes", "Cluster", ["v2"], ["cn", "ciliumn"]),
        "CiliumIdentity": ("ciliumidentities", "Cluster", ["v2"], ["ciliumid"]),
    }
    assert set(CRDS) == set(expected)
    for kind, (plural, scope, versions, short) in expected.items():
        crd = CRDS[kind]
        assert crd["apiVersion"] == "apiextensions.k8s.io/v1"
        assert crd["metadata"]["name"] == f"{plural}.cilium.io"
        assert crd["spec"]["group"] == "cilium.io"
        assert crd["spec"]["scope"] == scope
        assert crd["spec"]["names"]["plural"] == plural
        assert crd["spec"]["names"]["shortNames"] == short
        assert [v["name"] for v in crd["spec"]["versions"]] == versions
        assert sum(1 for v in crd["spec"]["versions"] if v["storage"]) == 1
        for v in crd["spec"]["versions"]:
            assert v["served"] and v["subresources"] == {"status": {}}
            assert crd_version(crd, v["name"]) is v
    assert CRDS["CiliumLoadBalancerIPPool"]["spec"]["versions"][0]["storage"]


def test_pool_printer_columns_are_ciliums() -> None:
    for version in CRDS["CiliumLoadBalancerIPPool"]["spec"]["versions"]:
        cols = [(c["name"], c["type"], c["jsonPath"])
                for c in version["additionalPrinterColumns"]]
        assert cols == [
            ("Disabled", "boolean", ".spec.disabled"),
            ("Conflicting", "string",
             '.status.conditions[?(@.type=="cilium.io/PoolConflict")].status'),
            ("IPs Available", "string",
             '.status.conditions[?(@.type=="cilium.io/IPsAvailable")].message'),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]


def test_loader_returns_independent_copies() -> None:
    first = load_builtin_crds()
    first[0]["spec"]["group"] = "changed"
    assert load_builtin_crds()[0]["spec"]["group"] == "cilium.io"
    assert crd_version(first[0], "v9") is None and crd_schema(first[0], "v9") is None


# --- the seeds' manifests ----------------------------------------------------------------------


def example_objects() -> list[dict]:
    objs = []
    for path in sorted((REPO / "examples").rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in CRDS:
                objs.append(doc)
    return objs


def test_every_cilium_manifest_in_examples_is_valid() -> None:
    objs = example_objects()
    kinds = {o["kind"] for o in objs}
    assert {"CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy"} <= kinds
    for obj in objs:
        version = obj["apiVersion"].split("/")[1]
        assert check(obj["kind"], obj, version) == [], obj


def test_seed_pools_pass_in_both_versions() -> None:
    seeds = [{"blocks": [{"start": "10.0.0.100", "stop": "10.0.0.200"}]},
             {"blocks": [{"cidr": "10.20.30.100/30"}]},
             {"allowFirstLastIPs": "Yes", "blocks": [{"start": "192.168.0.220",
                                                      "stop": "192.168.0.239"}]},
             {"blocks": [{"cidr": "192.168.1.128/25"}]},
             {"cidrs": [{"cidr": "10.9.0.0/24"}]},
             {"blocks": [{"cidr": "2001:db8::/64"}], "disabled": True,
              "serviceSelector": {"matchExpressions": [
                  {"key": "color", "operator": "In", "values": ["blue"]}]}}]
    for spec in seeds:
        for version in ("v2alpha1", "v2"):
            assert check("CiliumLoadBalancerIPPool", pool(spec), version) == []


# --- bad pools ---------------------------------------------------------------------------------


def test_pool_with_a_bad_cidr_is_rejected_by_format() -> None:
    assert check("CiliumLoadBalancerIPPool", pool({"blocks": [{"cidr": "300.0.0.0/8"}]})) == [
        ("spec.blocks[0].cidr", 'Invalid value: "300.0.0.0/8": spec.blocks[0].cidr in body '
         'must be of type cidr: "300.0.0.0/8"')]
    # The seed's placeholder is not a CIDR either.
    assert check("CiliumLoadBalancerIPPool", pool({"blocks": [
        {"cidr": "<-- VALID CIDR RANGE FOR YOUR NETWORK -->"}]}))[0][0] == "spec.blocks[0].cidr"
    assert check("CiliumLoadBalancerIPPool", pool({"blocks": [{"cidr": "10.0.0.1"}]}))


def test_pool_start_and_stop_are_plain_strings_in_ciliums_schema() -> None:
    # Cilium checks start/stop in the operator (a pool condition), not in the CRD schema.
    assert check("CiliumLoadBalancerIPPool", pool({"blocks": [{"start": "not-an-ip"}]})) == []


def test_every_bad_field_of_a_pool_is_named() -> None:
    got = check("CiliumLoadBalancerIPPool", pool({
        "allowFirstLastIPs": "maybe",
        "disabled": "yes",
        "blocks": {"cidr": "10.0.0.0/24"},
        "serviceSelector": {"matchLabels": {"color": "x" * 64},
                            "matchExpressions": [{"key": "a", "operator": "Is"},
                                                 {"operator": "Exists"}]},
    }))
    assert sorted(got) == sorted([
        ("spec.allowFirstLastIPs",
         'Unsupported value: "maybe": supported values: "Yes", "No"'),
        ("spec.disabled", 'Invalid value: "string": spec.disabled in body must be of type '
         'boolean: "string"'),
        ("spec.blocks", 'Invalid value: "object": spec.blocks in body must be of type array: '
         '"object"'),
        ("spec.serviceSelector.matchLabels.color", "Too long: may not be more than 63 bytes"),
        ("spec.serviceSelector.matchExpressions[0].operator",
         'Unsupported value: "Is": supported values: "In", "NotIn", "Exists", "DoesNotExist"'),
        ("spec.serviceSelector.matchExpressions[1].key", "Required value"),
    ])


def test_pool_without_spec_and_bad_label_value() -> None:
    obj = pool({})
    del obj["spec"]
    assert check("CiliumLoadBalancerIPPool", obj) == [("spec", "Required value")]
    got = check("CiliumLoadBalancerIPPool",
                pool({"serviceSelector": {"matchLabels": {"a": "-bad-"}}}))
    assert got == [("spec.serviceSelector.matchLabels.a",
                    'Invalid value: "-bad-": spec.serviceSelector.matchLabels.a in body should '
                    "match '^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$'")]


def test_pool_status_conditions_are_checked() -> None:
    obj = pool({"blocks": [{"cidr": "10.0.0.0/24"}]})
    obj["status"] = {"conditions": [
        {"type": "cilium.io/IPsAvailable", "status": "Unknown", "reason": "noreason",
         "message": "256", "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "cilium.io/PoolConflict", "status": "Maybe", "reason": "",
         "message": "", "lastTransitionTime": "yesterday"},
        {"type": "cilium.io/IPsAvailable", "status": "True", "reason": "x", "message": "",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]}
    got = check("CiliumLoadBalancerIPPool", obj)

    def said(path: str, text: str) -> bool:
        return any(p == path and text in m for p, m in got)

    assert said("status.conditions[1].status", 'Unsupported value: "Maybe"')
    assert said("status.conditions[1].reason", "should be at least 1 chars long")
    assert said("status.conditions[1].reason", "should match")
    assert said("status.conditions[1].lastTransitionTime", "must be of type date-time")
    assert said("status.conditions[2]", "Duplicate value")
    assert len(got) == 5


# --- L2 policies and network policies ----------------------------------------------------------


def test_l2_policies() -> None:
    assert check("CiliumL2AnnouncementPolicy", l2({
        "nodeSelector": {"matchExpressions": [
            {"key": "node-role.kubernetes.io/control-plane", "operator": "DoesNotExist"}]},
        "interfaces": ["^eth[0-9]+", "ens192"], "externalIPs": True,
        "loadBalancerIPs": True})) == []
    got = check("CiliumL2AnnouncementPolicy", l2({"interfaces": "eth0",
                                                  "loadBalancerIPs": "true"}))
    assert got == [
        ("spec.interfaces", 'Invalid value: "string": spec.interfaces in body must be of type '
         'array: "string"'),
        ("spec.loadBalancerIPs", 'Invalid value: "string": spec.loadBalancerIPs in body must '
         'be of type boolean: "string"'),
    ]


def test_network_policy_good_and_bad() -> None:
    good = cnp({
        "endpointSelector": {"matchLabels": {"app": "web"}},
        "ingress": [{"fromEndpoints": [{"matchLabels": {"app": "client"}}],
                     "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}],
                                  "rules": {"http": [{"method": "GET", "path": "/"}]}}]}],
        "egress": [{"toFQDNs": [{"matchPattern": "*.example.com"}]},
                   {"toEntities": ["kube-apiserver"], "toCIDRSet": [
                       {"cidr": "10.0.0.0/8", "except": ["10.1.0.0/16"]}]},
                   {"icmps": [{"fields": [{"type": 8}, {"type": "EchoRequest",
                                                         "family": "IPv4"}]}]}],
    })
    assert check("CiliumNetworkPolicy", good) == []

    both = cnp({"endpointSelector": {}, "nodeSelector": {}})
    assert check("CiliumNetworkPolicy", both) == [
        ("spec", 'Invalid value: "object": spec in body must validate one and only one schema '
         "(oneOf). Found 2 valid alternatives")]
    assert check("CiliumNetworkPolicy", cnp({"ingress": []}))[0][1].endswith("Found none valid")

    bad = check("CiliumNetworkPolicy", cnp({
        "endpointSelector": {},
        "egress": [{"toPorts": [{"ports": [{"port": "http-", "protocol": "ICMP"}]}],
                    "toFQDNs": [{"matchName": "a.example", "matchPattern": "*.example"}],
                    "toEntities": ["everything"], "toCIDR": ["10.0.0.0/33"],
                    "icmps": [{"fields": [{"type": "Ping"}, {"type": True}]}]}],
    }))
    paths = {path for path, _ in bad}
    assert paths == {
        "spec.egress[0].toPorts[0].ports[0].port",  # a port name may not end with "-"
        "spec.egress[0].toPorts[0].ports[0].protocol",
        "spec.egress[0].toFQDNs[0]",
        "spec.egress[0].toEntities[0]",
        "spec.egress[0].toCIDR[0]",
        "spec.egress[0].icmps[0].fields[0].type",
        "spec.egress[0].icmps[0].fields[1].type",
    }


def test_network_policy_specs_list_and_clusterwide() -> None:
    obj = cnp({"endpointSelector": {}})
    obj["specs"] = [{"endpointSelector": {}, "ingress": [{}]}, {"egress": [{}]}]
    assert check("CiliumNetworkPolicy", obj) == [
        ("specs[1]", 'Invalid value: "object": specs[1] in body must validate one and only one '
         "schema (oneOf). Found none valid")]
    ccnp = {"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
            "metadata": {"name": "c"},
            "spec": {"nodeSelector": {"matchLabels": {"role": "worker"}},
                     "ingress": [{"fromEntities": ["world"]}]}}
    assert check("CiliumClusterwideNetworkPolicy", ccnp) == []


def test_cilium_node_and_identity() -> None:
    node = {"apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": "n1"},
            "spec": {"addresses": [{"type": "InternalIP", "ip": "10.0.0.11"}],
                     "ipam": {"podCIDRs": ["10.42.1.0/24"]}, "eni": {"anything": [1]}},
            "status": {"ipam": {"operator-status": {}}}}
    assert check("CiliumNode", node) == []
    node["status"]["ipam"]["pod-cidrs"] = {"10.42.1.0/24": {"status": "full"}}
    assert check("CiliumNode", node)[0][0] == 'status.ipam.pod-cidrs.10.42.1.0/24.status'
    ident = {"apiVersion": "cilium.io/v2", "kind": "CiliumIdentity",
             "metadata": {"name": "12345"}, "security-labels": {"k8s:app": "web"}}
    assert check("CiliumIdentity", ident) == []
    del ident["security-labels"]
    assert check("CiliumIdentity", ident) == [("security-labels", "Required value")]


# --- pruning and defaulting ---------------------------------------------------------------


def test_unknown_fields_are_pruned_and_defaults_filled() -> None:
    schema = schema_of("CiliumLoadBalancerIPPool")
    obj = pool({"blocks": [{"cidr": "10.0.0.0/24", "typo": 1}], "colour": "blue"})
    obj["metadata"]["labels"] = {"keep": "me"}
    obj["extra"] = {"x": 1}
    pruned = prune_unknown_fields(obj, schema)
    assert pruned["spec"] == {"blocks": [{"cidr": "10.0.0.0/24"}]}
    assert "extra" not in pruned
    assert pruned["metadata"] == obj["metadata"] and pruned["apiVersion"] == obj["apiVersion"]
    assert obj["spec"]["colour"] == "blue"  # the input is untouched
    assert apply_schema_defaults(pruned, schema)["spec"]["disabled"] is False
    assert apply_schema_defaults(pool({"disabled": True}), schema)["spec"]["disabled"] is True
    stored, problems = prepare_custom_resource(obj, schema)
    assert problems == []
    assert stored["spec"] == {"blocks": [{"cidr": "10.0.0.0/24"}], "disabled": False}


def test_preserve_unknown_fields_and_nulls() -> None:
    schema = {"type": "object", "properties": {
        "kept": {"type": "object", "x-kubernetes-preserve-unknown-fields": True,
                 "properties": {"n": {"type": "integer"}}},
        "map": {"type": "object", "additionalProperties": {"type": "object", "properties": {
            "a": {"type": "string"}}}},
        "maybe": {"type": "string", "nullable": True},
        "never": {"type": "string"},
        "anything": {"x-kubernetes-preserve-unknown-fields": True},
        "embedded": {"type": "object", "x-kubernetes-embedded-resource": True,
                     "properties": {"spec": {"type": "object"}}},
    }}
    obj = {"kept": {"n": 1, "other": {"deep": True}},
           "map": {"k": {"a": "x", "b": "dropped"}},
           "maybe": None, "never": None, "anything": {"free": [1, {"x": 2}]},
           "embedded": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                        "spec": {"x": 1}, "status": {}}}
    out = prune_unknown_fields(obj, schema)
    assert out["kept"] == obj["kept"]
    assert out["map"] == {"k": {"a": "x"}}
    assert "maybe" in out and "never" not in out
    assert out["anything"] == obj["anything"]
    assert out["embedded"] == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                               "spec": {}}
    assert validate_against_schema(out, schema) == []


# --- each keyword ----------------------------------------------------------------------------


@pytest.mark.parametrize(("sub", "value", "message"), [
    ({"type": "integer"}, "5", 'Invalid value: "string": x in body must be of type integer: '
                               '"string"'),
    ({"type": "integer"}, 1.5, 'Invalid value: "number": x in body must be of type integer: '
                               '"number"'),
    ({"type": "string"}, None, 'Invalid value: "null": x in body must be of type string: '
                               '"null"'),
    ({"type": "integer", "minimum": 0}, -1, "Invalid value: -1: x in body should be greater "
                                            "than or equal to 0"),
    ({"type": "integer", "minimum": 0, "exclusiveMinimum": True}, 0,
     "Invalid value: 0: x in body should be greater than 0"),
    ({"type": "number", "maximum": 1.5}, 2, "Invalid value: 2: x in body should be less than "
                                            "or equal to 1.5"),
    ({"type": "integer", "maximum": 10, "exclusiveMaximum": True}, 10,
     "Invalid value: 10: x in body should be less than 10"),
    ({"type": "integer", "multipleOf": 5}, 7, "Invalid value: 7: x in body should be a "
                                              "multiple of 5"),
    ({"type": "integer", "format": "int32"}, 1 << 40,
     f'Invalid value: {1 << 40}: x in body must be of type int32: {1 << 40}'),
    ({"type": "string", "minLength": 2}, "a", 'Invalid value: "a": x in body should be at '
                                              "least 2 chars long"),
    ({"type": "string", "maxLength": 2}, "abc", "Too long: may not be more than 2 bytes"),
    ({"type": "string", "pattern": "^[a-z]+$"}, "A", "Invalid value: \"A\": x in body should "
                                                     "match '^[a-z]+$'"),
    ({"type": "string", "enum": ["a", "b"]}, "c", 'Unsupported value: "c": supported values: '
                                                  '"a", "b"'),
    ({"type": "integer", "enum": [1, 2]}, 3, "Unsupported value: 3: supported values: 1, 2"),
    ({"type": "array", "maxItems": 1}, [1, 2], "Too many: 2: must have at most 1 items"),
    ({"type": "array", "minItems": 1}, [], "Invalid value: 0: x in body should have at least "
                                           "1 items"),
    ({"type": "string", "format": "ipv4"}, "1.2.3", 'Invalid value: "1.2.3": x in body must '
                                                    'be of type ipv4: "1.2.3"'),
    ({"type": "string", "format": "ipv6"}, "10.0.0.1", 'Invalid value: "10.0.0.1": x in body '
                                                       'must be of type ipv6: "10.0.0.1"'),
    ({"type": "string", "format": "date-time"}, "2026-01-01",
     'Invalid value: "2026-01-01": x in body must be of type date-time: "2026-01-01"'),
    ({"x-kubernetes-int-or-string": True}, 1.5,
     'Invalid value: "number": x in body must be of type integer,string: "number"'),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, [1],
     'Invalid value: "array": x in body must validate at least one schema (anyOf)'),
    ({"type": "array", "x-kubernetes-list-type": "set"}, ["a", "a"], 'Duplicate value: "a"'),
])
def test_each_keyword_reports_like_kubernetes(sub: dict, value: object, message: str) -> None:
    schema = {"type": "object", "properties": {"x": sub}}
    got = validate_against_schema({"x": value}, schema)
    assert [(p.path if "[" not in p.path else "x", p.message) for p in got] == [("x", message)]


@pytest.mark.parametrize(("sub", "value"), [
    ({"type": "number"}, 3),
    ({"type": "integer"}, 3.0),
    ({"type": "string", "nullable": True}, None),
    ({"x-kubernetes-int-or-string": True}, "50%"),
    ({"x-kubernetes-int-or-string": True}, 8080),
    ({"type": "string", "format": "cidr"}, "10.0.0.1/24"),  # host bits allowed, as in Go
    ({"type": "string", "format": "date-time"}, "2026-01-01T10:00:00.123456Z"),
    ({"type": "string", "format": "made-up"}, "whatever"),
    ({"type": "string", "pattern": "(unclosed"}, "x"),  # an unusable pattern is not applied
    ({"type": "object", "additionalProperties": {"type": "integer"}}, {"a": 1}),
    ({"allOf": [{"type": "integer"}, {"minimum": 1}]}, 2),
    ({"not": {"type": "string"}}, 1),
])
def test_values_that_conform(sub: dict, value: object) -> None:
    assert validate_against_schema({"x": value}, {"type": "object",
                                                  "properties": {"x": sub}}) == []


def test_cause_reasons() -> None:
    reasons = {msg: cause_reason(Problem(msg, "x")) for msg in [
        "Required value", 'Unsupported value: "a"', "Duplicate value: 1", "Forbidden: no",
        "Too long: may not be more than 2 bytes", "Too many: 3", 'Invalid value: "a": no']}
    assert list(reasons.values()) == [
        "FieldValueRequired", "FieldValueNotSupported", "FieldValueDuplicate",
        "FieldValueForbidden", "FieldValueTooLong", "FieldValueTooMany", "FieldValueInvalid"]


# --- robustness: any JSON body gets problems, never an exception ------------------------------

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 70000) | st.floats(allow_nan=False)
    | st.sampled_from(["", "10.0.0.0/24", "Yes", "In", "x" * 70, "EchoRequest", "80"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["blocks", "cidr", "start", "matchLabels", "matchExpressions", "key",
                         "operator", "ingress", "egress", "toPorts", "ports", "port",
                         "endpointSelector", "nodeSelector", "conditions", "type", "x"]),
        inner, max_size=4),
    max_leaves=15)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(CRDS)), spec=junk, status=junk)
def test_any_body_gives_problems_not_exceptions(kind: str, spec: object,
                                                status: object) -> None:
    schema = schema_of(kind)
    obj = {"apiVersion": "cilium.io/v2", "kind": kind, "metadata": {"name": "x"},
           "spec": spec, "status": status}
    stored, problems = prepare_custom_resource(obj, schema)
    assert all(isinstance(p, Problem) and p.message for p in problems)
    # Pruning is idempotent and what is stored is pruned.
    assert prune_unknown_fields(stored, schema) == prune_unknown_fields(
        prune_unknown_fields(stored, schema), schema)
