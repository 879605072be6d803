"""A self-signed serving certificate for the embedded apiserver, made with `openssl`.

kubectl (client-go) sends a bearer token only over TLS, so an apiserver that wants a token
must serve HTTPS. When no certificate is given, `hexlane apiserver` makes one in its data
directory, valid for the addresses it serves on (and the names and ClusterIP a pod would use
for `kubernetes.default`), and writes it as the CA into its kubeconfig. The certificate is
kept across restarts and made again only when the set of names changes.
"""

from __future__ import annotations

import ipaddress
import subprocess
from collections.abc import Iterable
from pathlib import Path

from hexlane.model.errors import InputError, Problem

DNS_NAMES = ("localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
             "kubernetes.default.svc.cluster.local")


def subject_alt_names(hosts: Iterable[str]) -> str:
    """openssl's subjectAltName value for host names and addresses: `DNS:a,IP:10.0.0.1`."""
    entries: list[str] = []
    for host in hosts:
        try:
            ipaddress.ip_address(host)
            entry = f"IP:{host}"
        except ValueError:
            entry = f"DNS:{host}"
        if entry not in entries:
            entries.append(entry)
    return ",".join(entries)


def ensure_self_signed(data_dir: Path, hosts: Iterable[str]) -> tuple[Path, Path]:
    """(certificate, key) in `data_dir`, made when missing or valid for other names."""
    cert, key, names = data_dir / "tls.crt", data_dir / "tls.key", data_dir / "tls.names"
    san = subject_alt_names([*hosts, *DNS_NAMES])
    if cert.exists() and key.exists() and names.exists() and names.read_text() == san:
        return cert, key
    cmd = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
           "-nodes", "-days", "3650", "-subj", "/CN=hexlane-apiserver",
           "-addext", f"subjectAltName={san}",
           "-addext", "basicConstraints=critical,CA:TRUE",
           "-addext", "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign",
           "-addext", "extendedKeyUsage=serverAuth",
           "-keyout", str(key), "-out", str(cert)]
    run_openssl(cmd, "--tls-cert", "or pass --tls-cert/--tls-key")
    key.chmod(0o600)
    names.write_text(san)
    return cert, key


def run_openssl(cmd: list[str], field: str, alternative: str = "") -> None:
    """Run an openssl command; InputError naming `field` when openssl is missing or fails."""
    try:
        subprocess.run(cmd, check=True, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise InputError(Problem("openssl is needed to make certificates; install it"
                                 + (f" {alternative}" if alternative else ""), field)) from e
    except subprocess.CalledProcessError as e:
        raise InputError(Problem(f"openssl failed to make a certificate: {e.stderr.strip()}",
                                 field)) from e
