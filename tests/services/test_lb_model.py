"""hexlane.lb.services.LbModel: the load balancer's state kept up to date one object at a time.

Pins down, as properties over random histories of Service, EndpointSlice and Node changes
(frontends claimed by two Services, shared backends, terminating endpoints, NodePorts moving
with the node's address): after every commit the model's state is what computing everything
at once gives (the same frontends, backends and tables, ids aside); the deltas, applied to an
empty table in order, rebuild exactly the model's entries and backends; every id is unique
and every entry's backends exist; and a commit recomputes only the Services touched since the
last one.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from svcobjects import endpoint, endpoint_slice, node, service

from hexlane.lb.services import (
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
    return out


@settings(max_examples=150, deadline=None)
@given(ops)
def test_incremental_equals_all_at_once_and_deltas_rebuild_it(history: list[Any]) -> None:
    model = LbModel("n1", SETTINGS)
    services: dict[int, Any] = {}
    slices: dict[tuple[int, int], Any] = {}
    nodes = _node(11)
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
        else:
            commit()
    commit()
    state = model.state()
    fresh = desired_state(services.values(), slices.values(), nodes, "n1", SETTINGS)
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
