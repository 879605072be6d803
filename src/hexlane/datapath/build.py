"""Compiling hexlane's BPF C programs with clang, into a content-addressed cache.

`compile_program("lb.c", {"LB_MAGLEV_LUT_SIZE": 16381})` returns the path of an object built
from ``hexlane/datapath/bpf/lb.c`` with those ``-D`` definitions. The object's name carries a
hash of every source and header, the flags, the definitions and clang's version, so a changed
input builds anew and an unchanged one is reused. Build-time parameters (Maglev table size,
hash seeds) are definitions, as Cilium compiles them into its programs.

The cache lives in ``$HEXLANE_BPF_CACHE``, else ``$XDG_CACHE_HOME/hexlane/bpf``, else
``~/.cache/hexlane/bpf``.
"""

from __future__ import annotations

import hashlib
import os
import platform
import subprocess
import sysconfig
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path

BPF_SOURCE_DIR = Path(__file__).resolve().parent / "bpf"
CLANG = os.environ.get("HEXLANE_CLANG", "clang")
# Debian's multiarch triplet of this machine ("x86_64-linux-gnu", "aarch64-linux-gnu"): where
# the kernel's uapi asm/ headers are.
MULTIARCH = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
# vmlinux-free: the kernel's uapi headers (with the multiarch asm/ directory) and libbpf's.
CFLAGS: tuple[str, ...] = (
    "-O2", "-g", "-target", "bpf", "-Wall", "-Werror",
    f"-I/usr/include/{MULTIARCH}",
)


class BpfBuildError(RuntimeError):
    """clang could not build a program; the message carries clang's own output."""


def cache_dir() -> Path:
    """Where built objects are kept (see the module docstring)."""
    explicit = os.environ.get("HEXLANE_BPF_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hexlane" / "bpf"


@lru_cache(maxsize=1)
def _clang_version() -> str:
    try:
        out = subprocess.run([CLANG, "--version"], capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise BpfBuildError(f"cannot run {CLANG!r} to build BPF programs: {exc}") from exc
    return out.stdout.splitlines()[0] if out.stdout else ""


def _source_digest(source_dir: Path) -> bytes:
    h = hashlib.sha256()
    for path in sorted(source_dir.iterdir()):
        if path.suffix in (".c", ".h"):
            h.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return h.digest()


def _define_flags(defines: Mapping[str, int | str]) -> list[str]:
    flags = []
    for name, value in sorted(defines.items()):
        if not name.isidentifier():
            raise BpfBuildError(f"invalid preprocessor name {name!r}")
        flags.append(f"-D{name}={value}")
    return flags


def compile_program(
    source: str,
    defines: Mapping[str, int | str] | None = None,
    *,
    source_dir: Path = BPF_SOURCE_DIR,
    out_dir: Path | None = None,
) -> Path:
    """Build `source` (a file name in `source_dir`) and return the object's path."""
    src = source_dir / source
    if not src.is_file():
        raise BpfBuildError(f"no BPF source {src}")
    flags = [*CFLAGS, *_define_flags(defines or {})]
    h = hashlib.sha256(_source_digest(source_dir))
    h.update(source.encode() + b"\0" + "\0".join(flags).encode() + b"\0")
    h.update(_clang_version().encode())
    target_dir = out_dir or cache_dir()
    target = target_dir / f"{src.stem}-{h.hexdigest()[:20]}.o"
    if target.is_file():
        return target
    target_dir.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename, so a concurrent reader never sees half an object.
    fd, tmp_name = tempfile.mkstemp(prefix=f".{src.stem}-", suffix=".o", dir=target_dir)
    os.close(fd)
    try:
        proc = subprocess.run(
            [CLANG, *flags, "-c", str(src), "-o", tmp_name],
            capture_output=True, text=True, cwd=source_dir,
        )
        if proc.returncode != 0:
            raise BpfBuildError(
                f"clang failed to build {src} (exit {proc.returncode}):\n"
                f"{proc.stderr.strip() or proc.stdout.strip()}"
            )
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target
