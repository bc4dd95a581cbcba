"""Known limitations as data: an implementation computes a case wrong in a known way, so its test is an xfail.

Every xfail is strict: when a limitation stops failing (the framework fixed it), the test fails as
``XPASS(strict)`` and the report lists it under "known limitation fixed?", so the entry gets removed instead of
hiding a now-working feature.

A limitation matches a test when the implementation (or its base name, for variants such as ``tf-cell:fb0``),
device, dtype and check match (``"*"`` matches anything) and the case has the ``feature``: a name from
``Case.features()`` ("ragged", "gate_clip", ...), or a prefix ending in "=" ("gate_activation=") that matches
any non-default activation of that role, or ``"*"`` for every case (a whole dtype computed wrong); ``without``
names features whose presence lifts it (OpenVINO ignores sequence lengths in one direction only: "ragged"
without "bidirectional").
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class KnownLimitation:
    implementation: str
    feature: str
    reason: str
    device: str = "*"
    dtype: str = "*"
    check: str = "*"
    without: tuple[str, ...] = ()

    def matches(self, implementation: str, features: list[str], device: str, dtype: str, check: str) -> bool:
        if self.implementation not in (implementation, implementation.split(":")[0]):
            return False
        if self.device not in ("*", device) or self.dtype not in ("*", dtype) or self.check not in ("*", check):
            return False
        if any(feature in features for feature in self.without):
            return False
        if self.feature == "*":
            return True
        if self.feature.endswith("="):
            return any(feature.startswith(self.feature) for feature in features)
        return self.feature in features


#: A reproduction's common start: the ONNX model this project builds for a canonical model, in OpenVINO.
_OV_REPRO = (
    "repro: w = random_weights(LSTMConfig(3, 5{config}), rng); m = build_model(w, GraphSignature({signature})); "
    "ov.Core().compile_model(ov.Core().read_model(m.SerializeToString(), b''), 'CPU') vs onnxruntime on the same "
    "bytes (adapters.onnx_runtime)"
)

#: Limitations written down here; those of onnx's reference evaluator come from its adapter (below).
STATIC_LIMITATIONS: tuple[KnownLimitation, ...] = (
    KnownLimitation(
        "openvino",
        "peepholes",
        "openvino 2026.4.1 ignores the ONNX LSTM's P input (peepholes): its output equals the reference run without "
        "peepholes to 1.5e-7 and is 1.5e-1 from the reference with them (l1_peep, float32); "
        + _OV_REPRO.format(config=", peepholes=True", signature="initial_states=True"),
    ),
    KnownLimitation(
        "openvino",
        "input_forget",
        "openvino 2026.4.1 ignores the ONNX LSTM's input_forget=1: its output equals the reference LSTM without "
        "coupling to 6.5e-8 and is 3.1e-1 from the coupled one (l1_input_forget, float32); "
        + _OV_REPRO.format(config=", input_forget=True", signature="initial_states=True"),
    ),
    KnownLimitation(
        "openvino",
        "ragged",
        "openvino 2026.4.1 ignores sequence_lens of a direction='forward' ONNX LSTM (it honours them for "
        "'bidirectional'): every sample runs all T steps, y equals the full-length reference to 1.1e-7 and is 8e-1 "
        "from the ragged one, h_n 5.5e-1 (l1_ragged, lengths [6, 5, 1], float32); "
        + _OV_REPRO.format(config="", signature="sequence_lens=True"),
        without=("bidirectional",),
    ),
    KnownLimitation(
        "keras-jax",
        "*",
        "Keras 3.15.1 on JAX (with JAX_ENABLE_X64=1) computes a float64 LSTM's tanh in float32: keras.ops.tanh casts "
        "to dtypes.result_type(x.dtype, float), and keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE maps float64 "
        "to float32 outside TensorFlow, so the float64 layer is float32-exact only (measured 5e-8 to 1.4e-7 relative "
        'to the float64 reference); repro: JAX_ENABLE_X64=1 KERAS_BACKEND=jax python -c "import keras; '
        "print(keras.ops.tanh(keras.ops.ones(2, dtype='float64')).dtype)\" prints float32 (a relu cell, without "
        "tanh, is float64-exact)",
        dtype="float64",
        without=("cell_input_activation=relu",),
    ),
    KnownLimitation(
        "keras-torch",
        "*",
        "Keras 3.15.1 on torch computes a float64 LSTM's matmuls in float32: keras.ops.matmul casts to "
        "dtypes.result_type(x1.dtype, x2.dtype), and keras.src.backend.common.dtypes.BIT64_TO_BIT32_DTYPE maps "
        "float64 to float32 outside TensorFlow, so the float64 layer is float32-exact only (measured 2e-8 to 7e-8 "
        'relative to the float64 reference); repro: KERAS_BACKEND=torch python -c "import keras; '
        "a = keras.ops.ones((2, 3), dtype='float64'); print(keras.ops.matmul(a, keras.ops.transpose(a)).dtype)\" "
        "prints torch.float32",
        dtype="float64",
    ),
    KnownLimitation(
        "torch-onnx-dynamo",
        "proj_size",
        "torch 2.13's torch.onnx.export(dynamo=True) exports nn.LSTM(proj_size=...) into a graph ONNX Runtime 1.32 "
        "refuses to load: 'Node (node_Concat_94) Op (Concat) [ShapeInferenceError] All inputs to Concat must have "
        "same rank. Input 1 has rank 1 != 2'; repro: torch.onnx.export(Wrap(nn.LSTM(3, 5, 2, bidirectional=True, "
        "proj_size=2)), (x, h0, c0), dynamo=True) then onnxruntime.InferenceSession(model_proto.SerializeToString())",
    ),
)

#: ONNX_REFERENCE_IGNORES keys (option names of adapters.onnx_runtime) -> the case feature that uses the option.
_ONNX_OPTION_FEATURES: dict[str, str] = {
    "seq_lens": "ragged",
    "gate_activation": "gate_activation=",
    "cell_input_activation": "cell_input_activation=",
    "cell_output_activation": "cell_output_activation=",
}


@cache
def onnx_reference_limitations() -> tuple[KnownLimitation, ...]:
    """The options ``onnx.reference`` silently ignores, from ``adapters.onnx_runtime.ONNX_REFERENCE_IGNORES``,
    imported lazily (the adapter module imports no framework at its top level)."""
    try:
        module = importlib.import_module("lstm_conformance.adapters.onnx_runtime")
    except ImportError:
        return ()
    ignored: dict[str, str] = getattr(module, "ONNX_REFERENCE_IGNORES", {})
    return tuple(
        KnownLimitation("onnx-reference", _ONNX_OPTION_FEATURES.get(option, option), reason)
        for option, reason in ignored.items()
    )


def all_limitations() -> tuple[KnownLimitation, ...]:
    return STATIC_LIMITATIONS + onnx_reference_limitations()


def find_limitation(
    implementation: str, features: list[str], device: str, dtype: str, check: str
) -> KnownLimitation | None:
    """The first known limitation that applies to a test, or None."""
    for limitation in all_limitations():
        if limitation.matches(implementation, features, device, dtype, check):
            return limitation
    return None
