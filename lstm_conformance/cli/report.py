"""``lstm-conformance report merge DIR... --output DIR``: one report from several suite runs (a CI matrix).

Each DIR is a ``--lstm-report`` directory of one job; its ``report.json`` is read and validated (a file that is
not such a report is one line on stderr, exit 2, and nothing is written). The merged ``report.json`` and
``report.html`` hold every job's tests (so every job's matrix rows, checks summed), each job's settings and
environment under its label (the directory's name), and the tests that two jobs judged differently.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from lstm_conformance.reference.errors import InputFileError

_FIX = "pass the --lstm-report directories (or report.json files) of suite runs"


def job_labels(directories: list[Path]) -> list[str]:
    """Each job's name in the merged report: its directory's name (``reports/torch-cpu`` -> ``torch-cpu``),
    with the parent's name prefixed where two directories share a name."""
    names = [d.resolve().name for d in directories]
    return [
        f"{d.resolve().parent.name}/{name}" if names.count(name) > 1 else name
        for d, name in zip(directories, names, strict=True)
    ]


def read_jobs(paths: list[Path]) -> list[tuple[str, str]]:
    """(label, report.json text) per directory or file, each validated; InputFileError for the first bad one."""
    from lstm_conformance.conformance.report import ReportFileError, read_summary

    files = [path / "report.json" if path.is_dir() else path for path in paths]
    jobs = []
    for label, file in zip(job_labels([f.parent for f in files]), files, strict=True):
        if not file.is_file():
            raise InputFileError(f"{file}: no such report.json; {_FIX}")
        try:
            text = file.read_text(encoding="utf-8")
            read_summary(text)
        except UnicodeDecodeError:
            raise InputFileError(f"{file}: not a text file; {_FIX}") from None
        except ReportFileError as error:
            raise InputFileError(f"{file}: {error}; {_FIX}") from None
        jobs.append((label, text))
    return jobs


def report_command(args: argparse.Namespace) -> int:
    from lstm_conformance.conformance import report

    jobs = read_jobs([Path(d) for d in args.directories])
    try:
        summary = report.merge(jobs)
    except report.ReportFileError as error:
        raise InputFileError(f"{error}; {_FIX}") from None
    written = report.write_files(summary, Path(args.output))
    for line in report.terminal_lines(summary):
        print(line)
    print(f"report written: {', '.join(str(path) for path in written)}")
    return 1 if summary.verdict == "FAILED" else 0
