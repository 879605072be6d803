"""What `hexlane hubble observe` asks for: the hubble CLI's flags as a GetFlowsRequest (pure).

Filter flags are applied in the order given, as the hubble CLI applies them:

- a flag about one side (`--from-pod`, `--to-ip`, ...) or about neither (`--verdict`,
  `--protocol`, `-t`) goes into every filter being built;
- a flag about either side (`--pod`, `--ip`, `--port`, `--label`, `--service`, `--fqdn`,
  `--identity`) puts the source field in one filter and the destination field in a second;
  the request carries both, OR-ed (one when they end up equal);
- `-n/--namespace` (`-A` for all) works the same way on pods and services, and completes a
  `--pod NAME` without a namespace; `--from-namespace`/`--to-namespace` pick one side;
- `--not` sends the next filter flag to the blacklist instead (`--not --pod x --not --pod y`).

Flags that cannot be combined (hubble's own list, e.g. `--pod` with `--from-pod`) and bad
values raise `QueryError` with the message hubble would give. `flows_request` adds the count
and time window: `--last N` (20 when nothing else is asked and not following), `--first N`,
`--all`, `--since`/`--until` as RFC 3339 times or durations back from now (`5m`, `1h30m`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hexlane.config.duration import parse_duration
from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_pb2

DEFAULT_LAST = 20

FF = flow_pb2.FlowFilter


class QueryError(ValueError):
    """A flag value or combination hubble refuses; the message says which."""


# Flags that cannot be given together (hubble's conflict groups).
CONFLICTS: tuple[tuple[str, ...], ...] = (
    ("from-fqdn", "from-ip", "ip", "fqdn", "from-namespace", "namespace",
     "from-all-namespaces", "all-namespaces"),
    ("from-fqdn", "from-ip", "ip", "fqdn", "from-pod", "pod"),
    ("to-fqdn", "to-ip", "ip", "fqdn", "to-namespace", "namespace", "to-all-namespaces",
     "all-namespaces"),
    ("to-fqdn", "to-ip", "ip", "fqdn", "to-pod", "pod"),
    ("to-pod", "namespace", "all-namespaces"),
    ("from-pod", "namespace", "all-namespaces"),
    ("to-service", "namespace", "all-namespaces"),
    ("from-service", "namespace", "all-namespaces"),
    ("label", "from-label"), ("label", "to-label"),
    ("service", "from-service"), ("service", "to-service"),
    ("port", "to-port"), ("port", "from-port"),
    ("identity", "to-identity"), ("identity", "from-identity"),
    ("node-name", "cluster"),
)

# CiliumEventType.type by the names `-t/--type` takes.
EVENT_TYPES = {"drop": 1, "debug": 2, "capture": 3, "trace": 4, "policy-verdict": 5,
               "recorder": 6, "trace-sock": 7, "l7": 129, "agent": 130}
TRACE_POINTS = {"to-endpoint": 0, "to-proxy": 1, "to-host": 2, "to-stack": 3,
                "to-overlay": 4, "from-endpoint": 5, "from-proxy": 6, "from-host": 7,
                "from-stack": 8, "from-overlay": 9, "from-network": 10, "to-network": 11,
                "from-crypto": 12, "to-crypto": 13}
RESERVED_IDENTITIES = {"host": 1, "world": 2, "unmanaged": 3, "health": 4, "init": 5,
                       "remote-node": 6, "kube-apiserver": 7, "ingress": 8}
TCP_FLAGS = ("SYN", "FIN", "RST", "PSH", "ACK", "URG", "ECE", "CWR", "NS")

# Filter flags: which FlowFilter field each side sets. ("src", "dst") for either-side flags.
_EITHER = {"pod": ("source_pod", "destination_pod"), "ip": ("source_ip", "destination_ip"),
           "port": ("source_port", "destination_port"),
           "label": ("source_label", "destination_label"),
           "service": ("source_service", "destination_service"),
           "fqdn": ("source_fqdn", "destination_fqdn"),
           "identity": ("source_identity", "destination_identity")}
_ONE_SIDE = {"from-pod": "source_pod", "to-pod": "destination_pod", "from-ip": "source_ip",
             "to-ip": "destination_ip", "snat-ip": "source_ip_xlated",
             "from-port": "source_port", "to-port": "destination_port",
             "from-label": "source_label", "to-label": "destination_label",
             "from-service": "source_service", "to-service": "destination_service",
             "from-fqdn": "source_fqdn", "to-fqdn": "destination_fqdn",
             "from-identity": "source_identity", "to-identity": "destination_identity",
             "uuid": "uuid", "protocol": "protocol", "http-status": "http_status_code",
             "http-method": "http_method", "http-path": "http_path", "http-url": "http_url",
             "node-name": "node_name", "node-label": "node_labels", "trace-id": "trace_id",
             "dns-query": "dns_query"}
FILTER_FLAGS = frozenset({*_EITHER, *_ONE_SIDE, "namespace", "from-namespace", "to-namespace",
                          "all-namespaces", "from-all-namespaces", "to-all-namespaces",
                          "verdict", "drop-reason-desc", "type", "tcp-flags",
                          "traffic-direction", "ip-version", "cluster", "not"})


def _identity(value: str) -> int:
    if value in RESERVED_IDENTITIES:
        return RESERVED_IDENTITIES[value]
    if value.isdigit():
        return int(value)
    raise QueryError(f"invalid security identity {value!r}, expected one of "
                     f"{', '.join(RESERVED_IDENTITIES)} or a numeric value")


def _event_type(value: str) -> flow_pb2.EventTypeFilter:
    name, _, sub = value.partition(":")
    out = flow_pb2.EventTypeFilter()
    if name in EVENT_TYPES:
        out.type = EVENT_TYPES[name]
    elif name.isdigit():
        out.type = int(name)
    else:
        raise QueryError(f"unable to parse type {name!r}: not one of "
                         f"{', '.join(EVENT_TYPES)} nor a number")
    if sub:
        if out.type == EVENT_TYPES["trace"] and sub in TRACE_POINTS:
            out.sub_type = TRACE_POINTS[sub]
        elif sub.isdigit():
            out.sub_type = int(sub)
        else:
            raise QueryError(f"unable to parse event sub-type {sub!r}: not a known sub-type "
                             "name nor a number")
        out.match_sub_type = True
    return out


def _tcp_flags(value: str) -> flow_pb2.TCPFlags:
    flags = flow_pb2.TCPFlags()
    for name in value.split(","):
        upper = name.strip().upper()
        if upper not in TCP_FLAGS:
            raise QueryError(f"unknown tcp flag: {name}")
        setattr(flags, upper, True)
    return flags


def _enum_value(enum: Any, flag: str, value: str) -> int:
    try:
        return int(enum.Value(value.upper()))
    except ValueError:
        names = ", ".join(n for n, _ in enum.items() if not n.endswith("UNKNOWN"))
        raise QueryError(f"invalid --{flag} value: {value} (expected one of {names})") from None


def _namespace_of(name: str) -> str:
    return name.split("/", 1)[0] if "/" in name else ""


def _with_namespaces(names: list[str], namespaces: list[str]) -> list[str]:
    if not namespaces or not names:
        return names
    out = []
    for name in names:
        if "/" in name:
            out.append(name)
        else:
            out += [f"{ns}/{name}" for ns in namespaces]
    return out


@dataclass
class _Tracker:
    """One list (whitelist or blacklist) being built: two filters, OR-ed at the end."""

    left: flow_pb2.FlowFilter | None = None
    right: flow_pb2.FlowFilter | None = None
    ns: list[str] = field(default_factory=list)
    src_ns: list[str] = field(default_factory=list)
    dst_ns: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    def apply(self, update: Callable[[flow_pb2.FlowFilter], None], side: str = "both") -> None:
        if side in ("both", "left"):
            self.left = self.left or FF()
            update(self.left)
        if side in ("both", "right"):
            self.right = self.right or FF()
            update(self.right)

    def filters(self) -> list[flow_pb2.FlowFilter]:
        if self.left is None and self.right is None and not (self.ns or self.src_ns
                                                             or self.dst_ns):
            return []
        left, right = FF(), FF()
        left.CopyFrom(self.left or FF())
        right.CopyFrom(self.right or FF())
        for ff in (left, right):
            if self.dst_ns:
                _apply_ns(ff, self.dst_ns, "destination")
            if self.src_ns:
                _apply_ns(ff, self.src_ns, "source")
        if self.ns:
            _apply_ns(left, self.ns, "source")
            _apply_ns(right, self.ns, "destination")
        return [left] if left == right else [left, right]


def _apply_ns(ff: flow_pb2.FlowFilter, namespaces: list[str], side: str) -> None:
    pods = getattr(ff, f"{side}_pod")
    services = getattr(ff, f"{side}_service")
    if not pods and not services:
        pods.append("")
    new_pods = _with_namespaces(list(pods), namespaces)
    new_services = _with_namespaces(list(services), namespaces)
    del pods[:]
    pods.extend(new_pods)
    del services[:]
    services.extend(new_services)


class FilterBuilder:
    """The hubble CLI's filter flags, applied in order (see the module doc)."""

    def __init__(self) -> None:
        self.whitelist = _Tracker()
        self.blacklist = _Tracker()
        self._negate = False

    def add(self, flag: str, value: str = "") -> None:
        """Apply `--flag value` (flag without dashes, e.g. "from-pod")."""
        if flag not in FILTER_FLAGS:
            raise QueryError(f"unknown filter flag --{flag}")
        if flag == "not":
            if self._negate:
                raise QueryError("consecutive --not statements")
            self._negate = True
            return
        tracker = self.blacklist if self._negate else self.whitelist
        self._negate = False
        if flag not in tracker.changed:
            tracker.changed.append(flag)
        for group in CONFLICTS:
            if flag in group:
                other = next((f for f in group if f != flag and f in tracker.changed), None)
                if other:
                    raise QueryError(f"filters --{other} and --{flag} cannot be combined")
        self._set(tracker, flag, value)
        for ff in (tracker.left, tracker.right):
            if ff is not None:
                self._check_namespaces(tracker, ff)

    def _set(self, t: _Tracker, flag: str, value: str) -> None:
        if flag in _EITHER:
            src, dst = _EITHER[flag]
            item: object = _identity(value) if flag == "identity" else value
            t.apply(lambda ff: getattr(ff, src).append(item), "left")
            t.apply(lambda ff: getattr(ff, dst).append(item), "right")
        elif flag in _ONE_SIDE:
            name = _ONE_SIDE[flag]
            item = _identity(value) if name.endswith("_identity") else value
            t.apply(lambda ff: getattr(ff, name).append(item))
        elif flag == "namespace":
            t.ns.append(value)
        elif flag == "all-namespaces":
            t.ns.append("")
        elif flag == "from-namespace":
            t.src_ns.append(value)
        elif flag == "from-all-namespaces":
            t.src_ns.append("")
        elif flag == "to-namespace":
            t.dst_ns.append(value)
        elif flag == "to-all-namespaces":
            t.dst_ns.append("")
        elif flag == "verdict":
            v = _enum_value(flow_pb2.Verdict, flag, value)
            t.apply(lambda ff: ff.verdict.append(v))
        elif flag == "drop-reason-desc":
            r = _enum_value(flow_pb2.DropReason, flag, value)
            t.apply(lambda ff: ff.drop_reason_desc.append(r))
        elif flag == "traffic-direction":
            d = _enum_value(flow_pb2.TrafficDirection, flag, value)
            t.apply(lambda ff: ff.traffic_direction.append(d))
        elif flag == "ip-version":
            version = {"4": flow_pb2.IPv4, "v4": flow_pb2.IPv4, "ipv4": flow_pb2.IPv4,
                       "6": flow_pb2.IPv6, "v6": flow_pb2.IPv6, "ipv6": flow_pb2.IPv6}.get(
                value.lower(), flow_pb2.IP_NOT_USED)
            t.apply(lambda ff: ff.ip_version.append(version))
        elif flag == "type":
            et = _event_type(value)
            t.apply(lambda ff: ff.event_type.append(et))
        elif flag == "tcp-flags":
            flags = _tcp_flags(value)
            t.apply(lambda ff: ff.tcp_flags.append(flags))
        elif flag == "cluster":
            t.apply(lambda ff: ff.node_name.append(value + "/"))

    @staticmethod
    def _check_namespaces(t: _Tracker, ff: flow_pb2.FlowFilter) -> None:
        checks = ((t.ns, ff.source_pod), (t.ns, ff.source_service), (t.ns, ff.destination_pod),
                  (t.ns, ff.destination_service), (t.src_ns, ff.source_pod),
                  (t.src_ns, ff.source_service), (t.dst_ns, ff.destination_pod),
                  (t.dst_ns, ff.destination_service))
        for namespaces, names in checks:
            for ns in namespaces:
                for name in names:
                    other = _namespace_of(name)
                    if other and other != ns:
                        raise QueryError(f"namespace conflict: {ns!r} does not contain "
                                         f"{name!r}")

    def filters(self) -> tuple[list[flow_pb2.FlowFilter], list[flow_pb2.FlowFilter]]:
        """(whitelist, blacklist); a dangling --not is an error."""
        if self._negate:
            raise QueryError("--not must be followed by a filter flag")
        return self.whitelist.filters(), self.blacklist.filters()


_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def parse_time(text: str, now: dt.datetime, flag: str) -> dt.datetime:
    """An RFC 3339 time (or a date), or a duration back from `now` ("5m", "1h30m")."""
    value = text.strip()
    if _RFC3339.fullmatch(value):
        return dt.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise QueryError(f"--{flag}: {text!r} is neither an RFC 3339 time "
                         "(2024-12-04T10:00:00Z) nor a duration (5m, 1h30m)") from None
    return now - dt.timedelta(seconds=seconds)


@dataclass(frozen=True)
class Selection:
    """Which flows by count and time: `--last`, `--first`, `--all`, `--since`, `--until`."""

    last: int = 0
    first: int = 0
    all: bool = False
    follow: bool = False
    since: str = ""
    until: str = ""


def flows_request(selection: Selection, builder: FilterBuilder, now: dt.datetime
                  ) -> observer_pb2.GetFlowsRequest:
    """The GetFlowsRequest for `hexlane hubble observe`."""
    s = selection
    if s.first and s.follow:
        raise QueryError("--first cannot be combined with --follow")
    if s.first and s.last:
        raise QueryError("--first and --last cannot be combined")
    if s.all and (s.first or s.last):
        raise QueryError("--all cannot be combined with --first or --last")
    whitelist, blacklist = builder.filters()
    request = observer_pb2.GetFlowsRequest(follow=s.follow, whitelist=whitelist,
                                           blacklist=blacklist)
    if s.first:
        request.number, request.first = s.first, True
    elif s.last:
        request.number = s.last
    elif not (s.all or s.follow or s.since or s.until):
        request.number = DEFAULT_LAST
    if s.since:
        request.since.FromDatetime(parse_time(s.since, now, "since"))
    if s.until:
        request.until.FromDatetime(parse_time(s.until, now, "until"))
    return request
