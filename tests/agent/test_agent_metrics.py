"""The agent's /metrics text, from its collectors, without a node (the lab test reads a real one).

Pins down: the datapath's per-CPU counters summed into cilium_forward_* by direction and
cilium_drop_* by Cilium's reason text (two of our reasons that map to one Cilium code are one
series) and direction; map pressure as entries over max_entries, for the maps the kernel
writes as counted last; controllers, IPAM and L2 series present with zeros before their parts
exist; and the whole output accepted by `promtool check metrics` (Prometheus' own linter).
"""

from __future__ import annotations

import asyncio
import ctypes
import shutil
import subprocess
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from hexlane.agent.metrics import AgentMetrics, KernelMapCounts, MapFill
from hexlane.datapath.lb.maps import DropReason
from hexlane.datapath.metrics import Direction, HlMetricsValue, slot
from hexlane.k8s.controller import Controller


class PerCpuCounters:
    """hl_metrics as `read_counters` sees it: (packets, bytes) per CPU under a slot."""

    def __init__(self, rows: dict[tuple[DropReason, Direction], list[tuple[int, int]]]) -> None:
        self.rows = {slot(reason, way): values for (reason, way), values in rows.items()}

    def lookup_percpu(self, key: ctypes.c_uint32) -> list[HlMetricsValue]:
        values = self.rows.get(key.value, [(0, 0), (0, 0)])
        return [HlMetricsValue(packets, size) for packets, size in values]


def samples(metrics: AgentMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def agent_metrics(counters: Any, kernel: KernelMapCounts) -> AgentMetrics:
    async def work() -> None:
        return None

    controllers = [Controller("routes", work, interval=1), Controller("services", work,
                                                                      interval=1)]
    controllers[0].successes, controllers[1].failures = 3, 2
    controllers[1].consecutive_failures = 1
    metrics = AgentMetrics()
    metrics.watch(endpoints=lambda: None, controllers=controllers, last_sync=lambda: None,
                  reconcilers=lambda: [], counters=lambda: counters, kernel_maps=kernel,
                  l2=lambda: None, arp_replies=lambda: 7)
    return metrics


def test_counters_become_cilium_series() -> None:
    counters = PerCpuCounters({
        (DropReason.NONE, Direction.EGRESS): [(10, 1000), (5, 400)],
        (DropReason.NONE, Direction.INGRESS): [(1, 60), (0, 0)],
        (DropReason.TRUNCATED, Direction.INGRESS): [(1, 50), (0, 0)],
        (DropReason.INVALID_L4, Direction.INGRESS): [(0, 0), (2, 120)],
        (DropReason.NO_BACKEND, Direction.SERVICE): [(4, 296), (0, 0)],
    })
    kernel = KernelMapCounts(lambda: [])
    kernel.fill = {"hl_ct4": MapFill(65536, 262144)}
    got = samples(agent_metrics(counters, kernel))
    assert {k: v for k, v in got.items() if k[0].startswith("cilium_forward")} == {
        ("cilium_forward_count_total", (("direction", "EGRESS"),)): 15,
        ("cilium_forward_bytes_total", (("direction", "EGRESS"),)): 1400,
        ("cilium_forward_count_total", (("direction", "INGRESS"),)): 1,
        ("cilium_forward_bytes_total", (("direction", "INGRESS"),)): 60,
    }
    truncated = (("direction", "INGRESS"), ("reason", "CT: Truncated or invalid header"))
    no_backend = (("direction", "SERVICE"), ("reason", "Service backend not found"))
    assert {k: v for k, v in got.items() if k[0].startswith("cilium_drop")} == {
        ("cilium_drop_count_total", truncated): 3,
        ("cilium_drop_bytes_total", truncated): 170,
        ("cilium_drop_count_total", no_backend): 4,
        ("cilium_drop_bytes_total", no_backend): 296,
    }
    assert got["cilium_bpf_map_pressure", (("map_name", "hl_ct4"),)] == 0.25
    assert got["cilium_controllers_failing", ()] == 1
    assert got["cilium_controllers_runs_total", (("status", "success"),)] == 3
    assert got["cilium_controllers_group_runs_total",
               (("group_name", "services"), ("status", "failure"))] == 2
    # parts not there yet: zeros, not missing series
    assert got["cilium_ip_addresses", (("family", "ipv4"),)] == 0
    assert got["cilium_ipam_events_total", (("action", "release"), ("family", "ipv4"))] == 0
    assert got["hexlane_l2_announced_ips", ()] == 0
    assert got["hexlane_l2_arp_replies_total", ()] == 7
    assert ("cilium_process_cpu_seconds_total", ()) in got


def test_promtool_accepts_the_output() -> None:
    if shutil.which("promtool") is None:
        pytest.skip("needs promtool (Debian's prometheus package, scripts/setup-system.sh)")
    counters = PerCpuCounters({(DropReason.NONE, Direction.SERVICE): [(2, 140), (0, 0)],
                               (DropReason.CSUM, Direction.EGRESS): [(1, 90), (0, 0)]})
    kernel = KernelMapCounts(lambda: [])
    asyncio.run(kernel.refresh())  # no datapath: nothing counted
    assert kernel.fill == {}
    text = generate_latest(agent_metrics(counters, kernel).registry).decode()
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
