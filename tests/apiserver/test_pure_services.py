"""Service defaulting and address allocation as the Kubernetes apiserver does them: defaults,
ClusterIP from the service CIDR (requested, headless, taken, out of range), NodePorts and the
health-check NodePort, what an update keeps and what a type change releases, with
Kubernetes' field paths and messages; properties: never a taken or out-of-range value, and an
update keeps what the Service holds."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hexlane.apiserver.services import (
    allocate_service_addresses,
    default_service,
    kubernetes_service_ip,
    service_allocations,
    validate_service,
)
from hexlane.model.errors import InputError

CIDR = "10.43.0.0/16"


def svc(spec: dict, name: str = "web") -> dict:
    """A Service body; with several ports, unnamed ones get names as Kubernetes requires."""
    ports = spec.get("ports")
    if isinstance(ports, list) and len(ports) > 1:
        spec = {**spec, "ports": [
            {"name": f"p{p.get('port')}-{p.get('protocol', 'tcp')}".lower(), **p}
            if isinstance(p, dict) else p for p in ports]}
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def create(spec: dict, *, taken_ips: set[str] | None = None,
           taken_ports: set[int] | None = None, seed: int | None = None,
           cidr: str = CIDR) -> dict:
    """Create a Service; it gets one port (80) unless the spec lists its own."""
    spec = {"ports": [{"port": 80}], **spec}
    return allocate_service_addresses(default_service(svc(spec)), None, service_cidr=cidr,
                                      taken_ips=taken_ips or set(),
                                      taken_node_ports=taken_ports or set(), rng_seed=seed)


def update(old: dict, spec: dict, *, taken_ips: set[str] | None = None,
           taken_ports: set[int] | None = None) -> dict:
    spec = {"ports": [{"port": 80}], **spec}
    ips, ports = service_allocations(old)
    return allocate_service_addresses(default_service(svc(spec)), old, service_cidr=CIDR,
                                      taken_ips=(taken_ips or set()) | ips,
                                      taken_node_ports=(taken_ports or set()) | ports)


def problems(err: pytest.ExceptionInfo[InputError]) -> list[tuple[str, str]]:
    return [(p.path, p.message) for p in err.value.problems]


# --- defaulting -------------------------------------------------------------------------------


def test_defaults_of_a_minimal_service() -> None:
    out = default_service(svc({"selector": {"app": "web"}, "ports": [{"port": 80}]}))
    spec = out["spec"]
    assert spec["type"] == "ClusterIP"
    assert spec["ports"] == [{"port": 80, "protocol": "TCP", "targetPort": 80}]
    assert spec["sessionAffinity"] == "None"
    assert spec["internalTrafficPolicy"] == "Cluster"
    assert "externalTrafficPolicy" not in spec
    assert "allocateLoadBalancerNodePorts" not in spec


def test_defaults_of_a_load_balancer() -> None:
    out = default_service(svc({"type": "LoadBalancer", "externalTrafficPolicy": "Global",
                               "sessionAffinity": "ClientIP",
                               "ports": [{"port": 53, "protocol": "UDP", "targetPort": "dns"}]}))
    spec = out["spec"]
    assert spec["externalTrafficPolicy"] == "Cluster"  # the legacy spelling
    assert spec["allocateLoadBalancerNodePorts"] is True
    assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    assert spec["ports"] == [{"port": 53, "protocol": "UDP", "targetPort": "dns"}]


def test_defaults_keep_what_is_set_and_do_not_modify_the_input() -> None:
    body = svc({"type": "NodePort", "externalTrafficPolicy": "Local",
                "allocateLoadBalancerNodePorts": False, "internalTrafficPolicy": "Local",
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}})
    out = default_service(body)
    assert out["spec"]["externalTrafficPolicy"] == "Local"
    assert out["spec"]["internalTrafficPolicy"] == "Local"
    assert out["spec"]["sessionAffinityConfig"]["clientIP"]["timeoutSeconds"] == 60
    assert "protocol" not in str(body)


def test_external_name_gets_no_traffic_policies() -> None:
    spec = default_service(svc({"type": "ExternalName", "externalName": "db.example"}))["spec"]
    assert "internalTrafficPolicy" not in spec and "externalTrafficPolicy" not in spec
    out = allocate_service_addresses(default_service(svc(spec)), None, service_cidr=CIDR,
                                     taken_ips=set(), taken_node_ports=set())
    assert "clusterIP" not in out["spec"] and "ipFamilies" not in out["spec"]


def test_defaulting_survives_junk() -> None:
    out = default_service({"spec": {"ports": ["80", None, {"port": 1}]}})
    assert out["spec"]["ports"][2]["protocol"] == "TCP"
    assert default_service({})["spec"]["type"] == "ClusterIP"


# --- validation ---------------------------------------------------------------------------------


def test_validation_names_every_bad_field_like_kubernetes() -> None:
    body = default_service({"spec": {
        "type": "Balanced",
        "ports": [{"port": 0, "protocol": "tcp"},
                  {"name": "Web", "port": 80, "targetPort": 70000},
                  {"name": "dup", "port": 81, "targetPort": "http--x"},
                  {"name": "dup", "port": 81},
                  "80"],
        "sessionAffinity": "Sticky", "externalTrafficPolicy": "Nearest",
        "externalIPs": ["192.0.2.1", "nope"], "loadBalancerIP": "10.0.0.300",
        "selector": {"app": 1}, "allocateLoadBalancerNodePorts": "yes"}})
    got = [(p.path, p.message) for p in validate_service(body)]
    assert got == [
        ("spec.type", 'Unsupported value: "Balanced": supported values: "ClusterIP", '
         '"ExternalName", "LoadBalancer", "NodePort"'),
        ("spec.ports[0].name", "Required value"),
        ("spec.ports[0].port", "Invalid value: 0: must be between 1 and 65535, inclusive"),
        ("spec.ports[0].protocol", 'Unsupported value: "tcp": supported values: "SCTP", "TCP", '
         '"UDP"'),
        # targetPort defaults to port, so it is as wrong as port (Kubernetes says both).
        ("spec.ports[0].targetPort", "Invalid value: 0: must be between 1 and 65535, "
         "inclusive"),
        ("spec.ports[1].name", "Invalid value: \"Web\": a lowercase RFC 1123 label must consist "
         "of lower case alphanumeric characters or '-', and must start and end with an "
         "alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is "
         "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')"),
        ("spec.ports[1].targetPort", "Invalid value: 70000: must be between 1 and 65535, "
         "inclusive"),
        ("spec.ports[2].targetPort", 'Invalid value: "http--x": must be a port number or an '
         "IANA service name (at most 15 lower case letters, digits and '-', with a letter)"),
        ("spec.ports[3].name", 'Duplicate value: "dup"'),
        ("spec.ports[3]", 'Duplicate value: "81/TCP"'),
        ("spec.ports[4]", 'Invalid value: "80": must be an object'),
        ("spec.sessionAffinity", 'Unsupported value: "Sticky": supported values: "ClientIP", '
         '"None"'),
        ("spec.externalTrafficPolicy", 'Unsupported value: "Nearest": supported values: '
         '"Cluster", "Local"'),
        ("spec.externalIPs[1]", 'Invalid value: "nope": must be a valid IP address, (e.g. '
         "10.9.8.7 or 2001:db8::ffff)"),
        ("spec.loadBalancerIP", 'Invalid value: "10.0.0.300": must be a valid IP address, '
         "(e.g. 10.9.8.7 or 2001:db8::ffff)"),
        ("spec.selector", "Invalid value: {'app': 1}: must be a map of strings"),
        ("spec.allocateLoadBalancerNodePorts", 'Invalid value: "yes": must be a boolean'),
    ]
    with pytest.raises(InputError):
        allocate_service_addresses(body, None, service_cidr=CIDR, taken_ips=set(),
                                   taken_node_ports=set())


def test_validation_of_ports_presence_external_name_and_affinity() -> None:
    def paths(spec: dict) -> list[str]:
        return [p.path for p in validate_service(default_service({"spec": spec}))]

    assert paths({}) == ["spec.ports"]
    assert paths({"clusterIP": "None"}) == []
    assert paths({"type": "ExternalName"}) == ["spec.externalName"]
    assert paths({"ports": [{"port": 80}], "sessionAffinity": "ClientIP",
                  "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 90000}}}) == [
        "spec.sessionAffinityConfig.clientIP.timeoutSeconds"]
    assert paths({"ports": [{"port": 53, "protocol": "TCP", "name": "a"},
                            {"port": 53, "protocol": "UDP", "name": "b"}]}) == []
    assert validate_service({"spec": "x"}) == [validate_service({})[0]]


# --- ClusterIP ---------------------------------------------------------------------------------


def test_cluster_ip_lowest_free_and_families() -> None:
    first = kubernetes_service_ip(CIDR)
    assert first == "10.43.0.1"
    out = create({"ports": [{"port": 80}]}, taken_ips={first})
    spec = out["spec"]
    assert spec["clusterIP"] == "10.43.0.2" and spec["clusterIPs"] == ["10.43.0.2"]
    assert spec["ipFamilyPolicy"] == "SingleStack" and spec["ipFamilies"] == ["IPv4"]
    assert "nodePort" not in spec["ports"][0]


def test_first_address_is_never_chosen_even_when_not_listed_as_taken() -> None:
    assert create({})["spec"]["clusterIP"] == "10.43.0.2"


def test_default_kubernetes_service_may_request_the_first_address() -> None:
    out = create({"clusterIP": "10.43.0.1", "ports": [{"port": 443, "targetPort": 6443}]})
    assert out["spec"]["clusterIPs"] == ["10.43.0.1"]


def test_seeded_choice_is_deterministic_and_in_range() -> None:
    a = create({}, seed=7)["spec"]["clusterIP"]
    assert a == create({}, seed=7)["spec"]["clusterIP"]
    assert ipaddress.ip_address(a) in ipaddress.ip_network(CIDR)


def test_ipv6_service_cidr() -> None:
    out = create({"ports": [{"port": 80}]}, cidr="fd00:43::/108", seed=1)
    assert out["spec"]["ipFamilies"] == ["IPv6"]
    assert ipaddress.ip_address(out["spec"]["clusterIP"]) in ipaddress.ip_network(
        "fd00:43::/108")


def test_requested_cluster_ip_honoured_or_rejected() -> None:
    assert create({"clusterIP": "10.43.7.7"})["spec"]["clusterIPs"] == ["10.43.7.7"]
    with pytest.raises(InputError) as err:
        create({"clusterIP": "10.43.7.7"}, taken_ips={"10.43.7.7"})
    assert problems(err) == [("spec.clusterIPs[0]", 'Invalid value: "10.43.7.7": failed to '
                              "allocate IP 10.43.7.7: provided IP is already allocated")]
    with pytest.raises(InputError) as err:
        create({"clusterIP": "10.0.0.5"})
    assert problems(err) == [(
        "spec.clusterIPs[0]", 'Invalid value: "10.0.0.5": failed to allocate IP 10.0.0.5: the '
        "provided IP (10.0.0.5) is not in the valid range. The range of valid IPs is "
        "10.43.0.0/16")]
    for bad in ("10.43.0.0", "10.43.255.255", "fd00::1"):
        with pytest.raises(InputError):
            create({"clusterIP": bad})
    with pytest.raises(InputError) as err:
        create({"clusterIP": "ten"})
    assert problems(err)[0][0] == "spec.clusterIPs[0]"
    with pytest.raises(InputError) as err:
        create({"clusterIP": "10.43.0.9", "clusterIPs": ["10.43.0.8"]})
    assert "must match clusterIP" in problems(err)[0][1]


def test_headless_services() -> None:
    out = create({"clusterIP": "None", "selector": {"app": "db"}})
    assert out["spec"]["clusterIPs"] == ["None"]
    assert out["spec"]["ipFamilyPolicy"] == "SingleStack"
    bare = create({"clusterIP": "None", "ports": []})
    assert bare["spec"]["ipFamilyPolicy"] == "RequireDualStack"
    assert bare["spec"]["ipFamilies"] == ["IPv4"]
    assert service_allocations(bare) == (set(), set())


def test_family_requests_on_a_single_stack_cluster() -> None:
    assert create({"ipFamilyPolicy": "PreferDualStack",
                   "ipFamilies": ["IPv4", "IPv6"]})["spec"]["ipFamilies"] == ["IPv4"]
    with pytest.raises(InputError) as err:
        create({"ipFamilyPolicy": "RequireDualStack"})
    assert problems(err) == [("spec.ipFamilyPolicy", 'Invalid value: "RequireDualStack": this '
                              "cluster is not configured for dual-stack services")]
    with pytest.raises(InputError) as err:
        create({"ipFamilies": ["IPv6"]})
    assert problems(err) == [("spec.ipFamilies[0]",
                              'Invalid value: "IPv6": not configured on this cluster')]
    with pytest.raises(InputError) as err:
        create({"ipFamilyPolicy": "Sometimes", "ipFamilies": ["IPv5"]})
    assert problems(err)[0] == ("spec.ipFamilyPolicy", 'Unsupported value: "Sometimes": '
                                'supported values: "PreferDualStack", "RequireDualStack", '
                                '"SingleStack"')


def test_update_keeps_the_cluster_ip_and_it_may_not_change() -> None:
    old = create({"ports": [{"port": 80}]}, seed=3)
    ip = old["spec"]["clusterIP"]
    new = update(old, {"ports": [{"port": 81}]})  # a PUT without clusterIP
    assert new["spec"]["clusterIPs"] == [ip]
    with pytest.raises(InputError) as err:
        update(old, {"clusterIP": "10.43.9.9"})
    assert problems(err) == [("spec.clusterIPs[0]", 'Invalid value: []string{"10.43.9.9"}: '
                              "may not change once set")]


# --- NodePorts ---------------------------------------------------------------------------------


def test_node_ports_for_node_port_and_load_balancer() -> None:
    out = create({"type": "NodePort", "ports": [{"port": 80}, {"port": 53, "protocol": "UDP"}]},
                 taken_ports={30000})
    assert [p["nodePort"] for p in out["spec"]["ports"]] == [30001, 30002]
    lb = create({"type": "LoadBalancer", "ports": [{"port": 80}]})
    assert lb["spec"]["ports"][0]["nodePort"] == 30000
    assert "healthCheckNodePort" not in lb["spec"]


def test_no_node_ports_when_load_balancer_opts_out_but_requests_are_kept() -> None:
    out = create({"type": "LoadBalancer", "allocateLoadBalancerNodePorts": False,
                  "ports": [{"port": 80}, {"port": 443, "nodePort": 31443}]})
    assert "nodePort" not in out["spec"]["ports"][0]
    assert out["spec"]["ports"][1]["nodePort"] == 31443


def test_requested_node_ports_honoured_or_rejected() -> None:
    out = create({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080}]})
    assert out["spec"]["ports"][0]["nodePort"] == 30080
    with pytest.raises(InputError) as err:
        create({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080},
                                              {"port": 81, "nodePort": 80},
                                              {"port": 82, "nodePort": 30082}]},
               taken_ports={30080})
    assert problems(err) == [
        ("spec.ports[0].nodePort", "Invalid value: 30080: provided port is already allocated"),
        ("spec.ports[1].nodePort", "Invalid value: 80: provided port is not in the valid "
         "range. The range of valid ports is 30000-32767"),
    ]
    with pytest.raises(InputError) as err:
        create({"type": "NodePort", "ports": [{"port": 80, "nodePort": 30080},
                                              {"port": 81, "nodePort": 30080}]})
    assert problems(err) == [("spec.ports[1].nodePort", "Duplicate value: 30080")]
    # The same node port for TCP and UDP of one port number is fine.
    both = create({"type": "NodePort", "ports": [
        {"port": 53, "protocol": "TCP", "nodePort": 30053},
        {"port": 53, "protocol": "UDP", "nodePort": 30053}]})
    assert service_allocations(both)[1] == {30053}


def test_node_port_on_cluster_ip_is_forbidden() -> None:
    with pytest.raises(InputError) as err:
        create({"ports": [{"port": 80, "nodePort": 30080}]})
    assert problems(err) == [("spec.ports[0].nodePort",
                              "Forbidden: may not be used when `type` is 'ClusterIP'")]


def test_health_check_node_port_for_local_load_balancers() -> None:
    out = create({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                  "ports": [{"port": 80}]})
    hc = out["spec"]["healthCheckNodePort"]
    assert hc != out["spec"]["ports"][0]["nodePort"]
    assert service_allocations(out)[1] == {hc, out["spec"]["ports"][0]["nodePort"]}
    # NodePort services have no health-check port, as in Kubernetes' needsHCNodePort.
    np = create({"type": "NodePort", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]})
    assert "healthCheckNodePort" not in np["spec"]
    with pytest.raises(InputError) as err:
        create({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                "healthCheckNodePort": 31999}, taken_ports={31999})
    assert problems(err) == [("spec.healthCheckNodePort",
                              "Invalid value: 31999: provided port is already allocated")]
    with pytest.raises(InputError) as err:
        create({"type": "LoadBalancer", "healthCheckNodePort": 31999})
    assert problems(err)[0][0] == "spec.healthCheckNodePort"


def test_update_keeps_node_ports_and_type_change_releases_them() -> None:
    old = create({"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                  "ports": [{"port": 80}, {"port": 443}]}, seed=5)
    ports = [p["nodePort"] for p in old["spec"]["ports"]]
    # kubectl apply of the same manifest (no nodePorts in it) keeps them.
    same = update(old, {"type": "LoadBalancer", "externalTrafficPolicy": "Local",
                        "ports": [{"port": 443}, {"port": 80}]})
    assert [p["nodePort"] for p in same["spec"]["ports"]] == ports[::-1]
    assert same["spec"]["healthCheckNodePort"] == old["spec"]["healthCheckNodePort"]
    # A strategic merge of type: ClusterIP carries the old nodePorts along; they are dropped.
    carried = {**old["spec"], "type": "ClusterIP"}
    demoted = update(old, carried)
    spec = demoted["spec"]
    assert all("nodePort" not in p for p in spec["ports"])
    assert "healthCheckNodePort" not in spec
    assert "allocateLoadBalancerNodePorts" not in spec
    assert "externalTrafficPolicy" not in spec
    assert spec["clusterIP"] == old["spec"]["clusterIP"]
    assert service_allocations(demoted)[1] == set()


def test_update_to_external_name_drops_the_cluster_ip() -> None:
    old = create({"ports": [{"port": 80}]})
    out = update(old, {**old["spec"], "type": "ExternalName", "externalName": "x.example"})
    assert "clusterIP" not in out["spec"] and "clusterIPs" not in out["spec"]


# --- properties --------------------------------------------------------------------------------

small_cidrs = st.sampled_from(["10.43.0.0/28", "10.43.0.0/27", "192.168.5.0/29"])
port_numbers = st.integers(1, 65535)
few = settings(max_examples=60, deadline=None)


@few
@given(cidr=small_cidrs, data=st.data(), seed=st.none() | st.integers(0, 1000))
def test_cluster_ip_is_never_taken_and_always_inside(cidr: str, data: st.DataObject,
                                                     seed: int | None) -> None:
    net = ipaddress.ip_network(cidr)
    hosts = [str(h) for h in net.hosts()]
    taken = set(data.draw(st.lists(st.sampled_from(hosts), max_size=len(hosts))))
    try:
        out = create({}, taken_ips=taken, seed=seed, cidr=cidr)
    except InputError as err:
        # Only when nothing is left besides the network, first and broadcast addresses.
        assert set(hosts[1:]) <= taken
        assert "range is full" in str(err)
        return
    ip = out["spec"]["clusterIP"]
    assert ip not in taken
    assert ipaddress.ip_address(ip) in net
    assert ip not in (str(net.network_address), str(net.network_address + 1),
                      str(net.broadcast_address))


@few
@given(taken=st.sets(st.integers(30000, 30040), max_size=40),
       count=st.integers(1, 6), seed=st.none() | st.integers(0, 1000),
       local=st.booleans())
def test_node_ports_never_taken_unique_and_in_range(taken: set[int], count: int,
                                                    seed: int | None, local: bool) -> None:
    spec = {"type": "LoadBalancer", "ports": [{"port": 1000 + i} for i in range(count)],
            "externalTrafficPolicy": "Local" if local else "Cluster"}
    out = create(spec, taken_ports=taken, seed=seed)
    _, held = service_allocations(out)
    assert len(held) == count + (1 if local else 0)
    assert not held & taken
    assert all(30000 <= p <= 32767 for p in held)


@few
@given(seed=st.integers(0, 1000), ports=st.lists(port_numbers, min_size=1, max_size=4,
                                                 unique=True),
       new_ports=st.lists(port_numbers, min_size=1, max_size=4, unique=True),
       svc_type=st.sampled_from(["ClusterIP", "NodePort", "LoadBalancer"]))
def test_update_keeps_the_ip_and_the_node_ports_of_kept_ports(
        seed: int, ports: list[int], new_ports: list[int], svc_type: str) -> None:
    old = create({"type": svc_type, "ports": [{"port": p} for p in ports]}, seed=seed)
    new = update(old, {"type": svc_type, "ports": [{"port": p} for p in new_ports]},
                 taken_ips={"10.43.0.2", "10.43.0.3"}, taken_ports={30000, 30001})
    assert new["spec"]["clusterIP"] == old["spec"]["clusterIP"]
    old_by_port = {p["port"]: p.get("nodePort") for p in old["spec"]["ports"]}
    for port in new["spec"]["ports"]:
        if port["port"] in old_by_port:
            assert port.get("nodePort") == old_by_port[port["port"]]
    _, held = service_allocations(new)
    assert not held & {30000, 30001}


svc_junk = st.recursive(
    st.none() | st.booleans() | st.integers(-1, 40000)
    | st.sampled_from(["", "None", "10.43.0.5", "LoadBalancer", "NodePort", "ExternalName",
                       "Local", "IPv4", "IPv6", "x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["type", "clusterIP", "clusterIPs", "ports", "port", "nodePort",
                         "protocol", "ipFamilies", "ipFamilyPolicy", "externalTrafficPolicy",
                         "healthCheckNodePort", "allocateLoadBalancerNodePorts", "selector"]),
        inner, max_size=5),
    max_leaves=20)


@few
@given(spec=svc_junk, old_spec=st.none() | svc_junk)
def test_any_service_body_is_allocated_or_rejected_with_input_error(spec: object,
                                                                    old_spec: object) -> None:
    old = None if old_spec is None else {"spec": old_spec}
    try:
        out = allocate_service_addresses(default_service({"spec": spec}), old,
                                         service_cidr=CIDR, taken_ips={"10.43.0.5"},
                                         taken_node_ports={30000})
    except InputError as err:
        assert err.problems and all(p.path.startswith("spec") for p in err.problems)
        return
    ips, _ = service_allocations(out)
    assert all(ipaddress.ip_address(ip) in ipaddress.ip_network(CIDR) for ip in ips)
