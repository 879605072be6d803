"""Fixtures for the service tests: a private directory on a BPF file system."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hexlane.datapath.bpffs import scratch_bpf_dir


@pytest.fixture(scope="session")
def bpffs_dir() -> Iterator[Path]:
    """A unique directory on a BPF file system, removed at the end: below /sys/fs/bpf when a
    bpffs is mounted there, else on a private bpffs mounted for the session (agents started
    with nsenter --net keep the machine's mounts, so they see it too)."""
    if shutil.which("clang") is None:
        pytest.skip("needs clang")
    with scratch_bpf_dir("hexlane-svc") as root:
        yield root
