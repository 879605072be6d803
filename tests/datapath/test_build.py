"""Building BPF programs (content-addressed cache, definitions, readable clang errors), and
mounting the BPF file system pins live on."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from hexlane.datapath.bpffs import ensure_bpffs, is_bpffs, on_bpffs
from hexlane.datapath.build import BpfBuildError, compile_program

pytestmark = pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")


def test_same_inputs_reuse_the_object_and_definitions_change_it(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "x.c").write_text(
        "#include <linux/bpf.h>\n#include <bpf/bpf_helpers.h>\n"
        'SEC("tc") int f(struct __sk_buff *skb) { return VALUE; }\n'
        'char _license[] SEC("license") = "GPL";\n'
    )
    first = compile_program("x.c", {"VALUE": 1}, source_dir=src, out_dir=tmp_path / "out")
    mtime = first.stat().st_mtime_ns
    again = compile_program("x.c", {"VALUE": 1}, source_dir=src, out_dir=tmp_path / "out")
    assert again == first and again.stat().st_mtime_ns == mtime
    other = compile_program("x.c", {"VALUE": 2}, source_dir=src, out_dir=tmp_path / "out")
    assert other != first and other.is_file()
    (src / "extra.h").write_text("/* a header change rebuilds */\n")
    assert compile_program("x.c", {"VALUE": 1}, source_dir=src, out_dir=tmp_path / "out") != first


def test_clang_errors_are_shown(tmp_path: Path) -> None:
    (tmp_path / "bad.c").write_text("int f(void) { return undefined_thing; }\n")
    with pytest.raises(BpfBuildError, match="undefined_thing"):
        compile_program("bad.c", source_dir=tmp_path, out_dir=tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


@pytest.mark.root
def test_ensure_bpffs_mounts_once(tmp_path: Path) -> None:
    point = tmp_path / "bpf"
    try:
        assert ensure_bpffs(point) is True
        assert is_bpffs(point) and on_bpffs(point / "hexlane" / "x")
        assert ensure_bpffs(point) is False
    finally:
        subprocess.run(["umount", str(point)], check=False)
    assert not is_bpffs(point) and not on_bpffs(point / "hexlane")
