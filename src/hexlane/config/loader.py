"""Reading values files from disk: the only I/O in `hexlane.config`.

`load_values(files, set_flags)` reads each file with the project's one file reader
(`hexlane.model.manifests.read_text`; `-` is standard input, as for `helm -f -`) and hands the
texts to the pure `parse_values_document` and `resolve_values`. A file that cannot be read is
a problem naming that file, never a traceback. `base` documents go before the files (the
lab's own defaults). `require_values` is the same for a command that stops at an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from hexlane.config.values import (
    Values,
    ValuesDocument,
    parse_values_document,
    resolve_values,
)
from hexlane.model.errors import InputError, Problem, errors_only
from hexlane.model.manifests import read_text


def load_values(values_files: Sequence[str], set_flags: Sequence[str] = (), *,
                base: Sequence[tuple[str, Mapping[str, Any]]] = ()
                ) -> tuple[Values, list[Problem]]:
    """Like `helm -f a.yaml -f b.yaml --set k=v`: the effective configuration and every problem.

    Problems carry the file (`file:line` where the line is known, or "--set") and the key
    path; severity "error" means the input must not be used, "warning" that it was accepted
    (unknown keys, normalisations).
    """
    problems: list[Problem] = []
    documents: list[ValuesDocument | tuple[str, Mapping[str, Any]]] = list(base)
    for path in values_files:
        try:
            text = read_text(path)
        except InputError as e:
            problems += e.problems
            continue
        doc, parse_problems = parse_values_document(text, path)
        problems += parse_problems
        documents.append(doc)
    values, found = resolve_values(documents, set_flags)
    return values, problems + found


def require_values(values_files: Sequence[str], set_flags: Sequence[str] = (), *,
                   base: Sequence[tuple[str, Mapping[str, Any]]] = ()
                   ) -> tuple[Values, list[Problem]]:
    """`load_values` for a command that must not go on with an error: `InputError` carrying
    every problem (errors and warnings, in order) when there is an error; else the values and
    the warnings."""
    values, problems = load_values(values_files, set_flags, base=base)
    if errors_only(problems):
        raise InputError(problems)
    return values, problems
