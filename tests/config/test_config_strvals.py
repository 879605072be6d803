"""`--set` parsing follows Helm's pkg/strvals: nesting, lists, indexes, escapes, typing, errors.

Cases mirror helm/helm pkg/strvals/parser_test.go (TestParseSet, TestParseInto, index and
escape cases) so a flag means here what it means to `helm install --set`.
"""

from __future__ import annotations

from typing import Any

import pytest

from hexlane.config.strvals import StrvalsError, parse_set, parse_set_into, typed_value

PARSES: list[tuple[str, dict[str, Any]]] = [
    ("name1=value1", {"name1": "value1"}),
    ("name1=value1,name2=value2", {"name1": "value1", "name2": "value2"}),
    ("name1=value1,name2=value2,", {"name1": "value1", "name2": "value2"}),
    ("name1=,name2=value2", {"name1": "", "name2": "value2"}),
    ("name1=", {"name1": ""}),
    ("key=value=more", {"key": "value=more"}),
    # typing (typedVal)
    ("leading_zeros=00009", {"leading_zeros": "00009"}),
    ("zero_int=0", {"zero_int": 0}),
    ("long_int=1234567890", {"long_int": 1234567890}),
    ("neg=-7", {"neg": -7}),
    ("float=1.5", {"float": "1.5"}),
    ("hex=0x10", {"hex": "0x10"}),
    ("boolean=true", {"boolean": True}),
    ("boolean=FALSE", {"boolean": False}),
    ("is_null=null", {"is_null": None}),
    ("huge=99999999999999999999", {"huge": "99999999999999999999"}),
    # escapes
    ("name1=one\\,two,name2=three\\,four", {"name1": "one,two", "name2": "three,four"}),
    ("name1=one\\=two", {"name1": "one=two"}),
    ("name1\\.name2=value", {"name1.name2": "value"}),
    ("nginx\\.ingress\\.kubernetes\\.io/auth-url=x",
     {"nginx.ingress.kubernetes.io/auth-url": "x"}),
    # nesting
    ("outer.inner=value", {"outer": {"inner": "value"}}),
    ("outer.middle.inner=value", {"outer": {"middle": {"inner": "value"}}}),
    ("outer.inner1=value,outer.inner2=value2",
     {"outer": {"inner1": "value", "inner2": "value2"}}),
    ("name1.name2=", {"name1": {"name2": ""}}),
    # lists
    ("list={one,two}", {"list": ["one", "two"]}),
    ("list={1,2,true}", {"list": [1, 2, True]}),
    ("list={one},other=x", {"list": ["one"], "other": "x"}),
    ("hubble.metrics.enabled={dns:query;ignoreAAAA,drop,tcp}",
     {"hubble": {"metrics": {"enabled": ["dns:query;ignoreAAAA", "drop", "tcp"]}}}),
    # indexes
    ("list[0]=foo", {"list": ["foo"]}),
    ("list[0].foo=bar", {"list": [{"foo": "bar"}]}),
    ("list[0].foo=bar,list[0].hello=world", {"list": [{"foo": "bar", "hello": "world"}]}),
    ("list[1]=foo", {"list": [None, "foo"]}),
    ("list[0]=foo,list[3]=bar", {"list": ["foo", None, None, "bar"]}),
    ("list[0]={a,b}", {"list": [["a", "b"]]}),
    ("nested[0][0]=1", {"nested": [[1]]}),
    ("nested[1][1]=1", {"nested": [None, [None, 1]]}),
    ("a[1].b=c", {"a": [None, {"b": "c"}]}),
    ("list[0].foo=", {"list": [{"foo": ""}]}),
    ("n[1][0].x=", {"n": [None, [{"x": ""}]]}),
]


@pytest.mark.parametrize("text,expected", PARSES, ids=[p[0] for p in PARSES])
def test_parses_like_helm(text: str, expected: dict[str, Any]) -> None:
    assert parse_set(text) == expected


ERRORS = [
    ("name1,name2=", "has no value"),
    ("name1,name2=value2", "has no value"),
    ("name1=value1,,,,name2=value2,", "has no value"),
    ("name1", "has no value"),
    ("name1.=name2", "has no value"),
    ("name1.", "has no value"),
    ("list={one,two", "must terminate with '}'"),
    ("list[-30].hello=world", "negative"),
    ("list[65537]=1", "maximum supported index"),
    ("list[x]=1", "error parsing index"),
    ("list[0", "error parsing index"),
    ("list[0]x=1", "unexpected data at end of array index"),
    ("list[0]", "has no value"),
    (".".join(["a"] * 32) + "=1", "nested level"),
]


@pytest.mark.parametrize("text,fragment", ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_rejects_what_helm_rejects(text: str, fragment: str) -> None:
    with pytest.raises(StrvalsError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        parse_set(text)


def test_parse_into_overwrites_scalars_and_merges_maps() -> None:
    dest: dict[str, Any] = {"outer": {"keep": 1, "change": 2}, "scalar": {"was": "map"}}
    parse_set_into("outer.change=3,outer.new=4,scalar=5", dest)
    assert dest == {"outer": {"keep": 1, "change": 3, "new": 4}, "scalar": 5}


def test_parse_into_a_scalar_as_map_is_an_error() -> None:
    dest: dict[str, Any] = {"a": 1}
    with pytest.raises(StrvalsError, match="'a' is not a map"):
        parse_set_into("a.b=2", dest)


def test_parse_into_a_map_as_list_is_an_error() -> None:
    with pytest.raises(StrvalsError, match="'a' is not a list"):
        parse_set_into("a[0]=2", {"a": {"b": 1}})


def test_index_into_existing_list_extends_it() -> None:
    dest: dict[str, Any] = {"l": ["x"]}
    parse_set_into("l[2]=z", dest)
    assert dest == {"l": ["x", None, "z"]}


@pytest.mark.parametrize("text,value", [
    ("true", True), ("True", True), ("false", False), ("null", None), ("NULL", None),
    ("0", 0), ("10", 10), ("+10", 10), ("-3", -3), ("010", "010"), ("1e3", "1e3"),
    ("", ""), ("strict", "strict"),
])
def test_typed_value(text: str, value: Any) -> None:
    assert typed_value(text) == value
    assert type(typed_value(text)) is type(value)
