"""BPF file systems: is a path on one, mount one, and scratch directories for tests.

Pins (maps and programs that outlive the agent) need a bpffs; every node's agent keeps its own
under `--bpf-root` (default /sys/fs/bpf/hexlane).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hexlane.datapath import libbpf


def is_bpffs(path: str | os.PathLike[str]) -> bool:
    """Whether a BPF file system is mounted exactly at `path`."""
    target = os.path.realpath(path)
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "bpf" and fields[1] == target:
                return True
    return False


def on_bpffs(path: str | os.PathLike[str]) -> bool:
    """Whether `path` (which may not exist yet) lies on a mounted BPF file system."""
    target = os.path.realpath(path).rstrip("/") + "/"
    with open("/proc/self/mounts", encoding="utf-8") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) >= 3 and fields[2] == "bpf":
                mount_point = fields[1].rstrip("/") + "/"
                if target.startswith(mount_point):
                    return True
    return False


@contextmanager
def scratch_bpf_dir(prefix: str) -> Iterator[Path]:
    """A fresh, uniquely named directory on a BPF file system, removed afterwards (tests and
    benchmarks): below /sys/fs/bpf when a bpffs is mounted there, else on a private bpffs
    mounted in a temporary directory and unmounted afterwards, so the machine's mounts are
    never changed. Processes started with `nsenter --net` keep the mounts, so they see it."""
    mounted: Path | None = None
    name = f"{prefix}-{secrets.token_hex(4)}"
    if is_bpffs("/sys/fs/bpf"):
        root = Path("/sys/fs/bpf") / name
    else:
        mounted = Path(tempfile.mkdtemp(prefix="hexlane-bpffs-"))
        ensure_bpffs(mounted)
        root = mounted / name
    root.mkdir()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        if mounted is not None:
            subprocess.run(["umount", str(mounted)], check=False)
            mounted.rmdir()


def ensure_bpffs(mount_point: str | os.PathLike[str] = "/sys/fs/bpf") -> bool:
    """Mount a BPF file system at `mount_point` unless one is there, as Cilium's agent does
    on nodes whose init system did not (pins need it). True when this call mounted it."""
    if is_bpffs(mount_point):
        return False
    os.makedirs(mount_point, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "bpf", "bpf", os.fspath(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise libbpf.BpfError(errno.EPERM, f"mount bpffs at {os.fspath(mount_point)}: "
                                           f"{proc.stderr.strip()}")
    return True
