"""Reading values files from disk: the only I/O in `hexlane.config`.

`load_values(files, set_flags)` reads each file (`-` is standard input, as for
`helm -f -`) and hands the texts to the pure `resolve_values`. A file that cannot be read
is a problem naming that file, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from hexlane.config.values import Values, parse_values_document, resolve_values
from hexlane.model.errors import Problem


def read_values_file(path: str) -> tuple[str | None, list[Problem]]:
    """The text of one values file, or a problem saying why it could not be read."""
    try:
        if path == "-":
            return sys.stdin.read(), []
        with open(path, encoding="utf-8") as f:
            return f.read(), []
    except FileNotFoundError:
        return None, [Problem("no such file", file=path)]
    except IsADirectoryError:
        return None, [Problem("is a directory, expected a values file", file=path)]
    except (OSError, UnicodeDecodeError) as e:
        return None, [Problem(f"cannot read: {e}", file=path)]


def load_values(values_files: Sequence[str],
                set_flags: Sequence[str] = ()) -> tuple[Values, list[Problem]]:
    """Like `helm -f a.yaml -f b.yaml --set k=v`: the effective configuration and every problem.

    Problems carry the file (or "--set") and key path; severity "error" means the input
    must not be used, "warning" that it was accepted (unknown keys, normalisations).
    """
    problems: list[Problem] = []
    documents: list[tuple[str, dict[str, Any]]] = []
    for path in values_files:
        text, read_problems = read_values_file(path)
        problems += read_problems
        if text is None:
            continue
        tree, parse_problems = parse_values_document(text, path)
        problems += parse_problems
        documents.append((path, tree))
    values, found = resolve_values(documents, set_flags)
    return values, problems + found
