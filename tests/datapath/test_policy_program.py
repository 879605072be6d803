"""Policy enforcement in the pod hooks on crafted packets (BPF_PROG_TEST_RUN).

The tables come from `hexlane.datapath.policy.PolicyDatapath`, as the agent writes them: an
ingress-enforced pod takes only what its entries allow (identity from the ipcache, the most
specific entry by protocol and port, port ranges as LPM prefixes, identity 0 as any), drops
counted as POLICY; an egress-enforced pod's connection to a Service is decided on the backend
and its port after translation; the replies of an allowed connection pass the other way
without an entry (conntrack), and a pod that is not enforced costs nothing (no entry).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable, Iterator

import pytest
from bpf_lbsetup import Services

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.events import (
    EVENT_DROP,
    EVENT_POLICY_VERDICT,
    EVENT_TRACE,
    EventReader,
    VerdictFlag,
    decode,
    trace_config,
)
from hexlane.datapath.lb import view
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, PROGRAM_TO_POD, LbDatapath
from hexlane.datapath.policy import (
    ENDPOINTS_MAP,
    IPCACHE_MAP,
    POLICY_MAP,
    PolicyDatapath,
    policy_key,
)
from hexlane.policy.maps import (
    EGRESS,
    INGRESS,
    MATCH_L3_L4,
    MATCH_L4_ONLY,
    MATCH_NONE,
    IPv4Network,
    PolicyEntry,
    with_deny_precedence,
)
from hexlane.policy.node import EP_F_AUDIT, EP_F_EGRESS, EP_F_INGRESS

Run = Callable[[str, bytes], libbpf.TestRunResult]

WEB, CLIENT, OTHER = "10.244.1.7", "10.244.2.5", "10.244.2.6"
WEB_ID, CLIENT_ID, OTHER_ID = 300, 301, 302
TCP, UDP, ICMP = 6, 17, 1
PASS, SHOT, OK = libbpf.TC_ACT_UNSPEC, libbpf.TC_ACT_SHOT, libbpf.TC_ACT_OK


def icmp_echo(src: str, dst: str, ident: int = 7, reply: bool = False) -> bytes:
    body = struct.pack("!BBHHH", 0 if reply else 8, 0, 0, ident, 1) + b"ping"
    body = body[:2] + struct.pack("!H", packets.inet_checksum(body)) + body[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, ICMP, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    ip = ip[:10] + struct.pack("!H", packets.inet_checksum(ip)) + ip[12:]
    eth = bytes.fromhex(packets.NODE_MAC.replace(":", "")) + b"\x02\x00\x00\x00\x00\x01\x08\x00"
    return eth + ip + body


@pytest.fixture(scope="module")
def policy(lb: LbDatapath) -> Iterator[PolicyDatapath]:
    pd = PolicyDatapath(lb.obj)
    yield pd
    pd.set({}, {}, [])
    pd.flush()


def program(pd: PolicyDatapath, endpoints: dict[str, tuple[int, int]],
            entries: list[tuple[str, PolicyEntry]],
            cookies: dict[tuple[str, PolicyEntry], int] | None = None) -> None:
    cache = {IPv4Network("0.0.0.0/0"): 2, IPv4Network(f"{WEB}/32"): WEB_ID,
             IPv4Network(f"{CLIENT}/32"): CLIENT_ID, IPv4Network(f"{OTHER}/32"): OTHER_ID}
    pd.set(cache, endpoints, entries, cookies)
    result = pd.flush()
    assert not result.failed, result.failed


def policy_drops(lb: LbDatapath) -> int:
    return view.drops(lb.bpf_root).get("policy", 0)


@pytest.mark.root
def test_ingress_allows_what_its_entries_say(lb: LbDatapath, policy: PolicyDatapath,
                                             run: Run) -> None:
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS)},
            [(WEB, PolicyEntry(INGRESS, CLIENT_ID, TCP, 80, 16)),
             (WEB, PolicyEntry(INGRESS, OTHER_ID, UDP, 8080, 14)),  # 8080-8083/UDP
             (WEB, PolicyEntry(INGRESS, 0, TCP, 9000, 16))])  # any identity
    before = policy_drops(lb)
    cases = [
        (packets.build(CLIENT, WEB, 40001, 80), PASS),
        (packets.build(CLIENT, WEB, 40002, 81), SHOT),
        (packets.build(OTHER, WEB, 40003, 80), SHOT),
        (packets.build(OTHER, WEB, 40004, 8082, packets.UDP), PASS),
        (packets.build(OTHER, WEB, 40005, 8084, packets.UDP), SHOT),
        (packets.build(CLIENT, WEB, 40006, 8082, packets.UDP), SHOT),
        (packets.build("192.0.2.9", WEB, 40007, 9000), PASS),  # world, any-identity entry
        (packets.build("192.0.2.9", WEB, 40008, 80), SHOT),
        (icmp_echo(CLIENT, WEB), SHOT),  # no L3-only entry: ICMP is not allowed
    ]
    got = [run(PROGRAM_TO_POD, frame).retval for frame, _ in cases]
    assert got == [want for _, want in cases]
    assert policy_drops(lb) - before == sum(1 for _, w in cases if w == SHOT)
    # the allowed connection goes on, and the pod's replies leave it (conntrack)
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 40001, 80, tcp_flags=0x10)
               ).retval == PASS
    assert run(PROGRAM_FROM_POD, packets.build(WEB, CLIENT, 80, 40001, tcp_flags=0x12)
               ).retval == PASS


@pytest.mark.root
def test_an_l3_entry_allows_every_protocol(policy: PolicyDatapath, run: Run) -> None:
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS)}, [(WEB, PolicyEntry(INGRESS, CLIENT_ID))])
    assert run(PROGRAM_TO_POD, icmp_echo(CLIENT, WEB, ident=9)).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 40010, 12345, packets.UDP)
               ).retval == PASS
    assert run(PROGRAM_TO_POD, icmp_echo(OTHER, WEB, ident=9)).retval == SHOT


@pytest.mark.root
def test_egress_is_decided_on_the_backend_after_translation(
        lb: LbDatapath, services: Services, policy: PolicyDatapath, run: Run) -> None:
    services.add("10.96.5.5", 80, TCP, 55, [(555, WEB, 8080)])
    # the client may reach WEB on 8080 (the backend's port), nothing on 80
    program(policy, {CLIENT: (CLIENT_ID, EP_F_EGRESS | EP_F_INGRESS)},
            [(CLIENT, PolicyEntry(EGRESS, WEB_ID, TCP, 8080, 16))])
    out = run(PROGRAM_FROM_POD, packets.build(CLIENT, "10.96.5.5", 41000, 80))
    assert out.retval == OK
    assert packets.parse(out.data).flow == (CLIENT, 41000, WEB, 8080)
    # its reply, turned back to the service address, passes the client's enforced ingress
    reply = packets.build(WEB, CLIENT, 8080, 41000, tcp_flags=0x12)
    back = run(PROGRAM_FROM_POD, reply)  # (the backend is not enforced: no entry)
    assert packets.parse(back.data).flow == ("10.96.5.5", 80, CLIENT, 41000)
    assert run(PROGRAM_TO_POD, back.data).retval == PASS
    # an entry for the frontend's port does not allow the backend's
    program(policy, {CLIENT: (CLIENT_ID, EP_F_EGRESS)},
            [(CLIENT, PolicyEntry(EGRESS, WEB_ID, TCP, 80, 16))])
    assert run(PROGRAM_FROM_POD, packets.build(CLIENT, "10.96.5.5", 41001, 80)
               ).retval == SHOT
    # plain pod to pod: the same entry now holds for port 80
    assert run(PROGRAM_FROM_POD, packets.build(CLIENT, WEB, 41002, 80)).retval == PASS
    assert run(PROGRAM_FROM_POD, packets.build(CLIENT, OTHER, 41003, 80)).retval == SHOT


@pytest.mark.root
def test_a_pod_without_enforcement_is_not_looked_at(policy: PolicyDatapath, run: Run) -> None:
    program(policy, {}, [])
    for frame in (packets.build(OTHER, WEB, 42000, 81), icmp_echo(OTHER, WEB, ident=11)):
        assert run(PROGRAM_TO_POD, frame).retval == PASS
        assert run(PROGRAM_FROM_POD, frame).retval == PASS


@pytest.mark.root
def test_the_tables_read_back_as_written(lb: LbDatapath, policy: PolicyDatapath) -> None:
    entries = [(WEB, PolicyEntry(INGRESS, CLIENT_ID, TCP, 8080, 14)),
               (WEB, PolicyEntry(EGRESS, 0))]
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS | EP_F_EGRESS)}, entries)
    for name, size in ((IPCACHE_MAP, (8, 8)), (ENDPOINTS_MAP, (4, 8)), (POLICY_MAP, (16, 8))):
        # (value of hl_policy: flags, match type, 2 pad, the policies' number)
        m = lb.obj.map(name)
        assert (m.key_size, m.value_size) == size
    assert {bytes(k) for k in policy.policy.raw_keys()} == {policy_key(ip, e)
                                                           for ip, e in entries}
    # a resync finds nothing to repair; an entry deleted behind its back comes back
    assert policy.resync().updated == 0
    policy.policy.delete(policy_key(*entries[0]))
    assert policy.resync().updated == 1


@pytest.mark.root
def test_icmp_by_type_and_deny_over_allow(policy: PolicyDatapath, run: Run) -> None:
    """An `icmps` entry allows its type only (keyed as the port of protocol 1); a deny entry
    wins over an allow that covers it, once `with_deny_precedence` made the table."""
    entries = with_deny_precedence([
        PolicyEntry(INGRESS, CLIENT_ID, ICMP, 8, 16),  # echo requests from the client
        PolicyEntry(INGRESS, 0, TCP),  # any identity, any TCP port...
        PolicyEntry(INGRESS, CLIENT_ID, TCP, 80, 16, deny=True)])  # ...but not 80 from it
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS)}, [(WEB, e) for e in entries])
    assert run(PROGRAM_TO_POD, icmp_echo(CLIENT, WEB, ident=21)).retval == PASS
    assert run(PROGRAM_TO_POD, icmp_echo(OTHER, WEB, ident=22)).retval == SHOT
    timestamp = bytearray(icmp_echo(CLIENT, WEB, ident=23))
    timestamp[packets.ETH_HLEN + 20] = 13  # type 13: not allowed
    assert run(PROGRAM_TO_POD, bytes(timestamp)).retval == SHOT
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 43000, 80)).retval == SHOT
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 43001, 81)).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(OTHER, WEB, 43002, 80)).retval == PASS


@pytest.mark.root
def test_a_new_connection_on_a_closed_tuple_is_decided_again(policy: PolicyDatapath,
                                                            run: Run) -> None:
    allow = [(WEB, PolicyEntry(INGRESS, CLIENT_ID, TCP, 80, 16))]
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS)}, allow)
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 44000, 80)).retval == PASS
    # established: the verdict holds after the policy no longer allows the port...
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS)}, [])
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 44000, 80, tcp_flags=0x10)
               ).retval == PASS
    # ...until the connection closes: a new SYN on that tuple is a new decision
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 44000, 80, tcp_flags=0x11)
               ).retval == PASS  # FIN
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 44000, 80)).retval == SHOT


@pytest.fixture
def verdicts(lb: LbDatapath, services: Services) -> Iterator[EventReader]:
    """Events on (as the agent switches them on), a drained reader over the ring."""
    services.sync.set_trace_config(trace_config(
        on=True, pod_cidr=IPv4Network("10.244.1.0/24"), overlay_ifindex=0, host_ifindex=0))
    assert not services.sync.flush().failed
    with EventReader(lb.maps.events) as reader:
        reader.consume()
        yield reader
    services.sync.set_trace_config(trace_config(on=False, pod_cidr=None, overlay_ifindex=0,
                                                host_ifindex=0))
    services.sync.flush()


@pytest.mark.root
def test_each_decision_is_reported_with_its_match_and_policies(
        policy: PolicyDatapath, run: Run, verdicts: EventReader) -> None:
    """A new connection's first packet gives one policy verdict (Cilium's notification: the
    direction, the match type, the remote identity, the entry's number for its policies);
    the rest of the connection gives none; a denial also gives its drop."""
    web80 = PolicyEntry(INGRESS, CLIENT_ID, TCP, 80, 16)
    any9000 = PolicyEntry(INGRESS, 0, TCP, 9000, 16)
    out = PolicyEntry(EGRESS, WEB_ID, TCP, 8080, 16)
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS), CLIENT: (CLIENT_ID, EP_F_EGRESS)},
            [(WEB, web80), (WEB, any9000), (CLIENT, out)],
            {(WEB, web80): 77, (WEB, any9000): 78, (CLIENT, out): 79})
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 45000, 80)).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 45000, 80, tcp_flags=0x10)
               ).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(OTHER, WEB, 45001, 9000)).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(OTHER, WEB, 45002, 81)).retval == SHOT
    assert run(PROGRAM_FROM_POD, packets.build(CLIENT, WEB, 45003, 8080)).retval == PASS
    got = [(e.type, e.obs_point, e.reason, e.saddr, e.daddr, e.dport, e.identity, e.cookie)
           for e in map(decode, verdicts.consume()) if e.type != EVENT_TRACE]
    ingress, egress = int(VerdictFlag.INGRESS), int(VerdictFlag.EGRESS)
    assert got == [
        (EVENT_POLICY_VERDICT, ingress | MATCH_L3_L4 << 3, 0, CLIENT, WEB, 80, CLIENT_ID, 77),
        (EVENT_POLICY_VERDICT, ingress | MATCH_L4_ONLY << 3, 0, OTHER, WEB, 9000, OTHER_ID,
         78),
        (EVENT_POLICY_VERDICT, ingress | MATCH_NONE << 3, 13, OTHER, WEB, 81, OTHER_ID, 0),
        (EVENT_DROP, 0, 13, OTHER, WEB, 81, 0, 0),
        (EVENT_POLICY_VERDICT, egress | MATCH_L3_L4 << 3, 0, CLIENT, WEB, 8080, WEB_ID, 79),
    ]


@pytest.mark.root
def test_an_audited_endpoint_lets_denied_connections_pass_and_says_so(
        lb: LbDatapath, policy: PolicyDatapath, run: Run, verdicts: EventReader) -> None:
    deny = PolicyEntry(INGRESS, OTHER_ID, TCP, 80, 16, deny=True)
    program(policy, {WEB: (WEB_ID, EP_F_INGRESS | EP_F_AUDIT)}, [(WEB, deny)],
            {(WEB, deny): 5})
    before = policy_drops(lb)
    # denied by a rule, then by default: both pass
    assert run(PROGRAM_TO_POD, packets.build(OTHER, WEB, 46000, 80)).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(CLIENT, WEB, 46001, 80)).retval == PASS
    assert run(PROGRAM_TO_POD, packets.build(OTHER, WEB, 46000, 80, tcp_flags=0x10)
               ).retval == PASS
    assert policy_drops(lb) == before
    audited = int(VerdictFlag.INGRESS | VerdictFlag.AUDITED)
    assert [(e.type, e.obs_point, e.reason, e.saddr, e.cookie)
            for e in map(decode, verdicts.consume()) if e.type != EVENT_TRACE] == [
        (EVENT_POLICY_VERDICT, audited | MATCH_L3_L4 << 3, 0, OTHER, 5),
        (EVENT_POLICY_VERDICT, audited | MATCH_NONE << 3, 0, CLIENT, 0)]
