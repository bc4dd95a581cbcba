"""LiteRT (TFLite) flatbuffers, ``.tflite``: LSTMs as LiteRT's fused ``UNIDIRECTIONAL_SEQUENCE_LSTM`` op.

Writing. The canonical weights go into a tf_keras model (``adapters.keras_layer``'s layers, mapping and
names: Input [B, T, I] with T dynamic, one ``LSTM`` or ``Bidirectional(LSTM)`` per layer), and TF's own
converter (``tf.lite.TFLiteConverter.from_keras_model``) writes the file: it fuses each Keras LSTM into one
``UNIDIRECTIONAL_SEQUENCE_LSTM`` op, and a ``Bidirectional`` into two of them, the backward one between
``REVERSE_V2`` ops, joined by ``CONCATENATION`` (TF 2.21's converter writes no ``BIDIRECTIONAL_SEQUENCE_LSTM``
for Keras models). The converter needs a static batch (batch None fails to lower the TensorList ops), and the
fused op's state tensors are sized for it: LiteRT cannot resize the batch afterwards (``allocate_tensors``
fails: "NumElements(output_state) != n_batch * n_output"), only T. ``convert`` writes batch 1 (run samples one
at a time); the "tflite" implementation writes the batch of its run. The states are variable tensors that
persist across ``invoke()`` calls: call ``reset_all_variables()`` between independent sequences. The converter writes
``cell_clip=10.0`` on every fused Keras LSTM, a clip the Keras layer does not have; the writer sets each op's
``cell_clip`` to the canonical one (0, no clip, when the model has none), through the schema's object API, so
the file computes the canonical function. ``quantize="dynamic-int8"`` adds ``tf.lite.Optimize.DEFAULT`` without
a representative dataset: dynamic-range quantization, int8 weights with float32 activations; the converter
quantizes only weight tensors of at least 1024 elements (smaller ones stay float32: a small LSTM is not
quantized at all), so what was quantized is read from the file (``LstmOp.quantized``).

Reading parses the flatbuffer with the ``tflite`` schema module LiteRT ships (``ai_edge_litert.
schema_py_generated``, or TensorFlow's ``tensorflow.lite.python.schema_py_generated``). The op's inputs, as
``tensorflow/lite/kernels/lstm_shared.h`` numbers them: 0 input; 1-4 input_to_{input,forget,cell,output}
weights [H, I]; 5-8 recurrent_to_* [H, Hout]; 9-11 cell_to_{input,forget,output} peepholes [H]; 12-15
{input,forget,cell,output} gate biases [H]; 16 projection weights [P, H]; 17 projection bias [P]; 18 output
state; 19 cell state; 20-23 layer-norm coefficients. Gate order i, f, g, o is canonical: W = concat(1, 2, 3, 4),
R = concat(5, ..., 8), Wb = concat(12, ..., 15), Rb = 0; P rows (9, 10, 11) = canonical (i, f, o). Options:
``cell_clip`` (0 = none), ``proj_clip``, ``fused_activation_function`` (the cell activation; gates are always
sigmoid). int8 weights are dequantized with their scale and zero point. Refused: CIFG (no input gate: LiteRT's
coupling is i = 1 - f, not the canonical f = 1 - i), layer normalization, a projection bias, time-major or
``BIDIRECTIONAL_SEQUENCE_LSTM`` ops (not read here). Ops reading the same tensor (directly, or through one
``REVERSE_V2``: the backward direction) are one layer; layers chain in the order of the file's operators.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.formats import FileFormat, FoundLSTM, ModelContents, error_summary, refuse_options
from lstm_conformance.reference.errors import FrameworkMissingError, InputFileError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LayerWeights, LSTMConfig, LSTMWeights

#: Writer options: the quantization modes.
QUANTIZE_MODES: tuple[str, ...] = ("dynamic-int8",)
#: The features the writer's Keras route holds (cell_clip is set on the fused op after conversion).
#: Not "no_bias": TF 2.21's converter does not fuse a use_bias=False Keras LSTM (the writer refuses it).
WRITER_FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "cell_clip"})
#: LiteRT's ActivationFunctionType values -> canonical cell activation names.
_FUSED_ACTIVATIONS: dict[int, str] = {0: "affine", 1: "relu", 4: "tanh"}

_LSTM, _REVERSE = "UNIDIRECTIONAL_SEQUENCE_LSTM", "REVERSE_V2"


def schema() -> ModuleType:
    """The generated ``tflite`` schema module LiteRT (or TensorFlow) ships."""
    for name in ("ai_edge_litert.schema_py_generated", "tensorflow.lite.python.schema_py_generated"):
        if importlib.util.find_spec(name.rpartition(".")[0]) is not None:
            try:
                return importlib.import_module(name)
            except ImportError:
                continue
    raise FrameworkMissingError("no tflite schema module: pip install 'lstm-conformance[tflite]'")


def litert_unavailable_reason() -> str | None:
    if importlib.util.find_spec("ai_edge_litert") is None and importlib.util.find_spec("tensorflow") is None:
        return "neither ai-edge-litert nor tensorflow is installed (pip install 'lstm-conformance[tflite]')"
    return None


def interpreter_class() -> Any:
    """LiteRT's ``Interpreter``; TensorFlow's ``tf.lite.Interpreter`` where only TensorFlow is installed."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    import tensorflow as tf

    return tf.lite.Interpreter


# ----------------------------------------------------------------------------------------------------------
# Writing: tf_keras model -> TF's converter -> the canonical cell_clip on each fused op
# ----------------------------------------------------------------------------------------------------------


def check_writable(config: LSTMConfig) -> None:
    from lstm_conformance.adapters.layouts.keras import TF_KERAS, check_keras_config

    clipless = LSTMConfig(**{**config.__dict__, "cell_clip": None})
    check_keras_config(clipless, TF_KERAS)
    if not config.bias:
        raise UnsupportedFeatureError(
            "LiteRT", "no_bias", "TF 2.21's converter writes no fused LSTM op for a use_bias=False Keras LSTM"
        )
    if config.gate_activation != Activation("sigmoid") or config.cell_input_activation != Activation("tanh"):
        raise UnsupportedFeatureError("LiteRT", "activations other than sigmoid/tanh", "the fused LSTM op has none")


def tflite_bytes(weights: LSTMWeights, quantize: str | None = None, batch: int = 1) -> bytes:
    """A .tflite file's bytes holding ``weights`` as fused LSTM ops, written by TF's converter, for input
    [batch, T, I] (T dynamic; the fused op's state tensors fix the batch)."""
    import tensorflow as tf

    from lstm_conformance.adapters.keras_layer import build_keras_layers, import_keras
    from lstm_conformance.adapters.layouts.keras import TF_KERAS, keras_layer_weights

    config = weights.config
    check_writable(config)
    if quantize is not None and quantize not in QUANTIZE_MODES:
        raise UnsupportedFeatureError("LiteRT", f"quantize {quantize!r}", f"choose one of {', '.join(QUANTIZE_MODES)}")
    keras = import_keras(TF_KERAS)
    clipless = LSTMConfig(**{**config.__dict__, "cell_clip": None})
    inputs = keras.Input(shape=(None, config.input_size), batch_size=batch, dtype="float32", name="input")
    layers = build_keras_layers(keras, clipless, TF_KERAS, "float32", return_state=False, generic_path=False)
    outputs = inputs
    for layer in layers:
        outputs = layer(outputs)
    model = keras.Model(inputs, outputs)
    for layer, arrays in zip(
        layers, keras_layer_weights(LSTMWeights(clipless, weights.layers), "float32"), strict=True
    ):
        layer.set_weights(arrays)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "dynamic-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    data: bytes = converter.convert()
    fused = len(parse_lstm_ops(data))
    if fused != config.num_layers * config.num_directions:
        # Without the fused op the file is an unrolled graph: no cell_clip to set, no state tensors to read.
        raise UnsupportedFeatureError(
            "LiteRT",
            "an LSTM its converter does not fuse",
            f"TF's converter wrote {fused} UNIDIRECTIONAL_SEQUENCE_LSTM ops for "
            f"{config.num_layers * config.num_directions} LSTMs (it does not fuse this model)",
        )
    return set_cell_clip(data, config.cell_clip or 0.0)


def set_cell_clip(data: bytes, cell_clip: float) -> bytes:
    """``data`` with every fused LSTM op's cell_clip set to ``cell_clip`` (0: none)."""
    import flatbuffers

    fb = schema()
    model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
    for subgraph in model.subgraphs:
        for operator in subgraph.operators:
            if _op_name(fb, model, operator) == _LSTM:
                operator.builtinOptions.cellClip = float(cell_clip)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ----------------------------------------------------------------------------------------------------------
# Reading: fused LSTM ops -> canonical
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LstmOp:
    """One fused LSTM op: where it sits, its canonical weights and options, its state tensors."""

    layer: int
    direction: int
    weights: LayerWeights
    hidden_size: int
    input_size: int
    cell_clip: float | None
    proj_clip: float | None
    activation: str
    output_state: int
    cell_state: int
    output: int
    #: Whether any of its weights is stored as int8 (dynamic-range quantization).
    quantized: bool = False


def _op_name(fb: ModuleType, model: Any, operator: Any) -> str:
    code = model.operatorCodes[operator.opcodeIndex]
    number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    for name, value in vars(fb.BuiltinOperator).items():
        if not name.startswith("_") and value == number:
            return str(name)
    return str(number)


def parse_lstm_ops(data: bytes) -> list[LstmOp]:
    """Every fused LSTM op of the main subgraph, with (layer, direction) found from what each reads."""
    fb = schema()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
        subgraph = model.subgraphs[0]
    except Exception as error:
        raise InputFileError(f"not a LiteRT flatbuffer ({error_summary(error)}); write it again") from None
    producers = {int(out): operator for operator in subgraph.operators for out in operator.outputs}
    sources: list[int] = []
    found = []
    for operator in subgraph.operators:
        name = _op_name(fb, model, operator)
        if name == "BIDIRECTIONAL_SEQUENCE_LSTM":
            raise InputFileError("the file holds BIDIRECTIONAL_SEQUENCE_LSTM ops, which this reader does not read")
        if name != _LSTM:
            continue
        source, direction = int(operator.inputs[0]), 0
        producer = producers.get(source)
        if producer is not None and _op_name(fb, model, producer) == _REVERSE:
            source, direction = int(producer.inputs[0]), 1
        if source not in sources:
            sources.append(source)
        found.append(_read_op(fb, model, subgraph, operator, sources.index(source), direction))
    return found


def _read_op(fb: ModuleType, model: Any, subgraph: Any, operator: Any, layer: int, direction: int) -> LstmOp:
    inputs = [int(i) for i in operator.inputs] + [-1] * (24 - len(operator.inputs))
    where = f"LSTM op of layer {layer}"

    def tensor(index: int) -> NDArray[np.float64] | None:
        return None if inputs[index] < 0 else _constant(model, subgraph.tensors[inputs[index]], where)

    if inputs[1] < 0:
        raise UnsupportedFeatureError("LiteRT", "CIFG (no input gate)", "its i = 1 - f has no canonical form")
    if any(inputs[index] >= 0 for index in range(20, 24)):
        raise UnsupportedFeatureError("LiteRT", "layer-normalized LSTM", "the canonical model has no layer norm")
    options = operator.builtinOptions
    if getattr(options, "timeMajor", False):
        raise UnsupportedFeatureError("LiteRT", "time-major LSTM op", "not read here")
    blocks = [tensor(index) for index in range(1, 16)]
    W = np.concatenate([b for b in blocks[0:4] if b is not None])
    R = np.concatenate([b for b in blocks[4:8] if b is not None])
    hidden = W.shape[0] // 4
    peepholes = blocks[8:11]
    P = np.stack(peepholes) if all(p is not None for p in peepholes) else None  # type: ignore[arg-type]
    biases = blocks[11:15]
    Wb = np.concatenate([b if b is not None else np.zeros(hidden) for b in biases])
    proj, proj_bias = tensor(16), tensor(17)
    if proj_bias is not None and np.any(proj_bias):
        raise UnsupportedFeatureError("LiteRT", "projection bias", "the canonical projection has no bias")
    activation = _FUSED_ACTIVATIONS.get(int(options.fusedActivationFunction))
    if activation is None:
        raise UnsupportedFeatureError("LiteRT", f"fused activation {options.fusedActivationFunction}", "not read")
    return LstmOp(
        layer=layer,
        direction=direction,
        weights=LayerWeights(W=W, R=R, Wb=Wb, Rb=np.zeros_like(Wb), P=P, proj=proj),
        hidden_size=hidden,
        input_size=W.shape[1],
        cell_clip=float(options.cellClip) or None,
        proj_clip=float(options.projClip) or None,
        activation=activation,
        output_state=inputs[18],
        cell_state=inputs[19],
        output=int(operator.outputs[0]),
        quantized=any(inputs[i] >= 0 and subgraph.tensors[inputs[i]].type == fb.TensorType.INT8 for i in range(1, 17)),
    )


def _constant(model: Any, tensor: Any, where: str) -> NDArray[np.float64]:
    """A constant tensor as float64, int8 weights dequantized (scale * (q - zero_point))."""
    fb = schema()
    buffer = model.buffers[tensor.buffer]
    raw = getattr(buffer, "data", None)
    if raw is None or len(raw) == 0:
        raise InputFileError(f"{where}: weight tensor {tensor.name!r} has no data in the file")
    dtypes = {fb.TensorType.FLOAT32: np.float32, fb.TensorType.INT8: np.int8, fb.TensorType.FLOAT16: np.float16}
    if tensor.type not in dtypes:
        raise UnsupportedFeatureError("LiteRT", f"weight tensor type {tensor.type}", "float32/float16/int8 only")
    array = np.frombuffer(bytes(bytearray(raw)), dtype=dtypes[tensor.type]).reshape(list(tensor.shape))
    values = array.astype(np.float64)
    if tensor.type == fb.TensorType.INT8:
        quantization = tensor.quantization
        scale = np.asarray(quantization.scale, dtype=np.float64)
        zero = np.asarray(quantization.zeroPoint if quantization.zeroPoint is not None else [0], dtype=np.float64)
        axis = int(quantization.quantizedDimension or 0)
        shape = [-1 if d == axis else 1 for d in range(values.ndim)] if scale.size > 1 else [1] * values.ndim
        values = (values - zero.reshape(shape)) * scale.reshape(shape)
    return values


def weights_from_ops(ops: list[LstmOp]) -> LSTMWeights:
    """The canonical model of a chain of fused LSTM ops (every layer the same size and options)."""
    if not ops:
        raise InputFileError("the file holds no UNIDIRECTIONAL_SEQUENCE_LSTM op")
    first = ops[0]
    layers = max(op.layer for op in ops) + 1
    directions = max(op.direction for op in ops) + 1
    grid: dict[tuple[int, int], LstmOp] = {(op.layer, op.direction): op for op in ops}
    if len(grid) != layers * directions or len(ops) != len(grid):
        raise InputFileError(f"the file's {len(ops)} LSTM ops do not form {layers} layers of {directions} directions")
    for op in ops:
        if (op.cell_clip, op.proj_clip, op.activation, op.hidden_size) != (
            first.cell_clip,
            first.proj_clip,
            first.activation,
            first.hidden_size,
        ):
            raise InputFileError("the file's LSTM ops differ in size or options; one canonical stack needs one")
    activation = Activation("affine", 1.0, 0.0) if first.activation == "affine" else Activation(first.activation)
    config = LSTMConfig(
        input_size=grid[(0, 0)].input_size,
        hidden_size=first.hidden_size,
        num_layers=layers,
        bidirectional=directions == 2,
        proj_size=0 if first.weights.proj is None else first.weights.proj.shape[0],
        peepholes=first.weights.P is not None,
        cell_clip=first.cell_clip,
        proj_clip=first.proj_clip,
        cell_input_activation=activation,
        cell_output_activation=activation,
    )
    return LSTMWeights(config, [[grid[(k, d)].weights for d in range(directions)] for k in range(layers)])


# ----------------------------------------------------------------------------------------------------------
# Running a file in LiteRT's interpreter
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LiteRTRun:
    """y [B, T, dirs*Hout] and each op's final states, keyed by (layer, direction)."""

    y: NDArray[Any]
    final_h: dict[tuple[int, int], NDArray[Any]]
    final_c: dict[tuple[int, int], NDArray[Any]]


def run_file(data: bytes, x: NDArray[np.float32]) -> LiteRTRun:
    """Run ``data`` on batch-major ``x`` [B, T, I] in LiteRT's interpreter (one thread), the input resized to
    ``x``'s shape; the fused ops' state tensors hold the final states after the call (they start at zero)."""
    interpreter = interpreter_class()(model_content=data, num_threads=1)
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(input_detail["index"], x)
    interpreter.invoke()
    (output_detail,) = interpreter.get_output_details()
    y = np.array(interpreter.get_tensor(output_detail["index"]))
    final_h, final_c = {}, {}
    for op in parse_lstm_ops(data):
        final_h[(op.layer, op.direction)] = np.array(interpreter.get_tensor(op.output_state))
        final_c[(op.layer, op.direction)] = np.array(interpreter.get_tensor(op.cell_state))
    return LiteRTRun(y=y, final_h=final_h, final_c=final_c)


# ----------------------------------------------------------------------------------------------------------
# The format
# ----------------------------------------------------------------------------------------------------------


class TFLiteFormat(FileFormat):
    name = "tflite"
    framework = "LiteRT"
    implementation = "tflite"

    def unavailable_reason(self) -> str | None:
        return litert_unavailable_reason()

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), "reading a .tflite file")
        try:
            data = path.read_bytes()
        except OSError as error:
            raise InputFileError(f"cannot read {path}: {error_summary(error)}") from None
        if data[4:8] != b"TFL3":
            raise InputFileError(f"{path} is not a LiteRT flatbuffer (no TFL3 identifier); pass --from with its format")
        weights = weights_from_ops(parse_lstm_ops(data))
        notes = []
        if weights.config.cell_clip == 10.0:
            notes.append("cell_clip 10.0 as the file holds it (TF's converter writes 10.0 on every Keras LSTM)")
        return ModelContents([FoundLSTM("", weights, "tflite", batch_first=True, notes=notes)])

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        given = refuse_options(options, ("quantize", "dtype"), "writing a .tflite file")
        if given.get("dtype") not in (None, "float32"):
            raise UnsupportedFeatureError("LiteRT", f"dtype {given['dtype']}", "the fused LSTM op is float32")
        reason = litert_unavailable_reason()
        if reason:
            raise FrameworkMissingError(reason)
        path.write_bytes(tflite_bytes(weights, given.get("quantize")))
        notes = [
            "written by TF's converter as UNIDIRECTIONAL_SEQUENCE_LSTM ops; input [1, T, I]: one sample per invoke() "
            "(LiteRT cannot resize the fused op's batch), reset_all_variables() between sequences (its states persist)"
        ]
        if given.get("quantize"):
            notes.append(
                "dynamic-range int8 weights (tf.lite.Optimize.DEFAULT, no representative dataset); TF's converter "
                "quantizes only weight tensors of 1024 elements or more"
            )
        return notes
