"""``.onnx`` models: their ``LSTM`` nodes, read into the canonical layout and written from it.

The layout mapping lives in ``adapters.onnx_runtime`` (``layer_from_onnx``/``layer_to_onnx``, activations);
the graph walking (scopes, constant folding, running nodes as they stand) in ``adapters.formats.onnx_graph``;
this module finds the nodes and reads them.

Reading
    Every ``LSTM`` node, and every ONNX Runtime ``com.microsoft.DynamicQuantizeLSTM`` node, of the main graph
    and of every subgraph body (If branches, Loop and Scan bodies; such an LSTM is named by its path,
    ``If_0/then_branch/lstm``), whose W, R (and B, P when present) are constants: initializers (of its own
    graph or an enclosing one), ``Constant`` nodes, or subgraphs of constants folded by onnx's reference
    evaluator (``Scope.constant``). A weight computed from a graph input is refused (``InputFileError``), as is
    a constant non-zero initial state (the canonical layout has no place for one) and a
    ``direction="reverse"`` node (the canonical layout has forward and bidirectional LSTMs only).
    DynamicQuantizeLSTM's int8/uint8 W [D, I, 4H] and R [D, H, 4H] are dequantized as
    ``(W - W_zero_point) * W_scale`` (per direction or per output channel); the difference between the
    quantized node and the float LSTM of its dequantized weights is measured in ONNX Runtime and said.

    Every LSTM found carries ``run_source``: its node(s) run by ONNX Runtime as they stand in the file
    (``OnnxSourceRunner``); a node ONNX Runtime refuses (``layout=1`` on the CPU, an unknown attribute) is
    refused there with ONNX Runtime's own message, so a conversion from it is never verified.

    Stacked layers: a node whose ``X`` is another node's ``Y`` through nodes that only move data or do
    nothing at inference (Transpose, Reshape, Squeeze, Unsqueeze, Identity, Dropout, with constant
    parameters) becomes the next layer of the same FoundLSTM when the two nodes agree on everything but their
    input size and the path is checked, by running it in ONNX Runtime on a probe tensor, to be exactly the
    canonical rearrangement (``[T, D, B, H]`` -> ``[T, B, D*H]``; PyTorch's TorchScript exporter writes
    Squeeze or Transpose + Reshape, its dynamo exporter Transpose + Reshape + Dropout). Any other connection
    leaves the nodes as separate FoundLSTMs, each its own model, and a note says so.

    A graph with no LSTM node but a Loop or Scan body of MatMul, Sigmoid and Tanh (tf2onnx's unrolled
    Keras/TF LSTM) is refused naming that, with the fix.

Writing
    ``adapters.onnx_runtime.build_model``: one LSTM node per layer, graph input ``X`` [T, B, I] (and, with
    the option ``sequence_lens=True``, an int32 ``sequence_lens`` [B]: per-sample lengths, for a source
    with masking or packed sequences), zero initial states; outputs ``Y`` [T, B, D*H], ``Y_h`` and ``Y_c``
    [layers*dirs, B, H]; weights cast to float32 (ONNX Runtime's LSTM runs float32 only); opset 14.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    error_summary,
    fields,
    format_hint,
    guards,
    quantization_error,
    refuse_options,
)
from lstm_conformance.adapters.formats.onnx_graph import (
    LSTMNodeInfo,
    OnnxSourceRunner,
    Scope,
    fixed_shape,
    run_in_onnxruntime,
    scopes,
)
from lstm_conformance.reference.errors import InputFileError, LayoutError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LayerWeights, LSTMConfig, LSTMWeights

if TYPE_CHECKING:
    import onnx

#: Nodes allowed between two stacked LSTM nodes: they only move and reshape data, or (Dropout) do nothing
#: at inference; the path is checked in ONNX Runtime before two nodes are joined.
SHAPE_OPS: frozenset[str] = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout"})
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")
#: ONNX Runtime's quantized LSTM (contrib op): LSTM's inputs and attributes with int8/uint8 W [D, I, 4H] and
#: R [D, H, 4H], then W_scale, W_zero_point, R_scale, R_zero_point (inputs 8 to 11).
QUANTIZED_LSTM = ("com.microsoft", "DynamicQuantizeLSTM")
#: A probe's steps and batch for checking a path between stacked nodes (distinct, so a transposition shows).
_PROBE_STEPS_BATCH = (3, 5)


class OnnxFormat(FileFormat):
    """ONNX models with ``LSTM`` nodes (any opset the ``onnx`` package reads)."""

    name = "onnx"
    #: What ``refuse_options`` names: the format, and why it takes no option.
    _NO_OPTIONS = "reading the onnx format (ONNX's LSTM stores its whole function in the file)"
    _WRITE_OPTIONS = ("sequence_lens",)
    framework = "ONNX"
    implementation = "onnxruntime"

    def unavailable_reason(self) -> str | None:
        from lstm_conformance.adapters.onnx_runtime import OnnxRuntimeLSTM

        return OnnxRuntimeLSTM().unavailable_reason()

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), self._NO_OPTIONS)
        guards.check_onnx(path)
        model = _load(path)
        all_scopes = scopes(model, path.stat().st_size)
        per_scope = [(scope, [node for node in scope.graph.node if _is_lstm(node)]) for scope in all_scopes]
        if not any(nodes for _, nodes in per_scope):
            raise InputFileError(_no_lstm_message(path, all_scopes))
        lstms: list[FoundLSTM] = []
        used: set[str] = set()
        index = 0
        for scope, nodes in per_scope:
            parsed = []
            for node in nodes:
                parsed.append(_parse_node(scope, node, index, path))
                index += 1
            for chain in _chains(scope, parsed):
                lstms.append(_found(path, scope, chain))
            for node in parsed:
                used.update(node.weight_sources)
        others = [tensor.name for scope in all_scopes for tensor in scope.graph.initializer if tensor.name not in used]
        if len(lstms) > 1:
            for found in lstms:
                found.notes.append(
                    f"{len(lstms)} separate LSTMs in this file: LSTM nodes not joined by a verified "
                    "Transpose/Reshape chain are read as separate models"
                )
        return ModelContents(lstms=lstms, other_tensors=others)

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        given = refuse_options(options, self._WRITE_OPTIONS, "writing the onnx format")
        import onnx

        from lstm_conformance.adapters.onnx_runtime import GraphSignature, build_model

        with_lengths = given.get("sequence_lens", False)
        if not isinstance(with_lengths, bool):
            raise InputFileError(f"the onnx writer's sequence_lens option is True or False, not {with_lengths!r}")
        model = build_model(weights, GraphSignature(sequence_lens=with_lengths), dtype="float32")
        onnx.save(model, str(path))
        notes = [
            "weights cast to float32: ONNX Runtime's LSTM runs float32 only, so the file is exact to float32 rounding"
        ]
        if with_lengths:
            notes.append(
                "the model takes X [T, B, I] and sequence_lens [B] (int32, each sample's length: the source's "
                "masking or packed lengths) with zero initial states, and returns Y [T, B, dirs*H] (zeros past "
                "each length), Y_h and Y_c [layers*dirs, B, H] (each sample's state at its last step)"
            )
        else:
            notes.append(
                "the model takes X [T, B, I] only (zero initial states, all T steps) and returns Y [T, B, dirs*H], "
                "Y_h and Y_c [layers*dirs, B, H]"
            )
        if weights.config.num_layers > 1:
            notes.append(f"{weights.config.num_layers} layers written as a chain of LSTM nodes (Transpose, Reshape)")
        return notes


def _is_lstm(node: onnx.NodeProto) -> bool:
    return (node.op_type == "LSTM" and node.domain in ("", "ai.onnx")) or (node.domain, node.op_type) == QUANTIZED_LSTM


def _no_lstm_message(path: Path, all_scopes: list[Scope]) -> str:
    """The refusal for a graph without an LSTM node, naming a tf2onnx-unrolled LSTM when there is one."""
    for scope in all_scopes[1:]:
        body_ops = {node.op_type for node in scope.graph.node}
        if scope.path.endswith("/body") and {"MatMul", "Sigmoid", "Tanh"} <= body_ops:  # a Loop's or Scan's
            return (
                f"{path}: an LSTM unrolled by tf2onnx into a Loop ({scope.path}: MatMul, Sigmoid, Tanh), not ONNX's "
                "LSTM operator: not read; export with a native LSTM op (tf2onnx's LSTM rewriter writes ONNX's LSTM "
                "for the Keras and TF LSTMs it recognizes: try a recent tf2onnx and opset) or convert from the "
                "source model"
            )
    ops = sorted({node.op_type for scope in all_scopes for node in scope.graph.node})
    cell = next(
        (
            scope
            for scope in all_scopes
            if {"Sigmoid", "Tanh"} <= {node.op_type for node in scope.graph.node}
            and {"MatMul", "Gemm"} & {node.op_type for node in scope.graph.node}
        ),
        None,
    )
    written_out = (
        f" (its {cell.path or 'main graph'} has MatMul/Gemm, Sigmoid and Tanh: an LSTM cell written out as "
        "separate nodes is not read; export with ONNX's LSTM op or convert from the source model)"
        if cell is not None
        else ""
    )
    return (
        f"{path}: no LSTM node in the ONNX graph (its ops: {', '.join(ops[:12]) or 'none'}) or its subgraphs; this "
        "tool reads an LSTM exported as ONNX's LSTM operator (as torch.onnx.export writes nn.LSTM), not unrolled "
        f"into MatMul/Sigmoid/Tanh nodes{written_out}"
    )


def _load(path: Path) -> onnx.ModelProto:
    import onnx

    # protobuf's parse error, looked up at run time: protobuf ships no type stubs.
    decode_error: type[Exception] = importlib.import_module("google.protobuf.message").DecodeError
    try:
        model = onnx.load(str(path))
    except (decode_error, OSError, ValueError, RuntimeError, TypeError) as error:
        raise InputFileError(
            f"{path}: not a readable ONNX model ({type(error).__name__}: {error_summary(error)}); "
            f"{format_hint(path, 'onnx')}"
        ) from None
    if not model.HasField("graph"):
        raise InputFileError(f"{path}: not an ONNX model (no graph); {format_hint(path, 'onnx')}")
    return model


@dataclass
class _Node:
    """One LSTM node, parsed."""

    node: onnx.NodeProto
    name: str
    hidden_size: int
    bidirectional: bool
    layout: int
    config_fields: dict[str, Any]
    layers: list[LayerWeights]
    input_size: int
    #: The initializers its weights are read from (directly or folded).
    weight_sources: set[str]
    notes: list[str] = field(default_factory=list)
    #: What reading it assumed that changes the function (``FoundLSTM.assumptions``).
    assumptions: list[str] = field(default_factory=list)
    #: For DynamicQuantizeLSTM: the dequantized float W, R [D, 4H, I], [D, 4H, H] (to measure the error).
    dequantized: dict[str, NDArray[Any]] | None = None

    @property
    def info(self) -> LSTMNodeInfo:
        return LSTMNodeInfo(self.node, self.name, self.layout, 2 if self.bidirectional else 1, self.hidden_size)


def _attributes(node: onnx.NodeProto) -> dict[str, Any]:
    from onnx import helper

    values = {}
    for attribute in node.attribute:
        value = helper.get_attribute_value(attribute)
        if isinstance(value, bytes):
            value = value.decode(errors="replace")
        elif isinstance(value, list) and value and isinstance(value[0], bytes):
            value = [item.decode(errors="replace") for item in value]
        values[attribute.name] = value
    return values


def _constant_input(scope: Scope, where: str, role: str, tensor: str) -> NDArray[Any]:
    value = scope.constant(tensor)
    if value is None:
        raise InputFileError(
            f"{where} takes {role} from {tensor!r}, which is computed in the graph from its inputs, not from "
            "initializers or Constant nodes: only constant weights can be read; export with constant weights"
        )
    return value


def _parse_node(scope: Scope, node: onnx.NodeProto, index: int, path: Path) -> _Node:
    from lstm_conformance.adapters.layouts.onnx import OnnxLayerArrays, from_float32, layer_from_onnx

    own_name = node.name or f"LSTM_{index}"
    name = f"{scope.path}/{own_name}" if scope.path else own_name
    where = f"{path}: LSTM node {name!r}"
    attributes = _attributes(node)
    fields.check_onnx_lstm_attributes(attributes, where)
    inputs = list(node.input) + [""] * (12 - len(node.input))
    direction = attributes.get("direction", "forward")
    if direction == "reverse":
        raise InputFileError(
            f"{where} runs direction='reverse' only; the canonical layout holds forward and bidirectional LSTMs"
        )
    if direction not in ("forward", "bidirectional"):
        raise InputFileError(f"{where}: unknown direction {direction!r}")
    dirs = 2 if direction == "bidirectional" else 1
    arrays = {}
    for role, position in (("W", 1), ("R", 2), ("B", 3), ("P", 7)):
        if inputs[position]:
            arrays[role] = _constant_input(scope, where, role, inputs[position])
    if "W" not in arrays or "R" not in arrays:
        raise InputFileError(f"{where} has no W or R input")
    notes = []
    dequantized = None
    if (node.domain, node.op_type) == QUANTIZED_LSTM:
        arrays["W"], arrays["R"] = _dequantize(scope, where, inputs, arrays["W"], arrays["R"], dirs)
        dequantized = {"W": arrays["W"], "R": arrays["R"]}
        notes.append(
            f"{name}: ONNX Runtime's DynamicQuantizeLSTM, int8 weights read dequantized as "
            "(W - W_zero_point) * W_scale and (R - R_zero_point) * R_scale"
        )
    for role, position in (("initial_h", 5), ("initial_c", 6)):
        value = scope.constant(inputs[position]) if inputs[position] else None
        if value is not None and np.any(value != 0):
            raise InputFileError(
                f"{where} holds a constant non-zero {role}; the canonical layout has no stored initial state"
            )
    W = arrays["W"]
    hidden = int(attributes.get("hidden_size", W.shape[1] // 4 if W.ndim == 3 else 0))
    _check_shapes(where, arrays, dirs, hidden)
    try:
        layers = layer_from_onnx(OnnxLayerArrays(W=W, R=arrays["R"], B=arrays.get("B"), P=arrays.get("P")), hidden)
    except LayoutError as error:
        raise InputFileError(f"{where}: {error}") from None
    config_fields: dict[str, Any] = {
        "bias": "B" in arrays,
        "peepholes": "P" in arrays,
        "gate_clip": from_float32(attributes["clip"]) if "clip" in attributes else None,
        "input_forget": bool(attributes.get("input_forget", 0)),
    }
    config_fields.update(_activations(where, attributes, dirs))
    if W.dtype != np.float32 and dequantized is None:
        notes.append(f"{name}: weights stored as {W.dtype}")
    sources: set[str] = set()
    for position in (1, 2, 3, 7, 8, 9, 10, 11):
        if inputs[position]:
            scope.constant(inputs[position])
            sources.update(scope.folded_from.get(inputs[position], {inputs[position]}))
    return _Node(
        node=node,
        name=name,
        hidden_size=hidden,
        bidirectional=dirs == 2,
        layout=int(attributes.get("layout", 0)),
        config_fields=config_fields,
        layers=layers,
        input_size=int(W.shape[2]),
        weight_sources=sources,
        notes=notes,
        dequantized=dequantized,
    )


def _dequantize(
    scope: Scope, where: str, inputs: list[str], W: NDArray[Any], R: NDArray[Any], dirs: int
) -> tuple[NDArray[Any], NDArray[Any]]:
    """DynamicQuantizeLSTM's W [D, I, 4H] and R [D, H, 4H], integers, -> float W [D, 4H, I], R [D, 4H, H]."""
    result = []
    for role, quantized, (scale_at, zero_at) in (("W", W, (8, 9)), ("R", R, (10, 11))):
        if quantized.dtype not in (np.int8, np.uint8) or quantized.ndim != 3:
            raise InputFileError(
                f"{where}: DynamicQuantizeLSTM's {role} is {quantized.dtype} {list(quantized.shape)}, expected "
                "int8 or uint8 [directions, size, 4*hidden_size]"
            )
        if not inputs[scale_at]:
            raise InputFileError(f"{where}: DynamicQuantizeLSTM has no {role}_scale input")
        scale = _constant_input(scope, where, f"{role}_scale", inputs[scale_at]).astype(np.float64)
        zero = (
            _constant_input(scope, where, f"{role}_zero_point", inputs[zero_at]).astype(np.float64)
            if inputs[zero_at]
            else np.zeros(())
        )
        columns = quantized.shape[2]
        values = quantized.astype(np.float64)
        try:
            dequantized = (values - _per_channel(zero, dirs, columns)) * _per_channel(scale, dirs, columns)
        except ValueError:
            raise InputFileError(
                f"{where}: DynamicQuantizeLSTM's {role}_scale {list(scale.shape)} or {role}_zero_point "
                f"{list(zero.shape)} fits neither one per direction [{dirs}] nor one per channel [{dirs}, {columns}]"
            ) from None
        result.append(dequantized.transpose(0, 2, 1))
    return result[0], result[1]


def _per_channel(values: NDArray[Any], dirs: int, columns: int) -> NDArray[Any]:
    """A scale or zero point shaped to broadcast against [D, rows, 4H]: scalar, per direction or per channel."""
    if values.size == 1:
        return values.reshape(())
    if values.shape == (dirs,):
        return values.reshape(dirs, 1, 1)
    if values.shape == (dirs, columns):
        return values.reshape(dirs, 1, columns)
    raise ValueError(values.shape)


def _check_shapes(where: str, arrays: Mapping[str, NDArray[Any]], dirs: int, hidden: int) -> None:
    W = arrays["W"]
    if W.ndim != 3:
        raise InputFileError(f"{where}: W has shape {W.shape}; expected [directions, 4*hidden_size, input_size]")
    expected = {
        "W": (dirs, 4 * hidden, W.shape[2]),
        "R": (dirs, 4 * hidden, hidden),
        "B": (dirs, 8 * hidden),
        "P": (dirs, 3 * hidden),
    }
    for role, value in arrays.items():
        if value.shape != expected[role]:
            raise InputFileError(f"{where}: {role} has shape {value.shape}, expected {expected[role]}")
        if value.dtype.kind != "f":
            raise InputFileError(f"{where}: {role} has dtype {value.dtype}, expected a floating-point type")


def _activations(where: str, attributes: Mapping[str, Any], dirs: int) -> dict[str, Activation]:
    """The canonical activation of each role, from the node's activations, alphas and betas."""
    from lstm_conformance.adapters.layouts.onnx import (
        ONNX_ACTIVATION_PARAMETERS,
        ONNX_AGREED_DEFAULTS,
        activation_from_onnx,
    )

    names = list(attributes.get("activations", _DEFAULT_ACTIVATIONS * dirs))
    if len(names) != 3 * dirs:
        raise InputFileError(f"{where} lists {len(names)} activations; the LSTM operator takes {3 * dirs}")
    alphas = list(attributes.get("activation_alpha", []))
    betas = list(attributes.get("activation_beta", []))
    known = {key.lower(): key for key in ONNX_ACTIVATION_PARAMETERS}
    resolved = []
    for name in names:
        onnx_name = known.get(name.lower())
        if onnx_name is None:
            raise InputFileError(
                f"{where}: unknown activation {name!r}; the LSTM operator lists {', '.join(known.values())}"
            )
        takes_alpha, takes_beta = ONNX_ACTIVATION_PARAMETERS[onnx_name]
        default_alpha, default_beta = ONNX_AGREED_DEFAULTS.get(onnx_name, (None, None))
        alpha = _take(where, onnx_name, "alpha", alphas, default_alpha) if takes_alpha else None
        beta = _take(where, onnx_name, "beta", betas, default_beta) if takes_beta else None
        resolved.append(activation_from_onnx(onnx_name, alpha, beta))
    if dirs == 2 and resolved[:3] != resolved[3:]:
        raise InputFileError(
            f"{where}: its two directions use different activations ({resolved[:3]} and {resolved[3:]}); "
            "the canonical layout has one set for both"
        )
    return dict(zip(("gate_activation", "cell_input_activation", "cell_output_activation"), resolved[:3], strict=True))


def _take(where: str, name: str, parameter: str, values: list[float], default: float | None) -> float:
    if values:
        return float(values.pop(0))
    if default is None:
        raise InputFileError(
            f"{where}: activation {name} has no {parameter} in activation_{parameter}; ONNX Runtime defaults it "
            "to 0.0 and the ONNX operator to 1.0, so the file must give it"
        )
    return default


# ----------------------------------------------------------------------------------------------------------
# Stacked layers
# ----------------------------------------------------------------------------------------------------------


def _chains(scope: Scope, nodes: list[_Node]) -> list[list[_Node]]:
    """Group nodes into stacks: each link is a verified Y -> X rearrangement between compatible nodes."""
    by_output = {node.node.output[0]: node for node in nodes if node.node.output and node.node.output[0]}
    readers: dict[int, list[tuple[_Node, list[onnx.NodeProto]]]] = {}
    for node in nodes:
        source = _trace_to_lstm(scope, node.node.input[0], by_output)
        if source is not None:
            readers.setdefault(id(source[0]), []).append((node, source[1]))
    successor: dict[int, _Node] = {}
    has_predecessor: set[int] = set()
    for previous in nodes:
        candidates = readers.get(id(previous), [])
        for node, path in candidates:
            if (
                len(candidates) > 1
                or not _compatible(previous, node)
                or not _path_is_stacking(scope, path, previous, node, nodes)
            ):
                node.notes.append(f"{node.name} reads {previous.name}'s output but is not its next layer")
                continue
            successor[id(previous)] = node
            has_predecessor.add(id(node))
            node.assumptions.extend(_dropout_assumptions(scope, path))
    chains = []
    for node in nodes:
        if id(node) in has_predecessor:
            continue
        chain = [node]
        while id(chain[-1]) in successor:
            chain.append(successor[id(chain[-1])])
        chains.append(chain)
    return chains


def _trace_to_lstm(
    scope: Scope, tensor: str, by_output: Mapping[str, _Node]
) -> tuple[_Node, list[onnx.NodeProto]] | None:
    """The LSTM node whose Y reaches ``tensor`` through shape-only nodes, with those nodes in data order."""
    path: list[onnx.NodeProto] = []
    while tensor not in by_output:
        producer = scope.producers.get(tensor)
        if producer is None or producer.op_type not in SHAPE_OPS or producer.domain not in ("", "ai.onnx"):
            return None
        if any(scope.constant(name) is None for name in producer.input[1:] if name):
            return None
        path.insert(0, producer)
        tensor = producer.input[0]
    return by_output[tensor], path


def _dropout_assumptions(scope: Scope, path: list[onnx.NodeProto]) -> list[str]:
    """What reading a training-mode Dropout between two layers as identity assumes."""
    said = []
    for node in path:
        if node.op_type != "Dropout" or len(node.input) < 3 or not node.input[2]:
            continue
        training = scope.constant(node.input[2])
        if training is not None and bool(np.asarray(training).any()):
            said.append(
                f"Dropout node {node.name!r} between the layers has training_mode=True (exported without "
                "model.eval()): by ONNX's definition it drops activations at random; read as identity, as ONNX "
                "Runtime's default graph optimizations run it (with them off it drops at random); export after "
                "model.eval()"
            )
    return said


def _compatible(lower: _Node, upper: _Node) -> bool:
    dirs = 2 if lower.bidirectional else 1
    return (
        lower.config_fields == upper.config_fields
        and lower.bidirectional == upper.bidirectional
        and lower.hidden_size == upper.hidden_size
        and upper.input_size == dirs * lower.hidden_size
        and (lower.dequantized is None) == (upper.dequantized is None)
    )


def _probe_sizes(scope: Scope, nodes: list[_Node]) -> list[tuple[int, int]]:
    """Steps and batch to probe a path with: distinct small ones, then each that the file fixes for a node's
    X (an exporter without dynamic axes bakes them into its Reshape shapes)."""
    sizes = [_PROBE_STEPS_BATCH]
    for node in nodes:
        fixed = fixed_shape(scope.type_of(node.node.input[0]))
        if fixed is not None and len(fixed) == 3 and fixed[0] is not None and fixed[1] is not None:
            steps, batch = (fixed[1], fixed[0]) if node.layout == 1 else (fixed[0], fixed[1])
            if (steps, batch) not in sizes:
                sizes.append((steps, batch))
    return sizes


def _path_is_stacking(scope: Scope, path: list[onnx.NodeProto], lower: _Node, upper: _Node, nodes: list[_Node]) -> bool:
    """Run ``path`` in ONNX Runtime on a probe Y of ``lower`` and check that it yields the canonical
    next-layer input (for some steps and batch the file can run)."""
    if not path:  # Y [T, D, B, H] straight into X [T, B, I] cannot be a stack
        return False
    return any(_path_gives(scope, path, lower, upper, steps, batch) for steps, batch in _probe_sizes(scope, nodes))


def _path_gives(scope: Scope, path: list[onnx.NodeProto], lower: _Node, upper: _Node, steps: int, batch: int) -> bool:
    from onnx import helper, numpy_helper

    dirs, hidden = 2 if lower.bidirectional else 1, lower.hidden_size
    probe = np.arange(steps * dirs * batch * hidden, dtype=np.float32).reshape(steps, dirs, batch, hidden)
    expected = probe.transpose(0, 2, 1, 3).reshape(steps, batch, dirs * hidden)
    if lower.layout == 1:
        probe = probe.transpose(2, 0, 1, 3)
    if upper.layout == 1:
        expected = expected.swapaxes(0, 1)
    source = path[0].input[0]
    constants = {name for node in path for name in node.input[1:] if name}
    initializers = []
    for name in constants:
        value = scope.constant(name)
        if value is None:
            return False
        initializers.append(numpy_helper.from_array(np.asarray(value), name))
    elem = helper.np_dtype_to_tensor_dtype(probe.dtype)
    inputs = [helper.make_tensor_value_info(source, elem, list(probe.shape))]
    outputs = [helper.make_tensor_value_info(path[-1].output[0], elem, None)]
    # A Dropout is identity at inference (ONNX Runtime's optimizer removes it in the file, even in training
    # mode, which _dropout_assumptions says); the probe checks what the other nodes do to the data.
    steps_only = [
        helper.make_node("Identity", [node.input[0]], [node.output[0]]) if node.op_type == "Dropout" else node
        for node in path
    ]
    probe_graph = helper.make_graph(steps_only, "probe", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", scope.opset)]
    try:
        model = helper.make_model(probe_graph, opset_imports=opsets, ir_version=scope.model.ir_version)
        (result,) = run_in_onnxruntime(model, {source: probe})
    except Exception:  # a path ONNX Runtime cannot run at these sizes is not a verified stack at them
        return False
    return bool(result.shape == expected.shape and np.array_equal(result, expected))


def _found(path: Path, scope: Scope, chain: list[_Node]) -> FoundLSTM:
    first = chain[0]
    fields = dict(first.config_fields)
    try:
        config = LSTMConfig(
            input_size=first.input_size,
            hidden_size=first.hidden_size,
            num_layers=len(chain),
            bidirectional=first.bidirectional,
            **fields,
        )
        weights = LSTMWeights(config, [node.layers for node in chain])
    except (LayoutError, UnsupportedFeatureError) as error:
        raise InputFileError(f"LSTM node {first.name!r}: {error}") from None
    notes = [note for node in chain for note in node.notes]
    if len(chain) > 1:
        names = ", ".join(node.name for node in chain)
        notes.append(f"LSTM nodes {names} read as one {len(chain)}-layer LSTM (their Y -> X chain was verified)")
    batch_first = first.layout == 1 or _transposed_graph_input(scope, first)
    if first.layout == 0 and batch_first:
        notes.append(
            f"the file's model takes batch-first input: a Transpose(perm=[1, 0, 2]) of its input feeds LSTM node "
            f"{first.name!r} (PyTorch's batch_first=True, as its exporter writes it)"
        )
    runner = OnnxSourceRunner(path, scope, [node.info for node in chain])
    if runner.fixed_input_shape is not None:
        declared = [dim if dim is not None else "?" for dim in runner.fixed_input_shape]
        notes.append(
            f"the file fixes the LSTM's input {runner.input_name!r} to shape {declared} (exported without "
            "dynamic axes): its own run is done at that shape (other batches in slices, fewer steps padded with "
            "sequence_lens, more steps in pieces)"
        )
    if first.dequantized is not None:
        measured = _quantization_error(scope, chain, runner, config)
        runner.quantization_error = measured
        notes.append(
            f"quantization error: the quantized node (ONNX Runtime, activations quantized at run time) differs from "
            f"the float LSTM of its dequantized weights by up to {measured:.1e} relative on random inputs; expect a "
            "conversion to agree with this file within that, not within float32 rounding"
        )
    return FoundLSTM(
        name=first.name,
        weights=weights,
        implementation="onnxruntime",
        notes=notes,
        assumptions=[said for node in chain for said in node.assumptions],
        batch_first=batch_first,
        run_source=runner,
        parameter_names=_parameter_names(chain),
    )


def _parameter_names(chain: list[_Node]) -> list[str]:
    """Each node's W, R, B and P input names (those it has), in ``layout.onnx.layer_to_onnx``'s order."""
    names = []
    for node in chain:
        inputs = list(node.node.input) + [""] * 8
        names += [inputs[index] for index in (1, 2, 3, 7) if inputs[index]]
    return names


def _transposed_graph_input(scope: Scope, node: _Node) -> bool:
    """Whether the node's X is Transpose(perm=[1, 0, 2]) of an input of the main graph: the model takes
    [B, T, I] and the node runs time-major."""
    producer = scope.producers.get(node.node.input[0])
    if producer is None or producer.op_type != "Transpose" or not producer.input:
        return False
    perm = _attributes(producer).get("perm")
    defined = scope.where(producer.input[0])
    return perm == [1, 0, 2] and defined is not None and defined[0] == "input" and defined[1].parent is None


def _quantization_error(scope: Scope, chain: list[_Node], runner: OnnxSourceRunner, config: LSTMConfig) -> float:
    """Relative difference of Y between the quantized node(s) as the file has them and ONNX Runtime's float
    LSTM of the dequantized weights, on a seeded random input of a shape the file can run."""
    from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult
    from lstm_conformance.adapters.onnx_runtime import OnnxRuntimeLSTM

    fixed = runner.fixed_input_shape
    steps, batch = _PROBE_STEPS_BATCH
    if fixed is not None and len(fixed) == 3:
        steps = (fixed[1] if chain[0].layout == 1 else fixed[0]) or steps
        batch = (fixed[0] if chain[0].layout == 1 else fixed[1]) or batch
    weights = LSTMWeights(config, [node.layers for node in chain])

    def floating(inputs: RunInputs, options: RunOptions) -> RunResult:
        return OnnxRuntimeLSTM().run(weights, inputs, options)

    return quantization_error(runner, floating, (steps, batch, config.input_size), seeds=4)
