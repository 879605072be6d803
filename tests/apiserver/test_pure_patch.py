"""PATCH semantics: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and Kubernetes'
strategic merge patch with its merge keys and directives, including the bodies `kubectl
apply` computes from the last-applied annotation for Services, Deployments, Pods,
ConfigMaps, EndpointSlices and Namespaces, and 415 for custom resources."""

from __future__ import annotations

import copy
import json

import jsonpatch
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.apiserver.patch import (
    JSON_PATCH,
    MERGE_PATCH,
    STRATEGIC_MERGE_PATCH,
    PatchError,
    UnsupportedPatchType,
    apply_patch,
    merge_patch,
    supports_strategic_merge,
)

LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
# Property tests here are cheap to check but costly to generate for; 40 cases each keep the
# module at a few seconds.
few = settings(max_examples=40, deadline=None)


def smp(current: dict, patch: dict, kind: str) -> dict:
    return apply_patch(current, patch, STRATEGIC_MERGE_PATCH, kind=kind)


def service() -> dict:
    return {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web",
                                                                         "tier": "front"},
                     "annotations": {LAST_APPLIED: "{}"}, "resourceVersion": "12"},
        "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.10",
                 "clusterIPs": ["10.43.0.10"], "selector": {"app": "web"},
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080,
                            "nodePort": 31000}],
                 "sessionAffinity": "None", "externalTrafficPolicy": "Cluster"},
        "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.100"}]}},
    }


def deployment() -> dict:
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "generation": 3},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": {"type": "RollingUpdate",
                         "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.25",
                     "ports": [{"containerPort": 80, "protocol": "TCP"},
                               {"containerPort": 8080, "protocol": "TCP"}],
                     "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
                    {"name": "sidecar", "image": "busybox:1"},
                ]},
            },
        },
    }


# --- JSON merge patch -------------------------------------------------------------------------


def test_merge_patch_sets_deletes_and_replaces_lists() -> None:
    svc = service()
    out = apply_patch(svc, {"metadata": {"labels": {"tier": None, "new": "x"}},
                            "spec": {"ports": [{"port": 443}]}}, MERGE_PATCH, kind="Service")
    assert out["metadata"]["labels"] == {"app": "web", "new": "x"}
    assert out["spec"]["ports"] == [{"port": 443}]  # lists are replaced whole
    assert svc == service()  # the input is not modified


def test_merge_patch_content_type_parameters_are_ignored() -> None:
    out = apply_patch({"a": 1}, {"b": 2}, "application/merge-patch+json; charset=utf-8",
                      kind="ConfigMap")
    assert out == {"a": 1, "b": 2}


def test_merge_patch_must_be_an_object() -> None:
    with pytest.raises(PatchError):
        apply_patch({"a": 1}, [1], MERGE_PATCH, kind="ConfigMap")


def test_status_writer_merge_patch_on_custom_resource() -> None:
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "p"}, "spec": {"blocks": [{"cidr": "10.0.0.0/24"}]}}
    patch = {"status": {"conditions": [{"type": "cilium.io/PoolConflict", "status": "False"}]}}
    out = apply_patch(pool, patch, MERGE_PATCH, kind="CiliumLoadBalancerIPPool")
    assert out["status"] == patch["status"]
    assert out["spec"] == pool["spec"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["a", "b", ""]),
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), inner, max_size=3),
    max_leaves=12,
)
json_objects = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), json_values, max_size=4)


@few
@given(json_objects, json_objects)
def test_merge_patch_is_idempotent(doc: dict, patch: dict) -> None:
    once = merge_patch(doc, patch)
    assert merge_patch(once, patch) == once


@few
@given(json_objects, json_objects)
def test_merge_patch_result_has_every_non_null_patch_value(doc: dict, patch: dict) -> None:
    out = merge_patch(doc, patch)
    for key, value in patch.items():
        if value is None:
            assert key not in out
        elif not isinstance(value, dict):
            assert out[key] == value


# --- JSON patch -------------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": "12"},
        {"op": "replace", "path": "/spec/ports/0/port", "value": 8080},
        {"op": "add", "path": "/metadata/labels/extra", "value": "1"},
        {"op": "remove", "path": "/metadata/labels/tier"},
        {"op": "add", "path": "/spec/externalIPs", "value": ["192.0.2.1"]},
    ]
    out = apply_patch(service(), ops, JSON_PATCH, kind="Service")
    assert out["spec"]["ports"][0]["port"] == 8080
    assert out["metadata"]["labels"] == {"app": "web", "extra": "1"}
    assert out["spec"]["externalIPs"] == ["192.0.2.1"]


@pytest.mark.parametrize("ops", [
    [{"op": "test", "path": "/metadata/resourceVersion", "value": "11"}],
    [{"op": "remove", "path": "/spec/nope"}],
    [{"op": "replace", "path": "/spec/ports/5/port", "value": 1}],
    [{"op": "frobnicate", "path": "/spec"}],
    [{"path": "/spec"}],
    {"op": "add"},
])
def test_json_patch_failures_are_patch_errors(ops: object) -> None:
    with pytest.raises(PatchError) as err:
        apply_patch(service(), ops, JSON_PATCH, kind="Service")
    assert not isinstance(err.value, UnsupportedPatchType)


@few
@given(json_objects, json_objects)
def test_json_patch_from_a_diff_reproduces_the_target(a: dict, b: dict) -> None:
    ops = json.loads(jsonpatch.make_patch(a, b).to_string())
    assert apply_patch(a, ops, JSON_PATCH, kind="CiliumNode") == b


# --- content types ----------------------------------------------------------------------------


def test_strategic_merge_on_a_custom_resource_is_415() -> None:
    assert not supports_strategic_merge("CiliumLoadBalancerIPPool")
    with pytest.raises(UnsupportedPatchType):
        smp({"spec": {}}, {"spec": {"disabled": True}}, "CiliumLoadBalancerIPPool")


@pytest.mark.parametrize("content_type", ["application/apply-patch+yaml", "application/json",
                                          "text/plain"])
def test_other_content_types_are_415(content_type: str) -> None:
    with pytest.raises(UnsupportedPatchType):
        apply_patch({"a": 1}, {"a": 2}, content_type, kind="ConfigMap")


# --- strategic merge: what kubectl apply sends --------------------------------------------------


def test_kubectl_apply_service_adds_a_port_and_drops_a_label() -> None:
    # last-applied had one port and label tier; the new manifest adds https, drops tier.
    patch = {
        "metadata": {"annotations": {LAST_APPLIED: '{"new":"config"}\n'},
                     "labels": {"tier": None}},
        "spec": {"$setElementOrder/ports": [{"port": 80}, {"port": 443}],
                 "ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
    }
    out = smp(service(), patch, "Service")
    assert out["metadata"]["labels"] == {"app": "web"}
    assert out["metadata"]["annotations"][LAST_APPLIED] == '{"new":"config"}\n'
    # The allocated nodePort of port 80 survives: ports merge by `port`.
    assert out["spec"]["ports"] == [
        {"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080, "nodePort": 31000},
        {"name": "https", "port": 443, "targetPort": 8443},
    ]
    assert out["spec"]["clusterIP"] == "10.43.0.10"
    assert out["status"] == service()["status"]


def test_kubectl_apply_service_removes_a_port_and_changes_type() -> None:
    svc = service()
    svc["spec"]["ports"].append({"name": "https", "port": 443, "protocol": "TCP",
                                 "targetPort": 443, "nodePort": 31001})
    patch = {"spec": {"$setElementOrder/ports": [{"port": 443}],
                      "ports": [{"$patch": "delete", "port": 80}],
                      "type": "ClusterIP", "externalTrafficPolicy": None}}
    out = smp(svc, patch, "Service")
    assert [p["port"] for p in out["spec"]["ports"]] == [443]
    assert out["spec"]["type"] == "ClusterIP"
    assert "externalTrafficPolicy" not in out["spec"]


def test_service_ports_with_the_same_number_are_told_apart_by_protocol() -> None:
    svc = {"spec": {"ports": [{"name": "dns-tcp", "port": 53, "protocol": "TCP"},
                              {"name": "dns-udp", "port": 53, "protocol": "UDP"}]}}
    out = smp(svc, {"spec": {"ports": [{"port": 53, "protocol": "UDP", "targetPort": 5353}]}},
              "Service")
    assert out["spec"]["ports"] == [
        {"name": "dns-tcp", "port": 53, "protocol": "TCP"},
        {"name": "dns-udp", "port": 53, "protocol": "UDP", "targetPort": 5353},
    ]


def test_kubectl_apply_deployment_image_env_port_and_strategy() -> None:
    patch = {"spec": {
        "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": None},
        "template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "sidecar"}],
            "containers": [{
                "name": "web", "image": "nginx:1.27",
                "$setElementOrder/env": [{"name": "A"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "B"}],
                "$setElementOrder/ports": [{"containerPort": 80}],
                "ports": [{"$patch": "delete", "containerPort": 8080}],
            }],
        }},
    }}
    out = smp(deployment(), patch, "Deployment")
    assert out["spec"]["strategy"] == {"type": "Recreate"}
    web, sidecar = out["spec"]["template"]["spec"]["containers"]
    assert web["image"] == "nginx:1.27"
    assert web["env"] == [{"name": "A", "value": "1"}, {"name": "C", "value": "3"}]
    assert web["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert sidecar == {"name": "sidecar", "image": "busybox:1"}
    assert out["spec"]["selector"] == {"matchLabels": {"app": "web"}}


def test_set_element_order_reorders_containers_and_keeps_server_only_items() -> None:
    dep = deployment()
    dep["spec"]["template"]["spec"]["containers"].insert(
        1, {"name": "injected", "image": "proxy:1"})  # added by someone else
    patch = {"spec": {"template": {"spec": {
        "$setElementOrder/containers": [{"name": "sidecar"}, {"name": "web"}]}}}}
    out = smp(dep, patch, "Deployment")
    names = [c["name"] for c in out["spec"]["template"]["spec"]["containers"]]
    assert names == ["sidecar", "web", "injected"]


def test_kubectl_apply_pod_finalizers_tolerations_and_volumes() -> None:
    pod = {
        "metadata": {"name": "p", "finalizers": ["a.example/x", "b.example/y"],
                     "ownerReferences": [{"uid": "u1", "kind": "ReplicaSet", "name": "rs"}]},
        "spec": {"tolerations": [{"key": "k", "operator": "Exists"}],
                 "volumes": [{"name": "data", "emptyDir": {}},
                             {"name": "cfg", "configMap": {"name": "c"}}],
                 "containers": [{"name": "app", "image": "x",
                                 "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]},
    }
    patch = {
        "metadata": {"$deleteFromPrimitiveList/finalizers": ["a.example/x"],
                     "$setElementOrder/finalizers": ["b.example/y", "c.example/z"],
                     "finalizers": ["c.example/z"],
                     "ownerReferences": [{"uid": "u1", "controller": True}]},
        "spec": {"tolerations": [{"key": "other", "operator": "Exists"}],
                 "volumes": [{"name": "data", "$retainKeys": ["hostPath", "name"],
                              "hostPath": {"path": "/srv"}}],
                 "containers": [{"name": "app", "volumeMounts": [
                     {"name": "cfg", "mountPath": "/etc/cfg"}]}]},
    }
    out = smp(pod, patch, "Pod")
    assert out["metadata"]["finalizers"] == ["b.example/y", "c.example/z"]
    assert out["metadata"]["ownerReferences"] == [
        {"uid": "u1", "kind": "ReplicaSet", "name": "rs", "controller": True}]
    assert out["spec"]["tolerations"] == [{"key": "other", "operator": "Exists"}]  # atomic
    assert out["spec"]["volumes"] == [{"name": "data", "hostPath": {"path": "/srv"}},
                                      {"name": "cfg", "configMap": {"name": "c"}}]
    assert out["spec"]["containers"][0]["volumeMounts"] == [
        {"name": "data", "mountPath": "/data"}, {"name": "cfg", "mountPath": "/etc/cfg"}]


def test_kubectl_apply_configmap_data() -> None:
    cm = {"metadata": {"name": "c"}, "data": {"keep": "1", "old": "2", "change": "3"}}
    out = smp(cm, {"data": {"old": None, "change": "4", "new": "5"}}, "ConfigMap")
    assert out["data"] == {"keep": "1", "change": "4", "new": "5"}


def test_kubectl_apply_endpointslice_lists_are_atomic() -> None:
    eps = {"addressType": "IPv4", "metadata": {"name": "web-abc"},
           "endpoints": [{"addresses": ["10.42.0.5"], "conditions": {"ready": True}},
                         {"addresses": ["10.42.1.7"], "conditions": {"ready": True}}],
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}
    patch = {"endpoints": [{"addresses": ["10.42.2.9"], "conditions": {"ready": False}}]}
    out = smp(eps, patch, "EndpointSlice")
    assert out["endpoints"] == patch["endpoints"]
    assert out["ports"] == eps["ports"]


def test_kubectl_apply_namespace_labels_and_status_conditions_by_type() -> None:
    ns = {"metadata": {"name": "demo", "labels": {"a": "1"}},
          "spec": {"finalizers": ["kubernetes"]},
          "status": {"phase": "Active", "conditions": [
              {"type": "NamespaceDeletionDiscoveryFailure", "status": "False"}]}}
    patch = {"metadata": {"labels": {"a": None, "b": "2"}},
             "status": {"conditions": [{"type": "NamespaceDeletionDiscoveryFailure",
                                        "status": "True"},
                                       {"type": "NamespaceContentRemaining",
                                        "status": "False"}]}}
    out = smp(ns, patch, "Namespace")
    assert out["metadata"]["labels"] == {"b": "2"}
    assert out["status"]["conditions"] == patch["status"]["conditions"]
    assert out["spec"] == {"finalizers": ["kubernetes"]}


def test_node_status_conditions_merge_by_type() -> None:
    node = {"status": {"conditions": [{"type": "Ready", "status": "True"},
                                      {"type": "MemoryPressure", "status": "False"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.11"}]}}
    out = smp(node, {"status": {"conditions": [{"type": "Ready", "status": "False",
                                                "reason": "KubeletDown"}]}}, "Node")
    assert out["status"]["conditions"] == [
        {"type": "Ready", "status": "False", "reason": "KubeletDown"},
        {"type": "MemoryPressure", "status": "False"}]
    assert out["status"]["addresses"] == node["status"]["addresses"]


# --- strategic merge directives ----------------------------------------------------------------


def test_patch_replace_and_delete_on_maps() -> None:
    svc = service()
    out = smp(svc, {"spec": {"selector": {"$patch": "replace", "app": "api"}}}, "Service")
    assert out["spec"]["selector"] == {"app": "api"}
    out = smp(svc, {"status": {"$patch": "delete"}}, "Service")
    assert "status" not in out


def test_patch_replace_element_replaces_a_merge_list() -> None:
    out = smp(deployment(), {"spec": {"template": {"spec": {"containers": [
        {"$patch": "replace"}, {"name": "only", "image": "x"}]}}}}, "Deployment")
    assert out["spec"]["template"]["spec"]["containers"] == [{"name": "only", "image": "x"}]


@pytest.mark.parametrize("patch", [
    {"spec": {"ports": [{"name": "no-port-key"}]}},  # merge key missing
    {"spec": {"$patch": "explode"}},
    {"spec": {"ports": [{"port": 80, "$patch": "explode"}]}},
    {"spec": {"ports": ["80"]}},
    {"$patch": "delete"},
    {"metadata": {"$retainKeys": "name"}},
])
def test_bad_strategic_patches_are_patch_errors(patch: dict) -> None:
    with pytest.raises(PatchError) as err:
        smp(service(), patch, "Service")
    assert not isinstance(err.value, UnsupportedPatchType)


names = st.sampled_from(["a", "b", "c", "d", "e"])
containers = st.lists(
    st.fixed_dictionaries({"name": names, "image": st.sampled_from(["x:1", "y:2", "z:3"])}),
    max_size=4, unique_by=lambda c: c["name"])


@few
@given(containers, containers)
def test_containers_merge_by_name(original: list[dict], patch_items: list[dict]) -> None:
    pod = {"spec": {"containers": copy.deepcopy(original)}}
    out = smp(pod, {"spec": {"containers": patch_items}}, "Pod")
    merged = out["spec"]["containers"]
    by_name = {c["name"]: c for c in merged}
    assert len(by_name) == len(merged)  # never two containers with one name
    assert set(by_name) == {c["name"] for c in original} | {c["name"] for c in patch_items}
    for item in patch_items:
        assert by_name[item["name"]]["image"] == item["image"]
    patched = {c["name"] for c in patch_items}
    for item in original:
        if item["name"] not in patched:
            assert by_name[item["name"]] == item


# Lists without nulls inside: a new list's nulls are discarded by strategic merge
# (IgnoreUnmatchedNulls) but kept by RFC 7386.
plain_scalars = st.none() | st.booleans() | st.integers(-5, 5) | st.sampled_from(["a", ""])
plain_leaves = plain_scalars | st.lists(st.integers(0, 3), max_size=3)
plain_values = plain_leaves | st.dictionaries(st.sampled_from(["a", "b", "c"]), plain_leaves,
                                              max_size=3)
plain_objects = st.dictionaries(st.sampled_from(["a", "b", "c", "d"]), plain_values, max_size=4)


@few
@given(json_objects, plain_objects)
def test_strategic_merge_without_merge_lists_or_directives_equals_merge_patch(
        doc: dict, patch: dict) -> None:
    assert smp(doc, patch, "ConfigMap") == merge_patch(doc, patch)


# --- robustness: a bad body is a PatchError, never another exception ---------------------------

smp_keys = st.sampled_from(["spec", "metadata", "containers", "ports", "name", "port",
                            "finalizers", "$patch", "$retainKeys", "$setElementOrder/ports",
                            "$deleteFromPrimitiveList/finalizers", "protocol", "x"])
smp_junk = st.recursive(
    st.none() | st.booleans() | st.integers(0, 3)
    | st.sampled_from(["delete", "replace", "merge", "a", "TCP"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(smp_keys, inner, max_size=4),
    max_leaves=20)


@few
@given(current=st.dictionaries(smp_keys, smp_junk, max_size=4),
       patch=st.dictionaries(smp_keys, smp_junk, max_size=4),
       kind=st.sampled_from(["Service", "Pod", "Deployment", "Node"]))
def test_any_strategic_patch_gives_a_result_or_a_patch_error(current: dict, patch: dict,
                                                              kind: str) -> None:
    try:
        out = smp(current, patch, kind)
    except PatchError:
        return
    assert isinstance(out, dict)
    # Directives are obeyed, never stored.
    assert not any(k.startswith("$") for k in out if k not in current)
