"""PyTorch's ONNX exporters under test: ``torch.onnx.export`` of an ``nn.LSTM``, the exported file run by ONNX
Runtime ("torch-onnx": the legacy TorchScript exporter, ``dynamo=False``; "torch-onnx-dynamo": ``dynamo=True``,
the torch.export-based exporter through onnxscript).

What is under test is the exporter as users call it: the canonical weights go into an ``nn.LSTM`` through the
"torch" adapter's own state_dict mapping, the module is exported with the exporter's defaults (opset, constant
folding, the dynamo exporter's optimizer), and the bytes it wrote are run by ONNX Runtime's CPU provider. No
node of the exported graph is written or rewritten here.

- Initial states are graph inputs when the run has them (``module(x, (h0, c0))`` exported with three inputs);
  without them the exported call is ``module(x)``, so the exporter's own zero-state path is what runs.
- Batch-first input is ``nn.LSTM(batch_first=True)`` exported as it stands.
- Per-sample lengths are not offered: an exported ``nn.LSTM`` takes no lengths (``pack_padded_sequence`` is
  a Python-side wrapper, outside the exported module), so ``seq_lens`` is refused.
- float32 only (ONNX Runtime's LSTM kernel has no float64); forward only (an inference session has no
  gradients).
- The legacy exporter refuses ``proj_size`` ("Unsupported: ONNX export of operator LSTM, LSTMs with
  projections"): refused here too. The dynamo exporter accepts it and writes a graph ONNX Runtime cannot load
  (a known limitation, ``conformance.limitations``), so "torch-onnx-dynamo" lists the feature and lets the
  suite record the failure.
"""

from __future__ import annotations

import importlib.util
import io
import logging
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.layouts.torch import refuse_unsupported
from lstm_conformance.adapters.pytorch import build_nn_lstm
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, require_zero_biases

#: What the TorchScript exporter (torch 2.13) raises for ``nn.LSTM(proj_size=...)``.
LEGACY_PROJECTION_REFUSAL = (
    "torch.onnx.export(dynamo=False) raises 'Unsupported: ONNX export of operator LSTM, LSTMs with projections'"
)

#: Graph input and output names given to the exporter.
INPUT_NAMES: tuple[str, ...] = ("x", "h0", "c0")
OUTPUT_NAMES: tuple[str, ...] = ("y", "h_n", "c_n")


def export_lstm(weights: LSTMWeights, example: Sequence[NDArray[np.float32]], batch_first: bool, dynamo: bool) -> bytes:
    """The ONNX bytes ``torch.onnx.export`` writes for an ``nn.LSTM`` holding ``weights`` (float32), called on
    ``example`` (x, or x, h0, c0) and returning (y, h_n, c_n)."""
    import torch

    lstm = build_nn_lstm(weights, torch.float32, None, batch_first)
    module = _returns_states(lstm).eval()
    args = tuple(torch.from_numpy(np.ascontiguousarray(array)) for array in example)
    names = list(INPUT_NAMES[: len(args)])
    with warnings.catch_warnings(), _QuietLoggers():
        # The exporters warn about batch sizes and their own deprecations: the test here is what they write.
        warnings.simplefilter("ignore")
        if dynamo:
            program = torch.onnx.export(
                module, args, dynamo=True, input_names=names, output_names=list(OUTPUT_NAMES), verbose=False
            )
            data: bytes = program.model_proto.SerializeToString()
            return data
        buffer = io.BytesIO()
        torch.onnx.export(module, args, buffer, dynamo=False, input_names=names, output_names=list(OUTPUT_NAMES))
        return buffer.getvalue()


class _QuietLoggers:
    """Silences the dynamo exporter's INFO/WARNING log lines ("torchvision is not installed", progress) for the
    export only; errors still raise."""

    _names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.fx", "onnxscript")

    def __enter__(self) -> None:
        self._levels = {name: logging.getLogger(name).level for name in self._names}
        for name in self._names:
            logging.getLogger(name).setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)


def _returns_states(lstm: Any) -> Any:
    """``lstm`` wrapped to return (y, h_n, c_n) as three outputs: exporters take tensors out, not nested tuples."""
    import torch

    class ReturnsStates(torch.nn.Module):
        def __init__(self, lstm: Any) -> None:
            super().__init__()
            self.lstm = lstm

        def forward(self, x: Any, *states: Any) -> tuple[Any, Any, Any]:
            y, (h_n, c_n) = self.lstm(x, states if states else None)
            return y, h_n, c_n

    return ReturnsStates(lstm)


def run_exported(data: bytes, feeds: dict[str, NDArray[np.float32]]) -> list[NDArray[Any]]:
    """The exported model run by ONNX Runtime's CPU provider (one thread: the machine is shared)."""
    import onnxruntime

    session_options = onnxruntime.SessionOptions()
    session_options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(data, session_options, providers=["CPUExecutionProvider"])
    outputs: list[NDArray[Any]] = session.run(list(OUTPUT_NAMES), feeds)
    return outputs


class _TorchOnnxExport(Implementation):
    """nn.LSTM -> torch.onnx.export -> ONNX Runtime (CPU, float32, forward only)."""

    framework = "torch.onnx"
    dynamo: bool = False
    FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "no_bias"})
    _notes: tuple[str, ...] = ()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float32",),
            devices=("cpu",),
            gradients=False,
            features=self.FEATURES,
            seq_lens=False,
            notes=(
                *self._notes,
                "the exported file run by ONNX Runtime's CPU provider: float32 only, forward only",
                "no per-sample lengths: an exported nn.LSTM takes none (pack_padded_sequence is outside it)",
            ),
        )

    def unavailable_reason(self) -> str | None:
        needed = ["torch", "onnx", "onnxruntime"] + (["onnxscript"] if self.dynamo else [])
        for module in needed:
            if importlib.util.find_spec(module) is None:
                extra = "onnx" if module != "torch" else "torch"
                return f"{module} is not installed (pip install 'lstm-conformance[{extra}]')"
        return None

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        if "proj_size" in config.features() and "proj_size" not in self.FEATURES:
            raise UnsupportedFeatureError(self.framework, "proj_size", LEGACY_PROJECTION_REFUSAL)
        refuse_unsupported(config, self.FEATURES)
        super().check_supported(config, inputs, options)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        require_zero_biases(weights)
        # Exported as nn.LSTM(batch_first=prepared.batch_first), as the caller's module would be, and fed so.
        example = _graph_inputs(prepared, prepared.batch_first, prepared.states_given)
        data = export_lstm(weights, example, prepared.batch_first, dynamo=self.dynamo)
        outputs = run_exported(data, dict(zip(INPUT_NAMES, example, strict=False)))
        y, h_n, c_n = (np.asarray(array, dtype=np.float64) for array in outputs)
        # The skeleton gives y back in the caller's layout: here, the exported graph's own is made time-major.
        y = np.ascontiguousarray(y.swapaxes(0, 1)) if prepared.batch_first else y
        return RunResult(y=y, h_n=h_n, c_n=c_n, math_mode="float32")


def _graph_inputs(prepared: PreparedInputs, batch_first: bool, with_states: bool) -> list[NDArray[np.float32]]:
    """x (in the caller's layout), then h0 and c0 when the run has initial states, as float32."""
    x = prepared.x.swapaxes(0, 1) if batch_first else prepared.x
    arrays = [x, prepared.h0, prepared.c0] if with_states else [x]
    return [np.ascontiguousarray(array, dtype=np.float32) for array in arrays]


class TorchOnnxLegacy(_TorchOnnxExport):
    """``torch.onnx.export(..., dynamo=False)``: the TorchScript-based exporter."""

    name = "torch-onnx"
    framework = "torch.onnx (TorchScript exporter)"
    dynamo = False
    _notes = ("torch.onnx.export(dynamo=False); refuses proj_size, as the exporter does",)


class TorchOnnxDynamo(_TorchOnnxExport):
    """``torch.onnx.export(..., dynamo=True)``: the torch.export-based exporter (onnxscript)."""

    name = "torch-onnx-dynamo"
    framework = "torch.onnx (dynamo exporter)"
    dynamo = True
    FEATURES = frozenset({"num_layers", "bidirectional", "no_bias", "proj_size"})
    _notes = ("torch.onnx.export(dynamo=True) with its default optimizer",)
