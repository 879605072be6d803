"""Installing the CNI network configuration and the plugin on the node (and finding them again).

The agent writes `05-hexlane.conflist` into the CNI config directory (`/etc/cni/net.d` on a
node; Cilium writes `05-cilium.conflist`) once its endpoint API answers, so a runtime never
picks the network before the agent can serve it, and puts `hexlane-cni` into the CNI bin
directory (`/opt/cni/bin`): a two-line shell wrapper exec'ing this installation's
`hexlane-cni`, marked so `hexlane cleanup` knows it made it. Both, and the record below, are
a table of files (path -> text and mode) converged by the one reconciler
(`hexlane.datapath.reconcile`): `CniFiles.install()` reads exactly those paths back and writes,
atomically (temporary file, rename), only the ones that differ, so a periodic re-install is
cheap and puts back a file someone removed or edited (counted as a repair).

The directories used are recorded in `$STATE_DIR/cni-install.json`, so `hexlane cleanup` finds
the files again without being told where they went (a lab node's directories, say).

The config names the agent's state directory (`stateDir`), so the plugin finds the agent's
socket file even when the runtime's environment has no `HEXLANE_STATE_DIR`; it first tries
the abstract socket of the namespace it runs in anyway.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from hexlane.cni import bundle
from hexlane.datapath.reconcile import Reconciler, Table

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


FileContent = tuple[str, int]  # (text, permission bits)


def write_atomic(path: Path, text: str, mode: int) -> None:
    """Replace `path` with `text` (temporary file, chmod, rename): never seen half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


class FileTable(Table[Path, FileContent]):
    """Files by path, as (text, permission bits), for the one reconciler. `read()` reads only
    the paths `names()` gives (the desired table's: `CniFiles` binds it), so no other file is
    ever looked at or removed; one that is missing or not text reads as absent. The CNI
    config sorts last, so a runtime never finds the network before its plugin."""

    name = "cni_files"

    def __init__(self, names: Callable[[], Iterable[Path]] = tuple) -> None:
        self.names = names
        self.order = lambda path: path.name == CONF_NAME
        self.written: list[Path] = []  # in order, since the owner last cleared it

    def read(self) -> dict[Path, FileContent]:
        out: dict[Path, FileContent] = {}
        for path in self.names():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                out[path] = (path.read_text(), path.stat().st_mode & 0o777)
        return out

    def update(self, key: Path, value: FileContent) -> None:
        write_atomic(key, *value)
        self.written.append(key)

    def delete(self, key: Path) -> None:
        key.unlink(missing_ok=True)


class CniFiles:
    """The plugin wrapper, the install record and the CNI config as one reconciled table.

    `install()` writes what differs and returns the wrapper and config paths it wrote; each
    call reads the files back first (a resync: a file removed or edited behind the agent's
    back is put back, and counted in `rec.repairs`).
    """

    def __init__(self, conf_dir: Path, bin_dir: Path, state_dir: Path,
                 plugin: Path | None = None) -> None:
        self.conf_dir, self.bin_dir, self.state_dir = conf_dir, bin_dir, state_dir
        self.plugin = plugin
        self.table = FileTable()
        self.rec: Reconciler[Path, FileContent] = Reconciler(self.table)
        self.table.names = lambda: list(self.rec.desired)

    @property
    def reconcilers(self) -> list[Reconciler[Path, FileContent]]:
        return [self.rec]

    def desired(self) -> dict[Path, FileContent]:
        target = self.plugin or plugin_executable()
        if not target.is_file():
            raise FileNotFoundError(f"{target}: the CNI plugin executable is missing "
                                    "(is hexlane installed with its scripts?)")
        record = json.dumps({"confDir": str(self.conf_dir), "binDir": str(self.bin_dir)})
        conf = json.dumps(network_config(self.state_dir), indent=2)
        return {
            self.bin_dir / PLUGIN_NAME: (wrapper_script(target), 0o755),
            self.state_dir / RECORD_NAME: (record + "\n", 0o644),
            self.conf_dir / CONF_NAME: (conf + "\n", 0o644),
        }

    def install(self) -> list[str]:
        """Read the files back, write the plugin wrapper, the record and the config where
        they differ; returns the wrapper's and the config's paths among those written."""
        self.rec.set_all(self.desired())
        self.table.written.clear()
        result = self.rec.resync()
        if result.failed:
            raise OSError(f"CNI files not written: {result.failed}")
        return [str(p) for p in self.table.written if p.name != RECORD_NAME]


def install(conf_dir: Path, bin_dir: Path, state_dir: Path,
            plugin: Path | None = None) -> list[str]:
    """Write the plugin wrapper, then the config, once (`CniFiles` keeps them); returns the
    paths that were (re)written."""
    return CniFiles(conf_dir, bin_dir, state_dir, plugin).install()


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
    bundled = bin_dir / bundle.PLUGIN_FILE
    if bundled.is_file() and bundle.is_bundle(bundled):
        found.append(bundled)
    return found
