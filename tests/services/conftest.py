"""Fixtures for the service tests: a private directory on a BPF file system."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from hexlane.datapath.loader import is_bpffs


@pytest.fixture(scope="session")
def bpffs_dir() -> Iterator[Path]:
    """A unique directory on a BPF file system, removed at the end: below /sys/fs/bpf when a
    bpffs is mounted there, else on a private bpffs mounted for the session (agents started
    with nsenter --net keep the machine's mounts, so they see it too)."""
    if os.geteuid() != 0 or shutil.which("clang") is None:
        pytest.skip("needs root and clang")
    name = f"hexlane-svc-{secrets.token_hex(4)}"
    mounted: Path | None = None
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
