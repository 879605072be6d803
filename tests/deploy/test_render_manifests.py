"""`hexlane manifests`: what it renders for the defaults and every seed's values, checked as
Kubernetes would check it, and applied with kubectl.

Pins down: every rendered object of the defaults and of each seed's layered values passes
Kubernetes v1.32's own schemas in strict mode (`kubernetes-validate`: an unknown field is an
error), CRDs as apiextensions v1 objects, and every ServiceMonitor passes prometheus-operator's
CRD schema (tests/data/servicemonitor-crd.yaml) with unknown fields refused; the render is
deterministic and names Cilium's labels, ports, priority classes and Lease-free RBAC as the
values switch them; a bad value exits 2 naming the key; and `kubectl apply -f -` of a whole
render into an embedded apiserver creates every object, reads back the same, and a second
apply changes nothing.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from helpers.seeds import LAYERS, values_files
from hexlane.cli import cmd_manifests
from hexlane.config import load_values
from hexlane.deploy import rbac
from hexlane.deploy.render import RenderInputs, render

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]
DATA = Path(__file__).resolve().parents[1] / "data"
KUBE_VERSION = "1.32"  # what the embedded apiserver reports, and k3s's of the seeds' time
CASES = {"defaults": [], **{seed: values_files(seed) for seed in LAYERS}}


def manifests(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*HEXLANE, "manifests", *args], capture_output=True, text=True,
                          timeout=60, check=False)
    if check:
        assert done.returncode == 0, done.stderr
    return done


def values_args(files: list[str]) -> list[str]:
    return [arg for f in files for arg in ("--values", f)]


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """Each case's objects, rendered as the command renders them (one shared CA), in this
    process (the command itself: test_the_render_is_deterministic)."""
    ca = tmp_path_factory.mktemp("ca")
    out = {}
    for case, files in CASES.items():
        values, _ = load_values(files)
        objects = render(values, RenderInputs(crds=cmd_manifests.crds(),
                                              dashboards=cmd_manifests.dashboards(),
                                              hubble_ca=cmd_manifests.hubble_ca(values, ca)))
        out[case] = list(yaml.safe_load_all(yaml.safe_dump_all(objects)))
    return out


def strict_schema(schema: Any) -> Any:
    """An openAPIV3Schema as JSON Schema that refuses unknown fields, as a structural schema
    prunes them and a Strict field validation refuses them."""
    if isinstance(schema, list):
        return [strict_schema(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict_schema(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out \
            and not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@pytest.fixture(scope="module")
def servicemonitor_validator() -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((DATA / "servicemonitor-crd.yaml").read_text())
    kubernetes_validate.validate(crd, KUBE_VERSION, strict=True)
    schema = strict_schema(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    return jsonschema.Draft7Validator(schema)


def by_kind(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_object_passes_kubernetes_schemas_strictly(
        case: str, rendered: dict[str, list[dict[str, Any]]],
        servicemonitor_validator: jsonschema.Draft7Validator) -> None:
    objects = rendered[case]
    kinds = {o["kind"] for o in objects}
    assert {"CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
            "ConfigMap", "DaemonSet", "Deployment"} <= kinds
    for obj in objects:
        where = f"{obj['kind']} {obj['metadata']['name']}"
        if obj["kind"] == "ServiceMonitor":
            errors = [e.message for e in servicemonitor_validator.iter_errors(obj)]
            assert errors == [], where
        else:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
    names = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"])
             for o in objects]
    assert len(names) == len(set(names))


def test_seed_000_gets_its_monitors_dashboards_relay_and_ui(
        rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["seed-000"]
    monitors = by_kind(objects, "ServiceMonitor")
    assert set(monitors) == {"hexlane-agent", "hexlane-operator", "hexlane-hubble"}
    assert monitors["hexlane-agent"]["spec"]["selector"]["matchLabels"] == {"k8s-app": "cilium"}
    assert monitors["hexlane-operator"]["spec"]["selector"]["matchLabels"] == {
        "io.cilium/app": "operator", "name": "cilium-operator"}
    assert monitors["hexlane-hubble"]["spec"]["selector"]["matchLabels"] == {"k8s-app": "hubble"}
    endpoint = monitors["hexlane-agent"]["spec"]["endpoints"][0]
    assert (endpoint["port"], endpoint["interval"]) == ("metrics", "10s")
    assert endpoint["relabelings"][0]["targetLabel"] == "node"
    services = by_kind(objects, "Service")
    assert services["hexlane-agent"]["spec"]["ports"][0]["port"] == 9962
    assert services["hexlane-operator"]["spec"]["ports"][0]["port"] == 9963
    assert services["hexlane-hubble-metrics"]["spec"]["ports"][0]["port"] == 9965
    relay, ui = services["hubble-relay"]["spec"], services["hubble-ui"]["spec"]
    assert (relay["ports"][0]["port"], relay["selector"]) == (80, {"k8s-app": "hubble-relay"})
    assert (ui["ports"][0]["port"], ui["selector"]) == (80, {"k8s-app": "hubble-ui"})
    configmaps = by_kind(objects, "ConfigMap")
    for name in ("hexlane-agent-dashboard", "hexlane-operator-dashboard",
                 "hexlane-hubble-dashboard"):
        labels = configmaps[name]["metadata"]["labels"]
        assert labels["grafana_dashboard"] == "1"
        assert configmaps[name]["metadata"]["annotations"] == {"grafana_folder": "Cilium"}
        json.loads(configmaps[name]["data"][f"{name}.json"])
    deployments = by_kind(objects, "Deployment")
    assert set(deployments) == {"hexlane-operator", "hexlane-hubble-relay", "hexlane-hubble-ui"}
    ui_args = deployments["hexlane-hubble-ui"]["spec"]["template"]["spec"]["containers"][0]
    assert ui_args["args"] == ["--listen", ":8081", "--server", "hubble-relay:80"]
    relay = deployments["hexlane-hubble-relay"]["spec"]["template"]["spec"]
    # a pod on the pod network: the kubernetes Service, not the node-local 127.0.0.1:6444
    assert relay["containers"][0]["args"][:5] == [
        "--values", "/etc/hexlane/values.yaml", "--set", "k8sServiceHost=", "--set"]
    assert "hostNetwork" not in relay
    # rollOutPods: a checksum of the config in the pods, so a change of values rolls them
    operator = deployments["hexlane-operator"]["spec"]["template"]
    assert "cilium.io/cilium-configmap-checksum" in operator["metadata"]["annotations"]
    assert operator["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux",
                                                "node-role.kubernetes.io/master": "true"}
    assert operator["spec"]["priorityClassName"] == "system-cluster-critical"


def test_the_agent_daemonset(rendered: dict[str, list[dict[str, Any]]]) -> None:
    ds = by_kind(rendered["seed-000"], "DaemonSet")["hexlane"]
    pod = ds["spec"]["template"]
    assert pod["metadata"]["labels"]["k8s-app"] == "cilium"
    assert "cilium.io/cilium-configmap-checksum" in pod["metadata"]["annotations"]
    spec = pod["spec"]
    assert spec["hostNetwork"] is True
    assert spec["priorityClassName"] == "system-node-critical"
    assert spec["serviceAccountName"] == rbac.AGENT
    agent = spec["containers"][0]
    assert agent["command"] == ["hexlane", "agent"]
    assert agent["env"][0]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    caps = agent["securityContext"]["capabilities"]["add"]
    assert {"NET_ADMIN", "NET_RAW", "SYS_ADMIN", "SYS_RESOURCE", "IPC_LOCK", "BPF",
            "PERFMON"} == set(caps)
    ports = {p["name"]: p["containerPort"] for p in agent["ports"]}
    assert ports == {"prometheus": 9962, "hubble-metrics": 9965, "peer-service": 4244,
                     "health": 10256}
    assert agent["readinessProbe"]["exec"]["command"] == ["hexlane", "status", "--brief"]
    assert agent["livenessProbe"]["httpGet"]["port"] == "health"
    mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
    assert {"/sys/fs/bpf", "/var/run/hexlane", "/opt/cni/bin", "/etc/cni/net.d",
            "/lib/modules", "/hostproc", "/etc/hexlane"} <= set(mounts)
    assert mounts["/lib/modules"]["readOnly"] is True
    bpf_init = spec["initContainers"][0]
    assert bpf_init["volumeMounts"][0]["mountPropagation"] == "Bidirectional"
    assert spec["initContainers"][1]["command"] == ["hexlane", "cni", "install-plugin",
                                                     "/opt/cni/bin"]
    privileged = manifests("--set", "securityContext.privileged=true")
    ds2 = by_kind(list(yaml.safe_load_all(privileged.stdout)), "DaemonSet")["hexlane"]
    assert ds2["spec"]["template"]["spec"]["containers"][0]["securityContext"] == {
        "privileged": True}


def test_the_config_map_is_what_the_daemons_read_without_the_ca(
        rendered: dict[str, list[dict[str, Any]]], tmp_path: Path) -> None:
    objects = rendered["seed-002"]
    config = by_kind(objects, "ConfigMap")["hexlane-config"]["data"]["values.yaml"]
    (tmp_path / "values.yaml").write_text(config)
    from_map, problems = load_values([str(tmp_path / "values.yaml")])
    seed, _ = load_values(values_files("seed-002"))
    assert [p for p in problems if p.severity == "error"] == []
    assert from_map == seed  # every typed field the daemons use
    assert "BEGIN" not in config
    secret = by_kind(objects, "Secret")["hexlane-hubble-ca"]
    assert set(secret["data"]) == {"ca.crt", "ca.key"}


def test_rbac_follows_the_values() -> None:
    """Leases and the heartbeat key only where the values turn L2 on; a cluster without
    cluster-pool IPAM gives the operator no CiliumNode rights."""
    def roles(*sets: str) -> dict[str, dict[str, Any]]:
        values, _ = load_values([], list(sets))
        objects = render(values, RenderInputs(hubble_ca=("c", "k")))
        return {f"{o['kind']}/{o['metadata']['name']}": o for o in objects
                if o["kind"] in ("ClusterRole", "Role")}
    plain = roles()
    assert "Role/hexlane" not in plain
    assert plain["Role/hexlane-operator"]["rules"][1]["resourceNames"] == [
        "cilium-operator-resource-lock"]
    lease = roles("kubeProxyReplacement=true", "l2announcements.enabled=true",
                  "l2announcements.election=lease")
    assert lease["Role/hexlane"]["rules"][0]["resources"] == ["leases"]
    heartbeat = roles("kubeProxyReplacement=true", "l2announcements.enabled=true")
    assert heartbeat["Role/hexlane"]["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
         "verbs": ["list", "delete"]},  # a lease election's leftovers collected
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
         "resourceNames": ["hexlane-l2-heartbeat"]}]
    kubernetes_ipam = roles("ipam.mode=kubernetes")
    assert not any("ciliumnodes" in r["resources"]
                   for r in kubernetes_ipam["ClusterRole/hexlane-operator"]["rules"])


def test_the_render_is_deterministic(tmp_path: Path,
                                     rendered: dict[str, list[dict[str, Any]]]) -> None:
    args = [*values_args(values_files("seed-000")), "--hubble-ca-dir", str(tmp_path)]
    first, second = manifests(*args).stdout, manifests(*args).stdout
    assert first == second
    made = list(yaml.safe_load_all(first))
    secret = by_kind(made, "Secret")["hexlane-hubble-ca"]
    assert (tmp_path / "ca.crt").read_bytes() == base64.b64decode(secret["data"]["ca.crt"])
    # the command renders what the function does, but for the CA
    assert [o for o in made if o["kind"] != "Secret"] == [
        o for o in rendered["seed-000"] if o["kind"] != "Secret"]
    as_json = json.loads(manifests(*args, "-o", "json").stdout)
    assert as_json["kind"] == "List"
    assert as_json["items"] == list(yaml.safe_load_all(first))


def test_bad_values_exit_2_naming_the_key() -> None:
    done = manifests("--set", "operator.tolerations=oops", check=False)
    assert done.returncode == 2
    assert "operator.tolerations" in done.stderr
    done = manifests("--set", "prometheus.serviceMonitor.interval=soon", check=False)
    assert (done.returncode, "prometheus.serviceMonitor.interval" in done.stderr) == (2, True)
    done = manifests("--set", "hubble.tls.server.cert=x", check=False)
    assert done.returncode == 2 and "hubble.tls.server.cert" in done.stderr


@pytest.mark.slow
def test_kubectl_applies_every_seeds_render_to_an_apiserver(
        apiservers: Any, rendered: dict[str, list[dict[str, Any]]]) -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("no kubectl on this machine")
    for case in ("seed-000", "seed-002"):
        server = apiservers()
        server.kubectl("apply", "-f", str(DATA / "servicemonitor-crd.yaml"))
        objects = rendered[case]
        stream = yaml.safe_dump_all(objects, sort_keys=True)
        out = server.kubectl("apply", "-f", "-", stdin=stream)
        assert out.count(" created") + out.count(" unchanged") + out.count(" configured") \
            == len(objects), out
        again = server.kubectl("apply", "-f", "-", stdin=stream)
        assert again.count(" unchanged") == len(objects), again
        for obj in objects:
            kind, name = obj["kind"].lower(), obj["metadata"]["name"]
            ns = obj["metadata"].get("namespace")
            read = json.loads(server.kubectl("get", kind, name, "-o", "json",
                                             *(["-n", ns] if ns else [])))
            assert essence(read) == essence(obj), (kind, name)


def essence(obj: dict[str, Any]) -> Any:
    """What a stored object must keep of what was applied (the server adds defaults)."""
    out: dict[str, Any] = {"labels": obj["metadata"].get("labels")}
    for key in ("data", "rules", "roleRef", "subjects"):
        out[key] = obj.get(key)
    spec = obj.get("spec") or {}
    if obj["kind"] in ("DaemonSet", "Deployment"):
        pod = spec["template"]["spec"]
        out["spec"] = (spec["selector"], spec["template"]["metadata"],
                       [(c["name"], c["command"], c.get("args", []))
                        for c in pod.get("initContainers", []) + pod["containers"]])
    elif obj["kind"] == "Service":
        out["spec"] = (spec["selector"], [(p["name"], p["port"], p["targetPort"])
                                          for p in spec["ports"]])
    elif obj["kind"] == "CustomResourceDefinition":
        out["spec"] = (spec["group"], spec["names"]["plural"],
                       [v["name"] for v in spec["versions"]])
    else:
        out["spec"] = spec
    return out
