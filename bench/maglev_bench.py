"""Maglev table build time, Python against C, and disruption when a backend goes.

Run: ``.venv/bin/python bench/maglev_bench.py`` (compiles bench/c/maglev.c with gcc -O2).

For (M=16381, N=100) and (M=65521, N=1000) it times hexlane.lb.maglev.build_table (cold: the
MurmurHash3 cache emptied before every run, so each run hashes every backend) against two C
builds of the same table, checks all three tables are identical, and prints the ratios:
- "perm": Cilium's own shape, an N x M permutation array computed up front, then the turns;
- "lazy": the same turns computing each next preference on the fly (the fastest simple C).
Then it removes one backend and reports which share of the other backends' slots moved.
Best of several runs each; absolute times are context, the ratios are the result.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hexlane.lb import hashing
from hexlane.lb.maglev import DEFAULT_HASH_SEED, MaglevBackend, build_table, parse_hash_seed

HERE = Path(__file__).resolve().parent
CASES = ((16381, 100), (65521, 1000))


def backends(n: int) -> list[MaglevBackend]:
    return [MaglevBackend(i + 1, f"10.{(i >> 8) & 255}.{i & 255}.{1 + i % 200}", 8080)
            for i in range(n)]


def compile_c(workdir: Path) -> Path:
    exe = workdir / "maglev"
    subprocess.run(["gcc", "-O2", "-o", str(exe), str(HERE / "c" / "maglev.c")], check=True)
    return exe


def run_c(
    exe: Path, mode: str, m: int, bs: list[MaglevBackend], repeat: int,
) -> tuple[float, list[int]]:
    seed = parse_hash_seed(DEFAULT_HASH_SEED).murmur
    lines = [f"{m} {seed} {len(bs)}"] + [f"{b.id} {b.weight} {b.hash_string()}" for b in bs]
    out = subprocess.run([str(exe), mode, str(repeat)], input="\n".join(lines) + "\n",
                         capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "ns"
    return int(out[1]) / 1e9, [int(x) for x in out[2:]]


def time_python(m: int, bs: list[MaglevBackend], repeat: int) -> tuple[float, list[int]]:
    best = float("inf")
    table: list[int] = []
    for _ in range(repeat):
        hashing.murmur3_x64_128_cached.cache_clear()
        t0 = time.perf_counter()
        table = build_table(bs, m)
        best = min(best, time.perf_counter() - t0)
    return best, table


def disruption(m: int, n: int) -> tuple[float, int]:
    """Share of the surviving backends' slots that change owner when one backend goes."""
    bs = backends(n)
    before = build_table(bs, m)
    removed = bs[n // 2].id
    after = build_table([b for b in bs if b.id != removed], m)
    moved = sum(1 for b, a in zip(before, after, strict=True) if b != removed and a != b)
    survivors = sum(1 for b in before if b != removed)
    return moved / survivors, moved


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    print(f"# Maglev build benchmark, {datetime.date.today()}, "
          f"Python {platform.python_version()}, {platform.machine()}")
    with tempfile.TemporaryDirectory() as tmp:
        exe = compile_c(Path(tmp))
        print(f"{'M':>6} {'N':>5} {'python ms':>10} {'C perm ms':>10} {'C lazy ms':>10} "
              f"{'py/perm':>8} {'py/lazy':>8}  tables equal")
        for m, n in CASES:
            bs = backends(n)
            py_s, py_table = time_python(m, bs, args.repeat)
            perm_s, perm_table = run_c(exe, "perm", m, bs, max(1, args.repeat // 2))
            lazy_s, lazy_table = run_c(exe, "lazy", m, bs, args.repeat)
            equal = py_table == perm_table == lazy_table
            print(f"{m:>6} {n:>5} {py_s * 1e3:>10.1f} {perm_s * 1e3:>10.1f} "
                  f"{lazy_s * 1e3:>10.2f} {py_s / perm_s:>7.2f}x {py_s / lazy_s:>7.1f}x  {equal}")
            if not equal:
                print("ERROR: the tables differ", file=sys.stderr)
                return 1
    print("\n# Disruption: one backend of N removed")
    print(f"{'M':>6} {'N':>5} {'moved slots':>12} {'share of survivors':>19}")
    for m, n in ((16381, 100), (65521, 1000), (16381, 10)):
        share, moved = disruption(m, n)
        print(f"{m:>6} {n:>5} {moved:>12} {share * 100:>18.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
