"""The TensorFlow adapters against the reference, on real TensorFlow: "tf-cell" (tf.compat.v1 BasicLSTMCell /
LSTMCell), "tf-block" (raw BlockLSTM) and "tf-block-v2" (raw BlockLSTMV2).

Outputs and gradients (x, h0, c0, every parameter) must match the float64 reference: 1e-10 relative for tf-cell
in float64, 1e-5 in float32 (the block ops run float32 at best). Random weights, never constants; the clips use
bounds that bite. Sizes are tiny: TensorFlow's import dominates the time.
"""

from __future__ import annotations

import itertools
import warnings
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.layouts.tf import (
    BLOCK_LSTM_GATES,
    BLOCK_LSTM_V2_GATES,
    TF_CELL_GATES,
    folded_bias,
    from_block_gradients,
    fused_kernel,
    native_prefix,
    to_block,
)
from lstm_conformance.adapters.reference_impl import reference_run
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.adapters.tf_block import TFBlock, TFBlockV2
from lstm_conformance.adapters.tf_cell import TFCell
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.layout import GATES, Activation, LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward, lstm_forward_backward

tf = pytest.importorskip("tensorflow", reason="the TF adapters need TensorFlow (pip install tensorflow-cpu tf-keras)")
pytest.importorskip("tf_keras", reason="tf.compat.v1 LSTM cells live in tf-keras (pip install tf-keras)")

pytestmark = pytest.mark.xdist_group("tensorflow")

INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 3
TOLERANCE = {"float64": 1e-10, "float32": 1e-5}


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    scale = max(float(np.linalg.norm(expected)), 1e-300)
    return float(np.linalg.norm(found - expected)) / scale


def _inputs(config: LSTMConfig, rng: np.random.Generator, seq_lens: list[int] | None = None) -> RunInputs:
    states = config.num_layers * config.num_directions
    h_shape = (states, BATCH, config.output_size)
    c_shape = (states, BATCH, config.hidden_size)
    return RunInputs(
        x=rng.normal(size=(STEPS, BATCH, config.input_size)),
        h0=rng.normal(size=h_shape),
        c0=rng.normal(size=c_shape),
        seq_lens=None if seq_lens is None else np.array(seq_lens),
        dy=rng.normal(size=(STEPS, BATCH, config.num_directions * config.output_size)),
        dh_n=rng.normal(size=h_shape),
        dc_n=rng.normal(size=c_shape),
    )


def _errors(implementation: Any, weights: LSTMWeights, inputs: RunInputs, dtype: str) -> dict[str, float]:
    """Relative error of every output and gradient against the reference, by name."""
    found = implementation.run(weights, inputs, RunOptions(dtype=dtype))
    outputs, grads = reference_run(weights, inputs)
    assert found.math_mode == dtype
    assert found.gradients is not None
    errors = {name: _relative(getattr(found, name), getattr(outputs, name)) for name in ("y", "h_n", "c_n")}
    errors.update({f"grad_{n}": _relative(getattr(found.gradients, n), getattr(grads, n)) for n in ("x", "h0", "c0")})
    expected = grads.weights.named_arrays()
    got = found.gradients.weights.named_arrays()
    assert set(got) == set(expected)
    errors.update({f"grad {key}": _relative(got[key], expected[key]) for key in expected})
    return errors


def _assert_close(errors: dict[str, float], tolerance: float) -> None:
    bad = {name: f"{error:.2e}" for name, error in errors.items() if not error <= tolerance}
    assert not bad, f"beyond {tolerance:.0e} relative: {bad}"


def _clip_bites(config: LSTMConfig, weights: LSTMWeights, inputs: RunInputs) -> None:
    """The config's clips change the function for these inputs (else a test of them could not fail)."""
    unclipped = LSTMConfig(
        **{**config.__dict__, "cell_clip": None, "proj_clip": None},
    )
    plain = LSTMWeights(unclipped, weights.layers)
    a = lstm_forward(weights, inputs.x, inputs.h0, inputs.c0, inputs.seq_lens)
    b = lstm_forward(plain, inputs.x, inputs.h0, inputs.c0, inputs.seq_lens)
    assert _relative(a.y, b.y) > 1e-3


# ----------------------------------------------------------------------------------------------------------
# tf-cell
# ----------------------------------------------------------------------------------------------------------

CELL_CASES = {
    "basic": (LSTMConfig(INPUT, HIDDEN), 1.0, None),
    "basic-fb0-ragged": (LSTMConfig(INPUT, HIDDEN), 0.0, [5, 2, 4]),
    "stacked-fb0.5-ragged": (LSTMConfig(INPUT, HIDDEN, num_layers=2), 0.5, [3, 5, 1]),
    "bidirectional-ragged": (LSTMConfig(INPUT, HIDDEN, bidirectional=True), 1.0, [2, 5, 4]),
    "peepholes-cell_clip": (LSTMConfig(INPUT, HIDDEN, peepholes=True, cell_clip=0.4), 1.0, None),
    "proj-proj_clip": (LSTMConfig(INPUT, HIDDEN, proj_size=2, proj_clip=0.05), 0.5, [5, 3, 2]),
    "everything": (
        LSTMConfig(
            INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=3, peepholes=True, cell_clip=0.3, proj_clip=0.1
        ),
        0.0,
        [4, 5, 2],
    ),
    "no_bias": (LSTMConfig(INPUT, HIDDEN, bias=False, num_layers=2), 1.0, None),
    "relu": (
        LSTMConfig(INPUT, HIDDEN, cell_input_activation=Activation("relu"), cell_output_activation=Activation("relu")),
        1.0,
        None,
    ),
}


@pytest.mark.parametrize("case", list(CELL_CASES))
def test_tf_cell_matches_reference_float64(case: str) -> None:
    config, forget_bias, seq_lens = CELL_CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    weights = random_weights(config, rng, scale=0.8)
    inputs = _inputs(config, rng, seq_lens)
    if config.cell_clip or config.proj_clip:
        _clip_bites(config, weights, inputs)
    _assert_close(_errors(TFCell(forget_bias=forget_bias), weights, inputs, "float64"), 1e-10)


@pytest.mark.parametrize("case", ["stacked-fb0.5-ragged", "everything"])
def test_tf_cell_matches_reference_float32(case: str) -> None:
    config, forget_bias, seq_lens = CELL_CASES[case]
    rng = np.random.default_rng(7)
    weights = random_weights(config, rng, scale=0.8)
    _assert_close(_errors(TFCell(forget_bias=forget_bias), weights, _inputs(config, rng, seq_lens), "float32"), 1e-5)


def test_tf_cell_native_gradients_named_and_shaped_as_tf() -> None:
    config = LSTMConfig(INPUT, HIDDEN, num_layers=2, bidirectional=True, proj_size=2, peepholes=True)
    rng = np.random.default_rng(3)
    weights = random_weights(config, rng)
    result = TFCell(cell="lstm").run(weights, _inputs(config, rng), RunOptions())
    assert result.gradients is not None
    native = result.gradients.native
    prefix = "stack_bidirectional_rnn/cell_1/bidirectional_rnn/bw/lstm_cell/"
    assert native_prefix(config, 1, 1, "lstm") == prefix
    assert native[prefix + "kernel"].shape == (2 * 2 + 2, 4 * HIDDEN)
    assert native[prefix + "projection/kernel"].shape == (HIDDEN, 2)
    assert native[prefix + "w_f_diag"].shape == (HIDDEN,)
    assert len(native) == 4 * 6


def test_tf_cell_batch_first_and_forward_only() -> None:
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(11)
    weights = random_weights(config, rng)
    x = rng.normal(size=(BATCH, STEPS, INPUT))
    result = TFCell().run(weights, RunInputs(x=x, batch_first=True), RunOptions())
    expected = lstm_forward(weights, x, batch_first=True)
    assert result.gradients is None
    assert _relative(result.y, expected.y) < 1e-10
    assert result.y.shape == (BATCH, STEPS, HIDDEN)


def test_tf_cell_gate_order_proven_by_experiment() -> None:
    """Of the 24 gate orders, exactly TF_CELL_GATES (i, j, f, o) makes TF's own BasicLSTMCell, stepped once with
    kernel and bias laid out in that order, compute the reference's step."""
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(23)
    weights = random_weights(config, rng, scale=1.0)
    inputs = _inputs(config, rng)
    expected = lstm_forward(weights, inputs.x[:1], inputs.h0, inputs.c0).y[0]
    layer = weights.layers[0][0]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*is deprecated", category=UserWarning)
        cell = tf.compat.v1.nn.rnn_cell.BasicLSTMCell(HIDDEN, forget_bias=0.0, dtype=tf.float64)
    state = tf.compat.v1.nn.rnn_cell.LSTMStateTuple(_first_state(inputs.c0), _first_state(inputs.h0))
    x = tf.constant(inputs.x[0])
    cell(x, state)  # builds kernel and bias
    variables = {v.name.rsplit("/", 1)[-1].removesuffix(":0"): v for v in cell.variables}
    assert set(variables) == {"kernel", "bias"}

    def step(order: tuple[str, ...]) -> np.ndarray:
        variables["kernel"].assign(fused_kernel(layer, order))
        variables["bias"].assign(folded_bias(layer, order, 0.0))
        h, _ = cell(x, state)
        return np.asarray(h.numpy())

    matching = [order for order in itertools.permutations(GATES) if _relative(step(order), expected) < 1e-12]
    assert matching == [TF_CELL_GATES]


def test_tf_cell_refusals_name_the_problem() -> None:
    rng = np.random.default_rng(0)
    peepholes = LSTMConfig(INPUT, HIDDEN, peepholes=True)
    with pytest.raises(
        UnsupportedFeatureError,
        match=r"^tf-cell \(cell='basic'\): BasicLSTMCell has no peepholes; run it with cell='lstm' or use reference",
    ):
        TFCell(cell="basic").run(random_weights(peepholes, rng), _inputs(peepholes, rng), RunOptions())
    mixed = LSTMConfig(INPUT, HIDDEN, cell_input_activation=Activation("relu"))
    with pytest.raises(UnsupportedFeatureError, match=r"^tf-cell: TF's one cell `activation` serves both"):
        TFCell().run(random_weights(mixed, rng), _inputs(mixed, rng), RunOptions())
    clip = LSTMConfig(INPUT, HIDDEN, gate_clip=1.0)
    with pytest.raises(UnsupportedFeatureError, match=r"^tf-cell: .*never the gates \(gate_clip\); use reference$"):
        TFCell().run(random_weights(clip, rng), _inputs(clip, rng), RunOptions())
    plain = LSTMConfig(INPUT, HIDDEN)
    half = r"^tf-cell runs float64 and float32 only; use tf-block for float16$"
    with pytest.raises(UnsupportedFeatureError, match=half):
        TFCell().run(random_weights(plain, rng), _inputs(plain, rng), RunOptions(dtype="float16"))


@pytest.mark.parametrize("implementation", [TFCell, TFBlock])
def test_allow_tf32_on_the_cpu_runs_in_its_dtype_and_says_so(implementation: type) -> None:
    """These adapters run on the CPU only, which has no TF32: float32 math, reported as such."""
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(29)
    weights = random_weights(config, rng)
    x = rng.normal(size=(STEPS, BATCH, INPUT))
    result = implementation().run(weights, RunInputs(x=x), RunOptions(dtype="float32", allow_tf32=True))
    assert result.math_mode == "float32"
    assert _relative(result.y, lstm_forward(weights, x).y) < TOLERANCE["float32"]


def test_registry_builds_the_tf_implementations_with_options() -> None:
    cell = get_implementation("tf-cell", forget_bias=0.5)
    assert isinstance(cell, TFCell)
    assert cell.forget_bias == 0.5
    assert isinstance(get_implementation("tf-block", forget_bias=0.0), TFBlock)
    assert isinstance(get_implementation("tf-block-v2"), TFBlockV2)


# ----------------------------------------------------------------------------------------------------------
# tf-block and tf-block-v2
# ----------------------------------------------------------------------------------------------------------

BLOCK_CASES = {
    "one-layer": LSTMConfig(INPUT, HIDDEN),
    "stacked-bidirectional-peepholes": LSTMConfig(INPUT, HIDDEN, num_layers=2, bidirectional=True, peepholes=True),
    "no_bias": LSTMConfig(INPUT, HIDDEN, bias=False),
}
BLOCK_IMPLEMENTATIONS = {
    "tf-block fb1": lambda: TFBlock(forget_bias=1.0),
    "tf-block fb0": lambda: TFBlock(forget_bias=0.0),
    "tf-block fb0.5": lambda: TFBlock(forget_bias=0.5),
    "tf-block-v2": TFBlockV2,
}


@pytest.mark.parametrize("implementation", list(BLOCK_IMPLEMENTATIONS))
@pytest.mark.parametrize("case", list(BLOCK_CASES))
def test_tf_block_matches_reference_float32(implementation: str, case: str) -> None:
    config = BLOCK_CASES[case]
    rng = np.random.default_rng(sum(map(ord, case + implementation)))
    weights = random_weights(config, rng, scale=0.8)
    inputs = _inputs(config, rng)
    _assert_close(_errors(BLOCK_IMPLEMENTATIONS[implementation](), weights, inputs, "float32"), 1e-5)


@pytest.mark.parametrize("implementation", [TFBlock, TFBlockV2])
def test_tf_block_cell_clip_forward(implementation: type) -> None:
    config = LSTMConfig(INPUT, HIDDEN, num_layers=2, peepholes=True, cell_clip=0.3)
    rng = np.random.default_rng(21)
    weights = random_weights(config, rng, scale=0.8)
    inputs = _inputs(config, rng)
    _clip_bites(config, weights, inputs)
    forward = RunInputs(x=inputs.x, h0=inputs.h0, c0=inputs.c0)
    found = implementation().run(weights, forward, RunOptions(dtype="float32"))
    expected = lstm_forward(weights, inputs.x, inputs.h0, inputs.c0)
    for name in ("y", "h_n", "c_n"):
        assert _relative(getattr(found, name), getattr(expected, name)) < 1e-5, name


def test_tf_block_float16_runs_within_half_precision() -> None:
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(2)
    weights = random_weights(config, rng)
    inputs = _inputs(config, rng)
    found = TFBlock().run(weights, inputs, RunOptions(dtype="float16"))
    expected = lstm_forward(weights, inputs.x, inputs.h0, inputs.c0)
    assert found.math_mode == "float16"
    assert _relative(found.y, expected.y) < 5e-3


def _first_state(states: np.ndarray | None) -> np.ndarray:
    assert states is not None
    return states[0]


def _op_output(tf_op: str, gates: tuple[str, ...], weights: LSTMWeights, inputs: RunInputs) -> np.ndarray:
    """Run a raw op directly on weights laid out in ``gates`` order; h over time."""
    layer = weights.layers[0][0]
    arrays = to_block(layer, gates, 0.0)
    params = {name: tf.constant(a, dtype=tf.float32) for name, a in arrays.items()}
    extra: dict[str, Any] = {"forget_bias": 0.0, "cell_clip": -1.0} if tf_op == "BlockLSTM" else {"cell_clip": 0.0}
    result = getattr(tf.raw_ops, tf_op)(
        seq_len_max=tf.constant(STEPS, tf.int64),
        x=tf.constant(inputs.x, tf.float32),
        cs_prev=tf.constant(_first_state(inputs.c0), tf.float32),
        h_prev=tf.constant(_first_state(inputs.h0), tf.float32),
        use_peephole=False,
        **params,
        **extra,
    )
    return np.asarray(result.h.numpy(), dtype=np.float64)


@pytest.mark.parametrize(("tf_op", "declared"), [("BlockLSTM", BLOCK_LSTM_GATES), ("BlockLSTMV2", BLOCK_LSTM_V2_GATES)])
def test_block_gate_orders_proven_by_experiment(tf_op: str, declared: tuple[str, ...]) -> None:
    """Of the 24 gate orders, exactly the declared one makes the raw op compute the reference's function."""
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(13)
    weights = random_weights(config, rng, scale=1.0)
    inputs = _inputs(config, rng)
    expected = lstm_forward(weights, inputs.x, inputs.h0, inputs.c0).y
    matching = [
        order
        for order in itertools.permutations(("i", "f", "g", "o"))
        if _relative(_op_output(tf_op, order, weights, inputs), expected) < 1e-5
    ]
    assert matching == [declared]


def test_block_gradients_with_cell_clip_are_refused_because_tf_ignores_the_clip() -> None:
    config = LSTMConfig(INPUT, HIDDEN, cell_clip=0.3)
    rng = np.random.default_rng(17)
    weights = random_weights(config, rng, scale=0.8)
    inputs = _inputs(config, rng)
    _clip_bites(config, weights, inputs)
    for implementation in (TFBlock(), TFBlockV2()):
        refused = r"^tf-block(-v2)?: TF's gradient kernels .* cell_clip .*; run it forward only or use tf-cell"
        with pytest.raises(UnsupportedFeatureError, match=refused + "$"):
            implementation.run(weights, inputs, RunOptions(dtype="float32"))
    # The defect itself: TF's BlockLSTMGrad differentiates as if c were never clipped.
    arrays = {
        n: tf.Variable(a.astype(np.float32)) for n, a in to_block(weights.layers[0][0], BLOCK_LSTM_GATES, 0).items()
    }
    x = tf.constant(inputs.x, tf.float32)
    with tf.GradientTape() as tape:
        result = tf.raw_ops.BlockLSTM(
            seq_len_max=tf.constant(STEPS, tf.int64),
            x=x,
            cs_prev=tf.constant(_first_state(inputs.c0), tf.float32),
            h_prev=tf.constant(_first_state(inputs.h0), tf.float32),
            forget_bias=0.0,
            cell_clip=0.3,
            use_peephole=False,
            **arrays,
        )
    found = tape.gradient(result.h, arrays, output_gradients=tf.constant(inputs.dy, tf.float32))
    native = {name: np.asarray(g.numpy(), np.float64) for name, g in found.items()}
    canonical = from_block_gradients(native, BLOCK_LSTM_GATES, INPUT, peepholes=False)
    _, grads = lstm_forward_backward(weights, inputs.x, inputs.h0, inputs.c0, dy=inputs.dy)
    assert _relative(canonical.W, grads.weights.layers[0][0].W) > 1e-2


def test_tf_block_v2_registered_gradient_is_wrong_and_v2_kernel_is_right() -> None:
    """TF registers BlockLSTMGrad (V1's gate layout) as BlockLSTMV2's gradient: wrong; its BlockLSTMGradV2 is exact."""
    config = LSTMConfig(INPUT, HIDDEN)
    rng = np.random.default_rng(19)
    weights = random_weights(config, rng, scale=0.8)
    inputs = _inputs(config, rng)
    registered = _errors(TFBlockV2(registered_gradient=True), weights, inputs, "float32")
    assert registered["y"] < 1e-5
    assert registered["grad_x"] > 1e-2
    assert registered["grad layers.0.forward.W"] > 1e-2
    _assert_close(_errors(TFBlockV2(), weights, inputs, "float32"), 1e-5)


def test_tf_block_refusals_name_the_problem() -> None:
    rng = np.random.default_rng(1)
    plain = LSTMConfig(INPUT, HIDDEN)
    weights = random_weights(plain, rng)
    expected = r"^tf-block runs float32 and float16 only \(TensorFlow's BlockLSTM kernel\); use tf-cell or reference"
    expected += " for float64$"
    with pytest.raises(UnsupportedFeatureError, match=expected):
        TFBlock().run(weights, _inputs(plain, rng), RunOptions(dtype="float64"))
    ragged = r"^tf-block takes no per-sample lengths \(the op has one seq_len_max\); give full lengths"
    with pytest.raises(UnsupportedFeatureError, match=ragged + " or use tf-cell$"):
        TFBlock().run(weights, _inputs(plain, rng, [5, 4, 3]), RunOptions(dtype="float32"))
    projected = LSTMConfig(INPUT, HIDDEN, proj_size=2)
    with pytest.raises(
        UnsupportedFeatureError, match=r"^tf-block-v2: the BlockLSTM ops have no proj_size; use tf-cell$"
    ):
        TFBlockV2().run(random_weights(projected, rng), _inputs(projected, rng), RunOptions(dtype="float32"))
