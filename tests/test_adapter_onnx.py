"""ONNX's LSTM on ONNX Runtime's C++ kernel and on onnx's reference evaluator, against the float64 reference.

ONNX Runtime runs float32: outputs must match to 1e-5 relative. onnx's reference evaluator runs float64 and
must match to 1e-12 where it is faithful; where it ignores an option (``ONNX_REFERENCE_IGNORES``) a test
shows that it differs from the reference and from ONNX Runtime, and fails once onnx implements the option.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnx", reason="onnx is not installed (pip install 'lstm-conformance[onnx]')")
pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (pip install 'lstm-conformance[onnx]')")

from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.onnx_runtime import (
    ONNX_REFERENCE_IGNORES,
    GraphSignature,
    OnnxReferenceLSTM,
    OnnxRuntimeLSTM,
    build_model,
    onnx_reference_ignored,
)
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.layout import ACTIVATION_PARAMETERS, Activation, LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import LSTMOutputs, lstm_forward

ORT_TOLERANCE = 1e-5
FLOAT64_TOLERANCE = 1e-12

#: One example of every canonical activation, with parameters where it takes any.
EXAMPLE_ACTIVATIONS = {
    "sigmoid": Activation("sigmoid"),
    "tanh": Activation("tanh"),
    "relu": Activation("relu"),
    "hard_sigmoid_keras2": Activation("hard_sigmoid_keras2"),
    "hard_sigmoid_keras3": Activation("hard_sigmoid_keras3"),
    "hard_sigmoid": Activation("hard_sigmoid", 0.3, 0.4),
    "affine": Activation("affine", 0.7, 0.1),
    "leaky_relu": Activation("leaky_relu", 0.1),
    "thresholded_relu": Activation("thresholded_relu", 0.2),
    "scaled_tanh": Activation("scaled_tanh", 1.3, 0.7),
    "elu": Activation("elu", 0.8),
    "softsign": Activation("softsign"),
    "softplus": Activation("softplus"),
}


def test_every_activation_has_an_example() -> None:
    assert set(EXAMPLE_ACTIVATIONS) == set(ACTIVATION_PARAMETERS)


class Case:
    """Random weights and inputs for one config (states scaled so that the cell state leaves [-1, 1])."""

    def __init__(
        self,
        config: LSTMConfig,
        seed: int,
        *,
        ragged: bool = False,
        states: bool = True,
        batch_first: bool = False,
        steps: int = 7,
        batch: int = 3,
    ) -> None:
        rng = np.random.default_rng(seed)
        self.weights = random_weights(config, rng, scale=0.6)
        layers_dirs = config.num_layers * config.num_directions
        x = rng.standard_normal((steps, batch, config.input_size))
        self.x = x.swapaxes(0, 1) if batch_first else x
        self.h0 = rng.standard_normal((layers_dirs, batch, config.output_size)) if states else None
        self.c0 = 3.0 * rng.standard_normal((layers_dirs, batch, config.hidden_size)) if states else None
        lengths = rng.integers(1, steps, size=batch)
        lengths[0] = steps
        self.seq_lens = lengths.astype(np.int64) if ragged else None
        self.batch_first = batch_first

    def inputs(self) -> RunInputs:
        return RunInputs(x=self.x, h0=self.h0, c0=self.c0, seq_lens=self.seq_lens, batch_first=self.batch_first)

    def reference(self, weights: LSTMWeights | None = None) -> LSTMOutputs:
        return lstm_forward(
            weights or self.weights, self.x, self.h0, self.c0, self.seq_lens, batch_first=self.batch_first
        )


def relative_errors(result: RunResult, expected: LSTMOutputs) -> dict[str, float]:
    return {
        name: float(
            np.linalg.norm(getattr(result, name) - getattr(expected, name)) / np.linalg.norm(getattr(expected, name))
        )
        for name in ("y", "h_n", "c_n")
    }


def assert_close(result: RunResult, expected: LSTMOutputs, tolerance: float) -> None:
    for name in ("y", "h_n", "c_n"):
        assert getattr(result, name).shape == getattr(expected, name).shape, name
    errors = relative_errors(result, expected)
    assert max(errors.values()) < tolerance, errors


def run_ort(case: Case, weights: LSTMWeights | None = None) -> RunResult:
    return OnnxRuntimeLSTM().run(weights or case.weights, case.inputs(), RunOptions(dtype="float32"))


def run_onnx_reference(case: Case, weights: LSTMWeights | None = None, dtype: str = "float64") -> RunResult:
    return OnnxReferenceLSTM().run(weights or case.weights, case.inputs(), RunOptions(dtype=dtype))


# ----------------------------------------------------------------------------------------------------------
# ONNX Runtime against the reference
# ----------------------------------------------------------------------------------------------------------

ORT_CONFIGS = {
    "plain": (LSTMConfig(3, 5), {}),
    "no-states": (LSTMConfig(3, 5), {"states": False}),
    "two-layers-bidirectional-ragged": (LSTMConfig(3, 5, num_layers=2, bidirectional=True), {"ragged": True}),
    "three-layers-ragged": (LSTMConfig(4, 3, num_layers=3), {"ragged": True}),
    "bidirectional-batch-first-ragged": (LSTMConfig(3, 5, bidirectional=True), {"batch_first": True, "ragged": True}),
    "peepholes-bidirectional-ragged": (LSTMConfig(3, 5, bidirectional=True, peepholes=True), {"ragged": True}),
    "input-forget-peepholes": (LSTMConfig(3, 5, input_forget=True, peepholes=True), {}),
    "no-bias": (LSTMConfig(3, 5, bias=False), {}),
    "clip-peepholes-bidirectional-ragged": (
        LSTMConfig(3, 5, bidirectional=True, peepholes=True, gate_clip=0.4),
        {"ragged": True},
    ),
}


@pytest.mark.parametrize("name", list(ORT_CONFIGS))
def test_onnxruntime_matches_reference(name: str) -> None:
    config, options = ORT_CONFIGS[name]
    case = Case(config, seed=len(name), **options)
    result = run_ort(case)
    assert result.math_mode == "float32"
    assert result.gradients is None
    assert_close(result, case.reference(), ORT_TOLERANCE)


@pytest.mark.parametrize("role", ["gate_activation", "cell_input_activation", "cell_output_activation"])
def test_onnxruntime_runs_every_activation(role: str) -> None:
    """ONNX Runtime's CPU kernel implements all eleven ONNX activations (rnn_helpers.cc), so every canonical
    one, in every role, matches the reference."""
    for index, activation in enumerate(EXAMPLE_ACTIVATIONS.values()):
        change: dict[str, Any] = {role: activation}
        case = Case(replace(LSTMConfig(3, 4), **change), seed=100 + index)
        errors = relative_errors(run_ort(case), case.reference())
        assert max(errors.values()) < ORT_TOLERANCE, (role, str(activation), errors)


def test_onnx_clip_bites_on_gates_and_not_on_the_cell_state() -> None:
    """ONNX's clip bounds the gate pre-activations (the canonical gate_clip); ONNX Runtime does not clip the
    cell state that h() reads, and neither does the reference: with |c| well past the clip both agree."""
    clip = 0.4
    case = Case(LSTMConfig(3, 5, peepholes=True, gate_clip=clip), seed=7, steps=2)
    unclipped = case.reference(replace_config(case.weights, gate_clip=None))
    expected = case.reference()
    assert relative_errors_outputs(expected, unclipped) > 0.05, "the clip must change the function"
    assert np.abs(expected.c_n).max() > 2 * clip, "the cell state must exceed the clip for this test to bite"
    assert_close(run_ort(case), expected, ORT_TOLERANCE)


def test_swapped_gates_fail() -> None:
    """A gate-order mistake in the mapping would show: swapping i and f in the weights changes the output."""
    case = Case(LSTMConfig(3, 5), seed=3)
    swapped = case.weights.map(np.copy)
    hidden = 5
    for array in (swapped.layers[0][0].W, swapped.layers[0][0].R, swapped.layers[0][0].Wb):
        array[: 2 * hidden] = np.concatenate([array[hidden : 2 * hidden], array[:hidden]])
    errors = relative_errors(run_ort(case, swapped), case.reference())
    assert max(errors.values()) > 1e-2


def test_onnxruntime_refuses_what_onnx_cannot_hold() -> None:
    case = Case(LSTMConfig(3, 5), seed=1)
    implementation = OnnxRuntimeLSTM()
    refusals = {
        "proj_size": random_weights(LSTMConfig(3, 5, proj_size=2), np.random.default_rng(0)),
        "cell_clip": replace_config(case.weights, cell_clip=1.0),
    }
    for feature, weights in refusals.items():
        x = np.zeros((2, 1, 3))
        with pytest.raises(UnsupportedFeatureError, match=f"^onnxruntime: .*{feature}"):
            implementation.run(weights, RunInputs(x=x), RunOptions(dtype="float32"))
    with pytest.raises(UnsupportedFeatureError, match=r"^onnxruntime runs float32 only \(.*\); use .* for float64$"):
        implementation.run(case.weights, case.inputs(), RunOptions(dtype="float64"))
    gradients = RunInputs(x=case.x, dy=np.ones((7, 3, 5)))
    with pytest.raises(UnsupportedFeatureError, match="gradients"):
        implementation.run(case.weights, gradients, RunOptions(dtype="float32"))
    capabilities = implementation.capabilities()
    assert capabilities.dtypes == ("float32",)
    assert capabilities.gradients is False


def test_onnxruntime_refuses_layout_1() -> None:
    """ONNX Runtime 1.32's CPU LSTM refuses layout=1, which is why the adapter transposes around layout-0
    nodes. If this starts to pass, ONNX Runtime runs layout=1 and the adapter could use it."""
    import onnxruntime

    model = build_model(Case(LSTMConfig(3, 4), seed=0).weights, GraphSignature(batch_first=True, node_layout=1))
    with pytest.raises(Exception, match="layout == 1"):
        onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def test_registry_names() -> None:
    assert isinstance(get_implementation("onnxruntime"), OnnxRuntimeLSTM)
    assert isinstance(get_implementation("onnx-reference"), OnnxReferenceLSTM)


# ----------------------------------------------------------------------------------------------------------
# onnx's reference evaluator: faithful where it is, and its ignored options shown
# ----------------------------------------------------------------------------------------------------------

FAITHFUL_CONFIGS = {
    "two-layers-bidirectional-peepholes": (LSTMConfig(3, 4, num_layers=2, bidirectional=True, peepholes=True), {}),
    "bidirectional-batch-first-layout-1": (LSTMConfig(3, 4, bidirectional=True), {"batch_first": True}),
    "no-bias-no-states": (LSTMConfig(3, 4, bias=False), {"states": False}),
}


@pytest.mark.parametrize("name", list(FAITHFUL_CONFIGS))
def test_onnx_reference_matches_where_faithful(name: str) -> None:
    config, options = FAITHFUL_CONFIGS[name]
    case = Case(config, seed=len(name), **options)
    assert onnx_reference_ignored(config, ragged=False) == {}
    result = run_onnx_reference(case)
    assert result.math_mode == "float64"
    assert_close(result, case.reference(), FLOAT64_TOLERANCE)
    assert_close(run_onnx_reference(case, dtype="float32"), case.reference(), ORT_TOLERANCE)


IGNORED_CASES = {
    "gate_clip": (LSTMConfig(3, 5, gate_clip=0.3), {}),
    "input_forget": (LSTMConfig(3, 5, input_forget=True), {}),
    "gate_activation": (LSTMConfig(3, 5, gate_activation=Activation("hard_sigmoid_keras2")), {}),
    "cell_input_activation": (LSTMConfig(3, 5, cell_input_activation=Activation("softsign")), {}),
    "cell_output_activation": (LSTMConfig(3, 5, cell_output_activation=Activation("elu", 0.8)), {}),
    "seq_lens": (LSTMConfig(3, 5, bidirectional=True), {"ragged": True}),
}


def test_every_ignored_option_has_a_test() -> None:
    assert set(IGNORED_CASES) == set(ONNX_REFERENCE_IGNORES)


@pytest.mark.parametrize("feature", list(IGNORED_CASES))
def test_onnx_reference_ignores(feature: str) -> None:
    """onnx's reference evaluator accepts the option and computes as if it were absent: it differs from the
    reference while ONNX Runtime agrees. When this test fails, onnx implements the option: remove it from
    ONNX_REFERENCE_IGNORES."""
    config, options = IGNORED_CASES[feature]
    case = Case(config, seed=11, **options)
    ragged = case.seq_lens is not None
    assert feature in onnx_reference_ignored(config, ragged=ragged)
    expected = case.reference()
    assert_close(run_ort(case), expected, ORT_TOLERANCE)

    result = run_onnx_reference(case)
    fixed_message = f"onnx now implements {feature}: remove it from ONNX_REFERENCE_IGNORES"
    assert max(relative_errors(result, expected).values()) > 1e-3, fixed_message
    # What it computes instead: the same model without the option.
    if ragged:
        without = Case(config, seed=11, **options)
        without.seq_lens = None
        as_if_absent = without.reference()
    else:
        as_if_absent = case.reference(replace_config(case.weights, **_default_of(feature)))
    assert_close(result, as_if_absent, FLOAT64_TOLERANCE)


def _default_of(feature: str) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "gate_clip": None,
        "input_forget": False,
        "gate_activation": Activation("sigmoid"),
        "cell_input_activation": Activation("tanh"),
        "cell_output_activation": Activation("tanh"),
    }
    return {feature: defaults[feature]}


# ----------------------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------------------


def replace_config(weights: LSTMWeights, **changes: Any) -> LSTMWeights:
    """The same arrays under a config with ``changes`` (features that add no arrays)."""
    return LSTMWeights.from_named_arrays(replace(weights.config, **changes), weights.named_arrays())


def relative_errors_outputs(a: LSTMOutputs, b: LSTMOutputs) -> float:
    return max(
        float(np.linalg.norm(getattr(a, n) - getattr(b, n)) / np.linalg.norm(getattr(b, n)))
        for n in ("y", "h_n", "c_n")
    )


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider' is not in available provider names")
def test_a_cuda_run_that_onnxruntime_moves_to_the_cpu_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for a provider it cannot start, ONNX Runtime warns and runs on the CPU; the adapter must refuse
    rather than report a CPU run as a cuda one. This onnxruntime lacks the CUDA provider, so the adapter's
    detection of it is overridden to reach the session."""
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has a CUDA provider; the fallback is for builds without one")
    implementation = OnnxRuntimeLSTM()
    monkeypatch.setattr(implementation, "_cuda_available", lambda: True)
    case = Case(LSTMConfig(3, 4), seed=2)
    with pytest.raises(UnsupportedFeatureError, match=r"^onnxruntime: the CUDA execution provider did not start here"):
        implementation.run(case.weights, case.inputs(), RunOptions(dtype="float32", device="cuda", allow_tf32=True))


def test_allow_tf32_on_the_cpu_runs_in_float32_and_says_so() -> None:
    case = Case(LSTMConfig(3, 5), seed=4)
    for implementation in (OnnxRuntimeLSTM(), OnnxReferenceLSTM()):
        result = implementation.run(case.weights, case.inputs(), RunOptions(dtype="float32", allow_tf32=True))
        assert result.math_mode == "float32", implementation.name
        assert_close(result, case.reference(), ORT_TOLERANCE)
