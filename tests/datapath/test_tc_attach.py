"""Attaching the LB programs through the tc table and the reconciler, inside a namespace.

Pins down, for `hexlane.datapath.lb.attach.TcTable` (the one way hexlane attaches programs)
driven by a `Reconciler` as the agent drives it: a flush creates clsact and attaches at
ingress and egress of a veth in a network namespace the test creates (libbpf acts in the
calling thread's namespace, so the work runs on a thread that entered it); `read()` reports
the attached program ids; a slot no longer wanted is detached; a foreign filter (another
handle) is neither read nor touched; hook destroy removes clsact; the machine's own namespace
is never touched.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from hexlane.datapath import libbpf
from hexlane.datapath.lb.attach import TcTable
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, PROGRAM_TO_POD, LbDatapath
from hexlane.datapath.reconcile import Reconciler
from hexlane.lab.netns import Topology, netns_path, run, run_in_netns

pytestmark = [pytest.mark.slow, pytest.mark.root]

INGRESS, EGRESS = ("hlv0", "ingress", 1), ("hlv0", "egress", 1)


@pytest.fixture
def netns() -> Iterator[str]:
    with Topology("hl-tc") as topo:
        name = topo.add("node")
        run(name, ["ip", "link", "add", "hlv0", "type", "veth", "peer", "name", "hlv1"])
        run(name, ["ip", "link", "set", "hlv0", "up"])
        yield name


def test_attach_read_detach_in_a_namespace(lb: LbDatapath, netns: str) -> None:
    table = TcTable(lb)
    rec: Reconciler[tuple[str, str, int], int] = Reconciler(table)
    wanted = {INGRESS: table.program_id(PROGRAM_FROM_POD),
              EGRESS: table.program_id(PROGRAM_TO_POD)}

    def work() -> tuple[int, dict[tuple[str, str, int], int], dict[tuple[str, str, int], int],
                        int | None]:
        ifindex = socket.if_nametoindex("hlv0")
        libbpf.tc_attach(ifindex, lb.program_fd(PROGRAM_FROM_POD), "ingress", handle=7,
                         priority=7)  # someone else's
        table.wanted = set(wanted)
        rec.set_all(wanted)
        written = rec.flush().updated
        seen = dict(table.read())
        rec.remove(INGRESS)
        rec.flush()
        after = dict(table.read())
        foreign = libbpf.tc_query(ifindex, "ingress", handle=7, priority=7)
        libbpf.tc_hook_destroy(ifindex)
        return written, seen, after, foreign

    written, seen, after, foreign = run_in_netns(netns_path(netns), work)
    assert written == 2 and seen == wanted
    assert after == {EGRESS: wanted[EGRESS]} and foreign is not None
    assert "hlv0" in run(netns, ["ip", "link", "show", "hlv0"]).stdout
    assert "clsact" not in run(netns, ["tc", "qdisc", "show", "dev", "hlv0"]).stdout


def test_a_gone_device_is_detached_at_once(lb: LbDatapath, netns: str) -> None:
    """A pod's veth deleted with its pod: dropping its slots succeeds (nothing left pending or
    failing), as the kernel removed the filters with the device."""
    table = TcTable(lb)
    rec: Reconciler[tuple[str, str, int], int] = Reconciler(table)
    wanted = {INGRESS: table.program_id(PROGRAM_FROM_POD)}

    def work() -> tuple[int, int, dict[tuple[str, str, int], str]]:
        table.wanted = set(wanted)
        rec.set_all(wanted)
        written = rec.flush().updated
        run(netns, ["ip", "link", "del", "hlv0"])
        rec.set_all({})
        return written, rec.flush().deleted, dict(rec.last_errors)

    written, deleted, failing = run_in_netns(netns_path(netns), work)
    assert (written, deleted, failing) == (1, 1, {}) and rec.pending == 0


def test_attaching_where_clsact_exists_warns_of_nothing(
        lb: LbDatapath, netns: str, caplog: pytest.LogCaptureFixture) -> None:
    """The second direction of a device, and the same again (an agent restarted), find
    clsact there: libbpf's "Exclusivity flag on, cannot modify" (the kernel's EEXIST for the
    qdisc) is logged at debug with what it means, never as a warning."""
    def work() -> list[int]:
        ifindex = socket.if_nametoindex("hlv0")
        ids = [libbpf.tc_attach(ifindex, lb.program_fd(PROGRAM_FROM_POD), "ingress",
                                handle=9, priority=9),
               libbpf.tc_attach(ifindex, lb.program_fd(PROGRAM_TO_POD), "egress",
                                handle=9, priority=9),
               libbpf.tc_attach(ifindex, lb.program_fd(PROGRAM_FROM_POD), "ingress",
                                handle=9, priority=9)]
        libbpf.tc_hook_destroy(ifindex)
        return ids

    with caplog.at_level("DEBUG", logger="hexlane.libbpf"):
        ids = run_in_netns(netns_path(netns), work)
    assert all(ids) and ids[0] == ids[2]
    assert [r.getMessage() for r in caplog.records if r.levelno >= 30] == []
    expected = [r.getMessage() for r in caplog.records if "Exclusivity flag on" in r.getMessage()]
    assert len(expected) == 2, caplog.records  # the two attaches that found clsact
    assert all("clsact exists already" in m and "expected" in m for m in expected)
