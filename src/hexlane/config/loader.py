"""Reading values files from disk: the only I/O in `hexlane.config`.

`load_values(files, set_flags)` reads each file with the project's one file reader
(`hexlane.model.manifests.read_text`; `-` is standard input, as for `helm -f -`) and hands the
texts to the pure `parse_values_document` and `resolve_values`. A file that cannot be read is
a problem naming that file, never a traceback.
"""

from __future__ import annotations

from collections.abc import Sequence

from hexlane.config.values import (
    Values,
    ValuesDocument,
    parse_values_document,
    resolve_values,
)
from hexlane.model.errors import InputError, Problem
from hexlane.model.manifests import read_text


def load_values(values_files: Sequence[str],
                set_flags: Sequence[str] = ()) -> tuple[Values, list[Problem]]:
    """Like `helm -f a.yaml -f b.yaml --set k=v`: the effective configuration and every problem.

    Problems carry the file (`file:line` where the line is known, or "--set") and the key
    path; severity "error" means the input must not be used, "warning" that it was accepted
    (unknown keys, normalisations).
    """
    problems: list[Problem] = []
    documents: list[ValuesDocument] = []
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
