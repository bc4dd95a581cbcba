"""TensorFlow's ``tf.compat.v1.nn.rnn_cell`` LSTMs ("tf-cell"): ``BasicLSTMCell`` and ``LSTMCell``, stacked with
``MultiRNNCell``, run by ``dynamic_rnn`` / ``bidirectional_dynamic_rnn``, eagerly, gradients by ``GradientTape``.

The layout, checked against tf-keras 2.21's ``tf_keras/src/layers/rnn/legacy_cells.py`` (where TF 2.21 keeps
these cells when ``TF_USE_LEGACY_KERAS=1``):

- ``build``: ``kernel`` ``[I + Hout, 4H]`` (Hout = num_proj when projecting, else H), ``bias`` ``[4H]``;
  LSTMCell adds ``w_f_diag``, ``w_i_diag``, ``w_o_diag`` ``[H]`` (use_peepholes) and ``projection/kernel``
  ``[H, num_proj]``.
- ``call``: ``bias_add(matmul(concat([x, h]), kernel), bias)`` split into ``i, j, f, o`` (canonical i, g, f, o);
  ``c = sigmoid(f + forget_bias + w_f_diag * c_prev) * c_prev + sigmoid(i + w_i_diag * c_prev) * act(j)``;
  ``c = clip(c, cell_clip)``; ``m = sigmoid(o + w_o_diag * c) * act(c)`` (the clipped new c);
  ``m = clip(m @ projection/kernel, proj_clip)``; state ``LSTMStateTuple(c, m)``. One ``activation`` serves
  both the cell input (j) and the cell output; the gates are always ``sigmoid``.

That is the canonical cell exactly. The mapping, written once here (``to_tf_cell`` / ``from_tf_cell``; the
fused kernel and folded bias, ``fused_kernel`` / ``folded_bias``, serve the BlockLSTM ops too)::

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

TensorFlow is imported inside the functions that use it, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Gradients, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.reference.errors import FrameworkMissingError, LSTMConformanceError, UnsupportedFeatureError
from lstm_conformance.reference.inputs import PreparedInputs
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
_F64 = NDArray[np.float64]


# ----------------------------------------------------------------------------------------------------------
# TensorFlow import
# ----------------------------------------------------------------------------------------------------------


def tensorflow_unavailable_reason() -> str | None:
    """None when TensorFlow and tf_keras (which holds the tf.compat.v1 cells) are importable; never imports them."""
    for module, package in (("tensorflow", "tensorflow"), ("tf_keras", "tf-keras")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install 'lstm-conformance[tensorflow]' installs {package})"
    return None


def import_tensorflow() -> Any:
    """Import TensorFlow with its tf.compat.v1 cells available, or raise FrameworkMissingError saying why."""
    reason = tensorflow_unavailable_reason()
    if reason:
        raise FrameworkMissingError(reason)
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    import tensorflow as tf

    if not hasattr(tf.compat.v1.nn.rnn_cell, "LSTMCell"):
        raise FrameworkMissingError(
            "tf.compat.v1.nn.rnn_cell has no LSTMCell: TensorFlow was imported before TF_USE_LEGACY_KERAS=1 was "
            "set; set it in the environment before Python starts"
        )
    return tf


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
# The mapping (one cell)
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
    return LayerWeights(
        W=W,
        R=R,
        Wb=Wb,
        Rb=_forget_block(Wb, forget_bias),
        P=_peepholes(arrays),
        proj=transposed(arrays[PROJECTION_VARIABLE]) if PROJECTION_VARIABLE in arrays else None,
    )


def gradients_from_tf_cell(grads: Mapping[str, FloatArray], input_size: int) -> LayerWeights:
    """Gradients of TF cell variables as canonical gradients; TF's one bias feeds both Wb and Rb."""
    W, R = split_fused_kernel(grads["kernel"], TF_CELL_GATES, input_size)
    bias = reorder_gates(grads["bias"], TF_CELL_GATES, GATES)
    return LayerWeights(
        W=W,
        R=R,
        Wb=bias,
        Rb=bias.copy(),
        P=_peepholes(grads),
        proj=transposed(grads[PROJECTION_VARIABLE]) if PROJECTION_VARIABLE in grads else None,
    )


def _peepholes(arrays: Mapping[str, FloatArray]) -> FloatArray | None:
    if PEEPHOLE_VARIABLES["i"] not in arrays:
        return None
    return np.stack([arrays[PEEPHOLE_VARIABLES[row]] for row in PEEPHOLES])


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
# Running
# ----------------------------------------------------------------------------------------------------------


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


class _Network:
    """The cells of one LSTM and the dynamic_rnn calls that run them, built once and run twice: a one-step run
    creates the variables under their TF names, then the weights are assigned and the real run is taped."""

    def __init__(self, tf: Any, config: LSTMConfig, cell: str, forget_bias: float, dtype: Any) -> None:
        self.tf, self.config, self.dtype = tf, config, dtype
        rnn_cell = tf.compat.v1.nn.rnn_cell
        options: dict[str, Any] = {"forget_bias": forget_bias, "dtype": dtype, "name": CELL_SCOPES[cell]}
        options["activation"] = cell_activation(config)
        if cell == "lstm":
            options.update(
                use_peepholes=config.peepholes,
                cell_clip=config.cell_clip,
                num_proj=config.proj_size or None,
                proj_clip=config.proj_clip,
            )
        cell_class = rnn_cell.LSTMCell if cell == "lstm" else rnn_cell.BasicLSTMCell
        with warnings.catch_warnings():
            # Each construction warns that the tf.compat.v1 cells are deprecated: running them is the point.
            warnings.filterwarnings("ignore", message=r".*is deprecated", category=UserWarning)
            self.cells = [
                [cell_class(config.hidden_size, **options) for _ in range(config.num_directions)]
                for _ in range(config.num_layers)
            ]
            self.stack = None
            if not config.bidirectional and config.num_layers > 1:
                self.stack = rnn_cell.MultiRNNCell([per_direction[0] for per_direction in self.cells])

    def variables(self) -> dict[str, Any]:
        """Every variable by its TF name (without the ``:0``)."""
        found = [v for per_direction in self.cells for c in per_direction for v in c.variables]
        return {v.name.rsplit(":", 1)[0]: v for v in found}

    def __call__(self, x: Any, h0: Any, c0: Any, seq_lens: Any) -> tuple[Any, Any, Any]:
        """y [T, B, dirs*Hout], h_n [L*D, B, Hout], c_n [L*D, B, H] (time-major, PyTorch's state order)."""
        if self.config.bidirectional:
            return self._bidirectional(x, h0, c0, seq_lens)
        tf = self.tf
        state_class = tf.compat.v1.nn.rnn_cell.LSTMStateTuple
        states = [state_class(c0[k], h0[k]) for k in range(self.config.num_layers)]
        cell = self.stack if self.stack is not None else self.cells[0][0]
        initial = tuple(states) if self.stack is not None else states[0]
        y, final = tf.compat.v1.nn.dynamic_rnn(
            cell, x, sequence_length=seq_lens, initial_state=initial, dtype=self.dtype, time_major=True
        )
        finals = list(final) if self.stack is not None else [final]
        return y, tf.stack([s.h for s in finals]), tf.stack([s.c for s in finals])

    def _bidirectional(self, x: Any, h0: Any, c0: Any, seq_lens: Any) -> tuple[Any, Any, Any]:
        tf = self.tf
        state_class = tf.compat.v1.nn.rnn_cell.LSTMStateTuple
        layer_input, h_n, c_n = x, [], []
        for layer, (forward, backward) in enumerate(self.cells):
            fw, bw = 2 * layer, 2 * layer + 1
            scope = (
                tf.compat.v1.variable_scope(f"stack_bidirectional_rnn/cell_{layer}")
                if self.config.num_layers > 1
                else contextlib.nullcontext()
            )
            with scope:
                (y_fw, y_bw), (s_fw, s_bw) = tf.compat.v1.nn.bidirectional_dynamic_rnn(
                    forward,
                    backward,
                    layer_input,
                    sequence_length=seq_lens,
                    initial_state_fw=state_class(c0[fw], h0[fw]),
                    initial_state_bw=state_class(c0[bw], h0[bw]),
                    dtype=self.dtype,
                    time_major=True,
                )
            layer_input = tf.concat([y_fw, y_bw], axis=-1)
            h_n += [s_fw.h, s_bw.h]
            c_n += [s_fw.c, s_bw.c]
        return layer_input, tf.stack(h_n), tf.stack(c_n)


def numpy64(value: Any) -> _F64:
    return np.asarray(value.numpy(), dtype=np.float64)


def tape_gradients(
    tf: Any,
    tape: Any,
    outputs: tuple[Any, Any, Any],
    prepared: PreparedInputs,
    inputs: tuple[Any, Any, Any],
    variables: Mapping[str, Any],
    dtype: Any,
) -> tuple[_F64, _F64, _F64, dict[str, _F64]]:
    """Gradients of (y, h_n, c_n) against the prepared cotangents: x, h0, c0 (time-major) and every variable by
    its native name, float64. Shared by the tf-cell and tf-block adapters."""
    cotangents = [tf.constant(a, dtype=dtype) for a in (prepared.dy, prepared.dh_n, prepared.dc_n)]
    found = tape.gradient(
        list(outputs),
        [*inputs, *variables.values()],
        output_gradients=cotangents,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    native = {name: numpy64(g) for name, g in zip(variables, found[3:], strict=True)}
    return numpy64(found[0]), numpy64(found[1]), numpy64(found[2]), native


class TFCell(Implementation):
    """``tf.compat.v1`` BasicLSTMCell / LSTMCell, eager, with ``forget_bias`` and the cell class as options
    (``cell``: "auto" picks BasicLSTMCell unless the config needs LSTMCell)."""

    name = "tf-cell"
    framework = "TensorFlow"

    def __init__(self, forget_bias: float = 1.0, cell: str = "auto") -> None:
        if not isinstance(forget_bias, int | float) or not np.isfinite(forget_bias):
            raise LSTMConformanceError(f"tf-cell: forget_bias must be a finite number, got {forget_bias!r}")
        if cell not in ("auto", "basic", "lstm"):
            raise LSTMConformanceError(f"tf-cell: cell must be 'auto', 'basic' or 'lstm', got {cell!r}")
        self.forget_bias = float(forget_bias)
        self.cell = cell

    def capabilities(self) -> Capabilities:
        features = {"num_layers", "bidirectional", "no_bias"}
        if self.cell != "basic":
            features |= LSTM_CELL_ONLY
        activations = frozenset(TF_ACTIVATIONS)
        return Capabilities(
            dtypes=("float64", "float32"),
            devices=("cpu",),
            features=frozenset(features),
            activations={"gate": frozenset({"sigmoid"}), "cell_input": activations, "cell_output": activations},
            notes=(
                f"forget_bias={self.forget_bias} added at run time (taken off the f bias when loading weights)",
                "one `activation` for cell input and output: they must be equal",
            ),
        )

    def unavailable_reason(self) -> str | None:
        return tensorflow_unavailable_reason()

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        # The cell-specific refusals first: they say which TF class lacks what.
        choose_cell(config, self.cell)
        cell_activation(config)
        super().check_supported(config, inputs, options)

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        config = weights.config
        self.check_supported(config, inputs, options)
        cell = choose_cell(config, self.cell)
        prepared = inputs.prepare(config)
        tf = import_tensorflow()
        dtype = tf.as_dtype(options.dtype)
        with tf.device("/CPU:0"):
            network = _Network(tf, config, cell, self.forget_bias, dtype)
            x, h0, c0 = (tf.constant(a, dtype=dtype) for a in (prepared.x, prepared.h0, prepared.c0))
            network(x[:1], h0, c0, None)  # creates the variables under their TF names
            variables = _load(network, to_tf_variables(weights, self.forget_bias, cell), options.dtype)
            seq_lens = tf.constant(prepared.seq_lens) if inputs.seq_lens is not None else None
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([x, h0, c0, *variables.values()])
                y, h_n, c_n = network(x, h0, c0, seq_lens)
            gradients = None
            if prepared.wants_gradients:
                grad_x, grad_h0, grad_c0, native = tape_gradients(
                    tf, tape, (y, h_n, c_n), prepared, (x, h0, c0), variables, dtype
                )
                gradients = Gradients(
                    x=grad_x.swapaxes(0, 1) if inputs.batch_first else grad_x,
                    h0=grad_h0,
                    c0=grad_c0,
                    weights=from_tf_variables(config, native, self.forget_bias, cell, gradients=True),
                    native=native,
                )
        y_out = numpy64(y)
        return RunResult(
            y=y_out.swapaxes(0, 1) if inputs.batch_first else y_out,
            h_n=numpy64(h_n),
            c_n=numpy64(c_n),
            math_mode=options.dtype,
            gradients=gradients,
        )


def _load(network: _Network, arrays: Mapping[str, FloatArray], dtype: str) -> dict[str, Any]:
    """Assign ``arrays`` to the network's variables by TF name; the names TF chose must be the ones expected."""
    variables = network.variables()
    if set(variables) != set(arrays):
        raise LSTMConformanceError(
            f"TensorFlow named the cell variables {sorted(variables)}, expected {sorted(arrays)}: the naming in "
            "adapters/tf_cell.py does not match this TensorFlow version"
        )
    for name, array in arrays.items():
        variables[name].assign(np.asarray(array, dtype=dtype))
    return {name: variables[name] for name in arrays}
