"""``lstm-conformance check``: the conformance suite run by pytest, with the command line's exit statuses."""

from __future__ import annotations

import os

#: pytest exit codes -> the command line's (0 success, 1 a check failed, 2 usage or input error).
_EXIT_OK, _EXIT_TESTS_FAILED = 0, 1
SUITE_MODULE = "lstm_conformance.conformance.suite"


def check_main(args: list[str]) -> int:
    """Run the conformance suite with pytest and the given pytest options.

    Returns 0 when every check passed, 1 when one failed, 2 for a usage error, an interrupted run, or options
    that select no test.
    """
    # TF's tf.compat.v1 cells need this before TensorFlow's first import in every process; xdist workers
    # inherit it from here. (Importing the adapters sets it too, but a conftest may import TensorFlow first.)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import pytest

    code = int(pytest.main(["--pyargs", SUITE_MODULE, *args]))
    return {int(pytest.ExitCode.OK): _EXIT_OK, int(pytest.ExitCode.TESTS_FAILED): _EXIT_TESTS_FAILED}.get(code, 2)
