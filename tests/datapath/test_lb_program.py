"""The LB program on crafted packets (BPF_PROG_TEST_RUN, no namespaces).

Pins down: DNAT of TCP and UDP to a service's backend with valid L3/L4 checksums (also with IP
options and UDP without checksum), reverse NAT of replies, conntrack stickiness, TCP and UDP
services told apart on one address and port, malformed and truncated packets dropped with the
right reason counted, unrelated traffic passed untouched, pinned maps surviving a reload, and
session affinity holding only while its backend belongs to the service, and a pod reaching
itself through its service (hairpin) SNATed to 169.254.42.1 and its reply turned back.
A service without backends answers ICMP port unreachable (back out of the device), counted as
a NO_BACKEND drop.
"""

from __future__ import annotations

import ctypes
import struct
from collections import Counter
from pathlib import Path

import pytest
from bpf_lbsetup import add_service

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.lb.loader import (
    PROGRAM_FROM_CLIENT,
    PROGRAM_FROM_POD,
    PROGRAM_TO_CLIENT,
    LbDatapath,
)
from hexlane.datapath.lb.maps import (
    CT_F_REPLY,
    CT_F_SERVICE,
    SVC_FLAG_AFFINITY,
    Ct4Key,
    DropReason,
    Lb4Key,
    LbAffinityMatch,
    ip4,
    port16,
)

CLIENT = "10.0.1.5"


def run(lb: LbDatapath, program: str, frame: bytes) -> libbpf.TestRunResult:
    return libbpf.test_run(lb.program_fd(program), frame)


@pytest.mark.root
def test_tcp_translation_and_checksums(lb: LbDatapath) -> None:
    add_service(lb, "10.96.0.10", 80, packets.TCP, 1, [(101, "10.244.1.7", 8080)])
    frame = packets.build(CLIENT, "10.96.0.10", 40000, 80, packets.TCP, b"GET / HTTP/1.1\r\n")
    out = run(lb, PROGRAM_FROM_CLIENT, frame)
    assert out.retval == libbpf.TC_ACT_OK
    p = packets.parse(out.data)
    assert p.flow == (CLIENT, 40000, "10.244.1.7", 8080)
    assert p.checksums_ok
    assert out.data[packets.ETH_HLEN + 40 :] == b"GET / HTTP/1.1\r\n"


@pytest.mark.root
def test_udp_translation_with_and_without_checksum(lb: LbDatapath) -> None:
    add_service(lb, "10.96.0.11", 53, packets.UDP, 2, [(102, "10.244.2.9", 5353)])
    for sport, with_csum in ((5000, True), (5001, False)):
        frame = packets.build(CLIENT, "10.96.0.11", sport, 53, packets.UDP, b"query",
                              udp_csum=with_csum)
        out = run(lb, PROGRAM_FROM_CLIENT, frame)
        assert out.retval == libbpf.TC_ACT_OK
        p = packets.parse(out.data)
        assert (p.dst, p.dport) == ("10.244.2.9", 5353)
        assert p.checksums_ok
        # "no checksum" stays "no checksum" (BPF_F_MARK_MANGLED_0)
        assert (p.l4_csum == 0) == (not with_csum)


@pytest.mark.root
def test_ip_options_shift_the_l4_header(lb: LbDatapath) -> None:
    add_service(lb, "10.96.0.12", 443, packets.TCP, 3, [(103, "10.244.3.3", 8443)])
    nops = b"\x01\x01\x01\x01"
    frame = packets.build(CLIENT, "10.96.0.12", 41000, 443, ip_options=nops)
    p = packets.parse(run(lb, PROGRAM_FROM_CLIENT, frame).data)
    assert (p.dst, p.dport, p.ip_csum_ok, p.l4_csum_ok) == ("10.244.3.3", 8443, True, True)


@pytest.mark.root
def test_reverse_translation_of_replies(lb: LbDatapath) -> None:
    add_service(lb, "10.96.0.13", 80, packets.TCP, 4, [(104, "10.244.4.4", 8080)])
    run(lb, PROGRAM_FROM_CLIENT, packets.build(CLIENT, "10.96.0.13", 42000, 80))
    reply = packets.build("10.244.4.4", CLIENT, 8080, 42000, tcp_flags=0x12)
    out = run(lb, PROGRAM_TO_CLIENT, reply)
    assert out.retval == libbpf.TC_ACT_OK
    p = packets.parse(out.data)
    assert p.flow == ("10.96.0.13", 80, CLIENT, 42000)
    assert p.checksums_ok


@pytest.mark.root
def test_reply_of_an_unknown_flow_passes_untouched(lb: LbDatapath) -> None:
    reply = packets.build("10.244.9.9", CLIENT, 8080, 42999, tcp_flags=0x12)
    out = run(lb, PROGRAM_TO_CLIENT, reply)
    assert (out.retval, out.data) == (libbpf.TC_ACT_OK, reply)


@pytest.mark.root
def test_conntrack_keeps_the_backend(lb: LbDatapath) -> None:
    backends = [(110 + i, f"10.244.5.{i + 1}", 8080) for i in range(8)]
    add_service(lb, "10.96.0.14", 80, packets.TCP, 5, backends)
    chosen = Counter()
    for i in range(20):
        # one connection: its SYN, then packets of the established flow (a later SYN on the
        # same tuple would be a new connection and choose again)
        out = run(lb, PROGRAM_FROM_CLIENT, packets.build(CLIENT, "10.96.0.14", 43000, 80,
                                                         tcp_flags=0x02 if i == 0 else 0x10))
        chosen[packets.parse(out.data).dst] += 1
    assert len(chosen) == 1
    key = Ct4Key(saddr=ip4(CLIENT), daddr=ip4("10.96.0.14"), sport=port16(43000),
                 dport=port16(80), proto=packets.TCP, flags=CT_F_SERVICE)
    entry = lb.maps.ct.lookup(key)
    assert entry is not None and entry.packets == 20 and entry.rev_nat_index == 5
    backend = dict((addr, bid) for bid, addr, _ in backends)[next(iter(chosen))]
    assert entry.backend_id == backend
    reply_key = Ct4Key(saddr=ip4(CLIENT), daddr=ip4(next(iter(chosen))), sport=port16(43000),
                       dport=port16(8080), proto=packets.TCP, flags=CT_F_REPLY)
    assert lb.maps.ct.lookup(reply_key) is not None
    # New flows spread over the backends (random selection).
    spread = {
        packets.parse(run(lb, PROGRAM_FROM_CLIENT,
                          packets.build(CLIENT, "10.96.0.14", 44000 + i, 80)).data).dst
        for i in range(64)
    }
    assert len(spread) > 1


@pytest.mark.root
def test_flow_moves_when_its_backend_is_gone(lb: LbDatapath) -> None:
    add_service(lb, "10.96.0.15", 80, packets.TCP, 6, [(120, "10.244.6.1", 8080)])
    frame = packets.build(CLIENT, "10.96.0.15", 45000, 80)
    assert packets.parse(run(lb, PROGRAM_FROM_CLIENT, frame).data).dst == "10.244.6.1"
    lb.maps.backends.delete(ctypes.c_uint32(120))
    add_service(lb, "10.96.0.15", 80, packets.TCP, 6, [(121, "10.244.6.2", 8080)])
    assert packets.parse(run(lb, PROGRAM_FROM_CLIENT, frame).data).dst == "10.244.6.2"


@pytest.mark.root
def test_tcp_and_udp_services_on_one_address_and_port(lb: LbDatapath) -> None:
    add_service(lb, "10.96.0.16", 53, packets.TCP, 7, [(130, "10.244.7.1", 53)])
    add_service(lb, "10.96.0.16", 53, packets.UDP, 8, [(131, "10.244.7.2", 53)])
    tcp = packets.parse(run(lb, PROGRAM_FROM_CLIENT,
                            packets.build(CLIENT, "10.96.0.16", 46000, 53, packets.TCP)).data)
    udp = packets.parse(run(lb, PROGRAM_FROM_CLIENT,
                            packets.build(CLIENT, "10.96.0.16", 46000, 53, packets.UDP)).data)
    assert (tcp.dst, udp.dst) == ("10.244.7.1", "10.244.7.2")


@pytest.mark.parametrize("proto", [packets.TCP, packets.UDP])
@pytest.mark.root
def test_service_without_backends_answers_icmp_unreachable(lb: LbDatapath, proto: int) -> None:
    add_service(lb, "10.96.0.17", 80, proto, 9, [])
    before = lb.drop_counts().get(DropReason.NO_BACKEND, 0)
    frame = packets.build(CLIENT, "10.96.0.17", 47000, 80, proto, b"payload-bytes")
    out = run(lb, PROGRAM_FROM_CLIENT, frame)
    # Sent back out of the device it came in on, as ICMP port unreachable from the frontend.
    assert out.retval == libbpf.TC_ACT_REDIRECT
    assert out.data[:6] == frame[6:12] and out.data[6:12] == frame[:6]
    ip = out.data[packets.ETH_HLEN : packets.ETH_HLEN + 20]
    assert ip[9] == 1 and ip[12:16] == frame[30:34] and ip[16:20] == frame[26:30]
    assert packets.inet_checksum(ip) == 0
    icmp = out.data[packets.ETH_HLEN + 20 :]
    assert struct.unpack("!HH", ip[2:4] + b"\0\0")[0] == 20 + len(icmp)
    assert (icmp[0], icmp[1]) == (3, 3)
    assert packets.inet_checksum(icmp) == 0
    assert icmp[8:] == frame[packets.ETH_HLEN : packets.ETH_HLEN + 28]
    assert lb.drop_counts()[DropReason.NO_BACKEND] == before + 1


def _ip_header(version_ihl: int, total: int, proto: int) -> bytes:
    return struct.pack("!BBHHHBBH4s4s", version_ihl, 0, total, 1, 0, 64, proto, 0,
                       bytes([10, 0, 1, 5]), bytes([10, 96, 0, 10]))


ETH = b"\x02\x00\x00\x00\x00\x02\x02\x00\x00\x00\x00\x01\x08\x00"
GOOD = packets.build(CLIENT, "10.96.0.10", 40000, 80)

# BPF_PROG_TEST_RUN refuses an IPv4 frame shorter than a bare IPv4 header (EINVAL), so the
# shortest truncation tried here is a header announcing options the frame lacks.
MALFORMED = {
    "ihl below 5": (ETH + _ip_header(0x44, 40, 6) + b"\0" * 20, DropReason.INVALID_IP),
    "ip version 6 in an IPv4 frame": (ETH + _ip_header(0x65, 40, 6) + b"\0" * 20,
                                      DropReason.INVALID_IP),
    "total length below the header": (ETH + _ip_header(0x45, 12, 6) + b"\0" * 20,
                                      DropReason.INVALID_IP),
    "options beyond the frame": (ETH + _ip_header(0x4F, 60, 6) + b"\0" * 8,
                                 DropReason.TRUNCATED),
    "tcp header cut short": (GOOD[: 14 + 20 + 10], DropReason.TRUNCATED),
    "tcp data offset below 5": (GOOD[:46] + bytes([0x30]) + GOOD[47:], DropReason.INVALID_L4),
    "udp header cut short": (packets.build(CLIENT, "10.96.0.11", 1, 53, packets.UDP)[:38],
                             DropReason.TRUNCATED),
}


@pytest.mark.parametrize("program", [PROGRAM_FROM_CLIENT, PROGRAM_TO_CLIENT])
@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.root
def test_malformed_packets_are_dropped_with_a_reason(lb: LbDatapath, program: str,
                                                     case: str) -> None:
    frame, reason = MALFORMED[case]
    before = lb.drop_counts().get(reason, 0)
    out = run(lb, program, frame)
    assert out.retval == libbpf.TC_ACT_SHOT
    assert lb.drop_counts()[reason] == before + 1


@pytest.mark.parametrize("frame", [
    b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28,  # ARP
    packets.build(CLIENT, "10.96.0.10", 40000, 80)[:23] + b"\x01"  # ICMP
    + packets.build(CLIENT, "10.96.0.10", 40000, 80)[24:],
    packets.build(CLIENT, "10.96.0.10", 40000, 80)[:20] + b"\x20\x00"  # a fragment (MF)
    + packets.build(CLIENT, "10.96.0.10", 40000, 80)[22:],
    packets.build(CLIENT, "10.1.2.3", 40000, 80),  # not a service
], ids=["arp", "icmp", "fragment", "not-a-service"])
@pytest.mark.root
def test_other_traffic_passes_untouched(lb: LbDatapath, frame: bytes) -> None:
    out = run(lb, PROGRAM_FROM_CLIENT, frame)
    assert (out.retval, out.data) == (libbpf.TC_ACT_OK, frame)


@pytest.mark.root
def test_pinned_maps_survive_a_reload(bpffs: Path) -> None:
    root = bpffs / "reload"
    first = LbDatapath.load(root)
    try:
        add_service(first, "10.96.1.1", 80, packets.TCP, 77, [(700, "10.244.70.1", 80)])
        run(first, PROGRAM_FROM_CLIENT, packets.build(CLIENT, "10.96.1.1", 48000, 80))
    finally:
        first.close()
    second = LbDatapath.load(root)
    try:
        key = Lb4Key(address=ip4("10.96.1.1"), dport=port16(80), proto=packets.TCP)
        assert second.maps.services.lookup(key) is not None
        ct_key = Ct4Key(saddr=ip4(CLIENT), daddr=ip4("10.96.1.1"), sport=port16(48000),
                        dport=port16(80), proto=packets.TCP, flags=CT_F_SERVICE)
        assert second.maps.ct.lookup(ct_key).backend_id == 700
        reply = packets.build("10.244.70.1", CLIENT, 80, 48000, tcp_flags=0x12)
        assert packets.parse(run(second, PROGRAM_TO_CLIENT, reply).data).src == "10.96.1.1"
    finally:
        second.unpin()
        second.close()


@pytest.mark.root
def test_session_affinity_sticks_while_the_backend_belongs_to_the_service(
        lb: LbDatapath) -> None:
    backends = [(140 + i, f"10.244.14.{i + 1}", 8080) for i in range(3)]
    add_service(lb, "10.96.0.18", 8000, packets.TCP, 14, backends, affinity_timeout_s=3600,
                flags=SVC_FLAG_AFFINITY)

    def backend_for(sport: int) -> str:
        frame = packets.build("10.0.9.9", "10.96.0.18", sport, 8000)
        return packets.parse(run(lb, PROGRAM_FROM_CLIENT, frame).data).dst

    first = backend_for(50000)
    assert {backend_for(50001 + i) for i in range(15)} == {first}
    # The backend leaves the service (it stays in the backend map, e.g. for another service):
    # the client's affinity no longer counts and its new flows go elsewhere, and stick there.
    gone = next(b for b in backends if b[1] == first)
    lb.maps.affinity_match.delete(LbAffinityMatch(backend_id=gone[0], rev_nat_id=14))
    remaining = [b for b in backends if b is not gone]
    add_service(lb, "10.96.0.18", 8000, packets.TCP, 14, remaining, affinity_timeout_s=3600,
                flags=SVC_FLAG_AFFINITY)
    lb.maps.services.delete(Lb4Key(address=ip4("10.96.0.18"), dport=port16(8000),
                                   backend_slot=3, proto=packets.TCP))
    second = backend_for(51000)
    assert second != first
    assert {backend_for(51001 + i) for i in range(10)} == {second}


@pytest.mark.root
def test_reload_with_another_maglev_table_size(bpffs: Path) -> None:
    root = bpffs / "resize"
    small = LbDatapath.load(root, table_size=251)
    try:
        small.set_maglev_table(5, [7] * 251)
        add_service(small, "10.96.2.1", 80, packets.TCP, 5, [(7, "10.244.2.7", 80)])
    finally:
        small.close()
    big = LbDatapath.load(root, table_size=1021)
    try:
        # The other size's tables are gone (the agent recomputes them); the rest is kept.
        assert big.maglev_table(5) is None
        assert not (root / "hl_lb4_maglev_251").exists()
        assert big.maps.revnat.lookup(ctypes.c_uint16(5)) is not None
        big.set_maglev_table(5, [7] * 1021)
        assert big.maglev_table(5) == [7] * 1021
    finally:
        big.unpin()
        big.close()


@pytest.mark.root
def test_hairpin_is_snated_to_the_loopback_address(lb: LbDatapath) -> None:
    """A pod that reaches itself through its service: the packet comes back to it from
    169.254.42.1 (so the pod's reply leaves it), and the reply is turned back into the
    service's answer to the pod's own address and port."""
    pod = "10.244.6.6"
    add_service(lb, "10.96.0.40", 80, packets.TCP, 40, [(140, pod, 8080)], local=True)
    out = run(lb, PROGRAM_FROM_POD, packets.build(pod, "10.96.0.40", 45000, 80))
    assert out.retval in (libbpf.TC_ACT_OK, libbpf.TC_ACT_REDIRECT)
    p = packets.parse(out.data)
    assert (p.src, p.dst, p.dport) == ("169.254.42.1", pod, 8080)
    assert p.checksums_ok
    reply = packets.build(pod, "169.254.42.1", 8080, p.sport, tcp_flags=0x12)
    out = run(lb, PROGRAM_FROM_POD, reply)
    assert out.retval in (libbpf.TC_ACT_OK, libbpf.TC_ACT_REDIRECT)
    r = packets.parse(out.data)
    assert r.flow == ("10.96.0.40", 80, pod, 45000)
    assert r.checksums_ok
    # Another pod of the service keeps its own address (no SNAT inside the cluster).
    other = packets.parse(run(lb, PROGRAM_FROM_POD,
                              packets.build("10.244.6.7", "10.96.0.40", 45001, 80)).data)
    assert (other.src, other.dst) == ("10.244.6.7", pod)
    # The same address as a backend on another node is not this node's hairpin: the pod's
    # packet (to another node's NodePort, say) goes on with its own address.
    add_service(lb, "10.96.0.41", 80, packets.TCP, 41, [(141, "10.244.7.7", 8080)])
    remote = packets.parse(run(lb, PROGRAM_FROM_POD,
                               packets.build("10.244.7.7", "10.96.0.41", 45002, 80)).data)
    assert (remote.src, remote.dst) == ("10.244.7.7", "10.244.7.7")


@pytest.mark.root
def test_a_reused_client_port_answers_from_the_frontend_it_was_sent_to(lb: LbDatapath) -> None:
    """One client port to two frontends on one backend (UDP, no SYN to start over): the
    second flow keeps the client's address but gets another source port (the backend sees
    two flows, as netfilter's NAT would make it), each packet's reply comes back from the
    frontend it went to, to the client's own port; and a flow entry of a service id that
    now names another service is not reused."""
    backend = [(150, "10.244.8.8", 5353)]
    add_service(lb, "10.96.0.50", 53, packets.UDP, 50, backend)
    add_service(lb, "10.96.0.51", 53, packets.UDP, 51, backend)

    def ask(vip: str) -> tuple[int, str]:
        out = packets.parse(run(lb, PROGRAM_FROM_CLIENT,
                                packets.build(CLIENT, vip, 5300, 53, packets.UDP)).data)
        assert (out.src, out.dst) == (CLIENT, "10.244.8.8")
        reply = packets.parse(run(lb, PROGRAM_TO_CLIENT, packets.build(
            "10.244.8.8", CLIENT, 5353, out.sport, packets.UDP)).data)
        assert (reply.dst, reply.dport) == (CLIENT, 5300)
        return out.sport, reply.src

    first, second, again = (ask(v) for v in ("10.96.0.50", "10.96.0.51", "10.96.0.50"))
    assert first == again == (5300, "10.96.0.50")
    assert second[1] == "10.96.0.51" and second[0] != 5300
    # Service 50 goes, its id comes back for another frontend with another backend: the old
    # flow's entry (client:5300 -> 10.96.0.50, backend 150) must not steer the new one.
    add_service(lb, "10.96.0.50", 53, packets.UDP, 52, [(151, "10.244.8.9", 5353)])
    out = run(lb, PROGRAM_FROM_CLIENT, packets.build(CLIENT, "10.96.0.50", 5300, 53,
                                                     packets.UDP))
    assert packets.parse(out.data).dst == "10.244.8.9"


def test_program_names_fit_the_kernels_name_length() -> None:
    """The kernel keeps 15 characters of a program's name, and `hexlane status` checks the
    attached programs by name: a longer one would never be found attached."""
    from hexlane.datapath.lb.loader import PROGRAMS

    assert all(len(name) <= 15 for name in PROGRAMS), [n for n in PROGRAMS if len(n) > 15]
