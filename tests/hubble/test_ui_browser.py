"""The Hubble UI in a real browser, as a user meets it: `hexlane hubble ui` (the CLI, a
subprocess) in a network namespace of the test's own, reading a real Hubble server through
its UNIX socket, and Debian's headless Chromium in that namespace too (it reaches nothing
else). Known traffic of three namespaces (`ui_flows`: a drop, world, host and remote-node
ends, replies) must give exactly the expected boxes and edges, the drop's edge red, every
flow in the table, filters that narrow it and land in the URL, a URL that restores them, a
flow's details on click, a new flow shown live, and no console error. An Observer that
cannot be reached is said on the page, which recovers by itself when it is back. A
screenshot is kept under the test's tmp path (printed)."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hubble_helpers import HEXLANE, UI_EDGES, UI_NODES, RunningHubble, ui_flow, ui_flows
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from helpers.browser import HubbleUiPage, browser_missing, chromium, console_errors, screenshot
from helpers.wait import wait_for, wait_until
from hexlane.hubble.api.flow import flow_pb2
from hexlane.lab import netns

pytestmark = [pytest.mark.root, pytest.mark.slow,
              pytest.mark.skipif(bool(browser_missing()), reason=browser_missing())]

RED = "rgb(209, 47, 47)"  # style.css --drop
ECHO = "bar/echo-5b6c7d8e9f-abcde:8080"


@pytest.fixture(scope="module")
def ui_netns() -> Iterator[str]:
    """A network namespace with only loopback, removed at the end even on failure."""
    name = netns.unique_name("hexlane-ui")
    try:
        netns.create(name)
        yield name
    finally:
        netns.delete(name)


@pytest.fixture(scope="module")
def browser(ui_netns: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    with chromium(tmp_path_factory.mktemp("chromium"), netns=ui_netns) as driver:
        yield driver


@contextmanager
def hubble_ui(namespace: str, server: str, log: Path) -> Iterator[str]:
    """`hexlane hubble ui` in `namespace` reading `server`, on a free port; its URL."""
    with log.open("w") as out:
        proc = netns.popen(namespace, [*HEXLANE, "hubble", "ui", "--listen", "127.0.0.1:0",
                                       "--server", server],
                           stdout=out, stderr=subprocess.STDOUT)
    try:
        def serving() -> re.Match[str] | None:
            assert proc.poll() is None, f"hexlane hubble ui exited: {log.read_text()}"
            return re.search(r"serving on (http://127\.0\.0\.1:\d+/)", log.read_text())

        yield wait_for("hexlane hubble ui to serve", serving, timeout=15).group(1)
    finally:
        proc.terminate()
        proc.wait(10)


def _edges(page: HubbleUiPage) -> dict[tuple[str, str, int, str], int]:
    return {(e["edge"], e["protocol"], e["port"], e["verdict"]): e["flows"]
            for e in page.map()["edges"]}


def test_map_flows_filters_and_details(browser: WebDriver, ui_netns: str,
                                       tmp_path: Path) -> None:
    console_errors(browser)  # only this test's
    with RunningHubble(tmp_path / "hubble") as hubble, \
            hubble_ui(ui_netns, hubble.unix, tmp_path / "ui.log") as url:
        hubble.add(*ui_flows(time.time_ns()))
        page = HubbleUiPage(browser, url)
        page.open()

        # the map: every workload in its namespace's frame, reserved ends, client -> server
        wait_until("every edge drawn", lambda: _edges(page), lambda e: e == UI_EDGES)
        drawn = page.map()
        assert drawn["namespace"] == "" and set(drawn["nodes"]) == UI_NODES
        assert drawn["frames"] == ["bar", "foo", "kube-system"]
        assert {n for n, v in drawn["nodes"].items() if v["reserved"]} == {
            "world", "host", "remote-node"}
        assert drawn["nodes"]["bar/echo"] == {"namespace": "bar", "reserved": False,
                                              "text": "echo"}
        for edge in drawn["edges"]:
            assert (edge["stroke"] == RED) == edge["dropped"] == (edge["verdict"] == "DROPPED")
            port = f" {edge['port']}" if edge["port"] else ""
            assert re.fullmatch(rf"{edge['protocol']}{port} · \d+\.\d+/s"
                                + (" · dropped" if edge["dropped"] else ""), edge["label"])
        assert [e["edge"] for e in drawn["edges"] if e["dropped"]] == ["world->bar/echo"]

        # the table: every flow, replies included, newest first
        rows = wait_until("every flow listed", page.rows, lambda r: len(r) == 23)
        drops = [r for r in rows if r["verdict"] == "DROPPED"]
        assert [(r["source"], r["destination"]) for r in drops] == [
            ("10.0.0.2:42001", ECHO), ("10.0.0.2:42000", ECHO)]
        assert rows[0]["destination"] == "203.0.113.10:443"

        # a row's details
        page.click_row(drops[0]["uuid"])
        details = wait_until("the details", page.details, lambda d: d["visible"])
        assert details["uuid"] == drops[0]["uuid"]
        assert details["fields"]["verdict"] == "DROPPED"
        assert details["fields"]["drop-reason"] == "SERVICE_BACKEND_NOT_FOUND"
        assert '"pod_name": "echo-5b6c7d8e9f-abcde"' in details["json"]
        screenshot(browser, tmp_path / "hubble-ui.png")
        browser.find_element(By.ID, "details-close").click()
        wait_until("the details closed", page.details, lambda d: not d["visible"])

        # filters narrow the table and land in the URL
        page.set_filter("verdict", "DROPPED")
        wait_until("only drops", page.rows, lambda r: len(r) == 2)
        assert page.query() == {"verdict": "DROPPED"}
        page.set_filter("verdict", "")
        page.set_filter("port", "5432")
        rows = wait_until("foo/web -> foo/db only", page.rows, lambda r: len(r) == 3)
        assert {r["destination"] for r in rows} == {"foo/db-0:5432"}
        page.set_filter("namespace", "foo")
        drawn = wait_until("foo's map", page.map, lambda m: m["namespace"] == "foo")
        assert set(drawn["nodes"]) == {"foo/web", "foo/db", "kube-system/coredns",
                                       "remote-node"}
        assert page.query() == {"namespace": "foo", "port": "5432"}

        # a shared URL restores the view
        page.open("namespace=bar&verdict=DROPPED")
        drawn = wait_until("bar's map", page.map,
                           lambda m: m["namespace"] == "bar" and bool(m["edges"]))
        assert page.filter_values() == {"namespace": "bar", "verdict": "DROPPED", "pod": "",
                                        "ip": "", "port": "", "protocol": ""}
        assert set(drawn["nodes"]) == {"bar/client", "bar/echo", "world", "host"}
        assert {(e["edge"], e["protocol"], e["port"], e["verdict"])
                for e in drawn["edges"]} == {k for k in UI_EDGES if "bar/" in k[0]}
        wait_until("the drops", page.rows, lambda r: len(r) == 2)

        # followed live: a new drop shows without a reload
        hubble.add(ui_flow("world", "echo-5b6c7d8e9f-abcde", dport=8080, sport=42999,
                           verdict=flow_pb2.DROPPED, drop_reason=158, is_reply=None,
                           time_ns=time.time_ns()))
        rows = wait_until("the new drop", page.rows, lambda r: len(r) == 3)
        assert rows[0]["source"] == "10.0.0.2:42999"
        page.leave()
    assert console_errors(browser) == []


def test_unreachable_observer_is_said_and_recovered_from(browser: WebDriver, ui_netns: str,
                                                         tmp_path: Path) -> None:
    console_errors(browser)
    later = tmp_path / "later"
    server = f"unix://{later / 'hubble.sock'}"
    with hubble_ui(ui_netns, server, tmp_path / "ui.log") as url:
        page = HubbleUiPage(browser, url)
        page.open()
        banner = wait_for("the banner", page.banner)
        assert f"cannot reach the Hubble server at {server}: No such file or directory" in banner
        assert page.map()["nodes"] == {} and page.rows() == []
        with RunningHubble(later) as hubble:
            hubble.add(*ui_flows(time.time_ns()))
            wait_until("the map back", page.map, lambda m: set(m["nodes"]) == UI_NODES)
            wait_until("the flows back", page.rows, lambda r: len(r) == 23)
            wait_until("the banner gone", page.banner, lambda b: not b)
            page.leave()
    # what the console said is the API's 502/503 answers while the Observer was away
    errors = console_errors(browser)
    assert errors and all(re.search(r"status of 50[23]", e["message"]) for e in errors), errors
