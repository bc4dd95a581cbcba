"""The conformance report: the console page, strict report.json, the HTML plots, the environment it records,
``lstm-conformance check``'s options and help, and ``report merge`` of real suite runs."""

from __future__ import annotations

import importlib.metadata
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lstm_conformance.cli import main
from lstm_conformance.cli.check import check_help, suite_arguments
from lstm_conformance.conformance import report
from lstm_conformance.conformance.environment import framework_versions, machine_environment
from lstm_conformance.conformance.report import SuiteResult
from lstm_conformance.conformance.report_html import SERIES_STYLE, small_multiples_svg

pytest_plugins = ["pytester"]

EXAMPLE_DIR = Path(__file__).parent / "third_party_example"
SUITE = ("--pyargs", "lstm_conformance.conformance.suite", "-p", "no:cacheprovider")
RUN = report.RunInfo("standard", 0, 4, False, ("cpu",), ("float64", "float32"), {"tf-cell:fb0": "forget_bias=0.0"})


def _result(implementation: str, outcome: str, **fields: object) -> SuiteResult:
    case, dtype, steps = (
        str(fields.pop("case", "l1_basic")),
        str(fields.pop("dtype", "float64")),
        fields.pop("steps", 6),
    )
    check = str(fields.pop("check", "forward"))
    nodeid = f"conformance/suite/test_conformance.py::test_{check}[{implementation}-{dtype}-cpu-{case}]"
    return SuiteResult(
        nodeid=nodeid,
        implementation=implementation,
        check=check,
        case=case,
        dtype=dtype,
        device="cpu",
        mode="strict",
        outcome=outcome,
        steps=int(steps),  # type: ignore[call-overload]
        **fields,  # type: ignore[arg-type]
    )


def _summary(results: list[SuiteResult], **extra: object) -> report.Summary:
    return report.build(results, RUN, machine_environment({}, {}), **extra)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------------------------------------
# report.json
# ----------------------------------------------------------------------------------------------------------


def _refuse_constant(name: str) -> float:
    raise AssertionError(f"report.json holds {name}, which strict JSON does not have")


def test_report_json_is_strict_and_reads_back_non_finite_numbers() -> None:
    results = [
        _result("torch", "failed", checks=3, worst_ratio=math.inf, relative_error=math.nan, reason="y: got None"),
        _result("torch", "passed", case="l1_T20", checks=3, worst_ratio=0.25, relative_error=1e-7, steps=20),
    ]
    text = report.to_json(_summary(results))
    data = json.loads(text, parse_constant=_refuse_constant)
    assert data["format"] == report.REPORT_FORMAT
    assert data["matrix"]["torch"]["forward"]["worst_ratio"] == "inf"
    _, _, tests, _, _ = report.read_summary(text)
    failed = next(test for test in tests if test.outcome == "failed")
    assert failed.worst_ratio == math.inf
    assert failed.relative_error is not None
    assert math.isnan(failed.relative_error)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("not json", "not JSON"),
        ('{"a": 1}', "not an lstm-conformance report"),
        ('{"format": "lstm-conformance-report", "format_version": 99}', "report format version 99"),
        ('{"format": "lstm-conformance-report", "format_version": 1, "environment": {}, "tests": [{}]}', "missing"),
    ],
)
def test_foreign_report_json_is_refused(text: str, problem: str) -> None:
    with pytest.raises(report.ReportFileError, match=problem):
        report.read_summary(text)


# ----------------------------------------------------------------------------------------------------------
# The console page
# ----------------------------------------------------------------------------------------------------------


def test_console_page_groups_skips_once_and_ends_with_one_summary_line() -> None:
    unsupported = "unsupported: PyTorch does not support peepholes; nn.LSTM and nn.LSTMCell have no peepholes"
    results = [_result("torch", "skipped", case=f"peep{n}", reason=unsupported) for n in range(40)]
    results += [_result(name, "skipped", case="cuda", reason="no CUDA device here") for name in ("jax", "torch")]
    results += [_result("torch", "passed", case=f"ok{n}", checks=3, worst_ratio=0.03) for n in range(5)]
    results.append(
        _result("tf-cell:fb0", "failed", checks=3, worst_ratio=4.0, reason="y: got 1, should be 2", reproduce="R")
    )
    lines = report.terminal_lines(_summary(results, not_run=["cuda: no CUDA device here; 184 cases not run"]))
    page = "\n".join(lines)
    assert page.count("peepholes") == 1
    assert "torch: peepholes (40)" in page
    assert re.search(r"no CUDA device here: jax \(1\); torch \(1\)", page)
    assert "w=0.03: the worst error was 3% of its tolerance" in page
    assert "tf-cell:fb0 = forget_bias=0.0" in page
    assert "reproduce alone: R" in page
    assert "not run: cuda: no CUDA device here; 184 cases not run" in page
    assert lines[-1] == "FAILED: 18 checks in 5 passed, 1 failed, 42 skipped tests"
    matrix_row = next(line for line in lines if line.startswith("torch "))
    assert "5/0/41/0 w=0.03" in matrix_row


def test_implementations_with_the_same_limits_share_one_skip_line() -> None:
    reason = "unsupported: {} does not support proj_size; {} has no projection"
    results = [
        _result(name, "skipped", case=f"p{n}", reason=reason.format(framework, name))
        for name, framework in (("keras", "Keras"), ("flax", "Flax"))
        for n in range(4)
    ]
    results.append(_result("flax-optimized", "skipped", reason=reason.format("Flax", "flax-optimized")))
    results.append(_result("keras", "skipped", check="pair", partner="flax", reason=reason.format("Keras", "keras")))
    lines = report.skip_lines(_summary(results))
    assert lines[1:] == [
        "     8  flax, keras: proj_size (4 each)",
        "     1  flax-optimized: proj_size (1)",
        "     1  pairs where one side cannot run the case (its line says why): proj_size (1)",
    ]
    first = report.skip_tree(_summary(results).skip_reasons)[0]
    assert {reason for _, reason, _ in first.details} == {
        reason.format("Keras", "keras"),
        reason.format("Flax", "flax"),
    }


# ----------------------------------------------------------------------------------------------------------
# Plots
# ----------------------------------------------------------------------------------------------------------


def test_small_multiples_have_a_panel_per_implementation_and_the_tolerance_on_each() -> None:
    results = [
        _result(name, "passed", dtype=dtype, case=f"T{steps}", steps=steps, checks=3, worst_ratio=ratio)
        for name in ("reference", "torch", "keras")
        for dtype in ("float64", "float32")
        for steps, ratio in ((1, 0.0), (20, 0.01), (60, 0.2))
    ]
    svg = small_multiples_svg(_summary(results).error_by_length, "forward")
    assert svg.count("font-weight='bold'") == 3  # panel titles
    assert svg.count("stroke='#c00' stroke-width='1.5'") == 3  # the tolerance (w = 1) in each panel
    assert svg.count("<polyline") == 6
    colours = {SERIES_STYLE[dtype][0] for dtype in ("float64", "float32")}
    assert all(svg.count(f"stroke='{colour}'") == 3 for colour in colours)
    assert svg.count("<rect x=") - 3 == 3 * 3 + 1  # float32's squares (3 panels x 3 lengths) + legend
    assert small_multiples_svg([], "forward") == "<p>no measurements</p>"


# ----------------------------------------------------------------------------------------------------------
# Environment and check's command line
# ----------------------------------------------------------------------------------------------------------


def test_framework_versions_come_from_metadata_without_importing() -> None:
    probe = (
        "import sys; from lstm_conformance.conformance.environment import framework_versions as f; "
        "print(sorted(f())); print('torch' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.split() == ["[]", "False"]
    import torch  # noqa: F401  (this test process: imported, so it counts as ran)

    assert framework_versions()["torch"] == importlib.metadata.version("torch")


def test_check_defaults_yield_to_the_users_own_options() -> None:
    assert suite_arguments(["--lstm-report", "out"])[2:] == [
        "-rfE",
        "--disable-warnings",
        "--lstm-progress=auto",
        "--lstm-report=out",
    ]
    assert suite_arguments(["-ra", "--lstm-progress=on"])[2:] == ["-ra", "--lstm-progress=on"]
    with_warnings = suite_arguments(["-W", "error"])
    assert "-rfE" in with_warnings
    assert "--disable-warnings" not in with_warnings
    assert "--dist=loadgroup" in suite_arguments(["-n", "2"])  # one worker per implementation
    assert "--dist=loadgroup" not in suite_arguments(["-n", "2", "--dist", "load"])
    assert "--dist=loadgroup" not in suite_arguments([])


def test_check_help_leads_with_the_suites_options() -> None:
    text = check_help()
    assert text.startswith("usage: lstm-conformance check")
    for option in ("--lstm-implementations", "--lstm-report", "--lstm-dtype", "--lstm-progress"):
        assert option in text
    assert "pytest --help" in text
    probe = "import sys; from lstm_conformance.cli import main; main(['check', '--help']); print(sorted(sys.modules))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.startswith("usage: lstm-conformance check")
    assert done.stdout.index("--lstm-implementations") < done.stdout.index("pytest --help")
    for heavy in ("'numpy'", "'torch'", "'tensorflow'"):
        assert heavy not in done.stdout.splitlines()[-1]


def test_check_prints_one_page_with_versions_and_counted_warnings(tmp_path: Path) -> None:
    """torch warns that projections are not supported with oneDNN: counted on the page, not printed raw;
    pytest's per-test SKIPPED lines are off. In a fresh process: torch warns once per process (TORCH_WARN_ONCE),
    so an earlier test in this worker would have used the warning up."""
    out = tmp_path / "report"
    args = ["-p", "no:cacheprovider", "--lstm-implementations", "torch,reference", "--lstm-report", str(out)]
    command = [sys.executable, "-m", "lstm_conformance.cli", "check", *args]
    command += ["-k", "test_forward and (l1_proj or l1_basic) and not pair"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    page = done.stdout
    assert done.returncode == 0, page[-3000:] + done.stderr[-2000:]
    assert "framework warnings (" in page
    assert "torch UserWarning: LSTM with projections" in page
    assert "warnings summary" not in page
    assert "SKIPPED [" not in page
    assert not re.search(r"test_conformance\.py [.sxF]", page)  # not a terminal: no progress characters
    listed = next(line for line in page.splitlines() if "frameworks that ran: " in line)
    assert f"torch {importlib.metadata.version('torch')}" in listed, listed
    data = json.loads((out / "report.json").read_text())
    assert data["environment"]["frameworks"]["torch"] == importlib.metadata.version("torch")
    assert data["warnings"][0]["source"] == "torch"


# ----------------------------------------------------------------------------------------------------------
# report merge, on two real suite runs
# ----------------------------------------------------------------------------------------------------------


def test_merge_two_jobs_sums_rows_and_checks_and_flags_a_conflict(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Job A runs the reference and tiny-numpy; job B runs torch and a broken build of tiny-numpy (same name,
    swapped gates): the merged report has all three rows, both jobs' checks, and the tiny-numpy test that A
    passed and B failed as a conflict."""
    pytester.makepyfile(
        broken_build="""
        from tiny_lstm import TinyLSTMSwappedGates

        class BrokenBuild(TinyLSTMSwappedGates):
            name = "tiny-numpy"
        """
    )
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    monkeypatch.syspath_prepend(str(pytester.path))
    keyword = ("-k", "test_forward and l1_state and float64")
    jobs = {
        "job-a": ("--lstm-implementation=tiny_lstm:TinyLSTM", "--lstm-implementations=reference,tiny-numpy"),
        "job-b": ("--lstm-implementation=broken_build:BrokenBuild", "--lstm-implementations=torch,tiny-numpy"),
    }
    for label, options in jobs.items():
        pytester.runpytest_inprocess(*SUITE, *options, *keyword, f"--lstm-report={pytester.path / label}")
    reports = [json.loads((pytester.path / label / "report.json").read_text()) for label in jobs]
    assert [r["outcomes"]["failed"] for r in reports] == [0, 1]
    capsys.readouterr()

    merged_dir = pytester.path / "merged"
    status = main(["report", "merge", *(str(pytester.path / label) for label in jobs), "--output", str(merged_dir)])
    assert status == 1  # a failure and a conflict
    merged = json.loads((merged_dir / "report.json").read_text())
    assert (
        set(merged["matrix"])
        == set(reports[0]["matrix"]) | set(reports[1]["matrix"])
        == {
            "reference",
            "tiny-numpy",
            "torch",
        }
    )
    assert merged["total_checks"] == reports[0]["total_checks"] + reports[1]["total_checks"] > 0
    assert merged["outcomes"]["passed"] == reports[0]["outcomes"]["passed"] + reports[1]["outcomes"]["passed"]
    assert [job["label"] for job in merged["jobs"]] == ["job-a", "job-b"]
    assert merged["jobs"][1]["environment"]["frameworks"]["torch"] == importlib.metadata.version("torch")
    assert merged["conflicts"] == [
        {"test": "test_forward[tiny-numpy-float64-cpu-l1_state]", "outcomes": {"job-a": "passed", "job-b": "failed"}}
    ]
    page = capsys.readouterr().out
    assert "conflict: test_forward[tiny-numpy-float64-cpu-l1_state] (job-a: passed, job-b: failed)" in page
    assert "Conflicts between jobs (1)" in (merged_dir / "report.html").read_text()


def test_merge_refuses_a_foreign_file_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "job").mkdir()
    (tmp_path / "job" / "report.json").write_text('{"results": []}')
    status = main(["report", "merge", str(tmp_path / "job"), "--output", str(tmp_path / "out")])
    assert status == 2
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 1
    assert "job/report.json: not an lstm-conformance report" in errors[0]
    assert not (tmp_path / "out").exists()
