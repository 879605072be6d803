"""The cluster DNS's answers (`hexlane.lab.clusterdns`), as CoreDNS's kubernetes plugin gives
them, through real DNS messages (dnspython's, on the wire): Services, headless endpoints and
their names, SRV with its additional records, pods insecure, PTR, ExternalName, NODATA and
NXDOMAIN with the zone's SOA, TTL 5, REFUSED outside the cluster, FORMERR, NOTIMP and
truncation over UDP; and the resolv.conf the kubelet writes for each dnsPolicy."""

from __future__ import annotations

import random
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.lab.clusterdns import ClusterZone, pod_resolv_conf, respond_wire


def service(name: str, ns: str = "default", *, ip: str | None = "10.43.0.20",
            ports: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
                            if ports is None else ports, **spec}
    if ip is not None:
        body["clusterIP"] = ip
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": ns}, "spec": body}


def endpoint_slice(svc: str, endpoints: list[dict[str, Any]], ns: str = "default",
                   ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"name": "pg", "port": 5432, "protocol": "TCP"}] if ports is None
            else ports}


ZONE = ClusterZone.build(
    [service("web"),
     service("db", ip="None", ports=[{"name": "pg", "port": 5432}]),
     service("empty", ip="None"),
     service("ext", ip=None, type="ExternalName", externalName="example.com"),
     service("alias", ip=None, type="ExternalName", externalName="web.default.svc.cluster.local"),
     service("kube-dns", "kube-system", ip="10.43.0.10",
             ports=[{"name": "dns", "port": 53, "protocol": "UDP"},
                    {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]),
     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "Bad_Name"}, "spec": {}}],
    [endpoint_slice("db", [
        {"addresses": ["10.42.0.5"], "conditions": {"ready": True}},
        {"addresses": ["10.42.1.6"], "hostname": "db-0"},
        {"addresses": ["10.42.1.7"], "conditions": {"ready": False}}]),
     endpoint_slice("web", [{"addresses": ["10.42.0.8"]}],
                    ports=[{"name": "http", "port": 8080, "protocol": "TCP"}])],
    ["default", "kube-system"], serial=1234)

SOA = "ns.dns.cluster.local. hostmaster.cluster.local. 1234 7200 1800 86400 5"


def ask(name: str, rdtype: str = "A", *, zone: ClusterZone = ZONE, tcp: bool = False,
        **query: Any) -> dns.message.Message:
    wire = respond_wire(zone, dns.message.make_query(name, rdtype, **query).to_wire(), tcp=tcp)
    assert wire is not None
    return dns.message.from_wire(wire)


def records(section: list[dns.rrset.RRset]) -> set[tuple[str, str, int, str]]:
    return {(rrset.name.to_text(), dns.rdatatype.to_text(rrset.rdtype), rrset.ttl,
             rd.to_text()) for rrset in section for rd in rrset}


def rcode(msg: dns.message.Message) -> str:
    return dns.rcode.to_text(msg.rcode())


FQDN = "web.default.svc.cluster.local."
ANSWERS = [
    # (name, type, rcode, answer records)
    (FQDN, "A", "NOERROR", {(FQDN, "A", 5, "10.43.0.20")}),
    ("db.default.svc.cluster.local.", "A", "NOERROR",
     {("db.default.svc.cluster.local.", "A", 5, "10.42.0.5"),
      ("db.default.svc.cluster.local.", "A", 5, "10.42.1.6")}),
    ("db-0.db.default.svc.cluster.local.", "A", "NOERROR",
     {("db-0.db.default.svc.cluster.local.", "A", 5, "10.42.1.6")}),
    ("10-42-0-5.db.default.svc.cluster.local.", "A", "NOERROR",
     {("10-42-0-5.db.default.svc.cluster.local.", "A", 5, "10.42.0.5")}),
    # an endpoint name under a ClusterIP Service names the endpoint, not the ClusterIP
    ("10-42-0-8.web.default.svc.cluster.local.", "A", "NOERROR",
     {("10-42-0-8.web.default.svc.cluster.local.", "A", 5, "10.42.0.8")}),
    ("ext.default.svc.cluster.local.", "A", "NOERROR",
     {("ext.default.svc.cluster.local.", "CNAME", 5, "example.com.")}),
    ("ext.default.svc.cluster.local.", "CNAME", "NOERROR",
     {("ext.default.svc.cluster.local.", "CNAME", 5, "example.com.")}),
    ("alias.default.svc.cluster.local.", "A", "NOERROR",
     {("alias.default.svc.cluster.local.", "CNAME", 5, FQDN), (FQDN, "A", 5, "10.43.0.20")}),
    ("10-42-9-9.default.pod.cluster.local.", "A", "NOERROR",
     {("10-42-9-9.default.pod.cluster.local.", "A", 5, "10.42.9.9")}),
    ("20.0.43.10.in-addr.arpa.", "PTR", "NOERROR",
     {("20.0.43.10.in-addr.arpa.", "PTR", 5, FQDN)}),
    ("6.1.42.10.in-addr.arpa.", "PTR", "NOERROR",
     {("6.1.42.10.in-addr.arpa.", "PTR", 5, "db-0.db.default.svc.cluster.local.")}),
    ("cluster.local.", "SOA", "NOERROR", {("cluster.local.", "SOA", 5, SOA)}),
    ("cluster.local.", "NS", "NOERROR", {("cluster.local.", "NS", 5, "ns.dns.cluster.local.")}),
    ("ns.dns.cluster.local.", "A", "NOERROR", {("ns.dns.cluster.local.", "A", 5, "10.43.0.10")}),
    ("dns-version.cluster.local.", "TXT", "NOERROR",
     {("dns-version.cluster.local.", "TXT", 28800, '"1.1.0"')}),
    # NODATA: the name exists, no record of the type
    (FQDN, "AAAA", "NOERROR", set()),
    (FQDN, "MX", "NOERROR", set()),
    ("default.svc.cluster.local.", "A", "NOERROR", set()),
    ("svc.cluster.local.", "A", "NOERROR", set()),
    ("cluster.local.", "A", "NOERROR", set()),
    ("ext.default.svc.cluster.local.", "SRV", "NOERROR", set()),
    # NXDOMAIN: no such name
    ("nope.default.svc.cluster.local.", "A", "NXDOMAIN", set()),
    ("nope.default.svc.cluster.local.", "AAAA", "NXDOMAIN", set()),
    ("web.nons.svc.cluster.local.", "A", "NXDOMAIN", set()),
    ("nons.svc.cluster.local.", "A", "NXDOMAIN", set()),
    ("web.default.cluster.local.", "A", "NXDOMAIN", set()),
    ("empty.default.svc.cluster.local.", "A", "NXDOMAIN", set()),  # headless, none ready
    ("10-42-1-7.db.default.svc.cluster.local.", "A", "NXDOMAIN", set()),  # not ready
    ("db-1.db.default.svc.cluster.local.", "A", "NXDOMAIN", set()),
    ("x.ext.default.svc.cluster.local.", "A", "NXDOMAIN", set()),
    ("_dns._udp.web.default.svc.cluster.local.", "SRV", "NXDOMAIN", set()),
    ("a.b.c.web.default.svc.cluster.local.", "A", "NXDOMAIN", set()),
    ("10-42-9-9.nons.pod.cluster.local.", "A", "NXDOMAIN", set()),
    ("not-an-ip.default.pod.cluster.local.", "A", "NXDOMAIN", set()),
    # not the cluster's to answer, and no upstream in the lab
    ("example.com.", "A", "REFUSED", set()),
    ("1.2.3.4.in-addr.arpa.", "PTR", "REFUSED", set()),
    ("20.0.43.10.in-addr.arpa.", "A", "REFUSED", set()),
    ("43.10.in-addr.arpa.", "PTR", "REFUSED", set()),
]


@pytest.mark.parametrize(("name", "rdtype", "code", "answer"), ANSWERS,
                         ids=[f"{n}{t}" for n, t, _, _ in ANSWERS])
def test_answers(name: str, rdtype: str, code: str, answer: set[Any]) -> None:
    msg = ask(name, rdtype)
    assert rcode(msg) == code
    assert records(msg.answer) == answer
    assert msg.question[0].name.to_text() == name
    if code == "REFUSED":
        assert not msg.flags & dns.flags.AA and not msg.authority
        return
    assert msg.flags & dns.flags.AA and msg.flags & dns.flags.RA
    # NXDOMAIN and NODATA carry the zone's SOA for negative caching
    expected_soa = {("cluster.local.", "SOA", 5, SOA)} if not answer else set()
    assert records(msg.authority) == expected_soa


def test_srv_names_ports_with_addresses_in_the_additional_section() -> None:
    msg = ask("_http._tcp.web.default.svc.cluster.local.", "SRV")
    assert records(msg.answer) == {("_http._tcp.web.default.svc.cluster.local.", "SRV", 5,
                                    f"0 100 80 {FQDN}")}
    assert records(msg.additional) == {(FQDN, "A", 5, "10.43.0.20")}
    # headless: one record per ready endpoint, weight shared, each target its own name
    msg = ask("_pg._tcp.db.default.svc.cluster.local.", "SRV")
    assert records(msg.answer) == {
        ("_pg._tcp.db.default.svc.cluster.local.", "SRV", 5,
         "0 50 5432 10-42-0-5.db.default.svc.cluster.local."),
        ("_pg._tcp.db.default.svc.cluster.local.", "SRV", 5,
         "0 50 5432 db-0.db.default.svc.cluster.local.")}
    assert records(msg.additional) == {
        ("10-42-0-5.db.default.svc.cluster.local.", "A", 5, "10.42.0.5"),
        ("db-0.db.default.svc.cluster.local.", "A", 5, "10.42.1.6")}
    # without _port._proto: every port; the protocol alone filters
    both = ask("kube-dns.kube-system.svc.cluster.local.", "SRV")
    assert {rd.port for rrset in both.answer for rd in rrset} == {53}
    assert len(records(both.answer)) == 1  # same target and port: once
    assert rcode(ask("_dns._udp.kube-dns.kube-system.svc.cluster.local.", "SRV")) == "NOERROR"
    assert rcode(ask("_dns._tcp.kube-dns.kube-system.svc.cluster.local.", "SRV")) == "NXDOMAIN"


def test_names_match_without_regard_to_case_and_answer_as_asked() -> None:
    msg = ask("WEB.Default.SVC.cluster.LOCAL.")
    assert records(msg.answer) == {("WEB.Default.SVC.cluster.LOCAL.", "A", 5, "10.43.0.20")}


def test_edns_is_answered_with_edns_and_tcp_carries_what_udp_cannot() -> None:
    many = ClusterZone.build(
        [service("big", ip="None")],
        [endpoint_slice("big", [{"addresses": [f"10.42.{i // 250}.{i % 250 + 1}"]}
                                for i in range(100)])], ["default"])
    plain = ask("big.default.svc.cluster.local.", zone=many)  # no EDNS: 512 bytes at most
    assert plain.flags & dns.flags.TC and not plain.answer and rcode(plain) == "NOERROR"
    edns = ask("big.default.svc.cluster.local.", zone=many, use_edns=0, payload=4096)
    assert edns.edns == 0 and edns.flags & dns.flags.TC  # 100 A records > 1232 bytes
    full = ask("big.default.svc.cluster.local.", zone=many, tcp=True)
    assert not full.flags & dns.flags.TC and len(records(full.answer)) == 100
    small = ask(FQDN, use_edns=0, payload=1232)
    assert small.edns == 0 and small.payload == 1232 and records(small.answer)


def test_bad_queries_get_formerr_notimp_or_nothing() -> None:
    query = dns.message.make_query(FQDN, "A")
    garbage = query.to_wire()[:12] + b"\x07truncated"
    reply = respond_wire(ZONE, garbage, tcp=False)
    assert reply is not None
    msg = dns.message.from_wire(reply)
    assert msg.id == query.id and rcode(msg) == "FORMERR" and msg.flags & dns.flags.QR
    assert respond_wire(ZONE, b"\x01\x02\x03", tcp=False) is None  # no header: nothing
    response = dns.message.make_response(query).to_wire()
    assert respond_wire(ZONE, response, tcp=False) is None  # never answer an answer
    notify = dns.message.make_query(FQDN, "SOA")
    notify.set_opcode(dns.opcode.NOTIFY)
    assert rcode(dns.message.from_wire(respond_wire(ZONE, notify.to_wire(), tcp=False)
                                       or b"")) == "NOTIMP"
    chaos = dns.message.make_query("version.bind.", "TXT", "CH")
    assert rcode(dns.message.from_wire(respond_wire(ZONE, chaos.to_wire(), tcp=False)
                                       or b"")) == "REFUSED"
    axfr = dns.message.make_query("cluster.local.", "AXFR")
    assert rcode(dns.message.from_wire(respond_wire(ZONE, axfr.to_wire(), tcp=True)
                                       or b"")) == "REFUSED"


LABEL = st.from_regex(r"\A[a-z]([a-z0-9-]{0,14}[a-z0-9])?\Z")


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.tuples(LABEL, LABEL), st.integers(2, 65000), min_size=1,
                       max_size=12), st.randoms(use_true_random=False), st.data())
def test_every_service_resolves_to_its_cluster_ip(table: dict[tuple[str, str], int],
                                                   rng: random.Random, data: Any) -> None:
    """Whatever the Services, their names (in any case) give their ClusterIPs; a name that is
    none of them in a namespace that exists is NXDOMAIN."""
    ips = {key: f"10.43.{n // 256}.{n % 256}" for key, n in table.items()}
    zone = ClusterZone.build([service(name, ns, ip=ip) for (name, ns), ip in ips.items()],
                             [], {ns for _, ns in ips})
    for (name, ns), ip in ips.items():
        qname = "".join(c.upper() if rng.random() < 0.5 else c
                        for c in f"{name}.{ns}.svc.cluster.local.")
        assert records(ask(qname, zone=zone).answer) == {(qname, "A", 5, ip)}
        assert rcode(ask(qname, "AAAA", zone=zone)) == "NOERROR"
    name = data.draw(LABEL)
    ns = next(iter(ips))[1]
    if (name, ns) not in ips:
        assert rcode(ask(f"{name}.{ns}.svc.cluster.local.", zone=zone)) == "NXDOMAIN"


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_get_an_answer_or_none_and_never_an_exception(wire: bytes) -> None:
    reply = respond_wire(ZONE, wire, tcp=False)
    if reply is not None:
        assert len(reply) <= 1232
        msg = dns.message.from_wire(reply)
        assert msg.flags & dns.flags.QR and msg.id == int.from_bytes(wire[:2], "big")


# --- resolv.conf -----------------------------------------------------------------------------

HOST = "nameserver 10.255.255.53\nsearch corp.example\noptions timeout:2\n"


def pod(ns: str = "shop", **spec: Any) -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": ns}, "spec": spec}


def resolv(p: dict[str, Any], host: str = HOST) -> str | None:
    return pod_resolv_conf(p, cluster_dns="10.43.0.10", host=host)


def test_cluster_first_searches_the_namespace_then_the_cluster_then_the_host() -> None:
    expected = ("search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n"
                "nameserver 10.43.0.10\noptions ndots:5\n")
    assert resolv(pod()) == expected
    assert resolv(pod(dnsPolicy="ClusterFirst")) == expected
    assert resolv(pod(hostNetwork=True, dnsPolicy="ClusterFirstWithHostNet")) == expected


def test_host_policies_keep_the_hosts_file() -> None:
    assert resolv(pod(dnsPolicy="Default")) is None
    assert resolv(pod(hostNetwork=True)) is None  # ClusterFirst on the host network
    merged = resolv(pod(dnsPolicy="Default", dnsConfig={"searches": ["extra.example"]}))
    assert merged == ("search corp.example extra.example\nnameserver 10.255.255.53\n"
                      "options timeout:2\n")


def test_dns_config_adds_and_overrides() -> None:
    conf = resolv(pod(dnsConfig={"nameservers": ["10.0.0.53", "10.43.0.10"],
                                 "searches": ["a.example"],
                                 "options": [{"name": "ndots", "value": "2"},
                                             {"name": "edns0"}]}))
    assert conf == ("search shop.svc.cluster.local svc.cluster.local cluster.local "
                    "corp.example a.example\nnameserver 10.43.0.10\nnameserver 10.0.0.53\n"
                    "options ndots:2 edns0\n")
    none = resolv(pod(dnsPolicy="None", dnsConfig={
        "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"],
        "searches": [f"s{i}.example" for i in range(40)]}))
    assert none is not None
    lines = none.splitlines()
    assert [x for x in lines if x.startswith("nameserver")] == [
        "nameserver 1.1.1.1", "nameserver 2.2.2.2", "nameserver 3.3.3.3"]
    assert len(lines[0].split()) == 1 + 32  # at most 32 search domains
    assert resolv(pod(dnsPolicy="None")) == "\n"  # nothing configured: an empty file
