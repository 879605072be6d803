"""Shared by tests/policy: NetworkPolicy objects from spec dicts, pods, and a small cluster
resolved both ways (hexlane's resolution + datapath lookups, and the reference evaluator)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hexlane.model.netpol import NetworkPolicy
from hexlane.model.node import ContainerPort
from hexlane.policy import reference
from hexlane.policy.resolve import ClusterPolicy, PodInfo, PodKey, resolve_cluster


def netpol(namespace: str, spec: Mapping[str, Any], name: str = "p") -> NetworkPolicy:
    """A NetworkPolicy parsed from its spec, as `kubectl apply` would hand it over."""
    return NetworkPolicy.parse({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                                "metadata": {"name": name, "namespace": namespace},
                                "spec": dict(spec)})


def pod(namespace: str, name: str, ip: str, labels: Mapping[str, str] | None = None,
        ports: Sequence[tuple[str, int, str]] = (), sa: str = "") -> PodInfo:
    """A pod; `ports` as (name, number, protocol)."""
    return PodInfo(namespace=namespace, name=name, labels=dict(labels or {}), ip=ip,
                   ports=tuple(ContainerPort(n, p, name=nm) for nm, n, p in ports),
                   service_account=sa)


def ns_labels(*names: str, **extra: dict[str, str]) -> dict[str, dict[str, str]]:
    """Namespaces with Kubernetes' automatic `kubernetes.io/metadata.name` label."""
    return {n: {"kubernetes.io/metadata.name": n, **extra.get(n, {})} for n in names}


class Cluster:
    """Pods, namespaces and policies, resolved once; `ask` decides a connection both ways."""

    def __init__(self, pods: Sequence[PodInfo], namespaces: Mapping[str, Mapping[str, str]],
                 policies: Sequence[NetworkPolicy]) -> None:
        self.pods = {p.key: p for p in pods}
        self.namespaces = namespaces
        self.policies = list(policies)
        self.resolved: ClusterPolicy = resolve_cluster(pods, namespaces, policies)

    def ip(self, end: PodKey | str) -> str:
        return end if isinstance(end, str) else self.pods[end].ip

    def datapath(self, src: PodKey | str, dst: PodKey | str, port: int,
                 proto: str = "TCP") -> bool:
        return self.resolved.verdict(self.ip(src), self.ip(dst), port, proto)

    def reference(self, src: PodKey | str, dst: PodKey | str, port: int,
                  proto: str = "TCP") -> bool:
        return reference.allowed(src, dst, port, proto, self.policies, self.pods,
                                 self.namespaces)

    def ask(self, src: PodKey | str, dst: PodKey | str, port: int, proto: str = "TCP") -> bool:
        """The datapath's decision, after checking that the reference agrees."""
        got = self.datapath(src, dst, port, proto)
        want = self.reference(src, dst, port, proto)
        assert got == want, (f"{src} -> {dst}:{port}/{proto}: datapath {got}, "
                             f"reference {want}")
        return got
