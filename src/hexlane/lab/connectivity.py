"""`hexlane connectivity test --lab NAME` carried out: deploy, probe, judge, clean up.

What is deployed, which cells are probed and what each must see is decided by the pure
`hexlane.lab.conncheck`; this module does the I/O around it:

1. reads the lab's state and effective values (`/run/hexlane/lab/<lab>/values.yaml`);
2. removes what an earlier run left (the namespace `hexlane-conncheck` and the pool), then
   creates the namespace, the pool, the Deployments, pods and Services through the lab's API
   (from the client host, as `hexlane lab kubectl` does), reads the `kubernetes` Service and
   its endpoints, and writes the upload cells' file (`UPLOAD_BYTES` random bytes) in the
   lab's directory, which every namespace sees;
3. waits for every pod Running and Ready, every LoadBalancer IP, every EndpointSlice, and
   every node's datapath to serve the Services (`hexlane service list` in the node; a node
   that does not converge is a warning, its cells then say what fails);
4. routes the LoadBalancer and external IPs via node1 inside the client (a /32 each: the
   test does not count on L2 announcements, off in the default values);
5. runs each cell's probe in its source's network namespace, the lab's way
   (`manager.exec_argv`: `nsenter --net`): curl for TCP (`conncheck.curl_argv`; HTTPS and
   uploads: `https_argv`, `upload_argv`), a small Python probe for UDP
   (`conncheck.UDP_PROBE`); cells of different sources run in parallel, at most
   `PER_SOURCE` at once per source;
6. removes the routes, the upload file, the namespace (waiting until the pods' network
   namespaces are gone) and the pool, also after a failure or Ctrl-C, unless `keep`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from itertools import zip_longest
from pathlib import Path
from typing import Any, Protocol

from hexlane.config import load_values
from hexlane.k8s.client import ApiError
from hexlane.model.errors import errors_only

from . import conncheck as cc
from . import manager, netns
from .podspec import is_pod_ready, is_terminating, labels_of, name_of, node_name, pod_ip, uid_of
from .topology import LabPlan

PER_SOURCE = 3  # cells of one source probed at once
READY_TIMEOUT = 90.0
PROGRAM_TIMEOUT = 30.0
GONE_TIMEOUT = 60.0

Progress = Callable[[str], None]


class ConnectivityError(manager.LabError):
    """The test could not be set up or run (the message says what and where)."""


def stderr_progress(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


@dataclass
class Report:
    """A finished run: one row per cell, and how long each phase took."""

    lab: str  # the lab's name; with --kubeconfig, the cluster's API server
    facts: cc.LabFacts
    rows: list[cc.Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    setup_s: float = 0.0
    matrix_s: float = 0.0
    cleanup_s: float = 0.0

    @property
    def failed(self) -> bool:
        return any(r.verdict.status == cc.FAIL for r in self.rows)

    @property
    def summary(self) -> str:
        return cc.summary(r.verdict for r in self.rows)


# --- the API (the lab's, or any cluster's) -----------------------------------------------------


class Api(Protocol):
    """One request to a Kubernetes API (the JSON object it answers; ApiError)."""

    def request(self, method: str, path: str, body: Any = None) -> Any: ...


@dataclass(frozen=True)
class LabApi:
    """The lab's API, from the client host, as `hexlane lab kubectl` reaches it."""

    plan: LabPlan

    def request(self, method: str, path: str, body: Any = None) -> Any:
        return manager.api_request(self.plan, method, path, body=body, timeout=10.0)


def _write(api: Api, method: str, path: str, body: Any = None) -> Any:
    return api.request(method, path, body)


def api_get(api: Api, path: str) -> Any:
    return api.request("GET", path)


def _collection(obj: Mapping[str, Any]) -> str:
    kind = obj["kind"]
    ns = f"/namespaces/{cc.NAMESPACE}"
    return {"Namespace": "/api/v1/namespaces",
            "CiliumLoadBalancerIPPool": "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools",
            "Deployment": f"/apis/apps/v1{ns}/deployments",
            "Pod": f"/api/v1{ns}/pods",
            "Service": f"/api/v1{ns}/services",
            "ConfigMap": f"/api/v1{ns}/configmaps",
            "ServiceAccount": f"/api/v1{ns}/serviceaccounts",
            "Role": f"/apis/rbac.authorization.k8s.io/v1{ns}/roles",
            "RoleBinding": f"/apis/rbac.authorization.k8s.io/v1{ns}/rolebindings"}[kind]


NAMESPACE_PATH = f"/api/v1/namespaces/{cc.NAMESPACE}"
POOL_PATH = f"/apis/cilium.io/v2alpha1/ciliumloadbalancerippools/{cc.POOL_NAME}"


def _delete(api: Api, path: str) -> bool:
    """Delete one object; False when it was not there."""
    try:
        _write(api, "DELETE", path)
    except ApiError as e:
        if e.not_found:
            return False
        raise
    return True


def exists(api: Api, path: str) -> bool:
    try:
        api_get(api, path)
    except ApiError as e:
        if e.not_found:
            return False
        raise
    return True


def wait_until(what: str, check: Callable[[], Any], timeout: float, explain: Callable[[], str]
          ) -> Any:
    """Poll `check` until it returns something true; ConnectivityError with `explain()`."""
    result = manager.poll(check, timeout)
    if result is None:
        raise ConnectivityError(f"timed out after {timeout:.0f}s waiting for {what}: "
                                f"{explain()}")
    return result


# --- set up -------------------------------------------------------------------------------------


def lab_facts(plan: LabPlan) -> cc.LabFacts:
    """The lab's nodes, LAN and effective values (as `lab up` wrote them)."""
    path = plan.dir / "values.yaml"
    if not path.exists():
        raise ConnectivityError(f"lab {plan.name} has no {path}")
    values, problems = load_values([str(path)])
    errors = errors_only(problems)
    if errors:
        raise ConnectivityError(f"{path}: " + "; ".join(str(p) for p in errors))
    return cc.LabFacts.from_values(
        values, nodes=[h.role for h in plan.node_hosts],
        node_ips=[str(h.ip) for h in plan.node_hosts], client_ip=str(plan.client.ip),
        lan=plan.lan, api_server=str(plan.cp.ip))


def remove_objects(api: Api, uids: set[str], *, pool: bool = True,
                   sandbox: Callable[[str], str] | None = None) -> None:
    """Delete the namespace (and everything in it) and, with `pool`, the pool; wait until
    the namespace is gone and, with `sandbox` (a pod uid's network namespace: the lab's),
    the network namespaces of the pods `uids` and of any pod still listed."""
    try:
        pods = api_get(api, f"{NAMESPACE_PATH}/pods").get("items") or []
        uids = uids | {uid_of(p) for p in pods}
    except ApiError as e:
        if not e.not_found:
            raise
    _delete(api, NAMESPACE_PATH)
    if pool:
        _delete(api, POOL_PATH)
    sandboxes = {sandbox(uid) for uid in uids} if sandbox is not None else set()

    def gone() -> bool:
        return not exists(api, NAMESPACE_PATH) and not any(map(netns.exists, sandboxes))
    wait_until(f"namespace {cc.NAMESPACE} to go", gone, GONE_TIMEOUT, lambda: ", ".join(
        n for n in sorted(sandboxes) if netns.exists(n)) or "the namespace is still there")


def create_objects(api: Api, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        try:
            _write(api, "POST", _collection(obj), obj)
        except ApiError as e:
            raise ConnectivityError(f"creating {obj['kind']} {name_of(obj)}: {e}") from e


def _pods(api: Api) -> list[dict[str, Any]]:
    return list(api_get(api, f"{NAMESPACE_PATH}/pods").get("items") or [])


def ready_pods(api: Api, facts: cc.LabFacts) -> list[dict[str, Any]] | None:
    pods = [p for p in _pods(api) if not is_terminating(p)]
    ready = [p for p in pods if is_pod_ready(p) and pod_ip(p)]
    return ready if len(ready) == cc.expected_pods(facts) else None


def explain_pods(api: Api) -> str:
    out = []
    for p in _pods(api):
        if is_pod_ready(p):
            continue
        conds = [c for c in (p.get("status") or {}).get("conditions") or []
                 if c.get("status") != "True" and c.get("message")]
        why = conds[0]["message"] if conds else (p.get("status") or {}).get("phase", "Pending")
        out.append(f"{name_of(p)} on {node_name(p) or '(unscheduled)'}: {why}")
    return "; ".join(out) or "pods missing"


def _services(api: Api) -> dict[str, dict[str, Any]]:
    items = api_get(api, f"{NAMESPACE_PATH}/services").get("items") or []
    return {name_of(s): s for s in items}


def services_ready(api: Api, *, lb_ips: bool = True
                   ) -> dict[str, cc.ServiceAddresses] | None:
    """Every Service of the test (with `lb_ips`, each LoadBalancer with its IP); None while
    one is missing."""
    objs = _services(api)
    out = {}
    for v in cc.VARIANTS:
        obj = objs.get(v.name)
        if obj is None:
            return None
        addrs = cc.ServiceAddresses.from_object(obj)
        if lb_ips and v.type == cc.LOAD_BALANCER and not addrs.lb_ip:
            return None
        out[v.name] = addrs
    return out


def _explain_services(api: Api) -> str:
    out = []
    for name, obj in sorted(_services(api).items()):
        addrs = cc.ServiceAddresses.from_object(obj)
        if (obj.get("spec") or {}).get("type") == cc.LOAD_BALANCER and not addrs.lb_ip:
            conds = (obj.get("status") or {}).get("conditions") or []
            out.append(f"{name} has no LoadBalancer IP" + (
                f" ({conds[0].get('message')})" if conds else " (is the operator running?)"))
    return "; ".join(out) or "Services missing"


def endpoint_counts(api: Api) -> dict[str, int]:
    items = api_get(api, f"/apis/discovery.k8s.io/v1/namespaces/{cc.NAMESPACE}/endpointslices"
                 ).get("items") or []
    counts: dict[str, int] = {}
    for s in items:
        svc = labels_of(s).get("kubernetes.io/service-name", "")
        ready = sum(1 for e in s.get("endpoints") or []
                    if (e.get("conditions") or {}).get("ready"))
        counts[svc] = counts.get(svc, 0) + ready
    return counts


def want_endpoints(facts: cc.LabFacts) -> dict[str, int]:
    echo = cc.REPLICAS_PER_NODE * len(facts.nodes)
    second = facts.has(facts.second)
    return {v.name: (1 if second else 0) if v.group == "host" else
            (cc.REPLICAS_PER_NODE if second else 0) if v.only_second else echo
            for v in cc.VARIANTS}


def kubernetes_service(api: Api) -> tuple[cc.ServiceAddresses | None, str]:
    """The `kubernetes` Service's frontends (None when it is missing) and its endpoints as
    the API lists them ("a,b"; "" when none)."""
    try:
        svc = cc.ServiceAddresses.from_object(api_get(api, cc.KUBERNETES_PATH))
    except ApiError as e:
        if e.not_found:
            return None, ""
        raise
    slices = api_get(api, "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                  "?labelSelector=kubernetes.io%2Fservice-name%3Dkubernetes").get("items") or []
    addresses = {a for s in slices for e in s.get("endpoints") or []
                 for a in e.get("addresses") or []}
    return svc, ",".join(sorted(addresses))


def _frontends(facts: cc.LabFacts, node: str,
               services: Mapping[str, cc.ServiceAddresses]) -> dict[str, int | None]:
    """The frontends `node` must serve (`ip:port/PROTO`), with the backend count its
    ClusterIP entry must hold (None: not checked)."""
    want = want_endpoints(facts)
    out: dict[str, int | None] = {}
    for v in cc.VARIANTS:
        addrs = services[v.name]
        for proto in cc.PROTOCOLS:
            port = addrs.ports[proto]
            out[f"{addrs.cluster_ip}:{port}/{proto}"] = None if v.itp_local else want[v.name]
            if facts.node_port and proto in addrs.node_ports:
                out[f"{facts.node_ip(node)}:{addrs.node_ports[proto]}/{proto}"] = None
            if facts.node_port and addrs.lb_ip:
                out[f"{addrs.lb_ip}:{port}/{proto}"] = None
            if facts.external_ips:
                for ip in addrs.external_ips:
                    out[f"{ip}:{port}/{proto}"] = None
    k8s = services.get(cc.KUBERNETES)
    if k8s is not None:
        for proto, port in k8s.ports.items():
            out[f"{k8s.cluster_ip}:{port}/{proto}"] = None
    return out


def _unprogrammed(plan: LabPlan, facts: cc.LabFacts,
                  services: Mapping[str, cc.ServiceAddresses]) -> dict[str, str]:
    """Per node, what its datapath does not serve yet ("" when it serves everything)."""
    out = {}
    for node in facts.nodes:
        done = netns.run(plan.netns(node), manager.hexlane_argv("service", "list", "-o", "json"),
                         check=False, env={**os.environ, **manager.node_env(plan, node)},
                         timeout=20)
        if done.returncode != 0:
            out[node] = f"hexlane service list failed: {done.stderr.strip()[-200:]}"
            continue
        try:
            rows = json.loads(done.stdout or "[]")
        except ValueError:
            out[node] = f"hexlane service list printed no JSON: {done.stdout[:100]!r}"
            continue
        served: dict[str, int] = {}
        for row in rows:
            if row.get("scope") != "internal":
                served[str(row["frontend"])] = len(row.get("backends") or [])
        missing = []
        for frontend, count in _frontends(facts, node, services).items():
            if frontend not in served:
                missing.append(f"{frontend} missing")
            elif count is not None and served[frontend] != count:
                missing.append(f"{frontend} has {served[frontend]} of {count} backends")
        out[node] = ", ".join(missing)
    return out


# --- probing ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Probing:
    """What every probe of a run shares."""

    lab: str
    connections: int  # asked for; a cell may open fewer (`Cell.connections`)
    upload: str  # the file the upload cells POST (UPLOAD_BYTES)
    api_backend: str  # the `kubernetes` Service's endpoints, as the API lists them


def _probe(cell: cc.Cell, prefix: list[str], env: dict[str, str], address: str, port: int,
           probing: Probing) -> cc.ProbeResult:
    nonce = secrets.token_hex(4)
    connections = cell.connections(probing.connections)
    argv = cc.probe_argv(cell, address, port, connections, python=sys.executable, nonce=nonce,
                         upload=probing.upload)
    timeout = cc.probe_timeout(cell, connections)
    try:
        done = subprocess.run([*prefix, *argv], env=env, capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return cc.ProbeResult(f"{address}:{port}", connections,
                              failure=f"no result within {timeout:.0f}s")
    except OSError as e:
        return cc.ProbeResult(f"{address}:{port}", connections, failure=str(e))
    if cell.proto == cc.TCP:
        if done.returncode != 0 and cc.CURL_MARK not in done.stderr:
            return cc.ProbeResult(f"{address}:{port}", connections, failure=(
                f"exit {done.returncode}: {done.stderr.strip()[-200:]}"))
        if cell.check == cc.CHECK_HTTPS:
            return cc.parse_https(done.stderr, connections, address, port,
                                  probing.api_backend)
        return cc.parse_curl(done.stdout, done.stderr, connections, address, port)
    if done.returncode != 0:
        return cc.ProbeResult(f"{address}:{port}", connections, failure=(
            f"exit {done.returncode}: {done.stderr.strip()[-200:]}"))
    return cc.parse_udp(done.stdout, connections, address, port, nonce)


def _user_command(target: str, cell: cc.Cell, address: str, port: int,
                  probing: Probing) -> str:
    connections = cell.connections(probing.connections)
    argv = cc.probe_argv(cell, address, port, connections, python="python3", nonce="NONCE",
                         upload=probing.upload)
    if argv[:2] == ["python3", "-c"]:
        argv[2] = "<conncheck.UDP_PROBE>"
    return shlex.join(["hexlane", "lab", "exec", "--name", probing.lab, target, "--", *argv])


def _run_matrix(probing: Probing, facts: cc.LabFacts,
                services: Mapping[str, cc.ServiceAddresses], inv: cc.Inventory,
                targets: Mapping[str, str], progress: Progress) -> list[cc.Row]:
    rows, probes = cc.plan_probes(cc.cells(facts), services, facts, targets)
    jobs: dict[str, list[tuple[int, cc.Cell, str, int]]] = {}
    prefixes: dict[str, tuple[list[str], dict[str, str]]] = {}
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    for p in probes:
        if p.source not in prefixes:
            prefix, extra = manager.exec_argv(probing.lab, p.source, [])
            prefixes[p.source] = (prefix, {**os.environ, "PATH": path, **extra})
        jobs.setdefault(p.cell.source, []).append((p.index, p.cell, p.address, p.port))
    limits = {src: threading.Semaphore(PER_SOURCE) for src in jobs}

    def work(i: int, cell: cc.Cell, address: str, port: int) -> tuple[int, cc.Row]:
        src_target = targets[cell.source]
        prefix, env = prefixes[src_target]
        with limits[cell.source]:
            result = _probe(cell, prefix, env, address, port, probing)
        return i, cc.Row(cell, cc.judge(cell, result, inv), f"{address}:{port}",
                         _user_command(src_target, cell, address, port, probing))

    # Interleave the sources so every one of them makes progress from the start.
    order = [job for batch in zip_longest(*jobs.values()) for job in batch if job is not None]
    progress(f"probing {len(order)} cells ({probing.connections} connections each, fewer "
             "over HTTPS and for uploads) from "
             f"{len(jobs)} sources; {len(rows)} not probed")
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=PER_SOURCE * max(1, len(jobs)),
                                                 thread_name_prefix="conncheck")
    try:
        futures = [pool.submit(work, *job) for job in order]
        for future in concurrent.futures.as_completed(futures):
            i, row = future.result()
            rows[i] = row
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return [rows[i] for i in sorted(rows)]


# --- the whole run ------------------------------------------------------------------------------


@contextlib.contextmanager
def no_interrupt(progress: Progress) -> Iterator[None]:
    """Ctrl-C during cleanup says "cleaning up" instead of leaving things half-removed."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda *_: progress(
        "cleaning up, please wait (the test's namespace, pool and routes)"))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run(lab: str, *, connections: int = 60, keep: bool = False,
        progress: Progress = stderr_progress) -> Report:
    """Deploy, probe every cell, clean up; the report (its rows in table order)."""
    if connections < 1:
        raise ConnectivityError("--connections: want at least 1")
    state = manager.LabState.load(lab)
    if state is None:
        raise ConnectivityError(f"no lab {lab} (hexlane lab up --name {lab})")
    if state.phase != "up":
        raise ConnectivityError(f"lab {lab} is {state.phase or 'not up'}, not up")
    run = _Run(state.plan, lab_facts(state.plan), progress)
    try:
        with errors_as("setting up or probing"):
            run.set_up()
            run.probe(connections)
    finally:
        start = time.monotonic()
        if keep:
            progress(_kept(lab, run.routes, run.node1, run.upload))
        else:
            with no_interrupt(progress), errors_as("cleaning up"):
                progress(f"removing namespace {cc.NAMESPACE}, pool {cc.POOL_NAME} and the "
                         "client's routes")
                run.clean_up()
        run.report.cleanup_s = time.monotonic() - start
    return run.report


@contextlib.contextmanager
def errors_as(doing: str) -> Iterator[None]:
    """The API's, the kernel's and the tools' errors as one line naming what was done."""
    try:
        yield
    except (ApiError, subprocess.SubprocessError, OSError) as e:
        note = "".join(f" ({n})" for n in getattr(e, "__notes__", []))
        raise ConnectivityError(f"{doing}: {e}{note}") from e


class _Run:
    """One run's state: what it made (routes, pods), so cleanup removes exactly that."""

    def __init__(self, plan: LabPlan, facts: cc.LabFacts, progress: Progress) -> None:
        self.plan = plan
        self.api = LabApi(plan)
        self.facts = facts
        self.progress = progress
        self.report = Report(plan.name, facts)
        self.node1 = str(plan.node(1).ip)
        self.routes: list[str] = []
        self.uids: set[str] = set()
        self.services: dict[str, cc.ServiceAddresses] = {}
        self.pods: list[dict[str, Any]] = []
        self.upload = plan.dir / "conncheck-upload.bin"  # what the upload cells POST
        self.api_backend = ""

    def set_up(self) -> None:
        plan, api, facts, progress = self.plan, self.api, self.facts, self.progress
        start = time.monotonic()
        pools = api_get(api, "/apis/cilium.io/v2alpha1/ciliumloadbalancerippools").get(
            "items") or []
        ours = [p for p in pools if name_of(p) == cc.POOL_NAME]
        if ours or exists(api, NAMESPACE_PATH):
            progress(f"removing what an earlier run left ({cc.NAMESPACE}, pool {cc.POOL_NAME})")
            # An earlier --keep also left the client's routes to its pool and externalIP.
            for first, last in (r for p in ours for r in cc.pool_ranges(p)):
                self._del_routes(str(IPv4Address(int(first) + i))
                                 for i in range(min(int(last) - int(first) + 2, 64)))
            remove_objects(api, set(), sandbox=plan.pod_netns)
        addresses = cc.address_plan(plan.lan, plan.node(plan.nodes).ip, [
            r for p in pools if name_of(p) != cc.POOL_NAME for r in cc.pool_ranges(p)])
        objects = cc.manifests(facts, addresses)
        progress(f"deploying {sum(o['kind'] == 'Service' for o in objects)} Services and "
                 f"{cc.expected_pods(facts)} pods in namespace {cc.NAMESPACE}; LB-IPAM pool "
                 f"{addresses.pool_start}-{addresses.pool_stop}, externalIP "
                 f"{addresses.external_ip}")
        create_objects(api, objects)
        self.pods = wait_until("the test's pods to be Ready", lambda: ready_pods(api, facts),
                          READY_TIMEOUT, lambda: explain_pods(api))
        self.uids = {uid_of(p) for p in self.pods}
        self.services = wait_until("LoadBalancer IPs", lambda: services_ready(api),
                              READY_TIMEOUT, lambda: _explain_services(api))
        k8s, self.api_backend = kubernetes_service(api)
        if k8s is None:
            self.report.warnings.append(f"no Service {cc.KUBERNETES}: its cells cannot probe")
        else:
            self.services[cc.KUBERNETES] = k8s
        self.upload.write_bytes(os.urandom(cc.UPLOAD_BYTES))
        want = want_endpoints(facts)
        wait_until("ready endpoints", lambda: all(
            endpoint_counts(api).get(n, 0) == c for n, c in want.items()), READY_TIMEOUT,
            lambda: ", ".join(f"{n} has {endpoint_counts(api).get(n, 0)} of {c}"
                              for n, c in want.items()))
        lacking: dict[str, str] = {}

        def programmed() -> bool:
            lacking.update(_unprogrammed(plan, facts, self.services))
            return not any(lacking.values())
        with contextlib.suppress(ConnectivityError):
            wait_until("every node's datapath", programmed, PROGRAM_TIMEOUT, lambda: "")
        self.report.warnings += [
            f"after {PROGRAM_TIMEOUT:.0f}s {node} does not serve everything: {what}"
            for node, what in lacking.items() if what]
        for ip in cc.routed_addresses(self.services.values()):
            netns.run(plan.client.netns, ["ip", "route", "replace", f"{ip}/32", "via",
                                          self.node1])
            self.routes.append(ip)
        self.report.setup_s = time.monotonic() - start
        progress(f"set up in {self.report.setup_s:.1f}s; LoadBalancer and external IPs "
                 f"{', '.join(self.routes)} routed via {self.node1} in the client")

    def probe(self, connections: int) -> None:
        start = time.monotonic()
        inv, targets = cc.inventory(self.facts, self.pods)
        inv = cc.Inventory({**inv.backends, **cc.api_backends(self.facts)}, inv.source_ips)
        probing = Probing(self.plan.name, connections, str(self.upload), self.api_backend)
        self.report.rows = _run_matrix(probing, self.facts, self.services, inv, targets,
                                       self.progress)
        self.report.matrix_s = time.monotonic() - start

    def _del_routes(self, addresses: Iterable[str]) -> None:
        for ip in addresses:
            netns.run(self.plan.client.netns, ["ip", "route", "del", f"{ip}/32", "via",
                                               self.node1], check=False)

    def clean_up(self) -> None:
        self._del_routes(self.routes)
        self.upload.unlink(missing_ok=True)
        remove_objects(self.api, self.uids, sandbox=self.plan.pod_netns)


def _kept(lab: str, routes: list[str], node1: str, upload: Path) -> str:
    lines = [f"--keep: left namespace {cc.NAMESPACE}, pool {cc.POOL_NAME}"
             + (f", the client's routes to {', '.join(routes)} via {node1}" if routes
                else "") + f" and the upload file {upload}; the next run removes them, or:",
             f"  hexlane lab kubectl --name {lab} delete namespace {cc.NAMESPACE}",
             f"  hexlane lab kubectl --name {lab} delete ciliumloadbalancerippool "
             f"{cc.POOL_NAME}"]
    lines += [f"  hexlane lab exec --name {lab} client -- ip route del {ip}/32"
              for ip in routes]
    lines.append(f"  rm {upload}")
    return "\n".join(lines)
