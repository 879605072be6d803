"""Programming the LB datapath in tests the way the agent does, and running its programs.

`Services(lb)` writes services and backends as `hexlane.lb.services` rows through `LbSync`
(datapath/lb/sync.py), the agent's own path into the maps. `run_program` runs a program on a
crafted frame (BPF_PROG_TEST_RUN) in a namespace made by `program_netns`: forwarding is off
there, so the programs' FIB lookups answer "not forwarded" and a translated packet comes
back as it is, with TC_ACT_OK.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from helpers import packets
from hexlane.datapath import libbpf
from hexlane.datapath.lb.attach import TcTable, attachments
from hexlane.datapath.lb.encode import PROTO_NAMES
from hexlane.datapath.lb.loader import LbDatapath
from hexlane.datapath.lb.sync import LbSync
from hexlane.datapath.reconcile import Reconciler
from hexlane.datapath.sysctl import write_sysctl
from hexlane.lab.netns import Topology, create, delete, run, run_in_netns, unique_name, veth
from hexlane.lb.services import (
    CLUSTER_IP,
    SCOPE_EXT,
    STATE_ACTIVE,
    Backend,
    Delta,
    FrontendKey,
    ServiceEntry,
)

#: a backend's servers: TCP 8080 answers "client address:port", UDP 8081 echoes with it
SERVER = r"""
import socket, sys, threading
def tcp():
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", 8080)); s.listen(16)
    while True:
        c, peer = s.accept()
        c.recv(100); c.sendall(f"{peer[0]}:{peer[1]}\n".encode()); c.close()
def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 8081))
    while True:
        data, peer = s.recvfrom(100); s.sendto(f"{peer[0]}:{peer[1]} ".encode() + data, peer)
for f in (tcp, udp):
    threading.Thread(target=f, daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""

CLIENT = r"""
import socket, sys
kind, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if kind == "tcp":
        s = socket.create_connection((host, port), timeout=5); s.sendall(b"hi")
        print("ok", s.getsockname()[1], s.getpeername()[0], s.recv(100).decode().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(5)
        s.connect((host, port)); s.send(b"ping")
        data, peer = s.recvfrom(100)
        print("ok", s.getsockname()[1], peer[0], data.decode())
except ConnectionRefusedError:
    print("refused")
except OSError as e:
    print("error", e)
"""


class Services:
    """The services programmed into one datapath (one `LbSync` over its maps)."""

    def __init__(self, lb: LbDatapath) -> None:
        self.sync = LbSync(lb)
        self.entries: dict[FrontendKey, ServiceEntry] = {}

    def add(self, vip: str, port: int, proto: int, service_id: int,
            backends: Sequence[tuple[int, str, int]], *, type: str = CLUSTER_IP,
            algorithm: str = "random", maglev: Sequence[int] = (),
            affinity_timeout_s: int = 0, local: bool = False, scope: int = SCOPE_EXT,
            two_scopes: bool = False, dsr: bool = False) -> ServiceEntry:
        """A frontend with backends (id, address, port) in slots 1..n, replacing what the
        frontend had; `local`: the backends are pods of this node."""
        protocol = PROTO_NAMES[proto]
        frontend = FrontendKey(vip, port, protocol, scope)
        entry = ServiceEntry(
            id=service_id, frontend=frontend, type=type, namespace="default",
            name=f"svc{service_id}", port_name="", backend_ids=tuple(b[0] for b in backends),
            algorithm=algorithm, affinity_timeout_s=affinity_timeout_s, ext_local=False,
            int_local=False, two_scopes=two_scopes, dsr=dsr, maglev=tuple(maglev))
        rows = tuple(Backend(bid, address, bport, protocol, STATE_ACTIVE, "n1", local)
                     for bid, address, bport in backends)
        old = self.entries.get(frontend)
        self._apply(Delta(entries=(entry,), old=(old,) if old else (), backends=rows))
        self.entries[frontend] = entry
        return entry

    def remove(self, entry: ServiceEntry) -> None:
        self._apply(Delta(old=(entry,)))
        del self.entries[entry.frontend]

    def remove_backends(self, *backend_ids: int) -> None:
        self._apply(Delta(removed_backends=backend_ids))

    def node_ip(self, address: str | None) -> None:
        """The address NodePort SNAT leaves with."""
        self.sync.set_node_ip(address)
        assert not self.sync.flush().failed

    def _apply(self, delta: Delta) -> None:
        result = self.sync.apply(delta)
        assert not result.failed, result.failed


def attach_as_agent(lb: LbDatapath, lan: Sequence[str]) -> None:
    """Attach the programs to the calling thread's namespace's links as the agent does (the
    tc table through the reconciler): `lan` are the LAN devices, `lxc*` the pods' veths."""
    table = TcTable(lb)
    wanted = attachments(lan, (name for _, name in socket.if_nameindex()))
    table.wanted = set(wanted)
    rec: Reconciler[tuple[str, str, int], int] = Reconciler(table)
    rec.set_all({slot: table.program_id(prog) for slot, prog in wanted.items()})
    assert not rec.resync().failed


@contextmanager
def program_netns(prefix: str = "hl-prog") -> Iterator[str]:
    """A namespace of its own with forwarding off, for `run_program`; its path. A test run's
    frame arrives on the namespace's loopback device, which gets the MAC the test frames are
    sent to (`helpers.packets`): a frame for another host is not the LAN program's."""
    name = unique_name(prefix)
    path = create(name)
    try:
        run_in_netns(path, lambda: write_sysctl("net.ipv4.conf.all.forwarding", "0"))
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "address", packets.NODE_MAC],
                       check=True)
        yield path
    finally:
        delete(name)


def run_program(lb: LbDatapath, netns: str, program: str, frame: bytes
                ) -> libbpf.TestRunResult:
    """One run of `program` on `frame`, in the namespace at `netns`."""
    return run_in_netns(netns, lambda: libbpf.test_run(lb.program_fd(program), frame))


#: a client on the LAN side, a node, and two pods of the node's pod CIDR 10.78.0.0/24
CLIENT_IP, BACKEND_IP, POD2_IP = "10.77.0.2", "10.78.0.2", "10.78.0.3"


def client_node_two_pods(t: Topology) -> None:
    """Namespaces `client`, `node`, `be` and `p2` in `t`: the client 10.77.0.2 routed
    through the node (10.77.0.1 on `toclient`), the pods BACKEND_IP and POD2_IP behind
    the node's lxc0b1 and lxc0b2 veths with /32 routes, as the agent wires pods."""
    client, node, backend, pod2 = t.add("client"), t.add("node"), t.add("be"), t.add("p2")
    veth(client, "eth0", node, "toclient")
    veth(node, "lxc0b1", backend, "eth0")
    veth(node, "lxc0b2", pod2, "eth0")
    run(client, ["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0"])
    run(client, ["ip", "route", "add", "default", "via", "10.77.0.1"])
    run(node, ["ip", "addr", "add", "10.77.0.1/24", "dev", "toclient"])
    for dev, ip in (("lxc0b1", BACKEND_IP), ("lxc0b2", POD2_IP)):
        run(node, ["ip", "addr", "add", "10.78.0.1/32", "dev", dev])
        run(node, ["ip", "route", "add", f"{ip}/32", "dev", dev])
    run(node, ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
    for pod, ip in ((backend, BACKEND_IP), (pod2, POD2_IP)):
        run(pod, ["ip", "addr", "add", f"{ip}/32", "dev", "eth0"])
        run(pod, ["ip", "route", "add", "10.78.0.1", "dev", "eth0"])
        run(pod, ["ip", "route", "add", "default", "via", "10.78.0.1"])
        run(pod, ["ip", "link", "set", "lo", "up"])
