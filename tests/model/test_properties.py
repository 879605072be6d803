"""Property tests (hypothesis): generated valid objects parse, keep their meaning and survive
to_dict -> parse; CIDR parsing agrees with ipaddress; selectors and endpoint conditions keep
Kubernetes' semantics; manifests keep documents and field lines."""

from __future__ import annotations

import ipaddress
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.model import (
    EndpointConditions,
    FrozenMap,
    InputError,
    L2AnnouncementPolicy,
    LabelSelector,
    LBIPPool,
    Lease,
    Service,
    parse_manifests,
    parse_object,
)
from hexlane.model.netaddr import parse_cidr

names = st.from_regex(r"[a-z]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
label_keys = st.sampled_from(["app", "color", "tier", "kubernetes.io/os", "example.com/x"])
label_vals = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,6}[a-z0-9])?", fullmatch=True)
labels = st.dictionaries(label_keys, label_vals, max_size=3)
v4 = st.integers(min_value=0, max_value=2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(min_value=0, max_value=2**128 - 1).map(ipaddress.IPv6Address)


@st.composite
def blocks(draw: st.DrawFn) -> dict[str, str]:
    kind = draw(st.sampled_from(["cidr4", "cidr6", "range4", "range6", "single"]))
    if kind in ("cidr4", "cidr6"):
        addr = draw(v4 if kind == "cidr4" else v6)
        bits = draw(st.integers(min_value=16 if kind == "cidr4" else 96,
                                max_value=addr.max_prefixlen))
        net = ipaddress.ip_network((addr, bits), strict=False)
        return {"cidr": str(net)}
    if kind == "single":
        return {"start": str(draw(v4))}
    a, b = sorted([draw(v4 if kind == "range4" else v6), draw(v4 if kind == "range4" else v6)])
    return {"start": str(a), "stop": str(b)}


selectors = st.one_of(
    st.none(),
    st.builds(lambda ml: {"matchLabels": ml}, labels),
    st.builds(lambda k, op, vs: {"matchExpressions": [
        {"key": k, "operator": op, **({"values": vs} if op in ("In", "NotIn") else {})}]},
        label_keys, st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]),
        st.lists(label_vals, min_size=1, max_size=3)))


@st.composite
def pools(draw: st.DrawFn) -> dict[str, Any]:
    spec: dict[str, Any] = {"blocks": draw(st.lists(blocks(), min_size=1, max_size=4))}
    if (allow := draw(st.sampled_from([None, "Yes", "No"]))) is not None:
        spec["allowFirstLastIPs"] = allow
    if (sel := draw(selectors)) is not None:
        spec["serviceSelector"] = sel
    spec["disabled"] = draw(st.booleans())
    return {"apiVersion": draw(st.sampled_from(["cilium.io/v2alpha1", "cilium.io/v2"])),
            "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": draw(names), "labels": draw(labels)}, "spec": spec}


@given(pools())
@settings(deadline=None)  # a loaded 2-core CI machine must not turn slowness into failure
def test_pool_parses_to_its_ranges_and_round_trips(obj: dict[str, Any]) -> None:
    pool = LBIPPool.parse(obj)
    assert len(pool.blocks) == len(obj["spec"]["blocks"])
    for raw, b in zip(obj["spec"]["blocks"], pool.blocks, strict=True):
        assert int(b.first) <= int(b.last)
        assert b.first in b and b.last in b
        if "cidr" in raw:
            net = ipaddress.ip_network(raw["cidr"])
            assert (b.first, b.last, b.size) == (net.network_address, net.broadcast_address,
                                                 net.num_addresses)
        else:
            assert str(b.first) == raw["start"]
            assert str(b.last) == raw.get("stop", raw["start"])
    assert (pool.service_selector is None) == ("serviceSelector" not in obj["spec"])
    assert LBIPPool.parse(pool.to_dict()) == pool
    assert parse_object(obj) == pool


@given(v4, v4)
def test_backwards_range_is_always_rejected_at_stop(a: Any, b: Any) -> None:
    lo, hi = sorted([a, b])
    obj = {"metadata": {"name": "p"}, "spec": {"blocks": [{"start": str(hi), "stop": str(lo)}]}}
    if lo == hi:
        assert LBIPPool.parse(obj).blocks[0].size == 1
        return
    with pytest.raises(InputError) as e:
        LBIPPool.parse(obj)
    assert [p.path for p in e.value.problems] == ["spec.blocks[0].stop"]


@given(st.one_of(v4, v6), st.data())
def test_parse_cidr_agrees_with_ipaddress(addr: Any, data: st.DataObject) -> None:
    bits = data.draw(st.integers(min_value=0, max_value=addr.max_prefixlen))
    net, host_bits = parse_cidr(f"{addr}/{bits}")
    expected = ipaddress.ip_network((addr, bits), strict=False)
    assert net == expected
    assert host_bits == (expected.network_address != addr)


ports = st.lists(st.tuples(st.integers(1, 65535), st.sampled_from(["TCP", "UDP", "SCTP"]),
                           st.one_of(st.none(), st.integers(1, 65535), names.filter(
                               lambda n: len(n) <= 15 and "--" not in n))),
                 min_size=1, max_size=4, unique_by=lambda t: (t[0], t[1]))


@st.composite
def services(draw: st.DrawFn) -> dict[str, Any]:
    svc_type = draw(st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
    spec: dict[str, Any] = {"type": svc_type, "ports": [
        {"name": f"p{i}", "port": port, "protocol": proto,
         **({"targetPort": target} if target is not None else {})}
        for i, (port, proto, target) in enumerate(draw(ports))]}
    if draw(st.booleans()):
        spec["selector"] = draw(labels)
    if svc_type != "ClusterIP":
        spec["externalTrafficPolicy"] = draw(st.sampled_from(["Cluster", "Local"]))
    if draw(st.booleans()):
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": draw(
            st.integers(1, 86400))}}
    if draw(st.booleans()):
        spec["externalIPs"] = [str(draw(v4))]
    if draw(st.booleans()):
        spec["ipFamilies"] = draw(st.sampled_from([["IPv4"], ["IPv6", "IPv4"]]))
    status = {}
    if svc_type == "LoadBalancer" and draw(st.booleans()):
        status = {"loadBalancer": {"ingress": [{"ip": str(draw(v4))}]}}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": draw(names), "namespace": draw(names),
                         "labels": draw(labels)},
            "spec": spec, "status": status}


@given(services())
@settings(deadline=None)
def test_service_parses_with_defaults_and_round_trips(obj: dict[str, Any]) -> None:
    svc = Service.parse(obj)
    for raw, pt in zip(obj["spec"]["ports"], svc.ports, strict=True):
        assert pt.port == raw["port"] and pt.protocol == raw["protocol"]
        assert pt.target_port == raw.get("targetPort", raw["port"])
    assert (svc.selector is None) == ("selector" not in obj["spec"])
    if "sessionAffinityConfig" not in obj["spec"]:
        assert svc.session_affinity_timeout == 10800
    assert svc.external_traffic_policy == obj["spec"].get("externalTrafficPolicy", "Cluster")
    assert Service.parse(svc.to_dict()) == svc
    assert hash(svc) == hash(Service.parse(svc.to_dict()))  # usable as a dict key / in sets


@given(st.dictionaries(label_keys, label_vals, max_size=4), labels)
def test_match_labels_is_subset(selector: dict[str, str], have: dict[str, str]) -> None:
    sel = LabelSelector.parse({"matchLabels": selector})
    assert sel.matches(have) == (selector.items() <= have.items())
    assert LabelSelector.parse(sel.to_dict()).matches(have) == sel.matches(have)


@given(selectors, labels)
def test_l2_selectors_nil_selects_all(sel: Any, have: dict[str, str]) -> None:
    spec: dict[str, Any] = {"loadBalancerIPs": True}
    if sel is not None:
        spec["serviceSelector"] = sel
    pol = L2AnnouncementPolicy.parse({"metadata": {"name": "p"}, "spec": spec})
    if sel is None:
        assert pol.selects_service(have)
    else:
        assert pol.selects_service(have) == LabelSelector.parse(sel).matches(have)
    assert L2AnnouncementPolicy.parse(pol.to_dict()) == pol


tri = st.sampled_from([None, True, False])


@given(tri, tri, tri)
def test_endpoint_condition_nil_semantics(ready: Any, serving: Any, terminating: Any) -> None:
    c = EndpointConditions(ready, serving, terminating)
    assert c.is_ready == (ready is not False)
    assert c.is_serving == (c.is_ready if serving is None else serving)
    assert c.is_terminating == (terminating is True)


@given(st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=5))
def test_frozen_map_equality_and_hash(d: dict[str, str]) -> None:
    a, b = FrozenMap(d), FrozenMap(dict(reversed(list(d.items()))))
    assert a == b == d and hash(a) == hash(b)


@given(st.lists(pools(), min_size=1, max_size=4), st.integers(0, 2))
@settings(max_examples=50, deadline=None)
def test_manifests_keep_documents_and_lines(objs: list[dict[str, Any]], blanks: int) -> None:
    text = ("---\n" * blanks) + "---\n".join(yaml.safe_dump(o, sort_keys=False) for o in objs)
    manifests = parse_manifests(text, "gen.yaml")
    assert [m.obj for m in manifests] == objs
    lines = text.splitlines()
    for m in manifests:
        assert lines[m.line_of("metadata.name") - 1].strip().startswith("name:")
        assert lines[m.line_of("spec.blocks[0]") - 1].lstrip().startswith("- ")


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 1, 1),
                    timezones=st.just(UTC)))
def test_lease_times_round_trip_at_microseconds(dt: Any) -> None:
    lease = Lease.parse({"metadata": {"name": "cilium-l2announce-default-web",
                                      "namespace": "kube-system"},
                         "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 15,
                                  "renewTime": dt.isoformat().replace("+00:00", "Z")}})
    assert lease.renew_time == dt
    assert Lease.parse(lease.to_dict()) == lease
