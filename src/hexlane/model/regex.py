"""Regular expressions written for Go's RE2 syntax (Cilium's `interfaces` list), run by Python.

Cilium compiles `CiliumL2AnnouncementPolicy.spec.interfaces` with Go's `regexp` (RE2) and
matches unanchored. Python's `re` accepts more than RE2 (backreferences, lookaround, atomic
groups, possessive quantifiers, conditionals), so a pattern that works here could be rejected
by Cilium: those constructs are refused with a message saying so. The common subset behaves
the same. Two RE2 spellings Python lacks are translated (`\\z` end of text, `(?<name>...)`
named groups); other RE2-only syntax (`\\pL`, `\\Q...\\E`, `(?U)`) is reported as invalid.
"""

from __future__ import annotations

import functools
import re

_WHY = "which Go's RE2 syntax (used by Cilium) does not support"
_MAX_REPEAT = 1000  # RE2's limit on {n,m}
_REPEAT_RE = re.compile(r"\{(\d+)(?:,(\d*))?\}")


def re2_problem(pattern: str) -> str | None:
    """Why `pattern` is not an RE2 regular expression Python can also run, or None."""
    if (why := _unsupported_construct(pattern)) is not None:
        return f"invalid regular expression {pattern!r}: {why}"
    try:
        re.compile(to_python(pattern))
    except re.error as e:
        return f"invalid regular expression {pattern!r}: {e}"
    return None


def _unsupported_construct(p: str) -> str | None:
    i, n = 0, len(p)
    in_class = False
    while i < n:
        c = p[i]
        if c == "\\":
            nxt = p[i + 1] if i + 1 < n else ""
            if not in_class and nxt in "123456789" and nxt:
                return f"backreference \\{nxt} {_WHY}"
            if not in_class and nxt == "k" and p[i + 2:i + 3] in ("<", "'", "{"):
                return f"named backreference \\k {_WHY}"
            if nxt == "Z":
                return f"\\Z {_WHY} (use $)"
            i += 2
            continue
        if in_class:
            if c == "]":
                in_class = False
            elif c == "[" and p[i + 1:i + 2] == ":":  # [:alpha:] inside a class
                end = p.find(":]", i + 2)
                if end != -1:
                    i = end + 2
                    continue
            i += 1
            continue
        if c == "[":
            in_class = True
            i += 1
            if p[i:i + 1] == "^":
                i += 1
            if p[i:i + 1] == "]":  # a leading ] is a literal
                i += 1
            continue
        if c == "(" and p[i + 1:i + 2] == "?":
            rest = p[i + 2:]
            if rest.startswith(("=", "!")):
                return f"lookahead (?{rest[0]} {_WHY}"
            if rest.startswith(("<=", "<!")):
                return f"lookbehind (?{rest[:2]} {_WHY}"
            if rest.startswith(">"):
                return f"atomic group (?> {_WHY}"
            if rest.startswith("P="):
                return f"named backreference (?P= {_WHY}"
            if rest.startswith("("):
                return f"conditional group (?( {_WHY}"
            if rest.startswith("#"):
                return f"comment group (?# {_WHY}"
        if c in "*+?}" and p[i + 1:i + 2] == "+":
            return f"possessive quantifier {c}+ {_WHY}"
        i += 1
    for m in _REPEAT_RE.finditer(p):
        for g in m.groups():
            if g and int(g) > _MAX_REPEAT:
                return f"repeat count {g} is larger than RE2's limit of {_MAX_REPEAT}"
    return None


def to_python(pattern: str) -> str:
    """The RE2 pattern in Python's spelling: `\\z` -> `\\Z`, `(?<name>` -> `(?P<name>`."""
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        c = pattern[i]
        if c == "\\" and i + 1 < n:
            pair = pattern[i:i + 2]
            out.append("\\Z" if pair == "\\z" and not in_class else pair)
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            out.append(c)
            i += 1
            if pattern[i:i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i:i + 1] == "]":
                out.append("]")
                i += 1
            continue
        elif pattern.startswith("(?<", i) and pattern[i + 3:i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
            continue
        out.append(c)
        i += 1
    return "".join(out)


@functools.lru_cache(maxsize=1024)
def compile_re2(pattern: str) -> re.Pattern[str]:
    """Compile a pattern already checked by `re2_problem` (cached: policies are re-read)."""
    return re.compile(to_python(pattern))
