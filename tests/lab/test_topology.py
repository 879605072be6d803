"""The lab's shape from its parameters: namespace, link and path names, addresses, the checks
on lab names, LANs and interface names, exec targets, where nodes reach the API for given
values (direct, or a node-local proxy as k3s/Talos), the cluster CIDR for node pod CIDRs, and
the workload's HTTP answers and the source of its UDP answers."""

from __future__ import annotations

import json
import socket
import sys
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from hexlane.lab.manager import api_endpoint, cluster_cidr, lab_values
from hexlane.lab.topology import LabPlan, parse_target, pod_netns_name
from hexlane.lab.workload import IP_PKTINFO, http_answer, reply_pktinfo
from hexlane.model.errors import InputError


def test_default_plan_names_and_addresses() -> None:
    plan = LabPlan.make("hl")
    assert plan.lan_netns == "hl-lan"
    assert [(h.role, h.netns, str(h.address), h.ifname) for h in plan.hosts] == [
        ("client", "hl-client", "10.0.0.2/24", "eth0"),
        ("cp", "hl-cp", "10.0.0.10/24", "eth0"),
        ("node1", "hl-node1", "10.0.0.11/24", "eth0"),
        ("node2", "hl-node2", "10.0.0.12/24", "eth0"),
        ("node3", "hl-node3", "10.0.0.13/24", "eth0")]
    assert plan.apiserver_url == "https://10.0.0.10:6443"
    assert plan.state_dir("node2") == Path("/run/hexlane/lab/hl/node2/state")
    assert plan.bpf_root("node2") == Path("/sys/fs/bpf/hexlane-hl-node2")
    assert all(len(h.port) <= 15 for h in plan.hosts)
    assert LabPlan.from_dict(plan.to_dict()) == plan


def test_other_lan_and_interface_name() -> None:
    plan = LabPlan.make("lab2", nodes=2, lan="192.168.50.0/24", lan_ifname="enp0s25")
    assert str(plan.node(2).address) == "192.168.50.12/24"
    assert plan.node(1).ifname == "enp0s25" and plan.cp.ifname == "eth0"
    with pytest.raises(KeyError):
        plan.node(3)


def test_bad_parameters_are_reported_together() -> None:
    with pytest.raises(InputError) as err:
        LabPlan.make("Bad_Name!", nodes=0, lan="10.0.0.0/33", lan_ifname="x" * 16)
    paths = sorted(p.path for p in err.value.problems)
    assert paths == ["--lan", "--lan-ifname", "--name", "--nodes"]
    with pytest.raises(InputError, match="too small"):
        LabPlan.make("x", nodes=5, lan="10.0.0.0/28")


def test_pod_namespaces_carry_the_lab_prefix() -> None:
    name = pod_netns_name("hl", "65069323-B72A-4af7-9804-ed724f0d2ef9")
    assert name == "hl-p65069323b72a"


def test_exec_targets() -> None:
    assert parse_target("client") == ("client", None, None)
    assert parse_target("node12") == ("node12", None, None)
    assert parse_target("pod/default/web-1") == ("pod", "default", "web-1")
    for bad in ("node0", "pod/x", "laptop", "pod//x"):
        with pytest.raises(InputError):
            parse_target(bad)


def test_api_endpoint_follows_k8s_service_host() -> None:
    plan = LabPlan.make("hl")
    direct = api_endpoint(lab_values([], []), plan)
    assert (direct.host, direct.port, direct.proxy) == ("10.0.0.10", 6443, False)
    k3s = api_endpoint(lab_values([], ["k8sServiceHost=127.0.0.1", "k8sServicePort=6444"]),
                       plan)
    assert (k3s.host, k3s.port, k3s.proxy) == ("127.0.0.1", 6444, True)
    cp = api_endpoint(lab_values([], ["k8sServiceHost=10.0.0.10", "k8sServicePort=6443"]),
                      plan)
    assert not cp.proxy
    with pytest.raises(InputError, match="loopback"):
        api_endpoint(lab_values([], ["k8sServiceHost=192.168.1.5"]), plan)


def test_lab_values_layer_base_files_and_sets(tmp_path: Path) -> None:
    values = lab_values([], [])
    assert [str(c) for c in values.ipam.cluster_pool_ipv4_pod_cidrs] == ["10.42.0.0/16"]
    assert cluster_cidr(values) == IPv4Network("10.42.0.0/16")
    f = tmp_path / "talos.yaml"
    f.write_text("ipam:\n  mode: kubernetes\nipv4NativeRoutingCIDR: 10.244.0.0/16\n"
                 "routingMode: native\n")
    talos = lab_values([str(f)], [])
    assert cluster_cidr(talos) == IPv4Network("10.244.0.0/16")
    with pytest.raises(InputError):
        lab_values([str(tmp_path / "missing.yaml")], [])


def test_workload_answers() -> None:
    assert http_answer("/", "web-1", "node1", ("10.42.0.5", 4000)) == \
        (200, "text/plain", b"web-1\n")
    status, ctype, body = http_answer("/whoami?x=1", "web-1", "node1", ("10.42.0.5", 4000))
    assert status == 200 and ctype == "application/json"
    assert b'"client_ip": "10.42.0.5"' in body and b'"node": "node1"' in body
    assert http_answer("/nope", "p", "n", ("", 0))[0] == 404
    assert b"received" not in body
    # A POST (or PUT) says how many body bytes came.
    status, _, body = http_answer("/whoami", "web-1", "node1", ("10.42.0.5", 4000), 200_000)
    assert status == 200 and json.loads(body)["received"] == 200_000
    assert http_answer("/", "web-1", "node1", ("", 0), 5) == (200, "text/plain", b"web-1\n")


def test_workload_udp_answers_from_the_address_received_on() -> None:
    # in_pktinfo as received: ifindex 3, spec_dst 10.0.0.12, addr 10.0.0.12; the answer's:
    # ifindex 0 (routed as usual), spec_dst 10.0.0.12.
    got = (3).to_bytes(4, sys.byteorder) + socket.inet_aton("10.0.0.12") * 2
    info = reply_pktinfo([(socket.IPPROTO_IP, IP_PKTINFO, got)])
    assert info == bytes(4) + socket.inet_aton("10.0.0.12") + bytes(4)
    assert reply_pktinfo([]) is None
    assert reply_pktinfo([(socket.SOL_SOCKET, IP_PKTINFO, got)]) is None
