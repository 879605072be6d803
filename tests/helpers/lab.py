"""Helpers for the lab and connectivity tests: run `hexlane lab ...` as a user would, read the
lab's API, and a lab that is always brought down (`running_lab`)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]


def hexlane(*args: str, check: bool = True,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([*HEXLANE, *args], capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"hexlane {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}\n{result.stderr}")
    return result


class Lab:
    def __init__(self, name: str) -> None:
        self.name = name
        self.up: subprocess.CompletedProcess[str] | None = None  # what `lab up` printed

    def run(self, verb: str, *args: str, check: bool = True,
            timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return hexlane("lab", verb, "--name", self.name, *args, check=check, timeout=timeout)

    def kubectl(self, *args: str, stdin: str | None = None,
                check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*HEXLANE, "lab", "kubectl", "--name", self.name, "--", *args],
                                capture_output=True, text=True, input=stdin, timeout=60)
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
        return result

    def exec(self, target: str, *argv: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
        return self.run("exec", target, "--", *argv, check=check, timeout=60)

    @property
    def dir(self) -> Path:
        return Path("/run/hexlane/lab") / self.name

    def log(self, *parts: str) -> str:
        path = self.dir.joinpath(*parts)
        return path.read_text()[-3000:] if path.exists() else "(no log)"

    def api(self, path: str) -> Any:
        from hexlane.lab.manager import LabState, api_request
        state = LabState.load(self.name)
        assert state is not None
        return api_request(state.plan, "GET", path)


def namespace_and_pool(namespace: str, pool: str, cidr: str) -> str:
    """YAML of a test's own Namespace and a CiliumLoadBalancerIPPool `pool` of `cidr` for the
    Services labelled `pool: <pool>` (tests on the shared lab keep to their own)."""
    return f"""
apiVersion: v1
kind: Namespace
metadata: {{name: {namespace}}}
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata: {{name: {pool}}}
spec:
  blocks: [{{cidr: {cidr}}}]
  serviceSelector: {{matchLabels: {{pool: {pool}}}}}
"""


def lab_namespaces(name: str) -> list[str]:
    return sorted(n for n in os.listdir("/run/netns") if n.startswith(f"{name}-")) \
        if os.path.isdir("/run/netns") else []


@contextmanager
def running_lab(name: str, *up_args: str) -> Iterator[Lab]:
    """`hexlane lab up --nodes 2 UP_ARGS` named `name` (unique: the caller's choice); brought
    down on leaving, also after a failure, and then none of its namespaces or state is left."""
    lab = Lab(name)
    try:
        lab.up = lab.run("up", "--nodes", "2", *up_args, timeout=300)
        yield lab
    finally:
        hexlane("lab", "down", "--name", name, check=False)
        assert lab_namespaces(name) == []
        assert not lab.dir.exists()
