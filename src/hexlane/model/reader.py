"""Reading typed fields out of decoded YAML/JSON, collecting every problem with its path.

Parsers of user objects do not stop at the first mistake: a `Reader` wraps one mapping at a
field path and hands out typed values, recording a `Problem` (and returning a harmless
default) for every field of the wrong type or out of range. At the end the parser calls
`Problems.check()`, which raises one `InputError` listing everything.

`FrozenMap` is the immutable, hashable mapping used for labels and annotations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, TypeVar

from hexlane.model.errors import InputError, Problem, join_path
from hexlane.model.selectors import LabelSelector, label_key_problem, label_value_problem

K = TypeVar("K")
V = TypeVar("V")
T = TypeVar("T")


class FrozenMap(Mapping[K, V]):
    """An immutable, hashable mapping (labels, annotations, selectors of Services)."""

    __slots__ = ("_data", "_hash")

    def __init__(self, data: Mapping[K, V] | Iterable[tuple[K, V]] = ()) -> None:
        self._data: dict[K, V] = dict(data)
        self._hash: int | None = None

    def __getitem__(self, key: K) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        if self._hash is None:
            self._hash = hash(frozenset(self._data.items()))
        return self._hash

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self.items()) == dict(other.items())
        return NotImplemented

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"

    def to_dict(self) -> dict[K, V]:
        return dict(self._data)


EMPTY: FrozenMap[str, str] = FrozenMap()


def describe(value: Any) -> str:
    """How a decoded YAML/JSON value is named in messages ("a string", "a list", ...)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if len(value) <= 40 else "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


class Problems:
    """Collects problems while a parser walks an object."""

    def __init__(self) -> None:
        self.items: list[Problem] = []

    def error(self, path: str, message: str) -> None:
        self.items.append(Problem(message=message, path=path))

    def warn(self, path: str, message: str) -> None:
        self.items.append(Problem(message=message, path=path, severity="warning"))

    def absorb(self, err: InputError) -> None:
        self.items.extend(err.problems)

    def try_parse(self, path: str, parse: Callable[[str], T], text: str) -> T | None:
        """`parse(text)` (an address, a CIDR, ...), or None with its ValueError recorded as
        an error at path."""
        try:
            return parse(text)
        except ValueError as e:
            self.error(path, str(e))
            return None

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.items)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.items if p.severity != "error")

    def check(self) -> tuple[Problem, ...]:
        """Raise InputError (errors and warnings) if any error was found; else the warnings."""
        if self.has_errors:
            raise InputError(self.items)
        return self.warnings


def parse_time(value: Any) -> datetime:
    """RFC 3339 time (`2024-01-01T00:00:00Z`, fractions allowed) as an aware datetime."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or "T" not in value.upper():
        raise ValueError(f"expected an RFC 3339 time such as 2024-01-01T00:00:00Z, "
                         f"got {describe(value)}")
    try:
        dt = datetime.fromisoformat(value.replace("z", "Z"))
    except ValueError:
        raise ValueError(f"expected an RFC 3339 time such as 2024-01-01T00:00:00Z, "
                         f"got {value!r}") from None
    if dt.tzinfo is None:
        raise ValueError(f"expected an RFC 3339 time with a zone (Z or +hh:mm), got {value!r}")
    return dt


def format_time(dt: datetime) -> str:
    """Kubernetes `Time`: seconds precision, UTC, `Z`."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def format_micro_time(dt: datetime) -> str:
    """Kubernetes `MicroTime` (Leases): microseconds, UTC, `Z`."""
    return dt.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


_MISSING = object()


class Reader:
    """Typed access to one mapping at `path`, recording problems in `problems`."""

    def __init__(self, raw: Mapping[str, Any], path: str, problems: Problems) -> None:
        self.raw = raw
        self.path = path
        self.problems = problems

    @classmethod
    def root(cls, raw: Any, path: str, problems: Problems,
             what: str = "an object") -> Reader:
        """A reader for `raw`, which must be a mapping (else a problem and an empty reader)."""
        if not isinstance(raw, Mapping):
            problems.error(path, f"expected {what}, got {describe(raw)}")
            return cls({}, path, problems)
        return cls(raw, path, problems)

    def at(self, key: str) -> str:
        return join_path(self.path, key)

    def has(self, key: str) -> bool:
        return self.raw.get(key) is not None

    def get(self, key: str) -> Any:
        return self.raw.get(key)

    def error(self, key: str, message: str) -> None:
        self.problems.error(self.at(key), message)

    def warn(self, key: str, message: str) -> None:
        self.problems.warn(self.at(key), message)

    def try_parse(self, key: str, parse: Callable[[str], T], text: str) -> T | None:
        """`Problems.try_parse` for the field at key (`text` is its value, already read)."""
        return self.problems.try_parse(self.at(key), parse, text)

    def _missing(self, key: str, required: bool, what: str) -> bool:
        """True if the field is absent or null; records a problem if it was required."""
        if self.raw.get(key) is None:
            if required:
                self.error(key, f"required field is missing: expected {what}")
            return True
        return False

    def _value(self, key: str, types: type | tuple[type, ...], what: str, *,
               required: bool = False, bool_hint: str = "") -> Any:
        """The value at key if it is of `types`; None when it is absent or null (a problem if
        required) or of another type (a problem saying what was expected, with `bool_hint`
        added when it is a boolean)."""
        if self._missing(key, required, what):
            return None
        v = self.raw[key]
        if not _is(v, types):
            hint = bool_hint if isinstance(v, bool) else ""
            self.error(key, f"expected {what}, got {describe(v)}{hint}")
            return None
        return v

    # --- scalars -----------------------------------------------------------------------

    def opt_string(self, key: str, *, what: str = "a string",
                   choices: Iterable[str] | None = None) -> str | None:
        v = self._value(key, str, what, bool_hint=" (YAML reads unquoted "
                        "yes/no/true/false/on/off as booleans: quote it)")
        if v is not None and choices is not None:
            allowed = tuple(choices)
            if v not in allowed:
                self.error(key, f"unsupported value {v!r}: expected one of "
                                f"{', '.join(repr(c) for c in allowed)}")
                return None
        return v

    def string(self, key: str, *, required: bool = False, default: str = "",
               what: str = "a string", choices: Iterable[str] | None = None) -> str:
        if self._missing(key, required, what):
            return default
        v = self.opt_string(key, what=what, choices=choices)
        return default if v is None else v

    def opt_integer(self, key: str, *, lo: int | None = None, hi: int | None = None,
                    what: str = "an integer") -> int | None:
        v = self._value(key, int, what)
        if v is None:
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            rng = (f"between {lo} and {hi}" if lo is not None and hi is not None
                   else f"at least {lo}" if lo is not None else f"at most {hi}")
            self.error(key, f"{v} is out of range: expected {what} {rng}")
            return None
        return v

    def integer(self, key: str, *, required: bool = False, default: int = 0,
                lo: int | None = None, hi: int | None = None,
                what: str = "an integer") -> int:
        if self._missing(key, required, what):
            return default
        v = self.opt_integer(key, lo=lo, hi=hi, what=what)
        return default if v is None else v

    def opt_boolean(self, key: str) -> bool | None:
        return self._value(key, bool, "a boolean (true or false)")

    def boolean(self, key: str, default: bool = False) -> bool:
        v = self.opt_boolean(key)
        return default if v is None else v

    def opt_time(self, key: str) -> datetime | None:
        v = self.raw.get(key)
        return None if v is None else self.try_parse(key, parse_time, v)

    # --- containers --------------------------------------------------------------------

    def mapping(self, key: str, *, required: bool = False,
                what: str = "an object") -> Reader | None:
        """The nested object at key; None when absent, null or not an object."""
        v = self._value(key, Mapping, what, required=required)
        return None if v is None else Reader(v, self.at(key), self.problems)

    def section(self, key: str, *, required: bool = False,
                what: str = "an object") -> Reader:
        """The nested object at key, or an empty reader at its path when it is absent, null
        or not an object (the problem recorded), so that callers read defaults from it."""
        found = self.mapping(key, required=required, what=what)
        return Reader({}, self.at(key), self.problems) if found is None else found

    def opt_list(self, key: str, *, required: bool = False, nonempty: bool = False,
                 what: str = "a list") -> list[tuple[Any, str]] | None:
        """Items of the list at key with their paths; None when absent or not a list."""
        v = self._value(key, (list, tuple), what, required=required)
        if v is None:
            return None
        if nonempty and not v:
            self.error(key, f"expected {what} with at least one entry, got an empty list")
        base = self.at(key)
        return [(item, f"{base}[{i}]") for i, item in enumerate(v)]

    def objects(self, key: str, *, required: bool = False, nonempty: bool = False,
                what: str = "an object") -> list[Reader]:
        """Readers for a list of objects; items that are not objects become problems."""
        return [Reader(item, path, self.problems) for item, path in
                self._items(key, Mapping, required=required, nonempty=nonempty, what=what)]

    def strings(self, key: str, *, required: bool = False, nonempty: bool = False,
                what: str = "a string") -> list[tuple[str, str]]:
        """(value, path) of each string in a list of strings."""
        return self._items(key, str, required=required, nonempty=nonempty, what=what)

    def _items(self, key: str, types: type, *, required: bool, nonempty: bool,
               what: str) -> list[tuple[Any, str]]:
        """(item, path) of each item of the list at key that is of `types` (each `what`);
        the other items become problems."""
        out: list[tuple[Any, str]] = []
        for item, path in self.opt_list(key, required=required, nonempty=nonempty,
                                        what=_list_of(what)) or []:
            if _is(item, types):
                out.append((item, path))
            else:
                self.problems.error(path, f"expected {what}, got {describe(item)}")
        return out

    def string_map(self, key: str, *, what: str = "a map of string to string"
                   ) -> FrozenMap[str, str]:
        v = self._value(key, Mapping, what)
        if v is None:
            return EMPTY
        out: dict[str, str] = {}
        for k, val in v.items():
            p = f"{self.at(key)}[{k}]"
            if not isinstance(k, str):
                self.problems.error(p, f"expected a string key, got {describe(k)}")
            elif not isinstance(val, str):
                hint = (" (quote it: YAML reads unquoted true/false/yes/no/numbers as "
                        "non-strings)" if isinstance(val, bool | int | float) else "")
                self.problems.error(p, f"expected a string value, got {describe(val)}{hint}")
            else:
                out[k] = val
        return FrozenMap(out)

    def labels(self, key: str) -> FrozenMap[str, str]:
        """A label map, keys and values checked as Kubernetes does."""
        m = self.string_map(key, what="a map of label key to value")
        good: dict[str, str] = {}
        for k, val in m.items():
            p = f"{self.at(key)}[{k}]"
            why = label_key_problem(k) or label_value_problem(val)
            if why is not None:
                self.problems.error(p, why)
            else:
                good[k] = val
        return FrozenMap(good) if len(good) != len(m) else m

    def selector(self, key: str) -> LabelSelector | None:
        """The label selector at key: None when absent or null (nil) and when bad (the
        problems recorded), `LabelSelector()` for `{}`."""
        raw = self.raw.get(key)
        return None if raw is None else parse_selector(raw, self.at(key), self.problems)

    def unknown_fields(self, known: Iterable[str], *, what: str) -> None:
        """Warn about fields this parser does not know (typos like `block:` for `blocks:`)."""
        allowed = set(known)
        for k in self.raw:
            if k not in allowed:
                self.problems.warn(self.at(str(k)), f"unknown field {k!r} in {what} "
                                   f"(known: {', '.join(sorted(allowed))}); it is ignored")


def parse_selector(raw: Any, path: str, problems: Problems) -> LabelSelector | None:
    """`LabelSelector.parse`, its problems recorded in `problems` (None then) not raised."""
    try:
        return LabelSelector.parse(raw, path)
    except InputError as e:
        problems.absorb(e)
        return None


def _is(value: Any, types: type | tuple[type, ...]) -> bool:
    """isinstance, except that a boolean is only a boolean (YAML's true is not the integer 1)."""
    if isinstance(value, bool):
        return types is bool
    return isinstance(value, types)


def _list_of(what: str) -> str:
    if "(" in what or " or " in what:
        return f"a list, each entry {what}"
    return f"a list of {_plural(what)}"


def _plural(what: str) -> str:
    for article in ("an ", "a "):
        if what.startswith(article):
            what = what[len(article):]
            break
    if what.endswith("ss"):
        return what + "es"
    if what.endswith("s"):
        return what
    return what + "s"
