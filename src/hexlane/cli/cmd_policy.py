"""`hexlane policy get` and `hexlane policy trace`: the network policy a node enforces, as
`cilium policy get` and `cilium policy trace` show it.

    hexlane policy get [-o text|json] [--state-dir DIR]
    hexlane policy trace --src-pod NS/POD --dst-pod NS/POD --dport PORT[/PROTO] [-o text|json]

`get` reads `GET /v1/policy` from this node's agent: the enforcement mode, each local
endpoint's enforcement per direction and its policy map entries (remote identity, port or
range, protocol, allow or deny). `trace` asks the agent (`GET /v1/policy/trace`) which
policies select the source pod for egress and the destination pod for ingress, which allow
and which deny the connection, and the verdict: computed from the API's objects in the
agent's caches, the same resolution its maps hold (docs/policy.md). For ICMP the port is the
ICMP type (8: echo request).
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from . import flags
from .cmd_identity import fail, fetch_agent


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "policy", help="network policy on this node (like `cilium policy`)",
        description="The network policy this node's hexlane agent enforces.")
    sub = flags.commands(parser, "policy_command")
    get = sub.add_parser("get", help="each local endpoint's enforcement and policy entries",
                         description="The enforcement mode, and each local endpoint's "
                                     "enforcement and policy map entries.")
    flags.output(get)
    flags.state_dir(get)
    get.set_defaults(func=run_get)
    tr = sub.add_parser("trace", help="which policies decide a connection between two pods",
                        description="Which policies select the source (egress) and the "
                                    "destination (ingress), which allow or deny the "
                                    "connection, and the verdict.")
    tr.add_argument("--src-pod", required=True, metavar="NS/POD")
    tr.add_argument("--dst-pod", required=True, metavar="NS/POD")
    tr.add_argument("--dport", required=True, metavar="PORT[/PROTO]",
                    help="destination port and protocol (TCP, UDP, SCTP, or ICMP with the "
                         "ICMP type as the port), e.g. 80/TCP")
    flags.output(tr)
    flags.state_dir(tr)
    tr.set_defaults(func=run_trace)


def run_get(args: argparse.Namespace) -> int:
    try:
        doc = fetch_agent(args.state_dir, "/v1/policy")
    except RuntimeError as err:
        return fail(args, err)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return 0
    print(f"Policy enforcement mode: {doc.get('mode')}"
          + (" (audit: what policy denies passes, recorded as AUDIT)" if doc.get("audit")
             else ""))
    for problem in doc.get("problems") or []:
        print(f"problem: {problem}")
    rules = doc.get("rules") or {}
    if not rules:
        print("no local endpoints")
    for pod, ep in rules.items():
        ways = ", ".join(f"{w} {'enforced' if ep[w] else 'not enforced'}"
                         for w in ("ingress", "egress"))
        print(f"\n{pod} (identity {ep['identity']}, {ep['ip']}): {ways}")
        if ep["entries"]:
            print(f"  {'DIRECTION':<10} {'IDENTITY':<10} {'PORT/PROTO':<16} {'VERDICT':<8} "
                  "DERIVED FROM")
        for e in ep["entries"]:
            port = _ports(e)
            origin = ", ".join(e.get("policies") or []) or "(hexlane: the host's access)"
            print(f"  {e['direction']:<10} {e['identity'] or 'ANY':<10} {port:<16} "
                  f"{'deny' if e['deny'] else 'allow':<8} {origin}")
    return 0


_PROTO_NAMES = {0: "ANY", 1: "ICMP", 6: "TCP", 17: "UDP", 132: "SCTP"}


def _ports(e: dict[str, Any]) -> str:
    proto = _PROTO_NAMES.get(e["protocol"], str(e["protocol"]))
    rng = e.get("portRange")
    if e["protocol"] == 0:
        return "ANY"
    if not rng:
        return f"ANY/{proto}"
    return f"{rng[0]}/{proto}" if rng[0] == rng[1] else f"{rng[0]}-{rng[1]}/{proto}"


def run_trace(args: argparse.Namespace) -> int:
    query = urllib.parse.urlencode({"src": args.src_pod, "dst": args.dst_pod,
                                    "dport": args.dport})
    try:
        doc = fetch_agent(args.state_dir, f"/v1/policy/trace?{query}")
    except RuntimeError as err:
        return fail(args, err)
    if args.output == "json":
        print(json.dumps(doc, indent=2))
        return 0
    print(render(doc))
    return 0


def render(doc: dict[str, Any]) -> str:
    src, dst = doc["source"], doc["destination"]
    lines = [f"Tracing From: {src['pod']} (identity {src['identity']}) => To: {dst['pod']} "
             f"(identity {dst['identity']}) Ports: [{doc['port']}/{doc['protocol']}]", ""]
    for label, key, who in (("Egress", "egress", src["pod"]), ("Ingress", "ingress", dst["pod"])):
        d = doc[key]
        lines.append(f"{label} of {who}: {'ALLOWED' if d['allowed'] else 'DENIED'} "
                     f"({d['reason']})")
        for title, field in (("selected by", "selectedBy"), ("allowed by", "allowedBy"),
                             ("denied by", "deniedBy")):
            if d.get(field):
                lines.append(f"  {title + ':':<12} {', '.join(d[field])}")
    lines += ["", f"Final verdict: {doc['verdict']}"]
    return "\n".join(lines)
