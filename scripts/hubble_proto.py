"""Generate the Python modules of the Hubble API from the .proto files (`make proto`).

    python scripts/hubble_proto.py            # regenerate in place
    python scripts/hubble_proto.py --out DIR  # write the generated files under DIR instead

The .proto files live in src/hexlane/hubble/api/<package>/ and import each other by Cilium's
paths ("flow/flow.proto"), so reflection shows the same file names as a Cilium agent. protoc
(from grpcio-tools) writes messages (`*_pb2.py`), type stubs (`*_pb2.pyi`) and, through
grpclib's plugin, the service base and stub (`*_grpc.py`). Their imports name the top-level
packages `flow`, `relay` and `observer`; they are rewritten to `hexlane.hubble.api.<package>`
so the modules import from inside hexlane. tests/hubble/test_proto.py regenerates into a
temporary directory and checks that the committed files are exactly that output.
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
API = ROOT / "src" / "hexlane" / "hubble" / "api"
PACKAGES = ("flow", "relay", "observer")
PREFIX = "hexlane.hubble.api"
# The plugin writes a *_grpc.py for every file; only files with services need one.
SERVICES = {"observer"}

_PKG = "|".join(PACKAGES)
_FROM_PKG = re.compile(rf"^from ({_PKG}) import ", re.M)
_FROM_MOD = re.compile(rf"^from ({_PKG})\.(\w+) import ", re.M)
_IMPORT_MOD = re.compile(rf"^import ({_PKG})\.(\w+)$", re.M)
_QUALIFIED = re.compile(rf"(?<![\w.])({_PKG})\.(\w+_pb2)\.")


def rewrite(text: str) -> str:
    """The generated text with every import of our proto packages made absolute."""
    text = _FROM_PKG.sub(rf"from {PREFIX}.\1 import ", text)
    text = _FROM_MOD.sub(rf"from {PREFIX}.\1.\2 import ", text)
    text = _IMPORT_MOD.sub(rf"import {PREFIX}.\1.\2", text)
    return _QUALIFIED.sub(rf"{PREFIX}.\1.\2.", text)


def protos() -> list[str]:
    return sorted(str(p.relative_to(API)) for p in API.glob("*/*.proto"))


def generate(out: Path) -> list[Path]:
    """Write the generated modules under `out` (same layout as the api folder)."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools)

    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"
        # grpclib's plugin is installed beside this interpreter (PATH may not have it)
        plugin = Path(sys.executable).parent / "protoc-gen-grpclib_python"
        args = ["protoc", f"-I{API}", f"-I{include}", f"--python_out={tmp}",
                f"--plugin=protoc-gen-grpclib_python={plugin}",
                f"--pyi_out={tmp}", f"--grpclib_python_out={tmp}", *protos()]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written: list[Path] = []
        for path in sorted(Path(tmp).rglob("*.py*")):
            rel = path.relative_to(tmp)
            if path.name.endswith("_grpc.py") and rel.parts[0] not in SERVICES:
                continue
            target = out / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(rewrite(path.read_text()))
            written.append(target)
        return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="write here instead of in place")
    args = parser.parse_args(argv)
    if args.out is not None:
        generate(args.out)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in generate(Path(tmp)):
            shutil.copyfile(path, API / path.relative_to(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())
