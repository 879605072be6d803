"""Manifest files: multi-document YAML to Manifest(file, index, obj) with document and field
lines; syntax errors, non-mapping documents and duplicate keys become problems naming file and
line; timestamps stay strings; values files must be mappings."""

from __future__ import annotations

from pathlib import Path

import pytest

from hexlane.model import (
    InputError,
    expand_paths,
    load_manifests,
    load_mapping_file,
    parse_manifests,
    parse_mapping,
    scan_manifests,
)

TWO_DOCS = """\
---
apiVersion: cilium.io/v2alpha1
kind: CiliumLoadBalancerIPPool
metadata:
  name: "first-pool"
  namespace: kube-system
  creationTimestamp: 2024-01-01T00:00:00Z
spec:
  blocks:
    - start: "10.0.0.100"
      stop: "10.0.0.200"

---
---
# only a comment
---
apiVersion: cilium.io/v2alpha1
kind: CiliumL2AnnouncementPolicy
metadata:
  name: default-l2-announcement-policy
spec:
  externalIPs: yes
"""


def test_documents_indexes_and_lines() -> None:
    ms = parse_manifests(TWO_DOCS, "cilium-config.yaml")
    assert [(m.file, m.index, m.line) for m in ms] == [("cilium-config.yaml", 0, 2),
                                                       ("cilium-config.yaml", 3, 17)]
    pool, policy = ms
    assert pool.obj["metadata"]["creationTimestamp"] == "2024-01-01T00:00:00Z"  # a string
    assert policy.obj["spec"]["externalIPs"] is True  # YAML 1.1, as kubectl reads it
    assert pool.line_of("spec.blocks[0].stop") == 11
    assert pool.line_of("spec.blocks[0].nonexistent") == 10  # nearest parent
    assert pool.line_of("metadata.labels[app]") == 4
    assert pool.where("spec.blocks") == "cilium-config.yaml:9"


def test_syntax_error_keeps_earlier_documents() -> None:
    text = TWO_DOCS + "---\nkind: Service\nmetadata:\n  name: x\n   bad: indent\n"
    ms, problems = scan_manifests(text, "f.yaml")
    assert len(ms) == 2
    (p,) = problems
    assert p.file == "f.yaml:27" and "line 27, column" in p.message


@pytest.mark.parametrize(("text", "fragment"), [
    ("- a\n- b\n", "document 1 is a list: expected a Kubernetes object"),
    ("just a string\n", "document 1 is a string"),
    ("a: 1\na: 2\n", "key 'a' appears twice"),
    ("a: [1, 2\n", "line 2"),
    ("a:\n\t- b\n", "line 2, column 1"),
])
def test_problems(text: str, fragment: str) -> None:
    with pytest.raises(InputError) as e:
        parse_manifests(text, "bad.yaml")
    (p,) = e.value.problems
    assert p.file.startswith("bad.yaml") and fragment in p.message


def test_mapping_files() -> None:
    assert parse_mapping("a: 1\n") == {"a": 1}
    assert parse_mapping("# nothing\n") == {}
    with pytest.raises(InputError) as e:
        parse_mapping("- kubeProxyReplacement: true\n", "values.yaml", what="Helm values")
    assert "a list: expected Helm values" in e.value.problems[0].message
    assert e.value.problems[0].file == "values.yaml"


def test_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.yml").write_text("kind: B\n")
    (tmp_path / "a.yaml").write_text("kind: A\n---\nkind: A2\n")
    (tmp_path / "c.json").write_text("{}")
    assert [Path(p).name for p in expand_paths([str(tmp_path)])] == ["a.yaml"]
    assert [Path(p).name for p in expand_paths([str(tmp_path)], recursive=True)] == [
        "a.yaml", "b.yml"]
    ms = load_manifests([str(tmp_path)], recursive=True)
    assert [m.obj["kind"] for m in ms] == ["A", "A2", "B"]
    assert load_mapping_file(str(tmp_path / "a.yaml").replace("a.yaml", "sub/b.yml")) == {
        "kind": "B"}


def test_unreadable_and_bad_files_are_named(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("- 1\n")
    with pytest.raises(InputError) as e:
        load_manifests([str(tmp_path / "missing.yaml"), str(tmp_path / "bad.yaml")])
    files = [p.file for p in e.value.problems]
    assert files[0] == str(tmp_path / "missing.yaml") and "cannot read" in \
        e.value.problems[0].message
    assert files[1] == f"{tmp_path / 'bad.yaml'}:1"
