"""Kubernetes NetworkPolicy enforced in the lab: a truth table, as Kubernetes' own e2e tests.

Namespaces x, y, z (unique names, labelled ns=x/y/z) with pods a, b, c each (a and c on
node1, b on node2: same-node and cross-node pairs, through the default tunnel), every pod
serving TCP and UDP on ports 80 and 81 (named serve-80-tcp, ...). Under each policy below,
every source pod probes every pod on every port and protocol at once (0.5 s timeouts, in
parallel); the observed table must equal the expected one, which
`hexlane.policy.reference.allowed` computes from the NetworkPolicy text alone (no identities,
no maps), with connections to oneself allowed (loopback, as the e2e tests' AllowLoopback).
A cell that differs is probed once more with a longer timeout before it counts, so a lost
packet is not taken for a policy. Each policy is waited for on both nodes (their agents report
the policies' resourceVersions they enforce) before probing.

`hexlane policy trace` (the agent's trace) must agree with every observed pod-to-pod cell.

Policies: deny all ingress, deny all egress, allow from a namespace, from a pod, from a pod and
a namespace together, an ipBlock with except and a CIDR (egress to addresses outside the
cluster: the client host 10.0.0.2 and the control plane 10.0.0.10), named ports, endPort; a
Service's ClusterIP (policy sees the backend); changing a policy changes the table; relabelling
a pod changes what it may reach.

Cilium's policies (issue 20): deny over allow, clusterwide, ICMP, entities, CIDR sets; Hubble's
policy verdicts name the deciding policy; the lab upgraded to policyEnforcementMode always and
then policyAuditMode, and set back.
"""

from __future__ import annotations

import concurrent.futures
import json
import secrets
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from helpers.lab import Lab
from helpers.wait import wait_for
from hexlane.cli.cmd_identity import fetch_agent
from hexlane.lab.manager import exec_argv
from hexlane.model.netpol import NetworkPolicy
from hexlane.model.node import Pod
from hexlane.policy.reference import allowed
from hexlane.policy.resolve import PodInfo

pytestmark = [pytest.mark.slow, pytest.mark.root]

TAG = secrets.token_hex(2)
NAMESPACES = {"x": f"x-{TAG}", "y": f"y-{TAG}", "z": f"z-{TAG}"}
PODS = {"a": "node1", "b": "node2", "c": "node1"}
PORTS = [(80, "TCP"), (81, "TCP"), (80, "UDP"), (81, "UDP")]
CLIENT, CONTROL_PLANE, NODE1_IP = "10.0.0.2", "10.0.0.10", "10.0.0.11"
OUTSIDE = [(CLIENT, 80, "TCP"), (CONTROL_PLANE, 6443, "TCP")]
PROBE = Path(__file__).parent.parent / "helpers" / "netprobe.py"
X = NAMESPACES["x"]


def manifests() -> str:
    docs: list[dict[str, Any]] = []
    for short, ns in NAMESPACES.items():
        docs.append({"apiVersion": "v1", "kind": "Namespace",
                     "metadata": {"name": ns, "labels": {"ns": short}}})
        for pod, node in PODS.items():
            docs.append({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"pod": pod}},
                "spec": {"nodeName": node, "containers": [{
                    "name": "serve", "image": "hexlane/workload",
                    "ports": [{"name": f"serve-{p}-{proto.lower()}", "containerPort": p,
                               "protocol": proto} for p, proto in PORTS]}]}})
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "svc-a", "namespace": X},
                 "spec": {"selector": {"pod": "a"}, "ports": [{"port": 8080,
                                                               "targetPort": 80}]}})
    # the client's way in with its own address kept (to x/a on node1): entity world
    docs.append({"apiVersion": "v1", "kind": "Service",
                 "metadata": {"name": "svc-a-local", "namespace": X},
                 "spec": {"type": "NodePort", "externalTrafficPolicy": "Local",
                          "selector": {"pod": "a"}, "ports": [{"port": 80}]}})
    return as_list(docs)


def as_list(docs: list[dict[str, Any]]) -> str:
    """kubectl's input as JSON (YAML 1.1 would read the label value y as a boolean)."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": docs})


@dataclass
class World:
    pods: dict[tuple[str, str], PodInfo]
    namespaces: dict[str, dict[str, str]]
    netns: dict[Any, list[str]]  # the argv prefix that runs in a pod, "client", "node1", ...
    service_ip: str
    node_port: int
    lab: str


def node_policy(lab: Lab, node: str) -> dict[str, Any]:
    """The node agent's policy document (`GET /v1/identities` on its socket, read from here:
    the socket file is on the machine's file system)."""
    _, env = exec_argv(lab.name, node, [])
    return dict(fetch_agent(env["HEXLANE_STATE_DIR"], "/v1/identities")["policy"])


def ours(entries: list[str]) -> set[str]:
    """The applied policies that are this module's: in its namespaces, or clusterwide with
    its tag in the name."""
    out = set()
    for e in entries:
        bare = e.split(":", 1)[1] if e.startswith(("cnp:", "ccnp:")) else e
        if bare.split("/", 1)[0] in NAMESPACES.values() or (e.startswith("ccnp:") and TAG in e):
            out.add(e)
    return out


@pytest.fixture(scope="module")
def world(lab: Lab) -> Iterator[World]:
    lab.kubectl("apply", "-f", "-", stdin=manifests())
    try:
        def running() -> list[dict[str, Any]] | None:
            items = []
            for ns in NAMESPACES.values():
                items += json.loads(lab.kubectl("get", "pods", "-n", ns, "-o", "json")
                                    .stdout)["items"]
            ok = len(items) == 9 and all(p["status"].get("phase") == "Running"
                                         and p["status"].get("podIP") for p in items)
            return items if ok else None
        items = wait_for("the nine pods running", running, timeout=90, interval=0.5)
        keys = {f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in items}

        def known_everywhere() -> bool:
            return all(keys <= set(node_policy(lab, n)["pods"]) for n in ("node1", "node2"))
        wait_for("every pod's identity in both nodes' ipcache", known_everywhere,
                 timeout=60, interval=0.5)
        pods = {}
        netns = {}
        for obj in items:
            info = PodInfo.from_pod(Pod.parse(obj))
            pods[info.key] = info
            prefix, _env = exec_argv(lab.name, f"pod/{info.namespace}/{info.name}", [])
            netns[info.key] = prefix
        namespaces = {}
        for ns in NAMESPACES.values():
            obj = json.loads(lab.kubectl("get", "namespace", ns, "-o", "json").stdout)
            namespaces[ns] = dict(obj["metadata"].get("labels") or {})
        for host in ("client", "node1", "node2"):
            netns[host] = exec_argv(lab.name, host, [])[0]
        svc = json.loads(lab.kubectl("get", "service", "svc-a", "-n", X, "-o", "json").stdout)
        local = json.loads(lab.kubectl("get", "service", "svc-a-local", "-n", X, "-o",
                                       "json").stdout)
        yield World(pods, namespaces, netns, svc["spec"]["clusterIP"],
                    int(local["spec"]["ports"][0]["nodePort"]), lab.name)
    finally:
        for ns in NAMESPACES.values():
            lab.kubectl("delete", "namespace", ns, "--wait=false", check=False)


# --- probing ------------------------------------------------------------------------------------

Cell = tuple[str, str, int, str]  # source "ns/pod", target "ns/pod" or an address, port, proto


def _run_probe(prefix: list[str], targets: list[tuple[str, int, str]],
               timeout: float) -> list[bool]:
    spec = json.dumps({"timeout": timeout, "targets": targets})
    out = subprocess.run([*prefix, sys.executable, str(PROBE), spec], capture_output=True,
                         text=True, timeout=30, check=True)
    return list(json.loads(out.stdout))


def probe(world: World, cells: list[Cell], timeout: float) -> dict[Cell, bool]:
    """Every cell at once: one prober per source pod, all in parallel."""
    by_source: dict[str, list[Cell]] = {}
    for cell in cells:
        by_source.setdefault(cell[0], []).append(cell)

    def address(cell: Cell) -> str:
        if cell[1] == "svc-a":
            return world.service_ip
        if cell[1] == "nodeport-a":
            return NODE1_IP
        if "/" in cell[1]:
            return world.pods[tuple(cell[1].split("/"))].ip  # type: ignore[index]
        return cell[1]

    def one(source: str) -> dict[Cell, bool]:
        mine = by_source[source]
        key = tuple(source.split("/")) if "/" in source else source
        got = _run_probe(world.netns[key], [(address(c), c[2], c[3]) for c in mine], timeout)
        return dict(zip(mine, got, strict=True))

    out: dict[Cell, bool] = {}
    with concurrent.futures.ThreadPoolExecutor(len(by_source)) as pool:
        for part in pool.map(one, by_source):
            out.update(part)
    return out


def pod_cells(world: World) -> list[Cell]:
    names = [f"{ns}/{p}" for ns, p in sorted(world.pods)]
    return [(s, d, port, proto) for s in names for d in names for port, proto in PORTS]


def expected(world: World, cells: list[Cell], policies: list[NetworkPolicy]) -> dict[Cell, bool]:
    out = {}
    for cell in cells:
        src, dst, port, proto = cell
        skey: Any = tuple(src.split("/"))
        if dst == "svc-a":
            dkey: Any = (X, "a")
            port = 80  # the Service's targetPort: policy sees the backend
        else:
            dkey = tuple(dst.split("/")) if "/" in dst else dst
        if skey == dkey:
            out[cell] = True  # loopback (a pod reaching itself, also through its Service)
            continue
        out[cell] = allowed(skey, dkey, port, proto, policies, world.pods, world.namespaces)
    return out


def render(cells: list[Cell], table: dict[Cell, bool], want: dict[Cell, bool]) -> str:
    lines = [f"{'source':<14} {'target':<18} port/proto  want  got"]
    for c in cells:
        if table[c] != want[c]:
            short = [c[0].split("-")[0] + c[0][-2:], c[1]]
            lines.append(f"{short[0]:<14} {short[1]:<18} {c[2]}/{c[3]:<8} {want[c]!s:<5} "
                         f"{table[c]}")
    return "\n".join(lines)


def check_table(world: World, cells: list[Cell], policies: list[NetworkPolicy]) -> None:
    want = expected(world, cells, policies)
    table = probe(world, cells, 0.5)
    wrong = [c for c in cells if table[c] != want[c]]
    if wrong:  # once more, slower: a lost packet is not a policy
        table.update(probe(world, wrong, 1.5))
    assert all(table[c] == want[c] for c in cells), render(cells, table, want)
    check_traces(world, table)


def check_traces(world: World, table: dict[Cell, bool]) -> None:
    """`hexlane policy trace` (the agent's /v1/policy/trace) agrees with every observed
    pod-to-pod cell (a pod to itself is loopback: no policy)."""
    state_dir = exec_argv(world.lab, "node1", [])[1]["HEXLANE_STATE_DIR"]

    def one(item: tuple[Cell, bool]) -> str | None:
        (src, dst, port, proto), seen = item
        if dst == "svc-a":
            dst, port = f"{X}/a", 80
        if "/" not in src or "/" not in dst or src == dst:
            return None
        query = urllib.parse.urlencode({"src": src, "dst": dst, "dport": f"{port}/{proto}"})
        doc = fetch_agent(state_dir, f"/v1/policy/trace?{query}")
        if (doc["verdict"] == "ALLOWED") == seen:
            return None
        return (f"{src} -> {dst} {port}/{proto}: seen {seen}, traced {doc['verdict']} "
                f"({doc['egress']['reason']}; {doc['ingress']['reason']})")
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        disagree = [d for d in pool.map(one, table.items()) if d]
    assert not disagree, "\n".join(disagree)


# --- applying policies --------------------------------------------------------------------------

def apply(lab: Lab, docs: list[dict[str, Any]]) -> list[NetworkPolicy]:
    """Exactly these policies in our namespaces, enforced on both nodes when it returns."""
    lab.kubectl("delete", "networkpolicy,ciliumnetworkpolicy", "--all", "-n", X)
    lab.kubectl("delete", "ciliumclusterwidenetworkpolicy", "-l", f"test={TAG}")
    want: set[str] = set()
    parsed = []
    if docs:
        out = lab.kubectl("apply", "-o", "json", "-f", "-", stdin=as_list(docs))
        result = json.loads(out.stdout)
        for obj in result.get("items", [result]):
            meta = obj["metadata"]
            kind = {"CiliumNetworkPolicy": "cnp:",
                    "CiliumClusterwideNetworkPolicy": "ccnp:"}.get(obj["kind"], "")
            where = f"{meta['namespace']}/{meta['name']}" if "namespace" in meta \
                else meta["name"]
            want.add(f"{kind}{where}@{meta['resourceVersion']}")
            if obj["kind"] == "NetworkPolicy":
                parsed.append(NetworkPolicy.parse(obj))
    wait_for(f"both nodes enforcing {sorted(want)}",
             lambda: all(ours(node_policy(lab, n)["applied"]) == want
                         for n in ("node1", "node2")), timeout=30, interval=0.2)
    return parsed


def netpol(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": name, "namespace": X}, "spec": spec}


def a_ingress(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return netpol(name, {"podSelector": {"matchLabels": {"pod": "a"}},
                         "policyTypes": ["Ingress"], "ingress": rules})


def a_egress(name: str, rules: list[dict[str, Any]]) -> dict[str, Any]:
    return netpol(name, {"podSelector": {"matchLabels": {"pod": "a"}},
                         "policyTypes": ["Egress"], "egress": rules})


CASES: dict[str, list[dict[str, Any]]] = {
    "no policy": [],
    "deny all ingress": [netpol("deny-ingress", {"podSelector": {},
                                                 "policyTypes": ["Ingress"]})],
    "deny all egress": [netpol("deny-egress", {"podSelector": {},
                                               "policyTypes": ["Egress"]})],
    "allow from a namespace": [a_ingress("from-y", [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}}}]}])],
    "allow from a pod": [a_ingress("from-b", [
        {"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])],
    "allow from a pod and a namespace together": [a_ingress("from-y-b", [
        {"from": [{"namespaceSelector": {"matchLabels": {"ns": "y"}},
                   "podSelector": {"matchLabels": {"pod": "b"}}}]}])],
    "named ports": [a_ingress("named", [
        {"ports": [{"port": "serve-81-tcp"}, {"port": "serve-80-udp", "protocol": "UDP"}]}])],
    "endPort": [a_ingress("range", [
        {"ports": [{"port": 80, "endPort": 81, "protocol": "UDP"}]}])],
    "a namespace by its name label": [a_ingress("by-name", [
        {"from": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": NAMESPACES["z"]}}}]}])],
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_truth_table_holds(lab: Lab, world: World, case: str) -> None:
    policies = apply(lab, CASES[case])
    check_table(world, pod_cells(world), policies)


EGRESS_CASES = {
    "ipBlock with except": [a_egress("lan-but-client", [
        {"to": [{"ipBlock": {"cidr": "10.0.0.0/24", "except": [f"{CLIENT}/32"]}}]}])],
    "egress to a CIDR": [a_egress("cp-only", [
        {"to": [{"ipBlock": {"cidr": f"{CONTROL_PLANE}/32"}}],
         "ports": [{"port": 6443}]}])],
}


@pytest.mark.parametrize("case", list(EGRESS_CASES))
def test_egress_to_addresses_outside_the_cluster(lab: Lab, world: World, case: str) -> None:
    policies = apply(lab, EGRESS_CASES[case])
    sources = [f"{X}/a", f"{X}/b"]
    cells = [(s, d, port, proto) for s in sources for d in (CLIENT, CONTROL_PLANE)
             for _, port, proto in OUTSIDE if (d, port, proto) in OUTSIDE]
    cells += [c for c in pod_cells(world) if c[0] in sources]
    check_table(world, cells, policies)
    want = expected(world, cells, policies)
    # what the case is about, spelled out: x/a reaches the control plane, not the client
    assert want[(f"{X}/a", CONTROL_PLANE, 6443, "TCP")]
    assert not want[(f"{X}/a", CLIENT, 80, "TCP")]
    assert want[(f"{X}/b", CLIENT, 80, "TCP")]


def test_a_service_is_decided_on_its_backend(lab: Lab, world: World) -> None:
    policies = apply(lab, CASES["allow from a namespace"])
    cells = [(f"{ns}/{p}", "svc-a", 8080, "TCP") for ns, p in sorted(world.pods)]
    check_table(world, cells, policies)
    want = expected(world, cells, policies)
    assert want[(f"{NAMESPACES['y']}/c", "svc-a", 8080, "TCP")]
    assert not want[(f"{NAMESPACES['z']}/c", "svc-a", 8080, "TCP")]


def test_changing_a_policy_and_relabelling_a_pod_change_the_table(lab: Lab,
                                                                   world: World) -> None:
    from_b = a_ingress("from-pod", [{"from": [{"podSelector": {"matchLabels": {"pod": "b"}}}]}])
    policies = apply(lab, [from_b])
    cells = [(f"{X}/{p}", f"{X}/a", 80, "TCP") for p in ("b", "c")]
    check_table(world, cells, policies)
    assert expected(world, cells, policies) == {cells[0]: True, cells[1]: False}
    # the same policy changed: from c instead of b
    from_c = a_ingress("from-pod", [{"from": [{"podSelector": {"matchLabels": {"pod": "c"}}}]}])
    policies = apply(lab, [from_c])
    check_table(world, cells, policies)
    assert expected(world, cells, policies) == {cells[0]: False, cells[1]: True}
    # x/b relabelled pod=c: now it is one of those the policy allows
    old = node_policy(lab, "node1")["pods"][f"{X}/b"]
    lab.kubectl("label", "pod", "b", "-n", X, "pod=c", "--overwrite")
    try:
        wait_for("x/b's new identity on both nodes",
                 lambda: all(node_policy(lab, n)["pods"].get(f"{X}/b") not in (None, old)
                             for n in ("node1", "node2")), timeout=30, interval=0.2)
        time.sleep(0.2)
        relabelled = dict(world.pods)
        b = world.pods[(X, "b")]
        relabelled[(X, "b")] = PodInfo(b.namespace, b.name, {"pod": "c"}, b.ip, b.ports)
        table = probe(world, cells, 1.0)
        assert table == {cells[0]: True, cells[1]: True}, table
        assert all(allowed((X, p), (X, "a"), 80, "TCP", policies, relabelled,
                           world.namespaces) for p in ("b", "c"))
    finally:
        lab.kubectl("label", "pod", "b", "-n", X, "pod=b", "--overwrite")
    apply(lab, [])


def test_hubble_shows_the_policy_drop_with_both_identities(lab: Lab, world: World) -> None:
    """A denied connection is a DROPPED flow with reason POLICY_DENIED, through the relay,
    naming both pods and their security identities (as every node's ipcache has them)."""
    apply(lab, CASES["deny all ingress"])
    src, dst = (NAMESPACES["y"], "b"), (X, "a")
    cells = [(f"{src[0]}/{src[1]}", f"{dst[0]}/{dst[1]}", 81, "TCP")]
    assert probe(world, cells, 0.5) == {cells[0]: False}
    ids = node_policy(lab, "node1")["pods"]

    def dropped() -> dict[str, Any] | None:
        out = lab.exec("cp", "hexlane", "hubble", "observe", "--verdict", "DROPPED",
                       "--to-pod", f"{dst[0]}/{dst[1]}", "--last", "50", "-o", "json",
                       check=False).stdout
        for line in out.splitlines():
            flow = json.loads(line).get("flow") or {}
            source = flow.get("source", {})
            if (source.get("namespace"), source.get("pod_name")) == src and \
                    flow.get("l4", {}).get("TCP", {}).get("destination_port") == 81:
                return dict(flow)
        return None
    flow = wait_for("the drop in Hubble", dropped, timeout=20, interval=0.5)
    assert flow["drop_reason_desc"] == "POLICY_DENIED", flow
    assert flow["source"]["identity"] == ids[f"{src[0]}/{src[1]}"] >= 256, flow
    assert flow["destination"]["identity"] == ids[f"{dst[0]}/{dst[1]}"] >= 256, flow
    apply(lab, [])


# --- Cilium's own policies (issue 20): hand-written tables ---------------------------------------

def cnp(name: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": "cilium.io/v2", "kind": "CiliumNetworkPolicy",
            "metadata": {"name": name, "namespace": X}, "spec": spec}


A_SEL = {"matchLabels": {"pod": "a"}}
NS = {k: v for k, v in NAMESPACES.items()}


def check_cells(world: World, want: dict[Cell, bool]) -> None:
    cells = list(want)
    table = probe(world, cells, 0.5)
    wrong = [c for c in cells if table[c] != want[c]]
    if wrong:
        table.update(probe(world, wrong, 1.5))
    assert all(table[c] == want[c] for c in cells), render(cells, table, want)
    check_traces(world, table)


def observe(lab: Lab, *args: str) -> list[dict[str, Any]]:
    """`hexlane hubble observe ARGS -o json` in the lab (through the relay): the flows."""
    out = lab.exec("cp", "hexlane", "hubble", "observe", *args, "-o", "json",
                   check=False).stdout
    return [json.loads(line)["flow"] for line in out.splitlines()
            if line.strip() and "flow" in json.loads(line)]


def verdict_of(lab: Lab, src: str, dst: str, port: int, *args: str) -> dict[str, Any] | None:
    """The latest ingress policy verdict (at the destination pod) of src -> dst:port among
    the last flows."""
    s_ns, s_pod = src.split("/")
    for flow in reversed(observe(lab, "--type", "policy-verdict", "--to-pod", dst,
                                 "--last", "200", *args)):
        source = flow.get("source", {})
        if (source.get("namespace"), source.get("pod_name")) == (s_ns, s_pod) and \
                flow.get("traffic_direction") == "INGRESS" and \
                flow.get("l4", {}).get("TCP", {}).get("destination_port") == port:
            return flow
    return None


def test_cilium_deny_wins_over_allow_and_hubble_names_the_policy(lab: Lab, world: World) -> None:
    """Deny wins over allow; Hubble's policy verdicts name the deciding policy (denied_by for
    the deny rule, allowed_by for the allow rule), as `hubble observe --verdict DROPPED`
    prints it."""
    apply(lab, [cnp("cluster-but-y-80", {
        "endpointSelector": A_SEL,
        "ingress": [{"fromEntities": ["cluster"]}],
        "ingressDeny": [{"fromEndpoints": [{"matchLabels": {
            "k8s:io.kubernetes.pod.namespace": NS["y"]}}],
            "toPorts": [{"ports": [{"port": "80", "protocol": "TCP"}]}]}]})])
    a = f"{X}/a"
    check_cells(world, {
        (f"{NS['y']}/b", a, 80, "TCP"): False, (f"{NS['y']}/c", a, 80, "TCP"): False,
        (f"{NS['y']}/b", a, 81, "TCP"): True, (f"{NS['y']}/b", a, 80, "UDP"): True,
        (f"{NS['z']}/b", a, 80, "TCP"): True, (f"{X}/b", a, 80, "TCP"): True})
    named = {"kind": "CiliumNetworkPolicy", "namespace": X, "name": "cluster-but-y-80"}

    def names(flow: dict[str, Any], key: str) -> list[dict[str, str]]:
        return [{k: p.get(k) for k in named} for p in flow.get(key, [])]
    denied = wait_for("the denial's verdict", lambda: verdict_of(
        lab, f"{NS['y']}/b", a, 80, "--verdict", "DROPPED"), timeout=20, interval=0.5)
    assert denied["traffic_direction"] == "INGRESS", denied
    assert names(denied, "ingress_denied_by") == [named], denied
    allowed = wait_for("the allowed verdict", lambda: verdict_of(
        lab, f"{NS['z']}/b", a, 80, "--verdict", "FORWARDED"), timeout=20, interval=0.5)
    assert names(allowed, "ingress_allowed_by") == [named], allowed
    text = lab.exec("cp", "hexlane", "hubble", "observe", "--type", "policy-verdict",
                    "--verdict", "DROPPED", "--to-pod", a, "--last", "200").stdout
    assert f"Policy: CiliumNetworkPolicy {X}/cluster-but-y-80" in text, text


def test_a_clusterwide_policy_selects_in_every_namespace(lab: Lab, world: World) -> None:
    apply(lab, [{"apiVersion": "cilium.io/v2", "kind": "CiliumClusterwideNetworkPolicy",
                 "metadata": {"name": f"a-from-b-{TAG}", "labels": {"test": TAG}},
                 "spec": {"endpointSelector": A_SEL,
                          "ingress": [{"fromEndpoints": [{"matchLabels": {"pod": "b"}}]}]}}])
    want = {}
    for dst in NAMESPACES.values():
        for src in NAMESPACES.values():
            for pod in ("b", "c"):
                want[(f"{src}/{pod}", f"{dst}/a", 80, "TCP")] = pod == "b"
    check_cells(world, want)


def test_icmp_allowed_and_denied(lab: Lab, world: World) -> None:
    apply(lab, [cnp("ping-from-x", {
        "endpointSelector": A_SEL,
        "ingress": [{"fromEndpoints": [{}],
                     "icmps": [{"fields": [{"type": 8, "family": "IPv4"}]}]}]})])
    a = f"{X}/a"
    # (an ICMP cell's port is the ICMP type: 8, echo request)
    check_cells(world, {(f"{X}/b", a, 8, "ICMP"): True, (f"{X}/c", a, 8, "ICMP"): True,
                        (f"{NS['y']}/b", a, 8, "ICMP"): False,
                        (f"{X}/b", a, 80, "TCP"): False})


def test_entities_host_remote_node_and_world(lab: Lab, world: World) -> None:
    a = f"{X}/a"  # on node1
    sources = {"node1": a, "node2": a, f"{NS['y']}/b": a, "client": "nodeport-a"}

    def cells(allowed: set[str]) -> dict[Cell, bool]:
        return {(src, dst, world.node_port if dst == "nodeport-a" else 80, "TCP"):
                src in allowed for src, dst in sources.items()}
    apply(lab, [cnp("from-remote-node", {"endpointSelector": A_SEL,
                                         "ingress": [{"fromEntities": ["remote-node"]}]})])
    # node1 is x/a's own host: allowed as `host` whenever ingress is enforced
    check_cells(world, cells({"node1", "node2"}))
    apply(lab, [cnp("from-world", {"endpointSelector": A_SEL,
                                   "ingress": [{"fromEntities": ["world"]}]})])
    check_cells(world, cells({"node1", "client"}))  # eTP=Local: the client's own address


def test_cilium_egress_cidr_set_with_except(lab: Lab, world: World) -> None:
    apply(lab, [cnp("lan-but-client", {
        "endpointSelector": A_SEL,
        "egress": [{"toCIDRSet": [{"cidr": "10.0.0.0/24", "except": [f"{CLIENT}/32"]}]}]})])
    a = f"{X}/a"
    check_cells(world, {(a, CONTROL_PLANE, 6443, "TCP"): True, (a, CLIENT, 80, "TCP"): False,
                        (a, f"{X}/b", 80, "TCP"): False,
                        (f"{X}/b", CLIENT, 80, "TCP"): True})
    apply(lab, [])


# --- enforcement modes and audit (the shared lab upgraded and set back) ---------------------------

def upgrade(lab: Lab, *sets: str, **wants: object) -> None:
    """`hexlane lab upgrade --set ...`, then wait until both agents' policy documents say
    `wants` (e.g. mode="always") and the relay serves both nodes again."""
    lab.run("upgrade", *[a for s in sets for a in ("--set", s)])

    def says(node: str) -> bool:
        try:
            doc = node_policy(lab, node)
        except RuntimeError:  # (restarting)
            return False
        return all(doc.get(k) == v for k, v in wants.items())
    wait_for(f"both agents with {wants}", lambda: says("node1") and says("node2"),
             timeout=60, interval=0.5)


def hubble_metrics(lab: Lab) -> str:
    return lab.exec("node1", "curl", "-sS", "-m", "3", f"http://{NODE1_IP}:9965/metrics",
                    check=False).stdout


def test_always_enforces_without_a_policy_and_audit_lets_denials_pass(lab: Lab,
                                                                      world: World) -> None:
    """policyEnforcementMode always: with no policy every pod is enforced both ways (only its
    own host reaches it); a policy opens what it allows. policyAuditMode: what policy denies
    passes, and its verdict is recorded as AUDIT (Hubble, hubble_policy_verdicts_total)."""
    a, b, yb = f"{X}/a", f"{X}/b", f"{NS['y']}/b"
    try:
        apply(lab, [])
        upgrade(lab, "policyEnforcementMode=always", "hubble.metrics.enabled={policy,drop}",
                mode="always")
        check_cells(world, {(b, a, 80, "TCP"): False, (yb, f"{NS['z']}/c", 81, "UDP"): False,
                            ("node1", a, 80, "TCP"): True,
                            ("client", "nodeport-a", world.node_port, "TCP"): False})
        wait_for("hubble_drop_total{reason=POLICY_DENIED} on node1", lambda: [
            line for line in hubble_metrics(lab).splitlines()
            if line.startswith("hubble_drop_total{") and 'reason="POLICY_DENIED"' in line],
            timeout=20, interval=0.5)
        apply(lab, [cnp("within-x", {"endpointSelector": {},
                                     "ingress": [{"fromEndpoints": [{}]}],
                                     "egress": [{"toEndpoints": [{}]}]})])
        check_cells(world, {(b, a, 80, "TCP"): True, (yb, a, 80, "TCP"): False})

        upgrade(lab, "policyAuditMode=true", audit=True)
        table = probe(world, [(yb, a, 80, "TCP"), (b, a, 81, "TCP")], 1.0)
        assert all(table.values()), table  # denied (by default) but audited: passes
        audited = wait_for("the audited verdict", lambda: verdict_of(
            lab, yb, a, 80, "--verdict", "AUDIT"), timeout=20, interval=0.5)
        assert audited["traffic_direction"] == "INGRESS", audited
        allowed = wait_for("the allowed verdict", lambda: verdict_of(
            lab, b, a, 81, "--verdict", "FORWARDED"), timeout=20, interval=0.5)
        assert [p["name"] for p in allowed.get("ingress_allowed_by", [])] == ["within-x"]

        def series(**labels: str) -> list[str]:
            return [line for line in hubble_metrics(lab).splitlines()
                    if line.startswith("hubble_policy_verdicts_total{")
                    and all(f'{k}="{v}"' in line for k, v in labels.items())]
        wait_for("the audited verdict in hubble_policy_verdicts_total on node1",
                 lambda: series(action="audit", direction="ingress", match="none"),
                 timeout=20, interval=0.5)
        assert series(action="forwarded", direction="ingress", match="l3-only")
    finally:
        upgrade(lab, "policyEnforcementMode=default", "policyAuditMode=false",
                "hubble.metrics.enabled=null", mode="default", audit=False)
        apply(lab, [])
