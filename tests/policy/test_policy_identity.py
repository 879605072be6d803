"""Security identities: labels as Cilium derives them, the default label filter, reserved
numbers, the allocation plan, garbage collection and CIDR identities."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.policy.identity import (
    DEFAULT_FILTER,
    LOCAL_IDENTITY_FLAG,
    MAX_ALLOCATED_IDENTITY,
    MIN_ALLOCATED_IDENTITY,
    IdentitiesExhausted,
    Label,
    LabelFilter,
    ReservedIdentity,
    cidr_labels,
    format_labels,
    from_security_labels,
    identity_name,
    plan_allocation,
    plan_cidr_identities,
    pod_identity_labels,
    reserved_labels,
    security_labels,
    unused,
)

NET = ipaddress.IPv4Network


def test_reserved_identities_have_ciliums_numbers_and_names() -> None:
    assert {r.label_name: int(r) for r in ReservedIdentity} == {
        "host": 1, "world": 2, "unmanaged": 3, "health": 4, "init": 5, "remote-node": 6,
        "kube-apiserver": 7, "ingress": 8}
    assert format_labels(reserved_labels(ReservedIdentity.HOST)) == ["reserved:host"]
    assert format_labels(reserved_labels(ReservedIdentity.KUBE_APISERVER)) == [
        "reserved:kube-apiserver", "reserved:remote-node"]
    assert identity_name(1) == "reserved:host" and identity_name(6) == "reserved:remote-node"
    assert identity_name(0) == "unknown" and identity_name(256) == "256"
    assert identity_name(LOCAL_IDENTITY_FLAG | 1) == f"cidr:{LOCAL_IDENTITY_FLAG | 1}"


def test_pod_identity_labels() -> None:
    labels = pod_identity_labels(
        {"app": "web", "pod-template-hash": "5d8f7", "app.kubernetes.io/name": "web",
         "statefulset.kubernetes.io/pod-name": "web-0", "controller-revision-hash": "x",
         "batch.kubernetes.io/controller-uid": "u", "controller-uid": "u",
         "batch.kubernetes.io/job-completion-index": "0", "apps.kubernetes.io/pod-index": "0",
         "kubernetes.io/hostname": "n1", "beta.kubernetes.io/arch": "amd64",
         "job-name": "backup"},
        "shop", {"kubernetes.io/metadata.name": "shop", "team": "a"}, "web-sa", "home")
    assert format_labels(labels) == [
        "k8s:app.kubernetes.io/name=web",
        "k8s:app=web",
        "k8s:io.cilium.k8s.namespace.labels.kubernetes.io/metadata.name=shop",
        "k8s:io.cilium.k8s.namespace.labels.team=a",
        "k8s:io.cilium.k8s.policy.cluster=home",
        "k8s:io.cilium.k8s.policy.serviceaccount=web-sa",
        "k8s:io.kubernetes.pod.namespace=shop",
        "k8s:job-name=backup",  # Cilium keeps it by default (its docs show how to drop it)
    ]
    # no service account: no label; the cluster name defaults to Cilium's "default"
    assert "k8s:io.cilium.k8s.policy.cluster=default" in format_labels(
        pod_identity_labels({}, "ns", {}))
    assert not any("serviceaccount" in s for s in format_labels(
        pod_identity_labels({}, "ns", {})))


def test_label_filter_extra_patterns_as_cilium() -> None:
    # an exclusive pattern drops more; an inclusive one keeps only what is included
    f = LabelFilter.default(["!job-name"])
    assert not f.keeps(Label("k8s", "job-name", "x")) and f.keeps(Label("k8s", "app", "x"))
    f = LabelFilter.default(["app$"])
    assert f.keeps(Label("k8s", "app", "x")) and not f.keeps(Label("k8s", "apps", "x"))
    assert not f.keeps(Label("k8s", "team", "x"))
    assert f.keeps(Label("k8s", "io.kubernetes.pod.namespace", "ns"))
    assert f.keeps(Label("reserved", "host"))
    # the longer match wins: include io.kubernetes.pod.namespace over !io.kubernetes
    assert DEFAULT_FILTER.keeps(Label("k8s", "io.kubernetes.pod.namespace", "ns"))
    assert not DEFAULT_FILTER.keeps(Label("k8s", "io.kubernetes.container.name", "c"))
    with pytest.raises(ValueError, match="invalid label pattern"):
        LabelFilter.default(["!("])


def test_security_labels_round_trip() -> None:
    labels = pod_identity_labels({"app": "web"}, "ns", {"team": "a"}, "sa")
    raw = security_labels(labels)
    assert raw["k8s:app"] == "web" and raw["k8s:io.kubernetes.pod.namespace"] == "ns"
    assert from_security_labels(raw) == labels
    assert Label.parse("k8s:app=web") == Label("k8s", "app", "web")
    assert Label.parse("reserved:host") == Label("reserved", "host", "")


def _ls(app: str) -> frozenset[Label]:
    return frozenset({Label("k8s", "app", app)})


def test_plan_allocation_reuses_then_counts_from_256() -> None:
    existing = {1: reserved_labels(ReservedIdentity.HOST), 256: _ls("a"), 257: _ls("b")}
    assert plan_allocation(_ls("b"), existing) == (a := plan_allocation(_ls("b"), existing))
    assert a.identity == 257 and a.reused
    new = plan_allocation(_ls("c"), existing)
    assert new.identity == 258 and not new.reused
    # the create of 258 conflicted (another agent took it): the next
    assert plan_allocation(_ls("c"), existing, conflicts={258}).identity == 259
    assert plan_allocation(_ls("c"), {}).identity == MIN_ALLOCATED_IDENTITY
    full = {n: _ls(str(n)) for n in range(MIN_ALLOCATED_IDENTITY, MAX_ALLOCATED_IDENTITY + 1)}
    with pytest.raises(IdentitiesExhausted):
        plan_allocation(_ls("new"), full)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.integers(256, 300), st.sampled_from("abcdef").map(_ls), max_size=30),
       st.sampled_from("abcdefg").map(_ls), st.sets(st.integers(256, 320), max_size=20))
def test_plan_allocation_properties(existing, labels, conflicts) -> None:
    a = plan_allocation(labels, existing, conflicts)
    if labels in existing.values():
        assert a.reused and existing[a.identity] == labels
        assert a.identity == min(n for n, lbl in existing.items() if lbl == labels)
    else:
        assert not a.reused and a.identity not in existing and a.identity not in conflicts
        assert all(n in existing or n in conflicts for n in range(256, a.identity))


def test_unused_identities_after_grace() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    seen = {2: now - timedelta(days=1), 256: now - timedelta(minutes=31),
            257: now - timedelta(minutes=5), 258: now - timedelta(hours=2),
            LOCAL_IDENTITY_FLAG | 1: now - timedelta(days=1)}
    assert unused(seen, in_use={258}, now=now, grace=timedelta(minutes=30)) == [256]
    assert unused(seen, in_use=(), now=now, grace=timedelta(0)) == [256, 257, 258]


def test_cidr_labels_and_identities() -> None:
    labels = format_labels(cidr_labels(NET("10.0.0.0/8")))
    assert labels[0] == "cidr:0.0.0.0/0" and "cidr:10.0.0.0/8" in labels
    assert "cidr:8.0.0.0/6" in labels and "reserved:world" in labels and len(labels) == 10
    ids = plan_cidr_identities([NET("10.0.0.0/8"), NET("192.168.1.0/24"), NET("0.0.0.0/0"),
                                NET("10.1.0.0/16")])
    assert list(ids.values()) == [LOCAL_IDENTITY_FLAG | 1, LOCAL_IDENTITY_FLAG | 2,
                                  LOCAL_IDENTITY_FLAG | 3]  # /0 is world, not given one
    assert ids[NET("10.0.0.0/8")] == LOCAL_IDENTITY_FLAG | 1
    # stable: a new prefix does not renumber the others; a gone one frees its number
    again = plan_cidr_identities([NET("9.0.0.0/8"), NET("10.1.0.0/16"),
                                  NET("192.168.1.0/24")], previous=ids)
    assert again[NET("10.1.0.0/16")] == ids[NET("10.1.0.0/16")]
    assert again[NET("192.168.1.0/24")] == ids[NET("192.168.1.0/24")]
    assert again[NET("9.0.0.0/8")] == LOCAL_IDENTITY_FLAG | 1


def test_identity_object_round_trip_and_kubernetes_labels() -> None:
    from hexlane.policy.identity import identity_object, parse_identity_object

    labels = pod_identity_labels({"app": "web", "bad key!": "x"}, "shop", {"team": "a"}, "sa1")
    obj = identity_object(300, labels)
    assert obj["metadata"] == {"name": "300", "labels": {
        "app": "web", "io.cilium.k8s.namespace.labels.team": "a",
        "io.cilium.k8s.policy.cluster": "default", "io.cilium.k8s.policy.serviceaccount": "sa1",
        "io.kubernetes.pod.namespace": "shop"}}  # "bad key!" is no Kubernetes label key
    assert obj["security-labels"]["k8s:bad key!"] == "x"
    assert parse_identity_object(obj) == (300, labels)
    assert parse_identity_object({**obj, "metadata": {"name": "7"}}) is None
    assert parse_identity_object({**obj, "metadata": {"name": "web"}}) is None


def test_in_use_and_observed_use_for_the_gc() -> None:
    from hexlane.policy.identity import identities_in_use, observe_use, unused

    a, b = (pod_identity_labels({"app": x}, "ns", {}) for x in "ab")
    assert identities_in_use({256: a, 257: b}, [a, a]) == {256}
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    seen = observe_use({}, [256, 257], {256}, t0)
    assert seen == {256: t0, 257: t0}  # first seen counts as in use
    later = t0 + timedelta(minutes=20)
    seen = observe_use({**seen, 999: t0}, [256, 257], {256}, later)
    assert seen == {256: later, 257: t0}  # 999 is gone from the API: forgotten
    assert unused(seen, {256}, later, timedelta(minutes=15)) == [257]
