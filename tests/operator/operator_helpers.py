"""Helpers for the operator's end-to-end tests: real `hexlane operator` processes against an
apiserver (tests/helpers/apiserver.py, which also has the JSON client the truth is read with),
and readers of what the operator wrote: Service ingress IPs and conditions, pool counters."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from helpers.apiserver import Apiserver
from helpers.wait import wait_for

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class OperatorProcess:
    """A `hexlane operator` against an apiserver, with short lease timings for tests."""

    def __init__(self, server: Apiserver, log_dir: Path, identity: str, *extra: str,
                 lease: tuple[str, str, str] = ("2s", "1s", "0.2s")) -> None:
        self.server = server
        self.identity = identity
        self.port = free_port()
        self.log_path = log_dir / f"operator-{identity}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "operator", "--kubeconfig",
             str(server.kubeconfig), "--metrics-addr", f"127.0.0.1:{self.port}",
             "--identity", identity,
             "--leader-election-lease-duration", lease[0],
             "--leader-election-renew-deadline", lease[1],
             "--leader-election-retry-period", lease[2], *extra],
            stdout=log, stderr=log, start_new_session=True)
        log.close()

    def log(self) -> str:
        return self.log_path.read_text()

    def metrics(self) -> dict[str, float]:
        """Sample lines of /metrics as {"name{labels}": value}; {} while not serving."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics",
                                        timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return {}
        out: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def healthz(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            return r.read().decode()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=30)


def lease_holder(server: Apiserver) -> str:
    lease = server.api.read("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
                            "cilium-operator-resource-lock")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def service(server: Apiserver, namespace: str, name: str) -> dict[str, Any]:
    obj = server.api.read(f"/api/v1/namespaces/{namespace}/services/{name}")
    assert obj is not None, f"no Service {namespace}/{name}"
    return dict(obj)


def ingress_ips(svc: dict[str, Any]) -> list[str]:
    return [i["ip"] for i in ((svc.get("status") or {}).get("loadBalancer") or {})
            .get("ingress") or [] if i.get("ip")]


def condition(obj: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == ctype:
            return dict(c)
    return None


SATISFIED = "cilium.io/IPAMRequestSatisfied"


def satisfied_condition(server: Apiserver, namespace: str, name: str) -> dict[str, Any] | None:
    """A Service's IPAMRequestSatisfied condition (None without one)."""
    return condition(service(server, namespace, name), SATISFIED)


def satisfaction(server: Apiserver, namespace: str, name: str
                 ) -> tuple[list[str], str | None]:
    """(ingress IPs, the IPAMRequestSatisfied reason or None) of a Service."""
    svc = service(server, namespace, name)
    cond = condition(svc, SATISFIED)
    return ingress_ips(svc), (cond or {}).get("reason")


def wait_for_ips(server: Apiserver, namespace: str, name: str) -> tuple[list[str], str | None]:
    """A Service's `satisfaction` once it has ingress IPs."""
    return wait_for(f"{name}'s IPs",
                    lambda: (r := satisfaction(server, namespace, name))[0] and r)


def wait_for_counters(server: Apiserver, name: str, **counters: str) -> None:
    """Until the pool's `pool_counters` are exactly `counters` (conflict, total, ...)."""
    wait_for(f"{name}'s counters {counters}", lambda: pool_counters(server, name) == counters)


def pool(server: Apiserver, name: str) -> dict[str, Any]:
    obj = server.api.read(f"{POOLS}/{name}")
    assert obj is not None, f"no pool {name}"
    return dict(obj)


def pool_counters(server: Apiserver, name: str) -> dict[str, str]:
    """{"conflict": reason, "total": n, "available": n, "used": n} from a pool's conditions."""
    out: dict[str, str] = {}
    obj = pool(server, name)
    for key, ctype in (("total", "cilium.io/IPsTotal"), ("available", "cilium.io/IPsAvailable"),
                       ("used", "cilium.io/IPsUsed")):
        c = condition(obj, ctype)
        if c is not None:
            out[key] = c["message"]
    c = condition(obj, "cilium.io/PoolConflict")
    if c is not None:
        out["conflict"] = c["reason"]
    return out


POOLS = "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools"


def ip_pool(name: str, *blocks: dict[str, str], **spec: Any) -> dict[str, Any]:
    """A CiliumLoadBalancerIPPool manifest: `blocks` like {"cidr": ...}, other spec fields."""
    return {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
            "metadata": {"name": name}, "spec": {"blocks": list(blocks), **spec}}


def lb_service(namespace: str, name: str, *, annotations: dict[str, str] | None = None,
               labels: dict[str, str] | None = None,
               ports: list[tuple[int, str]] | None = None,
               svc_type: str = "LoadBalancer") -> dict[str, Any]:
    """A Service manifest (LoadBalancer, no node ports unless asked)."""
    spec: dict[str, Any] = {"type": svc_type, "selector": {"app": name},
                            "ports": [{"name": f"p{i}", "port": p, "protocol": proto}
                                      for i, (p, proto) in enumerate(ports or [(80, "TCP")])]}
    if svc_type == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = False
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace,
                         "annotations": annotations or {}, "labels": labels or {}},
            "spec": spec}


def apply(server: Apiserver, *objects: dict[str, Any]) -> None:
    """kubectl apply of manifests given as dicts."""
    server.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))


OperatorFactory = Callable[..., OperatorProcess]


def leading(operators: OperatorFactory, identity: str, *extra: str) -> OperatorProcess:
    """An operator started with `extra`, once it has taken the lease."""
    op = operators(identity, *extra)
    wait_for(f"operator {identity} to lead",
             lambda: op.metrics().get("hexlane_operator_is_leader"))
    return op
