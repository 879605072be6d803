"""The one transport (`hexlane.k8s.transport`) against the real apiserver over HTTPS:

- a watch event longer than aiohttp's own line buffer (a 300 KB ConfigMap) arrives whole;
- a PUT with a stale resourceVersion is an `ApiError` with `.conflict`, a missing object
  one with `.not_found`; bodies and answers round-trip through msgspec unchanged;
- a kubeconfig user with an exec plugin gets its token from the plugin (a real process);
- a server that is not there is an `OSError` (`TransportError`), not an aiohttp exception,
  so the daemons' `except (ApiError, OSError)` keeps holding;
- one kept-alive connection serves many requests in a row (persistent pool).
"""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver
from hexlane.k8s.client import ApiError, TransportError, make_client
from hexlane.k8s.transport import decode, encode

NS = "transport-test"


def test_codec_round_trips_what_json_does() -> None:
    obj = {"a": [1, 2.5, None, True], "b": {"ü": "x\n"}, "c": 2**62}
    assert decode(encode(obj)) == obj
    with pytest.raises(ValueError):
        decode(b"{not json")


def exec_kubeconfig(path: Path, apiserver: Apiserver) -> Path:
    """The apiserver's kubeconfig with its token replaced by an exec plugin printing it."""
    config = yaml.safe_load(apiserver.kubeconfig.read_text())
    plugin = path.parent / "plugin.py"
    plugin.write_text(
        "import json, os\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',\n"
        "                  'kind': 'ExecCredential',\n"
        "                  'status': {'token': os.environ['PLUGIN_TOKEN']}}))\n")
    config["users"][0]["user"] = {"exec": {
        "apiVersion": "client.authentication.k8s.io/v1beta1", "command": sys.executable,
        "args": [str(plugin)], "env": [{"name": "PLUGIN_TOKEN", "value": apiserver.token}]}}
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.slow
def test_transport_against_the_server(apiserver: Apiserver, tmp_path: Path) -> None:
    async def run() -> None:
        registry = CollectorRegistry()
        async with make_client(None, apiserver.kubeconfig, registry=registry) as client:
            client.limiter.bucket.qps = 0  # no limit: this test is about the transport
            try:
                await client.request("POST", "/api/v1/namespaces",
                                     body={"metadata": {"name": NS}})
            except ApiError as e:
                assert e.conflict  # a rerun on the shared server
            path = f"/api/v1/namespaces/{NS}/configmaps"
            start = await client.request("GET", path)
            rv = start["metadata"]["resourceVersion"]
            big = "x" * 300_000
            async with client.watch_lines(path, {"resourceVersion": rv,
                                                 "timeoutSeconds": "10"}) as lines:
                created = await client.request("POST", path, body={
                    "metadata": {"name": "big"}, "data": {"big": big, "ü": "ü\n"}})
                event = decode(await anext(aiter(lines)))
            assert event["type"] == "ADDED"
            assert event["object"]["data"] == {"big": big, "ü": "ü\n"}
            assert created["data"]["ü"] == "ü\n"
            # Conflict: a PUT carrying a resourceVersion that is no longer current.
            await client.request("PUT", f"{path}/big", body={**created, "data": {"a": "1"}})
            with pytest.raises(ApiError) as err:
                await client.request("PUT", f"{path}/big", body={**created, "data": {"a": "2"}})
            assert err.value.conflict and err.value.reason == "Conflict"
            await client.request("DELETE", f"{path}/big")
            with pytest.raises(ApiError) as err:
                await client.request("GET", f"{path}/big")
            assert err.value.not_found
            # Many requests in a row share kept-alive connections.
            await asyncio.gather(*(client.request("GET", "/version") for _ in range(50)))
            connector = client.transport._get_session().connector
            assert connector is not None
            opened = sum(len(v) for v in connector._conns.values())  # idle, kept alive
            assert 1 <= opened <= 50
        async with make_client(None, exec_kubeconfig(tmp_path / "exec.kubeconfig", apiserver),
                               registry=CollectorRegistry()) as client:
            version = await client.request("GET", "/version")
            assert version["major"] == "1"

    asyncio.run(run())


def test_no_server_is_an_oserror(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    config = tmp_path / "kubeconfig"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port}",
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))

    async def run() -> None:
        async with make_client(None, config, registry=CollectorRegistry()) as client:
            with pytest.raises(TransportError) as err:
                await client.request("GET", "/version")
            assert isinstance(err.value, OSError) and "GET /version" in str(err.value)
            with pytest.raises(OSError):
                async with client.watch_lines("/api/v1/pods", {}):
                    pass

    asyncio.run(run())
