"""The seeds' Helm values in the order examples/README.md layers them, for every test that
loads a seed's values."""

from __future__ import annotations

from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

# Layering order per seed: base `values.yaml` first, later files win.
LAYERS = {
    "seed-000": ["values.yaml", "values-monitoring.yaml", "values-hubble.yaml"],
    "seed-001": ["values.yaml", "values-upgrade.yaml"],
    "seed-002": ["values.yaml"],
    "seed-004": ["values.yaml"],
}


def values_files(seed: str) -> list[str]:
    """The seed's values files, as paths in layering order."""
    return [str(EXAMPLES / seed / name) for name in LAYERS[seed]]
