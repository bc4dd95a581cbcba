"""``lstm-conformance check``: the conformance suite run by pytest, with the command line's exit statuses and a
console made for the suite: one page (the plugin's header, matrix, failures, grouped skip reasons, summary).

Against pytest's defaults, ``check`` turns off what would bury that page, each unless the user asks for it:
pytest's per-test skip/xfail listing (``-rfE`` unless an ``-r`` is given: failures and errors only), pytest's
raw warnings summary (``--disable-warnings`` unless ``-W``/``-rw`` are given: the plugin counts the warnings and
report.json lists them), and progress characters when the output is not a terminal (``--lstm-progress=auto``).
"""

from __future__ import annotations

import os
import sys
import textwrap

#: pytest exit codes -> the command line's (0 success, 1 a check failed, 2 usage or input error).
_EXIT_OK, _EXIT_TESTS_FAILED = 0, 1
SUITE_MODULE = "lstm_conformance.conformance.suite"

_USAGE = """\
usage: lstm-conformance check [--lstm-profile quick|standard|exhaustive] [--lstm-implementations NAMES]
                              [--lstm-report DIR] [other --lstm-* options] [pytest options]

Run the conformance suite (a pytest plugin) over the installed implementations: each one's forward outputs
and gradients against the float64 reference, and every pair against each other, then print one page (header
with versions, the matrix, failures with the command that reproduces each, skip reasons grouped, a summary).
Exit status: 0 every check passed, 1 a check failed, 2 a usage error, an interrupted run or nothing selected.

profiles (--lstm-profile, where this installation has it): quick (a smoke run), standard (the default: every
axis where kernels branch, sized for CI), exhaustive (nightly jobs and GPUs).
"""

_EXAMPLES = """\
examples:
  lstm-conformance check -n 2 --lstm-report lstm-report       # everything installed, 2 processes, report files
  lstm-conformance check --lstm-implementations torch,onnxruntime --lstm-dtype float32
  lstm-conformance check --lstm-implementation mypackage.module:MyLSTM     # a third party's LSTM
  lstm-conformance check -k 'test_forward and l1_basic' -x                  # pytest's selection options
  lstm-conformance report merge job-a/ job-b/ --output merged/               # one report from CI jobs

pytest's own options (-n N, -k EXPR, -x, -v, -r CHARS, --junitxml PATH, ...) pass through unchanged; they are
listed by: pytest --help. Defaults that differ from pytest's: -rfE (failures and errors only; give -r to
choose), warnings counted instead of printed (give -W or -rw to see them), --lstm-progress auto.
"""


class _OptionRecorder:
    """Stands in for pytest's parser to read the suite's options from the plugin's own declarations (so this
    help lists exactly the options the plugin adds), without starting pytest."""

    def __init__(self) -> None:
        self.options: list[tuple[tuple[str, ...], dict[str, object]]] = []

    def getgroup(self, name: str, description: str = "") -> _OptionRecorder:
        return self

    def addoption(self, *names: str, **attributes: object) -> None:
        self.options.append((names, attributes))


def suite_options_help() -> str:
    from lstm_conformance.conformance import plugin

    recorder = _OptionRecorder()
    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    lines = ["options of the suite:"]
    for names, attributes in recorder.options:
        metavar = attributes.get("metavar") or ("|".join(attributes["choices"]) if "choices" in attributes else "")  # type: ignore[arg-type]
        flag = ", ".join(names) + (f" {metavar}" if metavar and attributes.get("action") != "store_true" else "")
        help_text = str(attributes.get("help", ""))
        default = attributes.get("default")
        if default not in (None, False, [], "") and "default" not in help_text:
            help_text += f" (default: {default})"
        lines.append(f"  {flag}")
        lines.append(textwrap.fill(help_text, width=110, initial_indent=" " * 6, subsequent_indent=" " * 6))
    return "\n".join(lines)


def check_help() -> str:
    return f"{_USAGE}\n{suite_options_help()}\n\n{_EXAMPLES}"


def _wants_help(args: list[str]) -> bool:
    before_separator = args[: args.index("--")] if "--" in args else args
    return any(arg in ("-h", "--help") for arg in before_separator)


def _joined_values(args: list[str]) -> list[str]:
    """``--lstm-report DIR`` -> ``--lstm-report=DIR`` for the suite's options that take a value: pytest picks
    its rootdir from the arguments before plugins declare their options, so an existing DIR given as a separate
    word would become the rootdir (and change every test's node id)."""
    recorder = _OptionRecorder()
    from lstm_conformance.conformance import plugin

    plugin.pytest_addoption(recorder)  # type: ignore[arg-type]
    takes_value = {name for names, attrs in recorder.options if attrs.get("action") != "store_true" for name in names}
    joined: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            joined += args[index:]
            break
        if arg in takes_value and index + 1 < len(args):
            joined.append(f"{arg}={args[index + 1]}")
            index += 2
            continue
        joined.append(arg)
        index += 1
    return joined


def suite_arguments(args: list[str]) -> list[str]:
    """pytest's arguments for the suite: ``args`` after check's own defaults, each default left out when the
    user gave that option (pytest takes the last value, so the user's would win anyway; leaving it out keeps
    the command line honest)."""
    args = _joined_values(args)
    defaults = []
    report_chars = [arg for arg in args if arg.startswith("-r") and not arg.startswith("--")]
    if not report_chars:
        defaults.append("-rfE")
    shows_warnings = any(arg.startswith("-W") or arg == "--pythonwarnings" for arg in args) or any(
        set(arg[2:]) & set("wWaA") for arg in report_chars
    )
    if not shows_warnings and "--disable-warnings" not in args and "--disable-pytest-warnings" not in args:
        defaults.append("--disable-warnings")
    if not any(arg.startswith("--lstm-progress") for arg in args):
        defaults.append("--lstm-progress=auto")
    parallel = any(arg == "-n" or arg.startswith(("-n", "--numprocesses")) for arg in args)
    if parallel and not any(arg == "--dist" or arg.startswith("--dist=") for arg in args):
        # One worker per implementation (the suite's xdist_group marks): each run, prepared model and
        # reference result is made once instead of once per worker that happens to get one of its tests.
        defaults.append("--dist=loadgroup")
    return ["--pyargs", SUITE_MODULE, *defaults, *args]


def check_main(args: list[str]) -> int:
    """Run the conformance suite with pytest and the given pytest options.

    Returns 0 when every check passed, 1 when one failed, 2 for a usage error, an interrupted run, or options
    that select no test.
    """
    if _wants_help(args):
        print(check_help())
        return _EXIT_OK
    # TF's tf.compat.v1 cells need this before TensorFlow's first import in every process; xdist workers
    # inherit it from here. (Importing the adapters sets it too, but a conftest may import TensorFlow first.)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import pytest

    sys.stdout.flush()
    code = int(pytest.main(suite_arguments(args)))
    return {int(pytest.ExitCode.OK): _EXIT_OK, int(pytest.ExitCode.TESTS_FAILED): _EXIT_TESTS_FAILED}.get(code, 2)
