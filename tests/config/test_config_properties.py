"""Properties of merging and `--set` that must hold for any values, checked with hypothesis.

Pins down: merging a file with itself changes nothing; the later file wins for every scalar
it sets; a `--set a.b=X` reads back as X (Helm-typed), also through the whole pipeline; an
escaped value reads back as the text; merging is associative; coalescing keeps every default
the user did not touch; Go durations round-trip; and no input at all (any tree of known and
unknown keys with any values, any `--set` text) raises: it only ever gives problems.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from hexlane.config import (
    SPECS,
    coalesce,
    format_duration,
    merge_maps,
    parse_duration,
    parse_set,
    resolve_values,
)
from hexlane.config.strvals import StrvalsError, typed_value

# The suite shares a small machine with other jobs: generation may be slow, never flaky.
# (A decorator, not a profile: a profile would change every other module's tests too.)
relaxed = settings(suppress_health_check=[HealthCheck.too_slow], deadline=None,
                   max_examples=60)

KEYS = st.sampled_from(["a", "b", "c", "x", "y", "Key-1", "k_2", "z9"])
SCALARS = st.one_of(st.booleans(), st.integers(-(2**40), 2**40), st.text("ab:/ ", max_size=4),
                    st.none())
LEAVES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2))
TREES = st.recursive(
    st.dictionaries(KEYS, LEAVES, max_size=3),
    lambda children: st.dictionaries(KEYS, st.one_of(LEAVES, children), max_size=3),
    max_leaves=8,
)


def leaves(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...],
                                                                            Any]]:
    out: list[tuple[tuple[str, ...], Any]] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += leaves(value, (*prefix, key))
        else:
            out.append(((*prefix, key), value))
    return out


def lookup(tree: Any, path: tuple[str, ...]) -> Any:
    for part in path:
        tree = tree[part]
    return tree


@relaxed
@given(TREES)
def test_merging_a_file_with_itself_changes_nothing(tree: dict[str, Any]) -> None:
    assert merge_maps(tree, tree) == tree
    assert merge_maps(merge_maps({}, tree), tree) == merge_maps({}, tree)


@relaxed
@given(TREES, TREES)
def test_later_file_wins_for_every_scalar(a: dict[str, Any], b: dict[str, Any]) -> None:
    merged = merge_maps(a, b)
    for path, value in leaves(b):
        assert lookup(merged, path) == value


@relaxed
@given(TREES, TREES)
def test_keys_only_in_the_earlier_file_survive(a: dict[str, Any], b: dict[str, Any]) -> None:
    merged = merge_maps(a, b)
    for path, value in leaves(a):
        if _untouched_by(b, path):
            assert lookup(merged, path) == value


def _untouched_by(tree: dict[str, Any], path: tuple[str, ...]) -> bool:
    """True when `tree` neither sets `path` nor replaces one of its parents by a non-map."""
    node: Any = tree
    for part in path:
        if part not in node:
            return True
        node = node[part]
        if not isinstance(node, dict):
            return False
    return False


def _has(tree: Any, path: tuple[str, ...]) -> bool:
    for part in path:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _same_shape(a: Any, b: Any) -> bool:
    """No path is a map in one tree and something else in the other."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return True
    return all(isinstance(a[k], dict) == isinstance(b[k], dict) and _same_shape(a[k], b[k])
               for k in a.keys() & b.keys())


@relaxed
@given(TREES, TREES, TREES)
def test_merge_is_associative_where_files_agree_on_shape(
        a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> None:
    assume(_same_shape(a, b) and _same_shape(b, c) and _same_shape(a, c))
    assert merge_maps(merge_maps(a, b), c) == merge_maps(a, merge_maps(b, c))


@relaxed
@given(TREES, TREES, TREES)
def test_the_last_file_wins_every_leaf_it_sets(
        a: dict[str, Any], b: dict[str, Any], c: dict[str, Any]) -> None:
    out = merge_maps(merge_maps(a, b), c)
    for path, value in leaves(c):
        assert lookup(out, path) == value


def test_merge_is_not_associative_when_a_middle_file_replaces_a_map() -> None:
    """As Helm's mergeMaps: `-f a -f b -f c` folds left; a null (or scalar) in b cuts a's
    map off, and c's map then starts afresh."""
    a, b, c = {"x": {"a": False}}, {"x": None}, {"x": {}}
    assert merge_maps(merge_maps(a, b), c) == {"x": {}}
    assert merge_maps(a, merge_maps(b, c)) == {"x": {"a": False}}


@relaxed
@given(TREES, TREES)
def test_coalesce_keeps_untouched_defaults(defaults: dict[str, Any],
                                           user: dict[str, Any]) -> None:
    out = coalesce(defaults, user)
    for path, value in leaves(defaults):
        if not any(_has(user, path[:i]) for i in range(1, len(path) + 1)):
            assert lookup(out, path) == value
    for path, value in leaves(user):
        if value is None:
            assert not _has(out, path)  # a user null deletes the key, default included
        else:
            assert lookup(out, path) == value


SET_VALUES = st.one_of(
    st.booleans(), st.integers(-(2**62), 2**62),
    st.text(alphabet="abcxyz.:/-_ 0123456789", min_size=1, max_size=10).filter(
        lambda s: typed_value(s) == s),
)


def render(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def escape(text: str) -> str:
    return "".join("\\" + ch if ch in "\\,.=[{" else ch for ch in text)


@relaxed
@given(st.lists(KEYS, min_size=1, max_size=4), SET_VALUES)
def test_set_then_read_gives_the_value(path: list[str], value: Any) -> None:
    flag = ".".join(path) + "=" + escape(render(value))
    assert lookup(parse_set(flag), tuple(path)) == value


@relaxed
@given(st.lists(KEYS, min_size=1, max_size=3), SET_VALUES)
def test_set_reads_back_through_the_pipeline(path: list[str], value: Any) -> None:
    full = ("custom", *path)
    values, problems = resolve_values([], [".".join(full) + "=" + escape(render(value))])
    assert [p for p in problems if p.severity == "error"] == []
    assert values.get(".".join(full)) == value


@relaxed
@given(st.text(max_size=20))
def test_escaped_text_reads_back_typed(text: str) -> None:
    assert parse_set("k=" + escape(text)) == {"k": typed_value(text)}


@relaxed
@given(st.integers(min_value=1, max_value=10**7))
def test_durations_round_trip(ms: int) -> None:
    seconds = ms / 1000
    assert abs(parse_duration(format_duration(seconds)) - seconds) < 1e-9
    assert abs(parse_duration(f"{ms}ms") - seconds) < 1e-9


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{"a.b": 1} as {"a": {"b": 1}}; a later shorter path may replace a map, as YAML could."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, last = path.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return out


KNOWN_PATHS = st.sampled_from(sorted(
    {*SPECS, *(p.rsplit(".", 1)[0] for p in SPECS if "." in p), "endpointRoutes", "unknown.k"}))
ANY_VALUES = st.one_of(SCALARS, st.lists(SCALARS, max_size=2),
                       st.dictionaries(KEYS, SCALARS, max_size=2),
                       st.sampled_from(["15s", "0.0.0.0:1", "10.0.0.0/8", "dsr", "native",
                                        "strict", "", "JLfvgnHc2kaSUFaI", "4095", "-1"]))


@relaxed
@given(st.dictionaries(KNOWN_PATHS, ANY_VALUES, max_size=6), st.lists(
    st.text("abc.=,{}[]0-9\\", max_size=8), max_size=2))
def test_any_input_gives_problems_never_an_exception(flat: dict[str, Any],
                                                     flags: list[str]) -> None:
    values, problems = resolve_values([("v.yaml", nest(flat))], flags)
    assert isinstance(values.tree, dict)
    for p in problems:
        assert p.severity in ("error", "warning")
        assert p.file in ("v.yaml", "--set", "")


@relaxed
@given(st.text(alphabet="ab.=,{}[]01-\\ ", max_size=16))
def test_set_parser_fails_only_with_strvals_error(text: str) -> None:
    try:
        tree = parse_set(text)
    except StrvalsError as e:
        assert str(e)  # says what is wrong
    else:
        assert all(isinstance(k, str) and k for k in tree)
