"""Go durations (`15s`, `1m30s`, `200ms`, `1.5h`) as seconds (pure).

Helm values carry durations as Go's `time.ParseDuration` strings; this accepts exactly that
grammar: an optional sign, then one or more `<number><unit>` parts with units ns, us (µs),
ms, s, m, h, or the bare `0`.
"""

from __future__ import annotations

import re

_UNITS = {
    "ns": 1e-9, "us": 1e-6, "\u00b5s": 1e-6, "\u03bcs": 1e-6,
    "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0,
}
_PART = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)(ns|us|\u00b5s|\u03bcs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """Seconds in a Go duration string; ValueError naming the problem when it is not one."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as 15s, got {text!r}")
    s = text.strip()
    sign = 1.0
    if s and s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if not m:
            if re.match(r"[0-9.]+$", s[pos:]):
                raise ValueError(f"missing unit in duration {text!r} (use e.g. 15s, 200ms, 1m30s)")
            raise ValueError(f"invalid duration {text!r} (use e.g. 15s, 200ms, 1m30s)")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """A Go duration string for seconds, exact to the nanosecond: 15s, 1.5s, 200ms."""
    if 0 < abs(seconds) < 1:
        ms = f"{seconds * 1000:.6f}".rstrip("0").rstrip(".")
        return f"{ms}ms"
    text = f"{seconds:.9f}".rstrip("0").rstrip(".")
    return f"{text}s"
