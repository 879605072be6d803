"""Which node announces each IP: rendezvous hashing with bounded load (pure).

In hexlane's L2 election every agent computes the owner of every announced IP from the same
inputs: the IPs with the nodes eligible for each, the members (the nodes taking part in the
election, from the API, alive or not) and the nodes alive (heard by `hexlane.l2.heartbeat`).
Agents that see the same inputs agree without talking, and no API write is made per Service.
The order of the inputs does not matter.

Each IP ranks the nodes by their weight `blake2b(ip NUL node, 8 bytes)`, highest first
(rendezvous hashing; a tie goes to the smaller name). An IP is *placed* on the first node of
its ranking, among the nodes it may go to, that holds fewer than the cap; when all of them
hold the cap or more (their eligibility leaves no choice), on the least loaded of them. IPs
are placed one by one in a fixed order: fewest candidate nodes first, then by
`blake2b(ip)`, so the most constrained find room and no IP is always the one pushed aside.
Two stages, with N the number of IPs some member is eligible for:

1. Every IP is placed over its eligible members, alive or not, with the cap ⌈N/|members|⌉.
   This is the assignment when all are alive; it depends on the IPs, the members and the
   eligibility, never on liveness.
2. An IP whose stage-1 owner is dead is placed over its eligible alive members, with the cap
   ⌈N/|alive members|⌉, counting the IPs each keeps from stage 1. An IP none of whose
   eligible members is alive has no owner (None).

Hence:
- when every member is eligible for every IP, no node holds more than ⌈N/|alive members|⌉
  (30 IPs on 3 nodes: 10 each); otherwise a node holds more only when eligibility forces
  it: it then owns an IP none of whose alive eligible members holds fewer than that cap,
  nor two fewer than the node (a forced overflow is spread evenly);
- an IP whose stage-1 owner is alive stays with it: a node's death moves only the dead
  node's IPs, and its return gives it back exactly its stage-1 IPs (no lasting churn);
- with several nodes dead, stage 2 spreads all their IPs anew from stage 1, not from the
  previous answer: when a second node dies (or one returns), IPs of the other dead ones may
  move between alive nodes too; IPs of alive stage-1 owners still never move;
- a change of the IPs, members or eligibility changes stage 1 (the caps and the order) and
  may move some IPs between alive nodes: a Service added can displace another's IP.

Nodes alive but not members, and eligible nodes that are not members, are ignored. The
hash and the order are part of the agreement between agents: changing them is like changing
a wire format (agents of two versions would disagree during an upgrade).
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence, Set


def _hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


def ranking(ip: str, nodes: Iterable[str]) -> list[str]:
    """The nodes in the IP's rendezvous order, most preferred first."""
    return sorted(set(nodes), key=lambda node: (-_hash(f"{ip}\0{node}"), node))


def _place(candidates: Mapping[str, Set[str]], load: Counter[str],
           cap: int) -> dict[str, str]:
    """Place each IP on one of its candidate nodes (none empty), adding to `load`."""
    out = {}
    for ip in sorted(candidates, key=lambda ip: (len(candidates[ip]), _hash(ip), ip)):
        ranked = ranking(ip, candidates[ip])
        owner = next((node for node in ranked if load[node] < cap), None)
        if owner is None:  # eligibility leaves no choice: the least loaded, in ranking order
            owner = min(ranked, key=lambda node: load[node])
        load[owner] += 1
        out[ip] = owner
    return out


def assign(ips: Mapping[str, Set[str]], members: Sequence[str],
           alive: Set[str]) -> dict[str, str | None]:
    """The owner of each IP (IP -> the nodes eligible for it), None when no eligible member
    is alive. See the module docstring."""
    everyone = frozenset(members)
    up = everyone & alive
    eligible = {ip: frozenset(nodes) & everyone for ip, nodes in ips.items()}
    eligible = {ip: nodes for ip, nodes in eligible.items() if nodes}
    out: dict[str, str | None] = dict.fromkeys(ips)
    if not eligible or not up:
        return out
    n = len(eligible)
    preferred = _place(eligible, Counter(), math.ceil(n / len(everyone)))
    kept = {ip: node for ip, node in preferred.items() if node in up}
    orphans = {ip: eligible[ip] & up for ip in preferred if ip not in kept}
    moved = _place({ip: nodes for ip, nodes in orphans.items() if nodes},
                   Counter(kept.values()), math.ceil(n / len(up)))
    out.update(kept)
    out.update(moved)
    return out
