"""Helpers for the operator's end-to-end tests: the real `hexlane apiserver` and `hexlane
operator` processes, the machine's kubectl against them, and a small synchronous JSON client
(not the code under test) to read the truth from the API."""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(what: str, check: Callable[[], T | None], timeout: float = 20.0,
             interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail naming `what` otherwise."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


class Apiserver:
    """A `hexlane apiserver` on a free loopback port with its own data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.kubeconfig = data_dir / "kubeconfig"
        data_dir.mkdir(parents=True, exist_ok=True)
        self.kubeconfig.unlink(missing_ok=True)
        log = open(data_dir / "apiserver.log", "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "apiserver", "--data-dir",
             str(data_dir), "--listen", "127.0.0.1:0"],
            stdout=log, stderr=log, start_new_session=True)
        log.close()
        wait_for("the apiserver's kubeconfig",
                 lambda: self.kubeconfig.exists() or self._exited(), 30)
        config = yaml.safe_load(self.kubeconfig.read_text())
        self.url = config["clusters"][0]["cluster"]["server"]
        self.token = config["users"][0]["user"]["token"]
        self.ctx = ssl.create_default_context(cafile=str(data_dir / "tls.crt"))

    def _exited(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError("apiserver exited: "
                               + (self.data_dir / "apiserver.log").read_text()[-3000:])
        return False

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Accept": "application/json",
            "Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, context=self.ctx, timeout=30) as resp:
                return resp.status, json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")

    def get(self, path: str) -> Any:
        code, obj = self.request("GET", path)
        return obj if code == 200 else None

    def create(self, path: str, body: Any) -> Any:
        code, obj = self.request("POST", path, body)
        assert code == 201, (code, obj)
        return obj

    def kubectl(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(["kubectl", "--kubeconfig", str(self.kubeconfig), *args],
                              input=stdin, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)}: {done.stderr}"
        return done.stdout

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


class OperatorProcess:
    """A `hexlane operator` against an apiserver, with short lease timings for tests."""

    def __init__(self, api: Apiserver, log_dir: Path, identity: str, *extra: str,
                 lease: tuple[str, str, str] = ("2s", "1s", "0.2s")) -> None:
        self.api = api
        self.identity = identity
        self.port = free_port()
        self.log_path = log_dir / f"operator-{identity}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - kept by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hexlane.cli.main", "operator", "--kubeconfig",
             str(api.kubeconfig), "--metrics-addr", f"127.0.0.1:{self.port}",
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


def lease_holder(api: Apiserver) -> str:
    lease = api.get("/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/"
                    "cilium-operator-resource-lock")
    return str(((lease or {}).get("spec") or {}).get("holderIdentity") or "")


def service(api: Apiserver, namespace: str, name: str) -> dict[str, Any]:
    obj = api.get(f"/api/v1/namespaces/{namespace}/services/{name}")
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


def satisfaction(api: Apiserver, namespace: str, name: str) -> tuple[list[str], str | None]:
    """(ingress IPs, the IPAMRequestSatisfied reason or None) of a Service."""
    svc = service(api, namespace, name)
    cond = condition(svc, SATISFIED)
    return ingress_ips(svc), (cond or {}).get("reason")


def pool(api: Apiserver, name: str) -> dict[str, Any]:
    obj = api.get(f"/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/{name}")
    assert obj is not None, f"no pool {name}"
    return dict(obj)


def pool_counters(api: Apiserver, name: str) -> dict[str, str]:
    """{"conflict": reason, "total": n, "available": n, "used": n} from a pool's conditions."""
    out: dict[str, str] = {}
    obj = pool(api, name)
    for key, ctype in (("total", "cilium.io/IPsTotal"), ("available", "cilium.io/IPsAvailable"),
                       ("used", "cilium.io/IPsUsed")):
        c = condition(obj, ctype)
        if c is not None:
            out[key] = c["message"]
    c = condition(obj, "cilium.io/PoolConflict")
    if c is not None:
        out["conflict"] = c["reason"]
    return out


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


def apply(api: Apiserver, *objects: dict[str, Any]) -> None:
    """kubectl apply of manifests given as dicts."""
    api.kubectl("apply", "-f", "-", stdin=yaml.safe_dump_all(objects))


OperatorFactory = Callable[..., OperatorProcess]
