"""Converging a BPF map to a desired content: update what differs, delete what is stale.

Desired state is plain data computed by pure code (a mapping from key to value, both ctypes
structures or bytes); `reconcile_map` compares it with what the map holds and writes only the
difference, so it is safe to run after any restart and cheap to run often. Updates go first,
in the order given, and deletions last, so a service never loses its entry while it changes.
Maps of maps (the Maglev map) hold map references, not data: use
`LbDatapath.set_maglev_table` for those.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class WritableMap(Protocol):
    """What the reconciler needs of a map (hexlane.datapath.libbpf.Map has it)."""

    name: str

    def raw_keys(self) -> Iterator[bytes]: ...

    def lookup(self, key: Any) -> Any: ...

    def update(self, key: Any, value: Any, flags: int = ...) -> None: ...

    def delete(self, key: Any) -> bool: ...


@dataclass(frozen=True)
class ReconcileResult:
    updated: int
    deleted: int
    unchanged: int

    @property
    def changed(self) -> bool:
        return bool(self.updated or self.deleted)


def _desired_bytes(desired: Mapping[Any, Any] | Iterable[tuple[Any, Any]]) -> dict[bytes, bytes]:
    pairs = desired.items() if isinstance(desired, Mapping) else desired
    # ctypes structures compare by identity: compare and key by their bytes instead.
    return {bytes(k): bytes(v) for k, v in pairs}


def reconcile_map(
    target: WritableMap, desired: Mapping[Any, Any] | Iterable[tuple[Any, Any]],
) -> ReconcileResult:
    """Make `target` hold exactly `desired`; report how many entries it had to change."""
    want = _desired_bytes(desired)
    updated = unchanged = 0
    for key, value in want.items():
        current = target.lookup(key)
        if current is not None and bytes(current) == value:
            unchanged += 1
            continue
        target.update(key, value)
        updated += 1
    stale = [k for k in target.raw_keys() if k not in want]
    deleted = sum(1 for k in stale if target.delete(k))
    return ReconcileResult(updated=updated, deleted=deleted, unchanged=unchanged)
