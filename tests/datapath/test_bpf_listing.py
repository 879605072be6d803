"""`hexlane bpf lb list`, `bpf lb maglev list` and `bpf drops` read back the pinned maps.

Pins down: the listing shows each frontend with type, algorithm and its backends by slot; the
Maglev listing gives the backend address for every slot of the table (JSON) and each
backend's share (text); drops by reason; a missing --bpf-root is a one-line error.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from bpf_lbsetup import Services

from helpers import packets
from hexlane.cli.main import main
from hexlane.datapath import libbpf
from hexlane.datapath.lb.loader import PROGRAM_FROM_POD, LbDatapath
from hexlane.lb.maglev import MaglevBackend, build_table
from hexlane.lb.services import LOAD_BALANCER


@pytest.mark.root
def test_lb_and_maglev_listings(lb: LbDatapath, services: Services,
                                capsys: pytest.CaptureFixture[str]) -> None:
    root = str(lb.bpf_root)
    backends = [(801, "10.244.80.1", 8080), (802, "10.244.80.2", 8080)]
    table = build_table([MaglevBackend(i, a, p) for i, a, p in backends], lb.table_size)
    services.add("192.168.1.240", 80, packets.TCP, 80, backends, type=LOAD_BALANCER,
                 algorithm="maglev", maglev=table)

    assert main(["bpf", "lb", "list", "--bpf-root", root, "-o", "json"]) == 0
    rows = {r["frontend"]: r for r in json.loads(capsys.readouterr().out)}
    row = rows["192.168.1.240:80/TCP"]
    assert (row["type"], row["algorithm"], row["rev_nat_index"]) == ("LoadBalancer", "maglev", 80)
    assert [(b["slot"], b["address"]) for b in row["backends"]] == [
        (1, "10.244.80.1:8080/TCP"), (2, "10.244.80.2:8080/TCP")]

    assert main(["bpf", "lb", "maglev", "list", "--bpf-root", root, "-o", "json"]) == 0
    tables = {t["rev_nat_index"]: t for t in json.loads(capsys.readouterr().out)}
    listed = tables[80]
    assert listed["frontend"] == "192.168.1.240:80/TCP"
    assert len(listed["slots"]) == lb.table_size
    by_id = {i: f"{a}:{p}/TCP" for i, a, p in backends}
    assert listed["slots"] == [by_id[i] for i in table]

    assert main(["bpf", "lb", "maglev", "list", "--bpf-root", root]) == 0
    text = capsys.readouterr().out
    share = Counter(table)
    assert f"{share[801]:>7} slots" in text and "10.244.80.1:8080/TCP" in text


@pytest.mark.root
def test_drops_listing(lb: LbDatapath, capsys: pytest.CaptureFixture[str],
                       run: Callable[[str, bytes], libbpf.TestRunResult]) -> None:
    run(PROGRAM_FROM_POD, packets.build("10.0.1.5", "10.96.0.10", 40000, 80)[:44])
    assert main(["bpf", "drops", "--bpf-root", str(lb.bpf_root), "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["truncated"] >= 1


def test_missing_root_is_a_one_line_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bpf", "lb", "list", "--bpf-root", str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no pinned map") and err.count("\n") == 1
