"""From Helm values to a node's Hubble server: the ring capacity, the socket (Cilium's default
path means the node's state dir), the listen address, the node name "<cluster>/<node>"; and
its TLS: none when hubble.tls.enabled is false, certificates made under one CA shared by the
nodes (SAN *.<cluster>.hubble-grpc.cilium.io and the node's IPs, kept across restarts), a CA
given as files in a read-only directory (a mounted Secret: used, never made again), or the
PEMs given in hubble.tls.server.* and tls.ca.*."""

from __future__ import annotations

import base64
import subprocess
from pathlib import Path
from typing import Any

from hexlane.config import resolve_values
from hexlane.hubble.certs import ensure_ca, ensure_client_cert, node_tls
from hexlane.hubble.server import node_server


def values(doc: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    v, problems = resolve_values([("v.yaml", doc or {})])
    assert [p for p in problems if p.severity == "error"] == []
    return v


def test_server_from_values(tmp_path: Path) -> None:
    server = node_server(values(), state_dir=tmp_path, node="node1")
    assert server.store.max_flows == 4095 and server.node_name == "default/node1"
    assert server.socket_path == tmp_path / "hubble.sock"
    assert server.listen_address == ":4244" and server.tls is None
    custom = node_server(values({"cluster": {"name": "home"}, "hubble": {
        "socketPath": "/run/h.sock", "listenAddress": "", "eventBufferCapacity": 255}}),
        state_dir=tmp_path, node="n2")
    assert custom.store.max_flows == 255 and custom.node_name == "home/n2"
    assert custom.socket_path == Path("/run/h.sock") and custom.listen_address == ""


def _san(cert: Path) -> str:
    return subprocess.run(["openssl", "x509", "-in", str(cert), "-noout", "-ext",
                           "subjectAltName"], capture_output=True, text=True,
                          check=True).stdout


def _verify(ca: Path, cert: Path) -> bool:
    return subprocess.run(["openssl", "verify", "-CAfile", str(ca), str(cert)],
                          capture_output=True).returncode == 0


def test_tls_off() -> None:
    v = values({"hubble": {"tls": {"enabled": False}}})
    assert node_tls(v.hubble.tls, Path("/nonexistent"), cluster="default", node="n") is None


def test_certificates_made_under_one_shared_ca(tmp_path: Path) -> None:
    tls_values = values().hubble.tls
    ca_dir = tmp_path / "ca"
    one = node_tls(tls_values, tmp_path / "node1", cluster="default", node="node1",
                   ips=["10.0.0.11"], ca_dir=ca_dir)
    two = node_tls(tls_values, tmp_path / "node2", cluster="default", node="node2",
                   ips=["10.0.0.12"], ca_dir=ca_dir)
    assert one is not None and two is not None
    assert one.client_ca_files == two.client_ca_files == (ca_dir / "ca.crt",)
    assert two.server_name == "node2.default.hubble-grpc.cilium.io"
    san = _san(two.cert_file)
    assert "DNS:*.default.hubble-grpc.cilium.io" in san and "IP Address:10.0.0.12" in san
    assert _verify(ca_dir / "ca.crt", one.cert_file) and _verify(ca_dir / "ca.crt",
                                                                 two.cert_file)
    assert oct(two.key_file.stat().st_mode & 0o777) == "0o600"
    made = two.cert_file.stat().st_mtime_ns
    again = node_tls(tls_values, tmp_path / "node2", cluster="default", node="node2",
                     ips=["10.0.0.12"], ca_dir=ca_dir)
    assert again is not None and again.cert_file.stat().st_mtime_ns == made
    moved = node_tls(tls_values, tmp_path / "node2", cluster="default", node="node2",
                     ips=["10.0.0.99"], ca_dir=ca_dir)
    assert moved is not None and "IP Address:10.0.0.99" in _san(moved.cert_file)
    client = ensure_client_cert(ensure_ca(ca_dir), tmp_path / "client")
    assert _verify(ca_dir / "ca.crt", client.cert)


def test_a_ca_given_in_a_read_only_directory_is_used_as_it_is(tmp_path: Path) -> None:
    """What the DaemonSet mounts: the Secret hexlane-hubble-ca's ca.crt and ca.key, read-only
    (`hexlane agent --hubble-ca-dir`)."""
    made = ensure_ca(tmp_path / "made")
    given = tmp_path / "given"
    given.mkdir()
    for name in ("ca.crt", "ca.key"):
        (given / name).write_bytes((tmp_path / "made" / name).read_bytes())
    given.chmod(0o555)
    try:
        tls = node_tls(values().hubble.tls, tmp_path / "node1", cluster="default",
                       node="node1", ips=["10.0.0.11"], ca_dir=given)
    finally:
        given.chmod(0o755)
    assert tls is not None and tls.client_ca_files == (given / "ca.crt",)
    assert _verify(made.cert, tls.cert_file)
    assert sorted(p.name for p in given.iterdir()) == ["ca.crt", "ca.key"]


def test_pems_given_in_the_values(tmp_path: Path) -> None:
    made = tmp_path / "made"
    given = node_tls(values().hubble.tls, made, cluster="default", node="node1",
                     ca_dir=made / "ca")
    assert given is not None

    def b64(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    v = values({"hubble": {"tls": {"auto": {"enabled": False}, "server": {
        "cert": b64(given.cert_file), "key": b64(given.key_file)}}},
        "tls": {"ca": {"cert": b64(made / "ca" / "ca.crt")}}})
    tls = node_tls(v.hubble.tls, tmp_path / "node", cluster="default", node="node1")
    assert tls is not None
    assert tls.cert_file.read_bytes() == given.cert_file.read_bytes()
    assert tls.client_ca_files == (tmp_path / "node" / "ca" / "ca.crt",)
    assert tls.client_ca_files[0].read_bytes() == (made / "ca" / "ca.crt").read_bytes()
