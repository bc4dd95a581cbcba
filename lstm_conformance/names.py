"""The names the command line, the suite's options and the registries share, written once.

Standard library only (no NumPy, no framework): ``lstm-conformance --help`` and the pytest plugin's option
parsing read these without importing anything heavy. Each name maps to "module:object", imported only when that
implementation or format is used (``lstm_conformance.adapters.registry``, ``lstm_conformance.adapters.formats``).
"""

from __future__ import annotations

_ADAPTERS = "lstm_conformance.adapters"

#: Implementation name (../shared/DESIGN.md) -> "module:object".
IMPLEMENTATIONS: dict[str, str] = {
    "reference": f"{_ADAPTERS}.reference_impl:ReferenceImplementation",
    "torch": f"{_ADAPTERS}.pytorch:TorchLSTM",
    "torch-cell": f"{_ADAPTERS}.pytorch:TorchLSTMCell",
    "tf-cell": f"{_ADAPTERS}.tf_cell:TFCell",
    "tf-block": f"{_ADAPTERS}.tf_block:TFBlock",
    "tf-block-v2": f"{_ADAPTERS}.tf_block:TFBlockV2",
    "keras": f"{_ADAPTERS}.keras_layer:KerasLSTM",
    "tf-keras": f"{_ADAPTERS}.keras_layer:TFKerasLSTM",
    "onnxruntime": f"{_ADAPTERS}.onnx_runtime:OnnxRuntimeLSTM",
    "onnx-reference": f"{_ADAPTERS}.onnx_runtime:OnnxReferenceLSTM",
    "openvino": f"{_ADAPTERS}.openvino_runtime:OpenVinoLSTM",
    "tflite": f"{_ADAPTERS}.litert:LiteRTLSTM",
    "torch-onnx": f"{_ADAPTERS}.torch_export:TorchOnnxLegacy",
    "torch-onnx-dynamo": f"{_ADAPTERS}.torch_export:TorchOnnxDynamo",
    "keras-jax": f"{_ADAPTERS}.keras_backends:KerasJaxLSTM",
    "keras-torch": f"{_ADAPTERS}.keras_backends:KerasTorchLSTM",
    "flax": f"{_ADAPTERS}.flax_cell:FlaxLSTMCell",
    "flax-optimized": f"{_ADAPTERS}.flax_cell:FlaxOptimizedLSTMCell",
}

#: File format name (../shared/DESIGN.md) -> "module:class". Order matters for suffix inference: first match wins.
FORMATS: dict[str, str] = {
    "npz": f"{_ADAPTERS}.formats.npz_file:NpzFormat",
    "torch": f"{_ADAPTERS}.formats.torch_file:TorchFormat",
    "safetensors": f"{_ADAPTERS}.formats.torch_file:SafetensorsFormat",
    "keras": f"{_ADAPTERS}.formats.keras_file:KerasFormat",
    "keras-h5": f"{_ADAPTERS}.formats.keras_file:KerasH5Format",
    "tf-checkpoint": f"{_ADAPTERS}.formats.tf_checkpoint:TFCheckpointFormat",
    "onnx": f"{_ADAPTERS}.formats.onnx_file:OnnxFormat",
    "tflite": f"{_ADAPTERS}.formats.tflite_file:TFLiteFormat",
}

#: dtypes by name; bfloat16 is named, since NumPy has no such dtype.
DTYPES: tuple[str, ...] = ("float64", "float32", "float16", "bfloat16")
#: Devices an implementation may run on.
DEVICES: tuple[str, ...] = ("cpu", "cuda")
