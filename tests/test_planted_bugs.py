"""The suite's depth, measured on planted bugs: third-party LSTMs (tests/planted_bugs/planted_lstm), each wrong
only where a real kernel branches (beyond a vector width's tail, deep in a long sequence, with saturated gates,
for large batches, in one unit of a large layer). Each passes the toy grid (``--lstm-profile quick``) and fails
the standard profile, on the cases of its own axis; the correct one passes both."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

# Imported here, before pytester's in-process runs, which restore sys.modules after each run: NumPy cannot be
# imported twice in one process.
from lstm_conformance.conformance import runtime  # noqa: F401

pytest_plugins = ["pytester"]

HERE = Path(__file__).parent
PATHS = [str(HERE / "third_party_example"), str(HERE / "planted_bugs")]
SUITE = ("--pyargs", "lstm_conformance.conformance.suite", "-p", "no:cacheprovider")

#: Planted bug class -> (its implementation name, the standard cases that may fail: those crossing its branch).
BUGS: dict[str, tuple[str, set[str]]] = {
    "OddTailBug": ("planted-odd-tail", {"h9_i8_odd_batch", "h17_i31", "saturated_h9_long"}),
    "LongSequenceBug": ("planted-long-sequence", {"t300_ragged", "t1000", "saturated_h9_long"}),
    "SaturationBug": ("planted-saturation", {"saturated", "saturated_h9_long"}),
    "LargeBatchBug": ("planted-large-batch", {"b300"}),
    "LargeHiddenBug": ("planted-large-hidden", {"h512"}),
}
CORRECT = "planted-correct"


@pytest.fixture
def planted_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    for path in PATHS:
        monkeypatch.syspath_prepend(path)
    monkeypatch.setenv("PYTHONPATH", ":".join(PATHS))


def _options() -> list[str]:
    names = ["PlantedCorrect", *BUGS]
    return [f"--lstm-implementation=planted_lstm:{name}" for name in names]


def _failed_cases(output: str) -> dict[str, set[str]]:
    """implementation -> cases with a failed test, from pytest's ``-rf`` summary lines."""
    found: dict[str, set[str]] = {}
    for line in output.splitlines():
        match = re.match(r"FAILED \S+::test_\w+\[(planted-[a-z-]+?)-float\d+-cpu-(\w+)\]", line)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    return found


@pytest.mark.usefixtures("planted_on_path")
def test_planted_bugs_pass_the_toy_grid(pytester: pytest.Pytester) -> None:
    """Each bug is invisible on the toy grid: the quick profile (without drawn cases) passes all of them."""
    result = pytester.runpytest_inprocess(
        *SUITE,
        *_options(),
        "--lstm-profile=quick",
        "--lstm-max-examples=0",
        "--lstm-dtype=float64",
        "-k",
        "not test_pair",
        "-rf",
    )
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()[-3000:]
    assert result.parseoutcomes()["passed"] >= 6 * 2 * 8


@pytest.mark.usefixtures("planted_on_path")
def test_standard_profile_fails_every_planted_bug_on_its_own_axis(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_inprocess(
        *SUITE, *_options(), "--lstm-max-examples=0", "--lstm-dtype=float64", "-k", "not test_pair", "-rf"
    )
    output = result.stdout.str()
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output[-3000:]
    failed = _failed_cases(output)
    assert CORRECT not in failed, failed.get(CORRECT)
    for bug, (name, axis_cases) in BUGS.items():
        assert name in failed, f"{bug} passed the standard profile"
        assert failed[name] <= axis_cases, f"{bug} failed beyond its axis: {failed[name] - axis_cases}"
