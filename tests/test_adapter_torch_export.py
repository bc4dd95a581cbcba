"""torch.onnx.export of an nn.LSTM (legacy and dynamo exporters), the exported bytes run in ONNX Runtime, against
the float64 reference: float32 outputs within 1e-5 relative (ONNX Runtime's float32 LSTM kernel)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch", reason="torch is not installed (pip install 'lstm-conformance[torch]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'lstm-conformance[onnx]')")

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.layout import LSTMConfig, random_weights
from lstm_conformance.reference.lstm import lstm_forward

TOLERANCE = 1e-5
FLOAT32 = RunOptions(dtype="float32")


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _check(name: str, config: LSTMConfig, *, states: bool, batch_first: bool = False, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    weights = random_weights(config, rng).map(lambda a: a.astype(np.float32).astype(np.float64))
    steps, batch, rows = 7, 3, config.num_layers * config.num_directions
    x = rng.standard_normal((batch, steps, config.input_size) if batch_first else (steps, batch, config.input_size))
    x = x.astype(np.float32).astype(np.float64)
    h0 = rng.standard_normal((rows, batch, config.output_size)) if states else None
    c0 = rng.standard_normal((rows, batch, config.hidden_size)) if states else None
    h0 = None if h0 is None else h0.astype(np.float32).astype(np.float64)
    c0 = None if c0 is None else c0.astype(np.float32).astype(np.float64)
    result = get_implementation(name).run(weights, RunInputs(x, h0, c0, batch_first=batch_first), FLOAT32)
    expected = lstm_forward(weights, x, h0, c0, batch_first=batch_first)
    assert result.math_mode == "float32"
    for key in ("y", "h_n", "c_n"):
        assert getattr(result, key).shape == getattr(expected, key).shape
        assert _relative(getattr(result, key), getattr(expected, key)) < TOLERANCE, key


@pytest.mark.parametrize(
    ("config", "states", "batch_first"),
    [
        (LSTMConfig(3, 5), False, False),
        (LSTMConfig(3, 5, num_layers=2, bidirectional=True), True, False),
        (LSTMConfig(4, 6, bias=False), True, True),
    ],
    ids=["l1_zero_state", "l2_bidir_state", "nobias_batch_first"],
)
def test_legacy_exporter_matches_reference(config: LSTMConfig, states: bool, batch_first: bool) -> None:
    _check("torch-onnx", config, states=states, batch_first=batch_first)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("config", "states"),
    [(LSTMConfig(3, 5), False), (LSTMConfig(3, 5, num_layers=2, bidirectional=True), True)],
    ids=["l1_zero_state", "l2_bidir_state"],
)
def test_dynamo_exporter_matches_reference(config: LSTMConfig, states: bool) -> None:
    pytest.importorskip("onnxscript", reason="onnxscript is not installed (pip install 'lstm-conformance[onnx]')")
    _check("torch-onnx-dynamo", config, states=states)


def test_legacy_exporter_projection_is_refused_with_the_exporters_words() -> None:
    weights = random_weights(LSTMConfig(3, 5, proj_size=2), np.random.default_rng(0))
    with pytest.raises(UnsupportedFeatureError, match="LSTMs with projections"):
        get_implementation("torch-onnx").run(weights, RunInputs(np.zeros((2, 1, 3))), FLOAT32)


def test_lengths_float64_and_gradients_are_refused() -> None:
    implementation = get_implementation("torch-onnx")
    weights = random_weights(LSTMConfig(3, 5), np.random.default_rng(0))
    x = np.zeros((4, 2, 3))
    with pytest.raises(UnsupportedFeatureError, match="takes no per-sample lengths"):
        implementation.run(weights, RunInputs(x, seq_lens=np.array([4, 2])), FLOAT32)
    with pytest.raises(UnsupportedFeatureError, match="float64"):
        implementation.run(weights, RunInputs(x), RunOptions(dtype="float64"))
    with pytest.raises(UnsupportedFeatureError, match="gradients"):
        implementation.run(weights, RunInputs(x, dy=np.ones((4, 2, 5))), FLOAT32)
