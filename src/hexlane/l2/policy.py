"""CiliumL2AnnouncementPolicy as Cilium's L2 announcer reads it, and its `io.cilium/bad-*`
conditions.

The apiserver stores a policy whose selector or interface regex cannot be used (the CRD's
schema does not check them), so the announcer reads the raw object part by part: a bad node
selector, interface regex or service selector makes the policy announce nothing and sets a
condition of that type on it (status "True", reason "error", the problem as message); once
fixed, a condition that was set turns "False" with no message, and one never set stays absent
(Cilium's `updatePolicyStatus`). Interface regexes are Go RE2, matched unanchored; an empty
list selects every device of the node. A nil selector selects everything, `{}` too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from hexlane.model.errors import InputError
from hexlane.model.regex import compile_re2, re2_problem
from hexlane.model.selectors import LabelSelector

BAD_NODE_SELECTOR = "io.cilium/bad-node-selector"
BAD_INTERFACE_REGEX = "io.cilium/bad-interface-regex"
BAD_SERVICE_SELECTOR = "io.cilium/bad-service-selector"
CONDITION_TYPES = (BAD_NODE_SELECTOR, BAD_INTERFACE_REGEX, BAD_SERVICE_SELECTOR)
REASON = "error"


@dataclass(frozen=True, slots=True)
class Policy:
    """A usable policy: what the announcer needs of it."""

    name: str
    node_selector: LabelSelector | None = None
    service_selector: LabelSelector | None = None
    interfaces: tuple[str, ...] = ()
    external_ips: bool = False
    load_balancer_ips: bool = False

    def selects_node(self, labels: Mapping[str, str]) -> bool:
        return self.node_selector is None or self.node_selector.matches(labels)

    def selects_service(self, labels: Mapping[str, str]) -> bool:
        return self.service_selector is None or self.service_selector.matches(labels)

    def devices(self, devices: Sequence[str]) -> tuple[str, ...]:
        """The node's devices this policy announces on (any regex, unanchored; none: all)."""
        if not self.interfaces:
            return tuple(devices)
        patterns = [compile_re2(p) for p in self.interfaces]
        return tuple(d for d in devices if any(p.search(d) for p in patterns))


@dataclass(frozen=True, slots=True)
class PolicyRead:
    """A policy read from its object: usable (`policy`) or not, and what is wrong by
    condition type (every type present: None where that part is fine or absent)."""

    name: str
    policy: Policy | None
    problems: Mapping[str, str | None]
    generation: int | None = None


def read_policy(obj: Mapping[str, Any]) -> PolicyRead:
    """Read one CiliumL2AnnouncementPolicy object (as the API serves it)."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name", ""))
    generation = meta.get("generation")
    spec = obj.get("spec") or {}
    if not isinstance(spec, Mapping):
        spec = {}
    problems: dict[str, str | None] = dict.fromkeys(CONDITION_TYPES)
    node_sel = _selector(spec, "nodeSelector", BAD_NODE_SELECTOR, problems)
    interfaces = _interfaces(spec.get("interfaces"), problems)
    svc_sel = _selector(spec, "serviceSelector", BAD_SERVICE_SELECTOR, problems)
    usable = not any(problems.values())
    policy = Policy(name=name, node_selector=node_sel, service_selector=svc_sel,
                    interfaces=interfaces, external_ips=spec.get("externalIPs") is True,
                    load_balancer_ips=spec.get("loadBalancerIPs") is True) if usable else None
    return PolicyRead(name, policy, problems,
                      generation if isinstance(generation, int) else None)


def _selector(spec: Mapping[str, Any], key: str, condition: str,
              problems: dict[str, str | None]) -> LabelSelector | None:
    raw = spec.get(key)
    if raw is None:
        return None
    try:
        return LabelSelector.parse(raw, key)
    except InputError as err:
        problems[condition] = str(err)
        return None


def _interfaces(raw: Any, problems: dict[str, str | None]) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
        problems[BAD_INTERFACE_REGEX] = "interfaces: expected a list of regular expressions"
        return ()
    for pattern in raw:
        if (why := re2_problem(pattern)) is not None:
            problems[BAD_INTERFACE_REGEX] = why
            return ()
    return tuple(raw)


def policy_conditions(read: PolicyRead, current: Sequence[Mapping[str, Any]],
                      now: datetime) -> list[dict[str, Any]] | None:
    """The policy's `status.conditions` after this read (as the API holds them), or None
    when they need no write.

    A problem sets (or keeps) its condition "True" with the problem as message; a condition
    of a fixed part turns "False"; a type never set and not wrong stays absent. Conditions
    of other types are kept as they are.
    """
    out = [dict(c) for c in current]
    stamp = now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    changed = False
    for ctype in CONDITION_TYPES:
        why = read.problems.get(ctype)
        index = next((i for i, c in enumerate(out) if c.get("type") == ctype), None)
        if index is None and why is None:
            continue
        status, message = ("True", why) if why is not None else ("False", "")
        old = out[index] if index is not None else {}
        if (old.get("status"), old.get("reason"), old.get("message", "")) == \
                (status, REASON, message):
            continue
        new = {"type": ctype, "status": status, "reason": REASON, "message": message,
               "lastTransitionTime": (old.get("lastTransitionTime") or stamp)
               if old.get("status") == status else stamp}
        if read.generation is not None:
            new["observedGeneration"] = read.generation
        if index is None:
            out.append(new)
        else:
            out[index] = new
        changed = True
    return out if changed else None
