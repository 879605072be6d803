"""The apiserver's data directory: one server at a time, and nobody else reading it.

The directory holds every object the server stores, Secrets included, its token and its TLS
key. So:

- `claim(path)` takes an exclusive lock (`flock` on `DIR/apiserver.lock`) before anything in
  the directory is touched, and the server holds it for its whole life (the kernel lets go of
  it when the process ends, also on `kill -9`). A second server on the same directory stops
  at once with a message naming the first one's pid, without touching its database, token,
  certificate or kubeconfig;
- the server's files are private: the umask becomes 077, so the database (and SQLite's
  `-wal` and `-shm`, which SQLite makes with the database's mode), the token and the
  kubeconfig are 0600; files left by an older version are set to 0600; the directory is made
  0700, and an existing one is set to 0700 when it is empty or already holds a database (a
  directory holding other things, `--data-dir /tmp` say, is only warned about).
"""

from __future__ import annotations

import fcntl
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

from hexlane.model.errors import InputError, Problem

LOCK_NAME = "apiserver.lock"
PRIVATE_FILES = ("state.db", "state.db-wal", "state.db-shm", "token", "kubeconfig", "tls.key")


@dataclass
class DataDirLock:
    """The held lock (keep it referenced for as long as the server runs)."""

    path: Path
    fd: int

    def release(self) -> None:
        os.close(self.fd)


def claim(data_dir: Path) -> DataDirLock:
    """Create `data_dir` (0700) if needed, lock it and make its files private; InputError
    (nothing touched) when another apiserver holds it."""
    os.umask(0o077)
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    lock_path = data_dir / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise InputError(Problem(f"cannot open the lock file: {e.strerror or e}",
                                 "--data-dir", file=str(lock_path))) from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise InputError(Problem(
            f"{data_dir} is in use by another hexlane apiserver (pid {holder}); one data "
            "directory serves one apiserver at a time", "--data-dir")) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    _make_private(data_dir)
    return DataDirLock(lock_path, fd)


def _make_private(data_dir: Path) -> None:
    for name in PRIVATE_FILES:
        path = data_dir / name
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            path.chmod(0o600)
    mode = stat.S_IMODE(data_dir.stat().st_mode)
    if not mode & 0o077:
        return
    ours = {LOCK_NAME, *PRIVATE_FILES, "tls.crt", "tls.names"}
    if (data_dir / "state.db").exists() or not set(os.listdir(data_dir)) - ours:
        data_dir.chmod(0o700)
    else:
        print(f"warning: {data_dir} can be read by other users ({oct(mode)}); the files "
              "hexlane keeps there are 0600, but a directory of its own (0700) is safer",
              file=sys.stderr)
