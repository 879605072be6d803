"""`hexlane hubble relay`: the flows of every node through one Observer API on :4245.

    hexlane hubble relay [--kubeconfig F] [--values F]... [--set K=V]...
        [--listen-address :4245] [--hubble-ca-dir DIR | --tls-hubble-client-cert-file F
        --tls-hubble-client-key-file F --tls-hubble-server-ca-files F...]
        [--peer NAME=HOST:PORT]...

Flags keep the names of Cilium's hubble-relay where it has them (`--listen-address`,
`--dial-timeout`, `--retry-timeout`, `--sort-buffer-len-max`, `--sort-buffer-drain-timeout`,
`--tls-hubble-*`); each overrides the `hubble.relay.*` value of the same meaning. See
docs/hubble.md ("Relay").
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from hexlane.model.errors import InputError, Problem

from . import flags


def register(sub: Any) -> None:
    p = sub.add_parser(
        "relay", help="serve the flows of every node (Hubble Relay, :4245)",
        description="Run Hubble Relay: dial every node's Hubble server (the Nodes of the "
                    "cluster, or --peer), and serve the Observer API for all of them.")
    p.add_argument("--kubeconfig", metavar="F",
                   help="kubeconfig file (default: $KUBECONFIG, in-cluster, ~/.kube/config)")
    flags.helm_values(p)
    p.add_argument("--listen-address", metavar="ADDR",
                   help="where to serve (default hubble.relay.listenHost:listenPort, :4245)")
    p.add_argument("--peer", action="append", default=[], metavar="NAME=HOST:PORT",
                   help="a node's Hubble server, plaintext (repeatable); given, the relay "
                        "does not read Nodes")
    p.add_argument("--dial-timeout", metavar="D", help="hubble.relay.dialTimeout")
    p.add_argument("--retry-timeout", metavar="D", help="hubble.relay.retryTimeout")
    p.add_argument("--sort-buffer-len-max", type=int, metavar="N",
                   help="hubble.relay.sortBufferLenMax")
    p.add_argument("--sort-buffer-drain-timeout", metavar="D",
                   help="hubble.relay.sortBufferDrainTimeout (the sort window W)")
    tls = p.add_argument_group("TLS to the nodes (with hubble.tls.enabled)")
    tls.add_argument("--hubble-ca-dir", type=Path, metavar="DIR",
                     help="the Hubble CA's directory (ca.crt, ca.key): the relay makes its "
                          "client certificate there (as the lab does)")
    tls.add_argument("--tls-hubble-client-cert-file", default="", metavar="F")
    tls.add_argument("--tls-hubble-client-key-file", default="", metavar="F")
    tls.add_argument("--tls-hubble-server-ca-files", nargs="+", action="extend", default=[],
                     metavar="F")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.set_defaults(func=run)


def _overrides(args: argparse.Namespace, relay: Any) -> Any:
    changes: dict[str, Any] = {}
    for flag, attr in (("dial_timeout", "dial_timeout"), ("retry_timeout", "retry_timeout"),
                       ("sort_buffer_drain_timeout", "sort_window")):
        text = getattr(args, flag)
        if text:
            changes[attr] = flags.duration(text, "--" + flag.replace("_", "-"))
    if args.sort_buffer_len_max is not None:
        if args.sort_buffer_len_max < 1:
            raise InputError(Problem("must be at least 1", "--sort-buffer-len-max"))
        changes["sort_buffer_len_max"] = args.sort_buffer_len_max
    return dataclasses.replace(relay, **changes)


def _tls(args: argparse.Namespace, enabled: bool) -> Any:
    from hexlane.hubble import certs
    from hexlane.hubble.relay import RelayTLS

    if not enabled:
        return None
    if args.tls_hubble_client_cert_file or args.tls_hubble_client_key_file:
        if not (args.tls_hubble_client_cert_file and args.tls_hubble_client_key_file
                and args.tls_hubble_server_ca_files):
            raise InputError(Problem(
                "give the client certificate, its key and the CA files together",
                "--tls-hubble-client-cert-file"))
        return RelayTLS(tuple(args.tls_hubble_server_ca_files),
                        args.tls_hubble_client_cert_file, args.tls_hubble_client_key_file)
    if args.hubble_ca_dir:
        ca = certs.CertPair(args.hubble_ca_dir / "ca.crt", args.hubble_ca_dir / "ca.key")
        if not ca.cert.exists() or not ca.key.exists():
            raise InputError(Problem(f"no ca.crt and ca.key in {args.hubble_ca_dir}",
                                     "--hubble-ca-dir"))
        client = certs.ensure_client_cert(ca, args.hubble_ca_dir.parent / "hubble-relay-client",
                                          name="hubble-relay.hubble-client.cilium.io")
        return RelayTLS((str(ca.cert),), str(client.cert), str(client.key))
    raise InputError(Problem(
        "hubble.tls.enabled: the nodes require a client certificate; give --hubble-ca-dir "
        "or --tls-hubble-client-cert-file, --tls-hubble-client-key-file and "
        "--tls-hubble-server-ca-files (or set hubble.tls.enabled=false)", "--hubble-ca-dir"))


def run(args: argparse.Namespace) -> int:
    from hexlane.hubble.peers import parse_static_peer
    from hexlane.hubble.relaydaemon import RelayConfig, run_relay
    from hexlane.hubble.server import parse_listen_address

    values = flags.start_daemon(args)
    relay = _overrides(args, values.hubble.relay)
    values = dataclasses.replace(values, hubble=dataclasses.replace(values.hubble, relay=relay))
    listen = args.listen_address or f"{relay.listen_host}:{values.hubble.relay_listen_port}"
    try:
        parse_listen_address(listen)
        peers = tuple(parse_static_peer(t) for t in args.peer)
    except ValueError as e:
        raise InputError(Problem(str(e), "--peer" if args.peer else "--listen-address")
                         ) from None
    tls = None if peers else _tls(args, values.hubble.tls.enabled)
    config = RelayConfig(values=values, listen_address=listen, kubeconfig=args.kubeconfig,
                         static_peers=peers, tls=tls)
    return asyncio.run(run_relay(config))
