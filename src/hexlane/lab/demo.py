"""`hexlane lab demo`: seed 000's whole story, told on a lab with a real client.

A 3-node lab with seed 000's values as its guide layers them (values.yaml, then
values-monitoring.yaml, then values-hubble.yaml: kube-proxy replacement, L2 announcements,
external IPs, Hubble with its metrics, relay and UI), then:

1. seed 000's CiliumLoadBalancerIPPool and CiliumL2AnnouncementPolicy, applied as written;
2. a Deployment of 3 pods (one per node) behind a LoadBalancer Service requesting 10.0.0.150,
   one requesting nothing, and seed 000's own service-blue (it asks for IPs outside the pool:
   it stays pending, and its condition says why);
3. each Service's ingress IP and LB-IPAM condition; which node announces each IP and why
   (`hexlane l2 list`: policy, interface, hexlane's election);
4. from the laptop (the lab's client): arping the IP (the announcing node's LAN MAC answers),
   then 300 HTTP requests and how they spread over the backends;
5. that traffic in Hubble (`hexlane hubble observe` through the relay) and in the Hubble
   metrics the seed enables (each node's :9965);
6. the announcing node killed while the laptop opens a connection every 20 ms: the new
   announcer, how long traffic stopped, and the backend that died with the node;
7. `--keep` leaves the lab up and says how to open the Hubble UI (`hexlane lab
   port-forward`); otherwise the lab is removed and nothing of it is left.

Every step prints the command a user would type and what came back; slow steps say what they
wait for and how long it took. An expectation that does not hold stops the demo with a
`DemoError` naming it (exit 1); the lab is removed then too, unless `--keep`.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from hexlane.k8s.resources import EndpointSlice, Pod, Service, kind_of
from hexlane.lab import manager
from hexlane.lab.probe import (
    Sample,
    arp_macs,
    link_mac,
    metric_samples,
    outage,
    spread_table,
)

T = TypeVar("T")
REPO_EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
SEED = REPO_EXAMPLES / "seed-000"
VALUES = [SEED / "values.yaml", SEED / "values-monitoring.yaml", SEED / "values-hubble.yaml"]
NAMESPACE = "default"
DEPLOYMENT = "echo"
REQUESTED = ("echo", "10.0.0.150")  # the Service asking for an IP, and the IP
UNREQUESTED = "echo-any"  # the Service asking for none
BLUE = ("example", "service-blue")  # seed 000's own Service, outside its pool
SATISFIED = "cilium.io/IPAMRequestSatisfied"  # LB-IPAM's condition type, as Cilium's
REQUESTS = 300
NODES = 3
HUBBLE_METRICS_PORT = 9965
UI_PORT = 8081


class DemoError(manager.LabError):
    """A demo step did not come out as the story says."""


# -- output ----------------------------------------------------------------------------------


def _step(n: int, text: str) -> None:
    print(f"\n== {n}/7  {text}", flush=True)


def _say(text: str) -> None:
    print(text, flush=True)


def _show(argv: Sequence[str]) -> None:
    print("$ " + " ".join(shlex.quote(a) for a in argv), flush=True)


@contextmanager
def _slow(what: str) -> Iterator[None]:
    """A line saying what is awaited, and when done how long it took."""
    print(f"   ... {what}", flush=True)
    start = time.monotonic()
    yield
    print(f"   ... done in {time.monotonic() - start:.1f}s", flush=True)


def _wait_for(what: str, check: Callable[[], T | None], timeout: float,
              interval: float = 0.3) -> T:
    with _slow(f"waiting for {what} (at most {timeout:.0f}s)"):
        result = manager.poll(check, timeout, interval=interval)
        if result is None:
            raise DemoError(f"timed out after {timeout:.0f}s waiting for {what}")
    return result


def _parallel(calls: Sequence[Callable[[], T]]) -> list[T]:
    with ThreadPoolExecutor(max_workers=max(1, len(calls))) as pool:
        return list(pool.map(lambda call: call(), calls))


# -- acting on the lab -----------------------------------------------------------------------


def _hexlane_path() -> str:
    return f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def _user_exec(lab: str, target: str, argv: Sequence[str]) -> list[str]:
    return ["hexlane", "lab", "exec", "--name", lab, target, "--", *argv]


def _run_in(lab: str, target: str, argv: Sequence[str], *, check: bool = True,
            echo: bool = True, show_output: bool = True, timeout: float = 30.0) -> str:
    """Run argv in a lab host or pod; print (when echo) and return its output."""
    user_form = _user_exec(lab, target, argv)
    if echo:
        _show(user_form)
    cmd, env = manager.exec_argv(lab, target, argv)
    done = subprocess.run(cmd, env={**os.environ, "PATH": _hexlane_path(), **env},
                          capture_output=True, text=True, timeout=timeout, check=False)
    out = done.stdout + done.stderr
    if echo and show_output and out.strip():
        print(out.rstrip(), flush=True)
    if check and done.returncode != 0:
        tail = "\n".join(out.strip().splitlines()[-5:])
        raise DemoError(f"`{shlex.join(user_form)}` exited {done.returncode}"
                        + (f":\n{tail}" if tail else ""))
    return done.stdout


def _popen_in(lab: str, target: str, argv: Sequence[str]) -> subprocess.Popen[str]:
    print("$ " + shlex.join(_user_exec(lab, target, argv)) + " &", flush=True)
    cmd, env = manager.exec_argv(lab, target, argv)
    return subprocess.Popen(cmd, env={**os.environ, "PATH": _hexlane_path(), **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _kubectl(lab: str, *args: str) -> None:
    _show(["hexlane", "lab", "kubectl", "--name", lab, *args])
    if manager.run_kubectl(lab, args) != 0:
        raise DemoError(f"kubectl {shlex.join(args)} failed")


def _plan(lab: str) -> manager.LabPlan:
    state = manager.LabState.load(lab)
    if state is None:
        raise DemoError(f"lab {lab} vanished")
    return state.plan


def _api(lab: str, path: str, **params: str) -> Any:
    return manager.api_request(_plan(lab), "GET", path, params=params or None)


def _service(lab: str, namespace: str, name: str) -> dict[str, Any]:
    obj: dict[str, Any] = _api(lab, kind_of(Service).path(namespace, name))
    return obj


def _ingress_ip(svc: dict[str, Any]) -> str | None:
    ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress")
    return str(ingress[0]["ip"]) if ingress else None


def _condition(svc: dict[str, Any]) -> dict[str, Any] | None:
    for c in (svc.get("status") or {}).get("conditions") or []:
        if c.get("type") == SATISFIED:
            return dict(c)
    return None


def _backends(lab: str) -> dict[str, tuple[str, str]] | None:
    """The ready pods of the Deployment: name -> (IP, node); None until all are ready on
    distinct nodes."""
    pods = _api(lab, kind_of(Pod).path(NAMESPACE), labelSelector=f"app={DEPLOYMENT}")
    ready = {}
    for p in pods.get("items") or []:
        status = p.get("status") or {}
        if any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in status.get("conditions") or []) and status.get("podIP"):
            ready[p["metadata"]["name"]] = (str(status["podIP"]),
                                            str((p.get("spec") or {}).get("nodeName", "")))
    return ready if len(ready) == NODES else None


def _endpoints(lab: str, service: str) -> set[str]:
    slices = _api(lab, kind_of(EndpointSlice).path(NAMESPACE),
                  labelSelector=f"kubernetes.io/service-name={service}")
    return {ep["addresses"][0] for s in slices.get("items") or []
            for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready")}


def _l2_list(lab: str, node: str) -> dict[str, Any]:
    out = _run_in(lab, node, ["hexlane", "l2", "list", "-o", "json"], check=False, echo=False)
    try:
        listed = json.loads(out)
    except ValueError:
        return {}
    return listed if isinstance(listed, dict) else {}


def _announcers(lab: str, nodes: Sequence[str]) -> dict[str, tuple[str, dict[str, Any]]]:
    """IP -> (the node announcing it, its `hexlane l2 list` row), asking the nodes at once."""
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    listed = _parallel([partial(_l2_list, lab, n) for n in nodes])
    for node, l2 in zip(nodes, listed, strict=True):
        for a in l2.get("announcements") or []:
            out.setdefault(str(a.get("ip")), (node, a))
    return out


def _mac(lab: str, node: str, ifname: str) -> str:
    out = _run_in(lab, node, ["ip", "link", "show", ifname], echo=False)
    mac = link_mac(out)
    if mac is None:
        raise DemoError(f"no MAC in `ip link show {ifname}` on {node}")
    return mac


def _node_metrics(lab: str, node_ip: str, echo: bool) -> str:
    return _run_in(lab, "client", ["curl", "-s", "--max-time", "3",
                                   f"http://{node_ip}:{HUBBLE_METRICS_PORT}/metrics"],
                   echo=echo, show_output=False)


def _http_requests(pages: Sequence[str]) -> float:
    return sum(v for page in pages
               for _, v in metric_samples(page, ["hubble_http_requests_total"]))


# -- the story -------------------------------------------------------------------------------


def run(lab: str, *, keep: bool = False) -> int:
    """Tell the story; returns 0 when every step came out as it should (DemoError else)."""
    for f in [*VALUES, SEED / "cilium-config.yaml", SEED / "service-blue.yaml"]:
        if not f.exists():
            raise DemoError(f"{f}: the demo uses the seed examples of a hexlane checkout")
    if manager.lab_exists(lab):
        raise DemoError(f"lab {lab} exists already: the demo builds a lab of its own and "
                        f"removes it afterwards; pick another --name, or remove it with "
                        f"`hexlane lab down --name {lab}`")
    began = time.monotonic()
    ok = False
    try:
        _story(lab, keep)
        ok = True
    finally:
        if not keep:
            problem = _teardown(lab)
            if problem and ok:
                raise DemoError(problem)
            if problem:
                print(f"error: {problem}", file=sys.stderr)
        elif not ok:
            _say(f"\nthe lab stays up for inspection (--keep): logs in "
                 f"/run/hexlane/lab/{lab}/logs; `hexlane lab down --name {lab}` removes it")
    _say(f"\ndemo done in {time.monotonic() - began:.0f}s")
    return 0


def _story(lab: str, keep: bool) -> None:
    _step(0, f"A homelab in network namespaces: a LAN switch, a control plane, {NODES} nodes, "
             "a laptop; seed 000's values as its guide layers them")
    values_args = [a for f in VALUES for a in ("--values", str(f))]
    _show(["hexlane", "lab", "up", "--name", lab, "--nodes", str(NODES), *values_args])
    with _slow(f"building lab {lab} and waiting for its nodes and agents"):
        state = manager.up(lab, nodes=NODES, lan="10.0.0.0/24", lan_ifname="eth0",
                           values_files=[str(f) for f in VALUES], sets=[], node_grace=10.0)
    plan = state.plan
    print(manager.usage(plan))
    nodes = [h.role for h in plan.node_hosts]
    node_ip = {h.role: str(h.ip) for h in plan.node_hosts}
    client_ip = str(plan.client.ip)
    ifname = plan.lan_ifname
    _kubectl(lab, "get", "nodes", "-o", "wide")

    # 1 ----------------------------------------------------------------------------------------
    _step(1, "LB-IPAM and L2 announcements: seed 000's pool and policy, as written")
    _kubectl(lab, "apply", "-f", str(SEED / "cilium-config.yaml"))

    # 2 ----------------------------------------------------------------------------------------
    service, lb_ip = REQUESTED
    _step(2, f"A Deployment of {NODES} pods; Services asking for {lb_ip}, for nothing, and "
             "seed 000's service-blue")
    with resources.as_file(resources.files("hexlane.lab") / "demo.yaml") as manifest:
        _kubectl(lab, "apply", "-f", str(manifest))
    _kubectl(lab, "create", "namespace", BLUE[0])
    _kubectl(lab, "apply", "-f", str(SEED / "service-blue.yaml"))

    def settled() -> tuple[str, str, dict[str, Any]] | None:
        asked = _service(lab, NAMESPACE, service)
        anyip = _service(lab, NAMESPACE, UNREQUESTED)
        blue = _condition(_service(lab, *BLUE))
        got, other = _ingress_ip(asked), _ingress_ip(anyip)
        if got and other and blue is not None:
            return got, other, blue
        return None
    got, pool_ip, blue = _wait_for("LB-IPAM to answer the three Services", settled, 60)
    backends = _wait_for(f"{NODES} ready pods", lambda: _backends(lab), 90)
    if got != lb_ip:
        raise DemoError(f"{service} asked for {lb_ip} and got {got}")
    _kubectl(lab, "get", "pods", "-o", "wide")
    nodes_of = {pod: node for pod, (_, node) in backends.items()}
    if sorted(nodes_of.values()) != nodes:
        raise DemoError(f"the pods are not one per node: {nodes_of}")

    # 3 ----------------------------------------------------------------------------------------
    _step(3, "Each Service's ingress IP and LB-IPAM condition; who announces each IP, and why")
    _kubectl(lab, "get", "svc", "-A", "-o", "wide")
    cond = f'.status.conditions[?(@.type=="{SATISFIED}")]'
    _kubectl(lab, "get", "svc", "-A", "-o",
             "custom-columns=NAMESPACE:.metadata.namespace,NAME:.metadata.name,"
             f"INGRESS:.status.loadBalancer.ingress[*].ip,SATISFIED:{cond}.status,"
             f"REASON:{cond}.reason,MESSAGE:{cond}.message")
    if blue.get("status") != "False":
        raise DemoError(f"{BLUE[0]}/{BLUE[1]} asks for IPs outside seed 000's pool, yet its "
                        f"{SATISFIED} condition is {blue.get('status')}")
    _say(f"{service} got {lb_ip} (asked for), {UNREQUESTED} got {pool_ip} (the pool's first "
         f"free), {BLUE[1]} stays pending: {blue.get('reason')}: {blue.get('message')}")
    want = [lb_ip, pool_ip]
    announced = _wait_for(f"nodes to announce {' and '.join(want)} (hexlane l2 list on "
                          f"{', '.join(nodes)})",
                          lambda: (a if all(ip in (a := _announcers(lab, nodes)) for ip in want)
                                   else None), 30, interval=0.2)
    for node in sorted({announced[ip][0] for ip in want}):
        _run_in(lab, node, ["hexlane", "l2", "list"])
    for ip in want:
        node, row = announced[ip]
        why = row.get("why") or {}
        _say(f"{ip} is announced by {node} on {row.get('device')} (policy "
             f"{', '.join(row.get('policies') or [])}): hexlane's election ranks the live "
             f"eligible nodes {' > '.join(why.get('ranking') or [])} for it by rendezvous "
             f"hashing, and {node} is the first with room (at most one IP per node here)")
    announcer = announced[lb_ip][0]

    # 4 ----------------------------------------------------------------------------------------
    _step(4, f"From the laptop ({client_ip}): ARP for {lb_ip}, then {REQUESTS} HTTP requests")
    mac = _mac(lab, announcer, ifname)
    _show(_user_exec(lab, announcer, ["ip", "link", "show", ifname]))
    _say(f"{announcer}'s LAN MAC: {mac}")
    out = _run_in(lab, "client", ["arping", "-c", "2", "-w", "3", "-i", "eth0", lb_ip],
                  check=False)
    macs = arp_macs(out)
    if macs != [mac]:
        raise DemoError(f"arping {lb_ip} was answered by {macs or 'nobody'}, not by "
                        f"{announcer}'s {mac}")
    _say(f"{lb_ip} is answered by {mac}: {announcer}, the node that announces it")
    before = _parallel([partial(_node_metrics, lab, ip, False) for ip in node_ip.values()])
    prober = ["python3", "-m", "hexlane.lab.prober"]
    with _slow(f"{REQUESTS} new connections to {lb_ip}:80, 10 at a time, 1 s timeout each"):
        out = _run_in(lab, "client", [*prober, "spread", lb_ip, "--count", str(REQUESTS),
                                      "--concurrency", "10", "--timeout", "1"],
                      show_output=False, timeout=120)
    result = json.loads(out)
    answers, failed = dict(result["answers"]), int(result["failed"])
    print(spread_table(answers, failed, nodes_of), end="", flush=True)
    if failed or sum(answers.values()) != REQUESTS:
        raise DemoError(f"{failed} of {REQUESTS} requests to {lb_ip} failed")
    if set(answers) != set(backends):
        raise DemoError(f"the requests reached {sorted(answers)}, not every backend "
                        f"({sorted(backends)})")

    # 5 ----------------------------------------------------------------------------------------
    _step(5, "That traffic in Hubble: flows through the relay, and the seed's Hubble metrics")
    flows = _run_in(lab, "cp", ["hexlane", "hubble", "observe", "--last", "20",
                                "--from-ip", client_ip, "--to-port", "80"])
    seen = [line for line in flows.splitlines() if client_ip in line and
            any(pod in line for pod in backends)]
    if not seen:
        raise DemoError("hubble observe shows no flow from the laptop to a backend")
    names = ["hubble_flows_processed_total", "hubble_http_requests_total"]
    with _slow(f"reading :{HUBBLE_METRICS_PORT}/metrics of every node"):
        after = _parallel([partial(_node_metrics, lab, ip, True) for ip in node_ip.values()])
    for node, page in zip(nodes, after, strict=True):
        _say(f"{node} ({', '.join(names)}):")
        for line, _ in metric_samples(page, names):
            _say(f"   {line}")
    flows_total = sum(v for page in after
                      for _, v in metric_samples(page, ["hubble_flows_processed_total"]))
    grown = _http_requests(after) - _http_requests(before)
    if flows_total <= 0 or grown <= 0:
        raise DemoError(f"Hubble metrics did not count the traffic (flows {flows_total}, "
                        f"HTTP requests +{grown})")
    _say(f"hubble_http_requests_total over the {NODES} nodes grew by {grown:.0f} with the "
         f"{REQUESTS} requests (counted at each backend's node); "
         f"hubble_flows_processed_total is {flows_total:.0f}")

    # 6 ----------------------------------------------------------------------------------------
    victim_pod = next(pod for pod, node in nodes_of.items() if node == announcer)
    _step(6, f"{announcer} dies while the laptop opens a connection to {lb_ip} every 20 ms")
    watcher = _popen_in(lab, "client", [*prober, "watch", lb_ip, "--interval", "0.02",
                                        "--timeout", "1", "--settle", "2", "--max", "40"])
    try:
        assert watcher.stdout is not None
        if watcher.stdout.readline().strip() != "ready":
            raise DemoError(f"the prober on the client got no answer from {lb_ip}")
        time.sleep(0.5)
        _show(["hexlane", "lab", "kill", "--name", lab, announcer])
        killing = time.monotonic()
        manager.kill(lab, announcer)
        # The fault is the LAN link going down (its BPF programs forward on while the link
        # is up, killed agent or not): some time within kill(). Counting from its end, no
        # answer after it comes from before the fault, and any answer before it does.
        fault_at = time.monotonic()
        _say(f"{announcer} killed (LAN link down, processes SIGKILLed) in "
             f"{(fault_at - killing) * 1000:.0f} ms")
        alive = [n for n in nodes if n != announcer]
        taken = _wait_for(f"another node to announce {lb_ip}",
                          lambda: (a[lb_ip] if lb_ip in (a := _announcers(lab, alive))
                                   else None), 30, interval=0.1)
        with _slow("the prober to see traffic settle (2 s without a failure)"):
            out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    if watcher.returncode != 0:
        raise DemoError(f"the prober failed: {err.strip()[-300:]}")
    samples = [Sample.parse(s) for s in json.loads(out)["samples"]]
    o = outage(samples, fault_at)
    new, row = taken
    _run_in(lab, new, ["hexlane", "l2", "list"])
    ranked = " > ".join((row.get("why") or {}).get("ranking") or [])
    _say(f"{lb_ip} moved to {new}: {announcer} is no longer heard, and {new} is the first "
         f"with room in the live eligible nodes' ranking ({ranked})")
    if o.gap is None:
        raise DemoError(f"the laptop's traffic to {lb_ip} did not resume after {announcer} "
                        "died")
    assert o.last_ok_before is not None and o.first_ok_after is not None
    _say(f"the laptop's traffic stopped for {o.gap * 1000:.0f} ms: last answer "
         f"{(fault_at - o.last_ok_before) * 1000:.0f} ms before {announcer} was down, first "
         f"answer {(o.first_ok_after - fault_at) * 1000:.0f} ms after "
         f"({len(samples)} connections, {o.failed} opened after the kill unanswered)")
    dead_ip = backends[victim_pod][0]
    if o.failed_after_recovery and o.last_failure is not None:
        late = (f"{o.failed_after_recovery} connections opened after traffic resumed went to "
                f"it and failed, the last opened {(o.last_failure - fault_at) * 1000:.0f} ms "
                "after the kill")
    else:
        late = ("here the quarantine came with the failover (both follow the heartbeats), so "
                "no connection opened after traffic resumed failed")
    _say(f"the backend {victim_pod} ({dead_ip}) died with {announcer}: connections sent to it "
         f"fail until the agents quarantine it, when their heartbeats no longer hear "
         f"{announcer}; {late}")
    answered_after = {s.backend for s in samples if s.ok and s.start > fault_at}
    if victim_pod in answered_after:
        raise DemoError(f"{victim_pod} answered after {announcer} was killed")
    mac2 = _mac(lab, new, ifname)
    out = _run_in(lab, "client", ["arping", "-c", "1", "-w", "3", "-i", "eth0", lb_ip],
                  check=False)
    if arp_macs(out) != [mac2]:
        raise DemoError(f"after the failover arping {lb_ip} was answered by "
                        f"{arp_macs(out) or 'nobody'}, not by {new}'s {mac2}")
    _say(f"{lb_ip} is now answered by {mac2}: {new}")

    # 7 ----------------------------------------------------------------------------------------
    _step(7, "The Hubble UI" if keep else "Removing the lab")
    if keep:
        flag = f" --name {lab}"
        _say(f"The Hubble UI runs on the control-plane host, http://{plan.cp.ip}:{UI_PORT}/, "
             "inside the lab's namespaces; a browser on this machine cannot reach it "
             "directly. Forward it:\n"
             f"  hexlane lab port-forward{flag} cp {UI_PORT}    # then open "
             f"http://127.0.0.1:{UI_PORT}/ (Ctrl-C stops)\n"
             f"From a laptop: ssh -L {UI_PORT}:127.0.0.1:{UI_PORT} <this machine>, then open "
             f"http://127.0.0.1:{UI_PORT}/ there.\n"
             f"{announcer} stays dead: `hexlane lab revive{flag} {announcer}` brings it back; "
             f"`hexlane lab down{flag}` removes the lab.")


def _teardown(lab: str) -> str | None:
    """Remove the lab; what is left of it, if anything."""
    if not manager.lab_exists(lab):
        return None
    _show(["hexlane", "lab", "down", "--name", lab])
    with _slow(f"removing lab {lab}"):
        left = manager.down(lab)
    if left:
        return f"lab {lab}: could not remove {', '.join(left)}"
    _say(f"lab {lab} removed: none of its namespaces, BPF pins, processes or files is left")
    return None
