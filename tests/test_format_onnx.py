"""The ``onnx`` file format: files written by ``onnx.save`` (built with ``onnx.helper``) and by PyTorch's
exporter, read into the canonical layout; canonical LSTMs written, checked by ``onnx.checker`` and run by
ONNX Runtime straight from the file."""

from __future__ import annotations

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

from lstm_conformance.adapters.formats import get_format, infer_format  # noqa: E402
from lstm_conformance.adapters.formats.onnx_file import OnnxFormat  # noqa: E402
from lstm_conformance.adapters.layouts.onnx import ONNX_GATES, layer_to_onnx  # noqa: E402
from lstm_conformance.reference.errors import InputFileError, NotImplementedOptionError, UnsupportedFeatureError  # noqa: E402
from lstm_conformance.reference.layout import GATES, Activation, LSTMConfig, LSTMWeights, random_weights, reorder_gates  # noqa: E402
from lstm_conformance.reference.lstm import lstm_forward  # noqa: E402

FLOAT32_TOLERANCE = 1e-5


def float32_rounded(weights: LSTMWeights) -> LSTMWeights:
    return weights.map(lambda a: np.asarray(a, dtype=np.float32).astype(np.float64))


def run_file(path: Path, x: np.ndarray) -> list[np.ndarray]:
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [
        np.asarray(out, dtype=np.float64)
        for out in session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})
    ]


def relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ----------------------------------------------------------------------------------------------------------
# Writing, then reading back
# ----------------------------------------------------------------------------------------------------------

WRITE_CONFIGS = {
    "plain": LSTMConfig(3, 4),
    "two-layers-bidirectional-peepholes-clip": LSTMConfig(
        3, 4, num_layers=2, bidirectional=True, peepholes=True, gate_clip=0.7
    ),
    "input-forget-no-bias-activations": LSTMConfig(
        3,
        4,
        bias=False,
        input_forget=True,
        gate_activation=Activation("hard_sigmoid_keras3"),
        cell_input_activation=Activation("leaky_relu", 0.01),
        cell_output_activation=Activation("scaled_tanh", 1.5, 0.5),
    ),
    "keras2-affine-thresholded": LSTMConfig(
        2,
        3,
        num_layers=3,
        gate_activation=Activation("hard_sigmoid_keras2"),
        cell_input_activation=Activation("affine", 0.9, -0.1),
        cell_output_activation=Activation("thresholded_relu", 0.05),
    ),
}


@pytest.mark.parametrize("name", list(WRITE_CONFIGS))
def test_write_runs_in_onnxruntime_and_reads_back(tmp_path: Path, name: str) -> None:
    config = WRITE_CONFIGS[name]
    rng = np.random.default_rng(len(name))
    weights = random_weights(config, rng, scale=0.6)
    path = tmp_path / "model.onnx"
    notes = OnnxFormat().write(path, weights, {})
    assert any("float32" in note for note in notes)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)

    x = rng.standard_normal((6, 2, config.input_size))
    y, h_n, c_n = run_file(path, x)
    expected = lstm_forward(weights, x)
    for got, want in ((y, expected.y), (h_n, expected.h_n), (c_n, expected.c_n)):
        assert relative(got, want) < FLOAT32_TOLERANCE

    contents = OnnxFormat().read(path, {})
    assert len(contents.lstms) == 1
    found = contents.lstms[0]
    assert found.implementation == "onnxruntime"
    assert found.weights.config == config
    rounded = float32_rounded(weights).named_arrays()
    for key, array in found.weights.named_arrays().items():
        np.testing.assert_array_equal(array, rounded[key], err_msg=key)
    assert all(name.startswith("const_") for name in contents.other_tensors), contents.other_tensors  # shapes


def test_write_refuses_what_onnx_cannot_hold(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for config, feature in (
        (LSTMConfig(3, 4, proj_size=2), "proj_size"),
        (LSTMConfig(3, 4, cell_clip=1.0), "cell_clip"),
    ):
        with pytest.raises(UnsupportedFeatureError, match=feature):
            OnnxFormat().write(tmp_path / "m.onnx", random_weights(config, rng), {})


def test_format_registry_and_options(tmp_path: Path) -> None:
    assert isinstance(get_format("onnx"), OnnxFormat)
    assert infer_format(Path("model.onnx")) == "onnx"
    path = tmp_path / "m.onnx"
    OnnxFormat().write(path, random_weights(LSTMConfig(3, 4), np.random.default_rng(0)), {"forget_bias": None})
    with pytest.raises(NotImplementedOptionError, match="forget_bias"):
        OnnxFormat().read(path, {"forget_bias": 1.0})


# ----------------------------------------------------------------------------------------------------------
# Files from PyTorch's exporter
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("num_layers", "bidirectional"), [(2, False), (2, True)])
def test_read_torch_export(tmp_path: Path, num_layers: int, bidirectional: bool) -> None:
    """torch.onnx.export's TorchScript exporter (dynamo=False; the dynamo exporter needs onnxscript, which is
    not installed) writes a stack as LSTM nodes joined by Squeeze, or Transpose + Reshape."""
    torch = pytest.importorskip("torch", reason="torch is not installed (pip install 'lstm-conformance[torch]')")
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(3, 4, num_layers=num_layers, bidirectional=bidirectional)
    x = torch.randn(5, 2, 3)
    path = tmp_path / "torch.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(lstm, (x,), str(path), dynamo=False, opset_version=14)
    contents = OnnxFormat().read(path, {})
    assert len(contents.lstms) == 1
    found = contents.lstms[0]
    assert found.weights.config == LSTMConfig(3, 4, num_layers=num_layers, bidirectional=bidirectional)
    assert any("verified" in note for note in found.notes)
    # PyTorch's own layout is canonical: the weights must come back unchanged (they were float32 already).
    state = {key: value.detach().numpy().astype(np.float64) for key, value in lstm.state_dict().items()}
    for layer in range(num_layers):
        for direction, suffix in enumerate(["", "_reverse"][: 1 + bidirectional]):
            weights = found.weights.layers[layer][direction]
            np.testing.assert_array_equal(weights.W, state[f"weight_ih_l{layer}{suffix}"])
            np.testing.assert_array_equal(weights.R, state[f"weight_hh_l{layer}{suffix}"])
            np.testing.assert_array_equal(weights.Wb, state[f"bias_ih_l{layer}{suffix}"])
            np.testing.assert_array_equal(weights.Rb, state[f"bias_hh_l{layer}{suffix}"])
    with torch.no_grad():
        y, (_, c_n) = lstm(x)
    expected = lstm_forward(found.weights, x.numpy())
    assert relative(expected.y, y.numpy().astype(np.float64)) < FLOAT32_TOLERANCE
    assert relative(expected.c_n, c_n.numpy().astype(np.float64)) < FLOAT32_TOLERANCE


# ----------------------------------------------------------------------------------------------------------
# Hand-built models: Constant nodes, attributes, separate LSTMs, refusals
# ----------------------------------------------------------------------------------------------------------


def lstm_node_model(
    config: LSTMConfig,
    weights: LSTMWeights,
    *,
    weights_as_constants: bool = False,
    attributes: dict[str, Any] | None = None,
    extra_inputs: dict[int, str] | None = None,
    extra_initializers: list[Any] | None = None,
) -> Any:
    """One LSTM node written directly with onnx.helper, independent of build_model."""
    arrays = layer_to_onnx(weights.layers[0], config.bias)
    tensors = {"W": arrays.W, "R": arrays.R, "B": arrays.B, "P": arrays.P}
    nodes, initializers = [], list(extra_initializers or [])
    names = []
    for role, array in tensors.items():
        if array is None:
            names.append("")
            continue
        names.append(role)
        tensor = numpy_helper.from_array(array.astype(np.float32), role)
        if weights_as_constants:
            nodes.append(helper.make_node("Constant", [], [role], value=tensor))
        else:
            initializers.append(tensor)
    inputs = ["X", names[0], names[1], names[2], "", "", "", names[3]]
    for position, name in (extra_inputs or {}).items():
        inputs[position] = name
    while inputs[-1] == "":
        inputs.pop()
    node_attributes = {
        "hidden_size": config.hidden_size,
        "direction": "bidirectional" if config.bidirectional else "forward",
    }
    node_attributes.update(attributes or {})
    nodes.append(helper.make_node("LSTM", inputs, ["Y", "Y_h", "Y_c"], name="my_lstm", **node_attributes))
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", "B", config.input_size])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)], ir_version=8)


def test_read_constant_nodes_attributes_and_run_the_file(tmp_path: Path) -> None:
    """Weights in Constant nodes, clip, input_forget, explicit activations: the file runs in ONNX Runtime and
    the weights read from it compute the same function in the reference."""
    config = LSTMConfig(
        3,
        4,
        bidirectional=True,
        peepholes=True,
        gate_clip=0.5,
        input_forget=True,
        cell_input_activation=Activation("elu", 0.5),
    )
    rng = np.random.default_rng(5)
    weights = float32_rounded(random_weights(config, rng, scale=0.6))
    attributes = {
        "clip": 0.5,
        "input_forget": 1,
        "activations": ["Sigmoid", "Elu", "Tanh"] * 2,
        "activation_alpha": [0.5, 0.5],
    }
    model = lstm_node_model(config, weights, weights_as_constants=True, attributes=attributes)
    path = tmp_path / "hand.onnx"
    onnx.save(model, str(path))
    found = OnnxFormat().read(path, {}).lstms[0]
    assert found.name == "my_lstm"
    assert found.weights.config == config
    x = rng.standard_normal((5, 2, 3))
    (y,) = run_file(path, x)
    expected = lstm_forward(found.weights, x).y  # [T, B, 2H]; the file's Y is [T, 2, B, H]
    assert relative(y.transpose(0, 2, 1, 3).reshape(expected.shape), expected) < FLOAT32_TOLERANCE


def test_read_layout_1_node(tmp_path: Path) -> None:
    config = LSTMConfig(3, 4)
    weights = float32_rounded(random_weights(config, np.random.default_rng(2)))
    path = tmp_path / "layout1.onnx"
    onnx.save(lstm_node_model(config, weights, attributes={"layout": 1}), str(path))
    found = OnnxFormat().read(path, {}).lstms[0]
    assert found.batch_first is True
    assert found.weights.config == config


def test_unconnected_lstm_nodes_are_separate(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    first = float32_rounded(random_weights(LSTMConfig(3, 4), rng))
    second = float32_rounded(random_weights(LSTMConfig(3, 2), rng))
    model_a = lstm_node_model(first.config, first)
    arrays = layer_to_onnx(second.layers[0], True)
    extra = [
        numpy_helper.from_array(a.astype(np.float32), n)
        for n, a in (("W2", arrays.W), ("R2", arrays.R), ("B2", arrays.B))
        if a is not None
    ]
    model_a.graph.initializer.extend(extra)
    model_a.graph.node.append(helper.make_node("LSTM", ["X", "W2", "R2", "B2"], ["Y2"], name="second", hidden_size=2))
    path = tmp_path / "two.onnx"
    onnx.save(model_a, str(path))
    lstms = OnnxFormat().read(path, {}).lstms
    assert [found.name for found in lstms] == ["my_lstm", "second"]
    assert [found.weights.config.hidden_size for found in lstms] == [4, 2]
    assert all("separate" in " ".join(found.notes) for found in lstms)


def test_wrong_rearrangement_is_not_a_stack(tmp_path: Path) -> None:
    """Y [T, 2, B, H] reshaped without the transpose interleaves directions wrongly: not a stacked layer."""
    rng = np.random.default_rng(4)
    lower = float32_rounded(random_weights(LSTMConfig(3, 4, bidirectional=True), rng))
    upper = float32_rounded(random_weights(LSTMConfig(8, 4, bidirectional=True), rng))
    model = lstm_node_model(lower.config, lower)
    arrays = layer_to_onnx(upper.layers[0], True)
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(a.astype(np.float32), n)
            for n, a in (("W2", arrays.W), ("R2", arrays.R), ("B2", arrays.B))
            if a is not None
        ]
        + [numpy_helper.from_array(np.array([0, 0, -1], dtype=np.int64), "shape")]
    )
    model.graph.node.extend(
        [
            helper.make_node("Reshape", ["Y", "shape"], ["X2"]),  # [T, 2, B*H]: wrong
            helper.make_node(
                "LSTM", ["X2", "W2", "R2", "B2"], ["Y2"], name="upper", hidden_size=4, direction="bidirectional"
            ),
        ]
    )
    path = tmp_path / "wrong.onnx"
    onnx.save(model, str(path))
    lstms = OnnxFormat().read(path, {}).lstms
    assert [found.weights.config.num_layers for found in lstms] == [1, 1]


def test_refusals(tmp_path: Path) -> None:
    config = LSTMConfig(3, 4)
    weights = float32_rounded(random_weights(config, np.random.default_rng(6)))
    good = tmp_path / "good.onnx"
    onnx.save(lstm_node_model(config, weights), str(good))

    cases: dict[str, tuple[Any, str]] = {}
    computed = lstm_node_model(config, weights)
    computed.graph.node.insert(0, helper.make_node("Identity", ["W_source"], ["W_computed"]))
    computed.graph.node[-1].input[1] = "W_computed"
    computed.graph.input.append(helper.make_tensor_value_info("W_source", TensorProto.FLOAT, [1, 16, 3]))
    cases["computed"] = (computed, "computed in the graph")
    cases["reverse"] = (lstm_node_model(config, weights, attributes={"direction": "reverse"}), "direction='reverse'")
    state = numpy_helper.from_array(np.full((1, 1, 4), 0.5, dtype=np.float32), "h0")
    cases["state"] = (
        lstm_node_model(config, weights, extra_inputs={5: "h0"}, extra_initializers=[state]),
        "constant non-zero initial_h",
    )
    cases["alpha"] = (
        lstm_node_model(config, weights, attributes={"activations": ["Sigmoid", "ThresholdedRelu", "Tanh"]}),
        "ThresholdedRelu has no alpha",
    )
    relu = helper.make_graph(
        [helper.make_node("Relu", ["X"], ["Y"])],
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])],
    )
    cases["no-lstm"] = (helper.make_model(relu), "no LSTM node")
    for name, (model, message) in cases.items():
        path = tmp_path / f"{name}.onnx"
        onnx.save(model, str(path))
        with pytest.raises(InputFileError, match=message):
            OnnxFormat().read(path, {})

    data = good.read_bytes()
    for name, content in {
        "truncated": data[: len(data) // 2],
        "garbage": b"\x00\xffnot an onnx file" * 8,
        "empty": b"",
    }.items():
        path = tmp_path / f"{name}.onnx"
        path.write_bytes(content)
        with pytest.raises(InputFileError, match=str(path)):
            OnnxFormat().read(path, {})


def test_onnx_gate_order_is_i_o_f_c() -> None:
    """The mapping written once in adapters.layouts.onnx, checked against the operator doc's W[iofc]."""
    assert ONNX_GATES == ("i", "o", "f", "g")
    doc = onnx.defs.get_schema("LSTM").doc
    assert "W[iofc]" in doc
    assert "P[iof]" in doc
    weights = random_weights(LSTMConfig(2, 3, peepholes=True), np.random.default_rng(0))
    arrays = layer_to_onnx(weights.layers[0], True)
    np.testing.assert_array_equal(arrays.W[0], reorder_gates(weights.layers[0][0].W, GATES, ONNX_GATES))
    P = weights.layers[0][0].P
    assert P is not None
    assert arrays.P is not None
    np.testing.assert_array_equal(arrays.P[0], np.concatenate([P[0], P[2], P[1]]))
