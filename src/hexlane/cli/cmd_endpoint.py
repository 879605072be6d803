"""`hexlane endpoint list`: this node's endpoints, like `cilium endpoint list`.

    hexlane endpoint list [-o text|json] [--state-dir DIR]

Joins the agent's endpoints (`GET /v1/endpoints`: each pod attachment, its interface and IP)
with their security identities and policy enforcement (`GET /v1/identities`): "enabled" in a
direction when a NetworkPolicy selects the pod for it (docs/policy.md), "disabled" otherwise.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from . import flags
from .cmd_identity import fail, fetch_agent


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "endpoint", help="this node's endpoints (like `cilium endpoint`)",
        description="The pod endpoints of this node's hexlane agent.")
    sub = flags.commands(parser, "endpoint_command")
    lst = sub.add_parser("list", help="list the endpoints: pod, IP, identity, enforcement",
                         description="List this node's endpoints: pod, interface, IP, "
                                     "security identity and its labels, policy enforcement.")
    flags.output(lst)
    flags.state_dir(lst)
    lst.set_defaults(func=run_list)


def endpoint_rows(endpoints: list[dict[str, Any]], identities: dict[str, Any]
                  ) -> list[dict[str, Any]]:
    """One row per endpoint: the agent's record joined with its pod's identity."""
    pods = identities.get("pods") or {}
    labels = {row["id"]: row.get("labels") or [] for row in identities.get("identities") or []}
    enforced = ((identities.get("policy") or {}).get("endpoints")) or {}
    rows = []
    for ep in endpoints:
        pod = f"{ep.get('pod_namespace', '')}/{ep.get('pod_name', '')}"
        ident = pods.get(pod)
        rows.append({
            "pod": pod if pod != "/" else "",
            "containerID": ep.get("container_id", ""),
            "interface": ep.get("host_ifname", ""),
            "ipv4": ep.get("ip", ""),
            "state": ep.get("state", ""),
            "identity": ident,
            "labels": labels.get(ident, []) if ident is not None else [],
            "policyEnforcement": {
                way: "enabled" if (enforced.get(pod) or {}).get(way) else "disabled"
                for way in ("ingress", "egress")},
        })
    return sorted(rows, key=lambda r: (r["pod"], r["containerID"]))


def run_list(args: argparse.Namespace) -> int:
    try:
        endpoints = fetch_agent(args.state_dir, "/v1/endpoints")
        identities = fetch_agent(args.state_dir, "/v1/identities")
    except RuntimeError as err:
        return fail(args, err)
    rows = endpoint_rows(endpoints, identities)
    if args.output == "json":
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'POD':<40} {'IPV4':<16} {'IDENTITY':<9} {'INGRESS':<9} {'EGRESS':<9} LABELS")
    for r in rows:
        ident = "-" if r["identity"] is None else str(r["identity"])
        pe = r["policyEnforcement"]
        print(f"{r['pod'] or r['containerID'][:12]:<40} {r['ipv4']:<16} {ident:<9} "
              f"{pe['ingress']:<9} {pe['egress']:<9} {' '.join(r['labels'])}".rstrip())
    return 0
