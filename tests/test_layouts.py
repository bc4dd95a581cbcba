"""The frameworks' weight layouts (``adapters.layouts``) with no framework at all: these tests import only NumPy
and the project, so they run in ``tox -e reference``. Each framework's own test file checks the same mappings
against the real framework (a module loaded from a mapped state_dict, gate orders proven by experiment)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lstm_conformance.adapters.layouts import flax as flax_layout
from lstm_conformance.adapters.layouts import keras as keras_layout
from lstm_conformance.adapters.layouts import onnx as onnx_layout
from lstm_conformance.adapters.layouts import tf as tf_layout
from lstm_conformance.adapters.layouts import torch as torch_layout
from lstm_conformance.reference.errors import LayoutError
from lstm_conformance.reference.layout import Activation, LSTMConfig, random_weights

FRAMEWORKS = ("torch", "tensorflow", "keras", "tf_keras", "onnx", "onnxruntime", "jax", "flax")
ADAPTERS = Path(__file__).resolve().parents[1] / "adapters"

CONFIGS = {
    "one_layer": LSTMConfig(input_size=3, hidden_size=5),
    "stacked_bidirectional": LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
    "no_bias": LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bias=False),
}


def test_layouts_and_formats_import_no_framework() -> None:
    """Every module of adapters/layouts and adapters/formats, imported in a fresh process, leaves every
    framework out of sys.modules."""
    modules = ["lstm_conformance.adapters.layouts", "lstm_conformance.adapters.formats"]
    modules += [f"lstm_conformance.adapters.layouts.{p.stem}" for p in sorted((ADAPTERS / "layouts").glob("*.py"))]
    modules += [f"lstm_conformance.adapters.formats.{p.stem}" for p in sorted((ADAPTERS / "formats").glob("*.py"))]
    modules = [m.removesuffix(".__init__") for m in modules]
    assert len(modules) >= 10, modules
    script = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n"
    )
    found = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", f"imported: {found.stdout.strip()}; stderr: {found.stderr[-2000:]}"


# ----------------------------------------------------------------------------------------------------------
# PyTorch
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", CONFIGS)
def test_torch_canonical_native_canonical_is_bit_identical(config_name: str) -> None:
    config = CONFIGS[config_name]
    weights = random_weights(config, np.random.default_rng(5)).astype(np.float32)
    for to_native, from_native in [
        (torch_layout.to_state_dict, lambda s: torch_layout.from_state_dict(s, config)),
        (torch_layout.to_cell_state_dict, lambda s: torch_layout.from_cell_state_dict(s, config)),
    ]:
        again = from_native(to_native(weights)).named_arrays()
        for key, value in weights.named_arrays().items():
            assert again[key].dtype == np.float32, key
            assert np.array_equal(again[key], value), key


def test_torch_config_is_inferred_from_the_state_dict_shapes() -> None:
    config = LSTMConfig(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2, bias=False)
    state = torch_layout.to_state_dict(random_weights(config, np.random.default_rng(2)))
    assert torch_layout.config_from_state_dict({key: value.shape for key, value in state.items()}) == config
    assert "weight_hr_l1_reverse" in state
    assert not any(key.startswith("bias") for key in state)


def test_torch_inconsistent_state_dicts_name_key_expected_and_found() -> None:
    config = CONFIGS["stacked_bidirectional"]
    state = torch_layout.to_state_dict(random_weights(config, np.random.default_rng(1)))
    shapes = {key: value.shape for key, value in state.items()}
    config_from_state_dict = torch_layout.config_from_state_dict

    wrong = dict(shapes, weight_hh_l1_reverse=(16, 3))
    with pytest.raises(LayoutError, match=r"weight_hh_l1_reverse: expected shape \(16, 4\).*found \(16, 3\)"):
        config_from_state_dict(wrong)
    missing = {key: shape for key, shape in shapes.items() if key != "bias_hh_l1"}
    with pytest.raises(LayoutError, match="bias_hh_l1: missing"):
        config_from_state_dict(missing)
    with pytest.raises(LayoutError, match=r"not nn\.LSTM parameter names"):
        config_from_state_dict(dict(shapes, **{"fc.weight": (2, 2)}))
    with pytest.raises(LayoutError, match=r"unexpected keys \['weight_hh_l2'\] for nn.LSTM\(input_size=3"):
        config_from_state_dict(dict(shapes, weight_hh_l2=(16, 8)))
    with pytest.raises(LayoutError, match=r"weight_ih_l0: expected shape \[4\*hidden_size"):
        config_from_state_dict(dict(shapes, weight_ih_l0=(15, 3)))


# ----------------------------------------------------------------------------------------------------------
# TensorFlow cells and BlockLSTM ops
# ----------------------------------------------------------------------------------------------------------

INPUT, HIDDEN = 3, 4


@pytest.mark.parametrize("forget_bias", [0.0, 0.5, 1.0, 0.1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tf_cell_mapping_round_trips_bit_for_bit(forget_bias: float, dtype: type) -> None:
    rng = np.random.default_rng(5)
    arrays: dict[str, np.ndarray] = {
        "kernel": rng.normal(size=(INPUT + 2, 4 * HIDDEN)).astype(dtype),
        "bias": rng.normal(size=4 * HIDDEN).astype(dtype),
        "w_i_diag": rng.normal(size=HIDDEN).astype(dtype),
        "w_f_diag": rng.normal(size=HIDDEN).astype(dtype),
        "w_o_diag": rng.normal(size=HIDDEN).astype(dtype),
        "projection/kernel": rng.normal(size=(HIDDEN, 2)).astype(dtype),
    }
    back = tf_layout.to_tf_cell(tf_layout.from_tf_cell(arrays, INPUT, forget_bias), forget_bias)
    assert set(back) == set(arrays)
    for name, array in arrays.items():
        assert back[name].dtype == array.dtype
        assert back[name].tobytes() == array.tobytes(), name


def test_tf_cell_and_block_share_one_kernel_and_bias() -> None:
    """The BlockLSTM op's w and b are the cell's kernel and bias in the op's gate order (BlockLSTM's order is
    the cells' i, j, f, o), forget_bias folded the same way."""
    layer = random_weights(LSTMConfig(INPUT, HIDDEN, peepholes=True), np.random.default_rng(3)).layers[0][0]
    cell = tf_layout.to_tf_cell(layer, 1.0)
    block = tf_layout.to_block(layer, tf_layout.BLOCK_LSTM_GATES, 1.0)
    assert np.array_equal(block["w"], cell["kernel"])
    assert np.array_equal(block["b"], cell["bias"])
    assert np.array_equal(block["wcf"], cell["w_f_diag"])


def test_tf_variable_names_under_default_scopes() -> None:
    config = LSTMConfig(INPUT, HIDDEN, num_layers=2, bidirectional=True, peepholes=True)
    names = set(tf_layout.to_tf_variables(random_weights(config, np.random.default_rng(0)), 1.0, "lstm"))
    assert "stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/lstm_cell/kernel" in names
    assert "stack_bidirectional_rnn/cell_0/bidirectional_rnn/fw/lstm_cell/w_o_diag" in names
    assert len(names) == 4 * 5
    stacked = LSTMConfig(INPUT, HIDDEN, num_layers=2)
    assert tf_layout.native_prefix(stacked, 1, 0, "basic") == "rnn/multi_rnn_cell/cell_1/basic_lstm_cell/"
    assert tf_layout.block_prefix(config, 1, 1) == "cell_1/bw/"


def test_tf_gradients_of_one_bias_feed_both_canonical_biases() -> None:
    config = LSTMConfig(INPUT, HIDDEN, num_layers=2)
    rng = np.random.default_rng(4)
    native = {
        name: rng.normal(size=array.shape)
        for name, array in tf_layout.to_block_variables(random_weights(config, rng), ("i", "f", "g", "o"), 0.0).items()
    }
    grads = tf_layout.block_gradients(config, native, ("i", "f", "g", "o"))
    layer = grads.layers[1][0]
    assert np.array_equal(layer.Wb, layer.Rb)
    assert np.array_equal(layer.Wb, native["cell_1/b"])  # V2's order is the canonical one
    assert set(tf_layout.present_block_gradients(config, native)) == {"cell_0/w", "cell_0/b", "cell_1/w", "cell_1/b"}


# ----------------------------------------------------------------------------------------------------------
# Keras, ONNX, Flax
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", CONFIGS)
def test_keras_weights_round_trip_with_the_biases_summed(config_name: str) -> None:
    config = CONFIGS[config_name]
    weights = random_weights(config, np.random.default_rng(6)).astype(np.float32)
    per_layer = keras_layout.keras_layer_weights(weights)
    assert [a.shape for a in per_layer[0][:2]] == [
        (3, 4 * config.hidden_size),
        (config.hidden_size, 4 * config.hidden_size),
    ]
    back = keras_layout.canonical_from_keras_weights(config, per_layer)
    for ours, theirs in zip(weights.layers, back.layers, strict=True):
        for a, b in zip(ours, theirs, strict=True):
            assert np.array_equal(a.W, b.W)
            assert np.array_equal(a.R, b.R)
            assert np.array_equal(a.Wb + a.Rb, b.Wb)
            assert not b.Rb.any()
    for again, first in zip(keras_layout.keras_layer_weights(back), per_layer, strict=True):
        for x, y in zip(again, first, strict=True):
            assert x.dtype == y.dtype
            assert np.array_equal(x, y)


@pytest.mark.parametrize("flavor", [keras_layout.KERAS3, keras_layout.TF_KERAS], ids=lambda f: f.implementation)
def test_keras_arguments_give_back_the_config(flavor: keras_layout.KerasFlavor) -> None:
    config = LSTMConfig(
        INPUT, HIDDEN, num_layers=2, bidirectional=True, gate_activation=Activation(flavor.hard_sigmoid)
    )
    arguments = keras_layout.keras_lstm_arguments(config, flavor)
    assert arguments["recurrent_activation"] == "hard_sigmoid"
    assert keras_layout.config_from_keras_arguments(INPUT, [arguments, arguments], True, flavor) == config


def test_onnx_layer_round_trips_bit_for_bit() -> None:
    config = LSTMConfig(INPUT, HIDDEN, bidirectional=True, peepholes=True)
    weights = random_weights(config, np.random.default_rng(8)).astype(np.float32)
    arrays = onnx_layout.layer_to_onnx(weights.layers[0], bias=True)
    assert arrays.W.shape == (2, 4 * HIDDEN, INPUT)
    assert arrays.B is not None
    assert arrays.B.shape == (2, 8 * HIDDEN)
    back = onnx_layout.layer_from_onnx(arrays, HIDDEN)
    for ours, theirs in zip(weights.layers[0], back, strict=True):
        for name, array in ours.items():
            assert np.array_equal(getattr(theirs, name), array), name


@pytest.mark.parametrize("name", ["hard_sigmoid_keras2", "hard_sigmoid_keras3", "tanh"])
def test_onnx_activations_round_trip(name: str) -> None:
    onnx_name, alpha, beta = onnx_layout.activation_to_onnx(Activation(name))
    assert onnx_layout.activation_from_onnx(onnx_name, alpha, beta) == Activation(name)


def test_flax_params_hold_each_gate_and_one_bias() -> None:
    config = LSTMConfig(INPUT, HIDDEN, bidirectional=True)
    weights = random_weights(config, np.random.default_rng(9))
    params = flax_layout.to_flax_params(weights)
    cell = params["layers_0"]["reverse"]
    layer = weights.layers[0][1]
    assert np.array_equal(cell["if"]["kernel"], layer.W[HIDDEN : 2 * HIDDEN].T)
    assert np.array_equal(cell["hf"]["bias"], (layer.Wb + layer.Rb)[HIDDEN : 2 * HIDDEN])
    flat = flax_layout.native_names(params)
    assert flat["layers_0/reverse/hf/kernel"].shape == (HIDDEN, HIDDEN)
    grads = flax_layout.canonical_gradients(config, params)
    assert np.array_equal(grads.layers[0][1].W, layer.W)
    assert np.array_equal(grads.layers[0][1].Wb, grads.layers[0][1].Rb)
