"""The metric names a PromQL expression reads, and the queries of a Grafana dashboard (pure).

`metric_names(expr)` is a small tokenizer, not a parser: every bare identifier is a metric
name unless it is a function or aggregation (followed by `(`, or by `by`/`without`), a
keyword or binary operator (`and`, `or`, `unless`, `bool`, `offset`, `atan2`, ...), or a
label name (in a `{...}` matcher, or in the list after `by`, `without`, `on`, `ignoring`,
`group_left`, `group_right`). Skipped as well: strings, numbers and durations, what is in
`[...]` (ranges, subqueries, `$__rate_interval`), and Grafana's variables (`$x`, `${x}`,
`${x:fmt}`, `[[x]]`). A selector's `__name__="x"` names `x`. Grafana's
`label_values(metric, label)` (a templating query) names its first argument only.

`dashboard_queries(dashboard)` collects every panel target's `expr` (rows' nested panels too)
and every query variable's query.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

AGGREGATIONS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values",
    "bottomk", "topk", "quantile", "limitk", "limit_ratio"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
_IDENT_START = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_:"
_IDENT = _IDENT_START + "0123456789"
_QUOTES = "\"'`"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0

    def peek(self) -> str:
        """The next character that is not white space ("" at the end), without taking it."""
        j = self.i
        while j < len(self.text) and self.text[j].isspace():
            j += 1
        return self.text[j] if j < len(self.text) else ""

    def skip_space(self) -> None:
        while self.i < len(self.text) and self.text[self.i].isspace():
            self.i += 1

    def take_while(self, allowed: str) -> str:
        start = self.i
        while self.i < len(self.text) and self.text[self.i] in allowed:
            self.i += 1
        return self.text[start:self.i]

    def string(self) -> str:
        """A quoted string at the cursor (escapes honoured, except in backquotes); its text."""
        quote = self.text[self.i]
        self.i += 1
        out = []
        while self.i < len(self.text) and self.text[self.i] != quote:
            if self.text[self.i] == "\\" and quote != "`":
                self.i += 1
            out.append(self.text[self.i : self.i + 1])
            self.i += 1
        self.i += 1  # the closing quote
        return "".join(out)

    def skip_balanced(self, open_: str, close: str) -> None:
        """From an opening bracket at the cursor past its closing one (strings skipped)."""
        depth = 0
        while self.i < len(self.text):
            c = self.text[self.i]
            if c in _QUOTES:
                self.string()
                continue
            self.i += 1
            if c == open_:
                depth += 1
            elif c == close:
                depth -= 1
                if depth == 0:
                    return

    def variable(self) -> None:
        """A Grafana variable at the cursor (`$x`, `${x}`, `${x:fmt}`)."""
        self.i += 1
        if self.text[self.i : self.i + 1] == "{":
            self.skip_balanced("{", "}")
        else:
            self.take_while(_IDENT)

    def matchers(self) -> Iterator[str]:
        """A `{...}` label matcher at the cursor: the names its `__name__` matchers give."""
        self.i += 1
        label = ""
        while self.i < len(self.text):
            self.skip_space()
            c = self.text[self.i : self.i + 1]
            if c == "}":
                self.i += 1
                return
            if c in _QUOTES and c:
                value = self.string()
                if label == "__name__":
                    yield value
                label = ""
            elif c == "$":
                self.variable()
            elif c and c in _IDENT_START:
                label = self.take_while(_IDENT)
            else:
                self.i += 1  # = != =~ !~ ,


def metric_names(expr: str) -> list[str]:
    """The metric names `expr` reads, in order, each once (see the module docstring)."""
    s = _Scanner(expr)
    names: list[str] = []

    def add(name: str) -> None:
        if name not in names:
            names.append(name)

    while s.i < len(s.text):
        c = s.text[s.i]
        if c.isspace():
            s.i += 1
        elif c in _QUOTES:
            s.string()
        elif c == "{":
            for name in s.matchers():
                add(name)
        elif c == "[":
            if s.text[s.i : s.i + 2] == "[[":  # Grafana's old [[variable]]
                end = s.text.find("]]", s.i)
                s.i = end + 2 if end >= 0 else len(s.text)
            else:
                s.skip_balanced("[", "]")
        elif c == "$":
            s.variable()
        elif c.isdigit() or (c == "." and s.text[s.i + 1 : s.i + 2].isdigit()):
            s.take_while(_IDENT + ".")  # 1.5, 1e3, 0x1f, 5m (an offset's duration)
        elif c in _IDENT_START:
            word = s.take_while(_IDENT)
            following = s.peek()
            if word in LABEL_LISTS:
                if following == "(":
                    s.skip_space()
                    s.skip_balanced("(", ")")
            elif word == "label_values" and following == "(":
                s.skip_space()
                opened = s.i
                s.skip_balanced("(", ")")
                for name in metric_names(_first_argument(s.text[opened + 1 : s.i - 1])):
                    add(name)
            elif following != "(" and word not in AGGREGATIONS and word not in KEYWORDS:
                add(word)  # not a call, an aggregation (`sum by (x) (...)`) or a keyword
        else:
            s.i += 1  # operators, parentheses, commas, @
    return names


def _first_argument(args: str) -> str:
    """The text of a call's first argument (up to its first comma outside brackets)."""
    depth = 0
    for i, c in enumerate(args):
        if c in "({[":
            depth += 1
        elif c in ")}]":
            depth -= 1
        elif c == "," and depth == 0:
            return args[:i]
    return args


def dashboard_queries(dashboard: Mapping[str, Any]) -> list[str]:
    """Every PromQL query of a Grafana dashboard: its panels' targets (rows' panels too) and
    its query variables."""
    out: list[str] = []

    def panels(items: list[Any]) -> None:
        for panel in items:
            out.extend(t["expr"] for t in panel.get("targets", []) if t.get("expr"))
            panels(panel.get("panels", []))

    panels(dashboard.get("panels", []))
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var.get("query")
            out.append(query.get("query", "") if isinstance(query, Mapping) else str(query))
    return out
