"""Kubernetes label selectors: the structured form (matchLabels/matchExpressions) and the
string form used in `?labelSelector=` (``a=b,c!=d,e in (x,y),!f``), evaluated the same way.

A nil selector and an empty selector differ in Kubernetes: for LB-IPAM and L2 policies a
missing `serviceSelector` selects everything, and so does `{}`. Callers decide what nil means;
`LabelSelector()` (no requirements) matches every label set.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hexlane.model.errors import InputError, Problem, join_path

OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
# String-form operators map onto the same four (plus Equals/NotEquals, which are In/NotIn of one).
_NAME = r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_KEY_RE = re.compile(rf"^({_DNS_LABEL}(\.{_DNS_LABEL})*/)?{_NAME}$")
_VALUE_RE = re.compile(rf"^({_NAME})?$")


def label_key_problem(key: str) -> str | None:
    """Why `key` is not a valid label key, or None."""
    if not isinstance(key, str) or not _KEY_RE.match(key):
        return (f"invalid label key {key!r}: expected an optional DNS-subdomain prefix and "
                "'/', then a name of at most 63 characters [A-Za-z0-9-_.] starting and ending "
                "alphanumeric")
    prefix, _, _ = key.rpartition("/")
    if len(prefix) > 253:
        return f"invalid label key {key!r}: prefix longer than 253 characters"
    return None


def label_value_problem(value: str) -> str | None:
    """Why `value` is not a valid label value, or None."""
    if not isinstance(value, str) or not _VALUE_RE.match(value):
        return (f"invalid label value {value!r}: expected at most 63 characters "
                "[A-Za-z0-9-_.] starting and ending alphanumeric")
    return None


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str  # one of OPERATORS
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class LabelSelector:
    """A conjunction of requirements; `matchLabels` entries become `In` of one value."""

    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @property
    def empty(self) -> bool:
        return not self.requirements

    @classmethod
    def parse(cls, raw: Any, path: str = "") -> LabelSelector:
        """Parse the structured form, raising InputError naming every bad field."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise InputError.at(path, f"expected a label selector object, got {_kind(raw)}")
        problems: list[Problem] = []
        reqs: list[Requirement] = []
        for extra in sorted(set(raw) - {"matchLabels", "matchExpressions"}):
            problems.append(Problem(f"unknown field {extra!r} in a label selector "
                                    "(expected matchLabels and/or matchExpressions)",
                                    join_path(path, str(extra))))
        ml = raw.get("matchLabels")
        ml_path = join_path(path, "matchLabels")
        if ml is not None and not isinstance(ml, Mapping):
            problems.append(Problem(f"expected a map of label key to value, got {_kind(ml)}",
                                    ml_path))
        elif ml:
            for k, v in ml.items():
                kp = join_path(ml_path, str(k))
                if (why := label_key_problem(k)) is not None:
                    problems.append(Problem(why, kp))
                elif not isinstance(v, str):
                    problems.append(Problem(f"expected a string label value, got {_kind(v)}", kp))
                elif (why := label_value_problem(v)) is not None:
                    problems.append(Problem(why, kp))
                else:
                    reqs.append(Requirement(k, "In", frozenset({v})))
        me = raw.get("matchExpressions")
        me_path = join_path(path, "matchExpressions")
        if me is not None and not isinstance(me, list):
            problems.append(Problem(f"expected a list of expressions, got {_kind(me)}", me_path))
        elif me:
            for i, expr in enumerate(me):
                try:
                    reqs.append(_parse_expression(expr, f"{me_path}[{i}]"))
                except InputError as e:
                    problems.extend(e.problems)
        if problems:
            raise InputError(problems)
        return cls(tuple(reqs))

    @classmethod
    def parse_string(cls, text: str) -> LabelSelector:
        """Parse the string form of `?labelSelector=` (=, ==, !=, in, notin, exists, !exists)."""
        reqs: list[Requirement] = []
        for term in _split_terms(text):
            reqs.append(_parse_term(term))
        return cls(tuple(reqs))

    def to_dict(self) -> dict[str, Any]:
        """The structured form, matchExpressions only (round-trips through `parse`)."""
        if not self.requirements:
            return {}
        return {"matchExpressions": [
            {"key": r.key, "operator": r.operator, **({"values": sorted(r.values)}
                                                      if r.operator in ("In", "NotIn") else {})}
            for r in self.requirements]}


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number"}.get(type(v), type(v).__name__)


def _parse_expression(expr: Any, path: str) -> Requirement:
    if not isinstance(expr, Mapping):
        raise InputError.at(path, f"expected an object with key, operator and values, "
                                  f"got {_kind(expr)}")
    problems: list[Problem] = []
    key = expr.get("key")
    op = expr.get("operator")
    values = expr.get("values")
    if not isinstance(key, str):
        problems.append(Problem("expected a label key (string)", join_path(path, "key")))
    elif (why := label_key_problem(key)) is not None:
        problems.append(Problem(why, join_path(path, "key")))
    if op not in OPERATORS:
        problems.append(Problem(f"unknown selector operator {op!r}: expected one of "
                                f"{', '.join(OPERATORS)}", join_path(path, "operator")))
    vpath = join_path(path, "values")
    if values is not None and not isinstance(values, list):
        problems.append(Problem(f"expected a list of strings, got {_kind(values)}", vpath))
        values = None
    vals = list(values or [])
    for i, v in enumerate(vals):
        if not isinstance(v, str):
            problems.append(Problem(f"expected a string, got {_kind(v)}", f"{vpath}[{i}]"))
    if op in ("In", "NotIn") and not vals:
        problems.append(Problem(f"operator {op} needs a non-empty values list", vpath))
    if op in ("Exists", "DoesNotExist") and vals:
        problems.append(Problem(f"operator {op} takes no values", vpath))
    if problems:
        raise InputError(problems)
    assert isinstance(key, str) and isinstance(op, str)
    return Requirement(key, op, frozenset(str(v) for v in vals))


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside a parenthesised value set."""
    terms: list[str] = []
    cur: list[str] = []
    depth = 0
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            terms.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if cur or terms:
        terms.append("".join(cur).strip())
    return [t for t in terms if t]


_SET_RE = re.compile(r"^\s*(?P<key>\S+)\s+(?P<op>in|notin)\s*\((?P<vals>[^)]*)\)\s*$")
_CMP_RE = re.compile(r"^\s*(?P<key>[^=!\s]+)\s*(?P<op>==|!=|=)\s*(?P<val>[^=!\s]*)\s*$")


def _parse_term(term: str) -> Requirement:
    if m := _SET_RE.match(term):
        key, vals = m["key"], [v.strip() for v in m["vals"].split(",") if v.strip()]
        _check_key(key, term)
        for v in vals:
            _check_value(v, term)
        return Requirement(key, "In" if m["op"] == "in" else "NotIn", frozenset(vals))
    if m := _CMP_RE.match(term):
        key, val = m["key"], m["val"]
        _check_key(key, term)
        _check_value(val, term)
        return Requirement(key, "NotIn" if m["op"] == "!=" else "In", frozenset({val}))
    stripped = term.strip()
    if stripped.startswith("!"):
        key = stripped[1:].strip()
        _check_key(key, term)
        return Requirement(key, "DoesNotExist")
    _check_key(stripped, term)
    return Requirement(stripped, "Exists")


def _check_key(key: str, term: str) -> None:
    if (why := label_key_problem(key)) is not None:
        raise InputError.at("labelSelector", f"unable to parse requirement {term!r}: {why}")


def _check_value(val: str, term: str) -> None:
    if (why := label_value_problem(val)) is not None:
        raise InputError.at("labelSelector", f"unable to parse requirement {term!r}: {why}")
