"""Running a hexlane command as a user would, with bounds: a time limit and an address-space
limit (`RLIMIT_AS`, set in the child before it starts), so a test of hostile input fails on a
command that hangs or swells instead of taking the machine with it.

`run_bounded(argv, stdin=..., env=...)` returns the `CompletedProcess` (text); it raises
`AssertionError` when the command runs past its time (the child is killed). `HEXLANE` is the
`hexlane` command as this interpreter runs it; `CNI_PLUGIN` the `hexlane-cni` executable.
"""

from __future__ import annotations

import resource
import subprocess
import sys
from collections.abc import Mapping, Sequence

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]
CNI_PLUGIN = [sys.executable, "-m", "hexlane.cni.main"]
GIB = 1 << 30


def _limit(address_space: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (address_space, address_space))


def run_bounded(argv: Sequence[str], *, stdin: str | bytes | None = None,
                env: Mapping[str, str] | None = None, seconds: float = 5.0,
                address_space: int = GIB) -> subprocess.CompletedProcess[str]:
    """Run `argv` within `seconds` and `address_space` bytes; its output as text."""
    data = stdin.encode() if isinstance(stdin, str) else stdin
    try:
        done = subprocess.run(list(argv), input=data, capture_output=True, timeout=seconds,
                              env=None if env is None else dict(env), check=False,
                              preexec_fn=lambda: _limit(address_space))
    except subprocess.TimeoutExpired as e:
        raise AssertionError(f"{' '.join(argv)} ran over {seconds} s") from e
    return subprocess.CompletedProcess(
        done.args, done.returncode, done.stdout.decode(errors="replace"),
        done.stderr.decode(errors="replace"))
