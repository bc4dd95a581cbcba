"""Proof of the reference LSTM's gradients and sequence semantics: central finite differences over
hypothesis-drawn configurations (every option), per-sample length semantics, and PyTorch's nn.LSTM in float64."""

from __future__ import annotations

import functools
import itertools
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from lstm_conformance.reference.layout import ACTIVATION_PARAMETERS, Activation, LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import LSTMGradients, kink_margin, lstm_forward, lstm_forward_backward

F64 = NDArray[np.float64]

#: Finite-difference step, and how far every clip/kink must stay from the evaluation point (both in the
#: units of the values that are clipped: a step of 1e-5 in any input moves them by far less than 1e-3).
STEP = 1e-5
MARGIN = 1e-3
TOLERANCE = 1e-6


@dataclass
class Case:
    """One run: inputs, optional states and lengths, cotangents (None means zero), layout."""

    x: F64
    h0: F64 | None
    c0: F64 | None
    seq_lens: NDArray[np.int64] | None
    dy: F64 | None
    dh_n: F64 | None
    dc_n: F64 | None
    batch_first: bool

    def loss(self, weights: LSTMWeights) -> float:
        """sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n): the function whose gradient backward computes."""
        out = lstm_forward(weights, self.x, self.h0, self.c0, self.seq_lens, batch_first=self.batch_first)
        total = 0.0
        for value, cotangent in ((out.y, self.dy), (out.h_n, self.dh_n), (out.c_n, self.dc_n)):
            if cotangent is not None:
                total += float(np.sum(value * cotangent))
        return total

    def gradients(self, weights: LSTMWeights) -> LSTMGradients:
        _, grads = lstm_forward_backward(
            weights,
            self.x,
            self.h0,
            self.c0,
            self.seq_lens,
            dy=self.dy,
            dh_n=self.dh_n,
            dc_n=self.dc_n,
            batch_first=self.batch_first,
        )
        return grads

    def margin(self, weights: LSTMWeights) -> float:
        return kink_margin(weights, self.x, self.h0, self.c0, self.seq_lens, batch_first=self.batch_first)


def make_case(
    config: LSTMConfig,
    rng: np.random.Generator,
    steps: int,
    batch: int,
    *,
    batch_first: bool = False,
    ragged: bool = True,
    states: tuple[bool, bool] = (True, True),
    cotangents: tuple[bool, bool, bool] = (True, True, True),
) -> Case:
    dirs, layers = config.num_directions, config.num_layers
    time_major_y = (steps, batch, dirs * config.output_size)
    x = rng.normal(size=(steps, batch, config.input_size))
    dy = rng.normal(size=time_major_y) if cotangents[0] else None
    if batch_first:
        x = np.ascontiguousarray(x.swapaxes(0, 1))
        dy = None if dy is None else np.ascontiguousarray(dy.swapaxes(0, 1))
    h_shape = (layers * dirs, batch, config.output_size)
    c_shape = (layers * dirs, batch, config.hidden_size)
    lengths = rng.integers(1, steps + 1, size=batch) if ragged else None
    return Case(
        x=x,
        h0=rng.normal(size=h_shape) if states[0] else None,
        c0=rng.normal(size=c_shape) if states[1] else None,
        seq_lens=lengths,
        dy=dy,
        dh_n=rng.normal(size=h_shape) if cotangents[1] else None,
        dc_n=rng.normal(size=c_shape) if cotangents[2] else None,
        batch_first=batch_first,
    )


# ----------------------------------------------------------------------------------------------------------
# Finite differences
# ----------------------------------------------------------------------------------------------------------


def directional_error(
    loss: Callable[[], float], array: NDArray[Any], analytic: NDArray[Any], direction: NDArray[Any]
) -> float:
    """Relative error of <analytic, direction> against the central difference of ``loss`` along ``direction``
    (``array`` is perturbed in place and restored)."""
    original = array.copy()
    array += STEP * direction
    plus = loss()
    array[...] = original - STEP * direction
    minus = loss()
    array[...] = original
    numeric = (plus - minus) / (2 * STEP)
    exact = float(np.sum(analytic * direction))
    return abs(numeric - exact) / max(abs(numeric), abs(exact), 1e-3)


def gradient_errors(
    weights: LSTMWeights, case: Case, rng: np.random.Generator, elementwise_up_to: int = 12
) -> dict[str, float]:
    """The worst relative error per array: x, h0, c0 and every parameter. Arrays of at most
    ``elementwise_up_to`` elements are checked element by element, larger ones along one random direction."""
    grads = case.gradients(weights)
    # Perturb explicit states (zeros where the case has none: the gradient is taken there).
    dirs, layers, batch = weights.config.num_directions, weights.config.num_layers, grads.h0.shape[1]
    h0 = case.h0 if case.h0 is not None else np.zeros((layers * dirs, batch, weights.config.output_size))
    c0 = case.c0 if case.c0 is not None else np.zeros((layers * dirs, batch, weights.config.hidden_size))
    h0_probe, c0_probe = h0.copy(), c0.copy()
    probe = replace(case, x=case.x.copy(), h0=h0_probe, c0=c0_probe)
    targets: dict[str, tuple[NDArray[Any], NDArray[Any]]] = {
        "x": (probe.x, grads.x),
        "h0": (h0_probe, grads.h0),
        "c0": (c0_probe, grads.c0),
    }
    analytic = grads.weights.named_arrays()
    for key, array in weights.named_arrays().items():
        if not weights.config.bias and key.endswith(("Wb", "Rb")):
            # bias=False: the biases are fixed zeros, not parameters; their canonical gradient is zero.
            assert not analytic[key].any(), key
            continue
        targets[key] = (array, analytic[key])  # the arrays inside ``weights``: perturbing them changes the model

    def loss() -> float:
        return probe.loss(weights)

    errors = {}
    for name, (array, exact) in targets.items():
        assert exact.shape == array.shape, name
        if array.size <= elementwise_up_to:
            worst = 0.0
            for index in np.ndindex(array.shape):
                unit = np.zeros_like(array)
                unit[index] = 1.0
                worst = max(worst, directional_error(loss, array, exact, unit))
            errors[name] = worst
        else:
            errors[name] = directional_error(loss, array, exact, rng.normal(size=array.shape))
    return errors


# ----------------------------------------------------------------------------------------------------------
# Hypothesis strategies: every option of LSTMConfig
# ----------------------------------------------------------------------------------------------------------

PLAIN_ACTIVATIONS = [name for name, params in ACTIVATION_PARAMETERS.items() if not params]


def _parametrized(name: str, alpha: st.SearchStrategy[float], beta: st.SearchStrategy[float] | None = None):
    if beta is None:
        return alpha.map(lambda a: Activation(name, a))
    return st.tuples(alpha, beta).map(lambda ab: Activation(name, ab[0], ab[1]))


def _floats(low: float, high: float) -> st.SearchStrategy[float]:
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


activations = st.one_of(
    *(st.just(Activation(name)) for name in PLAIN_ACTIVATIONS),
    _parametrized("hard_sigmoid", _floats(0.1, 1.0), _floats(0.2, 0.8)),
    _parametrized("affine", _floats(-1.5, 1.5), _floats(-0.5, 0.5)),
    _parametrized("leaky_relu", _floats(0.0, 0.5)),
    _parametrized("thresholded_relu", _floats(-0.5, 1.0)),
    _parametrized("scaled_tanh", _floats(0.5, 1.5), _floats(0.5, 1.5)),
    _parametrized("elu", _floats(0.1, 2.0)),
)


@st.composite
def configs(draw: st.DrawFn) -> LSTMConfig:
    hidden = draw(st.integers(1, 3))
    proj = draw(st.integers(0, hidden - 1))
    maybe_clip = st.none() | _floats(0.2, 1.5)
    return LSTMConfig(
        input_size=draw(st.integers(1, 3)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 2)),
        bidirectional=draw(st.booleans()),
        proj_size=proj,
        bias=draw(st.booleans()),
        peepholes=draw(st.booleans()),
        cell_clip=draw(maybe_clip),
        gate_clip=draw(maybe_clip),
        proj_clip=draw(st.none() | _floats(0.05, 0.6)) if proj else None,
        input_forget=draw(st.booleans()),
        gate_activation=draw(st.sampled_from([Activation("sigmoid")]) | activations),
        cell_input_activation=draw(st.sampled_from([Activation("tanh")]) | activations),
        cell_output_activation=draw(st.sampled_from([Activation("tanh")]) | activations),
    )


@settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
@given(
    config=configs(),
    seed=st.integers(0, 2**32 - 1),
    steps=st.integers(1, 4),
    batch=st.integers(1, 3),
    batch_first=st.booleans(),
    ragged=st.booleans(),
    states=st.tuples(st.booleans(), st.booleans()),
    cotangents=st.sampled_from([c for c in itertools.product([False, True], repeat=3) if any(c)]),
)
def test_gradients_match_finite_differences(
    config: LSTMConfig,
    seed: int,
    steps: int,
    batch: int,
    batch_first: bool,
    ragged: bool,
    states: tuple[bool, bool],
    cotangents: tuple[bool, bool, bool],
) -> None:
    for feature in config.features():  # shown by --hypothesis-show-statistics: what the draws covered
        event(feature.split("(")[0])
    rng = np.random.default_rng(seed)
    weights = random_weights(config, rng, scale=0.9)
    case = make_case(
        config, rng, steps, batch, batch_first=batch_first, ragged=ragged, states=states, cotangents=cotangents
    )
    assume(case.margin(weights) > MARGIN)
    out = lstm_forward(weights, case.x, case.h0, case.c0, case.seq_lens, batch_first=batch_first)
    assume(np.abs(out.y).max(initial=0.0) < 1e3 and np.abs(out.c_n).max() < 1e3)
    errors = gradient_errors(weights, case, rng)
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < TOLERANCE, f"{config}: gradient of {worst} off by {errors[worst]:.2e}"


ALL_OPTIONS = LSTMConfig(
    input_size=2,
    hidden_size=3,
    num_layers=2,
    bidirectional=True,
    proj_size=2,
    peepholes=True,
    cell_clip=0.6,
    gate_clip=0.9,
    proj_clip=0.25,
)


@pytest.mark.parametrize(
    "config",
    [
        ALL_OPTIONS,
        replace(ALL_OPTIONS, input_forget=True, bias=False),
        LSTMConfig(input_size=2, hidden_size=2, bidirectional=True, peepholes=True),
    ],
    ids=["all-options", "input-forget-no-bias", "peepholes"],
)
def test_every_gradient_element_matches_finite_differences(config: LSTMConfig) -> None:
    """Element by element, every array, on configurations that combine every option; clips that bite."""
    for seed in range(20):  # the first seed whose run keeps clear of every clip bound
        rng = np.random.default_rng(seed)
        weights = random_weights(config, rng, scale=1.0)
        case = make_case(config, rng, steps=4, batch=3)
        if case.margin(weights) > MARGIN:
            break
    else:
        pytest.fail("no seed kept the run clear of the clip bounds")
    out = lstm_forward(weights, case.x, case.h0, case.c0, case.seq_lens)
    if config.cell_clip is not None:  # the clips bite on some elements, so their gradients are exercised
        assert np.abs(out.c_n).max() == pytest.approx(config.cell_clip)
    if config.proj_clip is not None:
        assert np.abs(out.h_n).max() == pytest.approx(config.proj_clip)
    errors = gradient_errors(weights, case, rng, elementwise_up_to=10**6)
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < TOLERANCE, f"gradient of {worst} off by {errors[worst]:.2e}"


@pytest.mark.parametrize("role", ["gate_activation", "cell_input_activation", "cell_output_activation"])
@pytest.mark.parametrize(
    "activation",
    [
        *PLAIN_ACTIVATIONS,
        "hard_sigmoid(0.3, 0.45)",
        "affine(0.8, -0.2)",
        "leaky_relu(0.1)",
        "thresholded_relu(0.2)",
        "scaled_tanh(1.3, 0.7)",
        "elu(0.6)",
    ],
)
def test_each_activation_in_each_role_has_exact_gradients(role: str, activation: str) -> None:
    changes: dict[str, Any] = {role: Activation.parse(activation)}
    config = replace(LSTMConfig(input_size=2, hidden_size=2, peepholes=True), **changes)
    for seed in range(50):
        rng = np.random.default_rng(seed)
        weights = random_weights(config, rng, scale=1.0)
        case = make_case(config, rng, steps=3, batch=2)
        if case.margin(weights) > MARGIN:
            break
    else:
        pytest.fail("no seed kept the run clear of the activation's kinks")
    errors = gradient_errors(weights, case, rng, elementwise_up_to=10**6)
    worst = max(errors, key=errors.__getitem__)
    assert errors[worst] < TOLERANCE, f"gradient of {worst} off by {errors[worst]:.2e}"


def test_kink_margin_sees_a_value_on_a_clip_bound() -> None:
    """The guard the finite-difference tests rely on: a pre-activation exactly on the gate clip gives 0."""
    config = LSTMConfig(input_size=1, hidden_size=1, gate_clip=0.5)
    weights = random_weights(config, np.random.default_rng(0))
    layer = weights.layers[0][0]
    layer.W[:] = 1.0
    layer.R[:] = 0.0
    layer.Wb[:] = 0.0
    layer.Rb[:] = 0.0
    x = np.full((1, 1, 1), 0.5)
    assert kink_margin(weights, x) == 0.0
    assert kink_margin(weights, x * 0.5) == pytest.approx(0.25)
    assert kink_margin(replace_config(weights, gate_clip=None), x) == np.inf


def replace_config(weights: LSTMWeights, **changes: Any) -> LSTMWeights:
    return LSTMWeights.from_named_arrays(replace(weights.config, **changes), weights.named_arrays())


# ----------------------------------------------------------------------------------------------------------
# Per-sample lengths
# ----------------------------------------------------------------------------------------------------------

RAGGED_CONFIG = LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, proj_size=2, peepholes=True)


def _sample(array: F64 | None, b: int, steps: int | None = None, axis: int = 1) -> F64 | None:
    """Sample ``b`` of a time-major array (axis 1) or a state (axis 1), kept as a batch of one."""
    if array is None:
        return None
    picked = np.take(array, [b], axis=axis)
    return picked[:steps] if steps is not None else picked


def test_outputs_are_zero_and_states_frozen_past_each_length() -> None:
    rng = np.random.default_rng(7)
    weights = random_weights(RAGGED_CONFIG, rng)
    lengths = np.array([5, 2, 4, 1])
    x = rng.normal(size=(5, 4, 3))
    h0 = rng.normal(size=(4, 4, 2))
    c0 = rng.normal(size=(4, 4, 4))
    out = lstm_forward(weights, x, h0, c0, lengths)
    x_noise = x.copy()
    for b, length in enumerate(lengths):
        assert not out.y[length:, b].any(), f"sample {b}: output past its length {length}"
        alone = lstm_forward(weights, x[:length, [b]], h0[:, [b]], c0[:, [b]])
        np.testing.assert_allclose(out.y[:length, b], alone.y[:, 0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out.h_n[:, b], alone.h_n[:, 0], rtol=1e-13, atol=1e-15)
        np.testing.assert_allclose(out.c_n[:, b], alone.c_n[:, 0], rtol=1e-13, atol=1e-15)
        x_noise[length:, b] = rng.normal(size=(5 - length, 3)) * 100.0
    # What lies past a sample's length is never read (the reverse direction starts at the sample's own end).
    noisy = lstm_forward(weights, x_noise, h0, c0, lengths)
    np.testing.assert_array_equal(noisy.y, out.y)
    np.testing.assert_array_equal(noisy.h_n, out.h_n)


def test_reverse_direction_starts_at_each_samples_own_last_step() -> None:
    config = LSTMConfig(input_size=2, hidden_size=3, bidirectional=True)
    rng = np.random.default_rng(3)
    weights = random_weights(config, rng)
    x = rng.normal(size=(4, 2, 2))
    out = lstm_forward(weights, x, seq_lens=np.array([4, 2]))
    # Reverse output of sample 1 at its own last step (t=1) is its first reverse step: from the zero state,
    # reading x[1] alone; a reverse pass that started at t=3 would have read two padding steps first.
    reverse_only = LSTMWeights(LSTMConfig(input_size=2, hidden_size=3), [[weights.layers[0][1]]])
    first_step = lstm_forward(reverse_only, x[1:2, 1:2])
    np.testing.assert_allclose(out.y[1, 1, 3:], first_step.y[0, 0], rtol=1e-13)
    assert not np.allclose(out.y[1, 1, 3:], out.y[3, 0, 3:])


def test_ragged_gradients_are_the_sums_of_each_sample_run_alone() -> None:
    rng = np.random.default_rng(11)
    weights = random_weights(RAGGED_CONFIG, rng)
    case = make_case(RAGGED_CONFIG, rng, steps=5, batch=3)
    case.seq_lens = np.array([3, 5, 1])
    grads = case.gradients(weights)
    total = {key: np.zeros_like(value) for key, value in grads.weights.named_arrays().items()}
    for b, length in enumerate(case.seq_lens):
        alone = Case(
            x=case.x[:length, [b]],
            h0=_sample(case.h0, b),
            c0=_sample(case.c0, b),
            seq_lens=None,
            dy=_sample(case.dy, b, length),
            dh_n=_sample(case.dh_n, b),
            dc_n=_sample(case.dc_n, b),
            batch_first=False,
        ).gradients(weights)
        np.testing.assert_allclose(grads.x[:length, b], alone.x[:, 0], rtol=1e-12, atol=1e-14)
        assert not grads.x[length:, b].any(), "gradient reaches input past the sample's length"
        np.testing.assert_allclose(grads.h0[:, b], alone.h0[:, 0], rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grads.c0[:, b], alone.c0[:, 0], rtol=1e-12, atol=1e-14)
        for key, value in alone.weights.named_arrays().items():
            total[key] += value
    for key, value in grads.weights.named_arrays().items():
        np.testing.assert_allclose(value, total[key], rtol=1e-11, atol=1e-13, err_msg=key)


def test_batch_first_is_the_transpose_of_time_major() -> None:
    rng = np.random.default_rng(5)
    weights = random_weights(RAGGED_CONFIG, rng)
    case = make_case(RAGGED_CONFIG, rng, steps=4, batch=3)
    assert case.dy is not None
    out_tm, grads_tm = lstm_forward_backward(
        weights, case.x, case.h0, case.c0, case.seq_lens, dy=case.dy, dh_n=case.dh_n, dc_n=case.dc_n
    )
    out_bf, grads_bf = lstm_forward_backward(
        weights,
        case.x.swapaxes(0, 1),
        case.h0,
        case.c0,
        case.seq_lens,
        dy=case.dy.swapaxes(0, 1),
        dh_n=case.dh_n,
        dc_n=case.dc_n,
        batch_first=True,
    )
    np.testing.assert_array_equal(out_bf.y, out_tm.y.swapaxes(0, 1))
    np.testing.assert_array_equal(out_bf.h_n, out_tm.h_n)
    np.testing.assert_array_equal(grads_bf.x, grads_tm.x.swapaxes(0, 1))
    np.testing.assert_array_equal(grads_bf.h0, grads_tm.h0)


def test_forward_of_forward_backward_equals_forward() -> None:
    rng = np.random.default_rng(2)
    config = replace(ALL_OPTIONS, gate_activation=Activation("hard_sigmoid_keras2"))
    weights = random_weights(config, rng)
    case = make_case(config, rng, steps=4, batch=3)
    out = lstm_forward(weights, case.x, case.h0, case.c0, case.seq_lens)
    out2, grads = lstm_forward_backward(weights, case.x, case.h0, case.c0, case.seq_lens)
    np.testing.assert_array_equal(out.y, out2.y)
    np.testing.assert_array_equal(out.c_n, out2.c_n)
    # No cotangent at all: every gradient is zero, shaped like what it is the gradient of.
    assert grads.x.shape == case.x.shape
    assert not grads.x.any()
    assert not any(value.any() for value in grads.weights.named_arrays().values())


# ----------------------------------------------------------------------------------------------------------
# PyTorch nn.LSTM, float64, gradients by autograd
# ----------------------------------------------------------------------------------------------------------


def _torch_module(weights: LSTMWeights) -> tuple[Any, dict[str, str]]:
    """An nn.LSTM holding ``weights``: weight_ih = W, weight_hh = R, bias_ih = Wb, bias_hh = Rb,
    weight_hr = proj (same gate order i, f, g, o; torch/nn/modules/rnn.py)."""
    torch = pytest.importorskip("torch")
    config = weights.config
    module = torch.nn.LSTM(
        config.input_size,
        config.hidden_size,
        config.num_layers,
        bias=config.bias,
        bidirectional=config.bidirectional,
        proj_size=config.proj_size,
    ).double()
    names = {"W": "weight_ih", "R": "weight_hh", "Wb": "bias_ih", "Rb": "bias_hh", "proj": "weight_hr"}
    state = {}
    for layer, per_direction in enumerate(weights.layers):
        for direction, params in enumerate(per_direction):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for name, value in params.items():
                if config.bias or name not in ("Wb", "Rb"):
                    state[names[name] + suffix] = torch.tensor(value)
    module.load_state_dict(state, strict=True)
    return module, names


TORCH_CONFIGS = {
    "one-layer": LSTMConfig(input_size=3, hidden_size=4),
    "stacked-bidirectional": LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
    "projection": LSTMConfig(input_size=3, hidden_size=5, num_layers=2, proj_size=3),
    "everything": LSTMConfig(input_size=2, hidden_size=4, num_layers=3, bidirectional=True, proj_size=2),
    "no-bias": LSTMConfig(input_size=3, hidden_size=4, bidirectional=True, bias=False),
}


@pytest.mark.parametrize("packed", [False, True], ids=["full", "packed"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize("name", list(TORCH_CONFIGS))
def test_matches_pytorch_in_float64(name: str, batch_first: bool, packed: bool) -> None:
    torch = pytest.importorskip("torch")
    config = TORCH_CONFIGS[name]
    # crc32, not hash(): str hashes change with each process (PYTHONHASHSEED), and a failure must reproduce.
    rng = np.random.default_rng(zlib.crc32(f"{name}/{batch_first}/{packed}".encode()))
    weights = random_weights(config, rng)
    steps, batch = 6, 4
    case = make_case(config, rng, steps, batch, batch_first=batch_first, ragged=packed)
    if packed:
        assert case.seq_lens is not None
        case.seq_lens[0] = steps  # pad_packed_sequence pads to the longest; keep T
    module, names = _torch_module(weights)
    x = torch.tensor(case.x, requires_grad=True)
    h0 = torch.tensor(case.h0, requires_grad=True)
    c0 = torch.tensor(case.c0, requires_grad=True)
    if packed:
        packed_x = torch.nn.utils.rnn.pack_padded_sequence(
            x, torch.tensor(case.seq_lens), batch_first=batch_first, enforce_sorted=False
        )
        packed_y, (h_n, c_n) = module(packed_x, (h0, c0))
        y, _ = torch.nn.utils.rnn.pad_packed_sequence(packed_y, batch_first=batch_first, total_length=steps)
    else:
        module.batch_first = batch_first
        y, (h_n, c_n) = module(x, (h0, c0))
    loss = sum((t * torch.tensor(c)).sum() for t, c in ((y, case.dy), (h_n, case.dh_n), (c_n, case.dc_n)))
    loss.backward()

    out, grads = lstm_forward_backward(
        weights,
        case.x,
        case.h0,
        case.c0,
        case.seq_lens,
        dy=case.dy,
        dh_n=case.dh_n,
        dc_n=case.dc_n,
        batch_first=batch_first,
    )
    close = functools.partial(np.testing.assert_allclose, rtol=1e-12, atol=1e-14)
    close(out.y, y.detach().numpy())
    close(out.h_n, h_n.detach().numpy())
    close(out.c_n, c_n.detach().numpy())
    close(grads.x, x.grad.numpy())
    close(grads.h0, h0.grad.numpy())
    close(grads.c0, c0.grad.numpy())
    for layer, per_direction in enumerate(grads.weights.layers):
        for direction, params in enumerate(per_direction):
            suffix = f"_l{layer}" + ("_reverse" if direction else "")
            for param, value in params.items():
                if not config.bias and param in ("Wb", "Rb"):
                    assert not value.any(), "bias=False: no bias parameters, so a zero canonical gradient"
                    continue
                expected = getattr(module, names[param] + suffix).grad.numpy()
                close(value, expected, err_msg=f"{param}{suffix}")
