"""The node programs on crafted packets (BPF_PROG_TEST_RUN): NodePort SNAT, DSR, scopes.

Pins down, for hl_from_netdev / hl_from_pod: a NodePort packet for a backend on another node
leaves SNATed to the node address (the client's port kept when free, else a port from the
SNAT range), checksums valid, and the reply is turned back to the client from the frontend;
a local backend gets DNAT only; ClusterIP is not served from outside; in DSR mode the IPv4
option is inserted with exact bytes (type 0x9a, length 8, port, address), the header length,
total length and both checksums right and the client address kept; on the backend's node the
option is recorded and stripped and the pod's reply leaves from the frontend address;
malformed options are dropped with a reason, other options pass; two-scope services give
outside traffic the EXT backends and pod traffic the INT ones.

Services are programmed through LbSync; programs run in a namespace of their own (their FIB
lookups see only that namespace).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import pytest
from bpf_lbsetup import Services

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4, port16
from hexlane.datapath.lb import view
from hexlane.datapath.lb.loader import PROGRAM_FROM_NETDEV, PROGRAM_FROM_POD, LbDatapath
from hexlane.datapath.lb.maps import (
    CT_ENTRY_F_DSR,
    CT_F_REPLY,
    DSR_IPV4_OPT_TYPE,
    SNAT_PORT_MAX,
    SNAT_PORT_MIN,
    Ct4Key,
)
from hexlane.lb.services import NODE_PORT, SCOPE_INT

pytestmark = pytest.mark.root

TCP = packets.TCP
NODE_IP = "10.0.0.11"
CLIENT = "10.0.0.2"
Run = Callable[[str, bytes], libbpf.TestRunResult]


@pytest.fixture
def runner(services: Services, run: Run) -> Run:
    services.node_ip(NODE_IP)
    return run


def test_nodeport_snat_and_its_reply(services: Services, runner: Run) -> None:
    services.add(NODE_IP, 30080, TCP, 201, [(2001, "10.42.2.5", 8080)], type=NODE_PORT)
    out = runner(PROGRAM_FROM_NETDEV, packets.build(CLIENT, NODE_IP, 41000, 30080))
    assert out.retval != libbpf.TC_ACT_UNSPEC
    p = packets.parse(out.data)
    assert p.flow == (NODE_IP, 41000, "10.42.2.5", 8080)
    assert p.checksums_ok

    # A second client using the same port: the NAT port 41000 is taken for this backend.
    out2 = runner(PROGRAM_FROM_NETDEV, packets.build("10.0.0.3", NODE_IP, 41000, 30080))
    p2 = packets.parse(out2.data)
    assert p2.src == NODE_IP and SNAT_PORT_MIN <= p2.sport <= SNAT_PORT_MAX

    for nat_port, client in ((41000, CLIENT), (p2.sport, "10.0.0.3")):
        reply = runner(PROGRAM_FROM_NETDEV, packets.build("10.42.2.5", NODE_IP, 8080, nat_port,
                                                          tcp_flags=0x12))
        r = packets.parse(reply.data)
        assert r.flow == (NODE_IP, 30080, client, 41000)
        assert r.checksums_ok


def test_local_backend_gets_dnat_only_and_clusterip_is_not_external(
    services: Services, runner: Run,
) -> None:
    services.add(NODE_IP, 30081, TCP, 202, [(2002, "10.42.1.5", 8080)], type=NODE_PORT,
                 local=True)
    p = packets.parse(runner(PROGRAM_FROM_NETDEV,
                             packets.build(CLIENT, NODE_IP, 41001, 30081)).data)
    assert p.flow == (CLIENT, 41001, "10.42.1.5", 8080)
    services.add("10.43.0.50", 80, TCP, 203, [(2003, "10.42.1.5", 8080)], local=True)
    frame = packets.build(CLIENT, "10.43.0.50", 41002, 80)
    out = runner(PROGRAM_FROM_NETDEV, frame)
    assert (out.retval, out.data) == (libbpf.TC_ACT_UNSPEC, frame)
    # ... but a pod reaches it
    p = packets.parse(runner(PROGRAM_FROM_POD, packets.build("10.42.1.9", "10.43.0.50",
                                                             41003, 80)).data)
    assert (p.dst, p.dport) == ("10.42.1.5", 8080)


def test_dsr_option_inserted_then_accepted_and_stripped(
    lb: LbDatapath, services: Services, runner: Run,
) -> None:
    services.add(NODE_IP, 30084, TCP, 204, [(2004, "10.42.2.6", 8080)], type=NODE_PORT,
                 dsr=True)
    frame = packets.build(CLIENT, NODE_IP, 42000, 30084, payload=b"GET /")
    out = runner(PROGRAM_FROM_NETDEV, frame)
    ip = out.data[packets.ETH_HLEN:]
    assert ip[0] == 0x47 and len(out.data) == len(frame) + 8
    assert struct.unpack("!H", ip[2:4])[0] == struct.unpack("!H", frame[16:18])[0] + 8
    assert ip[20:28] == bytes([DSR_IPV4_OPT_TYPE, 8]) + struct.pack("!H", 30084) + bytes(
        [10, 0, 0, 11])
    p = packets.parse(out.data)
    assert p.flow == (CLIENT, 42000, "10.42.2.6", 8080)
    assert p.checksums_ok
    assert out.data.endswith(b"GET /")

    # The backend's node: the option is recorded and removed.
    got = runner(PROGRAM_FROM_NETDEV, out.data)
    assert got.retval == libbpf.TC_ACT_OK
    assert got.data[packets.ETH_HLEN] == 0x45 and len(got.data) == len(frame)
    q = packets.parse(got.data)
    assert q.flow == (CLIENT, 42000, "10.42.2.6", 8080)
    assert q.checksums_ok
    entry = lb.maps.ct.lookup(Ct4Key(saddr=ip4(CLIENT), daddr=ip4("10.42.2.6"),
                                     sport=port16(42000), dport=port16(8080), proto=packets.TCP,
                                     flags=CT_F_REPLY))
    assert entry is not None and entry.flags & CT_ENTRY_F_DSR

    # The pod's reply leaves from the frontend, straight to the client.
    reply = runner(PROGRAM_FROM_POD, packets.build("10.42.2.6", CLIENT, 8080, 42000,
                                                   tcp_flags=0x12))
    r = packets.parse(reply.data)
    assert r.flow == (NODE_IP, 30084, CLIENT, 42000)
    assert r.checksums_ok


def test_malformed_dsr_option_dropped_other_options_pass(
    lb: LbDatapath, services: Services, runner: Run,
) -> None:
    before = view.drops(lb.bpf_root).get("dsr_opt", 0)
    bad = bytes([DSR_IPV4_OPT_TYPE, 6]) + struct.pack("!H", 80) + bytes([10, 0, 0, 11])
    out = runner(PROGRAM_FROM_NETDEV, packets.build(CLIENT, "10.42.2.7", 42001, 8080,
                                                    ip_options=bad))
    assert out.retval == libbpf.TC_ACT_SHOT
    assert view.drops(lb.bpf_root)["dsr_opt"] == before + 1
    zero = bytes([DSR_IPV4_OPT_TYPE, 8, 0, 0, 0, 0, 0, 0])
    assert runner(PROGRAM_FROM_NETDEV, packets.build(CLIENT, "10.42.2.7", 42002, 8080,
                                                     ip_options=zero)).retval == \
        libbpf.TC_ACT_SHOT
    nops = bytes([1, 1, 1, 1, 1, 1, 1, 0])  # NOPs and end of list
    frame = packets.build(CLIENT, "10.42.2.7", 42003, 8080, ip_options=nops)
    out = runner(PROGRAM_FROM_NETDEV, frame)
    assert (out.retval, out.data) == (libbpf.TC_ACT_UNSPEC, frame)


def test_two_scopes_split_outside_and_inside_traffic(
    services: Services, runner: Run,
) -> None:
    services.add(NODE_IP, 30085, TCP, 205, [(2005, "10.42.1.5", 8080)], type=NODE_PORT,
                 local=True, two_scopes=True)
    services.add(NODE_IP, 30085, TCP, 206, [(2006, "10.42.2.8", 8080)], type=NODE_PORT,
                 two_scopes=True, scope=SCOPE_INT)
    for sport in range(43000, 43010):
        ext = packets.parse(runner(PROGRAM_FROM_NETDEV,
                                   packets.build(CLIENT, NODE_IP, sport, 30085)).data)
        assert ext.dst == "10.42.1.5"
        internal = packets.parse(runner(PROGRAM_FROM_POD,
                                        packets.build("10.42.1.9", NODE_IP, sport, 30085)).data)
        assert internal.dst == "10.42.2.8"


def test_reused_tuples_and_lost_reply_entries(
    lb: LbDatapath, services: Services, runner: Run,
) -> None:
    """A reply entry the LRU evicted alone comes back with the flow's next packet; a direct
    connection reusing a service flow's tuple (same client port, same backend) is not turned
    into the frontend's."""
    services.add(NODE_IP, 30086, TCP, 207, [(2007, "10.42.1.7", 8080)], type=NODE_PORT,
                 local=True)
    reply_key = Ct4Key(saddr=ip4(CLIENT), daddr=ip4("10.42.1.7"), sport=port16(44000),
                       dport=port16(8080), proto=packets.TCP, flags=CT_F_REPLY)
    runner(PROGRAM_FROM_NETDEV, packets.build(CLIENT, NODE_IP, 44000, 30086))
    assert lb.maps.ct.delete(reply_key)  # as an LRU eviction would
    runner(PROGRAM_FROM_NETDEV, packets.build(CLIENT, NODE_IP, 44000, 30086, tcp_flags=0x10))
    assert lb.maps.ct.lookup(reply_key) is not None
    # The client now connects to the pod directly from the same port: its SYN clears the
    # service flow's reply entry, so the pod's answer keeps the pod's address.
    direct = packets.build(CLIENT, "10.42.1.7", 44000, 8080)
    assert runner(PROGRAM_FROM_NETDEV, direct).retval == libbpf.TC_ACT_UNSPEC
    assert lb.maps.ct.lookup(reply_key) is None
    answer = packets.build("10.42.1.7", CLIENT, 8080, 44000, tcp_flags=0x12)
    out = runner(PROGRAM_FROM_POD, answer)
    assert (out.retval, out.data) == (libbpf.TC_ACT_UNSPEC, answer)
