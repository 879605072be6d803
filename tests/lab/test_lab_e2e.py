"""The lab end to end, with the real daemons: `lab up` gives Ready nodes; kubectl applies a
Deployment and a Service; pods get IPs and serve HTTP/UDP, reachable across nodes with the
caller's real address (a hostNetwork pod on the node's address, reached from the client),
`lab up` told each step with its seconds and printed commands that work as printed (a
NodePort from the client, a Service by name from a pod, the agent, Hubble),
and reach the client masqueraded behind their node's address;
EndpointSlices carry ready endpoints, then terminating ones on scale
down, then none; deleting the Deployment garbage-collects its pods; `lab freeze`/`thaw` stop
and continue every process of a node (its agent silent meanwhile, `lab status` says frozen);
`lab kill`/`revive` take a node away and back; `lab up` on an existing lab refuses; `lab down`
removes everything, also after every process was SIGKILLed or when only a half-made lab (or
only its directory) is left, and a stopped process in it is continued to handle its SIGTERM;
`lab down` of a lab that does not exist is an error naming the labs there are."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from ipaddress import ip_network
from pathlib import Path
from typing import Any

import pytest

from helpers.lab import HEXLANE, Lab, hexlane, lab_namespaces
from helpers.wait import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.root]

APP = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: default}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: web
        image: nginx
        ports:
        - {name: http, containerPort: 8080}
        - {name: echo, containerPort: 5353, protocol: UDP}
        lifecycle: {preStop: {exec: {command: ["sleep", "3"]}}}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: http}
  - {name: echo, port: 53, targetPort: echo, protocol: UDP}
"""

UDP_CLIENT = ("import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); "
              "s.settimeout(3); s.sendto(b'ping',(sys.argv[1],5353)); "
              "print(s.recv(200).decode())")


def pods(lab: Lab) -> list[dict[str, Any]]:
    return list(lab.api("/api/v1/namespaces/default/pods?labelSelector=app%3Dweb")["items"])


def endpoints(lab: Lab) -> list[dict[str, Any]]:
    slices = lab.api("/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
                     "?labelSelector=kubernetes.io%2Fservice-name%3Dweb")["items"]
    return [e for s in slices for e in s.get("endpoints") or []]


def running(lab: Lab, n: int) -> list[dict[str, Any]] | None:
    items = [p for p in pods(lab) if not p["metadata"].get("deletionTimestamp")]
    ok = [p for p in items if p["status"].get("podIP") and any(
        c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])]
    return ok if len(ok) == n == len(items) else None


def test_nodes_ready_with_k3s_labels(lab: Lab) -> None:
    nodes = json.loads(lab.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert sorted(by_name) == ["node1", "node2"]
    for name, n in by_name.items():
        ready = [c for c in n["status"]["conditions"] if c["type"] == "Ready"]
        assert ready[0]["status"] == "True"
        assert n["metadata"]["labels"]["kubernetes.io/hostname"] == name
        assert n["metadata"]["labels"]["kubernetes.io/os"] == "linux"
        ips = {a["type"]: a["address"] for a in n["status"]["addresses"]}
        assert ips == {"InternalIP": f"10.0.0.1{name[-1]}", "Hostname": name}
    labels = by_name["node1"]["metadata"]["labels"]
    assert labels["node-role.kubernetes.io/control-plane"] == "true"
    assert labels["node-role.kubernetes.io/master"] == "true"
    assert "node-role.kubernetes.io/master" not in by_name["node2"]["metadata"]["labels"]
    lease = lab.api("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/node2")
    assert lease["spec"]["holderIdentity"] == "node2"


def test_up_on_an_existing_lab_refuses(lab: Lab) -> None:
    result = lab.run("up", "--nodes", "2", check=False)
    assert result.returncode == 1 and "exists already" in result.stderr


def test_status_and_exec(lab: Lab) -> None:
    info = json.loads(lab.run("status", "-o", "json").stdout)
    assert info["phase"] == "up"
    assert all(p["alive"] for p in info["processes"]), info["processes"]
    assert {n["name"] for n in info["nodes"] if n["ready"]} == {"node1", "node2"}
    out = lab.exec("node2", "sh", "-c", "echo $HEXLANE_STATE_DIR; ip -o -4 addr show eth0")
    assert out.stdout.splitlines()[0] == f"/run/hexlane/lab/{lab.name}/node2/state"
    assert "10.0.0.12/24" in out.stdout
    assert lab.exec("client", "sh", "-c", "exit 7", check=False).returncode == 7


UP_STEPS = ["LAN 10.0.0.0/24: a switch and 4 hosts", "control plane: apiserver starting",
            "control plane: apiserver serving on 10.0.0.10:6443",
            "control plane: started lab controllers, cluster DNS, operator",
            "node1: started kubelet, agent", "node2: started kubelet, agent",
            "waiting for 2 Node(s) to register and be Ready", "every Node Ready",
            "node1: agent healthy", "node2: agent healthy", "cluster DNS serving"]


def test_lab_up_tells_each_step_with_its_seconds(lab: Lab) -> None:
    assert lab.up is not None
    lines = lab.up.stderr.splitlines()
    steps = [m.groups() for line in lines if (m := re.fullmatch(r" *(\d+\.\d)s  (.+)", line))]
    seconds = [float(t) for t, _ in steps]
    assert seconds == sorted(seconds)
    said = [text for _, text in steps]
    at = [next(i for i, text in enumerate(said) if text.startswith(step)) for step in UP_STEPS]
    assert at == sorted(at), said
    for node in ("node1", "node2"):
        assert f"{node}: Node Ready" in said
    assert len(lines) <= 20, lines  # readable: a line per step, nothing else
    assert lab.up.stdout.startswith(f"lab {lab.name} is up: ")
    for node in ("node1", "node2"):
        assert libbpf_warnings(lab, node) == []


def libbpf_warnings(lab: Lab, node: str) -> list[str]:
    """The agent's log lines a user would take for a fault from libbpf: its warnings, and
    the kernel's "Exclusivity flag on" (clsact there already: expected, debug only)."""
    log = (lab.dir / node / "logs" / "agent.log").read_text(errors="replace")
    return [line for line in log.splitlines()
            if " WARNING hexlane.libbpf" in line or "Exclusivity flag" in line]


def test_the_commands_lab_up_prints_work_as_printed(lab: Lab) -> None:
    """Every `hexlane lab ...` line of `lab up`'s output, run as printed (a pod's name put in
    for `<hello-pod>`), in order: the try-a-Service recipe reaches the pods from the client
    through a NodePort and from a pod through the Service's name."""
    assert lab.up is not None
    commands = [line.split("   #")[0].strip() for line in lab.up.stdout.splitlines()
                if line.startswith("  hexlane lab ")]
    assert f"hexlane lab down --name {lab.name}" in commands
    assert not [c for c in commands if "<pod-ip>" in c]
    try:
        pods: list[str] = []
        for command in commands:
            if command.startswith("hexlane lab down"):
                continue  # the session's lab, taken down at the end
            if "<hello-pod>" in command:
                pods = [p["metadata"]["name"] for p in lab.api(
                    "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")["items"]]
                command = command.replace("<hello-pod>", pods[0])
            argv = shlex.split(command)
            done = subprocess.run([*HEXLANE, *argv[1:]], capture_output=True, text=True,
                                  timeout=120)
            assert done.returncode == 0, (command, done.stdout, done.stderr)
            if "curl" in argv:
                answer = json.loads(done.stdout)
                assert answer["pod"].startswith("hello-"), (command, answer)
        assert pods, "the recipe reached a pod by the Service's name"
    finally:
        lab.kubectl("delete", "service", "hello", "--ignore-not-found")
        lab.kubectl("delete", "deployment", "hello", "--ignore-not-found", "--wait=false")
        wait_for("hello's pods gone", lambda: not lab.api(
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dhello")["items"], timeout=60)


def test_deployment_pods_serve_across_nodes(lab: Lab) -> None:
    lab.kubectl("apply", "-f", "-", stdin=APP)
    ready = wait_for("3 ready pods", lambda: running(lab, 3), timeout=60)
    nodes = {p["spec"]["nodeName"] for p in ready}
    assert nodes == {"node1", "node2"}, "the scheduler spreads pods over both nodes"
    for p in ready:
        assert p["metadata"]["ownerReferences"][0]["kind"] == "Deployment"
        assert p["status"]["phase"] == "Running"
    eps = wait_for("3 ready endpoints", lambda: [e for e in endpoints(lab)
                                                 if e["conditions"]["ready"]] if len(
        [e for e in endpoints(lab) if e["conditions"]["ready"]]) == 3 else None, timeout=30)
    assert {e["addresses"][0] for e in eps} == {p["status"]["podIP"] for p in ready}
    assert {e["nodeName"] for e in eps} == nodes
    a = next(p for p in ready if p["spec"]["nodeName"] == "node1")
    b = next(p for p in ready if p["spec"]["nodeName"] == "node2")
    a_name, b_name = a["metadata"]["name"], b["metadata"]["name"]
    a_ip, b_ip = a["status"]["podIP"], b["status"]["podIP"]
    # Pod on node1 -> pod on node2: no translation, the server sees the pod's own address.
    whoami = json.loads(lab.exec(f"pod/default/{a_name}", "curl", "-sS", "-m", "5",
                                 f"http://{b_ip}:8080/whoami").stdout)
    assert whoami == {"pod": b_name, "node": "node2", "client_ip": a_ip,
                      "client_port": whoami["client_port"]}
    root = lab.exec(f"pod/default/{b_name}", "curl", "-sS", "-m", "5", f"http://{a_ip}:8080/")
    assert root.stdout == f"{a_name}\n"
    echo = lab.exec(f"pod/default/{a_name}", "python3", "-c", UDP_CLIENT, b_ip)
    assert echo.stdout.strip() == f"{b_name} ping"
    # A node reaches pods on the other node too, from one of its own addresses (its LAN
    # address, or its router IP, the first of its pod CIDR, in tunnel mode).
    from_node = json.loads(lab.exec("node1", "curl", "-sS", "-m", "5",
                                    f"http://{b_ip}:8080/whoami").stdout)
    router = str(ip_network(f"{a_ip}/24", strict=False).network_address + 1)
    assert from_node["client_ip"] in ("10.0.0.11", router)


def test_pod_to_client_leaves_with_the_node_address(lab: Lab) -> None:
    """Masquerading: the laptop (outside the cluster) sees the pod's node, not the pod."""
    from hexlane.lab import netns

    server = netns.popen(f"{lab.name}-client", [
        sys.executable, "-m", "hexlane.lab.workload", "--pod", "laptop", "--tcp", "8080"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ready = wait_for("3 ready pods", lambda: running(lab, 3), timeout=60)
        for p in ready:
            node_ip = f"10.0.0.1{p['spec']['nodeName'][-1]}"
            answer = wait_for("the laptop's answer", lambda p=p: _curl_json(
                lab, f"pod/default/{p['metadata']['name']}", "http://10.0.0.2:8080/whoami"),
                timeout=10)
            assert answer["pod"] == "laptop" and answer["client_ip"] == node_ip
    finally:
        netns.stop_process(server)


def _curl_json(lab: Lab, target: str, url: str) -> dict[str, Any] | None:
    result = lab.exec(target, "curl", "-sS", "-m", "3", url, check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def test_scale_down_terminates_gracefully(lab: Lab) -> None:
    wait_for("3 ready pods", lambda: running(lab, 3), timeout=60)
    lab.kubectl("scale", "deployment", "web", "--replicas=1")
    terminating = wait_for("terminating endpoints", lambda: [
        e for e in endpoints(lab) if e["conditions"]["terminating"]], timeout=10, interval=0.1)
    # During the preStop sleep the endpoint is terminating, not ready, still serving.
    assert all(not e["conditions"]["ready"] for e in terminating)
    assert any(e["conditions"]["serving"] for e in terminating)
    gone = {e["targetRef"]["name"] for e in terminating}
    wait_for("terminated pods removed", lambda: not gone & {
        p["metadata"]["name"] for p in pods(lab)}, timeout=30)
    eps = wait_for("one endpoint", lambda: endpoints(lab) if len(endpoints(lab)) == 1 else None,
                   timeout=30)
    assert eps[0]["conditions"] == {"ready": True, "serving": True, "terminating": False}
    deploy = lab.api("/apis/apps/v1/namespaces/default/deployments/web")
    assert deploy["status"]["replicas"] == 1 and deploy["status"]["readyReplicas"] == 1


HOST_POD = """
apiVersion: v1
kind: Pod
metadata: {name: hostpod, namespace: default}
spec:
  hostNetwork: true
  nodeName: node2
  terminationGracePeriodSeconds: 2
  containers:
  - {name: c, image: x, ports: [{containerPort: 9999}]}
"""


def test_host_network_pod_serves_on_the_node_address(lab: Lab) -> None:
    lab.kubectl("apply", "-f", "-", stdin=HOST_POD)

    def served() -> dict[str, Any] | None:
        p = lab.api("/api/v1/namespaces/default/pods/hostpod")
        return p if p["status"].get("podIP") else None
    p = wait_for("hostpod running", served, timeout=30)
    assert p["status"]["podIP"] == "10.0.0.12"
    answer = json.loads(lab.exec("client", "curl", "-sS", "-m", "5",
                                 "http://10.0.0.12:9999/whoami").stdout)
    assert answer == {"pod": "hostpod", "node": "node2", "client_ip": "10.0.0.2",
                      "client_port": answer["client_port"]}
    lab.kubectl("delete", "pod", "hostpod", "--wait=false")
    wait_for("hostpod gone", lambda: "hostpod" not in {
        p["metadata"]["name"] for p in lab.api("/api/v1/namespaces/default/pods")["items"]},
        timeout=30)


def node_ready(lab: Lab, node: str) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True"
               for c in lab.api(f"/api/v1/nodes/{node}")["status"]["conditions"])


def agent_status(lab: Lab, node: str, timeout: float) -> str:
    """What `hexlane status` in the node gets from its agent, with a short timeout (the
    command's own is 10 s): "ok" or the error."""
    from hexlane.cli.cmd_status import fetch_status
    from hexlane.lab.manager import in_netns

    try:
        in_netns(f"{lab.name}-{node}", lambda: fetch_status(lab.dir / node / "state", timeout))
    except RuntimeError as e:
        return str(e)
    return "ok"


def test_freeze_and_thaw_a_node(lab: Lab) -> None:
    from hexlane.lab.manager import (
        LabState,
        agent_healthy,
        host_netns_paths,
        pids_in_netns,
        proc_state,
        status,
    )

    state = LabState.load(lab.name)
    assert state is not None
    lab.run("freeze", "node2")
    try:
        pids = pids_in_netns(host_netns_paths(state.plan, "node2"))
        assert pids and {p: proc_state(p) for p in pids} == {p: "T" for p in pids}
        assert "did not answer in time" in agent_status(lab, "node2", 1.0)
        assert agent_status(lab, "node1", 1.0) == "ok"
        info = json.loads(lab.run("status", "-o", "json").stdout)
        frozen = {h["host"]: h["frozen"] for h in info["hosts"]}
        assert frozen == {"client": False, "cp": False, "node1": False, "node2": True}
        assert {p["name"]: p["frozen"] for p in info["processes"] if p["alive"]} == {
            p["name"]: p["host"] == "node2" for p in info["processes"] if p["alive"]}
    finally:
        lab.run("thaw", "node2")
    info = status(lab.name)
    assert not any(h["frozen"] for h in info["hosts"])
    assert all(p["alive"] and not p["frozen"] for p in info["processes"])
    # `hexlane status --brief` in node2 prints OK again.
    wait_for("node2's agent healthy", lambda: agent_healthy(state.plan, "node2")[0],
             timeout=20, interval=0.2)
    wait_for("node2 Ready", lambda: node_ready(lab, "node2"), timeout=20, interval=0.2)


def test_kill_and_revive_a_node(lab: Lab) -> None:
    lab.kubectl("patch", "deployment", "web", "-p", '{"spec":{"replicas":2}}')
    wait_for("2 ready pods", lambda: running(lab, 2), timeout=60)
    lab.run("kill", "node2")
    info = json.loads(lab.run("status", "-o", "json").stdout)
    node2 = [p for p in info["processes"] if p["host"] == "node2"]
    assert node2 and not any(p["alive"] for p in node2)
    assert next(h for h in info["hosts"] if h["host"] == "node2")["link"] == "down"

    def not_ready() -> bool:
        node = lab.api("/api/v1/nodes/node2")
        return any(c["type"] == "Ready" and c["status"] != "True"
                   for c in node["status"]["conditions"])
    wait_for("node2 NotReady after its lease ran out", not_ready, timeout=30, interval=0.5)
    log_path = lab.dir / "node2" / "logs" / "agent.log"
    before = log_path.read_text(errors="replace")
    starts = before.count("node node2 ready")
    lab.run("revive", "node2")
    info = json.loads(lab.run("status", "-o", "json").stdout)
    assert all(p["alive"] for p in info["processes"])
    assert {n["name"] for n in info["nodes"] if n["ready"]} == {"node1", "node2"}
    wait_for("2 ready pods again", lambda: running(lab, 2), timeout=60)
    # The agent restarted on a node whose devices have clsact already: nothing alarming.
    # (other tests on the shared lab may have restarted it before: counted from the revive)
    log = log_path.read_text(errors="replace")
    assert log.count("node node2 ready") == starts + 1  # started again
    # The restarted agent kept the service CIDR's route (the node's own ClusterIP traffic):
    # it never removed it to add it back once its load balancer loaded.
    routes_said = [line for line in log[len(before):].splitlines() if "routes: added" in line]
    assert not [line for line in routes_said if "removed" in line and "10.43.0.0/16" in
                line.split("removed", 1)[1].split("failed", 1)[0]], routes_said
    assert libbpf_warnings(lab, "node2") == []


def test_deleting_the_deployment_collects_its_pods(lab: Lab) -> None:
    lab.kubectl("delete", "deployment", "web", "--wait=false")
    wait_for("pods garbage-collected", lambda: pods(lab) == [], timeout=40, interval=0.5)
    netns = lab_namespaces(lab.name)
    assert not [n for n in netns if n.startswith(f"{lab.name}-p")], netns


@pytest.mark.ends_lab
def test_down_after_every_process_was_killed(lab: Lab) -> None:
    """Last in the session (marker ends_lab): it takes the session's lab down the hard way."""
    from hexlane.lab.manager import pids_in_netns

    paths = [f"/run/netns/{n}" for n in lab_namespaces(lab.name)]
    pids = pids_in_netns(paths)
    assert pids
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    hexlane("lab", "down", "--name", lab.name)
    assert lab_namespaces(lab.name) == []
    assert not lab.dir.exists()
    assert not list(Path("/sys/fs/bpf").glob(f"hexlane-{lab.name}-*"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert "p-node" not in links


TERM_HANDLER = ("import signal, sys, time; "
                "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); "
                "print('ready', flush=True); time.sleep(60); sys.exit(3)")


def test_down_removes_a_half_made_lab() -> None:
    """No state file, a process left in a node: discovery by name finds all of it."""
    from hexlane.lab import netns
    name = f"h{os.urandom(3).hex()}"
    made = [f"{name}-lan", f"{name}-node1", f"{name}-p0123abcd"]
    try:
        for n in made:
            netns.create(n)
        proc = netns.popen(f"{name}-node1", ["sleep", "60"], start_new_session=True)
        # A frozen daemon that exits cleanly on SIGTERM: `down` continues it, so it exits
        # with 0 through its handler rather than being SIGKILLed after the wait.
        frozen = netns.popen(f"{name}-node1", [sys.executable, "-c", TERM_HANDLER],
                             stdout=subprocess.PIPE, start_new_session=True)
        assert frozen.stdout is not None and frozen.stdout.readline() == b"ready\n"
        os.kill(frozen.pid, signal.SIGSTOP)
        directory = Path("/run/hexlane/lab") / name
        (directory / "node1").mkdir(parents=True)
        hexlane("lab", "down", "--name", name)
        assert proc.wait(10) is not None
        assert frozen.wait(10) == 0
        assert lab_namespaces(name) == []
        assert not directory.exists()
    finally:
        for n in made:
            netns.delete(n)


def test_down_of_a_lab_that_does_not_exist_is_an_error() -> None:
    name = f"n{os.urandom(3).hex()}"
    result = hexlane("lab", "down", "--name", name, check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.startswith(f"error: no lab named {name}; "), result.stderr
    from hexlane.lab.manager import lab_names
    labs = lab_names()
    assert result.stderr.rstrip().endswith(
        f"labs here: {', '.join(labs)}" if labs else "there is no lab on this machine")


def test_down_removes_a_lab_of_which_only_the_directory_is_left() -> None:
    """`up` interrupted right after making the lab's directory: still a lab to `down`."""
    name = f"d{os.urandom(3).hex()}"
    directory = Path("/run/hexlane/lab") / name
    try:
        (directory / "logs").mkdir(parents=True)
        result = hexlane("lab", "down", "--name", name)
        assert result.stdout == f"lab {name} removed\n"
        assert not directory.exists()
    finally:
        if directory.exists():
            import shutil
            shutil.rmtree(directory)
