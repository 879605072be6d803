"""Attaching the LB programs to a device with clsact through libbpf, inside a namespace.

Pins down: tc_attach creates clsact and attaches at ingress and egress of a veth in a network
namespace the test creates (libbpf acts in the calling thread's namespace, so the work runs on
a thread that entered it); tc_query reports the attached program ids; detach and hook destroy
remove them; the machine's own namespace is never touched.
"""

from __future__ import annotations

import secrets
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hexlane.datapath import libbpf
from hexlane.datapath.lb.loader import PROGRAM_FROM_CLIENT, PROGRAM_TO_CLIENT, LbDatapath
from hexlane.datapath.netlink import setns

pytestmark = [pytest.mark.slow, pytest.mark.root]


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"hl-tc-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "hlv0", "type", "veth",
                        "peer", "name", "hlv1"], check=True)
        subprocess.run(["ip", "-n", name, "link", "set", "hlv0", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(name: str, work: Callable[[], Any]) -> Any:
    """Run `work` on a thread that entered the namespace (setns moves only that thread)."""
    result: dict[str, Any] = {}

    def run() -> None:
        try:
            setns(f"/run/netns/{name}")
            result["value"] = work()
        except BaseException as exc:  # handed back to the test's thread
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def test_attach_query_detach_in_a_namespace(lb: LbDatapath, netns: str) -> None:
    def work() -> tuple[int, int, int | None, int | None, int | None]:
        ifindex = socket.if_nametoindex("hlv0")
        ingress = lb.attach(ifindex, PROGRAM_FROM_CLIENT, "ingress")
        egress = lb.attach(ifindex, PROGRAM_TO_CLIENT, "egress")
        seen_in = libbpf.tc_query(ifindex, "ingress")
        seen_out = libbpf.tc_query(ifindex, "egress")
        libbpf.tc_detach(ifindex, "ingress")
        after = libbpf.tc_query(ifindex, "ingress")
        libbpf.tc_hook_destroy(ifindex)
        return ingress, egress, seen_in, seen_out, after

    ingress, egress, seen_in, seen_out, after = in_netns(netns, work)
    assert ingress > 0 and egress > 0 and ingress != egress
    assert (seen_in, seen_out, after) == (ingress, egress, None)
    shown = subprocess.run(["ip", "-n", netns, "link", "show", "hlv0"], capture_output=True,
                           text=True, check=True).stdout
    assert "hlv0" in shown
    qdiscs = subprocess.run(["tc", "-n", netns, "qdisc", "show", "dev", "hlv0"],
                            capture_output=True, text=True, check=True).stdout
    assert "clsact" not in qdiscs
