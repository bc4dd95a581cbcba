"""LiteRT (TFLite) flatbuffers, ``.tflite``: LSTMs as LiteRT's fused sequence-LSTM ops.

Writing, float32 (``fused_ops_bytes``): the canonical weights are packed directly with the schema's object
API (``ModelT``, ``SubGraphT``, ``TensorT``, ``BufferT``, ``OperatorT``; ``flatbuffers.Builder``, identifier
``TFL3``), milliseconds per file, no TensorFlow. One op per layer: ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (24 inputs),
or for a bidirectional layer one ``BIDIRECTIONAL_SEQUENCE_LSTM`` (48 inputs: 0 input, 1-17 forward weights,
18-34 backward weights in the same order, 35-38 forward h, c and backward h, c, 39-47 the aux input and its
weights, absent) whose two outputs [B, T, Hout] a ``CONCATENATION`` on the last axis joins into [B, T, 2 Hout].
Not the op's own ``merge_outputs``: LiteRT 2.3.0 computes merged batch-major outputs wrongly for batch > 1
(``lstm_eval.cc``'s batch-major loop offsets sample b's h state by b times the merged output's width, 2 Hout,
instead of Hout, reading and writing past the state tensor): measured on a 1-layer bidirectional I=3, H=5, T=7
model, batch 1 right (1.4e-7), batch 2 off by 1.3e-1 and batch 3 by 4.1e-1 (max relative), the later samples
wrong; two outputs and a CONCATENATION are right at every batch (1.6e-7). ``fused_ops_bytes(...,
merge_outputs=True)`` writes the merged form, for the test that notices the day LiteRT fixes it. Options:
``time_major`` False (input [B, T, I]), ``cell_clip`` and ``proj_clip`` from the config (0 = none),
``fused_activation_function`` the cell activation, TANH or RELU (LiteRT uses one activation for the cell input
and the cell output; gates are always sigmoid). Per direction, gate order i, f, g, o (canonical and LiteRT's):
inputs 1-4 ``input_to_{input,forget,cell,output}_weights`` = W's gate blocks [H, I], 5-8 ``recurrent_to_*`` =
R's [H, Hout], 9-11 ``cell_to_{input,forget,output}_weights`` = P's rows (i, f, o) [H] or absent (-1), 12-15
the gate biases Wb + Rb [H] (zeros for bias=False), 16 ``projection_weights`` = proj [Hout, H] or absent, 17
the projection bias absent; 18, 19 the h [B, Hout] and c [B, H] states, variable tensors (the kernel requires
it) that start at zero and persist across ``invoke()`` calls (``reset_all_variables()`` between sequences).
Refused, in LiteRT's words: input_forget (LiteRT's CIFG drops the input gate, i = 1 - f; the canonical
coupling is f = 1 - i), gate_clip, non-sigmoid gates, different or other cell activations. Activations are
[batch, 1, features] with shape_signature [batch, -1, features]: LiteRT resizes T at run time (measured: T = 1,
2, 4, 7, 11 in one file), not the batch (variable tensors cannot be resized: ``allocate_tensors`` fails
"NumElements(output_state) != n_batch * n_output"), so the batch is fixed when writing: ``convert`` writes
batch 1 (run samples one at a time), the "tflite" implementation writes the batch of its run. A
``serving_default`` signature names the input "input" and the output "output". Constants are 16-byte aligned.

Writing, quantized (``converter_bytes``, ``quantize="dynamic-int8"``): TF's converter as before, seconds per
file. The canonical weights go into a tf_keras model (``adapters.keras_layer``: Input [B, T, I], one ``LSTM``
or ``Bidirectional(LSTM)`` per layer), and ``tf.lite.TFLiteConverter.from_keras_model`` with
``tf.lite.Optimize.DEFAULT`` and no representative dataset writes it: dynamic-range quantization, int8 weights
with float32 activations, only for weight tensors of at least 1024 elements (smaller ones stay float32: what
was quantized is read from the file, ``LstmOp.quantized``). It fuses each Keras LSTM into one
``UNIDIRECTIONAL_SEQUENCE_LSTM`` and a ``Bidirectional`` into two, the backward one between ``REVERSE_V2``
ops, joined by ``CONCATENATION``; it writes ``cell_clip=10.0`` on every fused op, which the writer sets to the
canonical one. So it holds only what a tf_keras LSTM holds (``CONVERTER_FEATURES``: no peepholes, projection,
proj_clip, relu cells or use_bias=False). (The bidirectional kernel's source also passes time_major=true to its
hybrid int8 path whatever the option says: another reason quantized files keep the converter's layout.)

Reading parses the flatbuffer with the schema module LiteRT ships (``ai_edge_litert.schema_py_generated``, or
TensorFlow's ``tensorflow.lite.python.schema_py_generated``): every ``UNIDIRECTIONAL_SEQUENCE_LSTM`` (its
inputs as above) and ``BIDIRECTIONAL_SEQUENCE_LSTM`` (read as its forward and backward halves, merged outputs
or not), W = concat(1, 2, 3, 4), R = concat(5, ..., 8), Wb = concat(12, ..., 15), Rb = 0, P rows (9, 10, 11),
the clips (float32 in the file, read back as their shortest decimal), ``fused_activation_function`` (TANH,
RELU; NONE is refused: LiteRT 2.3.0 leaves the cell output's buffer stale for it instead of computing o * c,
measured 0.97 relative off an identity cell); int8 weights are dequantized with their scale and zero point.
Refused: CIFG, layer normalization, a nonzero projection bias, time-major ops, the bidirectional op's aux
input. Ops reading the same tensor (directly, or through one ``REVERSE_V2``: the converter's backward
direction) are one layer; layers chain in the order of the file's operators. A file is a stranger's: every
index, shape, size, type and option is checked, and what is wrong is told in one line (``InputFileError``).

Running a file as it stands (``SourceRunner``, the reader's ``run_source``): when the file's model is the LSTM
chain alone (one input, the first layer's; one output [B, T, dirs*Hout]; only the fused ops, REVERSE_V2 and
CONCATENATION), ``convert`` and ``compare`` run the file itself in LiteRT, not a file written again from its
weights, so what LiteRT computes for that very file is what is judged (a merged-output bidirectional file at
batch 3 differs from its own weights; at batch 1 it agrees). The file's batch is fixed: a run goes through it
that many samples at a time, the last chunk padded with zero samples; initial states are set on the state
tensors; forward only, full lengths.
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

from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult, batch_major
from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    error_summary,
    quantization_error,
    refuse_options,
)
from lstm_conformance.reference.errors import (
    FrameworkMissingError,
    InputFileError,
    LayoutError,
    UnsupportedFeatureError,
)
from lstm_conformance.reference.layout import GATES, PEEPHOLES, Activation, LayerWeights, LSTMConfig, LSTMWeights

#: Writer options: the quantization modes.
QUANTIZE_MODES: tuple[str, ...] = ("dynamic-int8",)
#: The features the float32 writer holds (``LSTMConfig.features()`` names); its cell activations are
#: ``WRITER_ACTIVATIONS``, the same one for the cell input and output.
WRITER_FEATURES: frozenset[str] = frozenset(
    {"num_layers", "bidirectional", "proj_size", "no_bias", "peepholes", "cell_clip", "proj_clip"}
)
WRITER_ACTIVATIONS: frozenset[str] = frozenset({"tanh", "relu"})
#: The features the quantized writer (TF's converter on a tf_keras LSTM) holds; tanh cells only. Not
#: "no_bias": TF 2.21's converter does not fuse a use_bias=False Keras LSTM.
CONVERTER_FEATURES: frozenset[str] = frozenset({"num_layers", "bidirectional", "cell_clip"})
#: LiteRT's ActivationFunctionType values -> canonical cell activation names.
#: Not NONE (0): LiteRT's ApplyActivationToVector returns without writing its output for NONE, so the cell
#: output is o times a stale buffer, not o * c (measured 0.97 relative off an identity cell): no canonical
#: function. RELU6, RELU_N1_TO_1 and SIGN_BIT have no canonical activation.
_FUSED_ACTIVATIONS: dict[int, str] = {1: "relu", 4: "tanh"}

_LSTM, _BIDIRECTIONAL_LSTM, _REVERSE = "UNIDIRECTIONAL_SEQUENCE_LSTM", "BIDIRECTIONAL_SEQUENCE_LSTM", "REVERSE_V2"


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


def converter_unavailable_reason() -> str | None:
    """Why TF's converter (quantized writing) cannot run here, or None."""
    missing = [name for name in ("tensorflow", "tf_keras") if importlib.util.find_spec(name) is None]
    if missing:
        return f"quantized .tflite writing runs TF's converter: {' and '.join(missing)} not installed"
    return None


def interpreter_class() -> Any:
    """LiteRT's ``Interpreter``; TensorFlow's ``tf.lite.Interpreter`` where only TensorFlow is installed."""
    if importlib.util.find_spec("ai_edge_litert") is not None:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter
    import tensorflow as tf

    return tf.lite.Interpreter


# ----------------------------------------------------------------------------------------------------------
# Writing (float32): the fused ops, packed directly with the schema's object API
# ----------------------------------------------------------------------------------------------------------

#: Canonical gate -> LiteRT's word for it in its tensor names (``input_to_<word>_weights``, ``<word>_gate_bias``).
_LITERT_GATE_WORDS: dict[str, str] = {"i": "input", "f": "forget", "g": "cell", "o": "output"}
#: Canonical cell activation -> LiteRT's ActivationFunctionType value (TANH 4, RELU 1).
_WRITTEN_ACTIVATIONS: dict[str, int] = {"tanh": 4, "relu": 1}
#: How many inputs each op has (the unidirectional op also accepts the deprecated 20).
_UNIDIRECTIONAL_INPUTS, _BIDIRECTIONAL_INPUTS = 24, 48
#: The first input of the bidirectional op's aux input block (39 aux input, 40-47 its weights): left absent.
_AUX_INPUTS = range(39, 48)


def check_writable(config: LSTMConfig, quantize: str | None = None) -> None:
    """Refuse, in LiteRT's words, what the writer (``quantize`` None) or the converter route cannot hold."""
    if quantize is not None:
        if quantize not in QUANTIZE_MODES:
            raise UnsupportedFeatureError(
                "LiteRT", f"quantize {quantize!r}", f"choose one of {', '.join(QUANTIZE_MODES)}"
            )
        _check_converter_writable(config)
        return
    if config.input_forget:
        raise UnsupportedFeatureError(
            "LiteRT",
            "input_forget",
            "its CIFG LSTM (no input gate) couples i = 1 - f; the canonical input_forget couples f = 1 - i",
        )
    if config.gate_clip is not None:
        raise UnsupportedFeatureError(
            "LiteRT", "gate_clip", "the fused LSTM op clips the cell state (cell_clip) and h (proj_clip), no gates"
        )
    if config.gate_activation != Activation("sigmoid"):
        raise UnsupportedFeatureError(
            "LiteRT", f"gate_activation={config.gate_activation}", "the fused LSTM op's gates are always sigmoid"
        )
    cell_input, cell_output = config.cell_input_activation, config.cell_output_activation
    if cell_input != cell_output or cell_input.name not in _WRITTEN_ACTIVATIONS:
        raise UnsupportedFeatureError(
            "LiteRT",
            f"cell activations {cell_input} (input) and {cell_output} (output)",
            "the fused LSTM op has one fused_activation_function for both, tanh or relu",
        )


def _check_converter_writable(config: LSTMConfig) -> None:
    """What TF's converter route (quantized writing) holds: a tf_keras LSTM, with a cell_clip set afterwards."""
    from lstm_conformance.adapters.layouts.keras import TF_KERAS, check_keras_config

    unsupported = sorted(set(config.features()) - CONVERTER_FEATURES)
    if unsupported:
        raise UnsupportedFeatureError(
            "LiteRT",
            f"{', '.join(unsupported)} with quantize",
            "quantized files are written by TF's converter from a tf_keras LSTM: "
            f"{', '.join(sorted(CONVERTER_FEATURES))} only",
        )
    check_keras_config(LSTMConfig(**{**config.__dict__, "cell_clip": None}), TF_KERAS)


def tflite_bytes(weights: LSTMWeights, quantize: str | None = None, batch: int = 1) -> bytes:
    """A .tflite file's bytes holding ``weights`` as fused LSTM ops, for batch-major input [batch, T, I] (T
    dynamic; the ops' state tensors fix the batch). float32: written directly (``fused_ops_bytes``);
    ``quantize="dynamic-int8"``: written by TF's converter (``converter_bytes``)."""
    check_writable(weights.config, quantize)
    if quantize is not None:
        return converter_bytes(weights, quantize, batch)
    return fused_ops_bytes(weights, batch)


class _AlignedBuffer:
    """A constant's bytes, packed 16-byte aligned as TF's converter aligns them (the object API's BufferT
    packs its ``data`` with the alignment of uint8, 1); ModelT.Pack calls ``Pack`` on each buffer."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload

    def Pack(self, builder: Any) -> int:  # the object API's method name
        fb = schema()
        size = len(self.payload)
        builder.StartVector(1, size, 16)
        builder.head = builder.head - size
        builder.Bytes[builder.head : builder.head + size] = self.payload
        data = builder.EndVector()
        fb.BufferStart(builder)
        fb.BufferAddData(builder, data)
        return int(fb.BufferEnd(builder))


class _Graph:
    """The main subgraph's tensors and buffers as they are added (buffer 0: the schema's empty sentinel)."""

    def __init__(self, fb: ModuleType, batch: int) -> None:
        self.fb = fb
        self.batch = batch
        self.tensors: list[Any] = []
        self.buffers: list[Any] = [fb.BufferT()]

    def _tensor(self, name: str, shape: list[int], buffer: int = 0, signature: list[int] | None = None) -> int:
        tensor = self.fb.TensorT()
        tensor.name, tensor.shape, tensor.type, tensor.buffer = name.encode(), shape, self.fb.TensorType.FLOAT32, buffer
        tensor.shapeSignature, tensor.hasRank = signature, True
        self.tensors.append(tensor)
        return len(self.tensors) - 1

    def constant(self, name: str, array: NDArray[Any]) -> int:
        values = np.ascontiguousarray(array, dtype="<f4")
        self.buffers.append(_AlignedBuffer(values.tobytes()))
        return self._tensor(name, list(values.shape), buffer=len(self.buffers) - 1)

    def state(self, name: str, size: int) -> int:
        """A state tensor [batch, size]: variable (LiteRT requires it), zero at allocation, updated by invoke()."""
        index = self._tensor(name, [self.batch, size])
        self.tensors[index].isVariable = True
        return index

    def sequence(self, name: str, features: int) -> int:
        """An activation [batch, T, features], T dynamic (shape 1, signature -1: resized at run time)."""
        return self._tensor(name, [self.batch, 1, features], signature=[self.batch, -1, features])


def _direction_inputs(graph: _Graph, prefix: str, weights: LayerWeights) -> list[int]:
    """The 17 weight inputs of one direction, in the kernel's order (lstm_shared.h inputs 1-17): input_to_*
    [H, I], recurrent_to_* [H, Hout], cell_to_{input,forget,output} [H], *_gate_bias [H], projection [Hout, H],
    projection bias (absent). One bias per gate: Wb + Rb."""
    words = [_LITERT_GATE_WORDS[gate] for gate in GATES]
    input_blocks = np.split(weights.W, len(GATES))
    recurrent_blocks = np.split(weights.R, len(GATES))
    bias_blocks = np.split(weights.Wb + weights.Rb, len(GATES))
    inputs = [graph.constant(f"{prefix}/input_to_{w}_weights", b) for w, b in zip(words, input_blocks, strict=True)]
    inputs += [
        graph.constant(f"{prefix}/recurrent_to_{w}_weights", b) for w, b in zip(words, recurrent_blocks, strict=True)
    ]
    if weights.P is None:
        inputs += [-1, -1, -1]
    else:
        inputs += [
            graph.constant(f"{prefix}/cell_to_{_LITERT_GATE_WORDS[g]}_weights", row)
            for g, row in zip(PEEPHOLES, weights.P, strict=True)
        ]
    inputs += [graph.constant(f"{prefix}/{w}_gate_bias", b) for w, b in zip(words, bias_blocks, strict=True)]
    inputs.append(-1 if weights.proj is None else graph.constant(f"{prefix}/projection_weights", weights.proj))
    inputs.append(-1)
    return inputs


def _options(fb: ModuleType, config: LSTMConfig, merge_outputs: bool) -> Any:
    options = (
        fb.BidirectionalSequenceLSTMOptionsT() if config.bidirectional else fb.UnidirectionalSequenceLSTMOptionsT()
    )
    options.fusedActivationFunction = _WRITTEN_ACTIVATIONS[config.cell_input_activation.name]
    options.cellClip = float(config.cell_clip or 0.0)
    options.projClip = float(config.proj_clip or 0.0)
    options.timeMajor = False
    if config.bidirectional:
        options.mergeOutputs = merge_outputs
    return options


def fused_ops_bytes(weights: LSTMWeights, batch: int = 1, merge_outputs: bool = False) -> bytes:
    """The canonical ``weights`` as one fused LSTM op per layer, float32, input [batch, T, I] with T dynamic:
    ``UNIDIRECTIONAL_SEQUENCE_LSTM``, or ``BIDIRECTIONAL_SEQUENCE_LSTM`` with its two outputs joined by a
    ``CONCATENATION`` on the last axis. ``merge_outputs`` writes the bidirectional op's own merged output
    instead, which LiteRT computes wrongly for batch-major input of batch > 1 (the module docstring)."""
    import flatbuffers

    config = weights.config
    check_writable(config)
    if not isinstance(batch, int) or batch < 1:
        raise LayoutError(f"a .tflite file's batch must be a positive integer, got {batch!r}")
    fb = schema()
    graph = _Graph(fb, batch)
    hout, directions = config.output_size, config.num_directions
    source = first_input = graph.sequence("input", config.input_size)
    operators = []
    for layer, per_direction in enumerate(weights.layers):
        names = [f"layer{layer}/{('fw', 'bw')[d]}" if config.bidirectional else f"layer{layer}" for d in range(2)]
        weight_inputs = [_direction_inputs(graph, names[d], w) for d, w in enumerate(per_direction)]
        states = [
            index
            for d in range(directions)
            for index in (
                graph.state(f"{names[d]}/output_state", hout),
                graph.state(f"{names[d]}/cell_state", config.hidden_size),
            )
        ]
        output_name = "output" if layer == config.num_layers - 1 else f"layer{layer}/output"
        operator = fb.OperatorT()
        operator.opcodeIndex = 0
        operator.builtinOptions = _options(fb, config, merge_outputs)
        if not config.bidirectional:
            operator.builtinOptionsType = fb.BuiltinOptions.UnidirectionalSequenceLSTMOptions
            operator.inputs = [source, *weight_inputs[0], *states, -1, -1, -1, -1]
            operator.outputs = [graph.sequence(output_name, hout)]
            source = operator.outputs[0]
            operators.append(operator)
            continue
        operator.builtinOptionsType = fb.BuiltinOptions.BidirectionalSequenceLSTMOptions
        operator.inputs = [source, *weight_inputs[0], *weight_inputs[1], *states, *([-1] * len(_AUX_INPUTS))]
        if merge_outputs:
            operator.outputs = [graph.sequence(output_name, 2 * hout)]
            operators.append(operator)
        else:
            operator.outputs = [graph.sequence(f"{names[d]}/output", hout) for d in range(2)]
            operators += [operator, _concatenation(fb, operator.outputs, graph.sequence(output_name, 2 * hout))]
        source = operators[-1].outputs[0]
    lstm = (
        fb.BuiltinOperator.BIDIRECTIONAL_SEQUENCE_LSTM
        if config.bidirectional
        else fb.BuiltinOperator.UNIDIRECTIONAL_SEQUENCE_LSTM
    )
    subgraph = fb.SubGraphT()
    subgraph.tensors, subgraph.operators, subgraph.name = graph.tensors, operators, b"main"
    subgraph.inputs, subgraph.outputs = [first_input], [source]
    signature = fb.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = b"serving_default", 0
    signature.inputs, signature.outputs = [_tensor_map(fb, "input", first_input)], [_tensor_map(fb, "output", source)]
    model = fb.ModelT()
    model.version, model.description = 3, b"lstm-conformance: an LSTM as LiteRT fused sequence-LSTM ops"
    model.operatorCodes = [_operator_code(fb, lstm), _operator_code(fb, fb.BuiltinOperator.CONCATENATION)]
    model.subgraphs, model.buffers, model.signatureDefs = [subgraph], graph.buffers, [signature]
    # Room for every constant and its alignment up front: growing the builder copies it whole.
    builder = flatbuffers.Builder(65536 + sum(len(b.payload) + 32 for b in graph.buffers[1:]))
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _operator_code(fb: ModuleType, number: int) -> Any:
    code = fb.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = number  # both under 127: the deprecated int8 field holds it
    code.version = 1
    return code


def _concatenation(fb: ModuleType, inputs: list[int], output: int) -> Any:
    """The bidirectional op's forward and backward outputs [B, T, Hout] joined into [B, T, 2 Hout]."""
    operator = fb.OperatorT()
    operator.opcodeIndex, operator.inputs, operator.outputs = 1, inputs, [output]
    operator.builtinOptionsType = fb.BuiltinOptions.ConcatenationOptions
    operator.builtinOptions = fb.ConcatenationOptionsT()
    operator.builtinOptions.axis = 2
    return operator


def _tensor_map(fb: ModuleType, name: str, index: int) -> Any:
    entry = fb.TensorMapT()
    entry.name, entry.tensorIndex = name.encode(), index
    return entry


# ----------------------------------------------------------------------------------------------------------
# Writing (quantized): tf_keras model -> TF's converter -> the canonical cell_clip on each fused op
# ----------------------------------------------------------------------------------------------------------


def converter_bytes(weights: LSTMWeights, quantize: str | None = None, batch: int = 1) -> bytes:
    """A .tflite written by TF's converter from a tf_keras model holding ``weights`` (input [batch, T, I], T
    dynamic), the canonical cell_clip set on each fused op; ``quantize`` adds dynamic-range quantization."""
    import tensorflow as tf

    from lstm_conformance.adapters.keras_layer import build_keras_layers, import_keras
    from lstm_conformance.adapters.layouts.keras import TF_KERAS, keras_layer_weights

    config = weights.config
    _check_converter_writable(config)
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
            if _op_name(fb, model, operator) in (_LSTM, _BIDIRECTIONAL_LSTM):
                operator.builtinOptions.cellClip = float(cell_clip)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


# ----------------------------------------------------------------------------------------------------------
# Reading: fused LSTM ops -> canonical
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LstmOp:
    """One direction of a fused LSTM op: where it sits, its canonical weights and options, its state tensors."""

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
    #: The tensor its layer reads (for the converter's backward op, the one its REVERSE_V2 reads).
    source: int = -1


@dataclass
class _File:
    """A parsed flatbuffer: the schema module, the model (object API), its main subgraph and the raw bytes."""

    fb: ModuleType
    model: Any
    subgraph: Any
    data: bytes

    def tensor(self, index: int, where: str) -> Any:
        tensors = self.subgraph.tensors or []
        if not 0 <= index < len(tensors):
            raise InputFileError(f"{where}: tensor index {index} is outside the file's {len(tensors)} tensors")
        return tensors[index]


def _op_name(fb: ModuleType, model: Any, operator: Any) -> str:
    codes = model.operatorCodes or []
    if not 0 <= operator.opcodeIndex < len(codes):
        raise InputFileError(f"an operator's opcode index {operator.opcodeIndex} is outside the file's operator codes")
    code = codes[operator.opcodeIndex]
    number = max(int(code.builtinCode), int(code.deprecatedBuiltinCode))
    for name, value in vars(fb.BuiltinOperator).items():
        if not name.startswith("_") and value == number:
            return str(name)
    return str(number)


def _parse(data: bytes) -> _File:
    fb = schema()
    try:
        model = fb.ModelT.InitFromObj(fb.Model.GetRootAs(data, 0))
        subgraph = model.subgraphs[0]
    except Exception as error:  # a stranger's bytes: the generated parser raises anything on a malformed file
        raise InputFileError(f"not a LiteRT flatbuffer ({error_summary(error)}); write it again") from None
    return _File(fb, model, subgraph, data)


def _indices(values: Any) -> list[int]:
    return [int(v) for v in values] if values is not None else []


def parse_lstm_ops(data: bytes) -> list[LstmOp]:
    """Every fused LSTM op of the main subgraph (a bidirectional op as two, directions 0 and 1), with (layer,
    direction) found from what each reads."""
    file = _parse(data)
    fb, model, subgraph = file.fb, file.model, file.subgraph
    operators = subgraph.operators or []
    producers = {out: operator for operator in operators for out in _indices(operator.outputs)}
    sources: list[int] = []
    found = []
    for operator in operators:
        name = _op_name(fb, model, operator)
        if name not in (_LSTM, _BIDIRECTIONAL_LSTM):
            continue
        inputs, outputs = _indices(operator.inputs), _indices(operator.outputs)
        if not inputs or not outputs:
            raise InputFileError(f"a {name} op has no input or no output tensor")
        source, direction = inputs[0], 0
        producer = producers.get(source)
        if name == _LSTM and producer is not None and _op_name(fb, model, producer) == _REVERSE:
            source, direction = (_indices(producer.inputs) or [-1])[0], 1
        if source not in sources:
            sources.append(source)
        layer = sources.index(source)
        if name == _LSTM:
            read = [_read_op(file, operator, _unidirectional_view(inputs), outputs[0], layer, direction)]
        else:
            views = _bidirectional_views(inputs)
            read = [
                _read_op(file, operator, view, outputs[min(d, len(outputs) - 1)], layer, d)
                for d, view in enumerate(views)
            ]
        for op in read:
            op.source = source
        found += read
    return found


def _unidirectional_view(inputs: list[int]) -> list[int]:
    if len(inputs) not in (20, _UNIDIRECTIONAL_INPUTS):
        raise InputFileError(f"an {_LSTM} op has {len(inputs)} inputs; LiteRT's kernel takes 20 or 24")
    return inputs + [-1] * (_UNIDIRECTIONAL_INPUTS - len(inputs))


def _bidirectional_views(inputs: list[int]) -> list[list[int]]:
    """The bidirectional op's inputs (bidirectional_sequence_lstm.cc: 0 input, 1-17 forward weights, 18-34
    backward weights, 35-38 forward h, c and backward h, c, 39-47 the aux input and its weights) as two
    unidirectional op's input lists."""
    if len(inputs) != _BIDIRECTIONAL_INPUTS:
        raise InputFileError(f"a {_BIDIRECTIONAL_LSTM} op has {len(inputs)} inputs; LiteRT's kernel takes 48")
    if any(inputs[index] >= 0 for index in _AUX_INPUTS):
        raise UnsupportedFeatureError(
            "LiteRT", f"{_BIDIRECTIONAL_LSTM} with an aux input", "the canonical LSTM has no second input"
        )
    return [
        [inputs[0], *inputs[1:18], inputs[35], inputs[36], -1, -1, -1, -1],
        [inputs[0], *inputs[18:35], inputs[37], inputs[38], -1, -1, -1, -1],
    ]


#: The inputs a fused LSTM op must have (the kernel's GetInput; the rest are optional): the forget, cell and
#: output weights (2-4, 6-8), their biases (13-15) and the two state tensors (18, 19).
_REQUIRED_INPUTS = (2, 3, 4, 6, 7, 8, 13, 14, 15, 18, 19)


def _read_op(file: _File, operator: Any, inputs: list[int], output: int, layer: int, direction: int) -> LstmOp:
    """One direction's canonical weights from its 24 inputs in lstm_shared.h's numbering."""
    where = f"the LSTM op of layer {layer}{' (backward)' if direction else ''}"
    for index, tensor_index in enumerate(inputs):
        if tensor_index < -1 or (tensor_index < 0 and index in _REQUIRED_INPUTS):
            raise InputFileError(f"{where}: input {index} is absent; LiteRT's kernel requires it")
        if tensor_index >= 0:
            file.tensor(tensor_index, where)
    if inputs[1] < 0:
        raise UnsupportedFeatureError("LiteRT", "CIFG (no input gate)", "its i = 1 - f has no canonical form")
    if inputs[5] < 0 or inputs[12] < 0:
        raise InputFileError(f"{where}: input gate weights without its recurrent weights or bias")
    if any(inputs[index] >= 0 for index in range(20, 24)):
        raise UnsupportedFeatureError("LiteRT", "layer-normalized LSTM", "the canonical model has no layer norm")
    options = operator.builtinOptions
    expected = (file.fb.UnidirectionalSequenceLSTMOptionsT, file.fb.BidirectionalSequenceLSTMOptionsT)
    if not isinstance(options, expected):
        raise InputFileError(f"{where}: the op has no LSTM options (its builtin options are missing or of another op)")
    if options.timeMajor:
        raise UnsupportedFeatureError("LiteRT", "time-major LSTM op", "only batch-major ops are read")

    def constant(index: int) -> NDArray[np.float64] | None:
        return None if inputs[index] < 0 else _constant(file, file.tensor(inputs[index], where), where)

    blocks = [constant(index) for index in range(1, 18)]
    W_blocks, R_blocks, peepholes, biases = blocks[0:4], blocks[4:8], blocks[8:11], blocks[11:15]
    proj, proj_bias = blocks[15], blocks[16]
    hidden, layer_input, output_size = _check_shapes(where, W_blocks, R_blocks, peepholes, biases, proj)
    if proj_bias is not None and np.any(proj_bias):
        raise UnsupportedFeatureError("LiteRT", "projection bias", "the canonical projection has no bias")
    activation = _FUSED_ACTIVATIONS.get(int(options.fusedActivationFunction))
    if activation is None:
        raise UnsupportedFeatureError(
            "LiteRT",
            f"an LSTM op with fused activation {options.fusedActivationFunction} read as a canonical LSTM",
            "only TANH (4) and RELU (1) are read (LiteRT computes no identity cell for NONE, 0)",
        )
    # float32 in the file: read back as the shortest decimal that is that float32 (0.4, not 0.4000000059604645)
    clips = [float(str(np.float32(options.cellClip))), float(str(np.float32(options.projClip)))]
    if not all(np.isfinite(clip) and clip >= 0 for clip in clips):
        raise InputFileError(f"{where}: cell_clip {clips[0]} or proj_clip {clips[1]} is not a finite number >= 0")
    if clips[1] and proj is None:
        raise InputFileError(f"{where}: proj_clip {clips[1]} without projection weights")
    for index, size in ((18, output_size), (19, hidden)):
        state = file.tensor(inputs[index], where)
        if int(np.prod(_shape(state, where))) % size:
            raise InputFileError(f"{where}: state tensor {_name(state)!r} does not hold [batch, {size}]")
    types = {file.tensor(inputs[i], where).type for i in range(1, 17) if inputs[i] >= 0}
    # float32 weights stay float32; float16 and dequantized int8 ones are float64 (exact there).
    dtype = np.float32 if types == {file.fb.TensorType.FLOAT32} else np.float64

    def joined(arrays: list[NDArray[np.float64] | None]) -> NDArray[Any]:
        return np.concatenate(arrays).astype(dtype)  # type: ignore[arg-type]

    return LstmOp(
        layer=layer,
        direction=direction,
        weights=LayerWeights(
            W=joined(W_blocks),
            R=joined(R_blocks),
            Wb=joined(biases),
            Rb=np.zeros(4 * hidden, dtype=dtype),
            P=None if peepholes[0] is None else np.stack(peepholes).astype(dtype),  # type: ignore[arg-type]
            proj=None if proj is None else proj.astype(dtype),
        ),
        hidden_size=hidden,
        input_size=layer_input,
        cell_clip=clips[0] or None,
        proj_clip=clips[1] or None,
        activation=activation,
        output_state=inputs[18],
        cell_state=inputs[19],
        output=output,
        quantized=file.fb.TensorType.INT8 in types,
    )


def _check_shapes(
    where: str,
    W_blocks: list[NDArray[np.float64] | None],
    R_blocks: list[NDArray[np.float64] | None],
    peepholes: list[NDArray[np.float64] | None],
    biases: list[NDArray[np.float64] | None],
    proj: NDArray[np.float64] | None,
) -> tuple[int, int, int]:
    """(H, I, Hout) after checking every block's shape as LiteRT's kernel does (a bias LiteRT allows absent,
    the input gate's in a CIFG op, is refused before; peepholes all or none)."""
    first = W_blocks[1]
    assert first is not None  # a required input, checked present
    assert R_blocks[1] is not None
    if first.ndim != 2 or R_blocks[1].ndim != 2:
        raise InputFileError(
            f"{where}: input and recurrent weights must be 2-D, found {first.shape}, {R_blocks[1].shape}"
        )
    hidden, layer_input = first.shape
    output_size = R_blocks[1].shape[1]
    wanted = {
        "input weights": ([b for b in W_blocks], (hidden, layer_input)),
        "recurrent weights": ([b for b in R_blocks], (hidden, output_size)),
        "gate biases": ([b for b in biases], (hidden,)),
    }
    if any(p is not None for p in peepholes):
        wanted["peepholes"] = ([p for p in peepholes], (hidden,))
    for name, (arrays, shape) in wanted.items():
        if any(a is None or a.shape != shape for a in arrays):
            found = [None if a is None else a.shape for a in arrays]
            raise InputFileError(f"{where}: {name} of shapes {found}, expected each {shape} (all present)")
    if (proj is None and output_size != hidden) or (proj is not None and proj.shape != (output_size, hidden)):
        raise InputFileError(
            f"{where}: projection of shape {None if proj is None else proj.shape} "
            f"for cell {hidden}, output {output_size}"
        )
    if hidden < 1 or layer_input < 1 or output_size < 1:
        raise InputFileError(f"{where}: empty weights (cell {hidden}, input {layer_input}, output {output_size})")
    return hidden, layer_input, output_size


def _name(tensor: Any) -> str:
    name = tensor.name
    return name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)


def _shape(tensor: Any, where: str) -> list[int]:
    shape = _indices(tensor.shape)
    if any(d < 0 for d in shape):
        raise InputFileError(f"{where}: tensor {_name(tensor)!r} has a negative dimension {shape}")
    return shape


_DTYPES: dict[str, Any] = {"FLOAT32": np.float32, "FLOAT16": np.float16, "INT8": np.int8}


def _constant(file: _File, tensor: Any, where: str) -> NDArray[np.float64]:
    """A constant tensor as float64, int8 weights dequantized (scale * (q - zero_point))."""
    fb = file.fb
    buffers = file.model.buffers or []
    if not 0 <= tensor.buffer < len(buffers):
        raise InputFileError(f"{where}: weight tensor {_name(tensor)!r} names buffer {tensor.buffer}, not in the file")
    buffer = buffers[tensor.buffer]
    raw: bytes | None = None
    if getattr(buffer, "data", None) is not None and len(buffer.data):
        raw = bytes(bytearray(buffer.data))
    elif int(getattr(buffer, "offset", 0)) > 1:  # a large model's buffer, stored after the flatbuffer
        start, size = int(buffer.offset), int(buffer.size)
        raw = file.data[start : start + size] if size >= 0 and start + size <= len(file.data) else None
    if not raw:
        raise InputFileError(f"{where}: weight tensor {_name(tensor)!r} has no data in the file")
    names = {value: name for name, value in vars(fb.TensorType).items() if not name.startswith("_")}
    dtype = _DTYPES.get(names.get(tensor.type, ""))
    if dtype is None:
        raise UnsupportedFeatureError(
            "LiteRT", f"weight tensor type {names.get(tensor.type, tensor.type)}", "float32/float16/int8 only"
        )
    shape = _shape(tensor, where)
    if int(np.prod(shape)) * np.dtype(dtype).itemsize != len(raw):
        raise InputFileError(f"{where}: weight tensor {_name(tensor)!r} of shape {shape} holds {len(raw)} bytes")
    values = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(np.float64)
    if dtype is np.int8:
        values = _dequantized(values, tensor, where)
    if not np.all(np.isfinite(values)):
        raise InputFileError(f"{where}: weight tensor {_name(tensor)!r} holds NaN or infinity")
    return values


def _dequantized(values: NDArray[np.float64], tensor: Any, where: str) -> NDArray[np.float64]:
    quantization = tensor.quantization
    scale = np.asarray(getattr(quantization, "scale", None) or [], dtype=np.float64)
    zero = np.asarray(getattr(quantization, "zeroPoint", None) or [0], dtype=np.float64)
    axis = int(getattr(quantization, "quantizedDimension", 0) or 0)
    per_channel = scale.size > 1
    channels = values.shape[axis] if per_channel and 0 <= axis < values.ndim else 1
    if scale.size not in (1, channels) or (per_channel and scale.size != channels) or zero.size not in (1, scale.size):
        raise InputFileError(f"{where}: int8 tensor {_name(tensor)!r} has {scale.size} scales for its shape")
    shape = [-1 if d == axis else 1 for d in range(values.ndim)] if per_channel else [1] * values.ndim
    zero_shape = shape if zero.size > 1 else [1] * values.ndim
    return (values - zero.reshape(zero_shape)) * scale.reshape(shape)


def weights_from_ops(ops: list[LstmOp]) -> LSTMWeights:
    """The canonical model of a chain of fused LSTM ops (every layer the same size and options)."""
    if not ops:
        raise InputFileError(f"the file holds no {_LSTM} or {_BIDIRECTIONAL_LSTM} op")
    first = ops[0]
    layers = max(op.layer for op in ops) + 1
    directions = max(op.direction for op in ops) + 1
    grid: dict[tuple[int, int], LstmOp] = {(op.layer, op.direction): op for op in ops}
    if len(grid) != layers * directions or len(ops) != len(grid):
        raise InputFileError(f"the file's {len(ops)} LSTM ops do not form {layers} layers of {directions} directions")
    for op in ops:
        if (op.cell_clip, op.proj_clip, op.activation, op.hidden_size, op.weights.P is None) != (
            first.cell_clip,
            first.proj_clip,
            first.activation,
            first.hidden_size,
            first.weights.P is None,
        ):
            raise InputFileError("the file's LSTM ops differ in size or options; one canonical stack needs one")
    activation = Activation(first.activation)
    try:
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
    except LayoutError as error:
        raise InputFileError(f"the file's LSTM ops do not chain into one LSTM ({error})") from None


# ----------------------------------------------------------------------------------------------------------
# Running a file in LiteRT's interpreter
# ----------------------------------------------------------------------------------------------------------


@dataclass
class LiteRTRun:
    """y [B, T, dirs*Hout] and each op's final states, keyed by (layer, direction)."""

    y: NDArray[Any]
    final_h: dict[tuple[int, int], NDArray[Any]]
    final_c: dict[tuple[int, int], NDArray[Any]]


def run_file(
    data: bytes, x: NDArray[np.float32], h0: NDArray[Any] | None = None, c0: NDArray[Any] | None = None
) -> LiteRTRun:
    """Run ``data`` on batch-major ``x`` [B, T, I] in LiteRT's interpreter (one thread), the input resized to
    ``x``'s shape. The fused ops' state tensors start at zero, or at ``h0`` [layers*dirs, B, Hout] and ``c0``
    [layers*dirs, B, H] (PyTorch's index layer*dirs + direction), set with ``set_tensor`` after
    ``allocate_tensors`` (which zeroes them); they hold the final states after the call."""
    interpreter = interpreter_class()(model_content=data, num_threads=1)
    (input_detail,) = interpreter.get_input_details()
    interpreter.resize_tensor_input(input_detail["index"], list(x.shape))
    interpreter.allocate_tensors()
    ops = parse_lstm_ops(data)
    directions = max((op.direction for op in ops), default=0) + 1
    for states, attribute in ((h0, "output_state"), (c0, "cell_state")):
        for op in ops if states is not None else ():
            state = np.asarray(states[op.layer * directions + op.direction], dtype=np.float32)  # type: ignore[index]
            interpreter.set_tensor(getattr(op, attribute), np.ascontiguousarray(state))
    interpreter.set_tensor(input_detail["index"], x)
    interpreter.invoke()
    (output_detail,) = interpreter.get_output_details()
    y = np.array(interpreter.get_tensor(output_detail["index"]))
    final_h, final_c = {}, {}
    for op in ops:
        final_h[(op.layer, op.direction)] = np.array(interpreter.get_tensor(op.output_state))
        final_c[(op.layer, op.direction)] = np.array(interpreter.get_tensor(op.cell_state))
    return LiteRTRun(y=y, final_h=final_h, final_c=final_c)


#: The ops a file may hold besides its fused LSTM ops and still be run as it stands (``SourceRunner``): the
#: converter's backward direction is a REVERSE_V2 on each side of its op, and directions join in a CONCATENATION.
_CHAIN_OPS = frozenset({_LSTM, _BIDIRECTIONAL_LSTM, _REVERSE, "CONCATENATION"})
#: The math mode of a run with int8 weights (LiteRT's hybrid kernels: float32 activations).
INT8_MATH_MODE = "float32 (dynamic-range int8 weights)"


def source_runner_problem(data: bytes, ops: list[LstmOp], config: LSTMConfig) -> str | None:
    """Why the file cannot be run as it stands as the LSTM read from it (None when it can): it must take one
    input, the first layer's, and give one output [B, T, dirs*Hout], with only LSTM chain ops between."""
    file = _parse(data)
    names = {_op_name(file.fb, file.model, operator) for operator in file.subgraph.operators or []}
    others = sorted(names - _CHAIN_OPS)
    if others:
        return f"it holds other ops ({', '.join(others[:4])})"
    inputs, outputs = _indices(file.subgraph.inputs), _indices(file.subgraph.outputs)
    if len(inputs) != 1 or len(outputs) != 1:
        return f"its model has {len(inputs)} inputs and {len(outputs)} outputs, not one of each"
    first_sources = {op.source for op in ops if op.layer == 0}
    if first_sources != {inputs[0]}:
        return "its input is not the first LSTM layer's"
    shape = _indices(file.tensor(outputs[0], "the model's output").shape)
    if len(shape) != 3 or shape[2] != config.num_directions * config.output_size:
        return f"its output of shape {shape} is not [B, T, {config.num_directions * config.output_size}]"
    batches = {_state_batch(file, op.output_state, config.output_size) for op in ops}
    batches |= {_state_batch(file, op.cell_state, config.hidden_size) for op in ops}
    if len(batches) != 1 or min(batches) < 1:
        return f"its state tensors hold batches {sorted(batches)}, not one batch of 1 or more"
    return None


def _state_batch(file: _File, index: int, size: int) -> int:
    return int(np.prod(_indices(file.tensor(index, "a state tensor").shape))) // size


class SourceRunner:
    """``FoundLSTM.run_source`` for a .tflite: the file itself, as it stands, in LiteRT's interpreter (not a
    file written again from its weights): forward only, full lengths, float32 activations whatever
    ``options.dtype`` asks (the file's function). Its batch is fixed in the file (its state tensors): a run
    goes through it that many samples at a time (a fresh interpreter each, so the states start as given)."""

    def __init__(self, data: bytes, ops: list[LstmOp], config: LSTMConfig) -> None:
        self.data, self.config = data, config
        self.batch = _state_batch(_parse(data), ops[0].output_state, config.output_size)
        self.quantized = any(op.quantized for op in ops)
        #: Set by the reader for a file with int8 weights (``quantization_error``).
        self.quantization_error: float | None = None

    def __call__(self, inputs: RunInputs, options: RunOptions) -> RunResult:
        where = "LiteRT (the file's own run)"
        if options.device != "cpu":
            raise UnsupportedFeatureError(where, f"device {options.device}", "run on cpu")
        if inputs.wants_gradients:
            raise UnsupportedFeatureError(where, "gradients", "LiteRT has no gradients: run it forward only")
        if inputs.seq_lens is not None:
            raise UnsupportedFeatureError(where, "per-sample lengths", "its fused LSTM ops run every sample in full")
        prepared = inputs.prepare(self.config)
        x = np.ascontiguousarray(prepared.x.swapaxes(0, 1), dtype=np.float32)  # the file takes [B, T, I]
        runs = [
            self._run_padded(x[start : start + self.batch], prepared.h0, prepared.c0, start)
            for start in range(0, x.shape[0], self.batch)
        ]
        keys = [(k, d) for k in range(self.config.num_layers) for d in range(self.config.num_directions)]

        def states(name: str) -> NDArray[np.float64]:
            per_run = [np.stack([getattr(run, name)[key].reshape(len(run.y), -1) for key in keys]) for run in runs]
            return np.concatenate(per_run, axis=1).astype(np.float64)

        y = np.concatenate([run.y for run in runs]).astype(np.float64).swapaxes(0, 1)
        math_mode = INT8_MATH_MODE if self.quantized else "float32"
        result = RunResult(np.ascontiguousarray(y), states("final_h"), states("final_c"), math_mode)
        return batch_major(result) if inputs.batch_first else result

    def _run_padded(self, x: NDArray[np.float32], h0: NDArray[Any], c0: NDArray[Any], start: int) -> LiteRTRun:
        """Samples ``start`` on (up to the file's batch) in one invoke, padded with zero samples to the file's
        batch (samples never meet in an LSTM), the padding's outputs dropped."""
        count, pad = len(x), self.batch - len(x)
        part = slice(start, start + count)

        def padded(array: NDArray[Any], axis: int) -> NDArray[Any]:
            widths = [(0, 0)] * array.ndim
            widths[axis] = (0, pad)
            return np.pad(array, widths)

        try:
            run = run_file(self.data, padded(x, 0), padded(h0[:, part], 1), padded(c0[:, part], 1))
        except (RuntimeError, ValueError) as error:  # LiteRT refusing a stranger's file at allocation or invoke
            raise InputFileError(f"LiteRT cannot run the file as it stands ({error_summary(error)})") from None
        return LiteRTRun(
            y=run.y[:count],
            final_h={key: value.reshape(self.batch, -1)[:count] for key, value in run.final_h.items()},
            final_c={key: value.reshape(self.batch, -1)[:count] for key, value in run.final_c.items()},
        )


def file_quantization_error(runner: SourceRunner, weights: LSTMWeights) -> float:
    """``formats.quantization_error`` of an int8 file: against a float32 file of its dequantized weights
    (``fused_ops_bytes``), both in LiteRT, at the file's own batch."""
    data = fused_ops_bytes(weights, batch=runner.batch)
    floating = SourceRunner(data, parse_lstm_ops(data), weights.config)
    return quantization_error(runner, floating, (8, runner.batch, weights.config.input_size), seeds=3)


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
        ops = parse_lstm_ops(data)
        weights = weights_from_ops(ops)
        notes = []
        if weights.config.cell_clip == 10.0:
            notes.append("cell_clip 10.0 as the file holds it (TF's converter writes 10.0 on every Keras LSTM)")
        problem = source_runner_problem(data, ops, weights.config)
        runner = SourceRunner(data, ops, weights.config) if problem is None else None
        if problem is not None:
            notes.append(f"the file's LSTM is read, not run as the file: {problem}")
        if runner is not None and runner.quantized:
            runner.quantization_error = file_quantization_error(runner, weights)
            notes.append(
                f"quantization error: the file's int8 weights (LiteRT's hybrid kernels) differ from a float32 file "
                f"of its dequantized weights by up to {runner.quantization_error:.1e} relative on random inputs; "
                "expect a conversion to agree with this file within that, not within float32 rounding"
            )
        found = FoundLSTM("", weights, "tflite", batch_first=True, notes=notes, run_source=runner)
        return ModelContents([found])

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        given = refuse_options(options, ("quantize", "dtype"), "writing a .tflite file")
        if given.get("dtype") not in (None, "float32"):
            raise UnsupportedFeatureError("LiteRT", f"dtype {given['dtype']}", "the fused LSTM op is float32")
        quantize = given.get("quantize")
        reason = converter_unavailable_reason() if quantize else litert_unavailable_reason()
        if reason:
            raise FrameworkMissingError(reason)
        path.write_bytes(tflite_bytes(weights, quantize))
        if quantize:
            notes = [
                "written by TF's converter (a tf_keras LSTM) as UNIDIRECTIONAL_SEQUENCE_LSTM ops, a bidirectional "
                "layer as two of them between REVERSE_V2 and CONCATENATION ops",
                "dynamic-range int8 weights (tf.lite.Optimize.DEFAULT, no representative dataset); TF's converter "
                "quantizes only weight tensors of 1024 elements or more",
            ]
        else:
            ops = "BIDIRECTIONAL_SEQUENCE_LSTM op (and a CONCATENATION)" if weights.config.bidirectional else _LSTM
            notes = [f"written as one float32 {ops} per layer"]
        notes.append(
            "input [1, T, I], T free: one sample per invoke() (LiteRT cannot resize the fused ops' state tensors, "
            "so their batch is fixed), reset_all_variables() between sequences (the states persist)"
        )
        return notes
