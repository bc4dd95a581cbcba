"""The PyTorch adapters ("torch": nn.LSTM, "torch-cell": nn.LSTMCell stepped by the adapter) on the real torch,
against the float64 reference: outputs and every gradient, native <-> canonical round trips, and refusals."""

from __future__ import annotations

import subprocess
import sys
import zlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import Implementation, RunInputs, RunOptions
from lstm_conformance.adapters.layouts.torch import (
    cell_state_key,
    config_from_state_dict,
    from_state_dict,
    native_names,
    state_dict_key,
    to_state_dict,
)
from lstm_conformance.adapters.pytorch import TorchLSTM, TorchLSTMCell
from lstm_conformance.adapters.reference_impl import reference_run
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.reference.errors import LayoutError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights, random_weights

torch: Any = pytest.importorskip("torch")
# torch says that its CPU kernel with proj_size falls back from oneDNN; the fallback is what runs and is checked.
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

#: Tolerances relative to the largest magnitude of the expected array (elementwise, every element).
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}

CONFIGS = {
    "one_layer": LSTMConfig(input_size=3, hidden_size=5),
    "stacked_bidirectional": LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True),
    "projection": LSTMConfig(input_size=3, hidden_size=5, num_layers=2, bidirectional=True, proj_size=2),
    "no_bias": LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bias=False),
}


@dataclass(frozen=True)
class Case:
    """How the inputs of one run are given."""

    ragged: bool
    initial_state: bool
    batch_first: bool


CASES = {
    "ragged_initial_time_major": Case(ragged=True, initial_state=True, batch_first=False),
    "full_zero_state_batch_first": Case(ragged=False, initial_state=False, batch_first=True),
    "ragged_zero_state_batch_first": Case(ragged=True, initial_state=False, batch_first=True),
}
STEPS, BATCH = 5, 4


def make_inputs(config: LSTMConfig, case: Case, rng: np.random.Generator) -> RunInputs:
    states, out = config.num_layers * config.num_directions, config.output_size
    x = rng.normal(size=(STEPS, BATCH, config.input_size))
    dy = rng.normal(size=(STEPS, BATCH, config.num_directions * out))
    if case.batch_first:
        x, dy = x.swapaxes(0, 1).copy(), dy.swapaxes(0, 1).copy()
    return RunInputs(
        x=x,
        h0=rng.normal(size=(states, BATCH, out)) if case.initial_state else None,
        c0=rng.normal(size=(states, BATCH, config.hidden_size)) if case.initial_state else None,
        # lengths out of order, with a full-length and a length-1 sample: packing sorts and unsorts them
        seq_lens=np.array([3, STEPS, 1, 4], dtype=np.int64) if case.ragged else None,
        batch_first=case.batch_first,
        dy=dy,
        dh_n=rng.normal(size=(states, BATCH, out)),
        dc_n=rng.normal(size=(states, BATCH, config.hidden_size)),
    )


def assert_close(name: str, actual: np.ndarray, expected: np.ndarray, tolerance: float) -> None:
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape}, expected {expected.shape}"
    scale = max(float(np.abs(expected).max()), 1e-30)
    error = float(np.abs(actual - expected).max()) / scale
    assert error <= tolerance, f"{name}: max error {error:.3g} relative to max |expected|, tolerance {tolerance}"


def native_module(implementation: Implementation, config: LSTMConfig) -> Any:
    """The real torch module whose state_dict names and shapes the native gradients must have."""
    if isinstance(implementation, TorchLSTMCell):
        return torch.nn.ModuleDict(
            {
                "cells": torch.nn.ModuleList(
                    torch.nn.ModuleList(
                        torch.nn.LSTMCell(config.layer_input_size(layer), config.hidden_size, bias=config.bias)
                        for _ in range(config.num_directions)
                    )
                    for layer in range(config.num_layers)
                )
            }
        )
    return torch.nn.LSTM(
        config.input_size,
        config.hidden_size,
        config.num_layers,
        bias=config.bias,
        bidirectional=config.bidirectional,
        proj_size=config.proj_size,
    )


IMPLEMENTATIONS = {"torch": TorchLSTM, "torch-cell": TorchLSTMCell}
RUNS = [
    pytest.param(impl, config, case, dtype, id=f"{impl}-{config}-{case}-{dtype}")
    for impl in IMPLEMENTATIONS
    for config in CONFIGS
    for case in CASES
    for dtype in TOLERANCE
    if not (impl == "torch-cell" and CONFIGS[config].proj_size)
]


@pytest.mark.parametrize(("impl", "config_name", "case_name", "dtype"), RUNS)
def test_outputs_and_gradients_match_reference(impl: str, config_name: str, case_name: str, dtype: str) -> None:
    config, case = CONFIGS[config_name], CASES[case_name]
    rng = np.random.default_rng(zlib.crc32(f"{impl}{config_name}{case_name}".encode()))
    weights = random_weights(config, rng)
    inputs = make_inputs(config, case, rng)
    implementation = IMPLEMENTATIONS[impl]()
    result = implementation.run(weights, inputs, RunOptions(dtype=dtype))
    expected, expected_grads = reference_run(weights, inputs)
    tolerance = TOLERANCE[dtype]

    assert result.math_mode == dtype
    for name in ("y", "h_n", "c_n"):
        assert_close(name, getattr(result, name), getattr(expected, name), tolerance)
    if case.ragged:  # outputs past a sample's length are exactly zero, as nn.LSTM's padding gives
        y = result.y if not case.batch_first else result.y.swapaxes(0, 1)
        assert inputs.seq_lens is not None
        assert not y[int(inputs.seq_lens[2]) :, 2].any()

    grads = result.gradients
    assert grads is not None
    for name in ("x", "h0", "c0"):
        assert_close(f"grad {name}", getattr(grads, name), getattr(expected_grads, name), tolerance)
    canonical, reference = grads.weights.named_arrays(), expected_grads.weights.named_arrays()
    for key, value in reference.items():
        assert_close(f"grad {key}", canonical[key], value, tolerance)

    key_of = cell_state_key if impl == "torch-cell" else state_dict_key
    module_shapes = {key: tuple(p.shape) for key, p in native_module(implementation, config).state_dict().items()}
    assert {key: value.shape for key, value in grads.native.items()} == module_shapes
    for layer, direction, name, key in native_names(config, key_of):
        expected_native = getattr(expected_grads.weights.layers[layer][direction], name)
        assert_close(f"native grad {key}", grads.native[key], expected_native, tolerance)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_forward_only_and_partial_cotangents(impl: str) -> None:
    config = CONFIGS["stacked_bidirectional"]
    rng = np.random.default_rng(7)
    weights = random_weights(config, rng)
    inputs = make_inputs(config, CASES["ragged_initial_time_major"], rng)
    implementation = IMPLEMENTATIONS[impl]()

    forward = implementation.run(weights, replace(inputs, dy=None, dh_n=None, dc_n=None), RunOptions())
    assert forward.gradients is None
    only_dy = replace(inputs, dh_n=None, dc_n=None)
    result = implementation.run(weights, only_dy, RunOptions())
    _, expected = reference_run(weights, only_dy)
    assert result.gradients is not None
    assert_close("grad x", result.gradients.x, expected.x, 1e-10)
    assert_close("grad W", result.gradients.weights.layers[1][1].R, expected.weights.layers[1][1].R, 1e-10)


def test_a_swapped_gate_is_caught() -> None:
    """The comparison above can fail: swapping the f and g blocks of one matrix moves outputs far past 1e-5."""
    config = CONFIGS["one_layer"]
    rng = np.random.default_rng(3)
    weights = random_weights(config, rng)
    inputs = make_inputs(config, CASES["full_zero_state_batch_first"], rng)
    H = config.hidden_size
    swapped = weights.map(np.copy)
    W = swapped.layers[0][0].W
    W[H : 2 * H], W[2 * H : 3 * H] = W[2 * H : 3 * H].copy(), W[H : 2 * H].copy()
    result = TorchLSTM().run(swapped, inputs, RunOptions())
    expected, _ = reference_run(weights, inputs)
    with pytest.raises(AssertionError, match="max error"):
        assert_close("y", result.y, expected.y, 1e-5)


# ----------------------------------------------------------------------------------------------------------
# Layout mapping
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config_name", CONFIGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_native_canonical_native_is_bit_identical(config_name: str, dtype: Any) -> None:
    config = CONFIGS[config_name]
    torch.manual_seed(11)
    module = native_module(TorchLSTM(), config).to(dtype)
    with torch.no_grad():  # nn.LSTM initializes every parameter uniformly at random; biases too
        for parameter in module.parameters():
            parameter.uniform_(-1, 1)
    state = {key: value.numpy() for key, value in module.state_dict().items()}

    assert config_from_state_dict({key: value.shape for key, value in state.items()}) == config
    canonical = from_state_dict(module.state_dict())
    assert canonical.config == config
    assert canonical.layers[0][0].W.dtype == state["weight_ih_l0"].dtype
    back = to_state_dict(canonical)
    assert list(back) == list(state)  # nn.LSTM's own key order
    for key, value in state.items():
        assert back[key].dtype == value.dtype, key
        assert np.array_equal(back[key], value), key
    module.load_state_dict({key: torch.from_numpy(value) for key, value in back.items()}, strict=True)


def test_each_canonical_parameter_lands_on_its_torch_name() -> None:
    """Checked against nn.LSTM itself: a module loaded from to_state_dict holds each canonical array under
    the attribute torch documents for it (weight_ih_l1_reverse is layer 1's reverse W, ...)."""
    config = CONFIGS["projection"]
    weights = random_weights(config, np.random.default_rng(9))
    module = native_module(TorchLSTM(), config).double()
    module.load_state_dict({k: torch.from_numpy(v) for k, v in to_state_dict(weights).items()}, strict=True)
    layer1_reverse = weights.layers[1][1]
    assert np.array_equal(module.weight_ih_l1_reverse.detach().numpy(), layer1_reverse.W)
    assert np.array_equal(module.weight_hh_l1_reverse.detach().numpy(), layer1_reverse.R)
    assert np.array_equal(module.bias_ih_l1_reverse.detach().numpy(), layer1_reverse.Wb)
    assert np.array_equal(module.bias_hh_l1_reverse.detach().numpy(), layer1_reverse.Rb)
    assert layer1_reverse.proj is not None
    assert np.array_equal(module.weight_hr_l1_reverse.detach().numpy(), layer1_reverse.proj)


# ----------------------------------------------------------------------------------------------------------
# Refusals, availability, math mode
# ----------------------------------------------------------------------------------------------------------

REFUSED = {
    "peepholes": LSTMConfig(3, 4, peepholes=True),
    "cell_clip": LSTMConfig(3, 4, cell_clip=3.0),
    "gate_clip": LSTMConfig(3, 4, gate_clip=3.0),
    "input_forget": LSTMConfig(3, 4, input_forget=True),
    "hard_sigmoid_keras2": LSTMConfig(3, 4, gate_activation=Activation("hard_sigmoid_keras2")),
    "relu": LSTMConfig(3, 4, cell_output_activation=Activation("relu")),
}


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("feature", REFUSED)
def test_features_pytorch_lacks_are_refused_by_name(impl: str, feature: str) -> None:
    config = REFUSED[feature]
    weights = random_weights(config, np.random.default_rng(0))
    inputs = RunInputs(x=np.zeros((2, 1, 3)))
    with pytest.raises(UnsupportedFeatureError, match=rf"^{impl}: nn\.LSTM(Cell)?\b.*; use reference$") as raised:
        IMPLEMENTATIONS[impl]().run(weights, inputs, RunOptions())
    assert raised.value.framework == impl
    assert feature in raised.value.feature
    with pytest.raises(UnsupportedFeatureError, match=feature):
        to_state_dict(weights)


def test_torch_cell_refuses_projection() -> None:
    weights = random_weights(CONFIGS["projection"], np.random.default_rng(0))
    with pytest.raises(
        UnsupportedFeatureError, match=r"^torch-cell: nn.LSTMCell has no proj_size; use torch or reference$"
    ):
        TorchLSTMCell().run(weights, RunInputs(x=np.zeros((2, 1, 3))), RunOptions())


def test_bias_false_with_nonzero_biases_is_refused() -> None:
    config = CONFIGS["no_bias"]
    weights = random_weights(replace(config, bias=True), np.random.default_rng(0))
    weights = LSTMWeights(config, weights.layers)
    with pytest.raises(LayoutError, match=r"layers.0.forward.Wb is nonzero but the config has bias=False"):
        TorchLSTM().run(weights, RunInputs(x=np.zeros((2, 1, 3))), RunOptions())
    with pytest.raises(LayoutError, match="bias=False"):
        to_state_dict(weights)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA; the refusal is for machines without")
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_cuda_without_a_gpu_is_refused(impl: str) -> None:
    weights = random_weights(CONFIGS["one_layer"], np.random.default_rng(0))
    with pytest.raises(UnsupportedFeatureError, match=r"^torch(-cell)?: torch.cuda.is_available\(\) is False"):
        IMPLEMENTATIONS[impl]().run(weights, RunInputs(x=np.zeros((2, 1, 3))), RunOptions(device="cuda"))


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_precision_on_cpu_is_refused(dtype: str) -> None:
    weights = random_weights(CONFIGS["one_layer"], np.random.default_rng(0))
    with pytest.raises(
        UnsupportedFeatureError, match=r"^torch runs float16 and bfloat16 on cuda only; run it on cuda$"
    ):
        TorchLSTM().run(weights, RunInputs(x=np.zeros((2, 1, 3))), RunOptions(dtype=dtype))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_cuda_sets_and_reports_tf32_and_restores_it(impl: str) -> None:
    config = CONFIGS["stacked_bidirectional"]
    rng = np.random.default_rng(2)
    weights = random_weights(config, rng)
    inputs = make_inputs(config, CASES["ragged_initial_time_major"], rng)
    expected, expected_grads = reference_run(weights, inputs)
    before = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    implementation = IMPLEMENTATIONS[impl]()
    for allow_tf32, mode, tolerance in [(False, "float32", 1e-5), (True, "tf32", 1e-2)]:
        result = implementation.run(weights, inputs, RunOptions("float32", "cuda", allow_tf32))
        assert result.math_mode == mode
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == before
        assert_close("y", result.y, expected.y, tolerance)
        assert result.gradients is not None
        assert_close("grad x", result.gradients.x, expected_grads.x, tolerance)
    double = implementation.run(weights, inputs, RunOptions("float64", "cuda"))
    assert double.math_mode == "float64"
    assert_close("y", double.y, expected.y, 1e-10)
    for dtype, tolerance in [("float16", 2e-2), ("bfloat16", 1e-1)]:
        half = implementation.run(weights, inputs, RunOptions(dtype, "cuda"))
        assert half.math_mode == dtype
        assert_close("y", half.y, expected.y, tolerance)


def test_registry_and_availability_do_not_import_torch() -> None:
    assert isinstance(get_implementation("torch"), TorchLSTM)
    assert isinstance(get_implementation("torch-cell"), TorchLSTMCell)
    assert TorchLSTM().unavailable_reason() is None
    script = (
        "import sys, lstm_conformance.adapters.pytorch as p, lstm_conformance.adapters.formats.torch_file as f\n"
        "assert p.TorchLSTM().unavailable_reason() is None and f.TorchFormat().unavailable_reason() is None\n"
        "p.TorchLSTM().capabilities(); p.TorchLSTMCell().capabilities()\n"
        "sys.exit('torch' in sys.modules)\n"
    )
    assert subprocess.run([sys.executable, "-c", script], check=False).returncode == 0, "torch imported eagerly"


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_allow_tf32_on_the_cpu_runs_in_its_dtype_and_says_so(impl: str) -> None:
    """A CPU has no TF32: the run computes in float32 to float32's accuracy and reports math mode float32."""
    config = CONFIGS["one_layer"]
    rng = np.random.default_rng(6)
    weights = random_weights(config, rng)
    inputs = make_inputs(config, CASES["ragged_initial_time_major"], rng)
    result = IMPLEMENTATIONS[impl]().run(weights, inputs, RunOptions("float32", "cpu", allow_tf32=True))
    expected, _ = reference_run(weights, inputs)
    assert result.math_mode == "float32"
    assert_close("y", result.y, expected.y, TOLERANCE["float32"])
