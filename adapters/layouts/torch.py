"""PyTorch's layout: ``nn.LSTM``'s state_dict and the "torch-cell" module of stepped ``nn.LSTMCell``s.

Checked against torch 2.13's ``torch/nn/modules/rnn.py``: ``LSTM.__init__`` names the parameters of layer ``k``
``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and (with ``proj_size``)
``weight_hr_l{k}``, each with the suffix ``_reverse`` for direction 1; ``weight_ih`` is ``[4H, I_k]`` with rows
``(W_ii|W_if|W_ig|W_io)`` and ``torch/_decomp/decompositions.py:lstm_cell`` chunks the gates as in, forget,
cell, out. That is the canonical gate order (i, f, g, o) and the canonical shapes, so the mapping is a renaming
(``NATIVE_STEMS``) and an array copy, bit for bit, dtype kept:

    canonical  W          R          Wb        Rb        proj
    nn.LSTM    weight_ih  weight_hh  bias_ih   bias_hh   weight_hr    (+ _l{k}, + _reverse for direction 1)

``nn.LSTM(bias=False)`` has no bias parameters: its state_dict omits them and the canonical biases are zero.

``nn.LSTMCell`` has the same four parameters without the suffixes; "torch-cell" keeps one cell per layer and
direction in a ``ModuleDict({"cells": ModuleList(ModuleList(LSTMCell))})``, so its native names are that
module's own state_dict names, ``cells.{layer}.{direction}.weight_ih`` (direction 0 forward, 1 reverse).

Pure NumPy: a tensor given to ``from_state_dict`` is read through its own ``detach``/``numpy`` methods.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lstm_conformance.reference.errors import LayoutError, UnsupportedFeatureError
from lstm_conformance.reference.layout import FloatArray, LayerWeights, LSTMConfig, LSTMWeights, require_zero_biases

FRAMEWORK = "PyTorch"

#: canonical parameter name -> PyTorch's parameter stem (the whole mapping; the gate order is the same).
NATIVE_STEMS: dict[str, str] = {
    "W": "weight_ih",
    "R": "weight_hh",
    "Wb": "bias_ih",
    "Rb": "bias_hh",
    "proj": "weight_hr",
}
#: The key of one nn.LSTM parameter in its own state_dict (stem, layer, reverse suffix).
LSTM_KEY_PATTERN = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")

#: The LSTMConfig features nn.LSTM holds, and those of nn.LSTMCell (no projection).
LSTM_FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "proj_size", "no_bias"})
LSTM_CELL_FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "no_bias"})

#: Why nn.LSTM cannot hold each feature it lacks (the hint of UnsupportedFeatureError).
MISSING_FEATURE_HINTS: dict[str, str] = {
    "peepholes": "nn.LSTM and nn.LSTMCell have no peephole connections",
    "input_forget": "nn.LSTM and nn.LSTMCell have no coupled input-forget gate (f = 1 - i)",
    "cell_clip": "nn.LSTM and nn.LSTMCell never clip the cell state",
    "gate_clip": "nn.LSTM and nn.LSTMCell never clip gate pre-activations",
    "proj_clip": "nn.LSTM never clips the projected output",
    "proj_size": "nn.LSTMCell has no projection (proj_size); use the 'torch' implementation (nn.LSTM)",
}
ACTIVATION_HINT = "PyTorch's LSTM activations are fixed to sigmoid (gates), tanh (cell input) and tanh (cell output)"

KeyOf = Callable[[str, int, int], str]


def state_dict_key(name: str, layer: int, direction: int) -> str:
    """nn.LSTM's state_dict key of a canonical parameter: ``("W", 0, 1)`` -> ``"weight_ih_l0_reverse"``."""
    return f"{NATIVE_STEMS[name]}_l{layer}{'_reverse' if direction else ''}"


def cell_state_key(name: str, layer: int, direction: int) -> str:
    """The "torch-cell" module's state_dict key: ``("W", 0, 1)`` -> ``"cells.0.1.weight_ih"``."""
    return f"cells.{layer}.{direction}.{NATIVE_STEMS[name]}"


def native_names(config: LSTMConfig, key_of: KeyOf = state_dict_key) -> list[tuple[int, int, str, str]]:
    """(layer, direction, canonical name, native key) for every native parameter, in nn.LSTM's order."""
    names: list[tuple[int, int, str, str]] = []
    for layer in range(config.num_layers):
        for direction in range(config.num_directions):
            names.extend((layer, direction, name, key_of(name, layer, direction)) for name in _present(config))
    return names


def refuse_unsupported(config: LSTMConfig, supported: frozenset[str]) -> None:
    """Raise UnsupportedFeatureError for the first feature of ``config`` outside ``supported``."""
    for feature in config.features():
        if "_activation=" in feature:
            raise UnsupportedFeatureError(FRAMEWORK, feature, ACTIVATION_HINT)
        if feature not in supported:
            raise UnsupportedFeatureError(FRAMEWORK, feature, MISSING_FEATURE_HINTS.get(feature, ""))


def _to_native(weights: LSTMWeights, key_of: KeyOf) -> dict[str, FloatArray]:
    require_zero_biases(weights)
    return {
        key: np.array(getattr(weights.layers[layer][direction], name), copy=True)
        for layer, direction, name, key in native_names(weights.config, key_of)
    }


def _from_native(arrays: Mapping[str, FloatArray], config: LSTMConfig, key_of: KeyOf) -> LSTMWeights:
    check_native_shapes(config, {key: tuple(value.shape) for key, value in arrays.items()}, key_of)
    layers = []
    for layer in range(config.num_layers):
        per_direction = []
        for direction in range(config.num_directions):
            found = {name: np.array(arrays[key_of(name, layer, direction)], copy=True) for name in _present(config)}
            if not config.bias:
                zeros = np.zeros(4 * config.hidden_size, dtype=found["W"].dtype)
                found["Wb"], found["Rb"] = zeros, zeros.copy()
            per_direction.append(LayerWeights(**found))
        layers.append(per_direction)
    return LSTMWeights(config, layers)


def _present(config: LSTMConfig) -> list[str]:
    """The canonical names nn.LSTM stores for ``config`` (no biases with bias=False, proj only with proj_size)."""
    return ["W", "R"] + (["Wb", "Rb"] if config.bias else []) + (["proj"] if config.proj_size else [])


def check_native_shapes(
    config: LSTMConfig, shapes: Mapping[str, Sequence[int]], key_of: KeyOf = state_dict_key
) -> None:
    """Every native key ``config`` implies is present with its shape, and no other: else LayoutError naming the
    key, the shape expected and the one found."""
    expected = {
        key: config.parameter_shapes(layer)[name] for layer, _direction, name, key in native_names(config, key_of)
    }
    for key, shape in expected.items():
        if key not in shapes:
            raise LayoutError(f"{key}: missing; expected shape {shape} for {describe(config)}")
        if tuple(shapes[key]) != shape:
            raise LayoutError(f"{key}: expected shape {shape} for {describe(config)}, found {tuple(shapes[key])}")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise LayoutError(f"unexpected keys {extra[:4]}{' ...' if len(extra) > 4 else ''} for {describe(config)}")


def describe(config: LSTMConfig) -> str:
    """The nn.LSTM constructor call that holds ``config`` (for messages and notes)."""
    text = f"nn.LSTM(input_size={config.input_size}, hidden_size={config.hidden_size}"
    text += f", num_layers={config.num_layers}" if config.num_layers > 1 else ""
    text += ", bias=False" if not config.bias else ""
    text += ", bidirectional=True" if config.bidirectional else ""
    text += f", proj_size={config.proj_size}" if config.proj_size else ""
    return text + ")"


def to_state_dict(weights: LSTMWeights) -> dict[str, FloatArray]:
    """The state_dict of the ``nn.LSTM`` holding ``weights``, as NumPy copies in the weights' own dtype.

    Raises UnsupportedFeatureError for a feature nn.LSTM lacks, LayoutError for nonzero biases with bias=False.
    """
    refuse_unsupported(weights.config, LSTM_FEATURES)
    return _to_native(weights, state_dict_key)


def config_from_state_dict(shapes: Mapping[str, Sequence[int]]) -> LSTMConfig:
    """The LSTMConfig of an nn.LSTM state_dict, from its keys and shapes alone (``{key: shape}``).

    Layers from the ``weight_ih_l{k}`` keys, bidirectional from ``_reverse`` keys, hidden and input sizes from
    ``weight_ih_l0`` ([4H, I]), proj_size from ``weight_hr_l0`` ([P, H]), bias from ``bias_ih_l0``. Then every
    key and shape is checked against that config (``check_native_shapes``).
    """
    parsed = {key: LSTM_KEY_PATTERN.match(key) for key in shapes}
    foreign = sorted(key for key, match in parsed.items() if match is None)
    if foreign:
        raise LayoutError(f"keys {foreign[:4]} are not nn.LSTM parameter names (weight_ih_l0, bias_hh_l1_reverse, ...)")
    if "weight_ih_l0" not in shapes:
        raise LayoutError("no weight_ih_l0: not the state_dict of an nn.LSTM")
    first = tuple(shapes["weight_ih_l0"])
    if len(first) != 2 or first[0] % 4 or first[0] == 0:
        raise LayoutError(f"weight_ih_l0: expected shape [4*hidden_size, input_size], found {first}")
    layer_indices = {int(m.group(2)) for m in parsed.values() if m is not None and m.group(1) == "weight_ih"}
    num_layers = max(layer_indices) + 1
    proj = tuple(shapes.get("weight_hr_l0", (0,)))
    config = LSTMConfig(
        input_size=first[1],
        hidden_size=first[0] // 4,
        num_layers=num_layers,
        bidirectional="weight_ih_l0_reverse" in shapes,
        proj_size=proj[0],
        bias="bias_ih_l0" in shapes,
    )
    check_native_shapes(config, shapes)
    return config


def from_state_dict(state: Mapping[str, Any], config: LSTMConfig | None = None) -> LSTMWeights:
    """Canonical weights from an nn.LSTM state_dict (NumPy arrays or CPU tensors), dtype kept, arrays copied.

    ``config`` defaults to the one the keys and shapes imply (``config_from_state_dict``); a given config is
    checked against the keys and shapes.
    """
    arrays = {key: as_numpy(key, value) for key, value in state.items()}
    shapes = {key: tuple(value.shape) for key, value in arrays.items()}
    if config is None:
        config = config_from_state_dict(shapes)
    refuse_unsupported(config, LSTM_FEATURES)
    return _from_native(arrays, config, state_dict_key)


def to_cell_state_dict(weights: LSTMWeights) -> dict[str, FloatArray]:
    """The state_dict of the "torch-cell" module (``cells.{layer}.{direction}.weight_ih``, ...)."""
    refuse_unsupported(weights.config, LSTM_CELL_FEATURES)
    return _to_native(weights, cell_state_key)


def from_cell_state_dict(state: Mapping[str, Any], config: LSTMConfig) -> LSTMWeights:
    """Inverse of ``to_cell_state_dict``."""
    refuse_unsupported(config, LSTM_CELL_FEATURES)
    arrays = {key: as_numpy(key, value) for key, value in state.items()}
    return _from_native(arrays, config, cell_state_key)


def as_numpy(key: str, value: Any) -> FloatArray:
    """A NumPy view of an array or a CPU tensor, dtype kept (bfloat16, which NumPy lacks, is refused)."""
    if hasattr(value, "detach"):
        value = value.detach()
        if str(value.dtype) == "torch.bfloat16":
            raise LayoutError(f"{key}: bfloat16 has no NumPy dtype; convert the tensor with .float() (exact)")
        value = value.cpu().numpy()
    array: FloatArray = np.asarray(value)
    return array
