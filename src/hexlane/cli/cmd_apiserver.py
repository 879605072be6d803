"""`hexlane apiserver`: run the embedded Kubernetes-compatible API server on SQLite.

It keeps its database (every object, Secrets included), token and kubeconfig in
`--data-dir`, which it locks for its whole life (a second server on it stops at once) and
keeps private (0700, files 0600; see `hexlane.apiserver.datadir`). It listens on loopback
(127.0.0.1:6443) unless told otherwise, and writes `DIR/kubeconfig` once it is listening
(`--listen 127.0.0.1:0` picks a free port; the kubeconfig names the port actually bound), so
`kubectl --kubeconfig DIR/kubeconfig` works at once. Without `--token-file` a random token is
generated into `DIR/token` (kept across restarts); it is the user `admin`, and
`--token-auth-file` adds users of their own. `--audit-log F` writes who asked for what, one
JSON line per request (`hexlane.apiserver.audit`). It serves HTTPS, with a self-signed
certificate made in DIR unless `--tls-cert/--tls-key` are given, because kubectl sends a
token only over TLS; `--plain-http` serves HTTP without authentication instead.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
import os
import secrets
import signal
import sys
from pathlib import Path
from typing import Any

from hexlane.model.errors import InputError, Problem


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "apiserver", help="run the embedded Kubernetes-compatible API server (SQLite)",
        description="Run hexlane's embedded Kubernetes-compatible API server on SQLite.")
    parser.add_argument("--data-dir", required=True, type=Path, metavar="DIR",
                        help="database, token and kubeconfig directory")
    parser.add_argument("--listen", default="127.0.0.1:6443", metavar="ADDR:PORT",
                        help="address and port to serve on (default 127.0.0.1:6443; port 0 "
                             "picks a free one)")
    parser.add_argument("--advertise-address", metavar="ADDR",
                        help="address published in the default/kubernetes endpoints "
                             "(default: the listen address, or 127.0.0.1 for a wildcard)")
    parser.add_argument("--token-file", type=Path, metavar="F",
                        help="file holding the bearer token every request must carry "
                             "(default: DIR/token, generated when missing)")
    parser.add_argument("--token-auth-file", type=Path, metavar="F",
                        help="more clients, each with a user name of its own: "
                             "kube-apiserver's static token file (token,user,uid[,groups] "
                             "per line); their requests are logged under that name")
    parser.add_argument("--audit-log", type=Path, metavar="F",
                        help="append one JSON line per API request (user, verb, group, "
                             "resource, subresource, namespace, name, code) to this file")
    parser.add_argument("--tls-cert", type=Path, metavar="F", help="serve HTTPS with this "
                        "certificate (PEM); needs --tls-key. Default: a self-signed one "
                        "made in DIR (kubectl sends tokens only over TLS)")
    parser.add_argument("--tls-key", type=Path, metavar="F", help="the certificate's key")
    parser.add_argument("--plain-http", action="store_true",
                        help="serve plain HTTP without authentication (loopback testing "
                             "only; kubectl sends no token over HTTP)")
    parser.add_argument("--service-cidr", default="10.43.0.0/16", metavar="CIDR",
                        help="ClusterIP range (default 10.43.0.0/16)")
    parser.add_argument("--watch-history", type=int, default=10000, metavar="N",
                        help="changes kept for resuming watches (older: 410 Gone)")
    parser.add_argument("--bookmark-interval", type=float, default=60.0, metavar="SECONDS",
                        help=argparse.SUPPRESS)
    parser.add_argument("-v", "--verbose", action="store_true", help="log requests' errors")
    parser.set_defaults(func=run)


def _listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise InputError(Problem(f"expected ADDR:PORT, got {text!r}", "--listen"))
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
    except ValueError as e:
        raise InputError(Problem(f"expected an IP address, got {host!r}", "--listen")) from e
    return host, int(port)


def _token(args: argparse.Namespace) -> str:
    if args.token_file is not None:
        try:
            token = args.token_file.read_text().strip()
        except OSError as e:
            raise InputError(Problem(f"cannot read the token: {e.strerror}",
                                     file=str(args.token_file))) from e
        if not token:
            raise InputError(Problem("the token file is empty", file=str(args.token_file)))
        return token
    path = args.data_dir / "token"
    if path.exists():
        token = path.read_text().strip()
        if token:
            return token
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return token


def run(args: argparse.Namespace) -> int:
    from hexlane.apiserver import certs, datadir, services
    from hexlane.apiserver.server import ApiServer, ServerConfig, write_kubeconfig

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = _listen(args.listen)
    if bool(args.tls_cert) != bool(args.tls_key):
        raise InputError(Problem("--tls-cert and --tls-key go together", "--tls-cert"))
    try:
        ipaddress.ip_network(args.service_cidr, strict=False)
    except ValueError as e:
        raise InputError(Problem(f"not a CIDR: {args.service_cidr!r}", "--service-cidr")) from e
    data_dir: Path = args.data_dir
    # Before anything in the directory is touched: a second server on it stops here.
    lock = datadir.claim(data_dir)
    tls_cert, tls_key = args.tls_cert, args.tls_key
    token: str | None = None
    if not args.plain_http:
        token = _token(args)
        if tls_cert is None:
            hosts = [h for h in (host, args.advertise_address, "127.0.0.1", "::1",
                                 services.kubernetes_service_ip(args.service_cidr))
                     if h and h not in ("0.0.0.0", "::")]
            tls_cert, tls_key = certs.ensure_self_signed(data_dir, hosts)
    from hexlane.apiserver.audit import read_token_auth_file

    tokens = read_token_auth_file(args.token_auth_file) if args.token_auth_file else {}
    config = ServerConfig(
        data_dir=data_dir, host=host, port=port, token=token, tokens=tokens,
        audit_log=args.audit_log,
        tls_cert=tls_cert, tls_key=tls_key, service_cidr=args.service_cidr,
        watch_history=args.watch_history, bookmark_interval=args.bookmark_interval,
        advertise_address=args.advertise_address)

    async def main() -> None:
        server = ApiServer(config)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        # A kubeconfig from an earlier run may name another port: it appears again only once
        # this server listens, so waiting for it is a readiness check.
        (data_dir / "kubeconfig").unlink(missing_ok=True)
        try:
            await server.start()
        except OSError as e:
            await server.stop()
            raise InputError(Problem(f"cannot listen on {args.listen}: {e.strerror or e}",
                                     "--listen")) from e
        write_kubeconfig(data_dir / "kubeconfig", server=server.url, token=config.token,
                         ca_file=config.tls_cert)
        print(f"hexlane apiserver serving {server.url} (kubeconfig {data_dir / 'kubeconfig'})",
              file=sys.stderr, flush=True)
        try:
            await stop.wait()
        finally:
            await server.stop()

    try:
        asyncio.run(main())
    finally:
        lock.release()
    return 0
