"""The .tflite format (LiteRT's fused UNIDIRECTIONAL_/BIDIRECTIONAL_SEQUENCE_LSTM ops) and the "tflite"
implementation, against the float64 reference and against PyTorch.

The issue's done-when is ``test_convert_torch_bidirectional_runs_in_plain_litert``: ``lstm-conformance convert
model.pt model.tflite`` from a torch 2-layer bidirectional LSTM, then LiteRT's own interpreter (no project code)
on the file, within 1e-5 of torch in float32. Float32 files are written directly (milliseconds); the tests of
TF's converter route (quantized writing, and reading the converter's own files) are marked slow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("ai_edge_litert", reason="ai-edge-litert is not installed (pip install 'lstm-conformance[tflite]')")

from ai_edge_litert import schema_py_generated as litert_schema
from ai_edge_litert.interpreter import Interpreter

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.formats import get_format, infer_format
from lstm_conformance.adapters.formats.tflite_file import (
    converter_bytes,
    fused_ops_bytes,
    parse_lstm_ops,
    run_file,
    source_runner_problem,
    tflite_bytes,
    weights_from_ops,
)
from lstm_conformance.adapters.litert import LiteRTLSTM
from lstm_conformance.adapters.reference_impl import reference_run
from lstm_conformance.cli import main
from lstm_conformance.conformance.checks import forward_measurements
from lstm_conformance.conformance.tolerances import tolerance_for
from lstm_conformance.reference.errors import InputFileError, LSTMConformanceError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward

FLOAT32 = RunOptions(dtype="float32")
TOLERANCE = 1e-5
#: Dynamic-range int8 weights: measured 5.9e-3 max relative (4.5e-3 normwise) on this test's case; 5e-2 allows
#: for other weights' scales.
INT8_TOLERANCE = 5e-2
RELU = Activation("relu")
#: Peepholes, projection, both clips and two bidirectional layers: everything the fused ops hold at once.
EVERYTHING = LSTMConfig(
    3, 6, num_layers=2, bidirectional=True, peepholes=True, proj_size=4, cell_clip=0.4, proj_clip=0.3
)


def require_tensorflow() -> None:
    pytest.importorskip("tensorflow", reason="tensorflow is not installed (pip install 'lstm-conformance[tensorflow]')")


def _relative(got: np.ndarray, expected: np.ndarray) -> float:
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def _weights(config: LSTMConfig, seed: int = 0, scale: float | None = None) -> LSTMWeights:
    weights = random_weights(config, np.random.default_rng(seed), scale)
    return weights.map(lambda a: a.astype(np.float32).astype(np.float64))


def _x(config: LSTMConfig, seed: int = 1, steps: int = 7, batch: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.standard_normal((steps, batch, config.input_size)).astype(np.float32).astype(np.float64)


def _plain_litert(model: bytes | Path, x: np.ndarray) -> np.ndarray:
    """LiteRT's interpreter alone on batch-major ``x`` [B, T, I]: the file's batch is fixed, T resized."""
    interpreter = Interpreter(model_path=str(model)) if isinstance(model, Path) else Interpreter(model_content=model)
    (detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], np.ascontiguousarray(x, dtype=np.float32))
    interpreter.invoke()
    return np.array(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))


def _op_names(data: bytes) -> list[str]:
    """The builtin op names of the file's main subgraph, read with LiteRT's own schema module."""
    model = litert_schema.ModelT.InitFromObj(litert_schema.Model.GetRootAs(data, 0))
    names = {value: name for name, value in vars(litert_schema.BuiltinOperator).items() if not name.startswith("_")}
    codes = [max(code.builtinCode, code.deprecatedBuiltinCode) for code in model.operatorCodes]
    return [names[codes[operator.opcodeIndex]] for operator in model.subgraphs[0].operators]


# ----------------------------------------------------------------------------------------------------------
# The direct writer, run in LiteRT
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        LSTMConfig(3, 5, num_layers=2, bidirectional=True),
        LSTMConfig(4, 6, cell_clip=0.3),
        LSTMConfig(3, 5, cell_input_activation=RELU, cell_output_activation=RELU),
        LSTMConfig(3, 5, num_layers=2, bias=False),
        EVERYTHING,
    ],
    ids=["l2_bidir", "cell_clip", "relu", "no_bias", "peephole_proj_clips_bidir"],
)
def test_litert_matches_reference(config: LSTMConfig) -> None:
    weights, x = _weights(config, scale=1.0), _x(config)
    result = LiteRTLSTM().run(weights, RunInputs(x), FLOAT32)
    expected = lstm_forward(weights, x)
    assert result.math_mode == "float32"
    for key in ("y", "h_n", "c_n"):
        assert _relative(getattr(result, key), getattr(expected, key)) < TOLERANCE, key


def test_peepholes_projection_clips_within_the_suites_tolerance(tmp_path: Path) -> None:
    """Written, read back bit for bit, then run by LiteRT alone within the suite's float32 tolerance of the
    float64 reference. Weights of scale 1.5 and inputs of 2: the clips (cell 0.4, h 0.3) bind."""
    weights = _weights(EVERYTHING, seed=3, scale=1.5)
    path = tmp_path / "m.tflite"
    get_format("tflite").write(path, weights, {})
    (found,) = get_format("tflite").read(path, {}).lstms
    assert found.weights.config == EVERYTHING
    for key, value in weights.named_arrays().items():
        if key.endswith(".Rb"):
            np.testing.assert_array_equal(found.weights.named_arrays()[key], 0.0)  # one bias per gate in the file
        elif key.endswith(".Wb"):
            summed = (value + weights.named_arrays()[key[:-2] + "Rb"]).astype(np.float32)
            np.testing.assert_array_equal(found.weights.named_arrays()[key], summed)
        else:
            np.testing.assert_array_equal(found.weights.named_arrays()[key], value)
    steps = 9
    x = 2.0 * _x(EVERYTHING, seed=4, steps=steps, batch=1)
    expected, _ = reference_run(weights, RunInputs(x))
    assert np.abs(expected.h_n).max() == pytest.approx(0.3)  # proj_clip binds: the test reaches the clip
    y = _plain_litert(path, x.swapaxes(0, 1)).swapaxes(0, 1)
    result = LiteRTLSTM().run(weights, RunInputs(x), FLOAT32)
    np.testing.assert_array_equal(result.y, y)  # the implementation runs the same file
    tolerance = tolerance_for("float32", "tflite", "cpu", "forward", steps)
    for measurement in forward_measurements(result, expected, tolerance):
        assert measurement.passed, measurement


def test_bidirectional_op_read_back() -> None:
    """A bidirectional layer is one BIDIRECTIONAL_SEQUENCE_LSTM op: its forward and backward weights, states
    and outputs are read per the kernel's numbering (inputs 1-17 forward, 18-34 backward, 35-38 states)."""
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, peepholes=True, proj_size=2, cell_clip=1.5)
    weights = _weights(config)
    data = tflite_bytes(weights, batch=2)
    assert _op_names(data) == ["BIDIRECTIONAL_SEQUENCE_LSTM", "CONCATENATION"] * 2
    ops = parse_lstm_ops(data)
    assert [(op.layer, op.direction) for op in ops] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert len({op.output_state for op in ops} | {op.cell_state for op in ops}) == 8
    read = weights_from_ops(ops)
    assert read.config == config
    for layer in range(2):
        for direction in range(2):
            for name in ("W", "R", "P", "proj"):
                original = getattr(weights.layers[layer][direction], name)
                np.testing.assert_array_equal(getattr(read.layers[layer][direction], name), original)


def test_time_is_resized_and_states_are_the_ops() -> None:
    """T is free (the file says -1): lengths 1, 4 and 11 run in one file; h_n, c_n are the ops' state tensors."""
    config = LSTMConfig(3, 4, num_layers=2, bidirectional=True)
    weights = _weights(config)
    data = tflite_bytes(weights, batch=2)
    for steps in (1, 4, 11):
        x = _x(config, steps=steps, batch=2)
        run = run_file(data, np.ascontiguousarray(x.swapaxes(0, 1), dtype=np.float32))
        expected = lstm_forward(weights, x)
        assert _relative(run.y.swapaxes(0, 1), expected.y) < TOLERANCE
        for layer in range(2):
            for direction in range(2):
                np.testing.assert_allclose(
                    run.final_h[(layer, direction)], expected.h_n[2 * layer + direction], atol=1e-6
                )
                np.testing.assert_allclose(
                    run.final_c[(layer, direction)], expected.c_n[2 * layer + direction], atol=1e-6
                )


def test_initial_states_through_the_state_tensors() -> None:
    """h0 and c0 are set on the ops' variable state tensors after allocate_tensors (not file inputs)."""
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=3, peepholes=True)
    weights, x = _weights(config, scale=1.0), _x(config)
    rng = np.random.default_rng(5)
    h0 = rng.standard_normal((4, 3, 3)).astype(np.float32).astype(np.float64)
    c0 = rng.standard_normal((4, 3, 5)).astype(np.float32).astype(np.float64)
    result = LiteRTLSTM().run(weights, RunInputs(x, h0=h0, c0=c0), FLOAT32)
    expected = lstm_forward(weights, x, h0, c0)
    assert _relative(result.y, lstm_forward(weights, x).y) > 1e-3  # the states changed the outputs
    for key in ("y", "h_n", "c_n"):
        assert _relative(getattr(result, key), getattr(expected, key)) < TOLERANCE, key


def test_merged_bidirectional_output_is_wrong_for_batch_major_batches() -> None:
    """Why the writer joins the bidirectional op's two outputs with a CONCATENATION instead of its own
    merge_outputs: LiteRT 2.3.0 computes merged, batch-major outputs wrongly for batch > 1 (lstm_eval.cc's
    batch-major loop offsets the h state of sample b by b times the merged output's width, 2 Hout, instead of
    Hout). Batch 1 is right. Run in a subprocess: the kernel writes past the state tensor. When LiteRT fixes
    it, this test fails: then the writer can use merge_outputs."""
    config = LSTMConfig(3, 5, bidirectional=True)
    weights = _weights(config, scale=1.0)
    x = _x(config, batch=3)
    expected = lstm_forward(weights, x).y.swapaxes(0, 1)
    got = []
    for batch in (1, 3):
        data = fused_ops_bytes(weights, batch=batch, merge_outputs=True)
        assert _op_names(data) == ["BIDIRECTIONAL_SEQUENCE_LSTM"]
        sample = np.ascontiguousarray(x.swapaxes(0, 1)[:batch], dtype=np.float32)
        got.append(_litert_in_subprocess(data, sample))
    assert _relative(got[0], expected[:1]) < TOLERANCE  # batch 1: right
    error = _relative(got[1], expected)
    assert error > 1e-2, f"LiteRT's merged batch-major bidirectional op is right now ({error:.1e}): use it"


def test_the_file_itself_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A .tflite read is run as it stands (``run_source``): converting it is "verified", and a file LiteRT
    computes wrongly (the merged bidirectional output at batch 3) differs from its own weights run right, while
    the same file at batch 1 agrees. The wrong file runs in a subprocess (the kernel writes past a tensor)."""
    config = LSTMConfig(3, 5, bidirectional=True)
    weights = _weights(config, scale=1.0).astype(np.float32)
    written = tmp_path / "m.tflite"
    get_format("tflite").write(written, weights, {})
    (found,) = get_format("tflite").read(written, {}).lstms
    assert found.run_source is not None
    capsys.readouterr()
    assert main(["convert", str(written), str(tmp_path / "m.npz")]) == 0
    assert "verified: tflite (float32, the file itself)" in capsys.readouterr().out
    for batch, status in ((1, 0), (3, 1)):
        merged = tmp_path / f"merged{batch}.tflite"
        merged.write_bytes(fused_ops_bytes(weights, batch=batch, merge_outputs=True))
        command = [sys.executable, "-m", "lstm_conformance.cli", "compare", str(merged), str(tmp_path / "m.npz")]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == status, (batch, done.stdout[-2000:], done.stderr[-2000:])


def test_compare_an_onnx_file_with_a_tflite_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``compare m.onnx m.tflite``: both files run themselves (ONNX Runtime and LiteRT) and agree; a .tflite of
    other weights differs, exit 1."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the .onnx side (pip install onnxruntime)")
    config = LSTMConfig(4, 6, num_layers=2, bidirectional=True)
    weights = _weights(config).astype(np.float32)
    get_format("onnx").write(tmp_path / "m.onnx", weights, {})
    get_format("tflite").write(tmp_path / "m.tflite", weights, {})
    get_format("tflite").write(tmp_path / "other.tflite", _weights(config, seed=9).astype(np.float32), {})
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "m.onnx"), str(tmp_path / "m.tflite")]) == 0
    out = capsys.readouterr().out
    assert "AGREE" in out
    assert "not both files ran themselves" not in out
    assert main(["compare", str(tmp_path / "m.onnx"), str(tmp_path / "other.tflite")]) == 1


def _litert_in_subprocess(data: bytes, x: np.ndarray) -> np.ndarray:
    """LiteRT's interpreter on ``x`` in a child process (nothing of this project imported there)."""
    script = (
        "import sys, numpy as np\n"
        "from ai_edge_litert.interpreter import Interpreter\n"
        "model, x, out = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]\n"
        "it = Interpreter(model_path=model); d = it.get_input_details()[0]\n"
        "it.resize_tensor_input(d['index'], list(x.shape)); it.allocate_tensors()\n"
        "it.set_tensor(d['index'], x); it.invoke()\n"
        "np.save(out, it.get_tensor(it.get_output_details()[0]['index']))\n"
    )
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        model, inputs, output = Path(folder, "m.tflite"), Path(folder, "x.npy"), Path(folder, "y.npy")
        model.write_bytes(data)
        np.save(inputs, x)
        subprocess.run([sys.executable, "-c", script, str(model), str(inputs), str(output)], check=True, timeout=120)
        return np.load(output)


# ----------------------------------------------------------------------------------------------------------
# Refusals and malformed files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "words"),
    [
        (LSTMConfig(3, 5, input_forget=True), "input_forget"),
        (LSTMConfig(3, 5, gate_clip=1.0), "gate_clip"),
        (LSTMConfig(3, 5, gate_activation=Activation("hard_sigmoid_keras2")), "gate_activation"),
        (LSTMConfig(3, 5, cell_input_activation=RELU), "cell activations"),
        (
            LSTMConfig(
                3, 5, cell_input_activation=Activation("softsign"), cell_output_activation=Activation("softsign")
            ),
            "cell activations",
        ),
    ],
    ids=["input_forget", "gate_clip", "hard_sigmoid_gate", "mixed_cell_activations", "softsign_cells"],
)
def test_refuses_what_the_op_cannot_hold(config: LSTMConfig, words: str, tmp_path: Path) -> None:
    weights = _weights(config)
    with pytest.raises(UnsupportedFeatureError, match=words):
        LiteRTLSTM().run(weights, RunInputs(_x(config)), FLOAT32)
    with pytest.raises(UnsupportedFeatureError, match="LiteRT"):
        get_format("tflite").write(tmp_path / "m.tflite", weights, {})
    assert not (tmp_path / "m.tflite").exists()


def test_refusals(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(InputFileError, match="TFL3"):
        get_format("tflite").read(bad, {})
    config = LSTMConfig(3, 5)
    with pytest.raises(UnsupportedFeatureError, match="lengths"):
        LiteRTLSTM().run(_weights(config), RunInputs(_x(config), seq_lens=np.array([7, 3, 5])), FLOAT32)
    with pytest.raises(UnsupportedFeatureError, match="peepholes with quantize"):
        tflite_bytes(_weights(LSTMConfig(3, 5, peepholes=True)), "dynamic-int8")
    with pytest.raises(UnsupportedFeatureError, match="quantize 'int4'"):
        tflite_bytes(_weights(config), "int4")


def _rewritten(data: bytes, change: Any) -> bytes:
    """``data`` with ``change(model)`` applied through the schema's object API, packed again."""
    import flatbuffers

    model = litert_schema.ModelT.InitFromObj(litert_schema.Model.GetRootAs(data, 0))
    change(model)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _set_input(position: int, value: int) -> Any:
    def change(model: Any) -> None:
        operator = model.subgraphs[0].operators[0]
        operator.inputs = [value if index == position else int(i) for index, i in enumerate(operator.inputs)]

    return change


def _set_tensor(position: int, **fields: Any) -> Any:
    def change(model: Any) -> None:
        tensor = model.subgraphs[0].tensors[model.subgraphs[0].operators[0].inputs[position]]
        for name, value in fields.items():
            setattr(tensor, name, value)

    return change


def _set_option(**fields: Any) -> Any:
    def change(model: Any) -> None:
        for name, value in fields.items():
            setattr(model.subgraphs[0].operators[0].builtinOptions, name, value)

    return change


def _drop_options(model: Any) -> None:
    model.subgraphs[0].operators[0].builtinOptions = None
    model.subgraphs[0].operators[0].builtinOptionsType = 0


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (_set_input(3, 999), "outside the file's"),
        (_set_input(3, -1), "input 3 is absent"),
        (_set_input(1, -1), "CIFG"),
        (_set_input(5, -1), "input gate weights without"),
        (_set_input(40, 2), "aux input"),
        (_set_tensor(2, shape=[5, 2]), "holds 60 bytes"),
        (_set_tensor(2, shape=[3, 5]), "input weights of shapes"),
        (_set_tensor(2, buffer=9999), "not in the file"),
        (_set_tensor(2, type=litert_schema.TensorType.INT64), "INT64"),
        (_set_option(timeMajor=True), "time-major"),
        (_set_option(cellClip=-1.0), "not a finite number"),
        (_set_option(fusedActivationFunction=3), "fused activation 3"),
        (_set_option(fusedActivationFunction=0), "NONE"),
        (_drop_options, "no LSTM options"),
    ],
    ids=[
        "index_out_of_range",
        "required_input_absent",
        "cifg",
        "half_input_gate",
        "aux_input",
        "data_size",
        "block_shape",
        "buffer_out_of_range",
        "tensor_type",
        "time_major",
        "negative_clip",
        "relu6",
        "activation_none",
        "no_options",
    ],
)
def test_malformed_ops_are_told_in_one_line(change: Any, words: str, tmp_path: Path) -> None:
    data = _rewritten(tflite_bytes(_weights(LSTMConfig(3, 5, bidirectional=True))), change)
    path = tmp_path / "m.tflite"
    path.write_bytes(data)
    with pytest.raises((InputFileError, UnsupportedFeatureError), match=words) as raised:
        get_format("tflite").read(path, {})
    assert "\n" not in str(raised.value)


def test_damaged_files_never_raise_anything_else(tmp_path: Path) -> None:
    """Truncations and byte flips all over a written file: each read succeeds or raises the project's errors."""
    data = tflite_bytes(_weights(LSTMConfig(3, 4, num_layers=2, bidirectional=True, peepholes=True)))
    rng = np.random.default_rng(0)
    path = tmp_path / "m.tflite"
    outcomes: dict[str, int] = {"read": 0, "refused": 0}
    messages = []
    damaged = [data[:cut] for cut in range(8, len(data), max(1, len(data) // 40))]
    for _ in range(300):
        flipped = bytearray(data)
        for position in rng.integers(8, len(data), size=int(rng.integers(1, 4))):
            flipped[position] = int(rng.integers(0, 256))
        damaged.append(bytes(flipped))
    for sample in damaged:
        path.write_bytes(sample)
        try:
            get_format("tflite").read(path, {})
            outcomes["read"] += 1
        except LSTMConformanceError as error:
            messages.append(str(error))
            outcomes["refused"] += 1
    assert outcomes["refused"] > 0
    assert not [message for message in messages if "\n" in message]


# ----------------------------------------------------------------------------------------------------------
# TF's converter route: quantized writing, and the converter's own files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dynamic_int8_moves_the_model_within_its_tolerance() -> None:
    """One quantized file: LiteRT runs it within the int8 tolerance, and its int8 weights read back dequantized.
    The converter quantizes weight tensors of 1024 elements or more only: H=48, I=32 gives [48, 32] blocks."""
    require_tensorflow()
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


@pytest.mark.slow
def test_convert_quantize_proves_within_the_written_files_measured_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``convert model.pt model.tflite --quantize dynamic-int8``: the written file holds int8 weights, the reader
    measures its quantization error against a float32 file of its dequantized weights, and the proof allows 3x
    that, saying so; the file, run by a plain LiteRT interpreter, is that close to torch. A writer without the
    option refuses it in one line."""
    require_tensorflow()
    torch = pytest.importorskip("torch", reason="torch writes the source (pip install torch)")
    torch.manual_seed(4)
    module = torch.nn.LSTM(32, 32, num_layers=2)
    torch.save(module.state_dict(), tmp_path / "model.pt")
    status = main(["convert", str(tmp_path / "model.pt"), str(tmp_path / "m.tflite"), "--quantize", "dynamic-int8"])
    out = capsys.readouterr().out
    assert status == 0, out
    assert "3x its measured error" in out
    (found,) = get_format("tflite").read(tmp_path / "m.tflite", {}).lstms
    measured = found.run_source.quantization_error  # type: ignore[union-attr]
    assert measured is not None
    assert 1e-5 < measured < 0.05
    x = np.random.default_rng(5).standard_normal((1, 6, 32)).astype(np.float32)
    with torch.no_grad():
        expected = module(torch.from_numpy(x.swapaxes(0, 1).copy()))[0].numpy().swapaxes(0, 1)
    assert _relative(_plain_litert(tmp_path / "m.tflite", x), expected) < 3 * measured
    assert main(["convert", str(tmp_path / "model.pt"), str(tmp_path / "m.onnx"), "--quantize", "dynamic-int8"]) == 2
    assert "takes no option quantize" in capsys.readouterr().err


@pytest.mark.slow
def test_converter_files_read_back() -> None:
    """TF's converter writes a Keras Bidirectional as two UNIDIRECTIONAL_SEQUENCE_LSTM ops around REVERSE_V2:
    the reader still reads it (the backward op through its REVERSE_V2), and the file runs right."""
    require_tensorflow()
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, cell_clip=0.5)
    weights = _weights(config)
    data = converter_bytes(weights, batch=3)
    assert "REVERSE_V2" in _op_names(data)
    assert "BIDIRECTIONAL_SEQUENCE_LSTM" not in _op_names(data)
    ops = parse_lstm_ops(data)
    read = weights_from_ops(ops)
    assert read.config == config
    assert source_runner_problem(data, ops, config) is None  # the converter's graph runs as it stands
    for key, value in weights.named_arrays().items():
        if not key.endswith(("b",)):
            np.testing.assert_allclose(read.named_arrays()[key], value, rtol=1e-7, atol=1e-7)
    x = _x(config)
    y = _plain_litert(data, x.swapaxes(0, 1)).swapaxes(0, 1)
    assert _relative(y, lstm_forward(weights, x).y) < TOLERANCE


def test_write_read_round_trip(tmp_path: Path) -> None:
    config = LSTMConfig(3, 5, num_layers=2, bidirectional=True, cell_clip=0.5)
    weights = _weights(config)
    path = tmp_path / "m.tflite"
    assert infer_format(path) == "tflite"
    notes = get_format("tflite").write(path, weights, {})
    assert any("BIDIRECTIONAL_SEQUENCE_LSTM" in note for note in notes)
    (found,) = get_format("tflite").read(path, {}).lstms
    assert found.weights.config == config
    for key, value in weights.named_arrays().items():
        if key.endswith(".Rb"):
            continue  # one bias per gate in the file: Wb + Rb is read back into Wb
        expected = value + weights.named_arrays()[key[:-2] + "Rb"] if key.endswith(".Wb") else value
        np.testing.assert_allclose(found.weights.named_arrays()[key], expected, rtol=1e-7, atol=1e-7)


def test_convert_torch_bidirectional_runs_in_plain_litert(tmp_path: Path) -> None:
    """The done-when: convert model.pt model.tflite; LiteRT's interpreter alone runs it; torch agrees to 1e-5."""
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lstm-conformance[torch]')")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    torch.save(lstm.state_dict(), tmp_path / "model.pt")
    status = main(["convert", str(tmp_path / "model.pt"), str(tmp_path / "model.tflite")])
    assert status == 0
    assert _op_names((tmp_path / "model.tflite").read_bytes()) == ["BIDIRECTIONAL_SEQUENCE_LSTM", "CONCATENATION"] * 2

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
