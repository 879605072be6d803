"""Fixtures for datapath tests: the loaded LB (pinned in the run's bpffs), the services
programmed into it, and a namespace to run its programs in (bpf_lbsetup.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bpf_lbsetup import Services, program_netns, run_program

from hexlane.datapath import libbpf
from hexlane.datapath.lb.loader import LbDatapath


@pytest.fixture(scope="module")
def lb(bpffs: Path, request: pytest.FixtureRequest) -> Iterator[LbDatapath]:
    """The LB datapath loaded with Cilium's default table size and seed, pinned privately."""
    root = bpffs / request.module.__name__.rsplit(".", 1)[-1]
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
def prog_netns() -> Iterator[str]:
    """The module's namespace to run programs in."""
    with program_netns() as path:
        yield path


@pytest.fixture(scope="module")
def run(lb: LbDatapath, prog_netns: str) -> Callable[[str, bytes], libbpf.TestRunResult]:
    """Run one of `lb`'s programs on a frame (in the module's program namespace)."""
    return lambda program, frame: run_program(lb, prog_netns, program, frame)
