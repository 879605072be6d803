"""Fixtures for the operator's end-to-end tests: an apiserver per test module, of its own (the
operator's Lease, pools and Nodes are cluster-wide), and a factory of operator processes owned
by the module (every process is killed at the end, also on failure)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from operator_helpers import OperatorFactory, OperatorProcess

from helpers.apiserver import Apiserver, Apiservers


@pytest.fixture(scope="module")
def apiserver(apiservers: Apiservers) -> Apiserver:
    """Instead of the run's shared apiserver: one this module's tests have to themselves."""
    return apiservers()


@pytest.fixture(scope="module")
def operators(apiserver: Apiserver, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[OperatorFactory]:
    """`operators(identity, *extra_args)` starts an operator against the module's apiserver."""
    started: list[OperatorProcess] = []
    log_dir = tmp_path_factory.mktemp("operator-logs")

    def start(identity: str, *extra: str) -> OperatorProcess:
        op = OperatorProcess(apiserver, log_dir, identity, *extra)
        started.append(op)
        return op

    try:
        yield start
    finally:
        for op in started:
            op.kill()
