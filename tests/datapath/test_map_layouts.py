"""The ctypes mirrors of the BPF map layouts match the headers as compiled.

Pins down, for every struct mirrored in hexlane.datapath.lb.maps (bpf/hexlane_maps.h),
hexlane.datapath.l2 (bpf/l2_responder.h), hexlane.datapath.events (bpf/events.h),
hexlane.datapath.metrics (bpf/metrics.h, in both objects) and hexlane.datapath.masq
(bpf/masq.h), its size and each field's name and byte offset against
the BTF of the built object (read with bpftool; structs only the programs' stack holds, from
a probe object built from the same header), so the C header stays the single declaration;
and the drop reasons, directions, flags and slot constants against the headers' text. Needs
clang and bpftool, not root.
"""

from __future__ import annotations

import ctypes
import re
import shutil
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

from hexlane.datapath import events, l2, masq, metrics
from hexlane.datapath.build import BPF_SOURCE_DIR, CFLAGS, CLANG, compile_program
from hexlane.datapath.lb import maps
from hexlane.datapath.lb.loader import build_options
from hexlane.datapath.lb.maps import DROP_REASON_SLOTS, DropReason

STRUCT_RE = re.compile(r"^\[\d+\] STRUCT '(\w+)' size=(\d+) vlen=\d+")
MEMBER_RE = re.compile(r"^\s+'(\w+)' type_id=\d+ bits_offset=(\d+)")
DEFINE_RE = re.compile(r"^#define (\w+)\s+\(?([0-9x]+(?: << \d+)?)\)?", flags=re.MULTILINE)

#: program source -> (its build options, the modules mirroring its maps, its main header)
OBJECTS: dict[str, tuple[dict[str, int | str], tuple[ModuleType, ...], str]] = {
    "lb.c": (build_options(16381, "JLfvgnHc2kaSUFaI"), (maps, l2, events, metrics),
             "hexlane_maps.h"),
    "masq.c": ({}, (masq, metrics), "masq.h"),
}


#: structs only the programs' stack holds (never a map's key or value, so not in the object's
#: BTF): a probe object declares a map of each, from the header that has it
STACK_ONLY = {"hl_event": "events.h"}


def probe_object(tmp: Path) -> Path:
    """An object whose BTF carries the STACK_ONLY structs, built from the real headers."""
    lines = ['#include "common.h"']
    for c_name, header in STACK_ONLY.items():
        lines += [f'#include "{header}"',
                  "struct { __uint(type, BPF_MAP_TYPE_ARRAY); __type(key, __u32);",
                  f"  __type(value, struct {c_name}); __uint(max_entries, 1); }}",
                  f"  probe_{c_name} SEC(\".maps\");"]
    (tmp / "probe.c").write_text("\n".join(lines) + "\n")
    subprocess.run([CLANG, *CFLAGS, f"-I{BPF_SOURCE_DIR}", "-c", "probe.c", "-o", "probe.o"],
                   cwd=tmp, check=True, capture_output=True)
    return tmp / "probe.o"


Structs = dict[str, tuple[int, list[tuple[str, int]]]]


def btf_structs(source: str, obj: Path | None = None) -> Structs:
    """Every struct in the built object's BTF: its size and (member, byte offset) list."""
    if shutil.which("bpftool") is None or shutil.which("clang") is None:
        pytest.skip("needs clang and bpftool")
    if obj is None:
        obj = compile_program(source, OBJECTS[source][0])
    dump = subprocess.run(["bpftool", "btf", "dump", "file", str(obj), "format", "raw"],
                          capture_output=True, text=True, check=True).stdout
    structs: Structs = {}
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


def header_defines(header: str) -> dict[str, int]:
    """The header's numeric #defines (`1 << 4` forms included)."""
    out = {}
    for name, value in DEFINE_RE.findall((BPF_SOURCE_DIR / header).read_text()):
        base, _, shift = value.partition(" << ")
        out[name] = int(base, 0) << int(shift or 0)
    return out


@pytest.mark.parametrize("source", sorted(OBJECTS))
def test_every_mirror_matches_the_btf(source: str, tmp_path: Path) -> None:
    structs = btf_structs(source)
    if any(name in STACK_ONLY for module in OBJECTS[source][1] for name in module.MIRRORS):
        structs.update(btf_structs(source, probe_object(tmp_path)))
    mirrors = {name: m for module in OBJECTS[source][1] for name, m in module.MIRRORS.items()}
    for c_name, mirror in mirrors.items():
        assert c_name in structs, f"struct {c_name} missing from the object's BTF"
        size, members = structs[c_name]
        assert ctypes.sizeof(mirror) == size, c_name
        mirrored = [(name, getattr(mirror, name).offset) for name, *_ in mirror._fields_]
        assert mirrored == members, c_name


def test_drop_reasons_match_the_header() -> None:
    header = (BPF_SOURCE_DIR / "common.h").read_text()
    in_c = {name: int(value) for name, value in
            re.findall(r"^\s*HL_DROP_(\w+) = (\d+),", header, flags=re.MULTILINE)}
    slots = in_c.pop("MAX")
    assert {r.name: int(r) for r in DropReason} == in_c
    assert slots == DROP_REASON_SLOTS and max(in_c.values()) < slots


def test_metric_directions_match_the_header() -> None:
    defines = header_defines("metrics.h")
    assert {f"HL_DIR_{d.name}": int(d) for d in metrics.Direction} == {
        name: value for name, value in defines.items()
        if name.startswith("HL_DIR_") and name != "HL_DIR_MAX"}
    assert defines["HL_DIR_MAX"] == metrics.DIRECTIONS


def test_lb_constants_match_the_header() -> None:
    defines = header_defines("hexlane_maps.h")
    for name in ("SVC_FLAG_AFFINITY", "SVC_FLAG_LOADBALANCER", "LB_ALGORITHM_SHIFT",
                 "LB_SELECTION_MAGLEV", "LB_SELECTION_RANDOM", "CT_F_SERVICE", "CT_F_REPLY"):
        assert defines[name] == getattr(maps, name), name
    assert {f"BE_STATE_{state.name}": int(state) for state in maps.BackendState} == {
        name: value for name, value in defines.items() if name.startswith("BE_STATE_")}


def test_masq_constants_match_the_header() -> None:
    defines = header_defines("masq.h")
    slots = {"EGRESS": "egress", "INGRESS": "ingress", "NO_PORT": "no_port",
             "REWRITE": "rewrite_failed"}
    assert {defines[f"MASQ_STAT_{c}"]: name for c, name in slots.items()} == dict(
        enumerate(masq.STATS))
    assert defines["MASQ_STAT_MAX"] == len(masq.STATS)
    assert (defines["SNAT_DIR_EGRESS"], defines["SNAT_DIR_INGRESS"]) == (
        masq.SNAT_DIR_EGRESS, masq.SNAT_DIR_INGRESS)
