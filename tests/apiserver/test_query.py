"""How list and watch requests are read: field selectors (=, ==, != on the fields Kubernetes
allows per kind, 400 for others), label selectors, Table negotiation from kubectl's Accept
headers, and continue tokens that round-trip (400 when mangled)."""

from __future__ import annotations

import pytest

from hexlane.apiserver.query import (
    decode_continue,
    encode_continue,
    filter_from,
    parse_field_selector,
    wants_table,
)
from hexlane.apiserver.resources import BUILTIN
from hexlane.apiserver.status import ApiError

PODS = next(i for i in BUILTIN if i.plural == "pods")
CONFIGMAPS = next(i for i in BUILTIN if i.plural == "configmaps")


def _pod(name: str, node: str | None, labels: dict[str, str] | None = None) -> dict:
    spec = {"nodeName": node} if node else {}
    return {"metadata": {"name": name, "namespace": "ns", "labels": labels or {}},
            "spec": spec}


def test_field_selectors() -> None:
    reqs = parse_field_selector("spec.nodeName==n1,metadata.name!=b", PODS)
    assert [(r.path, r.value, r.equal) for r in reqs] == [("spec.nodeName", "n1", True),
                                                          ("metadata.name", "b", False)]
    filt = filter_from({"fieldSelector": "spec.nodeName=n1"}, PODS, "")
    assert filt.matches(_pod("a", "n1")) and not filt.matches(_pod("b", "n2"))
    unbound = filter_from({"fieldSelector": "spec.nodeName="}, PODS, "")
    assert unbound.matches(_pod("c", None)) and not unbound.matches(_pod("a", "n1"))
    with pytest.raises(ApiError) as e:
        parse_field_selector("spec.nodeName=n1", CONFIGMAPS)
    assert e.value.code == 400 and "field label not supported" in e.value.message


def test_label_selectors_and_namespace() -> None:
    filt = filter_from({"labelSelector": "app in (a,b),!legacy"}, PODS, "ns")
    assert filt.matches(_pod("x", None, {"app": "a"}))
    assert not filt.matches(_pod("y", None, {"app": "a", "legacy": "1"}))
    other_ns = _pod("z", None, {"app": "a"})
    other_ns["metadata"]["namespace"] = "other"
    assert not filt.matches(other_ns)
    with pytest.raises(ApiError) as e:
        filter_from({"labelSelector": "a=b=c"}, PODS, "")
    assert e.value.code == 400


def test_table_negotiation() -> None:
    kubectl = ("application/json;as=Table;v=v1;g=meta.k8s.io,"
               "application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")
    assert wants_table(kubectl) == "v1"
    assert wants_table("application/json;as=Table;v=v1beta1;g=meta.k8s.io") == "v1beta1"
    assert wants_table("application/json") is None
    assert wants_table("application/vnd.kubernetes.protobuf,application/json") is None
    assert wants_table("") is None


def test_continue_tokens() -> None:
    token = encode_continue(42, ("ns", "name-7"))
    assert decode_continue(token) == (42, ("ns", "name-7"))
    with pytest.raises(ApiError) as e:
        decode_continue("not-a-token")
    assert e.value.code == 400
