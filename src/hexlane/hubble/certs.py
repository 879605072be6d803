"""Hubble's certificates, made with `openssl` as Cilium's chart makes them.

With `hubble.tls.enabled` (Cilium's default) the agent serves 4244 with a server certificate
signed by the Hubble CA and accepts only clients whose certificate that CA signed (mTLS).
Cilium names every agent's certificate `*.<cluster>.hubble-grpc.cilium.io`, so a relay or CLI
verifies `<node>.<cluster>.hubble-grpc.cilium.io` (`server_name`) whatever address it dialed;
hexlane adds the node's IPs (and `hubble.tls.server.extraDnsNames/extraIpAddresses`).

    ca = ensure_ca(lab_dir / "hubble-ca", days=1095)             # once per cluster
    tls = ensure_server_cert(ca, node_dir, cluster="default", node="node1", ips=["10.0.0.11"])
    client = ensure_client_cert(ca, lab_dir / "hubble-client")   # for the CLI or a relay
    HubbleServer(..., tls=tls)                                   # tls: a server.HubbleTLS

Each `ensure_*` keeps what it made and makes it again only when missing or made for other
names, so restarts keep certificates. Keys are written mode 0600.

`node_tls(values.hubble.tls, node_dir, cluster=..., node=..., ips=..., ca_dir=...)` is what
the agent calls: None when `hubble.tls.enabled` is false; the PEMs given in the values
(`hubble.tls.server.cert/key`, `tls.ca.cert/key`) when there are; otherwise certificates made
here, signed by the CA in `ca_dir` (made there when missing). All nodes of a cluster must
share that CA (the lab keeps it in its own directory; a real cluster gives `tls.ca.*`).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from hexlane.apiserver.certs import run_openssl, subject_alt_names
from hexlane.config import HubbleTls
from hexlane.hubble.server import HubbleTLS

DEFAULT_VALIDITY_DAYS = 1095  # hubble.tls.auto.certValidityDuration
CA_NAME = "hubble-ca.cilium.io"
CLIENT_NAME = "*.hubble-client.cilium.io"
_FIELD = "hubble.tls"


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


def server_name(node: str, cluster: str) -> str:
    """The name a client verifies a node's Hubble certificate against."""
    return f"{node}.{cluster}.hubble-grpc.cilium.io"


def server_cert_names(cluster: str) -> str:
    """The wildcard every agent certificate of a cluster carries."""
    return f"*.{cluster}.hubble-grpc.cilium.io"


def _fresh(pair: CertPair, names_file: Path, names: str) -> bool:
    return (pair.cert.exists() and pair.key.exists() and names_file.exists()
            and names_file.read_text() == names)


def _ec_key_args() -> list[str]:
    return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def ensure_ca(directory: Path, *, days: int = DEFAULT_VALIDITY_DAYS) -> CertPair:
    """The Hubble CA (ca.crt, ca.key) in `directory`, made when missing. A pair found
    there that hexlane did not make (no ca.names: a mounted Secret, a read-only directory)
    is the CA given, used as it is."""
    pair = CertPair(directory / "ca.crt", directory / "ca.key")
    names = directory / "ca.names"
    given = pair.cert.exists() and pair.key.exists() and not names.exists()
    if given or _fresh(pair, names, CA_NAME):
        return pair
    directory.mkdir(parents=True, exist_ok=True)
    run_openssl(["openssl", "req", "-x509", *_ec_key_args(), "-days", str(days),
                 "-subj", f"/CN={CA_NAME}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
                 "-keyout", str(pair.key), "-out", str(pair.cert)], _FIELD)
    pair.key.chmod(0o600)
    names.write_text(CA_NAME)
    return pair


def _issue(ca: CertPair, pair: CertPair, names_file: Path, common_name: str,
           hosts: Iterable[str], usage: str, days: int) -> CertPair:
    san = subject_alt_names(hosts)
    record = f"{common_name}|{san}|{usage}|{hashlib.sha256(ca.cert.read_bytes()).hexdigest()}"
    if _fresh(pair, names_file, record):
        return pair
    pair.cert.parent.mkdir(parents=True, exist_ok=True)
    run_openssl(["openssl", "req", "-x509", *_ec_key_args(), "-days", str(days),
                 "-CA", str(ca.cert), "-CAkey", str(ca.key),
                 "-set_serial", str(secrets.randbits(63)),
                 "-subj", f"/CN={common_name}",
                 "-addext", f"subjectAltName={san}",
                 "-addext", "basicConstraints=critical,CA:FALSE",
                 "-addext", "keyUsage=critical,digitalSignature,keyEncipherment",
                 "-addext", f"extendedKeyUsage={usage}",
                 "-keyout", str(pair.key), "-out", str(pair.cert)], _FIELD)
    pair.key.chmod(0o600)
    names_file.write_text(record)
    return pair


def ensure_server_cert(ca: CertPair, directory: Path, *, cluster: str, node: str,
                       ips: Iterable[str] = (), extra_dns_names: Iterable[str] = (),
                       extra_ips: Iterable[str] = (), days: int = DEFAULT_VALIDITY_DAYS
                       ) -> HubbleTLS:
    """A node's server certificate (server.crt, server.key) and the TLS settings that
    serve it and require clients signed by the same CA."""
    for ip in (*ips, *extra_ips):
        ipaddress.ip_address(ip)  # ValueError for a bad address, before openssl sees it
    pair = _issue(ca, CertPair(directory / "server.crt", directory / "server.key"),
                  directory / "server.names", server_cert_names(cluster),
                  [server_cert_names(cluster), *extra_dns_names, *ips, *extra_ips],
                  "serverAuth", days)
    return HubbleTLS(pair.cert, pair.key, (ca.cert,), server_name=server_name(node, cluster))


def ensure_client_cert(ca: CertPair, directory: Path, *, name: str = CLIENT_NAME,
                       days: int = DEFAULT_VALIDITY_DAYS) -> CertPair:
    """A client certificate (client.crt, client.key) the Hubble servers of this CA accept."""
    return _issue(ca, CertPair(directory / "client.crt", directory / "client.key"),
                  directory / "client.names", name, [name], "clientAuth", days)


def _write_pem(path: Path, b64: str, secret: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = base64.b64decode(b64)
    if not path.exists() or path.read_bytes() != data:
        path.write_bytes(data)
    if secret:
        path.chmod(0o600)
    return path


def node_tls(values: HubbleTls, directory: Path, *, cluster: str, node: str,
             ips: Iterable[str] = (), ca_dir: Path | None = None) -> HubbleTLS | None:
    """The TLS settings of a node's Hubble server from the values (None: TLS off)."""
    if not values.enabled:
        return None
    ca_dir = ca_dir or directory / "ca"
    ca: CertPair | None = None
    if values.ca_cert:
        ca = CertPair(_write_pem(ca_dir / "ca.crt", values.ca_cert), ca_dir / "ca.key")
        if values.ca_key:
            _write_pem(ca.key, values.ca_key, secret=True)
    if values.server_cert:
        cert = _write_pem(directory / "server.crt", values.server_cert)
        key = _write_pem(directory / "server.key", values.server_key, secret=True)
        return HubbleTLS(cert, key, (ca.cert,) if ca else (),
                         server_name=server_name(node, cluster))
    if ca is None:
        ca = ensure_ca(ca_dir, days=values.ca_validity_days)
    return ensure_server_cert(ca, directory, cluster=cluster, node=node, ips=ips,
                              extra_dns_names=values.extra_dns_names,
                              extra_ips=values.extra_ip_addresses,
                              days=values.cert_validity_days)
