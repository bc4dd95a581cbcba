"""The canonical layout (reference/layout.py): npz round trip, load errors that name the offending array,
gate reordering, activation names, config validation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lstm_conformance.reference.errors import LayoutError
from lstm_conformance.reference.layout import (
    ACTIVATION_PARAMETERS,
    GATES,
    NPZ_CONFIG_KEY,
    NPZ_FORMAT_KEY,
    Activation,
    LSTMConfig,
    LSTMWeights,
    load_npz,
    random_weights,
    reorder_gates,
    save_npz,
)

FULL = LSTMConfig(
    input_size=3,
    hidden_size=4,
    num_layers=2,
    bidirectional=True,
    proj_size=2,
    peepholes=True,
    cell_clip=3.0,
    gate_clip=5.0,
    proj_clip=1.5,
    input_forget=True,
    gate_activation=Activation("hard_sigmoid", 0.2, 0.5),
    cell_input_activation=Activation("scaled_tanh", 1.0, 2.0),
    cell_output_activation=Activation("leaky_relu", 0.01),
)


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    return path


def _saved_arrays(tmp_path: Path, config: LSTMConfig = FULL) -> dict[str, np.ndarray]:
    path = tmp_path / "model.npz"
    save_npz(path, random_weights(config, np.random.default_rng(0)))
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("config", [FULL, LSTMConfig(input_size=1, hidden_size=1)], ids=["every-option", "minimal"])
def test_npz_round_trip_is_bit_exact(tmp_path: Path, config: LSTMConfig) -> None:
    weights = random_weights(config, np.random.default_rng(3))
    save_npz(tmp_path / "w.npz", weights)
    loaded = load_npz(tmp_path / "w.npz")
    assert loaded.config == config
    original, restored = weights.named_arrays(), loaded.named_arrays()
    assert original.keys() == restored.keys()
    for key, value in original.items():
        assert restored[key].dtype == value.dtype
        assert restored[key].tobytes() == value.tobytes(), key


def test_float32_weights_round_trip_as_float32(tmp_path: Path) -> None:
    weights = random_weights(FULL, np.random.default_rng(3)).astype(np.float32)
    save_npz(tmp_path / "w.npz", weights)
    loaded = load_npz(tmp_path / "w.npz")
    assert all(value.dtype == np.float32 for value in loaded.named_arrays().values())


def test_load_names_an_array_of_the_wrong_shape(tmp_path: Path) -> None:
    arrays = _saved_arrays(tmp_path)
    arrays["layers.1.reverse.R"] = np.zeros((16, 3))
    with pytest.raises(LayoutError, match=r"layers\.1\.reverse\.R: expected shape \(16, 2\), found \(16, 3\)"):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))


def test_load_names_a_missing_array(tmp_path: Path) -> None:
    arrays = _saved_arrays(tmp_path)
    del arrays["layers.0.forward.P"]
    with pytest.raises(LayoutError, match=r"missing canonical arrays \['layers\.0\.forward\.P'\]"):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))


def test_load_names_an_unexpected_array(tmp_path: Path) -> None:
    arrays = _saved_arrays(tmp_path)
    arrays["layers.2.forward.W"] = np.zeros((16, 4))
    with pytest.raises(LayoutError, match=r"unexpected canonical arrays \['layers\.2\.forward\.W'\]"):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))


def test_load_names_an_array_of_the_wrong_dtype(tmp_path: Path) -> None:
    arrays = _saved_arrays(tmp_path)
    arrays["layers.0.forward.Wb"] = np.zeros(16, dtype=np.int32)
    with pytest.raises(
        LayoutError, match=r"layers\.0\.forward\.Wb: expected a floating-point array, found dtype int32"
    ):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))


def test_load_names_an_unknown_config_key(tmp_path: Path) -> None:
    arrays = _saved_arrays(tmp_path)
    config = json.loads(str(arrays[NPZ_CONFIG_KEY]))
    config["forget_bias"] = 1.0
    arrays[NPZ_CONFIG_KEY] = np.asarray(json.dumps(config))
    with pytest.raises(LayoutError, match=r"unknown keys \['forget_bias'\]"):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))


def test_load_refuses_another_format_version(tmp_path: Path) -> None:
    arrays = _saved_arrays(tmp_path)
    arrays[NPZ_FORMAT_KEY] = np.asarray(99)
    with pytest.raises(LayoutError, match="version 99"):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))
    del arrays[NPZ_FORMAT_KEY]
    with pytest.raises(LayoutError, match="not an lstm-conformance canonical"):
        load_npz(_write_npz(tmp_path / "bad.npz", arrays))


def test_load_refuses_a_file_that_is_not_npz(tmp_path: Path) -> None:
    path = tmp_path / "text.npz"
    path.write_text("not a zip")
    with pytest.raises(LayoutError, match=r"not a readable \.npz"):
        load_npz(path)


def test_weights_refuse_arrays_the_config_has_no_place_for() -> None:
    plain = random_weights(LSTMConfig(input_size=2, hidden_size=3), np.random.default_rng(0))
    layer = plain.layers[0][0]
    layer.P = np.zeros((3, 3))
    with pytest.raises(LayoutError, match=r"layers\.0\.forward\.P: present"):
        LSTMWeights(plain.config, plain.layers)


def test_reorder_gates_moves_blocks_and_round_trips() -> None:
    blocks = np.arange(8.0).reshape(8, 1)  # H = 2: i = 0,1; f = 2,3; g = 4,5; o = 6,7
    tf_order = ("i", "g", "f", "o")
    reordered = reorder_gates(blocks, GATES, tf_order)
    np.testing.assert_array_equal(reordered[:, 0], [0, 1, 4, 5, 2, 3, 6, 7])
    np.testing.assert_array_equal(reorder_gates(reordered, tf_order, GATES), blocks)
    columns = reorder_gates(blocks.T, GATES, ("i", "o", "f", "g"), axis=1)
    np.testing.assert_array_equal(columns[0], [0, 1, 6, 7, 2, 3, 4, 5])
    assert not np.shares_memory(reorder_gates(blocks, GATES, GATES), blocks)


def test_reorder_gates_refuses_mismatched_orders_and_sizes() -> None:
    with pytest.raises(LayoutError, match="name different gates"):
        reorder_gates(np.zeros(8), GATES, ("i", "f", "g", "c"))
    with pytest.raises(LayoutError, match="does not split into 4"):
        reorder_gates(np.zeros(6), GATES, GATES)


@pytest.mark.parametrize("name", list(ACTIVATION_PARAMETERS))
def test_activation_str_and_parse_round_trip(name: str) -> None:
    values = [0.25, -1.5][: len(ACTIVATION_PARAMETERS[name])]
    activation = Activation(name, *values)
    assert Activation.parse(str(activation)) == activation
    assert Activation.parse(f"  {activation} ") == activation


def test_activation_validation_names_the_problem() -> None:
    with pytest.raises(LayoutError, match="unknown activation 'swish'"):
        Activation("swish")
    with pytest.raises(LayoutError, match="'leaky_relu' needs parameter 'alpha'"):
        Activation("leaky_relu")
    with pytest.raises(LayoutError, match="'tanh' takes no parameter 'alpha'"):
        Activation("tanh", 1.0)
    with pytest.raises(LayoutError, match="'affine' needs parameter 'beta'"):
        Activation.parse("affine(1.0)")


def test_config_json_round_trip() -> None:
    assert LSTMConfig.from_json(FULL.to_json()) == FULL


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hidden_size": 0}, "hidden_size must be a positive integer"),
        ({"num_layers": True}, "num_layers must be a positive integer"),
        ({"input_size": 2.0}, "input_size must be a positive integer"),
        ({"proj_size": 4}, r"proj_size \(4\) must be smaller than hidden_size \(4\)"),
        ({"proj_size": -1}, "proj_size must be an integer >= 0"),
        ({"cell_clip": 0.0}, "cell_clip must be a positive finite number"),
        ({"gate_clip": float("inf")}, "gate_clip must be a positive finite number"),
        ({"proj_clip": 1.0}, "proj_clip needs proj_size > 0"),
    ],
)
def test_config_validation_names_the_field(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"input_size": 2, "hidden_size": 4, **changes}
    with pytest.raises(LayoutError, match=message):
        LSTMConfig(**arguments)  # type: ignore[arg-type]


def test_config_from_json_refuses_bad_text() -> None:
    with pytest.raises(LayoutError, match="not valid JSON"):
        LSTMConfig.from_json("{")
    with pytest.raises(LayoutError, match="must be a JSON object"):
        LSTMConfig.from_json("[1]")


def test_features_name_every_non_default_option() -> None:
    assert LSTMConfig(input_size=1, hidden_size=2).features() == []
    assert set(FULL.features()) == {
        "num_layers",
        "bidirectional",
        "proj_size",
        "peepholes",
        "input_forget",
        "cell_clip",
        "gate_clip",
        "proj_clip",
        "gate_activation=hard_sigmoid(0.2, 0.5)",
        "cell_input_activation=scaled_tanh(1.0, 2.0)",
        "cell_output_activation=leaky_relu(0.01)",
    }


def test_random_weights_are_never_constant_per_gate() -> None:
    weights = random_weights(LSTMConfig(input_size=2, hidden_size=3), np.random.default_rng(0))
    blocks = np.split(weights.layers[0][0].W, 4)
    assert all(not np.array_equal(a, b) for k, a in enumerate(blocks) for b in blocks[k + 1 :])
