"""Hubble's metrics in the lab, read by a real Prometheus (Debian's) as a homelab's would.

A 2-node lab of its own (prometheus.enabled, the seeds' Hubble metrics with context options
that keep this test's namespace apart), and in the client host's namespace a Prometheus with
a temporary configuration and storage, scraping every second each agent's :9962 and :9965
and the operator's :9963, stopped at the end. In a fresh namespace: an echo pod on node1, a
client pod on node2, a Service in front of echo and one with no endpoints. The client makes
N new connections to the Service (the last by its name, looked up in the lab's cluster DNS,
for a path that is not there), one to the empty Service (dropped), and M separate pings to
the echo pod.

Pins down, through PromQL on Prometheus' HTTP API (promtool query): every target is up; on
each node (the request leaves node2 through the tunnel and reaches echo on node1), the
namespace's SYNs and SYN-ACKs are N, its FINs 2N, its traces 4N (to-overlay and to-endpoint
halves), its requests to port 8080 2N (SYN and FIN of each; on node2 also the N HTTP
requests), the drop is one SERVICE_BACKEND_NOT_FOUND on node2, echo requests and replies M
each; node2, the client's, counts N HTTP requests and N responses (one 404) with their
durations, and the name's A query and answer (L7 flows without a proxy); the lost events
series is there; and
`promtool check metrics` passes on every endpoint's output.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.lab import Lab, running_lab
from helpers.promql import dashboard_queries, metric_names
from helpers.wait import wait_for
from hexlane.lab.netns import nsenter

DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"

pytestmark = [pytest.mark.slow, pytest.mark.root]

N_CONNECTIONS, N_PINGS = 10, 3
NS = f"hm-{secrets.token_hex(2)}"
METRICS = ("dns:query;ignoreAAAA", "drop:sourceContext=namespace",
           "tcp:labelsContext=source_namespace",
           "flow:sourceContext=namespace|reserved-identity",
           "port-distribution:labelsContext=destination_namespace",
           "icmp:sourceContext=namespace", "http")
NODES = {"node1": "10.0.0.11", "node2": "10.0.0.12"}
FQDN = f"echo.{NS}.svc.cluster.local."
OPERATOR = "10.0.0.10:9963"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: echo, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: echo}}}}
  template:
    metadata: {{labels: {{app: echo}}}}
    spec:
      nodeName: node1
      containers: [{{name: echo, image: hexlane/workload, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: client, namespace: {NS}, labels: {{app: client}}}}
spec:
  nodeName: node2
  containers: [{{name: client, image: hexlane/workload}}]
---
apiVersion: v1
kind: Service
metadata: {{name: echo, namespace: {NS}}}
spec:
  selector: {{app: echo}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {NS}}}
spec:
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"""
PROMETHEUS_CONFIG = f"""
global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}
scrape_configs:
  - job_name: hubble
    static_configs: [{{targets: [{", ".join(f'"{ip}:9965"' for ip in NODES.values())}]}}]
  - job_name: agent
    static_configs: [{{targets: [{", ".join(f'"{ip}:9962"' for ip in NODES.values())}]}}]
  - job_name: operator
    static_configs: [{{targets: ["{OPERATOR}"]}}]
"""


@pytest.fixture(scope="module")
def mlab() -> Iterator[Lab]:
    with running_lab(f"m{secrets.token_hex(3)}", "--set", "prometheus.enabled=true",
                     "--set", f"hubble.metrics.enabled={{{','.join(METRICS)}}}") as lab:
        yield lab


class Prometheus:
    """Debian's Prometheus in the lab client's namespace, on its 127.0.0.1:9090 only."""

    def __init__(self, lab: Lab, work: Path) -> None:
        self.netns = f"{lab.name}-client"
        config = work / "prometheus.yml"
        config.write_text(PROMETHEUS_CONFIG)
        self.log = work / "prometheus.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(nsenter(self.netns, [
                "prometheus", f"--config.file={config}", f"--storage.tsdb.path={work / 'data'}",
                "--web.listen-address=127.0.0.1:9090", "--log.level=warn"]),
                stdout=log, stderr=subprocess.STDOUT)

    def in_netns(self, *argv: str, stdin: str | None = None) -> str:
        out = subprocess.run(nsenter(self.netns, list(argv)), capture_output=True, text=True,
                             input=stdin, timeout=30)
        assert out.returncode == 0, f"{argv}: {out.stdout}{out.stderr}"
        return out.stdout

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant PromQL query through promtool, Prometheus' own client."""
        assert self.proc.poll() is None, self.log.read_text()[-2000:]
        return list(json.loads(self.in_netns("promtool", "query", "instant", "-o", "json",
                                             "http://127.0.0.1:9090", expr)))

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def prometheus(mlab: Lab, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    prom = Prometheus(mlab, tmp_path_factory.mktemp("prometheus"))
    try:
        wait_for("Prometheus to scrape its five targets", lambda: len(
            [r for r in _safe_query(prom, "up == 1")]) == 5, timeout=30, interval=0.5)
        yield prom
    finally:
        prom.stop()


def _safe_query(prom: Prometheus, expr: str) -> list[dict[str, Any]]:
    try:
        return prom.query(expr)
    except AssertionError:
        if prom.proc.poll() is not None:
            raise
        return []  # not answering yet


def _pods(lab: Lab) -> dict[str, dict[str, Any]]:
    items = json.loads(lab.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    return {p["metadata"]["name"].split("-")[0]: p for p in items
            if p["status"].get("phase") == "Running" and p["status"].get("podIP")}


def _backend_programmed(lab: Lab, cluster_ip: str, pod_ip: str) -> bool:
    """node2's load balancer has echo's pod behind the ClusterIP (so the first connection
    gets through: no retry to count)."""
    out = lab.exec("node2", "hexlane", "service", "list", "-o", "json", check=False).stdout
    return f"{pod_ip}:8080" in out and cluster_ip in out


@pytest.fixture(scope="module")
def traffic(mlab: Lab, prometheus: Prometheus) -> dict[str, Any]:
    lab = mlab
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    pods = wait_for("echo on node1 and the client on node2", lambda: (
        p if len(p := _pods(lab)) == 2 else None), timeout=60, interval=0.5)
    svc = json.loads(lab.kubectl("get", "svc", "-n", NS, "-o", "json").stdout)["items"]
    ips = {s["metadata"]["name"]: s["spec"]["clusterIP"] for s in svc}
    echo_ip = pods["echo"]["status"]["podIP"]
    wait_for("node2 to program echo's Service", lambda: _backend_programmed(
        lab, ips["echo"], echo_ip), timeout=30, interval=0.3)
    client = f"pod/{NS}/client"
    codes = lab.exec(client, "sh", "-c", f"for i in $(seq {N_CONNECTIONS - 1}); do curl -s "
                     f"-o /dev/null -m 3 -w '%{{http_code}}\\n' http://{ips['echo']}/; done"
                     ).stdout.split()
    assert codes == ["200"] * (N_CONNECTIONS - 1)
    # the last connection by name (the lab's cluster DNS: one A and one AAAA query, the
    # trailing dot skipping the search path) to a path the workload does not have
    missing = lab.exec(client, "curl", "-s", "-o", "/dev/null", "-m", "3", "-w",
                       "%{http_code}", f"http://{FQDN}/missing").stdout
    assert missing == "404"
    refused = lab.exec(client, "curl", "-s", "-m", "3", f"http://{ips['empty']}/", check=False)
    assert refused.returncode != 0
    for _ in range(N_PINGS):  # one echo identifier each: one flow each way per ping
        lab.exec(client, "ping", "-c", "1", "-W", "2", echo_ip)
    return {"ips": ips, "echo_ip": echo_ip}


def per_node(prom: Prometheus, expr: str) -> dict[str, float]:
    """`expr` summed by instance, as {node: value}."""
    by_ip = {ip: node for node, ip in NODES.items()}
    return {by_ip[r["metric"]["instance"].split(":")[0]]: float(r["value"][1])
            for r in prom.query(f"sum by (instance) ({expr})")}


def settled(prom: Prometheus, expr: str, expected: dict[str, float]) -> None:
    """The per-node values once Prometheus has scraped them (they only ever grow to it)."""
    seen: list[dict[str, float]] = []

    def check() -> bool:
        seen.append(per_node(prom, expr))
        return seen[-1] == expected

    try:
        wait_for(f"{expr} = {expected}", check, timeout=15, interval=0.5)
    except AssertionError:
        raise AssertionError(f"{expr}: expected {expected}, got {seen[-1]}") from None


def test_prometheus_sees_the_counts_of_known_traffic(prometheus: Prometheus,
                                                     traffic: dict[str, Any]) -> None:
    n, both = N_CONNECTIONS, ("node1", "node2")
    tcp = f'hubble_tcp_flags_total{{source_namespace="{NS}"}}'
    settled(prometheus, tcp.replace("}", ',flag="SYN"}'), dict.fromkeys(both, n))
    settled(prometheus, tcp.replace("}", ',flag="SYN-ACK"}'), dict.fromkeys(both, n))
    settled(prometheus, tcp.replace("}", ',flag="FIN"}'), dict.fromkeys(both, 2 * n))
    # node2 also counts the HTTP requests: their L7 flows are requests to port 8080 too, as
    # a proxy's L7 flows are in Cilium
    settled(prometheus, f'hubble_port_distribution_total{{destination_namespace="{NS}",'
                        'protocol="TCP",port="8080"}', {"node1": 2 * n, "node2": 3 * n})
    flows = (f'hubble_flows_processed_total{{source="{NS}",type="Trace",protocol="TCP",'
             'verdict="FORWARDED"}')
    settled(prometheus, flows, dict.fromkeys(both, 4 * n))
    # the request leaves node2 through the tunnel, its answer comes in to the client
    settled(prometheus, flows.replace("}", ',subtype="to-overlay"}'),
            dict.fromkeys(both, 2 * n))
    settled(prometheus, f'hubble_drop_total{{source="{NS}",'
                        'reason="SERVICE_BACKEND_NOT_FOUND",protocol="TCP"}', {"node2": 1})
    settled(prometheus, f'hubble_flows_processed_total{{source="{NS}",type="Drop",'
                        'verdict="DROPPED"}', {"node2": 1})
    for kind in ("EchoRequest", "EchoReply"):
        settled(prometheus, f'hubble_icmp_total{{source="{NS}",family="IPv4",type="{kind}"}}',
                dict.fromkeys(both, N_PINGS))
    # HTTP without a proxy: each request and response once, on the client's node
    settled(prometheus, f'hubble_flows_processed_total{{source="{NS}",type="L7",'
                        'subtype="HTTP",protocol="HTTP"}', {"node2": 2 * n})
    settled(prometheus, 'hubble_http_requests_total{method="GET",protocol="HTTP/1.1",'
                        'reporter="client"}', {"node2": n})
    settled(prometheus, 'hubble_http_responses_total{method="GET",status="200",'
                        'reporter="client"}', {"node2": n - 1})
    settled(prometheus, 'hubble_http_responses_total{method="GET",status="404",'
                        'reporter="client"}', {"node2": 1})
    settled(prometheus, 'hubble_http_request_duration_seconds_count{method="GET",'
                        'reporter="client"}', {"node2": n})
    # the name looked up: its A query and answer (ignoreAAAA leaves the AAAA ones out)
    settled(prometheus, f'hubble_dns_queries_total{{query="{FQDN}",qtypes="A",rcode="",'
                        'ips_returned="0"}', {"node2": 1})
    settled(prometheus, f'hubble_dns_responses_total{{query="{FQDN}",qtypes="A",'
                        'rcode="No Error",ips_returned="1"}', {"node2": 1})
    settled(prometheus, f'hubble_dns_response_types_total{{query="{FQDN}",qtypes="A",'
                        'type="A"}', {"node2": 1})
    assert per_node(prometheus, 'hubble_dns_queries_total{qtypes="AAAA"}') == {}
    lost = per_node(prometheus, 'hubble_lost_events_total{source="perf_event_ring_buffer"}')
    assert set(lost) == set(both)
    # the agents' and the operator's own metrics come through the same Prometheus
    assert prometheus.value('count(up{job="agent"} == 1)') == 2
    assert prometheus.value('up{job="operator"}') == 1


def test_promtool_check_metrics_passes_on_every_endpoint(prometheus: Prometheus,
                                                          traffic: dict[str, Any]) -> None:
    endpoints = [f"{ip}:{port}" for ip in NODES.values() for port in (9962, 9965)]
    for endpoint in [*endpoints, OPERATOR]:
        text = prometheus.in_netns("curl", "-sS", "-m", "5", f"http://{endpoint}/metrics")
        assert "# TYPE" in text, endpoint
        start = time.monotonic()
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                                 capture_output=True, timeout=30)
        assert checked.returncode == 0, (endpoint, checked.stdout, checked.stderr,
                                         time.monotonic() - start)


def test_every_hubble_dashboard_query_names_a_series_that_exists(prometheus: Prometheus,
                                                                 traffic: dict[str, Any]
                                                                 ) -> None:
    """dashboards/hexlane-hubble.json reads only series the agents expose after the known
    traffic (TCP, HTTP, DNS, a drop, pings), as Prometheus scraped them."""
    queries = dashboard_queries(json.loads((DASHBOARDS / "hexlane-hubble.json").read_text()))
    assert queries
    names = {name for query in queries for name in metric_names(query)}
    assert names
    missing = sorted(name for name in names
                     if not prometheus.value(f'count({{__name__="{name}"}})'))
    assert not missing, missing
