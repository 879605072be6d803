"""Services end to end in namespaces: the service agent (hexlane dev services) on two
nodes, real pods behind /32 routes, a client on the LAN, no iptables rule anywhere.

Topology: a LAN bridge with the client (10.0.0.2) and two nodes (10.0.0.11, .12); each node
has hexlane_host with its router IP, pods as namespaces behind lxc veths with /32 routes
(node1: pod1a 10.42.1.5 and the client pod podc 10.42.1.9; node2: pod2a/pod2b), and routes to
the other node's pod CIDR. The client routes the LoadBalancer IP via node1.

Pins down, in snat mode with Maglev (tableSize 251): NodePort and LoadBalancer connections from
the client land on the backend Maglev's table names for each tuple (read from the pinned maps),
remote backends see node1's address (SNAT) and replies come back; ClusterIP works from a pod
(which keeps its address) and from node1 itself; eTP=Local uses only node1's backend and keeps
the client address; a Service without backends refuses at once; ClientIP affinity pins one
backend; a backend turned terminating keeps its established connection while new ones avoid
it; the agent killed with SIGKILL leaves traffic flowing (old and new connections), and a new
agent takes over without breaking the old connection and with the same ids; healthz and
healthCheckNodePort answer; UDP NodePort works with SNAT. In hybrid mode TCP goes by DSR: the
backend on node2 sees the client's address, the client receives the replies from node2's MAC,
and no reply crosses node1's LAN interface; UDP still goes by SNAT.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from hexlane.datapath.lb import view as lbview
from hexlane.lab.netns import Topology, run
from hexlane.lb.maglev import maglev_slot

pytestmark = [pytest.mark.slow, pytest.mark.root]

SERVER = r"""
import socket, sys, threading
name = sys.argv[1]
def serve(c, peer):
    f = c.makefile("rb")
    for line in f:
        c.sendall(f"{name} {peer[0]}:{peer[1]}\n".encode())
    c.close()
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(64)
    while True:
        c, peer = s.accept()
        threading.Thread(target=serve, args=(c, peer), daemon=True).start()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8081))
    while True:
        data, peer = s.recvfrom(100); s.sendto(f"{name} {peer[0]}:{peer[1]}".encode(), peer)
threading.Thread(target=tcp, daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

# conns: N fresh connections, one request each; hold: one connection, a request per stdin line
CLIENT = r"""
import json, socket, sys
mode, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if mode == "conns":
    out = []
    for _ in range(int(sys.argv[4])):
        try:
            s = socket.create_connection((host, port), timeout=3)
            s.sendall(b"x\n")
            reply = s.makefile().readline().split()
            out.append([s.getsockname()[0], s.getsockname()[1], *reply])
            s.close()
        except ConnectionRefusedError:
            out.append(["refused"])
        except OSError as e:
            out.append(["error", str(e)])
    print(json.dumps(out))
elif mode == "udp":
    out = []
    for _ in range(int(sys.argv[4])):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3)
        s.connect((host, port)); s.send(b"x")
        try:
            data, peer = s.recvfrom(100)
            out.append([s.getsockname()[0], s.getsockname()[1], peer[0], *data.decode().split()])
        except OSError as e:
            out.append(["error", str(e)])
        s.close()
    print(json.dumps(out))
else:
    s = socket.create_connection((host, port), timeout=3)
    print("connected", s.getsockname()[1], flush=True)
    for line in sys.stdin:
        try:
            s.sendall(b"x\n")
            print(s.makefile().readline().strip() or "closed", flush=True)
        except OSError as e:
            print("error", e, flush=True)
"""

LB_IP = "192.168.200.10"
NODE1, NODE2, CLIENT_IP = "10.0.0.11", "10.0.0.12", "10.0.0.2"
PODS = {  # name: (node, address)
    "pod1a": ("node1", "10.42.1.5"),
    "podc": ("node1", "10.42.1.9"),
    "pod2a": ("node2", "10.42.2.5"),
    "pod2b": ("node2", "10.42.2.6"),
}
BACKENDS = ("pod1a", "pod2a", "pod2b")


def _service(name: str, cluster_ip: str, node_port: int, *, ingress: str | None = None,
             **spec: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"type": "LoadBalancer" if ingress else "NodePort", "clusterIP": cluster_ip,
                 "clusterIPs": [cluster_ip],
                 "ports": [{"name": "http", "port": 80, "targetPort": 8080,
                            "nodePort": node_port, "protocol": "TCP"}], **spec},
    }
    if ingress:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": ingress}]}}
    return obj


def _slice(name: str, pods: dict[str, dict[str, Any]]) -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": f"{name}-x", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [PODS[p][1]], "nodeName": PODS[p][0],
                       "conditions": cond} for p, cond in pods.items()],
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
    }


READY = {"ready": True}
DRAINING = {"ready": False, "serving": True, "terminating": True}


def manifests(web: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    web = web or {p: READY for p in BACKENDS}
    return [
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node1"},
         "status": {"addresses": [{"type": "InternalIP", "address": NODE1}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node2"},
         "status": {"addresses": [{"type": "InternalIP", "address": NODE2}]}},
        _service("web", "10.43.0.10", 30080, ingress=LB_IP),
        _slice("web", web),
        _service("local", "10.43.0.11", 30081, externalTrafficPolicy="Local",
                 healthCheckNodePort=32001),
        _slice("local", {p: READY for p in BACKENDS}),
        _service("empty", "10.43.0.12", 30082),
        _service("sticky", "10.43.0.13", 30083, sessionAffinity="ClientIP",
                 sessionAffinityConfig={"clientIP": {"timeoutSeconds": 300}}),
        _slice("sticky", {p: READY for p in BACKENDS}),
        _service("remote", "10.43.0.14", 30084),
        _slice("remote", {"pod2a": READY, "pod2b": READY}),
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "echo", "namespace": "default"},
         "spec": {"type": "NodePort", "clusterIP": "10.43.0.15", "clusterIPs": ["10.43.0.15"],
                  "ports": [{"name": "echo", "port": 53, "targetPort": 8081, "nodePort": 30053,
                             "protocol": "UDP"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "echo-x", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "echo"}},
         "addressType": "IPv4",
         "endpoints": [{"addresses": [PODS[p][1]], "nodeName": PODS[p][0],
                        "conditions": READY} for p in ("pod2a", "pod2b")],
         "ports": [{"name": "echo", "port": 8081, "protocol": "UDP"}]},
    ]


class Lab:
    def __init__(self, topo: Topology, work: Path, bpf_root: Path) -> None:
        self.t = topo
        self.work = work
        self.roots = {n: bpf_root / n for n in ("node1", "node2")}
        self.agents: dict[str, subprocess.Popen[str]] = {}
        self.mode = "snat"

    def write(self, objs: list[dict[str, Any]]) -> None:
        tmp = self.work / "manifests" / ".tmp"
        tmp.write_text(yaml.safe_dump_all(objs))
        tmp.rename(self.work / "manifests" / "all.yaml")

    def start_agent(self, node: str) -> None:
        values = self.work / f"values-{self.mode}.yaml"
        values.write_text(yaml.safe_dump({
            "kubeProxyReplacement": True,
            "kubeProxyReplacementHealthzBindAddr": "0.0.0.0:10256",
            "loadBalancer": {"algorithm": "maglev", "mode": self.mode},
            "routingMode": "native", "ipv4NativeRoutingCIDR": "10.42.0.0/16",
            "maglev": {"tableSize": 251},
        }))
        proc = self.t.start(node, [sys.executable, "-m", "hexlane.cli.main", "dev", "services",
                                   "--bpf-root", str(self.roots[node]), "--node", node,
                                   "--manifests", str(self.work / "manifests"),
                                   "--values", str(values), "--lan", "eth0",
                                   "--service-cidr", "10.43.0.0/16"],
                            stdout=subprocess.PIPE, text=True)
        self.agents[node] = proc
        self.wait_applied(node)

    def wait_applied(self, node: str) -> dict[str, Any]:
        proc = self.agents[node]
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line, f"agent on {node} exited: {proc.poll()}"
        report = json.loads(line)
        assert "error" not in report, report
        return report

    def kill_agent(self, node: str) -> None:
        proc = self.agents.pop(node)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)

    def conns(self, ns: str, host: str, port: int, n: int, mode: str = "conns"
              ) -> list[list[str]]:
        out = run(self.t[ns], [sys.executable, "-c", CLIENT, mode, host, str(port), str(n)],
                  timeout=60).stdout
        return json.loads(out)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def lab(bpffs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    work = tmp_path_factory.mktemp("svc")
    (work / "manifests").mkdir()
    with Topology("hl-svc") as t:
        t.lan()
        for role, addr in (("client", CLIENT_IP), ("node1", NODE1), ("node2", NODE2)):
            t.add(role)
            t.plug("lan", role, f"{addr}/24")
        run(t["client"], ["ip", "route", "add", LB_IP, "via", NODE1])
        for i, (node, peer, peer_cidr) in enumerate(
                (("node1", NODE2, "10.42.2.0/24"), ("node2", NODE1, "10.42.1.0/24")), start=1):
            ns = t[node]
            for key in ("net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0",
                        "net.ipv4.conf.eth0.send_redirects=0"):
                run(ns, ["sysctl", "-qw", key])
            run(ns, ["ip", "link", "add", "hexlane_host", "type", "veth", "peer", "name",
                     "hexlane_net"])
            run(ns, ["ip", "link", "set", "hexlane_host", "up"])
            run(ns, ["ip", "link", "set", "hexlane_net", "up"])
            run(ns, ["ip", "addr", "add", f"10.42.{i}.1/32", "dev", "hexlane_host"])
            run(ns, ["ip", "route", "add", peer_cidr, "via", peer])
        for k, (pod, (node, addr)) in enumerate(PODS.items()):
            router = "10.42.1.1" if node == "node1" else "10.42.2.1"
            t.add(pod)
            lxc = f"lxc{k}{pod[-2:]}"
            run(t[node], ["ip", "link", "add", lxc, "type", "veth", "peer", "name", "eth0",
                          "netns", t[pod]])
            run(t[node], ["ip", "link", "set", lxc, "up"])
            mac = json.loads(run(t[node], ["ip", "-j", "link", "show", lxc]).stdout)[0]["address"]
            run(t[node], ["ip", "route", "add", f"{addr}/32", "dev", lxc])
            pns = t[pod]
            run(pns, ["ip", "link", "set", "lo", "up"])
            run(pns, ["ip", "link", "set", "eth0", "up"])
            run(pns, ["ip", "addr", "add", f"{addr}/32", "dev", "eth0"])
            run(pns, ["ip", "neigh", "replace", router, "lladdr", mac, "dev", "eth0",
                      "nud", "permanent"])
            run(pns, ["ip", "route", "add", f"{router}/32", "dev", "eth0", "scope", "link"])
            run(pns, ["ip", "route", "add", "default", "via", router, "dev", "eth0"])
            if pod in BACKENDS:
                server = t.start(pod, [sys.executable, "-c", SERVER, pod],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        lab = Lab(t, work, bpffs / f"svc-{t['lan'][-6:]}")
        lab.write(manifests())
        try:
            for node in ("node1", "node2"):
                lab.start_agent(node)
            yield lab
        finally:
            t.close()
            for root in lab.roots.values():
                subprocess.run(["rm", "-rf", str(root)], check=False)


def _maglev_expectation(lab: Lab, frontend: str) -> dict[int, str]:
    """slot -> backend address of the EXT-scope table of `frontend` on node1."""
    (table,) = [r for r in lbview.maglev_tables(lab.roots["node1"])
                if r["frontend"] == frontend]
    rows = [r for r in lbview.services(lab.roots["node1"])
            if r["frontend"] == frontend and r["scope"] == "external"]
    assert rows and rows[0]["rev_nat_index"] == table["rev_nat_index"]
    return {i: addr.split(":")[0] for i, addr in enumerate(table["slots"])}


POD_OF = {addr: pod for pod, (_, addr) in PODS.items()}


def test_nodeport_and_loadbalancer_follow_maglev_with_snat(lab: Lab) -> None:
    for host, port, frontend in ((NODE1, 30080, f"{NODE1}:30080/TCP"),
                                 (LB_IP, 80, f"{LB_IP}:80/TCP")):
        slots = _maglev_expectation(lab, frontend)
        results = lab.conns("client", host, port, 30)
        seen = set()
        for local_ip, local_port, pod, peer in results:
            want = slots[maglev_slot(local_ip, int(local_port), port, "TCP", 251)]
            assert pod == POD_OF[want], (local_port, pod, want)
            seen.add(pod)
            # node1's own backend sees the client; the others see node1 (SNAT)
            peer_ip = peer.split(":")[0]
            assert peer_ip == (CLIENT_IP if pod == "pod1a" else NODE1)
        assert len(seen) >= 2


def test_clusterip_from_a_pod_and_from_the_node(lab: Lab) -> None:
    from_pod = lab.conns("podc", "10.43.0.10", 80, 12)
    assert {r[2] for r in from_pod} <= set(BACKENDS) and len({r[2] for r in from_pod}) >= 2
    assert {r[3].split(":")[0] for r in from_pod} == {"10.42.1.9"}  # no SNAT for pods
    from_node = lab.conns("node1", "10.43.0.10", 80, 12)
    assert {r[2] for r in from_node} <= set(BACKENDS) and len({r[2] for r in from_node}) >= 2


def test_external_traffic_policy_local_keeps_the_client_address(lab: Lab) -> None:
    results = lab.conns("client", NODE1, 30081, 8)
    assert {(r[2], r[3].split(":")[0]) for r in results} == {("pod1a", CLIENT_IP)}
    health = run(lab.t["client"], ["curl", "-s", "-i", f"http://{NODE1}:32001/"]).stdout
    assert health.startswith("HTTP/1.1 200")
    assert "X-Load-Balancing-Endpoint-Weight: 1" in health
    assert '"localEndpoints": 1' in health and '"name": "local"' in health
    healthz = run(lab.t["client"], ["curl", "-s", "-w", " %{http_code}",
                                    f"http://{NODE1}:10256/healthz"]).stdout
    body, code = healthz.rsplit(" ", 1)
    assert code == "200" and set(json.loads(body)) == {"lastUpdated", "currentTime"}


def test_no_backends_refuses_and_affinity_sticks(lab: Lab) -> None:
    assert lab.conns("client", NODE1, 30082, 2) == [["refused"], ["refused"]]
    assert len({r[2] for r in lab.conns("client", NODE1, 30083, 10)}) == 1


def _hold(lab: Lab, ns: str, host: str, port: int) -> subprocess.Popen[str]:
    proc = lab.t.start(ns, [sys.executable, "-c", CLIENT, "hold", host, str(port)],
                       stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().startswith("connected")
    return proc


def _ask(proc: subprocess.Popen[str]) -> str:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write("go\n")
    proc.stdin.flush()
    return proc.stdout.readline().strip()


def test_draining_backend_keeps_its_connection_and_restart_keeps_traffic(lab: Lab) -> None:
    held = _hold(lab, "client", NODE1, 30080)
    pod = _ask(held).split()[0]
    assert pod in BACKENDS
    web = {p: (DRAINING if p == pod else READY) for p in BACKENDS}
    lab.write(manifests(web))
    lab.wait_applied("node1")
    lab.wait_applied("node2")
    assert _ask(held).split()[0] == pod  # established connection stays
    assert pod not in {r[2] for r in lab.conns("client", NODE1, 30080, 12)}

    ids_before = {(r["frontend"], r["scope"]): r["rev_nat_index"]
                  for r in lbview.services(lab.roots["node1"])}
    lab.kill_agent("node1")
    assert _ask(held).split()[0] == pod  # agent dead: old connection flows
    assert {r[2] for r in lab.conns("client", NODE1, 30080, 6)} <= set(BACKENDS)  # new ones too
    lab.start_agent("node1")
    assert _ask(held).split()[0] == pod  # the new agent broke nothing
    ids_after = {(r["frontend"], r["scope"]): r["rev_nat_index"]
                 for r in lbview.services(lab.roots["node1"])}
    assert ids_after == ids_before
    lab.write(manifests())
    lab.wait_applied("node1")
    lab.wait_applied("node2")


def test_udp_nodeport_with_snat(lab: Lab) -> None:
    results = lab.conns("client", NODE1, 30053, 6, mode="udp")
    assert all(r[2] == NODE1 for r in results), results  # answered from the frontend
    assert {r[3] for r in results} <= {"pod2a", "pod2b"}
    assert {r[4].split(":")[0] for r in results} == {NODE1}  # SNAT: the pod saw node1


def test_hybrid_dsr_for_tcp_snat_for_udp(lab: Lab) -> None:
    lab.mode = "hybrid"
    for node in ("node1", "node2"):
        lab.kill_agent(node)
        lab.start_agent(node)
    t = lab.t
    node2_mac = json.loads(run(t["node2"], ["ip", "-j", "link", "show", "eth0"]).stdout)[0][
        "address"]
    dump_node1 = t.start("node1", ["tcpdump", "-l", "-n", "-i", "eth0", "-c", "1000",
                                   f"src host {NODE1} and src port 30084 and dst host "
                                   f"{CLIENT_IP}"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    dump_client = t.start("client", ["tcpdump", "-l", "-n", "-e", "-i", "eth0", "-c", "1000",
                                     f"src host {NODE1} and src port 30084"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)  # tcpdump is listening
    results = lab.conns("client", NODE1, 30084, 6)
    time.sleep(0.5)
    for dump in (dump_node1, dump_client):
        dump.send_signal(signal.SIGINT)
    out_node1, _ = dump_node1.communicate(timeout=10)
    out_client, _ = dump_client.communicate(timeout=10)
    assert {r[2] for r in results} <= {"pod2a", "pod2b"} and len(results) == 6
    assert {r[3].split(":")[0] for r in results} == {CLIENT_IP}  # the backend saw the client
    assert out_node1.strip() == ""  # no reply crossed node1's LAN interface
    lines = [ln for ln in out_client.splitlines() if ln.strip()]
    assert lines and all(ln.split()[1] == node2_mac for ln in lines)
    # UDP under hybrid: SNAT, the reply through node1
    udp = lab.conns("client", NODE1, 30053, 4, mode="udp")
    assert {r[4].split(":")[0] for r in udp} == {NODE1} and {r[2] for r in udp} == {NODE1}


def test_service_list_shows_what_is_programmed(lab: Lab,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    from hexlane.cli.main import main

    root = str(lab.roots["node1"])
    assert main(["service", "list", "--bpf-root", root, "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    by = {(r["frontend"], r["scope"]): r for r in rows}
    local = by[(f"{NODE1}:30081/TCP", "external")]
    assert (local["type"], local["algorithm"]) == ("NodePort", "maglev")
    assert {"Local", "TwoScopes"} <= set(local["flags"])
    assert [(b["address"], b["local"]) for b in local["backends"]] == [
        ("10.42.1.5:8080/TCP", True)]
    assert len(by[(f"{NODE1}:30081/TCP", "internal")]["backends"]) == 3
    assert by[("10.43.0.12:80/TCP", "external")]["backends"] == []
    assert by[(f"{LB_IP}:80/TCP", "external")]["type"] == "LoadBalancer"
    assert main(["service", "list", "--bpf-root", root]) == 0
    text = capsys.readouterr().out
    assert "10.43.0.12:80/TCP" in text and "rejects" in text
