"""`hexlane hubble` against a real server: `observe` with --last, --first, filters (--pod,
--namespace, --verdict, --not, --to-port, --label), -o json/dict/table, -f receiving a flow
added after it started, the default server found through --state-dir and HEXLANE_STATE_DIR,
mutual TLS; `status`; `list nodes|namespaces`; and readable one-line errors (unreachable
server: exit 1; bad flags: exit 2). Most calls run the command's `main` in this process (the
same code, without 0.6 s of start-up each); following, the environment and the errors run the
real `hexlane` process."""

from __future__ import annotations

import contextlib
import io
import json
import selectors
import subprocess
import time
from pathlib import Path

import pytest
from hubble_helpers import BASE_NS, HEXLANE, RunningHubble, hexlane, pod_flow

from hexlane.cli.main import main
from hexlane.hubble.certs import CertPair


def run(*args: str) -> tuple[int, str, str]:
    """`hexlane ARGS` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def observe(server: RunningHubble, *args: str) -> list[str]:
    code, out, err = run("hubble", "observe", "--server", server.unix, *args)
    assert code == 0, err
    return out.splitlines()


def test_observe_last_prints_compact_lines(hubble: RunningHubble) -> None:
    assert observe(hubble, "--last", "3") == [
        "Dec  4 10:00:05.000: 10.0.0.2:41000 (world) <> bar/echo-def:8080 (ID:0) "
        "Service backend not found DROPPED (TCP Flags: SYN)",
        "Dec  4 10:00:06.000: foo/web-1:43000 (ID:0) -> foo/db-0:5432 (ID:0) to-endpoint "
        "FORWARDED (TCP Flags: SYN)",
        "Dec  4 10:00:07.000: bar/client-0:40000 (ID:0) <- bar/echo-def:8080 (ID:0) "
        "to-endpoint FORWARDED (TCP Flags: SYN, ACK)",
    ]
    assert len(observe(hubble)) == 8  # --last 20 by default: all 8
    assert observe(hubble, "--first", "1")[0].startswith(
        "Dec  4 10:00:00.000: bar/client-0:40000 (ID:0) -> bar/echo-def:8080")


def test_observe_filters(hubble: RunningHubble) -> None:
    pod = observe(hubble, "--pod", "bar/client-1")
    assert len(pod) == 1 and "bar/client-1:40001" in pod[0]
    # either side: client-0 sends flow 0 and receives the reply (flow 7)
    assert len(observe(hubble, "--pod", "bar/client-0")) == 2
    assert len(observe(hubble, "-n", "bar", "--pod", "client-0")) == 2
    foo = observe(hubble, "--namespace", "foo")
    assert len(foo) == 1 and "foo/web-1" in foo[0]
    dropped = observe(hubble, "--verdict", "DROPPED")
    assert len(dropped) == 1 and dropped[0].endswith("DROPPED (TCP Flags: SYN)")
    assert len(observe(hubble, "--not", "--verdict", "DROPPED")) == 7
    # bar's flows but those from or to client-0 (flows 0 and 7)
    assert len(observe(hubble, "-n", "bar", "--not", "--pod", "bar/client-0")) == 5
    # everything in bar involves echo-def
    assert observe(hubble, "-n", "bar", "--not", "--pod", "bar/echo-def") == []
    assert len(observe(hubble, "--to-port", "5432")) == 1
    assert len(observe(hubble, "--from-label", "app=web")) == 1
    assert len(observe(hubble, "-t", "drop")) == 1
    assert len(observe(hubble, "--ip", "10.0.0.2", "--protocol", "tcp")) == 1
    assert len(observe(hubble, "--tcp-flags", "ACK")) == 1


def test_observe_outputs(hubble: RunningHubble) -> None:
    lines = observe(hubble, "--last", "2", "-o", "json")
    docs = [json.loads(line) for line in lines]
    assert [d["flow"]["destination"]["pod_name"] for d in docs] == ["db-0", "client-0"]
    assert docs[0]["node_name"] == "default/node1" and docs[0]["time"].endswith("06Z")
    assert observe(hubble, "--last", "1", "-o", "jsonpb") == lines[1:]
    assert observe(hubble, "--last", "2", "-o", "dict")[6] == "------------"
    table = observe(hubble, "--last", "2", "-o", "table")
    assert table[0].split() == ["TIMESTAMP", "SOURCE", "DESTINATION", "TYPE", "VERDICT",
                                "SUMMARY"]
    assert len(table) == 3


def test_follow_prints_flows_added_after_it_started(fresh_hubble: RunningHubble) -> None:
    fresh_hubble.add(pod_flow(0, ns="live"))
    proc = subprocess.Popen([*HEXLANE, "hubble", "observe", "--server", fresh_hubble.unix,
                             "-f", "--last", "1", "-n", "live"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = _read_line(proc, 15)
        assert "live/client-0" in first
        fresh_hubble.add(pod_flow(1, ns="other"), pod_flow(2, ns="live"))
        second = _read_line(proc, 10)
        assert "live/client-2:40002" in second
    finally:
        proc.terminate()
        proc.wait(10)
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()


def _read_line(proc: subprocess.Popen[str], timeout: float) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sel.select(deadline - time.monotonic()):
            return proc.stdout.readline()
    raise AssertionError(f"no line within {timeout}s (exit {proc.poll()})")


def test_status_and_lists(hubble: RunningHubble) -> None:
    code, out, _ = run("hubble", "status", "--server", hubble.unix)
    assert code == 0 and out.splitlines() == [
        f"Healthcheck (via {hubble.unix}): Ok",
        "Current/Max Flows: 8/63 (12.70%)",
        "Flows/s: 0.00",
    ]
    assert run("hubble", "list", "namespaces", "--server", hubble.unix)[1] == (
        "NAMESPACE\nbar\nfoo\n")
    _, nodes, _ = run("hubble", "list", "nodes", "--server", f"unix-abstract:{hubble.abstract}")
    assert nodes.splitlines()[1].split()[:2] == ["default/node1", "Connected"]


def test_default_server_is_the_node_s_socket(hubble: RunningHubble,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run("hubble", "observe", "--last", "1", "--state-dir", str(hubble.state_dir))
    assert code == 0 and "bar/client-0" in out
    monkeypatch.setenv("HEXLANE_STATE_DIR", str(hubble.state_dir))
    assert run("hubble", "status")[1].startswith(f"Healthcheck (via {hubble.unix}): Ok")


def test_mutual_tls(tls_hubble: RunningHubble, pki: dict[str, CertPair]) -> None:
    server = ("--server", f"127.0.0.1:{tls_hubble.port}", "--tls",
              "--tls-ca-cert-files", str(pki["ca"].cert),
              "--tls-server-name", "node1.default.hubble-grpc.cilium.io")
    client = ("--tls-client-cert-file", str(pki["client"].cert),
              "--tls-client-key-file", str(pki["client"].key))
    code, out, err = run("hubble", "observe", "--last", "2", *server, *client)
    assert code == 0, err
    assert len(out.splitlines()) == 2
    code, _, err = run("hubble", "status", *server, "--timeout", "2")
    assert code == 1
    assert err.startswith("error: ") and f"127.0.0.1:{tls_hubble.port}" in err
    assert err.count("\n") == 1


def test_errors_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "none.sock"
    proc = hexlane("hubble", "observe", "--server", f"unix://{missing}")  # the real command
    assert proc.returncode == 1
    assert proc.stderr == (f"error: cannot reach the Hubble server at unix://{missing}: "
                           "No such file or directory\n")
    code, _, err = run("hubble", "observe", "--server", "unix:///x", "--pod", "a",
                       "--from-pod", "b")
    assert code == 2
    assert err == "error: --from-pod: filters --pod and --from-pod cannot be combined\n"
    assert run("hubble", "observe", "--server", "nowhere")[0] == 2


def test_since_until(hubble: RunningHubble) -> None:
    since = "2024-12-04T10:00:06Z"
    assert len(observe(hubble, "--since", since)) == 2
    assert len(observe(hubble, "--since", since, "--until", "2024-12-04T10:00:06.5Z")) == 1
    assert observe(hubble, "--since", "1m") == []  # the synthetic flows are from 2024
    assert BASE_NS  # the times above are BASE_NS + 6 s and + 7 s
