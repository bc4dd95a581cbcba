"""LiteRT (TFLite): the canonical LSTM written as a ``.tflite`` file by ``adapters.formats.tflite_file`` and run
in LiteRT's interpreter ("tflite").

- float32: the file is written directly as LiteRT's fused ops (one ``UNIDIRECTIONAL_SEQUENCE_LSTM`` or
  ``BIDIRECTIONAL_SEQUENCE_LSTM`` per layer): peepholes, projection, cell and projection clips, no biases, and
  tanh or relu cells (one activation for the cell input and output, as the op has). Writing takes milliseconds.
- CPU, forward only: LiteRT has no gradients.
- Initial states are not inputs of the file's model (the fused ops' states are variable tensors that start at
  zero): a run with h0/c0 sets those tensors with the interpreter's ``set_tensor`` after ``allocate_tensors``,
  as a LiteRT user streaming a sequence would (``run_file``). No per-sample lengths: such runs are refused.
- h_n and c_n are the fused ops' own state tensors after the call, read per layer and direction.
- ``quantize="dynamic-int8"`` (constructor option) runs the file that TF's converter writes with dynamic-range
  quantization (a tf_keras LSTM: tanh cells, no peepholes, projection or proj_clip; seconds per file): int8
  weights, float32 activations; math mode "float32 (dynamic-range int8 weights)" when the converter quantized any
  weight (it skips tensors under 1024 elements, so a small LSTM runs, and is reported, as float32).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import numpy as np

from lstm_conformance.adapters.base import Capabilities, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats.tflite_file import (
    CONVERTER_FEATURES,
    INT8_MATH_MODE,
    QUANTIZE_MODES,
    WRITER_ACTIVATIONS,
    WRITER_FEATURES,
    LiteRTRun,
    check_writable,
    converter_unavailable_reason,
    litert_unavailable_reason,
    parse_lstm_ops,
    run_file,
    tflite_bytes,
)
from lstm_conformance.reference.errors import NotImplementedOptionError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, require_zero_biases

_ONE_CELL_ACTIVATION = "cell activations: LiteRT's fused LSTM op has one for the cell input and output, tanh or relu"


class LiteRTLSTM(Implementation):
    """The LSTM as LiteRT's fused sequence-LSTM ops, run in LiteRT's interpreter."""

    name = "tflite"
    framework = "LiteRT"
    limits: ClassVar[Mapping[str, str]] = {
        "cell_input_activation": _ONE_CELL_ACTIVATION,
        "cell_output_activation": _ONE_CELL_ACTIVATION,
        "gate_activation": "gate_activation: LiteRT's fused LSTM op's gates are always sigmoid",
        "input_forget": "input_forget is not LiteRT's CIFG, which couples i = 1 - f (canonical: f = 1 - i)",
        "gate_clip": "gate_clip: LiteRT's fused LSTM op clips the cell state and h only, not gate pre-activations",
        "seq_lens": "LiteRT's fused LSTM op runs every sample the full length",
        "gradients": "LiteRT has no gradients",
    }

    def __init__(self, quantize: str | None = None) -> None:
        if quantize is not None and quantize not in QUANTIZE_MODES:
            raise NotImplementedOptionError(f"tflite quantize {quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")
        self.quantize = quantize

    def capabilities(self) -> Capabilities:
        cells = frozenset({"tanh"}) if self.quantize else WRITER_ACTIVATIONS
        writer = (
            "TF's converter (tf_keras LSTM -> UNIDIRECTIONAL_SEQUENCE_LSTM), dynamic-range int8 weights"
            if self.quantize
            else "fused UNIDIRECTIONAL_/BIDIRECTIONAL_SEQUENCE_LSTM ops written directly"
        )
        return Capabilities(
            dtypes=("float32",),
            devices=("cpu",),
            gradients=False,
            features=CONVERTER_FEATURES if self.quantize else WRITER_FEATURES,
            activations={"gate": frozenset({"sigmoid"}), "cell_input": cells, "cell_output": cells},
            seq_lens=False,
            initial_state=True,
            notes=(
                f"{writer}, LiteRT's interpreter; float32, forward only, full lengths",
                "initial states set on the ops' variable state tensors (set_tensor), not file inputs",
                "one cell activation for the cell input and output (tanh or relu), as LiteRT's op has",
            ),
        )

    def unavailable_reason(self) -> str | None:
        return litert_unavailable_reason() or (converter_unavailable_reason() if self.quantize else None)

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        super().check_supported(config, inputs, options)
        check_writable(config, self.quantize)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        require_zero_biases(weights)
        x = np.ascontiguousarray(prepared.x.swapaxes(0, 1), dtype=np.float32)  # the file takes [B, T, I]
        data = tflite_bytes(weights, self.quantize, batch=x.shape[0])
        states = (prepared.h0, prepared.c0) if prepared.states_given else (None, None)
        run = run_file(data, x, *states)
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
