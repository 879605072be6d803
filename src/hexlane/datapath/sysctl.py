"""The net.* sysctls hexlane sets, as a table for the one reconciler.

Sysctls under /proc/sys/net belong to the network namespace of the thread that opens the file,
so these act in the calling thread's namespace (the node's, where the agent runs). A sysctl
cannot be deleted: the table only reads back the names it is asked for (its reconciler's
desired table), and "deleting" one from the desired table leaves its value as it is. A sysctl
of a device that is gone (`net.ipv4.conf.<dev>.accept_local`) reads as missing, and setting it
fails (retried by the reconciler) until the device is back.

    rec = sysctl_reconciler({"net.ipv4.ip_forward": "1"})
    rec.flush()     # set what differs
    rec.resync()    # read back, repair what someone changed (counted in rec.repairs)

`record_before(state_dir, names)` keeps, in `$STATE_DIR/sysctls-before.json`, the value each
sysctl had before hexlane first set it (a later agent start keeps the first record), so
`hexlane cleanup` can put back what the node had.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from hexlane.datapath.reconcile import Reconciler, Table

PROC_SYS = Path("/proc/sys")
RECORD_NAME = "sysctls-before.json"


def sysctl_path(name: str) -> Path:
    """`net.ipv4.ip_forward` -> /proc/sys/net/ipv4/ip_forward (only per-namespace net.*)."""
    if not name.startswith("net.") or "/" in name or ".." in name:
        raise ValueError(f"only per-namespace net.* sysctls are set here, not {name}")
    return PROC_SYS / name.replace(".", "/")


def read_sysctl(name: str) -> str | None:
    """The value of a net.* sysctl, stripped; None when it does not exist."""
    try:
        return sysctl_path(name).read_text().strip()
    except FileNotFoundError:
        return None


def write_sysctl(name: str, value: str) -> None:
    """Set a net.* sysctl of the calling thread's network namespace, when it differs."""
    if read_sysctl(name) != value:
        sysctl_path(name).write_text(value + "\n")


def recorded_before(state_dir: Path) -> dict[str, str]:
    """name -> the value before hexlane set it, as `record_before` kept it ({} if none)."""
    try:
        data = json.loads((state_dir / RECORD_NAME).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def record_before(state_dir: Path, names: Iterable[str]) -> None:
    """Record the current value of each of `names` not recorded yet (and existing)."""
    record = recorded_before(state_dir)
    new = {name: value for name in names if name not in record
           and (value := read_sysctl(name)) is not None}
    if not new:
        return
    state_dir.mkdir(parents=True, exist_ok=True)
    tmp = state_dir / f".{RECORD_NAME}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({**record, **new}, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, state_dir / RECORD_NAME)


class SysctlTable(Table[str, str]):
    """Sysctls by name, values as /proc/sys shows them ("1"). `read()` reads only the names
    `names()` gives (the desired table's: `sysctl_reconciler` binds it)."""

    name = "sysctls"

    def __init__(self, names: Callable[[], Iterable[str]] = tuple,
                 name: str | None = None) -> None:
        self.names = names
        if name is not None:
            self.name = name  # one per owner: reconcilers are told apart by name (metrics)

    def read(self) -> dict[str, str]:
        out = {}
        for name in self.names():
            value = read_sysctl(name)
            if value is not None:
                out[name] = value
        return out

    def update(self, key: str, value: str) -> None:
        write_sysctl(key, value)

    def delete(self, key: str) -> None:
        """Nothing: a sysctl no longer wanted keeps its value."""


def sysctl_reconciler(values: Mapping[str, str] | None = None, *,
                      name: str | None = None) -> Reconciler[str, str]:
    """A reconciler of a `SysctlTable` (named `name`) that reads back exactly its desired
    names."""
    table = SysctlTable(name=name)
    rec: Reconciler[str, str] = Reconciler(table)
    table.names = lambda: list(rec.desired)
    if values:
        rec.set_all(values)
    return rec
