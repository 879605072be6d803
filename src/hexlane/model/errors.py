"""Problems found in user input, carried with where they were found.

Every layer that reads user input (manifests, Helm values, CLI flags, API bodies) reports a
`Problem`: which file, which object, which field path, and what was expected. `InputError`
carries one or more of them; the CLI prints them one per line and exits non-zero, the
apiserver turns them into a 422 `Status` naming every bad field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: how much of a name (or any other value from the input) a message shows: Kubernetes' longest
#: name, 253 characters
SHOWN_NAME = 253
#: how much of one problem's message is shown (the rest is cut, and how much is said)
SHOWN_MESSAGE = 2000


def escaped(text: str) -> str:
    """`text` with control and format characters (NUL, ESC, newlines, U+202E...) written as
    escapes, so input cannot rewrite the terminal or reorder what is shown."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else
                       f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}")
    return "".join(out)


def cut(text: str, limit: int) -> str:
    """`text` cut to `limit` characters, saying how many more there were."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def shown(name: str, limit: int = SHOWN_NAME) -> str:
    """A name (or other value from the input) as messages show it: cut to 253 characters,
    control characters escaped."""
    return escaped(cut(name, limit))


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with the input.

    `path` is a field path in Kubernetes' style (``spec.blocks[0].start``); `obj` names the
    object (``CiliumLoadBalancerIPPool/first-pool``), both empty when they do not apply.
    """

    message: str
    path: str = ""
    obj: str = ""
    file: str = ""
    severity: str = "error"  # "error" or "warning"

    def located(self, *, file: str | None = None, obj: str | None = None,
                prefix: str | None = None) -> Problem:
        """The same problem with its location filled in (or its path nested under prefix)."""
        path = self.path
        if prefix:
            path = join_path(prefix, path)
        return Problem(
            message=self.message,
            path=path,
            obj=self.obj or (obj or ""),
            file=self.file or (file or ""),
            severity=self.severity,
        )

    def __str__(self) -> str:
        where = ": ".join(shown(p, SHOWN_MESSAGE) for p in (self.file, self.obj, self.path)
                          if p)
        tag = "" if self.severity == "error" else f"{self.severity}: "
        message = shown(self.message, SHOWN_MESSAGE)
        return f"{where}: {tag}{message}" if where else f"{tag}{message}"


def join_path(prefix: str, path: str) -> str:
    """Join field paths: `spec` + `blocks[0]` is `spec.blocks[0]`; `x` + `[1]` is `x[1]`."""
    if not prefix:
        return path
    if not path:
        return prefix
    if path.startswith("["):
        return prefix + path
    return f"{prefix}.{path}"


class InputError(ValueError):
    """Input that cannot be used, with every problem found in it."""

    def __init__(self, problems: Problem | Sequence[Problem], *, exit_code: int = 2) -> None:
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, Problem) else tuple(problems)
        )
        # What the CLI exits with: 2, the input could not be used; 1, it was read and holds
        # problems (an input with no object at all, for one).
        self.exit_code = exit_code
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> InputError:
        return cls(Problem(message=message, path=path))

    def located(self, *, file: str | None = None, obj: str | None = None,
                prefix: str | None = None) -> InputError:
        return InputError([p.located(file=file, obj=obj, prefix=prefix) for p in self.problems])


def no_objects(path: str) -> Problem:
    """The problem of a manifest path (file or directory) that holds no object at all."""
    return Problem(f"no objects found in {shown(path)}", file=path)


def errors_only(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
