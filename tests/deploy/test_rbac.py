"""The RBAC evaluator and the rendered roles' bookkeeping, without a cluster.

Pins down Kubernetes' rule matching as `hexlane.deploy.rbac.allows` does it: verbs,
apiGroups and resources (a subresource only by `resource/subresource` or `*/subresource`,
never by its resource alone), `*`, resourceNames (only the named objects), and a Role
granting only inside its namespace; and that `NEEDED_ELSEWHERE` names no permission that no
values give (no stale reasons).
"""

from __future__ import annotations

import pytest

from hexlane.config import load_values
from hexlane.deploy import rbac
from hexlane.deploy.rbac import Request, allows, rule_allows

RULE = {"apiGroups": [""], "resources": ["services", "services/status"],
        "verbs": ["get", "patch"]}


@pytest.mark.parametrize("request_, granted", [
    (Request("get", "", "services", namespace="a", name="x"), True),
    (Request("patch", "", "services", "status", "a", "x"), True),
    (Request("update", "", "services", "status", "a", "x"), False),  # verb
    (Request("get", "apps", "services", namespace="a", name="x"), False),  # group
    (Request("get", "", "pods", namespace="a", name="x"), False),  # resource
    (Request("get", "", "pods", "status", "a", "x"), False),
])
def test_rule_matching(request_: Request, granted: bool) -> None:
    assert rule_allows(RULE, request_) is granted


def test_a_subresource_needs_its_own_grant() -> None:
    plain = {"apiGroups": [""], "resources": ["services"], "verbs": ["patch"]}
    assert not rule_allows(plain, Request("patch", "", "services", "status", "a", "x"))
    star = {"apiGroups": [""], "resources": ["*/status"], "verbs": ["patch"]}
    assert rule_allows(star, Request("patch", "", "services", "status", "a", "x"))
    assert not rule_allows(star, Request("patch", "", "services", "", "a", "x"))
    anything = {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}
    assert rule_allows(anything, Request("delete", "apps", "deployments", "", "a", "x"))


def test_resource_names_and_namespaces() -> None:
    named = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "verbs": ["get", "update"], "resourceNames": ["cilium-operator-resource-lock"]}
    lease = Request("update", "coordination.k8s.io", "leases", "", "kube-system",
                    "cilium-operator-resource-lock")
    assert allows([], [named], lease)
    assert not allows([], [named], Request("update", "coordination.k8s.io", "leases", "",
                                           "kube-system", "someone-else"))
    assert not allows([], [named], Request("update", "coordination.k8s.io", "leases", "",
                                           "default", "cilium-operator-resource-lock"))
    assert allows([named], [], Request("update", "coordination.k8s.io", "leases", "",
                                       "default", "cilium-operator-resource-lock"))


def test_the_audit_record_is_a_request() -> None:
    record = {"user": "u", "verb": "patch", "group": "", "resource": "services",
              "subresource": "status", "namespace": "a", "name": "x", "code": 200}
    assert Request.from_audit(record) == Request("patch", "", "services", "status", "a", "x")


def test_every_reason_names_a_permission_some_values_give() -> None:
    granted: set[tuple[str, str, str, str]] = set()
    for sets in ([], ["kubeProxyReplacement=true", "l2announcements.enabled=true"],
                 ["kubeProxyReplacement=true", "l2announcements.enabled=true",
                  "l2announcements.election=lease"]):
        values, _ = load_values([], sets)
        for account in rbac.ACCOUNTS:
            rules = [*rbac.cluster_rules(account, values),
                     *rbac.namespaced_rules(account, values)]
            granted |= {(account, *p) for p in rbac.permissions(rules)}
    assert set(rbac.NEEDED_ELSEWHERE) - granted == set()
