"""How flows and statuses read on a terminal, as the hubble CLI prints them (pure).

- `compact(flow)`: `Dec  4 10:00:00.123: ns/pod:port (ID:n) -> ns/pod:port (ID:n) TYPE
  VERDICT (SUMMARY)`, with the arrow `<-` (and the ends swapped) for replies and `<>` when the
  direction is unknown, reserved identities by name (`(world)`, `(host)`), IP-only ends as the
  address;
- `dict_record`, `Table`: the `-o dict` and `-o table` layouts;
- `json_line(response)`: protobuf JSON with the proto field names, one object per line
  (`-o json`/`jsonpb`: the GetFlowsResponse);
- `summary(flow)`: the one-line L4 summary Cilium's parser puts in `Flow.Summary`;
- `status_text`, `nodes_table`, `namespaces_table`: `hubble status` and `hubble list`.

Times are printed in UTC with Go's `time.StampMilli` layout, as the hubble CLI does.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterable, Sequence

from google.protobuf import json_format
from google.protobuf.message import Message

from hexlane.hubble.api.flow import flow_pb2
from hexlane.hubble.api.observer import observer_pb2
from hexlane.hubble.api.relay import relay_pb2
from hexlane.hubble.filters import l4_ports

# Cilium's monitor message types (pkg/monitor/api): CiliumEventType.type.
MESSAGE_TYPE_DROP = 1
MESSAGE_TYPE_CAPTURE = 3
MESSAGE_TYPE_TRACE = 4
MESSAGE_TYPE_POLICY_VERDICT = 5
MESSAGE_TYPE_TRACE_SOCK = 7
MESSAGE_TYPE_ACCESS_LOG = 129

# Trace observation points as the datapath numbers them (CiliumEventType.sub_type of a trace)
# and as hubble prints them. The protobuf enum uses the same numbers except TO_ENDPOINT (101).
TRACE_POINT_NAMES = {
    0: "to-endpoint", 1: "to-proxy", 2: "to-host", 3: "to-stack", 4: "to-overlay",
    5: "from-endpoint", 6: "from-proxy", 7: "from-host", 8: "from-stack", 9: "from-overlay",
    10: "from-network", 11: "to-network", 12: "from-crypto", 13: "to-crypto",
}

# The datapath's drop codes (CiliumEventType.sub_type of a drop, = DropReason numbers) and
# the text hubble prints for them.
DROP_REASON_TEXT = {
    0: "Success", 2: "Invalid packet", 130: "Invalid source mac",
    131: "Invalid destination mac", 132: "Invalid source ip", 133: "Policy denied",
    134: "Invalid packet", 135: "CT: Truncated or invalid header",
    136: "CT: Missing TCP ACK flag", 137: "CT: Unknown L4 protocol",
    138: "CT: Can't create entry from packet", 139: "Unsupported L3 protocol",
    140: "Missed tail call", 141: "Error writing to packet", 142: "Unknown L4 protocol",
    143: "Unknown ICMPv4 code", 144: "Unknown ICMPv4 type", 145: "Unknown ICMPv6 code",
    146: "Unknown ICMPv6 type", 147: "Error retrieving tunnel key",
    148: "Error retrieving tunnel options", 149: "Invalid Geneve option",
    150: "Unknown L3 target address", 151: "Stale or unroutable IP",
    152: "No matching local container found", 153: "Error while correcting L3 checksum",
    154: "Error while correcting L4 checksum", 155: "CT: Map insertion failed",
    156: "Invalid IPv6 extension header", 157: "IP fragmentation not supported",
    158: "Service backend not found",
    160: "No tunnel/encapsulation endpoint (datapath BUG!)",
    161: "Failed to insert into proxymap", 162: "Reached EDT rate-limiting drop horizon",
    163: "Unknown connection tracking state", 164: "Local host is unreachable",
    165: "No configuration available to perform policy decision",
    166: "Unsupported L2 protocol", 167: "No mapping for NAT masquerade",
    168: "Unsupported protocol for NAT masquerade", 169: "FIB lookup failed",
    170: "Encapsulation traffic is prohibited", 171: "Invalid identity",
    172: "Unknown sender", 173: "NAT not needed", 174: "Is a ClusterIP",
    175: "First logical datagram fragment not found", 176: "Forbidden ICMPv6 message",
    177: "Denied by LB src range check", 178: "Socket lookup failed",
    179: "Socket assign failed", 180: "Proxy redirection not supported for protocol",
    181: "Policy denied by denylist", 182: "VLAN traffic disallowed by VLAN filter",
    183: "Incorrect VNI from VTEP", 184: "Failed to update or lookup TC buffer",
    185: "No SID was found for the IP address",
    186: "SRv6 state was removed during tail call",
    187: "L3 translation from IPv4 to IPv6 failed (NAT46)",
    188: "L3 translation from IPv6 to IPv4 failed (NAT64)", 189: "Authentication required",
    190: "No conntrack map found", 191: "No nat map found", 192: "Invalid ClusterID",
    193: "Unsupported packet protocol for DSR encapsulation", 194: "No egress gateway found",
    195: "Traffic is unencrypted", 196: "TTL exceeded", 197: "No node ID found",
    198: "Rate limited", 199: "IGMP handled", 200: "IGMP subscribed",
    201: "Multicast handled", 202: "Host datapath not ready",
    203: "Endpoint policy program not available", 204: "No Egress IP configured",
    205: "Punt to proxy",
}

# Cilium's reserved security identities, printed by name instead of (ID:n).
RESERVED_IDENTITIES = {
    1: "host", 2: "world", 3: "unmanaged", 4: "health", 5: "init", 6: "remote-node",
    7: "kube-apiserver", 8: "ingress", 9: "world-ipv4", 10: "world-ipv6",
}

POLICY_MATCH_TYPES = {0: "none", 1: "L3-Only", 2: "L3-L4", 3: "L4-Only", 4: "all",
                      5: "L3-Proto", 6: "Proto-Only"}

_SOCK_XLATE = {1: "pre-xlate-fwd", 2: "post-xlate-fwd", 3: "pre-xlate-rev",
               4: "post-xlate-rev"}

_TCP_FLAG_ORDER = ("SYN", "ACK", "RST", "FIN", "PSH", "URG", "ECE", "CWR", "NS")

# ICMP type (and code) names as gopacket prints them in Cilium's summaries.
_ICMPV4: dict[int, tuple[str, dict[int, str] | None]] = {
    0: ("EchoReply", None),
    3: ("DestinationUnreachable", {
        0: "Net", 1: "Host", 2: "Protocol", 3: "Port", 4: "FragmentationNeeded",
        5: "SourceRoutingFailed", 6: "NetUnknown", 7: "HostUnknown", 8: "SourceIsolated",
        9: "NetAdminProhibited", 10: "HostAdminProhibited", 11: "NetTOS", 12: "HostTOS",
        13: "CommAdminProhibited", 14: "HostPrecedence", 15: "PrecedenceCutoff"}),
    4: ("SourceQuench", None),
    5: ("Redirect", {0: "Net", 1: "Host", 2: "TOS+Net", 3: "TOS+Host"}),
    8: ("EchoRequest", None),
    9: ("RouterAdvertisement", None),
    10: ("RouterSolicitation", None),
    11: ("TimeExceeded", {0: "TTLExceeded", 1: "FragmentReassemblyTimeExceeded"}),
    12: ("ParameterProblem", {0: "PointerIndicatesError", 1: "MissingOption",
                              2: "BadLength"}),
    13: ("TimestampRequest", None), 14: ("TimestampReply", None),
    15: ("InfoRequest", None), 16: ("InfoReply", None),
    17: ("AddressMaskRequest", None), 18: ("AddressMaskReply", None),
}
_ICMPV6: dict[int, tuple[str, dict[int, str] | None]] = {
    1: ("DestinationUnreachable", {
        0: "NoRouteToDst", 1: "AdminProhibited", 2: "BeyondScopeOfSrc",
        3: "AddressUnreachable", 4: "PortUnreachable", 5: "SrcAddressFailedPolicy",
        6: "RejectRouteToDst"}),
    2: ("PacketTooBig", None),
    3: ("TimeExceeded", {0: "HopLimitExceeded", 1: "FragmentReassemblyTimeExceeded"}),
    4: ("ParameterProblem", {0: "ErroneousHeaderField", 1: "UnrecognizedNextHeader",
                             2: "UnrecognizedIPv6Option"}),
    128: ("EchoRequest", None), 129: ("EchoReply", None),
    133: ("RouterSolicitation", None), 134: ("RouterAdvertisement", None),
    135: ("NeighborSolicitation", None), 136: ("NeighborAdvertisement", None),
    137: ("Redirect", None),
}


def _icmp_text(names: dict[int, tuple[str, dict[int, str] | None]], t: int, c: int) -> str:
    if t not in names:
        return f"{t}({c})"
    name, codes = names[t]
    if codes is None:
        return name if c == 0 else f"{name}(Code: {c})"
    return f"{name}({codes[c]})" if c in codes else f"{name}(Code: {c})"


def tcp_flags_text(flags: flow_pb2.TCPFlags) -> str:
    """"SYN, ACK" in Cilium's order."""
    return ", ".join(name for name in _TCP_FLAG_ORDER if getattr(flags, name))


def summary(flow: flow_pb2.Flow) -> str:
    """The L4 summary Cilium's parser writes into Flow.Summary."""
    kind = flow.l4.WhichOneof("protocol") if flow.HasField("l4") else None
    if kind == "TCP":
        return "TCP Flags: " + tcp_flags_text(flow.l4.TCP.flags)
    if kind in ("UDP", "SCTP"):
        return kind
    if kind == "ICMPv4":
        return "ICMPv4 " + _icmp_text(_ICMPV4, flow.l4.ICMPv4.type, flow.l4.ICMPv4.code)
    if kind == "ICMPv6":
        return "ICMPv6 " + _icmp_text(_ICMPV6, flow.l4.ICMPv6.type, flow.l4.ICMPv6.code)
    if flow.HasField("IP"):
        return "IPv6" if flow.IP.ipVersion == flow_pb2.IPv6 else "IPv4"
    return "Ethernet" if flow.HasField("ethernet") else ""


def identity_text(identity: int) -> str:
    """`(world)` for a reserved identity, `(ID:1234)` otherwise."""
    name = RESERVED_IDENTITIES.get(identity)
    return f"({name})" if name else f"(ID:{identity})"


def drop_reason_text(code: int) -> str:
    return DROP_REASON_TEXT.get(code, str(code))


def trace_point_code(flow: flow_pb2.Flow) -> int:
    """The datapath's trace point number: from trace_observation_point when set, else from
    the event's sub type."""
    point = flow.trace_observation_point
    if point == flow_pb2.TO_ENDPOINT:
        return 0
    if point != flow_pb2.UNKNOWN_POINT:
        return int(point)
    return int(flow.event_type.sub_type)


def flow_type(flow: flow_pb2.Flow) -> str:
    """The TYPE column: `to-endpoint`, a drop reason, `policy-verdict:L3-L4 INGRESS`,
    `http-request`, ..."""
    if flow.HasField("l7"):
        record = flow.l7.WhichOneof("record")
        proto = {"http": "http", "dns": "dns", "kafka": "kafka"}.get(record or "", "l7")
        kind = flow_pb2.L7FlowType.Name(flow.l7.type).lower()
        if record == "dns":
            kind += " " + flow.l7.dns.observation_source
        return f"{proto}-{kind}"
    et = flow.event_type.type
    if et == MESSAGE_TYPE_TRACE:
        code = trace_point_code(flow)
        return TRACE_POINT_NAMES.get(code, str(code))
    if et == MESSAGE_TYPE_DROP:
        code = int(flow.drop_reason_desc) or int(flow.event_type.sub_type)
        return drop_reason_text(code)
    if et == MESSAGE_TYPE_POLICY_VERDICT:
        match = POLICY_MATCH_TYPES.get(flow.policy_match_type, "unknown")
        direction = flow_pb2.TrafficDirection.Name(flow.traffic_direction)
        return f"policy-verdict:{match} {direction}"
    if et == MESSAGE_TYPE_CAPTURE:
        return flow_pb2.DebugCapturePoint.Name(flow.debug_capture_point)
    if et == MESSAGE_TYPE_TRACE_SOCK:
        point = int(flow.sock_xlate_point)
        return _SOCK_XLATE.get(point, flow_pb2.SocketTranslationPoint.Name(point))
    return "UNKNOWN"


def verdict_text(flow: flow_pb2.Flow) -> str:
    verdict = flow.verdict
    name = flow_pb2.Verdict.Name(verdict)
    if flow.event_type.type == MESSAGE_TYPE_POLICY_VERDICT:
        if verdict in (flow_pb2.FORWARDED, flow_pb2.REDIRECTED):
            return "ALLOWED"
        if verdict in (flow_pb2.DROPPED, flow_pb2.ERROR):
            return "DENIED"
        if verdict == flow_pb2.AUDIT:
            return "AUDITED"
    return name


def summary_text(flow: flow_pb2.Flow) -> str:
    """The SUMMARY column: the flow's summary (computed when empty), plus the auth type."""
    text = flow.Summary or summary(flow)
    if flow.auth_type != flow_pb2.DISABLED:
        text += "; Auth: " + flow_pb2.AuthType.Name(flow.auth_type)
    names = policy_names(flow)
    if names:
        text += "; Policy: " + ", ".join(names)
    return text


def policy_names(flow: flow_pb2.Flow) -> list[str]:
    """The policies a policy verdict names ("NetworkPolicy ns/name"), allowing or denying."""
    out = []
    for field_ in (flow.ingress_allowed_by, flow.egress_allowed_by, flow.ingress_denied_by,
                   flow.egress_denied_by):
        for p in field_:
            out.append(f"{p.kind} {p.namespace}/{p.name}" if p.namespace
                       else f"{p.kind} {p.name}")
    return out


def _join_host_port(host: str, port: str) -> str:
    try:
        if isinstance(ipaddress.ip_address(host), ipaddress.IPv6Address):
            host = f"[{host}]"
    except ValueError:
        if ":" in host:
            host = f"[{host}]"
    return f"{host}:{port}"


def _hostname(ip: str, port: int | None, ns: str, pod: str, svc: str,
              names: Sequence[str]) -> str:
    host = ip
    if pod:
        host = f"{ns}/{pod}" if ns else pod
    elif svc:
        host = f"{ns}/{svc}" if ns else svc
    elif names:
        host = ",".join(names)
    if port:
        return _join_host_port(host, str(port))
    return host


def endpoints(flow: flow_pb2.Flow) -> tuple[str, str]:
    """(source, destination) as hubble names them: ns/pod:port, ns/service:port, DNS names,
    or the address."""
    if not flow.HasField("IP"):
        if flow.HasField("ethernet"):
            return flow.ethernet.source, flow.ethernet.destination
        return "", ""
    ports = l4_ports(flow) or (None, None)
    src_ns, dst_ns = flow.source.namespace, flow.destination.namespace
    src_svc = dst_svc = ""
    if flow.HasField("source_service"):
        src_ns, src_svc = flow.source_service.namespace, flow.source_service.name
    if flow.HasField("destination_service"):
        dst_ns, dst_svc = flow.destination_service.namespace, flow.destination_service.name
    return (_hostname(flow.IP.source, ports[0], src_ns, flow.source.pod_name, src_svc,
                      flow.source_names),
            _hostname(flow.IP.destination, ports[1], dst_ns, flow.destination.pod_name,
                      dst_svc, flow.destination_names))


def timestamp_text(ts_seconds: int, ts_nanos: int, valid: bool = True) -> str:
    """Go's time.StampMilli in UTC: `Dec  4 10:00:00.123` (`N/A` when unset)."""
    if not valid:
        return "N/A"
    t = dt.datetime.fromtimestamp(ts_seconds, tz=dt.UTC)
    return f"{t:%b} {t.day:>2} {t:%H:%M:%S}.{ts_nanos // 1_000_000:03d}"


def flow_time_text(flow: flow_pb2.Flow) -> str:
    return timestamp_text(flow.time.seconds, flow.time.nanos, flow.HasField("time"))


def compact(flow: flow_pb2.Flow, *, node_name: bool = False) -> str:
    """One flow as `hubble observe` prints it by default."""
    src, dst = endpoints(flow)
    src_id = identity_text(flow.source.identity)
    dst_id = identity_text(flow.destination.identity)
    arrow = "->"
    if not flow.HasField("is_reply"):
        arrow = "<>"
    elif flow.is_reply.value:
        src, dst, src_id, dst_id, arrow = dst, src, dst_id, src_id, "<-"
    node = f" [{flow.node_name}]" if node_name else ""
    return (f"{flow_time_text(flow)}{node}: {src} {src_id} {arrow} {dst} {dst_id} "
            f"{flow_type(flow)} {verdict_text(flow)} ({summary_text(flow)})")


DICT_SEPARATOR = "------------"


def dict_record(flow: flow_pb2.Flow, *, node_name: bool = False) -> str:
    """One flow as `-o dict` prints it (without the separator between records)."""
    src, dst = endpoints(flow)
    lines = [f"  TIMESTAMP: {flow_time_text(flow)}"]
    if node_name:
        lines.append(f"       NODE: {flow.node_name}")
    lines += [f"     SOURCE: {src}", f"DESTINATION: {dst}", f"       TYPE: {flow_type(flow)}",
              f"    VERDICT: {verdict_text(flow)}",
              f"    SUMMARY: {flow.Summary or summary(flow)}"]
    return "\n".join(lines)


class Table:
    """Columns aligned as Go's tabwriter(minwidth 2, padding 3) aligns hubble's tables."""

    def __init__(self, header: Sequence[str]) -> None:
        self.rows: list[list[str]] = [list(header)]

    def add(self, row: Sequence[str]) -> None:
        self.rows.append(list(row))

    def render(self) -> str:
        return render_table(self.rows)


def render_table(rows: Sequence[Sequence[str]]) -> str:
    """Every column but the last padded to its widest cell plus 3 (at least 2)."""
    if not rows:
        return ""
    ncols = max(len(r) for r in rows)
    widths = [max([len(r[i]) for r in rows if i < len(r) - 1] or [0]) for i in range(ncols)]
    out = []
    for row in rows:
        cells = [cell.ljust(max(widths[i] + 3, 2)) if i < len(row) - 1 else cell
                 for i, cell in enumerate(row)]
        out.append("".join(cells))
    return "\n".join(out) + "\n"


FLOW_TABLE_HEADER = ("TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT", "SUMMARY")


def table_row(flow: flow_pb2.Flow, *, node_name: bool = False) -> list[str]:
    src, dst = endpoints(flow)
    row = [flow_time_text(flow)]
    if node_name:
        row.append(flow.node_name)
    return [*row, src, dst, flow_type(flow), verdict_text(flow), summary_text(flow)]


def flow_table_header(*, node_name: bool = False) -> list[str]:
    head = list(FLOW_TABLE_HEADER)
    if node_name:
        head.insert(1, "NODE")
    return head


def json_line(message: Message) -> str:
    """Protobuf JSON with the .proto field names on one line (as Cilium's jsonpb)."""
    return json.dumps(json_format.MessageToDict(message, preserving_proto_field_name=True),
                      separators=(",", ":"))


def lost_events_text(response: observer_pb2.GetFlowsResponse) -> str:
    """A loss notice as hubble prints it: `<time>: EVENTS LOST: <source> CPU(n) <count>`."""
    lost = response.lost_events
    when = timestamp_text(response.time.seconds, response.time.nanos, response.HasField("time"))
    cpu = lost.cpu.value if lost.HasField("cpu") else 0
    source = flow_pb2.LostEventSource.Name(lost.source)
    return f"{when}: EVENTS LOST: {source} CPU({cpu}) {lost.num_events_lost}"


def node_status_text(response: observer_pb2.GetFlowsResponse) -> str:
    """A relay's node status event: `<time>: 1 node unavailable: default/node2 (why)`."""
    status = response.node_status
    when = timestamp_text(response.time.seconds, response.time.nanos, response.HasField("time"))
    count = len(status.node_names)
    nodes = f"{count} node{'' if count == 1 else 's'}"
    what = {relay_pb2.NODE_CONNECTED: f"receiving flows from {nodes}",
            relay_pb2.NODE_UNAVAILABLE: f"{nodes} unavailable",
            relay_pb2.NODE_GONE: f"{nodes} removed from the cluster",
            relay_pb2.NODE_ERROR: f"error on {nodes}"}.get(status.state_change,
                                                            f"{nodes} in an unknown state")
    why = f" ({status.message})" if status.message else ""
    return f"{when}: {what}: {', '.join(status.node_names)}{why}"


def _comma(n: int) -> str:
    return f"{n:,}"


def status_text(address: str, healthy: bool, status: observer_pb2.ServerStatusResponse
                ) -> str:
    """`hubble status`."""
    lines = [f"Healthcheck (via {address}): {'Ok' if healthy else 'Not serving'}"]
    ratio = 100.0 * status.num_flows / status.max_flows if status.max_flows else 0.0
    lines.append(f"Current/Max Flows: {_comma(status.num_flows)}/{_comma(status.max_flows)} "
                 f"({ratio:.2f}%)")
    lines.append(f"Flows/s: {status.flows_rate:.2f}")
    if status.HasField("num_connected_nodes"):
        total = status.num_connected_nodes.value
        if status.HasField("num_unavailable_nodes"):
            total += status.num_unavailable_nodes.value
        lines.append(f"Connected Nodes: {status.num_connected_nodes.value}/{total}")
    if status.HasField("num_unavailable_nodes") and status.num_unavailable_nodes.value:
        lines.append(f"Unavailable Nodes: {status.num_unavailable_nodes.value}")
        lines += [f"  - {n}" for n in status.unavailable_nodes]
    return "\n".join(lines) + "\n"


def go_duration(ns: int) -> str:
    """Go's Duration.String for whole seconds: 45s, 6m20s, 1h2m3s."""
    s = ns // 1_000_000_000
    if s == 0:
        return "0s"
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    if h:
        return f"{h}h{m}m{sec}s"
    if m:
        return f"{m}m{sec}s"
    return f"{sec}s"


_NODE_STATE = {relay_pb2.NODE_CONNECTED: "Connected", relay_pb2.NODE_UNAVAILABLE: "Unavailable",
               relay_pb2.NODE_GONE: "Gone", relay_pb2.NODE_ERROR: "Error"}


def nodes_table(nodes: Iterable[observer_pb2.Node]) -> str:
    """`hubble list nodes`."""
    table = Table(("NAME", "STATUS", "AGE", "FLOWS/S", "CURRENT/MAX-FLOWS"))
    for n in nodes:
        age = rate = ratio = "N/A"
        uptime_s = n.uptime_ns // 1_000_000_000
        if uptime_s > 0:
            age = go_duration(n.uptime_ns)
            rate = f"{n.seen_flows / uptime_s:.2f}"
        if n.max_flows:
            ratio = f"{n.num_flows}/{n.max_flows} ({100.0 * n.num_flows / n.max_flows:6.2f}%)"
        table.add((n.name, _NODE_STATE.get(n.state, "Unknown"), age, rate, ratio))
    return table.render()


def namespaces_table(namespaces: Iterable[observer_pb2.Namespace]) -> str:
    """`hubble list namespaces` (a CLUSTER column only when some namespace names one)."""
    items = list(namespaces)
    if any(ns.cluster for ns in items):
        table = Table(("CLUSTER", "NAMESPACE"))
        for ns in items:
            table.add((ns.cluster, ns.namespace))
    else:
        table = Table(("NAMESPACE",))
        for ns in items:
            table.add((ns.namespace,))
    return table.render()
