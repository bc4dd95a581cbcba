"""The .tflite format (LiteRT's fused UNIDIRECTIONAL_SEQUENCE_LSTM ops written by TF's converter) and the
"tflite" implementation, against the float64 reference and against PyTorch.

The issue's done-when is ``test_convert_torch_bidirectional_runs_in_plain_litert``: ``lstm-conformance convert
model.pt model.tflite`` from a torch 2-layer bidirectional LSTM, then LiteRT's own interpreter (no project code)
on the file, within 1e-5 of torch in float32. Conversions take tens of seconds each (TF's converter)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow", reason="tensorflow is not installed (pip install 'lstm-conformance[tensorflow]')")
pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'lstm-conformance[tflite]')")

from ai_edge_litert.interpreter import Interpreter

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.formats import get_format, infer_format
from lstm_conformance.adapters.formats.tflite_file import parse_lstm_ops, run_file, tflite_bytes, weights_from_ops
from lstm_conformance.adapters.litert import LiteRTLSTM
from lstm_conformance.cli import main
from lstm_conformance.reference.errors import InputFileError, UnsupportedFeatureError
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward

pytestmark = pytest.mark.slow
FLOAT32 = RunOptions(dtype="float32")
TOLERANCE = 1e-5
#: Dynamic-range int8 weights: measured 5.9e-3 max relative (4.5e-3 normwise) on this test's case; 5e-2 allows
#: for other weights' scales.
INT8_TOLERANCE = 5e-2


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _weights(config: LSTMConfig, seed: int = 0) -> LSTMWeights:
    return random_weights(config, np.random.default_rng(seed)).map(lambda a: a.astype(np.float32).astype(np.float64))


def _x(config: LSTMConfig, seed: int = 1, steps: int = 7, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((steps, batch, config.input_size)).astype(np.float32).astype(np.float64)


@pytest.mark.parametrize(
    "config",
    [
        LSTMConfig(3, 5, num_layers=2, bidirectional=True),
        LSTMConfig(4, 6, cell_clip=0.3),
    ],
    ids=["l2_bidir", "cell_clip"],
)
def test_litert_matches_reference(config: LSTMConfig) -> None:
    weights, x = _weights(config), _x(config)
    result = LiteRTLSTM().run(weights, RunInputs(x), FLOAT32)
    expected = lstm_forward(weights, x)
    assert result.math_mode == "float32"
    for key in ("y", "h_n", "c_n"):
        assert _relative(getattr(result, key), getattr(expected, key)) < TOLERANCE, key


def test_dynamic_int8_moves_the_model_within_its_tolerance() -> None:
    """One quantized file: LiteRT runs it within the int8 tolerance, and its int8 weights read back dequantized.
    The converter quantizes weight tensors of 1024 elements or more only: H=48, I=32 gives [48, 32] blocks."""
    config = LSTMConfig(32, 48, num_layers=2, bidirectional=True)
    weights, x = _weights(config), _x(config)
    data = tflite_bytes(weights, "dynamic-int8", batch=x.shape[1])
    run = run_file(data, np.ascontiguousarray(x.swapaxes(0, 1), dtype=np.float32))
    expected = lstm_forward(weights, x)
    error = _relative(run.y.swapaxes(0, 1), expected.y)
    assert 1e-5 < error < INT8_TOLERANCE, error  # quantization moved it, within its own tolerance
    ops = parse_lstm_ops(data)
    assert all(op.quantized for op in ops)
    read = weights_from_ops(ops)
    for key, value in weights.named_arrays().items():
        if key.endswith((".W", ".R")):  # int8 per-tensor or per-channel: within half a step of 1/127 of the range
            np.testing.assert_allclose(read.named_arrays()[key], value, atol=np.abs(value).max() / 127)


def test_write_read_round_trip(tmp_path: Path) -> None:
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, cell_clip=0.5)
    weights = _weights(config)
    path = tmp_path / "m.tflite"
    assert infer_format(path) == "tflite"
    get_format("tflite").write(path, weights, {})
    (found,) = get_format("tflite").read(path, {}).lstms
    assert found.weights.config == config
    for key, value in weights.named_arrays().items():
        if key.endswith(".Rb"):
            continue  # one bias per gate in the file: Wb + Rb is read back into Wb
        expected = value + weights.named_arrays()[key[:-2] + "Rb"] if key.endswith(".Wb") else value
        np.testing.assert_allclose(found.weights.named_arrays()[key], expected, rtol=1e-7, atol=1e-7)


def test_refusals(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InputFileError, match="TFL3"):
        get_format("tflite").read(bad, {})
    with pytest.raises(UnsupportedFeatureError):
        LiteRTLSTM().run(_weights(LSTMConfig(3, 5, peepholes=True)), RunInputs(_x(LSTMConfig(3, 5))), FLOAT32)
    with pytest.raises(UnsupportedFeatureError, match="no_bias"):
        LiteRTLSTM().run(_weights(LSTMConfig(3, 5, bias=False)), RunInputs(_x(LSTMConfig(3, 5))), FLOAT32)
    config = LSTMConfig(3, 5)
    with pytest.raises(UnsupportedFeatureError, match="initial states"):
        LiteRTLSTM().run(_weights(config), RunInputs(_x(config), h0=np.zeros((1, 3, 5))), FLOAT32)


def test_convert_torch_bidirectional_runs_in_plain_litert(tmp_path: Path) -> None:
    """The done-when: convert model.pt model.tflite; LiteRT's interpreter alone runs it; torch agrees to 1e-5."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    torch.save(lstm.state_dict(), tmp_path / "model.pt")
    status = main(["convert", str(tmp_path / "model.pt"), str(tmp_path / "model.tflite")])
    assert status == 0

    interpreter = Interpreter(model_path=str(tmp_path / "model.tflite"))
    x = np.random.default_rng(2).standard_normal((4, 9, 3)).astype(np.float32)  # [B, T, I]
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], [1, *x.shape[1:]])  # the file's batch is 1; T is free
    interpreter.allocate_tensors()
    outputs = []
    for sample in x:  # one sequence per invoke(), states reset between (they persist in LiteRT)
        interpreter.reset_all_variables()
        interpreter.set_tensor(detail["index"], sample[None])
        interpreter.invoke()
        outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"])[0])
    got = np.stack(outputs)
    with torch.no_grad():
        expected, _ = lstm(torch.from_numpy(x).transpose(0, 1))
    expected = expected.transpose(0, 1).numpy()
    assert got.shape == expected.shape
    assert _relative(got, expected) < TOLERANCE
