"""Who an address is, for flows: pods, nodes and the world, from the API's objects.

`Endpoints(node_name, cluster, services)` is the `hexlane.hubble.parser.Lookup` the agent
keeps up to date from its informers (`set_pod`/`delete_pod`, `set_node`/`delete_node`,
`host_addresses`; `snapshot()` freezes the answers of now, for flows built later): a pod's
address names the pod (namespace, name, labels as Cilium shows
them, its workload from its owners, its security identity once the policy controller knows
it: `set_identities`); this node's addresses are the reserved identity host,
other nodes' remote-node, anything else the world. Services are looked up through the
function given (the load balancer's frontends). No I/O: objects in, answers out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from hexlane.hubble.parser import (
    IDENTITY_HOST,
    IDENTITY_REMOTE_NODE,
    IDENTITY_UNKNOWN,
    IDENTITY_WORLD,
    PodInfo,
    Who,
)
from hexlane.policy.maps import PolicyRef

#: labels Kubernetes' controllers put on pods that say nothing about what the pod is (Cilium
#: leaves them out of identities too)
IGNORED_LABELS = frozenset({"pod-template-hash", "controller-revision-hash",
                            "pod-template-generation", "statefulset.kubernetes.io/pod-name",
                            "batch.kubernetes.io/controller-uid", "controller-uid"})

ServiceLookup = Callable[[str, int, str], "tuple[str, str] | None"]

_WORLD = Who(IDENTITY_WORLD)
_HOST = Who(IDENTITY_HOST)
_REMOTE_NODE = Who(IDENTITY_REMOTE_NODE)


def workloads(meta: Mapping[str, Any], labels: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    """The pod's workload as Hubble names it: a ReplicaSet's Deployment (its name without the
    pod-template-hash), else its controller's kind and name."""
    for ref in meta.get("ownerReferences") or ():
        if not isinstance(ref, Mapping) or not ref.get("controller", True):
            continue
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        if not kind or not name:
            continue
        suffix = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and suffix and name.endswith(f"-{suffix}"):
            return (("Deployment", name[: -len(suffix) - 1]),)
        return ((kind, name),)
    return ()


def pod_info(pod: Mapping[str, Any], cluster: str) -> PodInfo:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    namespace = str(meta.get("namespace") or "default")
    raw_labels = {str(k): str(v) for k, v in (meta.get("labels") or {}).items()}
    labels = [f"k8s:{k}={v}" for k, v in raw_labels.items() if k not in IGNORED_LABELS]
    labels += [f"k8s:io.kubernetes.pod.namespace={namespace}",
               f"k8s:io.cilium.k8s.policy.cluster={cluster}",
               "k8s:io.cilium.k8s.policy.serviceaccount="
               f"{spec.get('serviceAccountName') or 'default'}"]
    return PodInfo(namespace=namespace, name=str(meta.get("name") or ""),
                   labels=tuple(sorted(labels)), workloads=workloads(meta, raw_labels),
                   node_name=str(spec.get("nodeName") or ""))


def pod_addresses(pod: Mapping[str, Any]) -> list[str]:
    """The pod's own addresses (none for a host-network pod: those are its node's)."""
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    if spec.get("hostNetwork"):
        return []
    out = [str(ip.get("ip")) for ip in status.get("podIPs") or () if isinstance(ip, Mapping)
           and ip.get("ip")]
    if not out and status.get("podIP"):
        out = [str(status["podIP"])]
    return out


def node_addresses(node: Mapping[str, Any]) -> list[str]:
    return [str(a.get("address")) for a in (node.get("status") or {}).get("addresses") or ()
            if isinstance(a, Mapping) and a.get("type") in ("InternalIP", "ExternalIP")
            and a.get("address")]


def _key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    return f"{meta.get('namespace') or ''}/{meta.get('name') or ''}"


class Endpoints:
    """The agent's `Lookup` (see the module docstring)."""

    def __init__(self, node_name: str, cluster: str = "default",
                 services: ServiceLookup | None = None) -> None:
        self.node_name = node_name
        self.cluster = cluster
        self.services = services
        self._pods: dict[str, Who] = {}  # address -> pod
        self._pod_addresses: dict[str, list[str]] = {}  # ns/name -> its addresses
        self._nodes: dict[str, list[str]] = {}  # name -> addresses
        self._node_ips: dict[str, Who] = {}
        self._host: frozenset[str] = frozenset()
        self._identities: dict[str, int] = {}  # ns/name -> security identity
        self._policies: dict[int, tuple[PolicyRef, ...]] = {}  # policy map number -> policies

    # -- updates --------------------------------------------------------------------------

    # The address maps are never changed in place, only replaced: a snapshot keeps the ones
    # of its time.

    def set_pod(self, pod: Mapping[str, Any]) -> None:
        key = _key(pod)
        addresses = pod_addresses(pod)
        pods = self._without(key)
        if addresses:
            who = Who(self._identities.get(key, IDENTITY_UNKNOWN), pod_info(pod, self.cluster))
            self._pod_addresses[key] = addresses
            pods.update(dict.fromkeys(addresses, who))
        self._pods = pods

    def set_identities(self, identities: Mapping[str, int]) -> None:
        """Every pod's security identity ("namespace/name" -> number, the policy
        controller's): flows name it from now on."""
        changed = {k for k in set(identities) | set(self._identities)
                   if identities.get(k) != self._identities.get(k)}
        self._identities = dict(identities)
        if not changed:
            return
        pods = dict(self._pods)
        for key in changed:
            for address in self._pod_addresses.get(key, ()):
                who = pods.get(address)
                if who is not None:
                    pods[address] = replace(who, identity=identities.get(key,
                                                                         IDENTITY_UNKNOWN))
        self._pods = pods

    def set_policies(self, table: Mapping[int, tuple[PolicyRef, ...]]) -> None:
        """The policies behind each number the policy map's entries carry (the policy
        controller's): policy verdicts name them from now on."""
        self._policies = dict(table)

    def policies(self, cookie: int) -> tuple[PolicyRef, ...]:
        return self._policies.get(cookie, ())

    def delete_pod(self, pod: Mapping[str, Any]) -> None:
        self._pods = self._without(_key(pod))

    def _without(self, key: str) -> dict[str, Who]:
        pods = dict(self._pods)
        for address in self._pod_addresses.pop(key, ()):
            pods.pop(address, None)
        return pods

    def set_node(self, node: Mapping[str, Any]) -> None:
        name = str((node.get("metadata") or {}).get("name") or "")
        self._nodes[name] = node_addresses(node)
        self._reindex_nodes()

    def delete_node(self, node: Mapping[str, Any]) -> None:
        self._nodes.pop(str((node.get("metadata") or {}).get("name") or ""), None)
        self._reindex_nodes()

    def host_addresses(self, addresses: Iterable[str]) -> None:
        """This node's own addresses besides its Node object's (the router IP)."""
        self._host = frozenset(addresses)

    def _reindex_nodes(self) -> None:
        self._node_ips = {address: _HOST if name == self.node_name else _REMOTE_NODE
                          for name, addresses in self._nodes.items() for address in addresses}

    # -- Lookup ---------------------------------------------------------------------------

    def who(self, address: str) -> Who:
        return _who(self._pods, self._host, self._node_ips, address)

    def service(self, address: str, port: int, protocol: str) -> tuple[str, str] | None:
        return self.services(address, port, protocol) if self.services else None

    def snapshot(self) -> Snapshot:
        """The answers of now (Services excepted: they are looked up when asked)."""
        return Snapshot(self._pods, frozenset(self._host), self._node_ips, self.services)

    def namespaces(self) -> set[str]:
        return {who.pod.namespace for who in self._pods.values() if who.pod is not None}


def _who(pods: Mapping[str, Who], host: frozenset[str], node_ips: Mapping[str, Who],
         address: str) -> Who:
    pod = pods.get(address)
    if pod is not None:
        return pod
    if address in host:
        return _HOST
    return node_ips.get(address, _WORLD)


class Snapshot:
    """`Endpoints` as it was when taken (a `Lookup`)."""

    __slots__ = ("_host", "_node_ips", "_pods", "services")

    def __init__(self, pods: Mapping[str, Who], host: frozenset[str],
                 node_ips: Mapping[str, Who], services: ServiceLookup | None) -> None:
        self._pods, self._host, self._node_ips = pods, host, node_ips
        self.services = services

    def who(self, address: str) -> Who:
        return _who(self._pods, self._host, self._node_ips, address)

    def service(self, address: str, port: int, protocol: str) -> tuple[str, str] | None:
        return self.services(address, port, protocol) if self.services else None
