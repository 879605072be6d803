"""When to send gratuitous ARP for IPs a node takes over (sans-IO: the clock is an argument).

A node that starts answering for an IP tells the LAN at once with a gratuitous ARP (an ARP
reply to broadcast: sender = target = the IP, sender MAC = the device's). Linux ignores a
neighbour update that comes within `locktime` (1 s) of the previous one, so a single GARP
right after the old owner's last reply can be lost; like MetalLB, the GARP is repeated every
1.1 s, five times in all. Cilium sends one.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

INTERVAL = 1.1
COUNT = 5

K = TypeVar("K", bound=Hashable)


class GarpSchedule(Generic[K]):
    """Which entries (e.g. (IP, device)) are due for a GARP now."""

    def __init__(self, interval: float = INTERVAL, count: int = COUNT) -> None:
        self.interval = interval
        self.count = count
        self._next: dict[K, tuple[float, int]] = {}  # entry -> (due at, sent so far)
        self._held: set[K] = set()

    def update(self, entries: Iterable[K], now: float) -> list[K]:
        """The entries now held; newly held ones are due at once. Returns the new ones."""
        wanted = set(entries)
        new = [e for e in wanted if e not in self._held]
        for gone in self._held - wanted:
            self._next.pop(gone, None)
        for entry in new:
            self._next[entry] = (now, 0)
        self._held = wanted
        return new

    def due(self, now: float) -> list[K]:
        """Entries to send a GARP for now (each counted as sent)."""
        out = []
        for entry, (at, sent) in list(self._next.items()):
            if at > now:
                continue
            out.append(entry)
            if sent + 1 >= self.count:
                del self._next[entry]
            else:
                self._next[entry] = (at + self.interval, sent + 1)
        return out

    def next_due(self) -> float | None:
        """When the next GARP is due, or None when none is."""
        return min((at for at, _ in self._next.values()), default=None)
