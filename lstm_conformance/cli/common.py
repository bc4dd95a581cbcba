"""What the commands share: reading model files, choosing an LSTM, running implementations on the same random
input, measuring errors against a dtype-aware tolerance, writing output atomically, and terminal progress."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats import FileFormat, FoundLSTM, ModelContents, get_format, infer_format
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.cli import Terminated
from lstm_conformance.reference.errors import FrameworkMissingError, InputFileError, LSTMConformanceError
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

PROG = "lstm-conformance"
TF_CHECKPOINT = "tf-checkpoint"
#: Formats that take a forget_bias option (TF cells add it at run time and their files do not store it).
FORGET_BIAS_FORMATS = (TF_CHECKPOINT,)

#: The scaled error (see ``scaled_error``) allowed between two runs, by the least precise dtype involved.
#: float64: ~1e6 ulps, far above rounding differences of two float64 implementations, far below any layout
#: bug. float32: what a few steps of 4 layers, H=1024 accumulate (measured ~1e-6), with margin; a swapped gate
#: or a forget bias off by one moves outputs by 1e-2 and more.
TOLERANCES: dict[str, float] = {"float64": 1e-9, "float32": 2e-4, "float16": 5e-2, "bfloat16": 1e-1}
_PRECISION_ORDER = ("float64", "float32", "float16", "bfloat16")


# ----------------------------------------------------------------------------------------------------------
# Messages
# ----------------------------------------------------------------------------------------------------------


def warn(message: str) -> None:
    print(f"{PROG}: warning: {' '.join(message.split())}", file=sys.stderr)


class Progress:
    """One status line on stderr with the elapsed time, rewritten in place every half second while a step runs
    (a framework writing 400 MB says nothing for a while), only when stderr is a terminal: never in logs."""

    def __init__(self) -> None:
        self.enabled = sys.stderr.isatty()
        self.start = time.perf_counter()
        self.message = ""
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def step(self, message: str) -> None:
        if not self.enabled:
            return
        self.message = message
        self._draw()
        if self._ticker is None:
            self._stop.clear()
            self._ticker = threading.Thread(target=self._tick, name="lstm-conformance-progress", daemon=True)
            self._ticker.start()

    def done(self) -> None:
        if not self.enabled:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
            self._ticker = None
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()

    def _tick(self) -> None:
        while not self._stop.wait(0.5):
            self._draw()

    def _draw(self) -> None:
        elapsed = time.perf_counter() - self.start
        sys.stderr.write(f"\r\x1b[K[{elapsed:6.1f} s] {self.message}")
        sys.stderr.flush()


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LoadedModel:
    """One LSTM chosen from a file, with where it came from."""

    path: Path
    format_name: str
    found: FoundLSTM
    contents: ModelContents


def load_format(name: str) -> FileFormat:
    """The FileFormat named ``name``, or an error saying why this installation cannot read or write it."""
    try:
        file_format = get_format(name)
    except ModuleNotFoundError as error:
        raise FrameworkMissingError(
            f"format {name!r} is not available here ({error}); install the extra it needs, e.g. "
            f"pip install 'lstm-conformance[all]'"
        ) from None
    reason = file_format.unavailable_reason()
    if reason:
        raise FrameworkMissingError(f"format {name!r} is not available here: {reason}")
    return file_format


def format_of(path: Path, explicit: str | None) -> str:
    return explicit if explicit else infer_format(path)


def format_options(format_name: str, forget_bias: float | None) -> dict[str, Any]:
    """Options for a format's read/write: forget_bias only for the formats that take it."""
    return {"forget_bias": forget_bias} if forget_bias is not None and format_name in FORGET_BIAS_FORMATS else {}


def check_forget_bias_applies(forget_bias: float | None, format_names: list[str]) -> None:
    if forget_bias is not None and not any(name in FORGET_BIAS_FORMATS for name in format_names):
        raise InputFileError(
            f"--forget-bias applies to {', '.join(FORGET_BIAS_FORMATS)} files only, and none is involved "
            f"({', '.join(format_names)}); drop --forget-bias"
        )


def model_exists(path: Path, format_name: str) -> bool:
    """A file, or for a TF checkpoint its prefix (``model.ckpt`` beside ``model.ckpt.index``)."""
    if format_name == TF_CHECKPOINT:
        return Path(f"{path}.index").is_file() or path.is_file()
    return path.exists()


def read_model(path: Path, format_name: str, options: Mapping[str, Any]) -> ModelContents:
    if not model_exists(path, format_name):
        what = "checkpoint prefix (no .index file beside it)" if format_name == TF_CHECKPOINT else "file"
        raise InputFileError(f"{path}: no such {what}; check the path")
    if path.is_dir():
        raise InputFileError(f"{path}: is a directory; give a model file")
    return load_format(format_name).read(path, options)


def select_lstm(contents: ModelContents, path: Path, select: str | None, flag: str = "--select") -> FoundLSTM:
    names = [found.name or "''" for found in contents.lstms]
    if not contents.lstms:
        others = f" (it holds {len(contents.other_tensors)} other tensors)" if contents.other_tensors else ""
        raise InputFileError(f"{path}: no LSTM found{others}; give a file that holds an LSTM's weights")
    if select is None:
        if len(contents.lstms) > 1:
            raise InputFileError(f"{path} holds {len(names)} LSTMs: {', '.join(names)}; choose one with {flag} NAME")
        return contents.lstms[0]
    for found in contents.lstms:
        if found.name == select:
            return found
    raise InputFileError(f"{path}: no LSTM named {select!r}; {flag} one of: {', '.join(names)}")


def load_model(
    path_text: str, explicit_format: str | None, select: str | None, forget_bias: float | None, flag: str = "--select"
) -> LoadedModel:
    """Read ``path_text`` and choose its LSTM; warns on stderr about NaN or Inf weights."""
    path = Path(path_text)
    name = format_of(path, explicit_format)
    contents = read_model(path, name, format_options(name, forget_bias))
    found = select_lstm(contents, path, select, flag)
    warn_nonfinite(found.weights, path)
    return LoadedModel(path=path, format_name=name, found=found, contents=contents)


def warn_nonfinite(weights: LSTMWeights, path: Path) -> None:
    for key, array in weights.named_arrays().items():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            warn(f"{path}: {key} holds {bad} NaN/Inf value(s); outputs will not be finite")


def describe_config(config: LSTMConfig) -> str:
    parts = [f"{config.num_layers} layer{'s' if config.num_layers > 1 else ''}"]
    parts.append("bidirectional" if config.bidirectional else "unidirectional")
    parts.append(f"input {config.input_size}, hidden {config.hidden_size}")
    if config.proj_size:
        parts.append(f"projected to {config.proj_size}")
    return ", ".join(parts)


def weights_dtype(weights: LSTMWeights) -> str:
    """The least precise dtype among the arrays (how precisely the file holds the function)."""
    names = {str(np.asarray(array).dtype) for array in weights.named_arrays().values()}
    return least_precise(names)


def least_precise(dtypes: set[str] | list[str]) -> str:
    ranked = [name for name in _PRECISION_ORDER if name in set(dtypes)]
    if not ranked:
        return "float64"
    return ranked[-1]


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------


def implementation_for(found: FoundLSTM, purpose: str) -> Implementation:
    implementation = get_implementation(found.implementation, **found.implementation_options)
    reason = implementation.unavailable_reason()
    if reason:
        raise FrameworkMissingError(f"cannot {purpose}: implementation {found.implementation!r}: {reason}")
    return implementation


def common_dtype(*implementations: Implementation) -> list[str]:
    """Per implementation, the dtype to run: float64 where all run it, else float32 where all do, else each
    one's most precise."""
    supported = [set(impl.capabilities().dtypes) for impl in implementations]
    for candidate in ("float64", "float32"):
        if all(candidate in dtypes for dtypes in supported):
            return [candidate] * len(implementations)
    return [next((d for d in _PRECISION_ORDER if d in dtypes), "float32") for dtypes in supported]


def random_inputs(config: LSTMConfig, steps: int, batch: int, seed: int, initial_state: bool) -> RunInputs:
    """Random time-major input and, where both sides take them, random initial states."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((steps, batch, config.input_size))
    if not initial_state:
        return RunInputs(x=x)
    states = config.num_layers * config.num_directions
    h0 = 0.5 * rng.standard_normal((states, batch, config.output_size))
    c0 = 0.5 * rng.standard_normal((states, batch, config.hidden_size))
    return RunInputs(x=x, h0=h0, c0=c0)


def takes_initial_state(*implementations: Implementation) -> bool:
    return all(impl.capabilities().initial_state for impl in implementations)


def run_forward(implementation: Implementation, weights: LSTMWeights, inputs: RunInputs, dtype: str) -> RunResult:
    options = RunOptions(dtype=dtype, device="cpu")
    implementation.check_supported(weights.config, inputs, options)
    return implementation.run(weights, inputs, options)


# ----------------------------------------------------------------------------------------------------------
# Errors between runs
# ----------------------------------------------------------------------------------------------------------


def scaled_error(expected: NDArray[Any], got: NDArray[Any]) -> float:
    """max |expected - got| / max(1, max |expected|): absolute for LSTM outputs in [-1, 1], relative for
    larger ones (c can grow). Where both hold the same NaN or Inf the arrays agree (NaN weights give NaN on both
    sides); a non-finite value on one side only is an infinite error."""
    expected = np.asarray(expected, dtype=np.float64)
    got = np.asarray(got, dtype=np.float64)
    if expected.shape != got.shape:
        return float("inf")
    same_nonfinite = (np.isnan(expected) & np.isnan(got)) | (np.isinf(expected) & (expected == got))
    finite = np.isfinite(expected) & np.isfinite(got)
    if np.any(~finite & ~same_nonfinite):
        return float("inf")
    if not finite.any():
        return 0.0
    difference = np.abs(expected[finite] - got[finite]).max()
    return float(difference / max(1.0, float(np.abs(expected[finite]).max())))


def output_errors(expected: RunResult, got: RunResult) -> dict[str, float]:
    return {name: scaled_error(getattr(expected, name), getattr(got, name)) for name in ("y", "h_n", "c_n")}


def tolerance_for(dtypes: list[str]) -> tuple[float, str]:
    dtype = least_precise(dtypes)
    return TOLERANCES[dtype], dtype


# ----------------------------------------------------------------------------------------------------------
# Writing atomically
# ----------------------------------------------------------------------------------------------------------

#: Files of a TF checkpoint prefix P: P.index, P.data-00000-of-00001, P.meta.
_CHECKPOINT_FILE = re.compile(r"\.(index|meta|data-\d+-of-\d+)$")


def destination_exists(path: Path, format_name: str) -> bool:
    if format_name == TF_CHECKPOINT:
        return path.exists() or any(_checkpoint_files(path))
    return path.exists() or path.is_symlink()


def _checkpoint_files(prefix: Path) -> Iterator[Path]:
    if not prefix.parent.is_dir():
        return
    for candidate in prefix.parent.iterdir():
        rest = candidate.name[len(prefix.name) :]
        if candidate.name.startswith(prefix.name) and _CHECKPOINT_FILE.fullmatch(rest):
            yield candidate


#: Signals that end the process and must not leave a partial file (SIGINT raises KeyboardInterrupt already).
_CLEANUP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


def _raise_terminated(signum: int, _frame: Any) -> None:
    raise Terminated(signum)


class StagedOutput:
    """Write ``destination`` through a temporary directory beside it, then rename into place.

    ``path`` has the destination's own name (writers that insist on a suffix, .keras say, see it), inside a
    fresh temporary directory with a short random name (``.lstm-conformance-XXXXXXXX.partial``: any valid
    destination name fits inside, up to NAME_MAX) in the destination's directory, so the rename stays on one
    file system. A writer that makes several files (a TF checkpoint prefix: P.index, P.data-...) has each one
    renamed. Whatever happens, the temporary directory is removed on exit: an error, Ctrl-C, SIGTERM or SIGHUP
    (turned into ``Terminated`` while the output is staged) leaves no partial file behind, and an error's
    message names the destination, not the temporary path.
    """

    def __init__(self, destination: Path, format_name: str = "") -> None:
        self.destination = destination
        self.format_name = format_name
        parent = destination.parent
        if not parent.is_dir():
            raise InputFileError(f"{parent}: no such directory for {destination.name}; create it first")
        self.directory = Path(tempfile.mkdtemp(prefix=".lstm-conformance-", suffix=".partial", dir=parent))
        self.path = self.directory / destination.name
        self._previous_handlers: dict[int, Any] = {}

    def __enter__(self) -> StagedOutput:
        if threading.current_thread() is threading.main_thread():
            for signum in _CLEANUP_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, _raise_terminated)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        for signum in self._previous_handlers:
            signal.signal(signum, signal.SIG_IGN)  # a second signal must not interrupt the cleanup
        try:
            shutil.rmtree(self.directory, ignore_errors=True)
        finally:
            for signum, handler in self._previous_handlers.items():
                signal.signal(signum, handler)
            self._previous_handlers.clear()
        if error is not None:
            self._name_destination(error)

    def _name_destination(self, error: BaseException) -> None:
        """Messages name the destination the user gave, never the temporary path written first."""
        staged = (str(self.path), str(self.directory))

        def renamed(value: Any) -> Any:
            if isinstance(value, str):
                for text in staged:
                    value = value.replace(text, str(self.destination))
            return value

        error.args = tuple(renamed(arg) for arg in error.args)
        if isinstance(error, OSError):
            error.filename = renamed(error.filename)
            error.filename2 = renamed(error.filename2)

    def written(self) -> list[Path]:
        """The files the writer made for the destination (its name, or its name plus a suffix)."""
        name = self.destination.name
        made = sorted(p for p in self.directory.iterdir() if p.name == name or p.name.startswith(f"{name}."))
        if not made:
            raise LSTMConformanceError(f"the {self.format_name or 'output'} writer wrote no file named {name}*")
        return made

    def commit(self) -> list[Path]:
        """Rename every written file into the destination's directory; returns the final paths."""
        made = self.written()
        if self.format_name == TF_CHECKPOINT:
            # A checkpoint overwritten with --force must not keep a stale shard of the old one.
            fresh = {p.name for p in made}
            for stale in _checkpoint_files(self.destination):
                if stale.name not in fresh:
                    stale.unlink()
        final = []
        try:
            for staged in made:
                target = self.destination.parent / staged.name
                os.replace(staged, target)
                final.append(target)
        except OSError:
            for target in final:
                target.unlink(missing_ok=True)
            raise
        return final
