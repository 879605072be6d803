"""The BPF program picks Maglev slots exactly as hexlane.lb.maglev.maglev_slot (Cilium's hash).

Pins down: for 1,000 random client tuples (TCP and UDP), the backend the program DNATs to is
the one in the slot Python computes, with a table whose slot i holds backend i+1; with session
affinity the client port does not count; and a table built by build_table is what the
datapath holds after LbSync wrote it (an update replaces it whole, a removed service's goes).
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable

import pytest
from bpf_lbsetup import Services

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.lb.encode import service_id_key
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, LbDatapath
from hexlane.datapath.lb.sync import MaglevTable
from hexlane.lb.maglev import MaglevBackend, build_table, maglev_slot

pytestmark = pytest.mark.root

M = 16381
Run = Callable[[str, bytes], libbpf.TestRunResult]


def slot_backend_address(slot: int) -> str:
    return str(ipaddress.IPv4Address(0x0AC80000 + slot))  # 10.200.0.0 + slot


def program_identity_table(services: Services, vip: str, port: int, proto: int, rev_nat: int,
                           affinity: bool = False) -> None:
    """A Maglev service whose slot i holds backend i+1 at 10.200.0.0+i, so the DNAT target
    tells the slot."""
    services.add(vip, port, proto, rev_nat,
                 [(slot + 1, slot_backend_address(slot), 8080) for slot in range(M)],
                 algorithm="maglev", maglev=range(1, M + 1),
                 affinity_timeout_s=3600 if affinity else 0)


def chosen_slot(run: Run, frame: bytes) -> int:
    out = run(PROGRAM_FROM_POD, frame)
    assert out.retval == libbpf.TC_ACT_OK
    return int(ipaddress.IPv4Address(packets.parse(out.data).dst)) - 0x0AC80000


def test_bpf_and_python_pick_the_same_slot_for_1000_tuples(services: Services, run: Run) -> None:
    program_identity_table(services, "10.96.5.1", 80, packets.TCP, 501)
    program_identity_table(services, "10.96.5.1", 80, packets.UDP, 502)
    rng = random.Random(20261122)
    mismatches = []
    for n in range(1000):
        proto = packets.TCP if n % 3 else packets.UDP
        client = str(ipaddress.IPv4Address(rng.getrandbits(32) | 0x01000000))
        sport = rng.randrange(1, 65536)
        frame = packets.build(client, "10.96.5.1", sport, 80, proto)
        expected = maglev_slot(client, sport, 80, proto, M)
        got = chosen_slot(run, frame)
        if got != expected:
            mismatches.append((client, sport, proto, expected, got))
    assert mismatches == []


def test_session_affinity_ignores_the_client_port(services: Services, run: Run) -> None:
    program_identity_table(services, "10.96.5.2", 443, packets.TCP, 503, affinity=True)
    rng = random.Random(7)
    for _ in range(50):
        client = str(ipaddress.IPv4Address(rng.getrandbits(32) | 0x01000000))
        expected = maglev_slot(client, 0, 443, "TCP", M, session_affinity=True)
        for sport in (rng.randrange(1024, 65536), rng.randrange(1024, 65536)):
            frame = packets.build(client, "10.96.5.2", sport, 443)
            assert chosen_slot(run, frame) == expected


def test_maglev_table_round_trip_and_atomic_replace(lb: LbDatapath, services: Services) -> None:
    backends = [MaglevBackend(900 + i, f"10.244.90.{i}", 8080) for i in range(1, 6)]
    rows = [(b.id, b.address, b.port) for b in backends]
    key, tables = service_id_key(600), MaglevTable(lb)
    table = build_table(backends, M)
    entry = services.add("10.96.6.0", 80, packets.TCP, 600, rows, algorithm="maglev",
                         maglev=table)
    assert tables.read()[key] == tuple(table)
    smaller = build_table(backends[:4], M)
    entry = services.add("10.96.6.0", 80, packets.TCP, 600, rows[:4], algorithm="maglev",
                         maglev=smaller)
    assert tables.read()[key] == tuple(smaller)
    services.remove(entry)
    assert key not in tables.read()
