"""`hexlane identity list`: the security identities this node's agent knows, like `cilium
identity list`.

    hexlane identity list [-o text|json] [--state-dir DIR]

Reads `GET /v1/identities` from the agent of this node (as `hexlane status` does): the reserved
identities 1-8, then every CiliumIdentity of the cluster (number, labels), each with the local
endpoints (pods of this node) that use it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from . import flags

TIMEOUT = 10.0


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "identity", help="security identities (like `cilium identity`)",
        description="Security identities known to this node's hexlane agent.")
    sub = flags.commands(parser, "identity_command")
    lst = sub.add_parser("list", help="list the identities, their labels and local users",
                         description="List the security identities this node's agent knows: "
                                     "number, labels, local endpoints using it.")
    flags.output(lst)
    flags.state_dir(lst)
    lst.set_defaults(func=run_list)


def fetch_agent(state_dir: str | os.PathLike[str], path: str, timeout: float = TIMEOUT
                ) -> Any:
    """`GET path` from the node's agent; `RuntimeError` saying why when it does not answer."""
    from hexlane.cni.main import AgentUnavailable, PluginError, call_agent

    try:
        code, body = call_agent(str(state_dir), "GET", path, timeout=timeout)
    except AgentUnavailable as err:
        raise RuntimeError(f"hexlane agent unreachable ({err})") from None
    except PluginError as err:
        raise RuntimeError(f"hexlane agent: {err.msg}: {err.details}") from None
    if code != 200:
        raise RuntimeError(f"hexlane agent answered HTTP {code}: {str(body)[:200]}")
    return body


def fail(args: argparse.Namespace, err: RuntimeError) -> int:
    print(f"error: {err}", file=sys.stderr)
    if hint := flags.no_local_agent(args, "state_dir"):
        print(hint, file=sys.stderr)
    return 1


def run_list(args: argparse.Namespace) -> int:
    try:
        doc = fetch_agent(args.state_dir, "/v1/identities")
    except RuntimeError as err:
        return fail(args, err)
    rows = doc.get("identities") or []
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'ID':<10} {'LABELS':<60} ENDPOINTS")
    for row in rows:
        labels = row.get("labels") or ["-"]
        users = ",".join(row.get("endpoints") or []) or "-"
        for i, label in enumerate(labels):
            print(f"{row['id'] if i == 0 else '':<10} {label:<60} {users if i == 0 else ''}"
                  .rstrip())
    return 0
