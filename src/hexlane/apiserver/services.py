"""What the Kubernetes apiserver does to a Service beyond storing it: defaulting, and the
allocation of its ClusterIP, NodePorts and health-check NodePort.

Both are pure functions over plain dicts; the server keeps the sets of taken addresses and
ports (see `service_allocations`) and calls them on create and update, with those sets as
anything that answers `in` and `len` (`Taken`: the server asks its database per value, so a
create does not read everything taken):

    svc = default_service(body)
    svc = allocate_service_addresses(svc, old, service_cidr=..., taken_ips=...,
                                     taken_node_ports=..., rng_seed=...)

Defaults (`default_service`, Kubernetes' `SetDefaults_Service`): type ClusterIP, ports
protocol TCP and targetPort = port, sessionAffinity None (ClientIP gets a 10800 s timeout),
externalTrafficPolicy Cluster for NodePort and LoadBalancer (the legacy spelling "Global" is
read as Cluster), internalTrafficPolicy Cluster, allocateLoadBalancerNodePorts true for
LoadBalancer.

Allocation (`allocate_service_addresses`, Kubernetes' service REST storage and allocators):
- ipFamilyPolicy (SingleStack, or RequireDualStack for headless services without selector)
  and ipFamilies ([the family of the service CIDR]) are set here, because they depend on the
  CIDR; hexlane serves single-stack Service CIDRs only.
- ClusterIP: a requested address is honoured when it lies inside the CIDR and is free; `None`
  makes the Service headless; otherwise an address is chosen: the lowest free one when
  `rng_seed` is None (predictable for a fresh lab), else a pseudo-random one from the upper
  part of the range first as Kubernetes does since 1.24 (the lower part is left for static
  requests). The network address, the IPv4 broadcast address and the CIDR's first address
  (the `default/kubernetes` Service's, see `kubernetes_service_ip`) are never chosen.
- NodePorts in 30000-32767 for NodePort and LoadBalancer Services (not for LoadBalancer with
  `allocateLoadBalancerNodePorts: false`, though requested ones are still honoured), and a
  `healthCheckNodePort` for LoadBalancer Services with externalTrafficPolicy Local (only
  LoadBalancer, as in Kubernetes' `needsHCNodePort`).
- On update the allocated values are kept when the new body omits them (kubectl apply and
  PUT without clusterIP), clusterIP may not change, and fields that the new type no longer
  uses are dropped when unchanged (LoadBalancer -> ClusterIP releases the NodePorts).

`allocate_service_addresses` first runs `validate_service` (Kubernetes' ValidateService for
the fields that matter: type, ports and their names, protocols and targetPorts, duplicates,
traffic policies, session affinity, externalName, externalIPs, loadBalancerIP, wrong JSON
types), so a bad body is refused before anything is allocated.

Problems are raised together as one `InputError` with Kubernetes' field paths and messages
(`spec.clusterIPs[0]: Invalid value: "10.43.0.10": failed to allocate IP 10.43.0.10:
provided IP is already allocated`), which the server returns as a 422 Invalid.
"""

from __future__ import annotations

import copy
import functools
import ipaddress
import random
import re
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from hexlane.model.errors import InputError, Problem

NODE_PORT_RANGE = (30000, 32767)
DEFAULT_SERVICE_CIDR = "10.43.0.0/16"
CLIENT_IP_TIMEOUT_SECONDS = 10800

_IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# --- defaulting ----------------------------------------------------------------------------------


def default_service(obj: dict) -> dict:
    """The Service as the apiserver's defaulting leaves it (a new dict)."""
    svc = copy.deepcopy(obj)
    spec = svc.get("spec")
    if not isinstance(spec, dict):
        spec = svc["spec"] = {}
    svc_type = spec.setdefault("type", "ClusterIP") or "ClusterIP"
    spec["type"] = svc_type

    if not spec.get("sessionAffinity"):
        spec["sessionAffinity"] = "None"
    if spec["sessionAffinity"] == "ClientIP":
        config = spec.get("sessionAffinityConfig")
        if not isinstance(config, dict):
            config = spec["sessionAffinityConfig"] = {}
        client_ip = config.get("clientIP")
        if not isinstance(client_ip, dict):
            client_ip = config["clientIP"] = {}
        if client_ip.get("timeoutSeconds") in (None, 0):
            client_ip["timeoutSeconds"] = CLIENT_IP_TIMEOUT_SECONDS

    for port in _l(spec.get("ports")):
        if not isinstance(port, dict):
            continue
        if not port.get("protocol"):
            port["protocol"] = "TCP"
        if port.get("targetPort") in (None, 0, "") and "port" in port:
            port["targetPort"] = port["port"]

    if spec.get("externalTrafficPolicy") == "Global":
        spec["externalTrafficPolicy"] = "Cluster"
    if svc_type in ("NodePort", "LoadBalancer") and not spec.get("externalTrafficPolicy"):
        spec["externalTrafficPolicy"] = "Cluster"
    if svc_type != "ExternalName" and not spec.get("internalTrafficPolicy"):
        spec["internalTrafficPolicy"] = "Cluster"
    if svc_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is None:
        spec["allocateLoadBalancerNodePorts"] = True
    return svc


# --- what a Service holds ------------------------------------------------------------------------


def service_allocations(obj: dict | None) -> tuple[set[str], set[int]]:
    """The cluster IPs and node ports (NodePorts and healthCheckNodePort) `obj` holds."""
    ips: set[str] = set()
    ports: set[int] = set()
    if not obj:
        return ips, ports
    spec = _d(obj.get("spec"))
    for ip in [spec.get("clusterIP"), *_l(spec.get("clusterIPs"))]:
        if isinstance(ip, str) and ip and ip != "None":
            ips.add(_canonical_ip(ip))
    for port in _l(spec.get("ports")):
        if isinstance(port, dict) and _is_port(port.get("nodePort")):
            ports.add(port["nodePort"])
    if _is_port(spec.get("healthCheckNodePort")):
        ports.add(spec["healthCheckNodePort"])
    return ips, ports


def kubernetes_service_ip(service_cidr: str) -> str:
    """The address of the `default/kubernetes` Service: the CIDR's first host address."""
    net = ipaddress.ip_network(service_cidr, strict=False)
    return str(net.network_address + 1)


# --- allocation ----------------------------------------------------------------------------------


class Taken(Protocol):
    """The values taken (canonical IP strings or port numbers): `in` and `len`."""

    def __contains__(self, value: object, /) -> bool: ...

    def __len__(self) -> int: ...


class _Except:
    """`base` less `own` (what the Service being written holds itself), plus `added`."""

    __slots__ = ("added", "base", "own")

    def __init__(self, base: Taken, own: set[Any]) -> None:
        self.base = base
        self.own = own
        self.added: set[Any] = set()

    def __contains__(self, value: object) -> bool:
        return value in self.added or (value not in self.own and value in self.base)

    def __len__(self) -> int:  # an upper bound, which is what the scans need
        return len(self.base) + len(self.added)


def allocate_service_addresses(obj: dict, old: dict | None, *, service_cidr: str,
                               taken_ips: Taken, taken_node_ports: Taken,
                               rng_seed: int | None = None) -> dict:
    """`obj` (already defaulted) with its addresses and ports allocated or checked.

    `taken_ips`/`taken_node_ports` are those held by every Service; whatever `old` (the
    stored version of this Service, on update) holds counts as free for it.
    """
    invalid = validate_service(obj)
    if invalid:
        raise InputError(invalid)
    svc = copy.deepcopy(obj)
    spec = svc["spec"]
    old_spec = _d(_d(old).get("spec"))
    net = ipaddress.ip_network(service_cidr, strict=False)
    own_ips, own_ports = service_allocations(old)
    ips_taken = _Except(taken_ips, own_ips)
    ports_taken = _Except(taken_node_ports, own_ports)
    rng = random.Random(rng_seed) if rng_seed is not None else None
    problems: list[Problem] = []

    svc_type = spec.get("type") or "ClusterIP"
    if old is not None:
        _keep_allocated_values(spec, old_spec)
        _drop_type_dependent_fields(spec, old_spec)

    if svc_type == "ExternalName":
        for key in ("clusterIP", "clusterIPs"):
            if spec.get(key):
                problems.append(Problem("Forbidden: may not be set for type `ExternalName`",
                                        f"spec.{key}"))
    else:
        _families(spec, net, problems)
        _cluster_ip(spec, old_spec if old is not None else None, net, ips_taken, rng, problems)
    ports_taken.added |= _node_ports(spec, svc_type, ports_taken, rng, problems)
    _health_check_node_port(spec, svc_type, ports_taken, rng, problems)

    if problems:
        raise InputError(problems)
    return svc


def _keep_allocated_values(spec: dict, old_spec: dict) -> None:
    """Kubernetes' patchAllocatedValues: an update that omits allocated values keeps them."""
    old_type = old_spec.get("type") or "ClusterIP"
    new_type = spec.get("type") or "ClusterIP"
    if _needs_cluster_ip(old_type) and _needs_cluster_ip(new_type):
        if not spec.get("clusterIP") and old_spec.get("clusterIP"):
            spec["clusterIP"] = old_spec["clusterIP"]
        if not spec.get("clusterIPs") and old_spec.get("clusterIPs") \
                and spec.get("clusterIP") == old_spec.get("clusterIP"):
            spec["clusterIPs"] = list(_l(old_spec["clusterIPs"]))
    if _needs_node_ports(old_spec) and _needs_node_ports(spec):
        old_ports = [p for p in _l(old_spec.get("ports")) if isinstance(p, dict)]
        for port in _l(spec.get("ports")):
            if not isinstance(port, dict) or port.get("nodePort"):
                continue
            match = _matching_port(port, old_ports)
            if match is not None and _is_port(match.get("nodePort")):
                port["nodePort"] = match["nodePort"]
    if _needs_hc_node_port(old_spec) and _needs_hc_node_port(spec) \
            and not spec.get("healthCheckNodePort") and old_spec.get("healthCheckNodePort"):
        spec["healthCheckNodePort"] = old_spec["healthCheckNodePort"]


def _drop_type_dependent_fields(spec: dict, old_spec: dict) -> None:
    """Kubernetes' dropTypeDependentFields: what the new type no longer uses and the user
    did not change is cleared (so `kubectl apply` can switch types)."""
    new_type = spec.get("type") or "ClusterIP"
    if new_type == "ExternalName":
        if spec.get("clusterIP") == old_spec.get("clusterIP"):
            spec.pop("clusterIP", None)
        if spec.get("clusterIPs") == old_spec.get("clusterIPs"):
            spec.pop("clusterIPs", None)
        for key in ("ipFamilies", "ipFamilyPolicy"):
            if spec.get(key) == old_spec.get(key):
                spec.pop(key, None)
    if _needs_node_ports(old_spec) and not _needs_node_ports(spec):
        old_node_ports = {p.get("nodePort") for p in _l(old_spec.get("ports"))
                          if isinstance(p, dict)}
        for port in _l(spec.get("ports")):
            if isinstance(port, dict) and port.get("nodePort") in old_node_ports:
                port.pop("nodePort", None)
    if _needs_hc_node_port(old_spec) and not _needs_hc_node_port(spec) \
            and spec.get("healthCheckNodePort") == old_spec.get("healthCheckNodePort"):
        spec.pop("healthCheckNodePort", None)
    if new_type != "LoadBalancer":
        for key in ("allocateLoadBalancerNodePorts", "loadBalancerClass"):
            if key in spec and spec.get(key) == old_spec.get(key):
                spec.pop(key, None)
    if new_type not in ("NodePort", "LoadBalancer") and not spec.get("externalIPs") \
            and spec.get("externalTrafficPolicy") == old_spec.get("externalTrafficPolicy"):
        spec.pop("externalTrafficPolicy", None)


def _families(spec: dict, net: _IPNetwork, problems: list[Problem]) -> None:
    family = "IPv4" if net.version == 4 else "IPv6"
    headless = spec.get("clusterIP") == "None"
    policy = spec.get("ipFamilyPolicy")
    if policy is None:
        policy = "RequireDualStack" if headless and not spec.get("selector") else "SingleStack"
    if policy not in ("SingleStack", "PreferDualStack", "RequireDualStack"):
        problems.append(Problem(
            f'Unsupported value: "{policy}": supported values: "PreferDualStack", '
            '"RequireDualStack", "SingleStack"', "spec.ipFamilyPolicy"))
        return
    if policy == "RequireDualStack" and not (headless and not spec.get("selector")):
        problems.append(Problem(
            'Invalid value: "RequireDualStack": this cluster is not configured for '
            "dual-stack services", "spec.ipFamilyPolicy"))
    families = spec.get("ipFamilies")
    if families:
        if not isinstance(families, list):
            problems.append(Problem("Invalid value: must be a list of IP families",
                                    "spec.ipFamilies"))
            return
        for i, fam in enumerate(families):
            if fam not in ("IPv4", "IPv6"):
                problems.append(Problem(
                    f'Unsupported value: "{fam}": supported values: "IPv4", "IPv6"',
                    f"spec.ipFamilies[{i}]"))
            elif i == 0 and fam != family:
                problems.append(Problem(f'Invalid value: "{fam}": not configured on this '
                                        "cluster", f"spec.ipFamilies[{i}]"))
        if len(families) > 1 and policy == "SingleStack":
            problems.append(Problem(
                f"Invalid value: {_go_list(families)}: when spec.ipFamilyPolicy is set to "
                "SingleStack, ipFamilies must contain only one entry", "spec.ipFamilies"))
    spec["ipFamilyPolicy"] = policy
    spec["ipFamilies"] = [family]


def _cluster_ip(spec: dict, old_spec: dict | None, net: _IPNetwork, taken: Taken,
                rng: random.Random | None, problems: list[Problem]) -> None:
    requested = spec.get("clusterIP") or ""
    listed = spec.get("clusterIPs") or []
    if not isinstance(listed, list):
        problems.append(Problem("Invalid value: must be a list of IP addresses",
                                "spec.clusterIPs"))
        return
    if listed and requested and listed[0] != requested:
        problems.append(Problem(f'Invalid value: {_go_list(listed)}: must match clusterIP '
                                "when both are specified", "spec.clusterIPs[0]"))
        return
    requested = requested or (listed[0] if listed else "")
    if len(listed) > 1:
        problems.append(Problem(f"Invalid value: {_go_list(listed)}: this cluster is not "
                                "configured for dual-stack services", "spec.clusterIPs"))
        return

    old_ip = (old_spec or {}).get("clusterIP") or ""
    if old_spec is not None and old_ip and requested != old_ip \
            and _needs_cluster_ip(old_spec.get("type") or "ClusterIP"):
        problems.append(Problem(f"Invalid value: {_go_list([requested])}: may not change "
                                "once set", "spec.clusterIPs[0]"))
        return

    if requested == "None":
        spec["clusterIP"] = "None"
        spec["clusterIPs"] = ["None"]
        return
    if requested:
        try:
            addr = ipaddress.ip_address(requested)
        except ValueError:
            problems.append(Problem(f'Invalid value: "{requested}": must be a valid IP '
                                    "address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                                    "spec.clusterIPs[0]"))
            return
        if requested == old_ip:  # kept from the stored Service: already ours
            spec["clusterIP"] = requested
            spec["clusterIPs"] = [requested]
            return
        if addr not in net or addr == net.network_address or (
                net.version == 4 and addr == net.broadcast_address and net.prefixlen < 31):
            problems.append(Problem(
                f'Invalid value: "{requested}": failed to allocate IP {requested}: the provided '
                f"IP ({requested}) is not in the valid range. The range of valid IPs is {net}",
                "spec.clusterIPs[0]"))
            return
        if str(addr) in taken:
            problems.append(Problem(f'Invalid value: "{requested}": failed to allocate IP '
                                    f"{requested}: provided IP is already allocated",
                                    "spec.clusterIPs[0]"))
            return
        spec["clusterIP"] = requested
        spec["clusterIPs"] = [requested]
        return

    chosen = _choose_ip(net, taken, rng)
    if chosen is None:
        problems.append(Problem(
            f"Internal error: failed to allocate a serviceIP: range is full ({net})",
            "spec.clusterIPs"))
        return
    spec["clusterIP"] = chosen
    spec["clusterIPs"] = [chosen]


def _choose_ip(net: _IPNetwork, taken: Taken, rng: random.Random | None
               ) -> str | None:
    base = int(net.network_address)
    # Offsets 0 (network) and 1 (default/kubernetes) are never handed out, nor the IPv4
    # broadcast address.
    first = 2
    last = net.num_addresses - (2 if net.version == 4 else 1)
    if net.version == 6:
        last = min(last, first + (1 << 20))  # Kubernetes caps ranges at 2^20 addresses too
    if last < first:
        return None

    def free(offset: int) -> bool:
        return str(ipaddress.ip_address(base + offset)) not in taken

    offset = _choose(first, last, free, rng, limit=lambda: len(taken))
    return None if offset is None else str(ipaddress.ip_address(base + offset))


def _choose(first: int, last: int, free: Any, rng: random.Random | None, *,
            limit: Callable[[], int]) -> int | None:
    """A free value in [first, last]: the lowest without `rng`; with it a random one from
    the upper (dynamic) band first, then the lower, like Kubernetes' bitmap allocators.
    `limit()` bounds how many values can be taken (asked only when a first probe fails)."""
    size = last - first + 1
    if rng is None:
        # At most `limit` values can be taken, so the scan ends within limit + 1 steps.
        for value in range(first, min(last, first + limit()) + 1):
            if free(value):
                return value
        return None
    static = min(max(16, size // 16), 256) if size > 16 else 0
    bands = [(first + static, last), (first, first + static - 1)]
    for low, high in bands:
        if high < low:
            continue
        width = high - low + 1
        start = rng.randrange(width)
        if free(low + start):
            return low + start
        for step in range(1, min(width, limit() + 1)):
            value = low + (start + step) % width
            if free(value):
                return value
    return None


def _node_ports(spec: dict, svc_type: str, taken: Taken, rng: random.Random | None,
                problems: list[Problem]) -> set[int]:
    """Check requested NodePorts and allocate the missing ones; returns those now held."""
    held: set[int] = set()
    ports = spec.get("ports") or []
    if not isinstance(ports, list):
        return held
    wants = _needs_node_ports(spec)
    seen: dict[tuple[int, str], int] = {}
    low, high = NODE_PORT_RANGE
    for i, port in enumerate(ports):
        if not isinstance(port, dict):
            continue
        node_port = port.get("nodePort")
        path = f"spec.ports[{i}].nodePort"
        if node_port in (None, 0):
            port.pop("nodePort", None)
            continue
        if svc_type not in ("NodePort", "LoadBalancer"):
            problems.append(Problem(f"Forbidden: may not be used when `type` is "
                                    f"'{svc_type}'", path))
            continue
        if not _is_int(node_port):
            problems.append(Problem(f"Invalid value: {_show(node_port)}: must be an integer",
                                    path))
            continue
        key = (node_port, str(port.get("protocol") or "TCP"))
        if key in seen:
            problems.append(Problem(f"Duplicate value: {_show(node_port)}", path))
            continue
        seen[key] = i
        if not low <= node_port <= high:
            problems.append(Problem(
                f"Invalid value: {node_port}: provided port is not in the valid range. "
                f"The range of valid ports is {low}-{high}", path))
            continue
        if node_port in taken and node_port not in held:
            problems.append(Problem(f"Invalid value: {node_port}: provided port is already "
                                    "allocated", path))
            continue
        held.add(node_port)
    if not wants:
        return held
    for i, port in enumerate(ports):
        if not isinstance(port, dict) or port.get("nodePort"):
            continue
        chosen = _choose(low, high, lambda p: p not in taken and p not in held, rng,
                         limit=lambda: len(taken) + len(held))
        if chosen is None:
            problems.append(Problem("Internal error: failed to allocate a nodePort: range is "
                                    "full", f"spec.ports[{i}].nodePort"))
            continue
        port["nodePort"] = chosen
        held.add(chosen)
    return held


def _health_check_node_port(spec: dict, svc_type: str, taken: Taken,
                            rng: random.Random | None, problems: list[Problem]) -> None:
    value = spec.get("healthCheckNodePort")
    path = "spec.healthCheckNodePort"
    if not _needs_hc_node_port(spec):
        if value not in (None, 0):
            problems.append(Problem(
                f"Invalid value: {_show(value)}: may only be set when `type` is "
                "'LoadBalancer' and `externalTrafficPolicy` is 'Local'", path))
        else:
            spec.pop("healthCheckNodePort", None)
        return
    low, high = NODE_PORT_RANGE
    if value not in (None, 0):
        if not _is_int(value):
            problems.append(Problem(f"Invalid value: {_show(value)}: must be an integer", path))
        elif not low <= value <= high:
            problems.append(Problem(
                f"Invalid value: {value}: provided port is not in the valid range. "
                f"The range of valid ports is {low}-{high}", path))
        elif value in taken:
            problems.append(Problem(f"Invalid value: {value}: provided port is already "
                                    "allocated", path))
        return
    chosen = _choose(low, high, lambda p: p not in taken, rng, limit=lambda: len(taken))
    if chosen is None:
        problems.append(Problem("Internal error: failed to allocate a healthCheckNodePort: "
                                "range is full", path))
        return
    spec["healthCheckNodePort"] = chosen


# --- validation --------------------------------------------------------------------------------

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
PROTOCOLS = ("SCTP", "TCP", "UDP")
_DNS_LABEL_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_IANA_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
_DNS_LABEL_MSG = ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
                  "or '-', and must start and end with an alphanumeric character (e.g. "
                  "'my-name',  or '123-abc', regex used for validation is "
                  "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')")
_IP_MSG = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"


def validate_service(obj: dict) -> list[Problem]:
    """What Kubernetes' ValidateService rejects in a (defaulted) Service spec, with its
    paths and messages: type, ports (number, name, protocol, targetPort, duplicates),
    traffic policies, session affinity, externalName, externalIPs, loadBalancerIP, and
    fields of the wrong JSON type (which Kubernetes rejects when decoding)."""
    problems: list[Problem] = []
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return [Problem("Required value", "spec")]

    def bad(path: str, message: str) -> None:
        problems.append(Problem(message, path))

    svc_type = spec.get("type", "ClusterIP")
    if svc_type not in SERVICE_TYPES:
        bad("spec.type", f"Unsupported value: {_show(svc_type)}: supported values: "
                         f"{_quoted(SERVICE_TYPES)}")
    ports = spec.get("ports")
    if ports is not None and not isinstance(ports, list):
        bad("spec.ports", f"Invalid value: {_show(ports)}: must be a list of ports")
        ports = []
    ports = ports or []
    headless = spec.get("clusterIP") == "None"
    if not ports and not headless and svc_type not in ("ExternalName", None) \
            and svc_type in SERVICE_TYPES:
        bad("spec.ports", "Required value")
    names: set[Any] = set()
    keys: set[tuple[Any, Any]] = set()
    for i, port in enumerate(ports):
        path = f"spec.ports[{i}]"
        if not isinstance(port, dict):
            bad(path, f"Invalid value: {_show(port)}: must be an object")
            continue
        name = port.get("name")
        if len(ports) > 1 and not name:
            bad(f"{path}.name", "Required value")
        elif name:
            if not isinstance(name, str) or not _DNS_LABEL_RE.match(name) or len(name) > 63:
                bad(f"{path}.name", f"Invalid value: {_show(name)}: {_DNS_LABEL_MSG}")
            elif name in names:
                bad(f"{path}.name", f"Duplicate value: {_show(name)}")
            names.add(name)
        number = port.get("port")
        if not (isinstance(number, int) and not isinstance(number, bool)
                and 1 <= number <= 65535):
            bad(f"{path}.port", f"Invalid value: {_show(number)}: must be between 1 and "
                                "65535, inclusive")
        protocol = port.get("protocol", "TCP")
        if protocol not in PROTOCOLS:
            bad(f"{path}.protocol", f"Unsupported value: {_show(protocol)}: supported values: "
                                    f"{_quoted(PROTOCOLS)}")
        target = port.get("targetPort")
        if isinstance(target, int) and not isinstance(target, bool):
            if not 1 <= target <= 65535:
                bad(f"{path}.targetPort", f"Invalid value: {target}: must be between 1 and "
                                          "65535, inclusive")
        elif isinstance(target, str):
            if len(target) > 15 or not _IANA_NAME_RE.match(target) or "--" in target \
                    or not any(c.isalpha() for c in target):
                bad(f"{path}.targetPort", f"Invalid value: {_show(target)}: must be a port "
                                          "number or an IANA service name (at most 15 lower "
                                          "case letters, digits and '-', with a letter)")
        elif target is not None:
            bad(f"{path}.targetPort", f"Invalid value: {_show(target)}: must be a port number "
                                      "or a port name")
        node_port = port.get("nodePort")
        if node_port is not None and not _is_int(node_port):
            bad(f"{path}.nodePort", f"Invalid value: {_show(node_port)}: must be an integer")
        ident = (number, protocol)
        if ident in keys:
            bad(path, f'Duplicate value: "{number}/{protocol}"')
        keys.add(ident)

    for field_name, allowed in (("sessionAffinity", ("ClientIP", "None")),
                                ("externalTrafficPolicy", ("Cluster", "Local")),
                                ("internalTrafficPolicy", ("Cluster", "Local"))):
        value = spec.get(field_name)
        if value is not None and value not in allowed:
            bad(f"spec.{field_name}", f"Unsupported value: {_show(value)}: supported values: "
                                      f"{_quoted(allowed)}")
    timeout = _d(_d(spec.get("sessionAffinityConfig")).get("clientIP")).get("timeoutSeconds")
    if spec.get("sessionAffinity") == "ClientIP" and timeout is not None and (
            not _is_int(timeout) or not 0 < timeout <= 86400):
        bad("spec.sessionAffinityConfig.clientIP.timeoutSeconds",
            f"Invalid value: {_show(timeout)}: must be greater than 0 and less than 86400")
    if svc_type == "ExternalName" and not spec.get("externalName"):
        bad("spec.externalName", "Required value")
    external = spec.get("externalIPs")
    if external is not None and not isinstance(external, list):
        bad("spec.externalIPs", f"Invalid value: {_show(external)}: must be a list")
    for i, ip in enumerate(_l(external)):
        if not _valid_ip(ip):
            bad(f"spec.externalIPs[{i}]", f"Invalid value: {_show(ip)}: {_IP_MSG}")
    lb_ip = spec.get("loadBalancerIP")
    if lb_ip not in (None, "") and not _valid_ip(lb_ip):
        bad("spec.loadBalancerIP", f"Invalid value: {_show(lb_ip)}: {_IP_MSG}")
    for key in ("clusterIP", "ipFamilyPolicy", "externalName", "loadBalancerClass"):
        value = spec.get(key)
        if value is not None and not isinstance(value, str):
            bad(f"spec.{key}", f"Invalid value: {_show(value)}: must be a string")
    for key in ("clusterIPs", "ipFamilies"):
        value = spec.get(key)
        if value is not None and (not isinstance(value, list)
                                  or not all(isinstance(v, str) for v in value)):
            bad(f"spec.{key}", f"Invalid value: {_show(value)}: must be a list of strings")
    selector = spec.get("selector")
    if selector is not None and (not isinstance(selector, dict) or not all(
            isinstance(v, str) for v in selector.values())):
        bad("spec.selector", f"Invalid value: {_show(selector)}: must be a map of strings")
    for key in ("healthCheckNodePort",):
        value = spec.get(key)
        if value is not None and not _is_int(value):
            bad(f"spec.{key}", f"Invalid value: {_show(value)}: must be an integer")
    value = spec.get("allocateLoadBalancerNodePorts")
    if value is not None and not isinstance(value, bool):
        bad("spec.allocateLoadBalancerNodePorts", f"Invalid value: {_show(value)}: must be a "
                                                  "boolean")
    return problems


# --- small helpers -------------------------------------------------------------------------------


def _needs_cluster_ip(svc_type: str) -> bool:
    return svc_type != "ExternalName"


def _needs_node_ports(spec: dict) -> bool:
    svc_type = spec.get("type") or "ClusterIP"
    if svc_type == "NodePort":
        return True
    return svc_type == "LoadBalancer" and spec.get("allocateLoadBalancerNodePorts") is not False


def _needs_hc_node_port(spec: dict) -> bool:
    return (spec.get("type") == "LoadBalancer"
            and spec.get("externalTrafficPolicy") == "Local")


def _matching_port(port: dict, candidates: Iterable[dict]) -> dict | None:
    proto = port.get("protocol") or "TCP"
    for cand in candidates:
        if cand.get("port") == port.get("port") and (cand.get("protocol") or "TCP") == proto:
            return cand
    name = port.get("name")
    if name:
        for cand in candidates:
            if cand.get("name") == name:
                return cand
    return None


def _d(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def _l(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _valid_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return isinstance(value, str)


def _quoted(values: Iterable[str]) -> str:
    return ", ".join(f'"{v}"' for v in values)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_port(value: Any) -> bool:
    return _is_int(value) and value > 0


@functools.lru_cache(maxsize=1 << 17)
def _canonical_ip(text: str) -> str:
    # Cached: every Service write canonicalises the addresses it holds.
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return text


def _show(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _go_list(values: list[Any]) -> str:
    """How Kubernetes prints a []string in an Invalid value message."""
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"
