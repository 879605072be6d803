"""A node the heartbeat finds dead, in the kernel's maps: its backends leave every Service.

Pins down, with a ServiceReconciler writing real maps (the agent's path) and hl_from_pod run on
crafted packets: after `set_unreachable_nodes` and one commit the dead node's backend is in no
service slot and no Maglev table (`hexlane.datapath.lb.view` reads them back) but stays in the
backend map, quarantined, with its id; a flow already established to it keeps it, new
connections never get it; a Service with every backend on dead nodes rejects with ICMP; and
when the node is reachable again the slots, tables and ids are exactly what they were.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from helpers import packets
from hexlane.agent.loadbalancer import ServiceReconciler
from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4_str
from hexlane.datapath.lb import view
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, LbDatapath
from hexlane.datapath.lb.maps import BackendState
from hexlane.lb.services import LbSettings
from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service

pytestmark = pytest.mark.root

Run = Callable[[str, bytes], libbpf.TestRunResult]
CLIENT = "10.0.1.5"
WEB, ALONE = "10.96.3.10", "10.96.3.11"
DEAD = "10.244.2.5"  # the endpoint on n2
SYN, ACK = 0x02, 0x10


def _service(name: str, ip: str) -> Service:
    return Service.parse({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
        "spec": {"clusterIP": ip, "clusterIPs": [ip],
                 "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}})


def _slice(name: str, endpoints: dict[str, str]) -> EndpointSlice:
    return EndpointSlice.parse({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-a", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "nodeName": node, "conditions": {"ready": True}}
                      for address, node in endpoints.items()],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]})


def _node() -> Node:
    return Node.parse({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
                       "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.11"}]}})


def _programmed(lb: LbDatapath) -> dict[str, Any]:
    """What the maps hold: the slots and the Maglev table's backends by frontend (and the
    whole tables), and the backend map (address -> (id, state))."""
    rows = view.services(lb.bpf_root)
    tables = view.maglev_tables(lb.bpf_root)
    return {
        "slots": {r["frontend"]: [(b["id"], _ip(b["address"])) for b in r["backends"]]
                  for r in rows},
        "maglev": {t["frontend"]: sorted({_ip(a) for a in t["slots"]}) for t in tables},
        "tables": {t["frontend"]: t["backend_ids"] for t in tables},
        "backends": {ip4_str(v.address): (int(k.value), BackendState(v.flags))
                     for k, v in lb.maps.backends.iter_items()},
    }


def _ip(address: str) -> str:
    return address.split(":")[0]  # view's "address:port/protocol"


def _to(run: Run, sport: int, flags: int) -> str:
    """Where hl_from_pod sends a packet of the client's flow from `sport` to WEB:80."""
    out = run(PROGRAM_FROM_POD, packets.build(CLIENT, WEB, sport, 80, tcp_flags=flags))
    assert out.retval == libbpf.TC_ACT_OK
    return packets.parse(out.data).dst


def test_a_dead_node_s_backend_leaves_the_maps_and_comes_back(lb: LbDatapath, run: Run) -> None:
    rec = ServiceReconciler(lb, "n1", settings=LbSettings(algorithm="maglev"))
    web = _slice("web", {"10.244.1.5": "n1", DEAD: "n2", "10.244.3.5": "n3"})
    alone = _slice("alone", {"10.244.2.6": "n2"})
    rec.update([_service("web", WEB), _service("alone", ALONE)], [web, alone], [_node()])
    before = _programmed(lb)
    assert before["maglev"][f"{WEB}:80/TCP"] == ["10.244.1.5", DEAD, "10.244.3.5"]
    # a connection that the Maglev table gives to the backend on n2
    sport = next(p for p in range(40000, 41000) if _to(run, p, SYN) == DEAD)

    rec.model.set_unreachable_nodes(["n2"])
    report = rec.commit()
    assert report.recomputed == 2
    dead = _programmed(lb)
    assert [a for _, a in dead["slots"][f"{WEB}:80/TCP"]] == ["10.244.1.5", "10.244.3.5"]
    assert dead["maglev"][f"{WEB}:80/TCP"] == ["10.244.1.5", "10.244.3.5"]
    assert dead["slots"][f"{ALONE}:80/TCP"] == []
    # still in the backend map, quarantined, with its id
    assert dead["backends"][DEAD] == (before["backends"][DEAD][0], BackendState.QUARANTINED)
    assert dead["backends"]["10.244.1.5"] == before["backends"]["10.244.1.5"]
    # the established flow keeps its backend; new connections never get it
    assert _to(run, sport, ACK) == DEAD
    assert DEAD not in {_to(run, p, SYN) for p in range(41000, 41200)}
    # every backend on a dead node: no backend for a new connection, ICMP port unreachable
    out = run(PROGRAM_FROM_POD, packets.build(CLIENT, ALONE, 42000, 80, tcp_flags=SYN))
    assert out.retval == libbpf.TC_ACT_REDIRECT
    assert out.data[packets.ETH_HLEN + 9] == 1  # ICMP

    rec.model.set_unreachable_nodes([])
    rec.commit()
    assert _programmed(lb) == before
    assert _to(run, 42001, SYN) in ("10.244.1.5", DEAD, "10.244.3.5")
    out = run(PROGRAM_FROM_POD, packets.build(CLIENT, ALONE, 42002, 80, tcp_flags=SYN))
    assert packets.parse(out.data).dst == "10.244.2.6"
