"""`hexlane cni install-plugin DIR`: put the CNI plugin where a node's runtime runs it.

Writes `DIR/hexlane-cni.pyz` (`hexlane.cni.bundle`: the plugin as one Python zipapp the host
runs), only when it differs. The DaemonSet `hexlane manifests` renders runs it as an init
container with DIR the host's CNI bin directory; the agent then writes the `hexlane-cni`
wrapper beside it (`--cni-plugin`) and the CNI config once it serves.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import flags


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("cni", help="install the CNI plugin on a node")
    sub = flags.commands(parser, "cni_command")
    install = sub.add_parser(
        "install-plugin", help="write DIR/hexlane-cni.pyz (the plugin as one file)",
        description="Write the CNI plugin as a Python zipapp into DIR (the node's CNI bin "
                    "directory), when it differs from what is there.")
    install.add_argument("directory", type=Path, metavar="DIR")
    install.set_defaults(func=run_install)


def run_install(args: argparse.Namespace) -> int:
    from hexlane.cni.bundle import install_plugin

    path, written = install_plugin(args.directory)
    print(f"{path} {'written' if written else 'unchanged'}")
    return 0
