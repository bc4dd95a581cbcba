"""Each option of the reference changes the result exactly when it should; the cell is the one written in
reference/layout.py's docstring; activations and their kink conventions agree with PyTorch's autograd; the
reference as an Implementation."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.reference.activations import resolve
from lstm_conformance.reference.errors import LayoutError, NotImplementedOptionError, UnsupportedFeatureError
from lstm_conformance.reference.layout import (
    ACTIVATION_PARAMETERS,
    GATES,
    Activation,
    LayerWeights,
    LSTMConfig,
    LSTMWeights,
    parameter_key,
    random_weights,
    reorder_gates,
)
from lstm_conformance.reference.lstm import LSTMOutputs, lstm_forward, lstm_forward_backward

F64 = NDArray[np.float64]

BASE = LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)
STEPS, BATCH = 5, 3


def run(weights: LSTMWeights, seed: int = 0) -> LSTMOutputs:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(STEPS, BATCH, weights.config.input_size)) * 2.0
    states = weights.config.num_layers * weights.config.num_directions
    h0 = rng.normal(size=(states, BATCH, weights.config.output_size))
    c0 = rng.normal(size=(states, BATCH, weights.config.hidden_size))
    return lstm_forward(weights, x, h0, c0, np.array([5, 3, 4]))


def with_config(weights: LSTMWeights, **changes: Any) -> LSTMWeights:
    """The same arrays under a changed config; arrays it adds are random, arrays it has no place for dropped."""
    config = replace(weights.config, **changes)
    old = weights.named_arrays()
    rng = np.random.default_rng(99)
    arrays = {}
    for layer in range(config.num_layers):
        for direction in range(config.num_directions):
            for parameter, shape in config.parameter_shapes(layer).items():
                key = parameter_key(layer, direction, parameter)
                arrays[key] = old[key] if key in old else rng.uniform(-0.5, 0.5, size=shape)
    return LSTMWeights.from_named_arrays(config, arrays)


def same(a: LSTMOutputs, b: LSTMOutputs) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in ("y", "h_n", "c_n"))


def differs(a: LSTMOutputs, b: LSTMOutputs) -> bool:
    return not np.allclose(a.y, b.y, rtol=1e-6, atol=1e-9)


@pytest.fixture
def weights() -> LSTMWeights:
    return random_weights(BASE, np.random.default_rng(1))


# ----------------------------------------------------------------------------------------------------------
# The cell is the documented one (one step, written from reference/layout.py's docstring)
# ----------------------------------------------------------------------------------------------------------


def _sigmoid(v: F64) -> F64:
    return 1.0 / (1.0 + np.exp(-v))


@pytest.mark.parametrize("input_forget", [False, True])
@pytest.mark.parametrize("projection", [False, True])
def test_one_step_is_the_documented_cell(input_forget: bool, projection: bool) -> None:
    config = LSTMConfig(
        input_size=3,
        hidden_size=4,
        proj_size=2 if projection else 0,
        peepholes=True,
        gate_clip=1.0,
        cell_clip=0.7,
        proj_clip=0.3 if projection else None,
        input_forget=input_forget,
        cell_input_activation=Activation("softsign"),
        cell_output_activation=Activation("scaled_tanh", 1.5, 0.5),
    )
    rng = np.random.default_rng(4)
    weights = random_weights(config, rng, scale=1.5)
    p = weights.layers[0][0]
    x = rng.normal(size=(1, 2, 3))
    h0 = rng.normal(size=(1, 2, config.output_size))
    c0 = rng.normal(size=(1, 2, 4))
    out = lstm_forward(weights, x, h0, c0)

    def clip(v: F64, bound: float | None) -> F64:
        return v if bound is None else np.clip(v, -bound, bound)

    assert p.P is not None
    a = x[0] @ p.W.T + p.Wb + h0[0] @ p.R.T + p.Rb
    a_i, a_f, a_g, a_o = np.split(a, 4, axis=1)
    i = _sigmoid(clip(a_i + p.P[0] * c0[0], 1.0))
    f = 1 - i if input_forget else _sigmoid(clip(a_f + p.P[1] * c0[0], 1.0))
    g_in = clip(a_g, 1.0)
    g = g_in / (1 + np.abs(g_in))
    c = clip(f * c0[0] + i * g, 0.7)
    o = _sigmoid(clip(a_o + p.P[2] * c, 1.0))
    m = o * 1.5 * np.tanh(0.5 * c)
    h = clip(m @ p.proj.T, 0.3) if p.proj is not None else m
    np.testing.assert_allclose(out.c_n[0], c, rtol=1e-14)
    np.testing.assert_allclose(out.h_n[0], h, rtol=1e-14)
    np.testing.assert_allclose(out.y[0], h, rtol=1e-14)
    assert np.abs(c).max() == 0.7, "the cell clip should bite in this case"


# ----------------------------------------------------------------------------------------------------------
# Each option changes the result when it should, and only then
# ----------------------------------------------------------------------------------------------------------


def test_zero_peepholes_equal_no_peepholes_and_each_row_matters(weights: LSTMWeights) -> None:
    peep = with_config(weights, peepholes=True)
    for layer in peep.layers:
        for params in layer:
            assert params.P is not None
            params.P[:] = 0.0
    assert same(run(peep), run(weights))
    for row, gate in enumerate(("i", "f", "o")):
        one = with_config(weights, peepholes=True)
        for layer in one.layers:
            for params in layer:
                assert params.P is not None
                params.P[:] = 0.0
                params.P[row] = 0.5
        assert differs(run(one), run(weights)), f"peephole {gate} has no effect"


@pytest.mark.parametrize("clip", ["cell_clip", "gate_clip"])
def test_a_clip_changes_the_result_only_when_it_bites(weights: LSTMWeights, clip: str) -> None:
    assert same(run(with_config(weights, **{clip: 1e6})), run(weights))
    biting = run(with_config(weights, **{clip: 0.2}))
    assert differs(biting, run(weights))
    if clip == "cell_clip":
        assert np.abs(biting.c_n).max() == 0.2


def test_proj_clip_bounds_h_and_bites_only_below_its_range() -> None:
    weights = random_weights(replace(BASE, proj_size=2), np.random.default_rng(2))
    unclipped = run(weights)
    assert same(run(with_config(weights, proj_clip=1e6)), unclipped)
    clipped = run(with_config(weights, proj_clip=0.05))
    assert differs(clipped, unclipped)
    assert np.abs(clipped.y).max() == 0.05
    assert np.abs(clipped.h_n).max() == 0.05


def test_projection_maps_m_to_h() -> None:
    """From a zero state the first step's m does not depend on proj, so y[0] is linear in proj."""
    config = LSTMConfig(input_size=3, hidden_size=4, proj_size=2)
    weights = random_weights(config, np.random.default_rng(5))
    doubled = weights.map(np.copy)
    assert doubled.layers[0][0].proj is not None
    doubled.layers[0][0].proj *= 2.0
    x = np.random.default_rng(6).normal(size=(3, 2, 3))
    base, twice = lstm_forward(weights, x), lstm_forward(doubled, x)
    np.testing.assert_allclose(twice.y[0], 2.0 * base.y[0], rtol=1e-14)
    assert not np.allclose(twice.y[1:], 2.0 * base.y[1:])


def test_input_forget_couples_f_to_i_and_ignores_the_f_rows(weights: LSTMWeights) -> None:
    coupled = with_config(weights, input_forget=True, peepholes=True)
    assert differs(run(coupled), run(with_config(weights, peepholes=True)))
    H = BASE.hidden_size
    changed = coupled.map(np.copy)
    for layer in changed.layers:
        for params in layer:
            for array in (params.W, params.R, params.Wb, params.Rb):
                array[H : 2 * H] += 3.0
            assert params.P is not None
            params.P[1] += 3.0
    assert same(run(changed), run(coupled)), "input_forget must not read the f rows (documented as unused)"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(STEPS, BATCH, 3))
    _, grads = lstm_forward_backward(coupled, x, dy=rng.normal(size=(STEPS, BATCH, 8)))
    for layer in grads.weights.layers:
        for params in layer:
            for array in (params.W, params.R, params.Wb, params.Rb):
                assert not array[H : 2 * H].any()
            assert params.P is not None
            assert not params.P[1].any()


def test_no_bias_config_has_zero_biases(weights: LSTMWeights) -> None:
    no_bias = random_weights(replace(BASE, bias=False), np.random.default_rng(1))
    assert not any(p.Wb.any() or p.Rb.any() for layer in no_bias.layers for p in layer)


def test_no_bias_config_refuses_nonzero_biases() -> None:
    no_bias = random_weights(replace(BASE, bias=False), np.random.default_rng(1))
    no_bias.layers[0][0].Rb[0] = 0.5
    with pytest.raises(LayoutError, match=r"layers\.0\.forward\.Rb is nonzero but the config has bias=False"):
        run(no_bias)


def test_the_two_bias_split_does_not_change_the_function(weights: LSTMWeights) -> None:
    moved = weights.map(np.copy)
    rng = np.random.default_rng(3)
    for layer in moved.layers:
        for params in layer:
            shift = rng.normal(size=params.Wb.shape)
            params.Wb += shift
            params.Rb -= shift
    np.testing.assert_allclose(run(moved).y, run(weights).y, rtol=1e-13, atol=1e-15)
    all_in_wb = weights.map(np.copy)
    for layer in all_in_wb.layers:
        for params in layer:
            params.Wb += params.Rb
            params.Rb[:] = 0.0
    np.testing.assert_allclose(run(all_in_wb).y, run(weights).y, rtol=1e-13, atol=1e-15)
    _, grads = lstm_forward_backward(weights, np.ones((2, 1, 3)), dy=np.ones((2, 1, 8)))
    for layer in grads.weights.layers:
        for params in layer:
            np.testing.assert_array_equal(params.Wb, params.Rb)


@pytest.mark.parametrize(
    "swap", [("f", "i", "g", "o"), ("i", "f", "o", "g"), ("i", "g", "f", "o"), ("o", "f", "g", "i")]
)
def test_a_swapped_gate_block_changes_the_output(weights: LSTMWeights, swap: tuple[str, ...]) -> None:
    swapped = weights.map(np.copy)
    for params in swapped.layers[0]:
        for name in ("W", "R", "Wb", "Rb"):
            setattr(params, name, reorder_gates(getattr(params, name), GATES, swap))
    assert differs(run(swapped), run(weights)), f"gate order {swap} computes the same function"


ROLES = ("gate_activation", "cell_input_activation", "cell_output_activation")
EVERY_ACTIVATION = [
    *(name for name, params in ACTIVATION_PARAMETERS.items() if not params),
    "hard_sigmoid(0.3, 0.45)",
    "affine(0.8, -0.2)",
    "leaky_relu(0.1)",
    "thresholded_relu(0.2)",
    "scaled_tanh(1.3, 0.7)",
    "elu(0.6)",
]


@pytest.mark.parametrize("role", ROLES)
def test_each_activation_changes_the_result_in_each_role(weights: LSTMWeights, role: str) -> None:
    outputs = {name: run(with_config(weights, **{role: Activation.parse(name)})).y for name in EVERY_ACTIVATION}
    names = list(outputs)
    for k, first in enumerate(names):
        for second in names[k + 1 :]:
            assert not np.allclose(outputs[first], outputs[second]), f"{role}: {first} and {second} agree"


def test_keras2_and_keras3_hard_sigmoid_are_different_functions() -> None:
    x = np.array([-3.0, -2.5, -1.0, 0.0, 1.0, 2.0, 2.5, 3.0])
    keras2 = resolve(Activation("hard_sigmoid_keras2"))(x)
    keras3 = resolve(Activation("hard_sigmoid_keras3"))(x)
    np.testing.assert_allclose(keras2, np.clip(0.2 * x + 0.5, 0, 1))
    np.testing.assert_allclose(keras3, np.clip(x / 6 + 0.5, 0, 1), rtol=1e-15)
    assert keras2[4] == pytest.approx(0.7)
    assert keras3[4] == pytest.approx(2 / 3)


def test_an_unimplemented_activation_raises_naming_it() -> None:
    activation = Activation("tanh")
    object.__setattr__(activation, "name", "swish")  # bypass the config's validation, as a third party might
    with pytest.raises(NotImplementedOptionError, match="swish"):
        resolve(activation)


# ----------------------------------------------------------------------------------------------------------
# Activations and kink conventions against PyTorch's autograd
# ----------------------------------------------------------------------------------------------------------


def _torch_functions() -> dict[str, Any]:
    torch = pytest.importorskip("torch")
    functional = torch.nn.functional
    return {
        "sigmoid": torch.sigmoid,
        "tanh": torch.tanh,
        "relu": torch.relu,
        "hard_sigmoid_keras2": lambda v: torch.clamp(0.2 * v + 0.5, 0.0, 1.0),  # tf_keras: clip_by_value
        "hard_sigmoid_keras3": functional.hardsigmoid,
        "hard_sigmoid(0.3, 0.45)": lambda v: torch.clamp(0.3 * v + 0.45, 0.0, 1.0),
        "affine(0.8, -0.2)": lambda v: 0.8 * v - 0.2,
        "leaky_relu(0.1)": lambda v: functional.leaky_relu(v, 0.1),
        "thresholded_relu(0.2)": lambda v: functional.threshold(v, 0.2, 0.0),
        "scaled_tanh(1.3, 0.7)": lambda v: 1.3 * torch.tanh(0.7 * v),
        "elu(0.6)": lambda v: functional.elu(v, 0.6),
        "softsign": functional.softsign,
        "softplus": lambda v: functional.softplus(v, threshold=1000.0),  # torch's default returns x above 20
    }


@pytest.mark.parametrize("name", EVERY_ACTIVATION)
def test_activation_and_derivative_match_torch_including_at_kinks(name: str) -> None:
    torch = pytest.importorskip("torch")
    function = resolve(Activation.parse(name))
    kinks = list(function.kinks)
    x = np.concatenate([np.linspace(-40, 40, 161), np.linspace(-4, 4, 801), kinks])
    x_torch = torch.tensor(x, requires_grad=True)
    y_torch = _torch_functions()[name](x_torch)
    y_torch.sum().backward()
    y = function(x)
    np.testing.assert_allclose(y, y_torch.detach().numpy(), rtol=1e-14, atol=1e-15)
    derivative = function.derivative(x if function.needs_input else None, y)
    expected = x_torch.grad.numpy()
    # rtol: torch's hardsigmoid backward multiplies by a float32 1/6 even in float64.
    np.testing.assert_allclose(derivative, expected, rtol=1e-7, atol=1e-15)
    # The side taken at each kink (the last entries of x), with no absolute slack: 0 where torch has 0.
    at_kinks = slice(len(x) - len(kinks), None)
    np.testing.assert_allclose(derivative[at_kinks], expected[at_kinks], rtol=1e-7, atol=0.0)


def test_clip_gradients_pass_on_the_bound_as_torch_clamp() -> None:
    """gate_clip, cell_clip and proj_clip each hit exactly: the gradient passes (inclusive), as with clamp."""
    torch = pytest.importorskip("torch")
    # i = f = o = 1 (affine(0, 1)), g = its pre-activation (affine(1, 0)), act_out identity: c = c0 + x,
    # m = c, h = proj @ m picks unit 0. With x = 0.5 and c0 = 0.25: pre-activations 0.5, c = h = 0.75.
    config = LSTMConfig(
        input_size=1,
        hidden_size=2,
        proj_size=1,
        gate_clip=0.5,
        cell_clip=0.75,
        proj_clip=0.75,
        gate_activation=Activation("affine", 0.0, 1.0),
        cell_input_activation=Activation("affine", 1.0, 0.0),
        cell_output_activation=Activation("affine", 1.0, 0.0),
    )
    layer = LayerWeights(
        W=np.ones((8, 1)), R=np.zeros((8, 1)), Wb=np.zeros(8), Rb=np.zeros(8), proj=np.array([[1.0, 0.0]])
    )
    weights = LSTMWeights(config, [[layer]])
    x, c0 = np.full((1, 1, 1), 0.5), np.full((1, 1, 2), 0.25)
    out, grads = lstm_forward_backward(weights, x, c0=c0, dy=np.ones((1, 1, 1)))
    assert out.y[0, 0, 0] == 0.75
    x_torch = torch.tensor(x, requires_grad=True)
    g = torch.clamp(x_torch * 1.0, -0.5, 0.5)
    c = torch.clamp(torch.tensor(c0) + g, -0.75, 0.75)
    h = torch.clamp(c[..., :1], -0.75, 0.75)
    h.sum().backward()
    assert x_torch.grad.item() == 1.0
    assert grads.x.item() == x_torch.grad.item()
    # Just past each bound the gradient stops.
    _, past = lstm_forward_backward(weights, x * 1.001, c0=c0, dy=np.ones((1, 1, 1)))
    assert past.x.item() == 0.0


# ----------------------------------------------------------------------------------------------------------
# The reference as an Implementation
# ----------------------------------------------------------------------------------------------------------

EVERYTHING = LSTMConfig(
    input_size=2,
    hidden_size=3,
    num_layers=2,
    bidirectional=True,
    proj_size=2,
    bias=False,
    peepholes=True,
    cell_clip=1.0,
    gate_clip=2.0,
    proj_clip=1.0,
    input_forget=True,
    gate_activation=Activation("hard_sigmoid", 0.2, 0.5),
    cell_input_activation=Activation("elu", 1.0),
    cell_output_activation=Activation("hard_sigmoid_keras3"),
)


def test_reference_implementation_runs_every_feature_and_returns_canonical_gradients() -> None:
    implementation = get_implementation("reference")
    assert implementation.name == "reference"
    assert implementation.capabilities().unsupported(EVERYTHING) == []
    weights = random_weights(EVERYTHING, np.random.default_rng(0))
    rng = np.random.default_rng(1)
    inputs = RunInputs(
        x=rng.normal(size=(3, 4, 2)),
        seq_lens=np.array([4, 2, 3]),
        batch_first=True,
        dy=rng.normal(size=(3, 4, 4)),
    )
    result = implementation.run(weights, inputs, RunOptions())
    out, grads = lstm_forward_backward(weights, inputs.x, seq_lens=inputs.seq_lens, dy=inputs.dy, batch_first=True)
    assert result.math_mode == "float64"
    np.testing.assert_array_equal(result.y, out.y)
    assert result.gradients is not None
    np.testing.assert_array_equal(result.gradients.x, grads.x)
    assert result.gradients.native.keys() == weights.named_arrays().keys()
    for key, value in grads.weights.named_arrays().items():
        np.testing.assert_array_equal(result.gradients.native[key], value)
    forward_only = implementation.run(weights, replace(inputs, dy=None), RunOptions())
    assert forward_only.gradients is None
    np.testing.assert_array_equal(forward_only.y, out.y)


def test_reference_implementation_refuses_what_it_does_not_run() -> None:
    implementation = get_implementation("reference")
    weights = random_weights(BASE, np.random.default_rng(0))
    inputs = RunInputs(x=np.zeros((2, 1, 3)))
    with pytest.raises(UnsupportedFeatureError, match="float32"):
        implementation.run(weights, inputs, RunOptions(dtype="float32"))
    with pytest.raises(UnsupportedFeatureError, match="cuda"):
        implementation.run(weights, inputs, RunOptions(device="cuda"))
