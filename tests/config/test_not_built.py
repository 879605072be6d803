"""Values that turn on a Cilium feature hexlane does not build yet are accepted with one warning
naming the key (and its file), saying hexlane does not build it and what it does instead;
the same keys at their defaults, or at values that keep the feature off, give none.

Pins down, for every key of `NOT_BUILT` (and the acting keys with a not-built value): the
warning from a values file and from `--set` ("true" read as true, as Cilium reads it); no
warning when off; everything below a feature's map accepted silently (`encryption.type`);
`hexlane validate --values` and `hexlane config show` show it and count it; every seed's
values give exactly the warnings expected of them (seed 002's `localRedirectPolicy: true`
says hexlane does not act on it); docs/configuration.md's table lists exactly these keys.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from hexlane.cli import main as cli_main
from hexlane.config import SPECS, load_values, resolve_values
from hexlane.config.schema import KeySpec
from hexlane.model.errors import Problem

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
NOT_BUILT = [s for s in SPECS.values() if s.not_built]
# What each one is turned off by (its Helm default, or a value that keeps it off).
OFF: dict[str, Any] = {"loadBalancer.acceleration": "disabled",
                       "hubble.tls.auto.method": "helm",
                       "loadBalancer.l7.backend": "disabled"}


def key_of(spec: KeySpec) -> str:
    return f"{spec.path}.{spec.switch}" if spec.switch else spec.path


def tree(path: str, value: Any) -> dict[str, Any]:
    for part in reversed(path.split(".")):
        value = {part: value}
    return value


def warnings(problems: list[Problem]) -> list[Problem]:
    assert [p for p in problems if p.severity == "error"] == [], problems
    return [p for p in problems if p.severity == "warning"]


def test_the_expected_keys_are_covered() -> None:
    assert {key_of(s) for s in NOT_BUILT} >= {
        "localRedirectPolicy", "encryption.enabled", "ipv6.enabled",
        "bgpControlPlane.enabled", "ingressController.enabled", "gatewayAPI.enabled",
        "clustermesh.useAPIServer", "envoy.enabled", "hostFirewall.enabled",
        "bandwidthManager.enabled", "loadBalancer.acceleration", "hubble.tls.auto.method",
        "socketLB.enabled", "hubble.relay.prometheus.enabled", "hubble.ui.ingress.enabled"}


@pytest.mark.parametrize("spec", NOT_BUILT, ids=key_of)
def test_turned_on_is_one_warning_naming_the_key(spec: KeySpec) -> None:
    key = key_of(spec)
    for on in spec.on:
        _, problems = resolve_values([("v.yaml", tree(key, on))], [])
        [w] = warnings(problems)
        assert (w.path, w.file) == (key, "v.yaml")
        assert w.message.startswith(f"{str(on).lower() if on is True else on}: hexlane does "
                                    f"not build {spec.not_built} yet; {spec.instead}")
        # The same from --set, where everything is a string at first.
        text = "true" if on is True else str(on)
        _, problems = resolve_values([], [f"{key}={text}"])
        [w] = warnings(problems)
        assert (w.path, w.file) == (key, "--set")


@pytest.mark.parametrize("spec", NOT_BUILT, ids=key_of)
def test_off_is_silent(spec: KeySpec) -> None:
    key = key_of(spec)
    off = OFF.get(key, False)
    assert warnings(resolve_values([("v.yaml", tree(key, off))], [])[1]) == []
    assert warnings(resolve_values([], [f"{key}={str(off).lower()}"])[1]) == []


def test_the_rest_of_a_feature_is_accepted_silently() -> None:
    _, problems = resolve_values([("v.yaml", {
        "encryption": {"enabled": False, "type": "wireguard", "nodeEncryption": True},
        "bgpControlPlane": {"enabled": False, "secretsNamespace": {"name": "x"}},
        "clustermesh": {"useAPIServer": False, "config": {"enabled": True}},
        "hubble": {"ui": {"ingress": {"enabled": False, "hosts": ["h"]}}}})], [])
    assert warnings(problems) == []
    _, problems = resolve_values([("v.yaml", {"encryption": {"enabled": True,
                                                            "type": "wireguard"}})], [])
    assert [w.path for w in warnings(problems)] == ["encryption.enabled"]


def test_validate_and_config_show_show_and_count_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("encryption:\n  enabled: true\n  type: wireguard\n"
                      "localRedirectPolicy: true\nbgpControlPlane:\n  enabled: false\n")
    manifest = tmp_path / "svc.yaml"
    manifest.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n"
                        "spec: {ports: [{port: 80}]}\n")
    assert cli_main.main(["validate", "--values", str(values), "-f", str(manifest)]) == 0
    out = capsys.readouterr()
    text = out.out + out.err
    assert f"{values}:2: encryption.enabled: warning: true: hexlane does not build " \
           "transparent encryption" in text, text
    assert f"{values}:4: localRedirectPolicy: warning: true: hexlane does not build Local " \
           "Redirect Policies yet; hexlane does not act on it" in text, text
    assert "0 error(s), 2 warning(s)" in text, text
    assert cli_main.main(["config", "show", "-f", str(values), "--set",
                          "policyEnforcementMode=always"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err  # the file's two; policyEnforcementMode always is built


# Every seed's layered values, and the warnings they give: (file, key) pairs.
SEED_WARNINGS = {
    ("seed-000", ("values.yaml", "values-monitoring.yaml", "values-hubble.yaml")): {
        ("values-hubble.yaml", "hubble.relay.prometheus.enabled"),
        ("values-hubble.yaml", "hubble.ui.ingress.enabled")},
    ("seed-001", ("values.yaml", "values-upgrade.yaml")): {
        ("values.yaml", "kubeProxyReplacement")},  # 'strict', removed in Cilium 1.14
    ("seed-002", ("values.yaml",)): {
        ("values.yaml", "localRedirectPolicy"),
        ("values.yaml", "hubble.serviceMonitor"),  # unknown keys: Cilium's are under metrics
        ("values.yaml", "hubble.dashboards")},
    ("seed-004", ("values.yaml",)): set(),
}


@pytest.mark.parametrize("seed,files", list(SEED_WARNINGS), ids=lambda x: str(x))
def test_every_seeds_warnings_are_exactly_the_expected(seed: str, files: tuple[str, ...]
                                                      ) -> None:
    _, problems = load_values([str(EXAMPLES / seed / f) for f in files])
    got = {(Path(p.file.split(":")[0]).name, p.path) for p in warnings(problems)}
    assert got == SEED_WARNINGS[seed, files]
    assert len(warnings(problems)) == len(got)


def test_seed_002_local_redirect_policy_says_hexlane_does_not_act_on_it() -> None:
    _, problems = load_values([str(EXAMPLES / "seed-002" / "values.yaml")])
    [w] = [p for p in problems if p.path == "localRedirectPolicy"]
    assert "hexlane does not act on it" in w.message
    assert re.fullmatch(r".*/seed-002/values\.yaml:\d+", w.file)


def test_the_docs_table_lists_exactly_these_keys() -> None:
    text = DOC.read_text().partition("### Features not built yet")[2]
    rows = re.findall(r"^\| `([A-Za-z0-9.]+)` \| (.*?) \| (.*?) \| (.*?) \|$", text, re.M)
    assert {r[0]: (r[2], r[3]) for r in rows} == {
        key_of(s): (s.not_built, s.instead) for s in NOT_BUILT}
