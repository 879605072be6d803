"""`hexlane connectivity test`, decided (pure): what to deploy, which cells to probe, what
each cell must see, and the verdict on what the probes saw.

The test deploys, in a namespace of its own (`hexlane-conncheck`):

- `echo-<node>`: a Deployment of two echo pods pinned to each node (nodeSelector
  `kubernetes.io/hostname`), containerPorts 8080/TCP and 5353/UDP (the lab's workload answers
  `/whoami` with `{pod, node, client_ip, client_port}` and echoes UDP as `<pod> <payload>`);
- `client-<node>`: a pod that is not a backend, on node1 and on the second node;
- `host-<node>`: a `hostNetwork` pod on the second node, ports 18080/TCP and 15353/UDP: a
  backend at the node's LAN address, outside the pod CIDR;
- Services, each with TCP 80 and UDP 53 (`VARIANTS`): the default one (LoadBalancer with an
  externalIP), one per forwarding mode and per algorithm (Cilium's per-Service annotations),
  eTP=Local and iTP=Local, two for the host-network backend, and `echo-remote` whose
  backends are the echo pods of the second node only (behind the tunnel from node1);
- a CiliumLoadBalancerIPPool selecting only this namespace's Services, with a small range at
  the top of the lab's LAN (`address_plan`); externalIPs come from just above it.

A cell is source x destination x protocol x Service. Sources: an echo pod on node1 (a
backend: hairpin, it may reach itself), a client pod on node1, a client pod on the second
node, node1 itself and the LAN client. Destinations: the ClusterIP, the NodePort on node1's
and on the second node's address, the LoadBalancer IP and the externalIP. Each cell expects
(`Expect`) an answer to every connection from an allowed set of backends, every one of them
reached, and where it must be, the source's own address seen by the backend; or, for
eTP=Local through a node without a local backend, no answer at all; or it is listed as not
testable (a feature the lab's values turn off, or one hexlane has not built) or not routable
by design, with the reason.

Beyond those echo probes (`Cell.check`): the `kubernetes` Service (default/kubernetes, whose
backend is the apiserver at the control plane's host address, outside the pod CIDR and no
node) probed with HTTPS from a backend pod on node1, a pod on the second node and node1, any
HTTP status counting as an answer (`CHECK_HTTPS`); and uploads of `UPLOAD_BYTES` (a POST
to `/whoami`, which says how many body bytes it received) from the client through node1's
NodePort to `echo-remote` and to the default Service, and from a pod on node1 to
`echo-remote`'s ClusterIP, each holding when every upload gets HTTP 200 and the backend got
every byte (`CHECK_UPLOAD`: GSO packets into the tunnel must not be dropped).

`judge` turns what a cell's probes saw (`ProbeResult`, parsed from curl's and the UDP probe's
output by `parse_curl`, `parse_https` and `parse_udp`) into a `Verdict`; `render_table` and
`summary` print them. Nothing here does I/O: `hexlane.lab.connectivity` deploys, probes
and cleans up.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, ip_network
from typing import Any

from hexlane.config import Values
from hexlane.model.errors import InputError, Problem

from .podspec import labels_of, name_of, node_name, pod_ip

NAMESPACE = "hexlane-conncheck"
POOL_NAME = "hexlane-conncheck"
MANAGED_BY = {"app.kubernetes.io/managed-by": "hexlane-connectivity-test"}
NODE_LABEL = "kubernetes.io/hostname"
REPLICAS_PER_NODE = 2

TCP = "TCP"
UDP = "UDP"
PROTOCOLS = (TCP, UDP)
SERVICE_PORTS = {TCP: 80, UDP: 53}
ECHO_PORTS = {TCP: 8080, UDP: 5353}
HOST_PORTS = {TCP: 18080, UDP: 15353}

MODE_ANNOTATION = "service.cilium.io/forwarding-mode"
ALGORITHM_ANNOTATION = "service.cilium.io/lb-algorithm"

# Destinations.
CLUSTER_IP = "ClusterIP"
NODE_PORT = "NodePort"
LOAD_BALANCER = "LoadBalancer"
EXTERNAL_IP = "externalIP"

# What a cell expects.
ANSWER = "answer"
NO_ANSWER = "no answer"
NOT_TESTABLE = "not testable"
NOT_ROUTABLE = "not routable"

# Verdicts.
PASS = "pass"
FAIL = "FAIL"

# What a cell's probes check (`Cell.check`), and what the table's PROTO column says for it.
CHECK_ECHO = "echo"  # curl GET /whoami (TCP), the UDP probe: who answered, seeing which address
CHECK_HTTPS = "https"  # curl -k GET https://<ClusterIP>/version: any HTTP status answers
CHECK_UPLOAD = "upload"  # curl POST of UPLOAD_BYTES to /whoami: HTTP 200 and every byte received
CHECK_LABELS = {CHECK_HTTPS: "HTTPS", CHECK_UPLOAD: "POST"}
CHECK_CONNECTIONS = {CHECK_HTTPS: 10, CHECK_UPLOAD: 5}  # at most (TLS and uploads cost more)
CURL_MAX_TIME = {CHECK_ECHO: 3, CHECK_HTTPS: 3, CHECK_UPLOAD: 5}  # curl -m, seconds
UPLOAD_BYTES = 200_000

# The `kubernetes` Service: its backend is the apiserver on the control-plane host.
KUBERNETES = "default/kubernetes"
KUBERNETES_PATH = "/api/v1/namespaces/default/services/kubernetes"
API_GROUP = "apiserver"
API_HOST = "cp"  # where the apiserver runs (the lab's exec target; not a node)

# A cell checks that every allowed backend was reached only when missing one by chance is
# this unlikely (n backends, k answers: n * ((n-1)/n)^k).
MISS_PROBABILITY = 1e-3

ROUTED_NOTE = "routed via node1 by the test: no L2 announcements yet"

# `--kubeconfig`: the probe pods' identity, the plan they read, the results they write.
SERVICE_ACCOUNT = "conncheck"
PLAN_CONFIGMAP = "conncheck-plan"
RESULT_PREFIX = "conncheck-result-"

# What hexlane has not built, so cells needing it are "not testable" (docs/service-lb.md,
# "Not built yet"). Remove an entry when the datapath serves it.
# --- the lab ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LabFacts:
    """What the matrix depends on: the nodes, the LAN and the lab's effective values."""

    nodes: tuple[str, ...]  # node1..nodeN
    node_ips: tuple[str, ...]  # in the same order
    client_ip: str  # "" with --kubeconfig
    lan: IPv4Network | None  # None with --kubeconfig
    routing_mode: str = "tunnel"
    lb_mode: str = "snat"
    lb_algorithm: str = "random"
    mode_annotation: bool = False
    algorithm_annotation: bool = False
    node_port: bool = True
    external_ips: bool = False
    api_server: str = "10.0.0.10"  # the control-plane host: the `kubernetes` Service's backend
    # `--kubeconfig`: the probes run in probe pods of hexlane's `image` (pod sources only),
    # and LoadBalancer cells are probed only when the cluster assigned IPs (`lb_ips`).
    in_pods: bool = False
    image: str = ""
    lb_ips: bool = True

    @classmethod
    def from_values(cls, values: Values, *, nodes: Sequence[str], node_ips: Sequence[str],
                    client_ip: str, lan: IPv4Network | None, api_server: str) -> LabFacts:
        return cls(
            nodes=tuple(nodes), node_ips=tuple(node_ips), client_ip=client_ip, lan=lan,
            api_server=api_server,
            routing_mode=values.routing_mode, lb_mode=values.load_balancer.mode,
            lb_algorithm=values.load_balancer.algorithm,
            mode_annotation=bool(values.get("bpf.lbModeAnnotation", False)),
            algorithm_annotation=bool(values.get("bpf.lbAlgorithmAnnotation", False)),
            node_port=values.node_port_enabled, external_ips=values.external_ips_enabled)

    @property
    def first(self) -> str:
        return self.nodes[0]

    @property
    def second(self) -> str:
        """The other node of the matrix (its name even when the lab has only one)."""
        return self.nodes[1] if len(self.nodes) > 1 else "node2"

    def has(self, node: str) -> bool:
        return node in self.nodes

    def node_ip(self, node: str) -> str:
        return self.node_ips[self.nodes.index(node)]

    @property
    def client_nodes(self) -> tuple[str, ...]:
        """Where the non-backend client pods go."""
        return tuple(n for n in (self.first, self.second) if self.has(n))


@dataclass(frozen=True)
class AddressPlan:
    """The LB-IPAM pool's range and the externalIP, at the top of the LAN."""

    pool_start: IPv4Address
    pool_stop: IPv4Address
    external_ip: IPv4Address


AddressRange = tuple[IPv4Address, IPv4Address]  # first, last (inclusive)


def address_plan(lan: IPv4Network, highest_used: IPv4Address,
                 taken: Sequence[AddressRange] = ()) -> AddressPlan:
    """Eight pool addresses and the externalIP right after them, in the highest 16-address
    slice of the LAN that is above `highest_used` (the last node) and overlaps none of the
    `taken` ranges (other pools): 10.0.0.240-247 and 10.0.0.248 for 10.0.0.0/24 and no other
    pool there. InputError when there is no such slice."""
    top = int(lan.broadcast_address)
    while top - 15 > max(int(highest_used), int(lan.network_address)):
        start, stop, external = IPv4Address(top - 15), IPv4Address(top - 8), IPv4Address(
            top - 7)
        if not any(int(first) <= int(external) and int(start) <= int(last)
                   for first, last in taken):
            return AddressPlan(start, stop, external)
        top -= 16
    raise InputError(Problem(
        f"the lab's LAN {lan} has no 16 free addresses above {highest_used} (outside the "
        "other LoadBalancer pools) for the test's pool and externalIP", "--lab"))


def pool_ranges(pool: Mapping[str, Any]) -> list[AddressRange]:
    """The IPv4 ranges a CiliumLoadBalancerIPPool object holds (`blocks` or the older
    `cidrs`: `cidr` or `start`/`stop`); what does not parse is skipped."""
    spec = pool.get("spec") or {}
    out: list[AddressRange] = []
    for block in [*(spec.get("blocks") or []), *(spec.get("cidrs") or [])]:
        if not isinstance(block, Mapping):
            continue
        try:
            if block.get("cidr"):
                net = ip_network(str(block["cidr"]), strict=False)
                if isinstance(net, IPv4Network):
                    out.append((net.network_address, net.broadcast_address))
            elif block.get("start"):
                first = IPv4Address(str(block["start"]))
                out.append((first, IPv4Address(str(block.get("stop") or first))))
        except ValueError:
            continue
    return out


# --- what is deployed ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One Service of the test and what makes it different."""

    name: str
    label: str  # in the table
    type: str  # LoadBalancer | NodePort
    group: str = "echo"  # the backends it selects: "echo" pods or the "host" pod
    mode: str | None = None  # service.cilium.io/forwarding-mode
    algorithm: str | None = None  # service.cilium.io/lb-algorithm
    etp_local: bool = False
    itp_local: bool = False
    external_ips: bool = False
    only_second: bool = False  # its backends: the echo pods on the second node only


VARIANTS = (
    Variant("echo", "default", LOAD_BALANCER, external_ips=True),
    Variant("echo-snat", "mode snat", LOAD_BALANCER, mode="snat"),
    Variant("echo-dsr", "mode dsr", LOAD_BALANCER, mode="dsr"),
    Variant("echo-hybrid", "mode hybrid", LOAD_BALANCER, mode="hybrid"),
    Variant("echo-random", "algorithm random", NODE_PORT, algorithm="random"),
    Variant("echo-maglev", "algorithm maglev", NODE_PORT, algorithm="maglev"),
    Variant("echo-etp", "eTP=Local", LOAD_BALANCER, etp_local=True),
    Variant("echo-itp", "iTP=Local", NODE_PORT, itp_local=True),
    Variant("echo-host", "hostNetwork", NODE_PORT, group="host"),
    Variant("echo-host-etp", "hostNetwork, eTP=Local", NODE_PORT, group="host",
            etp_local=True),
    Variant("echo-remote", "backends on node2 only", NODE_PORT, only_second=True),
)
VARIANT_BY_NAME = {v.name: v for v in VARIANTS}


def _meta(name: str, labels: Mapping[str, str] | None = None, *,
          namespaced: bool = True) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": {**MANAGED_BY, **(labels or {})}}
    if namespaced:
        meta["namespace"] = NAMESPACE
    return meta


def serve_command(ports: Mapping[str, int] | None, *, probes: bool) -> list[str]:
    """The command of a `--kubeconfig` probe pod (hexlane's image): the echo server on
    `ports`, and with `probes` the probing of the cells the plan gives the pod."""
    argv = ["hexlane", "connectivity", "serve"]
    for proto, port in (ports or {}).items():
        argv += ["--tcp" if proto == TCP else "--udp", str(port)]
    if probes:
        argv += ["--plan", PLAN_CONFIGMAP]
    return argv


def _container(facts: LabFacts, ports: Mapping[str, int] | None, *, probes: bool
               ) -> dict[str, Any]:
    """The lab's echo workload (`--lab`: the lab kubelet runs it for any image), or hexlane's
    image running `serve_command` (`--kubeconfig`)."""
    container: dict[str, Any] = {"name": "echo", "image": "hexlane/workload"}
    if facts.in_pods:
        container = {
            "name": "echo", "image": facts.image, "imagePullPolicy": "IfNotPresent",
            "command": serve_command(ports, probes=probes),
            "env": [{"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}
                    for name, path in (("POD_NAME", "metadata.name"),
                                       ("POD_NAMESPACE", "metadata.namespace"))]}
        if ports and TCP in ports:
            container["readinessProbe"] = {"tcpSocket": {"port": ports[TCP]},
                                           "periodSeconds": 2}
    if ports:
        container["ports"] = [{"name": "tcp" if proto == TCP else "udp",
                               "containerPort": port, "protocol": proto}
                              for proto, port in ports.items()]
    return container


def _pod_spec(facts: LabFacts, node: str, ports: Mapping[str, int] | None, *,
              host_network: bool = False, probes: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"nodeSelector": {NODE_LABEL: node},
                            "terminationGracePeriodSeconds": 1,
                            "containers": [_container(facts, ports, probes=probes)]}
    if facts.in_pods:
        spec["serviceAccountName"] = SERVICE_ACCOUNT
        spec["automountServiceAccountToken"] = probes
    if host_network:
        spec["hostNetwork"] = True
    return spec


def access_objects() -> list[dict[str, Any]]:
    """The probe pods' identity and what it may do, in the test's namespace only: read the
    plan, create result ConfigMaps (least privilege: nothing else, nowhere else)."""
    rbac = "rbac.authorization.k8s.io/v1"
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _meta(SERVICE_ACCOUNT)},
        {"apiVersion": rbac, "kind": "Role", "metadata": _meta(SERVICE_ACCOUNT),
         "rules": [{"apiGroups": [""], "resources": ["configmaps"],
                    "resourceNames": [PLAN_CONFIGMAP], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create"]}]},
        {"apiVersion": rbac, "kind": "RoleBinding", "metadata": _meta(SERVICE_ACCOUNT),
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                     "name": SERVICE_ACCOUNT},
         "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT,
                       "namespace": NAMESPACE}]},
    ]


def manifests(facts: LabFacts, addresses: AddressPlan | None) -> list[dict[str, Any]]:
    """Every object the test creates, in the order to create them (namespace first). No
    `addresses` (`--kubeconfig`): no pool and no externalIP; the probe pods' ServiceAccount,
    Role and RoleBinding instead."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": NAMESPACE, "labels": dict(MANAGED_BY)}}]
    if addresses is not None:
        objects.append(
            {"apiVersion": "cilium.io/v2alpha1", "kind": "CiliumLoadBalancerIPPool",
             "metadata": _meta(POOL_NAME, namespaced=False),
             "spec": {"blocks": [{"start": str(addresses.pool_start),
                                  "stop": str(addresses.pool_stop)}],
                      "serviceSelector": {"matchLabels": {
                          "io.kubernetes.service.namespace": NAMESPACE}}}})
    if facts.in_pods:
        objects += access_objects()
    for node in facts.nodes:
        labels = {"app": "echo", "conncheck-node": node}
        objects.append({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": _meta(f"echo-{node}", labels),
            "spec": {"replicas": REPLICAS_PER_NODE,
                     "selector": {"matchLabels": labels},
                     "template": {"metadata": {"labels": labels},
                                  "spec": _pod_spec(facts, node, ECHO_PORTS,
                                                    probes=True)}}})
    for node in facts.client_nodes:
        objects.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": _meta(f"client-{node}", {"app": "client"}),
                        "spec": _pod_spec(facts, node, None, probes=True)})
    if facts.has(facts.second):
        objects.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": _meta(host_pod_name(facts), {"app": "echo-host"}),
                        "spec": _pod_spec(facts, facts.second, HOST_PORTS,
                                          host_network=True)})
    for v in VARIANTS:
        annotations = {}
        if v.mode:
            annotations[MODE_ANNOTATION] = v.mode
        if v.algorithm:
            annotations[ALGORITHM_ANNOTATION] = v.algorithm
        meta = _meta(v.name, {"conncheck-variant": v.name})
        if annotations:
            meta["annotations"] = annotations
        targets = HOST_PORTS if v.group == "host" else ECHO_PORTS
        selector = {"app": "echo-host" if v.group == "host" else "echo"}
        if v.only_second:
            selector["conncheck-node"] = facts.second
        spec: dict[str, Any] = {
            "type": v.type,
            "selector": selector,
            "ports": [{"name": "tcp" if proto == TCP else "udp", "protocol": proto,
                       "port": SERVICE_PORTS[proto], "targetPort": targets[proto]}
                      for proto in PROTOCOLS]}
        if v.etp_local:
            spec["externalTrafficPolicy"] = "Local"
        if v.itp_local:
            spec["internalTrafficPolicy"] = "Local"
        if v.external_ips and addresses is not None:
            spec["externalIPs"] = [str(addresses.external_ip)]
        objects.append({"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec})
    return objects


def host_pod_name(facts: LabFacts) -> str:
    return f"host-{facts.second}"


def expected_pods(facts: LabFacts) -> int:
    """How many pods the test's namespace holds once everything runs."""
    return (REPLICAS_PER_NODE * len(facts.nodes) + len(facts.client_nodes)
            + (1 if facts.has(facts.second) else 0))


# --- sources, destinations, cells ---------------------------------------------------------------


@dataclass(frozen=True)
class Source:
    """Where a cell's probes run from."""

    key: str  # "backend@node1", "pod@node2", "node1", "client"
    kind: str  # "pod" | "node" | "client"
    node: str | None  # the node it is on (None for the client)
    what: str
    hairpin: bool = False


def sources(facts: LabFacts) -> list[Source]:
    one, two = facts.first, facts.second
    return [
        Source(f"backend@{one}", "pod", one, f"an echo pod on {one} (a backend: hairpin)",
               hairpin=True),
        Source(f"pod@{one}", "pod", one, f"client-{one}, not a backend, on {one}"),
        Source(f"pod@{two}", "pod", two, f"client-{two}, not a backend, on {two}"),
        Source(one, "node", one, f"{one}'s own network namespace"),
        Source("client", "client", None, "the LAN client (a laptop), through the LAN"),
    ]


@dataclass(frozen=True)
class Dest:
    kind: str  # ClusterIP | NodePort | LoadBalancer | externalIP
    node: str | None = None  # NodePort: whose address

    def __str__(self) -> str:
        return f"{self.kind} {self.node}" if self.node else self.kind


@dataclass(frozen=True)
class Expect:
    """What a cell must see.

    `kind` ANSWER: every connection answered by a backend of `group` on `nodes` (None: any
    node), every one of those reached, and with `keep_source` the source's own address seen
    by the backend (TCP: UDP answers do not tell). NO_ANSWER: nothing answers. NOT_TESTABLE
    and NOT_ROUTABLE: not probed; `why` says why.
    """

    kind: str
    group: str = "echo"
    nodes: tuple[str, ...] | None = None
    keep_source: bool = False
    why: str = ""

    def describe(self) -> str:
        if self.kind != ANSWER:
            return f"{self.kind}: {self.why}" if self.why else self.kind
        who = "the host-network pod" if self.group == "host" else (
            "the apiserver" if self.group == API_GROUP else
            "any echo pod" if self.nodes is None else
            "echo pods on " + ", ".join(self.nodes))
        return f"answers from {who}" + (", source address kept" if self.keep_source else "")


@dataclass(frozen=True)
class Cell:
    source: str
    service: str
    dest: Dest
    proto: str  # the Service port's protocol
    expect: Expect
    note: str = ""
    check: str = CHECK_ECHO

    @property
    def probe(self) -> str:
        """What the table's PROTO column says: TCP or UDP for the echo probes, else the
        check (HTTPS, POST)."""
        return self.proto if self.check == CHECK_ECHO else CHECK_LABELS[self.check]

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.source, self.service, str(self.dest), self.probe)

    def connections(self, wanted: int) -> int:
        """How many connections the cell's probes open when `wanted` are asked for."""
        return min(wanted, CHECK_CONNECTIONS.get(self.check, wanted))

    @property
    def probed(self) -> bool:
        return self.expect.kind in (ANSWER, NO_ANSWER)


def _destinations(src: Source, v: Variant, facts: LabFacts) -> list[Dest]:
    """The destinations where `v` matters for `src` (every one for the default Service)."""
    one, two = facts.first, facts.second
    own = Dest(NODE_PORT, src.node) if src.node else None
    other = Dest(NODE_PORT, two if src.node == one else one)
    everything = [Dest(CLUSTER_IP), Dest(NODE_PORT, one), Dest(NODE_PORT, two),
                  Dest(LOAD_BALANCER), Dest(EXTERNAL_IP)]
    if v.name == "echo":
        return everything
    if v.only_second:
        return []  # its cells are uploads (`_special_cells`)
    client = src.kind == "client"
    if v.mode:  # the forwarding mode acts on traffic that enters a node from the LAN
        return [Dest(NODE_PORT, one), Dest(NODE_PORT, two), Dest(LOAD_BALANCER)] if client \
            else [other]
    if v.algorithm:
        return [Dest(NODE_PORT, one), Dest(NODE_PORT, two)] if client else [Dest(CLUSTER_IP)]
    if v.group == "host":
        if v.etp_local:
            return [Dest(NODE_PORT, one), Dest(NODE_PORT, two)] if client else []
        if client:
            return [Dest(NODE_PORT, one), Dest(NODE_PORT, two)]
        if src.kind == "pod" and not src.hairpin:
            assert own is not None
            return [Dest(CLUSTER_IP), own]
        return [Dest(CLUSTER_IP)] if src.kind == "node" else []
    if v.etp_local:
        if client:
            return [Dest(NODE_PORT, one), Dest(NODE_PORT, two), Dest(LOAD_BALANCER)]
        if src.kind == "node":
            return [Dest(CLUSTER_IP), other]
        return [Dest(LOAD_BALANCER), other]
    if v.itp_local:
        return [Dest(NODE_PORT, one), Dest(NODE_PORT, two)] if client else [Dest(CLUSTER_IP)]
    return everything


def effective_mode(v: Variant, facts: LabFacts, proto: str) -> str:
    """How traffic from the LAN reaches a backend on another node: "snat" or "dsr"."""
    mode = v.mode or facts.lb_mode
    return "dsr" if mode == "dsr" or (mode == "hybrid" and proto == TCP) else "snat"


PODS_ONLY = ("--kubeconfig probes from pods only (node and LAN-client sources need the lab's "
             "network namespaces: --lab)")
NO_EXTERNAL_IP = ("--kubeconfig claims no externalIP on a cluster whose addresses it does not "
                  "know (--lab picks one on the lab's LAN)")
NO_LB_IP = ("no LoadBalancer IP was assigned to the test's Services (no LB-IPAM pool selects "
            "them)")


def _not_testable(src: Source, v: Variant, dest: Dest, facts: LabFacts) -> str:
    """Why the cell cannot be tested on this lab ("" when it can)."""
    if facts.in_pods and src.kind != "pod":
        return PODS_ONLY
    if facts.in_pods and dest.kind == EXTERNAL_IP:
        return NO_EXTERNAL_IP
    for node in (src.node, dest.node):
        if node is not None and not facts.has(node):
            return f"the lab has no {node} (lab up --nodes 2 or more)"
    if v.group == "host" and not facts.has(facts.second):
        return "the host-network backend goes on a second node; the lab has one"
    if v.only_second and not facts.has(facts.second):
        return "the Service's backends go on a second node; the lab has one"
    if dest.kind in (NODE_PORT, LOAD_BALANCER) and not facts.node_port:
        return f"{dest.kind} is off (kubeProxyReplacement: false, nodePort.enabled: false)"
    if dest.kind == EXTERNAL_IP and not facts.external_ips:
        return "externalIPs are off (externalIPs.enabled: false, kubeProxyReplacement: false)"
    if dest.kind == LOAD_BALANCER and not facts.lb_ips:
        return NO_LB_IP
    if v.mode and not facts.mode_annotation:
        return f"bpf.lbModeAnnotation is false: {MODE_ANNOTATION} is ignored"
    if v.algorithm and not facts.algorithm_annotation:
        return f"bpf.lbAlgorithmAnnotation is false: {ALGORITHM_ANNOTATION} is ignored"
    if (v.mode or facts.lb_mode) in ("dsr", "hybrid") and facts.routing_mode == "tunnel":
        return (f"mode {v.mode or facts.lb_mode} needs routingMode native (DSR in tunnel "
                "mode needs Geneve, which this kernel lacks)")
    return ""


def expect(src: Source, v: Variant, dest: Dest, proto: str, facts: LabFacts) -> Expect:
    """What the cell (src, v, dest, proto) must see on this lab."""
    why = _not_testable(src, v, dest, facts)
    if why:
        return Expect(NOT_TESTABLE, v.group, why=why)
    if src.kind == "client" and dest.kind == CLUSTER_IP:
        return Expect(NOT_ROUTABLE, v.group, why=(
            "ClusterIPs are served to pods and nodes only (as Cilium without "
            "bpf.lbExternalClusterIP); the LAN has no route to the service CIDR"))
    host_node = facts.second
    # Traffic that enters a node from the LAN (EXT scope): the client's, and that of pods and
    # nodes to another node's NodePort. Through which node: the NodePort's, or node1 (the
    # client's route to LoadBalancer and external IPs).
    if src.kind == "client":
        entry: str | None = dest.node or facts.first
    elif dest.kind == NODE_PORT and dest.node != src.node:
        entry = dest.node
    else:
        entry = None
    nodes: tuple[str, ...] | None = None
    if v.group == "host" or v.only_second:
        nodes = (host_node,)
    if entry is not None and v.etp_local:
        if v.group == "host" and entry != host_node:
            return Expect(NO_ANSWER, v.group, why=(
                f"eTP=Local through {entry}, which has no local backend: dropped"))
        nodes = (entry,)
    if entry is None and v.itp_local and dest.kind == CLUSTER_IP:
        assert src.node is not None
        nodes = (src.node,)
    keep = False
    if proto == TCP:
        if src.kind == "client":
            keep = v.etp_local or effective_mode(v, facts, proto) == "dsr"
        elif src.kind == "pod" and not src.hairpin and entry is None:
            # DNATed where the pod is; only a host-network backend on another node is
            # reached outside the pod network (masqueraded on the way).
            keep = v.group != "host" or src.node == host_node
    return Expect(ANSWER, v.group, nodes, keep)


def _note(src: Source, dest: Dest) -> str:
    if src.kind == "client" and dest.kind in (LOAD_BALANCER, EXTERNAL_IP):
        return ROUTED_NOTE
    return ""


def _special_cells(src: Source, facts: LabFacts) -> list[Cell]:
    """The cells of `src` beyond the echo probes: the `kubernetes` Service over HTTPS (from
    a backend pod on node1, a pod on the second node, node1), and uploads (from the client
    through node1's NodePort to `echo-remote` and to the default Service; from the client pod
    on node1 to `echo-remote`'s ClusterIP)."""
    one, two = facts.first, facts.second
    out = []
    if src.hairpin or src.kind == "node" or (src.kind == "pod" and src.node == two):
        why = PODS_ONLY if facts.in_pods and src.kind != "pod" else "" if (
            src.node is None or facts.has(src.node)) else (
            f"the lab has no {src.node} (lab up --nodes 2 or more)")
        e = Expect(NOT_TESTABLE, API_GROUP, why=why) if why else Expect(ANSWER, API_GROUP)
        out.append(Cell(src.key, KUBERNETES, Dest(CLUSTER_IP), TCP, e, check=CHECK_HTTPS))
    remote, default = VARIANT_BY_NAME["echo-remote"], VARIANT_BY_NAME["echo"]
    uploads: list[tuple[Variant, Dest]] = []
    if src.kind == "client":
        uploads = [(remote, Dest(NODE_PORT, one)), (default, Dest(NODE_PORT, one))]
    elif src.kind == "pod" and not src.hairpin and src.node == one:
        uploads = [(remote, Dest(CLUSTER_IP))]
    for v, dest in uploads:
        out.append(Cell(src.key, v.name, dest, TCP, expect(src, v, dest, TCP, facts),
                        _note(src, dest), check=CHECK_UPLOAD))
    return out


def cells(facts: LabFacts) -> list[Cell]:
    """Every cell of the matrix for this lab, in table order (source, Service, destination,
    protocol; each source's special cells last)."""
    out = []
    for src in sources(facts):
        for v in VARIANTS:
            for dest in _destinations(src, v, facts):
                for proto in PROTOCOLS:
                    out.append(Cell(src.key, v.name, dest, proto,
                                    expect(src, v, dest, proto, facts), _note(src, dest)))
        out += _special_cells(src, facts)
    return out


# --- resolving addresses ------------------------------------------------------------------------


@dataclass(frozen=True)
class ServiceAddresses:
    """A created Service's frontends, read from the API's object."""

    cluster_ip: str
    ports: Mapping[str, int]  # protocol -> port
    node_ports: Mapping[str, int]
    lb_ip: str | None
    external_ips: tuple[str, ...]

    @classmethod
    def from_object(cls, obj: Mapping[str, Any]) -> ServiceAddresses:
        spec = obj.get("spec") or {}
        ports = spec.get("ports") or []
        ingress = ((obj.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        return cls(
            cluster_ip=str(spec.get("clusterIP") or ""),
            ports={str(p.get("protocol") or TCP): int(p["port"]) for p in ports},
            node_ports={str(p.get("protocol") or TCP): int(p["nodePort"])
                        for p in ports if p.get("nodePort")},
            lb_ip=next((str(i["ip"]) for i in ingress if i.get("ip")), None),
            external_ips=tuple(str(a) for a in spec.get("externalIPs") or ()))


def target(cell: Cell, svc: ServiceAddresses, facts: LabFacts) -> tuple[str, int] | None:
    """The address and port a cell's probes connect to (None when the Service lacks it)."""
    kind, proto = cell.dest.kind, cell.proto
    if kind == NODE_PORT:
        port = svc.node_ports.get(proto)
        node = cell.dest.node
        if port is None or node is None or not facts.has(node):
            return None
        return facts.node_ip(node), port
    port = svc.ports.get(proto)
    address = {CLUSTER_IP: svc.cluster_ip or None, LOAD_BALANCER: svc.lb_ip,
               EXTERNAL_IP: svc.external_ips[0] if svc.external_ips else None}[kind]
    return None if address is None or port is None else (address, port)


def routed_addresses(services: Iterable[ServiceAddresses]) -> list[str]:
    """The LoadBalancer and external IPs the client reaches through node1."""
    found: set[str] = set()
    for svc in services:
        if svc.lb_ip:
            found.add(svc.lb_ip)
        found.update(svc.external_ips)
    return sorted(found, key=IPv4Address)


@dataclass(frozen=True)
class Inventory:
    """Who is who once deployed: backend pods (name -> (group, node)) and each source's
    address."""

    backends: Mapping[str, tuple[str, str]]
    source_ips: Mapping[str, str]

    def allowed(self, e: Expect) -> set[str]:
        return {pod for pod, (group, node) in self.backends.items()
                if group == e.group and (e.nodes is None or node in e.nodes)}


def api_backends(facts: LabFacts) -> dict[str, tuple[str, str]]:
    """The `kubernetes` Service's backend set, as `Inventory.backends` holds it: the
    control-plane host's address."""
    return {facts.api_server: (API_GROUP, API_HOST)}


POD_TARGET = f"pod/{NAMESPACE}/"


def inventory(facts: LabFacts, pods: list[dict[str, Any]]
               ) -> tuple[Inventory, dict[str, str]]:
    """Who is who, and where each source runs: `pod/<namespace>/<name>` (a pod: as `hexlane
    lab exec` names it), a node's name, or `client`."""
    backends: dict[str, tuple[str, str]] = {}
    by_name = {name_of(p): p for p in pods}
    for p in pods:
        app = labels_of(p).get("app")
        if app in ("echo", "echo-host"):
            backends[name_of(p)] = ("host" if app == "echo-host" else "echo", node_name(p))
    ips: dict[str, str] = {}
    targets: dict[str, str] = {}
    for src in sources(facts):
        name = ""
        if src.hairpin:
            name = min((n for n, (g, node) in backends.items()
                        if g == "echo" and node == src.node), default="")
        elif src.kind == "pod":
            name = f"client-{src.node}"
        if src.kind == "pod":
            if name in by_name:
                ips[src.key] = pod_ip(by_name[name])
                targets[src.key] = f"{POD_TARGET}{name}"
        elif src.kind == "node" and src.node is not None and facts.has(src.node):
            ips[src.key] = facts.node_ip(src.node)
            targets[src.key] = src.node
        elif src.kind == "client":
            ips[src.key] = facts.client_ip
            targets[src.key] = "client"
    return Inventory(backends, ips), targets


# --- probes and their results -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """One answered connection: the backend pod, the client address it saw (TCP), the
    address the answer came from (UDP), the body bytes it received (an upload) and the HTTP
    status (HTTPS)."""

    pod: str
    client_ip: str | None = None
    reply_from: str | None = None
    received: int | None = None
    http_status: str | None = None


@dataclass(frozen=True)
class ProbeResult:
    """What one cell's probes saw: `attempts` connections to `target` (`address:port`), the
    answers, an error per failed connection, and each answered connection's source port."""

    target: str
    attempts: int
    answers: tuple[Answer, ...] = ()
    errors: tuple[str, ...] = ()
    source_ports: tuple[int, ...] = ()
    failure: str = ""  # the probe itself did not run (nsenter, a timeout): no verdict on data
    strays: int = 0  # UDP: late answers meant for an earlier run's sockets (not judged)


CURL_MARK = "@@"
# curl's --write-out per transfer, to stderr (the bodies go to stdout).
CURL_WRITE_OUT = "%{stderr}" + CURL_MARK + \
    " %{exitcode} %{http_code} %{local_port} %{errormsg}\n"


def _curl(url: str, connections: int, check: str, *options: str) -> list[str]:
    return ["curl", "-s", "--no-progress-meter", "-Z", "--parallel-max", "20",
            "--parallel-immediate", "--connect-timeout", "0.9",
            "-m", str(CURL_MAX_TIME[check]), "-H", "Connection: close", *options,
            "-w", CURL_WRITE_OUT, f"{url}?[1-{connections}]"]


def curl_argv(address: str, port: int, connections: int) -> list[str]:
    """curl opening `connections` new connections (URL glob; `Connection: close`, so none is
    reused), 20 at a time, each with a 0.9 s connect timeout."""
    return _curl(f"http://{address}:{port}/whoami", connections, CHECK_ECHO)


def https_argv(address: str, port: int, connections: int) -> list[str]:
    """As `curl_argv`, GET https://address:port/version, the certificate not checked and
    the bodies dropped (an apiserver without a token answers 401: any status will do)."""
    return _curl(f"https://{address}:{port}/version", connections, CHECK_HTTPS,
                 "-k", "-o", "/dev/null")


def upload_argv(address: str, port: int, connections: int, path: str) -> list[str]:
    """As `curl_argv`, each connection a POST of the file `path` (UPLOAD_BYTES) to
    `/whoami`, which answers with the number of bytes it received."""
    return _curl(f"http://{address}:{port}/whoami", connections, CHECK_UPLOAD,
                 "--data-binary", f"@{path}")


def probe_argv(cell: Cell, address: str, port: int, connections: int, *, python: str,
               nonce: str, upload: str) -> list[str]:
    """The command line of a cell's probe (`upload`: the file of UPLOAD_BYTES to POST)."""
    if cell.check == CHECK_HTTPS:
        return https_argv(address, port, connections)
    if cell.check == CHECK_UPLOAD:
        return upload_argv(address, port, connections, upload)
    if cell.proto == TCP:
        return curl_argv(address, port, connections)
    return udp_argv(python, address, port, connections, nonce)


def probe_timeout(cell: Cell, connections: int) -> float:
    """How long a cell's probe may run: curl's rounds of 20 connections at most
    CURL_MAX_TIME each; the UDP probe's 0.9 s and Python's start."""
    return job_timeout(cell.check, connections)


def job_timeout(check: str, connections: int) -> float:
    """`probe_timeout` of a cell whose probe checks `check`."""
    return 5.0 + CURL_MAX_TIME[check] * -(-connections // 20)


def _curl_error(exitcode: int, http_code: str, message: str) -> str:
    text = message.lower()
    if exitcode == 0:
        return f"HTTP {http_code}"
    for words, short in (("refused", "refused"), ("no route", "no route to host"),
                         ("unreachable", "unreachable"), ("reset", "reset")):
        if words in text:
            return short
    if exitcode == 28 or "timed out" in text or "timeout" in text:
        return "timeout"
    if exitcode == 7 or "couldn't connect" in text:
        return "connect failed"  # curl says no more: refused, or ICMP unreachable
    if exitcode == 52:
        return "empty reply"
    return message.strip()[:40] or f"curl exit {exitcode}"


def _marks(stderr: str) -> Iterator[tuple[int, str, str, str]]:
    """curl's write-out lines: (exit code, HTTP code, local port, error message) each."""
    # A progress meter or warning may precede a mark on its line: take what follows each.
    for chunk in stderr.split(CURL_MARK + " ")[1:]:
        parts = chunk.split("\n", 1)[0].split(" ", 3)
        parts += [""] * (4 - len(parts))
        try:
            code = int(parts[0])
        except ValueError:
            code = -1
        yield code, parts[1], parts[2], parts[3]


def parse_curl(stdout: str, stderr: str, attempts: int, address: str, port: int
               ) -> ProbeResult:
    """curl's bodies (one `/whoami` JSON per line, with `received` for an upload) and its
    per-transfer write-out lines."""
    answers = []
    errors = []
    for line in stdout.splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            body = json.loads(line)
            received = body.get("received")
            answers.append(Answer(str(body["pod"]), client_ip=str(body["client_ip"]),
                                  received=received if isinstance(received, int) else None))
        except (ValueError, KeyError, TypeError, AttributeError):
            errors.append("bad answer")
    ports = _tally(stderr, lambda http_code: http_code == "200", errors)
    return _result(address, port, attempts, answers, errors, ports)


def _tally(stderr: str, answered: Callable[[str], bool], errors: list[str]) -> list[int]:
    """The local ports of curl's transfers whose HTTP code `answered`; the others' errors
    appended to `errors`."""
    ports = []
    for code, http_code, local_port, message in _marks(stderr):
        if code == 0 and answered(http_code):
            if local_port.isdigit():
                ports.append(int(local_port))
        else:
            errors.append(_curl_error(code, http_code, message))
    return ports


def _result(address: str, port: int, attempts: int, answers: list[Answer],
            errors: list[str], ports: list[int]) -> ProbeResult:
    """A probe's result; attempts that left no trace at all count as "no output"."""
    errors = errors + ["no output"] * max(0, attempts - len(answers) - len(errors))
    return ProbeResult(f"{address}:{port}", attempts, tuple(answers), tuple(errors),
                       tuple(ports))


def parse_https(stderr: str, attempts: int, address: str, port: int, backend: str
                ) -> ProbeResult:
    """`https_argv`'s write-out lines: every transfer that got an HTTP status is an answer.
    An HTTPS answer does not name its server: each is credited to `backend`, the endpoints
    the API lists for the Service (the datapath's backend set), so a wrong set shows as a
    backend not allowed."""
    errors: list[str] = []
    statuses = [http_code for code, http_code, _, _ in _marks(stderr)
                if code == 0 and _is_status(http_code)]
    ports = _tally(stderr, _is_status, errors)
    answers = [Answer(backend, http_status=status) for status in statuses]
    return _result(address, port, attempts, answers, errors, ports)


def _is_status(http_code: str) -> bool:
    return http_code.isdigit() and http_code != "000"


# Runs with the machine's Python in the source's namespace: argv = address port count
# timeout nonce. One unconnected socket per datagram (so an answer from a wrong address is
# seen, not filtered), all sent at once, then every answer or the timeout. A datagram
# without this run's nonce (a late answer to an earlier run's socket on the same port) is
# reported as stray and the socket goes on waiting. One JSON object per line.
UDP_PROBE = """\
import json, select, socket, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
timeout, nonce = float(sys.argv[4]), sys.argv[5]
pending = {}
for i in range(count):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    s.bind(("0.0.0.0", 0))
    try:
        s.sendto(("probe-%s-%d" % (nonce, i)).encode(), (host, port))
    except OSError as e:
        print(json.dumps({"i": i, "error": "send: " + (e.strerror or str(e))}))
        s.close()
        continue
    pending[s] = i
deadline = time.monotonic() + timeout
while pending:
    left = deadline - time.monotonic()
    if left <= 0:
        break
    ready, _, _ = select.select(list(pending), [], [], left)
    for s in ready:
        i = pending[s]
        try:
            data, addr = s.recvfrom(2048)
        except OSError as e:
            print(json.dumps({"i": i, "error": e.strerror or str(e)}))
            del pending[s]
            s.close()
            continue
        rec = {"i": i, "port": s.getsockname()[1], "from": "%s:%d" % addr,
               "reply": data.decode(errors="replace")}
        if (" probe-%s-" % nonce) not in rec["reply"]:
            rec["stray"] = True
            print(json.dumps(rec))
            continue
        print(json.dumps(rec))
        del pending[s]
        s.close()
for s, i in pending.items():
    print(json.dumps({"i": i, "error": "timeout"}))
    s.close()
"""


def udp_argv(python: str, address: str, port: int, connections: int,
             nonce: str) -> list[str]:
    return [python, "-c", UDP_PROBE, address, str(port), str(connections), "0.9", nonce]


def parse_udp(stdout: str, attempts: int, address: str, port: int, nonce: str
              ) -> ProbeResult:
    """The UDP probe's lines: an answer `<pod> probe-<nonce>-<i>` (from which address and
    port, to which of our ports), a stray datagram, or an error per datagram. The answers
    must come from `address:port`."""
    answers = []
    errors = []
    ports = []
    strays = 0
    for line in stdout.splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if rec.get("stray"):
            strays += 1
            continue
        if "error" in rec:
            errors.append(str(rec["error"]))
            continue
        pod, _, payload = str(rec.get("reply", "")).rpartition(" ")
        if not pod or payload != f"probe-{nonce}-{rec.get('i')}":
            errors.append("bad answer")
            continue
        answers.append(Answer(pod, reply_from=str(rec.get("from") or "")))
        if isinstance(rec.get("port"), int):
            ports.append(rec["port"])
    missing = attempts - len(answers) - len(errors)
    errors += ["no output"] * max(0, missing)
    return ProbeResult(f"{address}:{port}", attempts, tuple(answers), tuple(errors),
                       tuple(ports), strays=strays)


@dataclass(frozen=True)
class Probe:
    """A cell to probe: from `source` (`inventory`'s target) to `address:port`."""

    index: int  # the cell's place in the table
    cell: Cell
    source: str
    address: str
    port: int


def plan_probes(cells_: Sequence[Cell], services: Mapping[str, ServiceAddresses],
                facts: LabFacts, targets: Mapping[str, str]
                ) -> tuple[dict[int, Row], list[Probe]]:
    """What to probe, and the rows of the cells that are not probed (not testable or not
    routable, or not probeable: no such Service, frontend or source), by table index."""
    rows: dict[int, Row] = {}
    probes: list[Probe] = []
    for i, cell in enumerate(cells_):
        if not cell.probed:
            rows[i] = Row(cell, not_probed(cell))
            continue
        svc = services.get(cell.service)
        addr = None if svc is None else target(cell, svc, facts)
        src = targets.get(cell.source)
        if addr is None or src is None:
            what = ("no such Service" if svc is None else "the Service has no such frontend"
                    if addr is None else "no such source")
            rows[i] = Row(cell, Verdict(FAIL, f"cannot probe: {what}"))
            continue
        probes.append(Probe(i, cell, src, *addr))
    return rows, probes


# --- `--kubeconfig`: the probe pods' plan and results -------------------------------------------


@dataclass(frozen=True)
class Job:
    """One cell's probe, as a probe pod runs it: `connections` to `address:port` with the
    cell's `check` over `proto` (`backend`: what an HTTPS answer is credited to)."""

    id: int
    check: str
    proto: str
    address: str
    port: int
    connections: int
    backend: str = ""

    @classmethod
    def of(cls, id: int, cell: Cell, address: str, port: int, connections: int,
           backend: str = "") -> Job:
        return cls(id, cell.check, cell.proto, address, port, cell.connections(connections),
                   backend if cell.check == CHECK_HTTPS else "")

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "check": self.check, "proto": self.proto,
                "address": self.address, "port": self.port,
                "connections": self.connections, "backend": self.backend}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Job:
        check, proto = str(d["check"]), str(d["proto"])
        if check not in CURL_MAX_TIME or proto not in PROTOCOLS:
            raise ValueError(f"unknown check {check!r} or protocol {proto!r}")
        connections = int(d["connections"])
        if not 1 <= connections <= 1000:
            raise ValueError(f"want 1 to 1000 connections, got {connections}")
        return cls(int(d["id"]), check, proto, str(d["address"]), int(d["port"]),
                   connections, str(d.get("backend") or ""))


PLAN_KEY = "plan.json"
RESULT_KEY = "result.json"


def plan_configmap(run: str, jobs: Mapping[str, Sequence[Job]]) -> dict[str, Any]:
    """The plan every probe pod reads: for run `run`, the jobs of each pod (by name)."""
    body = {"run": run, "jobs": {pod: [j.to_json() for j in js] for pod, js in jobs.items()}}
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _meta(PLAN_CONFIGMAP),
            "data": {PLAN_KEY: json.dumps(body, separators=(",", ":"))}}


def read_plan(configmap: Mapping[str, Any], pod: str) -> tuple[str, list[Job]]:
    """The run and the jobs of `pod` in a plan ConfigMap (ValueError when it is not one)."""
    body = json.loads(((configmap.get("data") or {}).get(PLAN_KEY)) or "{}")
    run = str(body.get("run") or "")
    if not run:
        raise ValueError(f"{PLAN_CONFIGMAP} has no run")
    return run, [Job.from_json(j) for j in (body.get("jobs") or {}).get(pod) or []]


def result_name(pod: str) -> str:
    return f"{RESULT_PREFIX}{pod}"[:253]


def _answer_json(a: Answer) -> list[Any]:
    return [a.pod, a.client_ip, a.reply_from, a.received, a.http_status]


def result_json(r: ProbeResult) -> dict[str, Any]:
    return {"target": r.target, "attempts": r.attempts,
            "answers": [_answer_json(a) for a in r.answers], "errors": list(r.errors),
            "ports": list(r.source_ports), "failure": r.failure, "strays": r.strays}


def result_from_json(d: Mapping[str, Any]) -> ProbeResult:
    def opt(x: Any) -> str | None:
        return None if x is None else str(x)
    answers = tuple(Answer(str(pod), opt(ip), opt(frm),
                           received if isinstance(received, int) else None, opt(status))
                    for pod, ip, frm, received, status in d.get("answers") or [])
    return ProbeResult(str(d["target"]), int(d["attempts"]), answers,
                       tuple(str(e) for e in d.get("errors") or ()),
                       tuple(int(p) for p in d.get("ports") or ()),
                       str(d.get("failure") or ""), int(d.get("strays") or 0))


def result_configmap(pod: str, run: str, results: Mapping[int, ProbeResult]
                     ) -> dict[str, Any]:
    """What a probe pod writes once its jobs of `run` are done."""
    body = {"run": run, "pod": pod,
            "results": {str(i): result_json(r) for i, r in results.items()}}
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": _meta(result_name(pod), {"conncheck-run": run}),
            "data": {RESULT_KEY: json.dumps(body, separators=(",", ":"))}}


def read_results(configmap: Mapping[str, Any], run: str) -> dict[int, ProbeResult] | None:
    """A result ConfigMap's results by job id; None when it is another run's."""
    body = json.loads(((configmap.get("data") or {}).get(RESULT_KEY)) or "{}")
    if body.get("run") != run:
        return None
    return {int(i): result_from_json(r) for i, r in (body.get("results") or {}).items()}


# --- the verdict --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    status: str  # PASS | FAIL | NOT_TESTABLE | NOT_ROUTABLE
    detail: str
    reached: Mapping[str, int] = field(default_factory=dict)  # backend pod -> answers
    client_ips: Mapping[str, int] = field(default_factory=dict)


def coverage_required(backends: int, answers: int) -> bool:
    """Whether `answers` spread over `backends` must reach each one (a miss by chance would
    be rarer than MISS_PROBABILITY)."""
    if backends <= 0 or answers <= 0:
        return False
    if backends == 1:
        return True
    return backends * ((backends - 1) / backends) ** answers <= MISS_PROBABILITY


def _counts(items: Iterable[str]) -> str:
    return ", ".join(f"{k} x{n}" if n > 1 else k for k, n in Counter(items).most_common())


def _by_node(reached: Mapping[str, int], inv: Inventory) -> str:
    per_node: Counter[str] = Counter()
    for pod, n in reached.items():
        per_node[inv.backends.get(pod, ("", "?"))[1]] += n
    return " ".join(f"{node} {n}" for node, n in sorted(per_node.items()))


def not_probed(cell: Cell) -> Verdict:
    """The verdict of a cell that is not probed (not testable, not routable)."""
    return Verdict(cell.expect.kind, cell.expect.why)


def judge(cell: Cell, result: ProbeResult, inv: Inventory) -> Verdict:
    """Pass or fail, and why, for what a cell's probes saw."""
    e = cell.expect
    if not cell.probed:
        return not_probed(cell)
    if result.failure:
        return Verdict(FAIL, f"probe did not run: {result.failure}")
    reached = dict(Counter(a.pod for a in result.answers))
    ips = dict(Counter(a.client_ip for a in result.answers if a.client_ip is not None))
    n, total = len(result.answers), result.attempts
    if e.kind == NO_ANSWER:
        if n == 0:
            return Verdict(PASS, f"no answer, as expected ({_counts(result.errors)})")
        return Verdict(FAIL, f"{n}/{total} answered ({_counts(a.pod for a in result.answers)})"
                             f"; want none: {e.why}", reached, ips)
    problems = []
    allowed = inv.allowed(e)
    if not allowed:
        problems.append("no backend to expect (is the deployment complete?)")
    if n == 0:
        return Verdict(FAIL, "; ".join([f"no answer ({_counts(result.errors)})", *problems]))
    if result.errors:
        problems.append(f"{len(result.errors)}/{total} failed ({_counts(result.errors)})")
    foreign = [a.pod for a in result.answers if a.pod not in allowed]
    if foreign:
        problems.append(f"not allowed: {_counts(foreign)}")
    missed = sorted(allowed - set(reached))
    if missed and coverage_required(len(allowed), n - len(foreign)):
        problems.append("missed " + ", ".join(missed))
    wrong_from = [a.reply_from for a in result.answers
                  if a.reply_from is not None and a.reply_from != result.target]
    if wrong_from:
        problems.append(f"answers from {_counts(wrong_from)}, want {result.target}")
    want_ip = inv.source_ips.get(cell.source) if e.keep_source else None
    if e.keep_source:
        wrong_ip = [ip for ip in (a.client_ip for a in result.answers)
                    if ip is not None and ip != want_ip]
        if wrong_ip:
            problems.append(f"client IP {_counts(wrong_ip)}, want {want_ip}")
    if cell.check == CHECK_UPLOAD:
        short = [a.received for a in result.answers if a.received != UPLOAD_BYTES]
        if short:
            problems.append(f"{len(short)}/{n} uploads not received whole (received "
                            f"{_counts('no count' if r is None else str(r) for r in short)}"
                            f"; sent {UPLOAD_BYTES} bytes)")
    if problems:
        return Verdict(FAIL, "; ".join(problems), reached, ips)
    first = (f"{n}/{total} uploads of {UPLOAD_BYTES} bytes received whole"
             if cell.check == CHECK_UPLOAD else f"{n}/{total} answered")
    parts = [first, f"{len(set(reached))}/{len(allowed)} backends ({_by_node(reached, inv)})"]
    statuses = [a.http_status for a in result.answers if a.http_status is not None]
    if statuses:
        parts.append(f"HTTP {_counts(statuses)}")
    if ips:
        parts.append(f"client IP {_counts(ips.keys())}" + (" kept" if e.keep_source else ""))
    if result.strays:
        parts.append(f"{result.strays} stray datagram(s) of an earlier run ignored")
    return Verdict(PASS, ", ".join(parts), reached, ips)


# --- output -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One line of the report: a cell, where it pointed, and its verdict."""

    cell: Cell
    verdict: Verdict
    address: str = ""  # "10.43.0.7:80"
    command: str = ""  # the probe as `hexlane lab exec ...`


def service_label(v: Variant, facts: LabFacts) -> str:
    if v.name == "echo":
        return f"echo ({facts.lb_mode}, {facts.lb_algorithm})"
    if v.only_second:
        return f"{v.name} (backends on {facts.second} only)"
    return f"{v.name} ({v.label})"


def _service_label(cell: Cell, facts: LabFacts) -> str:
    v = VARIANT_BY_NAME.get(cell.service)
    if v is not None:
        return service_label(v, facts)
    if cell.service == KUBERNETES:
        return f"{KUBERNETES} (apiserver {facts.api_server})"
    return cell.service


def summary(verdicts: Iterable[Verdict]) -> str:
    counts = Counter(v.status for v in verdicts)
    text = (f"{counts[PASS]} passed, {counts[FAIL]} failed, "
            f"{counts[NOT_TESTABLE] + counts[NOT_ROUTABLE]} not testable")
    if counts[NOT_ROUTABLE]:
        text += f" ({counts[NOT_ROUTABLE]} of them not routable by design)"
    return text


def render_table(rows: Sequence[Row], facts: LabFacts) -> str:
    """The report as a text table, one line per cell (a note, when any, in brackets)."""
    header = ("SOURCE", "DESTINATION", "PROTO", "SERVICE", "RESULT", "DETAIL [NOTE]")
    lines = [header]
    for r in rows:
        detail = r.verdict.detail + (f" [{r.cell.note}]" if r.cell.note else "")
        lines.append((r.cell.source, f"{r.cell.dest} {r.address}".strip(), r.cell.probe,
                      _service_label(r.cell, facts), r.verdict.status, detail))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join("  ".join([*(text.ljust(w) for text, w in
                                  zip(line[:-1], widths, strict=True)), line[-1]]).rstrip()
                     for line in lines)


def row_json(r: Row, facts: LabFacts) -> dict[str, Any]:
    v = VARIANT_BY_NAME.get(r.cell.service)
    return {
        "source": r.cell.source, "service": r.cell.service,
        "variant": v.label if v else "apiserver" if r.cell.service == KUBERNETES else "",
        "destination": str(r.cell.dest), "address": r.address, "protocol": r.cell.proto,
        "check": r.cell.check, "probe": r.cell.probe,
        "expect": {"kind": r.cell.expect.kind, "group": r.cell.expect.group,
                   "nodes": list(r.cell.expect.nodes) if r.cell.expect.nodes else None,
                   "keepSourceAddress": r.cell.expect.keep_source,
                   "description": r.cell.expect.describe()},
        "result": r.verdict.status, "detail": r.verdict.detail,
        "backends": dict(r.verdict.reached), "clientIPs": dict(r.verdict.client_ips),
        "note": r.cell.note, "command": r.command,
    }
