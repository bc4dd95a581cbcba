"""Keras model files: ``.keras`` archives (``KerasFormat``), and HDF5 full models and weights (``KerasH5Format``).

Reading never imports TensorFlow or Keras and never runs code from the file: configs are parsed as JSON and
weights read with h5py. What is read, by file:

- ``.keras`` (a zip of ``config.json``, ``metadata.json``, ``model.weights.h5``; Keras 3, or tf_keras >= 2.13):
  the layer configs (units, activation, recurrent_activation, use_bias, go_backwards, return_sequences,
  Bidirectional's merge_mode) and the weights at ``layers/<name>/cell/vars/{0,1,2}`` (kernel, recurrent_kernel,
  bias), ``.../forward_layer/...`` and ``.../backward_layer/...`` under a Bidirectional, ``layers/<model>/layers/
  <name>`` inside a nested model, where ``<name>`` is not the layer's name but Keras' storage key: the
  snake-cased class name numbered in model.layers order (``lstm``, ``lstm_1``, ``bidirectional``);
- ``.h5`` full models (``model.save("x.h5")``, legacy HDF5, both frameworks): the JSON in the ``model_config``
  attribute and the weights of ``model_weights/<layer>`` in the order of its ``weight_names``;
- ``.weights.h5`` (``save_weights``, both frameworks write the ``layers/<name>/cell/vars`` layout) and legacy
  weights-only ``.h5``: no config at all. Sizes come from the shapes (a recurrent kernel [H, 4H] marks an LSTM),
  Keras' default activations (tanh, sigmoid) and go_backwards False are assumed, and the notes say so; each
  LSTM is named by its storage key (``lstm_1``: the real layer names are not in the file).

A ``.keras`` or full-model ``.h5`` FoundLSTM has a ``run_source``: the model loaded by Keras itself
(``load_model(path, safe_mode=True, compile=False)``, tf_keras for a file tf_keras wrote) and its LSTM layers
run with return_state, initial states and a mask where lengths are given (``_SourceRunner``). Masking upstream of
an LSTM (a Masking layer, an Embedding with mask_zero) is read from the config and said in the notes, with what
a torch or ONNX model needs to compute the same (lengths). A weights-only file has no ``run_source``; its
``assumptions`` name the activations, direction, masking and batch layout assumed.

Which implementation runs a file: ``tf-keras`` when tf_keras (Keras 2.x) wrote it (``keras_version`` 2.x; for a
``.weights.h5``, groups without Keras 3's ``name`` attributes), else ``keras``; a ``hard_sigmoid`` in the file is
that framework's own (``hard_sigmoid_keras2`` or ``hard_sigmoid_keras3``).

Every Keras LSTM becomes one ``FoundLSTM`` named by its layer name, except that a chain of LSTM layers (each the
only consumer of the previous one's output, all alike: same units, activations, bias and direction, no
go_backwards, all but the last returning sequences) is read as one stacked LSTM, named by its first layer; its
notes list the Keras layers. A lone ``go_backwards`` LSTM (time reversed in and out, not the canonical forward
direction), a Bidirectional whose merge_mode is not "concat" and an LSTM with an activation Keras has no exact
canonical name for are not read: their weights go to ``other_tensors`` and the notes of the LSTMs found say why;
a file holding only such layers raises InputFileError. Arrays keep the file's dtype.

Writing builds the model of ``adapters.keras_layer.build_keras_model`` (Input [B, T, I] -> LSTM or
Bidirectional(LSTM) per layer, return_sequences=True -> [B, T, dirs*H]) in Keras 3 (option ``flavor``:
"keras3" or "tf-keras"; by default tf_keras for tf_keras' hard_sigmoid, which Keras 3 lacks under that name;
each Keras loads only the files it wrote) and saves it with Keras' own
``model.save`` (``.keras``, legacy ``.h5``) or ``model.save_weights`` (``.weights.h5``). The model's dtype is the
``dtype`` option, else float32 when every canonical array is float32, else float64.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult, batch_major
from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    error_summary,
    fields,
    format_hint,
    guards,
    refuse_options,
)
from lstm_conformance.adapters.layouts.keras import (
    KERAS3,
    TF_KERAS,
    KerasFlavor,
    canonical_from_keras_weights,
    config_from_keras_arguments,
)
from lstm_conformance.reference.errors import (
    InputFileError,
    LayoutError,
    NotImplementedOptionError,
    UnsupportedFeatureError,
)
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

#: Keras class names of a model that holds layers of its own.
_MODEL_CLASSES = frozenset({"Sequential", "Functional", "Model"})
_DEFAULT_ASSUMED = "Keras' default activations (tanh, sigmoid gates)"


# ----------------------------------------------------------------------------------------------------------
# What a file says about its layers
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Layer:
    """One Keras layer read from a file: its config (None when the file has none) and its weight arrays."""

    name: str
    class_name: str
    config: dict[str, Any] | None
    arrays: list[NDArray[Any]]
    array_names: list[str]
    inbound: list[str] = field(default_factory=list)

    @property
    def is_lstm(self) -> bool:
        if self.class_name == "Bidirectional":
            inner = (self.config or {}).get("layer", {})
            return bool(inner.get("class_name") == "LSTM")
        return self.class_name == "LSTM"

    @property
    def bidirectional(self) -> bool:
        return self.class_name == "Bidirectional"

    def lstm_config(self) -> dict[str, Any]:
        """The LSTM's own config (the wrapped layer's under a Bidirectional)."""
        config = self.config or {}
        inner = config.get("layer", {}).get("config", {}) if self.bidirectional else config
        return dict(inner)


def _inbound_names(nodes: Any) -> list[str]:
    """Names of the layers feeding a layer, from either framework's ``inbound_nodes`` (Keras 3: tensors with a
    ``keras_history``; tf_keras: ``[name, node, tensor, kwargs]`` lists)."""
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            history = item.get("config", {}).get("keras_history") if "config" in item else item.get("keras_history")
            if isinstance(history, list) and history:
                found.append(str(history[0]))
                return
            for value in item.values():
                walk(value)
        elif isinstance(item, list):
            if len(item) >= 3 and isinstance(item[0], str) and isinstance(item[1], int):
                found.append(item[0])
                return
            for value in item:
                walk(value)

    walk(nodes)
    return found


def _model_layers(model: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The layer entries of a serialized Sequential/Functional model, each with ``name`` and ``inbound``."""
    config = model.get("config", {})
    entries = config.get("layers", []) if isinstance(config, dict) else []
    layers = []
    previous: str | None = None
    for entry in entries:
        name = str(entry.get("name") or entry.get("config", {}).get("name", ""))
        if model.get("class_name") == "Sequential":
            inbound = [previous] if previous else []
        else:
            inbound = _inbound_names(entry.get("inbound_nodes", []))
        layers.append({**entry, "name": name, "inbound": inbound})
        if entry.get("class_name") != "InputLayer":
            previous = name
    return layers


# ----------------------------------------------------------------------------------------------------------
# Reading weights: the ``layers/<name>/...`` layout (.keras, .weights.h5) and the legacy ``model_weights``
# ----------------------------------------------------------------------------------------------------------


def _vars(group: Any) -> list[NDArray[Any]]:
    """The arrays of a ``vars`` group, in index order ("0", "1", "2")."""
    if group is None:
        return []
    return [np.asarray(group[key]) for key in sorted(group, key=int)]


def _lstm_arrays(group: Any, bidirectional: bool) -> tuple[list[NDArray[Any]], list[str]]:
    """kernel, recurrent_kernel[, bias] (forward then backward under a Bidirectional) and their h5 paths."""
    parts = ["forward_layer/cell/vars", "backward_layer/cell/vars"] if bidirectional else ["cell/vars"]
    arrays: list[NDArray[Any]] = []
    names: list[str] = []
    for part in parts:
        sub = group.get(part)
        found = _vars(sub)
        arrays += found
        names += [f"{sub.name.lstrip('/')}/{i}" for i in range(len(found))] if sub is not None else []
    return arrays, names


def _all_datasets(group: Any) -> list[str]:
    names: list[str] = []
    group.visititems(lambda name, item: names.append(name) if hasattr(item, "shape") else None)
    return names


def _layers_from_model_config(model: Mapping[str, Any], weights: Any, *, legacy: bool) -> list[_Layer]:
    """Every layer of ``model`` (nested models flattened) with its weights from ``weights``: the root of a
    ``layers/...`` file, or a legacy file's ``model_weights`` group."""
    result: list[_Layer] = []
    entries = _model_layers(model)
    keys = _storage_keys(entries, sequential=model.get("class_name") == "Sequential")
    for entry, key in zip(entries, keys, strict=True):
        name, class_name = entry["name"], str(entry.get("class_name"))
        config = entry.get("config", {})
        if class_name in _MODEL_CLASSES and not legacy:
            sub = weights.get(f"layers/{key}") if weights is not None else None
            result += _layers_from_model_config(entry, sub, legacy=False)
            continue
        layer = _Layer(name, class_name, config, [], [], entry["inbound"])
        if legacy:
            group = weights.get(name) if weights is not None else None
            if group is not None:
                names = [_text(n) for n in group.attrs.get("weight_names", [])]
                layer.arrays = [np.asarray(group[n]) for n in names]
                layer.array_names = [f"{name}/{n}" for n in names]
        elif key and weights is not None and f"layers/{key}" in weights:
            group = weights[f"layers/{key}"]
            if layer.is_lstm:
                layer.arrays, layer.array_names = _lstm_arrays(group, layer.bidirectional)
            else:
                layer.array_names = [f"{group.name.lstrip('/')}/{n}" for n in _all_datasets(group)]
        result.append(layer)
    return result


def _storage_keys(entries: list[dict[str, Any]], sequential: bool) -> list[str]:
    """Where each layer's weights sit in a ``layers/...`` file. Keras (3 and tf_keras' saving_lib) does not use
    layer names there but the snake-cased class name, numbered in model.layers order (``lstm``, ``lstm_1``,
    ``bidirectional``); a Sequential's model.layers leaves out its InputLayer."""
    used: dict[str, int] = {}
    keys = []
    for entry in entries:
        class_name = str(entry.get("class_name", ""))
        if sequential and class_name == "InputLayer":
            keys.append("")
            continue
        base = _snake_case(class_name)
        used[base] = used.get(base, -1) + 1
        keys.append(base if used[base] == 0 else f"{base}_{used[base]}")
    return keys


def _snake_case(name: str) -> str:
    """keras.src.utils.naming.to_snake_case, which names the groups of a ``layers/...`` file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _layers_from_weights_only(root: Any) -> list[_Layer]:
    """Layers of a ``layers/<name>`` weights file: an LSTM is a ``cell/vars`` whose recurrent kernel is
    [H, 4H]; a Bidirectional has ``forward_layer`` and ``backward_layer``."""
    layers = []
    group = root.get("layers")
    for name in group if group is not None else []:
        item = group[name]
        bidirectional = "forward_layer" in item and "backward_layer" in item
        arrays, names = _lstm_arrays(item, bidirectional)
        looks_lstm = len(arrays) in ((2, 3) if not bidirectional else (4, 6)) and _is_lstm_recurrent(arrays[1])
        if looks_lstm:
            class_name = "Bidirectional" if bidirectional else "LSTM"
            config = {"layer": {"class_name": "LSTM", "config": {}}} if bidirectional else {}
            layers.append(_Layer(name, class_name, config, arrays, names))
        else:
            layers.append(_Layer(name, "?", None, [], [f"layers/{name}/{n}" for n in _all_datasets(item)]))
    return layers


def _layers_from_legacy_weights_only(root: Any) -> list[_Layer]:
    """Layers of a legacy weights-only .h5 (``layer_names`` at the root): an LSTM is recognized by its weight
    names (``.../recurrent_kernel``, ``forward_``/``backward_`` under a Bidirectional)."""
    layers = []
    for raw in root.attrs.get("layer_names", []):
        name = _text(raw)
        group = root[name]
        names = [_text(n) for n in group.attrs.get("weight_names", [])]
        arrays = [np.asarray(group[n]) for n in names]
        is_lstm = any(n.rstrip(":0").endswith("recurrent_kernel") for n in names) and len(arrays) in (2, 3, 4, 6)
        bidirectional = any("/backward_" in n for n in names)
        if is_lstm and _is_lstm_recurrent(arrays[1]):
            config = {"layer": {"class_name": "LSTM", "config": {}}} if bidirectional else {}
            layers.append(
                _Layer(
                    name, "Bidirectional" if bidirectional else "LSTM", config, arrays, [f"{name}/{n}" for n in names]
                )
            )
        else:
            layers.append(_Layer(name, "?", None, [], [f"{name}/{n}" for n in names]))
    return layers


def _is_lstm_recurrent(array: NDArray[Any]) -> bool:
    return array.ndim == 2 and array.shape[1] == 4 * array.shape[0]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------------------
# Layers -> FoundLSTMs
# ----------------------------------------------------------------------------------------------------------


def _refusal(layer: _Layer) -> str | None:
    """Why this LSTM layer cannot be held by the canonical layout (None when it can)."""
    lstm = layer.lstm_config()
    if layer.bidirectional:
        merge = (layer.config or {}).get("merge_mode", "concat")
        if merge != "concat":
            return f"Bidirectional layer {layer.name!r} merges with {merge!r}; only 'concat' is the canonical output"
        backward = (layer.config or {}).get("backward_layer")
        if backward is not None and _cell_arguments(backward.get("config", {})) != _cell_arguments(lstm):
            return f"Bidirectional layer {layer.name!r} has a backward layer configured unlike its forward layer"
    elif lstm.get("go_backwards"):
        return (
            f"LSTM layer {layer.name!r} has go_backwards=True: it reads time reversed and returns the reversed "
            "sequence, which the canonical (forward) LSTM cannot hold; wrap it in Bidirectional to convert it"
        )
    if not layer.arrays:
        return f"LSTM layer {layer.name!r} has no weights in the file (the model was saved before it was built)"
    return None


def _cell_arguments(config: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(config.get(k) for k in ("units", "activation", "recurrent_activation", "use_bias"))


def _stacks(layers: list[_Layer]) -> list[list[_Layer]]:
    """LSTM layers grouped into chains that read as one stacked LSTM (see the module docstring)."""
    consumers: dict[str, int] = {}
    for layer in layers:
        for name in layer.inbound:
            consumers[name] = consumers.get(name, 0) + 1
    chains: list[list[_Layer]] = []
    for layer in layers:
        if not layer.is_lstm:
            continue
        last = chains[-1][-1] if chains else None
        if last is not None and _continues(last, layer, consumers):
            chains[-1].append(layer)
        else:
            chains.append([layer])
    return chains


def _continues(previous: _Layer, layer: _Layer, consumers: Mapping[str, int]) -> bool:
    if layer.config is None or previous.config is None:
        return False  # weights-only files have no topology
    if _refusal(previous) or _refusal(layer):
        return False
    return (
        layer.inbound == [previous.name]
        and consumers.get(previous.name) == 1
        and layer.bidirectional == previous.bidirectional
        and _cell_arguments(layer.lstm_config()) == _cell_arguments(previous.lstm_config())
        and bool(previous.lstm_config().get("return_sequences", False))
    )


def _found_lstm(chain: list[_Layer], flavor: KerasFlavor, notes: list[str], source: _Source | None) -> FoundLSTM:
    first = chain[0]
    arguments = [layer.lstm_config() for layer in chain]
    input_size = int(first.arrays[0].shape[0])
    has_bias = len(first.arrays) == (6 if first.bidirectional else 3)
    for argument in arguments:
        argument.setdefault("units", int(first.arrays[1].shape[0]))
        argument.setdefault("use_bias", has_bias)
    config = config_from_keras_arguments(input_size, arguments, first.bidirectional, flavor)
    weights = canonical_from_keras_weights(config, [layer.arrays for layer in chain])
    own_notes = list(notes)
    if len(chain) > 1:
        own_notes.append(f"stacked from the Keras layers {', '.join(layer.name for layer in chain)}")
    for argument, layer in zip(arguments, chain, strict=True):
        if argument.get("stateful"):
            own_notes.append(f"{layer.name} is stateful in the file; the canonical LSTM starts from given states")
        policy = json.dumps(argument.get("dtype"))
        if "mixed" in policy:
            own_notes.append(f"{layer.name} computes in reduced precision in the file's model (policy {policy})")
        if argument.get("dropout") or argument.get("recurrent_dropout"):
            own_notes.append(f"{layer.name} has dropout, which acts in training only and is not part of the function")
    if source is None:  # a weights-only file: what the config would have said is assumed
        assumed = f"{_DEFAULT_ASSUMED}"
        return FoundLSTM(
            name=first.name,
            weights=weights,
            implementation=flavor.implementation,
            notes=own_notes,
            batch_first=None,
            parameter_names=[name for layer in chain for name in layer.array_names],
            assumptions=[
                f"activations not stored (weights only, no config): {assumed} assumed; a model built with "
                f"another activation ({flavor.framework}'s hard_sigmoid, relu, ...) computes another function",
                "go_backwards and masking not stored: a forward LSTM reading every step assumed",
                "batch layout not stored (Keras' LSTM takes batch-major [B, T, I] unless built time_major)",
            ],
        )
    mask = _mask_source(source.layers, first)
    if mask:
        own_notes.append(
            f"the Keras model masks this LSTM's input ({mask[0]}): masked steps are skipped. Carry it as lengths: "
            "a torch model needs pack_padded_sequence with them, an ONNX model its sequence_lens input"
            + (", a Keras model the mask_value option" if mask[1] is not None else "")
        )
    return FoundLSTM(
        name=first.name,
        weights=weights,
        implementation=flavor.implementation,
        notes=own_notes,
        batch_first=not bool(arguments[0].get("time_major", False)),
        run_source=_SourceRunner(source, [layer.name for layer in chain], config),
        mask_value=mask[1] if mask else None,
        parameter_names=[name for layer in chain for name in layer.array_names],
    )


def _contents(
    path: Path, layers: list[_Layer], flavor: KerasFlavor, notes: list[str], source: _Source | None = None
) -> ModelContents:
    """FoundLSTMs for every readable LSTM chain; the other layers' weights as other_tensors."""
    lstms: list[FoundLSTM] = []
    refused: list[str] = []
    used: set[str] = set()
    for chain in _stacks(layers):
        reason = next((r for r in (_refusal(layer) for layer in chain) if r), None)
        if reason is None:
            for layer in chain:
                fields.check_weight_arrays(path, layer.name, layer.arrays, layer.array_names)
            try:
                lstms.append(_found_lstm(chain, flavor, notes, source))
            except (UnsupportedFeatureError, LayoutError) as error:
                reason = f"LSTM layer {chain[0].name!r}: {error}"
        if reason is None:
            used.update(name for layer in chain for name in layer.array_names)
        else:
            refused.append(reason)
    if not lstms:
        names = ", ".join(f"{layer.name} ({layer.class_name})" for layer in layers) or "none"
        detail = "; ".join(refused) if refused else f"layers: {names}"
        raise InputFileError(f"{path}: no LSTM that the canonical layout can hold in this Keras model ({detail})")
    for found in lstms:
        found.notes += [f"not read: {reason}" for reason in refused]
    others = [name for layer in layers for name in layer.array_names if name not in used]
    return ModelContents(lstms=lstms, other_tensors=others)


def _flavor_from_version(version: Any) -> KerasFlavor:
    """tf_keras writes keras_version 2.x; Keras 3 writes 3.x."""
    return TF_KERAS if _text(version).startswith("2.") else KERAS3


# ----------------------------------------------------------------------------------------------------------
# Running the file's own model (FoundLSTM.run_source): Keras loads the file, its LSTM layers run
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Source:
    """A full-model file that Keras itself can load: its path, kind ("keras" or "h5"), writer, layers as read."""

    path: Path
    kind: str
    flavor: KerasFlavor
    layers: list[_Layer]


def _mask_source(layers: list[_Layer], lstm: _Layer) -> tuple[str, float | None] | None:
    """What masks the LSTM's input in the model (a Masking layer, an Embedding with mask_zero upstream of it)
    and the Masking layer's mask_value (None for an Embedding's), None when nothing does. Keras passes a mask
    down through the layers between them."""
    by_name = {layer.name: layer for layer in layers}
    queue, seen = list(lstm.inbound), set()
    while queue:
        name = queue.pop()
        layer = by_name.get(name)
        if name in seen or layer is None:
            continue
        seen.add(name)
        config = layer.config or {}
        if layer.class_name == "Masking":
            value = float(config.get("mask_value", 0.0))
            return f"Masking(mask_value={value}) layer {name!r}", value
        if layer.class_name == "Embedding" and config.get("mask_zero"):
            return f"Embedding layer {name!r} with mask_zero=True", None
        queue.extend(layer.inbound)
    return None


class _SourceRunner:
    """Runs a chain of the file's LSTM layers as Keras loads the file: the model loaded by Keras itself
    (``load_model(path, safe_mode=True, compile=False)``, tf_keras for a file tf_keras wrote), each layer of the
    chain rebuilt from its own loaded config with return_sequences and return_state on (they change what the
    layer returns, not what it computes) and given the loaded layer's own weights, then run with the initial
    states, and a mask exactly when lengths are given (``adapters.keras_layer``'s conventions). It computes in
    the loaded layer's own compute dtype, whatever ``options.dtype`` asks: that is the file's function."""

    def __init__(self, source: _Source, names: list[str], config: LSTMConfig) -> None:
        self.source, self.names, self.config = source, names, config
        self._layers: list[Any] | None = None

    def __call__(self, inputs: RunInputs, options: RunOptions) -> RunResult:
        import tensorflow as tf

        from lstm_conformance.adapters.keras_layer import _f64, _forward, _gradients

        if options.device != "cpu":
            raise UnsupportedFeatureError(self.source.flavor.framework, f"device {options.device}", "run it on the CPU")
        with tf.device("/CPU:0"):
            layers = self._load(tf)
            dtype = str(getattr(layers[0], "compute_dtype", None) or layers[0].dtype)
            prepared: Any = inputs.prepare(self.config)
            x = tf.constant(prepared.x.swapaxes(0, 1), dtype=dtype)  # Keras runs batch-major [B, T, I]
            h0, c0 = tf.constant(prepared.h0, dtype=dtype), tf.constant(prepared.c0, dtype=dtype)
            mask = None if inputs.seq_lens is None else tf.sequence_mask(prepared.seq_lens, prepared.steps)
            with tf.GradientTape() as tape:
                tape.watch([x, h0, c0])
                y, h_n, c_n = _forward(tf, layers, self.config, x, h0, c0, mask)
                loss = None
                if prepared.wants_gradients:
                    loss = (
                        tf.reduce_sum(y * tf.constant(prepared.dy.swapaxes(0, 1), dtype=dtype))
                        + tf.reduce_sum(h_n * tf.constant(prepared.dh_n, dtype=dtype))
                        + tf.reduce_sum(c_n * tf.constant(prepared.dc_n, dtype=dtype))
                    )
            gradients = None
            if loss is not None:
                variables = [variable for layer in layers for variable in layer.trainable_weights]
                found = tape.gradient(loss, [x, h0, c0, *variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)
                gradients = _gradients(self.config, found, variables)  # grad x time-major, as y below
        result = RunResult(
            y=np.ascontiguousarray(_f64(y).swapaxes(0, 1)), h_n=_f64(h_n), c_n=_f64(c_n), math_mode=dtype,
            gradients=gradients,
        )  # fmt: skip
        return batch_major(result) if inputs.batch_first else result

    def _load(self, tf: Any) -> list[Any]:
        if self._layers is not None:
            return self._layers
        from lstm_conformance.adapters.keras_layer import import_keras

        keras = import_keras(self.source.flavor)
        model = _load_model(keras, self.source)
        rebuilt = []
        for k, name in enumerate(self.names):
            loaded = _find_layer(model, name)
            if loaded is None:
                raise InputFileError(f"{self.source.path}: Keras loaded the model, but it has no layer {name!r}")
            clone = type(loaded).from_config(_returning_everything(loaded.get_config()))
            dtype = str(getattr(loaded, "compute_dtype", None) or loaded.dtype)
            clone(tf.zeros((1, 1, self.config.layer_input_size(k)), dtype=dtype))
            clone.set_weights(loaded.get_weights())
            rebuilt.append(clone)
        self._layers = rebuilt
        return rebuilt


def _returning_everything(config: dict[str, Any]) -> dict[str, Any]:
    """A layer config (LSTM, or Bidirectional with its inner layers) returning sequences and states."""
    config = json.loads(json.dumps(config))  # a deep copy of plain data
    for inner in (config.get("layer"), config.get("backward_layer")):
        if isinstance(inner, dict) and isinstance(inner.get("config"), dict):
            inner["config"].update(return_sequences=True, return_state=True)
    if "layer" not in config:
        config.update(return_sequences=True, return_state=True)
    return config


def _find_layer(model: Any, name: str) -> Any:
    """The layer called ``name`` in ``model`` or in a model nested in it."""
    for layer in getattr(model, "layers", []):
        if layer.name == name:
            return layer
        inner = _find_layer(layer, name) if hasattr(layer, "layers") else None
        if inner is not None:
            return inner
    return None


def _load_model(keras: Any, source: _Source) -> Any:
    """The file loaded by Keras itself, in safe mode (no code from the file runs), uncompiled. Keras picks the
    loader by suffix: a file with another name is loaded from a copy named as Keras needs."""
    suffix = ".keras" if source.kind == "keras" else ".h5"
    load = keras.saving.load_model if hasattr(keras, "saving") else keras.models.load_model
    with tempfile.TemporaryDirectory(prefix="lstm-conformance-") as folder:
        path = source.path
        if not path.name.lower().endswith(suffix):
            path = Path(folder) / f"model{suffix}"
            shutil.copyfile(source.path, path)
        try:
            return load(str(path), compile=False, safe_mode=True)
        except Exception as error:  # Keras raises many types for a model it cannot rebuild (custom layers, ...)
            raise InputFileError(
                f"{source.path}: {source.flavor.framework} cannot load this model itself to run it "
                f"({error_summary(error)}); register its custom objects, or convert with --no-verify"
            ) from None


# ----------------------------------------------------------------------------------------------------------
# The formats
# ----------------------------------------------------------------------------------------------------------


class KerasFormat(FileFormat):
    """``.keras`` archives: read from their JSON config and weights, written by Keras 3's ``model.save``."""

    name = "keras"
    framework = "Keras"
    implementation = "keras"

    def unavailable_reason(self) -> str | None:
        return _unavailable_reason()

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), f"the {self.name} format")
        guards.require_regular_file(path)
        guards.check_zip(path)
        config, metadata, weights_bytes = _open_keras_archive(path)
        fields.check_keras_model_config(path, config)
        flavor = _flavor_from_version(metadata.get("keras_version", "3"))
        with _open_h5(path, io.BytesIO(weights_bytes), "its model.weights.h5") as weights:
            layers = _layers_from_model_config(config, weights, legacy=False)
        return _contents(path, layers, flavor, [], _Source(path, "keras", flavor, layers))

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        refuse_options(options, WRITE_OPTIONS, f"the {self.name} format")
        dtype = _write_dtype(weights, options)
        flavor, notes = _write_flavor(weights, options)
        model = _model_to_write(weights, flavor, dtype, options.get("mask_value"), notes)
        _save_renamed(path, "model.keras", model.save)
        return [
            f"written with {flavor.framework} as a {dtype} model: input [batch, time, {weights.config.input_size}]",
            *notes,
        ]


class KerasH5Format(FileFormat):
    """``.h5`` full models (legacy HDF5) and ``.weights.h5``/legacy weights-only files, from either Keras."""

    name = "keras-h5"
    framework = "Keras"
    implementation = "keras"

    def unavailable_reason(self) -> str | None:
        return _unavailable_reason()

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), f"the {self.name} format")
        guards.require_regular_file(path)
        with _open_h5(path, str(path), "") as root:
            if "model_config" in root.attrs:
                model = _parse_json(path, root.attrs["model_config"], "its model_config attribute")
                fields.check_keras_model_config(path, model)
                group = root.get("model_weights")
                if group is None:
                    raise InputFileError(f"{path}: a Keras HDF5 model without weights (no model_weights group)")
                flavor = _flavor_from_version(root.attrs.get("keras_version", group.attrs.get("keras_version", "3")))
                layers = _layers_from_model_config(model, group, legacy=True)
                return _contents(path, layers, flavor, [], _Source(path, "h5", flavor, layers))
            if "layer_names" in root.attrs:
                flavor = _flavor_from_version(root.attrs.get("keras_version", "2"))
                layers = _layers_from_legacy_weights_only(root)
            elif "layers" in root:
                keras3 = any("name" in group.attrs for group in _groups(root))
                flavor = KERAS3 if keras3 else TF_KERAS
                layers = _layers_from_weights_only(root)
            else:
                raise InputFileError(
                    f"{path}: an HDF5 file, but not one Keras wrote (no model_config, layer_names or layers group)"
                )
            writer = "Keras 3" if flavor is KERAS3 else "tf_keras"
            notes = [
                f"weights only, no config: sizes from the shapes, separate layers assumed, named by the file's "
                f"keys; written by {writer} (guessed from the file's layout)"
            ]
            return _contents(path, layers, flavor, notes)

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        refuse_options(options, WRITE_OPTIONS, f"the {self.name} format")
        dtype = _write_dtype(weights, options)
        flavor, notes = _write_flavor(weights, options)
        model = _model_to_write(weights, flavor, dtype, options.get("mask_value"), notes)
        if path.name.lower().endswith(".weights.h5"):
            _save_renamed(path, "model.weights.h5", model.save_weights)
            return [
                f"weights only, written with {flavor.framework} ({dtype}); build the same layers to load them",
                *notes,
            ]
        _save_renamed(path, "model.h5", model.save)
        size = weights.config.input_size
        return [f"legacy HDF5 model written with {flavor.framework} ({dtype}): input [batch, time, {size}]", *notes]


def _groups(root: Any) -> Iterator[Any]:
    found: list[Any] = []
    root.visititems(lambda _name, item: found.append(item) if not hasattr(item, "shape") else None)
    return iter(found)


def _unavailable_reason() -> str | None:
    import importlib.util

    return (
        None
        if importlib.util.find_spec("h5py")
        else "h5py is not installed (pip install 'lstm-conformance[tensorflow]')"
    )


#: Options the Keras writers take: ``dtype``; ``flavor`` ("keras3" or "tf-keras"), which Keras writes the file;
#: ``mask_value``, a Masking layer before the LSTM (a masked source's ``FoundLSTM.mask_value``).
WRITE_OPTIONS = ("dtype", "flavor", "mask_value")


def _model_to_write(weights: LSTMWeights, flavor: KerasFlavor, dtype: str, mask_value: Any, notes: list[str]) -> Any:
    """``build_keras_model``'s model, with ``Masking(mask_value)`` between its input and the LSTM when given:
    the same layers, called on the masked input in a new functional model."""
    from lstm_conformance.adapters.keras_layer import build_keras_model, import_keras

    model = build_keras_model(weights, flavor, dtype)
    if mask_value is None:
        return model
    keras = import_keras(flavor)
    inputs = keras.Input(shape=(None, weights.config.input_size), dtype=dtype, name="input")
    outputs = keras.layers.Masking(mask_value=float(mask_value), dtype=dtype, name="masking")(inputs)
    for layer in model.layers[1:]:  # every layer after the InputLayer, already holding its weights
        outputs = layer(outputs)
    notes.append(f"a Masking(mask_value={float(mask_value)}) layer before the LSTM, as in the source model")
    return keras.Model(inputs, outputs)


_WRITE_FLAVORS = {"keras3": KERAS3, "tf-keras": TF_KERAS}


def _write_flavor(weights: LSTMWeights, options: Mapping[str, Any]) -> tuple[KerasFlavor, list[str]]:
    """Which Keras writes the file: ``options["flavor"]``, else Keras 3, except for tf_keras' hard_sigmoid
    (clip(0.2x + 0.5)), which only tf_keras holds (Keras 3's hard_sigmoid is another function under the same
    name): then tf_keras, so that the written model keeps the function. Each Keras loads only its own files."""
    chosen = options.get("flavor")
    if chosen is not None and chosen not in _WRITE_FLAVORS:
        raise NotImplementedOptionError(
            f"the Keras writers take flavor {' or '.join(map(repr, _WRITE_FLAVORS))}, not {chosen!r}; choose one"
        )
    config = weights.config
    keras2_only = TF_KERAS.hard_sigmoid in (config.gate_activation.name, config.cell_input_activation.name)
    flavor = _WRITE_FLAVORS[chosen] if chosen is not None else TF_KERAS if keras2_only else KERAS3
    loader = "tf_keras.models.load_model" if flavor is TF_KERAS else "keras.saving.load_model"
    notes = [f"written by {flavor.framework}: load it with {loader} (the other Keras does not load it)"]
    if keras2_only and chosen is None:
        notes.append(
            "tf_keras' hard_sigmoid (clip(0.2x + 0.5, 0, 1)) is not Keras 3's (clip(x/6 + 0.5, 0, 1)): written by "
            "tf_keras to keep the function"
        )
    return flavor, notes


def _write_dtype(weights: LSTMWeights, options: Mapping[str, Any]) -> str:
    dtype = options.get("dtype")
    if dtype is None:
        all32 = all(a.dtype == np.float32 for a in weights.named_arrays().values())
        return "float32" if all32 else "float64"
    if dtype not in ("float32", "float64"):
        raise UnsupportedFeatureError("Keras", f"dtype {dtype}", "a written Keras model is float32 or float64")
    return str(dtype)


def _save_renamed(path: Path, file_name: str, save: Any) -> None:
    """Keras picks the file kind from the suffix, and the caller's path may be a temporary name: save under
    ``file_name`` in a temporary folder beside ``path``, then move it there."""
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".keras-write-") as folder:
        target = Path(folder) / file_name
        save(str(target))
        os.replace(target, path)


def _open_keras_archive(path: Path) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    """config.json, metadata.json and model.weights.h5 of a .keras file, or InputFileError."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
            if "config.json" not in names or "model.weights.h5" not in names:
                raise InputFileError(
                    f"{path}: a zip archive but not a Keras .keras file (no config.json and model.weights.h5 in "
                    f"it); {format_hint(path, 'keras')}"
                )
            config = _parse_json(path, archive.read("config.json"), "its config.json")
            metadata = (
                _parse_json(path, archive.read("metadata.json"), "its metadata.json")
                if ("metadata.json" in names)
                else {}
            )
            weights = archive.read("model.weights.h5")
    except zipfile.BadZipFile:
        raise InputFileError(
            f"{path}: not a .keras file (not a zip archive, or a truncated one); {format_hint(path, 'keras')}"
        ) from None
    except (OSError, EOFError, ValueError, KeyError) as error:
        if isinstance(error, InputFileError):
            raise
        raise InputFileError(f"{path}: damaged .keras archive ({error})") from None
    if not isinstance(config, dict) or "config" not in config:
        raise InputFileError(f"{path}: its config.json is not a Keras model config")
    return config, metadata, weights


def _parse_json(path: Path, text: Any, where: str) -> dict[str, Any]:
    try:
        data = guards.load_json(path, _text(text), where)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise InputFileError(f"{path}: {where} is not valid JSON ({error})") from None
    if not isinstance(data, dict):
        raise InputFileError(f"{path}: {where} is not a JSON object")
    return data


@contextlib.contextmanager
def _open_h5(path: Path, source: Any, where: str) -> Iterator[Any]:
    """h5py.File on ``source``; a corrupt or truncated file, or one that breaks while being read, raises
    InputFileError naming ``path`` (and ``where`` inside it)."""
    import h5py

    inside = f" ({where})" if where else ""
    try:
        handle = h5py.File(source, "r")
    except OSError as error:
        fix = f"; {format_hint(path, 'keras-h5')}" if not where else ""
        raise InputFileError(f"{path}{inside}: not a readable HDF5 file, or a truncated one ({error}){fix}") from None
    try:
        with handle:
            guards.check_hdf5(path, handle, where)
            yield handle
    except (OSError, KeyError, TypeError) as error:
        raise InputFileError(f"{path}{inside}: damaged Keras HDF5 content ({error})") from None
