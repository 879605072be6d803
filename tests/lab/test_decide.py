"""The lab controllers' decisions, as pure functions of objects: which node a pod goes to,
what a Deployment creates and deletes (scale, rolling replace, status), which objects the
garbage collector removes, what EndpointSlices a Service gets (conditions, named ports,
labels), which pod CIDR each node gets in `ipam.mode: kubernetes`, and which nodes' leases
have run out."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.lab import decide
from hexlane.lab.podspec import fits, pre_stop_seconds, workload_ports


def node(name: str, *, ready: bool = True, labels: dict[str, str] | None = None,
         taints: list[dict[str, Any]] | None = None, pod_cidr: str | None = None,
         created: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if taints:
        spec["taints"] = taints
    if pod_cidr:
        spec["podCIDR"] = pod_cidr
    return {"metadata": {"name": name, "labels": labels or {}, "creationTimestamp": created},
            "spec": spec,
            "status": {"conditions": [{"type": "Ready",
                                       "status": "True" if ready else "False"}]}}


def pod(name: str, *, node_name: str = "", labels: dict[str, str] | None = None,
        ready: bool = True, ip: str = "", deleting: bool = False, owner: str = "",
        created: str = "2026-01-01T00:00:00Z", ports: list[dict[str, Any]] | None = None,
        phase: str = "Running", **spec: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": "default", "uid": f"uid-{name}",
                            "labels": labels or {}, "creationTimestamp": created}
    if deleting:
        meta["deletionTimestamp"] = "2026-01-01T00:01:00Z"
    if owner:
        meta["ownerReferences"] = [{"kind": "Deployment", "uid": owner, "controller": True,
                                    "name": "d", "apiVersion": "apps/v1"}]
    body: dict[str, Any] = {"containers": [{"name": "c", "ports": ports or []}], **spec}
    if node_name:
        body["nodeName"] = node_name
    status: dict[str, Any] = {"phase": phase if node_name else "Pending",
                              "conditions": [{"type": "Ready",
                                              "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    return {"metadata": meta, "spec": body, "status": status}


# --- scheduler ----------------------------------------------------------------


def test_scheduler_picks_the_ready_node_with_fewest_pods_then_by_name() -> None:
    nodes = [node("node1"), node("node2"), node("node3", ready=False)]
    p = pod("new")
    assert decide.choose_node(p, nodes, []) == "node1"
    bound = [pod("a", node_name="node1"), pod("b", node_name="node1"),
             pod("c", node_name="node2")]
    assert decide.choose_node(p, nodes, bound) == "node2"
    # Terminating pods no longer count against their node.
    bound = [pod("a", node_name="node2", deleting=True), pod("c", node_name="node1")]
    assert decide.choose_node(p, nodes, bound) == "node2"


def test_scheduler_respects_node_selector_affinity_and_taints() -> None:
    nodes = [node("node1", labels={"disk": "ssd"}),
             node("node2", taints=[{"key": "dedicated", "value": "x", "effect": "NoSchedule"}])]
    assert decide.choose_node(pod("p", nodeSelector={"disk": "ssd"}), nodes, []) == "node1"
    assert decide.choose_node(pod("p", nodeSelector={"disk": "hdd"}), nodes, []) is None
    tolerant = pod("p", tolerations=[{"key": "dedicated", "operator": "Exists"}],
                   nodeSelector={})
    busy = [pod("a", node_name="node1")]
    assert decide.choose_node(tolerant, nodes, busy) == "node2"
    assert not fits(pod("p"), nodes[1])
    affinity = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [
            {"key": "disk", "operator": "In", "values": ["ssd"]}]}]}}}
    assert decide.choose_node(pod("p", affinity=affinity), nodes, busy) == "node1"


def test_unschedulable_message_counts_reasons_as_kube_scheduler() -> None:
    nodes = [node("n1", ready=False), node("n2", labels={"disk": "ssd"}),
             node("n3", labels={"disk": "hdd"}, taints=[{"key": "k", "effect": "NoSchedule"}])]
    p = pod("p", nodeSelector={"disk": "hdd"})
    assert decide.choose_node(p, nodes, []) is None
    assert decide.unschedulable_reason(p, nodes) == (
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "1 node(s) had untolerated taint, 1 node(s) were not ready.")
    assert decide.unschedulable_reason(p, []) == "0/0 nodes are available."


def test_only_unbound_live_default_scheduler_pods_want_scheduling() -> None:
    assert decide.wants_scheduling(pod("p"))
    assert not decide.wants_scheduling(pod("p", node_name="node1"))
    assert not decide.wants_scheduling(pod("p", deleting=True))
    assert not decide.wants_scheduling(pod("p", schedulerName="other"))


# --- deployments --------------------------------------------------------------


def deployment(replicas: int, *, image: str = "nginx", strategy: dict[str, Any] | None = None,
               uid: str = "dep-uid") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}},
                     "spec": {"containers": [{"name": "c", "image": image}]}}}
    if strategy:
        spec["strategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "uid": uid, "generation": 3},
            "spec": spec}


def owned(dep: dict[str, Any], name: str, **kw: Any) -> dict[str, Any]:
    h = decide.template_hash(dep["spec"]["template"])
    return pod(name, owner=dep["metadata"]["uid"],
               labels={"app": "web", decide.TEMPLATE_HASH_LABEL: kw.pop("hash", h)}, **kw)


def test_deployment_creates_missing_pods_owned_by_it() -> None:
    dep = deployment(3)
    plan = decide.plan_deployment(dep, [owned(dep, "a", node_name="n1")])
    assert len(plan.create) == 2 and not plan.delete
    body = plan.create[0]
    h = decide.template_hash(dep["spec"]["template"])
    assert body["metadata"]["generateName"] == f"web-{h}-"
    assert body["metadata"]["labels"] == {"app": "web", "pod-template-hash": h}
    ref = body["metadata"]["ownerReferences"][0]
    assert (ref["kind"], ref["uid"], ref["controller"]) == ("Deployment", "dep-uid", True)
    assert body["spec"] == dep["spec"]["template"]["spec"]
    assert plan.status["replicas"] == 1 and plan.status["readyReplicas"] == 1


def test_scale_down_deletes_unscheduled_then_unready_then_newest() -> None:
    dep = deployment(1)
    pods = [owned(dep, "old-ready", node_name="n1", created="2026-01-01T00:00:00Z"),
            owned(dep, "new-ready", node_name="n1", created="2026-01-02T00:00:00Z"),
            owned(dep, "unready", node_name="n2", ready=False),
            owned(dep, "pending")]
    plan = decide.plan_deployment(dep, pods)
    assert plan.delete == ["pending", "unready", "new-ready"]
    assert not plan.create


def test_terminating_pods_are_not_counted_or_deleted_again() -> None:
    dep = deployment(2)
    pods = [owned(dep, "a", node_name="n1"), owned(dep, "b", node_name="n1"),
            owned(dep, "gone", node_name="n1", deleting=True)]
    plan = decide.plan_deployment(dep, pods)
    assert not plan.create and not plan.delete
    assert plan.status["replicas"] == 2 and plan.status["unavailableReplicas"] == 0


def test_rolling_update_replaces_old_pods_as_new_ones_become_ready() -> None:
    old_dep = deployment(2, image="v1")
    dep = deployment(2, image="v2")
    old = [owned(old_dep, "o1", node_name="n1"), owned(old_dep, "o2", node_name="n1")]
    # Step 1: new pods are created, no old pod goes (2 replicas: maxUnavailable 25% = 0).
    plan = decide.plan_deployment(dep, old)
    assert len(plan.create) == 2 and plan.delete == []
    # Step 2: one new pod ready -> one old pod may go.
    new = [owned(dep, "n1", node_name="n1"), owned(dep, "n2", node_name="n2", ready=False)]
    plan = decide.plan_deployment(dep, old + new)
    assert not plan.create and len(plan.delete) == 1
    # Step 3: all new ready -> the old ones go.
    new = [owned(dep, "n1", node_name="n1"), owned(dep, "n2", node_name="n2")]
    plan = decide.plan_deployment(dep, old + new)
    assert sorted(plan.delete) == ["o1", "o2"]
    assert plan.status["updatedReplicas"] == 2


def test_recreate_deletes_old_pods_before_creating() -> None:
    old_dep = deployment(2, image="v1")
    dep = deployment(2, image="v2", strategy={"type": "Recreate"})
    old = [owned(old_dep, "o1", node_name="n1")]
    plan = decide.plan_deployment(dep, old)
    assert plan.delete == ["o1"] and plan.create == []
    assert len(decide.plan_deployment(dep, []).create) == 2


def test_status_comparison_ignores_condition_times() -> None:
    dep = deployment(1)
    status = decide.plan_deployment(dep, [owned(dep, "a", node_name="n1")]).status
    stamped = {**status, "conditions": [{**c, "lastUpdateTime": "x"}
                                        for c in status["conditions"]]}
    assert decide.same_status(stamped, status)
    assert not decide.same_status({**status, "readyReplicas": 0}, status)


# --- garbage collection -------------------------------------------------------


def test_orphans_are_objects_whose_watched_owners_are_all_gone() -> None:
    alive_pod = pod("a", owner="d1")
    orphan = pod("b", owner="d2")
    ownerless = pod("c")
    unknown_kind = pod("d")
    unknown_kind["metadata"]["ownerReferences"] = [{"kind": "StatefulSet", "uid": "s1"}]
    found = decide.orphans([alive_pod, orphan, ownerless, unknown_kind], {"Deployment": {"d1"}})
    assert [p["metadata"]["name"] for p in found] == ["b"]


# --- endpoint slices ----------------------------------------------------------


def service(**spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"},
                     "ports": [{"name": "http", "port": 80, "targetPort": "http"}], **spec}}


def test_slice_has_endpoints_with_conditions_node_and_target_ref() -> None:
    ports = [{"name": "http", "containerPort": 8080}]
    pods = [pod("a", node_name="n1", ip="10.42.0.2", labels={"app": "web"}, ports=ports),
            pod("b", node_name="n2", ip="10.42.1.2", labels={"app": "web"}, ports=ports,
                deleting=True),
            pod("c", node_name="n2", ip="10.42.1.3", labels={"app": "web"}, ports=ports,
                ready=False),
            pod("d", node_name="n2", labels={"app": "web"}, ports=ports),  # no IP yet
            pod("e", node_name="n2", ip="10.42.1.4", labels={"app": "db"}, ports=ports)]
    slices = decide.desired_slices(service(), pods)
    assert len(slices) == 1
    s = slices[0]
    assert s["addressType"] == "IPv4"
    assert s["metadata"]["labels"] == {"kubernetes.io/service-name": "web",
                                       "endpointslice.kubernetes.io/managed-by":
                                       "endpointslice-controller.k8s.io"}
    assert s["metadata"]["ownerReferences"][0]["uid"] == "svc-uid"
    assert s["ports"] == [{"name": "http", "port": 8080, "protocol": "TCP"}]
    by_name = {e["targetRef"]["name"]: e for e in s["endpoints"]}
    assert set(by_name) == {"a", "b", "c"}
    assert by_name["a"]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    assert by_name["b"]["conditions"] == {"ready": False, "serving": True, "terminating": True}
    assert by_name["c"]["conditions"] == {"ready": False, "serving": False,
                                          "terminating": False}
    assert by_name["a"]["addresses"] == ["10.42.0.2"] and by_name["a"]["nodeName"] == "n1"
    assert by_name["a"]["targetRef"] == {"kind": "Pod", "namespace": "default", "name": "a",
                                         "uid": "uid-a"}


def test_pods_resolving_named_ports_differently_get_separate_slices() -> None:
    pods = [pod("a", ip="10.42.0.2", node_name="n1", labels={"app": "web"},
                ports=[{"name": "http", "containerPort": 8080}]),
            pod("b", ip="10.42.0.3", node_name="n1", labels={"app": "web"},
                ports=[{"name": "http", "containerPort": 9090}])]
    slices = decide.desired_slices(service(), pods)
    assert sorted(s["ports"][0]["port"] for s in slices) == [8080, 9090]
    assert len({s["metadata"]["name"] for s in slices}) == 2
    # The same input always names the same slices (the reconciler diffs by name).
    assert [s["metadata"]["name"] for s in slices] == \
        [s["metadata"]["name"] for s in decide.desired_slices(service(), pods)]


def test_numeric_target_port_and_publish_not_ready() -> None:
    svc = service(ports=[{"port": 53, "targetPort": 5353, "protocol": "UDP"}],
                  publishNotReadyAddresses=True)
    pods = [pod("a", ip="10.42.0.2", node_name="n1", labels={"app": "web"}, ready=False)]
    s = decide.desired_slices(svc, pods)[0]
    assert s["ports"] == [{"name": "", "port": 5353, "protocol": "UDP"}]
    assert s["endpoints"][0]["conditions"]["ready"] is True


def test_a_service_without_pods_keeps_one_empty_slice_and_diff_detects_changes() -> None:
    s = decide.desired_slices(service(), [])
    assert len(s) == 1 and s[0]["endpoints"] == []
    assert not decide.slice_differs(s[0], s[0])
    other = decide.desired_slices(service(), [pod("a", ip="10.42.0.2", node_name="n1",
                                                  labels={"app": "web"})])
    assert decide.slice_differs(s[0], other[0])
    assert not decide.selects_pods({"spec": {"ports": []}})


# --- pod CIDRs and node lifecycle ---------------------------------------------


def test_pod_cidrs_are_the_lowest_free_24s_and_never_change() -> None:
    cluster = IPv4Network("10.42.0.0/16")
    got = decide.assign_pod_cidrs([node("node2"), node("node1", pod_cidr="10.42.0.0/24"),
                                   node("node3")], cluster)
    assert got == {"node2": "10.42.1.0/24", "node3": "10.42.2.0/24"}
    outside = decide.assign_pod_cidrs([node("node1", pod_cidr="192.168.0.0/24"), node("n2")],
                                      cluster)
    assert outside == {"n2": "10.42.0.0/24"}


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(0, 20), max_size=12, unique=True),
       st.lists(st.integers(0, 7), max_size=12))
def test_pod_cidrs_never_overlap_or_move(names: list[int], preset: list[int]) -> None:
    cluster = IPv4Network("10.42.0.0/21")  # 8 /24s: exhaustion happens too
    nodes = []
    used: set[int] = set()
    for i, n in enumerate(names):
        cidr = None
        if i < len(preset) and preset[i] not in used:
            used.add(preset[i])
            cidr = f"10.42.{preset[i]}.0/24"
        nodes.append(node(f"n{n}", pod_cidr=cidr))
    got = decide.assign_pod_cidrs(nodes, cluster)
    existing = {n["metadata"]["name"]: n["spec"].get("podCIDR") for n in nodes}
    assert not set(got) & {k for k, v in existing.items() if v}
    everything = [v for v in existing.values() if v] + list(got.values())
    assert len(everything) == len(set(everything))
    assert len(everything) == min(len(nodes), 8)


def test_nodes_whose_lease_ran_out_are_stale() -> None:
    now = datetime(2026, 1, 1, 0, 10, tzinfo=UTC)
    fresh = (now - timedelta(seconds=5)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    old = (now - timedelta(seconds=60)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    leases = {"a": {"spec": {"renewTime": fresh}}, "b": {"spec": {"renewTime": old}}}
    nodes = [node("a"), node("b"), node("c"), node("d", ready=False),
             node("e", created=now.strftime("%Y-%m-%dT%H:%M:%SZ"))]
    assert decide.stale_nodes(nodes, leases, now, 40) == ["b", "c"]


# --- pod spec reading ---------------------------------------------------------


def test_workload_ports_and_pre_stop() -> None:
    p = pod("a", ports=[{"containerPort": 8080}, {"containerPort": 53, "protocol": "UDP"},
                        {"containerPort": 8080}, {"containerPort": 9, "protocol": "SCTP"}])
    assert workload_ports(p) == ([8080], [53])
    assert workload_ports(pod("b")) == ([80], [])
    hook = pod("c")
    hook["spec"]["containers"][0]["lifecycle"] = {"preStop": {"exec": {
        "command": ["/bin/sh", "-c", "sleep 5"]}}}
    assert pre_stop_seconds(hook) == 5
    hook["spec"]["containers"][0]["lifecycle"] = {"preStop": {"sleep": {"seconds": 3}}}
    assert pre_stop_seconds(hook) == 3
    assert pre_stop_seconds(pod("d")) == 0


def test_slices_of_services_without_a_selector_are_left_alone() -> None:
    """The apiserver keeps `default/kubernetes`' slice; the controller must not delete it."""
    kubernetes_slice = {"metadata": {"name": "kubernetes", "namespace": "default",
                                     "labels": {"kubernetes.io/service-name": "kubernetes"}}}
    assert decide.slice_service_key(kubernetes_slice) == "default/kubernetes"
    no_selector = {"metadata": {"name": "kubernetes", "namespace": "default"},
                   "spec": {"type": "ClusterIP", "ports": [{"port": 443}]}}
    with_selector = {"metadata": {"name": "web", "namespace": "default"},
                     "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}
    assert not decide.controller_owns_slice(no_selector)
    assert decide.controller_owns_slice(with_selector)
    assert decide.controller_owns_slice(None)  # its Service is gone: the slice goes too
    assert decide.slice_service_key({"metadata": {"name": "x", "namespace": "d"}}) is None
