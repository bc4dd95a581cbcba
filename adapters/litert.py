"""LiteRT (TFLite): the canonical LSTM written as a ``.tflite`` file by ``adapters.formats.tflite_file`` (TF's
converter, fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` ops) and run in LiteRT's interpreter ("tflite").

- float32 only, CPU, forward only: LiteRT has no gradients.
- No initial states and no per-sample lengths: the file's model takes the input sequence only (the fused op's
  states are variable tensors that start at zero); such runs are refused.
- h_n and c_n are the fused ops' own state tensors after the call (``run_file``), read per layer and direction.
- ``quantize="dynamic-int8"`` (constructor option) runs the file that
  the writer's dynamic-range quantization writes: int8 weights, float32 activations; math mode
  "float32 (dynamic-range int8 weights)" when the converter quantized any weight (it skips tensors under 1024
  elements, so a small LSTM runs, and is reported, as float32).
"""

from __future__ import annotations

import numpy as np

from lstm_conformance.adapters.base import Capabilities, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats.tflite_file import (
    QUANTIZE_MODES,
    WRITER_FEATURES,
    LiteRTRun,
    check_writable,
    litert_unavailable_reason,
    parse_lstm_ops,
    run_file,
    tflite_bytes,
)
from lstm_conformance.reference.errors import NotImplementedOptionError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, require_zero_biases

#: The math mode a quantized run reports.
INT8_MATH_MODE = "float32 (dynamic-range int8 weights)"


class LiteRTLSTM(Implementation):
    """The LSTM converted by TF's converter to fused LiteRT ops, run in LiteRT's interpreter."""

    name = "tflite"
    framework = "LiteRT"

    def __init__(self, quantize: str | None = None) -> None:
        if quantize is not None and quantize not in QUANTIZE_MODES:
            raise NotImplementedOptionError(f"tflite quantize {quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")
        self.quantize = quantize

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float32",),
            devices=("cpu",),
            gradients=False,
            features=WRITER_FEATURES,
            seq_lens=False,
            initial_state=False,
            notes=(
                "TF's converter (tf_keras LSTM -> UNIDIRECTIONAL_SEQUENCE_LSTM), LiteRT's interpreter; "
                "float32, forward only, zero initial states, full lengths",
                *(("dynamic-range int8 weights",) if self.quantize else ()),
            ),
        )

    def unavailable_reason(self) -> str | None:
        return litert_unavailable_reason()

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        super().check_supported(config, inputs, options)
        check_writable(config)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        require_zero_biases(weights)
        x = np.ascontiguousarray(prepared.x.swapaxes(0, 1), dtype=np.float32)  # the file takes [B, T, I]
        data = tflite_bytes(weights, self.quantize, batch=x.shape[0])
        run = run_file(data, x)
        # int8 only where the converter did quantize (tensors of 1024 elements and more).
        quantized = self.quantize is not None and any(op.quantized for op in parse_lstm_ops(data))
        return _result(weights.config, run, INT8_MATH_MODE if quantized else "float32")


def _result(config: LSTMConfig, run: LiteRTRun, math_mode: str) -> RunResult:
    """The interpreter's batch-major y and per-op final states in PyTorch's time-major conventions."""
    y = np.asarray(run.y, dtype=np.float64)
    keys = [(layer, direction) for layer in range(config.num_layers) for direction in range(config.num_directions)]
    h_n = np.stack([np.asarray(run.final_h[key], dtype=np.float64) for key in keys])
    c_n = np.stack([np.asarray(run.final_c[key], dtype=np.float64) for key in keys])
    return RunResult(y=np.ascontiguousarray(y.swapaxes(0, 1)), h_n=h_n, c_n=c_n, math_mode=math_mode)
