"""Fixtures for datapath tests: a private place to pin BPF objects, and the loaded LB."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.datapath.lb.loader import LbDatapath


@pytest.fixture(scope="session")
def bpffs_dir() -> Iterator[Path]:
    """A unique directory on a BPF file system, removed at the end.

    Below /sys/fs/bpf when a bpffs is mounted there; otherwise on a private bpffs mounted for
    the session (and unmounted after), so tests never change the machine's mounts.
    """
    if shutil.which("clang") is None:
        pytest.skip("needs clang")
    with scratch_bpf_dir("hexlane-test") as root:
        yield root


@pytest.fixture(scope="module")
def lb(bpffs_dir: Path, request: pytest.FixtureRequest) -> Iterator[LbDatapath]:
    """The LB datapath loaded with Cilium's default table size and seed, pinned privately."""
    root = bpffs_dir / request.module.__name__.rsplit(".", 1)[-1]
    datapath = LbDatapath.load(root)
    try:
        yield datapath
    finally:
        datapath.unpin()
        datapath.close()
        shutil.rmtree(root, ignore_errors=True)
