"""Least privilege, checked against what the daemons really ask: the shared lab's audit log.

The lab's agents, operator and relay each talk to the embedded apiserver with a token of their
own service account (`system:serviceaccount:kube-system:hexlane`, `...:hexlane-operator`,
`...:hexlane-hubble-relay`), and the apiserver logs every request's user, verb, resource,
subresource, namespace and name (`hexlane.apiserver.audit`). On the run's shared lab this test
adds what makes the operator write (a CiliumLoadBalancerIPPool and a LoadBalancer Service in a
namespace of its own, until the Service has its IP) and an agent allocate an identity (a pod in
that namespace, until its CiliumIdentity exists) on top of everything the run has done so
far (the agents' and the relay's informers, the operator's leader election and CiliumNodes),
then renders the roles `hexlane manifests` gives the lab's own values.

Pins down: every request each component made is granted by its rendered ClusterRole or by its
Role in kube-system (404s included: on a real cluster a refused request is a 403, not a 404);
every permission those roles grant was used, or is in `hexlane.deploy.rbac.NEEDED_ELSEWHERE`
with the reason; and the admin's requests (kubectl, the lab's kubelets and controllers) are
not mistaken for a component's.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator

import pytest

from helpers.audit import by_component, lab_values, refused, requests_by_user
from helpers.lab import Lab, namespace_and_pool
from helpers.wait import wait_for
from hexlane.apiserver.audit import ADMIN_USER
from hexlane.deploy import rbac
from hexlane.deploy.rbac import Request

pytestmark = [pytest.mark.slow, pytest.mark.root]

NS = f"rb-{secrets.token_hex(2)}"
POOL = f"rb-{secrets.token_hex(2)}"
MANIFESTS = namespace_and_pool(NS, POOL, "10.0.0.224/29") + f"""---
apiVersion: v1
kind: Service
metadata: {{name: web, namespace: {NS}, labels: {{pool: {POOL}}}}}
spec:
  type: LoadBalancer
  selector: {{app: web}}
  ports: [{{port: 80, protocol: TCP}}]
---
apiVersion: v1
kind: Pod
metadata: {{name: web, namespace: {NS}, labels: {{app: web}}}}
spec:
  nodeName: node1
  containers: [{{name: web, image: hexlane/workload}}]
"""


@pytest.fixture(scope="module")
def audited(lab: Lab) -> Iterator[dict[str, list[Request]]]:
    """Each component's requests (by service account), after the operator's writes."""
    lab.kubectl("apply", "-f", "-", stdin=MANIFESTS)
    try:
        def assigned() -> bool:
            svc = json.loads(lab.kubectl("get", "svc", "web", "-n", NS, "-o", "json").stdout)
            return bool((svc.get("status") or {}).get("loadBalancer", {}).get("ingress"))
        wait_for("the operator to give the Service an IP", assigned, timeout=30)

        def identified() -> bool:  # node1's agent allocates (or reuses) the pod's identity
            items = json.loads(lab.kubectl("get", "ciliumidentities", "-o", "json").stdout)
            return any(i["security-labels"].get("k8s:io.kubernetes.pod.namespace") == NS
                       for i in items["items"])
        wait_for("the pod's CiliumIdentity", identified, timeout=30)
        by_user = requests_by_user(lab.dir)
        assert by_user.get(ADMIN_USER), "the admin's own requests are logged as the admin's"
        yield by_component(by_user)
    finally:
        lab.kubectl("delete", "namespace", NS, "--wait=false", check=False)
        lab.kubectl("delete", "ciliumloadbalancerippool", POOL, check=False)


def test_every_request_is_granted_by_the_rendered_roles(
        lab: Lab, audited: dict[str, list[Request]]) -> None:
    assert all(audited.values()), "every component made requests the apiserver logged"
    assert refused(lab.dir, audited) == {account: [] for account in rbac.ACCOUNTS}


@pytest.mark.parametrize("account", rbac.ACCOUNTS)
def test_every_permission_was_used_or_is_needed_elsewhere(
        account: str, lab: Lab, audited: dict[str, list[Request]]) -> None:
    values = lab_values(lab.dir)
    rules = [*rbac.cluster_rules(account, values), *rbac.namespaced_rules(account, values)]
    used = {(r.group, r.full_resource, r.verb) for r in audited[account]}
    unused = sorted(p for p in rbac.permissions(rules) - used
                    if (account, *p) not in rbac.NEEDED_ELSEWHERE)
    assert unused == []


def test_the_operator_wrote_what_it_is_allowed_to(audited: dict[str, list[Request]]) -> None:
    """The writes this test caused are in the log under the operator's name."""
    writes = {(r.verb, r.full_resource) for r in audited[rbac.OPERATOR]}
    assert ("patch", "services/status") in writes or ("update", "services/status") in writes
    assert ("update", "leases") in writes  # leader election renewals
