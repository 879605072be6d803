"""hexlane.lb.services.LbModel: the load balancer's state kept up to date one object at a time.

Pins down, as properties over random histories of Service, EndpointSlice and Node changes
(frontends claimed by two Services, shared backends, terminating endpoints, NodePorts moving
with the node's address, nodes becoming unreachable and reachable again): after every commit
the model's state is what computing everything at once gives (the same frontends, backends
and tables, ids aside); the deltas, applied to an empty table in order, rebuild exactly the
model's entries and backends; every id is unique and every entry's backends exist; and a
commit recomputes only the Services touched since the last one (for an unreachable node, only
those with endpoints there).

Unreachable nodes (the heartbeat's dead nodes): their endpoints leave every slot and Maglev
table and stay in the backend map quarantined, with their ids; ready endpoints all on
unreachable nodes fall back to serving terminating ones elsewhere, or to none (ICMP reject);
the node coming back restores the entries exactly as before; this node's own name is ignored.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from svcobjects import endpoint, endpoint_slice, node, service

from hexlane.lb.services import (
    STATE_ACTIVE,
    STATE_QUARANTINED,
    STATE_TERMINATING,
    Backend,
    DesiredState,
    FrontendKey,
    LbModel,
    LbSettings,
    ServiceEntry,
    desired_state,
)

HTTP = [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP", "nodePort": 30080}]
EP_PORTS = [{"name": "http", "port": 8080, "protocol": "TCP"}]
SETTINGS = LbSettings(algorithm="maglev", table_size=251, external_ips=True)


def _svc(i: int, variant: int) -> Any:
    # A few Services share a ClusterIP (a conflict) or an external IP, some are Local.
    ports = [{**HTTP[0], "nodePort": 30080 + i}]
    return service(f"s{i}", f"10.43.0.{1 + i % 4}", ports,
                   type="LoadBalancer" if variant % 2 else "NodePort",
                   ingress=[f"10.0.0.{200 + i}"] if variant % 2 else [],
                   external_ips=["10.0.0.99"] if variant == 2 else [],
                   etp="Local" if variant == 3 else None)


def _slice(i: int, ips: list[int], part: int) -> Any:
    return endpoint_slice(f"s{i}", [endpoint(f"10.42.{ip % 2}.{ip}", f"n{1 + ip % 2}",
                                             ready=ip % 5 != 0, serving=True,
                                             terminating=ip % 5 == 0) for ip in ips],
                          EP_PORTS, name=f"s{i}-{part}")


def _node(address: int) -> Any:
    return [node("n1", f"10.0.0.{address}"), node("n2", "10.0.0.12")]


ops = st.lists(st.one_of(
    st.tuples(st.just("svc"), st.integers(0, 5), st.integers(0, 3)),
    st.tuples(st.just("del-svc"), st.integers(0, 5), st.just(0)),
    st.tuples(st.just("slice"), st.integers(0, 5), st.lists(st.integers(1, 12), max_size=4),
              st.integers(0, 1)),
    st.tuples(st.just("del-slice"), st.integers(0, 5), st.integers(0, 1)),
    st.tuples(st.just("node"), st.integers(11, 13), st.just(0)),
    st.tuples(st.just("unreachable"), st.frozensets(st.sampled_from(["n1", "n2", "n3"])),
              st.just(0)),
    st.tuples(st.just("commit"), st.just(0), st.just(0)),
), max_size=30)


def _canonical(state: DesiredState) -> set[tuple[Any, ...]]:
    """Entries with backend ids replaced by the backends themselves (ids aside)."""
    out = set()
    for e in state.services:
        bks = tuple((state.backends[b].address, state.backends[b].state)
                    for b in e.backend_ids)
        maglev = tuple(state.backends[b].address for b in e.maglev)
        out.add((e.frontend, e.type, e.namespace, e.name, bks, e.ext_local, e.int_local,
                 e.two_scopes, maglev))
    # and the backend map itself, slots or not (draining and quarantined ones)
    out.update(("backend", b.address, b.port, b.state, b.node_name, b.local)
               for b in state.backends.values())
    return out


_node_sets = st.frozensets(st.sampled_from(["n1", "n2", "n3"]))


@settings(max_examples=150, deadline=None)
@given(ops, _node_sets)
def test_incremental_equals_all_at_once_and_deltas_rebuild_it(history: list[Any],
                                                              dead: frozenset[str]) -> None:
    model = LbModel("n1", SETTINGS)
    services: dict[int, Any] = {}
    slices: dict[tuple[int, int], Any] = {}
    nodes = _node(11)
    unreachable: frozenset[str] = frozenset()
    model.set_nodes(nodes)
    table: dict[FrontendKey, ServiceEntry] = {}
    backends: dict[int, Backend] = {}

    def commit() -> None:
        delta = model.commit()
        for old in delta.old:
            table.pop(old.frontend, None)
        for entry in delta.entries:
            table[entry.frontend] = entry
        for b in delta.backends:
            backends[b.id] = b
        for bid in delta.removed_backends:
            del backends[bid]
        # after every commit, not only the last: a Service left stale by one commit may be
        # touched again (and so made right) before the end of the history
        state = model.state()
        fresh = desired_state(services.values(), slices.values(), nodes, "n1", SETTINGS,
                              unreachable=unreachable)
        assert _canonical(state) == _canonical(fresh)
        assert sorted(state.problems) == sorted(fresh.problems)
        assert {h.port for h in state.health_checks} == {h.port for h in fresh.health_checks}
        # the deltas rebuilt exactly the model's entries and backends
        assert table == {e.frontend: e for e in state.services}
        assert backends == dict(state.backends)
        ids = [e.id for e in state.services]
        assert len(ids) == len(set(ids))
        for e in state.services:
            assert all(b in state.backends for b in e.backend_ids)

    for op in history:
        kind = op[0]
        if kind == "svc":
            services[op[1]] = _svc(op[1], op[2])
            model.set_service(services[op[1]])
        elif kind == "del-svc":
            services.pop(op[1], None)
            model.delete_service("default", f"s{op[1]}")
        elif kind == "slice":
            slices[op[1], op[3]] = _slice(op[1], op[2], op[3])
            model.set_slice(slices[op[1], op[3]])
        elif kind == "del-slice":
            slices.pop((op[1], op[2]), None)
            model.delete_slice("default", f"s{op[1]}-{op[2]}")
        elif kind == "node":
            nodes = _node(op[1])
            model.set_nodes(nodes)
        elif kind == "unreachable":
            unreachable = op[1]
            model.set_unreachable_nodes(unreachable)
        else:
            commit()
    commit()
    # then nodes die and come back on whatever the history built
    for unreachable in (dead, frozenset()):
        model.set_unreachable_nodes(unreachable)
        commit()


def test_a_commit_recomputes_only_what_was_touched() -> None:
    model = LbModel("n1", SETTINGS)
    model.set_nodes(_node(11))
    for i in range(50):
        model.set_service(_svc(i, 1))
        model.set_slice(_slice(i, [1, 2, 3], 0))
    first = model.commit()
    assert first.services_recomputed == 50
    model.set_service(_svc(7, 1))  # the same object again: nothing to do
    assert model.commit().empty
    model.set_slice(_slice(7, [1, 2], 0))
    delta = model.commit()
    assert delta.services_recomputed == 1
    assert {e.name for e in delta.entries} == {"s7"}
    assert {e.name for e in delta.old} == {"s7"}
    assert delta.backends == () and delta.removed_backends == ()  # still used by others


def _web(nodes_of: dict[str, str], **kw: Any) -> tuple[Any, Any]:
    """A LoadBalancer Service (Maglev) with one endpoint per address, on the given nodes."""
    svc = service("web", "10.43.0.10", HTTP, type="LoadBalancer", ingress=["10.0.0.200"], **kw)
    eps = [endpoint(address, name) for address, name in nodes_of.items()]
    return svc, endpoint_slice("web", eps, EP_PORTS)


def _slots(state: DesiredState) -> dict[FrontendKey, list[str]]:
    return {e.frontend: [state.backends[b].address for b in e.backend_ids]
            for e in state.services}


def test_an_unreachable_node_s_backends_are_quarantined_and_come_back() -> None:
    svc, sl = _web({"10.42.1.5": "n1", "10.42.2.5": "n2", "10.42.3.5": "n3"})
    model = LbModel("n1", SETTINGS)
    model.set_nodes(_node(11))
    model.set_service(svc)
    model.set_slice(sl)
    model.commit()
    before = model.state()
    ids = dict(before.ids.backends)

    model.set_unreachable_nodes(["n2"])
    delta = model.commit()
    assert delta.services_recomputed == 1
    dead = model.state()
    assert all(slots == ["10.42.1.5", "10.42.3.5"] for slots in _slots(dead).values())
    for e in dead.services:  # the Maglev tables are built without it
        assert {dead.backends[b].address for b in e.maglev} == {"10.42.1.5", "10.42.3.5"}
    # still in the backend map, quarantined, with its id (established flows, and its return)
    assert {b.address: b.state for b in dead.backends.values()} == {
        "10.42.1.5": STATE_ACTIVE, "10.42.2.5": STATE_QUARANTINED, "10.42.3.5": STATE_ACTIVE}
    assert dead.ids.backends == ids
    assert delta.removed_backends == ()
    assert [b.state for b in delta.backends] == [STATE_QUARANTINED]
    # the same as computing everything at once
    fresh = desired_state([svc], [sl], _node(11), "n1", SETTINGS, unreachable=["n2"])
    assert _canonical(fresh) == _canonical(dead)

    model.set_unreachable_nodes([])
    delta = model.commit()
    assert delta.services_recomputed == 1
    again = model.state()
    assert again.services == before.services  # the same ids, slots and tables
    assert dict(again.backends) == dict(before.backends)
    assert [b.state for b in delta.backends] == [STATE_ACTIVE]


def test_the_local_node_is_never_unreachable_to_itself() -> None:
    svc, sl = _web({"10.42.1.5": "n1", "10.42.2.5": "n2"})
    model = LbModel("n1", SETTINGS)
    model.set_nodes(_node(11))
    model.set_service(svc)
    model.set_slice(sl)
    model.commit()
    model.set_unreachable_nodes(["n1"])
    assert model.unreachable == frozenset() and model.commit().empty
    fresh = desired_state([svc], [sl], _node(11), "n1", SETTINGS, unreachable=["n1", "n2"])
    assert all(slots == ["10.42.1.5"] for slots in _slots(fresh).values())


def test_every_backend_unreachable_is_like_none_ready() -> None:
    """No backend for new connections: the entries stay with no slot (the datapath rejects
    with ICMP), as a Service whose endpoints are all not ready."""
    svc, sl = _web({"10.42.2.5": "n2", "10.42.3.5": "n3"})
    dead = desired_state([svc], [sl], _node(11), "n1", SETTINGS, unreachable=["n2", "n3"])
    not_ready = endpoint_slice("web", [endpoint("10.42.2.5", "n2", ready=False),
                                       endpoint("10.42.3.5", "n3", ready=False)], EP_PORTS)
    none = desired_state([svc], [not_ready], _node(11), "n1", SETTINGS)
    assert {e.frontend for e in dead.services} == {e.frontend for e in none.services}
    assert all(e.backend_ids == () and e.maglev == () for e in dead.services)
    assert {b.state for b in dead.backends.values()} == {STATE_QUARANTINED}


def test_ready_endpoints_all_unreachable_fall_back_to_terminating_ones() -> None:
    svc = service("web", "10.43.0.10", HTTP)
    sl = endpoint_slice("web", [
        endpoint("10.42.2.5", "n2"),
        endpoint("10.42.1.6", "n1", ready=False, serving=True, terminating=True),
        endpoint("10.42.3.7", "n3", ready=False, serving=False),
    ], EP_PORTS)
    d = desired_state([svc], [sl], _node(11), "n1", SETTINGS, unreachable=["n2", "n3"])
    assert list(_slots(d).values()) == [["10.42.1.6"]]
    assert {b.address: b.state for b in d.backends.values()} == {
        "10.42.1.6": STATE_TERMINATING, "10.42.2.5": STATE_QUARANTINED}


def test_an_unreachable_node_recomputes_only_the_services_with_endpoints_there() -> None:
    model = LbModel("n1", SETTINGS)
    model.set_nodes(_node(11))
    for i in range(30):
        model.set_service(_svc(i, 1))
        # Services 0-9 have endpoints on n1 only (even addresses), the others on n1 and n2
        model.set_slice(_slice(i, [2, 4] if i < 10 else [1, 2], 0))
    model.commit()
    model.set_unreachable_nodes(["n2"])
    delta = model.commit()
    assert delta.services_recomputed == 20
    assert {e.name for e in delta.entries} == {f"s{i}" for i in range(10, 30)}
    model.set_unreachable_nodes(["n2", "n3"])  # no endpoint on n3: nothing to do
    assert model.commit().services_recomputed == 0
    # a slice moving off n2 takes its Service out of n2's index
    model.set_slice(_slice(12, [2], 0))
    model.delete_slice("default", "s13-0")
    model.commit()
    model.set_unreachable_nodes([])
    assert model.commit().services_recomputed == 18
