"""hexlane's defaults file, key table and documentation agree with each other.

Pins down: defaults.yaml loads without a single problem; every key in it is a known key;
every key hexlane acts on has a default (or is nullable); the typed view of the defaults is
the same whether built from no input or from the defaults file given as a values file; and
docs/configuration.md has a row with the right default for every key hexlane acts on and
lists every key accepted without effect.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from hexlane.config import SPECS, default_tree, defaults, resolve_values

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def leaf_paths(tree: dict[str, Any], prefix: str = "") -> list[str]:
    out: list[str] = []
    for key, value in tree.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict) and path not in SPECS:
            out += leaf_paths(value, path)
        else:
            out.append(path)
    return out


def test_defaults_load_without_problems() -> None:
    _, problems = resolve_values([], [])
    assert problems == []


def test_every_default_is_a_known_key() -> None:
    assert [p for p in leaf_paths(default_tree()) if p not in SPECS] == []


def test_every_acting_key_has_a_default() -> None:
    paths = set(leaf_paths(default_tree()))
    missing = [s.path for s in SPECS.values() if s.acts and s.path not in paths]
    assert missing == []


def test_defaults_as_a_values_file_change_nothing() -> None:
    again, problems = resolve_values([("defaults.yaml", default_tree())])
    assert problems == []
    assert again == defaults()  # the typed fields
    # As in Helm, a null given as a user value deletes the key; all else is identical.
    assert again.tree == without_nulls(defaults().tree)


def without_nulls(tree: dict[str, Any]) -> dict[str, Any]:
    return {k: without_nulls(v) if isinstance(v, dict) else v
            for k, v in tree.items() if v is not None}


def test_docs_list_every_accepted_key() -> None:
    text = DOC.read_text()
    acting, _, rest = text.partition("## Keys accepted without effect")
    table_rows = set(re.findall(r"^\| `([A-Za-z0-9.]+)` \| `([^`]*)` \|", acting, flags=re.M))
    documented = dict(table_rows)
    for spec in SPECS.values():
        if spec.acts:
            # every key hexlane acts on has a row with its default
            assert spec.path in documented, spec.path
            assert json.loads(documented[spec.path]) == defaults().get(spec.path), spec.path
        else:  # a feature not built is listed by the key that turns it on
            key = f"{spec.path}.{spec.switch}" if spec.switch else spec.path
            assert f"`{key}`" in rest, spec.path
