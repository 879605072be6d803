"""The LB programs on crafted packets (BPF_PROG_TEST_RUN, in a namespace of their own).

Pins down, with services programmed through LbSync and a pod's traffic through hl_from_pod:
DNAT of TCP and UDP to a service's backend with valid L3/L4 checksums (also with IP options
and UDP without checksum), reverse NAT of replies, conntrack stickiness, TCP and UDP services
told apart on one address and port, malformed and truncated packets dropped with the right
reason counted, unrelated traffic passed on untouched, pinned maps surviving a reload, session
affinity holding only while its backend belongs to the service, and a pod reaching itself
through its service (hairpin) SNATed to 169.254.42.1 and its reply turned back. A service
without backends answers ICMP port unreachable (back out of the device), counted as a
NO_BACKEND drop. Forwards and drops are counted in hl_metrics by direction with their bytes:
every packet a pod veth's hook hands on (out of a pod: EGRESS, into one: INGRESS), the
packets the node's other hooks translate (SERVICE), none of what those pass untouched.
"""

from __future__ import annotations

import ctypes
import struct
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from bpf_lbsetup import Services, run_program

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.layout import ip4, port16
from hexlane.datapath.lb import view
from hexlane.datapath.lb.encode import service_id_key
from hexlane.datapath.lb.loader import (
    PROGRAM_FROM_HOST,
    PROGRAM_FROM_NETDEV,
    PROGRAM_FROM_POD,
    PROGRAM_TO_POD,
    LbDatapath,
)
from hexlane.datapath.lb.maps import CT_F_REPLY, CT_F_SERVICE, Ct4Key, DropReason, Lb4Key
from hexlane.datapath.lb.sync import MaglevTable
from hexlane.datapath.metrics import Count, Direction, read_counters

CLIENT = "10.0.1.5"
Run = Callable[[str, bytes], libbpf.TestRunResult]


def drops(lb: LbDatapath, reason: DropReason) -> int:
    return view.drops(lb.bpf_root).get(reason.name.lower(), 0)


@pytest.mark.root
def test_tcp_translation_and_checksums(services: Services, run: Run) -> None:
    services.add("10.96.0.10", 80, packets.TCP, 1, [(101, "10.244.1.7", 8080)])
    frame = packets.build(CLIENT, "10.96.0.10", 40000, 80, packets.TCP, b"GET / HTTP/1.1\r\n")
    out = run(PROGRAM_FROM_POD, frame)
    assert out.retval == libbpf.TC_ACT_OK
    p = packets.parse(out.data)
    assert p.flow == (CLIENT, 40000, "10.244.1.7", 8080)
    assert p.checksums_ok
    assert out.data[packets.ETH_HLEN + 40 :] == b"GET / HTTP/1.1\r\n"


@pytest.mark.root
def test_udp_translation_with_and_without_checksum(services: Services, run: Run) -> None:
    services.add("10.96.0.11", 53, packets.UDP, 2, [(102, "10.244.2.9", 5353)])
    for sport, with_csum in ((5000, True), (5001, False)):
        frame = packets.build(CLIENT, "10.96.0.11", sport, 53, packets.UDP, b"query",
                              udp_csum=with_csum)
        out = run(PROGRAM_FROM_POD, frame)
        assert out.retval == libbpf.TC_ACT_OK
        p = packets.parse(out.data)
        assert (p.dst, p.dport) == ("10.244.2.9", 5353)
        assert p.checksums_ok
        # "no checksum" stays "no checksum" (BPF_F_MARK_MANGLED_0)
        assert (p.l4_csum == 0) == (not with_csum)


@pytest.mark.root
def test_ip_options_shift_the_l4_header(services: Services, run: Run) -> None:
    services.add("10.96.0.12", 443, packets.TCP, 3, [(103, "10.244.3.3", 8443)])
    nops = b"\x01\x01\x01\x01"
    frame = packets.build(CLIENT, "10.96.0.12", 41000, 443, ip_options=nops)
    p = packets.parse(run(PROGRAM_FROM_POD, frame).data)
    assert (p.dst, p.dport, p.ip_csum_ok, p.l4_csum_ok) == ("10.244.3.3", 8443, True, True)


@pytest.mark.parametrize("program", [PROGRAM_FROM_POD, PROGRAM_TO_POD])
@pytest.mark.root
def test_reverse_translation_of_replies(services: Services, run: Run, program: str) -> None:
    """The backend's reply, turned back where it leaves its pod (hl_from_pod) or, from a
    host-network backend, on its way into the client pod (hl_to_pod)."""
    vip, port = ("10.96.0.13", 42000) if program == PROGRAM_FROM_POD else ("10.96.0.19", 42001)
    services.add(vip, 80, packets.TCP, 4 if program == PROGRAM_FROM_POD else 10,
                 [(104, "10.244.4.4", 8080)])
    run(PROGRAM_FROM_POD, packets.build(CLIENT, vip, port, 80))
    reply = packets.build("10.244.4.4", CLIENT, 8080, port, tcp_flags=0x12)
    out = run(program, reply)
    assert out.retval == (libbpf.TC_ACT_OK if program == PROGRAM_FROM_POD
                          else libbpf.TC_ACT_UNSPEC)
    p = packets.parse(out.data)
    assert p.flow == (vip, 80, CLIENT, port)
    assert p.checksums_ok


@pytest.mark.parametrize("program", [PROGRAM_FROM_POD, PROGRAM_TO_POD])
@pytest.mark.root
def test_reply_of_an_unknown_flow_passes_untouched(run: Run, program: str) -> None:
    reply = packets.build("10.244.9.9", CLIENT, 8080, 42999, tcp_flags=0x12)
    out = run(program, reply)
    assert (out.retval, out.data) == (libbpf.TC_ACT_UNSPEC, reply)


@pytest.mark.root
def test_conntrack_keeps_the_backend(lb: LbDatapath, services: Services, run: Run) -> None:
    backends = [(110 + i, f"10.244.5.{i + 1}", 8080) for i in range(8)]
    services.add("10.96.0.14", 80, packets.TCP, 5, backends)
    chosen = Counter()
    for i in range(20):
        # one connection: its SYN, then packets of the established flow (a later SYN on the
        # same tuple would be a new connection and choose again)
        out = run(PROGRAM_FROM_POD, packets.build(CLIENT, "10.96.0.14", 43000, 80,
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
        packets.parse(run(PROGRAM_FROM_POD,
                          packets.build(CLIENT, "10.96.0.14", 44000 + i, 80)).data).dst
        for i in range(64)
    }
    assert len(spread) > 1


@pytest.mark.root
def test_flow_moves_when_its_backend_is_gone(services: Services, run: Run) -> None:
    services.add("10.96.0.15", 80, packets.TCP, 6, [(120, "10.244.6.1", 8080)])
    frame = packets.build(CLIENT, "10.96.0.15", 45000, 80)
    assert packets.parse(run(PROGRAM_FROM_POD, frame).data).dst == "10.244.6.1"
    services.add("10.96.0.15", 80, packets.TCP, 6, [(121, "10.244.6.2", 8080)])
    services.remove_backends(120)
    assert packets.parse(run(PROGRAM_FROM_POD, frame).data).dst == "10.244.6.2"


@pytest.mark.root
def test_tcp_and_udp_services_on_one_address_and_port(services: Services, run: Run) -> None:
    services.add("10.96.0.16", 53, packets.TCP, 7, [(130, "10.244.7.1", 53)])
    services.add("10.96.0.16", 53, packets.UDP, 8, [(131, "10.244.7.2", 53)])
    tcp = packets.parse(run(PROGRAM_FROM_POD,
                            packets.build(CLIENT, "10.96.0.16", 46000, 53, packets.TCP)).data)
    udp = packets.parse(run(PROGRAM_FROM_POD,
                            packets.build(CLIENT, "10.96.0.16", 46000, 53, packets.UDP)).data)
    assert (tcp.dst, udp.dst) == ("10.244.7.1", "10.244.7.2")


@pytest.mark.parametrize("proto", [packets.TCP, packets.UDP])
@pytest.mark.root
def test_service_without_backends_answers_icmp_unreachable(
        lb: LbDatapath, services: Services, run: Run, proto: int) -> None:
    services.add("10.96.0.17", 80, proto, 9 if proto == packets.TCP else 11, [])
    before = drops(lb, DropReason.NO_BACKEND)
    frame = packets.build(CLIENT, "10.96.0.17", 47000, 80, proto, b"payload-bytes")
    out = run(PROGRAM_FROM_POD, frame)
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
    assert drops(lb, DropReason.NO_BACKEND) == before + 1


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


@pytest.mark.parametrize("program", [PROGRAM_FROM_POD, PROGRAM_TO_POD])
@pytest.mark.parametrize("case", sorted(MALFORMED))
@pytest.mark.root
def test_malformed_packets_are_dropped_with_a_reason(lb: LbDatapath, run: Run, program: str,
                                                     case: str) -> None:
    frame, reason = MALFORMED[case]
    before = drops(lb, reason)
    out = run(program, frame)
    assert out.retval == libbpf.TC_ACT_SHOT
    assert drops(lb, reason) == before + 1


@pytest.mark.parametrize("frame", [
    b"\xff" * 6 + b"\x02" * 6 + b"\x08\x06" + b"\0" * 28,  # ARP
    packets.build(CLIENT, "10.96.0.10", 40000, 80)[:23] + b"\x01"  # ICMP
    + packets.build(CLIENT, "10.96.0.10", 40000, 80)[24:],
    packets.build(CLIENT, "10.96.0.10", 40000, 80)[:20] + b"\x20\x00"  # a fragment (MF)
    + packets.build(CLIENT, "10.96.0.10", 40000, 80)[22:],
    packets.build(CLIENT, "10.1.2.3", 40000, 80),  # not a service
], ids=["arp", "icmp", "fragment", "not-a-service"])
@pytest.mark.root
def test_other_traffic_passes_untouched(run: Run, frame: bytes) -> None:
    out = run(PROGRAM_FROM_POD, frame)
    assert (out.retval, out.data) == (libbpf.TC_ACT_UNSPEC, frame)


@pytest.mark.root
def test_pinned_maps_survive_a_reload(bpffs: Path, prog_netns: str) -> None:
    root = bpffs / "reload"
    first = LbDatapath.load(root)
    try:
        Services(first).add("10.96.1.1", 80, packets.TCP, 77, [(700, "10.244.70.1", 80)])
        run_program(first, prog_netns, PROGRAM_FROM_POD,
                    packets.build(CLIENT, "10.96.1.1", 48000, 80))
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
        out = run_program(second, prog_netns, PROGRAM_FROM_POD, reply)
        assert packets.parse(out.data).src == "10.96.1.1"
    finally:
        second.unpin()
        second.close()


@pytest.mark.root
def test_session_affinity_sticks_while_the_backend_belongs_to_the_service(
        services: Services, run: Run) -> None:
    backends = [(140 + i, f"10.244.14.{i + 1}", 8080) for i in range(3)]
    services.add("10.96.0.18", 8000, packets.TCP, 14, backends, affinity_timeout_s=3600)

    def backend_for(sport: int) -> str:
        frame = packets.build("10.0.9.9", "10.96.0.18", sport, 8000)
        return packets.parse(run(PROGRAM_FROM_POD, frame).data).dst

    first = backend_for(50000)
    assert {backend_for(50001 + i) for i in range(15)} == {first}
    # The backend leaves the service (it stays in the backend map, e.g. for another service):
    # the client's affinity no longer counts and its new flows go elsewhere, and stick there.
    remaining = [b for b in backends if b[1] != first]
    services.add("10.96.0.18", 8000, packets.TCP, 14, remaining, affinity_timeout_s=3600)
    second = backend_for(51000)
    assert second != first
    assert {backend_for(51001 + i) for i in range(10)} == {second}


@pytest.mark.root
def test_reload_with_another_maglev_table_size(bpffs: Path) -> None:
    root = bpffs / "resize"
    small = LbDatapath.load(root, table_size=251)
    try:
        Services(small).add("10.96.2.1", 80, packets.TCP, 5, [(7, "10.244.2.7", 80)],
                            algorithm="maglev", maglev=[7] * 251)
    finally:
        small.close()
    big = LbDatapath.load(root, table_size=1021)
    try:
        # The other size's tables are gone (the agent recomputes them); the rest is kept.
        assert MaglevTable(big).read() == {}
        assert not (root / "hl_lb4_maglev_251").exists()
        assert big.maps.revnat.lookup(ctypes.c_uint16(5)) is not None
        Services(big).add("10.96.2.1", 80, packets.TCP, 5, [(7, "10.244.2.7", 80)],
                          algorithm="maglev", maglev=[7] * 1021)
        assert MaglevTable(big).read() == {service_id_key(5): (7,) * 1021}
    finally:
        big.unpin()
        big.close()


@pytest.mark.root
def test_hairpin_is_snated_to_the_loopback_address(services: Services, run: Run) -> None:
    """A pod that reaches itself through its service: the packet comes back to it from
    169.254.42.1 (so the pod's reply leaves it), and the reply is turned back into the
    service's answer to the pod's own address and port."""
    pod = "10.244.6.6"
    services.add("10.96.0.40", 80, packets.TCP, 40, [(140, pod, 8080)], local=True)
    out = run(PROGRAM_FROM_POD, packets.build(pod, "10.96.0.40", 45000, 80))
    assert out.retval == libbpf.TC_ACT_OK
    p = packets.parse(out.data)
    assert (p.src, p.dst, p.dport) == ("169.254.42.1", pod, 8080)
    assert p.checksums_ok
    reply = packets.build(pod, "169.254.42.1", 8080, p.sport, tcp_flags=0x12)
    out = run(PROGRAM_FROM_POD, reply)
    assert out.retval == libbpf.TC_ACT_OK
    r = packets.parse(out.data)
    assert r.flow == ("10.96.0.40", 80, pod, 45000)
    assert r.checksums_ok
    # Another pod of the service keeps its own address (no SNAT inside the cluster).
    other = packets.parse(run(PROGRAM_FROM_POD,
                              packets.build("10.244.6.7", "10.96.0.40", 45001, 80)).data)
    assert (other.src, other.dst) == ("10.244.6.7", pod)
    # The same address as a backend on another node is not this node's hairpin: the pod's
    # packet (to another node's NodePort, say) goes on with its own address.
    services.add("10.96.0.41", 80, packets.TCP, 41, [(141, "10.244.7.7", 8080)])
    remote = packets.parse(run(PROGRAM_FROM_POD,
                               packets.build("10.244.7.7", "10.96.0.41", 45002, 80)).data)
    assert (remote.src, remote.dst) == ("10.244.7.7", "10.244.7.7")


@pytest.mark.root
def test_a_reused_client_port_answers_from_the_frontend_it_was_sent_to(
        services: Services, run: Run) -> None:
    """One client port to two frontends on one backend (UDP, no SYN to start over): the
    second flow keeps the client's address but gets another source port (the backend sees
    two flows, as netfilter's NAT would make it), each packet's reply comes back from the
    frontend it went to, to the client's own port; and a flow entry of a service id that
    now names another service is not reused."""
    backend = [(150, "10.244.8.8", 5353)]
    services.add("10.96.0.50", 53, packets.UDP, 50, backend)
    services.add("10.96.0.51", 53, packets.UDP, 51, backend)

    def ask(vip: str) -> tuple[int, str]:
        out = packets.parse(run(PROGRAM_FROM_POD,
                                packets.build(CLIENT, vip, 5300, 53, packets.UDP)).data)
        assert (out.src, out.dst) == (CLIENT, "10.244.8.8")
        reply = packets.parse(run(PROGRAM_FROM_POD, packets.build(
            "10.244.8.8", CLIENT, 5353, out.sport, packets.UDP)).data)
        assert (reply.dst, reply.dport) == (CLIENT, 5300)
        return out.sport, reply.src

    first, second, again = (ask(v) for v in ("10.96.0.50", "10.96.0.51", "10.96.0.50"))
    assert first == again == (5300, "10.96.0.50")
    assert second[1] == "10.96.0.51" and second[0] != 5300
    # Service 50 goes, its id comes back for another frontend with another backend: the old
    # flow's entry (client:5300 -> 10.96.0.50, backend 150) must not steer the new one.
    services.add("10.96.0.50", 53, packets.UDP, 52, [(151, "10.244.8.9", 5353)])
    out = run(PROGRAM_FROM_POD, packets.build(CLIENT, "10.96.0.50", 5300, 53, packets.UDP))
    assert packets.parse(out.data).dst == "10.244.8.9"


def test_program_names_fit_the_kernels_name_length() -> None:
    """The kernel keeps 15 characters of a program's name, and `hexlane status` checks the
    attached programs by name: a longer one would never be found attached."""
    from hexlane.datapath.lb.loader import PROGRAMS

    assert all(len(name) <= 15 for name in PROGRAMS), [n for n in PROGRAMS if len(n) > 15]


@pytest.mark.root
def test_forwards_and_drops_are_counted_by_direction_with_their_bytes(
        lb: LbDatapath, services: Services, run: Run) -> None:
    services.add("10.96.0.40", 80, packets.TCP, 40, [(140, "10.244.9.1", 8080)])
    services.add("10.96.0.41", 80, packets.TCP, 41, [])
    to_service = packets.build(CLIENT, "10.96.0.40", 48000, 80, packets.TCP, b"x" * 100)
    elsewhere = packets.build(CLIENT, "10.0.9.9", 48001, 80, packets.TCP, b"y" * 30)
    refused = packets.build(CLIENT, "10.96.0.41", 48002, 80)
    truncated = to_service[:14 + 20 + 10]
    runs = [(PROGRAM_FROM_POD, to_service), (PROGRAM_FROM_POD, elsewhere),
            (PROGRAM_TO_POD, elsewhere), (PROGRAM_FROM_HOST, to_service),
            (PROGRAM_FROM_HOST, elsewhere), (PROGRAM_FROM_NETDEV, elsewhere),
            (PROGRAM_FROM_HOST, refused), (PROGRAM_TO_POD, truncated)]
    before = read_counters(lb.maps.metrics)
    for program, frame in runs:
        run(program, frame)
    after = read_counters(lb.maps.metrics)
    grown = {key: Count(count.packets - before.get(key, Count(0, 0)).packets,
                        count.bytes - before.get(key, Count(0, 0)).bytes)
             for key, count in after.items() if count != before.get(key)}
    assert grown == {
        # a pod's packets, translated or not
        (DropReason.NONE, Direction.EGRESS): Count(2, len(to_service) + len(elsewhere)),
        # what passes into a pod
        (DropReason.NONE, Direction.INGRESS): Count(1, len(elsewhere)),
        # the node's own connection to a Service, translated; nothing it passes untouched
        (DropReason.NONE, Direction.SERVICE): Count(1, len(to_service)),
        (DropReason.NO_BACKEND, Direction.SERVICE): Count(1, len(refused)),
        (DropReason.TRUNCATED, Direction.INGRESS): Count(1, len(truncated)),
    }
