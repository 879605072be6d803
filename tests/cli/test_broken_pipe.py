"""A reader that goes away (`hexlane ... | head`) ends a command quietly: no traceback, exit
141 as for a command killed by SIGPIPE."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HEXLANE = str(Path(sys.executable).parent / "hexlane")


def test_a_closed_pipe_ends_the_command_without_a_traceback() -> None:
    read, write = os.pipe()
    os.close(read)  # nobody will ever read: the first write fails with EPIPE
    try:
        done = subprocess.run([HEXLANE, "config", "show"], stdout=write,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write)
    assert "Traceback" not in done.stderr and "BrokenPipeError" not in done.stderr, done.stderr
    assert done.returncode == 141


def test_output_read_to_the_end_is_unchanged() -> None:
    done = subprocess.run([HEXLANE, "config", "show"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and "kubeProxyReplacement" in done.stdout
