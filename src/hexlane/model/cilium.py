"""cilium.io LB-IPAM and L2 objects: `CiliumLoadBalancerIPPool` and `CiliumL2AnnouncementPolicy`.

Both are cluster-scoped and accepted as v2alpha1 and v2 (Cilium v1.16 serves v2alpha1; v2 is
the same schema without the deprecated `cidrs`). Behaviour follows Cilium's operator:

- A block is `cidr`, or `start` with an optional `stop` (`start` alone is one address).
  Like Cilium's `netip.ParsePrefix` + `Masked()`, a CIDR with host bits set (`10.0.0.5/24`)
  is accepted as its network (`10.0.0.0/24`); hexlane warns, since it is probably a typo.
  hexlane rejects what Cilium would silently misread or fail on at run time: `cidr`
  together with `start`, `stop` without `start`, a block with neither, start after stop,
  start and stop of different address families, and a pool without blocks.
- `allowFirstLastIPs`: "Yes", "No" or unset; only exactly "No" reserves the first and last
  address of CIDR blocks (Cilium v1.16+).
- `serviceSelector`/`nodeSelector`: None when absent (nil), kept distinct from `{}`; both
  select everything for these kinds.
- `interfaces`: RE2 regular expressions matched unanchored; none means every interface.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.model.errors import join_path
from hexlane.model.meta import (
    SPEC_STATUS_FIELDS,
    Condition,
    ObjectView,
    omit_empty,
    parse_conditions,
    read_object,
)
from hexlane.model.netaddr import IPAddress, IPNetwork, family, parse_cidr, parse_ip
from hexlane.model.reader import Problems, Reader
from hexlane.model.regex import compile_re2, re2_problem
from hexlane.model.selectors import LabelSelector

ALLOW_FIRST_LAST = ("Yes", "No")


@dataclass(frozen=True, slots=True)
class IPBlock:
    """One block of a pool: the inclusive range `first`..`last` and how it was written."""

    first: IPAddress
    last: IPAddress
    cidr: str | None = None
    start: str | None = None
    stop: str | None = None

    @property
    def from_cidr(self) -> bool:
        return self.cidr is not None

    @property
    def network(self) -> IPNetwork | None:
        if self.cidr is None:
            return None
        return parse_cidr(self.cidr)[0]

    @property
    def family(self) -> str:
        return family(self.first)

    @property
    def size(self) -> int:
        return int(self.last) - int(self.first) + 1

    def __contains__(self, ip: object) -> bool:
        if isinstance(ip, str):
            try:
                ip = parse_ip(ip)
            except ValueError:
                return False
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return (ip.version == self.first.version
                and int(self.first) <= int(ip) <= int(self.last))

    def overlaps(self, other: IPBlock) -> bool:
        return (self.first.version == other.first.version
                and int(self.first) <= int(other.last) and int(other.first) <= int(self.last))

    def describe(self) -> str:
        return f"{self.first} - {self.last}"

    @classmethod
    def from_cidr_text(cls, cidr: str) -> IPBlock:
        net, _ = parse_cidr(cidr)
        return cls(first=net.network_address, last=net.broadcast_address, cidr=cidr)

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> IPBlock:
        p = Problems()
        block = cls.parse_from(Reader.root(obj, path, p, what="a block"))
        p.check()
        assert block is not None
        return block

    @classmethod
    def parse_from(cls, r: Reader) -> IPBlock | None:
        """The block at r, or None (with problems recorded) when it is unusable."""
        r.unknown_fields(("cidr", "start", "stop"), what="a pool block")
        cidr = r.opt_string("cidr", what="a CIDR such as 10.0.0.0/24")
        start = r.opt_string("start", what="an IP address")
        stop = r.opt_string("stop", what="an IP address")
        # An empty string is how Go's omitempty fields look when unset: treat it as absent.
        cidr, start, stop = cidr or None, start or None, stop or None
        bad = any(r.has(k) and not isinstance(r.get(k), str) for k in ("cidr", "start", "stop"))
        if bad:
            return None
        if cidr is not None and (start is not None or stop is not None):
            r.problems.error(r.path, "a block has both cidr and start: expected either cidr "
                                     "or start (with optional stop), not both")
            return None
        if cidr is not None:
            parsed = r.try_parse("cidr", parse_cidr, cidr)
            if parsed is None:
                return None
            net, host_bits = parsed
            if host_bits:
                r.warn("cidr", f"{cidr!r} has host bits set; it means {net} (as in Cilium)")
            return cls(first=net.network_address, last=net.broadcast_address, cidr=cidr)
        if start is None:
            if stop is not None:
                r.error("start", f"stop {stop!r} given without start: expected start "
                                 "(and optionally stop) or cidr")
            else:
                r.problems.error(r.path, "empty block: expected cidr, or start with an "
                                         "optional stop")
            return None
        first = r.try_parse("start", parse_ip, start)
        last = first if stop is None else r.try_parse("stop", parse_ip, stop)
        if first is None or last is None:
            return None
        if first.version != last.version:
            r.error("stop", f"start {start} is {family(first)} but stop {stop} is "
                            f"{family(last)}: a block must stay within one address family")
            return None
        if int(first) > int(last):
            r.error("stop", f"start {start} is after stop {stop}: expected start <= stop")
            return None
        return cls(first=first, last=last, start=start, stop=stop)

    def to_dict(self) -> dict[str, Any]:
        if self.cidr is not None:
            return {"cidr": self.cidr}
        d = {"start": self.start or str(self.first)}
        if self.stop is not None:
            d["stop"] = self.stop
        return d


@dataclass(frozen=True, slots=True)
class LBIPPool(ObjectView):
    """A CiliumLoadBalancerIPPool."""

    KIND = "CiliumLoadBalancerIPPool"
    API_VERSIONS = ("cilium.io/v2alpha1", "cilium.io/v2")
    NAMESPACED = False

    blocks: tuple[IPBlock, ...] = ()
    allow_first_last_ips: str | None = None
    service_selector: LabelSelector | None = None
    disabled: bool = False
    conditions: tuple[Condition, ...] = ()

    @property
    def reserve_first_last(self) -> bool:
        """True when the first and last address of CIDR blocks are not handed out."""
        return self.allow_first_last_ips == "No"

    def selects(self, service_labels: Mapping[str, str]) -> bool:
        """Whether the selector matches (labels as LB-IPAM sees them: the caller adds the
        io.kubernetes.service.namespace/name labels). A nil selector selects everything."""
        return self.service_selector is None or self.service_selector.matches(service_labels)

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> LBIPPool:
        r, api_version, meta = read_object(cls, obj, path)
        r.unknown_fields(SPEC_STATUS_FIELDS, what="a CiliumLoadBalancerIPPool")
        spec = r.mapping("spec", required=True, what="an object with blocks")
        blocks: list[IPBlock] = []
        allow = None
        selector = None
        disabled = False
        if spec is not None:
            known = ["blocks", "allowFirstLastIPs", "serviceSelector", "disabled"]
            if api_version == "cilium.io/v2alpha1":
                known.append("cidrs")
            spec.unknown_fields(known, what=f"a {api_version} pool spec")
            block_readers = spec.objects("blocks", what="a block (cidr, or start/stop)")
            if api_version == "cilium.io/v2alpha1" and spec.has("cidrs"):
                spec.warn("cidrs", "cidrs is deprecated: use blocks (same entries)")
                block_readers += spec.objects("cidrs", what="a block (cidr)")
            if all(spec.get(k) in (None, []) for k in ("blocks", "cidrs")):
                spec.error("blocks", "required field is missing: expected at least one block "
                                     "(cidr, or start with optional stop); a pool without "
                                     "blocks never allocates")
            for br in block_readers:
                b = IPBlock.parse_from(br)
                if b is not None:
                    blocks.append(b)
            _warn_overlaps(spec, block_readers, blocks)
            v = spec.get("allowFirstLastIPs")
            if isinstance(v, bool):
                spec.error("allowFirstLastIPs", f"expected \"Yes\" or \"No\", got the boolean "
                           f"{str(v).lower()} (YAML reads unquoted yes/no as booleans: write "
                           f"\"{'Yes' if v else 'No'}\" in quotes)")
            else:
                allow = spec.opt_string("allowFirstLastIPs", choices=ALLOW_FIRST_LAST)
            selector = spec.selector("serviceSelector")
            disabled = spec.boolean("disabled")
        status = r.mapping("status")
        conditions = parse_conditions(status)
        warnings = r.problems.check()
        return cls(meta=meta, blocks=tuple(blocks), allow_first_last_ips=allow,
                   service_selector=selector, disabled=disabled, conditions=conditions,
                   api_version=api_version, warnings=warnings)

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"blocks": [b.to_dict() for b in self.blocks]}
        if self.allow_first_last_ips is not None:
            spec["allowFirstLastIPs"] = self.allow_first_last_ips
        if self.service_selector is not None:
            spec["serviceSelector"] = self.service_selector.to_dict()
        spec["disabled"] = self.disabled
        status = omit_empty(conditions=[c.to_dict() for c in self.conditions])
        return self.object_dict(spec=spec, **omit_empty(status=status))


@dataclass(frozen=True, slots=True)
class L2AnnouncementPolicy(ObjectView):
    """A CiliumL2AnnouncementPolicy."""

    KIND = "CiliumL2AnnouncementPolicy"
    API_VERSIONS = ("cilium.io/v2alpha1", "cilium.io/v2")
    NAMESPACED = False

    node_selector: LabelSelector | None = None
    service_selector: LabelSelector | None = None
    interfaces: tuple[str, ...] = ()
    external_ips: bool = False
    load_balancer_ips: bool = False
    conditions: tuple[Condition, ...] = ()

    def selects_node(self, node_labels: Mapping[str, str]) -> bool:
        return self.node_selector is None or self.node_selector.matches(node_labels)

    def selects_service(self, service_labels: Mapping[str, str]) -> bool:
        return self.service_selector is None or self.service_selector.matches(service_labels)

    def matches_interface(self, ifname: str) -> bool:
        """Unanchored match against any pattern, as Go's regexp.MatchString; none = all."""
        return not self.interfaces or any(compile_re2(p).search(ifname)
                                          for p in self.interfaces)

    @classmethod
    def parse(cls, obj: Mapping[str, Any], path: str = "") -> L2AnnouncementPolicy:
        r, api_version, meta = read_object(cls, obj, path)
        r.unknown_fields(SPEC_STATUS_FIELDS, what="a CiliumL2AnnouncementPolicy")
        spec = r.section("spec")
        spec.unknown_fields(("nodeSelector", "serviceSelector", "interfaces", "externalIPs",
                             "loadBalancerIPs"), what="an L2 announcement policy spec")
        interfaces = []
        for pattern, ppath in spec.strings("interfaces", what="a regular expression"):
            if (why := re2_problem(pattern)) is not None:
                spec.problems.error(ppath, why)
            else:
                interfaces.append(pattern)
        external_ips = spec.boolean("externalIPs")
        lb_ips = spec.boolean("loadBalancerIPs")
        if not external_ips and not lb_ips:
            spec.warn("loadBalancerIPs", "neither externalIPs nor loadBalancerIPs is true, "
                                         "so this policy announces nothing")
        node_sel = spec.selector("nodeSelector")
        svc_sel = spec.selector("serviceSelector")
        conditions = parse_conditions(r.mapping("status"))
        warnings = r.problems.check()
        return cls(meta=meta, node_selector=node_sel, service_selector=svc_sel,
                   interfaces=tuple(interfaces), external_ips=external_ips,
                   load_balancer_ips=lb_ips, conditions=conditions, api_version=api_version,
                   warnings=warnings)

    def to_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"externalIPs": self.external_ips,
                                "loadBalancerIPs": self.load_balancer_ips}
        if self.node_selector is not None:
            spec["nodeSelector"] = self.node_selector.to_dict()
        if self.service_selector is not None:
            spec["serviceSelector"] = self.service_selector.to_dict()
        if self.interfaces:
            spec["interfaces"] = list(self.interfaces)
        status = omit_empty(conditions=[c.to_dict() for c in self.conditions])
        return self.object_dict(spec=spec, **omit_empty(status=status))


def _warn_overlaps(spec: Reader, readers: list[Reader], blocks: list[IPBlock]) -> None:
    """Cilium marks a pool whose own blocks overlap as conflicting and disables it all."""
    if len(blocks) != len(readers):
        return  # some blocks are already reported; pairing paths to blocks needs all of them
    for i, a in enumerate(blocks):
        for j in range(i + 1, len(blocks)):
            b = blocks[j]
            if a.overlaps(b):
                spec.problems.warn(readers[j].path, f"block {b.describe()} overlaps "
                                   f"{join_path('', readers[i].path)} ({a.describe()}): "
                                   "Cilium marks the pool conflicting and allocates nothing "
                                   "from it")
