"""The agent's health verdict and its readable status (pure, from the status document).

Pins down: a complete, fresh document is healthy; each way of being unhealthy (manager not
started, an expected program not attached, an informer not synced, the API server
unreachable, a stale or missing sync, a failing controller) gives its own reason; the text
rendering shows the lines `cilium status` users look for.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from hexlane.agent.status import brief, format_status, health

NOW = 1_000_000.0


def healthy_doc() -> dict[str, Any]:
    return {
        "node": "node1", "now": NOW, "syncInterval": 10.0, "lastSync": NOW - 2,
        "kubeProxyReplacement": {"enabled": True, "note": ""},
        "kubernetes": {"server": "https://10.0.0.10:6443", "reachable": True, "error": "",
                       "lastContact": NOW - 1, "lastEvent": NOW - 5,
                       "informers": {"nodes": {"synced": True}, "pods": {"synced": True}}},
        "ipam": {"mode": "cluster-pool", "source": "CiliumNode spec.ipam.podCIDRs",
                 "podCIDR": "10.42.1.0/24", "routerIP": "10.42.1.1", "allocated": 3,
                 "capacity": 253},
        "routing": {"mode": "native", "autoDirectNodeRoutes": True, "endpointRoutes": True,
                    "hostDevice": "hexlane_host",
                    "nodes": [{"name": "node2", "nodeIP": "10.0.0.12",
                               "podCIDRs": ["10.42.2.0/24"]}]},
        "masquerading": {"enabled": True, "device": "eth0", "nativeRoutingCIDR": "10.42.0.0/16"},
        "datapath": {"expected": [{"device": "eth0", "direction": "egress",
                                   "name": "hl_masq_egress"}],
                     "programs": [{"device": "eth0", "direction": "egress",
                                   "name": "hl_masq_egress", "id": 7}]},
        "endpointManager": {"started": True, "endpoints": 3},
        "controllers": [{"name": "routes", "healthy": True, "consecutiveFailures": 0,
                         "lastError": ""}],
    }


def test_complete_document_is_healthy() -> None:
    assert health(healthy_doc()) == []
    assert brief(healthy_doc()) == (True, [])


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[p]
    node[last] = value


@pytest.mark.parametrize(("path", "value", "reason"), [
    ("endpointManager.started", False, "endpoint manager not started"),
    ("datapath.programs", [], "hl_masq_egress not attached at tc egress of eth0"),
    ("kubernetes.informers.pods.synced", False, "not synced yet: pods"),
    ("kubernetes.reachable", False, "API server https://10.0.0.10:6443 unreachable"),
    ("lastSync", NOW - 31, "last sync 31s ago"),
    ("lastSync", None, "no routing sync yet"),
    ("controllers", [{"name": "routes", "consecutiveFailures": 2, "lastError": "boom"}],
     "controller routes failing: boom"),
    ("datapath.error", "tc query failed: x", "datapath: tc query failed: x"),
])
def test_each_problem_has_its_reason(path: str, value: Any, reason: str) -> None:
    doc = copy.deepcopy(healthy_doc())
    _set(doc, path, value)
    reasons = health(doc)
    assert len(reasons) == 1 and reason in reasons[0], reasons


def test_sync_just_inside_the_window_is_fine() -> None:
    doc = healthy_doc()
    doc["lastSync"] = NOW - 29.9
    assert health(doc) == []


def test_text_shows_the_usual_lines() -> None:
    text = format_status(healthy_doc())
    for expected in ("KubeProxyReplacement:", "True", "Kubernetes:", "Ok",
                     "10.42.1.0/24 (from CiliumNode spec.ipam.podCIDRs)", "3/253 allocated",
                     "Network: Native", "autoDirectNodeRoutes: Enabled",
                     "node node2 10.0.0.12", "BPF   [eth0]   10.42.0.0/16",
                     "eth0 tc egress: hl_masq_egress (id 7)", "Endpoints:", "1/1 healthy",
                     "Last sync:", "2.0s ago", "Health:"):
        assert expected in text, expected
    doc = healthy_doc()
    doc["kubeProxyReplacement"].update(services=4, backends=6, algorithm="maglev", mode="dsr",
                                       lastError="")
    assert "True   [4 services, 6 backends, maglev, dsr]" in format_status(doc)
    doc["kubernetes"]["reachable"] = False
    assert "Not healthy" in format_status(doc) and "Unreachable" in format_status(doc)


def test_hubble_line() -> None:
    doc = healthy_doc()
    assert "Hubble:" in format_status(doc) and "Disabled" in format_status(doc)
    doc["hubble"] = {"enabled": False, "note": "flows come from the service load balancer's "
                                               "programs: kubeProxyReplacement is off"}
    assert "Disabled   [flows come from" in format_status(doc)
    doc["hubble"] = {"enabled": True, "serving": True, "flows": 123, "maxFlows": 4095,
                     "flowsRate": 1.5, "events": {"received": 2000, "lost": 3},
                     "listenAddress": ":4244", "tls": True, "error": ""}
    text = format_status(doc)
    assert ("Ok   Current/Max Flows: 123/4,095 (3.00%), Flows/s: 1.50   events received "
            "2,000, lost 3   :4244 (mTLS)   Metrics: Disabled") in text
    doc["hubble"]["metrics"] = {"enabled": True, "serving": True, "address": ":9965",
                                "metrics": ["drop", "flow"], "error": ""}
    assert "Metrics: Ok (:9965/metrics: drop, flow)" in format_status(doc)
    doc["hubble"]["metrics"].update(serving=False, error="Hubble metrics are not served: "
                                                        "address in use")
    assert "Metrics: Warning: Hubble metrics are not served: address in use" \
        in format_status(doc)
    doc["hubble"].update(serving=False, error="the Hubble API is not served: address in use")
    text = format_status(doc)
    assert "Warning: the Hubble API is not served: address in use" in text
    assert health(doc) == []  # the node's networking does not depend on it
    doc["hubble"].update(l7={"enabled": True, "dnsPorts": [53], "httpPorts": [80, 8080]},
                         events={"received": 5, "lost": 0, "unreadable": 2})
    assert "L7: DNS 53, HTTP 80,8080 (2 unreadable)" in format_status(doc)
    doc["hubble"]["l7"] = {"enabled": False}
    assert "L7: off" in format_status(doc)
