"""L2 announcements with Cilium's election in a lab, as a homelab user meets them (seed 000's
values and policy).

One 2-node lab with seed 000's values (kube-proxy replacement, l2announcements, LB-IPAM),
`l2announcements.election: lease` and short leases (3s/1s/200ms, Cilium's suggested fast
timings). Pins down, judged by arping, curl and tcpdump in the client (the laptop on the
LAN) and kubectl:
- the LoadBalancer IP from seed 000's pool answers ARP with the MAC of the node holding the
  Service's Lease `cilium-l2announce-default-echo`, and curl reaches the Service with no
  route added by hand; `hexlane l2 list` on that node shows the IP, the policy, replies;
- the announcing node killed (`lab kill`): the other node takes the Lease over, tcpdump sees
  its gratuitous ARPs repeated, and curl works again;
- an agent stopped with SIGSTOP is no longer answered for after the lease duration: only the
  other node's MAC answers; SIGCONT and it stays quiet (it lost the Lease);
- a policy with a bad interface regex gets `io.cilium/bad-interface-regex` (True, reason
  error), and False once fixed; seeds 001's and 002's policies (`^eth[0-9]+`,
  `kubernetes.io/os: linux`) select the lab's eth0 and nodes alongside seed 000's.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.audit import by_component, refused, requests_by_user
from helpers.lab import Lab, running_lab
from helpers.wait import wait_for
from hexlane.deploy import rbac

pytestmark = [pytest.mark.slow, pytest.mark.root]

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "examples"
LEASE = "cilium-l2announce-default-echo"
DEMO = ROOT / "src" / "hexlane" / "lab" / "demo.yaml"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with running_lab(f"l{secrets.token_hex(3)}", "--node-monitor-grace-period", "6",
                     "--values", str(SEEDS / "seed-000" / "values.yaml"),
                     "--set", "l2announcements.election=lease",
                     "--set", "l2announcements.leaseDuration=3s",
                     "--set", "l2announcements.leaseRenewDeadline=1s",
                     "--set", "l2announcements.leaseRetryPeriod=200ms") as lab:
        lab.kubectl("apply", "-f", str(SEEDS / "seed-000" / "cilium-config.yaml"))
        lab.kubectl("apply", "-f", str(DEMO))
        yield lab


def lb_ip(lab: Lab) -> str:
    def ip() -> str:
        svc = lab.api("/api/v1/namespaces/default/services/echo")
        ingress = (svc.get("status") or {}).get("loadBalancer", {}).get("ingress") or []
        return str(ingress[0]["ip"]) if ingress else ""
    return wait_for("an IP from seed 000's pool", ip, timeout=60)


def holder(lab: Lab) -> str:
    lease = lab.api(f"/apis/coordination.k8s.io/v1/namespaces/kube-system/leases/{LEASE}")
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def mac(lab: Lab, node: str) -> str:
    link = json.loads(lab.exec(node, "ip", "-j", "link", "show", "eth0").stdout)[0]
    return str(link["address"]).lower()


def arping(lab: Lab, ip: str) -> list[str]:
    """The MACs answering one ARP request from the client within 0.5 s."""
    out = lab.exec("client", "arping", "-r", "-c", "1", "-w", "0.5", "-i", "eth0", ip,
                   check=False)
    return [line.strip().lower() for line in out.stdout.splitlines() if line.strip()]


def curl(lab: Lab, ip: str) -> dict[str, Any] | None:
    out = lab.exec("client", "curl", "-s", "--max-time", "1", f"http://{ip}/whoami",
                   check=False)
    try:
        return dict(json.loads(out.stdout)) if out.returncode == 0 else None
    except ValueError:
        return None


def agent_pid(lab: Lab, node: str) -> int:
    state = json.loads((lab.dir / "state.json").read_text())
    return next(int(p["pid"]) for p in state["procs"]
                if p["host"] == node and p["name"].endswith("agent"))


def test_the_lb_ip_answers_arp_from_the_lease_holder_and_serves(lab: Lab) -> None:
    ip = lb_ip(lab)
    node = wait_for("the Lease to be held", lambda: holder(lab), timeout=30)
    assert wait_for("the holder's MAC to answer", lambda: arping(lab, ip) == [mac(lab, node)],
                    timeout=15)
    assert f"{ip} " not in lab.exec("client", "ip", "route").stdout  # no route by hand
    assert wait_for("curl to the LoadBalancer IP", lambda: curl(lab, ip), timeout=30)
    listed = json.loads(lab.exec(node, "hexlane", "l2", "list", "-o", "json").stdout)
    rows = [a for a in listed["announcements"] if a["ip"] == ip]
    assert rows and rows[0]["services"] == ["default/echo"] and rows[0]["device"] == "eth0"
    assert rows[0]["policies"] == ["default-l2-announcement-policy"] and rows[0]["replies"] >= 1
    other = "node2" if node == "node1" else "node1"
    others = json.loads(lab.exec(other, "hexlane", "l2", "list", "-o", "json").stdout)
    # demo.yaml now has a second Service (echo-any): only echo's IP and Lease are judged here
    assert [a for a in others["announcements"] if a["ip"] == ip] == []
    assert [c["holder"] for c in others["competing"] if c["service"] == "default/echo"] == [node]
    assert "L2 announcements:     Enabled" in lab.exec(node, "hexlane", "status").stdout
    # The guides' `kubectl get leases -n kube-system` (docs/seeds.md): the Lease and holder.
    leases = lab.kubectl("get", "leases", "-n", "kube-system").stdout
    assert re.search(rf"^{LEASE} +{node} ", leases, re.M), leases


def test_a_stopped_agent_is_not_answered_for_after_the_lease(lab: Lab) -> None:
    ip = lb_ip(lab)
    node = wait_for("the Lease to be held", lambda: holder(lab), timeout=30)
    other = "node2" if node == "node1" else "node1"
    pid = agent_pid(lab, node)
    os.kill(pid, signal.SIGSTOP)
    try:
        stopped = time.monotonic()
        assert wait_for("only the other node to answer",
                        lambda: arping(lab, ip) == [mac(lab, other)], timeout=15)
        assert time.monotonic() - stopped > 2.0  # not before the lease could expire
        assert holder(lab) == other
    finally:
        os.kill(pid, signal.SIGCONT)
    time.sleep(1.5)  # it notices it lost the Lease, and stays quiet
    assert arping(lab, ip) == [mac(lab, other)]
    assert wait_for("curl", lambda: curl(lab, ip), timeout=20)


def test_bad_and_seed_policies(lab: Lab) -> None:
    ip = lb_ip(lab)
    policy = {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumL2AnnouncementPolicy",
              "metadata": {"name": "bad-regex"},
              "spec": {"interfaces": ["eth[0-9"], "loadBalancerIPs": True}}
    lab.kubectl("apply", "-f", "-", stdin=json.dumps(policy))

    def condition() -> dict[str, Any] | None:
        obj = lab.api("/apis/cilium.io/v2alpha1/ciliuml2announcementpolicies/bad-regex")
        return next((c for c in (obj.get("status") or {}).get("conditions") or []
                     if c["type"] == "io.cilium/bad-interface-regex"), None)

    cond = wait_for("the bad-interface-regex condition", condition, timeout=20)
    assert cond["status"] == "True" and cond["reason"] == "error" and "eth[0-9" in cond["message"]
    policy["spec"]["interfaces"] = ["^eth[0-9]+"]
    lab.kubectl("apply", "-f", "-", stdin=json.dumps(policy))
    assert wait_for("the condition to turn False",
                    lambda: (c := condition()) is not None and c["status"] == "False",
                    timeout=20)
    lab.kubectl("delete", "ciliuml2announcementpolicy", "bad-regex")
    # Seeds 001 and 002's policies select the lab's eth0 and Linux nodes too.
    for path in ("seed-001/cilium-l2-announcement-policy.yaml", "seed-002/cilium-l2.yaml"):
        lab.kubectl("apply", "-f", str(SEEDS / path))
    node = wait_for("the Lease to be held", lambda: holder(lab), timeout=30)

    def policies() -> list[str]:
        listed = json.loads(lab.exec(node, "hexlane", "l2", "list", "-o", "json").stdout)
        rows = [a for a in listed["announcements"] if a["ip"] == ip]
        return list(rows[0]["policies"]) if rows else []

    # seed 001's policy is also named default-l2-announcement-policy: it replaces seed 000's
    assert wait_for("both policies on the announcement",
                    lambda: policies() == ["default-l2-announcement-policy", "policy"],
                    timeout=20)


def test_the_announcing_node_dies_and_the_other_takes_over(lab: Lab) -> None:
    ip = lb_ip(lab)
    node = wait_for("the Lease to be held", lambda: holder(lab), timeout=30)
    other = "node2" if node == "node1" else "node1"
    other_mac = mac(lab, other)
    dump = subprocess.Popen(["ip", "netns", "exec", f"{lab.name}-client", "tcpdump", "-l",
                             "-n", "-e", "-i", "eth0", "arp"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True)
    try:
        time.sleep(1.0)  # tcpdump listening
        lab.run("kill", node)
        assert wait_for("the other node to hold the Lease", lambda: holder(lab) == other,
                        timeout=20)
        assert wait_for("the other node's MAC to answer",
                        lambda: arping(lab, ip) == [other_mac], timeout=10)
        time.sleep(4.5)  # the GARPs: five, 1.1 s apart
    finally:
        dump.terminate()
        lines = dump.communicate(timeout=10)[0].splitlines()
    garps = [line for line in lines
             if f"Reply {ip} is-at {other_mac}" in line and "ff:ff:ff:ff:ff:ff" in line]
    assert len(garps) >= 3, lines
    assert wait_for("curl again after the failover", lambda: curl(lab, ip), timeout=40)
    lab.run("revive", node)


def test_every_api_request_was_granted_by_the_rendered_roles(lab: Lab) -> None:
    """The L2 requests (one Lease per announced Service) are granted by the roles
    `hexlane manifests` renders for this lab's values, as tests/deploy/test_rbac_audit.py
    holds the shared lab's."""
    requests = by_component(requests_by_user(lab.dir))
    used = {(r.verb, r.resource) for r in requests[rbac.AGENT]}
    assert {("create", "leases"), ("update", "leases"), ("get", "leases")} <= used
    assert refused(lab.dir, requests) == {account: [] for account in rbac.ACCOUNTS}
