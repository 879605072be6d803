"""The ctypes mirrors in hexlane.datapath.lb.maps match bpf/hexlane_maps.h as compiled.

Pins down, for every mirrored struct, its size and each field's name and byte offset against
the BTF of the built object (read with bpftool), so the C header stays the single declaration;
and the drop reasons and flag constants against the header's text.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess

import pytest

from hexlane.datapath.build import BPF_SOURCE_DIR, compile_program
from hexlane.datapath.lb import maps
from hexlane.datapath.lb.loader import build_options
from hexlane.datapath.lb.maps import DROP_REASON_SLOTS, MIRRORS, DropReason

STRUCT_RE = re.compile(r"^\[\d+\] STRUCT '(\w+)' size=(\d+) vlen=\d+")
MEMBER_RE = re.compile(r"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)")


def btf_structs() -> dict[str, tuple[int, list[tuple[str, int]]]]:
    if shutil.which("bpftool") is None or shutil.which("clang") is None:
        pytest.skip("needs clang and bpftool")
    obj = compile_program("lb.c", build_options(16381, "JLfvgnHc2kaSUFaI"))
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "format", "raw"],
                          capture_output=True, text=True, check=True).stdout
    structs: dict[str, tuple[int, list[tuple[str, int]]]] = {}
    current: list[tuple[str, int]] | None = None
    for line in dump.splitlines():
        m = STRUCT_RE.match(line)
        if m:
            current = []
            structs[m.group(1)] = (int(m.group(2)), current)
            continue
        member = MEMBER_RE.match(line)
        if member and current is not None:
            current.append((member.group(1), int(member.group(2)) // 8))
        elif not line.startswith("\t"):
            current = None
    return structs


def test_every_mirror_matches_the_btf() -> None:
    structs = btf_structs()
    for c_name, mirror in MIRRORS.items():
        assert c_name in structs, f"struct {c_name} missing from the object's BTF"
        size, members = structs[c_name]
        assert ctypes.sizeof(mirror) == size, c_name
        mirrored = [(name, getattr(mirror, name).offset) for name, *_ in mirror._fields_]
        assert mirrored == members, c_name


def test_drop_reasons_match_the_header() -> None:
    header = (BPF_SOURCE_DIR / "hexlane_maps.h").read_text()
    in_c = {name: int(value) for name, value in
            re.findall(r"^\s*HL_DROP_(\w+) = (\d+),", header, flags=re.MULTILINE)}
    slots = in_c.pop("MAX")
    assert {r.name: int(r) for r in DropReason} == in_c
    assert slots == DROP_REASON_SLOTS and max(in_c.values()) < slots


def test_flag_constants_match_the_header() -> None:
    header = (BPF_SOURCE_DIR / "hexlane_maps.h").read_text()
    defines = {name: value for name, value in
               re.findall(r"^#define (\w+)\s+\(?([0-9x]+(?: << \d+)?)\)?", header,
                          flags=re.MULTILINE)}
    for name in ("SVC_FLAG_AFFINITY", "SVC_FLAG_LOADBALANCER", "LB_ALGORITHM_SHIFT",
                 "LB_SELECTION_MAGLEV", "LB_SELECTION_RANDOM", "CT_F_SERVICE", "CT_F_REPLY"):
        base, _, shift = defines[name].partition(" << ")
        assert int(base, 0) << int(shift or 0) == getattr(maps, name), name
