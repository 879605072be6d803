"""`hexlane connectivity test --kubeconfig F` carried out: the matrix against any cluster.

The lab's path (`hexlane.lab.connectivity`) probes from the lab's network namespaces. A
cluster reached through a kubeconfig offers no such thing (and hexlane's own apiserver no
`exec`), so here the probing runs inside the test's pods, which run hexlane's image
(`hexlane connectivity serve`, `hexlane.lab.podprobe`), and report through the API:

1. reads the cluster's Ready, schedulable Nodes (their InternalIPs) and its hexlane values
   (`--values F`, else the ConfigMap `hexlane-config` in `--config-namespace`, else the
   defaults, with a warning), and which image the pods run (`--image`, else the one
   `hexlane manifests` renders for those values);
2. removes what an earlier run left (the namespace `hexlane-conncheck`), then creates it with
   the pods, Deployments and Services of `conncheck.manifests` (no pool, no externalIP: it
   does not know the cluster's addresses) and the probe pods' ServiceAccount, Role and
   RoleBinding (read the plan, create result ConfigMaps; that namespace only);
3. waits for every pod Ready, each LoadBalancer's IP (briefly: without a pool selecting the
   test's Services, the LoadBalancer cells are "not testable") and the ready endpoints;
4. writes the plan (`conncheck.plan_configmap`: each source pod's jobs, one per cell, from
   the same `conncheck.cells` and `plan_probes` as the lab's path) and waits for each source
   pod's result ConfigMap;
5. judges every cell with `conncheck.judge` and returns the rows (`connectivity.Report`);
6. removes the namespace (also after a failure or Ctrl-C) unless `keep`.

Node and LAN-client sources and externalIPs need the lab: those cells say why they are not
testable.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from hexlane import __version__
from hexlane.config import Values, load_values
from hexlane.deploy.render import CONFIG_MAP, image_name
from hexlane.k8s.client import ApiError, KubeClient, SingleConfig, load_client_config
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.model.errors import errors_only

from . import conncheck as cc
from .connectivity import (
    NAMESPACE_PATH,
    READY_TIMEOUT,
    Api,
    ConnectivityError,
    Progress,
    Report,
    api_get,
    create_objects,
    endpoint_counts,
    errors_as,
    exists,
    explain_pods,
    kubernetes_service,
    no_interrupt,
    ready_pods,
    remove_objects,
    services_ready,
    stderr_progress,
    wait_until,
    want_endpoints,
)
from .podspec import is_node_ready, name_of, node_internal_ip

LB_TIMEOUT = 15.0  # how long LoadBalancer IPs may take before their cells are not testable
SETTLE = 2.0  # after the endpoints are ready, for every node's datapath to load them
RESULT_MARGIN = 30.0


@dataclass(frozen=True)
class ClusterApi:
    """A cluster's API through a kubeconfig (one connection per request)."""

    config: SingleConfig

    def request(self, method: str, path: str, body: Any = None) -> Any:
        async def go() -> Any:
            client = KubeClient(self.config, RateLimiter(50, 100), timeout=10.0)
            try:
                return await client.request(method, path, body=body)
            finally:
                await client.aclose()
        return asyncio.run(go())


def cluster_values(api: Api, values_file: str | None, namespace: str
                   ) -> tuple[Values, str, list[str]]:
    """The cluster's hexlane values, where they came from, and warnings."""
    if values_file:
        values, problems = load_values([values_file])
        where = values_file
    else:
        try:
            cm = api_get(api, f"/api/v1/namespaces/{namespace}/configmaps/{CONFIG_MAP}")
        except ApiError as e:
            if not e.not_found:
                raise
            values, problems = load_values([])
            return values, "the defaults", [
                f"no ConfigMap {namespace}/{CONFIG_MAP}: the cluster's values are taken to be "
                "hexlane's defaults (give --values F)"]
        where = f"ConfigMap {namespace}/{CONFIG_MAP}"
        tree = yaml.safe_load(((cm.get("data") or {}).get("values.yaml")) or "{}") or {}
        values, problems = load_values([], base=[(where, tree)])
    errors = errors_only(problems)
    if errors:
        raise ConnectivityError(f"{where}: " + "; ".join(str(p) for p in errors))
    return values, where, []


def schedulable(node: Mapping[str, Any]) -> bool:
    spec = node.get("spec") or {}
    return is_node_ready(node) and not spec.get("unschedulable") and not any(
        t.get("effect") in ("NoSchedule", "NoExecute") for t in spec.get("taints") or [])


def cluster_facts(api: Api, values: Values, image: str) -> cc.LabFacts:
    """The matrix's facts for a cluster: its Ready, schedulable nodes by name."""
    nodes = sorted((n for n in api_get(api, "/api/v1/nodes").get("items") or []
                    if schedulable(n) and node_internal_ip(n)), key=name_of)
    if not nodes:
        raise ConnectivityError("the cluster has no Ready, schedulable node with an "
                                "InternalIP")
    return dataclasses.replace(
        cc.LabFacts.from_values(values, nodes=[name_of(n) for n in nodes],
                                node_ips=[node_internal_ip(n) for n in nodes], client_ip="",
                                lan=None, api_server=""),
        in_pods=True, image=image)


def run(kubeconfig: str, *, values_file: str | None = None, image: str | None = None,
        config_namespace: str = "kube-system", connections: int = 60, keep: bool = False,
        progress: Progress = stderr_progress) -> Report:
    """Deploy, probe every cell from the probe pods, clean up; the report."""
    if connections < 1:
        raise ConnectivityError("--connections: want at least 1")
    api = ClusterApi(load_client_config(None, kubeconfig))
    with errors_as("reading the cluster"):
        values, where, warnings = cluster_values(api, values_file, config_namespace)
        facts = cluster_facts(api, values, image or image_name(values, __version__))
    name = api.config.cluster.server
    report = Report(name, facts, warnings=warnings)
    progress(f"cluster {name}: {len(facts.nodes)} node(s); values from {where}; probe pods "
             f"run {facts.image}")
    try:
        with errors_as("setting up or probing"):
            report = _probe(api, report, connections, progress)
    finally:
        start = time.monotonic()
        if keep:
            progress(f"--keep: left namespace {cc.NAMESPACE}; the next run removes it, or: "
                     f"kubectl delete namespace {cc.NAMESPACE}")
        else:
            with no_interrupt(progress), errors_as("cleaning up"):
                progress(f"removing namespace {cc.NAMESPACE}")
                remove_objects(api, set(), pool=False)
        report.cleanup_s = time.monotonic() - start
    return report


def _probe(api: Api, report: Report, connections: int, progress: Progress) -> Report:
    facts = report.facts
    start = time.monotonic()
    if exists(api, NAMESPACE_PATH):
        progress(f"removing what an earlier run left ({cc.NAMESPACE})")
        remove_objects(api, set(), pool=False)
    objects = cc.manifests(facts, None)
    progress(f"deploying {sum(o['kind'] == 'Service' for o in objects)} Services and "
             f"{cc.expected_pods(facts)} pods in namespace {cc.NAMESPACE}")
    create_objects(api, objects)
    pods = wait_until("the test's pods to be Ready", lambda: ready_pods(api, facts),
                 READY_TIMEOUT, lambda: explain_pods(api))
    with_lb = _lb_services(api)
    if with_lb is None:
        with_lb = wait_until("the test's Services", lambda: services_ready(api, lb_ips=False),
                             READY_TIMEOUT, lambda: "Services missing")
        facts = dataclasses.replace(facts, lb_ips=False)
        report.warnings.append(f"no LoadBalancer IP within {LB_TIMEOUT:.0f}s: "
                               f"{cc.NO_LB_IP}")
    services = dict(with_lb)
    k8s, api_backend = kubernetes_service(api)
    if k8s is None:
        report.warnings.append(f"no Service {cc.KUBERNETES}: its cells cannot probe")
    else:
        services[cc.KUBERNETES] = k8s
    facts = dataclasses.replace(facts, api_server=api_backend)
    want = want_endpoints(facts)
    wait_until("ready endpoints", lambda: all(
        endpoint_counts(api).get(n, 0) == c for n, c in want.items()), READY_TIMEOUT,
        lambda: ", ".join(f"{n} has {endpoint_counts(api).get(n, 0)} of {c}"
                          for n, c in want.items()))
    time.sleep(SETTLE)
    report.facts = facts
    report.setup_s = time.monotonic() - start
    progress(f"set up in {report.setup_s:.1f}s")

    start = time.monotonic()
    inv, targets = cc.inventory(facts, pods)
    inv = cc.Inventory({**inv.backends, **cc.api_backends(facts)}, inv.source_ips)
    rows, probes = cc.plan_probes(cc.cells(facts), services, facts, targets)
    jobs: dict[str, list[cc.Job]] = {}
    by_index = {}
    for p in probes:
        pod = p.source.removeprefix(cc.POD_TARGET)
        jobs.setdefault(pod, []).append(cc.Job.of(p.index, p.cell, p.address, p.port,
                                                  connections, api_backend))
        by_index[p.index] = (p, pod)
    run_id = secrets.token_hex(6)
    progress(f"probing {len(probes)} cells ({connections} connections each, fewer over "
             f"HTTPS and for uploads) from the pods {', '.join(sorted(jobs))}; "
             f"{len(rows)} not probed")
    create_objects(api, [cc.plan_configmap(run_id, jobs)])
    timeout = RESULT_MARGIN + max(
        (sum(cc.job_timeout(j.check, j.connections) for j in js) / 3 for js in jobs.values()),
        default=0.0)
    results = wait_until("the probe pods' results", lambda: _results(api, run_id, jobs), timeout,
                    lambda: "no result from " + ", ".join(
                        sorted(set(jobs) - set(_results(api, run_id, jobs, partial=True)
                                               or {}))))
    for index, (p, pod) in by_index.items():
        result = results[pod].get(index) or cc.ProbeResult(
            f"{p.address}:{p.port}", p.cell.connections(connections),
            failure=f"pod {pod} returned no result for it")
        rows[index] = cc.Row(p.cell, cc.judge(p.cell, result, inv), f"{p.address}:{p.port}",
                             f"from pod {cc.NAMESPACE}/{pod}")
    report.rows = [rows[i] for i in sorted(rows)]
    report.matrix_s = time.monotonic() - start
    return report


def _lb_services(api: Api) -> dict[str, cc.ServiceAddresses] | None:
    """The Services with their LoadBalancer IPs, or None when they got none in time."""
    found: dict[str, cc.ServiceAddresses] | None = None
    with contextlib.suppress(ConnectivityError):
        found = wait_until("LoadBalancer IPs", lambda: services_ready(api), LB_TIMEOUT, str)
    return found


def _results(api: Api, run_id: str, jobs: Mapping[str, list[cc.Job]], *,
             partial: bool = False) -> dict[str, dict[int, cc.ProbeResult]] | None:
    """Each source pod's results of this run (None until every one wrote them; with
    `partial`, those there are)."""
    items = api_get(api, f"{NAMESPACE_PATH}/configmaps").get("items") or []
    by_name = {name_of(c): c for c in items}
    out = {}
    for pod in jobs:
        cm = by_name.get(cc.result_name(pod))
        found = cc.read_results(cm, run_id) if cm is not None else None
        if found is not None:
            out[pod] = found
    if partial:
        return out
    return out if len(out) == len(jobs) else None
