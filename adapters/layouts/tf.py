"""TensorFlow's layouts: the ``tf.compat.v1.nn.rnn_cell`` cells (``BasicLSTMCell``, ``LSTMCell``) and the fused
``BlockLSTM``/``BlockLSTMV2`` raw ops, which share one fused kernel and one folded bias.

The cells, checked against tf-keras 2.21's ``tf_keras/src/layers/rnn/legacy_cells.py`` (where TF 2.21 keeps
them when ``TF_USE_LEGACY_KERAS=1``):

- ``build``: ``kernel`` ``[I + Hout, 4H]`` (Hout = num_proj when projecting, else H), ``bias`` ``[4H]``;
  LSTMCell adds ``w_f_diag``, ``w_i_diag``, ``w_o_diag`` ``[H]`` (use_peepholes) and ``projection/kernel``
  ``[H, num_proj]``.
- ``call``: ``bias_add(matmul(concat([x, h]), kernel), bias)`` split into ``i, j, f, o`` (canonical i, g, f, o);
  ``c = sigmoid(f + forget_bias + w_f_diag * c_prev) * c_prev + sigmoid(i + w_i_diag * c_prev) * act(j)``;
  ``c = clip(c, cell_clip)``; ``m = sigmoid(o + w_o_diag * c) * act(c)`` (the clipped new c);
  ``m = clip(m @ projection/kernel, proj_clip)``; state ``LSTMStateTuple(c, m)``. One ``activation`` serves
  both the cell input (j) and the cell output; the gates are always ``sigmoid``.

That is the canonical cell exactly. The mapping (``to_tf_cell`` / ``from_tf_cell``; the fused kernel and folded
bias, ``fused_kernel`` / ``folded_bias``, serve the BlockLSTM ops too)::

    kernel             = concat([W, R], axis=1) with gate rows reordered i,f,g,o -> i,g,f,o, transposed
    bias               = Wb + Rb - forget_bias on the f block, reordered the same way
    w_i_diag, w_f_diag, w_o_diag = P rows i, f, o
    projection/kernel  = proj transposed

and back: ``W, R`` from the kernel, ``Wb = bias``, ``Rb = forget_bias`` on the f block and zero elsewhere
(``reference.layout``: TF's run-time forget_bias goes into Rb's forget block), so that TF -> canonical -> TF
gives back the stored bias bit for bit. The gradient of TF's one bias is the gradient of both Wb and Rb.

Variable names are those ``dynamic_rnn`` gives under its default scopes (``native_prefix``):
``rnn/lstm_cell/``, stacked ``rnn/multi_rnn_cell/cell_K/lstm_cell/``, bidirectional
``bidirectional_rnn/fw/lstm_cell/`` and ``.../bw/...``; a bidirectional stack runs one
``bidirectional_dynamic_rnn`` per layer (layer K > 0 reads [fw, bw] of layer K-1, the canonical stacking) under
``stack_bidirectional_rnn/cell_K/`` as tf.contrib's ``stack_bidirectional_dynamic_rnn`` named it.
``BasicLSTMCell`` uses ``basic_lstm_cell`` in place of ``lstm_cell``.

The raw ops (op defs in ``tensorflow/python/ops/gen_rnn_ops.py``) take ``w`` [I + H, 4H] applied to
concat([x, h]), ``b`` [4H] and peepholes ``wci``, ``wcf``, ``wco`` [H] (zeros, unread, without peepholes)::

    op            gate blocks of w and b     forget_bias
    BlockLSTM     i, ci, f, o                attribute, default 1
    BlockLSTMV2   i, f, ci, o                none

(the orders are proven by experiment in ``tests/test_adapter_tf.py``). Their native names (``block_prefix``):
``w``, ``b``, ``wci``, ``wcf``, ``wco`` under ``cell_K/`` for a stack and ``fw/``, ``bw/`` for the directions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import LSTMConformanceError, UnsupportedFeatureError
from lstm_conformance.reference.layout import (
    GATES,
    PEEPHOLES,
    FloatArray,
    LayerWeights,
    LSTMConfig,
    LSTMWeights,
    reorder_gates,
    transposed,
)

F64 = NDArray[np.float64]

#: TF's gate blocks ``i, j, f, o`` in canonical names (BasicLSTMCell.call / LSTMCell.call split order).
TF_CELL_GATES: tuple[str, ...] = ("i", "g", "f", "o")
#: Cell kind -> the variable scope the cell class names itself.
CELL_SCOPES: dict[str, str] = {"basic": "basic_lstm_cell", "lstm": "lstm_cell"}
#: Peephole variable of each canonical peephole row.
PEEPHOLE_VARIABLES: dict[str, str] = {"i": "w_i_diag", "f": "w_f_diag", "o": "w_o_diag"}
PROJECTION_VARIABLE = "projection/kernel"
#: Cell activations TF's ``activation`` argument runs exactly, by canonical name.
TF_ACTIVATIONS: dict[str, str] = {"tanh": "tanh", "relu": "relu", "softsign": "softsign", "softplus": "softplus"}
#: The features of LSTMConfig only LSTMCell (not BasicLSTMCell) holds.
LSTM_CELL_ONLY: frozenset[str] = frozenset({"proj_size", "peepholes", "cell_clip", "proj_clip"})

#: Gate blocks of the raw ops' ``w`` and ``b`` in canonical names.
BLOCK_LSTM_GATES: tuple[str, ...] = ("i", "g", "f", "o")  # BlockLSTM: i, ci, f, o
BLOCK_LSTM_V2_GATES: tuple[str, ...] = ("i", "f", "g", "o")  # BlockLSTMV2: i, f, ci, o
#: The ops' peephole inputs, in canonical PEEPHOLES order (i, f, o).
PEEPHOLE_INPUTS: tuple[str, ...] = ("wci", "wcf", "wco")
PARAMETER_INPUTS: tuple[str, ...] = ("w", "b", *PEEPHOLE_INPUTS)


# ----------------------------------------------------------------------------------------------------------
# Names
# ----------------------------------------------------------------------------------------------------------


def choose_cell(config: LSTMConfig, cell: str) -> str:
    """The cell class a config runs in: "basic" (BasicLSTMCell) or "lstm" (LSTMCell); "auto" picks BasicLSTMCell
    when it holds the config."""
    if cell not in ("auto", "basic", "lstm"):
        raise LSTMConformanceError(f"TF cell kind {cell!r} is not one of 'auto', 'basic', 'lstm'")
    needs_lstm_cell = sorted(LSTM_CELL_ONLY.intersection(config.features()))
    if cell == "basic" and needs_lstm_cell:
        raise UnsupportedFeatureError(
            "TensorFlow BasicLSTMCell", needs_lstm_cell[0], "use LSTMCell (cell='lstm' or 'auto')"
        )
    if cell == "auto":
        return "lstm" if needs_lstm_cell else "basic"
    return cell


def cell_activation(config: LSTMConfig) -> str:
    """TF's one cell ``activation`` for a config, refusing a config whose cell input and output differ."""
    framework = "TensorFlow LSTMCell"
    if config.cell_input_activation != config.cell_output_activation:
        raise UnsupportedFeatureError(
            framework,
            f"cell_input_activation={config.cell_input_activation} with "
            f"cell_output_activation={config.cell_output_activation}",
            "its one `activation` serves both",
        )
    name = str(config.cell_input_activation)
    if name not in TF_ACTIVATIONS:
        raise UnsupportedFeatureError(framework, f"cell activation {name}", f"it runs {sorted(TF_ACTIVATIONS)}")
    return TF_ACTIVATIONS[name]


def default_scope(config: LSTMConfig) -> str:
    """The scope ``dynamic_rnn`` (``rnn``), ``bidirectional_dynamic_rnn`` (``bidirectional_rnn``) or a stack of
    the latter (``stack_bidirectional_rnn``) puts the cells under."""
    if not config.bidirectional:
        return "rnn"
    return "stack_bidirectional_rnn" if config.num_layers > 1 else "bidirectional_rnn"


def native_prefix(config: LSTMConfig, layer: int, direction: int, cell: str, scope: str | None = None) -> str:
    """The variable-name prefix of one cell, ending in ``/`` (``rnn/multi_rnn_cell/cell_1/lstm_cell/``)."""
    outer = scope if scope is not None else default_scope(config)
    cell_scope = CELL_SCOPES[cell]
    if config.bidirectional:
        side = ("fw", "bw")[direction]
        inner = (
            f"{side}/{cell_scope}" if config.num_layers == 1 else f"cell_{layer}/bidirectional_rnn/{side}/{cell_scope}"
        )
    else:
        inner = cell_scope if config.num_layers == 1 else f"multi_rnn_cell/cell_{layer}/{cell_scope}"
    return f"{outer}/{inner}/" if outer else f"{inner}/"


def cell_variable_names(config: LSTMConfig) -> list[str]:
    """The variables one cell of ``config`` has, by their names inside the cell scope."""
    names = ["kernel", "bias"]
    if config.peepholes:
        names += [PEEPHOLE_VARIABLES[row] for row in PEEPHOLES]
    if config.proj_size:
        names.append(PROJECTION_VARIABLE)
    return names


# ----------------------------------------------------------------------------------------------------------
# The shared kernel and bias
# ----------------------------------------------------------------------------------------------------------


def _forget_block(like: FloatArray, value: float) -> FloatArray:
    """A canonical [4H] bias holding ``value`` on the forget block and zero elsewhere, in ``like``'s dtype."""
    block = np.zeros_like(like)
    hidden = like.shape[0] // len(GATES)
    start = GATES.index("f") * hidden
    block[start : start + hidden] = np.asarray(value, dtype=like.dtype)
    return block


def fused_kernel(weights: LayerWeights, gates: Sequence[str]) -> FloatArray:
    """TF's one kernel ``[I + Hout, 4H]`` applied to concat([x, h]): W and R side by side, gate blocks in
    ``gates`` order, transposed. Shared by the cells (``kernel``) and the BlockLSTM ops (``w``)."""
    return transposed(reorder_gates(np.concatenate([weights.W, weights.R], axis=1), GATES, gates))


def split_fused_kernel(kernel: FloatArray, gates: Sequence[str], input_size: int) -> tuple[FloatArray, FloatArray]:
    """Inverse of ``fused_kernel``: canonical (W, R) of a ``[I + Hout, 4H]`` kernel in ``gates`` order."""
    rows = reorder_gates(transposed(kernel), gates, GATES)
    return np.ascontiguousarray(rows[:, :input_size]), np.ascontiguousarray(rows[:, input_size:])


def folded_bias(weights: LayerWeights, gates: Sequence[str], forget_bias: float) -> FloatArray:
    """TF's one bias in ``gates`` order: Wb + Rb less the ``forget_bias`` TF adds to f at run time."""
    # Rb less the run-time forget_bias first: a bias read by from_tf_cell (Rb = the forget block) then comes
    # back bit for bit, -0.0 included.
    recurrent = weights.Rb - _forget_block(weights.Rb, forget_bias)
    bias = weights.Wb + recurrent if recurrent.any() else weights.Wb.copy()
    return reorder_gates(bias, GATES, gates)


def _gradients_of_fused(
    kernel_grad: FloatArray,
    bias_grad: FloatArray,
    gates: Sequence[str],
    input_size: int,
    P: FloatArray | None,
    proj: FloatArray | None = None,
) -> LayerWeights:
    """Canonical gradients of a fused kernel and one bias: the bias's gradient is that of both Wb and Rb."""
    W, R = split_fused_kernel(kernel_grad, gates, input_size)
    bias = reorder_gates(bias_grad, gates, GATES)
    return LayerWeights(W=W, R=R, Wb=bias, Rb=bias.copy(), P=P, proj=proj)


# ----------------------------------------------------------------------------------------------------------
# The cells
# ----------------------------------------------------------------------------------------------------------


def to_tf_cell(weights: LayerWeights, forget_bias: float) -> dict[str, FloatArray]:
    """One canonical layer/direction as TF cell variables (names inside the cell scope, TF's shapes)."""
    arrays: dict[str, FloatArray] = {
        "kernel": fused_kernel(weights, TF_CELL_GATES),
        "bias": folded_bias(weights, TF_CELL_GATES, forget_bias),
    }
    if weights.P is not None:
        for row, name in enumerate(PEEPHOLES):
            arrays[PEEPHOLE_VARIABLES[name]] = weights.P[row].copy()
    if weights.proj is not None:
        arrays[PROJECTION_VARIABLE] = transposed(weights.proj)
    return arrays


def from_tf_cell(arrays: Mapping[str, FloatArray], input_size: int, forget_bias: float) -> LayerWeights:
    """Inverse of ``to_tf_cell``: TF cell variables (names inside the cell scope) as a canonical layer."""
    W, R = split_fused_kernel(arrays["kernel"], TF_CELL_GATES, input_size)
    Wb = reorder_gates(arrays["bias"], TF_CELL_GATES, GATES)
    return LayerWeights(W=W, R=R, Wb=Wb, Rb=_forget_block(Wb, forget_bias), P=_peepholes(arrays), proj=_proj(arrays))


def gradients_from_tf_cell(grads: Mapping[str, FloatArray], input_size: int) -> LayerWeights:
    """Gradients of TF cell variables as canonical gradients; TF's one bias feeds both Wb and Rb."""
    return _gradients_of_fused(
        grads["kernel"], grads["bias"], TF_CELL_GATES, input_size, _peepholes(grads), _proj(grads)
    )


def _peepholes(arrays: Mapping[str, FloatArray]) -> FloatArray | None:
    if PEEPHOLE_VARIABLES["i"] not in arrays:
        return None
    return np.stack([arrays[PEEPHOLE_VARIABLES[row]] for row in PEEPHOLES])


def _proj(arrays: Mapping[str, FloatArray]) -> FloatArray | None:
    return transposed(arrays[PROJECTION_VARIABLE]) if PROJECTION_VARIABLE in arrays else None


def to_tf_variables(
    weights: LSTMWeights, forget_bias: float, cell: str, scope: str | None = None
) -> dict[str, FloatArray]:
    """Every variable of the whole LSTM under its full TF name (``native_prefix`` + cell variable name)."""
    config = weights.config
    return {
        native_prefix(config, layer, direction, cell, scope) + name: array
        for layer, per_direction in enumerate(weights.layers)
        for direction, layer_weights in enumerate(per_direction)
        for name, array in to_tf_cell(layer_weights, forget_bias).items()
    }


def from_tf_variables(
    config: LSTMConfig,
    arrays: Mapping[str, FloatArray],
    forget_bias: float,
    cell: str,
    scope: str | None = None,
    *,
    gradients: bool = False,
) -> LSTMWeights:
    """Inverse of ``to_tf_variables`` (or, with ``gradients``, the canonical gradients of TF variable gradients)."""
    layers = []
    for layer in range(config.num_layers):
        per_direction = []
        for direction in range(config.num_directions):
            prefix = native_prefix(config, layer, direction, cell, scope)
            cell_arrays = {name: arrays[prefix + name] for name in cell_variable_names(config)}
            input_size = config.layer_input_size(layer)
            if gradients:
                per_direction.append(gradients_from_tf_cell(cell_arrays, input_size))
            else:
                per_direction.append(from_tf_cell(cell_arrays, input_size, forget_bias))
        layers.append(per_direction)
    return LSTMWeights(config, layers)


# ----------------------------------------------------------------------------------------------------------
# The BlockLSTM ops
# ----------------------------------------------------------------------------------------------------------


def block_prefix(config: LSTMConfig, layer: int, direction: int) -> str:
    """``cell_K/`` for a stack, then ``fw/``/``bw/`` when bidirectional; "" for one layer, one direction."""
    prefix = f"cell_{layer}/" if config.num_layers > 1 else ""
    return prefix + (("fw/", "bw/")[direction] if config.bidirectional else "")


def to_block(weights: LayerWeights, gates: tuple[str, ...], forget_bias: float) -> dict[str, FloatArray]:
    """One canonical layer/direction as the op's ``w``, ``b``, ``wci``, ``wcf``, ``wco`` (the cells' fused
    kernel and folded bias, in the op's gate order)."""
    hidden = weights.W.shape[0] // len(GATES)
    arrays = {"w": fused_kernel(weights, gates), "b": folded_bias(weights, gates, forget_bias)}
    for row, name in enumerate(PEEPHOLE_INPUTS):
        arrays[name] = weights.P[row].copy() if weights.P is not None else np.zeros(hidden, dtype=weights.W.dtype)
    return arrays


def to_block_variables(weights: LSTMWeights, gates: tuple[str, ...], forget_bias: float) -> dict[str, FloatArray]:
    """Every op input of the whole LSTM under its native name (``block_prefix`` + input name)."""
    config = weights.config
    return {
        block_prefix(config, layer, direction) + name: array
        for layer, per_direction in enumerate(weights.layers)
        for direction, layer_weights in enumerate(per_direction)
        for name, array in to_block(layer_weights, gates, forget_bias).items()
    }


def from_block_gradients(
    grads: Mapping[str, FloatArray], gates: tuple[str, ...], input_size: int, peepholes: bool
) -> LayerWeights:
    """Gradients of the op's inputs as canonical gradients (``b`` feeds both Wb and Rb)."""
    P = np.stack([grads[name] for name in PEEPHOLE_INPUTS]) if peepholes else None
    return _gradients_of_fused(grads["w"], grads["b"], gates, input_size, P)


def block_gradients(config: LSTMConfig, native: Mapping[str, FloatArray], gates: tuple[str, ...]) -> LSTMWeights:
    """Canonical gradients of the whole LSTM from the op inputs' gradients by native name."""
    layers = []
    for layer in range(config.num_layers):
        per_direction = []
        for direction in range(config.num_directions):
            prefix = block_prefix(config, layer, direction)
            grads = {name: native[prefix + name] for name in PARAMETER_INPUTS}
            per_direction.append(from_block_gradients(grads, gates, config.layer_input_size(layer), config.peepholes))
        layers.append(per_direction)
    return LSTMWeights(config, layers)


def present_block_gradients(config: LSTMConfig, native: Mapping[str, F64]) -> dict[str, F64]:
    """Native gradients of the parameters the model has (the peephole inputs only with peepholes)."""
    unread = () if config.peepholes else PEEPHOLE_INPUTS
    return {name: g for name, g in native.items() if name.rsplit("/", 1)[-1] not in unread}
