"""Fuzzing with hostile JSON and YAML (hypothesis) against the apiserver over HTTPS, the CLI and
the CNI plugin, bounded as issue 22 asks, the whole module within a minute:

- the apiserver: bodies for built-in kinds and custom resources, generated whole or as a valid
  object with one field replaced, nested up to far past the limit, with NaN, huge numbers,
  control characters, wrong types, under every media type (protobuf: hostile bytes in
  Kubernetes' envelope); every answer comes within 2 s, is
  below 500 and, when an error, a `Status`; what was stored lists back as valid JSON; the
  server's resident memory grows at most 50 MB over the run;
- the CLI (`validate -f`, `ipam plan -f`, `config show --values`): hostile YAML files; each run
  ends within 5 s under a 1 GiB address-space limit with exit 0, 1 or 2 and no traceback;
- the CNI plugin (in a network namespace of its own, so no agent answers): hostile stdin and
  environment; each run answers one CNI result or error JSON on stdout, within 5 s and 1 GiB,
  and writes nothing outside its state directory's DEL queue.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers.apiserver import Apiserver
from helpers.bounded import CNI_PLUGIN, HEXLANE, run_bounded

pytestmark = pytest.mark.timeout(120)

SETTINGS = settings(deadline=None, database=None, derandomize=False,
                    suppress_health_check=list(HealthCheck))

# --- hostile values --------------------------------------------------------------------------

HOSTILE_STRINGS = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "\u202e", "\x1b[31m", "../../etc/passwd", "a" * 300,
                     "NaN", "Infinity", "1e999", "${x}", "{{x}}", "\ud7ff", "-", "0x10"]),
)
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), HOSTILE_STRINGS)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(HOSTILE_STRINGS, inner, max_size=4)),
    max_leaves=20)


@dataclass(frozen=True)
class Deep:
    """A value nested `depth` levels deep, kept as a recipe: built as text only when sent (the
    value itself would be too deep for json.dumps and for hypothesis' own reports)."""

    depth: int
    as_list: bool
    leaf: Any

    def text(self) -> str:
        leaf = json.dumps(self.leaf, allow_nan=True)
        if self.as_list:
            return "[" * self.depth + leaf + "]" * self.depth
        return '{"a":' * self.depth + leaf + "}" * self.depth


DEEP = st.builds(Deep, st.sampled_from([50, 99, 100, 101, 500, 5000]), st.booleans(), SCALARS)
VALUES = st.one_of(JSON_VALUES, DEEP)


def to_json(value: Any) -> str:
    """JSON as a hostile client writes it: NaN and Infinity included, Deep values expanded."""
    deep: list[Deep] = []

    def placeholder(obj: Any) -> str:
        if not isinstance(obj, Deep):
            raise TypeError(type(obj).__name__)
        deep.append(obj)
        return f"\x00deep{len(deep) - 1}\x00"

    text = json.dumps(value, allow_nan=True, default=placeholder)
    for i, recipe in enumerate(deep):
        text = text.replace(json.dumps(f"\x00deep{i}\x00"), recipe.text())
    return text


def strict_json(text: str) -> Any:
    def refuse(name: str) -> Any:
        raise ValueError(f"{name} in the server's JSON")
    return json.loads(text, parse_constant=refuse)


# --- the apiserver ---------------------------------------------------------------------------

def _bases(ns: str, group: str) -> dict[str, dict[str, Any]]:
    """Valid objects per collection path: what a field is replaced in."""
    meta = {"name": "x", "labels": {"a": "b"}}
    return {
        f"/api/v1/namespaces/{ns}/configmaps": {"metadata": meta, "data": {"k": "v"}},
        f"/api/v1/namespaces/{ns}/secrets": {"metadata": meta, "data": {"k": "dg=="}},
        f"/api/v1/namespaces/{ns}/services": {"metadata": meta, "spec": {
            "ports": [{"port": 80, "targetPort": 8080}], "selector": {"a": "b"}}},
        f"/api/v1/namespaces/{ns}/pods": {"metadata": meta, "spec": {
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}]}]}},
        f"/apis/apps/v1/namespaces/{ns}/deployments": {"metadata": meta, "spec": {
            "replicas": 1, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}},
                         "spec": {"containers": [{"name": "c", "image": "i"}]}}}},
        f"/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices": {
            "metadata": meta, "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"], "conditions": {"ready": True}}],
            "ports": [{"port": 80}]},
        f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases": {
            "metadata": meta, "spec": {"holderIdentity": "h", "leaseDurationSeconds": 15}},
        f"/apis/{group}/v1/namespaces/{ns}/things": {"metadata": meta, "spec": {"size": 1}},
    }


# (method, Content-Type): mostly what the server reads, some of what it must refuse.
REQUEST_KINDS = [
    *[("POST", "application/json")] * 4, ("POST", "application/yaml"), ("POST", None),
    *[("PUT", "application/json")] * 2, ("PUT", "application/yaml"),
    *[("PATCH", "application/merge-patch+json")] * 2,
    *[("PATCH", "application/strategic-merge-patch+json")] * 2,
    ("PATCH", "application/json-patch+json"), ("PATCH", "application/apply-patch+yaml"),
    ("POST", "text/plain"), ("PATCH", "application/json"), ("PUT", "application/x-www-form"),
    ("POST", "application/vnd.kubernetes.protobuf"),
]
PROTOBUF_KINDS = [b"ConfigMap", b"Secret", b"Namespace", b"Service", b"Deployment", b"Pod"]


def _pb(number: int, payload: bytes) -> bytes:
    return bytes([number << 3 | 2, len(payload)]) + payload


def protobuf_body(kind: bytes, raw: bytes) -> bytes:
    """Kubernetes' protobuf envelope (magic, typeMeta, raw) around hostile bytes."""
    return b"k8s\x00" + _pb(1, _pb(1, b"v1") + _pb(2, kind)) + _pb(2, raw)


def _with(obj: Any, path: list[str], value: Any) -> Any:
    """`obj` with the field at `path` (created as needed) set to `value`."""
    if not path:
        return value
    out = dict(obj) if isinstance(obj, dict) else {}
    out[path[0]] = _with(out.get(path[0]), path[1:], value)
    return out


@pytest.fixture(scope="module")
def target(apiservers: Any) -> Iterator[tuple[Apiserver, str, str]]:
    """An apiserver of the module's own, a namespace and a CRD group in it; removed after."""
    server: Apiserver = apiservers()
    api = server.api
    ns = f"fuzz-{uuid.uuid4().hex[:8]}"
    group = f"f{uuid.uuid4().hex[:8]}.example.com"
    api.create("/api/v1/namespaces", {"metadata": {"name": ns}})
    api.create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", {
        "metadata": {"name": f"things.{group}"},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "things", "singular": "thing", "kind": "Thing"},
                 "versions": [{"name": "v1", "served": True, "storage": True, "schema": {
                     "openAPIV3Schema": {"type": "object", "properties": {"spec": {
                         "type": "object", "properties": {"size": {"type": "integer"},
                                                          "free": {
                             "type": "object",
                             "x-kubernetes-preserve-unknown-fields": True}}}}}}}]}})
    yield server, ns, group
    api.delete(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/things.{group}")
    api.delete(f"/api/v1/namespaces/{ns}")


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


REQUESTS = st.tuples(
    st.integers(min_value=0, max_value=7),                      # which collection
    st.sampled_from(REQUEST_KINDS),
    st.one_of(st.lists(st.sampled_from(["metadata", "spec", "status", "data", "name",
                                        "labels", "replicas", "ports", "free", "endpoints",
                                        "finalizers", "x"]), min_size=1, max_size=4)),
    VALUES,
    st.booleans(),                                              # the value alone, or in the base
    st.tuples(st.sampled_from(PROTOBUF_KINDS), st.binary(max_size=100)),  # protobuf bodies
)


def test_the_apiserver_answers_hostile_bodies_within_bounds(target: Any) -> None:
    server, ns, group = target
    api = server.api
    bases = _bases(ns, group)
    paths = sorted(bases)
    for path, base in bases.items():  # one of each, for PUT and PATCH to aim at
        api.create(path, {**base, "metadata": {"name": "x"}})
    assert server.proc is not None
    rss_before = _rss(server.proc.pid)
    slowest = [0.0]
    seen: dict[int, int] = {}

    @settings(SETTINGS, max_examples=500)
    @given(REQUESTS)
    def send(request: tuple[int, tuple[str, str | None], list[str], Any, bool,
                            tuple[bytes, bytes]]) -> None:
        which, (method, media), field, value, whole, (pb_kind, pb_raw) = request
        path = paths[which]
        body = value if whole else _with(bases[path], field, value)
        if isinstance(body, dict) and method == "POST":
            body = _with(body, ["metadata", "name"], f"f{uuid.uuid4().hex[:10]}")
        text = to_json(body)
        if media == "application/yaml" and not whole:
            text = text.replace("NaN", ".nan").replace("Infinity", ".inf")
        data = protobuf_body(pb_kind, pb_raw) if media and "protobuf" in media else \
            text.encode()
        url = path if method == "POST" else f"{path}/x"
        started = time.monotonic()
        status, answer = api.raw(method, url, data, media, timeout=5)
        slowest[0] = max(slowest[0], time.monotonic() - started)
        seen[status] = seen.get(status, 0) + 1
        assert time.monotonic() - started < 2.0, (method, url, text[:200])
        assert status < 500, (status, answer, method, url, text[:300])
        if status >= 400:
            assert isinstance(answer, dict) and answer.get("kind") == "Status", answer

    send()
    for path in paths:
        status, listed = api.raw("GET", path, b"", None)
        assert status == 200
        strict_json(json.dumps(listed))  # stored objects read back as JSON (no NaN)
        for item in listed["items"]:
            api.delete(f"{path}/{item['metadata']['name']}")
    growth = _rss(server.proc.pid) - rss_before
    print(f"answers by status: {dict(sorted(seen.items()))}; slowest {slowest[0]:.3f} s; "
          f"memory growth {growth / (1 << 20):.1f} MB")
    assert growth <= 50 << 20, f"the apiserver grew by {growth >> 20} MB"


# --- the CLI ---------------------------------------------------------------------------------

YAML_PIECES = st.one_of(
    st.sampled_from([
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {ports: [{port: 80}]}\n",
        "apiVersion: cilium.io/v2alpha1\nkind: CiliumLoadBalancerIPPool\nmetadata: {name: p}\n"
        "spec: {blocks: [{cidr: 10.0.0.0/24}]}\n",
        "a: &a [1, 2, 3]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
        "c: [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n",
        "a: &a [1, *a]\n", "x: .nan\n", "x: !!python/object:os.system 1\n",
        "x: !!binary AAAA\n", "a: 1\na: 2\n", "---\n---\n", "", "- 1\n- 2\n",
        "metadata: {name: off}\n", "\x00\x01", "x: \"\\u202e\\0\"\n", "{{{{{{{", "key: [\n",
        "x: " + "9" * 5000 + "\n", "kind: List\napiVersion: v1\nitems: [1, {a: b}]\n",
    ]),
    st.builds(lambda d, flow: ("[" * d if flow else "".join(" " * i + "a:\n"
                                                             for i in range(d))),
              st.sampled_from([99, 101, 3000]), st.booleans()),
    st.builds(to_json, JSON_VALUES),
    st.text(max_size=200),
)
YAML_FILES = st.lists(YAML_PIECES, min_size=0, max_size=4).map("---\n".join)
COMMANDS = [["validate", "-f"], ["ipam", "plan", "-f"], ["config", "show", "--values"]]


def test_the_cli_answers_hostile_files_within_bounds(tmp_path: Path) -> None:
    @settings(SETTINGS, max_examples=20)
    @given(YAML_FILES, st.sampled_from(COMMANDS))
    def run(text: str, command: list[str]) -> None:
        path = tmp_path / f"{uuid.uuid4().hex[:8]}.yaml"
        path.write_text(text, errors="surrogatepass")
        done = run_bounded([*HEXLANE, *command, str(path)], seconds=5.0)
        path.unlink()
        assert done.returncode in (0, 1, 2), (done.returncode, done.stderr[-2000:])
        assert "Traceback" not in done.stdout + done.stderr, done.stderr[-3000:]
        if done.returncode:
            assert str(path) in done.stdout + done.stderr or "--values" in done.stderr

    run()


# --- the CNI plugin ----------------------------------------------------------------------------

CNI_ENV = st.fixed_dictionaries({
    "CNI_COMMAND": st.sampled_from(["ADD", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "x"]),
    "CNI_CONTAINERID": st.one_of(st.just("c1"), HOSTILE_STRINGS),
    "CNI_IFNAME": st.one_of(st.just("eth0"), HOSTILE_STRINGS,
                            st.sampled_from(["/../../x", "a" * 300, ".", "..", "a:b"])),
    "CNI_NETNS": st.one_of(st.just("/var/run/netns/x"), HOSTILE_STRINGS),
    "CNI_ARGS": st.one_of(st.just(""), HOSTILE_STRINGS),
})
CNI_STDIN = st.one_of(
    st.builds(lambda extra: to_json({"cniVersion": "1.0.0", "name": "hexlane",
                                     "type": "hexlane-cni", **extra}),
              st.dictionaries(HOSTILE_STRINGS, VALUES, max_size=3)),
    st.builds(to_json, VALUES),
    st.text(max_size=100),
)


def _clean_env(env: dict[str, str], state: Path) -> dict[str, str]:
    out = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HEXLANE_STATE_DIR": str(state)}
    for key, value in env.items():
        cleaned = value.encode("utf-8", "ignore").decode().replace("\x00", "")
        if cleaned:
            out[key] = cleaned
    return out


@pytest.mark.root
def test_the_cni_plugin_answers_hostile_input_within_bounds(tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    state = tmp_path / "state"

    @settings(SETTINGS, max_examples=40)
    @given(CNI_ENV, CNI_STDIN)
    def run(env: dict[str, str], stdin: str) -> None:
        # A network namespace of its own: no agent's abstract socket is reachable.
        done = run_bounded(["unshare", "--net", "--", *CNI_PLUGIN],
                           stdin=stdin.encode("utf-8", "surrogatepass"),
                           env=_clean_env(env, state), seconds=5.0)
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        if done.returncode == 0 and not lines:
            return  # DEL (queued), GC, STATUS print nothing on success
        assert len(lines) == 1, done.stdout
        answer = json.loads(lines[0])
        if done.returncode:
            assert isinstance(answer.get("code"), int) and isinstance(answer.get("msg"), str)
        queue = state / "cni-del-queue"
        if queue.exists():
            for entry in queue.iterdir():
                assert entry.parent == queue and len(entry.name) < 300

    run()
    if state.exists():
        assert {p.name for p in state.iterdir()} <= {"cni-del-queue"}
        subprocess.run(["rm", "-rf", str(state)], check=True)
