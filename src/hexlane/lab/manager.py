"""`hexlane lab` carried out: build, inspect, break, mend and remove a lab.

`up` makes the namespaces and links of `topology.LabPlan`, writes the lab's files (effective
values; kubeconfigs: the admin's, and one per service account for the agents, the operator
and the relay, so the apiserver's audit log in `audit.log` tells their requests apart) and
starts the daemons, each with `nsenter --net=/run/netns/<host>` in a
session of its own:

- cp: `hexlane apiserver` on <cp>:6443, the API proxy when the values' k8sServiceHost is a
  loopback address, `python -m hexlane.lab.controllermanager`, the cluster DNS
  (`python -m hexlane.lab.dnsserver` on <cp>:53, behind kube-system/kube-dns at 10.43.0.10)
  and `hexlane operator`;
- every node: the API proxy (k8sServiceHost/Port, e.g. k3s's 127.0.0.1:6444), `hexlane agent`
  (its CNI config and plugin go to the node's directories in the lab's) and the lab kubelet.

Every process is recorded in `state.json` (argv, environment, pid) so `kill`/`revive` can stop
and restart a node's, and `down` stops every process found in a namespace of the lab (by pid,
also those no state file remembers), then removes the namespaces, the BPF pins and the lab's
directory. `upgrade` layers values over a running lab's (`helm upgrade --reuse-values`) and
restarts what reads them. `freeze`/`thaw` SIGSTOP/SIGCONT every process of a host (a node
with its pods, or the cp); `status` reads who is frozen from the processes' state in /proc.
Nothing is ever added to the machine's own network namespace.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, ip_address
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hexlane.config import Values, require_values
from hexlane.datapath.bpffs import is_bpffs
from hexlane.deploy.rbac import ACCOUNTS, AGENT, OPERATOR, RELAY, service_account_user
from hexlane.hubble import certs as hubble_certs
from hexlane.hubble.ui import UI_PORT
from hexlane.k8s.client import KubeClient, load_client_config
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.k8s.resources import CiliumNode, EndpointSlice, Node, Pod, kind_of
from hexlane.model.errors import InputError, Problem

from . import netns
from .podspec import is_node_ready, name_of
from .topology import (
    APISERVER_PORT,
    BPF_ROOT,
    BRIDGE,
    CLUSTER_CIDR,
    CLUSTER_DNS,
    LAB_ROOT,
    SERVICE_CIDR,
    LabPlan,
    check_lab_name,
    lab_dir,
    parse_target,
    pod_netns_name,
    pod_resolv_conf_path,
)

T = TypeVar("T")
STATE_FILE = "state.json"
AUDIT_LOG = "audit.log"  # every API request: user, verb, resource (hexlane.apiserver.audit)
BASE_VALUES: dict[str, Any] = {
    # Cilium's default 10.0.0.0/8 would cover the LAN.
    "ipam": {"operator": {"clusterPoolIPv4PodCIDRList": [CLUSTER_CIDR]}},
    # The lab runs no kube-proxy: without the replacement no Service would work.
    "kubeProxyReplacement": True,
    "externalIPs": {"enabled": True},
    # One lab can hold Services in every forwarding mode and algorithm at once.
    "bpf": {"lbAlgorithmAnnotation": True, "lbModeAnnotation": True},
    # Every node's flows in one place (`hexlane lab exec cp -- hexlane hubble observe`);
    # the lab's nodes are one hop away, so a dead one is noticed and a revived one
    # rejoins within seconds.
    "hubble": {"relay": {"enabled": True, "dialTimeout": "2s", "retryTimeout": "1s"},
               "ui": {"enabled": True}},
}


class LabError(Exception):
    """A lab command could not do what was asked (the message says what and where)."""


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Progress:
    """`lab up`'s steps, one line each as it starts or finishes, with the seconds since `up`
    began, on standard error (the usage `lab up` prints at the end goes to standard out)."""

    def __init__(self, out: Callable[[str], None] | None = None) -> None:
        self.started = time.monotonic()
        self.out = out or _log
        self.states: dict[str, str] = {}

    def __call__(self, msg: str) -> None:
        self.out(f"{time.monotonic() - self.started:5.1f}s  {msg}")

    def state(self, what: str, state: str) -> None:
        """`what: state`, when it is not what was last said of `what` (polled states)."""
        if self.states.get(what) != state:
            self.states[what] = state
            self(f"{what}: {state}")


def hexlane_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hexlane.cli.main", *args]


# --- values -------------------------------------------------------------------


def lab_values(files: Sequence[str], sets: Sequence[str]) -> Values:
    """The lab's base values, then the files, then --set; InputError on any error."""
    values, warnings = require_values(files, sets, base=[("lab base values", BASE_VALUES)])
    for p in warnings:
        _log(str(p))
    return values


@dataclass(frozen=True)
class ApiEndpoint:
    """Where nodes reach the API: directly, or through a local proxy at (host, port)."""

    host: str
    port: int
    proxy: bool


def api_endpoint(values: Values, plan: LabPlan) -> ApiEndpoint:
    host = values.k8s_service_host
    if not host:
        return ApiEndpoint(str(plan.cp.ip), APISERVER_PORT, False)
    port = values.k8s_service_port or APISERVER_PORT
    if host == str(plan.cp.ip) and port == APISERVER_PORT:
        return ApiEndpoint(host, port, False)
    try:
        loopback = ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if not loopback:
        raise InputError(Problem(
            f"the lab serves the API at {plan.cp.ip}:{APISERVER_PORT} and through a node-local "
            f"proxy on a loopback address; {host!r} is neither", "k8sServiceHost"))
    return ApiEndpoint("127.0.0.1" if host == "localhost" else host, port, True)


def cluster_cidr(values: Values) -> IPv4Network:
    """The CIDR node pod CIDRs come from: for `ipam.mode: kubernetes` the cluster's (the
    values' native routing CIDR when they name one, as on Talos), else the cluster pool."""
    if values.ipam.mode == "kubernetes" and values.ipv4_native_routing_cidr is not None:
        return values.ipv4_native_routing_cidr
    pool = values.ipam.cluster_pool_ipv4_pod_cidrs
    return pool[0] if pool else IPv4Network(CLUSTER_CIDR)


# --- state --------------------------------------------------------------------


@dataclass
class Proc:
    """A daemon the lab started."""

    name: str  # "apiserver", "node1/kubelet", ...
    host: str  # role: "cp", "node1"
    argv: list[str]
    env: dict[str, str]
    log: str
    pid: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class LabState:
    plan: LabPlan
    procs: list[Proc] = field(default_factory=list)
    phase: str = "creating"

    @property
    def path(self) -> Path:
        return self.plan.dir / STATE_FILE

    def save(self) -> None:
        data = {"plan": self.plan.to_dict(), "phase": self.phase,
                "procs": [p.to_dict() for p in self.procs]}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)

    @classmethod
    def load(cls, name: str) -> LabState | None:
        path = lab_dir(name) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        state = cls(LabPlan.from_dict(data["plan"]), [Proc(**p) for p in data["procs"]],
                    data.get("phase", ""))
        return state

    def node_procs(self, role: str) -> list[Proc]:
        return [p for p in self.procs if p.host == role]


# --- processes ----------------------------------------------------------------


def start_proc(plan: LabPlan, proc: Proc) -> Proc:
    """Start `proc` in its host's namespace, in a session of its own, output to its log."""
    Path(proc.log).parent.mkdir(parents=True, exist_ok=True)
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
           "HOME": os.environ.get("HOME", "/root"), "PYTHONUNBUFFERED": "1", **proc.env}
    with open(proc.log, "ab") as out:
        p = netns.popen(plan.netns(proc.host), proc.argv, stdin=subprocess.DEVNULL,
                        stdout=out, stderr=subprocess.STDOUT, env=env, cwd="/",
                        start_new_session=True)
    proc.pid = p.pid
    return proc


def _netns_inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except OSError:
        return None


def pids_in_netns(paths: Sequence[str]) -> list[int]:
    """Every process whose network namespace is one of `paths` (named namespaces)."""
    inodes = {ino for p in paths if (ino := _netns_inode(p)) is not None}
    # The machine's own namespace is never one of ours, whatever a caller passes.
    inodes.discard(_netns_inode("/proc/1/ns/net") or -1)
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        if _netns_inode(f"/proc/{entry}/ns/net") in inodes:
            out.append(int(entry))
    return sorted(out)


def proc_state(pid: int) -> str:
    """The process's state letter from /proc (`R`, `S`, `T` stopped, `Z`...); "" when gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def alive(pid: int) -> bool:
    return proc_state(pid) not in ("", "Z")


def stopped(pid: int) -> bool:
    """Stopped by a signal (SIGSTOP: `lab freeze`), not traced."""
    return proc_state(pid) == "T"


def stop_pids(pids: Sequence[int], *, sig: int = signal.SIGTERM, wait: float = 5.0) -> None:
    """Signal each pid (its process group when it leads one), wait, then SIGKILL the rest.
    A SIGCONT follows `sig`, as systemd does, so a stopped (frozen) process handles it at once
    instead of holding it pending until the SIGKILL."""
    def send(pid: int, s: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) == pid:
                os.killpg(pid, s)
            else:
                os.kill(pid, s)
    for pid in pids:
        send(pid, sig)
        if sig != signal.SIGKILL:
            send(pid, signal.SIGCONT)
    deadline = time.monotonic() + wait
    while sig != signal.SIGKILL and time.monotonic() < deadline and any(map(alive, pids)):
        time.sleep(0.05)
    for pid in pids:
        if alive(pid):
            send(pid, signal.SIGKILL)
    for pid in pids:  # reap our own children (revive in the same process, tests)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


# --- talking to the lab's API from the machine ----------------------------------------------------


def in_netns(name: str, fn: Callable[[], T]) -> T:
    return netns.run_in_netns(netns.netns_path(name), fn)


def api_request(plan: LabPlan, method: str, path: str, *, body: Any = None,
                params: dict[str, str] | None = None, timeout: float = 5.0) -> Any:
    """One API request from the client host, through the k8s client layer (`body`, when
    given, sent as JSON; `path` from `Kind.path`)."""
    async def go() -> Any:
        client = KubeClient(load_client_config(None, plan.dir / "kubeconfig"),
                            RateLimiter(50, 100), timeout=timeout)
        try:
            return await client.request(method, path, body=body, params=params)
        finally:
            await client.aclose()
    return in_netns(plan.client.netns, lambda: asyncio.run(go()))


def list_nodes(plan: LabPlan) -> list[dict[str, Any]]:
    return list(api_request(plan, "GET", kind_of(Node).path()).get("items") or [])


def agent_healthy(plan: LabPlan, role: str) -> tuple[bool, str]:
    """The node agent's health: `hexlane status --brief` in the node prints OK."""
    result = netns.run(plan.netns(role), hexlane_argv("status", "--brief"), check=False,
                       env={**os.environ, **node_env(plan, role)}, timeout=20)
    return result.returncode == 0, (result.stdout + result.stderr).strip()[-300:]


def node_env(plan: LabPlan, role: str) -> dict[str, str]:
    return {"HEXLANE_STATE_DIR": str(plan.state_dir(role)),
            "HEXLANE_BPF_ROOT": str(plan.bpf_root(role))}


# --- up -----------------------------------------------------------------------


def lab_exists(name: str) -> bool:
    return (lab_dir(name) / STATE_FILE).exists() or bool(lab_namespaces(name))


def _ip(ns: str, *args: str) -> None:
    netns.run(ns, ["ip", *args])


def build_network(plan: LabPlan) -> None:
    """The LAN bridge and every host namespace plugged into it."""
    netns.create(plan.lan_netns)
    _ip(plan.lan_netns, "link", "add", BRIDGE, "type", "bridge")
    _ip(plan.lan_netns, "link", "set", BRIDGE, "up")
    for host in plan.hosts:
        netns.create(host.netns)
        _ip(plan.lan_netns, "link", "add", host.port, "type", "veth", "peer", "name",
            host.ifname, "netns", host.netns)
        _ip(plan.lan_netns, "link", "set", host.port, "master", BRIDGE, "up")
        _ip(host.netns, "addr", "add", str(host.address), "dev", host.ifname)
        _ip(host.netns, "link", "set", host.ifname, "up")


def _kubeconfig_for(source: Path, target: Path, server: str, token: str | None = None
                    ) -> None:
    """`source` for another server address, and with `token` another user."""
    config = yaml.safe_load(source.read_text())
    for cluster in config.get("clusters") or []:
        cluster["cluster"]["server"] = server
    if token is not None:
        for user in config.get("users") or []:
            user["user"] = {"token": token}
    tmp = target.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False))
    tmp.chmod(0o600)
    tmp.replace(target)


def poll(check: Callable[[], T], timeout: float, interval: float = 0.3) -> T | None:
    """Call `check` until it returns something true (returned) or `timeout` seconds pass
    (None): the lab's waits for the cluster to reach a state; callers say what timed out."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(interval)


def _wait(what: str, check: Callable[[], bool], timeout: float, procs: Sequence[Proc] = (),
          interval: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in procs:
            if not alive(p.pid):
                raise LabError(f"{p.name} exited while waiting for {what}; its log "
                               f"{p.log}:\n{_tail(p.log)}")
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(interval)
    raise LabError(f"timed out after {timeout:.0f}s waiting for {what}")


def _tail(path: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def up(name: str, *, nodes: int, lan: str, lan_ifname: str, values_files: Sequence[str],
       sets: Sequence[str], node_grace: float = 40.0, timeout: float = 120.0,
       progress: Callable[[str], None] | None = None) -> LabState:
    """Build and start a lab; returns when every Node is Ready and every agent is healthy.
    Each step is told to `progress` (default: standard error) as it starts or finishes."""
    say = Progress(progress)
    plan = LabPlan.make(name, nodes=nodes, lan=lan, lan_ifname=lan_ifname)
    values = lab_values(values_files, sets)
    endpoint = api_endpoint(values, plan)
    if lab_exists(name):
        raise LabError(f"lab {name} exists already (see `hexlane lab status --name {name}`; "
                       f"`hexlane lab down --name {name}` removes it)")
    plan.dir.mkdir(parents=True, exist_ok=True)
    if not is_bpffs(BPF_ROOT):
        # No BPF file system at /sys/fs/bpf: the lab mounts its own instead of changing the
        # machine's, and `down` unmounts it.
        plan = dataclasses.replace(plan, bpf_base=plan.private_bpffs)
        plan.private_bpffs.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "bpf", "bpf", str(plan.private_bpffs)], check=True,
                       capture_output=True)
    state = LabState(plan)
    state.save()
    values_file = plan.dir / "values.yaml"
    values_file.write_text(yaml.safe_dump(values.tree, sort_keys=True))
    _log(f"lab {name}: network {plan.lan}, {nodes} node(s)")
    build_network(plan)
    say(f"LAN {plan.lan}: a switch and {len(plan.hosts)} hosts "
        f"({', '.join(h.role for h in plan.hosts)})")

    # Control plane: the apiserver first, everything else needs its kubeconfig. The agents,
    # the operator and the relay have identities of their own (the service accounts
    # `hexlane manifests` renders), and every request is audited: what
    # tests/deploy/test_rbac_audit.py holds the rendered roles against.
    cp = plan.cp
    api_dir = plan.dir / "apiserver"
    tokens = {account: secrets.token_urlsafe(24) for account in ACCOUNTS}
    token_file = plan.dir / "tokens.csv"
    token_file.write_text("".join(f"{token},{service_account_user(account)},{account}\n"
                                  for account, token in tokens.items()))
    token_file.chmod(0o600)
    api = start_proc(plan, Proc(
        "apiserver", "cp",
        hexlane_argv("apiserver", "--data-dir", str(api_dir), "--listen",
                     f"{cp.ip}:{APISERVER_PORT}", "--advertise-address", str(cp.ip),
                     "--service-cidr", SERVICE_CIDR, "--token-auth-file", str(token_file),
                     "--audit-log", str(plan.dir / AUDIT_LOG)),
        {}, str(plan.dir / "logs" / "apiserver.log")))
    state.procs.append(api)
    state.save()
    say("control plane: apiserver starting")
    _wait("the apiserver", lambda: (api_dir / "kubeconfig").exists(), 60, [api])
    say(f"control plane: apiserver serving on {cp.ip}:{APISERVER_PORT}")
    _kubeconfig_for(api_dir / "kubeconfig", plan.dir / "kubeconfig", plan.apiserver_url)
    node_url = f"https://{endpoint.host}:{endpoint.port}"
    node_kubeconfig = plan.dir / "node-kubeconfig"  # the lab kubelet's (admin)
    _kubeconfig_for(api_dir / "kubeconfig", node_kubeconfig, node_url)
    kubeconfigs: dict[str, Path] = {}
    for account, token in tokens.items():
        kubeconfigs[account] = plan.dir / f"{account}.kubeconfig"
        # Agents through their node's API proxy; the operator (on the control plane) through
        # the proxy there when there is one, as a node's pods would; the relay directly.
        server = node_url if account == AGENT or (account == OPERATOR and endpoint.proxy) \
            else plan.apiserver_url
        _kubeconfig_for(api_dir / "kubeconfig", kubeconfigs[account], server, token)
    kc = str(plan.dir / "kubeconfig")
    proxy_argv = [sys.executable, "-m", "hexlane.lab.proxy", "--listen",
                  f"{endpoint.host}:{endpoint.port}", "--target", f"{cp.ip}:{APISERVER_PORT}"]
    cp_procs = []
    if endpoint.proxy:
        cp_procs.append(Proc("cp/proxy", "cp", proxy_argv, {},
                             str(plan.dir / "logs" / "cp-proxy.log")))
    cp_procs.append(Proc("controllers", "cp", [
        sys.executable, "-m", "hexlane.lab.controllermanager", "--kubeconfig", kc, "--values",
        str(values_file), "--cluster-cidr", str(cluster_cidr(values)),
        "--node-monitor-grace-period", str(node_grace)], {},
        str(plan.dir / "logs" / "controllers.log")))
    cp_procs.append(Proc("dns", "cp", [
        sys.executable, "-m", "hexlane.lab.dnsserver", "--kubeconfig", kc, "--listen",
        str(cp.ip), "--service-ip", CLUSTER_DNS], {}, str(plan.dir / "logs" / "dns.log")))
    cp_procs.append(Proc("operator", "cp", hexlane_argv(
        "operator", "--kubeconfig", str(kubeconfigs[OPERATOR]),
        "--values", str(values_file)), {}, str(plan.dir / "logs" / "operator.log")))
    for p in cp_procs:
        state.procs.append(start_proc(plan, p))
    state.save()
    started = {"cp/proxy": "API proxy", "controllers": "lab controllers", "dns": "cluster DNS",
               "operator": "operator", "hubble-relay": "Hubble Relay", "hubble-ui": "Hubble UI"}

    # Hubble's mTLS: one CA for every node's certificate, and a client certificate for the
    # CLI and the relay (hubble.tls.enabled, Cilium's default).
    hubble_ca: list[str] = []
    if values.get("hubble.enabled") and values.get("hubble.tls.enabled"):
        ca = hubble_certs.ensure_ca(plan.hubble_ca_dir)
        hubble_certs.ensure_client_cert(ca, plan.hubble_client_dir)
        hubble_ca = ["--hubble-ca-dir", str(plan.hubble_ca_dir)]
    for proc in hubble_cp_procs(plan, values, hubble_ca):
        state.procs.append(start_proc(plan, proc))
    state.save()
    say("control plane: started " + ", ".join(started[p.name] for p in state.procs
                                             if p.name in started))

    # Nodes: the API proxy, the lab kubelet and the agent.
    for host in plan.node_hosts:
        role = host.role
        node_dir = plan.node_dir(role)
        conf_dir, bin_dir = cni_dirs(plan, role)
        conf_dir.mkdir(parents=True, exist_ok=True)
        bin_dir.mkdir(parents=True, exist_ok=True)
        plan.state_dir(role).mkdir(parents=True, exist_ok=True)
        env = node_env(plan, role)
        if endpoint.proxy:
            state.procs.append(start_proc(plan, Proc(
                f"{role}/proxy", role, proxy_argv, {}, str(node_dir / "logs" / "proxy.log"))))
        kubelet_argv = [
            sys.executable, "-m", "hexlane.lab.kubelet", "--lab", name, "--node", role,
            "--node-ip", str(host.ip), "--kubeconfig", str(node_kubeconfig),
            "--dir", str(node_dir / "kubelet"), "--cni-conf-dir", str(conf_dir),
            "--cni-bin-dir", str(bin_dir), "--lease-renew", str(min(10.0, node_grace / 4)),
            "--cluster-dns", CLUSTER_DNS]
        if host.role == "node1":
            kubelet_argv.append("--control-plane")
        state.procs.append(start_proc(plan, Proc(
            f"{role}/kubelet", role, kubelet_argv, env, str(node_dir / "logs" / "kubelet.log"))))
        # The agent waits for its Node to be registered, as on a real node.
        state.procs.append(start_proc(plan, Proc(
            f"{role}/agent", role, hexlane_argv(
                "agent", "--node", role, "--kubeconfig", str(kubeconfigs[AGENT]),
                "--values", str(values_file), "--state-dir", str(plan.state_dir(role)),
                "--bpf-root", str(plan.bpf_root(role)), "--cni-conf-dir", str(conf_dir),
                "--cni-bin-dir", str(bin_dir), "--service-cidr", SERVICE_CIDR, *hubble_ca),
            env, str(node_dir / "logs" / "agent.log"))))
        say(f"{role}: started " + ", ".join(
            p.name.split("/")[1].replace("proxy", "API proxy") for p in state.node_procs(role)))
    state.save()
    say(f"waiting for {plan.nodes} Node(s) to register and be Ready (their daemons start)")
    _wait("every node Ready", lambda: _all_ready(plan, say), timeout, state.procs)
    say("every Node Ready; waiting for the agents to be healthy")
    for host in plan.node_hosts:
        _wait(f"the agent of {host.role} to be healthy",
              lambda role=host.role: agent_healthy(plan, role)[0],  # type: ignore[misc]
              timeout, state.node_procs(host.role))
        say(f"{host.role}: agent healthy")
    _wait("the cluster DNS (kube-system/kube-dns's endpoints)", lambda: _dns_published(plan),
          timeout, [p for p in state.procs if p.name == "dns"])
    say(f"cluster DNS serving behind kube-system/kube-dns ({CLUSTER_DNS})")
    state.phase = "up"
    state.save()
    return state


def hubble_cp_procs(plan: LabPlan, values: Values, hubble_ca: Sequence[str]) -> list[Proc]:
    """The Hubble daemons of the control-plane host the values ask for: the relay (where
    `hubble observe` expects it, localhost:4245; its peers are the Nodes) and the UI beside it
    (reading the relay, its default server)."""
    if not (values.get("hubble.enabled") and values.get("hubble.relay.enabled")):
        return []
    procs = [Proc("hubble-relay", "cp", hexlane_argv(
        "hubble", "relay", "--kubeconfig", str(plan.dir / f"{RELAY}.kubeconfig"),
        "--values", str(plan.dir / "values.yaml"), *hubble_ca), {},
        str(plan.dir / "logs" / "hubble-relay.log"))]
    if values.get("hubble.ui.enabled"):
        procs.append(Proc("hubble-ui", "cp", hexlane_argv(
            "hubble", "ui", "--listen", f":{UI_PORT}"), {},
            str(plan.dir / "logs" / "hubble-ui.log")))
    return procs


# Values the lab's wiring is built from at `up` (addresses, proxies, pod CIDRs, certificates):
# `upgrade` refuses to change them rather than leave a lab that does not match its values.
FIXED_AT_UP = ("k8sServiceHost", "k8sServicePort", "ipam.mode", "ipv4NativeRoutingCIDR",
               "ipam.operator.clusterPoolIPv4PodCIDRList", "hubble.enabled",
               "hubble.tls.enabled")


def upgrade(name: str, *, values_files: Sequence[str], sets: Sequence[str],
            timeout: float = 120.0) -> list[str]:
    """`helm upgrade --reuse-values -f F --set K=V` for a running lab: the files and flags
    are layered over the lab's effective values, which are written anew; then, as the chart's
    `rollOut*Pods` checksums would, the operator and every agent restart on the new values,
    and the relay and UI start or stop as the values now ask. Returns what was restarted,
    started and stopped; returns once every agent is healthy again."""
    state = _need_state(name)
    plan = state.plan
    values_file = plan.dir / "values.yaml"
    old = lab_values([str(values_file)], [])
    new = lab_values([str(values_file), *values_files], sets)
    changed = [k for k in FIXED_AT_UP if old.get(k) != new.get(k)]
    if changed:
        raise InputError([Problem(f"fixed when the lab was made ({old.get(k)!r}); a new lab "
                                  f"(`lab down`, `lab up`) takes {new.get(k)!r}", k)
                          for k in changed])
    values_file.write_text(yaml.safe_dump(new.tree, sort_keys=True))
    done: list[str] = []
    restart = [p for p in state.procs if p.name == "operator" or p.name.endswith("/agent")]
    stop_pids([p.pid for p in restart if alive(p.pid)])
    for proc in restart:
        start_proc(plan, proc)
        done.append(f"restarted {proc.name}")
    # hubble.enabled and hubble.tls.enabled are fixed: the CA is there when `up` made one.
    hubble_ca = ["--hubble-ca-dir", str(plan.hubble_ca_dir)] \
        if new.get("hubble.enabled") and new.get("hubble.tls.enabled") else []
    wanted = {p.name: p for p in hubble_cp_procs(plan, new, hubble_ca)}
    for proc in [p for p in state.procs if p.name in ("hubble-relay", "hubble-ui")]:
        if proc.name not in wanted:
            stop_pids([proc.pid])
            state.procs.remove(proc)
            done.append(f"stopped {proc.name}")
        elif not alive(proc.pid):
            start_proc(plan, proc)
            done.append(f"started {proc.name}")
        wanted.pop(proc.name, None)
    for proc in wanted.values():
        state.procs.append(start_proc(plan, proc))
        done.append(f"started {proc.name}")
    state.save()
    for host in plan.node_hosts:
        _wait(f"the agent of {host.role} to be healthy",
              lambda role=host.role: agent_healthy(plan, role)[0],  # type: ignore[misc]
              timeout, state.node_procs(host.role))
    return done


def _dns_published(plan: LabPlan) -> bool:
    """The DNS server serves and has put itself behind kube-system/kube-dns."""
    eps = api_request(plan, "GET", kind_of(EndpointSlice).path("kube-system", "kube-dns"))
    return any(str(plan.cp.ip) in (e.get("addresses") or []) for e in eps.get("endpoints") or [])


def cni_dirs(plan: LabPlan, role: str) -> tuple[Path, Path]:
    """A node's CNI config and plugin directories (its /etc/cni/net.d and /opt/cni/bin):
    inside the lab's directory, since all nodes share the machine's file system."""
    return plan.node_dir(role) / "cni" / "net.d", plan.node_dir(role) / "cni" / "bin"


def _all_ready(plan: LabPlan, say: Progress | None = None) -> bool:
    """Every Node of the plan registered and Ready; each Node's progress told to `say` once
    (registered, Ready)."""
    nodes = list_nodes(plan)
    if say is not None:
        for node in nodes:
            say.state(name_of(node), "Node Ready" if is_node_ready(node) else
                      "Node registered (Ready once its agent has written the CNI config)")
    return len(nodes) >= plan.nodes and all(is_node_ready(n) for n in nodes)


# The NodePort of the Service `lab up`'s usage suggests trying (Kubernetes' range 30000-32767).
TRY_NODEPORT = 30080


def usage(plan: LabPlan) -> str:
    """What `lab up` prints when the lab is up: what is where, and commands that work from
    where they run (tests/lab/test_lab_e2e.py runs them). The client is a laptop on the LAN:
    it reaches nodes, NodePorts and LoadBalancer IPs, never pod IPs (no route, as at home)."""
    n = plan.name
    flag = "" if n == "hl" else f" --name {n}"
    node1 = plan.node_hosts[0]
    return "\n".join([
        f"lab {n} is up: LAN {plan.lan}, client {plan.client.ip}, control plane {plan.cp.ip} "
        f"(apiserver :{APISERVER_PORT}), nodes " + ", ".join(
            f"{h.role} {h.ip}" for h in plan.node_hosts),
        f"  hexlane lab kubectl{flag} get nodes -o wide",
        f"  hexlane lab exec{flag} node1 -- hexlane status   # node1's agent; node commands "
        "(service list, l2 list, bpf ...) run in a node",
        f"  hexlane lab exec{flag} cp -- hexlane hubble observe --last 20   # every node's "
        "flows (Hubble Relay; -f follows)",
        f"  Hubble UI: http://{plan.cp.ip}:{UI_PORT}/ (from the client: a browser in "
        "its namespace)",
        "a Service to try (the client reaches nodes and Services, not pod IPs):",
        f"  hexlane lab kubectl{flag} create deployment hello --image=hexlane/workload "
        "--port=80 --replicas=2",
        f"  hexlane lab kubectl{flag} create service nodeport hello --tcp=80:80 "
        f"--node-port={TRY_NODEPORT}",
        f"  hexlane lab kubectl{flag} rollout status deployment/hello",
        f"  hexlane lab exec{flag} client -- curl -s --retry 5 --retry-connrefused "
        f"http://{node1.ip}:{TRY_NODEPORT}/whoami",
        f"  hexlane lab exec{flag} pod/default/<hello-pod> -- curl -s http://hello/whoami   "
        "# from a pod (a name from `get pods`), the Service by name",
        f"  hexlane lab status{flag}",
        f"  hexlane lab down{flag}",
        f"state and logs: {plan.dir}",
    ])


# --- down ---------------------------------------------------------------------


def lab_namespaces(name: str) -> list[str]:
    """The lab's namespaces that exist, found by name (hosts, LAN, pods)."""
    check_lab_name(name)
    pattern = re.compile(rf"^{re.escape(name)}-(lan|cp|client|node[0-9]+|p[0-9a-f]+)$")
    try:
        entries = os.listdir(netns.NETNS_DIR)
    except FileNotFoundError:
        return []
    return sorted(e for e in entries if pattern.match(e))


_HOST_NETNS = re.compile(r"^([a-z0-9]{1,8})-(lan|cp|client|node[0-9]+)$")


def lab_names() -> list[str]:
    """The labs on this machine, found as `lab status` and `lab down` find one: a directory
    with a state file under the lab root, or a host namespace named `<lab>-lan|cp|client|
    node<i>` (a lab whose `up` failed half-way, or whose state is lost)."""
    names: set[str] = set()
    with contextlib.suppress(OSError):
        names.update(d.name for d in LAB_ROOT.iterdir()
                     if (d / STATE_FILE).exists() and re.fullmatch(r"[a-z0-9]{1,8}", d.name))
    with contextlib.suppress(OSError):
        names.update(m.group(1) for e in os.listdir(netns.NETNS_DIR)
                     if (m := _HOST_NETNS.match(e)))
    return sorted(names)


def lab_leftovers(name: str) -> list[str]:
    """Everything of lab `name` there is (namespaces, BPF roots, its directory): what `down`
    removes; empty when there is no such lab, not even half of one."""
    directory = lab_dir(name)
    return [*lab_namespaces(name), *(str(p) for p in lab_bpf_roots(name)),
            *([str(directory)] if directory.exists() else [])]


def lab_bpf_roots(name: str) -> list[Path]:
    check_lab_name(name)
    return sorted(p for p in BPF_ROOT.glob(f"hexlane-{name}-node*") if
                  re.fullmatch(rf"hexlane-{re.escape(name)}-node[0-9]+", p.name))


def down(name: str) -> list[str]:
    """Stop and remove everything of lab `name`; returns what is left (should be nothing).
    LabError when there is nothing of it at all (a mistyped name must not read as done)."""
    if not lab_leftovers(name):
        labs = lab_names()
        raise LabError(f"no lab named {name}; " + (
            f"labs here: {', '.join(labs)}" if labs else "there is no lab on this machine"))
    namespaces = lab_namespaces(name)
    pids = pids_in_netns([netns.netns_path(n) for n in namespaces])
    if pids:
        stop_pids(pids)
    # Pods first, then hosts, the LAN last: each delete takes the veths inside with it.
    order = sorted(namespaces, key=lambda n: (n.endswith("-lan"), not re.search(r"-p[0-9a-f]+$",
                                                                                 n), n))
    for ns in order:
        netns.delete(ns)
    for root in lab_bpf_roots(name):
        shutil.rmtree(root, ignore_errors=True)
    directory = lab_dir(name)
    private = directory / "bpffs"
    if is_bpffs(private):
        subprocess.run(["umount", str(private)], check=False, capture_output=True)
    if directory.exists():
        shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        LAB_ROOT.rmdir()  # only when no other lab is left
    left = lab_namespaces(name) + [str(p) for p in lab_bpf_roots(name)]
    if is_bpffs(private):
        left.append(f"{private} (mounted)")
    if directory.exists():
        left.append(str(directory))
    return left


# --- status, kill, revive, freeze, thaw ---------------------------------------


def status(name: str) -> dict[str, Any]:
    state = LabState.load(name)
    namespaces = lab_namespaces(name)
    out: dict[str, Any] = {"name": name, "exists": bool(state or namespaces),
                           "phase": state.phase if state else "unknown",
                           "namespaces": namespaces}
    if state is None:
        return out
    plan = state.plan
    out["lan"] = str(plan.lan)
    procs = [{"name": p.name, "host": p.host, "pid": p.pid, "alive": alive(p.pid),
              "frozen": stopped(p.pid), "log": p.log} for p in state.procs]
    hosts = []
    for host in plan.hosts:
        living = [p for p in procs if p["host"] == host.role and p["alive"]]
        hosts.append({"host": host.role, "netns": host.netns, "address": str(host.address),
                      "ifname": host.ifname, "exists": netns.exists(host.netns),
                      "link": _port_state(plan, host.port),
                      "frozen": bool(living) and all(p["frozen"] for p in living)})
    out["hosts"] = hosts
    out["processes"] = procs
    try:
        nodes = list_nodes(plan)
        cilium = _cilium_pod_cidrs(plan)
        out["nodes"] = [{"name": name_of(n), "ready": is_node_ready(n),
                         "podCIDR": (n.get("spec") or {}).get("podCIDR")
                         or cilium.get(name_of(n), "")} for n in nodes]
    except Exception as e:  # the API down is a status to show, not an error
        out["nodes"] = []
        out["apiError"] = str(e)[:200] or type(e).__name__  # a timeout's text is empty
    return out


def _cilium_pod_cidrs(plan: LabPlan) -> dict[str, str]:
    """cluster-pool pod CIDRs, from the CiliumNodes the operator writes (none: empty)."""
    try:
        items = api_request(plan, "GET", kind_of(CiliumNode).path()).get("items") or []
    except Exception:  # no CRD, no operator yet: nothing to show
        return {}
    return {name_of(n): ",".join(((n.get("spec") or {}).get("ipam") or {}).get("podCIDRs")
                                 or []) for n in items}


def _port_state(plan: LabPlan, port: str) -> str:
    if not netns.exists(plan.lan_netns):
        return "missing"
    result = netns.run(plan.lan_netns, ["ip", "-j", "link", "show", port], check=False)
    if result.returncode != 0:
        return "missing"
    try:
        flags = json.loads(result.stdout)[0].get("flags", [])
    except (ValueError, IndexError):
        return "unknown"
    return "up" if "UP" in flags else "down"


def _need_state(name: str) -> LabState:
    state = LabState.load(name)
    if state is None:
        raise LabError(f"no lab {name} (no {lab_dir(name) / STATE_FILE})")
    return state


def _node_role(state: LabState, target: str) -> str:
    role, _, _ = parse_target(target)
    if not role.startswith("node"):
        raise InputError(Problem(f"want a node (node1..node{state.plan.nodes}), got {target!r}",
                                 "NODE"))
    if role not in [h.role for h in state.plan.node_hosts]:
        raise InputError(Problem(f"the lab has node1..node{state.plan.nodes}", "NODE"))
    return role


def _host_role(state: LabState, target: str) -> str:
    """`cp` or a node of the lab (the hosts `freeze`/`thaw` act on)."""
    role, _, _ = parse_target(target)
    if role == "cp":
        return role
    if role not in [h.role for h in state.plan.node_hosts]:
        raise InputError(Problem(f"want cp or a node (node1..node{state.plan.nodes}), "
                                 f"got {target!r}", "HOST"))
    return role


def host_netns_paths(plan: LabPlan, role: str) -> list[str]:
    """The namespaces whose processes are the host's: its own, and for a node its pods'
    (from the kubelet's records)."""
    paths = [netns.netns_path(plan.netns(role))]
    if role.startswith("node"):
        for rec in (plan.node_dir(role) / "kubelet" / "pods").glob("*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                pod_ns = json.loads(rec.read_text())["netns"]
                if pod_ns:  # "" for hostNetwork pods: already in the node's namespace
                    paths.append(netns.netns_path(pod_ns))
    return paths


def kill(name: str, target: str) -> None:
    """A node's sudden death: every process in it and in its pods SIGKILLed, LAN link down."""
    state = _need_state(name)
    role = _node_role(state, target)
    plan = state.plan
    _ip(plan.lan_netns, "link", "set", plan.host(role).port, "down")
    stop_pids(pids_in_netns(host_netns_paths(plan, role)), sig=signal.SIGKILL)


def freeze(name: str, target: str, *, wait: float = 2.0) -> list[int]:
    """SIGSTOP every process of a host (a node and its pods, or `cp`); returns their pids
    once all are stopped. The host keeps its link and state: a hung machine, not a dead one."""
    state = _need_state(name)
    role = _host_role(state, target)
    paths = host_netns_paths(state.plan, role)
    done: set[int] = set()
    for _ in range(5):  # again for processes forked while the others were being stopped
        pids = [p for p in pids_in_netns(paths) if p not in done]
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        done.update(pids)
    if not any(map(alive, done)):
        raise LabError(f"{role} has no processes to freeze (killed? `hexlane lab revive`)")
    deadline = time.monotonic() + wait
    while not all(stopped(p) or not alive(p) for p in done):
        if time.monotonic() > deadline:
            running = sorted(p for p in done if alive(p) and not stopped(p))
            raise LabError(f"{role}: processes {running} did not stop")
        time.sleep(0.01)
    return sorted(p for p in done if alive(p))


def thaw(name: str, target: str) -> list[int]:
    """SIGCONT every process of a host (see `freeze`); returns their pids."""
    state = _need_state(name)
    role = _host_role(state, target)
    return _thaw(state.plan, role)


def _thaw(plan: LabPlan, role: str) -> list[int]:
    pids = pids_in_netns(host_netns_paths(plan, role))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    return pids


def revive(name: str, target: str, *, timeout: float = 60.0) -> None:
    """Bring a killed node back: link up, its frozen processes thawed and its dead daemons
    started again, Ready again."""
    state = _need_state(name)
    role = _node_role(state, target)
    plan = state.plan
    _ip(plan.lan_netns, "link", "set", plan.host(role).port, "up")
    _thaw(plan, role)
    order = {"proxy": 0, "agent": 1, "kubelet": 2}
    for proc in sorted(state.node_procs(role), key=lambda p: order.get(p.name.split("/")[-1], 3)):
        if not alive(proc.pid):
            start_proc(plan, proc)
    state.save()

    def ready() -> bool:
        return any(name_of(n) == role and is_node_ready(n) for n in list_nodes(plan))
    _wait(f"{role} Ready", ready, timeout, state.node_procs(role))
    _wait(f"the agent of {role} to be healthy", lambda: agent_healthy(plan, role)[0], timeout)


# --- exec, kubectl ------------------------------------------------------------


def exec_argv(name: str, target: str, argv: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The command line (and extra environment) that runs `argv` in `target`."""
    state = _need_state(name)
    plan = state.plan
    role, namespace, pod = parse_target(target)
    env: dict[str, str] = {}
    if role == "pod":
        assert namespace is not None and pod is not None
        obj = api_request(plan, "GET", kind_of(Pod).path(namespace, pod))
        spec = obj.get("spec") or {}
        uid = str(obj["metadata"]["uid"])
        ns = pod_netns_name(name, uid)
        if spec.get("hostNetwork") and spec.get("nodeName"):
            ns = plan.netns(str(spec["nodeName"]))
        if not netns.exists(ns):
            raise LabError(f"pod {namespace}/{pod} has no sandbox (yet) on this machine")
        # The pod's resolv.conf, as its workload sees it (none: the host's).
        resolv = pod_resolv_conf_path(plan.node_dir(str(spec.get("nodeName") or "")) /
                                      "kubelet", uid)
        argv = netns.with_resolv_conf(resolv if resolv.exists() else None, argv)
    else:
        if role not in [h.role for h in plan.hosts]:
            raise InputError(Problem(f"the lab has no {role}", "TARGET"))
        ns = plan.netns(role)
        if role.startswith("node"):
            env = node_env(plan, role)
    return netns.nsenter(ns, argv), env


def run_exec(name: str, target: str, argv: Sequence[str]) -> int:
    cmd, env = exec_argv(name, target, argv)
    # `hexlane` itself is found in the target even when this one runs from a virtualenv.
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    return subprocess.run(cmd, env={**os.environ, "PATH": path, **env}, check=False).returncode


def run_kubectl(name: str, args: Sequence[str]) -> int:
    state = _need_state(name)
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise LabError("kubectl is not installed on this machine")
    env = {**os.environ, "KUBECONFIG": str(state.plan.dir / "kubeconfig")}
    return subprocess.run(netns.nsenter(state.plan.client.netns, [kubectl, *args]), env=env,
                          check=False).returncode
