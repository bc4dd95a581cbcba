"""ONNX's ``LSTM`` operator layout: W, R, B, P, the activation attributes, and what the operator can hold.

Checked against the operator schema of onnx 1.23 (``onnx.defs.get_schema("LSTM").doc``), against
``onnx/reference/ops/op_lstm.py`` and against ONNX Runtime's kernel
(``onnxruntime/core/providers/cpu/rnn/uni_directional_lstm.cc`` and ``rnn_helpers.cc``):

- ``W`` ``[D, 4H, I]``, ``R`` ``[D, 4H, H]``: gate blocks in the order i, o, f, c (``ONNX_GATES``; ONNX's
  ``c`` is the canonical cell input ``g``); direction 0 forward, 1 reverse, as canonical.
- ``B`` ``[D, 8H]`` = concat(Wb, Rb), each in the same gate order; both biases are kept, so a canonical model
  round-trips bit for bit (in float32).
- ``P`` ``[D, 3H]`` peepholes in the order i, o, f (``ONNX_PEEPHOLES``); the output gate's peephole looks at
  C_t, the other two at C_{t-1}, as canonical.
- ``activations`` lists f, g, h per direction (f: gates, g: cell input, h: cell output); ``activation_alpha``
  and ``activation_beta`` are consumed in that order, one value per activation that takes the parameter
  (ONNX Runtime's ``NormalizeActivationArgumentAndGetAlphaBetaCount``). The writer always writes every alpha
  and beta, since ONNX Runtime's defaults (0.0 for Affine, ThresholdedRelu, ScaledTanh) differ from the ONNX
  operators' (1.0).
- ``clip`` is the canonical ``gate_clip``; ``input_forget``: f = 1 - i.
- No projection, no cell_clip, no proj_clip: refused with ``UnsupportedFeatureError``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import LayoutError, UnsupportedFeatureError
from lstm_conformance.reference.layout import (
    GATES,
    PEEPHOLES,
    Activation,
    LayerWeights,
    LSTMConfig,
    reorder_gates,
)

#: ONNX's gate order in W, R and each half of B (its "c" is the canonical "g").
ONNX_GATES: tuple[str, ...] = ("i", "o", "f", "g")
#: ONNX's peephole order in P.
ONNX_PEEPHOLES: tuple[str, ...] = ("i", "o", "f")
#: The ONNX activation names the LSTM operator lists, with (takes alpha, takes beta), as the operator doc
#: and ONNX Runtime's ``NameToArgUsageMap`` agree.
ONNX_ACTIVATION_PARAMETERS: dict[str, tuple[bool, bool]] = {
    "Sigmoid": (False, False),
    "Tanh": (False, False),
    "Relu": (False, False),
    "HardSigmoid": (True, True),
    "Affine": (True, True),
    "LeakyRelu": (True, False),
    "ThresholdedRelu": (True, False),
    "ScaledTanh": (True, True),
    "Elu": (True, False),
    "Softsign": (False, False),
    "Softplus": (False, False),
}

#: Canonical activation name -> ONNX name. Keras 2's and Keras 3's hard sigmoids are HardSigmoid with fixed
#: parameters (``KERAS_HARD_SIGMOIDS``).
ONNX_ACTIVATION_NAMES: dict[str, str] = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "hard_sigmoid": "HardSigmoid",
    "hard_sigmoid_keras2": "HardSigmoid",
    "hard_sigmoid_keras3": "HardSigmoid",
    "affine": "Affine",
    "leaky_relu": "LeakyRelu",
    "thresholded_relu": "ThresholdedRelu",
    "scaled_tanh": "ScaledTanh",
    "elu": "Elu",
    "softsign": "Softsign",
    "softplus": "Softplus",
}

#: HardSigmoid(alpha, beta) = clip(alpha*x + beta, 0, 1): Keras 2's is (0.2, 0.5), Keras 3's (1/6, 0.5).
KERAS_HARD_SIGMOIDS: dict[str, tuple[float, float]] = {
    "hard_sigmoid_keras2": (0.2, 0.5),
    "hard_sigmoid_keras3": (1.0 / 6.0, 0.5),
}

#: Defaults that the operator doc ("the same as of corresponding ONNX operators") and ONNX Runtime agree on,
#: used when reading a file that leaves them out. The others (Affine, ThresholdedRelu, ScaledTanh) default
#: to 0.0 in ONNX Runtime and 1.0 in the ONNX operators, so a file must give them.
ONNX_AGREED_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "LeakyRelu": (0.01, None),
    "HardSigmoid": (0.2, 0.5),
    "Elu": (1.0, None),
}

#: The features ONNX's LSTM holds, by ``LSTMConfig.features()`` names.
ONNX_FEATURES: frozenset[str] = frozenset(
    {"num_layers", "bidirectional", "no_bias", "peepholes", "input_forget", "gate_clip"}
)
ONNX_ACTIVATIONS: frozenset[str] = frozenset(ONNX_ACTIVATION_NAMES)


@dataclass
class OnnxLayerArrays:
    """One LSTM node's weight inputs: W [D, 4H, I], R [D, 4H, H], B [D, 8H] or None, P [D, 3H] or None."""

    W: NDArray[Any]
    R: NDArray[Any]
    B: NDArray[Any] | None
    P: NDArray[Any] | None


def layer_to_onnx(per_direction: Sequence[LayerWeights], bias: bool) -> OnnxLayerArrays:
    """Canonical weights of one layer (all its directions) -> the LSTM node's W, R, B, P (B None without
    bias, P None without peepholes)."""
    W = np.stack([reorder_gates(w.W, GATES, ONNX_GATES) for w in per_direction])
    R = np.stack([reorder_gates(w.R, GATES, ONNX_GATES) for w in per_direction])
    B = None
    if bias:
        B = np.stack(
            [
                np.concatenate([reorder_gates(w.Wb, GATES, ONNX_GATES), reorder_gates(w.Rb, GATES, ONNX_GATES)])
                for w in per_direction
            ]
        )
    P = None
    if per_direction[0].P is not None:
        P = np.stack([_peepholes_to_onnx(w.P) for w in per_direction if w.P is not None])
    return OnnxLayerArrays(W=W, R=R, B=B, P=P)


def _peepholes_to_onnx(P: NDArray[Any]) -> NDArray[Any]:
    rows = dict(zip(PEEPHOLES, P, strict=True))
    return np.concatenate([rows[gate] for gate in ONNX_PEEPHOLES])


def layer_from_onnx(arrays: OnnxLayerArrays, hidden_size: int) -> list[LayerWeights]:
    """Inverse of ``layer_to_onnx``: W, R, B, P of one LSTM node -> canonical weights per direction, in the
    file's own dtype (zero biases where B is absent)."""
    layers = []
    for direction in range(arrays.W.shape[0]):
        W = reorder_gates(np.asarray(arrays.W[direction]), ONNX_GATES, GATES)
        R = reorder_gates(np.asarray(arrays.R[direction]), ONNX_GATES, GATES)
        if arrays.B is None:
            Wb, Rb = np.zeros(4 * hidden_size, W.dtype), np.zeros(4 * hidden_size, W.dtype)
        else:
            both = np.asarray(arrays.B[direction])
            Wb = reorder_gates(both[: 4 * hidden_size], ONNX_GATES, GATES)
            Rb = reorder_gates(both[4 * hidden_size :], ONNX_GATES, GATES)
        P = None
        if arrays.P is not None:
            rows = dict(zip(ONNX_PEEPHOLES, np.split(np.asarray(arrays.P[direction]), 3), strict=True))
            P = np.stack([rows[gate] for gate in PEEPHOLES])
        layers.append(LayerWeights(W=W, R=R, Wb=Wb, Rb=Rb, P=P))
    return layers


def activation_to_onnx(activation: Activation) -> tuple[str, float | None, float | None]:
    """(ONNX name, alpha or None, beta or None) of a canonical activation."""
    name = ONNX_ACTIVATION_NAMES.get(activation.name)
    if name is None:
        raise UnsupportedFeatureError("ONNX", f"activation {activation}")
    if activation.name in KERAS_HARD_SIGMOIDS:
        alpha, beta = KERAS_HARD_SIGMOIDS[activation.name]
        return name, alpha, beta
    return name, activation.alpha, activation.beta


def activation_from_onnx(name: str, alpha: float | None, beta: float | None) -> Activation:
    """Inverse of ``activation_to_onnx``. ONNX stores alpha and beta as float32; each is read back as the
    shortest decimal that rounds to the same float32 (0.01 stays 0.01), and HardSigmoid with Keras' fixed
    parameters becomes the named Keras hard sigmoid."""
    canonical = {
        onnx_name.lower(): key for key, onnx_name in ONNX_ACTIVATION_NAMES.items() if key not in KERAS_HARD_SIGMOIDS
    }
    key = canonical.get(name.lower())
    if key is None:
        raise LayoutError(
            f"unknown ONNX activation {name!r}; the LSTM operator lists {', '.join(ONNX_ACTIVATION_PARAMETERS)}"
        )
    alpha, beta = from_float32(alpha), from_float32(beta)
    if key == "hard_sigmoid":
        for keras_name, (keras_alpha, keras_beta) in KERAS_HARD_SIGMOIDS.items():
            if alpha == from_float32(keras_alpha) and beta == keras_beta:
                return Activation(keras_name)
    return Activation(key, alpha, beta)


def from_float32(value: float | None) -> float | None:
    """A float attribute read back: the shortest decimal that rounds to the same float32 (0.7 stays 0.7)."""
    return None if value is None else float(str(np.float32(value)))


def activation_attributes(activations: Sequence[Activation]) -> tuple[list[str], list[float], list[float]]:
    """``activations``, ``activation_alpha``, ``activation_beta`` attribute values for the activations in
    node order (f, g, h for each direction); every parameter an activation takes is written explicitly."""
    names, alphas, betas = [], [], []
    for activation in activations:
        name, alpha, beta = activation_to_onnx(activation)
        takes_alpha, takes_beta = ONNX_ACTIVATION_PARAMETERS[name]
        names.append(name)
        if takes_alpha:
            alphas.append(float(alpha if alpha is not None else 0.0))
        if takes_beta:
            betas.append(float(beta if beta is not None else 0.0))
    return names, alphas, betas


def config_activations(config: LSTMConfig) -> list[Activation]:
    """The node's activations in ONNX order: (f, g, h) = (gate, cell input, cell output) per direction."""
    roles = [config.gate_activation, config.cell_input_activation, config.cell_output_activation]
    return roles * config.num_directions


def check_onnx_config(config: LSTMConfig, framework: str = "ONNX") -> None:
    """Refuse what ONNX's LSTM operator cannot hold."""
    hints = {
        "proj_size": "ONNX's LSTM operator has no projection",
        "cell_clip": "ONNX's clip bounds gate pre-activations (the canonical gate_clip), not the cell state",
        "proj_clip": "ONNX's LSTM operator has no projection",
    }
    for feature, hint in hints.items():
        if feature in config.features():
            raise UnsupportedFeatureError(framework, feature, hint)
    for activation in (config.gate_activation, config.cell_input_activation, config.cell_output_activation):
        if activation.name not in ONNX_ACTIVATION_NAMES:
            raise UnsupportedFeatureError(framework, f"activation {activation}")
