"""TensorFlow's fused C++ LSTM kernels as raw ops: ``BlockLSTM`` ("tf-block") and ``BlockLSTMV2``
("tf-block-v2"), one op call per layer and direction, gradients by ``GradientTape``.

Both ops (``tf.raw_ops``, op defs in ``tensorflow/python/ops/gen_rnn_ops.py``) take ``x`` [T, B, I],
``cs_prev``, ``h_prev`` [B, H], ``w`` [I + H, 4H] applied to concat([x, h]), ``b`` [4H], peepholes ``wci``,
``wcf``, ``wco`` [H] (read only with ``use_peephole``) and ``cell_clip`` (clips cs when > 0), and return the
whole sequences ``i, cs, f, o, ci, co, h`` [T, B, H]; only float16 and float32. They differ in:

    op            gate blocks of w and b     forget_bias            cell_clip default
    BlockLSTM     i, ci, f, o                attribute, default 1   3.0 (so it is always passed: -1 is off)
    BlockLSTMV2   i, f, ci, o                none                   0.0 (off)

The gate orders are proven by experiment in ``tests/test_adapter_tf.py`` (each of the 24 orders is run against
the reference; exactly the one written here matches). The cell itself is the canonical one: peepholes i and f
read c_{t-1}, o reads the new (clipped) c; ``h = o * tanh(cs)``; ``ci`` is tanh.

The layout (``w``, ``b``, peepholes, gate orders, native names) is ``adapters.layouts.tf``, shared with the cells.
A stack is a chain of op calls (layer K > 0 reads [fw, bw] of layer K-1); the reverse direction runs the op on
the time-reversed input. The ops have one ``seq_len_max`` and no per-sample lengths, so ragged batches are refused.

Two TensorFlow defects, each shown by a test: (1) the gradient kernels (``BlockLSTMGrad``, ``BlockLSTMGradV2``)
take no ``cell_clip`` and differentiate as if c were never clipped, so gradients with ``cell_clip`` are refused;
(2) TF registers ``BlockLSTMGrad`` (V1's i, ci, f, o layout) as the gradient of ``BlockLSTMV2`` too
(``tensorflow/python/ops/rnn_grad.py``), which gives wrong gradients for V2. "tf-block-v2" therefore takes its
gradients from TF's own ``BlockLSTMGradV2`` kernel through ``tf.custom_gradient``; ``registered_gradient=True``
runs TF's registered (wrong) gradient instead, for a report on what training with the raw op computes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import (
    Capabilities,
    Implementation,
    Refusal,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.adapters.frameworks import import_tensorflow, tensorflow_unavailable_reason
from lstm_conformance.adapters.layouts.tf import (
    BLOCK_LSTM_GATES,
    BLOCK_LSTM_V2_GATES,
    PARAMETER_INPUTS,
    block_gradients,
    block_prefix,
    present_block_gradients,
    to_block_variables,
)
from lstm_conformance.adapters.tf_cell import numpy64, tape_gradients
from lstm_conformance.reference.errors import LSTMConformanceError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

#: Why the ops lack what they lack, in the refusals' words.
LIMITS: dict[str, str] = {
    "dtype": "TensorFlow's BlockLSTM kernel",
    "seq_lens": "the op has one seq_len_max",
    "proj_size": "the BlockLSTM ops have no proj_size",
    "proj_clip": "the BlockLSTM ops have no proj_clip",
    "gate_clip": "the BlockLSTM ops clip the cell state (cell_clip), never the gates (gate_clip)",
    "input_forget": "the BlockLSTM ops have no input_forget",
    "gate_activation": "the BlockLSTM ops have sigmoid gates only",
    "cell_input_activation": "the BlockLSTM ops have tanh only",
    "cell_output_activation": "the BlockLSTM ops have tanh only",
}
V2_LIMITS: dict[str, str] = {**LIMITS, "dtype": "TensorFlow's BlockLSTMV2 kernel"}
_F64 = NDArray[np.float64]


class _BlockOp:
    """Calls one of the two ops on canonical-order arguments."""

    gates: tuple[str, ...] = BLOCK_LSTM_GATES
    framework = "TensorFlow BlockLSTM"

    def __init__(self, tf: Any, config: LSTMConfig, forget_bias: float) -> None:
        self.tf, self.config, self.forget_bias = tf, config, forget_bias

    def __call__(self, x: Any, c: Any, h: Any, params: dict[str, Any]) -> tuple[Any, Any]:
        """(h [T, B, H], cs [T, B, H]) of one layer and direction."""
        result = self.tf.raw_ops.BlockLSTM(
            seq_len_max=self.tf.constant(x.shape[0], dtype=self.tf.int64),
            x=x,
            cs_prev=c,
            h_prev=h,
            **params,
            forget_bias=self.forget_bias,
            cell_clip=self.config.cell_clip if self.config.cell_clip is not None else -1.0,
            use_peephole=self.config.peepholes,
        )
        return result.h, result.cs


class _BlockOpV2(_BlockOp):
    gates = BLOCK_LSTM_V2_GATES
    framework = "TensorFlow BlockLSTMV2"

    def __init__(self, tf: Any, config: LSTMConfig, registered_gradient: bool) -> None:
        super().__init__(tf, config, 0.0)
        self.registered_gradient = registered_gradient

    def _op(self, x: Any, c: Any, h: Any, params: dict[str, Any]) -> Any:
        return self.tf.raw_ops.BlockLSTMV2(
            seq_len_max=self.tf.constant(x.shape[0], dtype=self.tf.int64),
            x=x,
            cs_prev=c,
            h_prev=h,
            **params,
            cell_clip=self.config.cell_clip if self.config.cell_clip is not None else 0.0,
            use_peephole=self.config.peepholes,
        )

    def __call__(self, x: Any, c: Any, h: Any, params: dict[str, Any]) -> tuple[Any, Any]:
        if self.registered_gradient:
            result = self._op(x, c, h, params)
            return result.h, result.cs
        return self._with_v2_gradient(x, c, h, *(params[name] for name in PARAMETER_INPUTS))

    def _with_v2_gradient(self, *inputs: Any) -> tuple[Any, Any]:
        """The op, differentiated by TF's BlockLSTMGradV2 kernel (the one written for V2's gate layout)."""
        tf = self.tf
        from tensorflow.python.ops import gen_rnn_ops

        @tf.custom_gradient
        def block(x: Any, c: Any, h: Any, w: Any, b: Any, wci: Any, wcf: Any, wco: Any) -> Any:
            params = {"w": w, "b": b, "wci": wci, "wcf": wcf, "wco": wco}
            out = self._op(x, c, h, params)

            def gradient(h_grad: Any, cs_grad: Any) -> tuple[Any, ...]:
                grads = gen_rnn_ops.block_lstm_grad_v2(
                    seq_len_max=tf.constant(x.shape[0], dtype=tf.int64),
                    x=x,
                    cs_prev=c,
                    h_prev=h,
                    **params,
                    i=out.i,
                    cs=out.cs,
                    f=out.f,
                    o=out.o,
                    ci=out.ci,
                    co=out.co,
                    h=out.h,
                    cs_grad=cs_grad,
                    h_grad=h_grad,
                    use_peephole=self.config.peepholes,
                )
                x_grad, cs_prev_grad, h_prev_grad, w_grad, wci_grad, wcf_grad, wco_grad, b_grad = grads
                return x_grad, cs_prev_grad, h_prev_grad, w_grad, b_grad, wci_grad, wcf_grad, wco_grad

            return (out.h, out.cs), gradient

        h_seq, cs_seq = block(*inputs)
        return h_seq, cs_seq


class TFBlock(Implementation):
    """``tf.raw_ops.BlockLSTM`` (gates i, ci, f, o; ``forget_bias`` attribute, an option here)."""

    name = "tf-block"
    framework = "TensorFlow"
    limits = LIMITS
    alternatives = ("tf-block-v2", "tf-cell")

    def __init__(self, forget_bias: float = 1.0) -> None:
        if not isinstance(forget_bias, int | float) or not np.isfinite(forget_bias):
            raise LSTMConformanceError(f"{self.name}: forget_bias must be a finite number, got {forget_bias!r}")
        self.forget_bias = float(forget_bias)

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float32", "float16"),
            devices=("cpu",),
            features=frozenset({"num_layers", "bidirectional", "peepholes", "cell_clip", "no_bias"}),
            seq_lens=False,
            notes=self._notes(),
        )

    def _notes(self) -> tuple[str, ...]:
        return (
            "float16/float32 only: the op takes no float64",
            "no per-sample lengths (one seq_len_max)",
            "gradients refused with cell_clip: TF's BlockLSTMGrad ignores the clip",
            f"forget_bias={self.forget_bias} attribute (taken off the f bias when loading weights)",
        )

    def unavailable_reason(self) -> str | None:
        return tensorflow_unavailable_reason()

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        refused = super().refusal(config, inputs, options)
        if refused is None and inputs is not None and inputs.wants_gradients and config.cell_clip is not None:
            limit = f"{self.name}: TF's gradient kernels differentiate as if cell_clip never clipped"
            return Refusal("gradients with cell_clip", limit, "run it forward only")
        return refused

    def _op(self, tf: Any, config: LSTMConfig) -> _BlockOp:
        return _BlockOp(tf, config, self.forget_bias)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        config = weights.config
        tf = import_tensorflow()
        dtype = tf.as_dtype(options.dtype)
        with tf.device("/CPU:0"):
            op = self._op(tf, config)
            native_arrays = to_block_variables(weights, op.gates, op.forget_bias)
            params = {
                name: tf.Variable(np.asarray(a, dtype=options.dtype), name=name) for name, a in native_arrays.items()
            }
            x, h0, c0 = (tf.constant(a, dtype=dtype) for a in (prepared.x, prepared.h0, prepared.c0))
            with tf.GradientTape() as tape:
                tape.watch([x, h0, c0])
                y, h_n, c_n = _run_stack(tf, op, config, x, h0, c0, params)
            gradients = None
            if prepared.wants_gradients:
                canonical = functools.partial(block_gradients, config, gates=op.gates)
                gradients = tape_gradients(tf, tape, (y, h_n, c_n), prepared, (x, h0, c0), params, canonical)
                # The op takes peephole inputs whatever the config; the model has them only with peepholes.
                gradients.native = present_block_gradients(config, gradients.native)
        return RunResult(numpy64(y), numpy64(h_n), numpy64(c_n), options.dtype, gradients)


class TFBlockV2(TFBlock):
    """``tf.raw_ops.BlockLSTMV2`` (gates i, f, ci, o; no forget_bias). Gradients by TF's BlockLSTMGradV2 kernel,
    or with ``registered_gradient=True`` by the gradient TF registers for the op (BlockLSTMGrad: wrong gates)."""

    name = "tf-block-v2"
    limits = V2_LIMITS
    alternatives = ("tf-block", "tf-cell")

    def __init__(self, registered_gradient: bool = False) -> None:
        super().__init__(forget_bias=0.0)
        self.registered_gradient = bool(registered_gradient)

    def _notes(self) -> tuple[str, ...]:
        gradient = (
            "gradients by TF's registered gradient (BlockLSTMGrad, V1's gate layout: known wrong)"
            if self.registered_gradient
            else "gradients by TF's BlockLSTMGradV2 kernel (TF registers V1's BlockLSTMGrad for this op)"
        )
        return (
            "float16/float32 only: the op takes no float64",
            "no per-sample lengths (one seq_len_max)",
            "gradients refused with cell_clip: TF's BlockLSTMGradV2 ignores the clip",
            gradient,
        )

    def _op(self, tf: Any, config: LSTMConfig) -> _BlockOp:
        return _BlockOpV2(tf, config, self.registered_gradient)


def _run_stack(
    tf: Any, op: Callable[..., tuple[Any, Any]], config: LSTMConfig, x: Any, h0: Any, c0: Any, params: dict[str, Any]
) -> tuple[Any, Any, Any]:
    """Chain the op over layers and directions: y [T, B, dirs*H], h_n, c_n [L*D, B, H]."""
    layer_input, h_n, c_n = x, [], []
    for layer in range(config.num_layers):
        outputs = []
        for direction in range(config.num_directions):
            index = layer * config.num_directions + direction
            prefix = block_prefix(config, layer, direction)
            cell_params = {name: params[prefix + name] for name in PARAMETER_INPUTS}
            sequence = layer_input if direction == 0 else tf.reverse(layer_input, axis=[0])
            h_seq, cs_seq = op(sequence, c0[index], h0[index], cell_params)
            h_n.append(h_seq[-1])
            c_n.append(cs_seq[-1])
            outputs.append(h_seq if direction == 0 else tf.reverse(h_seq, axis=[0]))
        layer_input = tf.concat(outputs, axis=-1) if len(outputs) > 1 else outputs[0]
    return layer_input, tf.stack(h_n), tf.stack(c_n)
