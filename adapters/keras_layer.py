"""Keras' ``LSTM`` layer: Keras 3 (``import keras``, TensorFlow backend) and tf_keras (Keras 2, ``import tf_keras``).

Layout, checked against keras/src/layers/rnn/lstm.py (``LSTMCell.build`` and ``call``) and
tf_keras/src/layers/rnn/lstm.py (``LSTMCell``, ``standard_lstm``), identical in both:

- ``kernel`` [I, 4H] and ``recurrent_kernel`` [H, 4H], gate blocks along the columns in the order i, f, c, o
  (``z0, z1, z2, z3 = split(z, 4)``; ``c`` is the canonical ``g``): ``kernel = W.T``, ``recurrent_kernel = R.T``;
- one ``bias`` [4H] (absent with ``use_bias=False``): canonical -> Keras sums ``Wb + Rb``; Keras -> canonical
  puts it in ``Wb`` and zeros in ``Rb``, so Keras -> canonical -> Keras is bit-identical;
- ``recurrent_activation`` is the gate activation (i, f, o); ``activation`` is applied to both the cell input
  and the cell output (``c = f*c + i*act(z2)``, ``h = o*act(c)``), so a config whose two differ is refused;
- state ``[h, c]``; ``Bidirectional`` takes ``initial_state=[h_fw, c_fw, h_bw, c_bw]`` and returns, with
  ``return_state``, ``[y, h_fw, c_fw, h_bw, c_bw]``; its weights are the forward layer's, then the backward's.

Keras 3's ``hard_sigmoid`` is relu6(x + 3)/6 = clip(x/6 + 0.5, 0, 1) (canonical ``hard_sigmoid_keras3``);
tf_keras' is clip(0.2x + 0.5, 0, 1) (``hard_sigmoid_keras2``). Each implementation holds only its own.

Per-sample lengths run through Keras' masking (a boolean mask [B, T]; checked in keras/src/backend/tensorflow/
rnn.py and tf_keras/src/backend.py ``rnn``): at a masked step the states keep their previous value and the
output repeats the previous output (zeros under ``Bidirectional``, which forces ``zero_output_for_mask``);
``go_backwards`` reverses the mask with the input, so with right padding the backward layer skips the padding
first and then starts from each sample's own last step, as PyTorch's packed sequences do. The adapter zeroes
y past each sample's length (PyTorch's convention); h_n, c_n are the states at the last valid step.

Stacked layers are separate Keras layers named as a fresh Keras session names them (``lstm``, ``lstm_1``;
``bidirectional``, ``bidirectional_1`` around ``forward_lstm``/``backward_lstm``), each with
``return_sequences=True``, layer k > 0 reading the previous layer's (concatenated) output. Native gradient
names are Keras 3's ``Variable.path`` (``lstm/lstm_cell/kernel``, ``bidirectional/forward_lstm/lstm_cell/bias``)
and tf_keras' ``Variable.name`` without ``:0`` (the same strings).

Both run on the CPU through Keras' generic RNN loop: Keras 3 with ``use_cudnn=False``; tf_keras under
``tf.device("/CPU:0")``, where its eager dispatch picks ``standard_lstm`` (or the cell loop when the activations
rule cuDNN out). TensorFlow is imported only when an implementation runs.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Gradients, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.reference.errors import FrameworkMissingError, LayoutError, UnsupportedFeatureError
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

F64 = NDArray[np.float64]

#: Keras' gate order (i, f, c, o) in canonical gate names.
KERAS_GATES: tuple[str, ...] = ("i", "f", "g", "o")

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

#: Config features that no Keras LSTM has, with what to do instead.
_LACKING: dict[str, str] = {
    "proj_size": "Keras' LSTM has no projection; use PyTorch (proj_size) or TF's LSTMCell (num_proj)",
    "peepholes": "Keras' LSTM has no peephole connections; use TF's LSTMCell or ONNX",
    "cell_clip": "Keras' LSTM does not clip the cell state; use TF's LSTMCell",
    "gate_clip": "Keras' LSTM does not clip gate pre-activations; use ONNX",
    "proj_clip": "Keras' LSTM has no projection to clip; use TF's LSTMCell",
    "input_forget": "Keras' LSTM has no coupled input-forget gate; use ONNX",
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

    def import_keras(self) -> ModuleType:
        """TensorFlow, then the Keras package (TF_USE_LEGACY_KERAS is set by ``adapters`` before this)."""
        reason = flavor_unavailable_reason(self)
        if reason:
            raise FrameworkMissingError(reason)
        keras = importlib.import_module(self.module)
        if self.module == "keras" and keras.backend.backend() != "tensorflow":
            raise FrameworkMissingError(
                f"Keras 3 runs on the {keras.backend.backend()!r} backend here; the 'keras' implementation needs "
                "TensorFlow: set KERAS_BACKEND=tensorflow before Keras is imported"
            )
        return keras


KERAS3 = KerasFlavor("keras", "keras", "Keras 3", "hard_sigmoid_keras3", "tf-keras")
TF_KERAS = KerasFlavor("tf-keras", "tf_keras", "tf_keras (Keras 2)", "hard_sigmoid_keras2", "keras")
FLAVORS: dict[str, KerasFlavor] = {flavor.implementation: flavor for flavor in (KERAS3, TF_KERAS)}


def flavor_unavailable_reason(flavor: KerasFlavor) -> str | None:
    """Why ``flavor`` cannot run here (None when it can), without importing TensorFlow."""
    for package in ("tensorflow", flavor.module):
        if importlib.util.find_spec(package) is None:
            return f"{package} is not installed (pip install 'lstm-conformance[tensorflow]')"
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    if flavor.module == "keras" and backend != "tensorflow":
        return f"KERAS_BACKEND={backend}; the 'keras' implementation runs Keras 3 on TensorFlow"
    return None


# ----------------------------------------------------------------------------------------------------------
# Config <-> Keras layer arguments
# ----------------------------------------------------------------------------------------------------------


def check_keras_config(config: LSTMConfig, flavor: KerasFlavor) -> None:
    """Raise UnsupportedFeatureError naming the first feature of ``config`` that ``flavor`` cannot hold."""
    for feature in config.features():
        if feature in _LACKING:
            raise UnsupportedFeatureError(flavor.framework, feature, _LACKING[feature])
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


# ----------------------------------------------------------------------------------------------------------
# Building Keras layers and models
# ----------------------------------------------------------------------------------------------------------


def keras_layer_name(layer: int, bidirectional: bool) -> str:
    """The name of stacked layer ``layer``, as a fresh Keras session names it: lstm, lstm_1 / bidirectional..."""
    base = "bidirectional" if bidirectional else "lstm"
    return base if layer == 0 else f"{base}_{layer}"


def build_keras_layers(
    keras: ModuleType,
    config: LSTMConfig,
    flavor: KerasFlavor,
    dtype: str,
    *,
    return_state: bool,
    generic_path: bool,
) -> list[Any]:
    """Unbuilt Keras layers for ``config``: one ``LSTM`` (or ``Bidirectional(LSTM)``, merge "concat") per
    layer, ``return_sequences=True``, every layer in ``dtype``. ``generic_path`` turns Keras 3's cuDNN
    dispatch off (tf_keras has no such switch; the adapter pins it to the CPU instead)."""
    arguments = keras_lstm_arguments(config, flavor)
    if generic_path and flavor is KERAS3:
        arguments["use_cudnn"] = False
    # The weights are overwritten right after building: Keras' default orthogonal initializer would spend
    # seconds per large layer on a QR decomposition whose result is thrown away.
    arguments.update(_SKIPPED_INITIALIZERS)
    layers = []
    for layer in range(config.num_layers):
        lstm = keras.layers.LSTM(
            **arguments,
            return_sequences=True,
            return_state=return_state,
            dtype=dtype,
            name=keras_layer_name(layer, False),
        )
        if config.bidirectional:
            # Bidirectional casts its output to its own dtype: it needs the LSTM's.
            lstm = keras.layers.Bidirectional(
                lstm, merge_mode="concat", dtype=dtype, name=keras_layer_name(layer, True)
            )
        layers.append(lstm)
    return layers


def build_keras_model(weights: LSTMWeights, flavor: KerasFlavor, dtype: str) -> Any:
    """A functional Keras model, Input [B, T, I] -> the stacked layers -> [B, T, dirs*H], holding
    ``weights`` (DESIGN.md's contract for a written .keras). Uses Keras' default cuDNN dispatch."""
    keras = flavor.import_keras()
    config = weights.config
    inputs = keras.Input(shape=(None, config.input_size), dtype=dtype, name="input")
    outputs = inputs
    layers = build_keras_layers(keras, config, flavor, dtype, return_state=False, generic_path=False)
    for layer in layers:
        outputs = layer(outputs)
    model = keras.Model(inputs, outputs)
    for layer, arrays in zip(layers, keras_layer_weights(weights, dtype), strict=True):
        layer.set_weights(arrays)
        _restore_default_initializers(keras, layer)
    return model


#: Initializers used while building a layer whose weights are set at once (see build_keras_layers).
_SKIPPED_INITIALIZERS = {"kernel_initializer": "zeros", "recurrent_initializer": "zeros", "bias_initializer": "zeros"}
#: Keras' defaults for LSTM, put back so that a saved model's config is what a user would have written.
_DEFAULT_INITIALIZERS = {"kernel_initializer": "glorot_uniform", "recurrent_initializer": "orthogonal"}


def _restore_default_initializers(keras: ModuleType, layer: Any) -> None:
    lstms = [layer.forward_layer, layer.backward_layer] if hasattr(layer, "forward_layer") else [layer]
    for lstm in lstms:
        for attribute, name in _DEFAULT_INITIALIZERS.items():
            setattr(lstm.cell, attribute, keras.initializers.get(name))


def weight_name(variable: Any) -> str:
    """A Keras variable's full name: Keras 3's ``path``, tf_keras' ``name`` without the ``:0``."""
    path = getattr(variable, "path", None)
    name = str(path if isinstance(path, str) else variable.name)
    return name.removesuffix(":0")


# ----------------------------------------------------------------------------------------------------------
# The implementations
# ----------------------------------------------------------------------------------------------------------


class _KerasImplementation(Implementation):
    """Runs an LSTM as Keras layers on the CPU, eagerly, with gradients from tf.GradientTape."""

    flavor: KerasFlavor = KERAS3

    def capabilities(self) -> Capabilities:
        names = frozenset(self.flavor.activations())
        return Capabilities(
            dtypes=("float64", "float32"),
            devices=("cpu",),
            gradients=True,
            features=frozenset({"num_layers", "bidirectional", "no_bias"}),
            activations={"gate": names, "cell_input": names, "cell_output": names},
            notes=(
                f"{self.flavor.framework} LSTM layers, generic (non-cuDNN) loop on the CPU",
                "per-sample lengths through a Keras mask; y is zeroed past each length",
            ),
        )

    def unavailable_reason(self) -> str | None:
        return flavor_unavailable_reason(self.flavor)

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        config = weights.config
        check_keras_config(config, self.flavor)
        # Devices are CPU only (check_supported): allow_tf32 permits reduced-precision matmuls, a CPU has none,
        # so the run computes in its dtype whatever allow_tf32 says and math_mode reports that dtype, as the
        # other adapters' CPU runs do.
        self.check_supported(config, inputs, options)
        keras = self.flavor.import_keras()
        import tensorflow as tf

        prepared = inputs.prepare(config)
        with tf.device("/CPU:0"):
            return _run_layers(keras, tf, self.flavor, weights, inputs, prepared, options.dtype)


class KerasLSTM(_KerasImplementation):
    """Keras 3's ``keras.layers.LSTM`` (TensorFlow backend)."""

    name = "keras"
    framework = "Keras 3"
    flavor = KERAS3


class TFKerasLSTM(_KerasImplementation):
    """tf_keras' (Keras 2) ``tf_keras.layers.LSTM``; its hard_sigmoid is clip(0.2x + 0.5, 0, 1)."""

    name = "tf-keras"
    framework = "tf_keras (Keras 2)"
    flavor = TF_KERAS


def _run_layers(
    keras: ModuleType,
    tf: Any,
    flavor: KerasFlavor,
    weights: LSTMWeights,
    inputs: RunInputs,
    prepared: Any,
    dtype: str,
) -> RunResult:
    config = weights.config
    layers = build_keras_layers(keras, config, flavor, dtype, return_state=True, generic_path=True)
    for k, (layer, arrays) in enumerate(zip(layers, keras_layer_weights(weights, dtype), strict=True)):
        # Built by a call, so that tf_keras names the variables under the layer's scope as a model does.
        layer(tf.zeros((1, 1, config.layer_input_size(k)), dtype=dtype))
        layer.set_weights(arrays)
    variables = [v for layer in layers for v in layer.trainable_weights]
    x = tf.constant(prepared.x.swapaxes(0, 1), dtype=dtype)  # Keras runs batch-major [B, T, I]
    h0 = tf.constant(prepared.h0, dtype=dtype)
    c0 = tf.constant(prepared.c0, dtype=dtype)
    # A mask exactly when lengths were given (an all-true mask runs the same function).
    mask = None if inputs.seq_lens is None else tf.sequence_mask(prepared.seq_lens, prepared.steps)
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        y, h_n, c_n = _forward(tf, layers, config, x, h0, c0, mask)
        loss = None
        if prepared.wants_gradients:
            loss = (
                tf.reduce_sum(y * tf.constant(prepared.dy.swapaxes(0, 1), dtype=dtype))
                + tf.reduce_sum(h_n * tf.constant(prepared.dh_n, dtype=dtype))
                + tf.reduce_sum(c_n * tf.constant(prepared.dc_n, dtype=dtype))
            )
    y_np = _f64(y)
    y_out = y_np if inputs.batch_first else y_np.swapaxes(0, 1)
    gradients = None
    if loss is not None:
        found = tape.gradient(loss, [x, h0, c0, *variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gradients = _gradients(config, found, variables, inputs.batch_first)
    return RunResult(y=np.ascontiguousarray(y_out), h_n=_f64(h_n), c_n=_f64(c_n), math_mode=dtype, gradients=gradients)


def _forward(tf: Any, layers: list[Any], config: LSTMConfig, x: Any, h0: Any, c0: Any, mask: Any) -> tuple[Any, ...]:
    """Run the stack; returns y [B, T, dirs*H] (zero past each length), h_n and c_n [layers*dirs, B, H]."""
    dirs = config.num_directions
    outputs, final_h, final_c = x, [], []
    for k, layer in enumerate(layers):
        initial = []
        for direction in range(dirs):
            initial += [h0[k * dirs + direction], c0[k * dirs + direction]]
        outputs, *states = layer(outputs, initial_state=initial, mask=mask)
        final_h += states[0::2]
        final_c += states[1::2]
    if mask is not None:
        # Keras repeats the last valid output at masked steps of a forward layer; PyTorch's convention is zero.
        outputs = outputs * tf.cast(mask, outputs.dtype)[:, :, None]
    return outputs, tf.stack(final_h), tf.stack(final_c)


def _gradients(config: LSTMConfig, found: list[Any], variables: list[Any], batch_first: bool) -> Gradients:
    grad_x, grad_h0, grad_c0, *grad_vars = (_f64(g) for g in found)
    native = {weight_name(v): g for v, g in zip(variables, grad_vars, strict=True)}
    per_layer: list[list[F64]] = []
    cursor = 0
    per_direction = 3 if config.bias else 2
    for _ in range(config.num_layers):
        count = per_direction * config.num_directions
        per_layer.append(grad_vars[cursor : cursor + count])
        cursor += count
    canonical = canonical_from_keras_weights(config, per_layer)
    # One Keras bias feeds both canonical biases: its gradient is theirs.
    for directions in canonical.layers:
        for params in directions:
            params.Rb = params.Wb.copy()
    return Gradients(
        x=grad_x if batch_first else np.ascontiguousarray(grad_x.swapaxes(0, 1)),
        h0=grad_h0,
        c0=grad_c0,
        weights=canonical,
        native=native,
    )


def _f64(tensor: Any) -> F64:
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor, dtype=np.float64)
