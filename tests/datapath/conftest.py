"""Fixtures for datapath tests: a private place to pin BPF objects, the loaded LB, the
services programmed into it, and a namespace to run its programs in (bpf_lbsetup.py)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bpf_lbsetup import Services, program_netns, run_program

from hexlane.datapath import libbpf
from hexlane.datapath.bpffs import scratch_bpf_dir
from hexlane.datapath.lb.loader import LbDatapath


def _skip_reason() -> str | None:
    if os.geteuid() != 0:
        return "needs root (BPF)"
    if shutil.which("clang") is None:
        return "needs clang"
    return None


@pytest.fixture(scope="session")
def bpffs_dir() -> Iterator[Path]:
    """A unique directory on a BPF file system, removed at the end.

    Below /sys/fs/bpf when a bpffs is mounted there; otherwise on a private bpffs mounted for
    the session (and unmounted after), so tests never change the machine's mounts.
    """
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
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


@pytest.fixture(scope="module")
def services(lb: LbDatapath) -> Services:
    """What the module's tests program into `lb`, through the agent's LbSync."""
    return Services(lb)


@pytest.fixture(scope="module")
def prog_netns(bpffs_dir: Path) -> Iterator[str]:
    """The module's namespace to run programs in (skipped without root, as bpffs_dir is)."""
    with program_netns() as path:
        yield path


@pytest.fixture(scope="module")
def run(lb: LbDatapath, prog_netns: str) -> Callable[[str, bytes], libbpf.TestRunResult]:
    """Run one of `lb`'s programs on a frame (in the module's program namespace)."""
    return lambda program, frame: run_program(lb, prog_netns, program, frame)
