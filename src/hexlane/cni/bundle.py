"""The CNI plugin as one file a node's runtime can run: `hexlane-cni.pyz`, a Python zipapp.

On a real node the container runtime runs the plugin from the host's /opt/cni/bin, outside
hexlane's container, so the plugin cannot be this installation's `hexlane-cni` script. The
plugin is the standard library plus three modules of its own (`hexlane.cni.main`,
`hexlane.cnispec`, `hexlane.inputlimits`), so `bundle()` packs exactly those into a zipapp
(`#!/usr/bin/env python3`; the host needs Python 3.11 or later) that `install_plugin(dir)`
writes, atomically and only when it differs, as `dir/hexlane-cni.pyz`. The agent's wrapper
`hexlane-cni` then execs it (`hexlane agent --cni-plugin`). The archive is the same for the
same sources (fixed timestamps), so a re-install writes nothing.

    hexlane cni install-plugin /opt/cni/bin     # the DaemonSet's init container
"""

from __future__ import annotations

import io
import os
import zipfile
from importlib import resources
from pathlib import Path

PLUGIN_FILE = "hexlane-cni.pyz"
SHEBANG = b"#!/usr/bin/env python3\n"
_MODULES = ("cni/main.py", "cnispec.py", "inputlimits.py")
_STUBS = {
    "hexlane/__init__.py": '"""hexlane\'s CNI plugin, bundled (hexlane.cni.bundle)."""\n',
    "hexlane/cni/__init__.py": "",
    "__main__.py": "import sys\n\nfrom hexlane.cni.main import main\n\nsys.exit(main())\n",
}
_EPOCH = (1980, 1, 1, 0, 0, 0)


def bundle() -> bytes:
    """The zipapp's bytes: shebang, then a zip of the plugin's modules."""
    package = resources.files("hexlane")
    members = dict(_STUBS)
    for module in _MODULES:
        members[f"hexlane/{module}"] = package.joinpath(module).read_text("utf-8")
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, _EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, members[name])
    return SHEBANG + out.getvalue()


def install_plugin(directory: Path) -> tuple[Path, bool]:
    """Write `directory/hexlane-cni.pyz` (0755) when it differs; (its path, whether it was
    written)."""
    data = bundle()
    target = directory / PLUGIN_FILE
    try:
        if target.read_bytes() == data:
            return target, False
    except OSError:
        pass
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{PLUGIN_FILE}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)
    return target, True


def is_bundle(path: Path) -> bool:
    """Whether `path` is a plugin bundle hexlane wrote (its shebang, then a zip holding the
    plugin's modules), whatever version: for `hexlane cleanup`."""
    try:
        with open(path, "rb") as f:
            if f.read(len(SHEBANG)) != SHEBANG:
                return False
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    return {f"hexlane/{m}" for m in _MODULES} <= names and "__main__.py" in names
