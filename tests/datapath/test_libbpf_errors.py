"""libbpf failures come back as BpfError naming the object, program or map, with errno text,
and a program the verifier rejects brings the verifier's log along."""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest

from hexlane.datapath import libbpf
from hexlane.datapath.build import compile_program

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(shutil.which("clang") is None, reason="needs clang")]

REJECTED = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("tc") int reads_past_the_end(struct __sk_buff *skb)
{
	unsigned char *data = (void *)(long)skb->data;
	return data[100]; /* no bounds check: the verifier refuses */
}
char _license[] SEC("license") = "GPL";
"""


def test_verifier_rejection_carries_the_log(tmp_path: Path) -> None:
    (tmp_path / "bad.c").write_text(REJECTED)
    obj_path = compile_program("bad.c", source_dir=tmp_path, out_dir=tmp_path / "out")
    with libbpf.BpfObject(obj_path) as obj, pytest.raises(libbpf.BpfError) as info:
        obj.load()
    message = str(info.value)
    assert f"load BPF object {obj_path}" in message
    assert "reads_past_the_end" in message and "invalid access to packet" in message
    assert info.value.errno == errno.EACCES


def test_missing_things_are_named(tmp_path: Path) -> None:
    with pytest.raises(libbpf.BpfError, match=r"open BPF object .*nothing\.o.*No such file"):
        libbpf.BpfObject(tmp_path / "nothing.o")
    with pytest.raises(libbpf.BpfError, match=r"open pinned map .*absent.*No such file"):
        libbpf.Map.from_pin(tmp_path / "absent")
