"""`hexlane hubble`: flows of a node, with the hubble CLI's habits.

    hexlane hubble observe [-f] [--last N | --first N | --all] [--since T] [--until T]
                           [filters...] [-o compact|dict|json|jsonpb|table] [server flags]
    hexlane hubble status [server flags]
    hexlane hubble list nodes|namespaces [-o table|json] [server flags]
    hexlane hubble ui [--listen ADDR] [server flags]

`hubble ui` serves the Hubble UI (a service map and a live flow table, `hexlane.hubble.ui`)
on :8081, reading an Observer: by default the Hubble Relay at localhost:4245, as the hubble
CLI does.

Server flags: `--server ADDR` (`unix:///path`, `unix-abstract:NAME`, `host:port`; default this
node's `$STATE_DIR/hubble.sock`, else `@hexlane-hubble`), `--tls`, `--tls-ca-cert-files`,
`--tls-client-cert-file`, `--tls-client-key-file`, `--tls-server-name`,
`--tls-allow-insecure`, `--timeout`.

Filters are the hubble CLI's (see `hexlane.hubble.query`): `--pod [ns/]name`, `--from-pod`,
`--to-pod`, `-n/--namespace`, `-A/--all-namespaces`, `--from-namespace`, `--to-namespace`,
`--ip`/`--from-ip`/`--to-ip`, `--port`/`--from-port`/`--to-port`, `--label`/`--from-label`/
`--to-label`, `--service`/`--from-service`/`--to-service`, `--fqdn`, `--identity`,
`--protocol`, `--verdict`, `-t/--type`, `--tcp-flags`, `--http-status`, `--node-name`, ...;
`--not` negates the next one. A server that cannot be reached is one line naming the
address, and exit 1; bad flags are exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from . import cmd_hubble_relay, flags


class _FilterFlag(argparse.Action):
    """Appends (flag, value) to `filter_ops` in command-line order (`--not` needs it)."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        ops = list(getattr(namespace, "filter_ops", None) or [])
        value = "" if self.nargs == 0 else str(values)
        ops.append((self.dest.replace("_", "-").removeprefix("f-"), value))
        namespace.filter_ops = ops


# (flags, help) of the filter flags that take a value; name = the long flag.
_VALUE_FILTERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("--pod",), "flows from or to a pod: [namespace/]name-prefix"),
    (("--from-pod",), "flows from a pod"), (("--to-pod",), "flows to a pod"),
    (("-n", "--namespace"), "flows from or to pods or services of a namespace"),
    (("--from-namespace",), "flows from a namespace"),
    (("--to-namespace",), "flows to a namespace"),
    (("--ip",), "flows from or to an IP or CIDR"), (("--from-ip",), "flows from an IP"),
    (("--to-ip",), "flows to an IP"), (("--snat-ip",), "flows SNATed to an IP"),
    (("--port",), "flows from or to an L4 port"), (("--from-port",), "flows from a port"),
    (("--to-port",), "flows to a port"),
    (("-l", "--label"), "flows from or to endpoints with labels (selector, k8s:app=x)"),
    (("--from-label",), "flows from endpoints with labels"),
    (("--to-label",), "flows to endpoints with labels"),
    (("--service",), "flows from or to a service: [namespace/]name"),
    (("--from-service",), "flows from a service"), (("--to-service",), "flows to a service"),
    (("--fqdn",), "flows from or to a DNS name pattern (*.example.com)"),
    (("--from-fqdn",), "flows from a DNS name"), (("--to-fqdn",), "flows to a DNS name"),
    (("--identity",), "flows from or to a security identity (number or host, world, ...)"),
    (("--from-identity",), "flows from an identity"), (("--to-identity",), "flows to an identity"),
    (("--protocol",), "L4 or L7 protocol: tcp, udp, sctp, icmp, icmpv4, icmpv6, http, dns"),
    (("--verdict",), "FORWARDED, DROPPED, ERROR, AUDIT, REDIRECTED, TRACED, TRANSLATED"),
    (("--drop-reason-desc",), "a drop reason (POLICY_DENIED, SERVICE_BACKEND_NOT_FOUND, ...)"),
    (("-t", "--type"), "event type: trace, drop, l7, policy-verdict, capture (TYPE[:SUBTYPE], "
                       "e.g. trace:to-endpoint)"),
    (("--tcp-flags",), "flows with these TCP flags (SYN,ACK)"),
    (("--http-status",), "HTTP status code or prefix (404, 5+)"),
    (("--http-method",), "HTTP method"), (("--http-path",), "HTTP path regular expression"),
    (("--http-url",), "HTTP URL regular expression"),
    (("--dns-query",), "DNS query regular expression"),
    (("--node-name",), "node name pattern: node, cluster/node, cluster/"),
    (("--node-label",), "node label selector"), (("--cluster",), "flows of a cluster"),
    (("--uuid",), "a flow by uuid"), (("--trace-id",), "flows of a trace id"),
    (("--traffic-direction",), "ingress or egress"),
    (("--ip-version",), "4 or 6"),
)
_SWITCH_FILTERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("--not",), "negate the next filter flag"),
    (("-A", "--all-namespaces"), "flows of every namespace"),
    (("--from-all-namespaces",), "flows from every namespace"),
    (("--to-all-namespaces",), "flows to every namespace"),
)


def _server_flags(parser: argparse.ArgumentParser, server: str | None = None) -> None:
    """The flags naming the Observer and how to reach it; `server` its default address (None:
    this node's own server)."""
    group = parser.add_argument_group("server")
    group.add_argument("--server", metavar="ADDR", default=server,
                       help="unix:///path, unix-abstract:NAME or host:port (default: "
                            + (server or "this node's $STATE_DIR/hubble.sock, else "
                               "@hexlane-hubble, else the relay at localhost:4245") + ")")
    group.add_argument("--tls", action="store_true", help="connect with TLS")
    group.add_argument("--tls-ca-cert-files", nargs="+", action="extend", default=[],
                       metavar="FILE", help="CA certificates to verify the server with")
    group.add_argument("--tls-client-cert-file", default="", metavar="FILE",
                       help="client certificate (mTLS)")
    group.add_argument("--tls-client-key-file", default="", metavar="FILE",
                       help="client key (mTLS)")
    group.add_argument("--tls-server-name", default="", metavar="NAME",
                       help="the name to verify the server's certificate against, e.g. "
                            "node1.default.hubble-grpc.cilium.io")
    group.add_argument("--tls-allow-insecure", action="store_true",
                       help="do not verify the server's certificate")
    group.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                       help="how long to wait for the server to answer (default 5)")
    flags.state_dir(parser)


def register(subparsers: Any) -> None:
    from hexlane.hubble.ui import DEFAULT_LISTEN, DEFAULT_SERVER  # constants only: cheap

    parser = subparsers.add_parser(
        "hubble", help="flows of this node, like the hubble CLI",
        description="Observe the flows of a node's Hubble server (its Observer API).")
    sub = flags.commands(parser, "hubble_command")

    obs = sub.add_parser("observe", help="print flows, optionally following new ones",
                         description="Print the flows a node observed, as `hubble observe`.")
    obs.add_argument("-f", "--follow", action="store_true", help="follow new flows")
    obs.add_argument("--last", type=int, default=0, metavar="N",
                     help="the last N flows (default 20 unless following or another "
                          "selection is given)")
    obs.add_argument("--first", type=int, default=0, metavar="N", help="the first N flows")
    obs.add_argument("--all", action="store_true", help="every flow the server holds")
    obs.add_argument("--since", default="", metavar="T",
                     help="flows since T (RFC 3339, or a duration back from now: 5m)")
    obs.add_argument("--until", default="", metavar="T", help="flows until T")
    obs.add_argument("-o", "--output", default="compact",
                     choices=("compact", "dict", "json", "jsonpb", "table"),
                     help="compact (default), dict, json (= jsonpb), jsonpb, table")
    obs.add_argument("--print-node-name", action="store_true", help="print the node's name")
    filters = obs.add_argument_group("filters (--not negates the next one)")
    for names, text in _VALUE_FILTERS:
        filters.add_argument(*names, dest="f_" + names[-1][2:].replace("-", "_"),
                             action=_FilterFlag, metavar="VALUE", help=text)
    for names, text in _SWITCH_FILTERS:
        filters.add_argument(*names, dest="f_" + names[-1][2:].replace("-", "_"),
                             action=_FilterFlag, nargs=0, default=None, help=text)
    obs.set_defaults(func=run_observe, filter_ops=[])
    _server_flags(obs)

    status = sub.add_parser("status", help="health and ring usage, as `hubble status`")
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    _server_flags(status)
    status.set_defaults(func=run_status)

    lst = sub.add_parser("list", help="nodes or namespaces the server knows")
    kinds = flags.commands(lst, "hubble_list")
    for kind, text in (("nodes", "the nodes and their ring usage"),
                       ("namespaces", "namespaces seen in the flows held")):
        p = kinds.add_parser(kind, help=text)
        p.add_argument("-o", "--output", choices=("table", "json"), default="table")
        _server_flags(p)
        p.set_defaults(func=run_list, list_kind=kind)

    cmd_hubble_relay.register(sub)

    ui = sub.add_parser("ui", help="serve the Hubble UI: a service map and live flows",
                        description="Serve the Hubble UI: a service map of one namespace or "
                                    "all, and a live flow table with filters, read from an "
                                    "Observer (the Hubble Relay by default, or a node's "
                                    "Hubble server).")
    ui.add_argument("--listen", default=DEFAULT_LISTEN, metavar="ADDR",
                    help="where to serve the page: host:port, :port for every address "
                         "(default %(default)s)")
    ui.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    _server_flags(ui, DEFAULT_SERVER)
    ui.set_defaults(func=run_ui)


# --- shared ----------------------------------------------------------------------------


def _connection(args: argparse.Namespace) -> tuple[Any, Any]:
    """(address, ClientTLS) from the server flags; InputError for bad ones."""
    from hexlane.hubble.client import ClientTLS, default_address, parse_address
    from hexlane.model.errors import InputError, Problem

    try:
        address = parse_address(args.server) if args.server else default_address(
            Path(args.state_dir))
    except ValueError as e:
        raise InputError(Problem(str(e), "--server")) from None
    tls = ClientTLS(enabled=args.tls or bool(args.tls_ca_cert_files or args.tls_client_cert_file),
                    ca_files=tuple(args.tls_ca_cert_files), cert_file=args.tls_client_cert_file,
                    key_file=args.tls_client_key_file, server_name=args.tls_server_name,
                    allow_insecure=args.tls_allow_insecure)
    return address, tls


def _run(coro: Any, args: argparse.Namespace) -> int:
    from hexlane.hubble.client import HubbleUnreachable

    try:
        return int(asyncio.run(coro))
    except HubbleUnreachable as e:
        print(f"error: {e}", file=sys.stderr)
        # Nothing named and nothing found here: on a lab's machine, the relay is on its cp.
        if args.server is None and (hint := flags.no_local_agent(
                args, "state_dir", host="cp",
                what="no Hubble server answers on this machine itself; a lab's Hubble Relay "
                     "runs on its control plane")):
            print(hint, file=sys.stderr)
        return 1
    except (OSError, ValueError) as e:  # certificate files that cannot be read
        print(f"error: {e}", file=sys.stderr)
        return 1


# --- observe ---------------------------------------------------------------------------


def run_observe(args: argparse.Namespace) -> int:
    from hexlane.hubble.query import FilterBuilder, QueryError, Selection, flows_request
    from hexlane.model.errors import InputError, Problem

    builder = FilterBuilder()
    where = ""
    try:
        for flag, value in args.filter_ops:
            where = f"--{flag}"
            builder.add(flag, value)
        where = "--not" if args.filter_ops and args.filter_ops[-1][0] == "not" else ""
        request = flows_request(
            Selection(last=args.last, first=args.first, all=args.all, follow=args.follow,
                      since=args.since, until=args.until),
            builder, dt.datetime.now(dt.UTC))
    except QueryError as e:
        raise InputError(Problem(str(e), where)) from None
    address, tls = _connection(args)
    return _run(_observe(args, address, tls, request), args)


async def _observe(args: argparse.Namespace, address: Any, tls: Any, request: Any) -> int:
    from hexlane.hubble import format as fmt
    from hexlane.hubble.api.observer import observer_grpc
    from hexlane.hubble.client import call, open_channel

    channel = open_channel(address, tls)
    out = sys.stdout
    table = fmt.Table(fmt.flow_table_header(node_name=args.print_node_name))
    printed = 0
    try:
        async with observer_grpc.ObserverStub(channel).GetFlows.open() as stream:
            await call(address, stream.send_message(request, end=True), args.timeout, tls)
            while True:
                response = await call(address, stream.recv_message(), None, tls)
                if response is None:
                    break
                kind = response.WhichOneof("response_types")
                if kind == "lost_events":
                    print(fmt.lost_events_text(response), file=sys.stderr, flush=True)
                    continue
                if kind == "node_status":
                    if args.output in ("json", "jsonpb"):
                        out.write(fmt.json_line(response) + "\n")
                    else:
                        print(fmt.node_status_text(response), file=sys.stderr, flush=True)
                    continue
                if kind != "flow":
                    continue
                flow = response.flow
                if args.output in ("json", "jsonpb"):
                    out.write(fmt.json_line(response) + "\n")
                elif args.output == "dict":
                    if printed:
                        out.write(fmt.DICT_SEPARATOR + "\n")
                    out.write(fmt.dict_record(flow, node_name=args.print_node_name) + "\n")
                elif args.output == "table":
                    table.add(fmt.table_row(flow, node_name=args.print_node_name))
                    if args.follow:  # no end to wait for: print rows as they come
                        out.write(fmt.render_table(table.rows[-1:] if printed
                                                   else table.rows))
                else:
                    out.write(fmt.compact(flow, node_name=args.print_node_name) + "\n")
                printed += 1
                if args.follow:
                    out.flush()
    finally:
        channel.close()
    if args.output == "table" and not args.follow and printed:
        out.write(table.render())
    return 0


# --- status and list -------------------------------------------------------------------


def run_status(args: argparse.Namespace) -> int:
    address, tls = _connection(args)
    return _run(_status(args, address, tls), args)


async def _status(args: argparse.Namespace, address: Any, tls: Any) -> int:
    from hexlane.hubble import format as fmt
    from hexlane.hubble.api.observer import observer_grpc, observer_pb2
    from hexlane.hubble.client import call, health, open_channel

    channel = open_channel(address, tls)
    try:
        healthy = await health(channel, address, args.timeout, tls)
        status = await call(address, observer_grpc.ObserverStub(channel).ServerStatus(
            observer_pb2.ServerStatusRequest()), args.timeout, tls)
    finally:
        channel.close()
    if args.output == "json":
        print(fmt.json_line(status))
    else:
        sys.stdout.write(fmt.status_text(address.text, healthy, status))
    return 0 if healthy else 1


def run_list(args: argparse.Namespace) -> int:
    address, tls = _connection(args)
    return _run(_list(args, address, tls), args)


async def _list(args: argparse.Namespace, address: Any, tls: Any) -> int:
    from google.protobuf import json_format

    from hexlane.hubble import format as fmt
    from hexlane.hubble.api.observer import observer_grpc, observer_pb2
    from hexlane.hubble.client import call, open_channel

    channel = open_channel(address, tls)
    stub = observer_grpc.ObserverStub(channel)
    try:
        if args.list_kind == "nodes":
            answer: Any = await call(address, stub.GetNodes(observer_pb2.GetNodesRequest()),
                                     args.timeout, tls)
            text = fmt.nodes_table(answer.nodes)
        else:
            answer = await call(address, stub.GetNamespaces(
                observer_pb2.GetNamespacesRequest()), args.timeout, tls)
            text = fmt.namespaces_table(answer.namespaces)
    finally:
        channel.close()
    if args.output == "json":
        print(json_format.MessageToJson(answer, preserving_proto_field_name=True))
    else:
        sys.stdout.write(text)
    return 0


# --- ui --------------------------------------------------------------------------------


def run_ui(args: argparse.Namespace) -> int:
    from hexlane.hubble.server import tcp_socket
    from hexlane.hubble.ui.server import serve
    from hexlane.k8s.runtime import log_to_stderr, run_until_stopped

    flags.parse_addr(args.listen, "--listen")
    address, tls = _connection(args)
    try:
        tls.context()  # certificate files read now: a bad one is an error before serving
    except (OSError, ValueError) as e:
        files = ", ".join(f for f in (*tls.ca_files, tls.cert_file, tls.key_file) if f)
        reason = e.strerror if isinstance(e, OSError) and e.strerror else e
        print(f"error: cannot use the TLS files ({files}): {reason}", file=sys.stderr)
        return 1
    try:
        sock = tcp_socket(args.listen)
    except OSError as e:
        print(f"error: cannot listen on {args.listen}: {e.strerror or e}", file=sys.stderr)
        return 1
    log_to_stderr(args.verbose)
    asyncio.run(run_until_stopped(serve(sock, address, tls, timeout=args.timeout),
                                  "hubble ui"))
    return 0
