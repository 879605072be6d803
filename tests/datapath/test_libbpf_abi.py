"""The ctypes opts structs in hexlane.datapath.libbpf match libbpf's headers on this machine.

Pins down size and field offsets of bpf_test_run_opts, bpf_tc_hook, bpf_tc_opts and
bpf_map_create_opts against a C program compiled with the installed <bpf/*.h>: libbpf reads
these through their `sz`, so a wrong layout would silently pass wrong values.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from hexlane.datapath import libbpf

MIRRORS = {
    "bpf_test_run_opts": libbpf._TestRunOpts,
    "bpf_tc_hook": libbpf._TcHook,
    "bpf_tc_opts": libbpf._TcOpts,
    "bpf_map_create_opts": libbpf._MapCreateOpts,
}


@pytest.mark.skipif(shutil.which("gcc") is None or not Path("/usr/include/bpf/libbpf.h").exists(),
                    reason="needs gcc and libbpf-dev")
def test_opts_layouts_match_the_headers(tmp_path: Path) -> None:
    lines = ["#include <stdio.h>", "#include <stddef.h>", "#include <bpf/bpf.h>",
             "#include <bpf/libbpf.h>", "int main(void) {"]
    for c_name, mirror in MIRRORS.items():
        lines.append(f'printf("{c_name} size %zu\\n", sizeof(struct {c_name}));')
        for field, *_ in mirror._fields_:
            lines.append(f'printf("{c_name} {field} %zu\\n", '
                         f"offsetof(struct {c_name}, {field}));")
    lines += ["return 0; }"]
    src = tmp_path / "abi.c"
    src.write_text("\n".join(lines) + "\n")
    exe = tmp_path / "abi"
    subprocess.run(["gcc", "-o", str(exe), str(src)], check=True)
    facts = {}
    for line in subprocess.run([str(exe)], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        struct_name, what, value = line.split()
        facts[(struct_name, what)] = int(value)
    for c_name, mirror in MIRRORS.items():
        assert ctypes.sizeof(mirror) == facts[(c_name, "size")], c_name
        for field, *_ in mirror._fields_:
            assert getattr(mirror, field).offset == facts[(c_name, field)], (c_name, field)
