"""Keras' ``LSTM`` layer: Keras 3 (``import keras``, TensorFlow backend) and tf_keras (Keras 2, ``import tf_keras``).

The layout (kernel, recurrent_kernel, one bias, gate order i, f, c, o, activation names, each flavor's
hard_sigmoid) is ``adapters.layouts.keras``. State ``[h, c]``; ``Bidirectional`` takes
``initial_state=[h_fw, c_fw, h_bw, c_bw]`` and returns, with ``return_state``, ``[y, h_fw, c_fw, h_bw, c_bw]``.

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
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import (
    Capabilities,
    Gradients,
    Implementation,
    Refusal,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.adapters.layouts.keras import (
    FLAVORS,
    KERAS3,
    KERAS_FEATURES,
    KERAS_LACKS,
    TF_KERAS,
    KerasFlavor,
    canonical_from_keras_gradients,
    keras_activation_name,
    keras_layer_name,
    keras_layer_weights,
    keras_lstm_arguments,
)
from lstm_conformance.reference.errors import FrameworkMissingError, UnsupportedFeatureError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

F64 = NDArray[np.float64]


def import_keras(flavor: KerasFlavor) -> ModuleType:
    """TensorFlow, then the Keras package (TF_USE_LEGACY_KERAS is set by ``adapters`` before this)."""
    reason = flavor_unavailable_reason(flavor)
    if reason:
        raise FrameworkMissingError(reason)
    keras = importlib.import_module(flavor.module)
    if flavor.module == "keras" and keras.backend.backend() != "tensorflow":
        raise FrameworkMissingError(
            f"Keras 3 runs on the {keras.backend.backend()!r} backend here; the 'keras' implementation needs "
            "TensorFlow: set KERAS_BACKEND=tensorflow before Keras is imported"
        )
    return keras


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
# Building Keras layers and models
# ----------------------------------------------------------------------------------------------------------


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
    keras = import_keras(flavor)
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
            features=KERAS_FEATURES,
            activations={"gate": names, "cell_input": names, "cell_output": names},
            notes=(
                f"{self.flavor.framework} LSTM layers, generic (non-cuDNN) loop on the CPU",
                "per-sample lengths through a Keras mask; y is zeroed past each length",
            ),
        )

    def unavailable_reason(self) -> str | None:
        return flavor_unavailable_reason(self.flavor)

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        for feature in config.features():
            if feature in KERAS_LACKS:
                return Refusal(feature, f"{self.name}: {KERAS_LACKS[feature]} ({feature})")
        if config.cell_input_activation != config.cell_output_activation:
            limit = f"{self.name}: Keras' one `activation` serves both cell input and cell output"
            return Refusal("different cell input and output activations", limit)
        for activation in (config.gate_activation, config.cell_input_activation):
            try:
                keras_activation_name(activation, self.flavor)
            except UnsupportedFeatureError as error:
                limit = f"{self.name} has no {error.feature}"
                if activation.name == FLAVORS[self.flavor.other_implementation].hard_sigmoid:
                    own = self.flavor.hard_sigmoid
                    limit = f"{self.name}: its hard_sigmoid is {own}, a different function from {activation}"
                return Refusal(error.feature, limit)
        return super().refusal(config, inputs, options)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        # Devices are CPU only (check_supported): allow_tf32 permits reduced-precision matmuls, a CPU has none,
        # so the run computes in its dtype whatever allow_tf32 says and math_mode reports that dtype, as the
        # other adapters' CPU runs do.
        keras = import_keras(self.flavor)
        import tensorflow as tf

        with tf.device("/CPU:0"):
            return _run_layers(keras, tf, self.flavor, weights, prepared, options.dtype)


class KerasLSTM(_KerasImplementation):
    """Keras 3's ``keras.layers.LSTM`` (TensorFlow backend)."""

    name = "keras"
    framework = "Keras 3"
    flavor = KERAS3
    alternatives = ("tf-keras",)


class TFKerasLSTM(_KerasImplementation):
    """tf_keras' (Keras 2) ``tf_keras.layers.LSTM``; its hard_sigmoid is clip(0.2x + 0.5, 0, 1)."""

    name = "tf-keras"
    framework = "tf_keras (Keras 2)"
    flavor = TF_KERAS
    alternatives = ("keras",)


def _run_layers(
    keras: ModuleType, tf: Any, flavor: KerasFlavor, weights: LSTMWeights, prepared: PreparedInputs, dtype: str
) -> RunResult:
    """The stack run batch-major, as Keras runs; the result time-major."""
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
    mask = tf.sequence_mask(prepared.seq_lens, prepared.steps) if prepared.lengths_given else None
    with tf.GradientTape() as tape:
        tape.watch([x, h0, c0])
        y, h_n, c_n = _forward(tf, layers, config, x, h0, c0, mask)
        loss = None
        if prepared.dy is not None:  # with the other cotangents, filled in exactly when gradients are wanted
            loss = (
                tf.reduce_sum(y * tf.constant(prepared.dy.swapaxes(0, 1), dtype=dtype))
                + tf.reduce_sum(h_n * tf.constant(prepared.dh_n, dtype=dtype))
                + tf.reduce_sum(c_n * tf.constant(prepared.dc_n, dtype=dtype))
            )
    gradients = None
    if loss is not None:
        found = tape.gradient(loss, [x, h0, c0, *variables], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        gradients = _gradients(config, found, variables)
    y_out = np.ascontiguousarray(_f64(y).swapaxes(0, 1))
    return RunResult(y=y_out, h_n=_f64(h_n), c_n=_f64(c_n), math_mode=dtype, gradients=gradients)


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


def _gradients(config: LSTMConfig, found: list[Any], variables: list[Any]) -> Gradients:
    """Gradients of x (made time-major), h0, c0 and every variable, the variables also by Keras' own names."""
    grad_x, grad_h0, grad_c0, *grad_vars = (_f64(g) for g in found)
    return Gradients(
        x=np.ascontiguousarray(grad_x.swapaxes(0, 1)),
        h0=grad_h0,
        c0=grad_c0,
        weights=canonical_from_keras_gradients(config, grad_vars),
        native={weight_name(v): g for v, g in zip(variables, grad_vars, strict=True)},
    )


def _f64(tensor: Any) -> F64:
    return np.asarray(tensor.numpy() if hasattr(tensor, "numpy") else tensor, dtype=np.float64)
