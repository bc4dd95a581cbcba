"""Keras' ``LSTM`` layout, the same in Keras 3 (``keras``) and tf_keras (Keras 2).

Checked against keras/src/layers/rnn/lstm.py (``LSTMCell.build`` and ``call``) and tf_keras/src/layers/rnn/lstm.py
(``LSTMCell``, ``standard_lstm``):

- ``kernel`` [I, 4H] and ``recurrent_kernel`` [H, 4H], gate blocks along the columns in the order i, f, c, o
  (``z0, z1, z2, z3 = split(z, 4)``; ``c`` is the canonical ``g``): ``kernel = W.T``, ``recurrent_kernel = R.T``;
- one ``bias`` [4H] (absent with ``use_bias=False``): canonical -> Keras sums ``Wb + Rb``; Keras -> canonical
  puts it in ``Wb`` and zeros in ``Rb``, so Keras -> canonical -> Keras is bit-identical; the gradient of the
  one bias is that of both canonical biases;
- ``recurrent_activation`` is the gate activation (i, f, o); ``activation`` is applied to both the cell input
  and the cell output (``c = f*c + i*act(z2)``, ``h = o*act(c)``), so a config whose two differ is refused;
- ``Bidirectional`` holds the forward layer's weights, then the backward's; stacked layers are separate Keras
  layers named as a fresh Keras session names them (``lstm``, ``lstm_1``; ``bidirectional``, ...).

Keras 3's ``hard_sigmoid`` is relu6(x + 3)/6 = clip(x/6 + 0.5, 0, 1) (canonical ``hard_sigmoid_keras3``);
tf_keras' is clip(0.2x + 0.5, 0, 1) (``hard_sigmoid_keras2``). Each flavor holds only its own.
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
    Activation,
    LayerWeights,
    LSTMConfig,
    LSTMWeights,
    reorder_gates,
    require_zero_biases,
    transposed,
)

#: Keras' gate order (i, f, c, o) in canonical gate names.
KERAS_GATES: tuple[str, ...] = ("i", "f", "g", "o")

#: The LSTMConfig features a Keras LSTM stack holds.
KERAS_FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "no_bias"})

#: Canonical activation names -> Keras activation names that compute the same function, common to both
#: flavors (each adds its own hard_sigmoid). "affine" holds only as affine(1, 0), Keras' "linear".
_COMMON_ACTIVATIONS: dict[str, str] = {
    "sigmoid": "sigmoid",
    "tanh": "tanh",
    "relu": "relu",
    "softsign": "softsign",
    "softplus": "softplus",
    "affine": "linear",
}

#: Config features that no Keras LSTM has, and the layouts that hold them instead.
KERAS_LACKS: dict[str, str] = {
    "proj_size": "Keras' LSTM has no projection",
    "peepholes": "Keras' LSTM has no peephole connections",
    "cell_clip": "Keras' LSTM does not clip the cell state",
    "gate_clip": "Keras' LSTM does not clip gate pre-activations",
    "proj_clip": "Keras' LSTM has no projection to clip",
    "input_forget": "Keras' LSTM has no coupled input-forget gate",
}
_HELD_BY: dict[str, str] = {
    "proj_size": "PyTorch (proj_size) or TF's LSTMCell (num_proj)",
    "peepholes": "TF's LSTMCell or ONNX",
    "cell_clip": "TF's LSTMCell",
    "gate_clip": "ONNX",
    "proj_clip": "TF's LSTMCell",
    "input_forget": "ONNX",
}


@dataclass(frozen=True)
class KerasFlavor:
    """One of the two Keras packages: its module, its name in messages and the hard_sigmoid it has."""

    implementation: str
    module: str
    framework: str
    hard_sigmoid: str
    other_implementation: str

    def activations(self) -> dict[str, str]:
        """Canonical activation name -> this flavor's Keras activation name."""
        return {**_COMMON_ACTIVATIONS, self.hard_sigmoid: "hard_sigmoid"}


KERAS3 = KerasFlavor("keras", "keras", "Keras 3", "hard_sigmoid_keras3", "tf-keras")
TF_KERAS = KerasFlavor("tf-keras", "tf_keras", "tf_keras (Keras 2)", "hard_sigmoid_keras2", "keras")
FLAVORS: dict[str, KerasFlavor] = {flavor.implementation: flavor for flavor in (KERAS3, TF_KERAS)}


# ----------------------------------------------------------------------------------------------------------
# Config <-> Keras layer arguments
# ----------------------------------------------------------------------------------------------------------


def check_keras_config(config: LSTMConfig, flavor: KerasFlavor) -> None:
    """Raise UnsupportedFeatureError naming the first feature of ``config`` that ``flavor`` cannot hold."""
    for feature in config.features():
        if feature in KERAS_LACKS:
            raise UnsupportedFeatureError(flavor.framework, feature, f"{KERAS_LACKS[feature]}; use {_HELD_BY[feature]}")
    if config.cell_input_activation != config.cell_output_activation:
        raise UnsupportedFeatureError(
            flavor.framework,
            f"different cell input ({config.cell_input_activation}) and cell output "
            f"({config.cell_output_activation}) activations",
            "Keras' LSTM applies its one `activation` to both",
        )
    keras_activation_name(config.gate_activation, flavor)
    keras_activation_name(config.cell_input_activation, flavor)


def keras_activation_name(activation: Activation, flavor: KerasFlavor) -> str:
    """The Keras name of a canonical activation in ``flavor``; UnsupportedFeatureError when it has none."""
    names = flavor.activations()
    if activation.name == "affine" and (activation.alpha, activation.beta) != (1.0, 0.0):
        raise UnsupportedFeatureError(flavor.framework, f"activation {activation}", "Keras' 'linear' is affine(1, 0)")
    if activation.name in names:
        return names[activation.name]
    other = FLAVORS[flavor.other_implementation]
    if activation.name == other.hard_sigmoid:
        raise UnsupportedFeatureError(
            flavor.framework,
            f"activation {activation}",
            f"its 'hard_sigmoid' is {flavor.hard_sigmoid}, a different function; "
            f"use implementation {other.implementation!r} ({other.framework})",
        )
    raise UnsupportedFeatureError(
        flavor.framework, f"activation {activation}", f"Keras activations held exactly: {sorted(names)}"
    )


def canonical_activation(keras_name: str, flavor: KerasFlavor) -> Activation:
    """The canonical activation of a Keras activation name in ``flavor`` (inverse of keras_activation_name)."""
    for canonical, name in flavor.activations().items():
        if name == keras_name:
            return Activation("affine", 1.0, 0.0) if canonical == "affine" else Activation(canonical)
    raise UnsupportedFeatureError(
        flavor.framework, f"Keras activation {keras_name!r}", f"held exactly: {sorted(flavor.activations().values())}"
    )


def keras_lstm_arguments(config: LSTMConfig, flavor: KerasFlavor) -> dict[str, Any]:
    """Arguments of ``keras.layers.LSTM`` that fix the function of ``config`` (after check_keras_config)."""
    check_keras_config(config, flavor)
    return {
        "units": config.hidden_size,
        "activation": keras_activation_name(config.cell_input_activation, flavor),
        "recurrent_activation": keras_activation_name(config.gate_activation, flavor),
        "use_bias": config.bias,
    }


def config_from_keras_arguments(
    input_size: int,
    layers: Sequence[dict[str, Any]],
    bidirectional: bool,
    flavor: KerasFlavor,
) -> LSTMConfig:
    """The LSTMConfig of a stack of Keras LSTM layers given their ``units``/``activation``/
    ``recurrent_activation``/``use_bias`` (every layer must agree: the canonical stack has one cell size)."""
    first = layers[0]
    for key in ("units", "activation", "recurrent_activation", "use_bias"):
        values = {str(layer.get(key)) for layer in layers}
        if len(values) > 1:
            raise LayoutError(f"stacked Keras LSTM layers differ in {key} ({sorted(values)}); one stack needs one")
    cell = canonical_activation(str(first.get("activation", "tanh")), flavor)
    return LSTMConfig(
        input_size=input_size,
        hidden_size=int(first["units"]),
        num_layers=len(layers),
        bidirectional=bidirectional,
        bias=bool(first.get("use_bias", True)),
        gate_activation=canonical_activation(str(first.get("recurrent_activation", "sigmoid")), flavor),
        cell_input_activation=cell,
        cell_output_activation=cell,
    )


def keras_layer_name(layer: int, bidirectional: bool) -> str:
    """The name of stacked layer ``layer``, as a fresh Keras session names it: lstm, lstm_1 / bidirectional..."""
    base = "bidirectional" if bidirectional else "lstm"
    return base if layer == 0 else f"{base}_{layer}"


# ----------------------------------------------------------------------------------------------------------
# Canonical weights <-> Keras weight lists
# ----------------------------------------------------------------------------------------------------------


def keras_layer_weights(weights: LSTMWeights, dtype: Any = None) -> list[list[NDArray[Any]]]:
    """For each Keras layer, the list ``layer.set_weights`` takes: [kernel, recurrent_kernel, bias] per
    direction (forward first; bias only with ``config.bias``), cast to ``dtype`` (default: kept)."""
    config = weights.config
    require_zero_biases(weights)
    per_layer = []
    for directions in weights.layers:
        arrays: list[NDArray[Any]] = []
        for params in directions:
            arrays.append(transposed(reorder_gates(params.W, GATES, KERAS_GATES)))
            arrays.append(transposed(reorder_gates(params.R, GATES, KERAS_GATES)))
            if config.bias:
                arrays.append(reorder_gates(params.Wb + params.Rb, GATES, KERAS_GATES))
        per_layer.append([np.asarray(a, dtype=dtype or a.dtype) for a in arrays])
    return per_layer


def canonical_from_keras_weights(config: LSTMConfig, per_layer: Sequence[Sequence[NDArray[Any]]]) -> LSTMWeights:
    """Inverse of keras_layer_weights: the bias goes to ``Wb``, zeros to ``Rb``; dtypes are kept."""
    per_direction = 3 if config.bias else 2
    if len(per_layer) != config.num_layers:
        raise LayoutError(f"expected {config.num_layers} Keras LSTM layers, found {len(per_layer)}")
    layers = []
    for layer, arrays in enumerate(per_layer):
        if len(arrays) != per_direction * config.num_directions:
            raise LayoutError(
                f"Keras LSTM layer {layer}: expected {per_direction * config.num_directions} weight arrays "
                f"(kernel, recurrent_kernel{', bias' if config.bias else ''} per direction), found {len(arrays)}"
            )
        directions = []
        for direction in range(config.num_directions):
            kernel, recurrent, *bias = (np.asarray(a) for a in arrays[direction * per_direction :][:per_direction])
            _check_keras_shapes(config, layer, kernel, recurrent, bias)
            Wb = reorder_gates(bias[0], KERAS_GATES, GATES) if bias else np.zeros(4 * config.hidden_size, kernel.dtype)
            directions.append(
                LayerWeights(
                    W=reorder_gates(transposed(kernel), KERAS_GATES, GATES),
                    R=reorder_gates(transposed(recurrent), KERAS_GATES, GATES),
                    Wb=Wb,
                    Rb=np.zeros_like(Wb),
                )
            )
        layers.append(directions)
    return LSTMWeights(config, layers)


def canonical_from_keras_gradients(config: LSTMConfig, gradients: Sequence[NDArray[Any]]) -> LSTMWeights:
    """Canonical gradients from the gradients of every Keras weight, in the layers' own order (the flat list
    of ``keras_layer_weights``): one Keras bias feeds both canonical biases, so its gradient is theirs."""
    per_layer: list[Sequence[NDArray[Any]]] = []
    cursor = 0
    count = (3 if config.bias else 2) * config.num_directions
    for _ in range(config.num_layers):
        per_layer.append(gradients[cursor : cursor + count])
        cursor += count
    canonical = canonical_from_keras_weights(config, per_layer)
    for directions in canonical.layers:
        for params in directions:
            params.Rb = params.Wb.copy()
    return canonical


def _check_keras_shapes(
    config: LSTMConfig, layer: int, kernel: NDArray[Any], recurrent: NDArray[Any], bias: list[NDArray[Any]]
) -> None:
    gates = 4 * config.hidden_size
    expected = [(config.layer_input_size(layer), gates), (config.hidden_size, gates)] + [(gates,)] * len(bias)
    found = [kernel.shape, recurrent.shape] + [b.shape for b in bias]
    if [tuple(s) for s in found] != expected:
        raise LayoutError(
            f"Keras LSTM layer {layer}: expected kernel, recurrent_kernel, bias shapes {expected}, found {found}"
        )
