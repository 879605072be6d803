"""The ARP responder in `hl_from_netdev`, judged by arping and tcpdump in network namespaces.

A node namespace and a client namespace joined by a veth; the load balancer's netdev program
on the node end's ingress. Pins down: a request for an announced IP on that device gets a
reply with the device's MAC (counted in the entry, and in the total that outlives entries),
through the reconciler's table; an IP
not announced, or announced on another device, is not answered by us; a stale liveness stamp
(the agent stopped) silences the responder, a fresh one brings it back; a removed entry stops
the replies; `send_garp` puts a gratuitous ARP (reply to broadcast, sender = target = the IP)
on the wire.
"""

from __future__ import annotations

import secrets
import subprocess
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import pytest

from hexlane.datapath.l2 import Liveness, arp_replies, device_mac, open_maps, send_garp
from hexlane.datapath.lb.attach import TcTable
from hexlane.datapath.lb.loader import NETDEV_TC_PRIORITY, PROGRAM_FROM_NETDEV, LbDatapath
from hexlane.datapath.reconcile import Reconciler
from hexlane.lab.netns import netns_path, run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.root]

VIP = "10.99.0.150"
T = TypeVar("T")


def in_netns(name: str, work: Callable[[], T]) -> T:
    return run_in_netns(netns_path(name), work)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """(node namespace, client namespace), joined by hlN0 (node) -- hlC0 (client)."""
    tag = secrets.token_hex(3)
    node, client = f"hl-l2n-{tag}", f"hl-l2c-{tag}"
    for ns in (node, client):
        subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = subprocess.run
        run(["ip", "-n", node, "link", "add", "hlN0", "type", "veth", "peer", "name", "hlC0",
             "netns", client], check=True)
        run(["ip", "-n", node, "link", "add", "hlN1", "type", "veth", "peer", "name", "hlN2"],
            check=True)
        run(["ip", "-n", node, "addr", "add", "10.99.0.1/24", "dev", "hlN0"], check=True)
        run(["ip", "-n", client, "addr", "add", "10.99.0.2/24", "dev", "hlC0"], check=True)
        for ns, dev in ((node, "hlN0"), (node, "hlN1"), (client, "hlC0")):
            run(["ip", "-n", ns, "link", "set", dev, "up"], check=True)
        yield node, client
    finally:
        for ns in (node, client):
            subprocess.run(["ip", "netns", "del", ns], check=False)


def arping(client: str, ip: str) -> list[str]:
    """The MACs that answered one ARP request for `ip` from the client (within 0.5 s)."""
    out = subprocess.run(["ip", "netns", "exec", client, "arping", "-r", "-c", "1", "-w",
                          "0.5", "-i", "hlC0", ip], capture_output=True, text=True,
                         timeout=10)
    return [line.strip().lower() for line in out.stdout.splitlines() if line.strip()]


def test_announced_ips_are_answered_with_the_devices_mac(
        lb: LbDatapath, pair: tuple[str, str]) -> None:
    node, client = pair
    table, liveness = open_maps(lb.obj, max_age=15.0)
    rec: Reconciler[tuple[str, str], str] = Reconciler(table)

    tc = TcTable(lb)
    attached: Reconciler[tuple[str, str, int], int] = Reconciler(tc)

    def setup() -> str:
        slot = ("hlN0", "ingress", NETDEV_TC_PRIORITY)
        tc.wanted = {slot}
        attached.set_all({slot: tc.program_id(PROGRAM_FROM_NETDEV)})
        assert not attached.flush().failed
        mac = device_mac("hlN0")
        rec.set_all({(VIP, "hlN0"): mac, ("10.99.0.151", "hlN1"): device_mac("hlN1")})
        assert not rec.flush().failed
        liveness.stamp()
        return mac

    mac = in_netns(node, setup)
    replies = arp_replies(lb.obj)
    try:
        assert arping(client, VIP) == [mac]
        assert arping(client, VIP) == [mac]
        # Announced on another device only, or not at all: not ours to answer.
        assert arping(client, "10.99.0.151") == []
        assert arping(client, "10.99.0.152") == []
        # The node's own address is the kernel's to answer, as before.
        assert arping(client, "10.99.0.1") == [mac]
        states = in_netns(node, table.entries)
        assert [(s.ip, s.device, s.mac, s.replies) for s in states if s.ip == VIP] == \
            [(VIP, "hlN0", mac, 2)]
        # The reply counter is not drift: a resync finds nothing to repair.
        assert in_netns(node, rec.resync).updated == 0 and rec.repairs == 0

        # A stale stamp (the agent stopped refreshing): silence; a fresh one: answers again.
        stale = Liveness(liveness.map, max_age=0.2)
        in_netns(node, stale.stamp)
        time.sleep(0.3)
        assert arping(client, VIP) == []
        in_netns(node, liveness.stamp)
        assert arping(client, VIP) == [mac]

        # Deleted behind the agent's back: the resync puts it back; withdrawn: silence.
        in_netns(node, lambda: table.delete((VIP, "hlN0")))
        assert arping(client, VIP) == []
        assert in_netns(node, rec.resync).updated == 1 and rec.repairs == 1
        assert arping(client, VIP) == [mac]
        rec.set_all({})
        in_netns(node, rec.flush)
        assert arping(client, VIP) == []
        # Every reply of ours, the withdrawn entry's included
        assert arp_replies(lb.obj) == replies + 4
    finally:
        rec.set_all({})
        in_netns(node, rec.flush)


def test_send_garp_puts_a_gratuitous_arp_on_the_wire(pair: tuple[str, str]) -> None:
    node, client = pair
    dump = subprocess.Popen(["ip", "netns", "exec", client, "tcpdump", "-l", "-n", "-e",
                             "-c", "1", "-i", "hlC0", "arp"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(0.8)  # tcpdump listening
        mac = in_netns(node, lambda: device_mac("hlN0"))
        in_netns(node, lambda: send_garp("hlN0", VIP))
        line = dump.communicate(timeout=10)[0].strip()
    finally:
        dump.kill()
    assert mac in line and "ff:ff:ff:ff:ff:ff" in line, line
    assert f"Reply {VIP} is-at {mac}" in line, line


def test_a_garp_moves_a_clients_entry_it_just_confirmed(pair: tuple[str, str]) -> None:
    """The client was talking to the IP's old owner a moment ago (its neighbour entry just
    updated, inside Linux's 1 s locktime): the new owner's GARP must still move it at once."""
    node, client = pair
    subprocess.run(["ip", "-n", client, "neigh", "replace", VIP, "lladdr", "02:00:00:00:00:99",
                    "dev", "hlC0", "nud", "reachable"], check=True)
    mac = in_netns(node, lambda: device_mac("hlN0"))
    in_netns(node, lambda: send_garp("hlN0", VIP))
    time.sleep(0.1)
    out = subprocess.run(["ip", "-n", client, "neigh", "show", VIP, "dev", "hlC0"],
                         capture_output=True, text=True, check=True).stdout
    assert mac in out, out
