"""This node and the others, as the agent follows them from the API (the `routes` controller).

Before anything else the agent needs this node's IP (Node InternalIP) and pod CIDR
(`ipam.mode`: CiliumNode `spec.ipam.podCIDRs` or Node `spec.podCIDRs`); `wait_for_local`
waits for them once, saying what it still waits for (`waiting_for`). After that `sync` hands
the other nodes' IPs and pod CIDRs (`hexlane.routing.nodes.cluster_nodes`) to the endpoint
manager, which routes to them (natively or through VXLAN).

Node memory: this node's facts and the peers it routed are remembered in
`$STATE_DIR/node.json`, so a restarted agent serves the CNI plugin at once, before the API
server answers, and its first reconcile keeps every route to the other nodes in place (they
are checked against the API later). A changed IP or pod CIDR of this node is reported as a
problem and served the old way until the agent restarts: pods hold addresses of the old CIDR.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Mapping
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path
from typing import Any

from hexlane.datapath import netlink
from hexlane.k8s.informer import Informer
from hexlane.routing.nodes import cluster_nodes, local_node
from hexlane.routing.routes import NodeRouting

from .endpoints import EndpointManager, write_json_atomic

log = logging.getLogger(__name__)

NODE_FILE = "node.json"
#: The informers whose changes move the routes (CiliumNodes only under cluster-pool).
KINDS = ("nodes", "ciliumnodes")


class NodeManager:
    """This node's routing facts and the other nodes' (see the module docstring)."""

    def __init__(self, name: str, ipam_mode: str, state_dir: Path,
                 informers: Mapping[str, Informer]) -> None:
        self.name = name
        self.ipam_mode = ipam_mode
        self.state_dir = state_dir
        self.informers = {kind: informers[kind] for kind in KINDS if kind in informers}
        self.changed = asyncio.Event()
        for inf in self.informers.values():
            inf.add_handler(self._changed, lambda _old, new: self._changed(new), self._changed)
        self.local: NodeRouting | None = None
        self.peers: list[NodeRouting] = []
        self.waiting_for = "the agent to start"
        #: the LAN interface, the one holding the node IP
        self.device = ""
        self.problems: list[str] = []
        #: when the routes last followed a synced picture of the cluster
        self.last_sync: float | None = None
        self._remembered_data: dict[str, Any] | None = None

    def _changed(self, _obj: Any) -> None:
        self.changed.set()

    @property
    def synced(self) -> bool:
        return all(inf.synced.is_set() for inf in self.informers.values())

    def _objects(self, kind: str) -> list[dict[str, Any]]:
        inf = self.informers.get(kind)
        return inf.cache.objects() if inf is not None else []

    def _local_from_cache(self) -> NodeRouting | None:
        node = self.informers["nodes"].cache.get(self.name)
        cnodes = self.informers.get("ciliumnodes")
        cnode = cnodes.cache.get(self.name) if cnodes is not None else None
        found = local_node(self.name, node, cnode, self.ipam_mode)
        self.waiting_for = found.waiting_for
        return found.routing

    # -- this node ---------------------------------------------------------------------------

    def recall(self) -> NodeRouting | None:
        """This node (and the peers) as a previous run of this agent last knew them (None
        when absent or written for another node)."""
        remembered, self.peers = self._remembered()
        if remembered is not None:
            log.info("node %s: %s, pod CIDR %s (remembered; checked against the API later)",
                     remembered.name, remembered.node_ip,
                     ", ".join(map(str, remembered.pod_cidrs)))
        return remembered

    async def wait_for_local(self, stop: asyncio.Event) -> NodeRouting | None:
        """This node from the informers' caches, once its IP and pod CIDR are known (None
        when `stop` came first)."""
        said = ""
        while not stop.is_set():
            self.changed.clear()
            local = self._local_from_cache()
            if local is not None:
                return local
            if self.waiting_for != said:
                log.info("waiting for %s", self.waiting_for)
                said = self.waiting_for
            waits = [asyncio.create_task(self.changed.wait()),
                     asyncio.create_task(stop.wait())]
            await asyncio.wait(waits, timeout=30.0, return_when=asyncio.FIRST_COMPLETED)
            for task in waits:
                task.cancel()
        return None

    def settle(self, local: NodeRouting) -> None:
        """From now on the agent serves `local` (remembered at once)."""
        self.local = local
        self._remember()

    async def find_device(self) -> int:
        """The interface holding the node IP (the LAN side), via netlink; its MTU."""
        if self.local is None:
            raise RuntimeError(f"not started: waiting for {self.waiting_for}")
        ip = self.local.node_ip
        async with netlink.iproute_in() as ipr:
            async for msg in await ipr.addr("dump"):
                if msg.get_attr("IFA_ADDRESS") == str(ip):
                    link = (await ipr.link("get", index=msg["index"]))[0]
                    self.device = str(link.get_attr("IFLA_IFNAME"))
                    return int(link.get_attr("IFLA_MTU"))
        raise RuntimeError(f"no interface of this node holds its InternalIP {ip}: is the "
                           "agent running in the node's network namespace?")

    # -- the routes controller ---------------------------------------------------------------

    async def sync(self, manager: EndpointManager | None) -> None:
        """Hand the other nodes to the endpoint manager (before the informers synced: the
        routes known so far)."""
        if manager is None or self.local is None:
            raise RuntimeError(f"not started: waiting for {self.waiting_for}")
        synced = self.synced
        if synced:
            nodes, problems = cluster_nodes(self._objects("nodes"), self._objects("ciliumnodes"),
                                            self.ipam_mode)
            self.problems = [str(p) for p in problems]
            current = self._local_from_cache()
            if current is not None and current != self.local:
                # Pods hold addresses of the old CIDR; moving them is not done behind their
                # back. Routes to the others still converge.
                self.problems.append(f"node {self.local.name} is now {current.node_ip} with "
                                     f"pod CIDR {', '.join(map(str, current.pod_cidrs))}; "
                                     "this agent serves the old ones until it restarts")
            self.peers = [n for n in nodes if n.name != self.local.name]
            report = await manager.set_nodes(self.peers)
            self._remember()
        else:
            report = await manager.reconcile()  # local routes from what we know
        if report.failed:
            raise RuntimeError("; ".join(report.failed))
        if synced:
            self.last_sync = time.time()

    # -- node memory -------------------------------------------------------------------------

    def _remembered(self) -> tuple[NodeRouting | None, list[NodeRouting]]:
        try:
            data = json.loads((self.state_dir / NODE_FILE).read_text())
            if data.get("node") != self.name:
                return None, []
            nodes = [_routing_from_dict(d) for d in [data, *data.get("peers", [])]]
            return nodes[0], nodes[1:]
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None, []

    def _remember(self) -> None:
        """Keep this node's facts and the routed peers, so a restart routes at once."""
        if self.local is None:
            return
        data = {**_routing_to_dict(self.local),
                "peers": [_routing_to_dict(p) for p in self.peers]}
        if data != self._remembered_data:
            write_json_atomic(self.state_dir / NODE_FILE, data)
            self._remembered_data = data


def _routing_to_dict(node: NodeRouting) -> dict[str, Any]:
    return {"node": node.name, "nodeIP": str(node.node_ip),
            "podCIDRs": [str(c) for c in node.pod_cidrs]}


def _routing_from_dict(data: Mapping[str, Any]) -> NodeRouting:
    return NodeRouting(str(data["node"]), IPv4Address(data["nodeIP"]),
                       tuple(IPv4Network(c) for c in data["podCIDRs"]))
