"""Shared test setup. TF's legacy cells need TF_USE_LEGACY_KERAS=1 before TensorFlow's first import in every
process; xdist workers inherit the environment of the process that starts them.

Also what the command-line tests share: the ``cli`` fixture and ``require_format``."""

import os
from collections.abc import Callable

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

import pytest

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Run:
    """``cli("convert", a, b)`` -> (exit status, stdout, stderr), run in-process."""
    from lstm_conformance.cli import main

    def run(*argv: object) -> tuple[int, str, str]:
        capsys.readouterr()
        status = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return status, out, err

    return run


def require_format(name: str) -> None:
    """Skip when a format's framework is not installed."""
    from lstm_conformance.adapters.formats import get_format

    try:
        file_format = get_format(name)
    except ModuleNotFoundError as error:
        pytest.skip(f"format {name!r} not available: {error}")
    reason = file_format.unavailable_reason()
    if reason:
        pytest.skip(f"format {name!r}: {reason}")
