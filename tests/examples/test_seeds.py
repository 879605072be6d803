"""The seeds' manifests and Helm values, as recorded in examples/, are complete and usable.

Pins down: every file under examples/ is valid YAML (all documents, no empty ones); each seed
directory holds exactly the files its inventory lists (values files and manifests); every
manifest outside `other/` is an object of a kind hexlane serves, with apiVersion, kind and
metadata.name, while `other/` holds only what hexlane does not apply; every file opens with
the provenance comment naming its seed and listing its edits; no placeholder is left outside
`other/`; the addresses filled into seed 004's pool fit the lab; and examples/README.md lists
every file. Only files inside the repository are read (the seeds themselves are not).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"

# What each seed directory must hold, relative to it. Values files are listed in the order
# they are layered (base first), as examples/README.md says.
INVENTORY: dict[str, dict[str, list[str]]] = {
    "seed-000": {
        "values": ["values.yaml", "values-monitoring.yaml", "values-hubble.yaml"],
        "manifests": ["cilium-config.yaml", "service-blue.yaml"],
        "other": [
            "other/argocd-resource-exclusions.yaml",
            "other/argocd-ignore-differences.yaml",
        ],
    },
    "seed-001": {
        "values": ["values.yaml", "values-upgrade.yaml"],
        "manifests": [
            "cilium-l2-announcement-policy.yaml",
            "cilium-load-balancer-ip-pool.yaml",
        ],
        "other": [],
    },
    "seed-002": {
        "values": ["values.yaml"],
        "manifests": ["cilium-l2.yaml"],
        "other": [
            "other/httproute-hubble.yaml",
            "other/values-native-routing-snippet.yaml",
        ],
    },
    "seed-004": {
        "values": ["values.yaml"],
        "manifests": [
            "ip-pool.yaml",
            "announce.yaml",
            "in-text/lb-ipam-pool.yaml",
            "in-text/l2-announcement-policy.yaml",
        ],
        "other": [
            "other/kustomization.yaml",
            "other/service-metallb-before.yaml",
            "other/service-cilium-after.yaml",
        ],
    },
}

# (apiVersion, kind) of the objects hexlane reads (DESIGN "What is accepted as input").
SERVED_KINDS = {
    ("cilium.io/v2alpha1", "CiliumLoadBalancerIPPool"),
    ("cilium.io/v2", "CiliumLoadBalancerIPPool"),
    ("cilium.io/v2alpha1", "CiliumL2AnnouncementPolicy"),
    ("cilium.io/v2", "CiliumL2AnnouncementPolicy"),
    ("cilium.io/v2", "CiliumNetworkPolicy"),
    ("v1", "Service"),
    ("v1", "Node"),
    ("v1", "Pod"),
    ("discovery.k8s.io/v1", "EndpointSlice"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("coordination.k8s.io/v1", "Lease"),
}

# Placeholders the seeds used that must be filled outside other/: seed 004's `<-- ... -->`
# and seed 001's `${NAME}`. `${1}` (a digit) is Prometheus relabeling's capture-group
# reference in seed 000's values, not a placeholder.
PLACEHOLDER = re.compile(r"<--|\$\{(?!\d+\})")

# The edits the headers must declare, each with the text that must now be in the file body.
FILLED = {
    "seed-001/values.yaml": [("${API_SERVER_IP}", "10.0.0.10"), ("${API_SERVER_PORT}", "6443")],
    "seed-004/values.yaml": [("<-- HOST IP -->", "10.0.0.10")],
    "seed-004/ip-pool.yaml": [
        ("<-- VALID CIDR RANGE FOR YOUR NETWORK -->", "10.0.0.224/28"),
        ("<-- START IP -->", "10.0.0.240"),
        ("<-- END IP -->", "10.0.0.250"),
    ],
}

HEADER_FIRST_LINE = re.compile(r"^# hexlane example from seed (\d{3}): \S")


def all_files() -> list[Path]:
    return sorted(p for p in EXAMPLES.rglob("*") if p.is_file() and p.name != "README.md")


def rel(path: Path) -> str:
    return path.relative_to(EXAMPLES).as_posix()


def listed(kind: str) -> list[str]:
    return [f"{seed}/{name}" for seed, parts in INVENTORY.items() for name in parts[kind]]


def split_header(path: Path) -> tuple[list[str], str]:
    """The leading comment block (the provenance header) and the rest of the file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    n = 0
    while n < len(lines) and lines[n].startswith("#"):
        n += 1
    return lines[:n], "\n".join(lines[n:]) + "\n"


def documents(path: Path) -> list[Any]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def strings(value: Any) -> Iterator[str]:
    """Every key and scalar string in a parsed YAML value."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from strings(k)
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def test_examples_live_inside_the_repository() -> None:
    assert EXAMPLES.is_dir()
    files = all_files()
    assert files, "examples/ holds no files"
    for p in files:
        assert p.resolve().is_relative_to(REPO.resolve()), f"{p} points outside the repository"


def test_inventory_matches_the_tree() -> None:
    on_disk = {rel(p) for p in all_files()}
    expected = set(listed("values") + listed("manifests") + listed("other"))
    assert on_disk == expected, (
        f"missing: {sorted(expected - on_disk)}, not in the inventory: {sorted(on_disk - expected)}"
    )
    seeds = {p.name for p in EXAMPLES.iterdir() if p.is_dir()}
    assert seeds == set(INVENTORY)


@pytest.mark.parametrize("name", sorted(rel(p) for p in all_files()))
def test_every_file_is_yaml_with_mapping_documents(name: str) -> None:
    path = EXAMPLES / name
    assert path.suffix == ".yaml"
    docs = documents(path)
    assert docs, f"{name}: no YAML document"
    for i, doc in enumerate(docs):
        assert isinstance(doc, dict) and doc, f"{name}: document {i} is {doc!r}, not a mapping"


@pytest.mark.parametrize("name", sorted(rel(p) for p in all_files()))
def test_every_file_opens_with_its_provenance(name: str) -> None:
    header, _ = split_header(EXAMPLES / name)
    assert header, f"{name}: no provenance comment"
    m = HEADER_FIRST_LINE.match(header[0])
    assert m, f"{name}: first line {header[0]!r} does not name the seed"
    assert f"seed-{m.group(1)}" == name.split("/")[0], f"{name}: header names seed {m.group(1)}"
    assert any(line.startswith("# Source: ") for line in header), f"{name}: no Source line"
    edits = [i for i, line in enumerate(header) if line.startswith("# Edits:")]
    assert len(edits) == 1, f"{name}: needs exactly one '# Edits:' line"
    declared = "\n".join(header[edits[0]:])
    assert declared.strip() != "# Edits:", f"{name}: empty edit list"
    # Seeds 001 and 004 lost their indentation or gave flags: none of their files is verbatim.
    if name.startswith(("seed-001/", "seed-004/")):
        assert "re-indented" in declared or "written out from the --set flags" in declared
    else:
        assert declared.startswith("# Edits: none"), f"{name}: seed kept its YAML verbatim"


@pytest.mark.parametrize("name", sorted(FILLED))
def test_filled_placeholders_are_declared_and_applied(name: str) -> None:
    header, body = split_header(EXAMPLES / name)
    declared = "\n".join(header)
    for placeholder, value in FILLED[name]:
        assert placeholder in declared, f"{name}: header does not name {placeholder}"
        assert f"with {value}" in declared, f"{name}: header does not give {value}"
        assert value in body, f"{name}: {value} not in the file"
        assert placeholder not in body


@pytest.mark.parametrize("seed", sorted(INVENTORY))
def test_each_seed_has_values_and_its_manifests(seed: str) -> None:
    parts = INVENTORY[seed]
    assert parts["values"][0] == "values.yaml"
    kinds = set()
    for name in parts["manifests"]:
        kinds |= {doc["kind"] for doc in documents(EXAMPLES / seed / name)}
    # Every seed configures LB-IPAM and L2 announcements: a pool and a policy.
    assert {"CiliumLoadBalancerIPPool", "CiliumL2AnnouncementPolicy"} <= kinds


@pytest.mark.parametrize("name", listed("values"))
def test_values_files_are_one_mapping_of_helm_keys(name: str) -> None:
    docs = documents(EXAMPLES / name)
    assert len(docs) == 1
    assert all(isinstance(k, str) for k in docs[0])
    assert "kind" not in docs[0] and "apiVersion" not in docs[0]


@pytest.mark.parametrize("name", listed("manifests"))
def test_manifests_are_objects_hexlane_serves(name: str) -> None:
    for i, doc in enumerate(documents(EXAMPLES / name)):
        where = f"{name} document {i}"
        assert (doc.get("apiVersion"), doc.get("kind")) in SERVED_KINDS, where
        meta = doc.get("metadata")
        assert isinstance(meta, dict), where
        assert isinstance(meta.get("name"), str) and meta["name"], where
        assert isinstance(doc.get("spec"), dict), where


@pytest.mark.parametrize("name", listed("other"))
def test_other_holds_only_what_is_not_applied(name: str) -> None:
    for i, doc in enumerate(documents(EXAMPLES / name)):
        served = (doc.get("apiVersion"), doc.get("kind")) in SERVED_KINDS
        named = isinstance(doc.get("metadata"), dict) and bool(doc["metadata"].get("name"))
        # Either not a served kind (HTTPRoute, Kustomization, Argo CD settings, values) or a
        # fragment of one that cannot be applied as written (the seed 004 Service fragments).
        assert not (served and named), f"{name} document {i} is applyable: move it out of other/"


@pytest.mark.parametrize("name", listed("values") + listed("manifests"))
def test_no_placeholder_left_outside_other(name: str) -> None:
    path = EXAMPLES / name
    _, body = split_header(path)
    assert not PLACEHOLDER.search(body), f"{name}: placeholder left: {PLACEHOLDER.search(body)}"
    for s in (s for doc in documents(path) for s in strings(doc)):
        assert not PLACEHOLDER.search(s), f"{name}: placeholder left in {s!r}"


def test_seed_004_pool_fits_the_lab() -> None:
    """The filled blocks are in the lab LAN, miss its hosts, and overlap nothing."""
    lan = ipaddress.ip_network("10.0.0.0/24")
    hosts = [ipaddress.ip_address(f"10.0.0.{h}") for h in (2, 10, 11, 12, 13)]
    (pool,) = documents(EXAMPLES / "seed-004/ip-pool.yaml")
    ranges = []
    for block in pool["spec"]["blocks"]:
        if "cidr" in block:
            net = ipaddress.ip_network(block["cidr"])
            ranges.append((net[0], net[-1]))
        else:
            ranges.append((ipaddress.ip_address(block["start"]),
                           ipaddress.ip_address(block["stop"])))
    (seed0_pool, _) = documents(EXAMPLES / "seed-000/cilium-config.yaml")
    (b0,) = seed0_pool["spec"]["blocks"]
    seed0 = (ipaddress.ip_address(b0["start"]), ipaddress.ip_address(b0["stop"]))
    assert len(ranges) == 2
    for lo, hi in ranges:
        assert lo <= hi and lo in lan and hi in lan
        assert not any(lo <= h <= hi for h in hosts)
        assert hi < seed0[0] or lo > seed0[1], "overlaps seed 000's pool"
    (a_lo, a_hi), (b_lo, b_hi) = ranges
    assert a_hi < b_lo or b_hi < a_lo, "the two blocks overlap"


def test_seed_001_values_are_its_set_flags() -> None:
    """Helm's --set typing: booleans and integers are typed, `strict` stays a string."""
    (base,) = documents(EXAMPLES / "seed-001/values.yaml")
    assert base == {
        "operator": {"replicas": 1},
        "l2announcements": {"enabled": True},
        "externalIPs": {"enabled": True},
        "kubeProxyReplacement": "strict",
        "k8sServiceHost": "10.0.0.10",
        "k8sServicePort": 6443,
        "k8sClientRateLimit": {"qps": 50, "burst": 100},
    }
    (upgrade,) = documents(EXAMPLES / "seed-001/values-upgrade.yaml")
    assert upgrade == {"hubble": {"relay": {"enabled": True}, "ui": {"enabled": True}}}


def test_readme_lists_every_file_and_layering() -> None:
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for p in all_files():
        assert f"`{rel(p)}`" in readme, f"README does not list {rel(p)}"
    for seed, parts in INVENTORY.items():
        flags = " ".join(f"--values examples/{seed}/{v}" for v in parts["values"])
        assert f"hexlane config show {flags}" in readme, f"README lacks the {seed} layering"
