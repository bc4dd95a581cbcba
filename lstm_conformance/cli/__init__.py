"""The ``lstm-conformance`` command line: convert, run, compare, inspect, check, report.

This module builds the argument parser and turns errors into exit statuses; the commands live in
``lstm_conformance.cli.<command>`` (parsing and printing over ``lstm_conformance.api``) and are imported only
when run, so that ``--help`` imports neither NumPy nor any framework (``tests/test_cli_help.py`` checks it).

Exit status: 0 success; 1 a check failed (a conversion that does not verify, a ``compare`` beyond tolerance);
2 a usage or input error, told in one line on stderr (``lstm-conformance: error: <problem>; <fix>``) with no
traceback and no partial output file. An unexpected exception still shows its traceback: it is a bug.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import NoReturn

from lstm_conformance.names import DTYPES, FORMATS, IMPLEMENTATIONS

PROG = "lstm-conformance"
FORMAT_NAMES = ", ".join(FORMATS)
IMPLEMENTATION_NAMES = ", ".join(IMPLEMENTATIONS) + ", or one a third party registers"

#: Command name -> "module:function", imported only when that command runs (each module imports NumPy).
COMMANDS: dict[str, str] = {
    "convert": "lstm_conformance.cli.convert:convert_command",
    "run": "lstm_conformance.cli.run:run_command",
    "compare": "lstm_conformance.cli.compare:compare_command",
    "inspect": "lstm_conformance.cli.inspect:inspect_command",
    "report": "lstm_conformance.cli.report:report_command",
}

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_USAGE = 2


class Terminated(BaseException):
    """SIGTERM or SIGHUP arrived while an output was staged (``api.StagedOutput``): unwinds like Ctrl-C, past
    ``except Exception`` in libraries, so the temporary files are removed before the process ends."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class UsageError(Exception):
    """A command line argparse refused; main prints it as one line."""

    def __init__(self, message: str, prog: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise (one stderr line, from main) instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, self.prog)


_DESCRIPTION = """\
Do two LSTMs compute the same function? Convert LSTM weights between frameworks with proof, run one on given
inputs, find where two model files part, list what a file holds, and run the conformance suite.

formats (FMT, inferred from the file name where it can be): torch (.pt/.pth state_dict), safetensors,
keras (.keras), keras-h5 (.h5, .weights.h5), tf-checkpoint (a prefix such as model.ckpt), onnx, npz (the
canonical layout of reference/layout.py).

exit status: 0 success; 1 a check failed (conversion not verified, compare beyond tolerance); 2 a usage or
input error, told in one line on stderr."""

_CONVERT = """\
Read the LSTM in SRC, write it to DST in DST's format, then prove it: run the source and the file written
(read back) on the same random input (5 steps, batch 3, random initial states and output gradients), in
float64 where both run it (else float32), and compare y, h_n, c_n and, where both compute gradients, the
gradients with respect to x, h0, c0 and every parameter, by the conformance suite's rule for a pair (the
tolerance of conformance/tolerances.py for that dtype and length); the result says the worst error as a
fraction of the tolerance. The source runs as the file itself, loaded by its own framework, where its reader
can do that: only then does the result say "verified". A file of weights only (a state_dict, a checkpoint
without its graph) runs as read: the result says "weights converted under assumptions", each assumption on
stderr. Beyond tolerance the conversion fails with exit 1 and DST is not written. DST is written atomically.
TF checkpoints do not store forget_bias: reading assumes TF's default 1.0 and says so; --forget-bias F sets it,
and writing takes it off again. Tensors of SRC that are not the LSTM's are listed as "not carried"."""

_RUN = """\
Run MODEL's LSTM with implementation IMPL on the arrays given (.npy files, time-major: X [T, B, I], H0
[layers*dirs, B, Hout], C0 [layers*dirs, B, H], L [B] integers, DY [T, B, dirs*Hout]) and write OUT.npz with
y, h_n and c_n in PyTorch's shapes whatever MODEL's framework. With --grad-output DY, OUT also holds grad_x,
grad_h0, grad_c0 (gradients of sum(y*DY)) and grad/<name> for every parameter, named and shaped as in MODEL
itself whatever IMPL ran (--implementation native picks MODEL's own): for a torch file its state_dict keys
(grad/weight_ih_l0, or grad/encoder.weight_ih_l0 for an LSTM under that prefix), for a TF checkpoint its
variable names, for a Keras file the paths it stores the LSTM's weights at (grad/layers/lstm/cell/vars/0,
...), for an ONNX file its LSTM nodes' W, R, B and P inputs, for an npz file the canonical names of
reference/layout.py (grad/layers.0.forward.W, ...)."""

_COMPARE = """\
Run the LSTMs in files A and B, each with its own implementation (each file itself where its reader can), on
the same random input and random initial states, outputs and gradients judged by the conformance suite's rule
for a pair, and say where they part: the first layer, direction and time step beyond tolerance (found by
running both models truncated to their first k layers), and which gates: the canonical weights' gate blocks
compared one by one (a gate-order bug shows as swapped blocks), then A run with B's blocks of those gates, to
show they explain the difference; where the weights agree, the reference tests what B computes instead
(permuted gates, a shifted forget bias). Errors are said as fractions of the tolerance. Exit 0 when they
agree, 1 when they do not."""

_INSPECT = "List the LSTMs in MODEL and their layout: name, implementation, config, features, parameter shapes, notes."

_CHECK = """\
Run the conformance suite (the pytest plugin) over the installed implementations. Every argument after
'check' goes to pytest: -n 2, -k EXPR, --lstm-implementations ..., --lstm-report DIR, ...
'lstm-conformance check --help' lists the suite's options, its profiles and examples."""

_REPORT = """\
Work with the reports of suite runs (--lstm-report DIR).

merge DIR... --output DIR: read each job's report.json (a CI matrix: one job per framework, device or machine)
and write one report.json and report.html to --output: every job's matrix rows, checks summed, each job's
settings and environment (versions, device) kept under its label (the directory's name), and every test that
two jobs judged differently flagged as a conflict. Exit 0 when the merged report passes, 1 when a job failed a
check or two jobs conflict, 2 when an input is not a report.json of a suite run."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    _add_convert(commands)
    _add_run(commands)
    _add_compare(commands)
    _add_inspect(commands)
    _add_report(commands)
    # `check` is dispatched before parsing (its arguments belong to pytest); listed here for --help.
    commands.add_parser("check", help="run the conformance suite (pytest options pass through)", description=_CHECK)
    return parser


def _command(commands: argparse._SubParsersAction, name: str, summary: str, text: str) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = commands.add_parser(
        name, help=summary, description=text, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def _add_reading(parser: argparse.ArgumentParser, *, select: bool = True) -> None:
    parser.add_argument("--from", dest="from_format", metavar="FMT", help=f"the input's format ({FORMAT_NAMES})")
    if select:
        parser.add_argument("--select", metavar="NAME", help="which LSTM, when the file holds several")
    parser.add_argument(
        "--forget-bias", type=float, metavar="F", help="TF checkpoints: the cells' forget_bias (default: TF's 1.0)"
    )


def _add_convert(commands: argparse._SubParsersAction) -> None:
    parser = _command(commands, "convert", "convert LSTM weights between formats, with proof", _CONVERT)
    parser.add_argument("src", metavar="SRC", help="the model file to read (a TF checkpoint: its prefix)")
    parser.add_argument("dst", metavar="DST", help="the file to write")
    _add_reading(parser)
    parser.add_argument("--to", dest="to_format", metavar="FMT", help=f"DST's format ({FORMAT_NAMES})")
    parser.add_argument(
        "--dtype",
        choices=DTYPES,
        help="the dtype DST stores (default: the format's choice, usually the source's own)",
    )
    parser.add_argument(
        "--quantize",
        metavar="MODE",
        help="write DST quantized (tflite: dynamic-int8, int8 weights with float32 activations); the proof then "
        "allows 3x the written file's own measured quantization error, and says it",
    )
    parser.add_argument("--force", action="store_true", help="overwrite DST if it exists")
    parser.add_argument("--no-verify", action="store_true", help="write without running both sides")
    parser.add_argument("--seed", type=int, default=0, help="seed of the verification input (default 0)")


def _add_run(commands: argparse._SubParsersAction) -> None:
    parser = _command(commands, "run", "run one LSTM on given inputs, outputs and gradients to .npz", _RUN)
    parser.add_argument("model", metavar="MODEL", help="the model file")
    parser.add_argument(
        "--implementation", required=True, metavar="IMPL", help=f"{IMPLEMENTATION_NAMES}, or native (MODEL's own)"
    )
    parser.add_argument("--input", required=True, metavar="X.npy", help="input [T, B, I]")
    parser.add_argument("--h0", metavar="H0.npy", help="initial h [layers*dirs, B, Hout] (default zeros)")
    parser.add_argument("--c0", metavar="C0.npy", help="initial c [layers*dirs, B, H] (default zeros)")
    parser.add_argument("--seq-lens", metavar="L.npy", help="per-sample lengths [B], integers in 1..T")
    parser.add_argument("--grad-output", metavar="DY.npy", help="cotangent of y [T, B, dirs*Hout]: adds gradients")
    parser.add_argument(
        "--dtype", choices=("float64", "float32"), help="compute dtype (default float64 where IMPL runs it)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device (default cpu)")
    parser.add_argument("--output", required=True, metavar="OUT.npz", help="the .npz to write")
    _add_reading(parser)


def _add_compare(commands: argparse._SubParsersAction) -> None:
    parser = _command(commands, "compare", "find where two model files compute differently", _COMPARE)
    parser.add_argument("a", metavar="A", help="the first model file")
    parser.add_argument("b", metavar="B", help="the second model file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random input (default 0)")
    parser.add_argument("--steps", type=_positive, default=5, metavar="T", help="time steps (default 5)")
    parser.add_argument("--batch", type=_positive, default=2, metavar="N", help="batch size (default 2)")
    parser.add_argument("--json", action="store_true", help="print a machine-readable result")
    parser.add_argument("--select-a", metavar="NAME", help="which LSTM of A, when it holds several")
    parser.add_argument("--select-b", metavar="NAME", help="which LSTM of B, when it holds several")
    parser.add_argument("--from-a", metavar="FMT", help="A's format, when its name does not say")
    parser.add_argument("--from-b", metavar="FMT", help="B's format, when its name does not say")
    parser.add_argument(
        "--forget-bias", type=float, metavar="F", help="TF checkpoints: the cells' forget_bias (default: TF's 1.0)"
    )


def _add_inspect(commands: argparse._SubParsersAction) -> None:
    parser = _command(commands, "inspect", "list the LSTMs in a file and their layout", _INSPECT)
    parser.add_argument("model", metavar="MODEL", help="the model file")
    parser.add_argument("--json", action="store_true", help="print a machine-readable listing")
    _add_reading(parser, select=False)


def _add_report(commands: argparse._SubParsersAction) -> None:
    parser = _command(commands, "report", "merge the reports of several suite runs (CI jobs) into one", _REPORT)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", parser_class=_Parser)
    actions.required = True
    merge = actions.add_parser(
        "merge",
        help="one report.json and report.html from several jobs' reports",
        description=_REPORT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    merge.add_argument("directories", nargs="+", metavar="DIR", help="a job's --lstm-report directory (or report.json)")
    merge.add_argument("--output", required=True, metavar="DIR", help="where to write report.json and report.html")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _quiet_frameworks() -> None:
    """Keep TensorFlow's Python-side deprecation chatter (tf.compat.v1 cells, dynamic_rnn) off stderr, where
    this tool's own messages are one line each; its errors still show."""
    import logging
    import warnings

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r"`tf\.", category=UserWarning)


def _dispatch(args: argparse.Namespace) -> int:
    _quiet_frameworks()
    module_name, _, function_name = COMMANDS[args.command].partition(":")
    command: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module_name), function_name)
    return command(args)


def _check(arguments: list[str]) -> int:
    from lstm_conformance.cli.check import check_main

    return check_main(arguments)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _os_error_text(error: OSError) -> str:
    where = f"{error.filename}: " if error.filename else ""
    return f"{where}{error.strerror or error}; check the path and its permissions"


@contextmanager
def _native_stderr_silenced() -> Iterator[None]:
    """Send what C and C++ libraries write straight to file descriptor 2 (TensorFlow's absl start-up lines,
    past TF_CPP_MIN_LOG_LEVEL) to /dev/null while a command runs, so that they do not bury the one-line
    messages; Python's sys.stderr (our messages, warnings, tracebacks) keeps the real stream.
    LSTM_CONFORMANCE_NATIVE_LOGS=1 keeps the native output, for debugging a framework."""
    try:
        python_stderr_is_fd2 = sys.stderr.fileno() == 2
    except (AttributeError, OSError, ValueError):  # replaced by a capture, as under pytest's capsys
        python_stderr_is_fd2 = False
    if not python_stderr_is_fd2 or os.environ.get("LSTM_CONFORMANCE_NATIVE_LOGS") == "1":
        yield
        return
    sys.stderr.flush()
    real_stderr = os.dup(2)
    original = sys.stderr
    sys.stderr = os.fdopen(os.dup(real_stderr), "w", buffering=1, encoding=original.encoding, errors="backslashreplace")
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        sys.stderr.flush()
        sys.stderr.close()
        sys.stderr = original
        os.dup2(real_stderr, 2)
        os.close(real_stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``lstm-conformance``; returns the exit status."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    # TensorFlow's C++ start-up chatter (oneDNN, CUDA probing) would bury the one-line messages on stderr.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        if arguments[:1] == ["check"]:
            return _check(arguments[1:])
        args = build_parser().parse_args(arguments)
        with _native_stderr_silenced():
            status = _dispatch(args)
        sys.stdout.flush()  # here, not at exit: a closed pipe (`| head`) is then caught below
        return status
    except BrokenPipeError:
        # The reader of stdout went away (`lstm-conformance inspect m.pt | head`): not an error of the input.
        # Point stdout at /dev/null so that the interpreter's own flush at exit does not complain again.
        with suppress(AttributeError, OSError, ValueError):  # a capture has no descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + 13  # as a process killed by SIGPIPE
    except UsageError as error:
        print(f"{PROG}: error: {_one_line(str(error))}; see '{error.prog} --help'", file=sys.stderr)
    except OSError as error:
        print(f"{PROG}: error: {_one_line(_os_error_text(error))}", file=sys.stderr)
    except SystemExit as exit_request:
        # argparse's --help (and pytest under `check`) exit this way; main returns the status instead.
        code = exit_request.code
        return EXIT_OK if code is None else code if isinstance(code, int) else EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Terminated as stop:
        import signal

        print(f"{PROG}: terminated by {signal.Signals(stop.signum).name}; nothing was written", file=sys.stderr)
        return 128 + stop.signum
    except MemoryError:
        print(f"{PROG}: error: out of memory; use a machine with more memory, or a smaller model", file=sys.stderr)
    except Exception as error:
        # Errors this project raises on purpose; anything else is a bug and keeps its traceback.
        from lstm_conformance.reference.errors import LSTMConformanceError

        if not isinstance(error, LSTMConformanceError):
            raise
        print(f"{PROG}: error: {_one_line(str(error))}", file=sys.stderr)
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
