"""Hubble Relay in the lab, as a user meets it: the relay runs on the control-plane host (the
lab's values turn it on), and `hexlane hubble observe` there reaches it with no flags, over
mTLS to every agent's 4244.

On the run's shared 2-node lab, in a namespace of its own, a pod on each node calls the other:
every connection is seen by both nodes (to-overlay on the client's, to-endpoint on the
server's). Pins down: one stream holds both nodes' flows in time order; a follower hears
node2 die (NODE_UNAVAILABLE, while node1's flows keep coming), `hubble status` counts it
unavailable, and once node2 is revived it hears NODE_CONNECTED and node2's flows again. The
Hubble UI the lab serves on the control plane (reading the relay) shows the pods and their
calls to Chromium on the client host.
"""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hubble_helpers import Follower

from helpers.browser import HubbleUiPage, browser_missing, chromium, console_errors, screenshot
from helpers.lab import Lab
from helpers.wait import wait_for, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.root]

NS = f"rl-{secrets.token_hex(2)}"
MANIFESTS = f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {NS}}}
""" + "".join(f"""---
apiVersion: v1
kind: Pod
metadata: {{name: p{i}, namespace: {NS}, labels: {{app: p}}}}
spec:
  nodeName: node{i}
  containers: [{{name: p, image: hexlane/workload, ports: [{{containerPort: 8080}}]}}]
""" for i in (1, 2))


@pytest.fixture(scope="module")
def pods(lab: Lab) -> Iterator[dict[str, str]]:
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)

    def ips() -> dict[str, str] | None:
        items = lab.api(f"/api/v1/namespaces/{NS}/pods")["items"]
        found = {p["metadata"]["name"]: (p.get("status") or {}).get("podIP") for p in items}
        ready = all((p.get("status") or {}).get("phase") == "Running" for p in items)
        return found if ready and len(found) == 2 and all(found.values()) else None
    found = wait_for("both pods running", ips, timeout=60, interval=0.3)
    yield found
    lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)


def observe(lab: Lab, *args: str) -> list[dict[str, Any]]:
    out = lab.exec("cp", sys.executable, "-m", "hexlane.cli.main", "hubble", "observe",
                   "-n", NS, "-o", "json", *args)
    return [json.loads(line) for line in out.stdout.splitlines()]


def curl(lab: Lab, src: str, ip: str, timeout: float = 2) -> None:
    lab.exec(f"pod/{NS}/{src}", "curl", "-s", "-m", str(timeout), "-o", "/dev/null",
             f"http://{ip}:8080/", check=False)


def flow_nodes(responses: list[dict[str, Any]]) -> list[str]:
    return [r["flow"]["node_name"] for r in responses if "flow" in r]


def test_one_stream_holds_every_node_in_time_order(lab: Lab, pods: dict[str, str]) -> None:
    for _ in range(2):
        curl(lab, "p1", pods["p2"])
        curl(lab, "p2", pods["p1"])

    def both() -> list[dict[str, Any]] | None:
        flows = observe(lab, "--all")
        return flows if set(flow_nodes(flows)) == {"default/node1", "default/node2"} and \
            len(flows) >= 16 else None
    flows = wait_for("flows of both nodes through the relay", both, timeout=15, interval=0.5)
    times = [r["time"] for r in flows]
    assert times == sorted(times)
    # Every connection shows on both nodes: leaving the client's, arriving at the server's.
    points = {(r["flow"]["node_name"], r["flow"].get("trace_observation_point"))
              for r in flows if not r["flow"].get("is_reply")}
    assert {("default/node1", "TO_OVERLAY"), ("default/node2", "TO_ENDPOINT"),
            ("default/node2", "TO_OVERLAY"), ("default/node1", "TO_ENDPOINT")} <= points
    status = lab.exec("cp", sys.executable, "-m", "hexlane.cli.main", "hubble", "status").stdout
    assert "Healthcheck (via localhost:4245): Ok" in status and "Connected Nodes: 2/2" in status


@pytest.mark.skipif(bool(browser_missing()), reason=browser_missing())
def test_the_hubble_ui_shows_the_lab_through_the_relay(lab: Lab, pods: dict[str, str],
                                                        tmp_path: Path) -> None:
    """The UI the lab runs on the control plane (:8081, reading the relay), in Chromium on
    the client host (the laptop): this namespace's pods as boxes, the calls between them as
    edges, the flows of both nodes in the table, a filter that narrows it, no console error."""
    for _ in range(2):
        curl(lab, "p1", pods["p2"])
        curl(lab, "p2", pods["p1"])
    client_netns = f"{lab.name}-client"
    with chromium(tmp_path / "chromium", netns=client_netns) as driver:
        page = HubbleUiPage(driver, "http://10.0.0.10:8081/")
        page.open(f"namespace={NS}")
        want = {(f"{NS}/p1->{NS}/p2", "TCP", 8080, "FORWARDED"),
                (f"{NS}/p2->{NS}/p1", "TCP", 8080, "FORWARDED")}
        wait_until("both calls on the map", page.edges, lambda e: want <= e, timeout=20)
        drawn = page.map()
        assert drawn["namespace"] == NS and {f"{NS}/p1", f"{NS}/p2"} <= set(drawn["nodes"])
        rows = wait_until("flows of both nodes in the table", page.rows,
                          lambda r: len(r) >= 8, timeout=20)
        assert {r["source"].split(":")[0] for r in rows} >= {f"{NS}/p1", f"{NS}/p2"}
        page.set_filter("verdict", "FORWARDED")
        page.set_filter("pod", f"{NS}/p1")

        def p1_only(shown: list[dict[str, Any]]) -> bool:
            return bool(shown) and all(f"{NS}/p1:" in x["source"] + " " + x["destination"]
                                       for x in shown)
        narrowed = wait_until("only p1's flows", page.rows, p1_only, timeout=10)
        assert page.query() == {"namespace": NS, "verdict": "FORWARDED", "pod": f"{NS}/p1"}
        assert narrowed
        screenshot(driver, tmp_path / "hubble-ui-lab.png")
        page.leave()
        assert console_errors(driver) == []


def test_a_dead_node_is_reported_and_rejoins(lab: Lab, pods: dict[str, str]) -> None:
    follower = Follower([sys.executable, "-m", "hexlane.cli.main", "lab", "exec", "--name",
                         lab.name, "cp", "--",
                         sys.executable, "-m", "hexlane.cli.main", "hubble", "observe", "-f",
                         "-n", NS, "-o", "json"])
    try:
        def saw(node: str) -> bool:
            curl(lab, "p1", pods["p2"])
            return node in flow_nodes(follower.drain())
        wait_for("node2's flows in the follow", lambda: saw("default/node2"), timeout=15,
                 interval=0.2)
        lab.run("kill", "node2")
        event = follower.until(lambda r: "node_status" in r, timeout=15)["node_status"]
        assert event["state_change"] == "NODE_UNAVAILABLE"
        assert event["node_names"] == ["default/node2"]
        status = lab.exec("cp", sys.executable, "-m", "hexlane.cli.main", "hubble",
                          "status").stdout
        assert "Connected Nodes: 1/2" in status and "- default/node2" in status
        # node1's flows keep coming (its SYNs to the dead node leave through the tunnel).
        curl(lab, "p1", pods["p2"], timeout=0.5)
        wait_for("node1's flows while node2 is dead", lambda: "default/node1" in flow_nodes(
            follower.drain()), timeout=10, interval=0.2)

        lab.run("revive", "node2")
        event = follower.until(lambda r: "node_status" in r, timeout=15)["node_status"]
        assert event == {"state_change": "NODE_CONNECTED", "node_names": ["default/node2"]}
        wait_for("node2's flows again", lambda: saw("default/node2"), timeout=20, interval=0.3)
    finally:
        follower.close()
