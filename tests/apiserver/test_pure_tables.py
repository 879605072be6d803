"""Table output for `kubectl get`: the columns and cells Kubernetes' server-side printers
produce for each built-in kind hexlane serves, priority (wide) columns, the object carried
per row, custom resources' additionalPrinterColumns through JSONPath (Cilium's pools), and
ages formatted like kubectl's."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.apiserver.schema import load_builtin_crds
from hexlane.apiserver.tables import (
    evaluate_jsonpath,
    format_label_selector,
    human_duration,
    parse_jsonpath,
    to_table,
)

NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def stamp(ago: timedelta) -> str:
    return (NOW - ago).strftime("%Y-%m-%dT%H:%M:%SZ")


def meta(name: str, ago: timedelta = timedelta(minutes=5), **extra: object) -> dict:
    return {"name": name, "namespace": "default", "creationTimestamp": stamp(ago),
            "uid": f"uid-{name}", **extra}


def table(kind: str, objs: list[dict], **kw: object) -> dict:
    return to_table(kind, objs, now=NOW, **kw)  # type: ignore[arg-type]


def headers(t: dict) -> list[str]:
    return [c["name"] for c in t["columnDefinitions"]]


def cells(t: dict) -> list[list[object]]:
    return [r["cells"] for r in t["rows"]]


# --- ages ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("seconds", "text"), [
    (-5, "<invalid>"), (-1, "0s"), (0, "0s"), (59, "59s"), (119, "119s"), (120, "2m"),
    (185, "3m5s"), (600, "10m"), (179 * 60, "179m"), (3 * 3600, "3h"),
    (5 * 3600 + 120, "5h2m"), (8 * 3600, "8h"), (47 * 3600, "47h"), (48 * 3600, "2d"),
    (2 * 86400 + 4 * 3600, "2d4h"), (8 * 86400, "8d"), (400 * 86400, "400d"),
    (730 * 86400, "2y"), (3 * 365 * 86400 + 12 * 86400, "3y12d"), (9 * 365 * 86400, "9y"),
])
def test_human_duration_like_kubectl(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text


# --- the table envelope -----------------------------------------------------------------------


def test_table_envelope_and_row_objects() -> None:
    cm = {"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}}
    t = table("ConfigMap", [cm])
    assert t["kind"] == "Table" and t["apiVersion"] == "meta.k8s.io/v1"
    assert t["columnDefinitions"][0] == {
        "name": "Name", "type": "string", "format": "name",
        "description": "Name must be unique within a namespace.", "priority": 0}
    assert headers(t) == ["Name", "Data", "Age"]
    assert cells(t) == [["cfg", 3, "5m"]]
    assert t["rows"][0]["object"] == {"kind": "PartialObjectMetadata",
                                      "apiVersion": "meta.k8s.io/v1", "metadata": cm["metadata"]}
    assert table("ConfigMap", [cm], include_object="Object")["rows"][0]["object"] is cm
    assert "object" not in table("ConfigMap", [cm], include_object="None")["rows"][0]
    assert table("ConfigMap", [])["rows"] == []


# --- Service ------------------------------------------------------------------------------------


def services() -> list[dict]:
    return [
        {"metadata": meta("kubernetes", timedelta(days=2, hours=4)),
         "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1",
                  "ports": [{"name": "https", "port": 443, "protocol": "TCP"}]}},
        {"metadata": meta("web"),
         "spec": {"type": "LoadBalancer", "clusterIP": "10.43.12.7",
                  "selector": {"tier": "front", "app": "web"},
                  "ports": [{"port": 80, "protocol": "TCP", "nodePort": 31234},
                            {"port": 53, "protocol": "UDP", "nodePort": 30053}]},
         "status": {"loadBalancer": {"ingress": [{"ip": "10.0.0.100"},
                                                 {"hostname": "lb.example"}]}}},
        {"metadata": meta("pending", timedelta(seconds=30)),
         "spec": {"type": "LoadBalancer", "clusterIP": "10.43.0.9",
                  "externalIPs": [], "ports": [{"port": 80, "protocol": "TCP"}]},
         "status": {"loadBalancer": {}}},
        {"metadata": meta("ext"),
         "spec": {"type": "ExternalName", "externalName": "db.example.com"}},
        {"metadata": meta("headless"),
         "spec": {"type": "ClusterIP", "clusterIP": "None", "externalIPs": ["192.0.2.5"],
                  "selector": {"app": "db"}}},
        {"metadata": meta("np"),
         "spec": {"type": "NodePort", "clusterIP": "10.43.0.20",
                  "ports": [{"port": 8080, "nodePort": 30080}]}},
    ]


def test_service_columns_and_cells() -> None:
    t = table("Service", services())
    assert headers(t) == ["Name", "Type", "Cluster-IP", "External-IP", "Port(s)", "Age"]
    assert cells(t) == [
        ["kubernetes", "ClusterIP", "10.43.0.1", "<none>", "443/TCP", "2d4h"],
        ["web", "LoadBalancer", "10.43.12.7", "10.0.0.100,lb.example", "80:31234/TCP,53:30053/UDP",
         "5m"],
        ["pending", "LoadBalancer", "10.43.0.9", "<pending>", "80/TCP", "30s"],
        ["ext", "ExternalName", "<none>", "db.example.com", "<none>", "5m"],
        ["headless", "ClusterIP", "None", "192.0.2.5", "<none>", "5m"],
        ["np", "NodePort", "10.43.0.20", "<none>", "8080:30080/TCP", "5m"],
    ]


def test_service_wide_adds_selector() -> None:
    t = table("Service", services(), wide=True)
    assert headers(t)[-1] == "Selector"
    assert t["columnDefinitions"][-1]["priority"] == 1
    assert [row[-1] for row in cells(t)] == ["<none>", "app=web,tier=front", "<none>", "<none>",
                                             "app=db", "<none>"]


# --- Pod ---------------------------------------------------------------------------------------


def pod(name: str, status: dict, *, spec: dict | None = None, **meta_extra: object) -> dict:
    return {"metadata": meta(name, **meta_extra),
            "spec": spec or {"nodeName": "node1", "containers": [{"name": "a"}, {"name": "b"}]},
            "status": status}


def running(name: str, ready: bool = True, restarts: int = 0) -> dict:
    cs: dict = {"name": name, "ready": ready, "restartCount": restarts,
                "state": {"running": {"startedAt": stamp(timedelta(minutes=4))}}}
    if restarts:
        cs["lastState"] = {"terminated": {"exitCode": 1,
                                          "finishedAt": stamp(timedelta(minutes=3))}}
    return cs


def test_pod_rows() -> None:
    pods = [
        pod("ok", {"phase": "Running", "podIP": "10.42.1.5",
                   "containerStatuses": [running("a"), running("b", restarts=2)]}),
        pod("half", {"phase": "Running", "containerStatuses": [running("a"),
                                                               running("b", ready=False)]}),
        pod("crash", {"phase": "Running", "containerStatuses": [
            running("a"), {"name": "b", "restartCount": 5, "ready": False,
                           "state": {"waiting": {"reason": "CrashLoopBackOff"}}}]}),
        pod("pending", {"phase": "Pending"}, spec={"containers": [{"name": "a"}]}),
        pod("init", {"phase": "Pending", "initContainerStatuses": [
            {"name": "i1", "state": {"terminated": {"exitCode": 0}}},
            {"name": "i2", "state": {"running": {}}}]},
            spec={"initContainers": [{"name": "i1"}, {"name": "i2"}],
                  "containers": [{"name": "a"}]}),
        pod("done", {"phase": "Succeeded", "containerStatuses": [
            {"name": "a", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]},
            spec={"containers": [{"name": "a"}]}),
        pod("going", {"phase": "Running", "containerStatuses": [running("a"), running("b")]},
            deletionTimestamp=stamp(timedelta(seconds=3))),
    ]
    t = table("Pod", pods)
    assert headers(t) == ["Name", "Ready", "Status", "Restarts", "Age"]
    assert cells(t) == [
        ["ok", "2/2", "Running", "2 (3m ago)", "5m"],
        ["half", "1/2", "Running", "0", "5m"],
        ["crash", "1/2", "CrashLoopBackOff", "5", "5m"],
        ["pending", "0/1", "Pending", "0", "5m"],
        ["init", "0/1", "Init:1/2", "0", "5m"],
        ["done", "0/1", "Completed", "0", "5m"],
        ["going", "2/2", "Terminating", "0", "5m"],
    ]
    assert t["rows"][5]["conditions"][0]["type"] == "Completed"
    wide = table("Pod", pods[:2], wide=True)
    assert headers(wide)[5:] == ["IP", "Node", "Nominated Node", "Readiness Gates"]
    assert [row[5:7] for row in cells(wide)] == [["10.42.1.5", "node1"], ["<none>", "node1"]]


# --- Node, Namespace, Deployment ---------------------------------------------------------------


def test_node_rows() -> None:
    nodes = [
        {"metadata": meta("node1", timedelta(hours=3), labels={
            "node-role.kubernetes.io/control-plane": "true",
            "node-role.kubernetes.io/master": "true", "kubernetes.io/os": "linux"}),
         "spec": {},
         "status": {"conditions": [{"type": "Ready", "status": "True"}],
                    "addresses": [{"type": "InternalIP", "address": "10.0.0.11"},
                                  {"type": "Hostname", "address": "node1"}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "hexlane lab",
                                 "kernelVersion": "6.18.0",
                                 "containerRuntimeVersion": "hexlane://0.1"}}},
        {"metadata": meta("node2", timedelta(hours=3)), "spec": {"unschedulable": True},
         "status": {"conditions": [{"type": "Ready", "status": "Unknown"}],
                    "nodeInfo": {"kubeletVersion": "v1.32.0"}}},
        {"metadata": meta("node3"), "status": {}},
    ]
    t = table("Node", nodes, wide=True)
    assert headers(t) == ["Name", "Status", "Roles", "Age", "Version", "Internal-IP",
                          "External-IP", "OS-Image", "Kernel-Version", "Container-Runtime"]
    assert cells(t) == [
        ["node1", "Ready", "control-plane,master", "3h", "v1.32.0", "10.0.0.11", "<none>",
         "hexlane lab", "6.18.0", "hexlane://0.1"],
        ["node2", "NotReady,SchedulingDisabled", "<none>", "3h", "v1.32.0", "<none>", "<none>",
         "<unknown>", "<unknown>", "<unknown>"],
        ["node3", "Unknown", "<none>", "5m", "", "<none>", "<none>", "<unknown>", "<unknown>",
         "<unknown>"],
    ]


def test_namespace_and_deployment_rows() -> None:
    ns = table("Namespace", [{"metadata": meta("kube-system"), "status": {"phase": "Active"}},
                             {"metadata": meta("old"), "status": {"phase": "Terminating"}}])
    assert headers(ns) == ["Name", "Status", "Age"]
    assert cells(ns) == [["kube-system", "Active", "5m"], ["old", "Terminating", "5m"]]
    dep = {"metadata": meta("web"),
           "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}},
                    "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1"},
                                                         {"name": "log", "image": "busybox"}]}}},
           "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}
    t = table("Deployment", [dep], wide=True)
    assert headers(t) == ["Name", "Ready", "Up-to-date", "Available", "Age", "Containers",
                          "Images", "Selector"]
    assert cells(t) == [["web", "2/3", 3, 2, "5m", "web,log", "nginx:1,busybox", "app=web"]]
    assert cells(table("Deployment", [{"metadata": meta("new"), "spec": {"replicas": 1}}])) == [
        ["new", "0/1", 0, 0, "5m"]]


# --- discovery, endpoints, leases, events, network policies ------------------------------------


def test_endpointslice_and_endpoints_rows() -> None:
    eps = {"metadata": meta("web-abcde"), "addressType": "IPv4",
           "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}, {"name": "x"}],
           "endpoints": [{"addresses": [f"10.42.0.{i}"]} for i in range(1, 6)]}
    empty = {"metadata": meta("web-empty"), "addressType": "IPv4", "endpoints": []}
    t = table("EndpointSlice", [eps, empty])
    assert headers(t) == ["Name", "AddressType", "Ports", "Endpoints", "Age"]
    assert cells(t) == [
        ["web-abcde", "IPv4", "8080,x", "10.42.0.1,10.42.0.2,10.42.0.3 + 2 more...", "5m"],
        ["web-empty", "IPv4", "<unset>", "<unset>", "5m"],
    ]
    ep = {"metadata": meta("web"), "subsets": [
        {"addresses": [{"ip": "10.42.0.1"}, {"ip": "10.42.0.2"}],
         "ports": [{"port": 80}, {"port": 443}]}]}
    t = table("Endpoints", [ep, {"metadata": meta("none")}])
    assert cells(t) == [["web", "10.42.0.1:80,10.42.0.2:80,10.42.0.1:443 + 1 more...", "5m"],
                        ["none", "<none>", "5m"]]


def test_lease_networkpolicy_and_event_rows() -> None:
    lease = {"metadata": meta("cilium-l2announce-default-web"),
             "spec": {"holderIdentity": "node2", "leaseDurationSeconds": 15}}
    assert cells(table("Lease", [lease, {"metadata": meta("free"), "spec": {}}])) == [
        ["cilium-l2announce-default-web", "node2", "5m"], ["free", "", "5m"]]
    np = {"metadata": meta("deny"), "spec": {"podSelector": {
        "matchLabels": {"app": "db"},
        "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]},
                             {"key": "legacy", "operator": "DoesNotExist"}]}}}
    everything = {"metadata": meta("all"), "spec": {"podSelector": {}}}
    t = table("NetworkPolicy", [np, everything])
    assert headers(t) == ["Name", "Pod-Selector", "Age"]
    assert cells(t) == [["deny", "app=db,!legacy,tier in (a,b)", "5m"], ["all", "<none>", "5m"]]
    event = {"metadata": meta("web.17a"), "type": "Warning", "reason": "FailedScheduling",
             "message": " no nodes available \n", "count": 4,
             "firstTimestamp": stamp(timedelta(minutes=20)),
             "lastTimestamp": stamp(timedelta(seconds=40)),
             "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec"},
             "source": {"component": "default-scheduler"}}
    t = table("Event", [event], wide=True)
    assert headers(t) == ["Last Seen", "Type", "Reason", "Object", "Subobject", "Source",
                          "Message", "First Seen", "Count", "Name"]
    assert cells(t) == [["40s", "Warning", "FailedScheduling", "pod/web-1", "spec",
                         "default-scheduler", "no nodes available", "20m", 4, "web.17a"]]
    assert headers(table("Event", [event])) == ["Last Seen", "Type", "Reason", "Object",
                                                "Message"]


def test_kinds_without_a_printer_get_name_and_created_at() -> None:
    crd = {"metadata": {"name": "ciliumnodes.cilium.io",
                        "creationTimestamp": "2026-03-01T11:00:00Z"}}
    t = table("CustomResourceDefinition", [crd])
    assert headers(t) == ["Name", "Created At"]
    assert cells(t) == [["ciliumnodes.cilium.io", "2026-03-01T11:00:00Z"]]


# --- custom resources --------------------------------------------------------------------------


def crd_columns(kind: str, version: str) -> list[dict]:
    crd = next(c for c in load_builtin_crds() if c["spec"]["names"]["kind"] == kind)
    entry = next(v for v in crd["spec"]["versions"] if v["name"] == version)
    return list(entry.get("additionalPrinterColumns") or [])


def test_cilium_pool_columns() -> None:
    cols = crd_columns("CiliumLoadBalancerIPPool", "v2alpha1")
    pools = [
        {"metadata": meta("first-pool", timedelta(days=3)),
         "spec": {"blocks": [{"start": "10.0.0.100", "stop": "10.0.0.200"}], "disabled": False},
         "status": {"conditions": [
             {"type": "cilium.io/IPsTotal", "status": "Unknown", "message": "101"},
             {"type": "cilium.io/IPsAvailable", "status": "Unknown", "message": "99"},
             {"type": "cilium.io/PoolConflict", "status": "False", "message": ""}]}},
        {"metadata": meta("new-pool", timedelta(seconds=2)), "spec": {"disabled": True}},
    ]
    t = table("CiliumLoadBalancerIPPool", pools, crd_columns=cols)
    assert headers(t) == ["Name", "Disabled", "Conflicting", "IPs Available", "Age"]
    assert [c["type"] for c in t["columnDefinitions"]] == ["string", "boolean", "string",
                                                           "string", "date"]
    assert cells(t) == [["first-pool", False, "False", "99", "3d"],
                        ["new-pool", True, None, None, "2s"]]


def test_crd_without_columns_gets_age_and_priority_columns_need_wide() -> None:
    obj = {"metadata": meta("x", timedelta(hours=1)), "spec": {"n": 3, "f": 1.5,
                                                               "list": [1, 2]}}
    t = table("Thing", [obj], crd_columns=[])
    assert headers(t) == ["Name", "Age"] and cells(t) == [["x", "60m"]]
    cols = [{"name": "N", "type": "integer", "jsonPath": ".spec.n"},
            {"name": "F", "type": "number", "jsonPath": ".spec.f", "priority": 1},
            {"name": "L", "type": "string", "jsonPath": ".spec.list"},
            {"name": "First", "type": "integer", "jsonPath": ".spec.list[*]"},
            {"name": "Bad", "type": "boolean", "jsonPath": ".spec.n"},
            {"name": "When", "type": "date", "jsonPath": ".spec.list"}]
    assert cells(table("Thing", [obj], crd_columns=cols)) == [["x", 3, "[1,2]", 1, None, None]]
    assert cells(table("Thing", [obj], crd_columns=cols, wide=True)) == [
        ["x", 3, 1.5, "[1,2]", 1, None, None]]


def test_cilium_node_and_identity_columns() -> None:
    node = {"metadata": meta("node1"), "spec": {"addresses": [
        {"type": "InternalIP", "ip": "10.0.0.11"}, {"type": "CiliumInternalIP",
                                                   "ip": "10.42.1.1"}]}}
    t = table("CiliumNode", [node], crd_columns=crd_columns("CiliumNode", "v2"))
    assert cells(t) == [["node1", "10.42.1.1", "10.0.0.11", "5m"]]
    ident = {"metadata": meta("1234", labels={"io.kubernetes.pod.namespace": "demo"})}
    t = table("CiliumIdentity", [ident], crd_columns=crd_columns("CiliumIdentity", "v2"))
    assert headers(t) == ["Name", "Namespace", "Age"] and cells(t) == [["1234", "demo", "5m"]]


@pytest.mark.parametrize(("path", "expected"), [
    (".spec.a", [1]),
    ("{.spec.a}", [1]),
    ("$.spec.a", [1]),
    (".spec.items[1].name", ["b"]),
    (".spec.items[-1].name", ["c"]),
    (".spec.items[*].name", ["a", "b", "c"]),
    (".spec.items[?(@.kind=='x')].name", ["a", "c"]),
    ('.spec.items[?(@.kind!="x")].name', ["b"]),
    (".spec.items[?(@.n > 1)].name", ["b", "c"]),
    (".spec.items[?(@.n)].name", ["b", "c"]),
    (".spec['dotted.key']", ["v"]),
    (r".spec.dotted\.key", ["v"]),
    (".spec.missing.deeper", []),
    (".spec.items[7]", []),
])
def test_jsonpath_subset(path: str, expected: list[object]) -> None:
    obj = {"spec": {"a": 1, "dotted.key": "v", "items": [{"name": "a", "kind": "x"},
                                                         {"name": "b", "kind": "y", "n": 2},
                                                         {"name": "c", "kind": "x", "n": 3}]}}
    steps = parse_jsonpath(path)
    assert steps is not None
    assert evaluate_jsonpath(steps, obj) == expected


@pytest.mark.parametrize("path", ["spec.a", ".spec[?(@.a ~ 1)]", ".spec[", ".a[?(foo)]"])
def test_unsupported_jsonpath_gives_none(path: str) -> None:
    assert parse_jsonpath(path) is None


def test_unsupported_jsonpath_column_is_empty() -> None:
    t = table("Thing", [{"metadata": meta("x")}],
              crd_columns=[{"name": "Odd", "type": "string", "jsonPath": ".a[?(foo)]"}])
    assert cells(t) == [["x", None]]


def test_format_label_selector_rejects_unknown_operators() -> None:
    assert format_label_selector({"matchExpressions": [{"key": "a", "operator": "Near"}]}) == \
        "<error>"
    assert format_label_selector(None) == "<none>"


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 5) | st.sampled_from(["", "x", "2026-01-01"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["metadata", "spec", "status", "ports", "conditions", "type", "name",
                         "containerStatuses", "state", "addresses", "subsets", "endpoints",
                         "creationTimestamp", "selector", "ingress", "loadBalancer",
                         "restartCount", "replicas", "template", "containers", "x"]),
        inner, max_size=4),
    max_leaves=20)
top_keys = st.sampled_from(["metadata", "spec", "status", "data", "subsets", "endpoints",
                            "ports", "involvedObject", "source", "count", "series"])


@settings(max_examples=80, deadline=None)
@given(kind=st.sampled_from(["Service", "Pod", "Node", "Namespace", "Deployment",
                             "EndpointSlice", "Endpoints", "Lease", "ConfigMap", "Event",
                             "NetworkPolicy", "Secret", "CiliumLoadBalancerIPPool"]),
       body=st.dictionaries(top_keys, junk, max_size=4))
def test_odd_objects_still_render(kind: str, body: dict) -> None:
    """Stored objects may be oddly shaped; a listing renders them instead of failing."""
    columns = crd_columns(kind, "v2alpha1") if kind.startswith("Cilium") else None
    t = table(kind, [body], wide=True, crd_columns=columns)
    assert len(t["rows"]) == 1
    assert len(t["rows"][0]["cells"]) == len(t["columnDefinitions"])
