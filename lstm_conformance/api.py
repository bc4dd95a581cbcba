"""The Python API: read a model file into the canonical layout, write one, convert with proof, compare two.

The ``lstm-conformance`` commands are thin layers over these functions (argument parsing and printing); every
function returns a typed record and raises an ``LSTMConformanceError`` subclass (``InputFileError``,
``FrameworkMissingError``, ...) on bad input, with a one-line message naming the problem and the fix.

Agreement has one meaning, the conformance suite's: two runs agree when every element of every tensor (y,
h_n, c_n and, where both sides compute them, the gradients with respect to x, h0, c0 and every canonical
parameter) is within ``conformance.tolerances.pair_tolerance`` by ``conformance.checks.measure``, on inputs
rounded to the dtype compared, exactly as the suite's pair test judges two implementations.

For example (the README runs a whole session)::

    from lstm_conformance import api

    model = api.read("model.pt")                         # Model: config, weights, assumptions, other_tensors
    result = api.convert("model.pt", "model.keras")      # ConversionResult: verified, errors, not_carried
    comparison = api.compare("model.pt", "model.keras")  # Comparison: agree, first_divergence, gates
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Device, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    SourceRunner,
    get_format,
    infer_format,
)
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.cli import Terminated
from lstm_conformance.conformance.cases import round_to_dtype
from lstm_conformance.conformance.checks import Measurement, forward_measurements, gradient_measurements, sensitivity
from lstm_conformance.conformance.tolerances import Tolerance, math_mode_for, pair_tolerance, with_quantization
from lstm_conformance.names import DTYPES
from lstm_conformance.reference.errors import FrameworkMissingError, InputFileError, LSTMConformanceError
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights
from lstm_conformance.reference.lstm import LSTMGradients

TF_CHECKPOINT = "tf-checkpoint"
#: Formats that take a forget_bias option (TF cells add it at run time and their files do not store it).
FORGET_BIAS_FORMATS = (TF_CHECKPOINT,)
#: dtypes from the most precise to the least.
PRECISION_ORDER = DTYPES
#: The proof's input: short enough to run in a second everywhere, long enough for state to carry across steps.
VERIFY_STEPS, VERIFY_BATCH = 5, 3
#: The device every check of this module runs on (the suite's rules are keyed by it).
DEVICE: Device = "cpu"

Progress = Callable[[str], None]


def _silent(message: str) -> None:
    """The default progress callback: says nothing."""


# ----------------------------------------------------------------------------------------------------------
# Records
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Model:
    """One LSTM read from a file, in the canonical layout.

    ``implementation`` (with ``implementation_options``) runs the file's layout natively; ``assumptions`` are
    what the reading assumed that changes the function (the file does not store it); ``notes`` are
    informational; ``warnings`` name weights that are NaN or Inf; ``other_tensors`` are the file's tensors that
    are not this LSTM's (an embedding, a dense head, optimizer slots). ``found`` is the reader's own record
    (``run_source`` runs the file as its own framework loads it, when the reader can).
    """

    path: Path
    format: str
    name: str
    config: LSTMConfig
    weights: LSTMWeights
    implementation: str
    implementation_options: dict[str, Any]
    assumptions: list[str]
    notes: list[str]
    warnings: list[str]
    other_tensors: list[str]
    batch_first: bool | None
    found: FoundLSTM = field(repr=False)

    @property
    def runs_itself(self) -> bool:
        """Whether the file itself can be run as its own framework loads it (not only this tool's reading)."""
        return self.found.run_source is not None

    @property
    def dtype(self) -> str:
        """The least precise dtype among the weights (how precisely the file holds the function)."""
        return weights_dtype(self.weights)


@dataclass
class WriteResult:
    """What ``write`` wrote: the destination, its format, every file made (a TF checkpoint makes several)."""

    path: Path
    format: str
    files: list[Path]
    notes: list[str]


@dataclass
class RunSide:
    """One side of a check: what ran, in which dtype, and whether it was the file itself."""

    label: str
    implementation: str
    dtype: str
    #: True when the side ran the file as its own framework loads it (``FoundLSTM.run_source``).
    ran_file_itself: bool

    def describe(self) -> str:
        itself = ", the file itself" if self.ran_file_itself else ""
        return f"{self.implementation} ({self.dtype}{itself})"


@dataclass
class Agreement:
    """Two runs on the same random input measured by the suite's rule: every tensor's worst element as a
    fraction of the tolerance (``Measurement.ratio``; above 1 fails)."""

    first: RunSide
    second: RunSide
    steps: int
    batch: int
    seed: int
    initial_states: bool
    math_mode: str
    tolerance: Tolerance
    forward: list[Measurement]
    gradients: list[Measurement]
    #: Why gradients were not compared ("forward only: onnxruntime computes no gradients"), "" when they were.
    forward_only: str
    #: Output values NaN or Inf on both sides at the same place (NaN weights): equal by position, not value.
    nonfinite: int = 0
    compared: int = 0
    #: Per-sample lengths were given (a masked source: its trailing steps masked, the other side's lengths).
    lengths: bool = False

    @property
    def measurements(self) -> list[Measurement]:
        return [*self.forward, *self.gradients]

    @property
    def agree(self) -> bool:
        return all(m.passed for m in self.measurements)

    @property
    def worst(self) -> Measurement:
        return max(self.measurements, key=lambda m: m.ratio)

    def inputs_text(self) -> str:
        states = "random initial states" if self.initial_states else "zero initial states"
        lengths = ", random per-sample lengths" if self.lengths else ""
        return f"{self.steps} steps, batch {self.batch}, random input (seed {self.seed}){lengths} and {states}"

    def describe(self, verb: str = "") -> str:
        """One line: both runs (then ``verb``, "agree" say), the input, the worst errors as fractions of the
        tolerance, the tolerance."""
        runs = f"{self.first.describe()} vs {self.second.describe()}" + (f" {verb}" if verb else "")
        parts = [
            f"{runs} on {self.inputs_text()}",
            "forward " + worst_text(self.forward, every=True),
        ]
        parts.append(self.forward_only or f"gradients {worst_text(self.gradients)}")
        if self.nonfinite:
            parts.append(
                f"{self.nonfinite} of {self.compared} output values are NaN/Inf (the weights are): those only had "
                "to be NaN/Inf on both sides"
            )
        widened = self.tolerance.rule.reason.partition(", plus ")[0] if self.tolerance.rule.quantized else ""
        how = f"; {widened}" if widened else ""
        parts.append(
            f"tolerance rtol {self.tolerance.rtol:.3g} ({self.math_mode}, T={self.steps}, as a suite pair{how})"
        )
        return "; ".join(parts)


@dataclass
class ConversionResult:
    """What ``convert`` did and proved.

    ``verified``: the source file itself ran (its own framework loading it) and the written file agrees with it
    under the suite's tolerance, nothing of the config lost. ``under_assumptions``: the two agree, but the source
    ran as this tool reads it (a file of weights only): the proof holds only if ``assumptions`` do.
    ``checked``: the proof ran (not ``verify=False``); ``written``: the destination is in place (False when the
    proof failed: nothing is written then). ``errors``: per tensor, the worst error as a fraction of the
    tolerance. ``not_carried``: the source's tensors that are not the LSTM's (the destination holds the LSTM).
    """

    source: Model
    destination: Path
    destination_format: str
    files: list[Path]
    written: bool
    checked: bool
    verified: bool
    under_assumptions: bool
    agreement: Agreement | None
    lost: list[str]
    notes: list[str]
    assumptions: list[str]
    not_carried: list[str]

    @property
    def agree(self) -> bool:
        return self.agreement is not None and self.agreement.agree and not self.lost

    @property
    def errors(self) -> dict[str, float]:
        return {m.tensor: m.ratio for m in self.agreement.measurements} if self.agreement else {}

    @property
    def worst_fraction(self) -> float | None:
        return self.agreement.worst.ratio if self.agreement else None


@dataclass
class ConfigDifference:
    field: str
    a: str
    b: str


@dataclass
class WeightBlock:
    """One canonical block (a gate's rows of W, R or the bias Wb + Rb; a peephole; the projection) that differs."""

    layer: int
    direction: str
    parameter: str
    gate: str
    #: The worst element's error as a fraction of the tolerance (the suite's rule, on the weights).
    fraction: float
    #: Set when B's block is A's plus one constant (a forget_bias, say).
    constant_offset: float | None = None


@dataclass
class Divergence:
    """Where one layer and direction first leaves the tolerance (errors as fractions of it)."""

    layer: int
    direction: str
    time_step: int | None
    fraction_at_step: float | None
    y_fraction: float
    h_n_fraction: float
    c_n_fraction: float


@dataclass
class Swap:
    a_gate: str
    b_gate: str


@dataclass
class Substitution:
    """A run with A's weights carrying B's blocks of ``gates``: does it reproduce B?"""

    gates: list[str]
    fraction_after: float
    explains: bool
    fraction_with_one_gate_replaced: dict[str, float]


@dataclass
class HypothesisMatch:
    hypothesis: str
    fraction: float


@dataclass
class Hypotheses:
    tested: bool
    reason: str = ""
    candidates: int = 0
    matches: list[HypothesisMatch] = field(default_factory=list)


@dataclass
class GateExplanation:
    layer: int
    direction: str
    differing_blocks: list[WeightBlock]
    differing_gates: list[str]
    other_parameters: list[str]
    swapped: list[Swap]
    substitution: Substitution | None = None
    hypotheses: Hypotheses | None = None


@dataclass
class Comparison:
    """``compare``'s answer: whether A and B agree (outputs and, where both compute them, gradients), and where
    they part when they do not (``first_divergence``, ``gates``)."""

    a: Model
    b: Model
    seed: int
    steps: int
    batch: int
    config_differences: list[ConfigDifference]
    agreement: Agreement | None = None
    weight_differences: list[WeightBlock] = field(default_factory=list)
    differences: list[Divergence] = field(default_factory=list)
    gates: GateExplanation | None = None
    summary: str = ""

    @property
    def agree(self) -> bool:
        return self.agreement is not None and self.agreement.agree

    @property
    def first_divergence(self) -> Divergence | None:
        return self.differences[0] if self.differences else None

    @property
    def both_ran_themselves(self) -> bool:
        return self.a.runs_itself and self.b.runs_itself

    @property
    def assumptions(self) -> list[str]:
        return [f"A: {text}" for text in self.a.assumptions] + [f"B: {text}" for text in self.b.assumptions]

    def to_json(self) -> dict[str, Any]:
        """A strict-JSON-ready dict (non-finite floats as "inf"/"nan")."""
        record: dict[str, Any] = {
            "agree": self.agree,
            "a": _side_json(self.a, self.agreement.first if self.agreement else None),
            "b": _side_json(self.b, self.agreement.second if self.agreement else None),
            "inputs": {"seed": self.seed, "steps": self.steps, "batch": self.batch},
            "config_differences": [dataclasses.asdict(item) for item in self.config_differences],
            "assumptions": self.assumptions,
            "summary": self.summary,
        }
        if self.agreement is not None:
            agreement = self.agreement
            record["inputs"]["initial_states"] = agreement.initial_states
            record["inputs"]["lengths"] = agreement.lengths
            record["tolerance"] = {
                "rtol": agreement.tolerance.rtol,
                "math_mode": agreement.math_mode,
                "reason": agreement.tolerance.rule.reason,
            }
            record["outputs"] = {m.tensor: _measurement_json(m) for m in agreement.forward}
            record["gradients"] = {m.tensor: _measurement_json(m) for m in agreement.gradients}
            record["forward_only"] = agreement.forward_only
            record["worst"] = {"tensor": agreement.worst.tensor, "fraction": agreement.worst.ratio}
            record["weight_differences"] = [dataclasses.asdict(item) for item in self.weight_differences]
            record["differences"] = [dataclasses.asdict(item) for item in self.differences]
            record["gates"] = dataclasses.asdict(self.gates) if self.gates else None
        return _finite(record)


def _side_json(model: Model, side: RunSide | None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "path": str(model.path),
        "format": model.format,
        "lstm": model.name,
        "implementation": model.implementation,
        "notes": list(model.notes),
        "assumptions": list(model.assumptions),
        "runs_itself": model.runs_itself,
    }
    if side is not None:
        record["dtype"] = side.dtype
        record["ran_file_itself"] = side.ran_file_itself
    return record


def _measurement_json(measurement: Measurement) -> dict[str, Any]:
    return {
        "fraction": measurement.ratio,
        "error": measurement.error,
        "relative_error": measurement.relative_error,
        "index": list(measurement.index),
        "passed": measurement.passed,
        **({"problem": measurement.shape_problem} if measurement.shape_problem else {}),
    }


def _finite(value: Any) -> Any:
    """``value`` with non-finite floats as strings ("inf", "nan"), so that the output is strict JSON."""
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def worst_text(measurements: list[Measurement], every: bool = False) -> str:
    """ "worst 0.013 of tolerance (grad[layers.0.forward.R]) over 19 tensors", or per tensor with ``every``."""
    if not measurements:
        return "nothing compared"
    worst = max(measurements, key=lambda m: m.ratio)
    if every:
        listed = ", ".join(f"{m.tensor} {_fraction(m)}" for m in measurements)
        return f"worst {_fraction(worst)} of tolerance ({listed})"
    return f"worst {_fraction(worst)} of tolerance ({worst.tensor}) over {len(measurements)} tensors"


def _fraction(measurement: Measurement) -> str:
    return measurement.shape_problem or f"{measurement.ratio:.3g}"


# ----------------------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------------------


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


def read_contents(path: Path, format_name: str, options: Mapping[str, Any]) -> ModelContents:
    """Every LSTM the file holds, and its other tensors."""
    if format_name == TF_CHECKPOINT:
        # A directory, its `checkpoint` state file, a step-less prefix: the reader resolves them (and refuses
        # what it cannot resolve, naming it).
        return load_format(format_name).read(path, options)
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


def model_of(path: Path, format_name: str, found: FoundLSTM, contents: ModelContents) -> Model:
    """The Model record of one LSTM of ``contents``; the other LSTMs' tensors count as other tensors."""
    others = list(contents.other_tensors)
    for sibling in contents.lstms:
        if sibling is not found:
            prefix = f"{sibling.name}." if sibling.name else ""
            others += [f"{prefix}{key}" for key in sibling.weights.named_arrays()]
    return Model(
        path=path,
        format=format_name,
        name=found.name,
        config=found.weights.config,
        weights=found.weights,
        implementation=found.implementation,
        implementation_options=dict(found.implementation_options),
        assumptions=list(found.assumptions),
        notes=list(found.notes),
        warnings=nonfinite_warnings(found.weights, path),
        other_tensors=others,
        batch_first=found.batch_first,
        found=found,
    )


def read(
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    select: str | None = None,
    forget_bias: float | None = None,
    _flag: str = "--select",
) -> Model:
    """Read the LSTM in ``path`` (``select``: which, by name, when the file holds several) into the canonical
    layout. ``format``: one of ``lstm_conformance.names.FORMATS``, else inferred from the name.
    ``forget_bias``: TF checkpoints only (they do not store it; TF's default 1.0 is assumed otherwise)."""
    where = Path(path)
    format_name = format_of(where, format)
    check_forget_bias_applies(forget_bias, [format_name])
    contents = read_contents(where, format_name, format_options(format_name, forget_bias))
    found = select_lstm(contents, where, select, _flag)
    return model_of(where, format_name, found, contents)


def forget_bias_for(forget_bias: float | None, format_name: str) -> float | None:
    """``forget_bias`` for a format that takes it, else None (one option serving both sides of a conversion)."""
    return forget_bias if format_name in FORGET_BIAS_FORMATS else None


def _read_taking(path: str | os.PathLike[str], forget_bias: float | None, flag: str) -> Model:
    format_name = format_of(Path(path), None)
    return read(path, format=format_name, forget_bias=forget_bias_for(forget_bias, format_name), _flag=flag)


def nonfinite_warnings(weights: LSTMWeights, path: Path) -> list[str]:
    found = []
    for key, array in weights.named_arrays().items():
        bad = int(np.size(array) - np.count_nonzero(np.isfinite(array)))
        if bad:
            found.append(f"{path}: {key} holds {bad} NaN/Inf value(s); outputs will not be finite")
    return found


def weights_dtype(weights: LSTMWeights) -> str:
    """The least precise dtype among the arrays (how precisely the file holds the function)."""
    return least_precise({str(np.asarray(array).dtype) for array in weights.named_arrays().values()})


def least_precise(dtypes: set[str] | list[str]) -> str:
    ranked = [name for name in PRECISION_ORDER if name in set(dtypes)]
    return ranked[-1] if ranked else "float64"


# ----------------------------------------------------------------------------------------------------------
# Writing, atomically
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
        if threading.current_thread() is threading.main_thread():
            for signum in _CLEANUP_SIGNALS:
                self._previous_handlers[signum] = signal.signal(signum, _raise_terminated)

    def __enter__(self) -> StagedOutput:
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
            # A checkpoint overwritten with force must not keep a stale shard of the old one.
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


def _prepare_destination(
    destination: Path, format_name: str, force: bool, dtype: str | None, forget_bias: float | None
) -> tuple[FileFormat, dict[str, Any]]:
    """The writer and its options, refusing before anything is read or written: an unavailable format, an
    existing destination without ``force``, an unknown dtype."""
    writer = load_format(format_name)
    if destination_exists(destination, format_name) and not force:
        raise InputFileError(f"{destination} exists; pass --force to overwrite it")
    options = format_options(format_name, forget_bias)
    if dtype is not None:
        if dtype not in DTYPES:
            raise InputFileError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}; choose one of them")
        options["dtype"] = dtype
    return writer, options


def write(
    model_or_weights: Model | LSTMWeights,
    path: str | os.PathLike[str],
    *,
    format: str | None = None,
    force: bool = False,
    dtype: str | None = None,
    forget_bias: float | None = None,
) -> WriteResult:
    """Write one LSTM to ``path`` in ``format`` (inferred from the name), atomically: nothing is left behind
    when the writer fails. No check runs here: ``convert`` proves what it writes."""
    destination = Path(path)
    format_name = format_of(destination, format)
    check_forget_bias_applies(forget_bias, [format_name])
    writer, options = _prepare_destination(destination, format_name, force, dtype, forget_bias)
    weights = model_or_weights.weights if isinstance(model_or_weights, Model) else model_or_weights
    with StagedOutput(destination, format_name) as staged:
        notes = writer.write(staged.path, weights, options)
        files = staged.commit()
    return WriteResult(path=destination, format=format_name, files=files, notes=notes)


# ----------------------------------------------------------------------------------------------------------
# Running both sides on the same input, and measuring them by the suite's rule
# ----------------------------------------------------------------------------------------------------------


def implementation_for(name: str, options: Mapping[str, Any], purpose: str) -> Implementation:
    implementation = get_implementation(name, **options)
    reason = implementation.unavailable_reason()
    if reason:
        raise FrameworkMissingError(f"cannot {purpose}: implementation {name!r}: {reason}")
    return implementation


@dataclass
class Runner:
    """Runs one LSTM: the file itself (``run_source``) when its reader can, else ``implementation`` on the
    canonical weights read from it."""

    label: str
    implementation: Implementation
    weights: LSTMWeights
    run_source: SourceRunner | None = None

    @classmethod
    def of(cls, label: str, model: Model, purpose: str) -> Runner:
        implementation = implementation_for(model.implementation, model.implementation_options, purpose)
        return cls(label, implementation, model.weights, model.found.run_source)

    @property
    def name(self) -> str:
        return self.implementation.name or self.label

    @property
    def capabilities(self) -> Capabilities:
        return self.implementation.capabilities()

    def run(self, inputs: RunInputs, dtype: str, weights: LSTMWeights | None = None) -> RunResult:
        """The file itself when ``weights`` is None and the reader can run it; else the implementation."""
        options = RunOptions(dtype=dtype, device=DEVICE)
        if weights is None and self.run_source is not None:
            return self.run_source(inputs, options)
        chosen = self.weights if weights is None else weights
        self.implementation.check_supported(chosen.config, inputs, options)
        return self.implementation.run(chosen, inputs, options)


def common_dtype(*implementations: Implementation) -> list[str]:
    """Per implementation, the dtype to run: float64 where all run it, else float32 where all do, else each
    one's most precise."""
    supported = [set(impl.capabilities().dtypes) for impl in implementations]
    for candidate in ("float64", "float32"):
        if all(candidate in dtypes for dtypes in supported):
            return [candidate] * len(implementations)
    return [next((d for d in PRECISION_ORDER if d in dtypes), "float32") for dtypes in supported]


def random_inputs(
    config: LSTMConfig,
    steps: int,
    batch: int,
    seed: int,
    *,
    initial_state: bool,
    gradients: bool,
    dtype: str,
    ragged: bool = False,
) -> RunInputs:
    """Random time-major input, initial states where both sides take them, cotangents of y, h_n and c_n where
    both compute gradients, per-sample lengths (``ragged``: 1 to ``steps``, the first sample's all of them)
    where the source masks its input; every number rounded to ``dtype`` as the suite's cases are, so that both
    sides see the same values whatever they run in."""
    rng = np.random.default_rng(seed)
    states = config.num_layers * config.num_directions

    def normal(*shape: int, scale: float = 1.0) -> NDArray[np.float64]:
        return round_to_dtype(scale * rng.standard_normal(shape), dtype)

    inputs = RunInputs(x=normal(steps, batch, config.input_size))
    if ragged and steps > 1:
        lengths = rng.integers(1, steps + 1, size=batch)
        lengths[0] = steps
        inputs.seq_lens = lengths.astype(np.int64)
    if initial_state:
        inputs.h0 = normal(states, batch, config.output_size, scale=0.5)
        inputs.c0 = normal(states, batch, config.hidden_size, scale=0.5)
    if gradients:
        inputs.dy = normal(steps, batch, config.num_directions * config.output_size)
        inputs.dh_n = normal(states, batch, config.output_size)
        inputs.dc_n = normal(states, batch, config.hidden_size)
    return inputs


def without_cotangents(inputs: RunInputs) -> RunInputs:
    return dataclasses.replace(inputs, dy=None, dh_n=None, dc_n=None)


@dataclass
class CheckPlan:
    """How two runners are checked against each other: their dtypes, the math mode, the input, the tolerance."""

    first: Runner
    second: Runner
    dtypes: list[str]
    math_mode: str
    inputs: RunInputs
    gradients: bool
    forward_only: str
    tolerance: Tolerance
    steps: int
    batch: int
    seed: int


def plan_check(
    first: Runner, second: Runner, stored_dtypes: list[str], steps: int, batch: int, seed: int, ragged: bool = False
) -> CheckPlan:
    """The suite's pair check for these two: math mode the least precise of the dtypes run and stored,
    gradients where both compute them, per-sample lengths where asked (``ragged``) and both take them, the pair
    tolerance for that mode and length."""
    dtypes = common_dtype(first.implementation, second.implementation)
    math_mode = math_mode_for(least_precise([*dtypes, *stored_dtypes]), "strict")
    lacking = [r.name for r in (first, second) if not r.capabilities.gradients]
    forward_only = f"forward only: {', '.join(lacking)} computes no gradients" if lacking else ""
    initial_state = first.capabilities.initial_state and second.capabilities.initial_state
    config = first.weights.config
    ragged = ragged and first.capabilities.seq_lens and second.capabilities.seq_lens
    inputs = random_inputs(
        config, steps, batch, seed, initial_state=initial_state, gradients=not lacking, dtype=math_mode, ragged=ragged
    )
    tolerance = pair_tolerance(math_mode, first.name, second.name, DEVICE, steps)
    # As the suite's pair test: plus the model's own sensitivity to rounding on this input (a chaotic model
    # moves more than any element rule allows, in every correct implementation).
    rng = np.random.default_rng([seed, 1])
    tolerance = tolerance.with_sensitivity(sensitivity(first.weights, inputs, math_mode, rng))
    measured = [error for error in (_quantization_error(first), _quantization_error(second)) if error]
    if measured:
        tolerance = with_quantization(tolerance, max(measured))
    return CheckPlan(first, second, dtypes, math_mode, inputs, not lacking, forward_only, tolerance, steps, batch, seed)


def proof_shape(runner: Runner) -> tuple[int, int]:
    """The steps and batch a proof runs: ``VERIFY_STEPS``, ``VERIFY_BATCH``, or the file's own where it fixes
    its input's shape (an ONNX export without dynamic axes, whose quantized node runs at that shape only)."""
    steps_batch = getattr(runner.run_source, "steps_batch", None)  # a TF1 graph's, its placeholder fixing them
    if steps_batch is not None:
        return steps_batch[0] or VERIFY_STEPS, steps_batch[1] or VERIFY_BATCH
    fixed = getattr(runner.run_source, "fixed_input_shape", None)
    chain = getattr(runner.run_source, "chain", None)
    if not fixed or len(fixed) != 3 or not chain:
        return VERIFY_STEPS, VERIFY_BATCH
    steps, batch = (fixed[1], fixed[0]) if chain[0].layout == 1 else (fixed[0], fixed[1])
    return steps or VERIFY_STEPS, batch or VERIFY_BATCH


def _quantization_error(runner: Runner) -> float | None:
    """A quantized source's measured quantization error (ONNX Runtime's DynamicQuantizeLSTM), else None."""
    measured = getattr(runner.run_source, "quantization_error", None)
    return float(measured) if measured else None


def run_check(plan: CheckPlan) -> tuple[Agreement, RunResult, RunResult]:
    """Run both sides of ``plan`` (each the file itself where its reader can) and measure them."""
    first = plan.first.run(plan.inputs, plan.dtypes[0])
    second = plan.second.run(plan.inputs, plan.dtypes[1])
    forward_only = plan.forward_only
    if plan.gradients and (first.gradients is None or second.gradients is None):
        lacking = plan.first if first.gradients is None else plan.second
        forward_only = f"forward only: {lacking.name} (the file itself) computes no gradients"
    expected, got, nonfinite, compared = _shared_nonfinite_as_zero(first, second)
    forward = forward_measurements(got, expected, plan.tolerance)
    gradients: list[Measurement] = []
    if not forward_only and first.gradients is not None and second.gradients is not None:
        expected_gradients, got_gradients = _gradients_without_shared_nonfinite(first.gradients, second.gradients)
        gradients = gradient_measurements(got_gradients, expected_gradients, plan.tolerance)
    agreement = Agreement(
        first=_run_side(plan.first, plan.dtypes[0], first),
        second=_run_side(plan.second, plan.dtypes[1], second),
        steps=plan.steps,
        batch=plan.batch,
        seed=plan.seed,
        initial_states=plan.inputs.h0 is not None,
        lengths=plan.inputs.seq_lens is not None,
        math_mode=plan.math_mode,
        tolerance=plan.tolerance,
        forward=forward,
        gradients=gradients,
        forward_only=forward_only,
        nonfinite=nonfinite,
        compared=compared,
    )
    return agreement, first, second


def _run_side(runner: Runner, dtype: str, result: RunResult) -> RunSide:
    """What ran: a file run itself computes in its own dtype (a float32 graph asked for float64), said as it ran."""
    itself = runner.run_source is not None
    ran_in = result.math_mode if itself and result.math_mode in _PLAIN_DTYPES else dtype  # not "tf32", "... int8"
    return RunSide(runner.label, runner.name, ran_in, itself)


_PLAIN_DTYPES = ("float16", "bfloat16", "float32", "float64")


@dataclass
class _Outputs:
    y: NDArray[Any]
    h_n: NDArray[Any]
    c_n: NDArray[Any]


def _without_shared_nonfinite(
    expected: NDArray[Any], got: NDArray[Any]
) -> tuple[NDArray[np.float64], NDArray[np.float64], int]:
    """Both arrays with every NaN/Inf that both hold at the same place set to 0 on both, and how many: weights
    holding a NaN give NaN on both sides, and those places agree by position. A NaN/Inf on one side only stays
    (and fails the measurement)."""
    a, b = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if a.shape != b.shape:
        return a, b, 0
    same = (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))
    return np.where(same, 0.0, a), np.where(same, 0.0, b), int(np.count_nonzero(same))


def _shared_nonfinite_as_zero(expected: RunResult, got: RunResult) -> tuple[_Outputs, _Outputs, int, int]:
    """The outputs without the NaN/Inf both sides share (``_without_shared_nonfinite``), how many there were,
    and how many values were compared."""
    cleaned: list[list[NDArray[Any]]] = [[], []]
    shared = compared = 0
    for name in ("y", "h_n", "c_n"):
        a, b, count = _without_shared_nonfinite(getattr(expected, name), getattr(got, name))
        shared += count
        compared += int(a.size)
        cleaned[0].append(a)
        cleaned[1].append(b)
    return _Outputs(*cleaned[0]), _Outputs(*cleaned[1]), shared, compared


def _gradients_without_shared_nonfinite(
    expected: LSTMGradients, got: LSTMGradients
) -> tuple[LSTMGradients, LSTMGradients]:
    arrays: list[dict[str, NDArray[Any]]] = [{}, {}]
    for name in ("x", "h0", "c0"):
        arrays[0][name], arrays[1][name], _ = _without_shared_nonfinite(getattr(expected, name), getattr(got, name))
    got_parameters = got.weights.named_arrays()
    parameters: list[dict[str, NDArray[Any]]] = [{}, dict(got_parameters)]
    for key, value in expected.weights.named_arrays().items():
        if key in got_parameters:
            parameters[0][key], parameters[1][key], _ = _without_shared_nonfinite(value, got_parameters[key])
        else:
            parameters[0][key] = value
    config = expected.weights.config
    first = LSTMGradients(**arrays[0], weights=LSTMWeights.from_named_arrays(config, parameters[0]))
    second = LSTMGradients(**arrays[1], weights=LSTMWeights.from_named_arrays(got.weights.config, parameters[1]))
    return first, second


# ----------------------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------------------

_VERIFY_PURPOSE = "verify the conversion (pass --no-verify to convert without it)"


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    from_format: str | None = None,
    to_format: str | None = None,
    select: str | None = None,
    forget_bias: float | None = None,
    dtype: str | None = None,
    quantize: str | None = None,
    force: bool = False,
    verify: bool = True,
    seed: int = 0,
    progress: Progress = _silent,
) -> ConversionResult:
    """Read the LSTM in ``src``, write it to ``dst``, and prove it: the source (the file itself where its reader
    can run it, else its implementation on the weights read) and the written file read back, on the same random
    input, outputs and gradients, judged as the suite judges a pair. A check that fails writes nothing
    (``written`` False). ``quantize``: the destination writer's quantization (tflite: "dynamic-int8"); the proof
    then allows the written file's own measured quantization error. Raises on bad input before anything is
    written."""
    source_path, destination = Path(src), Path(dst)
    source_format = format_of(source_path, from_format)
    destination_format = format_of(destination, to_format)
    check_forget_bias_applies(forget_bias, [source_format, destination_format])
    writer, write_options = _prepare_destination(destination, destination_format, force, dtype, forget_bias)
    if quantize is not None:
        write_options["quantize"] = quantize  # a writer without the option refuses it, naming it
    progress(f"reading {source_path}")
    source = read(
        source_path, format=source_format, select=select, forget_bias=forget_bias_for(forget_bias, source_format)
    )
    masking_notes = _carry_masking(source, destination_format, write_options)
    source_runner = Runner.of("source", source, _VERIFY_PURPOSE) if verify else None  # fail before writing
    with StagedOutput(destination, destination_format) as staged:
        progress(f"writing {destination}")
        notes = writer.write(staged.path, source.weights, write_options) + masking_notes
        staged.written()
        agreement, lost, assumptions = None, [], list(source.assumptions)
        if source_runner is not None:
            progress("verifying: running both sides")
            written = _read_back(staged.path, destination, destination_format, forget_bias)
            notes += _layout_notes(source.weights, written.weights) + written.notes
            written_runner = Runner.of("written", written, _VERIFY_PURPOSE)
            stored = [source.dtype, written.dtype]
            steps, batch = proof_shape(source_runner)
            masked = source.found.mask_value is not None or source.found.takes_lengths
            plan = plan_check(source_runner, written_runner, stored, steps, batch, seed, ragged=masked)
            agreement = run_check(plan)[0]
            lost = _lost_config(source.weights, written.weights)
        agree = agreement is not None and agreement.agree and not lost
        checked = agreement is not None
        files = staged.commit() if agree or not checked else []
    return ConversionResult(
        source=source,
        destination=destination,
        destination_format=destination_format,
        files=files,
        written=bool(files),
        checked=checked,
        verified=agree and source.runs_itself,
        under_assumptions=agree and not source.runs_itself,
        agreement=agreement,
        lost=lost,
        notes=list(dict.fromkeys([*source.notes, *notes])),
        assumptions=list(dict.fromkeys(assumptions)),
        not_carried=list(source.other_tensors),
    )


def _carry_masking(source: Model, format_name: str, options: dict[str, Any]) -> list[str]:
    """Carry a masked source's masking (a Keras Masking layer before the LSTM, or per-sample lengths its model
    takes: a TF1 graph's dynamic_rnn sequence_length) into the written file where its format holds it: a
    Masking layer in a Keras file, a ``sequence_lens`` input in an ONNX file; said plainly where it cannot. The
    proof then runs ragged lengths (masked trailing steps) on both sides."""
    mask_value, found = source.found.mask_value, source.found
    if mask_value is None and not found.takes_lengths:
        return []
    masks = (
        f"masks its input (Masking(mask_value={mask_value}))"
        if mask_value is not None
        else "takes per-sample lengths (its dynamic_rnn's sequence_length)"
    )
    if format_name in ("keras", "keras-h5") and mask_value is not None:
        options["mask_value"] = mask_value
        return []
    if format_name == "onnx":
        options["sequence_lens"] = True
        return [f"the source {masks}: the ONNX model takes sequence_lens [B], each sample's count of unmasked steps"]
    holds = "no masking by lengths (call the layer with mask=...)" if format_name.startswith("keras") else "no masking"
    return [
        f"the source {masks} and a {format_name} file holds {holds}: run the written model with each sample's "
        "length of unmasked steps"
        + (" (torch: nn.utils.rnn.pack_padded_sequence)" if format_name in ("torch", "safetensors") else "")
    ]


def _read_back(path: Path, destination: Path, format_name: str, forget_bias: float | None) -> Model:
    contents = read_contents(path, format_name, format_options(format_name, forget_bias))
    if len(contents.lstms) != 1:
        names = ", ".join(found.name for found in contents.lstms) or "none"
        raise InputFileError(
            f"cannot verify: {destination} ({format_name}) reads back as {len(contents.lstms)} LSTMs ({names}), "
            "not one (the format does not record how they chain); choose another format, or pass --no-verify"
        )
    return model_of(path, format_name, contents.lstms[0], contents)


def _lost_config(source: LSTMWeights, written: LSTMWeights) -> list[str]:
    """Config fields that differ between the source and the file read back, as "name source (read back: ...)";
    a difference that cannot change the function (biases or peepholes that are all zero) is not one."""
    lost = []
    for item in dataclasses.fields(LSTMConfig):
        before, after = getattr(source.config, item.name), getattr(written.config, item.name)
        if before == after or _all_zero_either_way(item.name, source, written):
            continue
        lost.append(f"{item.name} {before} (read back: {after})")
    return lost


def _all_zero_either_way(field_name: str, source: LSTMWeights, written: LSTMWeights) -> bool:
    names = {"bias": (".Wb", ".Rb"), "peepholes": (".P",)}.get(field_name)
    if names is None:
        return False
    arrays = {**source.named_arrays(), **written.named_arrays()}
    return not any(np.any(value) for key, value in arrays.items() if key.endswith(names))


def _layout_notes(source: LSTMWeights, written: LSTMWeights) -> list[str]:
    """What the destination's layout changed, seen by reading it back (casts, a summed bias)."""
    notes = []
    before, after = weights_dtype(source), weights_dtype(written)
    if least_precise([before, after]) != before:  # a reader that widens float32 to float64 loses nothing
        notes.append(f"weights stored as {after} (were {before})")
    source_arrays, written_arrays = source.named_arrays(), written.named_arrays()
    bias_keys = [key for key in source_arrays if key.endswith(".Wb")]
    split_before = any(np.any(source_arrays[key]) for key in bias_keys)
    split_after = any(np.any(written_arrays.get(key, 0.0)) for key in bias_keys)
    if split_before and not split_after:
        notes.append("the two biases (input and recurrent) were summed into the destination's one bias")
    return notes


# ----------------------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------------------

#: Config fields that fix array shapes: two models differing here cannot run on the same input.
SHAPE_FIELDS = ("input_size", "hidden_size", "num_layers", "bidirectional", "proj_size", "peepholes")


def compare(
    a: str | os.PathLike[str] | Model,
    b: str | os.PathLike[str] | Model,
    *,
    seed: int = 0,
    steps: int = 5,
    batch: int = 2,
    forget_bias: float | None = None,
    progress: Progress = _silent,
) -> Comparison:
    """Run A and B (paths or ``read`` results), each with its own implementation (each file itself where its
    reader can run it), on the same random input; they agree when outputs and, where both compute them,
    gradients pass the suite's pair check. When they do not, the comparison says where they part: the first
    layer, direction and time step, and which gates (``lstm_conformance.diagnosis`` explains the method)."""
    from lstm_conformance.diagnosis import diagnose

    paths = [Path(side) for side in (a, b) if not isinstance(side, Model)]
    check_forget_bias_applies(forget_bias, [format_of(path, None) for path in paths])
    model_a = a if isinstance(a, Model) else _read_taking(a, forget_bias, "--select-a")
    model_b = b if isinstance(b, Model) else _read_taking(b, forget_bias, "--select-b")
    for value, what in ((steps, "steps"), (batch, "batch")):
        if value < 1:
            raise InputFileError(f"{what} must be a positive integer, got {value}; give one of 1 or more")
    comparison = Comparison(
        a=model_a,
        b=model_b,
        seed=seed,
        steps=steps,
        batch=batch,
        config_differences=config_differences(model_a.config, model_b.config),
    )
    if any(item.field in SHAPE_FIELDS for item in comparison.config_differences):
        comparison.summary = "the configs differ in shape: " + config_text(comparison.config_differences)
        return comparison
    runner_a, runner_b = Runner.of("A", model_a, "compare"), Runner.of("B", model_b, "compare")
    plan = plan_check(runner_a, runner_b, [model_a.dtype, model_b.dtype], steps, batch, seed)
    progress("running A and B")
    agreement, run_a, run_b = run_check(plan)
    comparison.agreement = agreement
    diagnose(comparison, plan, run_a, run_b, progress)
    return comparison


def config_differences(a: LSTMConfig, b: LSTMConfig) -> list[ConfigDifference]:
    return [
        ConfigDifference(item.name, str(getattr(a, item.name)), str(getattr(b, item.name)))
        for item in dataclasses.fields(LSTMConfig)
        if getattr(a, item.name) != getattr(b, item.name)
    ]


def config_text(differences: list[ConfigDifference]) -> str:
    return "; ".join(f"{item.field} {item.a} vs {item.b}" for item in differences)
