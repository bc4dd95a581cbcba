"""OpenVINO (``openvino``) running the ONNX model that ``adapters.onnx_runtime.build_model`` builds, on its CPU
plugin: the model is read by OpenVINO's own ONNX frontend (``Core.read_model`` on the serialized bytes) and
compiled for "CPU"; this project writes no OpenVINO IR of its own.

Inference precision. The CPU plugin picks its own precision unless told: bfloat16 on CPUs with AVX512-BF16 or
AMX, float16 on CPUs with AMX-FP16, float32 elsewhere. Like TF32 on GPUs, that is never inherited here:

- ``precision="f32"`` (the default, strict) sets ``INFERENCE_PRECISION_HINT`` to f32;
- ``precision="bf16"`` or ``"f16"`` asks for the reduced mode; the plugin falls back to f32 on a CPU without
  it, silently, so the math mode reported is the compiled model's own ``INFERENCE_PRECISION_HINT`` after
  compiling ("float32", "bfloat16" or "float16"), never the one asked for.

The suite runs both as variants (``openvino:f32`` and ``openvino:bf16``, ``conformance.cases``), the reduced one
under its own tolerance (``conformance.tolerances``). ``RunOptions.allow_tf32`` is the GPU switch; on this CPU
plugin it is refused rather than read as a precision (use the ``precision`` option).

What the ONNX model holds is what the "onnxruntime" adapter runs (``ONNX_FEATURES``); what OpenVINO computes
differently is listed as known limitations in ``conformance.limitations``. float32 only (the model is float32;
OpenVINO's CPU plugin computes float64 models in float32), forward only (OpenVINO has no gradients).
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.onnx_runtime import (
    INPUT_C0,
    INPUT_H0,
    INPUT_SEQ_LENS,
    INPUT_X,
    ONNX_FEATURES,
    OUTPUT_C,
    OUTPUT_H,
    OUTPUT_Y,
    GraphSignature,
    build_model,
    check_onnx_config,
)
from lstm_conformance.reference.errors import NotImplementedOptionError, UnsupportedFeatureError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

#: The activations OpenVINO's LSTMSequence op holds (its ``activations`` attribute: relu, sigmoid, tanh); the
#: ONNX frontend passes the others on and compiling the model fails (measured with openvino 2026.4.1).
OPENVINO_ACTIVATIONS: frozenset[str] = frozenset({"sigmoid", "tanh", "relu"})

#: ``precision`` option -> the value of OpenVINO's INFERENCE_PRECISION_HINT.
PRECISION_HINTS: dict[str, str] = {"f32": "f32", "bf16": "bf16", "f16": "f16"}
#: OpenVINO element type names (``str(ov.Type)`` lower-cased, or its short name) -> the math mode reported.
MATH_MODES: dict[str, str] = {
    "float32": "float32",
    "f32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "f16": "float16",
}


class OpenVinoLSTM(Implementation):
    """The ONNX LSTM model compiled by OpenVINO's CPU plugin, with its inference precision set explicitly."""

    name = "openvino"
    framework = "OpenVINO"

    def __init__(self, precision: str = "f32") -> None:
        if precision not in PRECISION_HINTS:
            raise NotImplementedOptionError(
                f"openvino precision {precision!r} is not one of {', '.join(PRECISION_HINTS)}; pick one"
            )
        self.precision = precision

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float32",),
            devices=("cpu",),
            gradients=False,
            features=ONNX_FEATURES,
            activations={role: OPENVINO_ACTIVATIONS for role in ("gate", "cell_input", "cell_output")},
            notes=(
                f"OpenVINO CPU plugin, INFERENCE_PRECISION_HINT={PRECISION_HINTS[self.precision]} set explicitly; "
                "math mode is the compiled model's own precision (the plugin falls back to f32 where the CPU "
                "lacks bf16/f16)",
                "float32 only, forward only: OpenVINO has no float64 CPU kernels and no gradients",
                "activations sigmoid, tanh, relu only: OpenVINO's LSTMSequence has no others, and a model with "
                "HardSigmoid, Softsign, Softplus or ScaledTanh fails to compile (RuntimeError from "
                "LSTMCellDecomposition)",
            ),
        )

    def unavailable_reason(self) -> str | None:
        for module, extra in (("onnx", "onnx"), ("openvino", "openvino")):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install 'lstm-conformance[{extra}]')"
        return None

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        check_onnx_config(config, self.framework)
        super().check_supported(config, inputs, options)
        if options.allow_tf32:
            raise UnsupportedFeatureError(
                self.framework,
                "allow_tf32",
                "TF32 is a GPU mode; OpenVINO's CPU precision is the implementation option precision='bf16'",
            )

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        signature = GraphSignature(
            batch_first=False,
            node_layout=0,
            sequence_lens=prepared.lengths_given,
            initial_states=prepared.states_given,
        )
        model_bytes = build_model(weights, signature, dtype="float32").SerializeToString()
        outputs, compiled_precision = compile_and_run(
            model_bytes, _feeds(prepared, signature), PRECISION_HINTS[self.precision]
        )
        # The graph returns PyTorch's conventions, time-major.
        y, h_n, c_n = (np.asarray(outputs[name], dtype=np.float64) for name in (OUTPUT_Y, OUTPUT_H, OUTPUT_C))
        return RunResult(y=y, h_n=h_n, c_n=c_n, math_mode=MATH_MODES.get(compiled_precision, compiled_precision))


def _feeds(prepared: PreparedInputs, signature: GraphSignature) -> dict[str, NDArray[Any]]:
    feeds: dict[str, NDArray[Any]] = {INPUT_X: np.ascontiguousarray(prepared.x, dtype=np.float32)}
    if signature.sequence_lens:
        feeds[INPUT_SEQ_LENS] = prepared.seq_lens.astype(np.int32)
    if signature.initial_states:
        feeds[INPUT_H0] = prepared.h0.astype(np.float32)
        feeds[INPUT_C0] = prepared.c0.astype(np.float32)
    return feeds


def compile_and_run(
    model_bytes: bytes, feeds: dict[str, NDArray[Any]], precision_hint: str
) -> tuple[dict[str, NDArray[Any]], str]:
    """Read the ONNX bytes with OpenVINO's ONNX frontend, compile for CPU with ``precision_hint`` (one thread:
    the machine is shared), run once; return the outputs by name and the precision the compiled model runs in."""
    import openvino

    core = openvino.Core()
    model = core.read_model(model_bytes, b"")
    compiled = core.compile_model(
        model, "CPU", {"INFERENCE_PRECISION_HINT": precision_hint, "INFERENCE_NUM_THREADS": 1}
    )
    precision = str(compiled.get_property("INFERENCE_PRECISION_HINT")).lower()
    results = compiled(feeds)
    outputs = {port.get_any_name(): np.asarray(value) for port, value in results.items()}
    return outputs, _element_type_name(precision)


def _element_type_name(text: str) -> str:
    """ "<type: 'float32'>" (the repr OpenVINO's Python API gives) or "f32" -> "float32"/"f32"."""
    for name in MATH_MODES:
        if f"'{name}'" in text or text == name:
            return name
    return text
