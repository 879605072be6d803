"""The embedded apiserver's REST semantics over real HTTP, as Kubernetes clients rely on them:
authentication (401), discovery and /version, create/get/update/patch/delete with their
Status errors (404 NotFound, 409 AlreadyExists and Conflict, 422 Invalid with causes),
generateName, generation, the status subresource, finalizers, namespaces (missing, cluster-
scoped kinds, cascading delete), Service allocation, CRD validation and run-time CRDs,
label/field selectors, limit/continue, Table output and the request counters in /metrics."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.timeout(120)


def _ns(api: Any) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    status, body = api.post("/api/v1/namespaces", {"metadata": {"name": name}})
    assert status == 201, body
    return name


def _cm(name: str, data: dict[str, str] | None = None, **meta: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **meta},
            "data": data or {"k": "v"}}


def test_requests_without_the_token_get_401(apiserver: Any) -> None:
    api = apiserver.api
    saved = api.token
    try:
        api.token = None
        status, body = api.get("/api/v1/namespaces")
        assert status == 401
        assert body["kind"] == "Status" and body["reason"] == "Unauthorized"
        api.token = "wrong"
        assert api.get("/version")[0] == 401
    finally:
        api.token = saved
    assert api.get("/api/v1/namespaces")[0] == 200


def test_version_and_discovery(api: Any) -> None:
    status, version = api.get("/version")
    assert status == 200 and version["major"] == "1" and version["minor"] == "32"
    assert version["gitVersion"].startswith("v1.32.")
    _, core = api.get("/api/v1")
    by_name = {r["name"]: r for r in core["resources"]}
    assert by_name["services"]["kind"] == "Service" and by_name["services"]["namespaced"]
    assert "svc" in by_name["services"]["shortNames"]
    assert by_name["services/status"]["verbs"] == ["get", "patch", "update"]
    assert not by_name["nodes"]["namespaced"]
    _, groups = api.get("/apis")
    names = {g["name"]: g for g in groups["groups"]}
    for group in ("apps", "discovery.k8s.io", "coordination.k8s.io", "networking.k8s.io",
                  "apiextensions.k8s.io", "cilium.io"):
        assert group in names, group
    versions = [v["version"] for v in names["cilium.io"]["versions"]]
    assert "v2" in versions and "v2alpha1" in versions
    _, cilium = api.get("/apis/cilium.io/v2alpha1")
    pools = next(r for r in cilium["resources"] if r["name"] == "ciliumloadbalancerippools")
    assert pools["namespaced"] is False and "ippools" in pools["shortNames"]
    assert any(r["name"] == "ciliumloadbalancerippools/status" for r in cilium["resources"])


def test_default_namespaces_and_kubernetes_service(apiserver: Any, api: Any) -> None:
    _, nss = api.get("/api/v1/namespaces")
    names = {n["metadata"]["name"] for n in nss["items"]}
    assert {"default", "kube-system", "kube-public", "kube-node-lease"} <= names
    status, svc = api.get("/api/v1/namespaces/default/services/kubernetes")
    assert status == 200
    assert svc["spec"]["clusterIP"] == "10.43.0.1"
    assert svc["spec"]["ports"][0]["port"] == 443
    _, eps = api.get("/api/v1/namespaces/default/endpoints/kubernetes")
    assert eps["subsets"][0]["addresses"][0]["ip"] == "127.0.0.1"
    assert eps["subsets"][0]["ports"][0]["port"] == apiserver.api.port
    _, eps_slice = api.get("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/"
                           "kubernetes")
    assert eps_slice["endpoints"][0]["addresses"] == ["127.0.0.1"]


def test_create_get_404_and_409(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    status, created = api.post(path, _cm("one"))
    assert status == 201
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"] and meta["generation"] == 1
    assert int(meta["resourceVersion"]) > 0 and meta["namespace"] == ns
    status, again = api.post(path, _cm("one"))
    assert status == 409 and again["reason"] == "AlreadyExists"
    assert again["details"] == {"name": "one", "kind": "configmaps"}
    status, missing = api.get(f"{path}/nope")
    assert status == 404
    assert missing["kind"] == "Status" and missing["reason"] == "NotFound"
    assert missing["details"] == {"name": "nope", "kind": "configmaps"}
    assert missing["message"] == 'configmaps "nope" not found'
    status, _ = api.get("/api/v1/nosuchresources")
    assert status == 404


def test_generate_name(api: Any) -> None:
    ns = _ns(api)
    body = _cm("")
    body["metadata"] = {"generateName": "gen-"}
    status, created = api.post(f"/api/v1/namespaces/{ns}/configmaps", body)
    assert status == 201
    name = created["metadata"]["name"]
    assert name.startswith("gen-") and len(name) == len("gen-") + 5


def test_namespaced_object_in_missing_namespace_is_404(api: Any) -> None:
    status, body = api.post("/api/v1/namespaces/does-not-exist/configmaps", _cm("x"))
    assert status == 404
    assert body["details"] == {"name": "does-not-exist", "kind": "namespaces"}


def test_cluster_scoped_kind_drops_namespace(api: Any) -> None:
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": f"p-{uuid.uuid4().hex[:6]}", "namespace": "kube-system"},
            "spec": {"blocks": [{"start": "10.0.0.100", "stop": "10.0.0.200"}]}}
    status, created = api.post("/apis/cilium.io/v2alpha1/ciliumloadbalancerippools", pool)
    assert status == 201, created
    assert "namespace" not in created["metadata"]
    assert created["apiVersion"] == "cilium.io/v2alpha1"
    status, as_v2 = api.get("/apis/cilium.io/v2/ciliumloadbalancerippools/"
                            + pool["metadata"]["name"])
    assert status == 200 and as_v2["apiVersion"] == "cilium.io/v2"
    assert as_v2["spec"]["blocks"] == pool["spec"]["blocks"]


def test_update_optimistic_concurrency_and_generation(api: Any) -> None:
    ns = _ns(api)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": [{"name": "c", "image": "x"}]}}}}
    _, created = api.post(path, dep)
    rv1 = created["metadata"]["resourceVersion"]
    # A label change is metadata: new resourceVersion, same generation.
    created["metadata"]["labels"] = {"tier": "front"}
    status, labelled = api.put(f"{path}/web", created)
    assert status == 200
    assert labelled["metadata"]["generation"] == 1
    assert int(labelled["metadata"]["resourceVersion"]) > int(rv1)
    # A stale resourceVersion is a 409 Conflict.
    stale = dict(created, spec=dict(created["spec"], replicas=3))
    stale["metadata"] = dict(created["metadata"], resourceVersion=rv1)
    status, body = api.put(f"{path}/web", stale)
    assert status == 409 and body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    # Without a resourceVersion the update is unconditional; a spec change bumps generation.
    stale["metadata"].pop("resourceVersion")
    status, updated = api.put(f"{path}/web", stale)
    assert status == 200 and updated["spec"]["replicas"] == 3
    assert updated["metadata"]["generation"] == 2
    # An update that changes nothing writes nothing.
    status, same = api.put(f"{path}/web", updated)
    assert status == 200
    assert same["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]


def test_status_subresource(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/services"
    svc = {"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer",
                                                "ports": [{"port": 80}]},
           "status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}}
    _, created = api.post(path, svc)
    assert created.get("status", {}).get("loadBalancer", {}).get("ingress") is None
    # A main-resource write does not change status...
    created["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}]}}
    _, updated = api.put(f"{path}/lb", created)
    assert not updated.get("status", {}).get("loadBalancer", {}).get("ingress")
    # ...a status write does, and ignores spec changes.
    body = dict(updated, status={"loadBalancer": {"ingress": [{"ip": "10.0.0.100"}]}})
    body["spec"] = dict(updated["spec"], sessionAffinity="ClientIP")
    status, st = api.put(f"{path}/lb/status", body)
    assert status == 200
    assert st["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.100"}]
    assert st["spec"]["sessionAffinity"] == "None"
    assert st["metadata"]["generation"] == updated["metadata"]["generation"]
    status, patched = api.patch(f"{path}/lb/status",
                                {"status": {"conditions": [{"type": "X", "status": "True",
                                                            "reason": "r", "message": "",
                                                            "lastTransitionTime":
                                                                "2024-01-01T00:00:00Z"}]}})
    assert status == 200 and patched["status"]["conditions"][0]["type"] == "X"
    assert patched["status"]["loadBalancer"]["ingress"] == [{"ip": "10.0.0.100"}]


def test_patch_kinds(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps/p"
    api.post(f"/api/v1/namespaces/{ns}/configmaps", _cm("p", {"a": "1", "b": "2"}))
    status, merged = api.patch(path, {"data": {"a": None, "c": "3"}})
    assert status == 200 and merged["data"] == {"b": "2", "c": "3"}
    status, jp = api.patch(path, [{"op": "add", "path": "/data/d", "value": "4"}],
                           "application/json-patch+json")
    assert status == 200 and jp["data"]["d"] == "4"
    status, smp = api.patch(path, {"metadata": {"labels": {"x": "y"}}},
                            "application/strategic-merge-patch+json")
    assert status == 200 and smp["metadata"]["labels"] == {"x": "y"}
    status, body = api.patch(path, {"metadata": {"resourceVersion": "1"}, "data": {"e": "5"}})
    assert status == 409 and body["reason"] == "Conflict"
    status, body = api.patch(path, [{"op": "test", "path": "/data/a", "value": "1"}],
                             "application/json-patch+json")
    assert status == 422
    status, body = api.patch(f"{path}-missing", {"data": {}})
    assert status == 404
    status, body = api.patch("/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/x", {},
                             "application/apply-patch+yaml")
    assert status in (404, 415)


def test_finalizers_keep_object_until_removed(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    api.post(path, _cm("fin", finalizers=["example.com/hold"]))
    status, deleting = api.delete(f"{path}/fin")
    assert status == 200 and deleting["metadata"]["deletionTimestamp"]
    status, still = api.get(f"{path}/fin")
    assert status == 200 and still["metadata"]["deletionTimestamp"]
    status, _gone = api.patch(f"{path}/fin", {"metadata": {"finalizers": None}})
    assert status == 200
    assert api.get(f"{path}/fin")[0] == 404


def test_delete_preconditions_and_namespace_cascade(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    api.post(path, _cm("a"))
    status, body = api.delete(f"{path}/a", {"preconditions": {"uid": "wrong"}})
    assert status == 409 and body["reason"] == "Conflict"
    assert api.delete(f"{path}/a")[0] == 200
    assert api.get(f"{path}/a")[0] == 404
    api.post(path, _cm("b"))
    status, _ = api.delete(f"/api/v1/namespaces/{ns}")
    assert status == 200
    assert api.get(f"{path}/b")[0] == 404
    assert api.get(f"/api/v1/namespaces/{ns}")[0] == 404
    status, _body = api.delete("/api/v1/namespaces/kube-system")
    assert status == 403


def test_service_allocation_and_taken_ip(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/services"
    status, a = api.post(path, {"metadata": {"name": "a"}, "spec": {
        "type": "NodePort", "ports": [{"port": 80}], "selector": {"app": "a"}}})
    assert status == 201, a
    ip = a["spec"]["clusterIP"]
    assert ip.startswith("10.43.") and ip != "10.43.0.1"
    assert a["spec"]["ports"][0]["protocol"] == "TCP"
    assert a["spec"]["ports"][0]["targetPort"] == 80
    node_port = a["spec"]["ports"][0]["nodePort"]
    assert 30000 <= node_port <= 32767
    status, b = api.post(path, {"metadata": {"name": "b"}, "spec": {
        "clusterIP": ip, "ports": [{"port": 80}]}})
    assert status == 422 and b["reason"] == "Invalid"
    assert any(c["field"].startswith("spec.clusterIP") for c in b["details"]["causes"])
    status, c = api.post(path, {"metadata": {"name": "c"}, "spec": {
        "type": "NodePort", "ports": [{"port": 80, "nodePort": node_port}]}})
    assert status == 422
    assert any("nodePort" in cause["field"] for cause in c["details"]["causes"])
    # Deleting the first frees its address and port.
    api.delete(f"{path}/a")
    status, d = api.post(path, {"metadata": {"name": "d"}, "spec": {
        "type": "NodePort", "clusterIP": ip, "ports": [{"port": 80, "nodePort": node_port}]}})
    assert status == 201, d


def test_crd_validation_names_every_bad_field(api: Any) -> None:
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "bad-pool"},
            "spec": {"blocks": [{"cidr": 42}], "disabled": "nope"}}
    status, body = api.post("/apis/cilium.io/v2alpha1/ciliumloadbalancerippools", pool)
    assert status == 422, body
    assert body["reason"] == "Invalid" and body["details"]["name"] == "bad-pool"
    fields = {c["field"] for c in body["details"]["causes"]}
    assert "spec.blocks[0].cidr" in fields and "spec.disabled" in fields
    assert all(c["reason"].startswith("FieldValue") for c in body["details"]["causes"])


def test_crd_registered_at_run_time_is_served(api: Any) -> None:
    crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
           "metadata": {"name": "widgets.example.com"},
           "spec": {"group": "example.com", "scope": "Namespaced",
                    "names": {"plural": "widgets", "singular": "widget", "kind": "Widget",
                              "shortNames": ["wd"]},
                    "versions": [{"name": "v1", "served": True, "storage": True,
                                  "schema": {"openAPIV3Schema": {"type": "object",
                                             "properties": {"spec": {"type": "object",
                                                            "properties": {"size": {
                                                                "type": "integer",
                                                                "minimum": 1}}}}}},
                                  "additionalPrinterColumns": [
                                      {"name": "Size", "type": "integer",
                                       "jsonPath": ".spec.size"}]}]}}
    status, created = api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert status == 201, created
    conditions = {c["type"]: c["status"] for c in created["status"]["conditions"]}
    assert conditions["Established"] == "True"
    _, disc = api.get("/apis/example.com/v1")
    assert disc["resources"][0]["name"] == "widgets"
    ns = _ns(api)
    path = f"/apis/example.com/v1/namespaces/{ns}/widgets"
    status, w = api.post(path, {"apiVersion": "example.com/v1", "kind": "Widget",
                                "metadata": {"name": "w"}, "spec": {"size": 3, "junk": 1}})
    assert status == 201, w
    assert w["spec"] == {"size": 3}  # unknown fields pruned, as Kubernetes does
    status, bad = api.post(path, {"apiVersion": "example.com/v1", "kind": "Widget",
                                  "metadata": {"name": "b"}, "spec": {"size": 0}})
    assert status == 422 and bad["details"]["causes"][0]["field"] == "spec.size"
    status, table = api.get(path, headers={
        "Accept": "application/json;as=Table;g=meta.k8s.io;v=v1"})
    assert table["kind"] == "Table"
    assert [c["name"] for c in table["columnDefinitions"]][:2] == ["Name", "Size"]
    assert table["rows"][0]["cells"][:2] == ["w", 3]
    assert api.delete("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                      "widgets.example.com")[0] == 200
    assert api.get(path)[0] == 404


def test_list_selectors_and_paging(api: Any) -> None:
    ns = _ns(api)
    path = f"/api/v1/namespaces/{ns}/configmaps"
    for i in range(7):
        api.post(path, _cm(f"c{i}", labels={"parity": "even" if i % 2 == 0 else "odd",
                                            "i": str(i)}))
    _, even = api.get(f"{path}?labelSelector=parity%3Deven")
    assert [o["metadata"]["name"] for o in even["items"]] == ["c0", "c2", "c4", "c6"]
    _, notin = api.get(f"{path}?labelSelector=i%20notin%20(0,1,2),parity!%3Dodd")
    assert [o["metadata"]["name"] for o in notin["items"]] == ["c4", "c6"]
    _, exists = api.get(f"{path}?labelSelector=!parity")
    assert exists["items"] == []
    _, by_name = api.get(f"/api/v1/configmaps?fieldSelector=metadata.name%3D%3Dc3,"
                         f"metadata.namespace%3D{ns}")
    assert [o["metadata"]["name"] for o in by_name["items"]] == ["c3"]
    _, not_name = api.get(f"{path}?fieldSelector=metadata.name!%3Dc3")
    assert len(not_name["items"]) == 6
    status, _body = api.get(f"{path}?fieldSelector=spec.bogus%3Dx")
    assert status == 400
    # Paging: pages of 3 with continue tokens, consistent as of the first page's rv.
    _, page1 = api.get(f"{path}?limit=3")
    assert len(page1["items"]) == 3 and page1["metadata"]["remainingItemCount"] == 4
    api.delete(f"{path}/c5")  # a change between pages does not show in the later pages
    token = page1["metadata"]["continue"]
    _, page2 = api.get(f"{path}?limit=3&continue={token}")
    _, page3 = api.get(f"{path}?limit=3&continue={page2['metadata']['continue']}")
    names = [o["metadata"]["name"] for p in (page1, page2, page3) for o in p["items"]]
    assert names == [f"c{i}" for i in range(7)]
    assert "continue" not in page3["metadata"]
    assert page2["metadata"]["resourceVersion"] == page1["metadata"]["resourceVersion"]


def test_pod_field_selector_spec_node_name(api: Any) -> None:
    ns = _ns(api)
    for name, node in (("p1", "n1"), ("p2", "n2"), ("p3", "")):
        spec: dict[str, Any] = {"containers": [{"name": "c", "image": "busybox"}]}
        if node:
            spec["nodeName"] = node
        assert api.post(f"/api/v1/namespaces/{ns}/pods",
                        {"metadata": {"name": name}, "spec": spec})[0] == 201
    _, on_n1 = api.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1")
    assert [p["metadata"]["name"] for p in on_n1["items"]] == ["p1"]
    _, unbound = api.get(f"/api/v1/namespaces/{ns}/pods?fieldSelector=spec.nodeName%3D")
    assert [p["metadata"]["name"] for p in unbound["items"]] == ["p3"]
    # A bound pod is deleted gracefully: it stays, marked, until deleted with grace 0.
    status, body = api.delete(f"/api/v1/namespaces/{ns}/pods/p1")
    assert status == 200 and body["metadata"]["deletionTimestamp"]
    assert api.get(f"/api/v1/namespaces/{ns}/pods/p1")[0] == 200
    api.delete(f"/api/v1/namespaces/{ns}/pods/p1", {"gracePeriodSeconds": 0})
    assert api.get(f"/api/v1/namespaces/{ns}/pods/p1")[0] == 404


def test_service_table_columns(api: Any) -> None:
    _, table = api.get("/api/v1/services", headers={
        "Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"})
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    columns = [c["name"] for c in table["columnDefinitions"]]
    for name in ("Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Selector"):
        assert name in columns
    row = next(r for r in table["rows"] if r["object"]["metadata"]["name"] == "kubernetes")
    assert row["object"]["kind"] == "PartialObjectMetadata"
    assert row["cells"][columns.index("Cluster-IP")] == "10.43.0.1"
    _, plain = api.get("/api/v1/services", headers={
        "Accept": "application/vnd.kubernetes.protobuf,application/json"})
    assert plain["kind"] == "ServiceList"


def test_metrics_count_requests_by_verb(apiserver: Any, api: Any) -> None:
    before = apiserver.metrics()
    api.get("/api/v1/namespaces/default/configmaps")
    api.get("/api/v1/namespaces/default/configmaps")
    api.get("/api/v1/namespaces/default/services/kubernetes")
    after = apiserver.metrics()
    assert after[("list", "configmaps")] - before.get(("list", "configmaps"), 0) == 2
    assert after[("get", "services")] - before.get(("get", "services"), 0) == 1


def test_pod_binding_sets_node_once(api: Any) -> None:
    ns = _ns(api)
    pods = f"/api/v1/namespaces/{ns}/pods"
    api.post(pods, {"metadata": {"name": "p"},
                    "spec": {"containers": [{"name": "c", "image": "busybox"}]}})
    binding = {"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"},
               "target": {"apiVersion": "v1", "kind": "Node", "name": "node1"}}
    status, body = api.post(f"{pods}/p/binding", binding)
    assert status == 201 and body["status"] == "Success"
    assert api.get(f"{pods}/p")[1]["spec"]["nodeName"] == "node1"
    status, body = api.post(f"{pods}/p/binding", binding)
    assert status == 409 and body["reason"] == "Conflict"


def test_token_file_and_kubeconfig(apiservers: Any, tmp_path: Any) -> None:
    token_file = tmp_path / "token.txt"
    token_file.write_text("s3cret-token\n")
    apiserver = apiservers("--token-file", str(token_file))
    config = yaml.safe_load(apiserver.kubeconfig.read_text())
    cluster = config["clusters"][0]["cluster"]
    assert cluster["server"].startswith("https://127.0.0.1:")
    assert base64.b64decode(cluster["certificate-authority-data"]) == (
        apiserver.data_dir / "tls.crt").read_bytes()
    assert config["users"][0]["user"]["token"] == "s3cret-token"
    assert not (apiserver.data_dir / "token").exists()
    api = apiserver.api
    assert api.get("/api/v1/namespaces")[0] == 200
    api.token = "other"
    assert api.get("/api/v1/namespaces")[0] == 401


def test_strict_field_validation_rejects_unknown_custom_resource_fields(api: Any) -> None:
    pool = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": "typo-pool"},
            "spec": {"blokcs": [{"cidr": "10.0.20.0/24"}], "blocks": [{"cidr": "10.0.20.0/24",
                                                                       "stat": "x"}]}}
    path = "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools"
    status, body = api.post(f"{path}?fieldValidation=Strict", pool)
    assert status == 400 and body["reason"] == "BadRequest"
    assert 'unknown field "spec.blokcs"' in body["message"]
    assert 'unknown field "spec.blocks[0].stat"' in body["message"]
    # Without Strict (kubectl 1.20, lightkube) unknown fields are pruned, as Kubernetes does.
    status, created = api.post(path, pool)
    assert status == 201 and created["spec"]["blocks"] == [{"cidr": "10.0.20.0/24"}]
    assert "blokcs" not in created["spec"]


def test_deployment_scale_subresource(api: Any) -> None:
    ns = _ns(api)
    path = f"/apis/apps/v1/namespaces/{ns}/deployments"
    api.post(path, {"metadata": {"name": "d"}, "spec": {
        "replicas": 1, "selector": {"matchLabels": {"app": "d"}},
        "template": {"metadata": {"labels": {"app": "d"}},
                     "spec": {"containers": [{"name": "c", "image": "x"}]}}}})
    status, scale = api.get(f"{path}/d/scale")
    assert status == 200 and scale["kind"] == "Scale"
    assert scale["spec"]["replicas"] == 1 and scale["status"]["selector"] == "app=d"
    status, patched = api.patch(f"{path}/d/scale", {"spec": {"replicas": 4}})
    assert status == 200 and patched["spec"]["replicas"] == 4
    _, dep = api.get(f"{path}/d")
    assert dep["spec"]["replicas"] == 4 and dep["metadata"]["generation"] == 2
    scale = dict(patched, spec={"replicas": -1})
    status, body = api.put(f"{path}/d/scale", scale)
    assert status == 422 and body["details"]["causes"][0]["field"] == "spec.replicas"
