"""A lab's API requests by component, from its apiserver's audit log, held against the roles
`hexlane manifests` renders for the lab's own values (see docs/deploy.md)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from hexlane.apiserver.audit import FLUSH_INTERVAL, read_audit_log
from hexlane.config import load_values
from hexlane.deploy import rbac
from hexlane.deploy.rbac import Request


def lab_values(lab_dir: Path) -> Any:
    """The lab's effective values (what its daemons read)."""
    values, problems = load_values([str(lab_dir / "values.yaml")])
    assert [p for p in problems if p.severity == "error"] == []
    return values


def requests_by_user(lab_dir: Path) -> dict[str, list[Request]]:
    """Every request the lab's apiserver logged, by user, once its buffer is written out."""
    time.sleep(FLUSH_INTERVAL * 2)
    by_user: dict[str, list[Request]] = {}
    for record in read_audit_log(lab_dir / "audit.log"):
        by_user.setdefault(record["user"], []).append(Request.from_audit(record))
    return by_user


def by_component(by_user: dict[str, list[Request]]) -> dict[str, list[Request]]:
    return {account: by_user.get(rbac.service_account_user(account), [])
            for account in rbac.ACCOUNTS}


def refused(lab_dir: Path, requests: dict[str, list[Request]]) -> dict[str, list[str]]:
    """Per component, the requests its rendered ClusterRole and Role do not grant."""
    values = lab_values(lab_dir)
    out = {}
    for account, made in requests.items():
        cluster = rbac.cluster_rules(account, values)
        namespaced = rbac.namespaced_rules(account, values)
        out[account] = sorted({str(r) for r in made
                               if not rbac.allows(cluster, namespaced, r)})
    return out
