"""The plugin's pure parts: CNI_ARGS parsing and results converted to the caller's version.

Pins down: `K=V;K=V` parsing (empty parts ignored, a part without `=` is error 4); the agent's
1.1.0 result keeps its shape for 1.1.0, drops the interface MTU for 1.0.0, and adds the
per-IP `version` field for 0.3.x/0.4.0, without touching the agent's own dict.
"""

from __future__ import annotations

import copy

import pytest

from hexlane.cni.main import SUPPORTED_VERSIONS, PluginError, convert_result, parse_cni_args

RESULT = {
    "cniVersion": "1.1.0",
    "interfaces": [{"name": "lxc0123456789ab", "mac": "02:00:00:00:00:01", "mtu": 1500},
                   {"name": "eth0", "mac": "02:00:00:00:00:02", "mtu": 1500,
                    "sandbox": "/proc/42/ns/net"}],
    "ips": [{"address": "10.42.1.5/32", "gateway": "10.42.1.1", "interface": 1}],
    "routes": [{"dst": "0.0.0.0/0", "gw": "10.42.1.1"}],
    "dns": {},
}


def test_parse_cni_args() -> None:
    assert parse_cni_args("IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=a-1;") == {
        "IgnoreUnknown": "1", "K8S_POD_NAMESPACE": "web", "K8S_POD_NAME": "a-1"}
    assert parse_cni_args("") == {}
    with pytest.raises(PluginError) as info:
        parse_cni_args("K8S_POD_NAME")
    assert info.value.code == 4


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_convert_result(version: str) -> None:
    original = copy.deepcopy(RESULT)
    out = convert_result(RESULT, version)
    assert original == RESULT
    assert out["cniVersion"] == version
    assert out["routes"] == RESULT["routes"]
    assert [i["name"] for i in out["interfaces"]] == ["lxc0123456789ab", "eth0"]
    assert out["interfaces"][1]["sandbox"] == "/proc/42/ns/net"
    has_mtu = "mtu" in out["interfaces"][0]
    assert has_mtu == (version == "1.1.0")
    ip = out["ips"][0]
    assert (ip["address"], ip["gateway"], ip["interface"]) == ("10.42.1.5/32", "10.42.1.1", 1)
    assert ("version" in ip) == (version < "1.0.0")
    if version < "1.0.0":
        assert ip["version"] == "4"
