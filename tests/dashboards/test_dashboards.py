"""The Grafana dashboards in dashboards/, as files: importable, and every name documented.

Pins down for each dashboard: it is JSON with a uid and a title; its data source is the
template variable `DS_PROMETHEUS` (a Prometheus data source picked on import) and every panel
and query uses it; panel ids are unique and panels fit Grafana's 24-column grid; every query
reads at least one metric, and every metric it reads is in docs/metrics.md. (That each one is
a series the lab's endpoints expose is tests/agent/test_agent_metrics_lab.py's.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.promql import dashboard_queries, metric_names

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
DS = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
HISTOGRAM_SERIES = re.compile(r"_(bucket|sum|count)$")
METRIC = re.compile(r"([a-z_:][a-z0-9_:]*)(\{[^}]*\})?")  # a name in backquotes, maybe with labels


def all_panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [p for item in items for p in (item, *all_panels(item.get("panels", [])))]


def test_there_is_one_for_each_endpoint() -> None:
    assert [p.name for p in DASHBOARDS] == [
        "hexlane-agent.json", "hexlane-hubble.json", "hexlane-operator.json"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_dashboard_is_importable_with_a_prometheus_variable(path: Path) -> None:
    board = json.loads(path.read_text())
    assert board["uid"] == path.stem and board["title"]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = all_panels(board["panels"])
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DS, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == DS for t in panel["targets"]), panel["title"]
    for var in variables.values():
        if var["type"] == "query":
            assert var["datasource"] == DS


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.name)
def test_every_metric_a_query_reads_is_documented(path: Path) -> None:
    spans = re.findall(r"`([^`]+)`", (ROOT / "docs" / "metrics.md").read_text())
    documented = {m.group(1) for span in spans if (m := METRIC.fullmatch(span))}
    queries = dashboard_queries(json.loads(path.read_text()))
    assert queries
    for query in queries:
        names = metric_names(query)
        assert names, query
        for name in names:
            assert HISTOGRAM_SERIES.sub("", name) in documented or name in documented, (
                name, query)
