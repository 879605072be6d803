"""Builders of Service, EndpointSlice and Node objects for the service tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from hexlane.model.endpointslice import EndpointSlice
from hexlane.model.node import Node
from hexlane.model.service import Service


def service(name: str, cluster_ip: str, ports: Sequence[dict[str, Any]], *,
            namespace: str = "default", type: str = "ClusterIP",
            ingress: Sequence[str] = (), external_ips: Sequence[str] = (),
            etp: str | None = None, itp: str | None = None, affinity: int | None = None,
            health_check_node_port: int = 0,
            annotations: dict[str, str] | None = None) -> Service:
    spec: dict[str, Any] = {"type": type, "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                            "ports": list(ports)}
    if external_ips:
        spec["externalIPs"] = list(external_ips)
    if etp:
        spec["externalTrafficPolicy"] = etp
    if itp:
        spec["internalTrafficPolicy"] = itp
    if affinity is not None:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": affinity}}
    if health_check_node_port:
        spec["healthCheckNodePort"] = health_check_node_port
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": "Service",
                           "metadata": {"name": name, "namespace": namespace,
                                        "annotations": dict(annotations or {})},
                           "spec": spec}
    if ingress:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ip} for ip in ingress]}}
    return Service.parse(obj)


def endpoint(address: str, node: str, *, ready: bool = True, serving: bool | None = None,
             terminating: bool | None = None) -> dict[str, Any]:
    cond: dict[str, Any] = {"ready": ready}
    if serving is not None:
        cond["serving"] = serving
    if terminating is not None:
        cond["terminating"] = terminating
    return {"addresses": [address], "nodeName": node, "conditions": cond}


def endpoint_slice(svc: str, endpoints: Sequence[dict[str, Any]],
                   ports: Sequence[dict[str, Any]], *, namespace: str = "default",
                   name: str | None = None) -> EndpointSlice:
    return EndpointSlice.parse({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name or f"{svc}-abc", "namespace": namespace,
                     "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4", "endpoints": list(endpoints), "ports": list(ports),
    })


def node(name: str, *addresses: str) -> Node:
    return Node.parse({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
                       "status": {"addresses": [{"type": "InternalIP", "address": a}
                                                for a in addresses]}})
