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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import UnsupportedFeatureError
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


class Implementation:
    """Base class of an implementation; subclasses set ``name`` and implement the three methods."""

    name: str = ""
    #: The framework this runs in, for messages ("PyTorch", "TensorFlow", ...).
    framework: str = ""

    def capabilities(self) -> Capabilities:
        raise NotImplementedError

    def unavailable_reason(self) -> str | None:
        """None when the framework can be imported here, else a reason such as "torch is not installed
        (pip install 'lstm-conformance[torch]')". Must not import the framework when it is absent."""
        return None

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        raise NotImplementedError

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        """Raise UnsupportedFeatureError for the first thing in ``config``, ``inputs`` or ``options`` this
        implementation cannot compute exactly; the message names the implementation and what to do instead."""
        caps = self.capabilities()
        framework = self.framework or self.name
        elsewhere = "another implementation ('reference' runs every feature)"
        missing = caps.unsupported(config)
        if missing:
            raise UnsupportedFeatureError(framework, missing[0], f"implementation {self.name!r}: use {elsewhere}")
        if options.dtype not in caps.dtypes:
            raise UnsupportedFeatureError(
                framework, f"dtype {options.dtype}", f"implementation {self.name!r} runs {', '.join(caps.dtypes)}"
            )
        if options.device not in caps.devices:
            raise UnsupportedFeatureError(
                framework, f"device {options.device}", f"implementation {self.name!r} runs on {', '.join(caps.devices)}"
            )
        if inputs is None:
            return
        unsupported_inputs = (
            (inputs.wants_gradients and not caps.gradients, "gradients", "run it forward only"),
            (inputs.seq_lens is not None and not caps.seq_lens, "per-sample sequence lengths", "give full lengths"),
            (
                (inputs.h0 is not None or inputs.c0 is not None) and not caps.initial_state,
                "initial states",
                "start from zero states",
            ),
        )
        for refused, feature, fix in unsupported_inputs:
            if refused:
                raise UnsupportedFeatureError(
                    framework, feature, f"implementation {self.name!r}: {fix}, or use {elsewhere}"
                )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r}>"
