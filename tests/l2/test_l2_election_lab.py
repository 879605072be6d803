"""hexlane's own L2 election (the default) in a 3-node lab with seed 000's values and policy.

Judged by arping and TCP connections from the client (the laptop on the LAN), `hexlane l2
list` on the nodes and the lab's own controls. Pins down:
- 30 LoadBalancer Services announced once each, at most 10 per node; each node's metrics
  (:9962) count the IPs it announces, the announcements it took and the ARP requests it
  answered;
- 60 s of steady traffic with no kill: no IP changes owner, no connection fails; a heartbeat
  forged by the client (no key) for a node name is rejected and changes nothing;
- an `externalTrafficPolicy: Local` Service is announced only from the node with its endpoint;
- a node's LAN link set down moves its IPs to the others within a second; up again, one
  announcer per IP;
- with the control-plane host frozen (no API server), a killed node's IPs still move, and
  connections to them succeed within a second.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.audit import by_component, refused, requests_by_user
from helpers.lab import Lab, running_lab
from helpers.wait import wait_for
from hexlane.deploy import rbac

pytestmark = [pytest.mark.slow, pytest.mark.root]

ROOT = Path(__file__).resolve().parents[2]
SEED = ROOT / "examples" / "seed-000"
NODES = ("node1", "node2", "node3")
SERVICES = 30

def deployment(name: str, replicas: int, node: str | None = None) -> str:
    """A Deployment of the lab's workload (HTTP on 80), pinned to `node` if given."""
    pin = f"      nodeSelector: {{kubernetes.io/hostname: {node}}}\n" if node else ""
    return (f"apiVersion: apps/v1\nkind: Deployment\n"
            f"metadata: {{name: {name}, namespace: default}}\n"
            f"spec:\n  replicas: {replicas}\n  selector: {{matchLabels: {{app: {name}}}}}\n"
            f"  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n{pin}"
            f"      containers: [{{name: {name}, image: hexlane/workload, "
            f"ports: [{{containerPort: 80}}]}}]\n")


SERVICE = """
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: default}}
spec:
  type: LoadBalancer
  selector: {{app: {app}}}
  externalTrafficPolicy: {etp}
  ports: [{{port: 80, targetPort: 80}}]
"""

# Opens a TCP connection to each IP given, in turn, for SECONDS; prints failures as JSON.
PROBE = r"""
import json, socket, sys, time
ips, end, fails, n = sys.argv[2:], time.time() + float(sys.argv[1]), [], 0
while time.time() < end:
    for ip in ips:
        t = time.time(); n += 1
        try:
            s = socket.create_connection((ip, 80), timeout=0.3); s.close()
        except OSError as e:
            fails.append([round(t, 3), ip, str(e)])
        time.sleep(0.02)
print(json.dumps({"connections": n, "failures": fails}))
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(f"e{secrets.token_hex(3)}", "--nodes", "3",
                     "--values", str(SEED / "values.yaml"),
                     "--set", "prometheus.enabled=true") as lab:
        lab.kubectl("apply", "-f", str(SEED / "cilium-config.yaml"))
        docs = [deployment("web", 3)] + [SERVICE.format(name=f"s{i:02d}", app="web", etp="Cluster")
                             for i in range(SERVICES)]
        lab.kubectl("apply", "-f", "-", stdin="---\n".join(docs))
        yield lab


def listed(lab: Lab, node: str) -> dict[str, object]:
    out = lab.exec(node, "hexlane", "l2", "list", "-o", "json", check=False)
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def owners(lab: Lab, nodes: tuple[str, ...] = NODES) -> dict[str, list[str]]:
    """IP -> the nodes announcing it."""
    with ThreadPoolExecutor(len(nodes)) as pool:
        views = dict(zip(nodes, pool.map(lambda n: listed(lab, n), nodes), strict=True))
    out: dict[str, list[str]] = {}
    for node, view in views.items():
        for a in view.get("announcements") or []:  # type: ignore[attr-defined]
            out.setdefault(a["ip"], []).append(node)
    return out


def ingress_ips(lab: Lab, prefix: str = "s") -> dict[str, str]:
    items = lab.api("/api/v1/namespaces/default/services")["items"]
    return {s["metadata"]["name"]: ing[0]["ip"] for s in items
            if s["metadata"]["name"].startswith(prefix)
            and (ing := (s.get("status") or {}).get("loadBalancer", {}).get("ingress"))}


def taken(lab: Lab) -> int:
    return sum(int(listed(lab, n).get("taken", 0)) for n in NODES)  # type: ignore[call-overload]


def l2_metrics(lab: Lab, node: str) -> dict[str, float]:
    """The node's hexlane_l2_* samples ("name{labels}": value), read from the client."""
    ip = f"10.0.0.{10 + int(node.removeprefix('node'))}"
    text = lab.exec("client", "curl", "-sS", "-m", "5", f"http://{ip}:9962/metrics").stdout
    return {s.name + (json.dumps(s.labels, sort_keys=True) if s.labels else ""): s.value
            for f in text_string_to_metric_families(text) for s in f.samples
            if s.name.startswith("hexlane_l2_")}


def mac(lab: Lab, node: str) -> str:
    return str(json.loads(lab.exec(node, "ip", "-j", "link", "show", "eth0").stdout)[0]
               ["address"]).lower()


def arping(lab: Lab, ip: str) -> list[str]:
    """The MACs answering one ARP request from the client within 0.3 s (straight in the
    client's namespace: polled, it must be quick)."""
    out = subprocess.run(["ip", "netns", "exec", f"{lab.name}-client", "arping", "-r", "-c",
                          "1", "-w", "0.3", "-i", "eth0", ip], capture_output=True, text=True,
                         timeout=10)
    return [line.strip().lower() for line in out.stdout.splitlines() if line.strip()]


# Asks for ARGV[1] every 20 ms out of eth0 until a reply from one of the MACs ARGV[2:] comes;
# prints "ready" once it listens, then the CLOCK_MONOTONIC time of that reply (the clock is
# the machine's, shared by every network namespace). One process: a timing measured with it
# is the datapath's, not the time to spawn `ip netns exec arping` again and again.
ARP_WATCH = r"""
import fcntl, socket, struct, sys, time
ip, macs = socket.inet_aton(sys.argv[1]), {bytes.fromhex(m.replace(":", "")) for m in sys.argv[2:]}
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
s.bind(("eth0", 0x0806))
me = s.getsockname()[4]
with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:  # SIOCGIFADDR
    src = fcntl.ioctl(u.fileno(), 0x8915, b"eth0".ljust(40, b"\0"))[20:24]
frame = (b"\xff" * 6 + me + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
         + me + src + b"\0" * 6 + ip)
s.settimeout(0.02)
print("ready", flush=True)
end = time.monotonic() + 15
while time.monotonic() < end:
    s.send(frame)
    sent = time.monotonic()
    while time.monotonic() - sent < 0.02:
        try:
            data = s.recv(128)
        except TimeoutError:
            break
        if (len(data) >= 42 and data[12:14] == b"\x08\x06" and data[20:22] == b"\0\x02"
                and data[28:32] == ip and data[22:28] in macs):
            print(time.monotonic(), flush=True)
            sys.exit(0)
sys.exit(1)
"""


class ArpWatch:
    """ARP_WATCH in the client's namespace: started before the fault, read after it."""

    def __init__(self, lab: Lab, ip: str, macs: list[str]) -> None:
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", f"{lab.name}-client", sys.executable, "-c", ARP_WATCH, ip,
             *macs], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def answered_at(self) -> float:
        """When one of the MACs first answered (fails after 15 s without)."""
        out, _ = self.proc.communicate(timeout=20)
        assert self.proc.returncode == 0, "no answer from the expected nodes within 15 s"
        return float(out.strip())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def forge(lab: Lab, name: str) -> None:
    """A heartbeat for `name` signed with a key the client made up, broadcast on the LAN."""
    code = ("import secrets, socket, sys\n"
            "from hexlane.l2.heartbeat import Heartbeat, encode\n"
            "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)\n"
            "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'eth0')\n"
            "for seq in range(1, 30):\n"
            "    hb = Heartbeat(sys.argv[1], 2**62, seq, '10.0.0.2')\n"
            "    s.sendto(encode(hb, secrets.token_bytes(32)), ('255.255.255.255', 4251))\n")
    subprocess.run(["ip", "netns", "exec", f"{lab.name}-client", sys.executable, "-c", code,
                    name], check=True, timeout=30)


def test_thirty_services_spread_and_stay_put_under_steady_traffic(lab: Lab) -> None:
    def all_ips() -> dict[str, str] | None:
        found = ingress_ips(lab)
        return found if len(found) == SERVICES else None

    ips = wait_for("30 ingress IPs", all_ips, timeout=60)

    def announced_once() -> dict[str, list[str]] | None:
        seen = owners(lab)
        ok = sorted(seen) == sorted(ips.values()) and all(len(n) == 1 for n in seen.values())
        return seen if ok else None

    first = wait_for("every IP announced exactly once", announced_once, timeout=30)
    per_node = {n: sum(1 for v in first.values() if v == [n]) for n in NODES}
    assert max(per_node.values()) <= SERVICES // len(NODES), per_node
    before = taken(lab)
    probe = subprocess.Popen(["ip", "netns", "exec", f"{lab.name}-client", sys.executable,
                              "-c", PROBE, "60", *sorted(ips.values())[:6]],
                             stdout=subprocess.PIPE, text=True)
    time.sleep(5)
    forge(lab, "node1")
    forge(lab, "node9")
    out = json.loads(probe.communicate(timeout=90)[0])
    assert out["connections"] > 500 and out["failures"] == [], out["failures"][:5]
    assert owners(lab) == first  # no IP changed hands
    assert taken(lab) == before  # no takeover at all
    rejected = listed(lab, "node2")["heartbeat"]["rejected"]  # type: ignore[index]
    assert rejected["mac"] >= 50, rejected
    metrics = {n: l2_metrics(lab, n) for n in NODES}
    assert {n: m["hexlane_l2_announced_ips"] for n, m in metrics.items()} == per_node
    assert sum(m['hexlane_l2_election_changes_total{"change": "taken"}']
               for m in metrics.values()) == before
    # the client ARPed for each of the six IPs it connected to
    assert sum(m["hexlane_l2_arp_replies_total"] for m in metrics.values()) >= 6


def test_an_etp_local_service_is_announced_only_where_its_endpoint_is(lab: Lab) -> None:
    lab.kubectl("apply", "-f", "-",
                stdin=deployment("solo", 1, "node3") + "---\n"
                + SERVICE.format(name="local", app="solo", etp="Local"))
    ip = wait_for("the Local Service's IP", lambda: ingress_ips(lab, "local").get("local"),
                  timeout=60)
    assert wait_for("node3 alone to announce it", lambda: owners(lab).get(ip) == ["node3"],
                    timeout=30)
    assert arping(lab, ip) == [mac(lab, "node3")]


def test_a_node_whose_link_goes_down_hands_its_ips_over(lab: Lab) -> None:
    o = owners(lab)
    victim = "node1"
    mine = sorted(ip for ip, nodes in o.items() if nodes == [victim])
    assert mine
    port = lab_port(lab, victim)
    others = [mac(lab, n) for n in ("node2", "node3")]
    watch = ArpWatch(lab, mine[0], others)
    try:
        start = time.monotonic()
        subprocess.run(["ip", "-n", f"{lab.name}-lan", "link", "set", port, "down"],
                       check=True)
        took = watch.answered_at() - start
        print(f"link down: another node answered ARP after {took * 1000:.0f} ms")
        assert took < 2.0
        assert wait_for("another node to answer arping", lambda: arping(lab, mine[0]) in
                        [[m] for m in others], timeout=10, interval=0.05)
        assert wait_for("all its IPs to move", lambda: all(
            (n := owners(lab, ("node2", "node3")).get(ip)) and len(n) == 1 for ip in mine),
            timeout=10)
    finally:
        watch.close()
        subprocess.run(["ip", "-n", f"{lab.name}-lan", "link", "set", port, "up"], check=True)
    assert wait_for("one announcer per IP again", lambda: all(
        len(n) == 1 for n in owners(lab).values()), timeout=10)


def test_with_the_control_plane_frozen_a_killed_nodes_ips_still_move(lab: Lab) -> None:
    o = owners(lab)
    victim = "node2"
    ip = next(ip for ip, nodes in sorted(o.items()) if nodes == [victim])
    survivors = [mac(lab, n) for n in ("node1", "node3")]
    lab.run("freeze", "cp")
    watch = ArpWatch(lab, ip, survivors)
    try:
        lab.run("kill", victim)
        killed = time.monotonic()
        took = watch.answered_at() - killed
        print(f"node killed: a survivor answered ARP after {took * 1000:.0f} ms")
        assert took < 2.0
        assert wait_for("a survivor to answer arping", lambda: arping(lab, ip) in
                        [[m] for m in survivors], timeout=5, interval=0.05)
        probe = lab.exec("client", sys.executable, "-c", PROBE, "2", ip)
        assert json.loads(probe.stdout)["failures"] == []
    finally:
        watch.close()
        lab.run("thaw", "cp")
    lab.run("revive", victim)


def lab_port(lab: Lab, node: str) -> str:
    """The LAN switch's port of `node` (set down: the node's link loses its carrier)."""
    from hexlane.lab.manager import LabState
    state = LabState.load(lab.name)
    assert state is not None
    return state.plan.host(node).port


def test_every_api_request_was_granted_by_the_rendered_roles(lab: Lab) -> None:
    """The L2 requests (the heartbeat key's Secret) are granted by the roles
    `hexlane manifests` renders for this lab's values, as tests/deploy/test_rbac_audit.py
    holds the shared lab's."""
    requests = by_component(requests_by_user(lab.dir))
    assert ("get", "secrets") in {(r.verb, r.resource) for r in requests[rbac.AGENT]}
    assert ("create", "secrets") in {(r.verb, r.resource) for r in requests[rbac.OPERATOR]}
    assert refused(lab.dir, requests) == {account: [] for account in rbac.ACCOUNTS}
