"""Small parts of the agent on their own: controllers' health record and the CNI install.

Pins down: a controller counts successes and failures, keeps the last error, is healthy only
after a success with no failure since, and runs again when triggered and on its interval;
the CNI config and plugin wrapper are written once (a second install changes nothing), put
back when removed, the wrapper runs the real plugin, and cleanup recognises only what hexlane
made; cleanup refuses the machine's own namespace; status without an agent is not OK; a
kube-proxy process is found by its name.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hexlane.agent import cniconf
from hexlane.cni import bundle
from hexlane.datapath import sysctl
from hexlane.datapath.netlink import is_named_netns
from hexlane.k8s.controller import Controller
from hexlane.lab import netns
from hexlane.lab.netns import Topology


async def test_controller_records_failures_and_recovers() -> None:
    outcomes = [RuntimeError("first"), None, ValueError("later")]
    clock = iter(range(100))

    async def step() -> None:
        err = outcomes.pop(0)
        if err is not None:
            raise err

    ctrl = Controller("c", step, interval=60, clock=lambda: float(next(clock)))
    assert not ctrl.healthy
    assert await ctrl.run_once() is False
    assert ctrl.status()["lastError"] == "RuntimeError: first" and not ctrl.healthy
    assert await ctrl.run_once() is True
    assert ctrl.healthy and ctrl.consecutive_failures == 0
    assert await ctrl.run_once() is False
    status = ctrl.status()
    assert (status["successes"], status["failures"], status["consecutiveFailures"]) == (1, 2, 1)
    assert status["lastSuccess"] == 1.0 and status["lastFailure"] == 2.0


async def test_controller_runs_on_trigger_and_interval() -> None:
    runs = 0

    async def step() -> None:
        nonlocal runs
        runs += 1

    ctrl = Controller("c", step, interval=0.05)
    ctrl.start()
    await asyncio.sleep(0.22)
    assert runs >= 3  # the first run and at least two interval runs
    slow = Controller("s", step, interval=60)
    before = runs
    slow.start()
    await asyncio.sleep(0.02)
    slow.trigger()
    await asyncio.sleep(0.02)
    await ctrl.stop()
    await slow.stop()
    assert runs >= before + 2  # slow's first run and its triggered one


def test_cni_install_is_idempotent_and_repairs(tmp_path: Path) -> None:
    conf, bin_dir, state = tmp_path / "net.d", tmp_path / "bin", tmp_path / "state"
    changed = cniconf.install(conf, bin_dir, state)
    assert sorted(changed) == sorted([str(bin_dir / "hexlane-cni"),
                                      str(conf / "05-hexlane.conflist")])
    assert cniconf.install(conf, bin_dir, state) == []
    data = json.loads((conf / "05-hexlane.conflist").read_text())
    assert data["plugins"] == [{"type": "hexlane-cni", "stateDir": str(state)}]
    (conf / "05-hexlane.conflist").unlink()
    assert cniconf.install(conf, bin_dir, state) == [str(conf / "05-hexlane.conflist")]
    # The wrapper runs the real plugin: VERSION answers without an agent.
    out = subprocess.run([str(bin_dir / "hexlane-cni")], input="{}", capture_output=True,
                         text=True, env={**os.environ, "CNI_COMMAND": "VERSION"}, timeout=30)
    assert out.returncode == 0 and "1.0.0" in json.loads(out.stdout)["supportedVersions"]
    assert cniconf.installed_files(conf, bin_dir) == [conf / "05-hexlane.conflist",
                                                      bin_dir / "hexlane-cni"]


def test_cleanup_leaves_foreign_plugins(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hexlane-cni").write_text("#!/bin/sh\necho someone else's\n")
    assert not cniconf.is_our_plugin(bin_dir / "hexlane-cni")
    assert cniconf.installed_files(tmp_path / "none", bin_dir) == []
    (bin_dir / "hexlane-cni").unlink()
    (bin_dir / "hexlane-cni").symlink_to("/usr/local/bin/hexlane-cni")
    assert cniconf.is_our_plugin(bin_dir / "hexlane-cni")


def test_cleanup_finds_the_bundled_plugin_and_only_ours(tmp_path: Path) -> None:
    """`hexlane cni install-plugin`'s zipapp (the DaemonSet's init container) is hexlane's
    and goes with cleanup; another zip or script of that name is not."""
    bin_dir = tmp_path / "bin"
    path, written = bundle.install_plugin(bin_dir)
    assert written and bundle.is_bundle(path)
    assert cniconf.installed_files(tmp_path / "none", bin_dir) == [path]
    path.write_bytes(bundle.SHEBANG + b"not a zip")
    assert not bundle.is_bundle(path)
    with zipfile.ZipFile(path, "w") as other:
        other.writestr("__main__.py", "print('someone else')\n")
    assert not bundle.is_bundle(path)
    assert cniconf.installed_files(tmp_path / "none", bin_dir) == []


def test_the_sysctls_before_are_recorded_once(tmp_path: Path) -> None:
    """The first value seen is kept across agent restarts (a later record would hold the
    agent's own 1); a sysctl that does not exist is not recorded."""
    name = "net.ipv4.ip_forward"
    now = sysctl.read_sysctl(name)
    assert now is not None
    sysctl.record_before(tmp_path, [name, "net.ipv4.conf.nosuchdev.accept_local"])
    assert sysctl.recorded_before(tmp_path) == {name: now}
    (tmp_path / sysctl.RECORD_NAME).write_text(json.dumps({name: "7"}))
    sysctl.record_before(tmp_path, [name])
    assert sysctl.recorded_before(tmp_path) == {name: "7"}
    assert sysctl.recorded_before(tmp_path / "none") == {}


def _hexlane(*args: str, ns: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "hexlane.cli.main", *args]
    if ns is not None:
        return netns.run(ns, argv, check=False)
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.root
def test_cleanup_refuses_the_machines_own_namespace(tmp_path: Path) -> None:
    """Without --host-namespace, cleanup outside a named namespace stops before looking."""
    if is_named_netns():
        pytest.skip("needs the machine's own namespace")
    out = _hexlane("cleanup", "--state-dir", str(tmp_path / "s"), "--bpf-root",
                   str(tmp_path / "b"), "--cni-conf-dir", str(tmp_path / "c"),
                   "--cni-bin-dir", str(tmp_path / "d"))
    assert out.returncode == 2, out.stdout + out.stderr
    assert "--host-namespace" in out.stderr and "would remove" not in out.stdout


@pytest.mark.root
def test_status_without_an_agent_is_not_ok(tmp_path: Path) -> None:
    with Topology("hxs") as topo:
        ns = topo.add("node")
        brief = _hexlane("status", "--brief", "--state-dir", str(tmp_path), ns=ns)
        assert brief.returncode == 1 and "unreachable" in brief.stdout
        full = _hexlane("status", "-o", "json", "--state-dir", str(tmp_path), ns=ns)
        assert full.returncode == 1
        assert json.loads(full.stdout)["health"]["ok"] is False
        # Cleanup in an empty node namespace finds nothing and says so.
        clean = _hexlane("cleanup", "--yes", "--state-dir", str(tmp_path / "gone"),
                         "--bpf-root", str(tmp_path / "nobpf"), "--cni-conf-dir",
                         str(tmp_path / "c"), "--cni-bin-dir", str(tmp_path / "d"), ns=ns)
        assert clean.returncode == 0 and "nothing of hexlane's here" in clean.stdout


def test_find_kube_proxy_reads_process_names(tmp_path: Path) -> None:
    """`hexlane status` without kube-proxy replacement says whether a kube-proxy runs (by
    process name, as `pgrep -x kube-proxy` would find it)."""
    from hexlane.agent.status import find_kube_proxy

    for pid, comm in ((7, "containerd\n"), (42, "kube-proxy\n")):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text(comm)
    (tmp_path / "self").mkdir()
    assert find_kube_proxy(tmp_path) == 42
    (tmp_path / "42" / "comm").write_text("bash\n")
    assert find_kube_proxy(tmp_path) is None
