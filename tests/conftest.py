"""Shared test fixtures and the one gate of root-only tests. Tests read only files inside the
repository.

A test that needs root (network namespaces, BPF, mounts) says so with the `root` marker, on
the test or as the module's `pytestmark`; `pytest_collection_modifyitems` below skips exactly
those when the suite does not run as root. Nothing else checks the user.

Fixtures: `bpffs`, the run's private directory on a BPF file system (tests pin below it, each
in a subdirectory of its own); `apiserver`, the run's shared `hexlane apiserver` process, and
`api`, its JSON client; `apiservers`, a module's own apiservers (other flags, a cluster to
itself); `lab`, the run's shared 2-node lab (defaults; tests using it keep to namespaces of
their own or clean up after themselves). Helpers shared by several folders are in
tests/helpers/.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.apiserver import Api, Apiserver, Apiservers
from helpers.lab import Lab, running_lab
from hexlane.datapath.bpffs import scratch_bpf_dir

REPO = Path(__file__).resolve().parents[1]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test that takes the session's shared lab down runs after every other test, wherever
    # its file sorts (a later file using the `lab` fixture would find it gone).
    items.sort(key=lambda item: item.get_closest_marker("ends_lab") is not None)
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces, BPF, mounts)")
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def bpffs() -> Iterator[Path]:
    """A uniquely named directory on a BPF file system for the run's pins, removed at the end,
    also after a failure: below /sys/fs/bpf when a bpffs is mounted there, else on a private
    bpffs mounted for the run and unmounted after, so the machine's mounts never change
    (processes started with nsenter --net see it too). Every user takes a subdirectory of its
    own (`bpffs / "masquerade"`). Tests using it are marked root; the programs they pin are
    built with clang, so without clang they are skipped."""
    if shutil.which("clang") is None:
        pytest.skip("needs clang (the BPF programs)")
    with scratch_bpf_dir("hexlane-test") as root:
        yield root


@pytest.fixture(scope="session")
def apiserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apiserver]:
    """The run's shared apiserver: the real `hexlane apiserver` process over HTTPS (bookmarks
    every 0.5 s), stopped at the end. Tests sharing it use namespaces and names of their own."""
    with Apiservers(tmp_path_factory.mktemp("apiserver")) as start:
        yield start("--bookmark-interval", "0.5")


@pytest.fixture
def api(apiserver: Apiserver) -> Api:
    """The shared apiserver's JSON client."""
    return apiserver.api


@pytest.fixture(scope="module")
def apiservers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Apiservers]:
    """`apiservers(*flags, data_dir=None)` starts an apiserver of the module's own: for other
    flags, for a cluster no other test writes to, or on a data directory to restart it on.
    Every one is stopped when the module ends, also after a failure."""
    with Apiservers(tmp_path_factory.mktemp("apiservers")) as start:
        yield start


@pytest.fixture(scope="session")
def lab() -> Iterator[Lab]:
    """One lab per test session (2 nodes, the default values, a unique name), always torn
    down, also on failure. Two values differ, for the agents' metrics test
    (tests/agent/test_agent_metrics_lab.py): the agents serve /metrics on :9962 (as the seeds
    have it), and the resync that repairs kernel objects changed behind their back runs every
    10 s instead of 60 s."""
    with running_lab(f"t{secrets.token_hex(3)}", "--node-monitor-grace-period", "6",
                     "--set", "prometheus.enabled=true",
                     "--set", "reconciler.resyncInterval=10s") as lab:
        yield lab
