"""`helpers.promql.metric_names`: the metric names a PromQL expression reads.

Pins down, expression by expression: plain selectors and matchers (label names and values not
taken), functions and aggregations with `by`/`without` before or after their argument, ranges,
subqueries and Grafana's interval variables, binary operators with `on`/`ignoring` and
`group_left` lists, `bool`, `offset` and `@`, numbers and durations, strings, `__name__`
matchers, Grafana's variables in every spelling, `label_values` (its label not a name), and
each name once in the order it comes.
"""

from __future__ import annotations

import pytest

from helpers.promql import dashboard_queries, metric_names

CASES = [
    ("up", ["up"]),
    ('cilium_drop_count_total{reason="Policy denied", direction=~"IN.*"}',
     ["cilium_drop_count_total"]),
    ("sum(rate(cilium_forward_count_total[5m])) by (direction)",
     ["cilium_forward_count_total"]),
    ("sum by (direction) (rate(cilium_forward_count_total[$__rate_interval]))",
     ["cilium_forward_count_total"]),
    ("sum without(instance, job)(increase(hexlane_l2_garps_sent_total[1h]))",
     ["hexlane_l2_garps_sent_total"]),
    ("histogram_quantile(0.99, sum by (le, method) "
     "(rate(hexlane_k8s_client_rate_limiter_wait_seconds_bucket[5m])))",
     ["hexlane_k8s_client_rate_limiter_wait_seconds_bucket"]),
    ("cilium_ip_addresses / on(instance, family) group_left cilium_ipam_capacity",
     ["cilium_ip_addresses", "cilium_ipam_capacity"]),
    ("a * ignoring(code) group_right(extra) b", ["a", "b"]),
    ("rate(x[5m:30s]) > bool 0.5", ["x"]),
    ("x offset 1h - x offset -5m @ 1609746000", ["x"]),
    ("x @ start() and y unless z or w", ["x", "y", "z", "w"]),
    ("topk(5, sum by (map_name) (cilium_bpf_map_pressure)) * 100",
     ["cilium_bpf_map_pressure"]),
    ('count_values("version", build_info)', ["build_info"]),
    ('{__name__="hexlane_reconciler_repairs_total", table!=""}',
     ["hexlane_reconciler_repairs_total"]),
    ('x{instance=~"$instance"} + y{node="${node:regex}"} + z{a="[[old]]"}', ["x", "y", "z"]),
    ("rate(x[${__range}]) / [[interval]]", ["x"]),
    ("sum(x) or vector(0)", ["x"]),
    ("1e3 * 0x1f + .5 - 2.5e-2 * x", ["x"]),
    ("x + x_total + x", ["x", "x_total"]),
    ('max(x) by (le) / min without (a) (y{b="c,d}"})', ["x", "y"]),
    ("abs(x)\n  -\n  atan2 y", ["x", "y"]),
    ("label_values(cilium_endpoint{job=\"agent\"}, instance)", ["cilium_endpoint"]),
    ("label_values(instance)", ["instance"]),
    ("sum(rate(a:b_c:rate5m[1m]))", ["a:b_c:rate5m"]),
]


@pytest.mark.parametrize(("expr", "names"), CASES, ids=[c[0][:40] for c in CASES])
def test_metric_names(expr: str, names: list[str]) -> None:
    assert metric_names(expr) == names


def test_a_dashboards_queries_are_found_in_panels_rows_and_variables() -> None:
    dashboard = {
        "panels": [
            {"type": "timeseries", "targets": [{"expr": "a"}, {"expr": "b", "hide": True}]},
            {"type": "row", "panels": [{"targets": [{"expr": "c"}]}]},
            {"type": "text"},
        ],
        "templating": {"list": [
            {"type": "datasource", "name": "DS_PROMETHEUS"},
            {"type": "query", "query": {"query": "label_values(d, instance)"}},
            {"type": "query", "query": "label_values(e, job)"},
        ]},
    }
    assert dashboard_queries(dashboard) == [
        "a", "b", "c", "label_values(d, instance)", "label_values(e, job)"]
