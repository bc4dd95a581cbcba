"""Time the conformance suite's default matrix with pytest-xdist and serially, side by side.

    .venv/bin/python benchmarks/bench_suite.py                 # -n 2 then -n 0, every installed implementation
    .venv/bin/python benchmarks/bench_suite.py --workers 2 0 -- --lstm-implementations reference,torch

Prints, per run: tests by outcome, checks (tensor comparisons, counted by the suite's report), wall time, checks
per second, and the speedup of each run over the last one given (serial by default). Target (issue 4): at least
1,000 checks in under 3 minutes with -n 2 on the 2-core CI machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class SuiteRun:
    workers: str
    exit: int
    wall_s: float
    checks: int
    outcomes: dict[str, int]


def run_suite(workers: str, extra: list[str], report_dir: Path) -> SuiteRun:
    command = [
        sys.executable,
        "-m",
        "pytest",
        "--pyargs",
        "lstm_conformance.conformance.suite",
        "-q",
        "-p",
        "no:cacheprovider",
        "-n",
        workers,
        f"--lstm-report={report_dir}",
        *extra,
    ]
    started = time.perf_counter()
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    report_file = report_dir / "report.json"
    if not report_file.exists():
        sys.stderr.write(completed.stdout[-3000:] + completed.stderr[-3000:])
        raise SystemExit(f"-n {workers}: the suite wrote no report (exit {completed.returncode})")
    report = json.loads(report_file.read_text())
    return SuiteRun(workers, completed.returncode, wall, int(report["total_checks"]), dict(report["outcomes"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", nargs="+", default=["2", "0"], help="xdist -n values, run in this order")
    parser.add_argument("extra", nargs="*", help="more pytest options for every run (after --)")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="bench_suite_") as scratch:
        for workers in args.workers:
            result = run_suite(workers, args.extra, Path(scratch) / f"n{workers}")
            results.append(result)
            outcomes = ", ".join(f"{v} {k}" for k, v in result.outcomes.items() if v)
            print(
                f"-n {workers:>4}: {result.checks} checks in {outcomes} tests; wall {result.wall_s:.1f} s; "
                f"{result.checks / result.wall_s:.1f} checks/s; exit {result.exit}",
                flush=True,
            )
    baseline = results[-1]
    for result in results[:-1]:
        print(f"speedup of -n {result.workers} over -n {baseline.workers}: {baseline.wall_s / result.wall_s:.2f}x")
    first = results[0]
    verdict = "meets" if first.checks >= 1000 and first.wall_s < 180 else "misses"
    print(f"target (>= 1000 checks in < 180 s with -n {first.workers}): {verdict}")


if __name__ == "__main__":
    main()
