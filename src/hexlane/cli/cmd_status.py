"""`hexlane status`: the node agent's status, like `cilium status`.

    hexlane status [--brief] [-o text|json] [--state-dir DIR]

Reads `GET /v1/status` from the agent of this node: the abstract socket `@hexlane-agent` of
the caller's network namespace first, then `$STATE_DIR/agent.sock`. `--brief` prints `OK` and
exits 0 only when the agent is healthy (datapath loaded, API server reachable, last sync
recent); otherwise it prints the reasons and exits 1. An agent that does not answer is
unhealthy too (exit 1).
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
        "status", help="show the node agent's status (like `cilium status`)",
        description="Show the status of this node's hexlane agent.")
    parser.add_argument("--brief", action="store_true",
                        help="print OK and exit 0 when healthy, else the reasons and exit 1")
    flags.output(parser)
    flags.state_dir(parser)
    parser.set_defaults(func=run)


def fetch_status(state_dir: str | os.PathLike[str], timeout: float = TIMEOUT
                 ) -> dict[str, Any]:
    """The agent's status document; `RuntimeError` saying why when there is none."""
    from hexlane.cni.main import AgentUnavailable, PluginError, call_agent

    try:
        code, body = call_agent(str(state_dir), "GET", "/v1/status", timeout=timeout)
    except AgentUnavailable as err:
        raise RuntimeError(f"hexlane agent unreachable ({err})") from None
    except PluginError as err:
        raise RuntimeError(f"hexlane agent: {err.msg}: {err.details}") from None
    if code != 200 or not isinstance(body, dict):
        raise RuntimeError(f"hexlane agent answered HTTP {code}: {str(body)[:200]}")
    return body


def run(args: argparse.Namespace) -> int:
    from hexlane.agent.status import brief, format_status

    try:
        status = fetch_status(args.state_dir)
    except RuntimeError as err:
        if args.output == "json" and not args.brief:
            print(json.dumps({"health": {"ok": False, "reasons": [str(err)]}}))
        else:
            print(str(err), file=sys.stdout if args.brief else sys.stderr)
            if hint := flags.no_local_agent(args, "state_dir"):
                print(hint, file=sys.stderr)
        return 1
    ok, reasons = brief(status)
    if args.brief:
        print("OK" if ok else "\n".join(reasons))
        return 0 if ok else 1
    if args.output == "json":
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        sys.stdout.write(format_status(status))
    return 0 if ok else 1
