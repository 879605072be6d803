"""Issue 22's CNI and agent-API cases, run as a runtime and a local user would run them:

- the plugin answers hostile stdin (nested 10,000 deep, over 1 MiB, NaN) with CNI
  error 6 JSON on stdout and no traceback;
- a CNI_IFNAME Linux would not take (`/../../x`, 300 characters, `..`, a newline) is error 4,
  also for a DEL while the agent is down, which then queues nothing;
- the agent's API, on its abstract socket `@hexlane-agent` (which has no file permissions),
  refuses every route to a caller that is neither root nor CAP_NET_ADMIN (403, CNI error
  103): `runuser -u nobody -- curl --abstract-unix-socket hexlane-agent ...` in the node's
  namespace, for each route; root is still served.
"""

from __future__ import annotations

import json
import shutil

import pytest

from helpers.cni import Agent, cni, conf
from hexlane.lab import netns
from hexlane.lab.netns import Topology

pytestmark = pytest.mark.root

ROUTES = [("POST", "/v1/cni/add"), ("POST", "/v1/cni/del"), ("POST", "/v1/cni/check"),
          ("POST", "/v1/cni/gc"), ("GET", "/v1/cni/status"), ("GET", "/v1/endpoints"),
          ("GET", "/v1/healthz")]


def _error(rc: int, out: object, code: int) -> dict[str, object]:
    assert rc != 0, out
    assert isinstance(out, dict) and out["code"] == code, out
    assert set(out) == {"cniVersion", "code", "msg", "details"}
    return out


def test_hostile_stdin_is_error_6(topo: Topology, fresh_node: Agent) -> None:
    pod = netns.netns_path(topo.add("pod"))
    deep = '{"cniVersion": "1.0.0", "name": "hexlane", "type": "hexlane-cni", "x": ' + \
        "[" * 10_000 + "]" * 10_000 + "}"
    for stdin, why in ((deep, "nested more than 100 levels deep"),
                       (json.dumps(conf(pad="x" * (1 << 20))), "more than 1048576 bytes"),
                       ('{"cniVersion": "1.0.0", "x": NaN}', "finite")):
        rc, out = cni(topo["node"], "ADD", stdin, netns_path=pod)
        answer = _error(rc, out, 6)
        assert why in str(answer["details"]), answer
    assert fresh_node.get("/v1/endpoints") == []


@pytest.mark.parametrize("ifname", ["/../../x", "a" * 300, "..", ".", "eth0\n", "a b", "a:b"])
def test_an_interface_name_linux_would_not_take_is_error_4(topo: Topology, fresh_node: Agent,
                                                           ifname: str) -> None:
    pod = netns.netns_path(topo.add("pod"))
    rc, out = cni(topo["node"], "ADD", conf(), netns_path=pod, ifname=ifname)
    assert "CNI_IFNAME" in str(_error(rc, out, 4)["msg"])
    assert fresh_node.get("/v1/endpoints") == []


def test_a_del_with_a_bad_interface_name_queues_nothing(topo: Topology, fresh_node: Agent) -> None:
    fresh_node.stop()
    queue = fresh_node.state_dir / "cni-del-queue"
    before = sorted(p.name for p in queue.iterdir()) if queue.exists() else []
    try:
        rc, out = cni(topo["node"], "DEL", conf(), ifname="/../../../../tmp/x",
                      extra_env={"HEXLANE_STATE_DIR": str(fresh_node.state_dir)})
        _error(rc, out, 4)
        after = sorted(p.name for p in queue.iterdir()) if queue.exists() else []
        assert after == before
    finally:
        fresh_node.start()


def _curl(topo: Topology, method: str, route: str, *, user: str | None) -> tuple[int, str]:
    argv = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", "--max-time", "5",
            "--abstract-unix-socket", "hexlane-agent", "-X", method,
            "-H", "Content-Type: application/json", f"http://agent{route}"]
    if method == "POST":
        argv += ["--data", '{"containerID": "c1", "ifname": "eth0", "netns": "/x"}']
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    done = netns.run(topo["node"], argv, check=False, timeout=30)
    body, _, code = done.stdout.rpartition("\n")
    return int(code or 0), body


def test_the_agents_abstract_socket_refuses_unprivileged_callers(
        topo: Topology, fresh_node: Agent) -> None:
    if shutil.which("runuser") is None or shutil.which("curl") is None:
        pytest.skip("needs runuser and curl")
    for method, route in ROUTES:
        status, body = _curl(topo, method, route, user="nobody")
        assert status == 403, (method, route, status, body)
        answer = json.loads(body)
        assert answer["code"] == 103 and "root or CAP_NET_ADMIN" in answer["details"]
    status, body = _curl(topo, "GET", "/v1/healthz", user=None)
    assert status == 200, body
    assert fresh_node.get("/v1/endpoints") == []
