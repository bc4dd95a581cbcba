"""The pytest plugin (``pytest11`` entry point ``lstm_conformance``), loaded in every pytest run where the package
is installed.

Inert unless the suite runs: it adds the ``--lstm-*`` options and validates their values (strings only; the
registry is imported only when implementations are named), and its report hooks act only on test reports that
carry the suite's records. It imports no framework, collects no test and prints nothing in other runs.

How the suite is collected: its test modules live in the package (``conformance/suite/``), so
``pytest --pyargs lstm_conformance.conformance.suite [options]`` collects them wherever the package is installed,
and ``lstm-conformance check`` (``lstm_conformance.cli.check``) runs exactly that. The plugin does not inject
items into other runs; the suite's ``pytest_generate_tests`` reads the settings this plugin parsed.

The report: each suite test appends a record (``report.SuiteRecord``) to its ``user_properties``;
``pytest_runtest_logreport`` gathers them (on the xdist controller, from every worker's reports) with the
versions of the frameworks each process had imported (``ENVIRONMENT_KEY``, attached by the process that ran
the test whenever that set grows), counts the warnings tests raised, and ``pytest_terminal_summary`` prints the
console page and, with ``--lstm-report DIR``, writes ``DIR/report.json`` and ``DIR/report.html``.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

import pytest

from lstm_conformance.conformance.settings import SuiteSettings, add_options, parse_settings

if TYPE_CHECKING:
    from lstm_conformance.conformance.report import SuiteRecord, SuiteResult

#: The user_properties key of a suite test's record.
RECORD_KEY = "lstm_conformance"
#: The user_properties key of the framework versions (and CUDA facts) the test's process had imported.
ENVIRONMENT_KEY = "lstm_conformance_environment"
PROGRESS_CHOICES = ("on", "auto", "off")

_SETTINGS = pytest.StashKey[SuiteSettings]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    parser.getgroup("lstm-conformance").addoption(
        "--lstm-progress",
        default="on",
        choices=PROGRESS_CHOICES,
        help="pytest's per-test progress characters for suite tests: on (pytest's own, the default of plain "
        "pytest), auto (on only when the output is a terminal; lstm-conformance check's default), off",
    )


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_SETTINGS] = parse_settings(config)
    config.pluginmanager.register(ReportCollector(config), "lstm_conformance_report")


def suite_settings(config: pytest.Config) -> SuiteSettings:
    """The parsed options (the suite's modules call this)."""
    try:
        return config.stash[_SETTINGS]
    except KeyError:
        raise pytest.UsageError("the lstm_conformance plugin is disabled (-p no:lstm_conformance)") from None


def _record_of(properties: list[tuple[str, object]]) -> SuiteRecord | None:
    for entry in properties:
        if len(entry) == 2 and entry[0] == RECORD_KEY and isinstance(entry[1], dict):
            return entry[1]  # type: ignore[return-value]
    return None


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip().removeprefix("E").strip().removeprefix("AssertionError: ").removeprefix("Failed: ")
    return ""


def _failure_text(report: pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    message = getattr(crash, "message", None)
    return str(message) if message else str(report.longrepr)


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
        return "failed", _first_line(_failure_text(report))
    return ("xpassed", str(report.wasxfail)) if hasattr(report, "wasxfail") else ("passed", "")


def _reproduce_line(report: pytest.TestReport) -> str | None:
    for line in _failure_text(report).splitlines():
        if "reproduce alone: " in line:
            return line.partition("reproduce alone: ")[2].strip()
    return None


class ReportCollector:
    """Gathers the suite's records from test reports (every worker's, on the xdist controller), the framework
    versions and warnings, and prints the console page at the end; does nothing in runs without suite tests."""

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.results: list[SuiteResult] = []
        self.frameworks: dict[str, str] = {}
        self.cuda: dict[str, str] = {}
        self.warnings: Counter[tuple[str, str, str]] = Counter()
        self._attached: tuple[dict[str, str], dict[str, str]] = ({}, {})
        progress = str(config.getoption("--lstm-progress", "on"))
        self.quiet_progress = progress == "off" or (progress == "auto" and not sys.stdout.isatty())

    # -- in the process that runs the test (an xdist worker, or the only process) ---------------------------

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call: pytest.CallInfo[None]) -> None:
        """Attach the frameworks this process has imported to the test's report when that set has grown (the
        report copies ``item.user_properties`` after this hook)."""
        if call.when != "call":
            return
        record = _record_of(item.user_properties)
        if record is None:
            return
        from lstm_conformance.conformance.environment import cuda_versions, framework_versions

        extra = tuple(party.spec.partition(":")[0].split(".")[0] for party in suite_settings(self.config).third_party)
        frameworks = framework_versions(extra)
        cuda = cuda_versions() if record.get("device") == "cuda" else self._attached[1]
        if (frameworks, cuda) != self._attached:
            self._attached = (frameworks, cuda)
            item.user_properties.append((ENVIRONMENT_KEY, {"frameworks": frameworks, "cuda": cuda}))

    # -- on the controller (or the only process) --------------------------------------------------------------

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.when != "call":
            return
        record = _record_of(report.user_properties)
        if record is None:
            return
        from lstm_conformance.conformance.report import SuiteResult

        for key, value in report.user_properties:
            if key == ENVIRONMENT_KEY and isinstance(value, dict):
                self.frameworks.update(value.get("frameworks", {}))
                self.cuda.update(value.get("cuda", {}))
        outcome, reason = _outcome(report)
        reproduce = _reproduce_line(report) if outcome == "failed" else None
        if outcome in ("failed", "xpassed") and reproduce is None:
            reproduce = self._reproduce_command(report.nodeid, record)
        self.results.append(
            SuiteResult.from_record(
                record,
                nodeid=report.nodeid,
                outcome=outcome,
                reason=reason,
                duration=round(report.duration, 4),
                reproduce=reproduce,
            )
        )

    def _reproduce_command(self, nodeid: str, record: SuiteRecord) -> str:
        owners = tuple(name for name in (record.get("implementation"), record.get("partner")) if name)
        name = nodeid.rpartition("::")[2]
        return f"lstm-conformance check -k '{name}' {suite_settings(self.config).reproduce_options(owners)}"

    def pytest_warning_recorded(self, warning_message: Any, when: str, nodeid: str, location: Any) -> None:
        """Count the warnings raised while suite tests ran (frameworks' own, such as torch's oneDNN note)."""
        if not nodeid:  # raised outside any test (collection, configuration): pytest's business
            return
        message = str(getattr(warning_message, "message", warning_message)).strip().splitlines()
        category = getattr(getattr(warning_message, "category", None), "__name__", "Warning")
        filename = str(getattr(warning_message, "filename", ""))
        self.warnings[(category, message[0] if message else "", _source_package(filename))] += 1

    @pytest.hookimpl(wrapper=True)
    def pytest_report_teststatus(self, report: pytest.TestReport, config: pytest.Config) -> Generator[None, Any, Any]:
        """With --lstm-progress off (or auto, writing to a file or pipe), suite tests print no progress
        character: the counts are in the final summary; pytest's own words and counts are kept."""
        status = yield
        quiet = self.quiet_progress and config.get_verbosity() <= 0 and isinstance(status, tuple)
        if quiet and len(status) == 3 and (report.when != "call" or _record_of(report.user_properties) is not None):
            return (status[0], "", "")
        return status

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not self.results or hasattr(self.config, "workerinput"):
            return
        from lstm_conformance.conformance import report

        summary = self.summary()
        terminalreporter.write_sep("=", "lstm-conformance matrix")
        for line in report.terminal_lines(summary):
            terminalreporter.write_line(line)
        report_dir = self.config.stash[_SETTINGS].report_dir
        if report_dir is not None:
            written = report.write_files(summary, report_dir)
            terminalreporter.write_line(f"report written: {', '.join(str(path) for path in written)}")

    def summary(self) -> Any:
        from lstm_conformance.conformance import cases, report
        from lstm_conformance.conformance.environment import machine_environment

        settings = self.config.stash[_SETTINGS]
        not_run_lines = getattr(cases, "not_run_lines", None)
        variants = {
            f"{name}:{variant}": ", ".join(f"{key}={value}" for key, value in options.items())
            for name, listed in cases.IMPLEMENTATION_VARIANTS.items()
            for variant, options in listed
        }
        run = report.RunInfo(
            profile=str(getattr(settings, "profile", "standard")),
            seed=settings.seed,
            max_examples=settings.max_examples,
            allow_tf32=settings.allow_tf32,
            devices=settings.devices,
            dtypes=settings.dtypes,
            variants=variants,
        )
        groups = [report.WarningGroup(c, m, s, n) for (c, m, s), n in self.warnings.items()]
        return report.build(
            self.results,
            run,
            machine_environment(self.frameworks, self.cuda),
            not_run=list(not_run_lines(settings)) if callable(not_run_lines) else [],
            warnings=groups,
        )


def _source_package(filename: str) -> str:
    """'.../site-packages/torch/nn/modules/rnn.py' -> 'torch'."""
    parts = filename.replace("\\", "/").split("/")
    for marker in ("site-packages", "dist-packages"):
        if marker in parts and parts.index(marker) + 1 < len(parts):
            return parts[parts.index(marker) + 1].removesuffix(".py")
    return parts[-1] if parts else "?"
