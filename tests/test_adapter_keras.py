"""The Keras adapters (Keras 3 and tf_keras) against the reference, on the real frameworks.

Outputs and gradients (x, h0, c0, every weight) must match the float64 reference: 1e-10 relative in float64,
1e-5 in float32. Sizes are tiny: TensorFlow's import dominates the time.
"""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.keras_layer import KerasLSTM, TFKerasLSTM, import_keras
from lstm_conformance.adapters.layouts.keras import (
    KERAS3,
    TF_KERAS,
    KerasFlavor,
    canonical_from_keras_weights,
    keras_layer_weights,
)
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LSTMConfig, random_weights
from lstm_conformance.reference.lstm import lstm_forward_backward

pytest.importorskip("tensorflow", reason="the Keras adapters run on TensorFlow (pip install tensorflow-cpu)")

IMPLEMENTATIONS = {"keras": KerasLSTM, "tf-keras": TFKerasLSTM}
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}
INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 3


def _implementation(name: str) -> Any:
    implementation = IMPLEMENTATIONS[name]()
    module = "keras" if name == "keras" else "tf_keras"
    pytest.importorskip(module, reason=f"{implementation.framework} is not installed")
    reason = implementation.unavailable_reason()
    if reason:
        pytest.skip(reason)
    return implementation


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(expected)), 1e-300)
    return float(np.linalg.norm(found - expected)) / scale


def _inputs(config: LSTMConfig, rng: np.random.Generator, seq_lens: bool, batch_first: bool) -> dict[str, Any]:
    states = config.num_layers * config.num_directions
    x = rng.normal(size=(STEPS, BATCH, INPUT))
    dy = rng.normal(size=(STEPS, BATCH, config.num_directions * HIDDEN))
    return {
        "x": x.swapaxes(0, 1).copy() if batch_first else x,
        "h0": rng.normal(size=(states, BATCH, HIDDEN)),
        "c0": rng.normal(size=(states, BATCH, HIDDEN)),
        "seq_lens": np.array([STEPS, 2, 4]) if seq_lens else None,
        "dy": dy.swapaxes(0, 1).copy() if batch_first else dy,
        "dh_n": rng.normal(size=(states, BATCH, HIDDEN)),
        "dc_n": rng.normal(size=(states, BATCH, HIDDEN)),
        "batch_first": batch_first,
    }


def _hard_sigmoid(flavor: str) -> Activation:
    return Activation(KERAS3.hard_sigmoid if flavor == "keras" else TF_KERAS.hard_sigmoid)


# (id, config arguments, seq_lens, batch_first); the activations of "hard_sigmoid" are the framework's own.
CASES: list[tuple[str, dict[str, Any], bool, bool]] = [
    ("plain", {}, False, False),
    ("ragged", {}, True, False),
    ("stacked-ragged", {"num_layers": 2}, True, False),
    ("bidirectional-stacked-ragged", {"num_layers": 2, "bidirectional": True}, True, False),
    ("bidirectional-batch-first", {"bidirectional": True}, False, True),
    ("no-bias", {"bias": False}, True, False),
    ("hard-sigmoid", {"gate_activation": "hard_sigmoid"}, True, False),
    (
        "relu-cell",
        {"cell_input_activation": Activation("relu"), "cell_output_activation": Activation("relu")},
        False,
        False,
    ),
    (
        "softsign-cell",
        {"cell_input_activation": Activation("softsign"), "cell_output_activation": Activation("softsign")},
        False,
        False,
    ),
]


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(("case", "arguments", "seq_lens", "batch_first"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("name", ["keras", "tf-keras"])
def test_matches_reference(
    name: str, case: str, arguments: dict[str, Any], seq_lens: bool, batch_first: bool, dtype: str
) -> None:
    implementation = _implementation(name)
    arguments = dict(arguments)
    if arguments.get("gate_activation") == "hard_sigmoid":
        arguments["gate_activation"] = _hard_sigmoid(name)
    config = LSTMConfig(INPUT, HIDDEN, **arguments)
    rng = np.random.default_rng(zlib.crc32(f"{name}/{case}/{dtype}".encode()))
    # Scale 1 drives the hard sigmoids into their clipped parts as well as their slopes.
    weights = random_weights(config, rng, scale=1.0)
    given = _inputs(config, rng, seq_lens, batch_first)

    result = implementation.run(weights, RunInputs(**given), RunOptions(dtype=dtype))
    expected, gradients = lstm_forward_backward(weights, **given)

    tolerance = TOLERANCE[dtype]
    assert result.math_mode == dtype
    for label, found, wanted in (
        ("y", result.y, expected.y),
        ("h_n", result.h_n, expected.h_n),
        ("c_n", result.c_n, expected.c_n),
    ):
        assert found.shape == wanted.shape, label
        assert _relative(found, wanted) < tolerance, label
    assert result.gradients is not None
    for label, found, wanted in (
        ("grad x", result.gradients.x, gradients.x),
        ("grad h0", result.gradients.h0, gradients.h0),
        ("grad c0", result.gradients.c0, gradients.c0),
    ):
        assert found.shape == wanted.shape, label
        assert _relative(found, wanted) < tolerance, label
    wanted_weights = gradients.weights.named_arrays()
    for key, found in result.gradients.weights.named_arrays().items():
        assert _relative(found, wanted_weights[key]) < tolerance, key


def test_native_gradient_names_and_layout() -> None:
    implementation = _implementation("keras")
    config = LSTMConfig(INPUT, HIDDEN, num_layers=2, bidirectional=True)
    rng = np.random.default_rng(7)
    weights = random_weights(config, rng)
    given = _inputs(config, rng, seq_lens=False, batch_first=False)
    result = implementation.run(weights, RunInputs(**given), RunOptions())
    assert result.gradients is not None
    native = result.gradients.native
    expected_names = {
        f"{outer}/{direction}_{inner}/lstm_cell/{variable}"
        for outer, inner in (("bidirectional", "lstm"), ("bidirectional_1", "lstm_1"))
        for direction in ("forward", "backward")
        for variable in ("kernel", "recurrent_kernel", "bias")
    }
    assert set(native) == expected_names
    canonical = result.gradients.weights.layers[1][1]
    prefix = "bidirectional_1/backward_lstm_1/lstm_cell"
    np.testing.assert_array_equal(native[f"{prefix}/kernel"], canonical.W.T)
    np.testing.assert_array_equal(native[f"{prefix}/recurrent_kernel"], canonical.R.T)
    np.testing.assert_array_equal(native[f"{prefix}/bias"], canonical.Wb)
    np.testing.assert_array_equal(canonical.Wb, canonical.Rb)


@pytest.mark.parametrize("name", ["keras", "tf-keras"])
def test_tf_keras_names_match_keras3(name: str) -> None:
    implementation = _implementation(name)
    config = LSTMConfig(INPUT, HIDDEN, num_layers=2)
    rng = np.random.default_rng(8)
    result = implementation.run(
        random_weights(config, rng), RunInputs(**_inputs(config, rng, False, False)), RunOptions()
    )
    assert result.gradients is not None
    assert sorted(result.gradients.native) == sorted(
        f"{layer}/lstm_cell/{variable}"
        for layer in ("lstm", "lstm_1")
        for variable in ("kernel", "recurrent_kernel", "bias")
    )


@pytest.mark.parametrize("flavor", [KERAS3, TF_KERAS], ids=lambda f: f.implementation)
def test_native_canonical_native_is_bit_identical(flavor: KerasFlavor) -> None:
    """Weights of a real Keras layer -> canonical -> set into a fresh layer -> read back: the same bits."""
    _implementation(flavor.implementation)
    keras = import_keras(flavor)
    rng = np.random.default_rng(3)
    layer = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN, return_sequences=True))
    layer(np.zeros((1, 2, INPUT), dtype=np.float32))
    layer.set_weights([rng.normal(size=w.shape).astype(np.float32) for w in layer.get_weights()])
    original = layer.get_weights()
    config = LSTMConfig(INPUT, HIDDEN, bidirectional=True)
    canonical = canonical_from_keras_weights(config, [original])
    again = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN, return_sequences=True))
    again(np.zeros((1, 2, INPUT), dtype=np.float32))
    again.set_weights(keras_layer_weights(canonical)[0])
    for before, after in zip(original, again.get_weights(), strict=True):
        assert before.dtype == after.dtype
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("flavor", [KERAS3, TF_KERAS], ids=lambda f: f.implementation)
def test_keras_masking_semantics(flavor: KerasFlavor) -> None:
    """What Keras itself returns at masked steps, which the adapter's zeroing relies on: a forward LSTM repeats
    its last valid output and freezes its state; Bidirectional outputs zeros there (zero_output_for_mask)."""
    _implementation(flavor.implementation)
    keras = import_keras(flavor)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, STEPS, INPUT))
    mask = np.arange(STEPS)[None, :] < np.array([[STEPS], [2]])
    lstm = keras.layers.LSTM(HIDDEN, return_sequences=True, return_state=True, dtype="float64")
    y, h, _c = (np.asarray(t) for t in lstm(x, mask=mask))
    np.testing.assert_array_equal(y[1, 2:], np.repeat(y[1, 1:2], STEPS - 2, axis=0))
    np.testing.assert_array_equal(h[1], y[1, 1])
    short = np.asarray(lstm(x[1:, :2])[0])
    np.testing.assert_allclose(short[0], y[1, :2], rtol=1e-12)
    both = keras.layers.Bidirectional(keras.layers.LSTM(HIDDEN, return_sequences=True), dtype="float64")
    y2 = np.asarray(both(x, mask=mask))
    assert not y2[1, 2:].any()
    assert y2[1, :2].all()


REFUSALS: list[tuple[str, dict[str, Any], str]] = [
    ("projection", {"proj_size": 2}, "proj_size"),
    ("peepholes", {"peepholes": True}, "peepholes"),
    ("cell clip", {"cell_clip": 3.0}, "cell_clip"),
    ("gate clip", {"gate_clip": 3.0}, "gate_clip"),
    ("input forget", {"input_forget": True}, "input_forget"),
    ("differing activations", {"cell_output_activation": Activation("relu")}, "`activation` serves both"),
    ("unknown activation", {"gate_activation": Activation("elu", 1.0)}, "activation elu(1.0)"),
]


@pytest.mark.parametrize(("case", "arguments", "feature"), REFUSALS, ids=[r[0] for r in REFUSALS])
@pytest.mark.parametrize("name", ["keras", "tf-keras"])
def test_refuses_what_keras_lacks(name: str, case: str, arguments: dict[str, Any], feature: str) -> None:
    implementation = IMPLEMENTATIONS[name]()
    config = LSTMConfig(INPUT, HIDDEN, **arguments)
    weights = random_weights(config, np.random.default_rng(0))
    inputs = RunInputs(x=np.zeros((STEPS, BATCH, INPUT)))
    with pytest.raises(UnsupportedFeatureError) as error:
        implementation.run(weights, inputs, RunOptions())
    assert feature in str(error.value)
    assert str(error.value).startswith(f"{name}")
    assert error.value.framework == name


@pytest.mark.parametrize(
    ("name", "foreign", "hint"),
    [
        ("tf-keras", "hard_sigmoid_keras3", "use keras or reference"),
        ("keras", "hard_sigmoid_keras2", "use tf-keras or reference"),
    ],
)
def test_refuses_the_other_hard_sigmoid(name: str, foreign: str, hint: str) -> None:
    implementation = IMPLEMENTATIONS[name]()
    config = LSTMConfig(INPUT, HIDDEN, gate_activation=Activation(foreign))
    weights = random_weights(config, np.random.default_rng(0))
    with pytest.raises(UnsupportedFeatureError) as error:
        implementation.run(weights, RunInputs(x=np.zeros((STEPS, BATCH, INPUT))), RunOptions())
    message = str(error.value)
    assert foreign in message
    assert "different function" in message
    assert hint in message
    assert foreign not in implementation.capabilities().activations["gate"]


@pytest.mark.parametrize(
    ("options", "feature"),
    [
        (RunOptions(dtype="float16"), "runs float64 and float32 only, not float16$"),
        (RunOptions(device="cuda"), "runs on cpu only, not cuda$"),
    ],
)
def test_refuses_options_it_cannot_honour(options: RunOptions, feature: str) -> None:
    implementation = _implementation("keras")
    weights = random_weights(LSTMConfig(INPUT, HIDDEN), np.random.default_rng(0))
    with pytest.raises(UnsupportedFeatureError, match=feature):
        implementation.run(weights, RunInputs(x=np.zeros((STEPS, BATCH, INPUT))), options)


@pytest.mark.parametrize("name", ["keras", "tf-keras"])
def test_allow_tf32_on_the_cpu_runs_in_its_dtype_and_says_so(name: str) -> None:
    """A CPU has no TF32: the run computes in float32 to float32's accuracy and reports math mode float32."""
    implementation = _implementation(name)
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(12)
    weights = random_weights(config, rng)
    x = rng.normal(size=(STEPS, BATCH, INPUT))
    result = implementation.run(weights, RunInputs(x=x), RunOptions(dtype="float32", allow_tf32=True))
    assert result.math_mode == "float32"
    assert _relative(result.y, lstm_forward_backward(weights, x)[0].y) < TOLERANCE["float32"]
