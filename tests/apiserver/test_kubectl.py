"""Real kubectl against the embedded apiserver: the machine's kubectl (a dispatcher that runs
the bundled client matching the server's v1.32) and Debian's kubectl 1.20 (downloaded with
`apt-get download kubernetes-client` into .cache/, never installed) apply every seed
manifest in examples/ with no extra flags, re-apply an edited one, print the columns users
expect (`get svc -A -o wide`, `get ciliumloadbalancerippools`), and delete them again."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

REPO = Path(__file__).resolve().parents[2]
KUBECTL_120 = REPO / ".cache" / "kubectl-1.20" / "root" / "usr" / "bin" / "kubectl"


def _manifests() -> list[Path]:
    """Every manifest kubectl applies from examples/: seed-NNN/*.yaml except Helm values
    (other/ holds what cannot be applied), then seed 004's in-text first versions."""
    files = []
    for seed in sorted((REPO / "examples").glob("seed-*")):
        files += [f for f in sorted(seed.glob("*.yaml")) if not f.name.startswith("values")]
    return files + sorted((REPO / "examples" / "seed-004" / "in-text").glob("*.yaml"))


def _debian_kubectl() -> Path:
    if KUBECTL_120.exists():
        return KUBECTL_120
    cache = KUBECTL_120.parents[3]
    cache.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", "kubernetes-client"], cwd=cache, check=True,
                       capture_output=True, timeout=120)
        deb = next(cache.glob("kubernetes-client_*.deb"))
        subprocess.run(["dpkg-deb", "-x", str(deb), str(cache / "root")], check=True,
                       capture_output=True, timeout=120)
    except (OSError, subprocess.SubprocessError, StopIteration) as e:
        pytest.skip(f"Debian's kubectl 1.20 cannot be downloaded here (apt-get download "
                    f"kubernetes-client failed: {e})")
    return KUBECTL_120


class Kubectl:
    def __init__(self, binary: str, kubeconfig: Path, home: Path) -> None:
        self.binary = binary
        self.env = {**os.environ, "KUBECONFIG": str(kubeconfig), "HOME": str(home)}

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([self.binary, *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if check:
            assert proc.returncode == 0, f"kubectl {' '.join(args)}: {proc.stderr}"
        return proc


@pytest.fixture(params=["machine", "debian-1.20"])
def kubectl(request: pytest.FixtureRequest, apiservers: Any, tmp_path: Path) -> Kubectl:
    if request.param == "machine":
        binary = shutil.which("kubectl")
        if binary is None:
            pytest.skip("no kubectl on this machine")
    else:
        binary = str(_debian_kubectl())
    apiserver = apiservers()
    return Kubectl(binary, apiserver.kubeconfig, tmp_path)


def test_apply_get_edit_delete_every_seed_manifest(kubectl: Kubectl, tmp_path: Path) -> None:
    assert "namespace/example created" in kubectl("create", "namespace", "example").stdout
    manifests = _manifests()
    assert len(manifests) >= 7
    applied: list[tuple[str, str, str]] = []
    for path in manifests:
        out = kubectl("apply", "-f", str(path)).stdout
        assert out.strip(), path
        for line in out.strip().splitlines():
            assert line.endswith((" created", " configured", " unchanged")), line
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                applied.append((doc["kind"], doc["metadata"]["name"],
                                doc["metadata"].get("namespace", "")))

    # Re-applying unchanged files changes nothing; an edited file is "configured".
    assert "unchanged" in kubectl("apply", "-f", str(manifests[0])).stdout
    pool_file = REPO / "examples" / "seed-000" / "cilium-config.yaml"
    edited = tmp_path / "edited.yaml"
    edited.write_text(pool_file.read_text().replace("10.0.0.200", "10.0.0.150"))
    assert "ciliumloadbalancerippool.cilium.io/first-pool configured" in kubectl(
        "apply", "-f", str(edited)).stdout
    stop = kubectl("get", "ciliumloadbalancerippool", "first-pool", "-o",
                   "jsonpath={.spec.blocks[0].stop}").stdout
    assert stop == "10.0.0.150"

    svc = kubectl("get", "svc", "-A", "-o", "wide").stdout.splitlines()
    for column in ("NAMESPACE", "NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE",
                   "SELECTOR"):
        assert column in svc[0].split(), svc[0]
    blue = next(line.split() for line in svc if "service-blue" in line)
    assert blue[0] == "example" and blue[2] == "LoadBalancer" and blue[3].startswith("10.43.")
    assert any(line.split()[1] == "kubernetes" and "10.43.0.1" in line for line in svc[1:])

    pools = kubectl("get", "ciliumloadbalancerippools").stdout.splitlines()
    assert pools[0].split()[:5] == ["NAME", "DISABLED", "CONFLICTING", "IPS", "AVAILABLE"]
    assert any(line.split()[:2] == ["first-pool", "false"] for line in pools[1:])
    assert "default-l2-announcement-policy" in kubectl("get", "l2announcement").stdout

    for path in manifests:
        proc = kubectl("delete", "-f", str(path), "--ignore-not-found")
        for line in proc.stdout.strip().splitlines():
            assert line.endswith(" deleted"), line
    for kind, name, namespace in applied:
        args = ["get", kind, name] + (["-n", namespace] if namespace else [])
        proc = kubectl(*args, check=False)
        assert proc.returncode != 0 and "NotFound" in proc.stderr, (kind, name)
    kubectl("delete", "namespace", "example")
    assert kubectl("get", "namespace", "example", check=False).returncode != 0


def test_typed_create_commands_send_protobuf_that_is_read_right(kubectl: Kubectl) -> None:
    """kubectl's typed `create` commands send protobuf; what the server stores must be what
    the same command prints as JSON with --dry-run=client."""
    commands = [
        ["create", "deployment", "web", "--image=nginx:1", "--port=80", "--replicas=3"],
        ["create", "deployment", "zero", "--image=busybox", "--replicas=0", "--", "sleep", "1"],
        ["create", "service", "nodeport", "np", "--tcp=80:8080"],
        ["create", "service", "loadbalancer", "lb", "--tcp=443:https"],
        ["create", "configmap", "cm", "--from-literal=a=1", "--from-literal=empty="],
        ["create", "secret", "generic", "sec", "--from-literal=k=v"],
        ["create", "serviceaccount", "sa"],
    ]
    for cmd in commands:
        # Flags go before a `--` that starts the container command.
        wanted = json.loads(kubectl(cmd[0], "--dry-run=client", "-o", "json",
                                    *cmd[1:]).stdout)
        kubectl(*cmd)
        kind, name = wanted["kind"], wanted["metadata"]["name"]
        got = json.loads(kubectl("get", kind, name, "-o", "json").stdout)
        assert got["metadata"].get("labels") == wanted["metadata"].get("labels"), cmd
        for field in ("data", "type"):
            if field in wanted:
                assert got[field] == wanted[field], (cmd, field)
        if kind == "Deployment":
            spec, want = got["spec"], wanted["spec"]
            assert spec["replicas"] == want["replicas"]
            assert spec["selector"] == want["selector"]
            assert spec["template"]["metadata"]["labels"] == want["template"]["metadata"][
                "labels"]
            for c_got, c_want in zip(spec["template"]["spec"]["containers"],
                                     want["template"]["spec"]["containers"], strict=True):
                for key in ("name", "image", "command", "ports"):
                    assert c_got.get(key) == c_want.get(key), (cmd, key)
        if kind == "Service":
            assert got["spec"]["type"] == wanted["spec"]["type"]
            assert got["spec"]["selector"] == wanted["spec"]["selector"]
            for p_got, p_want in zip(got["spec"]["ports"], wanted["spec"]["ports"], strict=True):
                for key in ("name", "protocol", "port", "targetPort"):
                    assert p_got[key] == p_want[key], (cmd, key)
