"""hexlane.lb.services: Services, EndpointSlices and Nodes -> desired LB map contents.

Pins down: frontends for ClusterIP, NodePort (every node address), LoadBalancer ingress IPs and
externalIPs (only when enabled); TCP and UDP told apart on one address and port; backends are
the ready endpoints, the serving terminating ones only when none is ready; eTP=Local keeps only
this node's backends in the EXT scope with all of them in an INT scope (two scopes), iTP=Local
keeps ClusterIP local; session affinity carries its timeout; Maglev tables equal build_table of
the backends; healthCheckNodePort counts local endpoints; and ids stay stable: recomputing with
the returned allocations keeps every surviving frontend's and backend's id, whatever changes
around them (property), and the encoding lists a service's slots before its slot 0.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from svcobjects import endpoint, endpoint_slice, node, service

from hexlane.datapath.lb.encode import encode
from hexlane.datapath.lb.maps import (
    SVC_FLAG2_TWO_SCOPES,
    SVC_FLAG_EXT_LOCAL,
    SVC_FLAG_NODEPORT,
)
from hexlane.lb.maglev import MaglevBackend, build_table
from hexlane.lb.services import (
    CLUSTER_IP,
    EXTERNAL_IP,
    LOAD_BALANCER,
    NODE_PORT,
    SCOPE_EXT,
    SCOPE_INT,
    STATE_TERMINATING,
    FrontendKey,
    LbSettings,
    desired_state,
)
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.service import Service

NODES = [node("n1", "10.0.0.11"), node("n2", "10.0.0.12")]
HTTP = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]
EP_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]


def _lb_service(**kw: Any) -> Service:
    return service("web", "10.43.0.10", HTTP, type="LoadBalancer", ingress=["10.0.0.200"],
                   **kw)


def _slices() -> list[EndpointSlice]:
    return [endpoint_slice("web", [endpoint("10.42.1.5", "n1"), endpoint("10.42.2.5", "n2")],
                           EP_PORTS)]


def test_frontends_of_a_load_balancer_service() -> None:
    d = desired_state([_lb_service()], _slices(), NODES, "n1", LbSettings())
    fes = {(s.type, s.frontend.address, s.frontend.port) for s in d.services}
    assert fes == {(CLUSTER_IP, "10.43.0.10", 80), (NODE_PORT, "10.0.0.11", 30080),
                   (LOAD_BALANCER, "10.0.0.200", 80)}
    assert all(len(s.backend_ids) == 2 for s in d.services)
    addrs = sorted((b.address, b.port, b.local) for b in d.backends.values())
    assert addrs == [("10.42.1.5", 8080, True), ("10.42.2.5", 8080, False)]


def test_external_ips_only_when_enabled() -> None:
    svc = service("ext", "10.43.0.11", HTTP, external_ips=["192.0.2.7"])
    off = desired_state([svc], [], NODES, "n1", LbSettings(external_ips=False))
    on = desired_state([svc], [], NODES, "n1", LbSettings(external_ips=True))
    assert EXTERNAL_IP not in {s.type for s in off.services}
    assert [s.frontend.address for s in on.services if s.type == EXTERNAL_IP] == ["192.0.2.7"]


def test_tcp_and_udp_on_one_port_are_two_frontends() -> None:
    dns = service("dns", "10.43.0.53", [{"name": "dns", "port": 53, "protocol": "UDP"},
                                         {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    sl = endpoint_slice("dns", [endpoint("10.42.1.9", "n1")],
                        [{"name": "dns", "port": 53, "protocol": "UDP"},
                         {"name": "dns-tcp", "port": 53, "protocol": "TCP"}])
    d = desired_state([dns], [sl], NODES, "n1", LbSettings())
    assert sorted(s.frontend.protocol for s in d.services) == ["TCP", "UDP"]
    assert len({s.id for s in d.services}) == 2
    assert sorted(b.protocol for b in d.backends.values()) == ["TCP", "UDP"]


def test_terminating_endpoints_only_when_none_ready() -> None:
    svc = service("web", "10.43.0.10", HTTP)
    mixed = endpoint_slice("web", [
        endpoint("10.42.1.5", "n1"),
        endpoint("10.42.1.6", "n1", ready=False, serving=True, terminating=True),
        endpoint("10.42.1.7", "n1", ready=False, serving=False),
    ], EP_PORTS)
    d = desired_state([svc], [mixed], NODES, "n1", LbSettings())
    (entry,) = d.services
    assert [d.backends[b].address for b in entry.backend_ids] == ["10.42.1.5"]
    # the draining one stays in the backend map (established flows), in no slot
    assert sorted((b.address, b.state) for b in d.backends.values()) == [
        ("10.42.1.5", "active"), ("10.42.1.6", STATE_TERMINATING)]
    draining = endpoint_slice("web", [
        endpoint("10.42.1.6", "n1", ready=False, serving=True, terminating=True),
        endpoint("10.42.1.7", "n1", ready=False, serving=False, terminating=True),
    ], EP_PORTS)
    d = desired_state([svc], [draining], NODES, "n1", LbSettings())
    assert [(b.address, b.state) for b in d.backends.values()] == [("10.42.1.6",
                                                                     STATE_TERMINATING)]


def test_external_traffic_policy_local_two_scopes() -> None:
    d = desired_state([_lb_service(etp="Local", health_check_node_port=32000)], _slices(),
                      NODES, "n1", LbSettings())
    by = d.by_frontend()
    local = {b.id for b in d.backends.values() if b.local}
    every = set(d.backends)
    for addr, port in (("10.0.0.11", 30080), ("10.0.0.200", 80)):
        ext = by[FrontendKey(addr, port, "TCP", SCOPE_EXT)]
        internal = by[FrontendKey(addr, port, "TCP", SCOPE_INT)]
        assert set(ext.backend_ids) == local and set(internal.backend_ids) == every
        assert ext.two_scopes and ext.ext_local and ext.id != internal.id
    cluster = by[FrontendKey("10.43.0.10", 80, "TCP", SCOPE_EXT)]
    assert set(cluster.backend_ids) == every and not cluster.two_scopes
    assert [(h.port, h.local_endpoints) for h in d.health_checks] == [(32000, 1)]
    master = [v for k, v in encode(d).services if k.backend_slot == 0 and v.flags
              & SVC_FLAG_NODEPORT and k.scope == SCOPE_EXT]
    assert master and master[0].flags & SVC_FLAG_EXT_LOCAL
    assert master[0].flags2 & SVC_FLAG2_TWO_SCOPES


def test_internal_traffic_policy_local() -> None:
    d = desired_state([_lb_service(itp="Local")], _slices(), NODES, "n1", LbSettings())
    by = d.by_frontend()
    local = {b.id for b in d.backends.values() if b.local}
    assert set(by[FrontendKey("10.43.0.10", 80, "TCP")].backend_ids) == local
    assert set(by[FrontendKey("10.0.0.200", 80, "TCP", SCOPE_INT)].backend_ids) == local
    assert len(by[FrontendKey("10.0.0.200", 80, "TCP", SCOPE_EXT)].backend_ids) == 2


def test_affinity_and_modes() -> None:
    d = desired_state([_lb_service(affinity=600)], _slices(), NODES, "n1",
                      LbSettings(mode="hybrid"))
    assert {s.affinity_timeout_s for s in d.services} == {600}
    assert {s.dsr for s in d.services if s.type != CLUSTER_IP} == {True}
    assert {s.dsr for s in d.services if s.type == CLUSTER_IP} == {False}
    udp = service("u", "10.43.0.12", [{"name": "u", "port": 5000, "protocol": "UDP",
                                        "nodePort": 30500}], type="NodePort")
    d = desired_state([udp], [], NODES, "n1", LbSettings(mode="hybrid"))
    assert {s.dsr for s in d.services} == {False}


def test_per_service_annotations_when_enabled() -> None:
    """service.cilium.io/lb-algorithm and forwarding-mode choose per Service, but only with
    bpf.lbAlgorithmAnnotation / bpf.lbModeAnnotation; a bad value is reported and the
    cluster's setting kept."""
    notes = {"service.cilium.io/lb-algorithm": "Maglev",
             "service.cilium.io/forwarding-mode": "dsr"}
    annotated = _lb_service(annotations=notes)
    off = desired_state([annotated], _slices(), NODES, "n1", LbSettings(table_size=251))
    assert {(s.algorithm, s.dsr) for s in off.services} == {("random", False)}
    on = LbSettings(table_size=251, algorithm_annotation=True, mode_annotation=True)
    d = desired_state([annotated], _slices(), NODES, "n1", on)
    assert {s.algorithm for s in d.services} == {"maglev"}
    assert all(len(s.maglev) == 251 for s in d.services)
    assert {s.dsr for s in d.services if s.type != CLUSTER_IP} == {True}
    plain = service("plain", "10.43.0.11", HTTP, type="NodePort")
    hybrid = service("h", "10.43.0.12", [{**HTTP[0], "nodePort": 30082},
                                         {"name": "u", "port": 53, "protocol": "UDP",
                                          "nodePort": 30053}], type="NodePort",
                     annotations={"service.cilium.io/forwarding-mode": "hybrid"})
    bad = service("bad", "10.43.0.13", [{**HTTP[0], "nodePort": 30081}], type="NodePort",
                  annotations={"service.cilium.io/forwarding-mode": "tunnel"})
    d = desired_state([plain, hybrid, bad], [], NODES, "n1", on)
    by = {(s.name, s.frontend.protocol, s.type): s for s in d.services}
    assert not by["plain", "TCP", NODE_PORT].dsr
    assert by["h", "TCP", NODE_PORT].dsr and not by["h", "UDP", NODE_PORT].dsr
    assert not by["bad", "TCP", NODE_PORT].dsr
    assert [p for p in d.problems if "default/bad" in p and "tunnel" in p]
    # Tunnel routing carries no DSR information (Cilium would need Geneve): reported, SNAT.
    tunnel = LbSettings(table_size=251, algorithm_annotation=True, mode_annotation=True,
                        dsr_possible=False)
    d = desired_state([annotated], _slices(), NODES, "n1", tunnel)
    assert {s.dsr for s in d.services} == {False}
    assert [p for p in d.problems if "routingMode" in p]


def test_maglev_tables_match_build_table() -> None:
    d = desired_state([_lb_service()], _slices(), NODES, "n1",
                      LbSettings(algorithm="maglev", table_size=251))
    for s in d.services:
        want = build_table([MaglevBackend(b, d.backends[b].address, d.backends[b].port)
                            for b in s.backend_ids], 251)
        assert list(s.maglev) == want


def test_encoding_writes_slots_before_slot_zero() -> None:
    d = desired_state([_lb_service()], _slices(), NODES, "n1", LbSettings())
    seen_master: set[tuple[int, int, int, int]] = set()
    for key, _value in encode(d).services:
        fe = (key.address, key.dport, key.proto, key.scope)
        if key.backend_slot == 0:
            seen_master.add(fe)
        else:
            assert fe not in seen_master


_ips = st.integers(1, 40).map(lambda i: f"10.42.{i % 3}.{i}")


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.lists(_ips, max_size=5, unique=True)),
                min_size=1, max_size=6),
       st.lists(st.tuples(st.integers(0, 5), st.lists(_ips, max_size=5, unique=True)),
                min_size=1, max_size=6))
def test_ids_stay_stable_across_recomputation(
    first: list[tuple[int, list[str]]], second: list[tuple[int, list[str]]],
) -> None:
    def objects(spec: list[tuple[int, list[str]]]
                ) -> tuple[list[Service], list[EndpointSlice]]:
        svcs: dict[int, Service] = {}
        slices: dict[int, EndpointSlice] = {}
        for i, ips in spec:
            svcs[i] = service(f"s{i}", f"10.43.1.{i + 1}", HTTP, type="NodePort")
            slices[i] = endpoint_slice(f"s{i}", [endpoint(ip, "n1" if ip.startswith("10.42.1")
                                                          else "n2") for ip in ips], EP_PORTS)
        return list(svcs.values()), list(slices.values())

    s1, e1 = objects(first)
    d1 = desired_state(s1, e1, NODES, "n1", LbSettings())
    s2, e2 = objects(second)
    d2 = desired_state(s2, e2, NODES, "n1", LbSettings(), d1.ids)
    for fe, sid in d1.ids.services.items():
        if fe in d2.ids.services:
            assert d2.ids.services[fe] == sid
    for be, bid in d1.ids.backends.items():
        if be in d2.ids.backends:
            assert d2.ids.backends[be] == bid
    # ids are unique, and every service's backends exist
    assert len(set(d2.ids.services.values())) == len(d2.ids.services)
    assert len(set(d2.ids.backends.values())) == len(d2.ids.backends)
    for s in d2.services:
        assert all(b in d2.backends for b in s.backend_ids)
    # the same input computed afresh with the same ids is the same state (pure, deterministic)
    again = desired_state(s2, e2, NODES, "n1", LbSettings(), d1.ids)
    assert again.services == d2.services


def test_a_freed_id_is_not_given_again_at_once() -> None:
    """A Service deleted and another created: the new one gets a new id (the old one's flows
    may still be in conntrack); ids go on from the last given and wrap at the limit."""
    from hexlane.lb.services import _next_id

    one = desired_state([_lb_service()], _slices(), NODES, "n1", LbSettings())
    used = set(one.ids.services.values())
    other = service("other", "10.43.0.99", [{**HTTP[0], "nodePort": 30099}], type="NodePort")
    two = desired_state([other], _slices(), NODES, "n1", LbSettings(), one.ids)
    assert not used & set(two.ids.services.values())
    assert _next_id({2}, 3, 2) == 3
    assert _next_id({2, 3}, 3, 3) == 1  # wraps
    assert _next_id({1, 2, 3}, 3, 0) is None  # all taken
