"""docs/install-k3s.md's commands, run as a reader runs them where the lab can.

Every command block of the guide is preceded by `<!-- guide: ID -->`. This module knows every
ID: `RUN` blocks are run as written with `bash -euo pipefail`, from the lab's client (the
reader's workstation: kubectl with the lab's kubeconfig, `hexlane` on PATH, a working
directory and HOME of the test's own) or in the lab node, on a 1-node lab of this module's
own; `NOT_RUN` blocks (a real k3s node, containerd, Talos, MetalLB) are listed with the reason
and checked for shell syntax, the Talos patch parsed and its keys checked.

Pins down: the guide has no unmarked or unknown block; the render block works with each
seed's base values and names the image `scripts/build-image.sh --print-tag` prints; on the
lab the render applies (server dry run, then for real), the objects it names exist, the pool
and L2 policy apply and a Service gets an IP from the pool, a Service with MetalLB's
annotations keeps the IP they ask for (in `hexlane ipam plan` and from the operator), a
changed value changes the config checksum and keeps the Hubble CA, `kubectl delete -f`
removes the objects, and `hexlane cleanup` in the node (its agent stopped) leaves no
hexlane link, route, pin, CNI file or state and puts lo's accept_local back.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.lab import Lab, running_lab
from helpers.seeds import EXAMPLES
from helpers.wait import wait_for
from hexlane.cni.bundle import install_plugin
from hexlane.lab.manager import LabState, exec_argv

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "install-k3s.md"
MARKED = re.compile(r"<!-- guide: ([a-z0-9-]+) -->\n```(\w+)\n(.*?)\n```\n", re.S)

RUN = {
    "image-tag": "compared with the rendered DaemonSet's image",
    "render": "with each seed's base values.yaml",
    "apply": "seed 000's render into the lab's apiserver",
    "get-objects": "the objects the render made",
    "pool": "pool and L2 policy; a Service then gets an IP from it",
    "service": "its EXTERNAL-IP comes from the pool",
    "metallb-plan": "a Service with MetalLB's annotations keeps its IP",
    "upgrade": "a changed value changes the checksum, keeps the CA",
    "delete": "the objects are gone",
    "cleanup": "in the lab node: nothing of hexlane's remains",
}
NOT_RUN = {
    "k3s-server": "installs k3s on the machine",
    "k3s-join": "joins a k3s cluster",
    "talos-patch": "no Talos here (parsed, keys checked)",
    "talos-gen": "no talosctl here",
    "image-build": "slow: tests/deploy/test_image_lab.py builds the image and runs it",
    "image-import": "no containerd on the lab's nodes",
    "image-arm64": "arm64 is not built or tested anywhere",
    "check-pods": "no DaemonSet controller or exec in the lab: hexlane status runs in the node",
    "metallb-remove": "no MetalLB in the lab",
    "flannel-cleanup": "the lab never had Flannel or kube-proxy",
    "cleanup-ctr": "no containerd in the lab: its inner command is the `cleanup` block",
    "k3s-uninstall": "uninstalls k3s from the machine",
    "cilium-leftovers": "no Cilium in the lab",
}
CILIUM = "/apis/cilium.io/v2alpha1"
KUBE_SYSTEM = "/api/v1/namespaces/kube-system"
LO_ACCEPT_LOCAL = "/proc/sys/net/ipv4/conf/lo/accept_local"
SEEDS = ("seed-000", "seed-001", "seed-002", "seed-004")
METALLB_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: legacy
  namespace: default
  annotations:
    metallb.universe.tf/loadBalancerIPs: 10.0.0.150
    metallb.universe.tf/allow-shared-ip: legacy
spec:
  type: LoadBalancer
  ports:
    - port: 8080
"""


def blocks() -> dict[str, tuple[str, str]]:
    """ID -> (language, text) of every marked block of the guide."""
    text = GUIDE.read_text()
    found = MARKED.findall(text)
    ids = [b[0] for b in found]
    assert len(ids) == len(set(ids)), f"an ID is used twice: {ids}"
    return {i: (lang, body) for i, lang, body in found}


BLOCKS = blocks()


def test_every_block_is_marked_and_known() -> None:
    text = GUIDE.read_text()
    fences = re.findall(r"^```", text, re.M)
    assert len(fences) == 2 * len(BLOCKS), "a block of the guide has no `guide:` marker"
    assert set(BLOCKS) == set(RUN) | set(NOT_RUN)
    assert not set(RUN) & set(NOT_RUN)
    # The reader is told, right after each block, whether it is run here.
    for block_id in set(BLOCKS) - {"talos-patch"}:  # (followed by talos-gen, then told)
        after = text.split(f"<!-- guide: {block_id} -->", 1)[1].split("```", 2)[2][:300]
        said = "*Run in the lab" if block_id in RUN else "*Not run here"
        assert said in after, (block_id, after)


def test_the_blocks_not_run_are_well_formed() -> None:
    for block_id in NOT_RUN:
        lang, body = BLOCKS[block_id]
        if lang == "sh":
            done = subprocess.run(["bash", "-n", "-c", body], capture_output=True, text=True,
                                  check=False)
            assert done.returncode == 0, f"{block_id}: {done.stderr}"
    server = BLOCKS["k3s-server"][1]
    for flag in ("--flannel-backend=none", "--disable-network-policy", "--disable-kube-proxy",
                 "--disable servicelb", "--disable traefik"):
        assert flag in server
        assert flag in BLOCKS["k3s-join"][1]
    lang, patch = BLOCKS["talos-patch"]
    assert lang == "yaml"
    doc = yaml.safe_load(patch)
    assert doc["cluster"]["network"]["cni"] == {"name": "none"}
    assert doc["cluster"]["proxy"] == {"disabled": True}
    assert doc["machine"]["features"]["kubePrism"] == {"enabled": True, "port": 7445}
    # The values Talos users give (seed 002) name KubePrism's port.
    seed002 = yaml.safe_load((EXAMPLES / "seed-002" / "values.yaml").read_text())
    assert (seed002["k8sServiceHost"], seed002["k8sServicePort"]) == ("127.0.0.1", 7445)
    # The image the cleanup container runs is the one built and rendered.
    assert run_here("image-tag", ROOT).stdout.strip() in BLOCKS["cleanup-ctr"][1]


def env_for(home: Path, kubeconfig: Path | None = None) -> dict[str, str]:
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    env = {**os.environ, "HOME": str(home), "PATH": path}
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    return env


def run_here(block_id: str, cwd: Path, home: Path | None = None
             ) -> subprocess.CompletedProcess[str]:
    """A block run as written on this machine (not in a lab), in `cwd` (HOME: `home`)."""
    done = subprocess.run(["bash", "-euo", "pipefail", "-c", BLOCKS[block_id][1]], cwd=cwd,
                          env=env_for(home or cwd), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, f"{block_id}:\n{done.stdout}\n{done.stderr}"
    return done


@pytest.mark.parametrize("seed", SEEDS)
def test_the_render_block_with_each_seeds_values(seed: str, tmp_path: Path) -> None:
    shutil.copy(EXAMPLES / seed / "values.yaml", tmp_path / "values.yaml")
    tag = run_here("image-tag", ROOT, home=tmp_path).stdout.strip()
    run_here("render", tmp_path)
    objects = [o for o in yaml.safe_load_all((tmp_path / "hexlane.yaml").read_text()) if o]
    (ds,) = [o for o in objects if o["kind"] == "DaemonSet"]
    (agent,) = ds["spec"]["template"]["spec"]["containers"]
    assert agent["image"] == tag
    assert "--service-cidr=10.43.0.0/16" in agent["args"] + agent.get("command", [])
    # The Hubble CA stays in HOME's directory for the next render (section 8).
    ca = tmp_path / ".hexlane" / "hubble-ca"
    assert (ca / "ca.crt").is_file() and (ca / "ca.key").is_file()


class GuideLab:
    """The module's lab, and the guide's blocks run on it from a working directory."""

    def __init__(self, lab: Lab, work: Path) -> None:
        self.lab = lab
        self.work = work
        self.kubeconfig = lab.dir / "kubeconfig"

    def client(self, block_id: str) -> str:
        """Run the block from the lab's client (the reader's workstation); its stdout."""
        return self._run("client", block_id)

    def node(self, block_id: str) -> str:
        return self._run("node1", block_id)

    def _run(self, host: str, block_id: str) -> str:
        start = time.monotonic()
        done = self._exec(host, ["bash", "-euo", "pipefail", "-c", BLOCKS[block_id][1]])
        assert done.returncode == 0, f"{block_id}:\n{done.stdout}\n{done.stderr}"
        print(f"guide block {block_id} ({host}): {time.monotonic() - start:.1f} s")
        return done.stdout

    def _exec(self, host: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """`hexlane lab exec --name LAB HOST -- ARGV` (the same command line and environment:
        `exec_argv`) without starting the CLI each time, from the working directory, with
        the lab's kubeconfig."""
        cmd, env = exec_argv(self.lab.name, host, argv)
        return subprocess.run(cmd, cwd=self.work, env={**env_for(self.work, self.kubeconfig),
                                                        **env},
                              capture_output=True, text=True, timeout=120, check=False)

    def get(self, path: str) -> dict[str, Any]:
        """An object (or list) read from the lab's API, in this process (no kubectl: fast)."""
        obj: dict[str, Any] = self.lab.api(path)
        return obj

    def sh(self, host: str, script: str) -> str:
        """One shell script in a lab host; its stdout (it must succeed)."""
        done = self._exec(host, ["sh", "-c", script])
        assert done.returncode == 0, f"{script}:\n{done.stdout}\n{done.stderr}"
        return done.stdout


def ingress_ip(lab: GuideLab, name: str) -> str | None:
    status = lab.get(f"/api/v1/namespaces/default/services/{name}").get("status") or {}
    ingress = (status.get("loadBalancer") or {}).get("ingress") or []
    return str(ingress[0]["ip"]) if ingress else None


@pytest.mark.slow
@pytest.mark.root
def test_the_guide_on_a_lab(tmp_path: Path) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl on this machine")
    with running_lab(f"g18{secrets.token_hex(2)}", "--nodes", "1") as lab:
        _walk_the_guide(GuideLab(lab, tmp_path))


def _walk_the_guide(g: GuideLab) -> None:
    # Seed 000's values with its own one-node line uncommented (`# replicas: 1  # Uncomment
    # this if you only have one node`): two host-network operators on one node would fight
    # for their ports in the lab, which does not schedule by anti-affinity.
    values = (EXAMPLES / "seed-000" / "values.yaml").read_text()
    assert "  # replicas: 1" in values
    (g.work / "values.yaml").write_text(values.replace("  # replicas: 1", "  replicas: 1", 1))
    # 3. Render and apply.
    g.client("render")
    g.client("apply")
    listed = g.client("get-objects")
    for name in ("daemonset.apps/hexlane", "deployment.apps/hexlane-operator",
                 "configmap/hexlane-config", "ciliumloadbalancerippools.cilium.io"):
        assert name in listed, listed
    # 4. What `kubectl exec ds/hexlane -- hexlane status` shows, from the node's agent.
    status = g.sh("node1", "hexlane status --brief && hexlane status")
    assert status.startswith("OK\n") and "Kubernetes:" in status, status

    # 6 (before 5): a Service MetalLB gave an IP; then 5's pool and policy.
    g.lab.kubectl("apply", "-f", "-", stdin=METALLB_SERVICE)
    assert "first-pool" in g.client("pool")
    assert g.get(f"{CILIUM}/ciliuml2announcementpolicies")["items"]
    wait_for("the MetalLB-annotated Service to get its IP",
             lambda: ingress_ip(g, "legacy") == "10.0.0.150", timeout=30, interval=0.5)
    out = g.client("service")
    assert "web" in out
    ip = wait_for("web's EXTERNAL-IP", lambda: ingress_ip(g, "web"), timeout=30, interval=0.5)
    assert 100 <= int(ip.rsplit(".", 1)[1]) <= 200 and ip != "10.0.0.150", ip
    plan = g.client("metallb-plan")
    (row,) = [line for line in plan.splitlines() if line.startswith("default/legacy")]
    assert row.split()[1] == "10.0.0.150" and "satisfied" in row, plan

    # 8. Upgrade: a changed value rolls the checksum, the CA stays.
    ca_before = g.get(f"{KUBE_SYSTEM}/secrets/hexlane-hubble-ca")["data"]
    before = g.get("/apis/apps/v1/namespaces/kube-system/daemonsets/hexlane")
    key = "cilium.io/cilium-configmap-checksum"
    old_sum = before["spec"]["template"]["metadata"]["annotations"][key]
    values = yaml.safe_load((g.work / "values.yaml").read_text())
    values["k8sClientRateLimit"]["qps"] = 60
    (g.work / "values.yaml").write_text(yaml.safe_dump(values))
    printed = g.client("upgrade").strip().splitlines()[-1]
    assert printed != old_sum and len(printed) == 64, printed
    config = g.get(f"{KUBE_SYSTEM}/configmaps/hexlane-config")["data"]["values.yaml"]
    assert yaml.safe_load(config)["k8sClientRateLimit"]["qps"] == 60
    assert g.get(f"{KUBE_SYSTEM}/secrets/hexlane-hubble-ca")["data"] == ca_before

    # 9. Uninstall: the objects, then the node.
    g.client("delete")
    gone = g.lab.kubectl("get", "-n", "kube-system", "daemonset/hexlane", check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    _cleanup_the_node(g)


def _cleanup_the_node(g: GuideLab) -> None:
    state = LabState.load(g.lab.name)
    assert state is not None
    (proc,) = [p for p in state.procs if p.name == "node1/agent"]
    argv = proc.argv
    conf_dir = Path(argv[argv.index("--cni-conf-dir") + 1])
    bin_dir = Path(argv[argv.index("--cni-bin-dir") + 1])
    # What the DaemonSet's init container adds: the bundled plugin (`hexlane cni
    # install-plugin`, a file write).
    install_plugin(bin_dir)
    env = g.sh("node1", f"env; echo accept_local=$(cat {LO_ACCEPT_LOCAL})")
    state_dir = Path(re.findall(r"^HEXLANE_STATE_DIR=(.*)$", env, re.M)[0])
    bpf_root = Path(re.findall(r"^HEXLANE_BPF_ROOT=(.*)$", env, re.M)[0])
    assert "accept_local=1" in env.splitlines()
    assert json.loads((state_dir / "sysctls-before.json").read_text()) == {
        "net.ipv4.conf.lo.accept_local": "0"}
    os.kill(proc.pid, signal.SIGTERM)
    wait_for("node1's agent to exit", lambda: not Path(f"/proc/{proc.pid}").exists(),
             timeout=30, interval=0.2)

    out = g.node("cleanup")
    assert "removed link hexlane_host" in out, out
    assert "removed sysctl net.ipv4.conf.lo.accept_local=0" in out, out

    links, routes, accept_local = g.sh(
        "node1", f"ip -br link; echo ---; ip route show proto 104; echo ---; "
                 f"cat {LO_ACCEPT_LOCAL}").split("---\n")
    assert not re.search(r"^(hexlane_|lxc)", links, re.M), links
    assert routes.strip() == "" and accept_local.strip() == "0", (routes, accept_local)
    assert not bpf_root.exists() or not list(bpf_root.iterdir())
    assert not (conf_dir / "05-hexlane.conflist").exists()
    assert not [p.name for p in bin_dir.iterdir() if p.name.startswith("hexlane")] \
        if bin_dir.exists() else True
    assert not state_dir.exists()
    again = g.node("cleanup")
    assert "nothing of hexlane's here" in again
