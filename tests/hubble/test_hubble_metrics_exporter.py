"""The Hubble metrics as Prometheus reads them: served over HTTP, checked by promtool.

Pins down: `HubbleMetrics` served on a port of its own answers /metrics with every family
that has series (the seeds' list, a DNS and an HTTP flow among them), the histogram
cumulative with +Inf, `hubble_lost_events_total{source="perf_event_ring_buffer"}` read from
the datapath's counter at each scrape; Debian's `promtool check metrics` finds nothing wrong
in it; a deleted pod's series are gone from the scrape a minute later (the clock given).
"""

from __future__ import annotations

import asyncio
import subprocess
import urllib.request

from hubble_helpers import flow
from prometheus_client.parser import text_string_to_metric_families
from test_hubble_metrics import SEED_002, dns_flow, http_flow

from hexlane.config.hubble_metrics import parse_metric_list
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.metrics import HubbleMetrics


def scrape(metrics: HubbleMetrics) -> str:
    async def serve_and_get() -> str:
        runner, (_, port) = await metrics.serve(("127.0.0.1", 0))
        try:
            return await asyncio.to_thread(lambda: urllib.request.urlopen(
                f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        finally:
            await runner.cleanup()
    return asyncio.run(serve_and_get())


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_served_checked_by_promtool_and_a_deleted_pod_goes() -> None:
    now = [100.0]
    lost = [7]
    # the seeds' list, drop naming the source pod
    specs, _ = parse_metric_list([m if m != "drop" else "drop:sourceContext=pod"
                                  for m in SEED_002])
    metrics = HubbleMetrics(specs, lost=lambda: lost[0], clock=lambda: now[0])
    metrics.process(flow(flags=("SYN",), src_ns="shop", src_pod="client"))
    metrics.process(flow(verdict=flow_pb2.DROPPED, drop_reason=158, src_ns="shop",
                         src_pod="client"))
    metrics.process(dns_flow(reply=True, ips=("10.96.0.1",), rrtypes=("A",)))
    metrics.process(http_flow(response=True, code=404, latency_ns=20_000_000,
                              direction=flow_pb2.INGRESS))
    text = scrape(metrics)
    checked = subprocess.run(["promtool", "check", "metrics"], input=text, text=True,
                             capture_output=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    got = samples(text)
    assert got[("hubble_lost_events_total",
                frozenset({("source", "perf_event_ring_buffer")}))] == 7.0
    assert got[("hubble_drop_total", frozenset({
        ("source", "shop/client"), ("reason", "SERVICE_BACKEND_NOT_FOUND"),
        ("protocol", "TCP")}))] == 1.0
    assert got[("hubble_dns_responses_total", frozenset({
        ("rcode", "No Error"), ("qtypes", "A"), ("ips_returned", "1"),
        ("query", "echo.default.svc.cluster.local.")}))] == 1.0
    assert got[("hubble_http_responses_total", frozenset({
        ("method", "GET"), ("protocol", "HTTP/1.1"), ("status", "404"),
        ("reporter", "server")}))] == 1.0
    le = {dict(labels)["le"]: v for (name, labels), v in got.items()
          if name == "hubble_http_request_duration_seconds_bucket"}
    assert (le["0.01"], le["0.025"], le["+Inf"]) == (0.0, 1.0, 1.0)
    assert "hubble_flows_processed_total" in text and "hubble_tcp_flags_total" in text
    assert "hubble_icmp_total" not in text  # no ICMP flow yet: no family, as Go's client

    metrics.pod_deleted("shop", "client")
    lost[0] = 9
    now[0] += 59
    assert "shop/client" in scrape(metrics)
    now[0] += 1
    text = scrape(metrics)
    assert "shop/client" not in text and "hubble_drop_total" not in text
    assert samples(text)[("hubble_lost_events_total",
                          frozenset({("source", "perf_event_ring_buffer")}))] == 9.0
