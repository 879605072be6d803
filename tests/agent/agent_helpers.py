"""Helpers for agent tests: a small cluster in network namespaces with the real daemons.

`Cluster` is a LAN bridge, a control-plane namespace running `hexlane apiserver` on the LAN
(tests/helpers/apiserver.py; node namespaces reach it as on a real cluster), node namespaces
running `hexlane agent` through nsenter with their own state dir, bpf root and CNI
directories, and a client outside the pod range. The test's own API calls go through a
socket opened inside the cp namespace: nothing is ever added to the machine's own namespace.
Everything has a unique name and is removed in finalizers, also when a test fails.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from helpers.apiserver import Api, Apiserver
from hexlane.agent.status import brief
from hexlane.cli.cmd_status import fetch_status
from hexlane.lab import netns
from hexlane.lab.netns import Topology

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]


class AgentProc:
    """`hexlane agent` in a node namespace: start, wait for OK, stop or kill."""

    def __init__(self, cluster: Cluster, node: str, values: Path) -> None:
        self.cluster, self.node, self.values = cluster, node, values
        base = cluster.tmp / node
        self.state_dir = base / "state"
        self.conf_dir = base / "net.d"
        self.bin_dir = base / "bin"
        self.bpf_root = cluster.bpffs / node
        self.log = base / "agent.log"
        self.proc: subprocess.Popen[Any] | None = None
        base.mkdir(parents=True, exist_ok=True)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "HEXLANE_STATE_DIR": str(self.state_dir),
                "HEXLANE_BPF_ROOT": str(self.bpf_root)}

    def start(self) -> None:
        argv = [*HEXLANE, "agent", "--node", self.node,
                "--kubeconfig", str(self.cluster.kubeconfig), "--values", str(self.values),
                "--state-dir", str(self.state_dir), "--bpf-root", str(self.bpf_root),
                "--cni-conf-dir", str(self.conf_dir), "--cni-bin-dir", str(self.bin_dir),
                "--sync-interval", "1s", "--metrics-addr", "127.0.0.1:9962"]
        with open(self.log, "a") as log:
            self.proc = self.cluster.topo.start(self.node, argv, stdout=log,
                                                stderr=subprocess.STDOUT)

    def hexlane(self, *args: str, check: bool = False, timeout: float = 30
                ) -> subprocess.CompletedProcess[Any]:
        """Run `hexlane ARGS` in this node's namespace with its state dir and bpf root."""
        return netns.run(self.cluster.topo[self.node], [*HEXLANE, *args], check=check,
                         env=self.env, timeout=timeout)

    def healthy(self) -> tuple[bool, str]:
        """The agent's verdict, asked in-process from a thread inside the node namespace
        (cheaper than a CLI process per poll)."""
        def ask() -> tuple[bool, str]:
            try:
                ok, reasons = brief(fetch_status(str(self.state_dir), timeout=5))
            except RuntimeError as err:
                return False, str(err)
            return ok, "; ".join(reasons)
        result: tuple[bool, str] = netns.run_in_netns(
            netns.netns_path(self.cluster.topo[self.node]), ask)
        return result

    def wait_ok(self, timeout: float = 60) -> None:
        """Until the agent is healthy; then `hexlane status --brief` itself must say OK."""
        deadline = time.monotonic() + timeout
        reason = ""
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent {self.node} exited:\n{self.tail()}")
            ok, reason = self.healthy()
            if ok:
                out = self.hexlane("status", "--brief")
                assert (out.returncode, out.stdout.strip()) == (0, "OK"), out
                return
            time.sleep(0.2)
        raise AssertionError(f"agent {self.node} not OK: {reason}\n{self.tail()}")

    def status(self) -> dict[str, Any]:
        out = self.hexlane("status", "-o", "json")
        return dict(json.loads(out.stdout))

    def tail(self) -> str:
        return self.log.read_text()[-4000:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.proc is not None:
            netns.stop_process(self.proc, timeout=10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


class Cluster:
    """LAN + cp (apiserver) + nodes + client; see the module docstring."""

    LAN = "10.81.0"
    CLIENT = "10.81.0.2"
    CP = "10.81.0.10"

    def __init__(self, topo: Topology, tmp: Path, bpffs: Path) -> None:
        self.topo, self.tmp, self.bpffs = topo, tmp, bpffs
        self.agents: dict[str, AgentProc] = {}
        topo.lan()
        for role, ip in (("cp", self.CP), ("client", self.CLIENT)):
            topo.add(role)
            topo.plug("lan", role, f"{ip}/24")
        self.apiserver = Apiserver(tmp / "apiserver", listen=f"{self.CP}:6443",
                                   spawn=functools.partial(topo.start, "cp"), netns=topo["cp"])
        self.kubeconfig = self.apiserver.kubeconfig
        self.start_apiserver()

    @property
    def api(self) -> Api:
        """The JSON client of the apiserver, its sockets opened in the cp namespace."""
        return self.apiserver.api

    def start_apiserver(self) -> None:
        """Start `hexlane apiserver` in cp (again: same data, token and certificate)."""
        self.apiserver.start()

    def stop_apiserver(self) -> None:
        self.apiserver.stop()

    def node_ip(self, index: int) -> str:
        return f"{self.LAN}.{10 + index}"

    def add_node(self, index: int) -> str:
        """A node namespace on the LAN at .(10+index), and its Node object with InternalIP."""
        name = f"node{index}"
        self.topo.add(name)
        self.topo.plug("lan", name, f"{self.node_ip(index)}/24")
        self.create_node(name, self.node_ip(index))
        return name

    def create_node(self, name: str, ip: str, spec: Mapping[str, Any] | None = None) -> None:
        self.api.ok("POST", "/api/v1/nodes", {"apiVersion": "v1", "kind": "Node",
                                              "metadata": {"name": name},
                                              "spec": dict(spec or {})})
        self.api.merge(f"/api/v1/nodes/{name}/status",
                       {"status": {"addresses": [{"type": "InternalIP", "address": ip},
                                                 {"type": "Hostname", "address": name}]}})

    def set_ciliumnode(self, name: str, cidr: str) -> None:
        self.api.ok("POST", "/apis/cilium.io/v2/ciliumnodes", {
            "apiVersion": "cilium.io/v2", "kind": "CiliumNode", "metadata": {"name": name},
            "spec": {"ipam": {"podCIDRs": [cidr]}}})

    def values(self, name: str, text: str) -> Path:
        path = self.tmp / f"{name}.yaml"
        path.write_text(text)
        return path

    def start_agent(self, node: str, values: Path) -> AgentProc:
        agent = self.agents.get(node)
        if agent is None or agent.values != values:
            agent = AgentProc(self, node, values)
            self.agents[node] = agent
        agent.start()
        return agent

    def run(self, role: str, *argv: str, check: bool = True, timeout: float = 30
            ) -> subprocess.CompletedProcess[Any]:
        return netns.run(self.topo[role], list(argv), check=check, timeout=timeout)

    def cni(self, node: str, command: str, name: str) -> subprocess.CompletedProcess[Any]:
        """Run the installed plugin in `node` for pod `name`, as a runtime does."""
        agent = self.agents[node]
        conflist = json.loads((agent.conf_dir / "05-hexlane.conflist").read_text())
        plugin = conflist["plugins"][0]
        config = {**plugin, "name": conflist["name"], "cniVersion": conflist["cniVersion"]}
        if name not in self.topo.namespaces:
            self.topo.add(name)
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_PATH": str(agent.bin_dir),
               "CNI_COMMAND": command, "CNI_CONTAINERID": f"ctr-{name}",
               "CNI_NETNS": netns.netns_path(self.topo[name]), "CNI_IFNAME": "eth0",
               "CNI_ARGS": f"K8S_POD_NAMESPACE=default;K8S_POD_NAME={name}"}
        return netns.run(self.topo[node], [str(agent.bin_dir / plugin["type"])], check=False,
                         input=json.dumps(config), env=env, timeout=60)

    def add_pod(self, node: str, name: str) -> str:
        """A pod namespace wired through the installed conflist and plugin; its IP."""
        out = self.cni(node, "ADD", name)
        assert out.returncode == 0, (out.stdout, out.stderr, self.agents[node].tail())
        result = json.loads(out.stdout)
        return str(result["ips"][0]["address"].split("/")[0])

    def ping(self, role: str, ip: str, count: int = 1) -> bool:
        out = self.run(role, "busybox", "ping", "-c", str(count), "-W", "2", ip, check=False)
        return out.returncode == 0

    def stop(self) -> None:
        for agent in self.agents.values():
            agent.stop()

