"""bpf/masq.c on crafted packets (BPF_PROG_TEST_RUN), without any device.

Pins down: a pod's TCP/UDP/ICMP-echo packet to the world leaves with the node IP and a NAT
port (or echo identifier) from the configured range, with valid IP and L4 checksums; the same
flow keeps its port; the reply is turned back to the pod's address and port; destinations in a
non-masquerade prefix and sources outside the node's pod CIDR pass untouched; a UDP checksum
of 0 ("none") stays 0; when no NAT port is free the new flow is dropped and counted (also in
hl_metrics, the map of drops the load balancer's object shares: a pod's packet, EGRESS); every
packet not dropped goes on to the next filter (TC_ACT_UNSPEC).
"""

from __future__ import annotations

import shutil
import struct
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from helpers.packets import inet_checksum
from hexlane.datapath import libbpf
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.maps import DropReason
from hexlane.datapath.masq import PROGRAM_EGRESS, PROGRAM_INGRESS, MasqDatapath
from hexlane.datapath.metrics import Count, Direction, read_counters
from hexlane.routing.masquerade import MasqPlan

pytestmark = [pytest.mark.root]

NODE = IPv4Address("10.79.0.11")
POD = IPv4Address("10.247.1.5")
WORLD = IPv4Address("192.0.2.80")
TC_ACT_SHOT, TC_ACT_UNSPEC = libbpf.TC_ACT_SHOT, libbpf.TC_ACT_UNSPEC


def plan(port_min: int = 61000, port_max: int = 65535) -> MasqPlan:
    return MasqPlan(True, NODE, IPv4Network("10.247.1.0/24"),
                    frozenset({IPv4Network("10.247.0.0/16"), IPv4Network(f"{NODE}/32")}),
                    port_min, port_max)


@pytest.fixture
def masq(bpffs: Path, request: pytest.FixtureRequest) -> Iterator[MasqDatapath]:
    """The masquerade program loaded and configured, pinned in a directory of the test's own."""
    root = bpffs / "masq-program" / request.node.name
    datapath = MasqDatapath.load(root)
    try:
        datapath.configure(plan())
        yield datapath
    finally:
        datapath.unpin()
        datapath.close()
        shutil.rmtree(root, ignore_errors=True)


def packet(src: IPv4Address, dst: IPv4Address, proto: int, l4: bytes, *,
           udp_csum: bool = True) -> bytes:
    """Ethernet + IPv4 + `l4`, with the L4 checksum (at its usual offset) computed; UDP's
    left at 0 ("none") when `udp_csum` is false."""
    if proto in (6, 17):
        off = 16 if proto == 6 else 6
        pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(l4))
        l4 = l4[:off] + b"\0\0" + l4[off + 2:]
        value = inet_checksum(pseudo + l4) if proto == 6 or udp_csum else 0
        l4 = l4[:off] + struct.pack("!H", value) + l4[off + 2:]
    elif proto == 1:
        l4 = l4[:2] + b"\0\0" + l4[4:]
        l4 = l4[:2] + struct.pack("!H", inet_checksum(l4)) + l4[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), 1, 0x4000, 64, proto, 0,
                     src.packed, dst.packed)
    ip = ip[:10] + struct.pack("!H", inet_checksum(ip)) + ip[12:]
    eth = b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00"
    return eth + ip + l4


def tcp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, 0x02, 65535, 0, 0)


def udp(sport: int, dport: int, payload: bytes = b"hello!") -> bytes:
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload


def echo(kind: int, ident: int) -> bytes:
    return struct.pack("!BBHHH", kind, 0, 0, ident, 1) + b"ping"


def parse(data: bytes) -> tuple[IPv4Address, IPv4Address, int, bytes]:
    ip = data[14:34]
    assert inet_checksum(ip) == 0, "IP header checksum"
    proto = ip[9]
    l4 = data[34:]
    src, dst = IPv4Address(ip[12:16]), IPv4Address(ip[16:20])
    if proto in (6, 17):
        off = 16 if proto == 6 else 6
        if not (proto == 17 and l4[off:off + 2] == b"\0\0"):
            pseudo = src.packed + dst.packed + struct.pack("!BBH", 0, proto, len(l4))
            assert inet_checksum(pseudo + l4) == 0, "L4 checksum"
    elif proto == 1:
        assert inet_checksum(l4) == 0, "ICMP checksum"
    return src, dst, proto, l4


def run(masq: MasqDatapath, program: str, data: bytes) -> libbpf.TestRunResult:
    return libbpf.test_run(masq.obj.program(program).fd, data)


@pytest.mark.parametrize(("proto", "out", "back"), [
    (6, tcp(40000, 443), lambda port: tcp(443, port)),
    (17, udp(40000, 53), lambda port: udp(53, port)),
    (1, echo(8, 40000), lambda ident: echo(0, ident)),
])
def test_flow_out_and_back(masq: MasqDatapath, proto: int, out: bytes,
                           back: Callable[[int], bytes]) -> None:
    first = run(masq, PROGRAM_EGRESS, packet(POD, WORLD, proto, out))
    assert first.retval == TC_ACT_UNSPEC
    src, dst, _, l4 = parse(first.data)
    assert (src, dst) == (NODE, WORLD)
    nat_port = struct.unpack("!H", l4[4:6] if proto == 1 else l4[0:2])[0]
    assert 61000 <= nat_port <= 65535
    again = run(masq, PROGRAM_EGRESS, packet(POD, WORLD, proto, out))
    assert parse(again.data)[3] == l4  # the same flow keeps its port

    reply = run(masq, PROGRAM_INGRESS, packet(WORLD, NODE, proto, back(nat_port)))
    assert reply.retval == TC_ACT_UNSPEC
    src, dst, _, l4 = parse(reply.data)
    assert (src, dst) == (WORLD, POD)
    assert struct.unpack("!H", l4[4:6] if proto == 1 else l4[2:4])[0] == 40000
    counters = masq.counters()
    assert counters["egress"] == 2 and counters["ingress"] == 1


def test_untouched_packets(masq: MasqDatapath) -> None:
    for src, dst in ((POD, IPv4Address("10.247.2.9")),  # native routing CIDR
                     (POD, NODE),  # a node IP
                     (IPv4Address("10.79.0.11"), WORLD),  # the node's own traffic
                     (IPv4Address("10.248.1.5"), WORLD)):  # not this node's pods
        data = packet(src, dst, 6, tcp(40000, 443))
        result = run(masq, PROGRAM_EGRESS, data)
        assert (result.retval, result.data) == (TC_ACT_UNSPEC, data)
    stray = packet(WORLD, NODE, 6, tcp(443, 62000))  # no translation for it
    assert run(masq, PROGRAM_INGRESS, stray).data == stray
    assert masq.entries() == []


def test_udp_checksum_none_stays_none(masq: MasqDatapath) -> None:
    data = packet(POD, WORLD, 17, udp(40000, 53), udp_csum=False)
    assert data[34 + 6:34 + 8] == b"\0\0"
    out = run(masq, PROGRAM_EGRESS, data)
    assert out.data[34 + 6:34 + 8] == b"\0\0"
    assert parse(out.data)[0] == NODE


def test_no_free_port_drops_the_new_flow(masq: MasqDatapath) -> None:
    masq.configure(plan(61000, 61000))
    first = run(masq, PROGRAM_EGRESS, packet(POD, WORLD, 6, tcp(40001, 443)))
    assert parse(first.data)[3][0:2] == struct.pack("!H", 61000)
    dropped = packet(POD, WORLD, 6, tcp(40002, 443))
    other = run(masq, PROGRAM_EGRESS, dropped)
    assert other.retval == TC_ACT_SHOT
    assert masq.counters()["no_port"] == 1
    assert read_counters(masq.metrics) == {
        (DropReason.SNAT_PORTS, Direction.EGRESS): Count(1, len(dropped))}
    elsewhere = run(masq, PROGRAM_EGRESS, packet(POD, WORLD, 6, tcp(40002, 8443)))
    assert elsewhere.retval == TC_ACT_UNSPEC  # the port is per remote address and port
    assert [(e.pod_port, e.node_port) for e in masq.entries()] == [(40001, 61000),
                                                                    (40002, 61000)]


def test_the_load_balancer_shares_the_counters(masq: MasqDatapath) -> None:
    lb = LbDatapath.load(masq.bpf_root)  # after the masquerade: it reuses the pinned map
    try:
        masq.configure(plan(61000, 61000))
        run(masq, PROGRAM_EGRESS, packet(POD, WORLD, 6, tcp(40001, 443)))
        run(masq, PROGRAM_EGRESS, packet(POD, WORLD, 6, tcp(40002, 443)))
        assert read_counters(lb.maps.metrics) == read_counters(masq.metrics) != {}
    finally:
        lb.unpin()
        lb.close()
