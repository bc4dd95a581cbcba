"""Flax's layout: the parameters of ``flax.linen.LSTMCell`` (and ``OptimizedLSTMCell``, which creates the same),
one cell per layer and direction.

Checked against flax 0.12.8, ``flax/linen/recurrent.py``: each cell has Dense layers ``ii``, ``if``, ``ig``,
``io`` (input side, no bias, kernel [I, H]) and ``hi``, ``hf``, ``hg``, ``ho`` (hidden side, kernel [H, H],
bias [H]); ``Dense`` computes ``x @ kernel + bias``. So ``ii.kernel = W_i.T``, ``hi.kernel = R_i.T`` for each
gate, and ``hi.bias = Wb_i + Rb_i``: Flax has one bias per gate, converting two biases sums them (the function
is exact; the split between Wb and Rb is lost), and the gradient of each canonical bias is that one bias's.

Native parameter names: ``layers_{k}/{forward|reverse}/{ii|if|ig|io|hi|hf|hg|ho}/{kernel|bias}``, e.g.
``layers_0/forward/ii/kernel`` [I, H].
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.layout import DIRECTIONS, GATES, LayerWeights, LSTMConfig, LSTMWeights

#: Flax's Dense layer names per canonical gate: input side (no bias) and hidden side (with bias).
INPUT_DENSE: dict[str, str] = {"i": "ii", "f": "if", "g": "ig", "o": "io"}
HIDDEN_DENSE: dict[str, str] = {"i": "hi", "f": "hf", "g": "hg", "o": "ho"}

#: Canonical activations the flax adapter gives Flax as JAX's own functions (``jax.nn.hard_sigmoid`` is
#: relu6(x + 3) / 6, Keras 3's hard sigmoid).
FLAX_ACTIVATIONS: frozenset[str] = frozenset(
    {"sigmoid", "tanh", "relu", "hard_sigmoid_keras3", "softsign", "softplus", "elu", "leaky_relu"}
)
FLAX_FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "no_bias"})

FlaxParams = dict[str, Any]


def layer_scope(layer: int, direction: int) -> tuple[str, str]:
    """The scope names of one layer and direction: ("layers_0", "forward")."""
    return f"layers_{layer}", DIRECTIONS[direction]


def to_flax_params(weights: LSTMWeights) -> FlaxParams:
    """Canonical weights -> nested NumPy params ``{layers_k: {direction: {dense: {kernel, bias}}}}``
    (float64; hidden-side bias = Wb + Rb)."""
    params: FlaxParams = {}
    for layer, per_direction in enumerate(weights.layers):
        for direction, w in enumerate(per_direction):
            scope, name = layer_scope(layer, direction)
            params.setdefault(scope, {})[name] = _cell_params(w)
    return params


def _cell_params(w: LayerWeights) -> dict[str, dict[str, NDArray[Any]]]:
    cell: dict[str, dict[str, NDArray[Any]]] = {}
    hidden = w.R.shape[0] // len(GATES)
    bias = w.Wb + w.Rb
    for index, gate in enumerate(GATES):
        rows = slice(index * hidden, (index + 1) * hidden)
        cell[INPUT_DENSE[gate]] = {"kernel": np.ascontiguousarray(w.W[rows].T)}
        cell[HIDDEN_DENSE[gate]] = {"kernel": np.ascontiguousarray(w.R[rows].T), "bias": bias[rows].copy()}
    return cell


def canonical_gradients(config: LSTMConfig, grads: FlaxParams) -> LSTMWeights:
    """Gradients w.r.t. Flax params -> gradients w.r.t. canonical weights (both biases get the bias's)."""
    layers = []
    for layer in range(config.num_layers):
        per_direction = []
        for direction in range(config.num_directions):
            scope, name = layer_scope(layer, direction)
            cell = grads[scope][name]
            W = np.concatenate([np.asarray(cell[INPUT_DENSE[g]]["kernel"], dtype=np.float64).T for g in GATES])
            R = np.concatenate([np.asarray(cell[HIDDEN_DENSE[g]]["kernel"], dtype=np.float64).T for g in GATES])
            bias = np.concatenate([np.asarray(cell[HIDDEN_DENSE[g]]["bias"], dtype=np.float64) for g in GATES])
            per_direction.append(LayerWeights(W=W, R=R, Wb=bias, Rb=bias.copy()))
        layers.append(per_direction)
    return LSTMWeights(config, layers)


def native_names(params: FlaxParams) -> dict[str, NDArray[np.float64]]:
    """Flat ``{"layers_0/forward/ii/kernel": array}`` of a params (or gradients) tree, float64."""
    flat: dict[str, NDArray[np.float64]] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}/{key}" if prefix else key, value)
        else:
            flat[prefix] = np.asarray(node, dtype=np.float64)

    walk("", params)
    return flat
