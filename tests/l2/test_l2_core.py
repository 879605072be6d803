"""The L2 announcer's pure core: policies read as Cilium reads them (the seeds' own policies,
bad selectors and regexes as `io.cilium/bad-*` conditions), which Services a node competes
for and on which devices, what the responder holds while leading, holderless Lease GC, and
the gratuitous ARP schedule. Properties: policy order does not matter, adding a policy never
takes a candidate away, a node that leads nothing announces nothing, every taken-over entry
gets exactly five GARPs 1.1 s apart.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.l2.announce import (
    Candidate,
    candidates,
    lease_name,
    responder_entries,
    service_labels,
    stale_leases,
)
from hexlane.l2.garp import GarpSchedule
from hexlane.l2.policy import (
    BAD_INTERFACE_REGEX,
    BAD_NODE_SELECTOR,
    BAD_SERVICE_SELECTOR,
    Policy,
    policy_conditions,
    read_policy,
)
from hexlane.model.service import Service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
LINUX = {"kubernetes.io/os": "linux", "kubernetes.io/hostname": "node1"}
DEVICES = ("eth0", "eth1", "ens192", "wlan0")


def svc(name: str, *, ns: str = "default", labels: dict[str, str] | None = None,
        external: list[str] | None = None, ingress: list[str] | None = None,
        lb_class: str | None = None) -> Service:
    spec: dict[str, Any] = {"type": "LoadBalancer", "ports": [{"port": 80}]}
    if external:
        spec["externalIPs"] = external
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": name, "namespace": ns,
                                        "labels": labels or {}},
                           "spec": spec}
    if ingress:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return Service.parse(obj)


def policy(spec: dict[str, Any], name: str = "p") -> Policy:
    read = read_policy({"metadata": {"name": name}, "spec": spec})
    assert read.policy is not None, read.problems
    return read.policy


def seed_policy(path: str) -> Policy:
    docs = [d for d in yaml.safe_load_all((EXAMPLES / path).read_text())
            if d and d.get("kind") == "CiliumL2AnnouncementPolicy"]
    read = read_policy(docs[0])
    assert read.policy is not None
    return read.policy


# -- policies -------------------------------------------------------------------------------

@pytest.mark.parametrize(("path", "node_labels", "devices"), [
    # seed 000/004: no selector, no interfaces: every node, every device.
    ("seed-000/cilium-config.yaml", {}, DEVICES),
    ("seed-004/announce.yaml", {}, DEVICES),
    # seed 001: `nodeSelector: {}` (everything), ens192 or ^eth[0-9]+ (unanchored).
    ("seed-001/cilium-l2-announcement-policy.yaml", {}, ("eth0", "eth1", "ens192")),
    # seed 002: nodes labelled linux only; all devices.
    ("seed-002/cilium-l2.yaml", LINUX, DEVICES),
    # seed 004 in the text: enp0s25 only, which this node lacks.
    ("seed-004/in-text/l2-announcement-policy.yaml", {}, ()),
])
def test_the_seeds_policies_select_nodes_and_devices_as_cilium(
        path: str, node_labels: dict[str, str], devices: tuple[str, ...]) -> None:
    p = seed_policy(path)
    assert p.selects_node(node_labels)
    assert p.devices(DEVICES) == devices


def test_seed_002_skips_a_node_without_the_linux_label() -> None:
    p = seed_policy("seed-002/cilium-l2.yaml")
    assert not p.selects_node({"kubernetes.io/hostname": "pi"})
    assert not candidates({"kubernetes.io/hostname": "pi"}, DEVICES, [p],
                          [svc("web", ingress=["10.0.0.150"])])


def test_interface_regexes_are_unanchored_and_ored() -> None:
    p = policy({"interfaces": ["eth", "^ens[0-9]+$"], "loadBalancerIPs": True})
    assert p.devices(("eth0", "veth1", "ens192", "ens192a", "lo")) == ("eth0", "veth1", "ens192")


@pytest.mark.parametrize(("spec", "ctype", "words"), [
    ({"nodeSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
     BAD_NODE_SELECTOR, "values"),
    ({"nodeSelector": {"matchLabels": {"bad key!": "x"}}}, BAD_NODE_SELECTOR, "bad key!"),
    ({"interfaces": ["eth[0-9"]}, BAD_INTERFACE_REGEX, "eth[0-9"),
    ({"interfaces": [r"(a)\1"]}, BAD_INTERFACE_REGEX, "backreference"),
    ({"serviceSelector": {"matchExpressions": [{"key": "a", "operator": "Sometimes"}]}},
     BAD_SERVICE_SELECTOR, "Sometimes"),
])
def test_a_bad_part_makes_the_policy_unusable_with_its_condition(
        spec: dict[str, Any], ctype: str, words: str) -> None:
    read = read_policy({"metadata": {"name": "bad", "generation": 3},
                        "spec": {**spec, "loadBalancerIPs": True}})
    assert read.policy is None
    assert [t for t, why in read.problems.items() if why] == [ctype]
    other = {"type": "example.com/other", "status": "True"}
    conds = policy_conditions(read, [other], NOW)
    assert conds is not None and len(conds) == 2 and conds[0] == other
    c = conds[1]
    assert (c["type"], c["status"], c["reason"], c["observedGeneration"]) == \
        (ctype, "True", "error", 3)
    assert words in c["message"] and c["lastTransitionTime"] == "2026-12-05T08:00:00Z"
    # Written once: the same read again needs no write.
    assert policy_conditions(read, conds, NOW) is None
    # Fixed: the condition turns False with no message; types never set stay absent.
    fixed = read_policy({"metadata": {"name": "bad", "generation": 4},
                         "spec": {"loadBalancerIPs": True}})
    assert fixed.policy is not None
    after = policy_conditions(fixed, conds, NOW)
    assert after is not None
    assert [(c["type"], c["status"], c.get("message", "")) for c in after] == \
        [("example.com/other", "True", ""), (ctype, "False", "")]
    assert after[0] == other
    assert policy_conditions(fixed, after, NOW) is None


def test_a_good_policy_writes_no_conditions() -> None:
    read = read_policy({"metadata": {"name": "ok"}, "spec": {"externalIPs": True}})
    assert read.policy is not None and policy_conditions(read, [], NOW) is None


# -- candidates -----------------------------------------------------------------------------

def test_services_are_announced_by_kind_class_and_selector() -> None:
    both = policy({"externalIPs": True, "loadBalancerIPs": True}, "both")
    lb_only = policy({"loadBalancerIPs": True,
                      "serviceSelector": {"matchLabels": {"color": "blue"}},
                      "interfaces": ["^eth0$"]}, "blue")
    services = [
        svc("web", ingress=["10.0.0.150"], external=["10.0.0.160"]),
        svc("blue", labels={"color": "blue"}, ingress=["10.0.0.151"]),
        svc("pending"),  # no IP yet: nothing to announce
        svc("other-class", ingress=["10.0.0.152"], lb_class="example.com/lb"),
        svc("ours", ingress=["10.0.0.153"], lb_class="io.cilium/l2-announcer"),
        svc("v6", ingress=["fd00::1"]),
    ]
    got = candidates({}, ("eth0", "eth1"), [lb_only, both], services)
    assert sorted(got) == [("default", "blue"), ("default", "ours"), ("default", "web")]
    assert got["default", "web"].entries == {
        ("10.0.0.150", "eth0"), ("10.0.0.150", "eth1"),
        ("10.0.0.160", "eth0"), ("10.0.0.160", "eth1")}
    assert got["default", "blue"].policies == ("blue", "both")
    assert got["default", "web"].lease == "cilium-l2announce-default-web"
    only_lb = candidates({}, ("eth0",), [lb_only], services)
    assert list(only_lb) == [("default", "blue")]
    ext_only = candidates({}, ("eth0",), [policy({"externalIPs": True})], services)
    assert ext_only["default", "web"].entries == {("10.0.0.160", "eth0")}


def test_services_match_on_their_namespace_and_name_labels() -> None:
    p = policy({"loadBalancerIPs": True, "serviceSelector": {"matchExpressions": [
        {"key": "io.kubernetes.service.namespace", "operator": "NotIn",
         "values": ["kube-system"]}]}})
    services = [svc("a", ns="kube-system", ingress=["10.0.0.1"]),
                svc("b", ns="apps", ingress=["10.0.0.2"])]
    assert list(candidates({}, ("eth0",), [p], services)) == [("apps", "b")]
    assert service_labels(services[1])["io.kubernetes.service.name"] == "b"


def test_a_node_with_no_selected_device_does_not_compete() -> None:
    p = seed_policy("seed-004/in-text/l2-announcement-policy.yaml")  # enp0s25
    assert candidates({}, ("eth0",), [p], [svc("web", ingress=["10.0.0.150"])]) == {}
    assert candidates({}, ("enp0s25",), [p], [svc("web", ingress=["10.0.0.150"])])


def test_the_responder_holds_what_the_node_leads_with_every_wanting_service() -> None:
    cands = {
        ("default", "a"): Candidate(("default", "a"), ("p",), frozenset({("10.0.0.9", "eth0")})),
        ("default", "b"): Candidate(("default", "b"), ("p",), frozenset({("10.0.0.9", "eth0"),
                                                                        ("10.0.0.8", "eth0")})),
    }
    assert responder_entries(cands, []) == {}
    assert responder_entries(cands, [("default", "a"), ("gone", "x")]) == {
        ("10.0.0.9", "eth0"): (("default", "a"),)}
    assert responder_entries(cands, [("default", "b"), ("default", "a")]) == {
        ("10.0.0.9", "eth0"): (("default", "a"), ("default", "b")),
        ("10.0.0.8", "eth0"): (("default", "b"),)}


def test_holderless_announcement_leases_are_collected() -> None:
    leases = [
        {"metadata": {"name": lease_name(("default", "a"))}, "spec": {"holderIdentity": ""}},
        {"metadata": {"name": lease_name(("default", "b"))}, "spec": {"holderIdentity": "n1"}},
        {"metadata": {"name": lease_name(("default", "c"))}, "spec": {}},
        {"metadata": {"name": "cilium-operator-resource-lock"}, "spec": {}},
    ]
    assert stale_leases(leases) == ["cilium-l2announce-default-a",
                                    "cilium-l2announce-default-c"]


# -- properties -----------------------------------------------------------------------------

LABELS = st.dictionaries(st.sampled_from(["app", "tier", "color"]),
                         st.sampled_from(["a", "b"]), max_size=2)
IPS = st.lists(st.sampled_from([f"10.0.0.{i}" for i in range(150, 156)]), max_size=2,
               unique=True)


@st.composite
def policies(draw: st.DrawFn) -> list[Policy]:
    out = []
    for i in range(draw(st.integers(0, 4))):
        spec: dict[str, Any] = {"externalIPs": draw(st.booleans()),
                                "loadBalancerIPs": draw(st.booleans())}
        if draw(st.booleans()):
            spec["serviceSelector"] = {"matchLabels": draw(LABELS)}
        if draw(st.booleans()):
            spec["nodeSelector"] = {"matchLabels": draw(LABELS)}
        if draw(st.booleans()):
            spec["interfaces"] = draw(st.lists(st.sampled_from(["^eth", "ens", "^wlan0$", "x"]),
                                               min_size=1, max_size=2))
        out.append(policy(spec, f"p{i}"))
    return out


@st.composite
def services(draw: st.DrawFn) -> list[Service]:
    return [svc(f"s{i}", labels=draw(LABELS), external=draw(IPS), ingress=draw(IPS))
            for i in range(draw(st.integers(0, 5)))]


@settings(max_examples=150, deadline=None)
@given(policies(), services(), LABELS, st.randoms(use_true_random=False))
def test_selection_properties(pols: list[Policy], svcs: list[Service],
                              node: dict[str, str], rnd: Any) -> None:
    got = candidates(node, DEVICES, pols, svcs)
    shuffled = list(pols)
    rnd.shuffle(shuffled)
    assert candidates(node, DEVICES, shuffled, svcs) == got  # order does not matter
    for key, cand in got.items():
        s = next(s for s in svcs if (s.namespace, s.name) == key)
        ips = set(s.external_ips) | {i.ip for i in s.ingress}
        assert cand.entries and all(ip in ips and dev in DEVICES for ip, dev in cand.entries)
    for extra in pols:  # a policy more never takes a candidate away
        fewer = candidates(node, DEVICES, [p for p in pols if p is not extra], svcs)
        assert set(fewer) <= set(got)
        assert all(fewer[k].entries <= got[k].entries for k in fewer)
    leading = [k for k in got if rnd.random() < 0.5]
    held = responder_entries(got, leading)
    assert set(held) == set().union(*(got[k].entries for k in leading))
    assert responder_entries(got, []) == {}


# -- gratuitous ARP -------------------------------------------------------------------------

def test_a_takeover_sends_five_garps_1_1_s_apart_and_a_release_stops_them() -> None:
    g: GarpSchedule[tuple[str, str]] = GarpSchedule()
    a, b = ("10.0.0.150", "eth0"), ("10.0.0.151", "eth0")
    assert g.update([a], now=100.0) == [a]
    sent: list[tuple[float, tuple[str, str]]] = []
    t = 100.0
    while t < 110.0:
        if t == 101.0:
            assert g.update([a, b], now=t) == [b]  # b taken over at 101.0
        if t == 102.5:
            g.update([a], now=t)  # b released: its GARPs stop
        sent += [(round(t, 1), e) for e in g.due(t)]
        t = round(t + 0.1, 1)
    assert [ts for ts, e in sent if e == a] == [100.0, 101.1, 102.2, 103.3, 104.4]
    assert [ts for ts, e in sent if e == b] == [101.0, 102.1]
    assert g.next_due() is None
    assert g.update([a], now=111.0) == []  # still held: no new GARPs


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 20), st.sets(st.integers(0, 3), max_size=3)),
                max_size=8))
def test_garp_schedule_sends_five_per_takeover_and_none_after_a_release(
        changes: list[tuple[float, set[int]]]) -> None:
    g: GarpSchedule[int] = GarpSchedule()
    taken: dict[int, float] = {}  # entry -> time of its last takeover
    sends: dict[int, list[float]] = {}
    held: set[int] = set()
    t = 0.0
    for at, now_held in [*sorted(changes, key=lambda c: c[0]), (30.0, None)]:
        while t <= at:
            for e in g.due(t):
                assert e in held, "no GARP for an entry no longer held"
                sends.setdefault(e, []).append(t)
            t = round(t + 0.05, 2)
        if now_held is not None:
            for e in g.update(now_held, now=t):
                taken[e] = t
            held = set(now_held)
    for e in held:  # held to the end: exactly five since its takeover, 1.1 s apart
        since = [x for x in sends[e] if x >= taken[e]]
        assert len(since) == 5
        assert all(abs((b - a) - 1.1) < 0.051 for a, b in itertools.pairwise(since))


# -- hexlane's election: eligibility from the API's objects ---------------------------------

def slice_of(service: str, endpoints: list[tuple[str, str, bool]]) -> Any:
    from hexlane.model.endpointslice import EndpointSlice
    return EndpointSlice.parse({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{service}-x", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [ip], "nodeName": node, "conditions": {"ready": ready}}
                      for ip, node, ready in endpoints],
        "ports": [{"port": 80, "protocol": "TCP"}]})


def test_eligibility_follows_node_selectors_kinds_and_local_endpoints() -> None:
    from hexlane.l2.announce import eligible_nodes, local_endpoint_nodes, owned_entries
    nodes = {"n1": {"kubernetes.io/os": "linux", "zone": "a"},
             "n2": {"kubernetes.io/os": "linux", "zone": "b"},
             "pi": {"zone": "a"}}
    linux = policy({"loadBalancerIPs": True, "nodeSelector": {
        "matchLabels": {"kubernetes.io/os": "linux"}}}, "linux")
    zone_a_ext = policy({"externalIPs": True, "nodeSelector": {
        "matchLabels": {"zone": "a"}}}, "zone-a")
    web = svc("web", ingress=["10.0.0.150"], external=["10.0.0.160"])
    local_obj = svc("local", ingress=["10.0.0.151"])
    local = Service.parse({**local_obj.to_dict(), "spec": {
        **local_obj.to_dict()["spec"], "externalTrafficPolicy": "Local"}})
    ends = local_endpoint_nodes([slice_of("local", [("10.42.1.5", "n2", True),
                                                    ("10.42.0.5", "n1", False)])])
    assert ends == {("default", "local"): frozenset({"n2"})}
    got = eligible_nodes(nodes, [linux, zone_a_ext], [web, local], ends)
    assert got == {"10.0.0.150": {"n1", "n2"}, "10.0.0.160": {"n1", "pi"},
                   "10.0.0.151": {"n2"}}
    # No ready local endpoint anywhere: nobody may announce an eTP=Local IP.
    assert eligible_nodes(nodes, [linux], [local], {})["10.0.0.151"] == frozenset()
    cands = candidates(nodes["n1"], ("eth0",), [linux, zone_a_ext], [web])
    assert owned_entries(cands, ["10.0.0.160"]) == {("10.0.0.160", "eth0"): (("default", "web"),)}
    assert owned_entries(cands, []) == {}
