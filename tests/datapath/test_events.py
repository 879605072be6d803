"""Flow events from the LB programs on real packets, read from the ring buffer as the agent does.

Pins down, on a client, a node with two pods (lxc veths) and the programs attached as the
agent attaches them: a TCP connection from the client to a LoadBalancer address is reported
once per direction and TCP flag (Cilium's monitor aggregation), the request at the backend's
veth as to-endpoint with the client and backend addresses and the frontend, the reply as
to-network marked as the reply; pod-to-pod traffic is reported once, where it leaves the
first pod (to-endpoint: this node's pod CIDR), not again where it enters the second; a
service without backends yields a drop event with its reason; UDP and ICMP are reported;
with events off nothing is; and what was emitted = received + lost. With Hubble metrics on,
the agent's observer builds every flow once as it drains the ring, the handlers count each
(SYNs, requests by port, echo requests) and the store keeps the very flows built.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Network

import pytest
from bpf_lbsetup import (
    BACKEND_IP,
    CLIENT,
    CLIENT_IP,
    POD2_IP,
    SERVER,
    Services,
    attach_as_agent,
    client_node_two_pods,
)

from helpers import packets
from hexlane.agent.hubble import HubbleObserver
from hexlane.config.hubble_metrics import parse_metric_list
from hexlane.datapath.events import (
    EVENT_DROP,
    EVENT_TRACE,
    Event,
    EventReader,
    ObservationPoint,
    decode,
    read_stats,
    trace_config,
)
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.maps import DropReason
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.filters import compile_filters
from hexlane.hubble.metrics import HubbleMetrics
from hexlane.hubble.reading import FlowQuery
from hexlane.hubble.store import FlowStore
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns
from hexlane.lb.services import LOAD_BALANCER

pytestmark = [pytest.mark.slow, pytest.mark.root]

SYN, FIN, RST, ACK = 0x02, 0x01, 0x04, 0x10


@pytest.fixture(scope="module")
def topo(lb: LbDatapath) -> Iterator[Topology]:
    with Topology("hl-ev") as t:
        client_node_two_pods(t)
        server = t.start("be", [sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        run_in_netns(netns_path(t["node"]), lambda: attach_as_agent(lb, ["toclient"]))
        yield t


def set_events(services: Services, on: bool) -> None:
    """Through the agent's own path: LbSync's reconciled config (this node's pod CIDR is
    10.78.0.0/24)."""
    services.sync.set_trace_config(trace_config(
        on=on, pod_cidr=IPv4Network("10.78.0.0/24") if on else None, overlay_ifindex=0,
        host_ifindex=0))
    assert not services.sync.flush().failed


@pytest.fixture
def events(lb: LbDatapath, services: Services, topo: Topology) -> Iterator[EventReader]:
    """Events on, a reader over the ring, drained."""
    set_events(services, True)
    with EventReader(lb.maps.events) as reader:
        reader.consume()
        yield reader
    set_events(services, False)


def call(t: Topology, source: str, kind: str, host: str, port: int) -> list[str]:
    return run(t[source], [sys.executable, "-c", CLIENT, kind, host, str(port)],
               timeout=20).stdout.split()


def drained(reader: EventReader) -> list[Event]:
    time.sleep(0.2)  # the last FIN/ACKs of a closed connection
    return [decode(raw) for raw in reader.consume()]


def summary(ev: Event) -> tuple[object, ...]:
    return (ev.type, ObservationPoint(ev.obs_point).name if ev.type == EVENT_TRACE else "",
            ev.saddr, ev.sport, ev.daddr, ev.dport, ev.tcp_flags, ev.is_reply)


def test_a_connection_to_a_service_is_traced_once_per_direction_and_flag(
        lb: LbDatapath, services: Services, topo: Topology, events: EventReader) -> None:
    services.add("10.96.0.110", 80, packets.TCP, 11, [(11, BACKEND_IP, 8080)],
                 type=LOAD_BALANCER, local=True)
    status, port, *_ = call(topo, "client", "tcp", "10.96.0.110", 80)
    assert status == "ok"
    port_n = int(port)
    got = drained(events)
    assert got, "no events"
    assert all({ev.saddr, ev.daddr} == {CLIENT_IP, BACKEND_IP} for ev in got), got
    assert all(ev.type == EVENT_TRACE and ev.svc_addr == "10.96.0.110" and ev.svc_port == 80
               for ev in got), got
    seen = [summary(ev) for ev in got]
    assert seen[:2] == [
        (EVENT_TRACE, "TO_ENDPOINT", CLIENT_IP, port_n, BACKEND_IP, 8080, SYN, False),
        (EVENT_TRACE, "TO_NETWORK", BACKEND_IP, 8080, CLIENT_IP, port_n, SYN | ACK, True),
    ]
    # Then only the closing flags, once each per direction; never a plain ACK.
    rest = seen[2:]
    assert rest and len(rest) == len(set(rest)), rest
    assert all(s[6] & (FIN | RST) for s in rest), rest
    forward = [s for s in rest if s[2] == CLIENT_IP]
    assert all(s[1] == "TO_ENDPOINT" and not s[7] for s in forward), forward
    assert all(s[1] == "TO_NETWORK" and s[7] for s in rest if s[2] == BACKEND_IP), rest


def test_pod_to_pod_is_traced_where_it_leaves_the_pod_only(
        topo: Topology, events: EventReader) -> None:
    status, port, *_ = call(topo, "p2", "tcp", BACKEND_IP, 8080)
    assert status == "ok"
    got = [summary(ev) for ev in drained(events)]
    assert got[:2] == [
        (EVENT_TRACE, "TO_ENDPOINT", POD2_IP, int(port), BACKEND_IP, 8080, SYN, False),
        (EVENT_TRACE, "TO_ENDPOINT", BACKEND_IP, 8080, POD2_IP, int(port), SYN | ACK, True),
    ]
    assert len(got) == len(set(got)), got  # not once more by the receiving veth's egress


def test_udp_and_icmp_are_traced(topo: Topology, events: EventReader) -> None:
    status, port, *_ = call(topo, "p2", "udp", BACKEND_IP, 8081)
    assert status == "ok"
    run(topo["p2"], ["ping", "-c", "2", "-i", "0.2", "-W", "2", BACKEND_IP], timeout=10)
    got = drained(events)
    udp = [summary(ev) for ev in got if ev.proto == 17]
    assert udp == [
        (EVENT_TRACE, "TO_ENDPOINT", POD2_IP, int(port), BACKEND_IP, 8081, 0, False),
        (EVENT_TRACE, "TO_ENDPOINT", BACKEND_IP, 8081, POD2_IP, int(port), 0, True),
    ]
    icmp = [(ev.saddr, ev.daddr, ev.icmp_type, ev.is_reply) for ev in got if ev.proto == 1]
    # two echoes, reported once each way (aggregated by the echo identifier)
    assert icmp == [(POD2_IP, BACKEND_IP, 8, False), (BACKEND_IP, POD2_IP, 0, True)]


def test_a_service_without_backends_reports_the_drop(
        services: Services, topo: Topology, events: EventReader) -> None:
    services.add("10.96.0.111", 80, packets.TCP, 12, [], type=LOAD_BALANCER)
    assert call(topo, "client", "tcp", "10.96.0.111", 80) == ["refused"]
    drops = [ev for ev in drained(events) if ev.type == EVENT_DROP]
    assert len(drops) == 1
    (drop,) = drops
    assert (drop.reason, drop.saddr, drop.daddr, drop.dport, drop.svc_addr) == (
        DropReason.NO_BACKEND, CLIENT_IP, "10.96.0.111", 80, "10.96.0.111")


def test_emitted_is_received_plus_lost(lb: LbDatapath, topo: Topology,
                                       events: EventReader) -> None:
    before = read_stats(lb.maps.events_stats)
    received_before = events.received
    for _ in range(5):
        assert call(topo, "p2", "tcp", BACKEND_IP, 8080)[0] == "ok"
    drained(events)
    after = read_stats(lb.maps.events_stats)
    emitted = after.emitted - before.emitted
    assert emitted >= 5 * 4  # SYN, SYN-ACK and a FIN each way per connection
    assert events.received - received_before + after.lost - before.lost == emitted
    assert after.lost == before.lost


def test_nothing_is_reported_while_events_are_off(lb: LbDatapath, services: Services,
                                                  topo: Topology) -> None:
    set_events(services, False)
    with EventReader(lb.maps.events) as reader:
        reader.consume()
        before = read_stats(lb.maps.events_stats).emitted
        assert call(topo, "p2", "tcp", BACKEND_IP, 8080)[0] == "ok"
        assert drained(reader) == []
        assert read_stats(lb.maps.events_stats).emitted == before


def test_with_metrics_every_flow_is_built_once_counted_and_kept(
        lb: LbDatapath, services: Services, topo: Topology) -> None:
    specs, _ = parse_metric_list(["flow", "tcp", "port-distribution", "icmp"])
    metrics = HubbleMetrics(specs)
    store = FlowStore(4095, node_name="node")
    observer = HubbleObserver("node", {}, store, metrics=metrics)
    built = 0
    build = observer.parser.flow

    def counting(*args: object) -> flow_pb2.Flow:
        nonlocal built
        built += 1
        return build(*args)  # type: ignore[arg-type]

    observer.parser.flow = counting  # type: ignore[method-assign]

    async def traffic() -> tuple[list[flow_pb2.Flow], int]:
        observer.start(lb.maps.events, lb.maps.events_stats, [])
        try:
            for _ in range(3):
                assert (await asyncio.to_thread(call, topo, "p2", "tcp", BACKEND_IP,
                                                8080))[0] == "ok"
            await asyncio.to_thread(run, topo["p2"], ["ping", "-c", "1", "-W", "2",
                                                      BACKEND_IP], timeout=10)
            await asyncio.sleep(0.4)  # the closing FINs, and a drain after them
            received = observer.stats().received
        finally:
            observer.close()
        return [f async for f in store.flows(FlowQuery(compile_filters()))
                if not isinstance(f, int)], received

    with EventReader(lb.maps.events) as reader:
        reader.consume()  # what earlier tests left
    set_events(services, True)
    try:
        flows, received = asyncio.run(traffic())
    finally:
        set_events(services, False)
    assert received == len(flows) == store.seen_flows == built  # built once, when drained
    fams = {fam.name: fam.series for fam in metrics.flows.families}
    assert sum(fams["hubble_flows_processed"].values()) == received  # type: ignore[arg-type]
    assert fams["hubble_tcp_flags"][("SYN", "IPv4")] == 3
    assert fams["hubble_tcp_flags"][("SYN-ACK", "IPv4")] == 3
    requests = sum(1 for f in flows if f.l4.TCP.destination_port == 8080
                   and not f.is_reply.value)
    assert requests >= 6  # a SYN and a FIN at least per connection
    assert fams["hubble_port_distribution"][("TCP", "8080")] == requests
    assert fams["hubble_icmp"] == {("IPv4", "EchoRequest"): 1.0, ("IPv4", "EchoReply"): 1.0}
