"""The conformance plugin and suite, run through pytester on the reference and the out-of-tree example
(tests/third_party_example: tiny_lstm, a NumPy LSTM with its own layout, and its swapped-gates variant)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from lstm_conformance.cli.check import check_main
from lstm_conformance.conformance import limitations
from lstm_conformance.conformance.cases import GRID, round_to_dtype
from lstm_conformance.conformance.limitations import KnownLimitation, find_limitation
from lstm_conformance.conformance.tolerances import strict_mode_violation, tolerance_for

pytest_plugins = ["pytester"]

EXAMPLE_DIR = Path(__file__).parent / "third_party_example"
TINY = "--lstm-implementation=tiny_lstm:TinyLSTM"
SWAPPED = "--lstm-implementation=tiny_lstm:TinyLSTMSwappedGates"
SUITE = ("--pyargs", "lstm_conformance.conformance.suite", "-p", "no:cacheprovider")


@pytest.fixture
def example_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """tiny_lstm importable here and in subprocesses (xdist workers included), without installing it."""
    monkeypatch.syspath_prepend(str(EXAMPLE_DIR))
    monkeypatch.setenv("PYTHONPATH", str(EXAMPLE_DIR))


def _run_suite(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest_inprocess(*SUITE, *args)


# ----------------------------------------------------------------------------------------------------------
# Options
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ("--lstm-device=tpu", ["--lstm-device: unknown value 'tpu'", "valid values: cpu, cuda"]),
        ("--lstm-dtype=float8", ["--lstm-dtype: unknown value 'float8'", "float64, float32, float16, bfloat16"]),
        ("--lstm-dtype=", ["--lstm-dtype: no value"]),
        ("--lstm-seed=-3", ["--lstm-seed: expected an integer >= 0, got '-3'"]),
        ("--lstm-max-examples=many", ["--lstm-max-examples: expected an integer >= 0"]),
        ("--lstm-implementations=nosuch", ["--lstm-implementations: unknown value 'nosuch'", "reference, torch"]),
        ("--lstm-implementation=no_such_module:X", ["--lstm-implementation: cannot import 'no_such_module'"]),
        ("--lstm-implementation=json", ["is not of the form MODULE:OBJECT"]),
        ("--lstm-allow-tf32 --lstm-device=cpu", ["--lstm-allow-tf32 applies to float32 on cuda only"]),
        ("--lstm-allow-tf32 --lstm-dtype=float64", ["include cuda in --lstm-device and float32 in --lstm-dtype"]),
    ],
)
def test_bad_option_is_a_usage_error(pytester: pytest.Pytester, option: str, expected: list[str]) -> None:
    result = _run_suite(pytester, *option.split())
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    for text in expected:
        assert text in result.stderr.str()


def test_plugin_is_inert_in_unrelated_runs(pytester: pytest.Pytester) -> None:
    """The plugin loads (its options exist) but collects nothing, imports no framework and prints no report."""
    pytester.makepyfile(
        """
        import sys

        def test_nothing_heavy_imported(pytestconfig):
            assert pytestconfig.getoption("--lstm-seed") == "0"  # the plugin is loaded
            heavy = {"numpy", "torch", "tensorflow", "jax", "onnxruntime", "lstm_conformance.adapters.registry"}
            heavy &= set(sys.modules)
            assert not heavy
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "lstm-conformance matrix" not in result.stdout.str()


# ----------------------------------------------------------------------------------------------------------
# The third-party example: passes when right, fails when wrong
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.usefixtures("example_on_path")
def test_a_third_party_runs_beside_the_implementations_chosen(pytester: pytest.Pytester) -> None:
    """--lstm-implementation X with --lstm-implementations reference runs both, never only the list."""
    result = _run_suite(pytester, TINY, "--lstm-implementations=reference", "-k", "l1_state and not pair")
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    result.stdout.fnmatch_lines(["reference *", "tiny-numpy *"])


@pytest.mark.usefixtures("example_on_path")
def test_third_party_implementation_passes(pytester: pytest.Pytester) -> None:
    result = _run_suite(pytester, TINY, "-k", "l1_state or l1_ragged or l1_batch_first or drawn or l2")
    outcomes = result.parseoutcomes()
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
    assert outcomes["passed"] >= 10
    # l2 (two layers) is beyond the example's capabilities: not generated, said in one line, never a pass.
    lacking = "*tiny-numpy: * cases not generated (they need what it does not declare: *num_layers (*"
    result.stdout.fnmatch_lines([lacking])
    assert "l2]" not in result.stdout.str()
    result.stdout.fnmatch_lines(["*lstm-conformance matrix*", "tiny-numpy *"])


@pytest.mark.usefixtures("example_on_path")
def test_third_party_with_swapped_gates_fails(pytester: pytest.Pytester) -> None:
    result = _run_suite(pytester, SWAPPED, "-k", "l1_state and float64")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(failed=2)
    output = result.stdout.str()
    assert "got " in output
    assert ", should be " in output
    assert "[tiny-numpy-swapped, l1_state, y, index (" in output
    assert "tolerance: rtol" in output
    reproduce = (
        "reproduce alone: lstm-conformance check -k 'test_forward[tiny-numpy-swapped-float64-cpu-l1_state]' "
        "--lstm-implementation tiny_lstm:TinyLSTMSwappedGates --lstm-seed 0"
    )
    assert reproduce in output


@pytest.mark.usefixtures("example_on_path")
def test_entry_point_registration(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    """A distribution's ``lstm_conformance.implementations`` entry point makes its LSTM a registered name."""
    dist_info = pytester.path / "tiny_lstm-0.1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-lstm\nVersion: 0.1.0\n")
    group = "[lstm_conformance.implementations]\n"
    (dist_info / "entry_points.txt").write_text(f"{group}tiny-numpy-swapped = tiny_lstm:TinyLSTMSwappedGates\n")
    monkeypatch.syspath_prepend(str(pytester.path))
    result = _run_suite(pytester, "--lstm-implementations=tiny-numpy-swapped", "-k", "test_forward and l1_T1")
    result.assert_outcomes(failed=2)


# ----------------------------------------------------------------------------------------------------------
# Skips, xfails, report, parallel
# ----------------------------------------------------------------------------------------------------------


def test_unsupported_dtype_and_unavailable_framework_skip_with_reason(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        missing_framework="""
        from lstm_conformance.conformance.cases import GRID
        from tiny_lstm import TinyLSTM

        class NotInstalled(TinyLSTM):
            name = "not-installed"

            def unavailable_reason(self):
                return "fakeframework is not installed (pip install fakeframework)"
        """
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(EXAMPLE_DIR))
        patch.syspath_prepend(str(pytester.path))
        result = _run_suite(
            pytester,
            "--lstm-implementations=reference,not-installed",
            "--lstm-implementation=missing_framework:NotInstalled",
            "-k",
            "test_forward and l1_basic",
            "-rs",
        )
    # reference in float32 is not generated (it runs float64 only): a line of cases.not_run_lines, not a skip.
    result.assert_outcomes(passed=1, skipped=2)
    result.stdout.fnmatch_lines(
        ["*not-installed unavailable: fakeframework is not installed (pip install fakeframework)*"]
    )
    assert "reference-float32" not in result.stdout.str()


@pytest.mark.usefixtures("example_on_path")
def test_known_limitation_is_strict_xfail_and_a_fixed_one_is_reported(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    known = (
        KnownLimitation("tiny-numpy-swapped", "initial_state", "swapped gates (a known bug)", dtype="float64"),
        KnownLimitation("tiny-numpy", "initial_state", "claimed broken, but works", dtype="float64"),
    )
    monkeypatch.setattr(limitations, "STATIC_LIMITATIONS", known)
    result = _run_suite(pytester, TINY, SWAPPED, "--lstm-dtype=float64", "-k", "test_forward and l1_state", "-rxX")
    result.assert_outcomes(xfailed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "*XPASS(strict)*known limitation of tiny-numpy: claimed broken, but works*",
            "*known limitation fixed? *test_forward[[]tiny-numpy-float64-cpu-l1_state[]]*",
        ]
    )


def test_onnx_reference_ignored_options_are_known_limitations() -> None:
    if not limitations.onnx_reference_limitations():
        pytest.skip("lstm_conformance.adapters.onnx_runtime has no ONNX_REFERENCE_IGNORES")
    assert find_limitation("onnx-reference", ["ragged"], "cpu", "float32", "forward") is not None
    assert find_limitation("onnx-reference", ["gate_activation=relu"], "cpu", "float32", "forward") is not None
    assert find_limitation("onnx-reference", ["initial_state"], "cpu", "float32", "forward") is None
    assert find_limitation("onnxruntime", ["ragged"], "cpu", "float32", "forward") is None


@pytest.mark.usefixtures("example_on_path")
def test_report_files(pytester: pytest.Pytester, tmp_path: Path) -> None:
    report_dir = tmp_path / "report"
    keyword = "(l1_T1 or l1_state or l1_T20 or l1_T60) and not pair"
    result = _run_suite(pytester, TINY, SWAPPED, f"--lstm-report={report_dir}", "-k", keyword)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    report = json.loads((report_dir / "report.json").read_text())
    assert report["run"]["seed"] == 0
    assert report["math_modes"] == {"cpu float32": ["float32"], "cpu float64": ["float64"]}
    tiny, swapped = report["matrix"]["tiny-numpy"], report["matrix"]["tiny-numpy-swapped"]
    assert tiny["forward"]["passed"] == 8
    assert tiny["forward"]["failed"] == 0
    assert 0 <= tiny["gradients"]["worst_ratio"] <= 1
    assert swapped["forward"]["failed"] == 8
    assert swapped["forward"]["worst_ratio"] > 1
    assert report["total_checks"] == sum(test["checks"] for test in report["tests"])
    lengths = {point["steps"] for point in report["error_by_length"]}
    assert lengths == {1, 6, 20, 60}
    page = (report_dir / "report.html").read_text()
    assert page.count("<svg") == 2  # forward and gradients, a panel per implementation in each
    assert page.count(">tiny-numpy-swapped</text>") == 2
    assert "<polyline" in page


@pytest.mark.usefixtures("example_on_path")
def test_serial_and_parallel_runs_agree(pytester: pytest.Pytester, tmp_path: Path) -> None:
    found = {}
    for workers in ("0", "2"):
        report_dir = tmp_path / f"n{workers}"
        pytester.runpytest_subprocess(
            *SUITE,
            TINY,
            SWAPPED,
            "-n",
            workers,
            f"--lstm-report={report_dir}",
            "--lstm-max-examples=3",
            "-k",
            "l1_ragged or l1_T1 or drawn or pair",
        )
        tests = json.loads((report_dir / "report.json").read_text())["tests"]
        found[workers] = [(t["nodeid"], t["outcome"], t["checks"], t["worst_ratio"]) for t in tests]
    assert found["0"] == found["2"]
    assert {outcome for _, outcome, _, _ in found["0"]} >= {"passed", "failed"}


@pytest.mark.usefixtures("example_on_path")
def test_check_main_exit_codes(pytester: pytest.Pytester) -> None:
    pytester.chdir()
    common = ["-p", "no:cacheprovider", "-q", "--lstm-dtype=float64", "-k", "test_forward and l1_basic"]
    assert check_main([*common, "--lstm-implementations=reference"]) == 0
    assert check_main([*common, SWAPPED]) == 1
    assert check_main([*common, "--lstm-device=tpu"]) == 2


# ----------------------------------------------------------------------------------------------------------
# Tolerances and cases as data
# ----------------------------------------------------------------------------------------------------------


def test_tf32_is_never_judged_by_a_float32_tolerance() -> None:
    strict = tolerance_for("float32", "torch", "cuda", "forward", 10)
    tf32 = tolerance_for("tf32", "torch", "cuda", "forward", 10)
    assert tf32.rule.math_mode == "tf32"
    assert tf32.rtol > 100 * strict.rtol
    assert strict_mode_violation("strict", "tf32") is not None
    assert strict_mode_violation("tf32", "tf32") is None
    assert tolerance_for("float32", "x", "cpu", "forward", 1000).rtol > strict.rtol  # grows with T


def test_grid_covers_the_registry_axes() -> None:
    features = {feature.split("=")[0] for case in GRID for feature in case.features()}
    expected = {"num_layers", "bidirectional", "proj_size", "peepholes", "cell_clip", "gate_clip", "proj_clip"}
    expected |= {"input_forget", "no_bias", "gate_activation", "cell_input_activation", "cell_output_activation"}
    expected |= {"ragged", "initial_state", "batch_first"}
    assert expected <= features
    assert len({case.name for case in GRID}) == len(GRID)
    assert {case.steps for case in GRID} >= {1, 6, 20, 60}


def test_bfloat16_rounding() -> None:
    import numpy as np

    values = np.array([1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -2.5])
    assert round_to_dtype(values, "bfloat16").tolist() == [1.0, 1.0 + 2.0**-6, -2.5]
    assert sys.float_info.epsilon < abs(round_to_dtype(np.array([0.1]), "float32")[0] - 0.1)
