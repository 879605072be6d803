"""The agents' metrics (:9962) and the operator's (:9963) in the lab, scraped as Prometheus would.

On the run's shared 2-node lab (prometheus.enabled, a 10 s resync), in a namespace of its
own: a Deployment with one pod on node1 behind a LoadBalancer Service (from a
CiliumLoadBalancerIPPool of this test), and a NodePort Service with no endpoints. From the
client host: N requests to the first Service's NodePort on node1, one to the empty one
(refused); then one of the empty Service's entries is deleted from node1's service map by
hand. The endpoints are read with curl from the control-plane host.

Pins down, from node1's numbers before and after: forwards grow in each direction (the
client's packets translated at the LAN device, SERVICE; into the pod, INGRESS; its answers
out of it, EGRESS) by at least the packets N requests take, with their bytes; exactly one
drop "Service backend not found" (SERVICE) of one SYN's bytes; the resync's repair counted in
lb4_services; map pressure above 0 for the services and conntrack maps; a pod IP allocated;
the operator's pool and Service counted. Every endpoint passes `promtool check metrics`,
and every metric name in every query of the agent's and the operator's dashboards
(dashboards/*.json) is a series one of them exposes. The Hubble dashboard's are checked in
tests/hubble/test_hubble_metrics_lab.py, whose lab has Hubble's metrics and every kind of
traffic they count.
"""

from __future__ import annotations

import json
import secrets
import shutil
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.lab import Lab, namespace_and_pool
from helpers.promql import dashboard_queries, metric_names
from helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

NS = f"am-{secrets.token_hex(2)}"
POOL = f"am-{secrets.token_hex(2)}"
N_REQUESTS = 10
NODE1, NODE2, CP = "10.0.0.11", "10.0.0.12", "10.0.0.10"
DASHBOARDS = Path(__file__).resolve().parents[2] / "dashboards"
MANIFESTS = namespace_and_pool(NS, POOL, "10.0.0.240/28") + f"""---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      nodeName: node1
      containers: [{{name: web, image: hexlane/workload, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}, labels: {{pool: {POOL}}}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
---
apiVersion: v1
kind: Service
metadata: {{name: empty, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: nobody}}
  ports: [{{port: 80}}]
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(lab: Lab, endpoint: str) -> str:
    """An endpoint's /metrics, fetched from the control-plane host."""
    return lab.exec("cp", "curl", "-sS", "-m", "5", f"http://{endpoint}/metrics").stdout


def samples(text: str) -> Samples:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(got: Samples, name: str, **labels: str) -> float:
    return got.get((name, tuple(sorted(labels.items()))), 0.0)


def repairs(lab: Lab) -> float:
    return value(samples(scrape(lab, f"{NODE1}:9962")), "hexlane_reconciler_repairs_total",
                 table="lb4_services")


def _services(lab: Lab) -> dict[str, dict[str, Any]]:
    items = json.loads(lab.kubectl("get", "svc", "-n", NS, "-o", "json").stdout)["items"]
    return {s["metadata"]["name"]: s for s in items}


def _web_served(lab: Lab, node_port: int) -> bool:
    """node1's load balancer has web's pod behind its NodePort (the first request gets
    through: nothing retried to count)."""
    pods = json.loads(lab.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
    ips = [p["status"].get("podIP") for p in pods if p["status"].get("phase") == "Running"]
    if not ips or not ips[0]:
        return False
    out = lab.exec("node1", "hexlane", "service", "list", "-o", "json", check=False).stdout
    return f"{ips[0]}:8080" in out and f":{node_port}" in out


def _delete_frontend(lab: Lab, node_port: int) -> int:
    """Delete node1's service map entries of `node_port` behind the agent's back; how many."""
    dump = json.loads(lab.exec("node1", "sh", "-c", "bpftool -j map dump pinned "
                               "$HEXLANE_BPF_ROOT/hl_lb4_services").stdout)
    mine = [e["key"] for e in dump
            if e["formatted"]["key"]["dport"] == socket.htons(node_port)]
    for key in mine:
        lab.exec("node1", "sh", "-c", "bpftool map delete pinned "
                 "$HEXLANE_BPF_ROOT/hl_lb4_services key hex "
                 + " ".join(k.removeprefix("0x") for k in key))
    return len(mine)


@pytest.fixture(scope="module")
def scraped(lab: Lab) -> Iterator[dict[str, Any]]:
    """Known traffic, a drop and a repair; the endpoints' text before and after."""
    before = samples(scrape(lab, f"{NODE1}:9962"))
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    try:
        svc = wait_for("web's NodePort and LoadBalancer IP", lambda: (
            s if (s := _services(lab)) and (s["web"].get("status", {}).get("loadBalancer")
                                            or {}).get("ingress") else None),
            timeout=30, interval=0.3)
        web = svc["web"]["spec"]["ports"][0]["nodePort"]
        empty = svc["empty"]["spec"]["ports"][0]["nodePort"]
        wait_for("node1 to serve web's pod on its NodePort", lambda: _web_served(lab, web),
                 timeout=60, interval=0.3)
        codes = lab.exec("client", "sh", "-c", f"for i in $(seq {N_REQUESTS}); do curl -s "
                         f"-o /dev/null -m 3 -w '%{{http_code}}\\n' http://{NODE1}:{web}/; "
                         "done").stdout.split()
        assert codes == ["200"] * N_REQUESTS
        refused = lab.exec("client", "curl", "-sS", "-m", "3", f"http://{NODE1}:{empty}/",
                           check=False)
        assert refused.returncode == 7, refused.stderr  # could not connect: ICMP unreachable
        repaired_before = repairs(lab)
        assert _delete_frontend(lab, empty) >= 1
        wait_for("node1's resync to repair the service map", lambda: (
            repairs(lab) > repaired_before), timeout=25, interval=0.5)
        texts = {node: scrape(lab, f"{ip}:9962") for node, ip in (("node1", NODE1),
                                                                 ("node2", NODE2))}
        texts["operator"] = scrape(lab, f"{CP}:9963")
        yield {"before": before, "texts": texts, "after": samples(texts["node1"])}
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        lab.kubectl("delete", "ciliumloadbalancerippool", POOL, check=False)


def test_forwards_grow_in_every_direction(scraped: dict[str, Any]) -> None:
    before, after = scraped["before"], scraped["after"]
    for direction in ("SERVICE", "INGRESS", "EGRESS"):
        packets = (value(after, "cilium_forward_count_total", direction=direction)
                   - value(before, "cilium_forward_count_total", direction=direction))
        size = (value(after, "cilium_forward_bytes_total", direction=direction)
                - value(before, "cilium_forward_bytes_total", direction=direction))
        # each request: at least SYN, ACK and the request one way; SYN-ACK, answer, FIN back
        assert packets >= 3 * N_REQUESTS, (direction, packets)
        assert size >= 54 * packets, (direction, size, packets)


def test_the_refused_request_is_one_drop_with_its_reason(scraped: dict[str, Any]) -> None:
    before, after = scraped["before"], scraped["after"]
    labels = {"reason": "Service backend not found", "direction": "SERVICE"}
    assert (value(after, "cilium_drop_count_total", **labels)
            - value(before, "cilium_drop_count_total", **labels)) == 1
    size = (value(after, "cilium_drop_bytes_total", **labels)
            - value(before, "cilium_drop_bytes_total", **labels))
    assert 54 <= size <= 100  # one TCP SYN with its Ethernet header


def test_pressure_pod_ips_and_the_operator(lab: Lab, scraped: dict[str, Any]) -> None:
    after = scraped["after"]
    for node in ("node1", "node2"):
        got = samples(scraped["texts"][node])
        assert value(got, "cilium_bpf_map_pressure", map_name="hl_lb4_services") > 0, node
    # conntrack is counted every 10 s: the requests' flows show by the next count
    wait_for("node1's conntrack pressure above 0", lambda: value(
        samples(scrape(lab, f"{NODE1}:9962")), "cilium_bpf_map_pressure",
        map_name="hl_ct4") > 0, timeout=15, interval=1)
    assert value(after, "cilium_ipam_events_total", action="allocate", family="ipv4") >= 1
    assert value(after, "cilium_endpoint") >= 1
    operator = samples(scraped["texts"]["operator"])
    assert value(operator, "hexlane_operator_lbipam_pool_ips", pool=POOL, state="total") == 16
    assert value(operator, "hexlane_operator_lbipam_pool_ips", pool=POOL, state="used") == 1
    assert value(operator, "hexlane_operator_lbipam_services_satisfied") >= 1


@pytest.mark.parametrize("endpoint", ["node1", "node2", "operator"])
def test_promtool_check_metrics_passes(scraped: dict[str, Any], endpoint: str) -> None:
    if shutil.which("promtool") is None:
        pytest.skip("needs promtool (Debian's prometheus package, scripts/setup-system.sh)")
    checked = subprocess.run(["promtool", "check", "metrics"], input=scraped["texts"][endpoint],
                             text=True, capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def exposed(texts: list[str]) -> set[str]:
    return {name for text in texts for name, _ in samples(text)}


@pytest.mark.parametrize("dashboard", ["hexlane-agent.json", "hexlane-operator.json"])
def test_every_dashboard_query_names_a_series_that_exists(scraped: dict[str, Any],
                                                          dashboard: str) -> None:
    names = exposed(list(scraped["texts"].values()))
    queries = dashboard_queries(json.loads((DASHBOARDS / dashboard).read_text()))
    assert queries
    missing = {(name, query) for query in queries for name in metric_names(query)
               if name not in names}
    assert not missing, sorted(missing)
