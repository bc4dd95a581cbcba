"""OpenVINO's CPU plugin running the ONNX LSTM model this project builds, against the float64 reference.

Strict f32 precision must match to 1e-5 relative; the precision reported is the compiled model's own. What
OpenVINO computes wrong (peepholes, input_forget, sequence_lens of a forward-only LSTM) is shown by tests that
fail once OpenVINO computes them right (then drop the known limitation in conformance/limitations.py)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'lstm-conformance[onnx]')")
pytest.importorskip("openvino", reason="openvino is not installed (pip install 'lstm-conformance[openvino]')")

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.openvino_runtime import OpenVinoLSTM
from lstm_conformance.reference.errors import NotImplementedOptionError, UnsupportedFeatureError
from lstm_conformance.reference.layout import LayerWeights, LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward

TOLERANCE = 1e-5
FLOAT32 = RunOptions(dtype="float32")


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _data(config: LSTMConfig, seed: int = 0, batch_first: bool = False) -> tuple[LSTMWeights, RunInputs]:
    rng = np.random.default_rng(seed)
    f32 = lambda a: np.asarray(a).astype(np.float32).astype(np.float64)  # noqa: E731
    weights = random_weights(config, rng).map(f32)
    rows, shape = config.num_layers * config.num_directions, (6, 3, config.input_size)
    x = f32(rng.standard_normal(shape))
    if batch_first:
        x = x.swapaxes(0, 1).copy()
    h0 = f32(rng.standard_normal((rows, 3, config.hidden_size)))
    c0 = f32(rng.standard_normal((rows, 3, config.hidden_size)))
    return weights, RunInputs(x, h0, c0, batch_first=batch_first)


def _errors(weights: LSTMWeights, inputs: RunInputs, expected_weights: LSTMWeights | None = None) -> list[float]:
    result = OpenVinoLSTM().run(weights, inputs, FLOAT32)
    assert result.math_mode == "float32"
    expected = lstm_forward(
        expected_weights or weights, inputs.x, inputs.h0, inputs.c0, inputs.seq_lens, batch_first=inputs.batch_first
    )
    return [_relative(getattr(result, key), getattr(expected, key)) for key in ("y", "h_n", "c_n")]


@pytest.mark.parametrize(
    ("config", "batch_first"),
    [
        (LSTMConfig(3, 5), False),
        (LSTMConfig(3, 5, num_layers=2, bidirectional=True), True),
        (LSTMConfig(4, 6, bias=False, gate_clip=0.7), False),
    ],
    ids=["l1", "l2_bidir_batch_first", "nobias_gate_clip"],
)
def test_strict_f32_matches_reference(config: LSTMConfig, batch_first: bool) -> None:
    weights, inputs = _data(config, batch_first=batch_first)
    assert max(_errors(weights, inputs)) < TOLERANCE


def test_bidirectional_lengths_are_honoured() -> None:
    weights, inputs = _data(LSTMConfig(3, 5, num_layers=2, bidirectional=True))
    assert max(_errors(weights, replace(inputs, seq_lens=np.array([6, 2, 4])))) < TOLERANCE


def test_known_wrong_forward_lengths_are_ignored() -> None:
    """OpenVINO runs a forward-only LSTM over all T steps whatever sequence_lens says (known limitation)."""
    weights, inputs = _data(LSTMConfig(3, 5))
    ragged = replace(inputs, seq_lens=np.array([6, 5, 1]))
    assert max(_errors(weights, ragged)) > 1e-2
    full = lstm_forward(weights, inputs.x, inputs.h0, inputs.c0)
    got = OpenVinoLSTM().run(weights, ragged, FLOAT32)
    assert _relative(got.y, full.y) < TOLERANCE


def test_known_wrong_peepholes_are_ignored() -> None:
    """OpenVINO drops the P input: its result is the LSTM without peepholes (known limitation)."""
    weights, inputs = _data(LSTMConfig(3, 5, peepholes=True))
    assert max(_errors(weights, inputs)) > 1e-2
    plain = LSTMWeights(
        replace(weights.config, peepholes=False),
        [[LayerWeights(W=w.W, R=w.R, Wb=w.Wb, Rb=w.Rb) for w in directions] for directions in weights.layers],
    )
    assert max(_errors(weights, inputs, expected_weights=plain)) < TOLERANCE


def test_known_wrong_input_forget_is_ignored() -> None:
    weights, inputs = _data(LSTMConfig(3, 5, input_forget=True))
    assert max(_errors(weights, inputs)) > 1e-2
    uncoupled = LSTMWeights(replace(weights.config, input_forget=False), weights.layers)
    assert max(_errors(weights, inputs, expected_weights=uncoupled)) < TOLERANCE


def test_reduced_precision_reports_what_compiled() -> None:
    """bf16 is asked for; the math mode is the compiled model's (float32 on a CPU without bf16)."""
    weights, inputs = _data(LSTMConfig(3, 5))
    result = OpenVinoLSTM(precision="bf16").run(weights, inputs, FLOAT32)
    assert result.math_mode in ("float32", "bfloat16")
    expected = lstm_forward(weights, inputs.x, inputs.h0, inputs.c0)
    assert _relative(result.y, expected.y) < (TOLERANCE if result.math_mode == "float32" else 6e-2)


def test_refusals() -> None:
    with pytest.raises(NotImplementedOptionError):
        OpenVinoLSTM(precision="int4")
    weights, inputs = _data(LSTMConfig(3, 5))
    with pytest.raises(UnsupportedFeatureError, match="TF32"):
        OpenVinoLSTM().run(weights, inputs, RunOptions(dtype="float32", allow_tf32=True))
    with pytest.raises(UnsupportedFeatureError, match="float64"):
        OpenVinoLSTM().run(weights, inputs, RunOptions(dtype="float64"))
