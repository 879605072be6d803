"""Entry point of the `hexlane-cni` executable: the CNI plugin (spec 1.0.0, plus 1.1.0 GC/STATUS).

The plugin decides nothing: it validates what the runtime gave it (environment and stdin as
the CNI spec says), hands the call to the node's agent over HTTP on a UNIX socket, and turns
the answer into the result or error JSON of the version the runtime asked for. It finds its
node's agent through the abstract socket `@hexlane-agent`, which lives in the network
namespace the runtime runs the plugin in (the node's), falling back to `$STATE_DIR/agent.sock`.
The state dir is `$HEXLANE_STATE_DIR`, else the config's `stateDir`, else /var/run/hexlane:
the environment wins because one config file serves every node of a lab, each with its own.

A DEL while the agent is down is written to `$STATE_DIR/cni-del-queue/` and succeeds; the agent
carries it out when it starts (the pod's veth dies with its namespace anyway; the IP is freed
then). Imports are the standard library only (and `hexlane.cnispec`, the error codes and paths it
shares with the agent, and `hexlane.inputlimits`), since runtimes start the plugin for every
call.

Hostile input gets a CNI error on stdout, never a traceback: stdin over 1 MiB or nested over
100 levels is error 6 (decode), an interface name Linux would not take (`/../x`, 16 or more
characters) is error 4 before anything is sent or queued, and an unexpected failure of the
plugin itself is error 100 naming it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

from hexlane.cnispec import (
    CONTAINER_ID,
    DEFAULT_STATE_DIR,
    DEL_QUEUE_DIR,
    ERR_DECODE,
    ERR_INCOMPATIBLE_VERSION,
    ERR_INVALID_CONFIG,
    ERR_INVALID_ENV,
    ERR_IO,
    ERR_NOT_AVAILABLE,
    ERR_SETUP_FAILED,
    ERR_TRY_AGAIN,
    ERR_UNSUPPORTED_FIELD,
    valid_ifname,
)
from hexlane.inputlimits import MAX_CNI_INPUT_BYTES, loads_json

SUPPORTED_VERSIONS = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")
LATEST = "1.1.0"
ABSTRACT_NAME = "hexlane-agent"
TIMEOUT = 60.0


class PluginError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


class AgentUnavailable(Exception):
    """No agent answers on either socket."""


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


# --- talking to the agent ---------------------------------------------------------------------


def _connect(address: str, timeout: float) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
    except OSError:
        sock.close()
        raise
    return sock


def _exchange(sock: socket.socket, method: str, path: str, payload: bytes | None
              ) -> tuple[int, bytes]:
    """One HTTP/1.1 request with `Connection: close`; the answer is read to the end.

    Hand-written because http.client drags in the email package, which doubles the plugin's
    start time; the agent's answers are plain JSON with a Content-Length, never chunked.
    """
    body = payload or b""
    head = (f"{method} {path} HTTP/1.1\r\nHost: hexlane-agent\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    sock.sendall(head.encode() + body)
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
    raw = b"".join(chunks)
    header, sep, data = raw.partition(b"\r\n\r\n")
    status_line = header.split(b"\r\n", 1)[0].split()
    if not sep or len(status_line) < 2 or not status_line[1].isdigit():
        raise ValueError(f"not an HTTP response: {raw[:100]!r}")
    for line in header.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"transfer-encoding" and b"chunked" in value.lower():
            raise ValueError("chunked answers are not expected from the agent")
    return int(status_line[1]), data


def _netns_id() -> str:
    try:
        st = os.stat("/proc/self/ns/net")
    except OSError:
        return ""
    return f"{st.st_dev}:{st.st_ino}"


def call_agent(state_dir: str, method: str, path: str, body: dict[str, Any] | None = None,
               timeout: float = TIMEOUT) -> tuple[int, Any]:
    """One request to the node's agent: (HTTP status, decoded JSON body)."""
    payload = None
    if body is not None:
        payload = json.dumps({**body, "callerNetns": _netns_id()}).encode()
    errors = []
    for address in ("\0" + ABSTRACT_NAME, os.path.join(state_dir, "agent.sock")):
        try:
            sock = _connect(address, timeout)
        except OSError as err:
            errors.append(f"{address.replace(chr(0), '@')}: {err.strerror or err}")
            continue
        try:
            status, data = _exchange(sock, method, path, payload)
        except TimeoutError:
            raise PluginError(ERR_TRY_AGAIN, "hexlane agent did not answer in time",
                              f"{method} {path} took over {timeout:.0f}s") from None
        except (OSError, ValueError) as err:
            raise PluginError(ERR_TRY_AGAIN, "hexlane agent connection failed",
                              f"{method} {path}: {err}") from None
        finally:
            sock.close()
        try:
            return status, loads_json(data or b"{}")
        except ValueError:
            raise PluginError(ERR_IO, "hexlane agent sent a bad answer",
                              data[:200].decode(errors="replace")) from None
    raise AgentUnavailable("; ".join(errors))


def _raise_agent_error(status: int, answer: Any) -> None:
    if status < 300:
        return
    if isinstance(answer, dict) and isinstance(answer.get("code"), int):
        raise PluginError(answer["code"], str(answer.get("msg", "agent error")),
                          str(answer.get("details", "")))
    raise PluginError(ERR_IO, f"hexlane agent answered HTTP {status}", str(answer)[:200])


# --- results in the caller's version ------------------------------------------------------------


def convert_result(result: dict[str, Any], version: str) -> dict[str, Any]:
    """The agent's 1.1.0 result in the shape of `version` (0.3.0 up to 1.1.0)."""
    out = json.loads(json.dumps(result))
    out["cniVersion"] = version
    if _version_tuple(version) < (1, 1, 0):
        for iface in out.get("interfaces", []):
            for key in ("mtu", "socketPath", "pciID"):
                iface.pop(key, None)
    if _version_tuple(version) < (1, 0, 0):
        # 0.3.x/0.4.0 name the address family in every IP; 1.0.0 dropped that field.
        for ip in out.get("ips", []):
            ip["version"] = "6" if ":" in ip.get("address", "") else "4"
    return out


# --- the plugin ------------------------------------------------------------------------------


def parse_cni_args(text: str) -> dict[str, str]:
    """CNI_ARGS `K=V;K=V` as a dict (`IgnoreUnknown=1;K8S_POD_NAME=x`)."""
    args: dict[str, str] = {}
    for part in text.split(";"):
        if not part:
            continue
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise PluginError(ERR_INVALID_ENV, "invalid CNI_ARGS",
                              f"want KEY=VALUE pairs separated by ';', got {part!r}")
        args[key] = value
    return args


def _read_config(stdin: str) -> dict[str, Any]:
    try:
        config = loads_json(stdin)
    except ValueError as err:
        raise PluginError(ERR_DECODE, "failed to decode network configuration", str(err)) \
            from None
    if not isinstance(config, dict):
        raise PluginError(ERR_DECODE, "network configuration must be a JSON object")
    version = config.get("cniVersion")
    if not isinstance(version, str) or not version:
        raise PluginError(ERR_INVALID_CONFIG, "invalid network configuration",
                          "cniVersion is required")
    if version not in SUPPORTED_VERSIONS:
        raise PluginError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI version",
                          f"config asks {version}; supported: {', '.join(SUPPORTED_VERSIONS)}")
    for key in ("name", "type"):
        if not isinstance(config.get(key), str) or not config[key]:
            raise PluginError(ERR_INVALID_CONFIG, "invalid network configuration",
                              f"{key} is required and must be a string")
    state_dir = config.get("stateDir")
    if state_dir is not None and (not isinstance(state_dir, str) or not state_dir):
        raise PluginError(ERR_INVALID_CONFIG, "invalid network configuration",
                          "stateDir must be a non-empty string")
    if config.get("ipam"):
        raise PluginError(ERR_UNSUPPORTED_FIELD, "unsupported field in network configuration",
                          "ipam: hexlane's agent allocates pod IPs itself; remove the key")
    return config


def _env(name: str, required: bool) -> str:
    value = os.environ.get(name, "")
    if required and not value:
        raise PluginError(ERR_INVALID_ENV, f"{name} is not set",
                          f"the runtime must set {name} for {os.environ.get('CNI_COMMAND')}")
    return value


def _attachment(command: str, config: dict[str, Any]) -> dict[str, Any]:
    cid = _env("CNI_CONTAINERID", True)
    if not CONTAINER_ID.match(cid):
        raise PluginError(ERR_INVALID_ENV, "invalid CNI_CONTAINERID",
                          f"want letters, digits, '_', '.', '-'; got {cid[:64]!r}")
    ifname = _env("CNI_IFNAME", True)
    if not valid_ifname(ifname):
        raise PluginError(ERR_INVALID_ENV, "invalid CNI_IFNAME",
                          "want 1-15 characters without '/', ':' or white space, not '.' or "
                          f"'..'; got {ifname[:64]!r}")
    return {
        "containerID": cid,
        "netns": _env("CNI_NETNS", command != "DEL"),
        "ifname": ifname,
        "args": parse_cni_args(os.environ.get("CNI_ARGS", "")),
        "network": config["name"],
    }


def _queue_delete(state_dir: str, body: dict[str, Any]) -> None:
    queue = os.path.join(state_dir, DEL_QUEUE_DIR)
    name = f"{body['containerID']}.{body['ifname']}.json"
    try:
        os.makedirs(queue, exist_ok=True)
        tmp = os.path.join(queue, f".{name}.{os.getpid()}")
        with open(tmp, "w") as f:
            json.dump(body, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(queue, name))
    except OSError as err:
        raise PluginError(ERR_TRY_AGAIN, "hexlane agent unavailable and DEL not queued",
                          f"{queue}: {err}") from None


def run(command: str, stdin: str) -> dict[str, Any] | None:
    """Carry out one CNI command; the JSON to print, or None for no output."""
    if command == "VERSION":
        return {"cniVersion": LATEST, "supportedVersions": list(SUPPORTED_VERSIONS)}
    if command not in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        raise PluginError(ERR_INVALID_ENV, "unknown CNI_COMMAND",
                          f"{command!r}; want ADD, DEL, CHECK, GC, STATUS or VERSION")
    config = _read_config(stdin)
    version = config["cniVersion"]
    state_dir = os.environ.get("HEXLANE_STATE_DIR") or config.get("stateDir") \
        or DEFAULT_STATE_DIR
    if command == "CHECK" and _version_tuple(version) < (0, 4, 0):
        raise PluginError(ERR_INCOMPATIBLE_VERSION, "config version does not allow CHECK",
                          f"CHECK needs cniVersion 0.4.0 or later, config has {version}")
    if command in ("GC", "STATUS") and _version_tuple(version) < (1, 1, 0):
        raise PluginError(ERR_INCOMPATIBLE_VERSION, f"config version does not allow {command}",
                          f"{command} needs cniVersion 1.1.0, config has {version}")
    try:
        if command == "STATUS":
            status, answer = call_agent(state_dir, "GET", "/v1/cni/status")
            _raise_agent_error(status, answer)
            return None
        if command == "GC":
            valid = config.get("cni.dev/valid-attachments", [])
            if not isinstance(valid, list):
                raise PluginError(ERR_INVALID_CONFIG, "invalid network configuration",
                                  "cni.dev/valid-attachments must be a list")
            status, answer = call_agent(state_dir, "POST", "/v1/cni/gc",
                                        {"network": config["name"], "validAttachments": valid})
            _raise_agent_error(status, answer)
            return None
        body = _attachment(command, config)
        if command == "CHECK":
            prev = config.get("prevResult")
            if not isinstance(prev, dict):
                raise PluginError(ERR_INVALID_CONFIG, "invalid network configuration",
                                  "CHECK needs prevResult")
            body["prevResult"] = prev
        path = {"ADD": "/v1/cni/add", "DEL": "/v1/cni/del", "CHECK": "/v1/cni/check"}[command]
        try:
            status, answer = call_agent(state_dir, "POST", path, body)
        except AgentUnavailable:
            if command != "DEL":
                raise
            _queue_delete(state_dir, body)
            return None
        _raise_agent_error(status, answer)
        return convert_result(answer, version) if command == "ADD" else None
    except AgentUnavailable as err:
        raise PluginError(ERR_NOT_AVAILABLE, "hexlane agent unavailable",
                          f"no agent on this node's sockets ({err})") from None


def _read_stdin(command: str) -> str:
    """The network configuration on stdin, at most 1 MiB of UTF-8."""
    # VERSION's stdin is only read when it is not a terminal, so a person can run it by hand.
    if command == "VERSION" and sys.stdin.isatty():
        return ""
    data = sys.stdin.buffer.read(MAX_CNI_INPUT_BYTES + 1)
    if len(data) > MAX_CNI_INPUT_BYTES:
        raise PluginError(ERR_DECODE, "failed to decode network configuration",
                          f"more than {MAX_CNI_INPUT_BYTES} bytes on stdin (hexlane's limit)")
    try:
        return data.decode()
    except UnicodeDecodeError as err:
        raise PluginError(ERR_DECODE, "failed to decode network configuration",
                          f"not UTF-8: {err}") from None


def _asked_version(stdin: str) -> str:
    """The error's cniVersion: the config's when it names one we speak."""
    try:
        asked = loads_json(stdin).get("cniVersion") if stdin.strip() else None
    except (ValueError, AttributeError):
        return LATEST
    return asked if asked in SUPPORTED_VERSIONS else LATEST


def main() -> int:
    command = os.environ.get("CNI_COMMAND", "")
    version = LATEST
    try:
        stdin = _read_stdin(command)
        version = _asked_version(stdin)
        if not command:
            raise PluginError(ERR_INVALID_ENV, "CNI_COMMAND is not set",
                              "the runtime must set CNI_COMMAND")
        output = run(command, stdin)
    except PluginError as err:
        _print({"cniVersion": version, "code": err.code, "msg": err.msg,
                "details": err.details})
        return 1
    except Exception as err:  # a plugin bug still reaches the runtime as a CNI error
        _print({"cniVersion": version, "code": ERR_SETUP_FAILED, "msg": "hexlane-cni failed",
                "details": f"{type(err).__name__}: {str(err)[:500]}"})
        return 1
    if output is not None:
        _print(output)
    return 0


def _print(answer: dict[str, Any]) -> None:
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    sys.exit(main())
