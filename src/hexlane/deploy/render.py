"""The Kubernetes objects of a hexlane install, as data, from the Helm values (pure).

`render(values, inputs)` returns every object in apply order: CRDs, service accounts and RBAC,
the config, the Hubble CA, Services, the agent DaemonSet, the Deployments, ServiceMonitors,
dashboard ConfigMaps. The same values give the same objects (no clock, no randomness; the
caller's YAML dump sorts keys). Cilium's chart is the reference for ports, labels, probes and
what each value switches on: objects are named `hexlane-*` (DaemonSet `hexlane`, Deployment
`hexlane-operator`), while the labels Cilium's dashboards, ServiceMonitors and habits select
(`k8s-app: cilium`, `io.cilium/app: operator`, `k8s-app: hubble-relay`, ...), the ports, the
Services `hubble-relay` and `hubble-ui`, and the Lease names keep Cilium's values.

How the daemons get their configuration in a cluster: the ConfigMap `hexlane-config` holds
the effective values (`values.yaml`, every key, defaults included) and each daemon gets
`--values` of it. The Hubble CA (`tls.ca.*`) is not in it but in the Secret
`hexlane-hubble-ca`, mounted where the agents (`--hubble-ca-dir`: each signs its own server
certificate with it) and the relay (its client certificate) find it.
"""

from __future__ import annotations

import base64
import copy
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from hexlane import __version__
from hexlane.config import Values
from hexlane.model.errors import InputError, Problem, errors_only

from . import rbac

Obj = dict[str, Any]
PART_OF = {"app.kubernetes.io/part-of": "hexlane"}
AGENT_LABELS = {"k8s-app": "cilium", "app.kubernetes.io/name": "cilium-agent"}
OPERATOR_LABELS = {"io.cilium/app": "operator", "name": "cilium-operator"}
RELAY_LABELS = {"k8s-app": "hubble-relay", "app.kubernetes.io/name": "hubble-relay"}
UI_LABELS = {"k8s-app": "hubble-ui", "app.kubernetes.io/name": "hubble-ui"}
HUBBLE_LABELS = {"k8s-app": "hubble", "app.kubernetes.io/name": "hubble"}

CONFIG_MAP = "hexlane-config"
CONFIG_DIR = "/etc/hexlane"
CONFIG_FILE = f"{CONFIG_DIR}/values.yaml"
CA_SECRET = "hexlane-hubble-ca"
AGENT_CA_DIR = "/var/lib/hexlane/hubble-ca"
RELAY_DIR = "/var/lib/hubble-relay"  # its client certificate is made here
RELAY_SERVICE, UI_SERVICE = "hubble-relay", "hubble-ui"
UI_PORT = 8081
STATE_DIR = "/var/run/hexlane"  # the agent's default: `kubectl exec ... hexlane status` finds it
CHECKSUM = "cilium.io/cilium-configmap-checksum"  # Cilium's annotation for rollOut*Pods
PLUGIN_FILE = "hexlane-cni.pyz"  # the plugin the init container puts beside the wrapper
# Private keys never go into the ConfigMap: the CA goes to its Secret, and a server
# certificate given in the values has no Secret of its own here.
_SECRET_KEYS = ("tls.ca.cert", "tls.ca.key")


@dataclass(frozen=True)
class RenderInputs:
    """What the render needs besides the values, read by the caller: the CRD objects the
    embedded apiserver serves, the dashboards' JSON texts by file stem (`hexlane-agent`,
    `hexlane-operator`, `hexlane-hubble`), and the Hubble CA as PEM texts (cert, key)."""

    crds: Sequence[Obj] = ()
    dashboards: Mapping[str, str] = field(default_factory=dict)
    hubble_ca: tuple[str, str] | None = None
    namespace: str = "kube-system"
    version: str = __version__


def needs_hubble_ca(values: Values) -> bool:
    """Whether the agents serve Hubble with mutual TLS, so one CA must sign every node's
    certificate (and the relay's)."""
    return values.hubble.enabled and values.hubble.tls.enabled


def check(values: Values) -> list[Problem]:
    """What `render` refuses in these values (each naming the key), and warnings."""
    problems = []
    if values.kube_proxy_replacement and not values.k8s_service_host:
        problems.append(Problem(
            "with kubeProxyReplacement nothing else load-balances the kubernetes Service for "
            "the host-network agent and operator: give the API server's address (k3s "
            "127.0.0.1:6444 behind its node-local proxy, Talos 127.0.0.1:7445), as Cilium "
            "requires", "k8sServiceHost", severity="warning"))
    if values.hubble.tls.server_cert or values.hubble.tls.server_key:
        problems.append(Problem(
            "a server certificate shared by every node would go into a ConfigMap; give the "
            "Hubble CA (tls.ca.cert/key) instead and every agent makes its own from it",
            "hubble.tls.server.cert"))
    return problems


def render(values: Values, inputs: RenderInputs) -> list[Obj]:
    """Every object of the install, in apply order (InputError for what `check` finds, or a
    Hubble CA missing from `inputs` when the values need one)."""
    problems = errors_only(check(values))
    if needs_hubble_ca(values) and inputs.hubble_ca is None:
        problems.append(Problem("hubble.tls.enabled: the Hubble CA is needed (the caller "
                                "makes or reads it)", "tls.ca.cert"))
    if problems:
        raise InputError(problems)
    r = _Renderer(values, inputs)
    return [
        *(copy.deepcopy(dict(crd)) for crd in inputs.crds),
        *r.namespace_object(),
        *r.accounts(),
        r.config_map(),
        *r.hubble_ca(),
        *r.services(),
        r.agent(),
        r.operator(),
        *r.relay(),
        *r.ui(),
        *r.service_monitors(),
        *r.dashboards(),
    ]


def config_text(values: Values) -> str:
    """The ConfigMap's values.yaml: the effective values without the CA (in its Secret)."""
    tree = values.tree
    for path in _SECRET_KEYS:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.get(part) or {}
        if leaf in node:
            node[leaf] = ""
    return yaml.safe_dump(tree, sort_keys=True)


def _labels(*parts: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in parts:
        out.update(part)
    return out


def _meta(name: str, namespace: str | None, labels: Mapping[str, str],
          annotations: Mapping[str, str] | None = None) -> Obj:
    meta: Obj = {"name": name, "labels": _labels(labels, PART_OF)}
    if namespace is not None:
        meta["namespace"] = namespace
    if annotations:
        meta["annotations"] = dict(annotations)
    return meta


def image_name(values: Values, version: str) -> str:
    """The hexlane image every component runs: `image.repository:image.tag` (tag "" = this
    hexlane's `version`)."""
    return f"{values.get('image.repository')}:{values.get('image.tag') or version}"


def _configmap_volume(name: str = "config") -> Obj:
    return {"name": name, "configMap": {"name": CONFIG_MAP}}


class _Renderer:
    def __init__(self, values: Values, inputs: RenderInputs) -> None:
        self.v = values
        self.inputs = inputs
        self.ns = inputs.namespace
        self.image = image_name(values, inputs.version)
        self.pull = values.get("image.pullPolicy")
        self.config = config_text(values)
        self.checksum = hashlib.sha256(self.config.encode()).hexdigest()
        self.relay_on = values.hubble.enabled and values.hubble.relay_enabled
        self.ui_on = values.hubble.enabled and values.hubble.ui_enabled

    # -- pieces ------------------------------------------------------------------------------

    def _container(self, name: str, command: list[str], args: list[str], prefix: str
                   ) -> Obj:
        container: Obj = {"name": name, "image": self.image, "imagePullPolicy": self.pull,
                          "command": command,
                          "args": [*args, *(self.v.get(f"{prefix}extraArgs") or [])]}
        env = self.v.get(f"{prefix}extraEnv") or []
        if env:
            container["env"] = env
        resources = self.v.get(f"{prefix}resources") or {}
        if resources:
            container["resources"] = resources
        return container

    def _pod_meta(self, prefix: str, labels: Mapping[str, str], roll: str) -> Obj:
        annotations = dict(self.v.get(f"{prefix}podAnnotations") or {})
        if self.v.get(roll):
            annotations[CHECKSUM] = self.checksum
        meta: Obj = {"labels": _labels(self.v.get(f"{prefix}podLabels") or {}, labels,
                                       PART_OF)}
        if annotations:
            meta["annotations"] = annotations
        return meta

    def _scheduling(self, prefix: str, default_priority: str) -> Obj:
        spec: Obj = {}
        for key in ("nodeSelector", "tolerations", "affinity"):
            value = self.v.get(f"{prefix}{key}")
            if value:
                spec[key] = value
        priority = self.v.get(f"{prefix}priorityClassName") or default_priority
        if priority:
            spec["priorityClassName"] = priority
        return spec

    def _workload_meta(self, name: str, prefix: str, labels: Mapping[str, str]) -> Obj:
        return _meta(name, self.ns, labels, self.v.get(f"{prefix}annotations") or {})

    # -- objects -----------------------------------------------------------------------------

    def namespace_object(self) -> list[Obj]:
        if self.ns == rbac.NAMESPACE:
            return []
        return [{"apiVersion": "v1", "kind": "Namespace",
                 "metadata": _meta(self.ns, None, {})}]

    def accounts(self) -> list[Obj]:
        components = [rbac.AGENT, rbac.OPERATOR] + ([rbac.RELAY] if self.relay_on else [])
        out: list[Obj] = []
        for account in components:
            out.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": _meta(account, self.ns, {})})
        for account in components:
            out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": _meta(account, None, {}),
                        "rules": rbac.cluster_rules(account, self.v)})
            out.append(self._binding("ClusterRoleBinding", "ClusterRole", account, None))
        for account in components:
            rules = rbac.namespaced_rules(account, self.v)
            if rules:
                # Where the daemons keep their Leases and the L2 key: kube-system, whatever
                # the release's namespace.
                out.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
                            "metadata": _meta(account, rbac.NAMESPACE, {}), "rules": rules})
                out.append(self._binding("RoleBinding", "Role", account, rbac.NAMESPACE))
        return out

    def _binding(self, kind: str, role_kind: str, account: str, namespace: str | None
                 ) -> Obj:
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
                "metadata": _meta(account, namespace, {}),
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                            "name": account},
                "subjects": [{"kind": "ServiceAccount", "name": account,
                              "namespace": self.ns}]}

    def config_map(self) -> Obj:
        return {"apiVersion": "v1", "kind": "ConfigMap",
                "metadata": _meta(CONFIG_MAP, self.ns, {}),
                "data": {"values.yaml": self.config}}

    def hubble_ca(self) -> list[Obj]:
        if not needs_hubble_ca(self.v) or self.inputs.hubble_ca is None:
            return []
        cert, key = self.inputs.hubble_ca
        return [{"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                 "metadata": _meta(CA_SECRET, self.ns, {}),
                 "data": {"ca.crt": base64.b64encode(cert.encode()).decode(),
                          "ca.key": base64.b64encode(key.encode()).decode()}}]

    def services(self) -> list[Obj]:
        v = self.v
        out = []
        if v.prometheus.enabled and v.get("prometheus.serviceMonitor.enabled"):
            out.append(_headless("hexlane-agent", self.ns, AGENT_LABELS,
                                 {"k8s-app": "cilium"}, "metrics", v.prometheus.port,
                                 "prometheus"))
        if v.hubble.enabled and v.hubble.metrics:
            svc = _headless("hexlane-hubble-metrics", self.ns, HUBBLE_LABELS,
                            {"k8s-app": "cilium"}, "hubble-metrics", v.hubble.metrics_port,
                            "hubble-metrics")
            if not v.get("hubble.metrics.serviceMonitor.enabled"):
                svc["metadata"]["annotations"] = {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(v.hubble.metrics_port)}
            out.append(svc)
        if v.operator.prometheus_enabled and v.get("operator.prometheus.serviceMonitor.enabled"):
            out.append(_headless("hexlane-operator", self.ns,
                                 {**OPERATOR_LABELS, "app.kubernetes.io/name": "cilium-operator"},
                                 OPERATOR_LABELS, "metrics", v.operator.prometheus_port,
                                 "prometheus"))
        if self.relay_on:
            out.append(self._front_service(RELAY_SERVICE, "relay", RELAY_LABELS, "grpc"))
        if self.ui_on:
            out.append(self._front_service(UI_SERVICE, "ui", UI_LABELS, "http"))
        return out

    def _front_service(self, name: str, part: str, labels: Mapping[str, str],
                       port_name: str) -> Obj:
        kind = self.v.get(f"hubble.{part}.service.type")
        port: Obj = {"name": port_name, "port": 80, "protocol": "TCP", "targetPort": port_name}
        if kind == "NodePort":
            port["nodePort"] = self.v.get(f"hubble.{part}.service.nodePort")
        return {"apiVersion": "v1", "kind": "Service",
                "metadata": _meta(name, self.ns, labels),
                "spec": {"type": kind, "selector": {"k8s-app": labels["k8s-app"]},
                         "ports": [port]}}

    def agent(self) -> Obj:
        v = self.v
        bin_dir, conf_dir = str(v.get("cni.binPath")), str(v.get("cni.confPath"))
        args = ["--values", CONFIG_FILE, "--host-namespace", "--cni-bin-dir", bin_dir,
                "--cni-conf-dir", conf_dir, "--cni-plugin", f"{bin_dir}/{PLUGIN_FILE}"]
        mounts: list[Obj] = [
            {"name": "bpf-maps", "mountPath": "/sys/fs/bpf",
             "mountPropagation": "HostToContainer"},
            {"name": "hexlane-run", "mountPath": STATE_DIR},
            {"name": "cni-path", "mountPath": bin_dir},
            {"name": "etc-cni-netd", "mountPath": conf_dir},
            {"name": "lib-modules", "mountPath": "/lib/modules", "readOnly": True},
            {"name": "hostproc", "mountPath": "/hostproc", "readOnly": True},
            {"name": "host-netns", "mountPath": "/var/run/netns",
             "mountPropagation": "HostToContainer"},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        ]
        volumes: list[Obj] = [
            _host_path("bpf-maps", "/sys/fs/bpf", "DirectoryOrCreate"),
            _host_path("hexlane-run", STATE_DIR, "DirectoryOrCreate"),
            _host_path("cni-path", bin_dir, "DirectoryOrCreate"),
            _host_path("etc-cni-netd", conf_dir, "DirectoryOrCreate"),
            _host_path("lib-modules", "/lib/modules"),
            _host_path("hostproc", "/proc", "Directory"),
            _host_path("host-netns", "/var/run/netns", "DirectoryOrCreate"),
            _configmap_volume(),
        ]
        if needs_hubble_ca(v):
            args += ["--hubble-ca-dir", AGENT_CA_DIR]
            mounts.append({"name": "hubble-ca", "mountPath": AGENT_CA_DIR, "readOnly": True})
            volumes.append({"name": "hubble-ca", "secret": {"secretName": CA_SECRET,
                                                            "defaultMode": 0o400}})
        container = self._container("hexlane-agent", ["hexlane", "agent"], args, "")
        container["env"] = [
            {"name": "K8S_NODE_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1",
                                                                 "fieldPath": "spec.nodeName"}}},
            *container.get("env", []),
        ]
        container["ports"] = self._agent_ports()
        container["volumeMounts"] = mounts
        container["securityContext"] = self._agent_security()
        status = {"exec": {"command": ["hexlane", "status", "--brief"]}}
        container["readinessProbe"] = {**status, "periodSeconds": 30, "timeoutSeconds": 10,
                                       "failureThreshold": 3}
        container["startupProbe"] = {**status, "periodSeconds": 2, "timeoutSeconds": 10,
                                     "failureThreshold": 105}
        container["livenessProbe"] = {**self._agent_liveness(), "periodSeconds": 30,
                                      "timeoutSeconds": 10, "failureThreshold": 10}
        init = [
            # bpffs on the host, shared both ways, so pins outlive the agent's container
            # (as Cilium's mount-bpf-fs; Bidirectional needs a privileged container).
            {"name": "mount-bpf-fs", "image": self.image, "imagePullPolicy": self.pull,
             "command": ["/bin/sh", "-c", "--"],
             "args": ["mount | grep -q '/sys/fs/bpf type bpf' || "
                      "mount -t bpf bpf /sys/fs/bpf"],
             "securityContext": {"privileged": True},
             "volumeMounts": [{"name": "bpf-maps", "mountPath": "/sys/fs/bpf",
                               "mountPropagation": "Bidirectional"}]},
            # The plugin the runtime runs on the host; the agent writes the wrapper naming
            # it and, once it serves, the CNI config.
            {"name": "install-cni-plugin", "image": self.image, "imagePullPolicy": self.pull,
             "command": ["hexlane", "cni", "install-plugin", bin_dir],
             "securityContext": {"capabilities": {"drop": ["ALL"]}},
             "volumeMounts": [{"name": "cni-path", "mountPath": bin_dir}]},
        ]
        spec: Obj = {
            "serviceAccountName": rbac.AGENT, "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet", "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 1, **self._scheduling("", "system-node-critical"),
            "initContainers": init, "containers": [container], "volumes": volumes,
        }
        return {"apiVersion": "apps/v1", "kind": "DaemonSet",
                "metadata": self._workload_meta("hexlane", "", AGENT_LABELS),
                "spec": {"selector": {"matchLabels": {"k8s-app": "cilium"}},
                         "updateStrategy": v.get("updateStrategy"),
                         "template": {"metadata": self._pod_meta("", AGENT_LABELS,
                                                                 "rollOutCiliumPods"),
                                      "spec": spec}}}

    def _agent_ports(self) -> list[Obj]:
        v = self.v
        ports: list[Obj] = []

        def port(name: str, number: int) -> None:
            # host network: the host port is the container port (Kubernetes requires it)
            ports.append({"name": name, "containerPort": number, "hostPort": number,
                          "protocol": "TCP"})
        if v.prometheus.enabled:
            port("prometheus", v.prometheus.port)
        if v.hubble.enabled and v.hubble.metrics:
            port("hubble-metrics", v.hubble.metrics_port)
        if v.hubble.enabled and v.hubble.listen_address:
            port("peer-service", int(v.hubble.listen_address.rsplit(":", 1)[1]))
        if self._healthz_port():
            port("health", self._healthz_port())
        return ports

    def _healthz_port(self) -> int:
        addr = self.v.kube_proxy_replacement_healthz_bind_addr
        return addr[1] if addr and self.v.kube_proxy_replacement else 0

    def _agent_liveness(self) -> Obj:
        """kube-proxy's /healthz where the values serve it (Cilium's liveness is an HTTP
        health endpoint too), else whether the agent's API answers at all."""
        if self._healthz_port():
            return {"httpGet": {"host": "127.0.0.1", "path": "/healthz", "port": "health",
                                "scheme": "HTTP"}}
        return {"exec": {"command": ["hexlane", "status", "-o", "json"]}}

    def _agent_security(self) -> Obj:
        if self.v.get("securityContext.privileged"):
            return {"privileged": True}
        return {"capabilities": {"add": list(self.v.get(
                    "securityContext.capabilities.ciliumAgent") or []), "drop": ["ALL"]},
                # the CNI plugin, the state dir and the pins belong to root on the host
                "runAsUser": 0, "runAsGroup": 0}

    def operator(self) -> Obj:
        v = self.v
        container = self._container("hexlane-operator", ["hexlane", "operator"],
                                    ["--values", CONFIG_FILE], "operator.")
        container["volumeMounts"] = [{"name": "config", "mountPath": CONFIG_DIR,
                                      "readOnly": True}]
        container["securityContext"] = {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}
        if v.operator.prometheus_enabled:
            number = v.operator.prometheus_port
            container["ports"] = [{"name": "prometheus", "containerPort": number,
                                   "hostPort": number, "protocol": "TCP"}]
            health = {"httpGet": {"host": "127.0.0.1", "path": "/healthz",
                                  "port": "prometheus", "scheme": "HTTP"}}
            container["livenessProbe"] = {**health, "initialDelaySeconds": 60,
                                          "periodSeconds": 10, "timeoutSeconds": 3}
            container["readinessProbe"] = {**health, "periodSeconds": 5, "timeoutSeconds": 3,
                                           "failureThreshold": 5}
        spec: Obj = {
            # The API before any pod network: the operator hands out the pod CIDRs.
            "serviceAccountName": rbac.OPERATOR, "hostNetwork": True,
            "restartPolicy": "Always",
            **self._scheduling("operator.", "system-cluster-critical"),
            "containers": [container], "volumes": [_configmap_volume()],
        }
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": self._workload_meta("hexlane-operator", "operator.",
                                                {**OPERATOR_LABELS,
                                                 "app.kubernetes.io/name": "cilium-operator"}),
                "spec": {"replicas": v.operator.replicas,
                         "selector": {"matchLabels": dict(OPERATOR_LABELS)},
                         "strategy": v.get("operator.updateStrategy"),
                         "template": {"metadata": self._pod_meta(
                             "operator.", {**OPERATOR_LABELS,
                                           "app.kubernetes.io/name": "cilium-operator"},
                             "operator.rollOutPods"),
                             "spec": spec}}}

    def relay(self) -> list[Obj]:
        if not self.relay_on:
            return []
        v = self.v
        listen = f"{v.hubble.relay.listen_host}:{v.hubble.relay_listen_port}"
        # A pod of the pod network: the in-cluster `kubernetes` Service, not the node-local
        # API address k8sServiceHost names for the host-network agent and operator.
        args = ["--values", CONFIG_FILE, "--set", "k8sServiceHost=", "--set",
                "k8sServicePort=", "--listen-address", listen]
        mounts: list[Obj] = [{"name": "config", "mountPath": CONFIG_DIR, "readOnly": True}]
        volumes: list[Obj] = [_configmap_volume()]
        if needs_hubble_ca(v):
            args += ["--hubble-ca-dir", f"{RELAY_DIR}/ca"]
            mounts += [{"name": "relay-state", "mountPath": RELAY_DIR},
                       {"name": "hubble-ca", "mountPath": f"{RELAY_DIR}/ca", "readOnly": True}]
            volumes += [{"name": "relay-state", "emptyDir": {}},
                        {"name": "hubble-ca", "secret": {"secretName": CA_SECRET,
                                                         "defaultMode": 0o400}}]
        container = self._container("hubble-relay", ["hexlane", "hubble", "relay"], args,
                                    "hubble.relay.")
        container["ports"] = [{"name": "grpc", "containerPort": v.hubble.relay_listen_port,
                               "protocol": "TCP"}]
        probe = {"tcpSocket": {"port": "grpc"}}
        container["readinessProbe"] = {**probe, "periodSeconds": 10, "timeoutSeconds": 3}
        container["livenessProbe"] = {**probe, "periodSeconds": 10, "timeoutSeconds": 3,
                                      "failureThreshold": 12}
        container["volumeMounts"] = mounts
        container["securityContext"] = {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}
        spec: Obj = {"serviceAccountName": rbac.RELAY, "restartPolicy": "Always",
                     **self._scheduling("hubble.relay.", ""),
                     "containers": [container], "volumes": volumes}
        return [self._deployment("hexlane-hubble-relay", "hubble.relay.", RELAY_LABELS, spec)]

    def ui(self) -> list[Obj]:
        if not self.ui_on:
            return []
        server = f"{RELAY_SERVICE}:80"
        container = self._container("hubble-ui", ["hexlane", "hubble", "ui"],
                                    ["--listen", f":{UI_PORT}", "--server", server],
                                    "hubble.ui.")
        container["ports"] = [{"name": "http", "containerPort": UI_PORT, "protocol": "TCP"}]
        probe = {"httpGet": {"path": "/", "port": "http"}}
        container["readinessProbe"] = {**probe, "periodSeconds": 10}
        container["livenessProbe"] = {**probe, "periodSeconds": 10, "failureThreshold": 6}
        container["securityContext"] = {"allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}
        # The UI reads only the relay: no API token in its pods.
        spec: Obj = {"automountServiceAccountToken": False, "restartPolicy": "Always",
                     **self._scheduling("hubble.ui.", ""), "containers": [container]}
        return [self._deployment("hexlane-hubble-ui", "hubble.ui.", UI_LABELS, spec)]

    def _deployment(self, name: str, prefix: str, labels: Mapping[str, str], spec: Obj
                    ) -> Obj:
        return {"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": self._workload_meta(name, prefix, labels),
                "spec": {"replicas": self.v.get(f"{prefix}replicas"),
                         "selector": {"matchLabels": {"k8s-app": labels["k8s-app"]}},
                         "strategy": self.v.get(f"{prefix}updateStrategy"),
                         "template": {"metadata": self._pod_meta(prefix, labels,
                                                                 f"{prefix}rollOutPods"),
                                      "spec": spec}}}

    def service_monitors(self) -> list[Obj]:
        v = self.v
        out = []
        if v.prometheus.enabled and v.get("prometheus.serviceMonitor.enabled"):
            out.append(self._monitor("hexlane-agent", "prometheus.serviceMonitor.",
                                     {"k8s-app": "cilium"}, "metrics", ["k8s-app"], {}))
        if v.operator.prometheus_enabled and v.get("operator.prometheus.serviceMonitor.enabled"):
            out.append(self._monitor("hexlane-operator", "operator.prometheus.serviceMonitor.",
                                     OPERATOR_LABELS, "metrics", ["io.cilium/app"],
                                     {"app.kubernetes.io/name": "cilium-operator"}))
        if v.hubble.enabled and v.hubble.metrics and \
                v.get("hubble.metrics.serviceMonitor.enabled"):
            out.append(self._monitor("hexlane-hubble", "hubble.metrics.serviceMonitor.",
                                     {"k8s-app": "hubble"}, "hubble-metrics", [], {}))
        return out

    def _monitor(self, name: str, prefix: str, selector: Mapping[str, str], port: str,
                 target_labels: list[str], labels: Mapping[str, str]) -> Obj:
        endpoint: Obj = {"port": port, "interval": self.v.get(f"{prefix}interval"),
                         "honorLabels": True, "path": "/metrics"}
        for key in ("relabelings", "metricRelabelings"):
            if self.v.get(f"{prefix}{key}"):
                endpoint[key] = self.v.get(f"{prefix}{key}")
        spec: Obj = {"selector": {"matchLabels": dict(selector)},
                     "namespaceSelector": {"matchNames": [self.ns]},
                     "endpoints": [endpoint]}
        if target_labels:
            spec["targetLabels"] = target_labels
        return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
                "metadata": _meta(name, self.ns,
                                  _labels(self.v.get(f"{prefix}labels") or {}, labels),
                                  self.v.get(f"{prefix}annotations") or {}),
                "spec": spec}

    def dashboards(self) -> list[Obj]:
        out = []
        for prefix, stem, labels in (
                ("dashboards.", "hexlane-agent", AGENT_LABELS),
                ("operator.dashboards.", "hexlane-operator",
                 {"io.cilium/app": "operator", "app.kubernetes.io/name": "cilium-operator"}),
                ("hubble.metrics.dashboards.", "hexlane-hubble", HUBBLE_LABELS)):
            if not self.v.get(f"{prefix}enabled") or stem not in self.inputs.dashboards:
                continue
            if prefix.startswith("hubble.") and not self.v.hubble.enabled:
                continue
            marks = dict(labels)
            label = self.v.get(f"{prefix}label")
            if label:
                marks[label] = self.v.get(f"{prefix}labelValue") or "1"
            name = f"{stem}-dashboard"
            out.append({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": _meta(name, self.v.get(f"{prefix}namespace") or self.ns,
                                          marks, self.v.get(f"{prefix}annotations") or {}),
                        "data": {f"{name}.json": self.inputs.dashboards[stem]}})
        return out


def _headless(name: str, namespace: str, labels: Mapping[str, str],
              selector: Mapping[str, str], port_name: str, port: int, target: str) -> Obj:
    """A headless Service for a ServiceMonitor (or annotation-based scraping) to find every
    pod's metrics port."""
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": _meta(name, namespace, labels),
            "spec": {"clusterIP": "None", "type": "ClusterIP", "selector": dict(selector),
                     "ports": [{"name": port_name, "port": port, "protocol": "TCP",
                                "targetPort": target}]}}


def _host_path(name: str, path: str, kind: str = "") -> Obj:
    source: Obj = {"path": path}
    if kind:
        source["type"] = kind
    return {"name": name, "hostPath": source}
