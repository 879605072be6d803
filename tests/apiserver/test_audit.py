"""The apiserver's identities and audit log (`--token-auth-file`, `--audit-log`).

Pins down: a token from kube-apiserver's static token file is a user of its own, the server's
own token is `admin`, any other token is 401 (and not logged as anyone); every API request is
one JSON line with user, verb, group, resource, subresource, namespace, name and code (a
watch as `watch`, a status write with its subresource, a 404 with its code), written within
the flush interval; a token file line without a user exits 2 naming file and line.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.apiserver import Api
from hexlane.apiserver.audit import FLUSH_INTERVAL, read_audit_log

HEXLANE = [sys.executable, "-m", "hexlane.cli.main"]


def test_each_request_is_logged_with_its_user(apiservers: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("# token,user,uid\nt-agent,system:serviceaccount:kube-system:hexlane,1\n")
    log = tmp_path / "audit.log"
    server = apiservers("--token-auth-file", str(tokens), "--audit-log", str(log))
    agent = Api(server.host, server.port, "t-agent", server.ca)
    stranger = Api(server.host, server.port, "nobody", server.ca)
    try:
        assert agent.get("/api/v1/nodes")[0] == 200
        assert agent.get("/api/v1/namespaces/kube-system/secrets/missing")[0] == 404
        assert stranger.get("/api/v1/nodes")[0] == 401
        server.api.create("/api/v1/namespaces/default/services", {
            "metadata": {"name": "audited"}, "spec": {"ports": [{"port": 80}]}})
        assert agent.merge("/api/v1/namespaces/default/services/audited/status",
                           {"status": {"loadBalancer": {}}})
        watch = agent.watch("/apis/cilium.io/v2/ciliumnodes?watch=1&timeoutSeconds=1")
        watch.close()
        time.sleep(FLUSH_INTERVAL * 2)
    finally:
        agent.close()
        stranger.close()
    records = read_audit_log(log)
    seen = [(r["user"], r["verb"], r["group"], r["resource"], r["subresource"],
             r["namespace"], r["name"], r["code"]) for r in records]
    user = "system:serviceaccount:kube-system:hexlane"
    assert seen == [
        (user, "list", "", "nodes", "", "", "", 200),
        (user, "get", "", "secrets", "", "kube-system", "missing", 404),
        ("admin", "create", "", "services", "", "default", "", 201),
        (user, "patch", "", "services", "status", "default", "audited", 200),
        (user, "watch", "cilium.io", "ciliumnodes", "", "", "", 200),
    ]


def test_a_token_file_line_without_a_user_is_refused(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens.csv"
    tokens.write_text("good,someone,1\nlonely\n")
    done = subprocess.run([*HEXLANE, "apiserver", "--data-dir", str(tmp_path / "d"),
                           "--listen", "127.0.0.1:0", "--token-auth-file", str(tokens)],
                          capture_output=True, text=True, timeout=30, check=False)
    assert done.returncode == 2
    assert f"{tokens}:2" in done.stderr
