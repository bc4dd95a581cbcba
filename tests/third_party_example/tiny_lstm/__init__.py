"""tiny_lstm: a third party's own LSTM, written independently of lstm-conformance, in plain NumPy.

Its native layout differs from the canonical one on purpose (as a real framework's would): one fused
``kernel`` [I + H, 4H] applied to concat([x, h]), gate blocks in the order (i, g, f, o), and a single ``bias``
[4H]. It runs one unidirectional layer with per-sample lengths, initial states, batch-first input and exact
gradients (hand-written backpropagation through time), in float64 or float32.

``TinyLSTM`` is the correct one; ``TinyLSTMSwappedGates`` has a deliberate bug (it maps the canonical forget
and output gates to each other's blocks), which the conformance suite must catch.

What it implements is the suite's third-party interface (``adapters.base.Implementation``): ``name``,
``capabilities()``, ``unavailable_reason()``, ``run(weights, inputs, options)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Gradients, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.reference.layout import LayerWeights, LSTMConfig, LSTMWeights, reorder_gates

Array = NDArray[Any]

#: This package's gate order, in canonical gate names (i, g = cell input, f, o).
TINY_GATES: tuple[str, ...] = ("i", "g", "f", "o")
CANONICAL_GATES: tuple[str, ...] = ("i", "f", "g", "o")


def _sigmoid(v: Array) -> Array:
    return 0.5 * (1.0 + np.tanh(0.5 * v))


class TinyLSTM(Implementation):
    """A one-layer NumPy LSTM with a fused (i, g, f, o) kernel."""

    name = "tiny-numpy"
    framework = "tiny_lstm (NumPy)"
    #: The gate order this class believes the canonical layout has (the bug variant gets it wrong).
    canonical_order: tuple[str, ...] = CANONICAL_GATES

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float64", "float32"),
            devices=("cpu",),
            gradients=True,
            features=frozenset({"no_bias"}),
            notes=("one unidirectional layer, sigmoid/tanh only",),
        )

    def unavailable_reason(self) -> str | None:
        return None  # NumPy is all it needs

    # -- layout ------------------------------------------------------------------------------------------

    def to_native(self, weights: LSTMWeights, dtype: str) -> dict[str, Array]:
        layer = weights.layers[0][0]
        fused = np.concatenate([layer.W, layer.R], axis=1)  # [4H, I + H], canonical gate rows
        kernel = reorder_gates(fused, self.canonical_order, TINY_GATES, axis=0).T
        bias = reorder_gates(layer.Wb + layer.Rb, self.canonical_order, TINY_GATES, axis=0)
        return {"kernel": kernel.astype(dtype), "bias": bias.astype(dtype)}

    def gradients_to_canonical(self, config: LSTMConfig, native: dict[str, Array]) -> LSTMWeights:
        kernel = reorder_gates(native["kernel"].T, TINY_GATES, self.canonical_order, axis=0)
        bias = reorder_gates(native["bias"], TINY_GATES, self.canonical_order, axis=0)
        inputs = config.input_size
        # bias = Wb + Rb, so each of the two canonical biases gets the whole bias gradient.
        layer = LayerWeights(W=kernel[:, :inputs], R=kernel[:, inputs:], Wb=bias, Rb=bias.copy())
        return LSTMWeights(config, [[layer]])

    # -- running -----------------------------------------------------------------------------------------

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        config = weights.config
        self.check_supported(config, inputs, options)
        prepared = inputs.prepare(config)  # validated, time-major, zeros filled in
        dtype = np.dtype(options.dtype)
        native = self.to_native(weights, options.dtype)
        x = prepared.x.astype(dtype)
        steps = prepared.steps
        mask = (np.arange(steps)[:, None] < prepared.seq_lens[None, :]).astype(dtype)[..., None]  # [T, B, 1]
        trace = _forward(native, x, prepared.h0[0].astype(dtype), prepared.c0[0].astype(dtype), mask)
        y = trace["y"]
        h_n, c_n = trace["h"][-1][None], trace["c"][-1][None]
        gradients = None
        if prepared.wants_gradients:
            # prepare() fills every cotangent in (zeros where not given) when gradients are wanted.
            dy, dh_n, dc_n = (np.asarray(v) for v in (prepared.dy, prepared.dh_n, prepared.dc_n))
            cotangents = (dy.astype(dtype), dh_n[0].astype(dtype), dc_n[0].astype(dtype))
            grads = _backward(native, x, mask, trace, *cotangents)
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
            h_n=np.asarray(h_n, dtype=np.float64),
            c_n=np.asarray(c_n, dtype=np.float64),
            math_mode=options.dtype,
            gradients=gradients,
        )


class TinyLSTMSwappedGates(TinyLSTM):
    """The same LSTM with a layout bug: it takes the canonical order to be (i, o, g, f), swapping f and o."""

    name = "tiny-numpy-swapped"
    canonical_order = ("i", "o", "g", "f")


def _forward(native: dict[str, Array], x: Array, h0: Array, c0: Array, mask: Array) -> dict[str, Any]:
    """Keeps every intermediate the backward pass needs: states (h[0] is h0), gates, and y."""
    kernel, bias = native["kernel"], native["bias"]
    hs, cs, gates, ys = [h0], [c0], [], []
    for t in range(x.shape[0]):
        h, c, m = hs[-1], cs[-1], mask[t]
        z = np.concatenate([x[t], h], axis=1) @ kernel + bias
        zi, zg, zf, zo = np.split(z, 4, axis=1)
        i, g, f, o = _sigmoid(zi), np.tanh(zg), _sigmoid(zf), _sigmoid(zo)
        c_new = f * c + i * g
        h_new = o * np.tanh(c_new)
        gates.append((i, g, f, o, c_new))
        cs.append(m * c_new + (1 - m) * c)  # past a sample's length its state stays frozen
        hs.append(m * h_new + (1 - m) * h)
        ys.append(m * h_new)  # ... and its output is zero
    return {"h": hs, "c": cs, "gates": gates, "y": np.stack(ys)}


def _backward(
    native: dict[str, Array], x: Array, mask: Array, trace: dict[str, Any], dy: Array, dh_n: Array, dc_n: Array
) -> dict[str, Array]:
    kernel = native["kernel"]
    inputs = x.shape[2]
    d_kernel, d_bias, dx = np.zeros_like(kernel), np.zeros_like(native["bias"]), np.zeros_like(x)
    dh, dc = dh_n, dc_n
    for t in reversed(range(x.shape[0])):
        m, h_prev, c_prev = mask[t], trace["h"][t], trace["c"][t]
        i, g, f, o, c_new = trace["gates"][t]
        dh_new = m * (dh + dy[t])
        tanh_c = np.tanh(c_new)
        dc_new = m * dc + dh_new * o * (1 - tanh_c**2)
        dz = np.concatenate(
            [
                dc_new * g * i * (1 - i),
                dc_new * i * (1 - g**2),
                dc_new * c_prev * f * (1 - f),
                dh_new * tanh_c * o * (1 - o),
            ],
            axis=1,
        )
        d_kernel += np.concatenate([x[t], h_prev], axis=1).T @ dz
        d_bias += dz.sum(axis=0)
        d_xh = dz @ kernel.T
        dx[t] = d_xh[:, :inputs]
        dh = (1 - m) * dh + d_xh[:, inputs:]
        dc = (1 - m) * dc + dc_new * f
    return {"kernel": d_kernel, "bias": d_bias, "x": dx, "h0": dh, "c0": dc}
