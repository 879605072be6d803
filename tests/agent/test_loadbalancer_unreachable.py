"""The agent's load balancer hands the heartbeat's dead nodes to its model.

Pins down: `LoadBalancer.set_unreachable_nodes` only keeps the set (nothing is handed to the
model, which a commit may be using in its thread, nor written); the next feed of the model (the
`services` controller's run) hands it over with the changed objects, and the Services with
endpoints on those nodes lose them for new connections; a later, smaller set brings them back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hexlane.agent.loadbalancer import KINDS, LoadBalancer
from hexlane.config.values import defaults
from hexlane.k8s.informer import KeyQueue
from hexlane.lb.services import STATE_QUARANTINED, LbModel, LbSettings


def _endpoint(address: str, node: str) -> dict[str, Any]:
    return {"addresses": [address], "nodeName": node, "conditions": {"ready": True}}


class _Informer:
    """What the load balancer reads of an informer: a cache and key queues."""

    def __init__(self, objects: dict[str, dict[str, Any]]) -> None:
        self.cache = objects

    def key_queue(self) -> KeyQueue:
        queue = KeyQueue()
        for key in self.cache:
            queue.put(key)
        return queue


def test_the_dead_nodes_reach_the_model_with_the_next_feed(tmp_path: Path) -> None:
    svc = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "default"},
           "spec": {"clusterIP": "10.43.0.10", "clusterIPs": ["10.43.0.10"],
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}
    sl = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
          "metadata": {"name": "web-a", "namespace": "default",
                       "labels": {"kubernetes.io/service-name": "web"}},
          "addressType": "IPv4",
          "endpoints": [_endpoint("10.42.1.5", "n1"), _endpoint("10.42.2.5", "n2")],
          "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}
    objects = {"services": {"default/web": svc}, "endpointslices": {"default/web-a": sl},
               "nodes": {}}
    informers: Any = {kind: _Informer(objects[kind]) for kind in KINDS}
    lb = LoadBalancer("n1", defaults(), tmp_path, informers)
    model = LbModel("n1", LbSettings())

    lb.set_unreachable_nodes(["n2", "n1"])
    assert model.unreachable == frozenset()  # kept until the next feed
    lb._feed(model)
    assert model.unreachable == {"n2"}  # this node's own name ignored
    model.commit()
    (entry,) = model.state().services
    assert [model.backends[b].address for b in entry.backend_ids] == ["10.42.1.5"]
    assert {b.address: b.state for b in model.backends.values()
            if b.state == STATE_QUARANTINED} == {"10.42.2.5": STATE_QUARANTINED}

    lb.set_unreachable_nodes([])
    lb._feed(model)
    assert model.commit().services_recomputed == 1
    (entry,) = model.state().services
    assert [model.backends[b].address for b in entry.backend_ids] == ["10.42.1.5",
                                                                      "10.42.2.5"]
