"""`python -m hexlane.datapath.prebuild`: build the BPF objects of the default values.

The container image runs this once at build time, so that an agent with the default
`maglev.tableSize` and `maglev.hashSeed` (the only values compiled into a program, as -D
definitions) finds `lb.c`'s and `masq.c`'s objects in its cache (``$HEXLANE_BPF_CACHE``) and
starts without running clang. Other values build their own object at the agent's start, which is
why the image keeps clang. Prints each object's path.
"""

from __future__ import annotations

from pathlib import Path

from hexlane.config import defaults
from hexlane.datapath.build import compile_program
from hexlane.datapath.lb.loader import build_options


def prebuild() -> list[Path]:
    values = defaults()
    return [
        compile_program("lb.c", build_options(values.maglev.table_size,
                                              values.maglev.hash_seed)),
        compile_program("masq.c", {}),
    ]


def main() -> None:
    for path in prebuild():
        print(path)


if __name__ == "__main__":
    main()
