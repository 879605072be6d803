"""containerd's `ctr run --cni` gets its container's network from `hexlane-cni`.

A real client no one here wrote: Debian's containerd 1.6 (its own root, state and socket in a
temp dir) runs a busybox container from an OCI tarball built here (nothing pulled), with ctr
inside a node namespace so that ctr's CNI calls wire the host side into that node. Pins down:
the container gets a pod IP from the node's pod CIDR, reaches a pod on the other node (ping
and TCP), and removing it (`--rm`) releases the IP through CNI DEL; with the conflist at
cniVersion 1.0.0 and at 0.4.0 (podman's CNI backend).

ctr always reads /etc/cni/net.d and /opt/cni/bin: the test installs a uniquely named conflist
(sorted first) and plugin link there and removes exactly those afterwards.
"""

from __future__ import annotations

import hashlib
import io
import json
import secrets
import shutil
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.cni import PLUGIN, Agent, cni, conf, start_agents
from hexlane.lab import netns
from hexlane.lab.netns import Topology

pytestmark = [pytest.mark.slow, pytest.mark.root]

IMAGE = "docker.io/local/busybox:1"
CNI_CONF_DIR = Path("/etc/cni/net.d")
CNI_BIN_DIR = Path("/opt/cni/bin")


def build_busybox_oci(path: Path) -> None:
    """An OCI image layout tarball: one layer with busybox-static and a few applet links."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        for d in ("bin", "tmp", "etc", "proc", "sys", "dev"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(info)
        data = Path(shutil.which("busybox") or "/bin/busybox").read_bytes()
        info = tarfile.TarInfo("bin/busybox")
        info.size, info.mode = len(data), 0o755
        layer.addfile(info, io.BytesIO(data))
        for app in ("sh", "ping", "nc", "ip", "cat", "printf", "grep"):
            info = tarfile.TarInfo(f"bin/{app}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            layer.addfile(info)
    layer_bytes = layer_buf.getvalue()

    with tarfile.open(path, "w") as out:
        def blob(data: bytes) -> str:
            digest = hashlib.sha256(data).hexdigest()
            info = tarfile.TarInfo(f"blobs/sha256/{digest}")
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
            return f"sha256:{digest}"

        layer_digest = blob(layer_bytes)
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Cmd": ["sh"], "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]}}).encode()
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": blob(config), "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": layer_digest, "size": len(layer_bytes)}]}).encode()
        index = json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": blob(manifest), "size": len(manifest),
            "annotations": {"io.containerd.image.name": IMAGE,
                            "org.opencontainers.image.ref.name": "1"}}]}).encode()
        for name, data in (("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
                           ("index.json", index)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


class CniInstall:
    """A conflist and plugin link under /etc/cni/net.d and /opt/cni/bin, removed exactly."""

    def __init__(self, version: str = "1.0.0") -> None:
        tag = secrets.token_hex(3)
        self.version = version
        self.plugin_type = f"hexlane-cni-test-{tag}"
        self.conf = CNI_CONF_DIR / f"00-hexlane-test-{tag}.conflist"
        self.link = CNI_BIN_DIR / self.plugin_type
        self.made_dirs: list[Path] = []

    def __enter__(self) -> CniInstall:
        for d in (CNI_CONF_DIR.parent, CNI_CONF_DIR, CNI_BIN_DIR.parent, CNI_BIN_DIR):
            if not d.exists():
                d.mkdir()
                self.made_dirs.append(d)
        first = sorted(p.name for p in CNI_CONF_DIR.iterdir()
                       if p.suffix in (".conf", ".conflist", ".json"))
        if first and first[0] < self.conf.name:
            self.__exit__()
            pytest.skip(f"{CNI_CONF_DIR / first[0]} would be used by ctr instead of ours")
        self.link.symlink_to(PLUGIN)
        self.conf.write_text(json.dumps({"cniVersion": self.version, "name": "hexlane",
                                         "plugins": [{"type": self.plugin_type}]}))
        return self

    def __exit__(self, *exc: object) -> None:
        self.conf.unlink(missing_ok=True)
        self.link.unlink(missing_ok=True)
        for d in reversed(self.made_dirs):
            if d.exists() and not any(d.iterdir()):
                d.rmdir()


class Containerd:
    """containerd with its own root/state/socket under `base`, run in a node namespace."""

    def __init__(self, topo: Topology, role: str, base: Path) -> None:
        self.topo, self.role, self.base = topo, role, base
        self.sock = base / "containerd.sock"
        self.config = base / "config.toml"
        self.config.write_text(
            "version = 2\n"
            f'root = "{base / "root"}"\nstate = "{base / "state"}"\n'
            'disabled_plugins = ["io.containerd.grpc.v1.cri"]\n'
            f'[grpc]\n  address = "{self.sock}"\n')
        self.log = open(base / "containerd.log", "w")  # noqa: SIM115 - closed in stop()
        self.proc = topo.start(role, ["containerd", "--config", str(self.config)],
                               stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not self.sock.exists():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError((base / "containerd.log").read_text()[-2000:])
            time.sleep(0.05)

    def ctr(self, *args: str, check: bool = True, timeout: float = 60
            ) -> subprocess.CompletedProcess[str]:
        """ctr in the node's namespace (its CNI calls run from this process)."""
        return netns.run(self.role_ns, ["ctr", "-a", str(self.sock), "-n", "hexlane-test",
                                        *args], check=check, timeout=timeout)

    @property
    def role_ns(self) -> str:
        return self.topo[self.role]

    def stop(self) -> None:
        listing = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in listing:
            self.ctr("tasks", "kill", "-s", "KILL", task, check=False)
        for task in listing:
            self.ctr("tasks", "rm", "-f", task, check=False)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "rm", container, check=False)
        netns.stop_process(self.proc)
        self.log.close()
        # A task that died half-way may leave its rootfs mounted below our state dir.
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
        for mount in sorted((m for m in mounts if m.startswith(str(self.base))), reverse=True):
            subprocess.run(["umount", "-l", mount], check=False)
        shutil.rmtree(self.base / "root", ignore_errors=True)
        shutil.rmtree(self.base / "state", ignore_errors=True)


@pytest.fixture
def two_nodes(tmp_path: Path) -> Iterator[tuple[Topology, dict[str, Agent]]]:
    if not shutil.which("containerd") or not shutil.which("ctr"):
        pytest.skip("containerd is not installed")
    nodes = {"node1": ("10.78.0.11", "10.246.1.0/24"), "node2": ("10.78.0.12", "10.246.2.0/24")}
    with Topology("hxd") as topo:
        topo.lan()
        yield topo, start_agents(topo, nodes, tmp_path)
        made = list(topo.created)
    assert not any(netns.exists(n) for n in made)


def test_ctr_run_cni_container_reaches_a_pod_on_another_node(
        two_nodes: tuple[Topology, dict[str, Agent]], tmp_path: Path) -> None:
    topo, agents = two_nodes
    # The pod on node2: an HTTP server answering its name.
    pod = topo.add("b1")
    rc, result = cni(topo["node2"], "ADD", conf(), container_id="b1",
                     netns_path=netns.netns_path(pod))
    assert rc == 0, result
    b1 = result["ips"][0]["address"].split("/")[0]
    www = tmp_path / "www"
    www.mkdir()
    (www / "name").write_text("pod-b1\n")
    topo.start("b1", ["busybox", "httpd", "-f", "-p", "8080", "-h", str(www)])

    image = tmp_path / "busybox-oci.tar"
    build_busybox_oci(image)
    base = tmp_path / "containerd"
    base.mkdir()
    ctrd = Containerd(topo, "node1", base)
    try:
        ctrd.ctr("images", "import", str(image))
        # 1.0.0 as our conflist says, and 0.4.0 as podman's CNI backend writes them.
        for version in ("1.0.0", "0.4.0"):
            with CniInstall(version):
                script = (f"ip -4 addr show eth0 | grep inet; ping -c1 -W3 {b1} && "
                          f"printf 'GET /name HTTP/1.0\\r\\n\\r\\n' | nc {b1} 8080")
                run = ctrd.ctr("run", "--rm", "--cni", IMAGE,
                               f"web-client-{version.replace('.', '-')}", "sh", "-c", script,
                               check=False, timeout=120)
            assert run.returncode == 0, (version, run.stdout + run.stderr)
            assert "inet 10.246.1." in run.stdout and "/32" in run.stdout
            assert "1 packets received" in run.stdout
            assert "pod-b1" in run.stdout
            # --rm removed the container: its CNI DEL released the IP and the veth.
            assert agents["node1"].get("/v1/endpoints") == []
            assert "lxc" not in netns.run(topo["node1"], ["ip", "link"]).stdout
    finally:
        ctrd.stop()
