"""Where a client's server and credentials come from, and that they work against the real
apiserver:

- `--kubeconfig` wins over `$KUBECONFIG`, which wins over the in-cluster service account,
  which wins over ~/.kube/config; the first existing file of a `$KUBECONFIG` list is used;
- in-cluster: token file, CA and KUBERNETES_SERVICE_HOST/PORT (IPv6 bracketed) — and such a
  client really talks to the server with that token and CA;
- `k8sServiceHost`/`k8sServicePort` replace the address and keep scheme and credentials
  (kubeconfig token and CA, or the service account's), for real through a proxy;
- missing or broken configuration is an `InputError` naming the file and field, not a
  traceback; errors from the API are `ApiError`s naming the request;
- a service-account token file is re-read after a 401 (the kubelet rotates it): the same
  client goes on working with the new token.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import yaml
from k8s_helpers import Proxy
from prometheus_client import CollectorRegistry

from helpers.apiserver import Apiserver
from hexlane.config import Values, load_values
from hexlane.k8s.client import ApiError, load_client_config, make_client
from hexlane.model.errors import InputError


def kubeconfig(path: Path, server: str, token: str = "t") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": server,
                                               "insecure-skip-tls-verify": True}}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def service_account(tmp_path: Path, token: str = "sa-token", ca: bytes = b"") -> Path:
    account = tmp_path / "sa"
    account.mkdir()
    (account / "token").write_text(token)
    (account / "namespace").write_text("kube-system")
    (account / "ca.crt").write_bytes(ca)
    return account


def values(*sets: str) -> Values:
    result, problems = load_values([], list(sets))
    assert not [p for p in problems if p.severity == "error"], problems
    return result


def test_order_of_sources(tmp_path: Path) -> None:
    explicit = kubeconfig(tmp_path / "explicit", "https://explicit:6443")
    env_file = kubeconfig(tmp_path / "env", "https://env:6443")
    account = service_account(tmp_path)
    env = {"KUBECONFIG": f"{tmp_path / 'missing'}:{env_file}",
           "KUBERNETES_SERVICE_HOST": "10.43.0.1", "KUBERNETES_SERVICE_PORT": "443"}
    pick = load_client_config(None, explicit, environ=env, service_account_dir=account)
    assert pick.cluster.server == "https://explicit:6443"
    pick = load_client_config(None, None, environ=env, service_account_dir=account)
    assert pick.cluster.server == "https://env:6443"
    del env["KUBECONFIG"]
    pick = load_client_config(None, None, environ=env, service_account_dir=account)
    assert pick.cluster.server == "https://10.43.0.1:443"
    assert pick.user is not None and pick.user.token_file == str(account / "token")
    assert pick.cluster.certificate_auth == str(account / "ca.crt")
    assert pick.namespace == "kube-system"
    env["KUBERNETES_SERVICE_HOST"] = "fd00::1"
    pick = load_client_config(None, None, environ=env, service_account_dir=account)
    assert pick.cluster.server == "https://[fd00::1]:443"


def test_service_host_and_port_override_keeps_credentials(tmp_path: Path) -> None:
    path = kubeconfig(tmp_path / "kc", "https://10.0.0.10:6443", token="secret")
    pick = load_client_config(values("k8sServiceHost=127.0.0.1", "k8sServicePort=6444"),
                              path, environ={})
    assert pick.cluster.server == "https://127.0.0.1:6444"
    assert pick.user is not None and pick.user.token == "secret"
    assert pick.cluster.insecure is True
    # Host without port: the configured server's port stays.
    pick = load_client_config(values("k8sServiceHost=localhost"), path, environ={})
    assert pick.cluster.server == "https://localhost:6443"
    # In-cluster credentials stay too (Talos's KubePrism on 7445).
    account = service_account(tmp_path)
    pick = load_client_config(values("k8sServiceHost=localhost", "k8sServicePort=7445"),
                              None, environ={"KUBERNETES_SERVICE_HOST": "10.43.0.1"},
                              service_account_dir=account)
    assert pick.cluster.server == "https://localhost:7445"
    assert pick.user is not None and pick.user.token_file == str(account / "token")


@pytest.mark.parametrize("content", [
    "::: not yaml", "a: [", "- a list", "clusters: []\ncontexts: []\n",
    "current-context: x\nclusters: []\ncontexts: []\n",
    "current-context: c\nclusters: [{name: c, cluster: {server: 5}}]\n"
    "contexts: [{name: c, context: {cluster: c}}]\n",
    "current-context: c\nclusters: []\ncontexts: [{name: c, context: {cluster: nope}}]\n"])
def test_bad_kubeconfig_is_an_input_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "bad"
    path.write_text(content)
    with pytest.raises(InputError) as err:
        load_client_config(None, path, environ={})
    [problem] = err.value.problems
    assert problem.file == str(path) and problem.message


def test_missing_configuration_is_an_input_error(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(InputError) as err:
        load_client_config(None, tmp_path / "nope", environ={})
    assert err.value.problems[0].path == "--kubeconfig"
    with pytest.raises(InputError, match="--kubeconfig"):
        load_client_config(None, None, environ={}, service_account_dir=tmp_path / "no-sa")
    with pytest.raises(InputError, match="KUBECONFIG"):
        load_client_config(None, None, environ={"KUBECONFIG": str(tmp_path / "x")})


@pytest.mark.slow
def test_in_cluster_and_override_against_the_server(apiserver: Apiserver,
                                                    tmp_path: Path) -> None:
    account = service_account(tmp_path, token=apiserver.token, ca=apiserver.ca.read_bytes())
    env = {"KUBERNETES_SERVICE_HOST": apiserver.host,
           "KUBERNETES_SERVICE_PORT": str(apiserver.port)}

    async def run() -> None:
        client = make_client(None, None, environ=env, service_account_dir=account,
                             registry=CollectorRegistry())
        async with client:
            version = await client.request("GET", "/version")
            assert version["major"] == "1"
            # A query written into the path is sent (not replaced by empty params).
            only_default = await client.request(
                "GET", "/api/v1/namespaces?fieldSelector=metadata.name%3Ddefault")
            assert [n["metadata"]["name"] for n in only_default["items"]] == ["default"]
            same = await client.request("GET", "/api/v1/namespaces",
                                        params={"fieldSelector": "metadata.name=default"})
            assert same["items"] == only_default["items"]
            with pytest.raises(ApiError) as err:
                await client.request("GET", "/api/v1/namespaces/default/configmaps/none")
            assert err.value.not_found and "configmaps/none" in str(err.value)
        async with Proxy(apiserver.host, apiserver.port) as proxy:
            client = make_client(values("k8sServiceHost=127.0.0.1",
                                        f"k8sServicePort={proxy.port}"),
                                 None, environ=env, service_account_dir=account,
                                 registry=CollectorRegistry())
            async with client:
                listing = await client.request("GET", "/api/v1/namespaces")
                assert "default" in [n["metadata"]["name"] for n in listing["items"]]
            assert proxy.connections >= 1
        # A wrong token is refused (the credentials really are the ones sent).
        (account / "token").write_text("wrong")
        client = make_client(None, None, environ=env, service_account_dir=account,
                             registry=CollectorRegistry())
        async with client:
            with pytest.raises(ApiError) as err:
                await client.request("GET", "/api/v1/namespaces")
            assert err.value.code == 401
            # The kubelet rotates the token: the 401 makes the client read the file again.
            (account / "token").write_text(apiserver.token)
            listing = await client.request("GET", "/api/v1/namespaces")
            assert "default" in [n["metadata"]["name"] for n in listing["items"]]

    asyncio.run(run())


def test_unusable_certificate_authority_is_an_input_error(tmp_path: Path) -> None:
    account = service_account(tmp_path, ca=b"not a certificate")
    env = {"KUBERNETES_SERVICE_HOST": "10.43.0.1"}
    with pytest.raises(InputError) as err:
        make_client(None, None, environ=env, service_account_dir=account,
                    registry=CollectorRegistry())
    [problem] = err.value.problems
    assert problem.path == "certificate-authority" and problem.file.endswith("ca.crt")
