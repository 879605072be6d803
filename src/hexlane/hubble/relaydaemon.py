"""The relay as a daemon: its peers from the Kubernetes Nodes (or a fixed list), its server.

    hexlane hubble relay --kubeconfig F --values F... [--listen-address :4245]
    hexlane hubble relay --peer default/node1=10.0.0.11:4244 ...   # no Kubernetes

With Kubernetes, an informer on Nodes keeps the pool's peers equal to the cluster's nodes
(`hexlane.hubble.peers`): a node joins when its Node is added and leaves when it is deleted,
as Cilium's peer service reports them. The relay needs no other permission than to list and
watch Nodes.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from hexlane.config import Values
from hexlane.hubble.peers import Peer, peers_from_nodes
from hexlane.hubble.relay import PeerPool, Relay, RelayTLS
from hexlane.hubble.server import parse_listen_address
from hexlane.k8s.client import KubeClient, load_client_config
from hexlane.k8s.informer import Informer
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.k8s.resources import Node as NodeKind
from hexlane.k8s.runtime import run_until_stopped
from hexlane.model.node import Node

log = logging.getLogger("hexlane.hubble.relay")

QPS, BURST = 5.0, 10


@dataclass(frozen=True)
class RelayConfig:
    values: Values
    listen_address: str
    kubeconfig: str | None = None
    static_peers: tuple[Peer, ...] = ()  # given: no Kubernetes
    tls: RelayTLS | None = None


def agent_port(values: Values) -> int:
    """The port of every agent's Hubble server (hubble.listenAddress's)."""
    if not values.hubble.listen_address:
        raise ValueError("hubble.listenAddress is empty: the agents serve no TCP port for "
                         "the relay to dial")
    return parse_listen_address(values.hubble.listen_address)[1]


def _node_peers(informer: Informer, values: Values) -> list[Peer]:
    nodes = []
    for obj in informer.cache.objects():
        try:
            nodes.append(Node.parse(obj))
        except ValueError as e:
            log.warning("relay: skipping a Node: %s", e)
    return peers_from_nodes(nodes, cluster=values.cluster.name, port=agent_port(values),
                            tls=values.hubble.tls.enabled)


async def run_relay(config: RelayConfig) -> int:
    settings = config.values.hubble.relay
    pool = PeerPool(config.tls, dial_timeout=settings.dial_timeout,
                    retry_timeout=settings.retry_timeout)
    relay = Relay(pool, listen_address=config.listen_address, sort_window=settings.sort_window,
                  sort_buffer_len_max=settings.sort_buffer_len_max)
    client: KubeClient | None = None
    informer: Informer | None = None
    await relay.start()
    try:
        if config.static_peers:
            pool.set_peers(config.static_peers)
            await run_until_stopped(_forever(), "hubble relay")
        else:
            client = KubeClient(load_client_config(config.values, config.kubeconfig),
                                RateLimiter(QPS, BURST))
            nodes = Informer(client, NodeKind)
            informer = nodes

            def changed(*_: object) -> None:
                pool.set_peers(_node_peers(nodes, config.values))
            nodes.add_handler(changed, changed, changed)
            await run_until_stopped(nodes.run(), "hubble relay")
    finally:
        await relay.stop()
        if informer is not None:
            await informer.stop()
        if client is not None:
            await client.aclose()
    return 0


async def _forever() -> None:
    await asyncio.Event().wait()
