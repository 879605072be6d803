"""Calling CNI plugins as a container runtime does (the lab kubelet's runtime side).

The network configuration is the first `*.conflist`, `*.conf` or `*.json` file of the config
directory in lexical order (as containerd and CRI-O pick it). For each plugin of the list the
runtime builds its config (the plugin's object plus the list's `name` and `cniVersion`, and
the previous plugin's result as `prevResult`), runs the executable named by `type` from the
bin directory with `CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`, `CNI_ARGS` and
`CNI_PATH` in its environment and the config on stdin, and reads the result or error JSON
from stdout. ADD runs the plugins in order, DEL in reverse order.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class CNIFailed(Exception):
    """A plugin answered with an error (or nothing usable)."""

    def __init__(self, plugin: str, command: str, code: int, msg: str, details: str = "") -> None:
        super().__init__(f"CNI {command} by {plugin}: error {code}: {msg}"
                         + (f" ({details})" if details else ""))
        self.code = code


@dataclass(frozen=True)
class NetworkConfig:
    name: str
    version: str
    plugins: tuple[dict[str, Any], ...]
    file: Path


def load_network_config(conf_dir: Path) -> NetworkConfig | None:
    """The runtime's network: the first configuration file of `conf_dir`, None if none."""
    try:
        files = sorted(p for p in conf_dir.iterdir()
                       if p.suffix in (".conflist", ".conf", ".json") and p.is_file())
    except FileNotFoundError:
        return None
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict):
            continue
        plugins = data.get("plugins") if path.suffix == ".conflist" else [data]
        if not isinstance(plugins, list) or not plugins:
            continue
        return NetworkConfig(str(data.get("name", "")), str(data.get("cniVersion", "")),
                             tuple(dict(p) for p in plugins if isinstance(p, dict)), path)
    return None


async def _call(bin_dir: Path, plugin: Mapping[str, Any], net: NetworkConfig, command: str,
                env: Mapping[str, str], prev: Mapping[str, Any] | None) -> dict[str, Any] | None:
    config = {**plugin, "name": net.name, "cniVersion": net.version}
    if prev is not None:
        config["prevResult"] = prev
    kind = str(plugin.get("type", ""))
    exe = bin_dir / kind
    proc = await asyncio.create_subprocess_exec(
        str(exe), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env={**os.environ, **env, "CNI_COMMAND": command})
    out, err = await proc.communicate(json.dumps(config).encode())
    text = out.decode(errors="replace").strip()
    answer: Any = None
    if text:
        try:
            answer = json.loads(text)
        except ValueError:
            answer = None
    if proc.returncode != 0:
        if isinstance(answer, dict):
            raise CNIFailed(kind, command, int(answer.get("code") or 999),
                            str(answer.get("msg") or ""), str(answer.get("details") or ""))
        raise CNIFailed(kind, command, 999, f"exit {proc.returncode}",
                        (err.decode(errors="replace") or text)[-300:])
    return answer if isinstance(answer, dict) else None


def _env(bin_dir: Path, container_id: str, netns: str, ifname: str,
         args: Mapping[str, str]) -> dict[str, str]:
    return {"CNI_CONTAINERID": container_id, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
            "CNI_ARGS": ";".join(["IgnoreUnknown=1", *(f"{k}={v}" for k, v in args.items())]),
            "CNI_PATH": str(bin_dir)}


async def cni_add(net: NetworkConfig, bin_dir: Path, container_id: str, netns: str,
                  ifname: str, args: Mapping[str, str]) -> dict[str, Any]:
    """ADD through the whole list; the last plugin's result."""
    env = _env(bin_dir, container_id, netns, ifname, args)
    result: dict[str, Any] | None = None
    for plugin in net.plugins:
        result = await _call(bin_dir, plugin, net, "ADD", env, result) or result
    if result is None:
        raise CNIFailed(net.name, "ADD", 999, "no plugin returned a result")
    return result


async def cni_del(net: NetworkConfig, bin_dir: Path, container_id: str, netns: str,
                  ifname: str, args: Mapping[str, str],
                  prev: Mapping[str, Any] | None = None) -> None:
    """DEL through the list in reverse order (idempotent on the plugins' side)."""
    env = _env(bin_dir, container_id, netns, ifname, args)
    for plugin in reversed(net.plugins):
        await _call(bin_dir, plugin, net, "DEL", env, prev)


def result_ipv4(result: Mapping[str, Any]) -> str:
    """The first IPv4 address of a CNI result, without its prefix length."""
    for ip in result.get("ips") or []:
        address = str(ip.get("address") or "")
        if "." in address:
            return address.split("/", 1)[0]
    raise CNIFailed("result", "ADD", 999, "the result carries no IPv4 address", str(result)[:200])
