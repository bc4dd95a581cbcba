"""The pytest plugin (``pytest11`` entry point ``lstm_conformance``), loaded in every pytest run where the package
is installed.

Inert unless the suite runs: it adds the ``--lstm-*`` options and validates their values (strings only; the
registry is imported only when implementations are named), and its report hooks act only on test reports that
carry the suite's records. It imports no framework, collects no test and prints nothing in other runs.

How the suite is collected: its test modules live in the package (``conformance/suite/``), so
``pytest --pyargs lstm_conformance.conformance.suite [options]`` collects them wherever the package is installed,
and ``lstm-conformance check`` (``lstm_conformance.cli.check``) runs exactly that. The plugin does not inject
items into other runs; the suite's ``pytest_generate_tests`` reads the settings this plugin parsed.

The report: each suite test appends a record (implementation, check, case, dtype, device, mode, measured worst
error as a fraction of its tolerance, ...) to its ``user_properties``; ``pytest_runtest_logreport`` gathers them
(on the xdist controller, from every worker's reports), and ``pytest_terminal_summary`` prints the conformance
matrix and, with ``--lstm-report DIR``, writes ``DIR/report.json`` and ``DIR/report.html``.
"""

from __future__ import annotations

from typing import Any

import pytest

from lstm_conformance.conformance.settings import SuiteSettings, add_options, parse_settings

#: The user_properties key of a suite test's record.
RECORD_KEY = "lstm_conformance"

_SETTINGS = pytest.StashKey[SuiteSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SETTINGS] = parse_settings(config)
    config.pluginmanager.register(ReportCollector(config), "lstm_conformance_report")


def suite_settings(config: pytest.Config) -> SuiteSettings:
    """The parsed options (the suite's modules call this)."""
    try:
        return config.stash[_SETTINGS]
    except KeyError:
        raise pytest.UsageError("the lstm_conformance plugin is disabled (-p no:lstm_conformance)") from None


def _record_of(report: pytest.TestReport) -> dict[str, Any] | None:
    for entry in report.user_properties:
        if len(entry) == 2 and entry[0] == RECORD_KEY and isinstance(entry[1], dict):
            return dict(entry[1])
    return None


def _outcome(report: pytest.TestReport) -> tuple[str, str]:
    """(outcome, reason) with the outcomes the matrix counts; an xfail that passed is "xpassed"."""
    if report.skipped:
        if hasattr(report, "wasxfail"):
            return "xfailed", str(report.wasxfail)
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
        return "skipped", reason.removeprefix("Skipped: ")
    if report.failed:
        text = str(report.longrepr)
        if "XPASS(strict)" in text:
            return "xpassed", text.replace("[XPASS(strict)] ", "")
        return "failed", text.splitlines()[0] if text else ""
    return ("xpassed", str(report.wasxfail)) if hasattr(report, "wasxfail") else ("passed", "")


class ReportCollector:
    """Gathers the suite's records from test reports (every worker's, on the xdist controller) and prints the
    matrix at the end; does nothing in runs without suite tests."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[dict[str, Any]] = []

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        record = _record_of(report)
        if record is None:
            return
        record["nodeid"] = report.nodeid
        record["outcome"], record["reason"] = _outcome(report)
        record["duration"] = round(report.duration, 4)
        self.results.append(record)

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results or hasattr(self.config, "workerinput"):
            return
        from lstm_conformance.conformance import report

        settings = self.config.stash[_SETTINGS]
        summary = report.build(self.results, settings)
        terminalreporter.write_sep("=", "lstm-conformance matrix")
        for line in report.terminal_lines(summary):
            terminalreporter.write_line(line)
        if settings.report_dir is not None:
            written = report.write_files(summary, settings.report_dir)
            terminalreporter.write_line(f"report written: {', '.join(str(path) for path in written)}")
