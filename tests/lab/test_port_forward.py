"""`hexlane lab port-forward`: the Hubble UI on the lab's control-plane host (inside its
namespace) fetched with a real HTTP request from this machine's loopback; Ctrl-C stops it and
closes the port; only loopback addresses are accepted."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from helpers.lab import Lab

pytestmark = [pytest.mark.slow, pytest.mark.root]

HEXLANE = str(Path(sys.executable).parent / "hexlane")


def test_the_hubble_ui_through_a_port_forward(lab: Lab) -> None:
    proc = subprocess.Popen([HEXLANE, "lab", "port-forward", "--name", lab.name, "cp", "8081",
                             "--local-port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("Forwarding from 127.0.0.1:"), line
        port = int(line.split("127.0.0.1:", 1)[1].split(" ", 1)[0])
        assert "-> cp 10.0.0.10:8081" in line
        for _ in range(2):  # two connections, one after the other
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=10) as answer:
                assert answer.status == 200
                body = answer.read().decode()
            assert "<!DOCTYPE html>" in body and "Hubble" in body
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopped (2 connections forwarded)" in out
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_only_a_loopback_address_is_listened_on(lab: Lab) -> None:
    done = lab.run("port-forward", "cp", "8081", "--address", "0.0.0.0", check=False)
    assert done.returncode == 1
    assert "only a loopback address" in done.stderr
