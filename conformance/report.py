"""The conformance report: one console page at the end of a suite run and, with ``--lstm-report DIR``,
``report.json`` (strict JSON) and ``report.html`` (the same facts, with plots as hand-written SVG).

The data flow: each suite test puts a ``SuiteRecord`` in its ``user_properties``; the plugin turns every test
report into a ``SuiteResult`` (record + outcome + reason + duration + reproduce command); ``build`` aggregates
the results of one run (or, for ``report merge``, of several jobs) into a ``Summary``. ``report.json`` is
``Summary`` as JSON, and ``read_summary`` reads one back (validating it), so that ``merge`` can combine jobs.

Units: the matrix's ``w`` and the plots' y axis are both the worst error as a fraction of its tolerance (a test
passes at w <= 1); the plots draw the tolerance as the line at 1. Standard library only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from lstm_conformance.conformance.environment import Environment, environment_lines

CHECKS: tuple[str, ...] = ("forward", "gradients", "pair", "drawn")
OUTCOMES: tuple[str, ...] = ("passed", "failed", "skipped", "xfailed", "xpassed")
#: Outcomes where a test judged the implementation (a skip judged nothing).
JUDGED: tuple[str, ...] = ("passed", "failed", "xfailed", "xpassed")
#: report.json's "format" value: what ``report merge`` accepts.
REPORT_FORMAT = "lstm-conformance-report"
REPORT_VERSION = 1
#: The console page's budget for the long sections (the whole page stays within ~150 lines).
MAX_FAILURES_SHOWN = 12
MAX_SKIP_LINES = 30
#: What a merged report says where its jobs' settings differ.
PER_JOB = "(per job)"


class SuiteRecord(TypedDict, total=False):
    """What a suite test appends to ``user_properties`` under ``plugin.RECORD_KEY`` (filled in as it runs)."""

    implementation: str
    partner: str
    check: str
    case: str
    dtype: str
    device: str
    mode: str
    steps: int
    checks: int
    worst_ratio: float | None
    relative_error: float | None
    tolerance: float
    math_mode: str | None
    examples: int
    steps_seen: list[int]
    outcome_seen: str
    shrink_steps: int


@dataclass(frozen=True)
class SuiteResult:
    """One suite test as the report keeps it: what it measured and how pytest judged it."""

    nodeid: str
    implementation: str
    check: str
    case: str
    dtype: str
    device: str
    mode: str
    outcome: str
    reason: str = ""
    partner: str | None = None
    steps: int = 0
    checks: int = 0
    #: Worst error as a fraction of its tolerance (> 1 fails); None when nothing was measured.
    worst_ratio: float | None = None
    #: Worst max|got - expected| / max|expected| over the tensors compared.
    relative_error: float | None = None
    tolerance: float | None = None
    math_mode: str | None = None
    duration: float = 0.0
    #: The command that runs this test alone (failures).
    reproduce: str | None = None
    #: The job it came from, in a merged report.
    job: str | None = None
    #: Hypothesis-drawn tests: the sequence lengths of the examples checked.
    steps_seen: tuple[int, ...] = ()

    @property
    def test_name(self) -> str:
        """The node id without its path: the same test in two jobs whose rootdirs differ."""
        return self.nodeid.rpartition("::")[2]

    @property
    def owners(self) -> list[str]:
        """The matrix rows this test counts in (a pair test counts in both implementations' rows)."""
        return [self.implementation, *([self.partner] if self.partner else [])]

    @classmethod
    def from_record(cls, record: SuiteRecord, **judged: Any) -> SuiteResult:
        return cls(
            implementation=str(record.get("implementation", "?")),
            partner=record.get("partner") or None,
            check=str(record.get("check", "?")),
            case=str(record.get("case", "")),
            dtype=str(record.get("dtype", "")),
            device=str(record.get("device", "")),
            mode=str(record.get("mode", "strict")),
            steps=int(record.get("steps", 0) or 0),
            checks=int(record.get("checks", 0) or 0),
            worst_ratio=_optional_float(record.get("worst_ratio")),
            relative_error=_optional_float(record.get("relative_error")),
            tolerance=_optional_float(record.get("tolerance")),
            math_mode=record.get("math_mode"),
            steps_seen=tuple(int(s) for s in record.get("steps_seen", ())),
            **judged,
        )


@dataclass
class Cell:
    """One matrix cell: test counts per outcome, checks (tensor comparisons) and the worst ratio."""

    passed: int = 0
    failed: int = 0
    skipped: int = 0
    xfailed: int = 0
    xpassed: int = 0
    checks: int = 0
    worst_ratio: float | None = None

    def add(self, result: SuiteResult) -> None:
        setattr(self, result.outcome, getattr(self, result.outcome) + 1)
        self.checks += result.checks
        if result.worst_ratio is not None and result.outcome in ("passed", "failed", "xpassed"):
            self.worst_ratio = max(self.worst_ratio or 0.0, result.worst_ratio)


@dataclass(frozen=True)
class SkipGroup:
    implementation: str
    reason: str
    count: int


@dataclass(frozen=True)
class Failure:
    nodeid: str
    message: str
    reproduce: str | None
    job: str | None = None


@dataclass(frozen=True)
class WarningGroup:
    """Warnings the frameworks raised during the run, counted by category, message and source module."""

    category: str
    message: str
    source: str
    count: int


@dataclass(frozen=True)
class RunInfo:
    """What the options decided for one run (``SuiteSettings``, reduced to what the report says)."""

    profile: str
    seed: int | None
    max_examples: int | None
    allow_tf32: bool
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    #: Implementation variant id -> what it means (``tf-cell:fb0`` -> ``forget_bias=0.0``).
    variants: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Job:
    """One suite run of a merged report (a CI job): its label, settings, environment and totals."""

    label: str
    run: RunInfo
    environment: Environment
    tests: int
    total_checks: int
    outcomes: dict[str, int]
    not_run: list[str]


@dataclass(frozen=True)
class Conflict:
    """A test (same test id: implementation, case, dtype, device) that two jobs judged differently."""

    test: str
    outcomes: dict[str, str]


@dataclass(frozen=True)
class LengthPoint:
    """Worst error of one (check, implementation, dtype, mode) at one sequence length, for the plots."""

    check: str
    implementation: str
    dtype: str
    mode: str
    steps: int
    worst_ratio: float
    relative_error: float | None


@dataclass
class Summary:
    """The whole report; ``report.json`` is this object as strict JSON."""

    run: RunInfo
    environment: Environment
    math_modes: dict[str, list[str]]
    total_checks: int
    outcomes: dict[str, int]
    matrix: dict[str, dict[str, Cell]]
    skip_reasons: list[SkipGroup]
    not_run: list[str]
    failures: list[Failure]
    known_limitation_fixed: list[str]
    warnings: list[WarningGroup]
    error_by_length: list[LengthPoint]
    tests: list[SuiteResult]
    jobs: list[Job] = field(default_factory=list)
    conflicts: list[Conflict] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        if self.outcomes.get("failed") or self.outcomes.get("xpassed") or self.conflicts:
            return "FAILED"
        return "PASSED" if self.outcomes.get("passed") else "NOTHING CHECKED"


# ----------------------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------------------


def _optional_float(value: Any) -> float | None:
    return None if value is None else float(value)


def _mode_text(device: str, dtype: str, mode: str) -> str:
    if mode == "tf32":
        return f"{device} {dtype} with TF32 allowed"
    if device == "cuda" and dtype == "float32":
        return f"{device} {dtype} strict (TF32 off)"
    return f"{device} {dtype}"


def build(
    results: Iterable[SuiteResult],
    run: RunInfo,
    environment: Environment,
    *,
    not_run: Iterable[str] = (),
    warnings: Iterable[WarningGroup] = (),
    jobs: Iterable[Job] = (),
) -> Summary:
    """Aggregate per-test results into the report (sorted, so serial, parallel and merged runs agree)."""
    tests = sorted(results, key=lambda r: (r.nodeid, r.job or ""))
    matrix: dict[str, dict[str, Cell]] = defaultdict(dict)
    skips: Counter[tuple[str, str]] = Counter()
    modes: dict[str, set[str]] = defaultdict(set)
    for result in tests:
        for owner in result.owners:
            matrix[owner].setdefault(result.check, Cell()).add(result)
        if result.outcome == "skipped":
            skips[("+".join(result.owners), result.reason)] += 1
        if result.math_mode:
            modes[_mode_text(result.device, result.dtype, result.mode)].add(result.math_mode)
    failures = [Failure(r.nodeid, r.reason, r.reproduce, r.job) for r in tests if r.outcome in ("failed", "xpassed")]
    return Summary(
        run=run,
        environment=environment,
        math_modes={key: sorted(value) for key, value in sorted(modes.items())},
        total_checks=sum(r.checks for r in tests),
        outcomes={outcome: sum(r.outcome == outcome for r in tests) for outcome in OUTCOMES},
        matrix={name: dict(sorted(matrix[name].items(), key=lambda kv: _check_order(kv[0]))) for name in _rows(tests)},
        skip_reasons=[SkipGroup(impl, reason, count) for (impl, reason), count in sorted(skips.items())],
        not_run=list(not_run),
        failures=failures,
        known_limitation_fixed=[r.nodeid for r in tests if r.outcome == "xpassed"],
        warnings=sorted(warnings, key=lambda w: (-w.count, w.source, w.message)),
        error_by_length=_error_by_length(tests),
        tests=tests,
        jobs=list(jobs),
        conflicts=_conflicts(tests),
    )


def _check_order(check: str) -> int:
    return CHECKS.index(check) if check in CHECKS else len(CHECKS)


def _rows(tests: list[SuiteResult]) -> list[str]:
    names = {owner for result in tests for owner in result.owners}
    return sorted(names, key=lambda name: (name != "reference", name))


def _error_by_length(tests: list[SuiteResult]) -> list[LengthPoint]:
    """Worst ratio per (check, implementation, dtype, mode, T) of the forward and gradient tests. Known
    limitations (xfailed) are left out, as in the matrix: their errors measure the limitation."""
    worst: dict[tuple[str, str, str, str, int], tuple[float, float | None]] = {}
    for result in tests:
        if result.check not in ("forward", "gradients") or result.worst_ratio is None:
            continue
        if result.outcome not in ("passed", "failed", "xpassed") or result.steps <= 0:
            continue
        key = (result.check, result.implementation, result.dtype, result.mode, result.steps)
        ratio, relative = worst.get(key, (0.0, None))
        worst[key] = (max(ratio, result.worst_ratio), _max_optional(relative, result.relative_error))
    return [
        LengthPoint(check, impl, dtype, mode, steps, ratio, relative)
        for (check, impl, dtype, mode, steps), (ratio, relative) in sorted(worst.items())
    ]


def _max_optional(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


def _conflicts(tests: list[SuiteResult]) -> list[Conflict]:
    """Tests that more than one job judged, with different outcomes (a skip in one job is no judgement)."""
    by_test: dict[str, dict[str, str]] = defaultdict(dict)
    for result in tests:
        if result.job is not None and result.outcome in JUDGED:
            by_test[result.test_name][result.job] = result.outcome
    return [
        Conflict(nodeid, dict(sorted(outcomes.items())))
        for nodeid, outcomes in sorted(by_test.items())
        if len(set(outcomes.values())) > 1
    ]


# ----------------------------------------------------------------------------------------------------------
# Skip reasons, grouped
# ----------------------------------------------------------------------------------------------------------

#: A refusal in an implementation's own words (``adapters.base.ImplementationLimitError``): "tiny does not run
#: num_layers; use reference", "torch-cell: nn.LSTMCell has no proj_size; use torch", "tf-block runs float32 and
#: float16 only (...); use tf-cell", "onnxruntime computes no gradients; ...", or a format layer's "PyTorch does
#: not support peepholes; ...". ``what`` is the limit the console lists.
_UNSUPPORTED = re.compile(
    r"^(?:unsupported: )?(?P<who>[\w.:+-]+?)"
    r"(?::\s| does not support | does not run | (?=runs |takes no |computes no ))"
    r"(?P<what>[^;]+)(?:; (?P<hint>.*))?$"
)


@dataclass(frozen=True)
class SkipLine:
    """One line of grouped skip reasons: ``head: key (count); key (count)...``. Three kinds: a reason several
    implementations share word for word that is no limit of their own (a missing device), with a count per
    implementation; implementations whose own limits are the same, with a count per limit (``multiplier``: how
    many implementations have these counts each); pair tests skipped because one side cannot run the case."""

    head: str
    counts: tuple[tuple[str, int], ...]
    multiplier: int = 1
    #: (implementation, full reason, count) behind the short limits.
    details: tuple[tuple[str, str, int], ...] = ()

    @property
    def total(self) -> int:
        return sum(n for _, n in self.counts) * self.multiplier

    def text(self) -> str:
        each = " each" if self.multiplier > 1 else ""
        return f"{self.head}: " + "; ".join(f"{key} ({n}{each})" for key, n in self.counts)


def _by_count(counter: Counter[str]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted(counter.items(), key=lambda kv: (-kv[1], kv[0])))


def skip_tree(groups: list[SkipGroup]) -> list[SkipLine]:
    """Skip reasons counted once, largest first: reasons shared word for word by several implementations that
    are not limits of their own (``does not support ...``); implementations grouped by identical limits; and
    one line for the pair tests that one side's limits skip (those limits are on that side's own line)."""
    by_reason: dict[str, Counter[str]] = defaultdict(Counter)
    for group in groups:
        by_reason[group.reason][group.implementation] += group.count
    lines = []
    by_owner: dict[str, Counter[str]] = defaultdict(Counter)
    details: dict[str, list[tuple[str, str, int]]] = defaultdict(list)
    pairs: Counter[str] = Counter()
    pair_details: list[tuple[str, str, int]] = []
    for reason, owners in by_reason.items():
        if len(owners) > 1 and not _UNSUPPORTED.match(reason):
            lines.append(SkipLine(reason, _by_count(Counter(owners))))
            continue
        for owner, count in owners.items():
            if "+" in owner:
                pairs[short_reason(reason)] += count
                pair_details.append((owner, reason, count))
                continue
            by_owner[owner][short_reason(reason)] += count
            details[owner].append((owner, reason, count))
    same_limits: dict[tuple[tuple[str, int], ...], list[str]] = defaultdict(list)
    for owner, reasons in by_owner.items():
        same_limits[_by_count(reasons)].append(owner)
    for key, names in same_limits.items():
        behind = tuple(item for name in sorted(names) for item in sorted(details[name]))
        lines.append(SkipLine(", ".join(sorted(names)), key, len(names), behind))
    if pairs:
        head = "pairs where one side cannot run the case (its line says why)"
        lines.append(SkipLine(head, _by_count(pairs), 1, tuple(sorted(pair_details))))
    return sorted(lines, key=lambda line: (-line.total, line.text()))


def short_reason(reason: str) -> str:
    """ "unsupported: PyTorch does not support peepholes; <hint>" -> "peepholes" (the console lists each
    implementation's limits on one line; the full sentence is in report.json and report.html)."""
    found = _UNSUPPORTED.match(reason)
    return found["what"].strip() if found else reason


# ----------------------------------------------------------------------------------------------------------
# Console
# ----------------------------------------------------------------------------------------------------------


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return "-"
    counts = f"{cell.passed}/{cell.failed}/{cell.skipped}/{cell.xfailed}"
    if cell.xpassed:
        counts += f" XPASS:{cell.xpassed}"
    return f"{counts} {ratio_text(cell.worst_ratio)}" if cell.worst_ratio is not None else counts


def ratio_text(ratio: float) -> str:
    return "w=inf" if math.isinf(ratio) else f"w={ratio:.2g}"


def legend_lines(summary: Summary) -> list[str]:
    lines = [
        "cells: passed/failed/skipped/xfailed tests (xfailed: a known limitation, conformance/limitations.py); "
        "w=0.03: the worst error was 3% of its tolerance (w>1 fails; xfailed tests not included); -: none ran",
    ]
    if summary.run.variants:
        shown = [name for name in summary.run.variants if name in summary.matrix]
        if shown:
            meaning = ", ".join(f"{name} = {summary.run.variants[name]}" for name in shown)
            lines.append(f"variants: {meaning} (TF adds forget_bias at run time; the reference folds it into Rb)")
    lines.append("pair: two implementations on the same weights agree with each other (counted in both rows)")
    return lines


def header_lines(summary: Summary) -> list[str]:
    run = summary.run
    tf32 = "allowed on cuda" if run.allow_tf32 else "off (strict)"
    seed, examples = (PER_JOB if value is None else value for value in (run.seed, run.max_examples))
    lines = [
        f"profile {run.profile} (--lstm-profile); seed {seed} (--lstm-seed); {examples} drawn examples "
        f"per target; devices {','.join(run.devices)}; dtypes {','.join(run.dtypes)}; TF32 {tf32}",
        "math modes that ran: "
        + ("; ".join(f"{key} [reported: {', '.join(value)}]" for key, value in summary.math_modes.items()) or "none"),
    ]
    if summary.jobs:
        lines.append(f"merged from {len(summary.jobs)} jobs: " + ", ".join(job.label for job in summary.jobs))
        for job in summary.jobs:
            lines += [f"[{job.label}] {line}" for line in environment_lines(job.environment)]
    else:
        lines += environment_lines(summary.environment)
    return lines


def matrix_lines(summary: Summary) -> list[str]:
    header = ["implementation", *CHECKS]
    rows = [[name, *(cell_text(cells.get(check)) for check in CHECKS)] for name, cells in summary.matrix.items()]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return [
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True)).rstrip()
        for row in [header, *rows]
    ]


def failure_lines(summary: Summary) -> list[str]:
    if not summary.failures:
        return []
    lines = [f"failures ({len(summary.failures)}; pytest's report of each is above):"]
    for failure in summary.failures[:MAX_FAILURES_SHOWN]:
        job = f" [{failure.job}]" if failure.job else ""
        lines.append(f"  {failure.nodeid}{job}: {_clip(failure.message, 160)}")
        if failure.reproduce:
            lines.append(f"    reproduce alone: {failure.reproduce}")
    if len(summary.failures) > MAX_FAILURES_SHOWN:
        lines.append(f"  ... {len(summary.failures) - MAX_FAILURES_SHOWN} more in report.json (--lstm-report DIR)")
    return lines


def skip_lines(summary: Summary, width: int = 150) -> list[str]:
    """The grouped skip reasons (``skip_tree``), wrapped to ``width``."""
    tree = skip_tree(summary.skip_reasons)
    if not tree:
        return []
    total = sum(group.count for group in summary.skip_reasons)
    lines = [f"skipped tests ({total}), by implementation and reason (count); full sentences in report.html:"]
    for line in tree[:MAX_SKIP_LINES]:
        lines += _wrapped(f"  {line.total:>4}  ", line.text(), width, most=3)
    if len(tree) > MAX_SKIP_LINES:
        lines.append(f"  ... {len(tree) - MAX_SKIP_LINES} more groups in report.html")
    return lines


def _wrapped(prefix: str, text: str, width: int, most: int) -> list[str]:
    words, lines, current = text.split(" "), [], prefix
    for word in words:
        if len(current) + len(word) + 1 > width and current.strip():
            lines.append(current.rstrip())
            current = " " * len(prefix)
        current += word + " "
    lines.append(current.rstrip())
    if len(lines) > most:
        lines = [*lines[: most - 1], lines[most - 1][: width - 4] + " ..."]
    return lines


def warning_lines(summary: Summary) -> list[str]:
    if not summary.warnings:
        return []
    total = sum(w.count for w in summary.warnings)
    worst = summary.warnings[0]
    first = f"{worst.count} x {worst.source} {worst.category}: {_clip(worst.message, 90)}"
    more = f"; {len(summary.warnings) - 1} other kinds" if len(summary.warnings) > 1 else ""
    return [f"{total} framework warnings ({first}{more}); all in report.json, or pytest's list with -rw"]


def summary_line(summary: Summary) -> str:
    outcomes = ", ".join(f"{count} {name}" for name, count in summary.outcomes.items() if count)
    conflicts = f", {len(summary.conflicts)} conflicts between jobs" if summary.conflicts else ""
    return f"{summary.verdict}: {summary.total_checks} checks in {outcomes or 'no'} tests{conflicts}"


def terminal_lines(summary: Summary) -> list[str]:
    """The console page: header, legend, matrix, failures, skip reasons, not-run lines, one summary line."""
    lines = [*header_lines(summary), *legend_lines(summary), *matrix_lines(summary)]
    lines += failure_lines(summary)
    for conflict in summary.conflicts[:MAX_FAILURES_SHOWN]:
        judged = ", ".join(f"{job}: {outcome}" for job, outcome in conflict.outcomes.items())
        lines.append(f"  conflict: {conflict.test} ({judged})")
    lines += skip_lines(summary)
    lines += [f"not run: {line}" for line in summary.not_run]
    for nodeid in summary.known_limitation_fixed:
        lines.append(f"known limitation fixed? {nodeid} passed although marked as a known limitation")
    lines += warning_lines(summary)
    lines.append(summary_line(summary))
    return lines


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3] + "..."


# ----------------------------------------------------------------------------------------------------------
# report.json: strict JSON, read back with validation
# ----------------------------------------------------------------------------------------------------------


class ReportFileError(ValueError):
    """A report.json that is not one this project wrote (or not one of this version)."""


def to_json(summary: Summary) -> str:
    """Strict JSON (no Infinity/NaN: a non-finite float is written as the string "inf", "-inf" or "nan")."""
    data = {"format": REPORT_FORMAT, "format_version": REPORT_VERSION, **_finite(dataclasses.asdict(summary))}
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(key): _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def _number(value: Any) -> float | None:
    """A float from report.json ("inf" and "nan" strings included)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ReportFileError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except ValueError:
        raise ReportFileError(f"expected a number, got {value!r}") from None


def _build_dataclass(cls: Any, data: Any, where: str, **converters: Any) -> Any:
    if not isinstance(data, dict):
        raise ReportFileError(f"{where}: expected an object, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    required = [
        f.name for f in fields.values() if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    missing = [name for name in required if name not in data]
    if missing:
        raise ReportFileError(f"{where}: missing {', '.join(missing)}")
    values = {}
    for name, value in data.items():
        if name in fields:
            values[name] = converters[name](value) if name in converters else value
    try:
        return cls(**values)
    except (TypeError, ValueError) as error:
        raise ReportFileError(f"{where}: {error}") from None


def _run_info(data: Any) -> RunInfo:
    run: RunInfo = _build_dataclass(RunInfo, data, "run", devices=tuple, dtypes=tuple)
    return run


def _result(data: Any) -> SuiteResult:
    result: SuiteResult = _build_dataclass(
        SuiteResult,
        data,
        "tests[]",
        worst_ratio=_number,
        relative_error=_number,
        tolerance=_number,
        steps_seen=tuple,
    )
    if result.outcome not in OUTCOMES or result.check not in CHECKS:
        raise ReportFileError(f"tests[]: {result.nodeid!r} has outcome {result.outcome!r}, check {result.check!r}")
    return result


def read_summary(text: str) -> tuple[RunInfo, Environment, list[SuiteResult], list[str], list[WarningGroup]]:
    """The parts of a report.json that a merge needs; ReportFileError when it is not such a file."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as error:
        raise ReportFileError(f"not JSON ({error})") from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise ReportFileError(f'not an lstm-conformance report (no "format": "{REPORT_FORMAT}")')
    if data.get("format_version") != REPORT_VERSION:
        raise ReportFileError(
            f"report format version {data.get('format_version')!r}; this lstm-conformance reads {REPORT_VERSION}"
        )
    environment = data.get("environment")
    tests = data.get("tests")
    if not isinstance(environment, dict) or not isinstance(tests, list):
        raise ReportFileError("missing its environment or tests")
    results = [_result(item) for item in tests]
    warnings = [_build_dataclass(WarningGroup, item, "warnings[]") for item in data.get("warnings") or []]
    not_run = [str(line) for line in data.get("not_run") or []]
    return _run_info(data.get("run")), environment, results, not_run, warnings  # type: ignore[return-value]


def write_files(summary: Summary, directory: Path) -> list[Path]:
    """Write report.json and report.html (both rendered before either is written)."""
    from lstm_conformance.conformance.report_html import render_html

    json_text, html_text = to_json(summary), render_html(summary)
    directory.mkdir(parents=True, exist_ok=True)
    json_path, html_path = directory / "report.json", directory / "report.html"
    json_path.write_text(json_text)
    html_path.write_text(html_text)
    return [json_path, html_path]


# ----------------------------------------------------------------------------------------------------------
# Merge: several jobs' reports into one
# ----------------------------------------------------------------------------------------------------------


def merge(jobs: list[tuple[str, str]]) -> Summary:
    """One report from several jobs' report.json texts, given as (label, text): every job's tests (so its
    matrix rows and checks), each job's environment and settings, and conflicts between jobs."""
    labels = [label for label, _ in jobs]
    if len(set(labels)) != len(labels):
        raise ReportFileError(f"two jobs have the same label ({', '.join(labels)}); give each its own directory")
    results: list[SuiteResult] = []
    kept: list[Job] = []
    warnings: Counter[tuple[str, str, str]] = Counter()
    not_run: list[str] = []
    for label, text in jobs:
        run, environment, tests, job_not_run, job_warnings = read_summary(text)
        results += [dataclasses.replace(test, job=label) for test in tests]
        outcomes = {outcome: sum(t.outcome == outcome for t in tests) for outcome in OUTCOMES}
        checks = sum(t.checks for t in tests)
        kept.append(Job(label, run, environment, len(tests), checks, outcomes, job_not_run))
        not_run += [f"[{label}] {line}" for line in job_not_run]
        for w in job_warnings:
            warnings[(w.category, w.message, w.source)] += w.count
    runs = [job.run for job in kept]
    merged_run = RunInfo(
        profile="+".join(sorted({r.profile for r in runs})),
        seed=runs[0].seed if len({r.seed for r in runs}) == 1 else None,
        max_examples=runs[0].max_examples if len({r.max_examples for r in runs}) == 1 else None,
        allow_tf32=any(r.allow_tf32 for r in runs),
        devices=tuple(dict.fromkeys(d for r in runs for d in r.devices)),
        dtypes=tuple(dict.fromkeys(d for r in runs for d in r.dtypes)),
        variants={k: v for r in runs for k, v in r.variants.items()},
    )
    environment = kept[0].environment if len(kept) == 1 else _merged_environment([job.environment for job in kept])
    groups = [WarningGroup(c, m, s, n) for (c, m, s), n in warnings.items()]
    return build(results, merged_run, environment, not_run=not_run, warnings=groups, jobs=kept)


def _merged_environment(environments: list[Environment]) -> Environment:
    """The top-level environment of a merged report: a field the jobs share, else "(per job)"."""

    def shared(key: str) -> Any:
        values = {json.dumps(env.get(key), sort_keys=True) for env in environments}
        return environments[0].get(key) if len(values) == 1 else "(per job)"

    frameworks: dict[str, str] = {}
    for env in environments:
        for name, version in env.get("frameworks", {}).items():
            frameworks[name] = version if frameworks.get(name, version) == version else "(per job)"
    return Environment(
        hostname=shared("hostname"),
        platform=shared("platform"),
        python=shared("python"),
        numpy=shared("numpy"),
        cpu=shared("cpu"),
        blas=shared("blas"),
        project=shared("project"),
        git_revision=shared("git_revision"),
        frameworks=dict(sorted(frameworks.items())),
        cuda={k: v for env in environments for k, v in (env.get("cuda") or {}).items()},
    )
