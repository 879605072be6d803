"""Network policies: Kubernetes `NetworkPolicy` and Cilium's `CiliumNetworkPolicy` /
`CiliumClusterwideNetworkPolicy`. Parsing and validation only (enforcement is `policy/`).

Checked: structure, selectors, ports (a number 1-65535 or a name; Cilium also allows "0" for
all ports), `endPort >= port` (and only with a numeric port), protocols (TCP/UDP/SCTP for
Kubernetes; Cilium adds ICMP, ICMPv6, VRRP, IGMP and ANY, its default), CIDRs in ipBlock,
toCIDR/fromCIDR and toCIDRSet/fromCIDRSet (with `except` inside the CIDR), and entities.

Cilium endpoint selectors may prefix label keys with a source (`k8s:app`, `any:app`); the
prefix is dropped before the key is checked and kept off the parsed selector, since hexlane's
labels carry no source.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from hexlane.model.meta import ObjectView, read_object
from hexlane.model.netaddr import IPNetwork, parse_cidr, parse_ip_or_cidr
from hexlane.model.reader import Reader, parse_selector
from hexlane.model.selectors import LabelSelector
from hexlane.model.service import PROTOCOLS, read_port_ref

CILIUM_PROTOCOLS = ("TCP", "UDP", "SCTP", "ICMP", "ICMPv6", "VRRP", "IGMP", "ANY")
ENTITIES = ("all", "world", "world-ipv4", "world-ipv6", "cluster", "host", "init", "ingress",
            "unmanaged", "remote-node", "health", "none", "kube-apiserver")
POLICY_TYPES = ("Ingress", "Egress")
_LABEL_SOURCES = ("k8s", "any", "reserved", "cidr", "container", "unspec", "fqdn",
                  "cilium-generated", "kvstore", "cilium")


# --- Kubernetes NetworkPolicy --------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PolicyPort:
    """A port of a policy rule; `port` None means every port."""

    protocol: str = "TCP"
    port: int | str | None = None
    end_port: int | None = None


@dataclass(frozen=True, slots=True)
class CIDRBlock:
    """`ipBlock` / `toCIDRSet` entry: a CIDR minus exceptions."""

    cidr: str
    except_: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicyPeer:
    pod_selector: LabelSelector | None = None
    namespace_selector: LabelSelector | None = None
    ip_block: CIDRBlock | None = None


@dataclass(frozen=True, slots=True)
class NetworkPolicyRule:
    """An ingress (`from`) or egress (`to`) rule; no peers means every peer."""

    peers: tuple[NetworkPolicyPeer, ...] = ()
    ports: tuple[PolicyPort, ...] = ()


@dataclass(frozen=True, slots=True)
class NetworkPolicy(ObjectView):
    KIND = "NetworkPolicy"
    API_VERSIONS = ("networking.k8s.io/v1",)
    NAMESPACED = True

    pod_selector: LabelSelector = field(default_factory=LabelSelector)
    policy_types: tuple[str, ...] = ("Ingress",)
    ingress: tuple[NetworkPolicyRule, ...] = ()
    egress: tuple[NetworkPolicyRule, ...] = ()

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> NetworkPolicy:
        r, api_version, meta = read_object(cls, obj, path)
        spec = r.section("spec")
        pod_selector = spec.selector("podSelector") or LabelSelector()
        ingress = tuple(_k8s_rule(rr, "from") for rr in spec.objects("ingress",
                                                                      what="an ingress rule"))
        egress = tuple(_k8s_rule(rr, "to") for rr in spec.objects("egress",
                                                                   what="an egress rule"))
        types = []
        for t, tpath in spec.strings("policyTypes", what="a policy type"):
            if t not in POLICY_TYPES:
                spec.problems.error(tpath, f"unsupported policy type {t!r}: expected Ingress "
                                           "or Egress")
            elif t not in types:
                types.append(t)
        if not spec.get("policyTypes"):
            # Kubernetes' default (SetDefaults_NetworkPolicy): when policyTypes is missing or
            # empty, Ingress always, Egress when there is at least one egress rule (an empty
            # `egress: []` adds nothing).
            types = ["Ingress"] + (["Egress"] if egress else [])
        warnings = r.problems.check()
        return cls(meta=meta, pod_selector=pod_selector, policy_types=tuple(types),
                   ingress=ingress, egress=egress, api_version=api_version, warnings=warnings)


def _k8s_rule(r: Reader, peers_key: str) -> NetworkPolicyRule:
    peers = []
    for pr in r.objects(peers_key, what="a peer (podSelector, namespaceSelector or ipBlock)"):
        ipb = pr.mapping("ipBlock")
        block = _cidr_block(ipb, "except") if ipb is not None else None
        pod_sel = pr.selector("podSelector")
        ns_sel = pr.selector("namespaceSelector")
        if pr.has("ipBlock") and (pr.has("podSelector") or pr.has("namespaceSelector")):
            pr.problems.error(pr.path, "a peer with ipBlock may not also have podSelector or "
                                       "namespaceSelector")
        elif not any(pr.has(k) for k in ("ipBlock", "podSelector", "namespaceSelector")):
            pr.problems.error(pr.path, "empty peer: expected podSelector, namespaceSelector "
                                       "or ipBlock")
        peers.append(NetworkPolicyPeer(pod_selector=pod_sel, namespace_selector=ns_sel,
                                       ip_block=block))
    ports = []
    for pt in r.objects("ports", what="a port"):
        protocol = pt.string("protocol", default="TCP", choices=PROTOCOLS)
        port = read_port_ref(pt, "port")
        end_port = pt.opt_integer("endPort", lo=1, hi=65535, what="a port number")
        _check_end_port(pt, port, end_port)
        ports.append(PolicyPort(protocol=protocol, port=port, end_port=end_port))
    return NetworkPolicyRule(peers=tuple(peers), ports=tuple(ports))


def _check_end_port(r: Reader, port: int | str | None, end_port: int | None) -> None:
    if end_port is None:
        return
    if not isinstance(port, int) or port == 0:
        r.error("endPort", "endPort needs a numeric port (not a name, not all ports)")
    elif end_port < port:
        r.error("endPort", f"endPort {end_port} is below port {port}: expected endPort >= "
                           "port")


def _cidr_block(r: Reader, except_key: str, cidr_key: str = "cidr") -> CIDRBlock | None:
    cidr = r.string(cidr_key, required=True, what="a CIDR such as 10.0.0.0/8")
    net = r.try_parse(cidr_key, _network, cidr) if cidr else None
    excepts = []
    for ex, expath in r.strings(except_key, what="a CIDR"):
        ex_net = r.problems.try_parse(expath, _network, ex)
        if ex_net is None:
            continue
        if net is not None and (ex_net.version != net.version
                                or not ex_net.subnet_of(net)  # type: ignore[arg-type]
                                or ex_net == net):
            r.problems.error(expath, f"{ex} is not inside {cidr}: expected a strict "
                                     f"subnet of the cidr")
        excepts.append(ex)
    return CIDRBlock(cidr, tuple(excepts)) if cidr else None


def _network(cidr: str) -> IPNetwork:
    return parse_cidr(cidr)[0]


def _cilium_selector(r: Reader, key: str) -> LabelSelector | None:
    """`Reader.selector` for a Cilium endpoint or node selector (label sources dropped)."""
    raw = r.get(key)
    return None if raw is None else parse_selector(_strip_sources(raw), r.at(key), r.problems)


def _strip_source(key: Any) -> Any:
    if isinstance(key, str):
        source, sep, rest = key.partition(":")
        if sep and source in _LABEL_SOURCES:
            return rest
    return key


def _strip_sources(raw: Any) -> Any:
    """Cilium label keys may carry a source prefix (k8s:, any:, ...); selectors.py does not."""
    if not isinstance(raw, Mapping):
        return raw
    out = dict(raw)
    ml = raw.get("matchLabels")
    if isinstance(ml, Mapping):
        out["matchLabels"] = {_strip_source(k): v for k, v in ml.items()}
    me = raw.get("matchExpressions")
    if isinstance(me, list):
        out["matchExpressions"] = [
            {**e, "key": _strip_source(e.get("key"))} if isinstance(e, Mapping) else e
            for e in me]
    return out


# --- Cilium policies ------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class PortRule:
    """`toPorts` entry: ports (a port "0"/None is every port) and whether L7 rules follow."""

    ports: tuple[PolicyPort, ...] = ()
    has_l7_rules: bool = False


@dataclass(frozen=True, slots=True)
class CiliumPolicyRule:
    """One ingress/egress (deny) rule; `peer_*` are from* for ingress and to* for egress."""

    endpoints: tuple[LabelSelector, ...] = ()
    cidrs: tuple[str, ...] = ()
    cidr_sets: tuple[CIDRBlock, ...] = ()
    entities: tuple[str, ...] = ()
    ports: tuple[PortRule, ...] = ()
    fqdns: tuple[str, ...] = ()
    icmp_types: tuple[tuple[str, str], ...] = ()  # (family, type)


@dataclass(frozen=True, slots=True)
class CiliumPolicySpec:
    endpoint_selector: LabelSelector | None = None
    node_selector: LabelSelector | None = None
    ingress: tuple[CiliumPolicyRule, ...] = ()
    ingress_deny: tuple[CiliumPolicyRule, ...] = ()
    egress: tuple[CiliumPolicyRule, ...] = ()
    egress_deny: tuple[CiliumPolicyRule, ...] = ()
    description: str = ""


@dataclass(frozen=True, slots=True)
class CiliumNetworkPolicy(ObjectView):
    """A CiliumNetworkPolicy; `spec` and every `specs` entry, in that order, in `specs`."""

    KIND = "CiliumNetworkPolicy"
    API_VERSIONS = ("cilium.io/v2",)
    NAMESPACED = True

    specs: tuple[CiliumPolicySpec, ...] = ()

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> CiliumNetworkPolicy:
        r, api_version, meta = read_object(cls, obj, path)
        specs = []
        if (sr := r.mapping("spec")) is not None:
            specs.append(_cilium_spec(sr, clusterwide=not cls.NAMESPACED))
        for sr in r.objects("specs", what="a policy rule"):
            specs.append(_cilium_spec(sr, clusterwide=not cls.NAMESPACED))
        if not r.has("spec") and not r.get("specs"):
            r.error("spec", "required field is missing: expected spec or specs")
        warnings = r.problems.check()
        return cls(meta=meta, specs=tuple(specs), api_version=api_version, warnings=warnings)


@dataclass(frozen=True, slots=True)
class CiliumClusterwideNetworkPolicy(CiliumNetworkPolicy):
    KIND = "CiliumClusterwideNetworkPolicy"
    NAMESPACED = False


_INGRESS_KEYS = ("fromEndpoints", "fromRequires", "fromCIDR", "fromCIDRSet", "fromEntities",
                 "fromGroups", "fromNodes", "toPorts", "icmps", "authentication")
_EGRESS_KEYS = ("toEndpoints", "toRequires", "toCIDR", "toCIDRSet", "toEntities",
                "toServices", "toFQDNs", "toGroups", "toNodes", "toPorts", "icmps",
                "authentication")


def _cilium_spec(r: Reader, *, clusterwide: bool) -> CiliumPolicySpec:
    ep = _cilium_selector(r, "endpointSelector")
    node = _cilium_selector(r, "nodeSelector")
    if r.has("endpointSelector") == r.has("nodeSelector"):
        what = "endpointSelector or nodeSelector" if clusterwide else "endpointSelector"
        r.problems.error(r.path if r.has("nodeSelector") else r.at("endpointSelector"),
                         f"expected exactly one of {what}")
    elif node is not None and not clusterwide:
        r.error("nodeSelector", "nodeSelector is only allowed in a "
                                "CiliumClusterwideNetworkPolicy")
    r.unknown_fields(("endpointSelector", "nodeSelector", "ingress", "ingressDeny", "egress",
                      "egressDeny", "labels", "description", "enableDefaultDeny", "log"),
                     what="a Cilium policy rule")
    rules: dict[str, tuple[CiliumPolicyRule, ...]] = {}
    for key in ("ingress", "ingressDeny", "egress", "egressDeny"):
        ingress = key.startswith("ingress")
        rules[key] = tuple(_cilium_rule(rr, ingress=ingress, deny=key.endswith("Deny"))
                           for rr in r.objects(key, what=f"an {key} rule"))
    return CiliumPolicySpec(endpoint_selector=ep, node_selector=node,
                            ingress=rules["ingress"], ingress_deny=rules["ingressDeny"],
                            egress=rules["egress"], egress_deny=rules["egressDeny"],
                            description=r.string("description"))


def _cilium_rule(r: Reader, *, ingress: bool, deny: bool) -> CiliumPolicyRule:
    pre = "from" if ingress else "to"
    r.unknown_fields(_INGRESS_KEYS if ingress else _EGRESS_KEYS,
                     what=f"an {'ingress' if ingress else 'egress'} rule")
    endpoints = []
    for key in (f"{pre}Endpoints", f"{pre}Requires"):
        for raw, sel_path in r.opt_list(key, what="a list of endpoint selectors") or []:
            sel = parse_selector(_strip_sources(raw), sel_path, r.problems)
            if sel is not None and key.endswith("Endpoints"):
                endpoints.append(sel)
    cidrs = []
    for c, cpath in r.strings(f"{pre}CIDR", what="a CIDR or IP address"):
        r.problems.try_parse(cpath, parse_ip_or_cidr, c)
        cidrs.append(c)
    sets = []
    for cr in r.objects(f"{pre}CIDRSet", what="a CIDR set (cidr with optional except)"):
        if cr.has("cidrGroupRef") and not cr.has("cidr"):
            continue  # a reference to a CiliumCIDRGroup, resolved elsewhere
        block = _cidr_block(cr, "except")
        if block is not None:
            sets.append(block)
    entities = []
    for ent, epath in r.strings(f"{pre}Entities", what="an entity"):
        if ent not in ENTITIES:
            r.problems.error(epath, f"unknown entity {ent!r}: expected one of "
                                    f"{', '.join(ENTITIES)}")
        else:
            entities.append(ent)
    port_rules = []
    for pr in r.objects("toPorts", what="a port rule"):
        ports = []
        for pp in pr.objects("ports", what="a port"):
            port = _cilium_port(pp)
            end_port = pp.opt_integer("endPort", lo=0, hi=65535, what="a port number")
            if end_port is not None and end_port != 0:
                _check_end_port(pp, port, end_port)
            ports.append(PolicyPort(
                protocol=pp.string("protocol", default="ANY", choices=CILIUM_PROTOCOLS),
                port=port, end_port=end_port or None))
        has_l7 = pr.has("rules")
        if has_l7 and deny:
            pr.error("rules", "L7 rules are not allowed in deny rules")
        port_rules.append(PortRule(ports=tuple(ports), has_l7_rules=has_l7))
    fqdns = []
    if not ingress:
        for fr in r.objects("toFQDNs", what="an FQDN selector (matchName or matchPattern)"):
            name = fr.string("matchName") or fr.string("matchPattern")
            if not name:
                fr.problems.error(fr.path, "expected matchName or matchPattern")
            fqdns.append(name)
    icmps = []
    for ir in r.objects("icmps", what="an ICMP rule"):
        for fr in ir.objects("fields", what="an ICMP field (type, family)"):
            fam = fr.string("family", default="IPv4", choices=("IPv4", "IPv6"))
            t = fr.get("type")
            if isinstance(t, bool) or not isinstance(t, int | str):
                fr.error("type", "required field is missing: expected an ICMP type number "
                                 "(0-255) or name")
            elif isinstance(t, int) and not 0 <= t <= 255:
                fr.error("type", f"ICMP type {t} is out of range: expected 0-255")
            else:
                icmps.append((fam, str(t)))
    return CiliumPolicyRule(endpoints=tuple(endpoints), cidrs=tuple(cidrs),
                            cidr_sets=tuple(sets), entities=tuple(entities),
                            ports=tuple(port_rules), fqdns=tuple(fqdns),
                            icmp_types=tuple(icmps))


def _cilium_port(r: Reader) -> int | str | None:
    """Cilium ports are strings ("80", "0" for all, or a name); YAML numbers are accepted."""
    v = r.get("port")
    if v is None:
        return None
    if isinstance(v, int) and not isinstance(v, bool):
        r.warn("port", f"Cilium's schema wants a string here: write \"{v}\" (a real API "
                       "server rejects a number)")
        v = str(v)
    if not isinstance(v, str):
        r.error("port", "expected a port number (as a string) or a port name")
        return None
    if v.isdigit():
        n = int(v)
        if not 0 <= n <= 65535:
            r.error("port", f"port {v!r} is out of range: expected 0-65535 or a port name")
            return None
        return n or None
    return read_port_ref(r, "port")
