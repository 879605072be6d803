"""What the model tests share: the errors a parser reports for a bad object."""

from __future__ import annotations

from typing import Any

import pytest

from hexlane.model import InputError


def errors(cls: Any, obj: Any) -> list[tuple[str, str]]:
    """(path, message) of every error `cls.parse(obj)` reports (warnings left out)."""
    with pytest.raises(InputError) as e:
        cls.parse(obj)
    return [(p.path, p.message) for p in e.value.problems if p.severity == "error"]
