"""What a `hexlane connectivity test --kubeconfig` probe pod runs: `hexlane connectivity serve`.

The pod runs hexlane's image. It serves the echo the matrix's backends answer with (the lab
workload's: `/whoami` over HTTP on each `--tcp` port, `<pod> <datagram>` on each `--udp`
port, `hexlane.lab.workload.serve`), and with `--plan NAME` it also probes: it reads the
ConfigMap NAME of its namespace (`conncheck.plan_configmap`) every second until the plan
holds jobs for this pod, runs them (at most `PER_SOURCE` at once), and creates the ConfigMap
`conncheck.result_name(pod)` holding the results of that run (`conncheck.result_configmap`).
The pod reaches the API as any pod does (its ServiceAccount's token; in the lab, what the lab
kubelet hands hexlane-image commands: docs/lab.md). It then waits for the next run until it
is stopped.

The probes do what the `--lab` path runs curl and `conncheck.UDP_PROBE` for, from inside the
pod and with nothing but Python (hexlane's image has no curl): each TCP job opens
`connections` new connections (20 at once, each with a 0.9 s connect timeout and the cell's
`CURL_MAX_TIME` for the whole exchange), sends one request with `Connection: close` (GET
/whoami; a POST of UPLOAD_BYTES for uploads; GET /version over TLS, the certificate not
checked, for HTTPS) and records who answered (`conncheck.Answer`) or the error in curl's
words; UDP jobs run `conncheck.UDP_PROBE` and `conncheck.parse_udp`. What they return is a
`conncheck.ProbeResult`, which the command judges with the same `conncheck.judge` as the
lab's.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import secrets
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path

from hexlane.k8s.client import ApiError, KubeClient, load_client_config
from hexlane.k8s.ratelimit import RateLimiter

from . import conncheck as cc
from .workload import serve

log = logging.getLogger("hexlane.connectivity.serve")

PER_SOURCE = 3  # jobs run at once (as the lab path runs a source's cells)
PARALLEL = 20  # connections of one TCP job open at once (curl --parallel-max 20)
CONNECT_TIMEOUT = 0.9
POLL = 1.0


def _error(e: BaseException) -> str:
    """An error in the words `conncheck._curl_error` gives curl's."""
    if isinstance(e, TimeoutError):
        return "timeout"
    if isinstance(e, ConnectionRefusedError):
        return "refused"
    if isinstance(e, ConnectionResetError):
        return "reset"
    if isinstance(e, OSError):
        if e.errno == errno.EHOSTUNREACH:
            return "no route to host"
        if e.errno == errno.ENETUNREACH:
            return "unreachable"
        return (e.strerror or str(e))[:40]
    return str(e)[:40] or type(e).__name__


def _request(job: cc.Job, i: int, body: bytes) -> bytes:
    host = f"{job.address}:{job.port}"
    if job.check == cc.CHECK_HTTPS:
        return f"GET /version HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()
    if job.check == cc.CHECK_UPLOAD:
        return (f"POST /whoami?{i} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n"
                f"Content-Type: application/octet-stream\r\n"
                f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    return f"GET /whoami?{i} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode()


def parse_response(job: cc.Job, data: bytes) -> tuple[cc.Answer | None, str]:
    """An HTTP response read to its end: the answer, or the error (pure)."""
    if not data:
        return None, "empty reply"
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].split()
    code = status[1].decode(errors="replace") if len(status) >= 2 else ""
    if job.check == cc.CHECK_HTTPS:
        if code.isdigit():
            return cc.Answer(job.backend, http_status=code), ""
        return None, "bad answer"
    if code != "200":
        return None, f"HTTP {code or '000'}"
    try:
        doc = json.loads(body)
        received = doc.get("received")
        return cc.Answer(str(doc["pod"]), client_ip=str(doc["client_ip"]),
                         received=received if isinstance(received, int) else None), ""
    except (ValueError, KeyError, TypeError, AttributeError):
        return None, "bad answer"


async def _connection(job: cc.Job, i: int, body: bytes, tls: ssl.SSLContext | None
                      ) -> tuple[cc.Answer | None, str, int | None]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + cc.CURL_MAX_TIME[job.check]
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            job.address, job.port, ssl=tls, server_hostname="" if tls else None),
            CONNECT_TIMEOUT)
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return None, _error(e), None
    port = (writer.get_extra_info("sockname") or ("", None))[1]
    try:
        writer.write(_request(job, i, body))
        await asyncio.wait_for(writer.drain(), max(0.01, deadline - loop.time()))
        data = await asyncio.wait_for(reader.read(), max(0.01, deadline - loop.time()))
    except (OSError, TimeoutError, ssl.SSLError) as e:
        return None, _error(e), None
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)
    answer, error = parse_response(job, data)
    return answer, error, port if answer is not None else None


async def tcp_probe(job: cc.Job, upload: bytes) -> cc.ProbeResult:
    """`job.connections` new TCP connections, PARALLEL at a time."""
    tls = None
    if job.check == cc.CHECK_HTTPS:
        tls = ssl.create_default_context()
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    limit = asyncio.Semaphore(PARALLEL)
    body = upload if job.check == cc.CHECK_UPLOAD else b""

    async def one(i: int) -> tuple[cc.Answer | None, str, int | None]:
        async with limit:
            return await _connection(job, i, body, tls)
    outcomes = await asyncio.gather(*(one(i) for i in range(1, job.connections + 1)))
    answers = tuple(a for a, _, _ in outcomes if a is not None)
    errors = tuple(e for a, e, _ in outcomes if a is None)
    ports = tuple(p for a, _, p in outcomes if a is not None and p is not None)
    return cc.ProbeResult(f"{job.address}:{job.port}", job.connections, answers, errors,
                          ports)


async def udp_probe(job: cc.Job) -> cc.ProbeResult:
    """`conncheck.UDP_PROBE` with this Python, judged by `conncheck.parse_udp`."""
    nonce = secrets.token_hex(4)
    argv = cc.udp_argv(sys.executable, job.address, job.port, job.connections, nonce)
    target = f"{job.address}:{job.port}"
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(),
                                          cc.job_timeout(job.check, job.connections))
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return cc.ProbeResult(target, job.connections, failure="the UDP probe did not end")
    if proc.returncode != 0:
        return cc.ProbeResult(target, job.connections, failure=(
            f"exit {proc.returncode}: {err.decode(errors='replace').strip()[-200:]}"))
    return cc.parse_udp(out.decode(errors="replace"), job.connections, job.address, job.port,
                        nonce)


async def run_job(job: cc.Job, upload: bytes) -> cc.ProbeResult:
    if job.proto == cc.UDP:
        return await udp_probe(job)
    return await tcp_probe(job, upload)


async def run_jobs(jobs: Sequence[cc.Job]) -> dict[int, cc.ProbeResult]:
    """Every job, PER_SOURCE at once: their results by job id."""
    upload = os.urandom(cc.UPLOAD_BYTES)
    limit = asyncio.Semaphore(PER_SOURCE)

    async def one(job: cc.Job) -> tuple[int, cc.ProbeResult]:
        async with limit:
            return job.id, await run_job(job, upload)
    return dict(await asyncio.gather(*(one(j) for j in jobs)))


async def probe_loop(client: KubeClient, namespace: str, pod: str, plan: str) -> None:
    """Wait for runs of the plan that hold jobs for `pod`; run each once; write results."""
    path = f"/api/v1/namespaces/{namespace}/configmaps"
    done: set[str] = set()
    while True:
        try:
            run, jobs = cc.read_plan(await client.request("GET", f"{path}/{plan}"), pod)
        except ApiError as e:
            if not e.not_found:
                log.warning("reading the plan %s/%s: %s", namespace, plan, e)
            await asyncio.sleep(POLL)
            continue
        except (OSError, ValueError, KeyError, TypeError) as e:  # OSError: no answer
            log.warning("reading the plan %s/%s: %s", namespace, plan, e)
            await asyncio.sleep(POLL)
            continue
        if run in done or not jobs:
            await asyncio.sleep(POLL)
            continue
        log.info("run %s: %d job(s)", run, len(jobs))
        try:
            results = await run_jobs(jobs)
        except Exception as e:  # a bug reaches the command as each cell's failure, not silence
            log.exception("run %s failed", run)
            results = {j.id: cc.ProbeResult(f"{j.address}:{j.port}", j.connections,
                                            failure=f"the probe pod failed: {e!r}"[:200])
                       for j in jobs}
        body = cc.result_configmap(pod, run, results)
        while True:
            try:
                await client.request("POST", path, body=body)
                break
            except ApiError as e:
                if e.conflict:
                    break  # written already (a restart of this pod)
                log.warning("writing the results of run %s: %s; retrying", run, e)
            except OSError as e:  # no answer (the transport's TransportError)
                log.warning("writing the results of run %s: %s; retrying", run, e)
            await asyncio.sleep(POLL)
        log.info("run %s: results written to %s", run, cc.result_name(pod))
        done.add(run)


async def main(pod: str, namespace: str, tcp: Sequence[int], udp: Sequence[int],
               plan: str | None, ready_file: Path | None) -> None:
    """Serve until SIGTERM; with `plan`, probe meanwhile."""
    prober: asyncio.Task[None] | None = None
    client: KubeClient | None = None
    if plan:
        client = KubeClient(load_client_config(None, None), RateLimiter(5, 10), timeout=10.0)
        prober = asyncio.create_task(probe_loop(client, namespace, pod, plan))
    try:
        await serve(pod, os.environ.get("NODE_NAME", ""), tcp, udp, ready_file)
    finally:
        if prober is not None:
            prober.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prober
        if client is not None:
            await client.aclose()
