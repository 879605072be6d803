"""Installing the CNI network configuration and the plugin on the node (and finding them again).

The agent writes `05-hexlane.conflist` into the CNI config directory (`/etc/cni/net.d` on a
node; Cilium writes `05-cilium.conflist`) once its endpoint API answers, so a runtime never
picks the network before the agent can serve it, and puts `hexlane-cni` into the CNI bin
directory (`/opt/cni/bin`): a two-line shell wrapper exec'ing this installation's
`hexlane-cni`, marked so `hexlane cleanup` knows it made it. Both are written atomically
(temporary file, rename) and only when their content differs, so a periodic re-install is
cheap and puts back a file someone removed.

The directories used are recorded in `$STATE_DIR/cni-install.json`, so `hexlane cleanup` finds
the files again without being told where they went (a lab node's directories, say).

The config names the agent's state directory (`stateDir`), so the plugin finds the agent's
socket file even when the runtime's environment has no `HEXLANE_STATE_DIR`; it first tries
the abstract socket of the namespace it runs in anyway.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

CONF_NAME = "05-hexlane.conflist"
PLUGIN_NAME = "hexlane-cni"
NETWORK_NAME = "hexlane"
CNI_VERSION = "1.0.0"
WRAPPER_MARK = "# installed by the hexlane agent; removed by `hexlane cleanup`"
DEFAULT_CONF_DIR = Path("/etc/cni/net.d")
DEFAULT_BIN_DIR = Path("/opt/cni/bin")
RECORD_NAME = "cni-install.json"


def network_config(state_dir: Path) -> dict[str, Any]:
    """The conflist the agent installs."""
    return {
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [{"type": PLUGIN_NAME, "stateDir": str(state_dir)}],
    }


def plugin_executable() -> Path:
    """This installation's `hexlane-cni` (beside the running Python, as pip installs it)."""
    return Path(sys.executable).parent / PLUGIN_NAME


def wrapper_script(target: Path) -> str:
    return f"#!/bin/sh\n{WRAPPER_MARK}\nexec {shlex.quote(str(target))} \"$@\"\n"


def _write_if_changed(path: Path, text: str, mode: int) -> bool:
    try:
        if path.read_text() == text and (path.stat().st_mode & 0o777) == mode:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
    return True


def install(conf_dir: Path, bin_dir: Path, state_dir: Path,
            plugin: Path | None = None) -> list[str]:
    """Write the plugin wrapper, then the config; returns the paths that were (re)written."""
    changed = []
    target = plugin or plugin_executable()
    if not target.is_file():
        raise FileNotFoundError(f"{target}: the CNI plugin executable is missing "
                                "(is hexlane installed with its scripts?)")
    wrapper = bin_dir / PLUGIN_NAME
    if _write_if_changed(wrapper, wrapper_script(target), 0o755):
        changed.append(str(wrapper))
    record = json.dumps({"confDir": str(conf_dir), "binDir": str(bin_dir)}) + "\n"
    _write_if_changed(state_dir / RECORD_NAME, record, 0o644)
    conf = conf_dir / CONF_NAME
    text = json.dumps(network_config(state_dir), indent=2) + "\n"
    if _write_if_changed(conf, text, 0o644):
        changed.append(str(conf))
    return changed


def recorded_dirs(state_dir: Path) -> tuple[Path, Path] | None:
    """The (config, bin) directories the agent of `state_dir` installed into, if recorded."""
    try:
        data = json.loads((state_dir / RECORD_NAME).read_text())
        return Path(data["confDir"]), Path(data["binDir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def is_our_plugin(path: Path) -> bool:
    """Whether `path` is a plugin hexlane put there (our wrapper, or a link to hexlane-cni)."""
    if path.is_symlink():
        return Path(os.readlink(path)).name == PLUGIN_NAME
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return False
    return WRAPPER_MARK.encode() in head


def installed_files(conf_dir: Path, bin_dir: Path) -> list[Path]:
    """The config and plugin files hexlane made in these directories (for cleanup)."""
    found = []
    conf = conf_dir / CONF_NAME
    if conf.is_file():
        found.append(conf)
    plugin = bin_dir / PLUGIN_NAME
    if (plugin.exists() or plugin.is_symlink()) and is_our_plugin(plugin):
        found.append(plugin)
    return found
