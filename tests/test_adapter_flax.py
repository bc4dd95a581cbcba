"""Flax's LSTMCell and OptimizedLSTMCell, scanned by the adapter, against the float64 reference: outputs and
gradients (x, h0, c0, every parameter) to 1e-10 in float64 and to a float32 tolerance in float32."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

pytest.importorskip("jax", reason="jax is not installed (pip install 'lstm-conformance[jax]')")
pytest.importorskip("flax", reason="flax is not installed (pip install 'lstm-conformance[jax]')")

from lstm_conformance.adapters.base import Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.flax_cell import FlaxLSTMCell, FlaxOptimizedLSTMCell
from lstm_conformance.adapters.layouts.flax import to_flax_params
from lstm_conformance.adapters.reference_impl import reference_run
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LSTMConfig, random_weights
from lstm_conformance.reference.lstm import LSTMGradients, LSTMOutputs, lstm_forward_backward

FLOAT64_TOLERANCE = 1e-10
FLOAT32_TOLERANCE = 1e-5
CELLS = [FlaxLSTMCell, FlaxOptimizedLSTMCell]


class Case:
    """Random weights, inputs and cotangents for one config."""

    def __init__(self, config: LSTMConfig, seed: int, *, ragged: bool = False, batch_first: bool = False) -> None:
        rng = np.random.default_rng(seed)
        steps, batch = 6, 3
        states = config.num_layers * config.num_directions
        self.weights = random_weights(config, rng, scale=0.6)
        x = rng.standard_normal((steps, batch, config.input_size))
        dy = rng.standard_normal((steps, batch, config.num_directions * config.hidden_size))
        self.x = x.swapaxes(0, 1) if batch_first else x
        self.dy = dy.swapaxes(0, 1) if batch_first else dy
        self.h0 = rng.standard_normal((states, batch, config.hidden_size))
        self.c0 = rng.standard_normal((states, batch, config.hidden_size))
        self.dh_n = rng.standard_normal(self.h0.shape)
        self.dc_n = rng.standard_normal(self.c0.shape)
        self.seq_lens = np.array([steps, 2, 4], dtype=np.int64) if ragged else None
        self.batch_first = batch_first

    def inputs(self) -> RunInputs:
        return RunInputs(
            x=self.x,
            h0=self.h0,
            c0=self.c0,
            seq_lens=self.seq_lens,
            batch_first=self.batch_first,
            dy=self.dy,
            dh_n=self.dh_n,
            dc_n=self.dc_n,
        )

    def reference(self) -> tuple[LSTMOutputs, LSTMGradients]:
        return reference_run(self.weights, self.inputs())


def errors(result: RunResult, outputs: LSTMOutputs, gradients: LSTMGradients) -> dict[str, float]:
    assert result.gradients is not None
    pairs: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "y": (result.y, outputs.y),
        "h_n": (result.h_n, outputs.h_n),
        "c_n": (result.c_n, outputs.c_n),
        "grad x": (result.gradients.x, gradients.x),
        "grad h0": (result.gradients.h0, gradients.h0),
        "grad c0": (result.gradients.c0, gradients.c0),
    }
    expected = gradients.weights.named_arrays()
    for key, array in result.gradients.weights.named_arrays().items():
        pairs[f"grad {key}"] = (array, expected[key])
    found = {}
    for name, (got, want) in pairs.items():
        assert got.shape == want.shape, name
        found[name] = float(np.linalg.norm(got - want) / max(float(np.linalg.norm(want)), 1e-300))
    return found


def check(implementation: Implementation, case: Case, dtype: str, tolerance: float) -> RunResult:
    result = implementation.run(case.weights, case.inputs(), RunOptions(dtype=dtype))
    found = errors(result, *case.reference())
    worst = max(found, key=found.__getitem__)
    assert found[worst] < tolerance, (worst, found[worst])
    return result


FLOAT64_CONFIGS = {
    "plain": (LSTMConfig(3, 4), {}),
    "two-layers-bidirectional-ragged": (LSTMConfig(3, 4, num_layers=2, bidirectional=True), {"ragged": True}),
    "bidirectional-batch-first-ragged-no-bias": (
        LSTMConfig(3, 4, bidirectional=True, bias=False),
        {"ragged": True, "batch_first": True},
    ),
}


#: Both cells on the stacked ragged case; batch-first handling is the adapter's, so one cell runs it.
FLOAT64_RUNS = [
    (FlaxLSTMCell, "plain"),
    (FlaxOptimizedLSTMCell, "plain"),
    (FlaxLSTMCell, "two-layers-bidirectional-ragged"),
    (FlaxOptimizedLSTMCell, "two-layers-bidirectional-ragged"),
    (FlaxLSTMCell, "bidirectional-batch-first-ragged-no-bias"),
]


@pytest.mark.parametrize(("cell", "name"), FLOAT64_RUNS, ids=[f"{c.name}-{n}" for c, n in FLOAT64_RUNS])
def test_float64_matches_reference(cell: type[FlaxLSTMCell], name: str) -> None:
    config, options = FLOAT64_CONFIGS[name]
    result = check(cell(), Case(config, seed=len(name), **options), "float64", FLOAT64_TOLERANCE)
    assert result.math_mode == "float64"


@pytest.mark.parametrize("cell", CELLS, ids=lambda c: c.name)
def test_float32_matches_reference(cell: type[FlaxLSTMCell]) -> None:
    config = LSTMConfig(3, 4, bidirectional=True)
    result = check(cell(), Case(config, seed=9, ragged=True), "float32", FLOAT32_TOLERANCE)
    assert result.math_mode == "float32"


ACTIVATION_CONFIGS = {
    "hard-sigmoid-keras3-gate-elu-cell": (Activation("hard_sigmoid_keras3"), Activation("elu", 0.7)),
    "relu-gate-softsign-cell": (Activation("relu"), Activation("softsign")),
    "softplus-gate-leaky-relu-cell": (Activation("softplus"), Activation("leaky_relu", 0.1)),
    "tanh-gate-relu-cell": (Activation("tanh"), Activation("relu")),
}


@pytest.mark.parametrize("name", list(ACTIVATION_CONFIGS))
def test_activations(name: str) -> None:
    """gate_fn and activation_fn are JAX's own functions; jax.nn.hard_sigmoid is Keras 3's."""
    gate, cell_activation = ACTIVATION_CONFIGS[name]
    config = LSTMConfig(
        3, 4, gate_activation=gate, cell_input_activation=cell_activation, cell_output_activation=cell_activation
    )
    check(FlaxOptimizedLSTMCell(), Case(config, seed=len(name)), "float64", FLOAT64_TOLERANCE)


def test_native_names_are_flax_own() -> None:
    """The params tree has the names and shapes flax.linen.LSTMCell.init creates, and native gradients map
    to canonical ones: ii/kernel is W_i transposed, hi/bias the gradient of both canonical biases."""
    import flax.linen as nn
    import jax

    config = LSTMConfig(3, 4, bidirectional=True)
    case = Case(config, seed=1)
    params = to_flax_params(case.weights)
    carry = (np.zeros((1, 4)), np.zeros((1, 4)))
    for cell in (nn.LSTMCell(features=4), nn.OptimizedLSTMCell(features=4)):
        native = jax.eval_shape(cell.init, jax.random.key(0), carry, np.zeros((1, 3)))["params"]
        shapes = jax.tree_util.tree_map(lambda a: tuple(a.shape), native)
        for direction in ("forward", "reverse"):
            assert jax.tree_util.tree_map(np.shape, params["layers_0"][direction]) == shapes
    bias = params["layers_0"]["forward"]["hf"]["bias"]
    forward = case.weights.layers[0][0]
    np.testing.assert_array_equal(bias, forward.Wb[4:8] + forward.Rb[4:8])

    result = FlaxLSTMCell().run(case.weights, case.inputs(), RunOptions())
    assert result.gradients is not None
    native_grads = result.gradients.native
    assert len(native_grads) == 2 * 12
    canonical = result.gradients.weights.layers[0][1]
    np.testing.assert_array_equal(native_grads["layers_0/reverse/ig/kernel"], canonical.W[8:12].T)
    np.testing.assert_array_equal(native_grads["layers_0/reverse/ho/bias"], canonical.Wb[12:16])
    np.testing.assert_array_equal(canonical.Wb, canonical.Rb)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"peepholes": True}, "peepholes"),
        ({"gate_clip": 1.0}, "gate_clip"),
        ({"cell_clip": 1.0}, "cell_clip"),
        ({"input_forget": True}, "input_forget"),
        ({"proj_size": 2}, "proj_size"),
        ({"gate_activation": Activation("hard_sigmoid_keras2")}, "hard_sigmoid_keras2"),
        ({"cell_output_activation": Activation("relu")}, "activation_fn serves both"),
    ],
)
def test_refusals(change: dict[str, object], message: str) -> None:
    config = replace(LSTMConfig(3, 4), **change)  # type: ignore[arg-type]
    weights = random_weights(config, np.random.default_rng(0))
    with pytest.raises(UnsupportedFeatureError, match=message):
        FlaxLSTMCell().run(weights, RunInputs(x=np.zeros((2, 1, 3))), RunOptions())


def test_registry_and_capabilities() -> None:
    for name, cell in (("flax", FlaxLSTMCell), ("flax-optimized", FlaxOptimizedLSTMCell)):
        implementation = get_implementation(name)
        assert isinstance(implementation, cell)
        capabilities = implementation.capabilities()
        assert capabilities.gradients
        assert set(capabilities.dtypes) == {"float64", "float32"}


def test_forward_only() -> None:
    case = Case(LSTMConfig(3, 4), seed=2)
    result = FlaxLSTMCell().run(case.weights, RunInputs(x=case.x), RunOptions())
    outputs, _ = lstm_forward_backward(case.weights, case.x, dy=np.zeros_like(case.dy))
    assert result.gradients is None
    assert float(np.abs(result.y - outputs.y).max()) < FLOAT64_TOLERANCE


def test_allow_tf32_on_the_cpu_runs_in_its_dtype_and_says_so() -> None:
    """On the CPU, JAX's default matmul precision is full float32: math mode float32, float32's accuracy."""
    case = Case(LSTMConfig(3, 4), seed=5)
    result = FlaxLSTMCell().run(case.weights, case.inputs(), RunOptions(dtype="float32", allow_tf32=True))
    assert result.math_mode == "float32"
    outputs, _ = case.reference()
    assert float(np.linalg.norm(result.y - outputs.y) / np.linalg.norm(outputs.y)) < FLOAT32_TOLERANCE
