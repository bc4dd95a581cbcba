"""ONNX files as users have them, each checked against its source framework's own output.

Every file here is written by a real exporter or ONNX's own helpers in the test: ``torch.onnx.export``
(TorchScript, and ``dynamo=True`` where onnxscript is installed), ``onnx.helper`` for graphs users have
(LSTMs in If branches and Loop bodies, weights computed from constants, tf2onnx's unrolled loops), and
``onnxruntime.quantization.quantize_dynamic`` for ``DynamicQuantizeLSTM``. "The source's own output" is ONNX
Runtime running the original file (and torch running the original module); never this project's reading.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install 'lstm-conformance[onnx]')")
onnxruntime = pytest.importorskip(
    "onnxruntime", reason="onnxruntime is not installed (pip install 'lstm-conformance[onnx]')"
)

from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult  # noqa: E402
from lstm_conformance.adapters.formats import FoundLSTM  # noqa: E402
from lstm_conformance.adapters.formats.onnx_file import OnnxFormat  # noqa: E402
from lstm_conformance.adapters.onnx_runtime import layer_to_onnx  # noqa: E402
from lstm_conformance.reference.errors import InputFileError, NotImplementedOptionError  # noqa: E402
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, random_weights  # noqa: E402
from lstm_conformance.reference.lstm import LSTMOutputs, lstm_forward  # noqa: E402

FLOAT32_TOLERANCE = 1e-5
FLOAT32 = RunOptions(dtype="float32")


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)) / np.linalg.norm(b))


def run_original(path: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    """ONNX Runtime running the user's file itself: the source's own output."""
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [np.asarray(out, dtype=np.float64) for out in session.run(None, feeds)]


def torch_layout(y: np.ndarray) -> np.ndarray:
    """An LSTM node's Y [T, D, B, H] as PyTorch's [T, B, D*H]."""
    steps, dirs, batch, hidden = y.shape
    return y.transpose(0, 2, 1, 3).reshape(steps, batch, dirs * hidden)


def source_run(found: FoundLSTM, inputs: RunInputs) -> RunResult:
    assert found.run_source is not None
    return found.run_source(inputs, FLOAT32)


def assert_reading_computes(found: FoundLSTM, result: RunResult, inputs: RunInputs) -> float:
    """The weights read from the file, run by the reference, against the file's own run."""
    expected: LSTMOutputs = lstm_forward(
        found.weights, inputs.x, inputs.h0, inputs.c0, inputs.seq_lens, batch_first=inputs.batch_first
    )
    errors = [relative(expected.y, result.y), relative(expected.h_n, result.h_n), relative(expected.c_n, result.c_n)]
    assert max(errors) < FLOAT32_TOLERANCE, errors
    return max(errors)


def float32(weights: LSTMWeights) -> LSTMWeights:
    return weights.map(lambda a: np.asarray(a, dtype=np.float32).astype(np.float64))


def weight_initializers(weights: LSTMWeights, layer: int, prefix: str) -> tuple[list[Any], list[str]]:
    arrays = layer_to_onnx(weights.layers[layer], weights.config.bias)
    tensors, names = [], []
    for role, array in (("W", arrays.W), ("R", arrays.R), ("B", arrays.B)):
        if array is None:
            names.append("")
            continue
        tensors.append(numpy_helper.from_array(array.astype(np.float32), f"{prefix}{role}"))
        names.append(f"{prefix}{role}")
    return tensors, names


def save(model: Any, path: Path) -> Path:
    onnx.save(model, str(path))  # ONNX Runtime loading it is the check
    return path


def torch_module() -> Any:
    return pytest.importorskip("torch", reason="torch is not installed (pip install 'lstm-conformance[torch]')")


# ----------------------------------------------------------------------------------------------------------
# 1. run_source: the node as it stands in the file, its attributes untouched
# ----------------------------------------------------------------------------------------------------------


def node_with_every_input(tmp_path: Path, attributes: dict[str, Any], config: LSTMConfig) -> tuple[Path, LSTMWeights]:
    """One LSTM node whose X, sequence_lens, initial_h and initial_c are graph inputs, with ``attributes``."""
    weights = float32(random_weights(config, np.random.default_rng(11), scale=0.7))
    arrays = layer_to_onnx(weights.layers[0], True)
    assert arrays.B is not None
    initializers = [
        numpy_helper.from_array(array.astype(np.float32), role)
        for role, array in (("W", arrays.W), ("R", arrays.R), ("B", arrays.B), ("P", arrays.P))
        if array is not None
    ]
    dirs, hidden = config.num_directions, config.hidden_size
    node = helper.make_node(
        "LSTM",
        ["X", "W", "R", "B", "lens", "h0", "c0", "P" if arrays.P is not None else ""],
        ["Y", "Y_h", "Y_c"],
        name="user_lstm",
        hidden_size=hidden,
        **attributes,
    )
    graph = helper.make_graph(
        [node],
        "g",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", config.input_size]),
            helper.make_tensor_value_info("lens", TensorProto.INT32, ["B"]),
            helper.make_tensor_value_info("h0", TensorProto.FLOAT, [dirs, "B", hidden]),
            helper.make_tensor_value_info("c0", TensorProto.FLOAT, [dirs, "B", hidden]),
        ],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("Y", "Y_h", "Y_c")],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)
    return save(model, tmp_path / "user.onnx"), weights


def test_run_source_is_the_node_as_the_file_has_it(tmp_path: Path) -> None:
    """clip, activations with alphas, input_forget, peepholes, both directions; states and lengths fed into the
    node's own inputs: run_source gives exactly what ONNX Runtime gives on the original file."""
    config = LSTMConfig(3, 4, bidirectional=True, peepholes=True, gate_clip=0.6, input_forget=True)
    attributes = {
        "direction": "bidirectional",
        "clip": 0.6,
        "input_forget": 1,
        "activations": ["Sigmoid", "Tanh", "Tanh"] * 2,
    }
    path, _ = node_with_every_input(tmp_path, attributes, config)
    found = OnnxFormat().read(path, {}).lstms[0]
    assert found.weights.config == config
    rng = np.random.default_rng(1)
    x = rng.standard_normal((6, 3, 3)).astype(np.float32)
    h0 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    c0 = rng.standard_normal((2, 3, 4)).astype(np.float32)
    lens = np.array([6, 2, 4], dtype=np.int32)
    y, y_h, y_c = run_original(path, {"X": x, "lens": lens, "h0": h0, "c0": c0})
    inputs = RunInputs(
        x=x.astype(np.float64), h0=h0.astype(np.float64), c0=c0.astype(np.float64), seq_lens=lens.astype(np.int64)
    )
    result = source_run(found, inputs)
    np.testing.assert_array_equal(result.y, torch_layout(y))
    np.testing.assert_array_equal(result.h_n, y_h)
    np.testing.assert_array_equal(result.c_n, y_c)
    assert result.gradients is None
    assert result.math_mode == "float32"
    assert_reading_computes(found, result, inputs)

    # No states, no lengths: zeros and full lengths fed into the same slots; batch-first input.
    full = np.full(3, 6, dtype=np.int32)
    zeros = np.zeros((2, 3, 4), dtype=np.float32)
    y, y_h, _ = run_original(path, {"X": x, "lens": full, "h0": zeros, "c0": zeros})
    result = source_run(found, RunInputs(x=x.astype(np.float64).swapaxes(0, 1), batch_first=True))
    np.testing.assert_array_equal(result.y, torch_layout(y).swapaxes(0, 1))
    np.testing.assert_array_equal(result.h_n, y_h)


def test_activations_the_reading_does_not_assume(tmp_path: Path) -> None:
    """A node with HardSigmoid/Softsign/Elu: the reading computes what the file computes in ONNX Runtime."""
    config = LSTMConfig(3, 4)
    attributes = {
        "activations": ["HardSigmoid", "Softsign", "Elu"],
        "activation_alpha": [0.3, 0.8],
        "activation_beta": [0.4],
    }
    path, _ = node_with_every_input(tmp_path, attributes, config)
    found = OnnxFormat().read(path, {}).lstms[0]
    assert found.weights.config.gate_activation.name == "hard_sigmoid"
    assert found.weights.config.cell_output_activation.alpha == 0.8
    x = np.random.default_rng(2).standard_normal((5, 2, 3))
    assert_reading_computes(found, source_run(found, RunInputs(x=x)), RunInputs(x=x))


def test_a_node_onnxruntime_cannot_run_is_refused_with_its_message(tmp_path: Path) -> None:
    """layout=1: ONNX Runtime's CPU LSTM refuses it, so the file's own framework cannot run it and nothing
    made from it can be verified: run_source raises ONNX Runtime's own words."""
    config = LSTMConfig(3, 4)
    path, _ = node_with_every_input(tmp_path, {"layout": 1}, config)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 5, 3)).astype(np.float32)
    with pytest.raises(Exception, match="layout") as original:
        run_original(path, {"X": x, "lens": np.array([5, 5], np.int32), "h0": np.zeros((2, 1, 4), np.float32)})
    found = OnnxFormat().read(path, {}).lstms[0]
    assert found.batch_first is True
    with pytest.raises(InputFileError, match="ONNX Runtime cannot run LSTM node 'user_lstm'") as refused:
        source_run(found, RunInputs(x=x.astype(np.float64), batch_first=True))
    assert "Batchwise recurrent operations (layout == 1) are not supported" in str(refused.value)
    assert "Batchwise" in str(original.value)
    assert "\n" not in str(refused.value)


def test_run_source_refuses_what_the_file_cannot_compute(tmp_path: Path) -> None:
    path, _ = node_with_every_input(tmp_path, {}, LSTMConfig(3, 4))
    found = OnnxFormat().read(path, {}).lstms[0]
    assert found.run_source is not None
    x = np.zeros((2, 1, 3))
    with pytest.raises(Exception, match="dtype float64"):
        found.run_source(RunInputs(x=x), RunOptions(dtype="float64"))


# ----------------------------------------------------------------------------------------------------------
# PyTorch's exporters: TorchScript, and dynamo=True (Dropout between the layers)
# ----------------------------------------------------------------------------------------------------------


def export_torch(tmp_path: Path, module: Any, x: Any, dynamo: bool) -> Path:
    path = tmp_path / f"torch_{'dynamo' if dynamo else 'script'}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if dynamo:
            torch_module().onnx.export(module, (x,), str(path), dynamo=True, verbose=False)
        else:
            torch_module().onnx.export(module, (x,), str(path), dynamo=False, opset_version=14)
    return path


DYNAMO = pytest.mark.skipif(
    importlib.util.find_spec("onnxscript") is None,
    reason="onnxscript is not installed (torch.onnx.export(dynamo=True) needs it: pip install onnxscript)",
)


@pytest.mark.parametrize(
    ("dynamo", "bidirectional", "training"),
    [
        pytest.param(False, True, False, id="torchscript-bidirectional"),
        pytest.param(True, False, True, id="dynamo-train-mode-dropout", marks=DYNAMO),
        pytest.param(True, True, False, id="dynamo-bidirectional-eval", marks=DYNAMO),
    ],
)
def test_torch_export_of_a_two_layer_lstm(tmp_path: Path, dynamo: bool, bidirectional: bool, training: bool) -> None:
    """Read as one 2-layer LSTM (the dynamo exporter puts a Dropout between the layers when the module is in
    training mode); the file's own run equals ONNX Runtime on the file and torch's module in eval mode."""
    torch = torch_module()
    torch.manual_seed(0)
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=bidirectional, dropout=0.25)
    module.train(training)
    x = torch.randn(5, 2, 3)
    path = export_torch(tmp_path, module, x, dynamo)
    if training:
        assert "Dropout" in {node.op_type for node in onnx.load(str(path)).graph.node}
    contents = OnnxFormat().read(path, {})
    assert len(contents.lstms) == 1, [found.name for found in contents.lstms]
    found = contents.lstms[0]
    assert found.weights.config == LSTMConfig(3, 4, num_layers=2, bidirectional=bidirectional)
    if training:
        assert any("training_mode=True" in said for said in found.assumptions)
    inputs = RunInputs(x=x.numpy().astype(np.float64))
    result = source_run(found, inputs)
    y, y_h, y_c = run_original(path, {"input": x.numpy()})
    np.testing.assert_allclose(result.y, y, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.h_n, y_h, rtol=0, atol=1e-6)
    np.testing.assert_allclose(result.c_n, y_c, rtol=0, atol=1e-6)
    module.eval()
    with torch.no_grad():
        torch_y, (_, torch_c) = module(x)
    assert relative(result.y, torch_y.numpy()) < FLOAT32_TOLERANCE
    assert relative(result.c_n, torch_c.numpy()) < FLOAT32_TOLERANCE
    assert_reading_computes(found, result, inputs)
    with torch.no_grad():  # with initial states fed into the nodes' own slots
        h0, c0 = torch.randn(4 if bidirectional else 2, 2, 4), torch.randn(4 if bidirectional else 2, 2, 4)
        torch_y, _ = module(x, (h0, c0))
    with_states = RunInputs(x=inputs.x, h0=h0.numpy().astype(np.float64), c0=c0.numpy().astype(np.float64))
    assert relative(source_run(found, with_states).y, torch_y.numpy()) < FLOAT32_TOLERANCE
    # The exporters fix the input shape (no dynamic axes, 5 steps, batch 2): other batches run in slices of
    # 2, fewer steps padded with sequence_lens, more steps in pieces (forward only); torch is the judge.
    assert found.run_source is not None
    assert getattr(found.run_source, "fixed_input_shape", None) == (5, 2, 3)
    shapes = [(3, 5), (8, 3)] if not bidirectional else [(3, 5)]
    for steps, batch in shapes:
        other = torch.randn(steps, batch, 3)
        with torch.no_grad():
            torch_y, (_, torch_c) = module(other)
        result = source_run(found, RunInputs(x=other.numpy().astype(np.float64)))
        assert relative(result.y, torch_y.numpy()) < FLOAT32_TOLERANCE, (steps, batch)
        assert relative(result.c_n, torch_c.numpy()) < FLOAT32_TOLERANCE, (steps, batch)
    lengths = np.array([2, 3, 1])
    packed = RunInputs(x=np.random.default_rng(0).standard_normal((3, 3, 3)), seq_lens=lengths)
    assert_reading_computes(found, source_run(found, packed), packed)
    if bidirectional:
        with pytest.raises(InputFileError, match="cannot run in pieces of time"):
            source_run(found, RunInputs(x=np.zeros((7, 2, 3))))


@pytest.mark.parametrize(
    "dynamo", [pytest.param(False, id="torchscript"), pytest.param(True, id="dynamo", marks=DYNAMO)]
)
def test_torch_export_of_a_batch_first_lstm_says_so(tmp_path: Path, dynamo: bool) -> None:
    """The exporters write batch_first=True as a Transpose before a time-major node: read as batch-first."""
    torch = torch_module()
    torch.manual_seed(2)
    module = torch.nn.LSTM(3, 4, batch_first=True).eval()
    x = torch.randn(2, 5, 3)
    path = export_torch(tmp_path, module, x, dynamo)
    (found,) = OnnxFormat().read(path, {}).lstms
    assert found.batch_first is True
    assert any("batch-first input" in note for note in found.notes)
    with torch.no_grad():
        torch_y, _ = module(x)
    inputs = RunInputs(x=x.numpy().astype(np.float64), batch_first=True)
    result = source_run(found, inputs)
    assert relative(result.y, torch_y.numpy()) < FLOAT32_TOLERANCE
    assert_reading_computes(found, result, inputs)


def test_layers_joined_across_identity_and_inference_dropout(tmp_path: Path) -> None:
    """Squeeze -> Identity -> Dropout (no training_mode) between two LSTM nodes, written with onnx.helper:
    one 2-layer LSTM, no assumption said, and the chain as the file has it runs as the file does."""
    config = LSTMConfig(3, 4, num_layers=2)
    weights = float32(random_weights(config, np.random.default_rng(16)))
    lower, (w0, r0, b0) = weight_initializers(weights, 0, "l0_")
    upper, (w1, r1, b1) = weight_initializers(weights, 1, "l1_")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    ratio = numpy_helper.from_array(np.array(0.4, np.float32), "ratio")
    nodes = [
        helper.make_node("LSTM", ["X", w0, r0, b0], ["Y0", "H0", "C0"], name="first", hidden_size=4),
        helper.make_node("Squeeze", ["Y0", "axes"], ["squeezed"]),
        helper.make_node("Identity", ["squeezed"], ["same"]),
        helper.make_node("Dropout", ["same", "ratio"], ["dropped"]),
        helper.make_node("LSTM", ["dropped", w1, r1, b1], ["Y1", "H1", "C1"], name="second", hidden_size=4),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("Y1", "H0", "H1", "C0", "C1")],
        [*lower, *upper, axes, ratio],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = save(model, tmp_path / "joined.onnx")
    (found,) = OnnxFormat().read(path, {}).lstms
    assert found.weights.config == config
    assert found.assumptions == []
    x = np.random.default_rng(17).standard_normal((6, 2, 3)).astype(np.float32)
    y, h0, h1, c0, c1 = run_original(path, {"X": x})
    inputs = RunInputs(x=x.astype(np.float64))
    result = source_run(found, inputs)
    np.testing.assert_array_equal(result.y, torch_layout(y))
    np.testing.assert_array_equal(result.h_n, np.concatenate([h0, h1]))
    np.testing.assert_array_equal(result.c_n, np.concatenate([c0, c1]))
    assert_reading_computes(found, result, inputs)


# ----------------------------------------------------------------------------------------------------------
# 3. LSTMs inside If branches and Loop bodies; 4. weights folded from constants
# ----------------------------------------------------------------------------------------------------------


def lstm_in_branches_model(first: LSTMWeights, second: LSTMWeights) -> Any:
    """``If(cond)``: then-branch an LSTM on outer-scope initializers; else-branch an LSTM whose W is built from
    constants (Constant + Unsqueeze + Concat + Transpose, as exporters write) and whose R is Slice of a bigger
    initializer."""
    outer, (w1, r1, b1) = weight_initializers(first, 0, "then_")
    then_branch = helper.make_graph(
        [helper.make_node("LSTM", ["X", w1, r1, b1], ["Y1", "Yh1"], name="lstm_then", hidden_size=4)],
        "then",
        [],
        [helper.make_tensor_value_info("Y1", TensorProto.FLOAT, None)],
    )
    arrays = layer_to_onnx(second.layers[0], True)
    assert arrays.B is not None
    W = arrays.W.astype(np.float32)[0]  # [4H, I] -> stored transposed, in two halves, rebuilt in the graph
    halves = np.split(W.T, 2, axis=1)
    R = arrays.R.astype(np.float32)
    padded_R = np.concatenate([R, np.ones((1, 16, 4), np.float32)], axis=0)  # Slice takes the first row
    int64 = np.int64
    nodes = [
        helper.make_node("Constant", [], ["w_left"], value=numpy_helper.from_array(halves[0], "w_left_value")),
        helper.make_node("Constant", [], ["w_right"], value=numpy_helper.from_array(halves[1], "w_right_value")),
        helper.make_node("Concat", ["w_left", "w_right"], ["w_t"], axis=1),
        helper.make_node("Transpose", ["w_t"], ["w_2d"], perm=[1, 0]),
        helper.make_node("Unsqueeze", ["w_2d", "axis0"], ["else_W"]),
        helper.make_node("Slice", ["padded_R", "start", "stop", "axis0"], ["else_R"]),
        helper.make_node("LSTM", ["X", "else_W", "else_R", "else_B"], ["Y2"], name="lstm_else", hidden_size=4),
    ]
    else_branch = helper.make_graph(
        nodes,
        "else",
        [],
        [helper.make_tensor_value_info("Y2", TensorProto.FLOAT, None)],
        [
            numpy_helper.from_array(np.array([0], int64), "axis0"),
            numpy_helper.from_array(np.array([0], int64), "start"),
            numpy_helper.from_array(np.array([1], int64), "stop"),
            numpy_helper.from_array(padded_R, "padded_R"),
            numpy_helper.from_array(arrays.B.astype(np.float32), "else_B"),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["cond"], ["Y"], name="by_rate", then_branch=then_branch, else_branch=else_branch)],
        "g",
        [
            helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3]),
            helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        outer,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_lstms_inside_if_branches_with_folded_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    first = float32(random_weights(LSTMConfig(3, 4), rng))
    second = float32(random_weights(LSTMConfig(3, 4), rng))
    path = save(lstm_in_branches_model(first, second), tmp_path / "branches.onnx")
    contents = OnnxFormat().read(path, {})
    by_name = {found.name: found for found in contents.lstms}
    assert set(by_name) == {"by_rate/then_branch/lstm_then", "by_rate/else_branch/lstm_else"}
    x = rng.standard_normal((5, 2, 3)).astype(np.float32)
    inputs = RunInputs(x=x.astype(np.float64))
    for branch, weights, cond in (("then", first, True), ("else", second, False)):
        found = by_name[f"by_rate/{branch}_branch/lstm_{branch}"]
        for key, array in found.weights.named_arrays().items():
            np.testing.assert_array_equal(array, weights.named_arrays()[key], err_msg=f"{found.name} {key}")
        (y,) = run_original(path, {"X": x, "cond": np.array(cond)})
        result = source_run(found, inputs)
        np.testing.assert_array_equal(result.y, torch_layout(y))
        assert_reading_computes(found, result, inputs)
    assert "padded_R" not in contents.other_tensors


def test_lstm_inside_a_loop_body(tmp_path: Path) -> None:
    """A Loop running an LSTM on each trip (its X is the loop-carried value): found by its path and run alone."""
    weights = float32(random_weights(LSTMConfig(4, 4), np.random.default_rng(8)))
    outer, (w, r, b) = weight_initializers(weights, 0, "")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("LSTM", ["state_in", w, r, b], ["y4"], name="step_lstm", hidden_size=4),
            helper.make_node("Squeeze", ["y4", "axis1"], ["state_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("trip", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("state_out", TensorProto.FLOAT, None),
        ],
    )
    outer.append(numpy_helper.from_array(np.array([1], np.int64), "axis1"))
    outer.append(numpy_helper.from_array(np.array(2, np.int64), "trips"))
    outer.append(numpy_helper.from_array(np.array(True), "go"))
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "go", "X"], ["Y"], name="repeat", body=body)],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        outer,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = save(model, tmp_path / "loop.onnx")
    (found,) = OnnxFormat().read(path, {}).lstms
    assert found.name == "repeat/body/step_lstm"
    x = np.random.default_rng(9).standard_normal((5, 2, 4))
    result = source_run(found, RunInputs(x=x))
    assert_reading_computes(found, result, RunInputs(x=x))
    # The file's own two trips: the LSTM applied twice, which the single run reproduces when chained.
    (y,) = run_original(path, {"X": x.astype(np.float32)})
    twice = source_run(found, RunInputs(x=result.y))
    assert relative(twice.y, y) < FLOAT32_TOLERANCE


def test_lstm_inside_a_scan_body(tmp_path: Path) -> None:
    """A Scan running an LSTM on each of N sequences (the body's own input is the LSTM's X)."""
    weights = float32(random_weights(LSTMConfig(3, 4, bidirectional=True), np.random.default_rng(14)))
    outer, (w, r, b) = weight_initializers(weights, 0, "")
    body = helper.make_graph(
        [
            helper.make_node(
                "LSTM", ["sequence", w, r, b], ["y"], name="per_item", hidden_size=4, direction="bidirectional"
            )
        ],
        "body",
        [helper.make_tensor_value_info("sequence", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    graph = helper.make_graph(
        [helper.make_node("Scan", ["X"], ["Y"], name="each", body=body, num_scan_inputs=1)],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", "T", "B", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        outer,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    path = save(model, tmp_path / "scan.onnx")
    (found,) = OnnxFormat().read(path, {}).lstms
    assert found.name == "each/body/per_item"
    x = np.random.default_rng(15).standard_normal((2, 5, 3, 3)).astype(np.float32)
    (y,) = run_original(path, {"X": x})
    for item in range(2):
        inputs = RunInputs(x=x[item].astype(np.float64))
        result = source_run(found, inputs)
        np.testing.assert_array_equal(result.y, torch_layout(y[item]))
        assert_reading_computes(found, result, inputs)


def test_folding_is_bounded(tmp_path: Path) -> None:
    """A weight computed from constants into far more than the file holds is refused, not materialized."""
    weights = float32(random_weights(LSTMConfig(3, 4), np.random.default_rng(10)))
    outer, (_, r, b) = weight_initializers(weights, 0, "")
    outer.append(numpy_helper.from_array(np.array([1, 16, 1 << 26], np.int64), "huge_shape"))
    outer.append(numpy_helper.from_array(np.ones(1, np.float32), "one"))
    graph = helper.make_graph(
        [
            helper.make_node("Expand", ["one", "huge_shape"], ["huge_W"]),
            helper.make_node("LSTM", ["X", "huge_W", r, b], ["Y"], name="huge", hidden_size=4),
        ],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        outer,
    )
    path = tmp_path / "huge.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(InputFileError, match="more than 4 times the file"):
        OnnxFormat().read(path, {})


# ----------------------------------------------------------------------------------------------------------
# 5. ONNX Runtime's DynamicQuantizeLSTM
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_channel", [False, True])
def test_dynamic_quantize_lstm(tmp_path: Path, per_channel: bool) -> None:
    """quantize_dynamic on an exported LSTM writes com.microsoft.DynamicQuantizeLSTM (int8 weights, whatever
    weight_type says: onnxruntime's LSTMQuant quantizes to INT8; one scale per direction or per channel): read
    dequantized, the quantization error measured and said; run_source runs the quantized node itself."""
    torch = torch_module()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(1)
    module = torch.nn.LSTM(6, 8, bidirectional=True).eval()
    x = torch.randn(5, 2, 6)
    float_path = export_torch(tmp_path, module, x, dynamo=False)
    quantized_path = tmp_path / "quantized.onnx"
    quantize_dynamic(str(float_path), str(quantized_path), weight_type=QuantType.QInt8, per_channel=per_channel)
    ops = {(node.domain, node.op_type) for node in onnx.load(str(quantized_path)).graph.node}
    assert ("com.microsoft", "DynamicQuantizeLSTM") in ops

    (found,) = OnnxFormat().read(quantized_path, {}).lstms
    assert found.weights.config == LSTMConfig(6, 8, bidirectional=True)
    assert any("DynamicQuantizeLSTM" in note for note in found.notes)
    runner: Any = found.run_source
    measured = runner.quantization_error
    assert measured is not None
    assert 0 < measured < 0.5
    assert any(f"{measured:.1e}" in note for note in found.notes)

    inputs = RunInputs(x=x.numpy().astype(np.float64))
    result = source_run(found, inputs)
    y, y_h, _ = run_original(quantized_path, {"input": x.numpy()})
    np.testing.assert_array_equal(result.y, y)
    np.testing.assert_array_equal(result.h_n, y_h)
    with pytest.raises(InputFileError, match="quantizes activations over the whole input"):
        source_run(found, RunInputs(x=np.zeros((5, 3, 6))))
    with torch.no_grad():
        torch_y, _ = module(x)
    dequantized = lstm_forward(found.weights, inputs.x)
    # The dequantized weights against the float model they came from: within the int8 weight rounding.
    weight_error = relative(dequantized.y, torch_y.numpy())
    file_error = relative(result.y, torch_y.numpy())
    assert weight_error < 0.05
    # The reading against the quantized file's own run: within the measured error, not float32 rounding.
    reading_error = relative(dequantized.y, result.y)
    assert reading_error < 3 * measured + 1e-6
    print(f"quantized: measured {measured:.2e}, reading vs file {reading_error:.2e}, ", end="")
    print(f"dequantized vs torch float {weight_error:.2e}, quantized file vs torch float {file_error:.2e}")


def test_run_names_an_onnx_files_gradients_by_its_lstm_inputs(tmp_path: Path, cli: Any) -> None:
    """``run --grad-output`` on an exported 2-layer bidirectional LSTM: grad/<name> for each LSTM node's W,
    R and B inputs, named and shaped as in the file."""
    torch = torch_module()
    module = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True).eval()
    x = torch.randn(5, 2, 3)
    path = export_torch(tmp_path, module, x, dynamo=False)
    np.save(tmp_path / "x.npy", x.numpy().astype(np.float64))
    np.save(tmp_path / "dy.npy", np.ones((5, 2, 8)))
    status, _, err = cli(
        "run", path, "--implementation", "reference", "--input", tmp_path / "x.npy",
        "--grad-output", tmp_path / "dy.npy", "--output", tmp_path / "out.npz",
    )  # fmt: skip
    assert status == 0, err
    model = onnx.load(str(path))
    shapes = {tensor.name: tuple(tensor.dims) for tensor in model.graph.initializer}
    expected = [n.input[i] for n in model.graph.node if n.op_type == "LSTM" for i in (1, 2, 3) if n.input[i]]
    with np.load(tmp_path / "out.npz") as result:
        got = {key.removeprefix("grad/"): result[key].shape for key in result.files if key.startswith("grad/")}
    assert list(got) == expected
    for name, shape in got.items():
        if name in shapes:
            assert shape == shapes[name], name


def test_a_dynamic_quantize_lstm_converts_to_torch_within_its_measured_error(tmp_path: Path) -> None:
    """convert proves a quantized source against the written float model within the source's own measured
    quantization error (said in the result), and the torch model it writes computes what the quantized file
    computes within that error, checked here with torch and ONNX Runtime alone."""
    torch = torch_module()
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from lstm_conformance import api

    torch.manual_seed(2)
    module = torch.nn.LSTM(6, 8, bidirectional=True).eval()
    x = torch.randn(5, 2, 6)
    quantized_path = tmp_path / "quantized.onnx"
    quantize_dynamic(
        str(export_torch(tmp_path, module, x, dynamo=False)), str(quantized_path), weight_type=QuantType.QInt8
    )
    result = api.convert(quantized_path, tmp_path / "lstm.pt")
    assert result.verified
    assert result.agreement is not None
    assert result.agreement.tolerance.rule.quantized
    assert "measured error" in result.agreement.describe()
    measured = result.source.found.run_source.quantization_error  # type: ignore[union-attr]

    written = torch.nn.LSTM(6, 8, bidirectional=True)
    written.load_state_dict(torch.load(tmp_path / "lstm.pt", weights_only=True))
    with torch.no_grad():
        written_y = written.float()(x)[0].numpy().astype(np.float64)
    file_y = run_original(quantized_path, {"input": x.numpy()})[0]
    assert relative(written_y, torch_layout(file_y) if file_y.ndim == 4 else file_y) < 3 * measured


# ----------------------------------------------------------------------------------------------------------
# 6. tf2onnx's unrolled LSTM; 7. writing sequence_lens
# ----------------------------------------------------------------------------------------------------------


def test_an_lstm_unrolled_into_a_loop_is_refused_by_name(tmp_path: Path) -> None:
    """tf2onnx's shape of an LSTM without the native op: a Loop whose body does MatMul, Sigmoid, Tanh."""
    kernel = numpy_helper.from_array(np.ones((4, 16), np.float32), "kernel")
    body = helper.make_graph(
        [
            helper.make_node("Identity", ["cond_in"], ["cond_out"]),
            helper.make_node("MatMul", ["h_in", "kernel"], ["gates"]),
            helper.make_node("Sigmoid", ["gates"], ["s"]),
            helper.make_node("Tanh", ["gates"], ["t"]),
            helper.make_node("Mul", ["s", "t"], ["h_out"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("trip", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None),
        ],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trips", "", "X"], ["Y"], name="while", body=body)],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [kernel, numpy_helper.from_array(np.array(3, np.int64), "trips")],
    )
    path = tmp_path / "unrolled.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    with pytest.raises(InputFileError, match=r"unrolled by tf2onnx into a Loop.*export with a native LSTM op") as error:
        OnnxFormat().read(path, {})
    assert "\n" not in str(error.value)


def test_write_with_sequence_lens(tmp_path: Path) -> None:
    """The option carries per-sample lengths into the file: ONNX Runtime runs it with lengths as the
    reference does, and the notes say so."""
    config = LSTMConfig(3, 4, num_layers=2, bidirectional=True)
    weights = float32(random_weights(config, np.random.default_rng(12)))
    path = tmp_path / "lens.onnx"
    notes = OnnxFormat().write(path, weights, {"sequence_lens": True})
    assert any("sequence_lens [B]" in note for note in notes)
    rng = np.random.default_rng(13)
    x = rng.standard_normal((6, 3, 3))
    lens = np.array([6, 1, 3])
    y, y_h, y_c = run_original(path, {"X": x.astype(np.float32), "sequence_lens": lens.astype(np.int32)})
    expected = lstm_forward(weights, x, seq_lens=lens)
    assert relative(y, expected.y) < FLOAT32_TOLERANCE
    assert relative(y_h, expected.h_n) < FLOAT32_TOLERANCE
    assert relative(y_c, expected.c_n) < FLOAT32_TOLERANCE
    found = OnnxFormat().read(path, {}).lstms[0]  # and the file's own run takes the lengths
    result = source_run(found, RunInputs(x=x, seq_lens=lens))
    assert relative(result.y, expected.y) < FLOAT32_TOLERANCE
    with pytest.raises(NotImplementedOptionError, match="masking"):
        OnnxFormat().write(path, weights, {"masking": True})


# ----------------------------------------------------------------------------------------------------------
# Files that ship in pip packages (held-out: the project did not write them)
# ----------------------------------------------------------------------------------------------------------


def silero_models() -> list[Path]:
    """silero-vad's ONNX models (LSTMs inside If branches, nested; fixed shapes), where the package is
    installed (found without importing it: it imports torch and torchaudio)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return []
    return sorted(Path(next(iter(spec.submodule_search_locations)), "data").glob("*.onnx"))


@pytest.mark.skipif(not silero_models(), reason="silero-vad is not installed (pip install --no-deps silero-vad)")
def test_silero_vad_models_from_their_pip_package() -> None:
    read = 0
    for path in silero_models():
        if "ifless" in path.name:  # its LSTM is unrolled into MatMul/Sigmoid/Tanh nodes: refused, by name
            with pytest.raises(InputFileError, match=r"no LSTM node.*an LSTM cell written out as separate nodes"):
                OnnxFormat().read(path, {})
            continue
        lstms = OnnxFormat().read(path, {}).lstms
        rng = np.random.default_rng(0)
        for found in lstms:
            assert "/" in found.name or "LSTM" in found.name, found.name
            inputs = RunInputs(
                x=rng.standard_normal((3, 2, 128)),
                h0=0.5 * rng.standard_normal((1, 2, 128)),
                c0=0.5 * rng.standard_normal((1, 2, 128)),
            )
            assert_reading_computes(found, source_run(found, inputs), inputs)
            read += 1
    assert read >= 8
