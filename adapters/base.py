"""The interface every implementation (the project's adapters and third parties' LSTMs) provides.

An implementation runs an LSTM given in the canonical layout (``reference.layout``) natively in its framework
and returns NumPy float64 arrays in PyTorch's conventions. Implementations are looked up by name in
``adapters.registry``; a third party registers its own through the ``lstm_conformance.implementations``
entry-point group or ``--lstm-implementation MODULE:OBJECT``.

A third party writes a subclass of ``Implementation`` (or any object with the same attributes):

- ``name``: the id used on the command line and in test ids;
- ``capabilities()``: dtypes, devices, gradients, which features of ``LSTMConfig`` it holds;
- ``unavailable_reason()``: None when its framework is importable, else why not (the suite skips with it);
- ``run(weights, inputs, options)``: forward and, when ``inputs`` carries cotangents, gradients.

``run`` must raise ``UnsupportedFeatureError`` for a config it cannot compute exactly (never approximate it),
and must not silently ignore any field of ``RunInputs`` or ``RunOptions``.

``Implementation.run`` is the one run skeleton: availability, ``check_supported``, one ``RunInputs.prepare``
(inputs validated once), the subclass's ``_run_native`` on time-major inputs, then batch-first back. The project's
adapters implement ``_run_native``; a third party may implement it too, or override ``run`` whole.

Refusals are in the implementation's own words: ``refusal`` names the first thing it cannot run and why
(``limits``), and ``check_supported`` adds which other implementation does run it (``alternatives``, then
"reference"), asked of those implementations themselves.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import ClassVar, Literal

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import FrameworkMissingError, LSTMConformanceError, UnsupportedFeatureError
from lstm_conformance.reference.inputs import PreparedInputs, prepare_inputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights
from lstm_conformance.reference.lstm import LSTMGradients

Device = Literal["cpu", "cuda"]

F64 = NDArray[np.float64]


@dataclass(frozen=True)
class Capabilities:
    """What an implementation can run. ``features`` lists the LSTMConfig features it holds exactly, by the
    names ``LSTMConfig.features()`` gives; activation features are checked by ``activations``."""

    dtypes: tuple[str, ...] = ("float64", "float32")
    devices: tuple[str, ...] = ("cpu",)
    gradients: bool = True
    features: frozenset[str] = frozenset()
    #: Activation names it can run, per role ("gate", "cell_input", "cell_output").
    activations: Mapping[str, frozenset[str]] = field(
        default_factory=lambda: {
            "gate": frozenset({"sigmoid"}),
            "cell_input": frozenset({"tanh"}),
            "cell_output": frozenset({"tanh"}),
        }
    )
    seq_lens: bool = True
    initial_state: bool = True
    batch_first: bool = True
    #: Free text the report shows (for instance "float32 only: ONNX Runtime's LSTM kernel").
    notes: tuple[str, ...] = ()

    def unsupported(self, config: LSTMConfig) -> list[str]:
        """The features of ``config`` this implementation lacks (empty when it can run it)."""
        missing = []
        for feature in config.features():
            role, _, activation = feature.partition("_activation=")
            if activation:
                name = activation.split("(")[0]
                if name not in self.activations.get(role, frozenset()):
                    missing.append(feature)
            elif feature not in self.features:
                missing.append(feature)
        return missing


@dataclass
class RunInputs:
    """Inputs of one run. ``x`` is time-major [T, B, I] unless ``batch_first`` ([B, T, I]).

    ``h0`` [layers*dirs, B, Hout], ``c0`` [layers*dirs, B, H]: None means zeros. ``seq_lens`` [B] int64:
    None means every sample runs all T steps. The cotangents ``dy``, ``dh_n``, ``dc_n`` (same shapes as
    y, h_n, c_n) ask for gradients of ``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)``; a None cotangent is
    zero; all three None means forward only.
    """

    x: F64
    h0: F64 | None = None
    c0: F64 | None = None
    seq_lens: NDArray[np.int64] | None = None
    batch_first: bool = False
    dy: F64 | None = None
    dh_n: F64 | None = None
    dc_n: F64 | None = None

    @property
    def wants_gradients(self) -> bool:
        return any(v is not None for v in (self.dy, self.dh_n, self.dc_n))

    def prepare(self, config: LSTMConfig) -> PreparedInputs:
        """Validated, time-major, float64, zeros filled in (``reference.inputs.prepare_inputs``)."""
        return prepare_inputs(
            config,
            self.x,
            self.h0,
            self.c0,
            self.seq_lens,
            dy=self.dy,
            dh_n=self.dh_n,
            dc_n=self.dc_n,
            batch_first=self.batch_first,
        )


@dataclass(frozen=True)
class RunOptions:
    """How to run: compute dtype, device and, on GPUs, whether TF32-style reduced-precision matmuls are
    allowed. Implementations set the math mode explicitly from ``allow_tf32`` and never inherit it."""

    dtype: str = "float64"
    device: Device = "cpu"
    allow_tf32: bool = False


@dataclass
class Gradients(LSTMGradients):
    """Gradients of the loss: input, initial states (zeros-shaped when h0/c0 were None) and parameters, in
    the canonical layout (``weights``) and under the framework's own names and shapes (``native``)."""

    native: dict[str, F64] = field(default_factory=dict)


@dataclass
class RunResult:
    """Outputs in PyTorch's shapes (y [T, B, dirs*Hout], or [B, T, ...] with batch_first), float64.

    ``math_mode`` says how the run computed, for the report: "float64", "float32", "tf32", "float16",
    "bfloat16", "float32 (JAX precision HIGHEST)", ...
    """

    y: F64
    h_n: F64
    c_n: F64
    math_mode: str
    gradients: Gradients | None = None


@dataclass(frozen=True)
class Refusal:
    """The first thing an implementation cannot run: ``feature`` (a ``LSTMConfig.features()`` name, "dtype
    float16", ...), ``limit`` (a clause naming the implementation and its own limit), ``fix`` (what to change
    instead of the implementation, if anything), ``purpose`` (what the alternatives would be used for) and
    ``asked`` (the dtype or device asked for, said where no alternative runs it)."""

    feature: str
    limit: str
    fix: str = ""
    purpose: str = ""
    asked: str = ""


class ImplementationLimitError(UnsupportedFeatureError):
    """UnsupportedFeatureError in an implementation's own words: "tf-block runs float32 and float16 only
    (TensorFlow's BlockLSTM kernel); use tf-cell or reference for float64". ``framework`` holds the
    implementation's name, ``hint`` what to do instead."""

    def __init__(self, implementation: str, refusal: Refusal, instead: str) -> None:
        self.framework = implementation
        self.feature = refusal.feature
        self.hint = instead
        limit = f"{refusal.limit}, not {refusal.asked}" if refusal.asked and not refusal.purpose else refusal.limit
        LSTMConformanceError.__init__(self, f"{limit}; {instead}" if instead else limit)


#: True while other implementations are asked whether they run a refused case (their own refusals then need
#: no alternatives, which would ask again).
_probing: ContextVar[bool] = ContextVar("probing", default=False)


@contextmanager
def _asking_others() -> Iterator[None]:
    token = _probing.set(True)
    try:
        yield
    finally:
        _probing.reset(token)


@functools.cache
def _builtin(name: str) -> Implementation | None:
    """A built-in implementation by name, built once, for asking what it runs (None for an unknown name)."""
    from lstm_conformance.adapters.registry import BUILTIN, load_object

    return load_object(BUILTIN[name]) if name in BUILTIN else None


def _who_runs(names: tuple[str, ...], config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> list[str]:
    """Those of ``names`` whose own ``check_supported`` accepts the case."""
    running = []
    with _asking_others():
        for name in names:
            other = _builtin(name)
            try:
                if other is not None:
                    other.check_supported(config, inputs, options)
                    running.append(name)
            except UnsupportedFeatureError:
                continue
    return running


def batch_major(result: RunResult) -> RunResult:
    """A time-major result (y [T, B, ...], gradients.x [T, B, I]) as the batch-first caller has it."""
    gradients = result.gradients
    if gradients is not None:
        gradients = replace(gradients, x=np.ascontiguousarray(gradients.x.swapaxes(0, 1)))
    return replace(result, y=np.ascontiguousarray(result.y.swapaxes(0, 1)), gradients=gradients)


class Implementation:
    """Base class of an implementation; subclasses set ``name`` and implement ``capabilities`` and
    ``_run_native`` (or ``run``), and ``unavailable_reason`` where they need a framework."""

    name: str = ""
    #: The framework this runs in, for the report ("PyTorch", "TensorFlow", ...).
    framework: str = ""
    #: Why this implementation lacks a feature (``LSTMConfig.features()`` name, or an activation role such as
    #: "gate_activation"), or has a dtype/device/input limit ("dtype", "device", "gradients", "seq_lens",
    #: "initial_state"), in words of its own; refusals quote it.
    limits: ClassVar[Mapping[str, str]] = {}
    #: Implementations to suggest, before "reference", where they run what this one refuses.
    alternatives: ClassVar[tuple[str, ...]] = ()

    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    def unavailable_reason(self) -> str | None:
        """None when the framework can be imported here, else a reason such as "torch is not installed
        (pip install 'lstm-conformance[torch]')". Must not import the framework when it is absent."""
        return None

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        """Run natively: refuse what it cannot run, validate the inputs once, run ``_run_native`` on the
        time-major inputs and give y and the gradient of x back in the caller's layout."""
        reason = self.unavailable_reason()
        if reason:
            raise FrameworkMissingError(reason)
        self.check_supported(weights.config, inputs, options)
        prepared = inputs.prepare(weights.config)
        result = self._run_native(weights, prepared, options)
        return batch_major(result) if inputs.batch_first else result

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        """The native run on validated, time-major inputs (``prepared.batch_first`` says how the caller gave
        them): y [T, B, dirs*Hout] and, when ``prepared.wants_gradients``, Gradients with x [T, B, I]."""
        raise NotImplementedError

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        """Raise UnsupportedFeatureError for the first thing in ``config``, ``inputs`` or ``options`` this
        implementation cannot compute exactly; the message names its own limit and who runs it instead."""
        refused = self.refusal(config, inputs, options)
        if refused is None:
            return
        others = () if _probing.get() else (*self.alternatives, "reference")
        running = _who_runs(tuple(name for name in others if name != self.name), config, inputs, options)
        instead = [refused.fix] if refused.fix else []
        if running:
            instead.append(f"use {' or '.join(running[:2])}{refused.purpose}")
        else:
            refused = replace(refused, purpose="")  # nothing to use it for: the message says what was asked
        raise ImplementationLimitError(self.name, refused, " or ".join(instead))

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        """The first thing of ``config``, ``inputs`` or ``options`` beyond ``capabilities()``, or None."""
        caps = self.capabilities()
        missing = caps.unsupported(config)
        if missing:
            return self.feature_refusal(missing[0])
        if options.dtype not in caps.dtypes:
            runs = f"{self.name} runs {' and '.join(caps.dtypes)} only{self._why('dtype')}"
            return Refusal(f"dtype {options.dtype}", runs, purpose=f" for {options.dtype}", asked=options.dtype)
        if options.device not in caps.devices:
            runs = f"{self.name} runs on {' and '.join(caps.devices)} only{self._why('device')}"
            return Refusal(f"device {options.device}", runs, purpose=f" on {options.device}", asked=options.device)
        if inputs is None:
            return None
        unsupported_inputs = (
            (
                inputs.wants_gradients and not caps.gradients,
                "gradients",
                "computes no gradients",
                "run it forward only",
            ),
            (
                inputs.seq_lens is not None and not caps.seq_lens,
                "seq_lens",
                "takes no per-sample lengths",
                "give full lengths",
            ),
            (
                (inputs.h0 is not None or inputs.c0 is not None) and not caps.initial_state,
                "initial_state",
                "takes no initial states",
                "start from zero states",
            ),
        )
        for refused, feature, limit, fix in unsupported_inputs:
            if refused:
                return Refusal(feature, f"{self.name} {limit}{self._why(feature)}", fix)
        return None

    def feature_refusal(self, feature: str) -> Refusal:
        """A feature of the config it lacks: in the words of ``limits`` where it has some."""
        why = self.limits.get(feature.split("=")[0])
        return Refusal(feature, f"{self.name}: {why}" if why else f"{self.name} does not run {feature}")

    def _why(self, key: str) -> str:
        return f" ({self.limits[key]})" if key in self.limits else ""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
