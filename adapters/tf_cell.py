"""TensorFlow's ``tf.compat.v1.nn.rnn_cell`` LSTMs ("tf-cell"): ``BasicLSTMCell`` and ``LSTMCell``, stacked with
``MultiRNNCell``, run by ``dynamic_rnn`` / ``bidirectional_dynamic_rnn``, eagerly, gradients by ``GradientTape``.

The layout (variable names, the fused kernel, the forget_bias folding) is ``adapters.layouts.tf``. The cells run
under ``tf.device("/CPU:0")``; a bidirectional stack runs one ``bidirectional_dynamic_rnn`` per layer (layer K > 0
reads [fw, bw] of layer K-1, the canonical stacking) under ``stack_bidirectional_rnn/cell_K/``.

TensorFlow is imported inside the functions that use it, never when this module is imported.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import (
    Capabilities,
    Gradients,
    Implementation,
    Refusal,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.adapters.frameworks import import_tensorflow, tensorflow_unavailable_reason
from lstm_conformance.adapters.layouts.tf import (
    CELL_SCOPES,
    LSTM_CELL_ONLY,
    TF_ACTIVATIONS,
    cell_activation,
    choose_cell,
    from_tf_variables,
    to_tf_variables,
)
from lstm_conformance.reference.errors import LSTMConformanceError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import FloatArray, LSTMConfig, LSTMWeights

#: Why the TF cells lack what they lack, in the refusals' words.
LIMITS: dict[str, str] = {
    "gate_clip": "TF's cells clip the cell state (cell_clip), never the gates (gate_clip)",
    "input_forget": "TF's cells have no input_forget (coupled input-forget gate)",
    "gate_activation": "TF's cells have sigmoid gates only",
    "cell_input_activation": f"TF's cell activation is one of {', '.join(sorted(TF_ACTIVATIONS))}",
    "cell_output_activation": f"TF's cell activation is one of {', '.join(sorted(TF_ACTIVATIONS))}",
}
_F64 = NDArray[np.float64]


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
    canonical: Callable[[dict[str, _F64]], LSTMWeights],
) -> Gradients:
    """Gradients of (y, h_n, c_n) against the prepared cotangents: x, h0, c0 (time-major) and every variable by
    its native name, float64, ``canonical`` mapping the latter to the canonical layout. Shared by the tf-cell and
    tf-block adapters; the cotangents are cast to the outputs' dtype."""
    dtype = outputs[0].dtype
    cotangents = [tf.constant(a, dtype=dtype) for a in (prepared.dy, prepared.dh_n, prepared.dc_n)]
    found = tape.gradient(
        list(outputs),
        [*inputs, *variables.values()],
        output_gradients=cotangents,
        unconnected_gradients=tf.UnconnectedGradients.ZERO,
    )
    native = {name: numpy64(g) for name, g in zip(variables, found[3:], strict=True)}
    x, h0, c0 = (numpy64(g) for g in found[:3])
    return Gradients(x=x, h0=h0, c0=c0, weights=canonical(native), native=native)


class TFCell(Implementation):
    """``tf.compat.v1`` BasicLSTMCell / LSTMCell, eager, with ``forget_bias`` and the cell class as options
    (``cell``: "auto" picks BasicLSTMCell unless the config needs LSTMCell)."""

    name = "tf-cell"
    framework = "TensorFlow"
    limits = LIMITS
    alternatives = ("tf-block",)

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

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        # The cell-specific refusals first: they say which TF class lacks what.
        needs_lstm_cell = sorted(LSTM_CELL_ONLY.intersection(config.features()))
        if self.cell == "basic" and needs_lstm_cell:
            feature = needs_lstm_cell[0]
            limit = f"{self.name} (cell='basic'): BasicLSTMCell has no {feature}"
            return Refusal(feature, limit, "run it with cell='lstm'")
        if config.cell_input_activation != config.cell_output_activation:
            limit = f"{self.name}: TF's one cell `activation` serves both cell input and cell output"
            return Refusal("cell_output_activation", limit)
        return super().refusal(config, inputs, options)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        config = weights.config
        cell = choose_cell(config, self.cell)
        tf = import_tensorflow()
        dtype = tf.as_dtype(options.dtype)
        with tf.device("/CPU:0"):
            network = _Network(tf, config, cell, self.forget_bias, dtype)
            x, h0, c0 = (tf.constant(a, dtype=dtype) for a in (prepared.x, prepared.h0, prepared.c0))
            network(x[:1], h0, c0, None)  # creates the variables under their TF names
            variables = _load(network, to_tf_variables(weights, self.forget_bias, cell), options.dtype)
            seq_lens = tf.constant(prepared.seq_lens) if prepared.lengths_given else None
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([x, h0, c0, *variables.values()])
                y, h_n, c_n = network(x, h0, c0, seq_lens)
            gradients = None
            if prepared.wants_gradients:

                def canonical(native: dict[str, _F64]) -> LSTMWeights:
                    return from_tf_variables(config, native, self.forget_bias, cell, gradients=True)

                gradients = tape_gradients(tf, tape, (y, h_n, c_n), prepared, (x, h0, c0), variables, canonical)
        return RunResult(numpy64(y), numpy64(h_n), numpy64(c_n), options.dtype, gradients)


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
