"""The pure parts of `hexlane lab demo`: the outage seen by the client's prober, the spread
table, arping's and `ip link`'s output, Prometheus lines; and `hexlane l2 list`'s "why"."""

from __future__ import annotations

from hexlane.cli.cmd_l2 import format_list
from hexlane.lab.probe import (
    Sample,
    arp_macs,
    link_mac,
    metric_samples,
    outage,
    spread_table,
)


def samples(spec: str, *, start: float = 100.0, step: float = 0.02,
            took: float = 0.005) -> list[Sample]:
    """One sample per character, opened `step` apart: `o` answered (by b1), `x` not
    (given up on after 1 s)."""
    return [Sample(start + i * step, start + i * step + (took if c == "o" else 1.0), c == "o",
                   "b1" if c == "o" else "") for i, c in enumerate(spec)]


def test_the_gap_runs_from_the_last_answer_before_the_fault_to_the_first_after() -> None:
    s = samples("ooooo" + "x" * 20 + "ooooo")
    fault = 100.0 + 4 * 0.02 + 0.01  # just after the 5th opened, after its answer
    o = outage(s, fault)
    assert o.last_ok_before == s[4].end
    assert o.first_ok_after == s[25].end
    assert o.gap is not None and abs(o.gap - (s[25].end - s[4].end)) < 1e-9
    assert (o.failed, o.failed_after_recovery) == (20, 0)
    assert o.last_failure == s[24].start


def test_failures_after_traffic_resumed_are_counted_apart() -> None:
    s = samples("oooo" + "xxxxx" + "oxoxo" + "oooo")
    o = outage(s, 100.0 + 3 * 0.02 + 0.01)
    assert (o.failed, o.failed_after_recovery) == (7, 2)
    assert o.last_failure == s[12].start


def test_an_answer_in_flight_at_the_fault_is_not_the_first_after_it() -> None:
    # opened before the fault, answered after it: neither the last before nor the first after
    s = [Sample(1.0, 1.01, True, "a"), Sample(1.9, 2.1, True, "a"), Sample(2.5, 2.51, True, "b")]
    o = outage(s, 2.0)
    assert (o.last_ok_before, o.first_ok_after) == (1.01, 2.51)


def test_no_gap_when_traffic_never_resumed_or_never_ran() -> None:
    assert outage(samples("oooxxxx"), 100.05).gap is None
    assert outage(samples("xxxxooo"), 100.01).gap is None
    assert outage([], 1.0).gap is None


def test_samples_round_trip_through_json_lists() -> None:
    s = Sample(1.25, 1.5, True, "echo-1")
    assert Sample.parse(s.to_list()) == s


def test_the_spread_table_has_a_header_rows_a_total_and_failures() -> None:
    table = spread_table({"echo-b": 140, "echo-a": 158}, 2, {"echo-a": "node1", "echo-b": "node2"})
    lines = table.splitlines()
    assert lines[0].split() == ["BACKEND", "NODE", "REQUESTS"]
    assert lines[1].split() == ["echo-a", "node1", "158"]
    assert lines[2].split() == ["echo-b", "node2", "140"]
    assert lines[3].split() == ["total", "300"]
    assert lines[4].split() == ["failed", "2"]
    assert len({line.rstrip().rfind(" ") + len(line.rstrip().split()[-1])
                for line in lines}) == 1  # counts right-aligned in one column


def test_arping_replies_in_either_arpings_format() -> None:
    habets = ("ARPING 10.0.0.150\n"
              "58 bytes from ce:39:a6:27:47:3c (10.0.0.150): index=0 time=10.062 usec\n"
              "58 bytes from CE:39:A6:27:47:3C (10.0.0.150): index=1 time=5.997 usec\n")
    assert arp_macs(habets) == ["ce:39:a6:27:47:3c"]
    iputils = ("ARPING 10.0.0.150 from 10.0.0.2 eth0\n"
               "Unicast reply from 10.0.0.150 [CE:39:A6:27:47:3C]  0.6ms\n"
               "Unicast reply from 10.0.0.150 [02:00:00:00:00:01]  0.7ms\n")
    assert arp_macs(iputils) == ["ce:39:a6:27:47:3c", "02:00:00:00:00:01"]
    assert arp_macs("ARPING 10.0.0.150\nTimeout\n") == []


def test_link_mac_and_metric_lines() -> None:
    assert link_mac("2: eth0@if5: <UP> mtu 1500\n    link/ether 82:a1:a6:86:ef:71 brd "
                    "ff:ff:ff:ff:ff:ff link-netns x-lan") == "82:a1:a6:86:ef:71"
    assert link_mac("1: lo: <LOOPBACK>\n    link/loopback 00:00:00:00:00:00") is None
    page = ("# HELP hubble_http_requests_total Count\n"
            'hubble_http_requests_total{method="GET"} 99.0\n'
            "hubble_http_requests_total_created 1.7e9\n"
            'hubble_flows_processed_total{type="Trace"} 12\n')
    assert metric_samples(page, ["hubble_http_requests_total"]) == [
        ('hubble_http_requests_total{method="GET"} 99.0', 99.0)]


def test_l2_list_says_why_this_node_won_an_ip() -> None:
    l2 = {"enabled": True, "election": "hexlane", "announcements": [
        {"ip": "10.0.0.150", "device": "eth0", "node": "node3", "services": ["default/echo"],
         "policies": ["default-l2-announcement-policy"], "replies": 2,
         "why": {"eligible": ["node1", "node2", "node3"], "alive": ["node2", "node3"],
                 "ranking": ["node2", "node3"], "owner": "node3"}}]}
    text = format_list(l2)
    assert "10.0.0.150  default/echo  eth0" in text
    assert ("10.0.0.150  eligible node1,node2,node3  alive node2,node3  ranking node2 > node3"
            "  owner node3") in text
    assert "rendezvous hashing" in text
    del l2["announcements"][0]["why"]  # Cilium's election: no such section
    assert "Why" not in format_list(l2)
