"""Helm's `--set` syntax (`pkg/strvals`), parsed into a values tree (pure).

Follows helm/helm pkg/strvals/parser.go so that a flag means here what it means to
`helm install --set`:

- `a.b=c` nests maps, `a=1,b=2` sets two keys in one flag, `a={x,y}` is a list,
  `a[0].b=c` / `a[1]=x` set list items (missing items are filled with null);
- a backslash escapes the next character anywhere (`a\\.b=c` sets the key `a.b`,
  `a=x\\,y` the value `x,y`);
- values are typed like Helm's `typedVal`: `true`/`false` (any case) are booleans, `null`
  is null, decimal integers not starting with 0 (and `0` itself) are ints, the rest strings;
  `a=` sets the empty string.

Errors are raised as `StrvalsError` with Helm's wording where Helm has one.
"""

from __future__ import annotations

import re
from typing import Any

# Helm's limits (pkg/strvals): list indexes and nesting depth.
MAX_INDEX = 65536
MAX_NESTED_NAME_LEVEL = 30

_INT = re.compile(r"[+-]?[0-9]+")
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class StrvalsError(ValueError):
    """A `--set` string that Helm would refuse."""


class _EOF(Exception):
    """End of input, used for control flow exactly where Helm uses io.EOF."""


class _NotList(Exception):
    """The value does not start with `{`."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def read(self) -> str | None:
        if self.pos >= len(self.text):
            return None
        ch = self.text[self.pos]
        self.pos += 1
        return ch

    def unread(self) -> None:
        self.pos -= 1

    def until(self, stop: frozenset[str]) -> tuple[str, str | None]:
        """Characters up to a stop character (consumed, returned) or end (None); `\\` escapes."""
        out: list[str] = []
        while True:
            ch = self.read()
            if ch is None:
                return "".join(out), None
            if ch in stop:
                return "".join(out), ch
            if ch == "\\":
                nxt = self.read()
                if nxt is None:
                    return "".join(out), None
                out.append(nxt)
            else:
                out.append(ch)


_KEY_STOP = frozenset("=[,.")
_INDEX_STOP = frozenset("]")
_ITEM_STOP = frozenset("[.=")
_VAL_STOP = frozenset(",")
_LIST_STOP = frozenset(",}")


def typed_value(text: str) -> Any:
    """Helm's typedVal: bools, null, ints (no leading zero), else the string itself."""
    low = text.lower()
    if low == "true":
        return True
    if low == "false":
        return False
    if low == "null":
        return None
    if text == "0":
        return 0
    if text and text[0] != "0" and _INT.fullmatch(text):
        value = int(text)
        if _INT64_MIN <= value <= _INT64_MAX:
            return value
    return text


def parse_set(text: str) -> dict[str, Any]:
    """One `--set` flag as a new values tree."""
    dest: dict[str, Any] = {}
    parse_set_into(text, dest)
    return dest


def parse_set_into(text: str, dest: dict[str, Any]) -> None:
    """Parse one `--set` flag into `dest` (mutated), as Helm's strvals.ParseInto does."""
    parser = _Parser(_Scanner(text))
    while True:
        try:
            parser.key(dest, 0)
        except _EOF:
            return


class _Parser:
    def __init__(self, scanner: _Scanner) -> None:
        self.sc = scanner

    def key(self, data: dict[str, Any], level: int) -> None:
        k, last = self.sc.until(_KEY_STOP)
        if last is None:
            if not k:
                raise _EOF
            raise StrvalsError(f"key {k!r} has no value")
        if last == "[":
            index = self.index()
            existing = data.get(k, [])
            if not isinstance(existing, list):
                raise StrvalsError(f"key {k!r} is not a list (it holds {existing!r})")
            try:
                existing = self.list_item(existing, index, level, k)
            finally:
                # Set even when the input ends inside the item (`l[0].a=`), as Helm does.
                _set(data, k, existing)
            return
        if last == "=":
            try:
                items = self.value_list()
            except _EOF:
                _set(data, k, "")
                raise
            except _NotList:
                raw, _ = self.sc.until(_VAL_STOP)
                _set(data, k, typed_value(raw))
                return
            _set(data, k, items)
            return
        if last == ",":
            _set(data, k, "")
            raise StrvalsError(f"key {k!r} has no value (cannot end with ,)")
        # last == "."
        level += 1
        if level > MAX_NESTED_NAME_LEVEL:
            raise StrvalsError(
                "value name nested level is greater than maximum supported nested level "
                f"of {MAX_NESTED_NAME_LEVEL}")
        inner = data.get(k, {})
        if not isinstance(inner, dict):
            raise StrvalsError(f"key {k!r} is not a map (it holds {inner!r})")
        try:
            self.key(inner, level)
        except _EOF:
            # `a.b=` ends the input inside the nested key: a legitimate end.
            if inner:
                _set(data, k, inner)
                raise
            raise StrvalsError(f"key {k!r} has no value") from None
        if not inner:
            raise StrvalsError(f"key map {k!r} has no value")
        _set(data, k, inner)

    def index(self) -> int:
        raw, last = self.sc.until(_INDEX_STOP)
        if last is None:
            raise StrvalsError(f"error parsing index: missing ']' after {raw!r}")
        if not _INT.fullmatch(raw):
            raise StrvalsError(f"error parsing index: {raw!r} is not a number")
        return int(raw)

    def list_item(self, items: list[Any], index: int, level: int, name: str) -> list[Any]:
        if index < 0:
            raise StrvalsError(f"negative {index} index not allowed")
        k, last = self.sc.until(_ITEM_STOP)
        if k:
            raise StrvalsError(f"unexpected data at end of array index: {k!r}")
        if last is None:
            raise StrvalsError(f"key {name}[{index}] has no value")
        if last == "=":
            try:
                value: Any = self.value_list()
            except _EOF:
                value = ""
            except _NotList:
                raw, _ = self.sc.until(_VAL_STOP)
                value = typed_value(raw)
            return _set_index(items, index, value)
        if last == "[":
            nested_index = self.index()
            current: list[Any] = []
            if len(items) > index and items[index] is not None:
                if not isinstance(items[index], list):
                    raise StrvalsError(f"item {name}[{index}] is not a list")
                current = items[index]
            try:
                current = self.list_item(current, nested_index, level, f"{name}[{index}]")
            finally:
                _set_index(items, index, current)
            return items
        # last == "."
        inner: dict[str, Any] = {}
        if len(items) > index:
            if isinstance(items[index], dict):
                inner = items[index]
            else:
                # Helm: indexes given out of order start the item as an empty map.
                items[index] = inner
        try:
            self.key(inner, level)
        except _EOF:
            if not inner:
                raise StrvalsError(f"key {name}[{index}] has no value") from None
            _set_index(items, index, inner)
            raise
        return _set_index(items, index, inner)

    def value_list(self) -> list[Any]:
        ch = self.sc.read()
        if ch is None:
            raise _EOF
        if ch != "{":
            self.sc.unread()
            raise _NotList
        items: list[Any] = []
        while True:
            raw, last = self.sc.until(_LIST_STOP)
            if last is None:
                raise StrvalsError("list must terminate with '}'")
            items.append(typed_value(raw))
            if last == "}":
                nxt = self.sc.read()
                if nxt is not None and nxt != ",":
                    self.sc.unread()
                return items


def _set(data: dict[str, Any], key: str, value: Any) -> None:
    # Helm skips empty keys (`.a=1` sets nothing at the top level).
    if key:
        data[key] = value


def _set_index(items: list[Any], index: int, value: Any) -> list[Any]:
    if index < 0:
        raise StrvalsError(f"negative {index} index not allowed")
    if index > MAX_INDEX:
        raise StrvalsError(
            f"index of {index} is greater than maximum supported index of {MAX_INDEX}")
    if len(items) <= index:
        items.extend([None] * (index + 1 - len(items)))
    items[index] = value
    return items
