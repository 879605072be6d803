"""Security identities as Cilium derives and numbers them.

A pod's identity is a number standing for its *identity label set*: its own labels as
`k8s:<key>=<value>`, its namespace's labels as
`k8s:io.cilium.k8s.namespace.labels.<key>=<value>`, `k8s:io.kubernetes.pod.namespace=<ns>`,
`k8s:io.cilium.k8s.policy.serviceaccount=<sa>` and `k8s:io.cilium.k8s.policy.cluster=<name>`,
less the labels Cilium's default label filter drops (hashes, indexes and the like, which would
give every pod an identity of its own). Pods with equal label sets share one identity.

Numbers (Cilium's pkg/identity): 0 is no identity (in a policy map: any identity); 1-8 are the
reserved identities below; identities allocated for label sets run from 256 to 65535 (cluster ID
0); CIDR identities are node-local, `1 << 24` or-ed with a small number. The agent allocates
by creating a `CiliumIdentity` named by the number: `plan_allocation` says which number to reuse
or try, and given the numbers whose create conflicted, the next one. The operator deletes the
identities no endpoint uses after a grace period: `unused`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import IntEnum
from typing import Any

IPv4Network = ipaddress.IPv4Network

# Label sources (Cilium's pkg/labels).
SOURCE_K8S = "k8s"
SOURCE_RESERVED = "reserved"
SOURCE_CIDR = "cidr"

# Label keys Cilium adds to a pod's own labels (pkg/k8s/apis/cilium.io/const.go).
POD_NAMESPACE_LABEL = "io.kubernetes.pod.namespace"
NAMESPACE_LABELS_PREFIX = "io.cilium.k8s.namespace.labels."
SERVICE_ACCOUNT_LABEL = "io.cilium.k8s.policy.serviceaccount"
CLUSTER_LABEL = "io.cilium.k8s.policy.cluster"
DEFAULT_CLUSTER_NAME = "default"  # Helm `cluster.name`

UNKNOWN_IDENTITY = 0  # no identity; in a policy map key: any identity
MIN_ALLOCATED_IDENTITY = 256
MAX_ALLOCATED_IDENTITY = (1 << 16) - 1  # cluster ID 0: (1 << 16) * (0 + 1) - 1
LOCAL_IDENTITY_FLAG = 1 << 24  # CIDR identities: node-local, this bit set
MIN_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG | 1
MAX_LOCAL_IDENTITY = LOCAL_IDENTITY_FLAG | 0xFFFFFF


class ReservedIdentity(IntEnum):
    """Cilium's reserved identities; each one's labels are `reserved:<name>`."""

    HOST = 1
    WORLD = 2
    UNMANAGED = 3
    HEALTH = 4
    INIT = 5
    REMOTE_NODE = 6
    KUBE_APISERVER = 7
    INGRESS = 8

    @property
    def label_name(self) -> str:
        """`host`, `world`, ..., `remote-node`, `kube-apiserver`, `ingress`."""
        return self.name.lower().replace("_", "-")


@dataclass(frozen=True, slots=True, order=True)
class Label:
    """A Cilium label: `source:key=value` (`source:key` when the value is empty)."""

    source: str
    key: str
    value: str = ""

    def __str__(self) -> str:
        return f"{self.source}:{self.key}" + (f"={self.value}" if self.value else "")

    @classmethod
    def parse(cls, text: str) -> Label:
        """`k8s:app=web` -> Label("k8s", "app", "web"); no source means `unspec`."""
        source, sep, rest = text.partition(":")
        if not sep:
            source, rest = "unspec", text
        key, _, value = rest.partition("=")
        return cls(source, key, value)


LabelSet = frozenset[Label]


def format_labels(labels: Iterable[Label]) -> list[str]:
    """Sorted `source:key=value` strings (as `cilium identity list` shows them)."""
    return sorted(str(lbl) for lbl in labels)


def security_labels(labels: Iterable[Label]) -> dict[str, str]:
    """A CiliumIdentity's `security-labels`: {"k8s:app": "web", "reserved:host": ""}."""
    return {f"{lbl.source}:{lbl.key}": lbl.value for lbl in sorted(labels)}


def from_security_labels(raw: Mapping[str, str]) -> LabelSet:
    """The inverse of `security_labels`."""
    out = set()
    for source_key, value in raw.items():
        source, sep, key = source_key.partition(":")
        out.add(Label(source, key, value) if sep else Label("unspec", source_key, value))
    return frozenset(out)


def reserved_labels(identity: ReservedIdentity) -> LabelSet:
    """The labels of a reserved identity (kube-apiserver is also a remote node, as in
    Cilium)."""
    labels = {Label(SOURCE_RESERVED, identity.label_name)}
    if identity is ReservedIdentity.KUBE_APISERVER:
        labels.add(Label(SOURCE_RESERVED, ReservedIdentity.REMOTE_NODE.label_name))
    return frozenset(labels)


def identity_name(identity: int) -> str:
    """What `identity list` shows for a number: `reserved:host`, `cidr`, or the number."""
    try:
        return f"reserved:{ReservedIdentity(identity).label_name}"
    except ValueError:
        pass
    if identity == UNKNOWN_IDENTITY:
        return "unknown"
    if identity & LOCAL_IDENTITY_FLAG:
        return f"cidr:{identity}"
    return str(identity)


def is_cidr_identity(identity: int) -> bool:
    return bool(identity & LOCAL_IDENTITY_FLAG)


# --- the label filter -------------------------------------------------------------------------

# Cilium's default identity-relevant label patterns (pkg/labelsfilter, and the "Limiting
# Identity-Relevant Labels" page): regular expressions anchored at the start of the label key,
# "!" for an exclusive one, "source:" to match one source only.
DEFAULT_LABEL_PATTERNS: tuple[str, ...] = (
    "reserved:.*",
    r"io\.kubernetes\.pod\.namespace",
    r"io\.cilium\.k8s\.namespace\.labels",
    r"app\.kubernetes\.io",
    r"io\.cilium\.k8s\.policy\.cluster",
    r"!io\.kubernetes",
    r"!kubernetes\.io",
    r"!statefulset\.kubernetes\.io/pod-name",
    r"!apps\.kubernetes\.io/pod-index",
    r"!batch\.kubernetes\.io/job-completion-index",
    r"!batch\.kubernetes\.io/controller-uid",
    r"!.*beta\.kubernetes\.io",
    r"!k8s\.io",
    "!pod-template-generation",
    "!pod-template-hash",
    "!controller-revision-hash",
    "!controller-uid",
    "!annotation.*",
    "!etcd_node",
)


@dataclass(frozen=True, slots=True)
class _Pattern:
    source: str  # "" matches every source
    regex: re.Pattern[str]
    ignore: bool

    @classmethod
    def parse(cls, text: str) -> _Pattern:
        source, sep, prefix = text.partition(":")
        if not sep:
            source, prefix = "", text
        ignore = prefix.startswith("!")
        if ignore:
            prefix = prefix[1:]
        if not prefix:
            raise ValueError(f"invalid label pattern {text!r}: empty prefix")
        try:
            regex = re.compile(prefix)
        except re.error as e:
            raise ValueError(f"invalid label pattern {text!r}: {e}") from None
        return cls(source, regex, ignore)

    def match_length(self, label: Label) -> int:
        """Length of the match at the start of the key; -1 when it does not match."""
        if self.source and self.source != label.source:
            return -1
        m = self.regex.match(label.key)
        return -1 if m is None else m.end()


@dataclass(frozen=True, slots=True)
class LabelFilter:
    """Which labels count for identities. A label is kept when no exclusive pattern matches
    it and no inclusive pattern was configured beyond the defaults, or when the longest
    inclusive match is longer than the shortest exclusive one (Cilium's rule: `{!foo, foo.bar}`
    keeps `foo.bar.baz`)."""

    patterns: tuple[_Pattern, ...]
    whitelist: bool = False  # an inclusive pattern was added: only included labels count
    texts: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def default(cls, extra: Iterable[str] = ()) -> LabelFilter:
        """The defaults plus `extra` patterns (Helm `labels`, space-separated)."""
        extra = [e for e in extra if e]
        patterns = tuple(_Pattern.parse(t) for t in (*DEFAULT_LABEL_PATTERNS, *extra))
        whitelist = any(not _Pattern.parse(e).ignore for e in extra)
        return cls(patterns, whitelist, (*DEFAULT_LABEL_PATTERNS, *extra))

    def keeps(self, label: Label) -> bool:
        included, ignored = 0, 0
        for p in self.patterns:
            n = p.match_length(label)
            if n < 0:
                continue
            if p.ignore:
                if ignored == 0 or n < ignored:
                    ignored = n
            elif n > included:
                included = n
        return (not self.whitelist and ignored == 0) or included > ignored

    def filter(self, labels: Iterable[Label]) -> LabelSet:
        return frozenset(lbl for lbl in labels if self.keeps(lbl))


DEFAULT_FILTER = LabelFilter.default()


def pod_identity_labels(pod_labels: Mapping[str, str], namespace: str,
                        namespace_labels: Mapping[str, str], service_account: str = "",
                        cluster: str = DEFAULT_CLUSTER_NAME,
                        label_filter: LabelFilter = DEFAULT_FILTER) -> LabelSet:
    """The identity label set of a pod (Cilium's order of sources does not matter: a set)."""
    labels = {Label(SOURCE_K8S, k, v) for k, v in pod_labels.items()}
    labels |= {Label(SOURCE_K8S, NAMESPACE_LABELS_PREFIX + k, v)
               for k, v in namespace_labels.items()}
    labels.add(Label(SOURCE_K8S, POD_NAMESPACE_LABEL, namespace))
    if service_account:
        labels.add(Label(SOURCE_K8S, SERVICE_ACCOUNT_LABEL, service_account))
    if cluster:
        labels.add(Label(SOURCE_K8S, CLUSTER_LABEL, cluster))
    return label_filter.filter(labels)


def k8s_pod_labels(labels: Iterable[Label]) -> dict[str, str]:
    """The `k8s:` labels of an identity as a key -> value map (what a NetworkPolicy's
    podSelector is matched against; Cilium's own keys are among them, as in Cilium)."""
    return {lbl.key: lbl.value for lbl in labels if lbl.source == SOURCE_K8S}


def identity_namespace(labels: Iterable[Label]) -> str | None:
    """The namespace of a pod identity, None for others (reserved, CIDR)."""
    for lbl in labels:
        if lbl.source == SOURCE_K8S and lbl.key == POD_NAMESPACE_LABEL:
            return lbl.value
    return None


def identity_namespace_labels(labels: Iterable[Label]) -> dict[str, str]:
    """The namespace labels carried by a pod identity (the prefix taken off)."""
    n = len(NAMESPACE_LABELS_PREFIX)
    return {lbl.key[n:]: lbl.value for lbl in labels
            if lbl.source == SOURCE_K8S and lbl.key.startswith(NAMESPACE_LABELS_PREFIX)}


def is_endpoint_pod(pod: Mapping[str, Any]) -> bool:
    """A pod with an endpoint of its own: not host-network, not finished."""
    spec = pod.get("spec") or {}
    phase = (pod.get("status") or {}).get("phase")
    return not spec.get("hostNetwork") and phase not in ("Succeeded", "Failed")


def pod_labels(pod: Mapping[str, Any], namespace: Mapping[str, Any] | None,
               cluster: str = DEFAULT_CLUSTER_NAME,
               label_filter: LabelFilter = DEFAULT_FILTER) -> LabelSet:
    """The identity label set of a Pod object in its Namespace object (None: no labels)."""
    meta = pod.get("metadata") or {}
    ns_labels = ((namespace or {}).get("metadata") or {}).get("labels") or {}
    return pod_identity_labels(meta.get("labels") or {}, str(meta.get("namespace", "")),
                               ns_labels, str((pod.get("spec") or {}).get(
                                   "serviceAccountName") or ""),
                               cluster=cluster, label_filter=label_filter)


# --- allocation and garbage collection ----------------------------------------------------------

class IdentitiesExhausted(Exception):
    """Every number from 256 to 65535 is taken."""


@dataclass(frozen=True, slots=True)
class Allocation:
    """The number to use for a label set: an existing identity's (`reused`) or the next
    candidate to create a CiliumIdentity for."""

    identity: int
    reused: bool


def plan_allocation(labels: LabelSet, existing: Mapping[int, LabelSet],
                    conflicts: Collection[int] = ()) -> Allocation:
    """Reuse the lowest existing identity with exactly these labels; else the lowest number
    from 256 that is neither an existing identity nor in `conflicts` (numbers whose create
    conflicted: someone else took them since `existing` was read)."""
    same = sorted(n for n, lbls in existing.items()
                  if lbls == labels and MIN_ALLOCATED_IDENTITY <= n <= MAX_ALLOCATED_IDENTITY)
    if same:
        return Allocation(same[0], reused=True)
    taken = set(existing) | set(conflicts)
    n = MIN_ALLOCATED_IDENTITY
    while n in taken:
        n += 1
    if n > MAX_ALLOCATED_IDENTITY:
        raise IdentitiesExhausted(f"no free identity in {MIN_ALLOCATED_IDENTITY}-"
                                  f"{MAX_ALLOCATED_IDENTITY}")
    return Allocation(n, reused=False)


def unused(identities: Mapping[int, datetime], in_use: Collection[int], now: datetime,
           grace: timedelta) -> list[int]:
    """The allocated identities the operator may delete: not used by any endpoint, and not
    seen used (or created) for at least `grace`. `identities` maps each allocated identity to
    when it was last seen in use, or created; reserved and CIDR identities are never
    returned."""
    used = set(in_use)
    return sorted(n for n, seen in identities.items()
                  if MIN_ALLOCATED_IDENTITY <= n <= MAX_ALLOCATED_IDENTITY
                  and n not in used and now - seen >= grace)


# --- CIDR identities -----------------------------------------------------------------------------

def cidr_labels(prefix: IPv4Network) -> LabelSet:
    """A CIDR identity's labels, as Cilium builds them: `cidr:<prefix>`, the same for every
    shorter prefix containing it down to /0, and `reserved:world` (so a policy's CIDR selects
    the identities of every prefix inside it)."""
    labels = {Label(SOURCE_RESERVED, ReservedIdentity.WORLD.label_name)}
    for bits in range(prefix.prefixlen, -1, -1):
        labels.add(Label(SOURCE_CIDR, str(prefix.supernet(new_prefix=bits))))
    return frozenset(labels)


def plan_cidr_identities(prefixes: Iterable[IPv4Network],
                         previous: Mapping[IPv4Network, int] | None = None,
                         ) -> dict[IPv4Network, int]:
    """A node-local identity for each prefix (0.0.0.0/0 is `world`, not given one): the one
    it had in `previous` when it had one, else the lowest free local number, new prefixes in
    address order. Deterministic for the same input, and stable while a prefix stays."""
    previous = previous or {}
    wanted = sorted({p for p in prefixes if p.prefixlen > 0},
                    key=lambda p: (int(p.network_address), p.prefixlen))
    out = {p: previous[p] for p in wanted if p in previous}
    used = set(out.values())
    n = MIN_LOCAL_IDENTITY
    for p in wanted:
        if p in out:
            continue
        while n in used:
            n += 1
        if n > MAX_LOCAL_IDENTITY:
            raise IdentitiesExhausted("no free local (CIDR) identity")
        out[p] = n
        used.add(n)
    return out


# --- CiliumIdentity objects ----------------------------------------------------------------------

CILIUM_IDENTITY_API_VERSION = "cilium.io/v2"
CILIUM_IDENTITY_KIND = "CiliumIdentity"
_K8S_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _valid_label_key(key: str) -> bool:
    prefix, sep, name = key.rpartition("/")
    if sep and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        return False
    return bool(name) and bool(_K8S_LABEL_NAME.match(name))


def identity_object(identity: int, labels: LabelSet) -> dict[str, object]:
    """The CiliumIdentity for an allocated number, as Cilium's CRD allocator writes it:
    named by the number, `security-labels` the whole set (`k8s:app: web`), and the `k8s:`
    labels that are valid Kubernetes labels as the object's own labels (so `kubectl get
    ciliumid -l app=web` and the CRD's Namespace column work)."""
    meta_labels = {lbl.key: lbl.value for lbl in sorted(labels)
                   if lbl.source == SOURCE_K8S and _valid_label_key(lbl.key)
                   and _K8S_LABEL_NAME.match(lbl.value)}
    return {"apiVersion": CILIUM_IDENTITY_API_VERSION, "kind": CILIUM_IDENTITY_KIND,
            "metadata": {"name": str(identity), "labels": meta_labels},
            "security-labels": security_labels(labels)}


def parse_identity_object(obj: Mapping[str, object]) -> tuple[int, LabelSet] | None:
    """(number, labels) of a CiliumIdentity; None when its name is not an allocated number
    (another cluster ID's range, or not a number at all)."""
    meta = obj.get("metadata")
    name = str(meta.get("name", "")) if isinstance(meta, Mapping) else ""
    if not name.isdigit():
        return None
    number = int(name)
    if not MIN_ALLOCATED_IDENTITY <= number <= MAX_ALLOCATED_IDENTITY:
        return None
    raw = obj.get("security-labels")
    if not isinstance(raw, Mapping):
        return None
    return number, from_security_labels({str(k): str(v) for k, v in raw.items()})


def identities_in_use(identities: Mapping[int, LabelSet],
                      pod_label_sets: Iterable[LabelSet]) -> set[int]:
    """The identities whose labels are some existing pod's identity labels (the operator's
    rule for "in use": it reads pods, not the agents' endpoints, so a pod between its
    creation and its agent's allocation keeps the identity it will get)."""
    wanted = set(pod_label_sets)
    return {n for n, labels in identities.items() if labels in wanted}


def observe_use(last_seen: Mapping[int, datetime], identities: Collection[int],
                in_use: Collection[int], now: datetime) -> dict[int, datetime]:
    """The operator's memory for `unused`: each existing identity's last time seen in use;
    one seen for the first time counts as seen now (so a restarted operator waits a full
    grace before deleting anything); identities gone from the API are forgotten."""
    used = set(in_use)
    return {n: now if n in used or n not in last_seen else last_seen[n] for n in identities}
