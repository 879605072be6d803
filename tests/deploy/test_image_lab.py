"""hexlane's container image works, not only builds: the agent runs from it in a lab node.

`scripts/build-image.sh` builds the image (a debootstrapped Debian base, the locked wheels;
no container registry) under a tag of this test's own. A 1-node lab comes up; node1's agent,
started by the lab, is stopped, and the image takes over as the DaemonSet `hexlane manifests`
renders would run it: its init step `hexlane cni install-plugin` writes the CNI plugin into
the node's CNI bin directory, then `hexlane agent` runs in a podman container in node1's
network namespace (privileged; the host's /run/netns; the lab's directory, which holds the
node's kubeconfig, values, state, CNI directories and bpffs) with the lab agent's own
arguments plus `--cni-plugin`, as the DaemonSet's.

Pins down: the agent running in node1 is the container's (its process, in node1's namespace,
runs the image's Python); `hexlane status --brief` answers OK both from the image (the
DaemonSet's readiness probe) and from the host's CLI in node1; the image's prebuilt BPF
objects were used (no clang run at the agent's start for the lab's default Maglev values); a
Deployment's pod started after the switch gets its network from that agent (the plugin the
image installed, the agent's endpoint API), and the client reaches it through node1's
NodePort, which only that agent can have programmed. The container, the image's tag and the
lab are removed, also on failure.
"""

from __future__ import annotations

import json
import os
import resource
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.lab import HEXLANE, Lab, running_lab
from helpers.wait import wait_for
from hexlane.lab.manager import LabState, alive
from hexlane.lab.topology import lab_dir

ROOT = Path(__file__).resolve().parents[2]
BUILD = ROOT / "scripts" / "build-image.sh"
NODE1 = "10.0.0.11"
NS = f"im-{secrets.token_hex(2)}"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      containers: [{{name: web, image: hexlane/workload, ports: [{{containerPort: 8080}}]}}]
---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}}}
spec:
  type: NodePort
  selector: {{app: web}}
  ports: [{{port: 80, targetPort: 8080}}]
"""


def test_the_script_tags_the_image_the_manifests_name() -> None:
    default = subprocess.run([str(BUILD), "--print-tag"], capture_output=True, text=True,
                             check=True, cwd=ROOT).stdout.strip()
    rendered = subprocess.run([*HEXLANE, "manifests", "-o", "json"], capture_output=True,
                              text=True, check=True).stdout
    (agent,) = [o for o in json.loads(rendered)["items"] if o["kind"] == "DaemonSet"]
    images = {c["image"] for spec in [agent["spec"]["template"]["spec"]]
              for c in [*spec["initContainers"], *spec["containers"]]}
    assert images == {default}


def podman(*args: str, check: bool = True, timeout: float = 120
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(["podman", *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


def ulimits() -> list[str]:
    """Limits at or below this process's own: podman's defaults raise them, which a machine
    without CAP_SYS_RESOURCE (such as a sandboxed CI runner) refuses. RLIMIT_NPROC is not
    enforced on a privileged root process anyway."""
    nofile = min(resource.getrlimit(resource.RLIMIT_NOFILE)[0], 16384)
    return [f"--ulimit=nofile={nofile}:{nofile}", "--ulimit=nproc=4096:4096"]


@pytest.fixture(scope="module")
def image() -> Iterator[str]:
    """The image, built by the script under a tag of this test's own (removed afterwards)."""
    for tool in ("podman", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.skip(f"no {tool}: `make setup` installs it (scripts/setup-system.sh)")
    tag = f"localhost/hexlane-test:{secrets.token_hex(4)}"
    start = time.monotonic()
    built = subprocess.run([str(BUILD), "--tag", tag], capture_output=True, text=True,
                           timeout=600, cwd=ROOT)
    try:
        assert built.returncode == 0, built.stderr[-3000:]
        assert built.stdout.split()[-1] == tag
        print(f"\nimage {tag} built in {time.monotonic() - start:.0f} s:\n" + "\n".join(
            line for line in built.stderr.splitlines() if line.startswith("build-image:")))
        yield tag
    finally:
        podman("rmi", "--force", tag, check=False)
    assert podman("image", "exists", tag, check=False).returncode == 1


def agent_pids_in(netns: str) -> dict[int, str]:
    """pid -> executable of every `hexlane agent` process in the named namespace `netns`."""
    inode = os.stat(f"/run/netns/{netns}").st_ino
    out: dict[int, str] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino != inode:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            exe = os.readlink(f"/proc/{entry}/exe")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if "agent" in words and any("hexlane" in w for w in words):
            out[int(entry)] = exe
    return out


def stop(pid: int) -> None:
    os.kill(pid, signal.SIGTERM)
    wait_for(f"the lab's agent (pid {pid}) to exit", lambda: not alive(pid), timeout=30)


@pytest.mark.slow
@pytest.mark.root
def test_the_agent_runs_from_the_image_in_a_lab_node(image: str) -> None:
    name = f"im{secrets.token_hex(3)}"
    container = f"hexlane-agent-{name}"
    with running_lab(name, "--nodes", "1") as lab:
        try:
            _run_agent_from_image(lab, image, container)
        finally:
            logs = podman("logs", "--tail", "40", container, check=False)
            if logs.returncode == 0:
                print(f"\n{container}'s log (last lines):\n{logs.stderr[-3000:]}")
            podman("rm", "--force", "--time", "2", container, check=False)
            lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        assert podman("container", "exists", container, check=False).returncode == 1


def _run_agent_from_image(lab: Lab, image: str, container: str) -> None:
    state = LabState.load(lab.name)
    assert state is not None
    plan = state.plan
    netns = plan.netns("node1")
    (proc,) = [p for p in state.procs if p.name == "node1/agent"]
    argv = proc.argv[proc.argv.index("agent"):]
    bin_dir = argv[argv.index("--cni-bin-dir") + 1]
    lab_root = str(lab_dir(lab.name))
    assert all(not a.startswith("/") or a.startswith(lab_root) for a in argv), argv

    stop(proc.pid)
    assert agent_pids_in(netns) == {}
    run = ["run", *ulimits()]
    # The init container: the plugin the node's runtime (here the lab kubelet) runs.
    podman(*run, "--rm", "--network", "none", "-v", f"{bin_dir}:{bin_dir}", image,
           "hexlane", "cni", "install-plugin", bin_dir)
    assert (Path(bin_dir) / "hexlane-cni.pyz").is_file()
    podman(*run, "--detach", "--name", container, "--network", f"ns:/run/netns/{netns}",
           "--privileged", "-v", "/run/netns:/run/netns:rslave",
           "-v", f"{lab_root}:{lab_root}",  # the node's bpffs (--bpf-root) is mounted in it
           image, "hexlane", *argv, "--cni-plugin", f"{bin_dir}/hexlane-cni.pyz")

    def brief_from_image() -> bool:
        done = podman("exec", container, "hexlane", "status", "--brief", check=False)
        return done.returncode == 0 and done.stdout.strip() == "OK"
    wait_for("the image's agent to be healthy (its own `hexlane status --brief`)",
             brief_from_image, timeout=120, interval=1)
    host_cli = lab.exec("node1", "hexlane", "status", "--brief")
    assert host_cli.stdout.strip() == "OK"

    # The one agent in node1 is the container's: its Python is the image's.
    ctr_pid = int(podman("inspect", "--format", "{{.State.Pid}}", container).stdout)
    agents = agent_pids_in(netns)
    assert list(agents) == [ctr_pid], agents
    assert agents[ctr_pid].startswith("/usr/bin/python3"), agents
    assert Path(f"/proc/{ctr_pid}/root/opt/hexlane/bin/hexlane").is_file()
    # The lab's values keep Maglev's defaults: the objects built into the image were used.
    cached = podman("exec", container, "sh", "-c", "ls $HEXLANE_BPF_CACHE").stdout.split()
    assert sorted(c.split("-")[0] for c in cached) == ["lb", "masq"], cached

    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    svc = json.loads(lab.kubectl("get", "svc", "-n", NS, "web", "-o", "json").stdout)
    node_port = svc["spec"]["ports"][0]["nodePort"]

    def pod() -> dict[str, Any] | None:
        items = json.loads(lab.kubectl("get", "pods", "-n", NS, "-o", "json").stdout)["items"]
        running = [p for p in items if p["status"].get("phase") == "Running"
                   and p["status"].get("podIP")]
        return running[0] if running else None
    web = wait_for("web's pod to run, wired by the image's agent", pod, timeout=90,
                   interval=0.5)
    # The agent's service map (read through its API) has the pod behind the NodePort.
    wait_for("node1's agent to serve web's pod on its NodePort", lambda: (
        f"{web['status']['podIP']}:8080" in (services := lab.exec(
            "node1", "hexlane", "service", "list", "-o", "json").stdout)
        and f":{node_port}" in services), timeout=30, interval=0.5)

    def answer() -> str | None:
        got = lab.exec("client", "curl", "-sS", "-m", "3", f"http://{NODE1}:{node_port}/",
                       check=False)
        return got.stdout.strip() if got.returncode == 0 else None
    body = wait_for("the client's request through node1's NodePort", answer, timeout=60,
                    interval=0.5)
    assert body == web["metadata"]["name"]
