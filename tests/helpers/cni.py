"""Helpers for CNI and pod-network tests: an endpoint agent in a node namespace, nodes with
agents on a LAN, a node namespace with an eth0, plugin calls.

Everything runs in namespaces made by the test (unique names, removed in finalizers) and the
real `.venv/bin/hexlane-cni` is run as a subprocess through `nsenter`, as a runtime would.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from hexlane.cni.main import AgentUnavailable, call_agent
from hexlane.lab import netns
from hexlane.lab.netns import Topology

BIN = Path(sys.executable).parent
PLUGIN = str(BIN / "hexlane-cni")


class Agent:
    """`hexlane dev endpoints` in a node namespace, restartable."""

    def __init__(self, topo: Topology, role: str, state_dir: Path, *, node_ip: str,
                 pod_cidr: str, mode: str = "native", peers: Sequence[str] = (),
                 lan_mtu: int = 1500, extra_args: Sequence[str] = ()) -> None:
        self.topo, self.role, self.state_dir = topo, role, state_dir
        self.argv = [sys.executable, "-m", "hexlane.cli.main", "dev", "endpoints",
                     "--state-dir", str(state_dir), "--node-name", role,
                     "--node-ip", node_ip, "--pod-cidr", pod_cidr, "--routing-mode", mode,
                     "--lan-mtu", str(lan_mtu)]
        if mode == "native":
            self.argv.append("--auto-direct-node-routes")
        for peer in peers:
            self.argv += ["--peer", peer]
        self.argv += extra_args
        self.proc: subprocess.Popen[Any] | None = None
        self.log = state_dir.parent / f"{role}-agent.log"

    def start(self, timeout: float = 20) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "a") as log:
            self.proc = self.topo.start(self.role, self.argv, stdout=log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited: {self.log.read_text()[-2000:]}")
            try:
                status, _ = call_agent(str(self.state_dir), "GET", "/v1/healthz", timeout=2)
                if status == 200:
                    return
            except AgentUnavailable:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"agent not ready: {self.log.read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            netns.stop_process(self.proc)
            self.proc = None

    def get(self, path: str) -> Any:
        status, body = call_agent(str(self.state_dir), "GET", path)
        assert status == 200, body
        return body



def start_agents(topo: Topology, nodes: Mapping[str, tuple[str, str]], tmp: Path, *,
                 mode: str = "native",
                 extra_args: Callable[[str], Sequence[str]] = lambda name: ()
                 ) -> dict[str, Agent]:
    """A node namespace per entry of `nodes` (name -> (node IP, pod CIDR)) on the topology's
    LAN "lan", each with a started agent (state in tmp/<name>/state) that knows the others
    as peers."""
    agents = {}
    for name, (ip, cidr) in nodes.items():
        topo.add(name)
        topo.plug("lan", name, f"{ip}/24")
        peers = [f"{other},{oip},{ocidr}" for other, (oip, ocidr) in nodes.items()
                 if other != name]
        agents[name] = Agent(topo, name, tmp / name / "state", node_ip=ip, pod_cidr=cidr,
                             mode=mode, peers=peers, extra_args=extra_args(name))
    for agent in agents.values():
        agent.start()
    return agents


def node_with_eth0(topo: Topology, address: str) -> str:
    """A `node` namespace whose eth0 (a veth, its peer eth0p beside it) has `address`, both
    ends up; its name."""
    ns = topo.add("node")
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "eth0p"])
    netns.run(ns, ["ip", "addr", "add", address, "dev", "eth0"])
    netns.run(ns, ["ip", "link", "set", "eth0", "up"])
    netns.run(ns, ["ip", "link", "set", "eth0p", "up"])
    return ns

def cni(ns: str, command: str, config: Mapping[str, Any] | str | None, *,
        container_id: str | None = "c1", netns_path: str | None = None, ifname: str = "eth0",
        args: str = "", extra_env: Mapping[str, str] | None = None, plugin: str = PLUGIN
        ) -> tuple[int, Any]:
    """Run the real plugin (`plugin`: another executable of it) in namespace `ns`; (exit
    code, decoded stdout or None)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CNI_PATH": str(BIN)}
    if command:
        env["CNI_COMMAND"] = command
    if container_id is not None:
        env["CNI_CONTAINERID"] = container_id
    if netns_path is not None:
        env["CNI_NETNS"] = netns_path
    if ifname:
        env["CNI_IFNAME"] = ifname
    if args:
        env["CNI_ARGS"] = args
    env.update(extra_env or {})
    stdin = config if isinstance(config, str) else json.dumps(config) if config else ""
    result = netns.run(ns, [plugin], check=False, input=stdin, env=env, timeout=60)
    out = result.stdout.strip()
    return result.returncode, json.loads(out) if out else None


def conf(version: str = "1.0.0", **extra: Any) -> dict[str, Any]:
    return {"cniVersion": version, "name": "hexlane", "type": "hexlane-cni", **extra}
