"""Reaching a Hubble server from the CLI: addresses, TLS, and errors a user can read.

Addresses are written as the hubble CLI takes them: `unix:///var/run/hexlane/hubble.sock`
(or `unix:PATH`), `unix-abstract:hexlane-hubble` (an abstract socket of the caller's network
namespace), `host:port` and `[v6]:port`. Without `--server`, the node's own server:
`$STATE_DIR/hubble.sock` when that file exists, else `@hexlane-hubble` when it listens
(in a node's network namespace), else Hubble Relay at `localhost:4245` as the hubble CLI
does (the lab's control-plane host runs the relay).

Every failure to talk to the server becomes a `HubbleUnreachable` whose message is one line
naming the address.
"""

from __future__ import annotations

import asyncio
import re
import socket
import ssl
from collections.abc import Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import h2.exceptions
from grpclib.client import Channel
from grpclib.config import Configuration
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.health.v1.health_grpc import HealthStub
from grpclib.health.v1.health_pb2 import HealthCheckRequest, HealthCheckResponse

from hexlane.hubble.server import ABSTRACT_NAME, HEALTH_SERVICE, SOCKET_NAME

T = TypeVar("T")

RELAY_PORT = 4245
RELAY_ADDRESS = f"localhost:{RELAY_PORT}"


class HubbleUnreachable(Exception):
    """The server could not be reached or answered with an error; str() is one line."""


@dataclass(frozen=True)
class Address:
    text: str  # as shown to the user
    path: str | None = None  # UNIX socket ("\0name" for an abstract one)
    host: str | None = None
    port: int | None = None


def parse_address(text: str) -> Address:
    """An address as the hubble CLI writes it; ValueError saying what is expected."""
    if text.startswith("unix-abstract:"):
        name = text.removeprefix("unix-abstract:")
        if name:
            return Address(text, path="\0" + name)
    elif text.startswith("unix:"):
        path = text.removeprefix("unix://") if text.startswith("unix://") else text[5:]
        if path:
            return Address(f"unix://{path}", path=path)
    elif (m := re.fullmatch(r"(\[[^\]]+\]|[^:\[\]/]+):([0-9]{1,5})", text)) \
            and int(m.group(2)) <= 65535:
        return Address(text, host=m.group(1).strip("[]"), port=int(m.group(2)))
    raise ValueError(f"invalid server address {text!r}: expected unix:///path/to/socket, "
                     "unix-abstract:NAME or host:port")


def default_address(state_dir: Path) -> Address:
    """This node's server: the socket file in `state_dir`, else the abstract socket when
    something listens there (a node's network namespace), else the relay on
    `localhost:4245` (the hubble CLI's default)."""
    path = state_dir / SOCKET_NAME
    if path.exists():
        return Address(f"unix://{path}", path=str(path))
    if _listening("\0" + ABSTRACT_NAME):
        return Address(f"unix-abstract:{ABSTRACT_NAME}", path="\0" + ABSTRACT_NAME)
    return Address(RELAY_ADDRESS, host="localhost", port=RELAY_PORT)


def _listening(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(path)
        except OSError:
            return False
    return True


@dataclass(frozen=True)
class ClientTLS:
    """`--tls` and its files; client certificates are needed for mTLS servers."""

    enabled: bool = False
    ca_files: tuple[str, ...] = ()
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    allow_insecure: bool = False

    def context(self) -> ssl.SSLContext | None:
        if not self.enabled:
            return None
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        for ca in self.ca_files:
            ctx.load_verify_locations(cafile=ca)
        if self.cert_file or self.key_file:
            if not (self.cert_file and self.key_file):
                raise ValueError("--tls-client-cert-file and --tls-client-key-file go "
                                 "together")
            ctx.load_cert_chain(self.cert_file, self.key_file)
        if self.allow_insecure:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["h2"])
        return ctx


def open_channel(address: Address, tls: ClientTLS) -> Channel:
    ctx = tls.context()
    config = Configuration(ssl_target_name_override=tls.server_name or None)
    if address.path is not None:
        return Channel(path=address.path, ssl=ctx, config=config)
    return Channel(address.host, address.port, ssl=ctx, config=config)


async def call(address: Address, what: Awaitable[T], timeout: float | None,
               tls: ClientTLS | None = None) -> T:
    """Await a call to the server, turning every failure into HubbleUnreachable."""
    where = address.text
    try:
        return await asyncio.wait_for(what, timeout) if timeout else await what
    except TimeoutError:
        raise HubbleUnreachable(f"no answer from the Hubble server at {where} within "
                                f"{timeout:g}s") from None
    except ssl.SSLError as e:
        raise HubbleUnreachable(f"TLS with the Hubble server at {where} failed: "
                                f"{e.reason or e}") from None
    except GRPCError as e:
        raise HubbleUnreachable(f"the Hubble server at {where} answered {e.status.name}: "
                                f"{e.message}") from None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise HubbleUnreachable(f"cannot reach the Hubble server at {where}: {reason}"
                                ) from None
    except (StreamTerminatedError, h2.exceptions.ProtocolError) as e:
        if tls is not None and tls.enabled and not tls.cert_file:
            hint = ("does it require a client certificate (--tls-client-cert-file and "
                    "--tls-client-key-file)?")
        elif tls is not None and tls.enabled:
            hint = "does it accept this client certificate, and is it a TLS server?"
        else:
            hint = "is it a TLS server (then use --tls)?"
        raise HubbleUnreachable(f"the Hubble server at {where} closed the connection "
                                f"({e}); {hint}") from None


async def health(channel: Channel, address: Address, timeout: float,
                 tls: ClientTLS | None = None) -> bool:
    """Whether the server reports `hubble.server.Observer` as SERVING (what `hubble status`
    checks first)."""
    answer = await call(address, HealthStub(channel).Check(
        HealthCheckRequest(service=HEALTH_SERVICE)), timeout, tls)
    return bool(answer.status == HealthCheckResponse.SERVING)
