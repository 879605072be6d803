"""The lab workload as it runs in a network namespace: the UDP echo answers from the address
each datagram was sent to (two addresses on one interface: a socket bound to 0.0.0.0 would
answer from the route's address instead), and the HTTP server takes a POST body whole
(curl's `Expect: 100-continue` included) and says how many bytes it received."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hexlane.lab import netns

pytestmark = [pytest.mark.slow, pytest.mark.root]

FIRST, SECOND = "192.0.2.1", "192.0.2.2"  # both on one interface
UDP_PORT, TCP_PORT = 5353, 8080


@pytest.fixture
def workload(tmp_path: Path) -> Iterator[str]:
    """A namespace with FIRST and SECOND on one interface (a veth, the kernel may lack dummy),
    the workload running in it; the namespace's name."""
    name = netns.unique_name("hl-wl")
    proc: subprocess.Popen[bytes] | None = None
    try:
        netns.create(name)
        netns.run(name, ["ip", "link", "add", "v0", "type", "veth", "peer", "name", "v1"])
        for link in ("v0", "v1"):
            netns.run(name, ["ip", "link", "set", link, "up"])
        for addr in (FIRST, SECOND):
            netns.run(name, ["ip", "addr", "add", f"{addr}/24", "dev", "v0"])
        ready = tmp_path / "ready"
        proc = subprocess.Popen(netns.nsenter(name, [
            sys.executable, "-m", "hexlane.lab.workload", "--pod", "wl-1", "--node", "n1",
            "--tcp", str(TCP_PORT), "--udp", str(UDP_PORT), "--ready-file", str(ready)]),
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while not ready.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else b""
            assert time.monotonic() < deadline, "the workload did not get ready"
            time.sleep(0.05)
        yield name
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        netns.delete(name)
    assert not netns.exists(name)


def _udp_echo(name: str, src: str, dst: str) -> tuple[bytes, tuple[str, int]]:
    """A datagram from `src` to `dst`:UDP_PORT in the namespace: the answer and its source
    (an unconnected socket, so an answer from another address is seen, not filtered)."""
    def go() -> tuple[bytes, tuple[str, int]]:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((src, 0))
            s.settimeout(3)
            s.sendto(b"probe-" + dst.encode(), (dst, UDP_PORT))
            data, addr = s.recvfrom(2048)
            return data, addr
    return netns.run_in_netns(netns.netns_path(name), go)


def test_udp_echo_answers_from_the_address_it_was_sent_to(workload: str) -> None:
    # From FIRST to SECOND: the route back to FIRST has source FIRST, so an answer from a
    # socket bound to 0.0.0.0 without IP_PKTINFO would come from FIRST.
    for src, dst in ((FIRST, SECOND), (SECOND, FIRST), (FIRST, FIRST)):
        data, addr = _udp_echo(workload, src, dst)
        assert data == f"wl-1 probe-{dst}".encode()
        assert addr == (dst, UDP_PORT), (src, dst, addr)


def test_http_post_body_is_read_and_counted(workload: str, tmp_path: Path) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("no curl")
    upload = tmp_path / "upload.bin"
    upload.write_bytes(os.urandom(200_000))
    # curl sends `Expect: 100-continue` for a body this big: the server answers it, so the
    # upload does not wait curl's second for it.
    done = netns.run(workload, [curl, "-sS", "-m", "5", "--interface", FIRST,
                                "--data-binary", f"@{upload}",
                                "-w", "\n%{http_code} %{time_total}",
                                f"http://{SECOND}:{TCP_PORT}/whoami"])
    body, last = done.stdout.rsplit("\n", 1)
    code, elapsed = last.split()
    assert code == "200"
    answer = json.loads(body)
    assert answer["pod"] == "wl-1" and answer["received"] == 200_000
    assert answer["client_ip"] == FIRST
    assert float(elapsed) < 0.9, f"{elapsed}s: was 100-continue answered?"
    # A GET says nothing about a body; an empty POST received 0 bytes.
    get = json.loads(netns.run(workload, [curl, "-sS", f"http://{FIRST}:{TCP_PORT}/whoami"]
                               ).stdout)
    assert "received" not in get
    empty = json.loads(netns.run(workload, [curl, "-sS", "-X", "POST",
                                            f"http://{FIRST}:{TCP_PORT}/whoami"]).stdout)
    assert empty["received"] == 0
    assert netns.run(workload, [curl, "-sS", "--data-binary", "x",
                                f"http://{FIRST}:{TCP_PORT}/"]).stdout == "wl-1\n"
