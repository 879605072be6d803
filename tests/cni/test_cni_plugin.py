"""The `hexlane-cni` plugin against the CNI spec, run as a real subprocess in a node namespace.

Pins down: VERSION; ADD/CHECK/DEL with good environment and config (the result's interfaces,
ips with interface index, routes, and a pod that reaches its router); the result converted to
0.4.0; repeated ADD answers the same result; repeated DEL succeeds; spec error codes on stdout
with a non-zero exit (4 bad environment, 6 undecodable config, 7 invalid config, 1 unsupported
version, 2 unsupported field, 3 unknown container, 50 agent unavailable); GC and STATUS (1.1.0);
a DEL while the agent is down is queued and carried out when it starts; an agent refuses CNI
calls from another network namespace; the plugin imports only the standard library and starts
fast; the one-file plugin a real node's runtime runs (`hexlane cni install-plugin`, behind the
agent's wrapper) does ADD and DEL the same.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers.cni import PLUGIN, Agent, cni, conf
from hexlane.agent.cniconf import CniFiles
from hexlane.cni.bundle import install_plugin
from hexlane.lab import netns
from hexlane.lab.netns import Topology

pytestmark = pytest.mark.slow


def test_version_lists_supported_versions() -> None:
    result = subprocess.run([PLUGIN], env={"CNI_COMMAND": "VERSION"},
                            input='{"cniVersion":"1.0.0"}', capture_output=True, text=True,
                            check=True)
    info = json.loads(result.stdout)
    assert info["cniVersion"] == "1.1.0"
    assert {"0.4.0", "1.0.0", "1.1.0"} <= set(info["supportedVersions"])


def test_plugin_imports_only_the_standard_library_and_starts_fast() -> None:
    probe = ("import sys, hexlane.cni.main as m; "
             "print(sorted(k for k in sys.modules if k.split('.')[0] in "
             "('aiohttp','pyroute2','yaml','lightkube','asyncio','hexlane')))")
    loaded = json.loads(subprocess.run([sys.executable, "-c", probe], capture_output=True,
                                       text=True, check=True).stdout.replace("'", '"'))
    assert loaded == ["hexlane", "hexlane.cni", "hexlane.cni.main", "hexlane.cnispec",
                      "hexlane.inputlimits"]
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run([PLUGIN], env={"CNI_COMMAND": "VERSION"}, input=b"{}", check=True,
                       capture_output=True)
        times.append(time.perf_counter() - start)
    print(f"hexlane-cni VERSION wall time: best {min(times) * 1000:.0f} ms")
    assert min(times) < 2  # a guard against heavy imports; ~0.1 s on an idle machine


@pytest.mark.root
def test_add_check_del(topo: Topology, fresh_node: Agent) -> None:
    pod = topo.add("pod")
    path = netns.netns_path(pod)
    rc, result = cni(topo["node"], "ADD", conf(), container_id="ctr-a", netns_path=path,
                     args="IgnoreUnknown=1;K8S_POD_NAMESPACE=web;K8S_POD_NAME=front-1")
    assert rc == 0, result
    assert result["cniVersion"] == "1.0.0"
    host, inner = result["interfaces"]
    assert host["name"].startswith("lxc") and "sandbox" not in host
    assert inner == {"name": "eth0", "mac": inner["mac"], "sandbox": path}
    [ip] = result["ips"]
    address = ip["address"]
    assert ipaddress.ip_interface(address) in ipaddress.ip_network("10.244.1.0/28")
    assert ip == {"address": address, "gateway": "10.244.1.1", "interface": 1}
    assert result["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.244.1.1"}]
    # The pod really has the address and reaches its router and the node.
    addr = netns.run(pod, ["ip", "-j", "addr", "show", "eth0"]).stdout
    assert address.split("/")[0] in addr and inner["mac"] in addr
    netns.run(pod, ["busybox", "ping", "-c1", "-W2", "10.244.1.1"])
    netns.run(pod, ["busybox", "ping", "-c1", "-W2", "192.168.77.11"])
    [ep] = fresh_node.get("/v1/endpoints")
    assert (ep["pod_namespace"], ep["pod_name"], ep["ip"]) == ("web", "front-1",
                                                               address.split("/")[0])
    # Repeated ADD of the same attachment: the same answer, no second IP.
    rc, again = cni(topo["node"], "ADD", conf(), container_id="ctr-a", netns_path=path)
    assert (rc, again) == (0, result)
    assert len(fresh_node.get("/v1/endpoints")) == 1

    rc, out = cni(topo["node"], "CHECK", conf(prevResult=result), container_id="ctr-a",
                  netns_path=path)
    assert (rc, out) == (0, None)
    wrong = {**result, "ips": [{"address": "10.244.1.9/32", "interface": 1}]}
    rc, out = cni(topo["node"], "CHECK", conf(prevResult=wrong), container_id="ctr-a",
                  netns_path=path)
    assert rc != 0 and out["code"] == 102 and "10.244.1.9" in out["details"]

    rc, out = cni(topo["node"], "DEL", conf(), container_id="ctr-a", netns_path=path)
    assert (rc, out) == (0, None)
    assert "eth0" not in netns.run(pod, ["ip", "link"]).stdout
    assert "lxc" not in netns.run(topo["node"], ["ip", "link"]).stdout
    assert fresh_node.get("/v1/endpoints") == []
    rc, out = cni(topo["node"], "DEL", conf(), container_id="ctr-a", netns_path=path)
    assert (rc, out) == (0, None)  # idempotent
    rc, out = cni(topo["node"], "CHECK", conf(prevResult=result), container_id="ctr-a",
                  netns_path=path)
    assert rc != 0 and out["code"] == 3


@pytest.mark.root
def test_result_in_version_0_4_0(topo: Topology, fresh_node: Agent) -> None:
    pod = topo.add("pod")
    rc, result = cni(topo["node"], "ADD", conf("0.4.0"), container_id="old",
                     netns_path=netns.netns_path(pod))
    assert rc == 0, result
    assert result["cniVersion"] == "0.4.0"
    assert result["ips"][0]["version"] == "4" and result["ips"][0]["interface"] == 1
    assert all("mtu" not in i for i in result["interfaces"])
    rc, _ = cni(topo["node"], "CHECK", conf("0.3.1", prevResult=result), container_id="old",
                netns_path=netns.netns_path(pod))
    assert rc != 0 and _["code"] == 1  # CHECK needs 0.4.0 or later


@pytest.mark.parametrize(("missing", "command"), [
    ("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "ADD"), ("CNI_NETNS", "ADD"),
    ("CNI_IFNAME", "ADD"), ("CNI_NETNS", "CHECK")])
@pytest.mark.root
def test_missing_environment_is_error_4(topo: Topology, fresh_node: Agent, missing: str,
                                        command: str) -> None:
    pod = netns.netns_path(topo.add("pod"))
    rc, out = cni(topo["node"], "" if missing == "CNI_COMMAND" else command,
                  conf(prevResult={"ips": []}),
                  container_id=None if missing == "CNI_CONTAINERID" else "c1",
                  netns_path=None if missing == "CNI_NETNS" else pod,
                  ifname="" if missing == "CNI_IFNAME" else "eth0")
    assert rc != 0 and out["code"] == 4, out
    assert missing in out["msg"]
    assert fresh_node.get("/v1/endpoints") == []


@pytest.mark.root
def test_bad_input_codes(topo: Topology, fresh_node: Agent) -> None:
    pod = netns.netns_path(topo.add("pod"))
    cases = [
        ("not json {", 6), ("[1, 2]", 6),
        (json.dumps({"cniVersion": "1.0.0", "type": "hexlane-cni"}), 7),
        (json.dumps(conf("0.2.0")), 1), (json.dumps(conf("9.9.9")), 1),
        (json.dumps(conf(ipam={"type": "host-local"})), 2),
    ]
    for stdin, code in cases:
        rc, out = cni(topo["node"], "ADD", stdin, netns_path=pod)
        assert rc != 0 and out["code"] == code, (stdin, out)
        assert set(out) == {"cniVersion", "code", "msg", "details"}
    rc, out = cni(topo["node"], "ADD", conf(), netns_path="/run/netns/hxc-does-not-exist")
    assert rc != 0 and out["code"] == 4 and "CNI_NETNS" in out["msg"]
    rc, out = cni(topo["node"], "ADD", conf(), container_id="bad/id", netns_path=pod)
    assert rc != 0 and out["code"] == 4
    assert fresh_node.get("/v1/endpoints") == []


@pytest.mark.root
def test_gc_and_status(topo: Topology, fresh_node: Agent) -> None:
    pods = [netns.netns_path(topo.add(f"pod{i}")) for i in range(3)]
    for i, path in enumerate(pods):
        assert cni(topo["node"], "ADD", conf("1.1.0"), container_id=f"g{i}",
                   netns_path=path)[0] == 0
    assert cni(topo["node"], "STATUS", conf("1.1.0")) == (0, None)
    valid = [{"containerID": "g0", "ifname": "eth0"}, {"containerID": "g2", "ifname": "eth0"}]
    rc, out = cni(topo["node"], "GC", conf("1.1.0", **{"cni.dev/valid-attachments": valid}))
    assert (rc, out) == (0, None)
    assert sorted(e["container_id"] for e in fresh_node.get("/v1/endpoints")) == ["g0", "g2"]
    rc, out = cni(topo["node"], "GC", conf("1.0.0"))
    assert rc != 0 and out["code"] == 1


@pytest.mark.root
def test_agent_down_add_fails_50_and_del_is_queued(topo: Topology, fresh_node: Agent) -> None:
    pod = topo.add("pod")
    path = netns.netns_path(pod)
    rc, result = cni(topo["node"], "ADD", conf(), container_id="q1", netns_path=path)
    assert rc == 0
    fresh_node.stop()
    rc, out = cni(topo["node"], "ADD", conf(), container_id="q2", netns_path=path,
                  ifname="eth1")
    assert rc != 0 and out["code"] == 50
    rc, out = cni(topo["node"], "STATUS", conf("1.1.0"))
    assert rc != 0 and out["code"] == 50
    # DEL with the agent down succeeds and leaves a queue entry in the state dir.
    rc, out = cni(topo["node"], "DEL", conf(), container_id="q1", netns_path=path,
                  extra_env={"HEXLANE_STATE_DIR": str(fresh_node.state_dir)})
    assert (rc, out) == (0, None)
    queued = list((fresh_node.state_dir / "cni-del-queue").glob("*.json"))
    assert [p.name for p in queued] == ["q1.eth0.json"]
    fresh_node.start()  # drains the queue before serving
    assert fresh_node.get("/v1/endpoints") == []
    assert not list((fresh_node.state_dir / "cni-del-queue").glob("*.json"))
    assert "lxc" not in netns.run(topo["node"], ["ip", "link"]).stdout
    rc, again = cni(topo["node"], "ADD", conf(), container_id="q3", netns_path=path)
    assert rc == 0 and again["ips"][0]["address"] != result["ips"][0]["address"]


@pytest.mark.root
def test_agent_refuses_calls_from_another_namespace(topo: Topology, fresh_node: Agent,
                                                     tmp_path: Path) -> None:
    other = topo.add("other")
    pod = netns.netns_path(topo.add("pod"))
    rc, out = cni(other, "ADD", conf(stateDir=str(fresh_node.state_dir)), netns_path=pod)
    assert rc != 0 and out["code"] == 50 and "another network namespace" in out["msg"]
    assert fresh_node.get("/v1/endpoints") == []


@pytest.mark.root
def test_the_bundled_plugin_behind_the_agents_wrapper(topo: Topology, fresh_node: Agent,
                                                      tmp_path: Path) -> None:
    """What the DaemonSet sets up on a node: the zipapp in the CNI bin directory (the host's
    python3 runs it) and the agent's wrapper exec'ing it."""
    bundle, written = install_plugin(tmp_path / "bin")
    assert written and not install_plugin(tmp_path / "bin")[1]  # the same bytes: no rewrite
    CniFiles(tmp_path / "net.d", tmp_path / "bin", tmp_path / "state", plugin=bundle).install()
    wrapper = str(tmp_path / "bin" / "hexlane-cni")
    assert str(bundle) in Path(wrapper).read_text()
    pod = topo.add("pod")
    path = netns.netns_path(pod)
    rc, result = cni(topo["node"], "ADD", conf(), container_id="ctr-z", netns_path=path,
                     plugin=wrapper)
    assert rc == 0, result
    assert [ep["ip"] for ep in fresh_node.get("/v1/endpoints")] == [
        result["ips"][0]["address"].split("/")[0]]
    assert cni(topo["node"], "DEL", conf(), container_id="ctr-z", netns_path=path,
               plugin=wrapper) == (0, None)
    assert fresh_node.get("/v1/endpoints") == []
