"""A real browser for tests of pages: Debian's headless Chromium driven by selenium through
Debian's chromedriver, and the Hubble UI as a user sees it.

- `chromium(workdir, netns=...)`: a WebDriver on /usr/bin/chromium with /usr/bin/chromedriver
  given explicitly (selenium's own manager never runs: nothing is downloaded), headless,
  without sandbox or GPU, its profile and chromedriver's log in `workdir`, the console kept
  (`goog:loggingPrefs` browser ALL). With `netns` the browser runs inside that network
  namespace (chromedriver stays outside and talks to it over a pipe), so it reaches nothing
  but that namespace's addresses; without, host names other than localhost do not resolve
  and Chromium's background services are off.
- `console_errors(driver)`: what the page logged as SEVERE (errors, failed loads).
- `HubbleUiPage(driver, url)`: the Hubble UI's map boxes and edges, flow rows, filters,
  banner and details, each read in one script (the page redraws its map every 2 s, so
  elements found in one call could be stale in the next); wait for them with
  `helpers.wait.wait_for`.

The lab's tests reuse these against `hexlane hubble ui` in a lab (the browser in the lab
client's namespace).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from hexlane.lab.netns import netns_path

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
WINDOW = (1440, 1000)


def browser_missing() -> str:
    """Why no browser test can run here ("" when Chromium and its driver are installed)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not os.access(p, os.X_OK)]
    return f"needs {' and '.join(missing)} (make setup)" if missing else ""


def _in_netns(workdir: Path, netns: str) -> str:
    """An executable that starts Chromium in `netns` (chromedriver runs it as the browser)."""
    wrapper = workdir / "chromium-in-netns"
    wrapper.write_text(f'#!/bin/sh\nexec nsenter --net={netns_path(netns)} -- {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


@contextmanager
def chromium(workdir: Path, *, netns: str | None = None,
             window: tuple[int, int] = WINDOW) -> Iterator[WebDriver]:
    """Headless Chromium (see the module docstring); quit on exit."""
    os.environ["SE_OFFLINE"] = "true"  # selenium's manager: never fetch a driver or browser
    workdir.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = _in_netns(workdir, netns) if netns else CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                f"--window-size={window[0]},{window[1]}", f"--user-data-dir={workdir}/profile",
                "--remote-debugging-pipe", "--no-first-run", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--disable-default-apps",
                "--disable-extensions", "--no-proxy-server"):
        options.add_argument(arg)
    if netns is None:  # in a namespace its addresses are the limit; here, the loopback only
        options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, "
                             "EXCLUDE 127.0.0.1")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: WebDriver) -> list[dict[str, Any]]:
    """The console's SEVERE entries since the last call (failed loads, errors)."""
    return [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def screenshot(driver: WebDriver, path: Path) -> Path:
    """The window as a PNG at `path` (printed, so a failed run shows where it is)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    print(f"screenshot: {path}")
    return path


_MAP = """
const edges = [...document.querySelectorAll('#map g.edge:not(.label)')].map((g) => {
  const label = document.querySelector(
    `#map g.edge.label[data-edge="${g.dataset.edge}"][data-protocol="${g.dataset.protocol}"]` +
    `[data-port="${g.dataset.port}"][data-verdict="${g.dataset.verdict}"] text`);
  return {edge: g.dataset.edge, protocol: g.dataset.protocol, port: Number(g.dataset.port),
          verdict: g.dataset.verdict, flows: Number(g.dataset.flows),
          dropped: g.classList.contains('dropped'),
          stroke: getComputedStyle(g.querySelector('path')).stroke,
          label: label ? label.textContent : null};
});
const nodes = {};
for (const g of document.querySelectorAll('#map g.node')) {
  nodes[g.dataset.node] = {namespace: g.dataset.namespace,
                           reserved: g.classList.contains('reserved'),
                           text: g.querySelector('.node-name').textContent};
}
const frames = [...document.querySelectorAll('#map g.ns-group')].map((g) => g.dataset.namespace);
return {namespace: document.getElementById('map').dataset.namespace, nodes, edges, frames};
"""

_ROWS = """
return [...document.querySelectorAll('#flows tbody tr.flow-row')].map((tr) => ({
  uuid: tr.dataset.uuid, verdict: tr.dataset.verdict, source: tr.dataset.source,
  destination: tr.dataset.destination,
  cells: [...tr.cells].map((td) => td.textContent)}));
"""

_DETAILS = """
const panel = document.getElementById('details');
const fields = {};
for (const dd of panel.querySelectorAll('dd')) fields[dd.dataset.field] = dd.textContent;
return {visible: !panel.hidden, uuid: panel.dataset.uuid || '', fields,
        json: document.getElementById('details-json').textContent};
"""


class HubbleUiPage:
    """The Hubble UI at `url` in `driver`, read as a user sees it."""

    def __init__(self, driver: WebDriver, url: str) -> None:
        self.driver = driver
        self.url = url.rstrip("/") + "/"

    def open(self, query: str = "") -> None:
        self.driver.get(self.url + (f"?{query}" if query else ""))

    def leave(self) -> None:
        """Go to a blank page: the live stream ends before its server does (a stream cut
        by a stopping server is an error in the console)."""
        self.driver.get("about:blank")

    def map(self) -> dict[str, Any]:
        """{namespace, nodes: {id: {namespace, reserved, text}}, edges: [...], frames}."""
        out: dict[str, Any] = self.driver.execute_script(_MAP)
        return out

    def edges(self) -> set[tuple[str, str, int, str]]:
        """(source->destination, protocol, port, verdict) of every edge drawn."""
        return {(e["edge"], e["protocol"], e["port"], e["verdict"]) for e in self.map()["edges"]}

    def rows(self) -> list[dict[str, Any]]:
        """The flow table's rows, newest first."""
        out: list[dict[str, Any]] = self.driver.execute_script(_ROWS)
        return out

    def details(self) -> dict[str, Any]:
        out: dict[str, Any] = self.driver.execute_script(_DETAILS)
        return out

    def banner(self) -> str:
        """The error banner's text ("" when it is hidden)."""
        out: str = self.driver.execute_script(
            "const b = document.getElementById('error'); return b.hidden ? '' : b.textContent;")
        return out

    def query(self) -> dict[str, str]:
        """The page URL's query parameters."""
        out: dict[str, str] = self.driver.execute_script(
            "return Object.fromEntries(new URLSearchParams(window.location.search));")
        return out

    def filter_values(self) -> dict[str, str]:
        """What the namespace selector and the filter inputs show."""
        out: dict[str, str] = self.driver.execute_script(
            "const v = {namespace: document.getElementById('namespace').value};"
            "for (const el of document.querySelectorAll('#filters [name]')) v[el.name] = el.value;"
            "return v;")
        return out

    def set_filter(self, name: str, value: str) -> None:
        """Choose or type a filter as a user does (typed ones applied with Enter)."""
        element = self.driver.find_element(
            By.ID, "namespace" if name == "namespace" else f"filter-{name}")
        if element.tag_name == "select":
            Select(element).select_by_value(value)
        else:
            element.clear()
            element.send_keys(value, Keys.ENTER)

    def click_row(self, uuid: str) -> None:
        self.driver.find_element(By.CSS_SELECTOR, f'tr.flow-row[data-uuid="{uuid}"]').click()

