"""Who the relay's peers are: every node's Hubble server, from the Kubernetes Nodes (pure).

Cilium's relay learns the agents from the peer service, which lists the cluster's nodes with
the address of their Hubble server (the node's IP and `hubble.listenAddress`'s port) and, with
`hubble.tls.enabled`, the name their certificate carries
(`<node>.<cluster>.hubble-grpc.cilium.io`). hexlane's relay reads the same from the Nodes;
a node joins when its Node appears and leaves when it is deleted. Whether a peer answers is
the relay's business (`hexlane.hubble.relay`), not this list's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from hexlane.model.node import Node

from .certs import server_name


@dataclass(frozen=True, order=True)
class Peer:
    """A node's Hubble server as the relay dials it."""

    name: str  # "<cluster>/<node>", as the node's flows and GetNodes name it
    address: str  # "10.0.0.11:4244"
    tls_server_name: str = ""  # the certificate name to verify; "" = plaintext


def peers_from_nodes(nodes: Iterable[Node], *, cluster: str, port: int, tls: bool
                     ) -> list[Peer]:
    """One peer per Node with an IPv4 InternalIP (the first), sorted by name."""
    peers = []
    for node in nodes:
        ips = [ip for ip in node.internal_ips if ":" not in ip]
        if not ips:
            continue
        peers.append(Peer(f"{cluster}/{node.name}", f"{ips[0]}:{port}",
                          server_name(node.name, cluster) if tls else ""))
    return sorted(peers)


def parse_static_peer(text: str) -> Peer:
    """`NAME=HOST:PORT` (a peer given on the command line, plaintext); ValueError saying
    what is expected."""
    name, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not name or not colon or not host or not port.isdigit() \
            or not 0 < int(port) < 65536:
        raise ValueError(f"expected NAME=HOST:PORT such as default/node1=10.0.0.11:4244, "
                         f"got {text!r}")
    return Peer(name, address)
