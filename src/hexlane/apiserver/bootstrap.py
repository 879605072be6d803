"""What exists in a fresh cluster, and is kept so on every start.

- the namespaces `default`, `kube-system`, `kube-public` and `kube-node-lease`;
- the CRDs hexlane serves from the start (Cilium's, from `crds/`): created when missing and
  brought up to date when the bundled definition changed;
- the `default/kubernetes` Service at the service CIDR's first address, port 443 (https),
  with its Endpoints and EndpointSlice pointing at the address and port the apiserver serves
  on, as the real apiserver's endpoint reconciler keeps them.
"""

from __future__ import annotations

from typing import Any

from hexlane.apiserver import schema as schemas
from hexlane.apiserver import services
from hexlane.apiserver.objects import Rules, Target
from hexlane.apiserver.resources import CRD_KEY, NAMESPACE_KEY, Registry, ResourceInfo
from hexlane.apiserver.storage import Txn

NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")


def _info(registry: Registry, group: str, version: str, plural: str) -> ResourceInfo:
    info = registry.lookup(group, version, plural)
    assert info is not None, f"built-in resource {plural} missing"
    return info


def _ensure(txn: Txn, rules: Rules, target: Target, desired: dict[str, Any]) -> None:
    """Create `desired`, or update the stored object to it (a no-op when equal)."""
    current = txn.get(target.info.storage_key, target.namespace, target.name)
    if current is None:
        rules.create(txn, Target(target.info, target.namespace), desired)
        return
    body = {**current, **{k: v for k, v in desired.items() if k != "metadata"}}
    body["metadata"] = {**current["metadata"], **desired.get("metadata", {})}
    body["metadata"].pop("resourceVersion", None)
    rules.update(txn, target, body)


def bootstrap(txn: Txn, rules: Rules, registry: Registry, *, advertise: str, port: int) -> None:
    ns_info = _info(registry, "", "v1", "namespaces")
    for name in NAMESPACES:
        if txn.get(NAMESPACE_KEY, "", name) is None:
            rules.create(txn, Target(ns_info, ""), {"metadata": {"name": name}})

    crd_info = _info(registry, "apiextensions.k8s.io", "v1", "customresourcedefinitions")
    for crd in schemas.load_builtin_crds():
        name = crd["metadata"]["name"]
        current = txn.get(CRD_KEY, "", name)
        if current is None or current.get("spec") != crd.get("spec"):
            _ensure(txn, rules, Target(crd_info, "", name), crd)

    svc_info = _info(registry, "", "v1", "services")
    labels = {"component": "apiserver", "provider": "kubernetes"}
    _ensure(txn, rules, Target(svc_info, "default", "kubernetes"), {
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": labels},
        "spec": {"type": "ClusterIP",
                 "clusterIP": services.kubernetes_service_ip(rules.service_cidr),
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                            "targetPort": port}],
                 "sessionAffinity": "None"},
    })
    _ensure(txn, rules, Target(_info(registry, "", "v1", "endpoints"), "default", "kubernetes"), {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
        "subsets": [{"addresses": [{"ip": advertise}],
                     "ports": [{"name": "https", "port": port, "protocol": "TCP"}]}],
    })
    family = "IPv6" if ":" in advertise else "IPv4"
    slice_info = _info(registry, "discovery.k8s.io", "v1", "endpointslices")
    _ensure(txn, rules, Target(slice_info, "default", "kubernetes"), {
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by":
                                    "endpointslice-controller.k8s.io"}},
        "addressType": family,
        "endpoints": [{"addresses": [advertise],
                       "conditions": {"ready": True, "serving": True, "terminating": False}}],
        "ports": [{"name": "https", "port": port, "protocol": "TCP"}],
    })
