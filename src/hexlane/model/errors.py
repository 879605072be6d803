"""Problems found in user input, carried with where they were found.

Every layer that reads user input (manifests, Helm values, CLI flags, API bodies) reports a
`Problem`: which file, which object, which field path, and what was expected. `InputError`
carries one or more of them; the CLI prints them one per line and exits non-zero, the
apiserver turns them into a 422 `Status` naming every bad field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


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
        where = ": ".join(p for p in (self.file, self.obj, self.path) if p)
        tag = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {tag}{self.message}" if where else f"{tag}{self.message}"


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

    def __init__(self, problems: Problem | Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = (
            (problems,) if isinstance(problems, Problem) else tuple(problems)
        )
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> InputError:
        return cls(Problem(message=message, path=path))

    def located(self, *, file: str | None = None, obj: str | None = None,
                prefix: str | None = None) -> InputError:
        return InputError([p.located(file=file, obj=obj, prefix=prefix) for p in self.problems])


def errors_only(problems: Iterable[Problem]) -> list[Problem]:
    return [p for p in problems if p.severity == "error"]
