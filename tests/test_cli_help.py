"""``lstm-conformance --help`` imports no framework (nor NumPy): each command imports what it needs when it runs.

Checked in a fresh interpreter, since this test process has imported everything already. The wall time
(< 0.5 s) is measured in ``benchmarks/bench_convert.py``, not here.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("numpy", "torch", "tensorflow", "tf_keras", "keras", "jax", "flax", "onnx", "onnxruntime", "h5py")

_PROBE = """
import sys
from lstm_conformance.cli import main
status = main({argv!r})
heavy = [name for name in {heavy!r} if name in sys.modules]
print("IMPORTED", heavy, file=sys.stderr)
sys.exit(status)
"""


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["convert", "--help"], ["run", "--help"], ["compare", "--help"], ["inspect", "--help"], []],
    ids=["top", "convert", "run", "compare", "inspect", "no-command"],
)
def test_help_imports_no_framework(argv: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(argv=argv, heavy=HEAVY)], capture_output=True, text=True, timeout=60
    )
    assert "IMPORTED []" in done.stderr, done.stderr
    if argv:
        assert done.returncode == 0, done.stderr
        assert "usage: lstm-conformance" in done.stdout
    else:  # no command: a usage error, one line
        assert done.returncode == 2
        lines = done.stderr.splitlines()
        required = "the following arguments are required: COMMAND"
        assert lines == [f"lstm-conformance: error: {required}; see 'lstm-conformance --help'", "IMPORTED []"]


def test_help_names_every_command_and_the_run_gradient_names() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "lstm_conformance.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    for command in ("convert", "run", "compare", "inspect", "check"):
        assert command in done.stdout
    run_help = subprocess.run(
        [sys.executable, "-m", "lstm_conformance.cli", "run", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "grad/layers.0.forward.W" in " ".join(run_help.split())
