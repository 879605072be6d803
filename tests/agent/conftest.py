"""Fixtures for agent tests: a private bpffs directory and the namespace cluster (the helpers
themselves are in agent_helpers.py)."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_helpers import Cluster, require_root

from hexlane.datapath.loader import is_bpffs
from hexlane.lab import netns
from hexlane.lab.netns import Topology


@pytest.fixture(scope="module")
def bpffs() -> Iterator[Path]:
    """A unique directory on a bpffs (a private mount when /sys/fs/bpf has none)."""
    require_root()
    name = f"hexlane-agent-test-{secrets.token_hex(3)}"
    mounted = None
    if is_bpffs("/sys/fs/bpf"):
        root = Path("/sys/fs/bpf") / name
    else:
        mounted = Path(tempfile.mkdtemp(prefix="hexlane-bpffs-"))
        subprocess.run(["mount", "-t", "bpf", "bpf", str(mounted)], check=True)
        root = mounted / name
    root.mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=False)
            mounted.rmdir()


@pytest.fixture(scope="module")
def cluster(bpffs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    require_root()
    with Topology("hxa") as topo:
        c = Cluster(topo, tmp_path_factory.mktemp("agent"), bpffs)
        try:
            yield c
        finally:
            c.stop()
        made = list(topo.created)
    assert not any(netns.exists(n) for n in made)
