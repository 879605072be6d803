"""Every kind of bad values input is an error naming the file (or --set), key and expectation.

Pins down: values files that are not maps or not YAML; wrong types; values outside the sets
Cilium accepts (load-balancer mode/algorithm, Maglev table sizes and seeds, routing and IPAM
modes, CIDRs, mask sizes, ports, host:port, durations, cluster name/id, ring capacity, Hubble
TLS PEMs); the relations Cilium enforces between keys (DSR needs native routing here, native
routing with masquerading needs ipv4NativeRoutingCIDR, L2 announcements and BPF masquerade
need kube-proxy replacement, Hubble's server certificate and key go together, ...); and bad
`--set` syntax. Bad input never raises.
"""

from __future__ import annotations

from typing import Any

import pytest

from hexlane.config import load_values, parse_values_document, resolve_values
from hexlane.model.errors import Problem, errors_only

KPR = {"kubeProxyReplacement": True}
NATIVE = {"routingMode": "native", "ipv4NativeRoutingCIDR": "10.244.0.0/16"}


def errors_for(doc: dict[str, Any], flags: tuple[str, ...] = ()) -> list[Problem]:
    _, problems = resolve_values([("v.yaml", doc)], flags)
    return errors_only(problems)


CASES: list[tuple[str, dict[str, Any], str, str]] = [
    # name, values, path of the error, fragment of the message
    ("l2announcements not a map", {"l2announcements": "yes-please"}, "l2announcements",
     "expected a map"),
    ("qps not a number", {"k8sClientRateLimit": {"qps": "fast"}}, "k8sClientRateLimit.qps",
     "positive number"),
    ("qps zero", {"k8sClientRateLimit": {"qps": 0}}, "k8sClientRateLimit.qps",
     "positive number"),
    ("burst not int", {"k8sClientRateLimit": {"burst": 2.5}}, "k8sClientRateLimit.burst",
     "integer"),
    ("operator qps bad", {"k8sClientRateLimit": {"operator": {"qps": "x"}}},
     "k8sClientRateLimit.operator.qps", "positive number"),
    ("kpr bad", {"kubeProxyReplacement": "sometimes"}, "kubeProxyReplacement",
     "expected true or false"),
    ("bool bad", {"l2announcements": {"enabled": "yes-please"}}, "l2announcements.enabled",
     "expected true or false"),
    ("bool number", {"externalIPs": {"enabled": 1}}, "externalIPs.enabled",
     "expected true or false"),
    ("lb mode", {"loadBalancer": {"mode": "fast"}}, "loadBalancer.mode", "snat, dsr, hybrid"),
    ("lb algorithm", {"loadBalancer": {"algorithm": "round_robin"}}, "loadBalancer.algorithm",
     "random, maglev"),
    ("maglev size not prime list", {"maglev": {"tableSize": 1000}}, "maglev.tableSize",
     "16381"),
    ("maglev size text", {"maglev": {"tableSize": "big"}}, "maglev.tableSize", "integer"),
    ("hash seed not base64", {"maglev": {"hashSeed": "not base64!!"}}, "maglev.hashSeed",
     "12 bytes"),
    ("hash seed wrong length", {"maglev": {"hashSeed": "AAAA"}}, "maglev.hashSeed", "12 bytes"),
    ("routing mode", {"routingMode": "bgp"}, "routingMode", "native, tunnel"),
    ("tunnel geneve", {"tunnelProtocol": "geneve"}, "tunnelProtocol", "Geneve"),
    ("ipam mode", {"ipam": {"mode": "eni"}}, "ipam.mode", "cluster-pool, kubernetes"),
    ("cidr list item", {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList":
                                              ["10.42.0.0/16", "10.300.0.0/16"]}}},
     "ipam.operator.clusterPoolIPv4PodCIDRList[1]", "IPv4 CIDR"),
    ("cidr list not list", {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": 5}}},
     "ipam.operator.clusterPoolIPv4PodCIDRList", "list of IPv4 CIDRs"),
    ("cidr list empty", {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": []}}},
     "ipam.operator.clusterPoolIPv4PodCIDRList", "at least one"),
    ("cidr v6", {"ipam": {"operator": {"clusterPoolIPv4PodCIDRList": ["fd00::/104"]}}},
     "ipam.operator.clusterPoolIPv4PodCIDRList[0]", "IPv4 CIDR"),
    ("cidr without prefix", {"ipv4NativeRoutingCIDR": "10.0.0.1"}, "ipv4NativeRoutingCIDR",
     "IPv4 CIDR"),
    ("native cidr bad", {"ipv4NativeRoutingCIDR": "ten/8"}, "ipv4NativeRoutingCIDR",
     "IPv4 CIDR"),
    ("mask size too big", {"ipam": {"operator": {"clusterPoolIPv4MaskSize": 31}}},
     "ipam.operator.clusterPoolIPv4MaskSize", "from 1 to 30"),
    ("mask size zero", {"ipam": {"operator": {"clusterPoolIPv4MaskSize": 0}}},
     "ipam.operator.clusterPoolIPv4MaskSize", "from 1 to 30"),
    ("mask shorter than cidr", {"ipam": {"operator": {
        "clusterPoolIPv4PodCIDRList": ["10.42.0.0/16"], "clusterPoolIPv4MaskSize": 12}}},
     "ipam.operator.clusterPoolIPv4MaskSize", "does not fit"),
    ("mask too many nodes", {"ipam": {"operator": {
        "clusterPoolIPv4PodCIDRList": ["10.0.0.0/8"], "clusterPoolIPv4MaskSize": 28}}},
     "ipam.operator.clusterPoolIPv4MaskSize", "65536"),
    ("dsr with tunnel", {**KPR, "loadBalancer": {"mode": "dsr"}}, "loadBalancer.mode",
     "Geneve"),
    ("hybrid with tunnel", {**KPR, "loadBalancer": {"mode": "hybrid"}}, "loadBalancer.mode",
     "routingMode: native"),
    ("dsr without kpr", {**NATIVE, "loadBalancer": {"mode": "dsr"}}, "loadBalancer.mode",
     "kubeProxyReplacement"),
    ("dsr dispatch geneve", {**KPR, **NATIVE, "loadBalancer": {"mode": "dsr",
                                                               "dsrDispatch": "geneve"}},
     "loadBalancer.dsrDispatch", "opt"),
    ("native without cidr", {"routingMode": "native"}, "ipv4NativeRoutingCIDR",
     "needs ipv4NativeRoutingCIDR"),
    ("auto routes with tunnel", {"autoDirectNodeRoutes": True}, "autoDirectNodeRoutes",
     "tunnel"),
    ("l2 without kpr", {"l2announcements": {"enabled": True}}, "l2announcements.enabled",
     "kubeProxyReplacement: true"),
    ("bpf masq without kpr", {"bpf": {"masquerade": True}}, "bpf.masquerade",
     "kubeProxyReplacement"),
    ("bpf masq without masquerading", {**KPR, "bpf": {"masquerade": True},
                                       "enableIPv4Masquerade": False}, "bpf.masquerade",
     "enableIPv4Masquerade: true"),
    ("healthz no port", {"kubeProxyReplacementHealthzBindAddr": "0.0.0.0"},
     "kubeProxyReplacementHealthzBindAddr", "host:port"),
    ("healthz port range", {"kubeProxyReplacementHealthzBindAddr": "0.0.0.0:70000"},
     "kubeProxyReplacementHealthzBindAddr", "1 to 65535"),
    ("healthz bad host", {"kubeProxyReplacementHealthzBindAddr": "no host!:10256"},
     "kubeProxyReplacementHealthzBindAddr", "IP address or host name"),
    ("healthz not string", {"kubeProxyReplacementHealthzBindAddr": 10256},
     "kubeProxyReplacementHealthzBindAddr", "host:port"),
    ("service host placeholder", {"k8sServiceHost": "<-- HOST IP -->"}, "k8sServiceHost",
     "IP address or host name"),
    ("service port text", {"k8sServicePort": "https"}, "k8sServicePort", "port number"),
    ("service port range", {"k8sServicePort": 0}, "k8sServicePort", "port number"),
    ("metrics port", {"prometheus": {"port": 99999}}, "prometheus.port", "port number"),
    ("duration no unit", {"l2announcements": {"leaseDuration": "15"}},
     "l2announcements.leaseDuration", "missing unit"),
    ("duration int", {"l2announcements": {"leaseDuration": 15}},
     "l2announcements.leaseDuration", "duration such as 15s"),
    ("duration negative", {"l2announcements": {"leaseRetryPeriod": "-2s"}},
     "l2announcements.leaseRetryPeriod", "positive duration"),
    ("duration garbage", {"l2announcements": {"leaseRenewDeadline": "5 seconds"}},
     "l2announcements.leaseRenewDeadline", "invalid duration"),
    ("ring capacity", {"hubble": {"eventBufferCapacity": 4096}}, "hubble.eventBufferCapacity",
     "2^n-1"),
    ("listen address", {"hubble": {"listenAddress": "4244"}}, "hubble.listenAddress",
     "host:port"),
    ("metrics not list", {"hubble": {"metrics": {"enabled": "drop,tcp"}}},
     "hubble.metrics.enabled", "list of names"),
    ("hubble not map", {"hubble": True}, "hubble", "expected a map"),
    ("hubble tls cert not base64", {"hubble": {"tls": {"server": {"cert": "not pem!"}}}},
     "hubble.tls.server.cert", "base64"),
    ("hubble tls cert not pem", {"hubble": {"tls": {"server": {"cert": "aGVsbG8="}}}},
     "hubble.tls.server.cert", "BEGIN"),
    ("hubble tls extra ip", {"hubble": {"tls": {"server": {"extraIpAddresses": ["x"]}}}},
     "hubble.tls.server.extraIpAddresses[0]", "IP address"),
    ("hubble tls method", {"hubble": {"tls": {"auto": {"method": "vault"}}}},
     "hubble.tls.auto.method", "helm, cronJob, certmanager"),
    ("hubble tls key without cert",
     {"hubble": {"tls": {"server": {"key": "LS0tLS1CRUdJTiBYLS0tLS0K"}}}},
     "hubble.tls.server.cert", "give both"),
    ("hubble tls no auto no cert", {"hubble": {"tls": {"auto": {"enabled": False}}}},
     "hubble.tls.server.cert", "needs the server certificate"),
    ("tls ca cert without key", {"tls": {"ca": {"cert": "LS0tLS1CRUdJTiBYLS0tLS0K"}}},
     "tls.ca.key", "cannot sign"),
    ("cluster name", {"cluster": {"name": "Home_Ops"}}, "cluster.name", "lower-case"),
    ("cluster id", {"cluster": {"id": 256}}, "cluster.id", "0 to 255"),
    ("operator replicas", {"operator": {"replicas": -1}}, "operator.replicas", "at least 0"),
    ("ipv4 off", {"ipv4": {"enabled": False}}, "ipv4.enabled", "IPv4-only"),
    ("string for map leaf", {"cluster": {"name": ["a"]}}, "cluster.name", "string"),
]


@pytest.mark.parametrize("name,doc,path,fragment", CASES, ids=[c[0] for c in CASES])
def test_error_names_file_key_and_expectation(name: str, doc: dict[str, Any], path: str,
                                              fragment: str) -> None:
    errors = errors_for(doc)
    assert [e.path for e in errors] == [path], errors
    [error] = errors
    assert fragment in error.message
    assert error.file == "v.yaml"
    assert error.severity == "error"


def test_error_from_set_names_set() -> None:
    errors = errors_for({}, ("loadBalancer.mode=fast",))
    assert [(e.file, e.path) for e in errors] == [("--set", "loadBalancer.mode")]


def test_error_names_the_later_file_that_set_the_bad_value() -> None:
    _, problems = resolve_values([("a.yaml", {"maglev": {"tableSize": 1000}}),
                                  ("b.yaml", {"maglev": {"hashSeed": "JLfvgnHc2kaSUFaI"}})])
    [error] = errors_only(problems)
    assert (error.file, error.path) == ("a.yaml", "maglev.tableSize")
    _, problems = resolve_values([("a.yaml", {"maglev": {"tableSize": 251}}),
                                  ("b.yaml", {"maglev": {"tableSize": 1000}})])
    [error] = errors_only(problems)
    assert error.file == "b.yaml"


def test_relation_error_names_file_of_the_key_it_is_about() -> None:
    _, problems = resolve_values([("base.yaml", {**KPR, "routingMode": "tunnel"}),
                                  ("lb.yaml", {"loadBalancer": {"mode": "dsr"}})])
    [error] = errors_only(problems)
    assert (error.file, error.path) == ("lb.yaml", "loadBalancer.mode")


def test_native_routing_without_cidr_is_fine_without_masquerade_or_with_masq_agent() -> None:
    assert errors_for({"routingMode": "native", "enableIPv4Masquerade": False}) == []
    assert errors_for({"routingMode": "native", "ipMasqAgent": {"enabled": True}}) == []


def test_dsr_with_native_routing_and_kpr_is_fine() -> None:
    assert errors_for({**KPR, **NATIVE, "loadBalancer": {"mode": "dsr",
                                                         "algorithm": "maglev"}}) == []


def test_bpf_masquerade_with_node_port_is_fine() -> None:
    assert errors_for({"bpf": {"masquerade": True}, "nodePort": {"enabled": True}}) == []


def test_mask_size_relation_only_checked_in_cluster_pool_mode() -> None:
    doc = {"ipam": {"mode": "kubernetes", "operator": {"clusterPoolIPv4MaskSize": 4}}}
    assert errors_for(doc) == []


def test_several_errors_are_all_reported() -> None:
    errors = errors_for({"loadBalancer": {"mode": "x", "algorithm": "y"},
                         "maglev": {"tableSize": 3}})
    assert {e.path for e in errors} == {"loadBalancer.mode", "loadBalancer.algorithm",
                                        "maglev.tableSize"}


def test_no_relation_errors_built_on_a_bad_key() -> None:
    # routingMode is wrong; "dsr needs native routing" would be noise on top of that error.
    errors = errors_for({**KPR, "routingMode": "bgp", "loadBalancer": {"mode": "dsr"}})
    assert [e.path for e in errors] == ["routingMode"]


def test_bad_keys_fall_back_to_defaults_in_the_typed_view() -> None:
    values, problems = resolve_values([("v.yaml", {"l2announcements": "yes-please",
                                                   "maglev": {"tableSize": 1000}})])
    assert errors_only(problems)
    assert values.l2announcements.lease_duration == 15.0
    assert values.maglev.table_size == 16381


@pytest.mark.parametrize("text,fragment,file", [
    ("- a\n- b\n", "the file holds a list: expected a map of Helm values", "v.yaml"),
    ("just a string\n", "expected a map of Helm values", "v.yaml"),
    ("42\n", "holds an integer (42): expected a map", "v.yaml"),
    ("a: [1, 2\n", "invalid YAML at line 2", "v.yaml:2"),
    ("a: 1\n\tb: 2\n", "invalid YAML at line 2", "v.yaml:2"),
    ("a: 1\nb: 2\na: 3\n", "'a' appears twice", "v.yaml:3"),
    ("---\na: 1\n---\nb: 2\n", "invalid YAML", "v.yaml:3"),
    ("1: one\n", "keys must be strings", "v.yaml"),
])
def test_document_that_is_not_a_map(text: str, fragment: str, file: str) -> None:
    doc, problems = parse_values_document(text, "v.yaml")
    assert doc.tree == {}
    [problem] = problems
    assert fragment in problem.message
    assert problem.file == file


def test_empty_document_is_empty_map() -> None:
    for text in ("", "# only a comment\n"):
        doc, problems = parse_values_document(text, "v.yaml")
        assert (doc.tree, problems) == ({}, [])


def test_dates_stay_strings() -> None:
    doc, problems = parse_values_document("custom: 2024-01-02\n", "v.yaml")
    assert doc.tree == {"custom": "2024-01-02"}
    assert problems == []


def test_problems_point_at_the_line_of_the_key() -> None:
    text = "hubble:\n  enabled: true\nloadBalancer:\n  algorithm: maglev\n  mode: fast\n" \
           "ipam:\n  operator:\n    clusterPoolIPv4PodCIDRList:\n    - 10.42.0.0/16\n" \
           "    - 10.300.0.0/16\n"
    doc, _ = parse_values_document(text, "v.yaml")
    _, problems = resolve_values([doc])
    assert {(p.file, p.path) for p in problems} == {
        ("v.yaml:5", "loadBalancer.mode"),
        ("v.yaml:10", "ipam.operator.clusterPoolIPv4PodCIDRList[1]")}


@pytest.mark.parametrize("flag", ["a.b", "a,b=c", "list[x]=1", "list={a,b", "a.=x", "a[-1]=x"])
def test_bad_set_syntax(flag: str) -> None:
    values, problems = resolve_values([], [flag])
    [problem] = problems
    assert problem.file == "--set"
    assert problem.severity == "error"
    assert repr(flag) in problem.message
    assert values.tree == resolve_values([], [])[0].tree  # the bad flag changed nothing


def test_unreadable_inputs_via_load_values(tmp_path: Any) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    _, problems = load_values([str(tmp_path / "list.yaml"), str(tmp_path),
                              str(tmp_path / "bin.yaml")])
    assert [p.file for p in errors_only(problems)] == [
        str(tmp_path / "list.yaml"), str(tmp_path), str(tmp_path / "bin.yaml")]
