"""`hexlane lab demo`: the homelab guides' story, told on a lab with real clients.

Seed 000's Helm values (k3s's API proxy on 127.0.0.1:6444, kube-proxy replacement, LB-IPAM,
cluster-pool IPAM) with Maglev, its pool and L2 policy applied with kubectl, a Deployment
behind a LoadBalancer Service; then the homelab user's laptop (the lab's client) reaches the
Service by NodePort and by its LoadBalancer IP, Maglev spreads the connections, the node's
`hexlane status` and `hexlane service list` show what is programmed, and a node dies while
traffic keeps flowing to the backends that remain.

Every step prints the command it runs (as a user would type it) and what came back. Seed
000's L2 policy makes one node answer ARP for the LoadBalancer IP (the one hexlane's election
gives it to): the client arpings it and reaches it with no route of its own.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from hexlane.lab import manager

REPO_EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
DEMO_SERVICE = "echo"
DEMO_NAMESPACE = "default"


class DemoError(manager.LabError):
    """A demo step did not come out as the story says."""


def _say(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _show(argv: Sequence[str]) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)


def _hexlane_path() -> str:
    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def _run_in(lab: str, target: str, argv: Sequence[str], *, check: bool = True,
            echo: bool = True, timeout: float = 30.0) -> str:
    """Run argv in a lab host or pod; print and return its output."""
    user_form = ["hexlane", "lab", "exec", "--name", lab, target, "--", *argv]
    if echo:
        _show(user_form)
    cmd, env = manager.exec_argv(lab, target, argv)
    done = subprocess.run(cmd, env={**os.environ, "PATH": _hexlane_path(), **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
    out = done.stdout + done.stderr
    if echo and out.strip():
        print(out.rstrip(), flush=True)
    if check and done.returncode != 0:
        raise DemoError(f"`{' '.join(user_form)}` exited {done.returncode}")
    return done.stdout


def _kubectl(lab: str, *args: str) -> None:
    _show(["hexlane", "lab", "kubectl", "--name", lab, *args])
    if manager.run_kubectl(lab, args) != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed")


def _wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    result = manager.poll(check, timeout, interval=0.5)
    if result is None:
        raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
    return result


def _l2_announcer(lab: str, ip: str) -> str:
    """The node whose agent announces `ip` ("" while none does), as `hexlane l2 list` on
    each node says (in either election)."""
    for host in _plan(lab).node_hosts:
        out = _run_in(lab, host.role, ["hexlane", "l2", "list", "-o", "json"], check=False,
                      echo=False)
        try:
            listed = json.loads(out)
        except ValueError:
            continue
        if any(a.get("ip") == ip for a in listed.get("announcements") or []):
            return host.role
    return ""


def _plan(lab: str) -> manager.LabPlan:
    state = manager.LabState.load(lab)
    if state is None:
        raise DemoError(f"lab {lab} vanished")
    return state.plan


def _api(lab: str, path: str) -> Any:
    return manager.api_request(_plan(lab), "GET", path)


def _exactly(items: list[Any], n: int) -> list[Any] | None:
    return items if len(items) == n else None


def _service(lab: str) -> dict[str, Any]:
    obj: dict[str, Any] = _api(lab, f"/api/v1/namespaces/{DEMO_NAMESPACE}/services/"
                                    f"{DEMO_SERVICE}")
    return obj


def _ingress_ip(lab: str) -> str | None:
    ingress = ((_service(lab).get("status") or {}).get("loadBalancer") or {}).get("ingress")
    return str(ingress[0]["ip"]) if ingress else None


def _ready_endpoints(lab: str) -> list[tuple[str, str]]:
    slices = _api(lab, f"/apis/discovery.k8s.io/v1/namespaces/{DEMO_NAMESPACE}/endpointslices"
                       f"?labelSelector=kubernetes.io/service-name={DEMO_SERVICE}")
    out = []
    for s in slices.get("items", []):
        for ep in s.get("endpoints") or []:
            if (ep.get("conditions") or {}).get("ready"):
                out.append((ep["addresses"][0], ep.get("nodeName", "")))
    return sorted(out)


def _programmed_backends(lab: str, node: str) -> list[str]:
    """Backend addresses in a node's service maps (from `hexlane service list -o json`)."""
    out = _run_in(lab, node, ["hexlane", "service", "list", "-o", "json"], echo=False)
    return [str(b.get("address", "")).split(":")[0] for svc in json.loads(out)
            for b in svc.get("backends", [])]


def _spread(lab: str, url: str, ports: range) -> Counter[str]:
    """One connection per client source port; which pod answered each."""
    answered: Counter[str] = Counter()
    for port in ports:
        out = _run_in(lab, "client", ["curl", "-s", "--max-time", "3", "--local-port",
                                      str(port), url], echo=False, check=False)
        if not out.strip():
            print(f"   no answer from {url} to source port {port}", flush=True)
        answered[out.strip() or "(no answer)"] += 1
    return answered


def _print_spread(answered: Counter[str]) -> None:
    for pod, n in sorted(answered.items()):
        print(f"   {n:3d}  {pod}")


def run(lab: str, *, keep: bool = False, nodes: int = 3) -> int:
    """Tell the story; returns 0 when every step came out as it should."""
    cilium_config = REPO_EXAMPLES / "seed-000" / "cilium-config.yaml"
    values = REPO_EXAMPLES / "seed-000" / "values.yaml"
    for f in (cilium_config, values):
        if not f.exists():
            raise DemoError(f"{f}: the demo uses the seed examples of a hexlane checkout")
    created = False
    try:
        _say("A homelab in network namespaces: LAN switch, control plane, "
             f"{nodes} nodes, a laptop")
        if manager.lab_exists(lab):
            print(f"lab {lab} exists already: the demo uses it as it is")
        else:
            _show(["hexlane", "lab", "up", "--name", lab, "--values", str(values),
                   "--set", "loadBalancer.algorithm=maglev"])
            state = manager.up(lab, nodes=nodes, lan="10.0.0.0/24", lan_ifname="eth0",
                               values_files=[str(values)],
                               sets=["loadBalancer.algorithm=maglev"], node_grace=10.0)
            created = True
            print(manager.usage(state.plan))
        _kubectl(lab, "get", "nodes", "-o", "wide")
        _run_in(lab, "node1", ["hexlane", "status"])

        _say("LB-IPAM: seed 000's pool and L2 policy, applied as the guide says")
        _kubectl(lab, "apply", "-f", str(cilium_config))

        _say("A Deployment of 3 pods behind a LoadBalancer Service")
        with resources.as_file(resources.files("hexlane.lab") / "demo.yaml") as manifest:
            _kubectl(lab, "apply", "-f", str(manifest))
        lb_ip = _wait_for("an IP from the pool", lambda: _ingress_ip(lab), 60)
        backends = _wait_for("3 ready endpoints", lambda: _exactly(_ready_endpoints(lab), 3), 90)
        _kubectl(lab, "get", "svc", "-o", "wide")
        _kubectl(lab, "get", "ciliumloadbalancerippools")
        _kubectl(lab, "get", "pods", "-o", "wide")
        print(f"LB-IPAM gave {lb_ip}; backends: "
              + ", ".join(f"{ip} on {node}" for ip, node in backends))

        svc = _service(lab)
        node_port = svc["spec"]["ports"][0]["nodePort"]
        node1_ip = str(_plan(lab).host("node1").ip)

        _say(f"From the laptop: NodePort {node1_ip}:{node_port}, "
             "one connection per source port")
        answered = _spread(lab, f"http://{node1_ip}:{node_port}/", range(41000, 41024))
        _print_spread(answered)
        if "(no answer)" in answered or len(answered) < 2:
            raise DemoError("NodePort connections did not spread over the backends")

        _say(f"L2 announcements: which node answers ARP for {lb_ip}")
        announcer = _wait_for(f"a node to announce {lb_ip}",
                              lambda: _l2_announcer(lab, lb_ip), 60)
        _run_in(lab, announcer, ["hexlane", "l2", "list"])
        _say(f"From the laptop: the LoadBalancer IP {lb_ip} (ARP, no route of its own)")
        _run_in(lab, "client", ["arping", "-c", "2", "-w", "3", "-i", "eth0", lb_ip])
        _run_in(lab, "client", ["curl", "-s", "--max-time", "3", f"http://{lb_ip}/whoami"])
        answered = _spread(lab, f"http://{lb_ip}/", range(42000, 42024))
        _print_spread(answered)
        if "(no answer)" in answered:
            raise DemoError("the LoadBalancer IP did not answer every connection")

        _say(f"What {announcer} (where {lb_ip} comes in) programmed in eBPF (Maglev, SNAT), "
             "as `cilium service list` shows")
        _run_in(lab, announcer, ["hexlane", "service", "list"])
        _run_in(lab, announcer, ["hexlane", "bpf", "lb", "maglev", "list"])

        victim = max((node for _, node in backends if node not in ("node1", announcer)),
                     default=None)
        if victim is not None:
            _say(f"{victim} dies (processes killed, LAN link down); traffic keeps flowing "
                 f"({announcer} keeps announcing {lb_ip})")
            _show(["hexlane", "lab", "kill", "--name", lab, victim])
            manager.kill(lab, victim)
            _wait_for(f"{victim}'s backend to leave the Service",
                      lambda: all(node != victim for _, node in _ready_endpoints(lab)), 90)
            gone = {ip for ip, node in backends if node == victim}
            _wait_for(f"{announcer}'s datapath to drop the dead backend",
                      lambda: not gone & set(_programmed_backends(lab, announcer)), 30)
            answered = _spread(lab, f"http://{lb_ip}/", range(43000, 43016))
            _print_spread(answered)
            if "(no answer)" in answered:
                raise DemoError(f"connections failed after {victim} died")
            _show(["hexlane", "lab", "revive", "--name", lab, victim])
            manager.revive(lab, victim)
            print(f"{victim} is back")
        _say("Done")
        if keep or not created:
            print(f"the lab stays up: `hexlane lab down --name {lab}` removes it")
        return 0
    finally:
        if created and not keep:
            _say("Removing the lab")
            _show(["hexlane", "lab", "down", "--name", lab])
            left = manager.down(lab)
            print(f"lab {lab} removed" if not left else f"could not remove: {left}")

