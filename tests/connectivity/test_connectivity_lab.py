"""`hexlane connectivity test --lab NAME` end to end, as a user runs it, on a 2-node lab with
the default values (tunnel) and on one with native routing: it exits 0, its table lists
every cell the matrix has for that lab (each with a verdict), `-o json` and `--keep` work,
a run removes what an earlier `--keep` left, and nothing of the test is left afterwards (its
namespace, pool, the pods' network namespaces, the client's routes)."""

from __future__ import annotations

import json
import re
import secrets
import warnings
from collections.abc import Iterator

import pytest

from helpers.lab import Lab, hexlane, lab_namespaces, running_lab
from hexlane.lab import conncheck as cc
from hexlane.lab.connectivity import lab_facts
from hexlane.lab.manager import LabState

pytestmark = [pytest.mark.slow, pytest.mark.root]

LABS = {
    "tunnel": [],
    "native": ["--set", "routingMode=native", "--set", "autoDirectNodeRoutes=true",
               "--set", "ipv4NativeRoutingCIDR=10.42.0.0/16"],
}
ROW = re.compile(r"^(\S+)\s+(ClusterIP|NodePort node\d+|LoadBalancer|externalIP)(?: \S+)?\s+"
                 r"(TCP|UDP|HTTPS|POST)\s+(\S+) \(.*?\)\s+(pass|FAIL|not testable|not routable)\s")


@pytest.fixture(scope="module", params=list(LABS))
def lab(request: pytest.FixtureRequest) -> Iterator[Lab]:
    with running_lab(f"c{secrets.token_hex(3)[:5]}", *LABS[request.param]) as lab:
        yield lab


def expected_cells(lab: Lab) -> set[tuple[str, str, str, str]]:
    state = LabState.load(lab.name)
    assert state is not None
    return {c.key for c in cc.cells(lab_facts(state.plan))}


def client_routes(lab: Lab) -> str:
    return lab.exec("client", "ip", "-4", "route").stdout


def test_connectivity(lab: Lab) -> None:
    want = expected_cells(lab)
    # A quick run that keeps what it made, in JSON: every cell, and the leftovers.
    done = hexlane("connectivity", "test", "--lab", lab.name, "--keep", "--connections", "3",
                   "-o", "json", check=False, timeout=300)
    assert done.returncode in (0, 1), done.stderr
    report = json.loads(done.stdout)
    assert {(c["source"], c["service"], c["destination"], c["probe"])
            for c in report["cells"]} == want
    assert report["failed"] == (done.returncode == 1)
    assert "--keep: left namespace" in done.stderr
    assert lab.kubectl("get", "namespace", cc.NAMESPACE, check=False).returncode == 0
    assert " via " in client_routes(lab)

    # The real run, as a user types it: it removes those leftovers first.
    done = hexlane("connectivity", "test", "--lab", lab.name, check=False, timeout=300)
    out = done.stdout
    assert "removing what an earlier run left" in done.stderr
    rows = [m for line in out.splitlines() if (m := ROW.match(line))]
    seen = {(m[1], m[4], m[2], m[3]) for m in rows}
    assert seen == want, (sorted(want - seen), sorted(seen - want))
    assert len(rows) == len(want)
    summary = out.strip().splitlines()[-1]
    assert re.match(r"\d+ passed, \d+ failed, \d+ not testable", summary), summary

    # Nothing of the test is left: namespace, pool, pod sandboxes, the client's routes.
    assert lab.kubectl("get", "namespace", cc.NAMESPACE, check=False).returncode != 0
    assert lab.kubectl("get", "ciliumloadbalancerippools", cc.POOL_NAME,
                       check=False).returncode != 0
    hosts = {f"{lab.name}-{h}" for h in ("lan", "cp", "client", "node1", "node2")}
    assert set(lab_namespaces(lab.name)) == hosts
    assert " via " not in client_routes(lab), client_routes(lab)

    failed = [line for line in out.splitlines() if "  FAIL  " in line]
    if done.returncode != 0 and all(re.search(r"\b[1-3]/\d+ failed \(", f) for f in failed):
        # A few lost connections in a cell (never a wrong backend, address or port) have
        # been seen about once in ten runs on a loaded machine, cause not found yet (see
        # docs/service-lb.md): reported, and the whole matrix must then pass on a second run.
        warnings.warn("connectivity cells lost connections on a first run:\n"
                      + "\n".join(failed), stacklevel=1)
        done = hexlane("connectivity", "test", "--lab", lab.name, check=False, timeout=300)
        failed = [line for line in done.stdout.splitlines() if "  FAIL  " in line]
        summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, f"{len(failed)} cells failed:\n" + "\n".join(failed) + \
        f"\n{summary}"
