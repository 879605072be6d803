"""`netns.with_resolv_conf`, what pod processes run under: the command sees the pod's file at
/etc/resolv.conf, the machine's file and mounts stay as they were, and a network namespace
removed while the command runs is released in its mount namespace too (its mounts follow
the machine's), so no pod keeps another pod's namespace alive."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from hexlane.lab import netns

pytestmark = pytest.mark.root


def test_the_command_sees_the_pods_file_and_the_machine_keeps_its_own(tmp_path: Path) -> None:
    before = netns.RESOLV_CONF.read_bytes()
    mounts = Path("/proc/self/mountinfo").read_text()
    pod_file = tmp_path / "resolv.conf"
    pod_file.write_text("search shop.svc.cluster.local\nnameserver 10.43.0.10\n")
    out = subprocess.run(netns.with_resolv_conf(pod_file, ["cat", str(netns.RESOLV_CONF)]),
                         capture_output=True, text=True, check=True, timeout=10).stdout
    assert out == pod_file.read_text()
    assert netns.RESOLV_CONF.read_bytes() == before
    assert Path("/proc/self/mountinfo").read_text() == mounts
    assert netns.with_resolv_conf(None, ["true"]) == ["true"]


def test_a_removed_namespace_is_released_in_the_commands_mounts(tmp_path: Path) -> None:
    name = netns.unique_name("hlmnt")
    pod_file = tmp_path / "resolv.conf"
    pod_file.write_text("nameserver 10.43.0.10\n")
    netns.create(name)
    proc = None
    try:
        proc = subprocess.Popen(netns.with_resolv_conf(pod_file, ["sleep", "30"]))
        mountinfo = Path(f"/proc/{proc.pid}/mountinfo")
        deadline = time.monotonic() + 5
        while str(pod_file) not in mountinfo.read_text():  # until the bind mount is made
            assert time.monotonic() < deadline, "the pod's resolv.conf was never mounted"
            time.sleep(0.01)
        assert f"/run/netns/{name}" in mountinfo.read_text()
        netns.delete(name)
        deadline = time.monotonic() + 5
        while f"/run/netns/{name}" in mountinfo.read_text():
            assert time.monotonic() < deadline, "the namespace is still mounted in the pod"
            time.sleep(0.01)
    finally:
        if proc is not None:
            netns.stop_process(proc)
        netns.delete(name)
