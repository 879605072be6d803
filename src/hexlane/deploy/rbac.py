"""Who may do what: the service accounts, their least-privilege rules, and an RBAC evaluator
(pure).

Each component runs under a service account of its own in the release's namespace:

    hexlane                 the agents (DaemonSet `hexlane`)
    hexlane-operator        the operator (Deployment `hexlane-operator`)
    hexlane-hubble-relay    Hubble Relay (reads the Nodes to find its peers)

(Hubble UI talks only to the relay: its pods mount no API token.) `cluster_rules(component,
values)` are the rules of the component's ClusterRole and `namespaced_rules(...)` those of its
Role in the release's namespace (Leases and Secrets: nothing outside it), each computed from
the values: only what the parts those values switch on request. They were read off the
embedded apiserver's audit log (`hexlane.apiserver.audit`) and are held to it by
`tests/deploy/test_rbac_audit.py`: every request the lab's agents, operator and relay make is
granted here, and every permission here was used there or is in `NEEDED_ELSEWHERE` with the
reason it is needed although the shared lab does not exercise it.

`allows(rules, request)` evaluates Kubernetes' RBAC rule matching (verbs, apiGroups, resources
with `resource/subresource`, resourceNames, `*`) for one request; `permissions(rules)` lists
every (apiGroup, resource, verb, name) a set of rules grants, for the converse check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hexlane.config import Values

NAMESPACE = "kube-system"
AGENT = "hexlane"
OPERATOR = "hexlane-operator"
RELAY = "hexlane-hubble-relay"
ACCOUNTS = (AGENT, OPERATOR, RELAY)

CILIUM = "cilium.io"
COORDINATION = "coordination.k8s.io"
DISCOVERY = "discovery.k8s.io"
WATCH = ("list", "watch")
OPERATOR_LEASE = "cilium-operator-resource-lock"
L2_KEY_SECRET = "hexlane-l2-heartbeat"

Rule = dict[str, Any]  # a PolicyRule as Kubernetes writes it


def service_account_user(account: str, namespace: str = NAMESPACE) -> str:
    """The user name Kubernetes gives a service account's token."""
    return f"system:serviceaccount:{namespace}:{account}"


def _rule(group: str, resources: Sequence[str], verbs: Sequence[str],
          names: Sequence[str] = ()) -> Rule:
    rule: Rule = {"apiGroups": [group], "resources": list(resources), "verbs": list(verbs)}
    if names:
        rule["resourceNames"] = list(names)
    return rule


def _l2(values: Values) -> tuple[bool, bool]:
    """(L2 announcements by Leases, by hexlane's heartbeat election)."""
    l2 = values.l2announcements
    return (l2.enabled and l2.election == "lease", l2.enabled and l2.election == "hexlane")


def _enforcing(values: Values) -> bool:
    return str(values.get("policyEnforcementMode", "default")).lower() != "never"


def cluster_rules(component: str, values: Values) -> list[Rule]:
    """The ClusterRole rules of `component` (one of ACCOUNTS) for these values."""
    if component == AGENT:
        rules = [
            # the node manager, the load balancer and the routes; Pods: this node's for
            # the endpoints, every node's to name Hubble's flows
            _rule("", ("nodes", "services", "pods"), WATCH),
            _rule(DISCOVERY, ("endpointslices",), WATCH),
            # security identities: the pods' namespaces' labels, CiliumIdentities read,
            # created when new, read back after a create conflict
            _rule("", ("namespaces",), WATCH),
            _rule(CILIUM, ("ciliumidentities",), (*WATCH, "get", "create")),
        ]
        if values.kube_proxy_replacement and _enforcing(values):
            # network policy (enforced in the load balancer's pod hooks); Pods of every
            # node for the ipcache
            rules += [_rule("networking.k8s.io", ("networkpolicies",), WATCH),
                      _rule(CILIUM, ("ciliumnetworkpolicies",
                                     "ciliumclusterwidenetworkpolicies"), WATCH)]
        if values.ipam.mode == "cluster-pool":
            rules.append(_rule(CILIUM, ("ciliumnodes",), WATCH))
        if values.l2announcements.enabled:
            rules += [_rule(CILIUM, ("ciliuml2announcementpolicies",), WATCH),
                      _rule(CILIUM, ("ciliuml2announcementpolicies/status",), ("patch",))]
        return rules
    if component == OPERATOR:
        rules = [
            _rule(CILIUM, ("ciliumloadbalancerippools",), WATCH),
            _rule(CILIUM, ("ciliumloadbalancerippools/status",), ("patch", "update")),
            _rule("", ("services",), WATCH),
            _rule("", ("services/status",), ("patch", "update")),
            # identity GC: which identities some pod's labels still match, the rest deleted
            _rule("", ("pods", "namespaces"), WATCH),
            _rule(CILIUM, ("ciliumidentities",), (*WATCH, "delete")),
        ]
        if values.ipam.mode == "cluster-pool":
            rules += [_rule("", ("nodes",), WATCH),
                      _rule(CILIUM, ("ciliumnodes",), (*WATCH, "create", "patch", "delete"))]
        return rules
    if component == RELAY:
        return [_rule("", ("nodes",), WATCH)]
    raise ValueError(f"no such component: {component!r}")


def namespaced_rules(component: str, values: Values) -> list[Rule]:
    """The rules of `component`'s Role in the release's namespace (may be none)."""
    lease_mode, heartbeat = _l2(values)
    if component == AGENT:
        rules = []
        if values.l2announcements.enabled:
            # Lease election: one Lease per announced Service (Cilium's cilium-l2announce-*);
            # either election: the ones nobody holds (left by the other) are collected.
            verbs = ("get", "list", "create", "update", "delete") if lease_mode \
                else ("list", "delete")
            rules.append(_rule(COORDINATION, ("leases",), verbs))
        if heartbeat:
            rules.append(_rule("", ("secrets",), ("get",), (L2_KEY_SECRET,)))
        return rules
    if component == OPERATOR:
        rules = [
            _rule(COORDINATION, ("leases",), ("create",)),  # a name cannot bound a create
            _rule(COORDINATION, ("leases",), ("get", "update"), (OPERATOR_LEASE,)),
        ]
        if heartbeat:
            rules.append(_rule("", ("secrets",), ("create",)))
        return rules
    if component == RELAY:
        return []
    raise ValueError(f"no such component: {component!r}")


# Permissions the roles grant that the shared lab's run does not exercise, and why they are
# needed: (component, apiGroup, resource, verb) -> reason. The RBAC test accepts an unused
# permission only when it is listed here.
NEEDED_ELSEWHERE: dict[tuple[str, str, str, str], str] = {
    (AGENT, CILIUM, "ciliuml2announcementpolicies", "list"):
        "l2announcements.enabled only (tests/l2 labs); the shared lab runs without L2",
    (AGENT, CILIUM, "ciliuml2announcementpolicies", "watch"):
        "l2announcements.enabled only (tests/l2 labs)",
    (AGENT, CILIUM, "ciliuml2announcementpolicies/status", "patch"):
        "l2announcements.enabled: the agent sets a policy's io.cilium/bad-* conditions",
    (AGENT, COORDINATION, "leases", "get"):
        "l2announcements.election lease: each announcing Service's Lease",
    (AGENT, COORDINATION, "leases", "list"):
        "l2announcements.enabled, either election: the announcement Leases nobody holds "
        "(a lease election's, also after switching to hexlane's) are collected every minute",
    (AGENT, COORDINATION, "leases", "create"): "l2announcements.election lease",
    (AGENT, COORDINATION, "leases", "update"): "l2announcements.election lease: renewals",
    (AGENT, COORDINATION, "leases", "delete"):
        "l2announcements.enabled, either election: a Lease nobody holds any more is removed",
    (AGENT, "", "secrets", "get"):
        "l2announcements.election hexlane (the default once L2 is on): the heartbeat key",
    (OPERATOR, "", "secrets", "create"):
        "l2announcements.election hexlane: the heartbeat key's Secret, made once",
    (AGENT, CILIUM, "ciliumidentities", "get"):
        "after a create conflict (another agent took the number): is it the same labels? "
        "tests/agent/test_identities.py races two allocators",
    (OPERATOR, CILIUM, "ciliumidentities", "delete"):
        "identity GC after --identity-heartbeat-timeout (15m; the lab's run is shorter): "
        "tests/operator/test_identity_gc.py",
    (OPERATOR, CILIUM, "ciliumnodes", "delete"):
        "cluster-pool: a Node deleted from the cluster loses its CiliumNode",
    (OPERATOR, CILIUM, "ciliumloadbalancerippools/status", "update"):
        "status writes fall back to a PUT when a merge patch meets a conflict",
    (OPERATOR, "", "services/status", "update"):
        "status writes fall back to a PUT when a merge patch meets a conflict",
    (OPERATOR, CILIUM, "ciliumnodes", "patch"):
        "cluster-pool: a CiliumNode whose pod CIDR is missing or outside the pool (the pool "
        "changed in the values) is given its allocation back",
}


@dataclass(frozen=True, slots=True)
class Request:
    """One API request as RBAC sees it (the audit log's fields)."""

    verb: str
    group: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""

    @classmethod
    def from_audit(cls, record: Mapping[str, Any]) -> Request:
        return cls(str(record["verb"]), str(record["group"]), str(record["resource"]),
                   str(record.get("subresource") or ""), str(record.get("namespace") or ""),
                   str(record.get("name") or ""))

    @property
    def full_resource(self) -> str:
        return f"{self.resource}/{self.subresource}" if self.subresource else self.resource


def _matches(values: Iterable[str], wanted: str) -> bool:
    return any(v in ("*", wanted) for v in values)


def rule_allows(rule: Rule, request: Request) -> bool:
    """Whether one PolicyRule grants `request` (Kubernetes' RuleAllows)."""
    if not _matches(rule.get("verbs") or (), request.verb):
        return False
    if not _matches(rule.get("apiGroups") or (), request.group):
        return False
    resources = rule.get("resources") or ()
    if not (_matches(resources, request.full_resource)
            or (request.subresource and f"*/{request.subresource}" in resources)):
        return False
    names = rule.get("resourceNames") or ()
    return not names or request.name in names


def allows(cluster: Sequence[Rule], namespaced: Sequence[Rule], request: Request,
           namespace: str = NAMESPACE) -> bool:
    """Whether a ClusterRole's rules (everywhere) or a Role's in `namespace` grant it."""
    if any(rule_allows(r, request) for r in cluster):
        return True
    return request.namespace == namespace and any(rule_allows(r, request) for r in namespaced)


def permissions(rules: Iterable[Rule]) -> set[tuple[str, str, str]]:
    """Every (apiGroup, resource, verb) the rules name."""
    return {(group, resource, verb) for rule in rules for group in rule["apiGroups"]
            for resource in rule["resources"] for verb in rule["verbs"]}
