"""The lab's shape, decided from its parameters alone (pure): names, addresses, paths.

A lab called NAME is:

- `NAME-lan`: the LAN switch, a bridge `br0` in its own namespace;
- `NAME-cp`: the control plane host at .10 of the LAN (apiserver on 6443, lab controllers,
  the operator when it exists); not a worker;
- `NAME-node<i>`: node i at .(10+i), its LAN interface named `lan_ifname`;
- `NAME-client`: the homelab user's laptop at .2;
- `NAME-p<hash>`: one namespace per pod, made by the node's lab kubelet.

Every namespace of a lab starts with `NAME-`, so `lab down` finds all of them (also those of a
lab whose state file was lost). Lab state lives in `/run/hexlane/lab/NAME/`; node i keeps its
agent's state in `.../node<i>/state` and pins BPF objects under `/sys/fs/bpf/hexlane-NAME-node<i>`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

from hexlane.model.errors import InputError, Problem

LAB_NAME = re.compile(r"^[a-z0-9]{1,8}$")
DEFAULT_LAB = "hl"
DEFAULT_LAN = "10.0.0.0/24"
DEFAULT_NODES = 3
DEFAULT_LAN_IFNAME = "eth0"
LAB_ROOT = Path("/run/hexlane/lab")
BPF_ROOT = Path("/sys/fs/bpf")
BRIDGE = "br0"
APISERVER_PORT = 6443
CLUSTER_CIDR = "10.42.0.0/16"
SERVICE_CIDR = "10.43.0.0/16"
CLUSTER_DNS = "10.43.0.10"  # k3s's --cluster-dns: the kube-dns Service's address
CP_HOST = 10
CLIENT_HOST = 2
_IFNAME = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
_TARGET = re.compile(r"^(client|cp|node([1-9][0-9]*))$")


def check_lab_name(name: str, path: str = "--name") -> str:
    if not LAB_NAME.match(name or ""):
        raise InputError(Problem(f"lab name {name!r}: want 1 to 8 characters of [a-z0-9]",
                                 path))
    return name


def default_lab_name(environ: dict[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    return env.get("HEXLANE_LAB") or DEFAULT_LAB


@dataclass(frozen=True)
class Host:
    """One namespace plugged into the LAN."""

    role: str  # "cp", "client", "node1", ...
    netns: str
    address: IPv4Interface  # on the LAN interface
    ifname: str
    port: str  # the bridge-side veth in the LAN namespace

    @property
    def ip(self) -> IPv4Address:
        return self.address.ip


@dataclass(frozen=True)
class LabPlan:
    """Everything `lab up` creates for a lab, as names and addresses."""

    name: str
    lan: IPv4Network
    nodes: int
    lan_ifname: str
    # Where node BPF roots go: /sys/fs/bpf, or a BPF file system the lab mounted in its own
    # directory when the machine has none there.
    bpf_base: Path = BPF_ROOT

    @classmethod
    def make(cls, name: str, *, nodes: int = DEFAULT_NODES, lan: str = DEFAULT_LAN,
             lan_ifname: str = DEFAULT_LAN_IFNAME, bpf_base: Path = BPF_ROOT) -> LabPlan:
        """Validate the parameters (every problem at once) and build the plan."""
        problems: list[Problem] = []
        try:
            check_lab_name(name)
        except InputError as e:
            problems += e.problems
        net: IPv4Network | None = None
        try:
            parsed = ipaddress.ip_network(lan, strict=True)
            if not isinstance(parsed, IPv4Network):
                raise ValueError("not IPv4")
            net = parsed
        except ValueError as e:
            problems.append(Problem(f"not an IPv4 network: {lan!r} ({e})", "--lan"))
        if not 1 <= nodes <= 50:
            problems.append(Problem(f"want 1 to 50 nodes, got {nodes}", "--nodes"))
        elif net is not None and net.num_addresses < CP_HOST + nodes + 2:
            problems.append(Problem(f"{lan} is too small for the control plane at .{CP_HOST} "
                                    f"and {nodes} nodes after it", "--lan"))
        if not _IFNAME.match(lan_ifname) or lan_ifname in ("lo", BRIDGE):
            problems.append(Problem(f"not a usable interface name: {lan_ifname!r}",
                                    "--lan-ifname"))
        if problems:
            raise InputError(problems)
        assert net is not None
        return cls(name, net, nodes, lan_ifname, Path(bpf_base))

    # -- names --------------------------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """What every namespace of this lab starts with."""
        return f"{self.name}-"

    @property
    def lan_netns(self) -> str:
        return f"{self.name}-lan"

    def netns(self, role: str) -> str:
        return f"{self.name}-{role}"

    def pod_netns(self, uid: str) -> str:
        return pod_netns_name(self.name, uid)

    def _host(self, role: str, index: int, ifname: str) -> Host:
        address = IPv4Interface(f"{self.lan.network_address + index}/{self.lan.prefixlen}")
        # Bridge ports live only in the LAN namespace: short and unique within it.
        return Host(role, self.netns(role), address, ifname, f"p-{role}")

    @property
    def cp(self) -> Host:
        return self._host("cp", CP_HOST, "eth0")

    @property
    def client(self) -> Host:
        return self._host("client", CLIENT_HOST, "eth0")

    def node(self, index: int) -> Host:
        if not 1 <= index <= self.nodes:
            raise KeyError(f"node{index}: the lab has node1 to node{self.nodes}")
        return self._host(f"node{index}", CP_HOST + index, self.lan_ifname)

    @property
    def node_hosts(self) -> list[Host]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    @property
    def hosts(self) -> list[Host]:
        return [self.client, self.cp, *self.node_hosts]

    def host(self, role: str) -> Host:
        for host in self.hosts:
            if host.role == role:
                return host
        raise KeyError(role)

    @property
    def apiserver_url(self) -> str:
        return f"https://{self.cp.ip}:{APISERVER_PORT}"

    # -- paths ----------------------------------------------------------------------------------

    @property
    def dir(self) -> Path:
        return lab_dir(self.name)

    def node_dir(self, role: str) -> Path:
        return self.dir / role

    def state_dir(self, role: str) -> Path:
        """The node agent's `--state-dir` (HEXLANE_STATE_DIR)."""
        return self.node_dir(role) / "state"

    def bpf_root(self, role: str) -> Path:
        """The node agent's `--bpf-root` (HEXLANE_BPF_ROOT)."""
        return self.bpf_base / f"hexlane-{self.name}-{role}"

    @property
    def hubble_ca_dir(self) -> Path:
        """The lab's Hubble CA (every agent's certificate is signed by it)."""
        return self.dir / "hubble-ca"

    @property
    def hubble_client_dir(self) -> Path:
        """A client certificate of that CA (client.crt, client.key) for the CLI and relay."""
        return self.dir / "hubble-client"

    @property
    def private_bpffs(self) -> Path:
        """The lab's own BPF file system mount point, used when /sys/fs/bpf is none."""
        return self.dir / "bpffs"

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "lan": str(self.lan), "nodes": self.nodes,
                "lanIfname": self.lan_ifname, "bpfBase": str(self.bpf_base)}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LabPlan:
        return cls.make(str(data["name"]), nodes=int(str(data["nodes"])),
                        lan=str(data["lan"]), lan_ifname=str(data["lanIfname"]),
                        bpf_base=Path(str(data.get("bpfBase") or BPF_ROOT)))


def lab_dir(name: str) -> Path:
    return LAB_ROOT / check_lab_name(name)


def pod_netns_name(lab: str, uid: str) -> str:
    """A pod's namespace: the lab's prefix and the start of the pod's uid (hex only)."""
    digest = re.sub(r"[^0-9a-f]", "", uid.lower())[:12]
    return f"{lab}-p{digest}"


def pod_resolv_conf_path(kubelet_dir: Path, uid: str) -> Path:
    """Where a node's kubelet keeps the resolv.conf it wrote for a pod (`lab exec` reads it)."""
    return kubelet_dir / "pods" / f"{uid}.resolv.conf"


def parse_target(text: str) -> tuple[str, str | None, str | None]:
    """`client`, `cp`, `node<i>` -> (role, None, None); `pod/<ns>/<name>` -> ("pod", ns, name)."""
    if text.startswith("pod/"):
        parts = text.split("/")
        if len(parts) != 3 or not parts[1] or not parts[2]:
            raise InputError(Problem(f"want pod/<namespace>/<name>, got {text!r}", "TARGET"))
        return "pod", parts[1], parts[2]
    if not _TARGET.match(text):
        raise InputError(Problem(
            f"unknown target {text!r}: want client, cp, node<i> or pod/<namespace>/<name>",
            "TARGET"))
    return text, None, None
