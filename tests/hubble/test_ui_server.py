"""The Hubble UI's JSON API (`hexlane.hubble.ui.server`) against a real Hubble server over its
UNIX socket, holding known traffic of three namespaces (`ui_flows`): status, namespaces,
flows with every filter the page has (and 400 naming a bad one), the service map of all
namespaces and of one, the live stream (Server-Sent Events: stored flows, then new ones; its
upstream follow ends when the client goes), the page and its assets (served from the
package, our own files only, no address outside the UI), and an Observer that cannot be
reached: 502/503 with the one-line error, then recovery once it is back; and the
command's own errors."""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
import tomllib
from collections.abc import AsyncIterator, Iterator
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

import pytest
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer
from hubble_helpers import (
    UI_EDGES,
    UI_NODES,
    UI_REPLIES,
    RunningHubble,
    hexlane,
    ui_flow,
    ui_flows,
)

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.client import ClientTLS, parse_address
from hexlane.hubble.ui.server import RUNNER_OPTIONS, STATIC, Observer, UiApp

REPO = Path(__file__).resolve().parents[2]
ALL = sum(UI_EDGES.values()) + UI_REPLIES  # every flow of ui_flows


@pytest.fixture(scope="module")
def hubble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningHubble]:
    with RunningHubble(tmp_path_factory.mktemp("ui-hubble")) as server:
        server.add(*ui_flows(time.time_ns()))
        yield server


async def _client(server: str) -> TestClient[Any, Any]:
    app = UiApp(Observer(parse_address(server), ClientTLS(), timeout=5)).app()
    return TestClient(TestServer(app, **RUNNER_OPTIONS))


@pytest.fixture
async def ui(hubble: RunningHubble) -> AsyncIterator[TestClient[Any, Any]]:
    async with await _client(hubble.unix) as client:
        yield client


async def _json(response: ClientResponse, status: int = 200) -> Any:
    assert response.status == status, await response.text()
    return await response.json()


async def _flows(ui: TestClient[Any, Any], query: str) -> list[dict[str, Any]]:
    answer = await _json(await ui.get(f"/api/flows?{query}"))
    flows: list[dict[str, Any]] = answer["flows"]
    return flows


async def test_status_and_namespaces(ui: TestClient[Any, Any], hubble: RunningHubble) -> None:
    status = await _json(await ui.get("/api/status"))
    assert status["server"] == hubble.unix
    assert status["status"]["num_flows"] == str(ALL) and status["status"]["max_flows"] == "63"
    assert [n["name"] for n in status["nodes"]] == ["default/node1"]
    assert status["ui"]["map_capacity"] == 4095 and status["ui"]["streams"] == 0
    namespaces = await _json(await ui.get("/api/namespaces"))
    assert [n["namespace"] for n in namespaces["namespaces"]] == ["bar", "foo", "kube-system"]


async def test_flows_with_the_pages_filters(ui: TestClient[Any, Any]) -> None:
    flows = await _flows(ui, "")
    assert len(flows) == ALL
    newest = flows[-1]
    assert newest["source"] == "bar/client-6d9f7c8b5d-x2x4k:47000"
    assert newest["destination"] == "203.0.113.10:443" and newest["verdict"] == "FORWARDED"
    assert newest["type"] == "to-endpoint" and newest["summary"] == "TCP Flags: SYN"
    assert newest["node_name"] == "default/node1" and newest["is_reply"] is False
    assert "bar/client-6d9f7c8b5d-x2x4k:47000 (ID:0) -> 203.0.113.10:443 (world)" in (
        newest["compact"])
    assert newest["flow"]["source"]["pod_name"] == "client-6d9f7c8b5d-x2x4k"  # proto names
    assert newest["flow"]["source"]["workloads"] == [{"name": "client", "kind": "Deployment"}]
    assert len(await _flows(ui, "last=3")) == 3

    async def count(query: str) -> int:
        return len(await _flows(ui, query))

    assert await count("verdict=DROPPED") == 2
    assert await count("verdict=dropped&namespace=bar") == 2
    assert await count("namespace=foo") == 3 + 2 + 1  # web->db, web->coredns, remote-node
    assert await count("namespace=foo&pod=web") == 6
    assert await count("pod=db") == 3  # any namespace
    assert await count("pod=foo/db&namespace=foo") == 3
    assert await count("ip=10.0.0.2") == 2
    assert await count("ip=10.42.1.0/24&port=8080") == 12  # requests and replies either way
    assert await count("protocol=udp") == 2
    assert await count("protocol=tcp&port=53") == 0
    assert await count("namespace=kube-system&protocol=udp&port=53") == 2


@pytest.mark.parametrize(("query", "message"), [
    ("verdict=NOPE", "verdict: 'NOPE' is not one of FORWARDED, DROPPED"),
    ("ip=10.0.0.300", "ip: invalid IP address '10.0.0.300'"),
    ("port=70000", "port: invalid port '70000', expected 0-65535"),
    ("protocol=pigeon", "protocol: unknown protocol 'pigeon'"),
    ("namespace=bar&pod=foo/web", "pod: 'foo/web' is not in namespace 'bar'"),
    ("last=0", "last: '0' is not a number from 1 to 2000"),
])
async def test_a_bad_filter_is_400_naming_it(ui: TestClient[Any, Any], query: str,
                                             message: str) -> None:
    for path in ("/api/flows", "/api/flows/stream"):
        answer = await _json(await ui.get(f"{path}?{query}"), 400)
        assert answer["error"].startswith(message), answer


async def _whole_map(ui: TestClient[Any, Any]) -> Any:
    """/api/map once the map's feed has read every flow (it starts with the app)."""
    for _ in range(50):
        whole = await _json(await ui.get("/api/map"))
        if whole["flows"] == ALL:
            break
        await asyncio.sleep(0.1)
    return whole


async def test_service_map_of_all_namespaces_and_of_one(ui: TestClient[Any, Any]) -> None:
    whole = await _whole_map(ui)
    assert whole["flows"] == ALL
    assert whole["namespace"] == "" and whole["namespaces"] == ["bar", "foo", "kube-system"]
    assert {n["id"] for n in whole["nodes"]} == UI_NODES
    edges = {(f"{e['source']}->{e['destination']}", e["protocol"], e["port"], e["verdict"]):
             e["flows"] for e in whole["edges"]}
    assert edges == UI_EDGES
    assert all(e["rate"] > 0 for e in whole["edges"])
    (drop,) = [e for e in whole["edges"] if e["dropped"]]
    assert drop["source"] == "world" and drop["drop_reasons"] == ["Service backend not found"]
    foo = await _json(await ui.get("/api/map?namespace=foo"))
    assert {n["id"] for n in foo["nodes"]} == {"foo/web", "foo/db", "kube-system/coredns",
                                               "remote-node"}
    assert len(foo["edges"]) == 3 and foo["namespaces"] == ["foo", "kube-system"]


async def _events(response: ClientResponse, count: int) -> list[tuple[str, Any]]:
    """The next `count` Server-Sent Events (comments skipped)."""
    out: list[tuple[str, Any]] = []
    event, data = "", ""
    while len(out) < count:
        line = (await asyncio.wait_for(response.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif not line and event:
            out.append((event, json.loads(data)))
            event = ""
    return out


async def _streams(ui: TestClient[Any, Any]) -> int:
    streams: int = (await _json(await ui.get("/api/status")))["ui"]["streams"]
    return streams


async def test_stream_follows_and_ends_upstream_when_the_client_goes(
        fresh_hubble: RunningHubble) -> None:
    async with await _client(fresh_hubble.unix) as client:
        now = time.time_ns()
        fresh_hubble.add(*ui_flows(now)[-3:])
        response = await client.get("/api/flows/stream?namespace=foo&last=10")
        assert response.status == 200
        assert response.headers["Content-Type"] == "text/event-stream"
        stored = await _events(response, 2)  # remote-node -> web; client -> world is not foo
        assert [e for e, _ in stored] == ["flow", "flow"]
        assert stored[-1][1]["destination"] == "foo/web-7c9d8f6b4-zzt6m:80"
        fresh_hubble.add(ui_flow("web-7c9d8f6b4-zzt6m", "db-0", dport=5432, sport=45999,
                                 time_ns=now + 1))
        fresh_hubble.add(ui_flow("world", "echo-5b6c7d8e9f-abcde", dport=8080,
                                 verdict=flow_pb2.DROPPED, time_ns=now + 2))
        fresh_hubble.add(ui_flow("web-7c9d8f6b4-zzt6m", "db-0", dport=5432, sport=45998,
                                 time_ns=now + 3))
        live = await _events(response, 2)  # the drop in bar is not in the view
        assert [d["source"] for _, d in live] == ["foo/web-7c9d8f6b4-zzt6m:45999",
                                                  "foo/web-7c9d8f6b4-zzt6m:45998"]
        assert await _streams(client) == 1
        response.close()  # the browser goes: its upstream follow ends with it
        for _ in range(50):
            if await _streams(client) == 0:
                break
            await asyncio.sleep(0.1)
        assert await _streams(client) == 0


async def test_an_unreachable_observer_is_said_and_recovered_from(tmp_path: Path) -> None:
    server = f"unix://{tmp_path / 'hubble.sock'}"
    said = f"cannot reach the Hubble server at {server}: No such file or directory"
    async with await _client(server) as ui:
        for path in ("/api/status", "/api/namespaces", "/api/flows", "/api/flows/stream"):
            assert (await _json(await ui.get(path), 502)) == {"error": said}, path
        for _ in range(50):  # the map's feed tries at once, and again every second
            response = await ui.get("/api/map")
            if response.status == 503:
                break
            await asyncio.sleep(0.1)
        assert (await _json(response, 503)) == {"error": said}
        with RunningHubble(tmp_path) as hubble:
            hubble.add(*ui_flows(time.time_ns()))
            for _ in range(50):
                response = await ui.get("/api/map")
                if response.status == 200 and len((await response.json())["edges"]) == len(
                        UI_EDGES):
                    break
                await asyncio.sleep(0.1)
            assert len((await _json(response))["edges"]) == len(UI_EDGES)
            assert len(await _flows(ui, "")) == ALL
            assert (await _json(await ui.get("/api/status")))["ui"]["map_error"] is None


async def test_the_page_and_its_own_assets(ui: TestClient[Any, Any]) -> None:
    page = await ui.get("/")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    assert page.headers["Content-Security-Policy"].startswith("default-src 'self'")
    html = await page.text()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert sorted(assets) == ["/static/app.js", "/static/favicon.svg", "/static/style.css"]
    for asset in assets:
        response = await ui.get(asset)
        assert response.status == 200, asset
        assert response.headers["Content-Security-Policy"].startswith("default-src 'self'")
    # nothing names a place outside the UI (the SVG namespace is a name, never fetched),
    # and the script asks only the UI's API, through one fetch
    for path in STATIC.iterdir():
        urls = set(re.findall(r"https?://[^\s\"'<>)]+", path.read_text()))
        assert urls <= {"http://www.w3.org/2000/svg"}, (path.name, urls)
    script = (STATIC / "app.js").read_text()
    assert script.count("fetch(") == 1
    assert not re.search(r"XMLHttpRequest|WebSocket|EventSource|import\(|sendBeacon", script)
    paths = re.findall(r"[\"`](/[^\"`?]*)", script)
    assert paths and all(p.startswith("/api/") for p in paths), paths

def test_the_assets_are_package_data() -> None:
    """A non-editable install carries every file of static/ (pyproject's package-data)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["hexlane"]
    root = REPO / "src" / "hexlane"
    for path in STATIC.iterdir():
        relative = str(path.relative_to(root))
        assert any(fnmatch(relative, p) for p in patterns), relative


def test_the_commands_errors_are_one_line(tmp_path: Path) -> None:
    """`hexlane hubble ui` refuses before serving: a bad flag (2), files or a port it
    cannot use (1), each one line naming what."""
    proc = hexlane("hubble", "ui", "--listen", "nope")
    assert (proc.returncode, proc.stderr) == (
        2, "error: --listen: expected ADDR:PORT, got 'nope'\n")
    missing = str(tmp_path / "client.crt")
    proc = hexlane("hubble", "ui", "--listen", "127.0.0.1:0", "--tls-client-cert-file",
                   missing, "--tls-client-key-file", missing)
    assert (proc.returncode, proc.stderr) == (
        1, f"error: cannot use the TLS files ({missing}, {missing}): No such file or "
           "directory\n")
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        proc = hexlane("hubble", "ui", "--listen", f"127.0.0.1:{port}")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: cannot listen on 127.0.0.1:{port}: Address already "
                                  "in use")
