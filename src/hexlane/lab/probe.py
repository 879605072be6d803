"""What `hexlane lab demo` concludes from its probes (pure: no I/O).

The client's prober (`python -m hexlane.lab.prober`) opens connections and records one sample
per connection: when it was opened and when it ended (CLOCK_MONOTONIC, the machine's clock,
the same in every network namespace), whether it was answered and by which backend. From
those samples and the moment a node was killed, `outage` computes how long the client's
traffic stopped; `spread_table` prints how requests spread over the backends; `arp_macs`
reads the MACs that answered an arping.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sample:
    """One connection of the prober."""

    start: float  # opened (CLOCK_MONOTONIC seconds)
    end: float  # answered, or given up on
    ok: bool
    backend: str = ""  # who answered ("" when it was not answered)

    @classmethod
    def parse(cls, raw: Sequence[object]) -> Sample:
        start, end, ok, backend = raw
        return cls(float(str(start)), float(str(end)), bool(ok), str(backend))

    def to_list(self) -> list[object]:
        return [round(self.start, 6), round(self.end, 6), self.ok, self.backend]


@dataclass(frozen=True)
class Outage:
    """The client's view of a fault at `fault_at`."""

    last_ok_before: float | None  # the last answer before the fault
    first_ok_after: float | None  # the first answer to a connection opened after it
    failed: int  # connections opened after the fault that were not answered
    failed_after_recovery: int  # ... of them, those opened after the first answered one
    last_failure: float | None  # when the last unanswered connection was opened

    @property
    def gap(self) -> float | None:
        """Seconds without an answer: last answer before the fault to first after it."""
        if self.last_ok_before is None or self.first_ok_after is None:
            return None
        return self.first_ok_after - self.last_ok_before


def outage(samples: Iterable[Sample], fault_at: float) -> Outage:
    """How long the client's traffic stopped around `fault_at` (see `Outage`)."""
    samples = sorted(samples, key=lambda s: s.start)
    before = [s.end for s in samples if s.ok and s.end <= fault_at]
    after = [s for s in samples if s.start > fault_at]
    first_ok = min((s.end for s in after if s.ok), default=None)
    first_ok_start = min((s.start for s in after if s.ok), default=None)
    failures = [s for s in after if not s.ok]
    late = [s for s in failures if first_ok_start is not None and s.start > first_ok_start]
    return Outage(last_ok_before=max(before, default=None), first_ok_after=first_ok,
                  failed=len(failures), failed_after_recovery=len(late),
                  last_failure=max((s.start for s in failures), default=None))


def spread_table(answers: Mapping[str, int], failures: int,
                 nodes: Mapping[str, str] | None = None) -> str:
    """A table of requests per backend (and its node), with the total and the failures."""
    nodes = nodes or {}
    rows = [("BACKEND", "NODE", "REQUESTS")]
    rows += [(backend, nodes.get(backend, ""), str(n)) for backend, n in sorted(answers.items())]
    total = sum(answers.values()) + failures
    rows += [("total", "", str(total)), ("failed", "", str(failures))]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{b:<{widths[0]}}  {n:<{widths[1]}}  {c:>{widths[2]}}".rstrip()
                     for b, n, c in rows) + "\n"


_HEX_MAC = r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
# Thomas Habets's arping (Debian's `arping`): `58 bytes from MAC (IP): index=0 ...`;
# iputils' arping: `Unicast reply from IP [MAC]  0.6ms`.
_REPLY = re.compile(rf"bytes from ({_HEX_MAC}) |reply from \S+ \[({_HEX_MAC})\]")


def arp_macs(arping_output: str) -> list[str]:
    """The MACs that answered in an arping's output (either arping's format), lower case, in
    order, each once."""
    seen: list[str] = []
    for m in _REPLY.finditer(arping_output):
        mac = (m.group(1) or m.group(2)).lower()
        if mac not in seen:
            seen.append(mac)
    return seen


_LINK_MAC = re.compile(r"link/ether ([0-9a-f]{2}(?::[0-9a-f]{2}){5})")


def link_mac(ip_link_output: str) -> str | None:
    """The MAC in `ip link show DEV`'s output."""
    m = _LINK_MAC.search(ip_link_output)
    return m.group(1) if m else None


def metric_samples(text: str, names: Iterable[str]) -> list[tuple[str, float]]:
    """The lines of a Prometheus text page whose metric is one of `names`: (line, value)."""
    wanted = set(names)
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        if name in wanted:
            try:
                out.append((line, float(line.rsplit(" ", 1)[1])))
            except (IndexError, ValueError):
                continue
    return out
