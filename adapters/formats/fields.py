"""Strict type checks of the config fields and attributes readers take from a file.

A file's JSON or attributes come from a stranger: ``"bias": "false"`` must not read as true, ``layout: 1.5`` as
1, nor a string ``hidden_size`` fail deep inside the reader. Each helper returns the value, or the default when
the key is absent, and raises InputFileError naming the file (``where``), the field and what it should be.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lstm_conformance.reference.errors import InputFileError

_MISSING = object()
#: The fix for a file whose fields have the wrong types: its framework writes them right.
_FIX = "save or export the model again with its framework"


def _value(mapping: Any, key: str, where: str, default: Any) -> Any:
    if not isinstance(mapping, Mapping):
        raise InputFileError(f"{where}: expected an object holding {key!r}, found {_kind(mapping)}; {_FIX}")
    value = mapping.get(key, default)
    if value is _MISSING:
        raise InputFileError(f"{where}: field {key!r} is missing; {_FIX}")
    return value


def _kind(value: Any) -> str:
    return f"{type(value).__name__} {value!r}"[:80]


def _refuse(where: str, key: str, should: str, value: Any) -> InputFileError:
    return InputFileError(f"{where}: field {key!r} must be {should}, found {_kind(value)}; {_FIX}")


def require_int(mapping: Any, key: str, where: str, default: Any = _MISSING, minimum: int | None = None) -> Any:
    """An integer (never a bool, a float or a string); ``default`` when absent."""
    value = _value(mapping, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(where, key, "an integer", value)
    if minimum is not None and value < minimum:
        raise _refuse(where, key, f"an integer of at least {minimum}", value)
    return value


def require_bool(mapping: Any, key: str, where: str, default: Any = _MISSING, allow_int: bool = False) -> Any:
    """A boolean (never a string: ``"false"`` is refused); ONNX's 0/1 integer flags with ``allow_int``."""
    value = _value(mapping, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool):
        return value
    if allow_int and isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise _refuse(where, key, "true or false" + (" (or 0/1)" if allow_int else ""), value)


def require_float(mapping: Any, key: str, where: str, default: Any = _MISSING, finite: bool = True) -> Any:
    """A number (int or float, never a bool or a string), finite unless ``finite`` is False."""
    value = _value(mapping, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _refuse(where, key, "a number", value)
    if finite and not math.isfinite(float(value)):
        raise _refuse(where, key, "a finite number", value)
    return float(value)


def require_str(mapping: Any, key: str, where: str, default: Any = _MISSING) -> Any:
    value = _value(mapping, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if not isinstance(value, str):
        raise _refuse(where, key, "a string", value)
    return value


def require_choice(mapping: Any, key: str, where: str, choices: tuple[Any, ...], default: Any = _MISSING) -> Any:
    """One of ``choices`` exactly (``layout`` 0 or 1: 1.5 and True are refused)."""
    value = _value(mapping, key, where, default)
    if value is default and default is not _MISSING:
        return value
    if isinstance(value, bool) or not any(type(value) is type(c) and value == c for c in choices):
        raise _refuse(where, key, f"one of {', '.join(map(repr, choices))}", value)
    return value


def require_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise InputFileError(f"{where}: expected a JSON object, found {_kind(value)}; {_FIX}")
    return value


def require_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise InputFileError(f"{where}: expected a list, found {_kind(value)}; {_FIX}")
    return value


# ----------------------------------------------------------------------------------------------------------
# The fields each reader uses
# ----------------------------------------------------------------------------------------------------------

#: Keras LSTM config fields the reader uses, by the check they need.
_KERAS_BOOLS = ("use_bias", "go_backwards", "return_sequences", "return_state", "stateful", "time_major", "unroll")
_KERAS_FLOATS = ("dropout", "recurrent_dropout")
_KERAS_STRINGS = ("name",)
#: A string, or a serialized activation object (a custom function), which the reader names as not canonical.
_KERAS_ACTIVATIONS = ("activation", "recurrent_activation")


def check_keras_model_config(path: Any, model: Any, depth: int = 0) -> None:
    """The parts of a serialized Keras model (config.json, an .h5's model_config) the reader walks, with the
    types it needs: layers a list of objects, class names strings, every LSTM's fields typed (units an
    integer, use_bias a boolean, activations strings), a Bidirectional's inner layer an object."""
    where = f"{path}: Keras model config"
    if depth > 16:
        raise InputFileError(f"{where}: models nested more than 16 deep; refused")
    model = require_mapping(model, where)
    require_str(model, "class_name", where, default=None)
    config = model.get("config", {})
    if not isinstance(config, Mapping):
        return  # not a model holding layers: the reader finds no LSTM in it
    for index, entry in enumerate(require_list(config.get("layers", []), f"{where}: its layers")):
        entry = require_mapping(entry, f"{where}: layer {index}")
        layer_where = f"{where}: layer {entry.get('name', index)!r}"
        class_name = require_str(entry, "class_name", layer_where, default="")
        require_str(entry, "name", layer_where, default=None)
        layer_config = require_mapping(entry.get("config", {}), f"{layer_where}: its config")
        require_str(layer_config, "name", layer_where, default=None)
        _check_inbound(entry.get("inbound_nodes", []), layer_where)
        if class_name in ("Sequential", "Functional", "Model"):
            check_keras_model_config(path, entry, depth + 1)
        elif class_name == "LSTM":
            check_keras_lstm_fields(layer_config, layer_where)
        elif class_name == "Bidirectional":
            require_str(layer_config, "merge_mode", layer_where, default=None)
            for side in ("layer", "backward_layer"):
                inner = layer_config.get(side)
                if inner is None and side == "backward_layer":
                    continue
                inner = require_mapping(inner, f"{layer_where}: its {side}")
                require_str(inner, "class_name", f"{layer_where}: its {side}", default="")
                inner_config = require_mapping(inner.get("config", {}), f"{layer_where}: its {side}'s config")
                if inner.get("class_name") == "LSTM":
                    check_keras_lstm_fields(inner_config, f"{layer_where}: its {side}")


def check_keras_lstm_fields(config: Mapping[str, Any], where: str) -> None:
    require_int(config, "units", where, default=None, minimum=1)
    for key in _KERAS_BOOLS:
        require_bool(config, key, where, default=None)
    for key in _KERAS_FLOATS:
        require_float(config, key, where, default=None)
    for key in _KERAS_STRINGS:
        require_str(config, key, where, default=None)
    for key in _KERAS_ACTIVATIONS:
        value = config.get(key)
        if value is not None and not isinstance(value, (str, Mapping)):
            raise _refuse(where, key, "an activation name", value)


def _check_inbound(nodes: Any, where: str, depth: int = 0) -> None:
    """inbound_nodes: wherever an object has a "config", it is an object (the reader looks inside)."""
    if depth > 32:
        raise InputFileError(f"{where}: inbound_nodes nested more than 32 deep; refused")
    if isinstance(nodes, Mapping):
        if "config" in nodes:
            require_mapping(nodes["config"], f"{where}: an inbound node's config")
        for value in nodes.values():
            _check_inbound(value, where, depth + 1)
    elif isinstance(nodes, list):
        for value in nodes:
            _check_inbound(value, where, depth + 1)


def check_onnx_lstm_attributes(attributes: Mapping[str, Any], where: str) -> None:
    """An ONNX LSTM node's attributes, typed as the operator defines them (a FLOAT ``layout`` or a STRING
    ``hidden_size`` is refused, not rounded or parsed)."""
    for key, value in attributes.items():
        if value is None:  # a damaged AttributeProto: its type field names a value it does not hold
            raise InputFileError(f"{where}: attribute {key!r} holds no value of its declared type; {_FIX}")
    require_int(attributes, "hidden_size", where, default=None, minimum=1)
    require_choice(attributes, "layout", where, (0, 1), default=None)
    require_choice(attributes, "input_forget", where, (0, 1), default=None)
    require_str(attributes, "direction", where, default=None)
    clip = require_float(attributes, "clip", where, default=None)
    if clip is not None and clip <= 0:
        raise InputFileError(f"{where}: field 'clip' must be a positive number, found {clip}; {_FIX}")
    activations = attributes.get("activations")
    if activations is not None and not (
        isinstance(activations, list) and all(isinstance(item, str) for item in activations)
    ):
        raise InputFileError(
            f"{where}: field 'activations' must be a list of strings, found {_kind(activations)}; {_FIX}"
        )
    for key in ("activation_alpha", "activation_beta"):
        values = attributes.get(key)
        if values is not None and not (
            isinstance(values, list) and all(isinstance(v, float) and math.isfinite(v) for v in values)
        ):
            raise InputFileError(
                f"{where}: field {key!r} must be a list of finite floats, found {_kind(values)}; {_FIX}"
            )


def check_weight_arrays(path: Any, layer: str, arrays: Sequence[Any], names: Sequence[str]) -> None:
    """Every weight array of an LSTM layer is a floating-point vector or matrix (a file may store a string, a
    boolean or a scalar dataset where a kernel belongs)."""
    for index, array in enumerate(arrays):
        dtype, ndim = getattr(array, "dtype", None), getattr(array, "ndim", None)
        if getattr(dtype, "kind", "") != "f" or ndim not in (1, 2):
            name = names[index] if index < len(names) else f"weight {index}"
            shape = getattr(array, "shape", None)
            raise InputFileError(
                f"{path}: LSTM layer {layer!r}: {name} has dtype {dtype} and shape {shape}, not a floating-point "
                f"vector or matrix; {_FIX}"
            )


#: The canonical config's fields (reference.layout.LSTMConfig), by the check each needs.
_CANONICAL_INTS = ("input_size", "hidden_size", "num_layers", "proj_size")
_CANONICAL_BOOLS = ("bidirectional", "bias", "peepholes", "input_forget")
_CANONICAL_FLOATS = ("cell_clip", "gate_clip", "proj_clip")
_CANONICAL_STRINGS = ("gate_activation", "cell_input_activation", "cell_output_activation")


def check_canonical_npz(path: Any) -> None:
    """The format version and config of a canonical .npz, typed strictly before ``load_npz`` trusts them
    (``"bias": "false"`` or ``"cell_clip": "abc"`` in a stranger's file). A damaged archive: the reader says."""
    import zipfile

    import numpy as np

    from lstm_conformance.adapters.formats.guards import load_json
    from lstm_conformance.reference.layout import NPZ_CONFIG_KEY, NPZ_FORMAT_KEY

    try:
        with np.load(path, allow_pickle=False) as data:
            files = set(data.files)
            version = data[NPZ_FORMAT_KEY] if NPZ_FORMAT_KEY in files else None
            text = data[NPZ_CONFIG_KEY] if NPZ_CONFIG_KEY in files else None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile):
        return
    where = f"{path}: canonical .npz"
    if version is not None and (version.ndim != 0 or version.dtype.kind not in "iu"):
        raise InputFileError(f"{where}: {NPZ_FORMAT_KEY!r} must be one integer, found {version.dtype} {version.shape}")
    if text is None:
        return
    if text.ndim != 0 or text.dtype.kind != "U":
        raise InputFileError(f"{where}: {NPZ_CONFIG_KEY!r} must be one JSON string, found {text.dtype} {text.shape}")
    config = require_mapping(load_json(path, str(text), f"its {NPZ_CONFIG_KEY}"), f"{where} config")
    where = f"{where} config"
    for key in _CANONICAL_INTS:
        required = key in ("input_size", "hidden_size")
        require_int(config, key, where, **({} if required else {"default": None}))
    for key in _CANONICAL_BOOLS:
        require_bool(config, key, where, default=None)
    for key in _CANONICAL_FLOATS:
        require_float(config, key, where, default=None)
    for key in _CANONICAL_STRINGS:
        require_str(config, key, where, default=None)
