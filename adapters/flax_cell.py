"""Flax's LSTM cells (``flax.linen.LSTMCell`` and ``flax.linen.OptimizedLSTMCell``) scanned over time with
``jax.lax.scan``, stacked and made bidirectional here, gradients by ``jax.vjp``.

The layout (Dense layers ``ii``...``ho`` per gate, one bias per gate, native names) is ``adapters.layouts.flax``.
Each cell computes ``i = gate_fn(ii(x) + hi(h))``, likewise f and o, ``g = activation_fn(ig(x) + hg(h))``,
``c' = f*c + i*g``, ``h' = o * activation_fn(c')``, carry ``(c, h)`` (flax 0.12.8, ``flax/linen/recurrent.py``);
``OptimizedLSTMCell`` creates the same parameters and concatenates them into one matmul per side.

Activations: ``gate_fn`` and ``activation_fn`` take any function; this adapter passes JAX's own
(``FLAX_ACTIVATIONS``): ``jax.nn.hard_sigmoid`` is relu6(x + 3) / 6, Keras 3's hard sigmoid. ``activation_fn``
is used for both the cell input and the cell output, so a config where they differ is refused. No
peepholes, clips, projection or input_forget.

Ragged lengths: the carry keeps its value past a sample's length (``jnp.where`` on a mask) and outputs there
are zero; the reverse direction runs over each sample's own valid steps (each sample's first ``len`` steps
are reversed in place before the scan and its outputs put back after).

float64 needs ``jax_enable_x64``, a process-global JAX setting: this adapter turns it on at its first run
(arrays are then cast to the dtype asked for explicitly, so float32 runs stay float32). On a GPU, JAX's
default float32 matmul precision is TF32-like; runs use ``jax.default_matmul_precision("highest")`` unless
``allow_tf32``, and ``math_mode`` says which ran.
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from typing import Any

import numpy as np

from lstm_conformance.adapters.base import (
    Capabilities,
    Gradients,
    Implementation,
    Refusal,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.adapters.layouts.flax import (
    FLAX_ACTIVATIONS,
    FLAX_FEATURES,
    canonical_gradients,
    layer_scope,
    native_names,
    to_flax_params,
)
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights

#: Why Flax's cells lack what they lack, in the refusals' words.
LIMITS: dict[str, str] = {
    "peepholes": "Flax's LSTM cells have no peepholes",
    "proj_size": "Flax's LSTM cells have no proj_size",
}


def _jax_activation(activation: Activation) -> Callable[[Any], Any]:
    import jax
    import jax.numpy as jnp

    simple: dict[str, Callable[[Any], Any]] = {
        "sigmoid": jax.nn.sigmoid,
        "tanh": jnp.tanh,
        "relu": jax.nn.relu,
        "hard_sigmoid_keras3": jax.nn.hard_sigmoid,
        "softsign": jax.nn.soft_sign,
        "softplus": jax.nn.softplus,
    }
    if activation.name in simple:
        return simple[activation.name]
    alpha = activation.alpha
    if activation.name == "elu":
        return lambda x: jax.nn.elu(x, alpha=alpha)
    if activation.name == "leaky_relu":
        return lambda x: jax.nn.leaky_relu(x, negative_slope=alpha)
    raise UnsupportedFeatureError("Flax", f"activation {activation}")


class FlaxLSTMCell(Implementation):
    """``flax.linen.LSTMCell`` scanned with ``jax.lax.scan``."""

    name = "flax"
    framework = "Flax"
    limits = LIMITS
    alternatives = ("flax-optimized",)
    cell_class = "LSTMCell"

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=("float64", "float32"),
            devices=("cpu", "cuda") if self._gpu_available() else ("cpu",),
            gradients=True,
            features=FLAX_FEATURES,
            activations={role: FLAX_ACTIVATIONS for role in ("gate", "cell_input", "cell_output")},
            notes=(
                "one bias per gate: Wb + Rb are summed (exact function)",
                "float64 turns on jax_enable_x64 for the whole process",
                "activation_fn serves both the cell input and the cell output",
            ),
        )

    def unavailable_reason(self) -> str | None:
        for module in ("jax", "flax"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install 'lstm-conformance[jax]')"
        return None

    def _gpu_available(self) -> bool:
        # Import JAX only where a GPU plugin could make it see one.
        plugins = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_plugins")
        if self.unavailable_reason() is not None or not any(importlib.util.find_spec(p) for p in plugins):
            return False
        import jax

        try:
            return bool(jax.devices("gpu"))
        except RuntimeError:
            return False

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        refused = super().refusal(config, inputs, options)
        if refused is None and config.cell_input_activation != config.cell_output_activation:
            limit = f"{self.name}: Flax's one activation_fn serves both cell input and cell output"
            return Refusal("cell_output_activation", limit)
        return refused

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        import jax

        jax.config.update("jax_enable_x64", True)
        device = jax.devices("gpu" if options.device == "cuda" else "cpu")[0]
        precision = "default" if options.allow_tf32 else "highest"
        with jax.default_device(device), jax.default_matmul_precision(precision):
            outputs, grads = self._compute(weights, prepared, options.dtype)
        y, h_n, c_n = (np.asarray(array, dtype=np.float64) for array in outputs)
        gradients = None
        if grads is not None:
            param_grads, grad_x, grad_h0, grad_c0 = grads
            gradients = Gradients(
                x=np.asarray(grad_x, dtype=np.float64),
                h0=np.asarray(grad_h0, dtype=np.float64),
                c0=np.asarray(grad_c0, dtype=np.float64),
                weights=canonical_gradients(weights.config, param_grads),
                native=native_names(param_grads),
            )
        return RunResult(y=y, h_n=h_n, c_n=c_n, math_mode=self._math_mode(options), gradients=gradients)

    @staticmethod
    def _math_mode(options: RunOptions) -> str:
        if options.dtype == "float64" or options.device == "cpu":
            return options.dtype
        return "tf32 (JAX precision DEFAULT)" if options.allow_tf32 else "float32 (JAX precision HIGHEST)"

    def _compute(self, weights: LSTMWeights, prepared: PreparedInputs, dtype: str) -> tuple[Any, Any]:
        """Forward (and with cotangents, the VJP) of the whole network, jitted once per cell and config."""
        import jax
        import jax.numpy as jnp

        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, dtype=dtype), to_flax_params(weights))
        x, h0, c0 = (jnp.asarray(a, dtype=dtype) for a in (prepared.x, prepared.h0, prepared.c0))
        lengths = jnp.asarray(prepared.seq_lens)
        if not prepared.wants_gradients:
            return _compiled(self.cell_class, weights.config, False)(params, x, h0, c0, lengths), None
        cotangents = tuple(jnp.asarray(a, dtype=dtype) for a in (prepared.dy, prepared.dh_n, prepared.dc_n))
        return _compiled(self.cell_class, weights.config, True)(params, x, h0, c0, lengths, cotangents)

    @staticmethod
    def network(cell_class: str, config: LSTMConfig) -> Callable[..., Any]:
        """``f(params, x [T,B,I], h0, c0, lengths [B]) -> (y [T,B,D*H], h_n, c_n)``, traceable."""
        import flax.linen as nn
        import jax
        import jax.numpy as jnp

        cell = getattr(nn, cell_class)(
            features=config.hidden_size,
            gate_fn=_jax_activation(config.gate_activation),
            activation_fn=_jax_activation(config.cell_input_activation),
        )

        def run_direction(cell_params: Any, x: Any, h: Any, c: Any, valid: Any) -> tuple[Any, Any, Any]:
            def step(carry: Any, inputs: Any) -> tuple[Any, Any]:
                x_t, valid_t = inputs
                (new_c, new_h), out = cell.apply({"params": cell_params}, carry, x_t)
                keep = valid_t[:, None]
                c_t, h_t = carry
                return (jnp.where(keep, new_c, c_t), jnp.where(keep, new_h, h_t)), jnp.where(keep, out, 0.0)

            (c_n, h_n), y = jax.lax.scan(step, (c, h), (x, valid))
            return y, h_n, c_n

        def network(params: Any, x: Any, h0: Any, c0: Any, lengths: Any) -> tuple[Any, Any, Any]:
            steps = x.shape[0]
            time = jnp.arange(steps)[:, None]
            valid = time < lengths[None, :]
            # Each sample's own valid steps reversed in place; steps past its length stay put (an involution).
            reverse_index = jnp.where(valid, lengths[None, :] - 1 - time, time)
            batch_index = jnp.arange(x.shape[1])[None, :]
            final_h, final_c = [], []
            layer_input = x
            for layer in range(config.num_layers):
                outputs = []
                for direction in range(config.num_directions):
                    scope, name = layer_scope(layer, direction)
                    state = layer * config.num_directions + direction
                    source = layer_input if direction == 0 else layer_input[reverse_index, batch_index]
                    y, h_n, c_n = run_direction(params[scope][name], source, h0[state], c0[state], valid)
                    outputs.append(y if direction == 0 else y[reverse_index, batch_index])
                    final_h.append(h_n)
                    final_c.append(c_n)
                layer_input = jnp.concatenate(outputs, axis=-1)
            return layer_input, jnp.stack(final_h), jnp.stack(final_c)

        return network


@functools.lru_cache(maxsize=64)
def _compiled(cell_class: str, config: LSTMConfig, gradients: bool) -> Callable[..., Any]:
    """The jitted forward, or forward plus VJP, of one flax.linen cell class and config (jit retraces per dtype and
    shape by itself); cached so that repeated runs of a config compile once per process."""
    import jax

    forward = FlaxLSTMCell.network(cell_class, config)
    if not gradients:
        return jax.jit(forward)

    def forward_and_vjp(params: Any, x: Any, h0: Any, c0: Any, lengths: Any, cotangents: Any) -> Any:
        outputs, pullback = jax.vjp(lambda p, x_, h_, c_: forward(p, x_, h_, c_, lengths), params, x, h0, c0)
        return outputs, pullback(cotangents)

    return jax.jit(forward_and_vjp)


class FlaxOptimizedLSTMCell(FlaxLSTMCell):
    """``flax.linen.OptimizedLSTMCell``: the same parameters, fused into one matmul per side."""

    name = "flax-optimized"
    alternatives = ("flax",)
    cell_class = "OptimizedLSTMCell"
