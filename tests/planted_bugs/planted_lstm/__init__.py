"""planted_lstm: third-party NumPy LSTMs with bugs planted where real kernels branch, and nowhere else.

Each class is ``tiny_lstm.TinyLSTM`` (tests/third_party_example: fused (i, g, f, o) kernel, hand-written
backpropagation) with its forward pass restructured the way an optimized kernel is: a SIMD-style loop over
blocks of 8 units with a tail, a scan in chunks of 256 steps, batches split at 128 samples, a tiled
recurrent product for large layers, an exp guarded against overflow. Each has one bug in one of those paths,
invisible on a toy grid (H <= 6, T <= 60, B <= 4, unsaturated gates): the conformance suite's standard profile
must fail every one of them, and pass ``PlantedCorrect``, which takes every one of those paths correctly.

- ``OddTailBug``: H > 8 and H % 8 != 0: the tail units after the last full block of 8 read the bias of the
  unit 8 places before (a tail loop indexed from the wrong base).
- ``LongSequenceBug``: T > 256: at each chunk boundary the carried cell state skips the forget gate (c_t = i*g
  at t = 256, 512, ...): one step deep in a long sequence.
- ``SaturationBug``: the gates' exp(-z) is guarded by clamping z to [-8, 8]: sigmoid(z) is off by up to 3.4e-4
  once a pre-activation passes 8, which only saturated gates reach.
- ``LargeBatchBug``: B > 128: batch chunks after the first start from a zero cell state (c0 ignored).
- ``LargeHiddenBug``: H >= 512: the tiled recurrent product drops the last unit's recurrent term in its output
  gate: one unit of 512 wrong.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from tiny_lstm import TinyLSTM, _backward, _sigmoid  # type: ignore[import-not-found]  # on sys.path in the tests

from lstm_conformance.adapters.base import Gradients, RunInputs, RunOptions, RunResult
from lstm_conformance.reference.layout import LSTMWeights

Array = NDArray[Any]

VECTOR = 8
CHUNK_STEPS = 256
CHUNK_BATCH = 128
LARGE_HIDDEN = 512
GUARD = 8.0


class PlantedCorrect(TinyLSTM):
    """Every optimized path taken, correctly: must pass."""

    name = "planted-correct"

    # -- the paths a kernel branches into; a bug class overrides one ---------------------------------------

    def tail_bias(self, bias: Array, hidden: int) -> Array:
        """The bias as the tail loop reads it (identity here)."""
        return bias

    def forget_scale(self, step: int) -> float:
        """1.0, or 0.0 where a chunked scan forgets to carry the state through f."""
        return 1.0

    def gate_sigmoid(self, z: Array) -> Array:
        return _sigmoid(z)

    def start_cell(self, c0: Array) -> Array:
        return c0

    def recurrent(self, h: Array, kernel_h: Array) -> Array:
        return h @ kernel_h

    # -- running: TinyLSTM.run with this class's forward pass ---------------------------------------------

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        config = weights.config
        self.check_supported(config, inputs, options)
        prepared = inputs.prepare(config)
        dtype = np.dtype(options.dtype)
        native = self.to_native(weights, options.dtype)
        x = prepared.x.astype(dtype)
        mask = (np.arange(prepared.steps)[:, None] < prepared.seq_lens[None, :]).astype(dtype)[..., None]
        trace = self._forward(native, x, prepared.h0[0].astype(dtype), prepared.c0[0].astype(dtype), mask)
        y = trace["y"]
        gradients = None
        if prepared.wants_gradients:
            dy, dh_n, dc_n = (np.asarray(v) for v in (prepared.dy, prepared.dh_n, prepared.dc_n))
            grads = _backward(native, x, mask, trace, dy.astype(dtype), dh_n[0].astype(dtype), dc_n[0].astype(dtype))
            native_grads = {key: np.asarray(grads[key], dtype=np.float64) for key in ("kernel", "bias")}
            grad_x = grads["x"].swapaxes(0, 1) if inputs.batch_first else grads["x"]
            gradients = Gradients(
                x=np.asarray(grad_x, dtype=np.float64),
                h0=np.asarray(grads["h0"], dtype=np.float64)[None],
                c0=np.asarray(grads["c0"], dtype=np.float64)[None],
                weights=self.gradients_to_canonical(config, native_grads),
                native=native_grads,
            )
        if inputs.batch_first:
            y = y.swapaxes(0, 1)
        return RunResult(
            y=np.asarray(y, dtype=np.float64),
            h_n=np.asarray(trace["h"][-1][None], dtype=np.float64),
            c_n=np.asarray(trace["c"][-1][None], dtype=np.float64),
            math_mode=options.dtype,
            gradients=gradients,
        )

    def _forward(self, native: dict[str, Array], x: Array, h0: Array, c0: Array, mask: Array) -> dict[str, Any]:
        kernel, bias = native["kernel"], native["bias"]
        features, hidden = x.shape[2], kernel.shape[1] // 4
        kernel_x, kernel_h = kernel[:features], kernel[features:]
        bias = self.tail_bias(bias, hidden)
        hs, cs, gates, ys = [h0], [self.start_cell(c0)], [], []
        for t in range(x.shape[0]):
            h, c, m = hs[-1], cs[-1], mask[t]
            z = x[t] @ kernel_x + self.recurrent(h, kernel_h) + bias
            zi, zg, zf, zo = np.split(z, 4, axis=1)
            i, g, o = self.gate_sigmoid(zi), np.tanh(zg), self.gate_sigmoid(zo)
            f = self.gate_sigmoid(zf) * self.forget_scale(t)
            c_new = f * c + i * g
            h_new = o * np.tanh(c_new)
            gates.append((i, g, f, o, c_new))
            cs.append(m * c_new + (1 - m) * c)
            hs.append(m * h_new + (1 - m) * h)
            ys.append(m * h_new)
        return {"h": hs, "c": cs, "gates": gates, "y": np.stack(ys)}


class OddTailBug(PlantedCorrect):
    name = "planted-odd-tail"

    def tail_bias(self, bias: Array, hidden: int) -> Array:
        full = (hidden // VECTOR) * VECTOR
        if hidden <= VECTOR or full == hidden:
            return bias
        read = bias.copy()
        for block in range(4):
            start = block * hidden
            read[start + full : start + hidden] = bias[start + full - VECTOR : start + hidden - VECTOR]
        return read


class LongSequenceBug(PlantedCorrect):
    name = "planted-long-sequence"

    def forget_scale(self, step: int) -> float:
        return 0.0 if step and step % CHUNK_STEPS == 0 else 1.0


class SaturationBug(PlantedCorrect):
    name = "planted-saturation"

    def gate_sigmoid(self, z: Array) -> Array:
        return 1.0 / (1.0 + np.exp(-np.clip(z, -GUARD, GUARD)))


class LargeBatchBug(PlantedCorrect):
    name = "planted-large-batch"

    def start_cell(self, c0: Array) -> Array:
        if c0.shape[0] <= CHUNK_BATCH:
            return c0
        started = c0.copy()
        started[CHUNK_BATCH:] = 0.0
        return started


class LargeHiddenBug(PlantedCorrect):
    name = "planted-large-hidden"

    def recurrent(self, h: Array, kernel_h: Array) -> Array:
        product = h @ kernel_h
        hidden = kernel_h.shape[1] // 4
        if hidden >= LARGE_HIDDEN:
            product[:, 4 * hidden - 1] = 0.0  # the last unit's output gate
        return product


__all__ = [
    "LargeBatchBug",
    "LargeHiddenBug",
    "LongSequenceBug",
    "OddTailBug",
    "PlantedCorrect",
    "SaturationBug",
]
