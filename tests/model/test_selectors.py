"""Label selectors: structured and string forms agree with Kubernetes' semantics."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hexlane.model.errors import InputError
from hexlane.model.selectors import LabelSelector

keys = st.sampled_from(["app", "tier", "kubernetes.io/os", "color"])
vals = st.sampled_from(["a", "b", "web", "linux"])
labelsets = st.dictionaries(keys, vals, max_size=4)


def test_match_labels_and_expressions() -> None:
    sel = LabelSelector.parse({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "color", "operator": "DoesNotExist"},
        ],
    })
    assert sel.matches({"app": "web", "tier": "a"})
    assert not sel.matches({"app": "web", "tier": "c"})
    assert not sel.matches({"app": "web", "tier": "a", "color": "x"})


def test_empty_and_nil_select_everything() -> None:
    assert LabelSelector.parse(None).matches({"x": "y"})
    assert LabelSelector.parse({}).matches({})


@pytest.mark.parametrize("raw,path", [
    ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]},
     "matchExpressions[0].operator"),
    ({"matchExpressions": [{"key": "a", "operator": "In"}]}, "matchExpressions[0].values"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
     "matchExpressions[0].values"),
    ({"matchLabels": ["a"]}, "matchLabels"),
    ({"matchLabels": {"-bad": "x"}}, "matchLabels.-bad"),
    ([], ""),
])
def test_bad_selectors_name_the_field(raw: object, path: str) -> None:
    with pytest.raises(InputError) as e:
        LabelSelector.parse(raw)
    assert e.value.problems[0].path == path


@given(labelsets, labelsets)
def test_string_and_structured_forms_agree(want: dict[str, str], labels: dict[str, str]) -> None:
    text = ",".join(f"{k}={v}" for k, v in want.items())
    structured = LabelSelector.parse({"matchLabels": want})
    assert LabelSelector.parse_string(text).matches(labels) == structured.matches(labels)


@given(labelsets)
def test_string_operators(labels: dict[str, str]) -> None:
    sel = LabelSelector.parse_string("app in (a,b),tier notin (web),!color,kubernetes.io/os")
    expect = (labels.get("app") in ("a", "b") and labels.get("tier") != "web"
              and "color" not in labels and "kubernetes.io/os" in labels)
    assert sel.matches(labels) == expect


@given(labelsets, labelsets)
def test_to_dict_round_trips(want: dict[str, str], labels: dict[str, str]) -> None:
    sel = LabelSelector.parse({"matchLabels": want})
    assert LabelSelector.parse(sel.to_dict()).matches(labels) == sel.matches(labels)
