"""Fixtures for Hubble tests: a real HubbleServer on real sockets (its own asyncio loop in a
thread, so tests can run grpcurl and the CLI as subprocesses), fed known flows, and a Hubble
CA with server and client certificates. The helpers are in hubble_helpers.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hubble_helpers import RunningHubble, known_flows

from hexlane.hubble.certs import CertPair, ensure_ca, ensure_client_cert, ensure_server_cert


@pytest.fixture(scope="module")
def hubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHubble]:
    """A plaintext server holding `known_flows()` (read-only: tests must not add flows)."""
    with RunningHubble(tmp_path_factory.mktemp("hubble")) as server:
        server.add(*known_flows())
        yield server


@pytest.fixture
def fresh_hubble(tmp_path: Path) -> Iterator[RunningHubble]:
    """A server of the test's own (capacity 15), empty, for tests that add flows."""
    with RunningHubble(tmp_path, capacity=15) as server:
        yield server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, CertPair]:
    """A Hubble CA, node1's server certificate (127.0.0.1 in it) and a client certificate."""
    root = tmp_path_factory.mktemp("pki")
    ca = ensure_ca(root / "ca")
    tls = ensure_server_cert(ca, root / "node1", cluster="default", node="node1",
                             ips=["127.0.0.1"])
    other_ca = ensure_ca(root / "other-ca")
    return {"ca": ca, "server": CertPair(tls.cert_file, tls.key_file),
            "client": ensure_client_cert(ca, root / "client"),
            "stranger": ensure_client_cert(other_ca, root / "stranger")}


@pytest.fixture(scope="module")
def tls_hubble(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, CertPair]
               ) -> Iterator[RunningHubble]:
    """A server whose TCP listener requires client certificates of the Hubble CA."""
    from hexlane.hubble.server import HubbleTLS

    tls = HubbleTLS(pki["server"].cert, pki["server"].key, (pki["ca"].cert,),
                    server_name="node1.default.hubble-grpc.cilium.io")
    with RunningHubble(tmp_path_factory.mktemp("hubble-tls"), tls=tls) as server:
        server.add(*known_flows())
        yield server
