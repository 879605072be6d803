"""`hexlane lab demo` run as a user runs it (`make demo`): every step's evidence is in its
output, and afterwards nothing of its lab is left. Also its failure path: a clear message and
a non-zero exit."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.lab import hexlane, lab_namespaces

pytestmark = [pytest.mark.slow, pytest.mark.root]

HEXLANE = str(Path(sys.executable).parent / "hexlane")  # the venv's, as `make demo` runs it


def leftovers(name: str) -> list[str]:
    """What of lab `name` exists: namespaces, BPF roots, its directory, processes whose
    command line names its directory."""
    left = list(lab_namespaces(name))
    left += [str(p) for p in Path("/sys/fs/bpf").glob(f"hexlane-{name}-node*")]
    if Path(f"/run/hexlane/lab/{name}").exists():
        left.append(f"/run/hexlane/lab/{name}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if f"/run/hexlane/lab/{name}/" in cmdline or f"--name {name} " in cmdline + " ":
                left.append(f"pid {proc.name}: {cmdline[:120]}")
    return left


def test_the_demo_tells_seed_000s_whole_story_and_leaves_nothing() -> None:
    name = f"dmt{secrets.token_hex(2)}"
    start = time.monotonic()
    try:
        done = subprocess.run([HEXLANE, "lab", "demo", "--name", name], capture_output=True,
                              text=True, timeout=600)
    finally:
        if lab_namespaces(name):
            hexlane("lab", "down", "--name", name, check=False)
    took = time.monotonic() - start
    out = done.stdout
    assert done.returncode == 0, f"exit {done.returncode}\n{out[-4000:]}\n{done.stderr}"
    print(f"demo took {took:.0f}s")

    # 1-3: the Services, their IPs and conditions, service-blue pending with its reason
    any_ip = re.search(r"echo-any got (10\.0\.0\.\d+) \(the pool's first free\)", out)
    assert any_ip, out
    pool_ip = any_ip.group(1)
    assert 100 <= int(pool_ip.rsplit(".", 1)[1]) <= 200  # seed 000's pool
    assert re.search(r"default\s+echo\s+10\.0\.0\.150\s+True\s+satisfied", out), out
    assert re.search(rf"default\s+echo-any\s+{re.escape(pool_ip)}\s+True\s+satisfied", out), out
    assert re.search(r"example\s+service-blue\s+LoadBalancer\s+\S+\s+<pending>", out), out
    assert re.search(r"example\s+service-blue\s+<none>\s+False\s+no_pool\s+No pool exists", out)
    # who announces what, and why
    announced = dict(re.findall(r"^(10\.0\.0\.\d+) is announced by (node\d) on eth0 \(policy "
                                r"default-l2-announcement-policy\)", out, re.M))
    assert set(announced) == {"10.0.0.150", pool_ip}, out
    assert re.search(r"10\.0\.0\.150  eligible node1,node2,node3  alive node1,node2,node3  "
                     r"ranking node\d > node\d > node\d  owner " + announced["10.0.0.150"], out)
    # 4: arping answered by the announcer's LAN MAC; 300 requests, none failed, every backend
    announcer = announced["10.0.0.150"]
    mac = re.search(rf"^{announcer}'s LAN MAC: ([0-9a-f:]{{17}})$", out, re.M)
    assert mac, out
    assert f"bytes from {mac.group(1)} (10.0.0.150)" in out
    assert f"10.0.0.150 is answered by {mac.group(1)}: {announcer}" in out
    table = out[out.index("BACKEND"):].splitlines()
    assert table[0].split() == ["BACKEND", "NODE", "REQUESTS"]
    rows = [line.split() for line in table[1:4]]
    assert sorted(r[1] for r in rows) == ["node1", "node2", "node3"]
    assert sum(int(r[2]) for r in rows) == 300 and all(int(r[2]) > 0 for r in rows)
    assert table[4].split() == ["total", "300"] and table[5].split() == ["failed", "0"]
    # 5: flows from the laptop to the backends through the relay; Hubble metrics counted them
    assert re.search(r"10\.0\.0\.2:\d+ \(world\) -> default/echo-\S+:80 .* FORWARDED", out), out
    values = [float(v) for v in re.findall(r"^\s+hubble_http_requests_total\{[^}]*\} (\S+)$",
                                           out, re.M)]
    assert values and max(values) > 0, out
    grown = re.search(r"hubble_http_requests_total over the 3 nodes grew by (\d+)", out)
    assert grown and int(grown.group(1)) > 0
    # 6: the announcer killed; the gap in ms, the new announcer, the backend that died
    gap = re.search(r"the laptop's traffic stopped for (\d+) ms", out)
    assert gap, out
    print(f"failover gap: {gap.group(1)} ms")
    moved = re.search(r"^10\.0\.0\.150 moved to (node\d):", out, re.M)
    assert moved and moved.group(1) != announcer, out
    assert re.search(rf"10\.0\.0\.150 is now answered by [0-9a-f:]{{17}}: {moved.group(1)}", out)
    assert re.search(rf"the backend echo-\S+ \(10\.42\.\d+\.\d+\) died with {announcer}", out)
    # 7: removed, and nothing of the lab is left
    assert f"lab {name} removed" in out
    assert leftovers(name) == []


def test_the_demo_refuses_a_lab_that_exists_and_leaves_it_alone() -> None:
    """The failure path, cheaply: an expectation (no lab of that name) fails before anything
    is made; the message says what and what to do, the exit is 1."""
    name = f"dmt{secrets.token_hex(2)}"
    subprocess.run(["ip", "netns", "add", f"{name}-lan"], check=True)
    try:
        done = subprocess.run([HEXLANE, "lab", "demo", "--name", name], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 1, done.stdout + done.stderr
        assert f"error: lab {name} exists already" in done.stderr
        assert f"hexlane lab down --name {name}" in done.stderr
        assert lab_namespaces(name) == [f"{name}-lan"]  # untouched
    finally:
        subprocess.run(["ip", "netns", "delete", f"{name}-lan"], check=False)
    assert lab_namespaces(name) == [] and not os.path.exists(f"/run/hexlane/lab/{name}")
