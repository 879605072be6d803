"""The lab kubelet: one per lab node, run in the node's network namespace.

It does what a kubelet with a CNI runtime does, with a Python workload instead of containers:

- registers its Node (labels `kubernetes.io/hostname`, `kubernetes.io/os=linux`, on a
  `--control-plane` node also `node-role.kubernetes.io/control-plane` and `.../master` =
  "true" as a k3s server does; addresses InternalIP and Hostname) and keeps the Ready
  condition (Ready once a CNI configuration exists in its config directory);
- renews its Lease `kube-node-lease/<node>` every `--lease-renew` seconds;
- for every Pod bound to it: makes a network namespace `<lab>-p<uid>`, runs the CNI plugins
  of its config directory (the real `hexlane-cni`) exactly as a runtime does, starts the
  workload (`python -m hexlane.lab.workload`) in it, and writes the pod's status (podIP,
  phase Running, Ready once the workload has bound its ports, containerStatuses);
- writes each pod's resolv.conf for its dnsPolicy (`--cluster-dns`, `--cluster-domain`:
  ClusterFirst pods search `<ns>.svc.cluster.local svc.cluster.local cluster.local` and ask
  the kube-dns Service) to `--dir/pods/<uid>.resolv.conf`, and the workload sees it at
  /etc/resolv.conf through a mount namespace of its own (`netns.with_resolv_conf`);
- deletes pods gracefully: on deletionTimestamp it runs the preStop sleep (endpoints stay
  serving, not ready), sends SIGTERM, marks the pod not ready, waits for the workload up to
  the grace period (then SIGKILL), runs CNI DEL, removes the namespace and deletes the Pod
  with grace 0 (uid precondition).

What it made for each pod is recorded in `--dir/pods/<uid>.json` before it is made, so a
kubelet killed at any moment finds, on restart, what to adopt (restart dead workloads) and
what to tear down (pods that are gone).

    python -m hexlane.lab.kubelet --lab NAME --node node1 --node-ip 10.0.0.11
        --kubeconfig F --dir D --cni-conf-dir D --cni-bin-dir D [--control-plane]
        [--cluster-dns 10.43.0.10] [--cluster-domain cluster.local]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hexlane.k8s.client import MERGE_PATCH, ApiError, KubeClient, load_client_config
from hexlane.k8s.election import micro_time
from hexlane.k8s.informer import Informer
from hexlane.k8s.ratelimit import RateLimiter
from hexlane.k8s.resources import Event, Lease, Node, Pod, kind_of
from hexlane.k8s.runtime import log_to_stderr, run_until_stopped
from hexlane.k8s.statuswriter import patch_status

from . import netns
from .clusterdns import CLUSTER_DOMAIN, pod_resolv_conf
from .cnirun import CNIFailed, cni_add, cni_del, load_network_config, result_ipv4
from .podspec import (
    container_env,
    grace_seconds,
    hexlane_command,
    is_node_ready,
    is_terminating,
    name_of,
    namespace_of,
    pre_stop_seconds,
    uid_of,
    workload_ports,
)
from .topology import pod_netns_name, pod_resolv_conf_path

log = logging.getLogger("hexlane.lab.kubelet")

QPS, BURST = 50.0, 100  # the kubelet's kubeAPIQPS/kubeAPIBurst defaults
LEASE_DURATION = 40
HEARTBEAT = 30.0  # node status re-posted at least this often
IFNAME = "eth0"
READY_TIMEOUT = 20.0


def _stamp(t: float | None = None) -> str:
    return datetime.fromtimestamp(time.time() if t is None else t, UTC).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


@dataclass
class PodRecord:
    """What the kubelet made for one pod (persisted before it is made)."""

    uid: str
    namespace: str
    name: str
    netns: str
    container_id: str
    ip: str = ""
    pid: int = 0
    started_at: float = 0.0
    ready_at: float = 0.0
    restarts: int = 0
    cni_result: dict[str, Any] = field(default_factory=dict)
    command: list[str] = field(default_factory=list)  # a hexlane-image command's argv

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


class Kubelet:
    def __init__(self, client: KubeClient, args: argparse.Namespace) -> None:
        self.client = client
        self.lab: str = args.lab
        self.node: str = args.node
        self.node_ip: str = args.node_ip
        self.dir = Path(args.dir)
        self.pods_dir = self.dir / "pods"
        self.conf_dir = Path(args.cni_conf_dir)
        self.bin_dir = Path(args.cni_bin_dir)
        self.control_plane: bool = args.control_plane
        self.lease_renew: float = args.lease_renew
        self.kubeconfig = Path(args.kubeconfig)
        self.records: dict[str, PodRecord] = {}  # by uid
        self.procs: dict[str, subprocess.Popen[bytes]] = {}  # by uid
        self.terminating: dict[str, asyncio.Task[None]] = {}  # by uid
        self.locks: dict[str, asyncio.Lock] = {}
        self.last_failure: dict[str, str] = {}  # by uid: the sandbox error last reported
        self.no_resolv_conf: set[str] = set()  # by uid: told that the pod gets none
        self.cluster_dns: str = args.cluster_dns
        self.cluster_domain: str = args.cluster_domain
        self.informer = Informer(client, Pod, field_selector=f"spec.nodeName={self.node}")
        self.queue = self.informer.key_queue()
        self.env = {k: v for k, v in os.environ.items()
                    if k.startswith("HEXLANE_") or k in ("PATH", "HOME", "LANG")}

    # -- records -------------------------------------------------------------------------------

    def _load_records(self) -> None:
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        for path in self.pods_dir.glob("*.json"):
            try:
                rec = PodRecord(**json.loads(path.read_text()))
            except (OSError, ValueError, TypeError) as e:
                log.warning("%s: unreadable pod record (%s); ignored", path, e)
                continue
            self.records[rec.uid] = rec

    def _save(self, rec: PodRecord) -> None:
        path = self.pods_dir / f"{rec.uid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(rec)))
        tmp.replace(path)

    def _forget(self, rec: PodRecord) -> None:
        self.records.pop(rec.uid, None)
        self.last_failure.pop(rec.uid, None)
        self.no_resolv_conf.discard(rec.uid)
        self.procs.pop(rec.uid, None)
        (self.pods_dir / f"{rec.uid}.json").unlink(missing_ok=True)
        pod_resolv_conf_path(self.dir, rec.uid).unlink(missing_ok=True)
        (self.pods_dir / f"{rec.uid}.kubeconfig").unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            (self.pods_dir / f"{rec.uid}.ready").unlink()

    # -- node ----------------------------------------------------------------------------------

    def _labels(self) -> dict[str, str]:
        labels = {"kubernetes.io/hostname": self.node, "kubernetes.io/os": "linux",
                  "kubernetes.io/arch": "amd64", "beta.kubernetes.io/os": "linux",
                  "beta.kubernetes.io/arch": "amd64"}
        if self.control_plane:
            labels["node-role.kubernetes.io/control-plane"] = "true"
            labels["node-role.kubernetes.io/master"] = "true"
        return labels

    async def register(self) -> None:
        path = kind_of(Node).path()
        body = {"apiVersion": "v1", "kind": "Node",
                "metadata": {"name": self.node, "labels": self._labels()}}
        try:
            await self.client.request("POST", path, body=body)
            log.info("registered node %s", self.node)
        except ApiError as e:
            if e.code != 409:
                raise
            await self.client.request("PATCH", kind_of(Node).path(None, self.node),
                                      body={"metadata": {"labels": self._labels()}},
                                      content_type=MERGE_PATCH)
        node = await self.client.request("GET", kind_of(Node).path(None, self.node))
        self.node_uid = str(node["metadata"].get("uid", ""))
        # The Lease first: a Ready node with a stale Lease is marked Unknown again at once.
        await self.renew_lease()
        await self.post_status()

    def _network_ready(self) -> bool:
        return load_network_config(self.conf_dir) is not None

    async def post_status(self) -> None:
        now = _stamp()
        ready = self._network_ready()
        conditions = [
            {"type": kind, "status": "False", "reason": f"KubeletHas{reason}",
             "message": f"kubelet has {text}", "lastHeartbeatTime": now,
             "lastTransitionTime": self.started}
            for kind, reason, text in (
                ("MemoryPressure", "SufficientMemory", "sufficient memory available"),
                ("DiskPressure", "NoDiskPressure", "no disk pressure"),
                ("PIDPressure", "SufficientPID", "sufficient PID available"))]
        conditions.append({
            "type": "Ready", "status": "True" if ready else "False",
            "reason": "KubeletReady" if ready else "KubeletNotReady",
            "message": "kubelet is posting ready status" if ready else
            "container runtime network not ready: no CNI configuration in "
            f"{self.conf_dir}", "lastHeartbeatTime": now, "lastTransitionTime": now})
        status = {
            "conditions": conditions,
            "addresses": [{"type": "InternalIP", "address": self.node_ip},
                          {"type": "Hostname", "address": self.node}],
            "capacity": {"cpu": str(os.cpu_count() or 1), "memory": "4Gi", "pods": "110"},
            "allocatable": {"cpu": str(os.cpu_count() or 1), "memory": "4Gi", "pods": "110"},
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux",
                         "kubeletVersion": "v1.30.0-hexlane-lab",
                         "kubeProxyVersion": "", "containerRuntimeVersion": "hexlane-lab://1",
                         "kernelVersion": os.uname().release, "osImage": "hexlane lab",
                         "machineID": "", "systemUUID": "", "bootID": self.boot_id},
        }
        await patch_status(self.client, Node, self.node, status)

    async def heartbeat(self) -> None:
        """Renew the Lease; re-post node status when readiness changed or now and then."""
        last_status = time.monotonic()
        while True:
            try:
                await self.renew_lease()
                if self._network_ready() != await self._ready_in_api() or \
                        time.monotonic() - last_status > HEARTBEAT:
                    await self.post_status()
                    last_status = time.monotonic()
            except (ApiError, OSError) as e:
                log.warning("heartbeat: %s", e)
            await asyncio.sleep(self.lease_renew)

    async def _ready_in_api(self) -> bool:
        """What the API says about our readiness (the node lifecycle controller may have
        marked us Unknown while we were away; the kubelet then posts its status again)."""
        node = await self.client.request("GET", kind_of(Node).path(None, self.node))
        return is_node_ready(node)

    async def renew_lease(self) -> None:
        kind = kind_of(Lease)
        spec = {"holderIdentity": self.node, "leaseDurationSeconds": LEASE_DURATION,
                "renewTime": micro_time(datetime.now(UTC))}
        try:
            await self.client.request("PATCH", kind.path("kube-node-lease", self.node),
                                      body={"spec": spec}, content_type=MERGE_PATCH)
        except ApiError as e:
            if not e.not_found:
                raise
            body = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                    "metadata": {"name": self.node, "namespace": "kube-node-lease",
                                 "ownerReferences": [{"apiVersion": "v1", "kind": "Node",
                                                      "name": self.node,
                                                      "uid": self.node_uid}]},
                    "spec": spec}
            await self.client.request("POST", kind.path("kube-node-lease"), body=body)

    # -- pods ----------------------------------------------------------------------------------

    async def run(self) -> None:
        self.started = _stamp()
        self.boot_id = f"{os.getpid()}-{int(time.time())}"
        self.node_uid = ""
        self._load_records()
        while True:
            try:
                await self.register()
                break
            except (ApiError, OSError) as e:
                # The API not reachable yet (apiserver starting, proxy not up): try again.
                log.warning("registering node %s: %s; retrying", self.node, e)
                await asyncio.sleep(1)
        tasks = [asyncio.create_task(self.heartbeat()), self.informer.start()]
        await self.informer.wait_synced()
        # Records of pods that are gone (deleted while the kubelet was away) are torn down.
        for rec in list(self.records.values()):
            self.queue.put(rec.key)
        tasks += [asyncio.create_task(self.worker()) for _ in range(4)]
        tasks.append(asyncio.create_task(self.resync()))
        await asyncio.gather(*tasks)

    async def resync(self) -> None:
        """Every few seconds look at every pod again (dead workloads, missed readiness)."""
        while True:
            await asyncio.sleep(5)
            for key in list(self.informer.cache):
                self.queue.put(key)

    async def worker(self) -> None:
        while True:
            key = await self.queue.get()
            lock = self.locks.setdefault(key, asyncio.Lock())
            async with lock:
                try:
                    await self.sync(key)
                except (ApiError, OSError, CNIFailed) as e:
                    log.warning("pod %s: %s; retrying", key, e)
                    asyncio.get_running_loop().call_later(2.0, self.queue.put, key)
                except Exception:  # a bug with one pod must not stop the others
                    log.exception("pod %s: sync failed; retrying", key)
                    asyncio.get_running_loop().call_later(5.0, self.queue.put, key)

    async def sync(self, key: str) -> None:
        pod = self.informer.cache.get(key)
        for old in [r for r in self.records.values() if r.key == key]:
            if (pod is None or uid_of(pod) != old.uid) and old.uid not in self.terminating:
                await self.teardown(old, grace=0)
        if pod is None or pod.get("spec", {}).get("nodeName") != self.node:
            return
        uid = uid_of(pod)
        if is_terminating(pod):
            if uid not in self.terminating:
                self.terminating[uid] = asyncio.create_task(self.terminate(pod))
            return
        rec = self.records.get(uid)
        if rec is None or not rec.ip:  # never made, or the CNI ADD did not finish
            try:
                rec = await self.create_sandbox(pod, rec)
            except (CNIFailed, OSError, subprocess.SubprocessError) as e:
                await self.report_sandbox_failure(pod, str(e))
                raise
        if not self._alive(rec):
            if rec.pid:
                rec.restarts += 1
                log.info("pod %s: workload %d is gone; restarting", key, rec.pid)
            self.start_workload(pod, rec)
        if not rec.ready_at and (self.pods_dir / f"{rec.uid}.ready").exists():
            rec.ready_at = time.time()
            self._save(rec)
        elif not rec.ready_at:
            asyncio.get_running_loop().call_later(0.2, self.queue.put, key)
        await self.write_status(pod, rec, ready=bool(rec.ready_at))

    async def create_sandbox(self, pod: dict[str, Any], rec: PodRecord | None) -> PodRecord:
        net = load_network_config(self.conf_dir)
        if net is None:
            raise OSError(f"no CNI configuration in {self.conf_dir}")
        uid = uid_of(pod)
        rec = rec or PodRecord(uid=uid, namespace=namespace_of(pod), name=name_of(pod),
                               netns=pod_netns_name(self.lab, uid),
                               container_id=uid.replace("-", ""))
        if (pod.get("spec") or {}).get("hostNetwork"):
            # The node's own namespace: no sandbox, no CNI, the node's address.
            rec.netns, rec.ip = "", self.node_ip
            self.records[uid] = rec
            self._save(rec)
            return rec
        self.records[uid] = rec
        self._save(rec)  # before anything exists: a crash leaves something to clean up
        if not netns.exists(rec.netns):
            await asyncio.to_thread(netns.create, rec.netns)
        result = await cni_add(net, self.bin_dir, rec.container_id, netns.netns_path(rec.netns),
                               IFNAME, self._cni_args(rec))
        rec.ip = result_ipv4(result)
        rec.cni_result = result
        self._save(rec)
        log.info("pod %s: sandbox %s, IP %s", rec.key, rec.netns, rec.ip)
        return rec

    async def report_sandbox_failure(self, pod: dict[str, Any], message: str) -> None:
        """What `kubectl describe pod` shows while the sandbox cannot be made: the pod stays
        Pending with a condition saying why, and a Warning event (once per distinct error)."""
        status = {"phase": "Pending", "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "PodReadyToStartContainers", "status": "False",
             "reason": "FailedCreatePodSandBox", "message": message[:1000]}]}
        with contextlib.suppress(ApiError):
            await patch_status(self.client, Pod, name_of(pod), status,
                               namespace=namespace_of(pod))
        uid = uid_of(pod)
        if self.last_failure.get(uid) == message:
            return
        self.last_failure[uid] = message
        now = _stamp()
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"generateName": f"{name_of(pod)}.",
                              "namespace": namespace_of(pod)},
                 "involvedObject": {"apiVersion": "v1", "kind": "Pod", "name": name_of(pod),
                                    "namespace": namespace_of(pod), "uid": uid},
                 "reason": "FailedCreatePodSandBox", "type": "Warning",
                 "message": f"Failed to create pod sandbox: {message}"[:1000],
                 "source": {"component": "kubelet", "host": self.node},
                 "firstTimestamp": now, "lastTimestamp": now, "count": 1}
        with contextlib.suppress(ApiError):
            await self.client.create(Event, event, namespace_of(pod))

    def _cni_args(self, rec: PodRecord) -> dict[str, str]:
        return {"K8S_POD_NAMESPACE": rec.namespace, "K8S_POD_NAME": rec.name,
                "K8S_POD_INFRA_CONTAINER_ID": rec.container_id, "K8S_POD_UID": rec.uid}

    def _alive(self, rec: PodRecord) -> bool:
        proc = self.procs.get(rec.uid)
        if proc is not None:
            return proc.poll() is None
        if not rec.pid:
            return False
        try:  # adopted from an earlier kubelet: ours if it is the workload of this pod
            cmdline = Path(f"/proc/{rec.pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{rec.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return False
        if state == "Z":
            return False
        if rec.command:
            return cmdline[:len(rec.command)] == [a.encode() for a in rec.command]
        return b"hexlane.lab.workload" in cmdline and rec.name.encode() in cmdline

    def write_resolv_conf(self, pod: dict[str, Any], rec: PodRecord) -> Path | None:
        """The pod's resolv.conf for its dnsPolicy (None: it sees the host's as it is)."""
        path = pod_resolv_conf_path(self.dir, rec.uid)
        try:
            host = netns.RESOLV_CONF.read_text()
        except OSError as e:
            # Nothing to bind a pod's file over (and the host's is unreadable): say so once.
            if rec.uid not in self.no_resolv_conf:
                log.warning("pod %s: %s unreadable (%s); the pod gets no resolv.conf",
                            rec.key, netns.RESOLV_CONF, e.strerror)
                self.no_resolv_conf.add(rec.uid)
            path.unlink(missing_ok=True)
            return None
        text = pod_resolv_conf(pod, cluster_dns=self.cluster_dns, host=host,
                               domain=self.cluster_domain) if self.cluster_dns else None
        if text is None:
            path.unlink(missing_ok=True)
            return None
        tmp = path.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        return path

    def _command(self, pod: dict[str, Any], rec: PodRecord, ready: Path
                 ) -> tuple[list[str], dict[str, str]] | None:
        """A hexlane-image container's own command (`hexlane ...`, run from this
        installation) and its environment: the container's `env` (values and the downward
        API's fieldRefs), KUBECONFIG (a copy of the kubelet's credentials: the lab's apiserver
        issues no service-account tokens and enforces no RBAC) and HEXLANE_READY_FILE, the
        file whose existence makes the pod Ready. None: the lab's echo workload runs."""
        command = hexlane_command(pod)
        if command is None:
            return None
        kubeconfig = self.pods_dir / f"{rec.uid}.kubeconfig"
        kubeconfig.write_bytes(self.kubeconfig.read_bytes())
        kubeconfig.chmod(0o600)
        env = {**self.env, **container_env(pod, pod_ip=rec.ip, host_ip=self.node_ip),
               "KUBECONFIG": str(kubeconfig), "HEXLANE_READY_FILE": str(ready)}
        return [sys.executable, "-m", "hexlane.cli.main", *command[1:]], env

    def start_workload(self, pod: dict[str, Any], rec: PodRecord) -> None:
        tcp, udp = workload_ports(pod)
        ready = self.pods_dir / f"{rec.uid}.ready"
        ready.unlink(missing_ok=True)
        own = self._command(pod, rec, ready)
        env: dict[str, str] | None = None
        if own is not None:
            argv, env = own
            rec.command = list(argv)
        else:
            argv = [sys.executable, "-m", "hexlane.lab.workload", "--pod", rec.name,
                    "--node", self.node, "--ready-file", str(ready)]
            argv += [a for p in tcp for a in ("--tcp", str(p))]
            argv += [a for p in udp for a in ("--udp", str(p))]
            rec.command = []
        argv = netns.with_resolv_conf(self.write_resolv_conf(pod, rec), argv)
        log_path = self.dir / "logs" / f"{rec.namespace}_{rec.name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as out:
            if rec.netns:
                proc = netns.popen(rec.netns, argv, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, env=env)
            else:  # hostNetwork: the kubelet's own namespace, the node's
                proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True,
                                        env=env)
        self.procs[rec.uid] = proc
        rec.pid, rec.started_at, rec.ready_at = proc.pid, time.time(), 0.0
        self._save(rec)

    def _status(self, pod: dict[str, Any], rec: PodRecord, *, ready: bool,
                terminated: bool = False) -> dict[str, Any]:
        container = ((pod.get("spec") or {}).get("containers") or [{}])[0]
        ready_since = _stamp(rec.ready_at or rec.started_at)
        flag = "True" if ready else "False"
        state: dict[str, Any] = {"running": {"startedAt": _stamp(rec.started_at)}}
        if terminated:
            state = {"terminated": {"exitCode": 0, "reason": "Completed",
                                    "startedAt": _stamp(rec.started_at)}}
        scheduled = _stamp(rec.started_at)
        return {
            "phase": "Running",
            "hostIP": self.node_ip, "hostIPs": [{"ip": self.node_ip}],
            "podIP": rec.ip, "podIPs": [{"ip": rec.ip}],
            "startTime": scheduled,
            "qosClass": "BestEffort",
            "conditions": [
                {"type": "PodReadyToStartContainers", "status": "True",
                 "lastTransitionTime": scheduled},
                {"type": "Initialized", "status": "True", "lastTransitionTime": scheduled},
                {"type": "Ready", "status": flag, "lastTransitionTime": ready_since},
                {"type": "ContainersReady", "status": flag, "lastTransitionTime": ready_since},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": scheduled},
            ],
            "containerStatuses": [{
                "name": str(container.get("name") or "main"),
                "image": str(container.get("image") or ""),
                "imageID": "", "containerID": f"hexlane-lab://{rec.container_id}",
                "ready": ready, "started": not terminated, "restartCount": rec.restarts,
                "state": state,
            }],
        }

    async def write_status(self, pod: dict[str, Any], rec: PodRecord, *, ready: bool,
                           terminated: bool = False) -> None:
        status = self._status(pod, rec, ready=ready, terminated=terminated)
        if _comparable(pod.get("status") or {}) == _comparable(status):
            return
        try:
            stored = await patch_status(self.client, Pod, rec.name, status,
                                        namespace=rec.namespace)
        except ApiError as e:
            if e.not_found:
                return
            raise
        if uid_of(stored) == rec.uid:
            self.informer.cache.put(stored)

    async def terminate(self, pod: dict[str, Any]) -> None:
        uid = uid_of(pod)
        try:
            rec = self.records.get(uid)
            grace = grace_seconds(pod)
            deadline = time.monotonic() + grace
            if rec is not None:
                pre_stop = min(pre_stop_seconds(pod), grace)
                if pre_stop > 0 and self._alive(rec):
                    log.info("pod %s: preStop sleep %.0fs", rec.key, pre_stop)
                    await asyncio.sleep(pre_stop)
                await self._stop_workload(rec, max(0.0, deadline - time.monotonic()))
                current = self.informer.cache.get(rec.key) or pod
                if uid_of(current) == uid:
                    await self.write_status(current, rec, ready=False, terminated=True)
                await self.teardown(rec, grace=0)
            await self._delete_pod(pod)
        except (ApiError, OSError, CNIFailed) as e:
            log.warning("pod %s/%s: termination failed: %s; retrying", namespace_of(pod),
                        name_of(pod), e)
            asyncio.get_running_loop().call_later(2.0, self.queue.put,
                                                  f"{namespace_of(pod)}/{name_of(pod)}")
        finally:
            self.terminating.pop(uid, None)

    async def _stop_workload(self, rec: PodRecord, grace: float) -> None:
        if not self._alive(rec):
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(rec.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while self._alive(rec) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._alive(rec):
            with contextlib.suppress(ProcessLookupError):
                os.kill(rec.pid, signal.SIGKILL)
        proc = self.procs.get(rec.uid)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(proc.wait, 5)

    async def teardown(self, rec: PodRecord, *, grace: float) -> None:
        """Stop the workload, CNI DEL, remove the namespace, forget the record."""
        await self._stop_workload(rec, grace)
        if rec.netns:
            net = load_network_config(self.conf_dir)
            if net is not None:
                await cni_del(net, self.bin_dir, rec.container_id,
                              netns.netns_path(rec.netns), IFNAME, self._cni_args(rec),
                              rec.cni_result or None)
            await asyncio.to_thread(netns.delete, rec.netns)
            log.info("pod %s: sandbox %s removed", rec.key, rec.netns)
        self._forget(rec)

    async def _delete_pod(self, pod: dict[str, Any]) -> None:
        path = kind_of(Pod).path(namespace_of(pod), name_of(pod))
        try:
            await self.client.request(
                "DELETE", path, params={"gracePeriodSeconds": "0"},
                body={"apiVersion": "v1", "kind": "DeleteOptions", "gracePeriodSeconds": 0,
                      "preconditions": {"uid": uid_of(pod)}})
        except ApiError as e:
            if not (e.not_found or e.conflict):
                raise


def _comparable(status: dict[str, Any]) -> Any:
    out = {k: v for k, v in status.items() if k not in ("conditions", "containerStatuses")}
    out["conditions"] = sorted((c.get("type"), c.get("status")) for c in
                               status.get("conditions") or [])
    out["containers"] = [(c.get("name"), c.get("ready"), c.get("restartCount"),
                          sorted((c.get("state") or {}).keys()))
                         for c in status.get("containerStatuses") or []]
    return out


async def _main(args: argparse.Namespace) -> int:
    client = KubeClient(load_client_config(None, args.kubeconfig), RateLimiter(QPS, BURST))
    await run_until_stopped(Kubelet(client, args).run(), "kubelet")
    await client.aclose()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hexlane.lab.kubelet")
    p.add_argument("--lab", required=True)
    p.add_argument("--node", default=socket.gethostname())
    p.add_argument("--node-ip", required=True)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--dir", required=True, help="the kubelet's own state (pod records, logs)")
    p.add_argument("--cni-conf-dir", required=True)
    p.add_argument("--cni-bin-dir", required=True)
    p.add_argument("--control-plane", action="store_true")
    p.add_argument("--lease-renew", type=float, default=10.0)
    p.add_argument("--cluster-dns", default="", help="the nameserver of ClusterFirst pods "
                   "(the kube-dns Service's address); none: every pod sees the host's "
                   "resolv.conf")
    p.add_argument("--cluster-domain", default=CLUSTER_DOMAIN)
    args = p.parse_args(argv)
    log_to_stderr()
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
