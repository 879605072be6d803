"""The lab's cluster DNS as a pod meets it: `kube-system/kube-dns` at 10.43.0.10 fronts the
server on the control plane; each pod's /etc/resolv.conf is the kubelet's (search path,
ndots:5) while the machine's stays as it was; getent, curl and dig in a pod resolve Services
by full and short names through real packets across hexlane's datapath (pod -> ClusterIP ->
host-network backend on the control plane, tunnel mode), over UDP and TCP; NXDOMAIN with
the SOA for a missing Service, NODATA for AAAA, SRV, headless endpoints, PTR, REFUSED
outside the cluster; a Service created now resolves within two seconds; Hubble sees the
queries and reads them as DNS (L7 flows); kube-dns deleted comes back; CoreDNS's counters
are served on 9153."""

from __future__ import annotations

import json
import secrets
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.lab import HEXLANE, Lab
from helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

NS = f"dns-{secrets.token_hex(2)}"
DNS_IP = "10.43.0.10"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: hexlane/workload,
                    ports: [{{name: http, containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{name: http, port: 80, targetPort: http}}]
---
apiVersion: v1
kind: Service
metadata: {{name: db, namespace: {NS}}}
spec:
  clusterIP: None
  selector: {{app: web}}
  ports: [{{name: http, port: 8080}}]
"""
LATE = f"""
apiVersion: v1
kind: Service
metadata: {{name: late, namespace: {NS}}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def ready_pods(lab: Lab) -> list[dict[str, Any]] | None:
    items = lab.api(f"/api/v1/namespaces/{NS}/pods")["items"]
    ready = [p for p in items if any(c["type"] == "Ready" and c["status"] == "True"
                                     for c in p["status"].get("conditions") or [])]
    return ready if len(ready) == 2 else None


def ready_endpoints(lab: Lab, svc: str) -> set[str] | None:
    slices = lab.api(f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices"
                     f"?labelSelector=kubernetes.io%2Fservice-name%3D{svc}")["items"]
    ips = {a for s in slices for e in s.get("endpoints") or []
           if (e.get("conditions") or {}).get("ready") for a in e["addresses"]}
    return ips if len(ips) == 2 else None


@pytest.fixture(scope="module")
def app(lab: Lab) -> Any:
    host_resolv = Path("/etc/resolv.conf").read_bytes()
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    try:
        pods = wait_for("two ready web pods", lambda: ready_pods(lab), timeout=60)
        wait_for("web's endpoints", lambda: ready_endpoints(lab, "web"), timeout=30)
        svc = lab.api(f"/api/v1/namespaces/{NS}/services/web")
        yield {"pods": pods, "pod": pods[0]["metadata"]["name"],
               "node": pods[0]["spec"]["nodeName"], "ip": svc["spec"]["clusterIP"]}
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)
    assert Path("/etc/resolv.conf").read_bytes() == host_resolv, \
        "the machine's resolv.conf is never touched"


def in_pod(lab: Lab, pod: str, script: str) -> list[str]:
    """Run a shell script in the pod; its output split at lines `==`."""
    out = lab.exec(f"pod/{NS}/{pod}", "sh", "-c", script).stdout
    return [part.strip() for part in out.split("==\n")]


def test_kube_dns_fronts_the_server_on_the_control_plane(lab: Lab) -> None:
    svc = lab.api("/api/v1/namespaces/kube-system/services/kube-dns")
    assert svc["spec"]["clusterIP"] == DNS_IP
    assert {"k8s-app": "kube-dns", "kubernetes.io/name": "CoreDNS"}.items() <= \
        svc["metadata"]["labels"].items()
    assert {(p["name"], p["port"], p["protocol"]) for p in svc["spec"]["ports"]} == {
        ("dns", 53, "UDP"), ("dns-tcp", 53, "TCP"), ("metrics", 9153, "TCP")}
    eps = lab.api("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/kube-dns")
    assert eps["metadata"]["labels"]["kubernetes.io/service-name"] == "kube-dns"
    assert [e["addresses"] for e in eps["endpoints"]] == [["10.0.0.10"]]
    assert "serving cluster.local on 10.0.0.10:53" in lab.log("logs", "dns.log")


def test_pods_resolve_services_by_name_through_their_search_path(lab: Lab, app: Any) -> None:
    resolv, short, ns_form, fqdn, page, metrics = in_pod(lab, app["pod"], (
        "cat /etc/resolv.conf; echo ==; getent hosts web; echo ==; "
        f"getent hosts web.{NS}; echo ==; getent hosts web.{NS}.svc.cluster.local; echo ==; "
        "curl -sS -m 5 http://web/; echo ==; "
        "curl -sS -m 5 http://kube-dns.kube-system:9153/metrics"))
    assert resolv.splitlines()[:3] == [
        f"search {NS}.svc.cluster.local svc.cluster.local cluster.local"
        + "".join(f" {d}" for d in _host_search()),
        f"nameserver {DNS_IP}", "options ndots:5"]
    fq = f"web.{NS}.svc.cluster.local"
    assert short.split() == ns_form.split() == fqdn.split() == [app["ip"], fq]
    assert page in {p["metadata"]["name"] for p in app["pods"]}
    assert 'coredns_dns_requests_total{family="1",proto="udp"' in metrics


def _host_search() -> list[str]:
    """The machine's search domains: the kubelet appends them, as a real one does."""
    for line in reversed(Path("/etc/resolv.conf").read_text().splitlines()):
        words = line.split()
        if words and words[0] in ("search", "domain"):
            return [w.rstrip(".") for w in words[1:]]
    return []


def dig_status(out: str) -> str:
    return out.split("status: ", 1)[1].split(",", 1)[0]


def test_dig_answers_as_coredns(lab: Lab, app: Any) -> None:
    fq = f"web.{NS}.svc.cluster.local"
    missing, aaaa, tcp, srv, headless, ptr, outside = in_pod(lab, app["pod"], (
        f"dig nope.{NS}.svc.cluster.local; echo ==; dig {fq} AAAA; echo ==; "
        f"dig +tcp +short {fq}; echo ==; dig +short _http._tcp.{fq} SRV; echo ==; "
        f"dig +short db.{NS}.svc.cluster.local; echo ==; dig +short -x {app['ip']}; echo ==; "
        "dig example.com"))
    assert dig_status(missing) == "NXDOMAIN"
    assert "cluster.local.\t\t5\tIN\tSOA\tns.dns.cluster.local. hostmaster.cluster.local." \
        in missing
    assert dig_status(aaaa) == "NOERROR" and "ANSWER: 0" in aaaa and "\tSOA\t" in aaaa
    assert tcp == app["ip"]
    assert srv == f"0 100 80 {fq}."
    assert set(headless.split()) == {p["status"]["podIP"] for p in app["pods"]}
    assert ptr == f"{fq}."
    assert dig_status(outside) == "REFUSED"


def test_a_new_service_resolves_within_two_seconds(lab: Lab, app: Any) -> None:
    name = f"late.{NS}.svc.cluster.local"
    # The pod asks every 50 ms from before the Service exists, and says when it got it.
    waiter = subprocess.Popen(
        [*HEXLANE, "lab", "exec", "--name", lab.name, f"pod/{NS}/{app['pod']}", "--", "sh",
         "-c", f"for i in $(seq 300); do getent hosts {name} && date +%s.%N && exit 0; "
               "sleep 0.05; done; exit 1"], stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)  # the loop runs, getting NXDOMAIN
        lab.kubectl("apply", "-f", "-", stdin=LATE)
        created = time.time()
        out, _ = waiter.communicate(timeout=30)
    finally:
        if waiter.poll() is None:
            waiter.kill()
            waiter.wait()
    assert waiter.returncode == 0, out
    ip = lab.api(f"/api/v1/namespaces/{NS}/services/late")["spec"]["clusterIP"]
    address, resolved_at = out.split()[0], float(out.split()[-1])
    assert address == ip
    assert resolved_at - created < 2.0


def test_hubble_sees_the_queries_on_the_pods_node(lab: Lab, app: Any) -> None:
    fq = f"web.{NS}.svc.cluster.local"
    assert in_pod(lab, app["pod"], f"dig +short {fq}; dig +tcp +short {fq}") == [
        f"{app['ip']}\n{app['ip']}"]
    out = lab.exec(app["node"], "hexlane", "hubble", "observe", "--last", "2000", "-o",
                   "jsonpb", "--pod", f"{NS}/{app['pod']}", "--to-service",
                   "kube-system/kube-dns").stdout
    flows = [json.loads(line)["flow"] for line in out.splitlines() if line.strip()]
    protocols = {next(iter(f["l4"])) for f in flows}
    assert {"UDP", "TCP"} <= protocols
    assert all(f["IP"]["destination"] == "10.0.0.10" and
               f["destination_service"] == {"name": "kube-dns", "namespace": "kube-system"}
               for f in flows)
    # ... and read as DNS: the query and its answer, paired (hubble.l7, on by default)
    out = lab.exec(app["node"], "hexlane", "hubble", "observe", "--last", "2000", "-o",
                   "jsonpb", "--pod", f"{NS}/{app['pod']}", "--protocol", "dns").stdout
    l7 = [json.loads(line)["flow"]["l7"] for line in out.splitlines() if line.strip()]
    answers = [x for x in l7 if x["type"] == "RESPONSE" and x["dns"]["query"] == f"{fq}."]
    assert answers and all(x["dns"]["ips"] == [app["ip"]] and x["dns"]["ttl"] == 5
                           for x in answers if x["dns"]["qtypes"] == ["A"])


def test_kube_dns_deleted_comes_back(lab: Lab, app: Any) -> None:
    lab.kubectl("delete", "service", "kube-dns", "-n", "kube-system")

    def back() -> bool:
        svc = lab.api("/api/v1/namespaces/kube-system/services/kube-dns")
        eps = lab.api("/apis/discovery.k8s.io/v1/namespaces/kube-system/endpointslices/"
                      "kube-dns")
        owner = eps["metadata"]["ownerReferences"][0]["uid"]
        return svc["spec"]["clusterIP"] == DNS_IP and owner == svc["metadata"]["uid"]
    wait_for("kube-dns back", lambda: _quietly(back), timeout=10, interval=0.2)
    (fqdn,) = in_pod(lab, app["pod"], "getent hosts web")
    assert fqdn.split()[0] == app["ip"]


def _quietly(check: Any) -> Any:
    try:
        return check()
    except Exception:  # 404 while it is being made again
        return None
