"""The LB programs on real packets: client, node and backend namespaces joined by veths.

Pins down, with the programs attached on the node as the agent attaches them (the tc table
through the reconciler: the client-facing veth is the node's LAN device, the backend's veth a
pod's `lxc*`), services programmed through LbSync, and no iptables rule: a TCP connection and
a UDP exchange to a LoadBalancer address reach the backend (a pod of the node), which sees
the client's own address, and the replies come back from the service address (the client's
kernel accepts them: checksums right with real skbs); Maglev and random services both work;
a service without backends refuses the connection at once (ICMP port unreachable); a frame
for another host's MAC is left to the kernel.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest
from bpf_lbsetup import CLIENT, SERVER, Services, attach_as_agent

from helpers import packets
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns, veth
from hexlane.lb.maglev import MaglevBackend, build_table
from hexlane.lb.services import LOAD_BALANCER

pytestmark = [pytest.mark.slow, pytest.mark.root]

@pytest.fixture(scope="module")
def topo(lb: LbDatapath) -> Iterator[Topology]:
    with Topology("hl-lbt") as t:
        client, node, backend = t.add("client"), t.add("node"), t.add("backend")
        veth(client, "eth0", node, "toclient")
        veth(node, "lxc0b1", backend, "eth0")
        run(client, ["ip", "addr", "add", "10.77.0.2/24", "dev", "eth0"])
        run(client, ["ip", "route", "add", "default", "via", "10.77.0.1"])
        run(node, ["ip", "addr", "add", "10.77.0.1/24", "dev", "toclient"])
        run(node, ["ip", "addr", "add", "10.78.0.1/24", "dev", "lxc0b1"])
        run(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        run(backend, ["ip", "addr", "add", "10.78.0.2/24", "dev", "eth0"])
        run(backend, ["ip", "route", "add", "default", "via", "10.78.0.1"])
        server = t.start("backend", [sys.executable, "-c", SERVER], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True)
        assert server.stdout is not None and server.stdout.readline().strip() == "ready"

        run_in_netns(netns_path(node), lambda: attach_as_agent(lb, ["toclient"]))
        yield t


def client_call(t: Topology, kind: str, host: str, port: int) -> list[str]:
    return run(t["client"], [sys.executable, "-c", CLIENT, kind, host, str(port)],
               timeout=20).stdout.split()


def test_tcp_through_a_maglev_service(lb: LbDatapath, services: Services,
                                      topo: Topology) -> None:
    table = build_table([MaglevBackend(1, "10.78.0.2", 8080)], lb.table_size)
    services.add("10.96.0.100", 80, packets.TCP, 1, [(1, "10.78.0.2", 8080)],
                 type=LOAD_BALANCER, local=True, algorithm="maglev", maglev=table)
    for _ in range(3):
        status, local_port, peer, seen_by_backend = client_call(topo, "tcp", "10.96.0.100", 80)
        assert (status, peer) == ("ok", "10.96.0.100")
        # The backend saw the client itself (DNAT only, no SNAT).
        assert seen_by_backend == f"10.77.0.2:{local_port}"


def test_udp_through_a_random_service(services: Services, topo: Topology) -> None:
    services.add("10.96.0.100", 53, packets.UDP, 2, [(2, "10.78.0.2", 8081)],
                 type=LOAD_BALANCER, local=True)
    status, local_port, peer, seen, payload = client_call(topo, "udp", "10.96.0.100", 53)
    assert (status, peer, seen, payload) == ("ok", "10.96.0.100", f"10.77.0.2:{local_port}",
                                             "ping")


def test_service_without_backends_refuses_at_once(services: Services, topo: Topology) -> None:
    services.add("10.96.0.101", 80, packets.TCP, 3, [], type=LOAD_BALANCER)
    assert client_call(topo, "tcp", "10.96.0.101", 80) == ["refused"]


def test_a_frame_for_another_host_is_not_translated(services: Services,
                                                    topo: Topology) -> None:
    """A switch floods frames while it does not know the destination MAC (a dead node's,
    after its port went down): the node receives frames for another host and must leave them
    alone, or a client whose ARP cache still names the dead node would be served by everyone
    (and L2 failover would look instant without any election)."""
    services.add("10.96.0.102", 80, packets.TCP, 4, [(4, "10.78.0.2", 8080)],
                 type=LOAD_BALANCER, local=True)
    client = topo["client"]
    run(client, ["ip", "neigh", "replace", "10.77.0.9", "lladdr", "02:00:00:00:00:09",
                 "dev", "eth0", "nud", "permanent"])
    run(client, ["ip", "route", "replace", "10.96.0.102/32", "via", "10.77.0.9"])
    try:
        out = client_call(topo, "tcp", "10.96.0.102", 80)
        assert out[0] == "error", out
    finally:
        run(client, ["ip", "route", "del", "10.96.0.102/32"])
        run(client, ["ip", "neigh", "del", "10.77.0.9", "dev", "eth0"])
    assert client_call(topo, "tcp", "10.96.0.102", 80)[0] == "ok"  # to the node's MAC: served
