"""``.onnx`` models: their ``LSTM`` nodes, read into the canonical layout and written from it.

The layout mapping lives in ``adapters.onnx_runtime`` (``layer_from_onnx``/``layer_to_onnx``, activations);
this module finds the nodes and their constants.

Reading
    Every ``LSTM`` node of the main graph whose W, R (and B, P when present) are constants: initializers or
    ``Constant`` nodes. A weight computed in the graph is refused (``InputFileError``), as is a constant
    non-zero initial state (the canonical layout has no place for one) and a ``direction="reverse"`` node
    (the canonical layout has forward and bidirectional LSTMs only).

    Stacked layers: a node whose ``X`` is another node's ``Y`` through shape-only nodes (Transpose, Reshape,
    Squeeze, Unsqueeze, Identity, with constant parameters) becomes the next layer of the same FoundLSTM
    when the two nodes agree on everything but their input size and the path is verified, by running it
    with onnx's reference evaluator on a probe tensor, to be exactly the canonical rearrangement
    (``[T, D, B, H]`` -> ``[T, B, D*H]``, the chain PyTorch's exporter writes). Any other connection leaves
    the nodes as separate FoundLSTMs, each its own model, and a note says so.

Writing
    ``adapters.onnx_runtime.build_model``: one LSTM node per layer, graph input ``X`` [T, B, I] only (zero
    initial states, every sample all T steps), outputs ``Y`` [T, B, D*H], ``Y_h`` and ``Y_c``
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
    refuse_options,
)
from lstm_conformance.reference.errors import InputFileError, LayoutError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LayerWeights, LSTMConfig, LSTMWeights

if TYPE_CHECKING:
    import onnx

#: Nodes allowed between two stacked LSTM nodes: they only move and reshape data.
SHAPE_OPS: frozenset[str] = frozenset({"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity"})
_DEFAULT_ACTIVATIONS = ("Sigmoid", "Tanh", "Tanh")


class OnnxFormat(FileFormat):
    """ONNX models with ``LSTM`` nodes (any opset the ``onnx`` package reads)."""

    name = "onnx"
    #: What ``refuse_options`` names: the format, and why it takes no option.
    _NO_OPTIONS = "the onnx format (ONNX's LSTM stores its whole function in the file)"
    framework = "ONNX"
    implementation = "onnxruntime"

    def unavailable_reason(self) -> str | None:
        from lstm_conformance.adapters.onnx_runtime import OnnxReferenceLSTM

        return OnnxReferenceLSTM().unavailable_reason()

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), self._NO_OPTIONS)
        guards.check_onnx(path)
        model = _load(path)
        graph = _Graph(model)
        nodes = [node for node in model.graph.node if node.op_type == "LSTM" and node.domain in ("", "ai.onnx")]
        if not nodes:
            ops = sorted({node.op_type for node in model.graph.node})
            raise InputFileError(
                f"{path}: no LSTM node in the ONNX graph (its ops: {', '.join(ops[:12]) or 'none'}); this tool reads "
                "an LSTM exported as ONNX's LSTM operator (as torch.onnx.export writes nn.LSTM), not unrolled into "
                "MatMul/Sigmoid/Tanh nodes or a Loop"
            )
        parsed = [_parse_node(graph, node, index, path) for index, node in enumerate(nodes)]
        chains = _chains(graph, parsed)
        lstms = [_found(chain) for chain in chains]
        used = {name for node in parsed for name in node.weight_names}
        others = [tensor.name for tensor in model.graph.initializer if tensor.name not in used]
        if len(chains) > 1:
            for found in lstms:
                found.notes.append(
                    f"{len(chains)} separate LSTMs in this file: LSTM nodes not joined by a verified "
                    "Transpose/Reshape chain are read as separate models"
                )
        return ModelContents(lstms=lstms, other_tensors=others)

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        refuse_options(options, (), self._NO_OPTIONS)
        import onnx

        from lstm_conformance.adapters.onnx_runtime import GraphSignature, build_model

        model = build_model(weights, GraphSignature(), dtype="float32")
        onnx.save(model, str(path))
        notes = [
            "weights cast to float32: ONNX Runtime's LSTM runs float32 only, so the file is exact to float32 rounding",
            "the model takes X [T, B, I] only (zero initial states, all T steps) and returns Y [T, B, dirs*H], "
            "Y_h and Y_c [layers*dirs, B, H]",
        ]
        if weights.config.num_layers > 1:
            notes.append(f"{weights.config.num_layers} layers written as a chain of LSTM nodes (Transpose, Reshape)")
        return notes


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


class _Graph:
    """Constants (initializers and Constant nodes) and the node producing each tensor."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        self.constants: dict[str, NDArray[Any]] = {}
        for tensor in model.graph.initializer:
            self.constants[tensor.name] = _to_array(numpy_helper.to_array, tensor)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 14)
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in model.graph.node:
            for output in node.output:
                self.producer[output] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = _to_array(numpy_helper.to_array, value.t)

    def constant(self, name: str) -> NDArray[Any] | None:
        return self.constants.get(name)


def _to_array(convert: Any, tensor: Any) -> NDArray[Any]:
    try:
        return np.asarray(convert(tensor))
    except Exception as error:  # external data missing, bad raw_data size: the protobuf is damaged
        raise InputFileError(
            f"tensor {tensor.name!r} cannot be read ({error}); the file is damaged or truncated"
        ) from None


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
    weight_names: list[str]
    notes: list[str] = field(default_factory=list)


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


def _parse_node(graph: _Graph, node: onnx.NodeProto, index: int, path: Path) -> _Node:
    from lstm_conformance.adapters.onnx_runtime import OnnxLayerArrays, from_float32, layer_from_onnx

    name = node.name or f"LSTM_{index}"
    where = f"{path}: LSTM node {name!r}"
    attributes = _attributes(node)
    fields.check_onnx_lstm_attributes(attributes, where)
    inputs = list(node.input) + [""] * (8 - len(node.input))
    direction = attributes.get("direction", "forward")
    if direction == "reverse":
        raise InputFileError(
            f"{where} runs direction='reverse' only; the canonical layout holds forward and bidirectional LSTMs"
        )
    if direction not in ("forward", "bidirectional"):
        raise InputFileError(f"{where}: unknown direction {direction!r}")
    arrays = {}
    for role, position in (("W", 1), ("R", 2), ("B", 3), ("P", 7)):
        tensor = inputs[position]
        if not tensor:
            continue
        value = graph.constant(tensor)
        if value is None:
            raise InputFileError(
                f"{where} takes {role} from {tensor!r}, which is computed in the graph, not an initializer or "
                "Constant: only constant weights can be read"
            )
        arrays[role] = value
    if "W" not in arrays or "R" not in arrays:
        raise InputFileError(f"{where} has no W or R input")
    for role, position in (("initial_h", 5), ("initial_c", 6)):
        value = graph.constant(inputs[position]) if inputs[position] else None
        if value is not None and np.any(value != 0):
            raise InputFileError(
                f"{where} holds a constant non-zero {role}; the canonical layout has no stored initial state"
            )
    W = arrays["W"]
    dirs = 2 if direction == "bidirectional" else 1
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
    notes = []
    if W.dtype != np.float32:
        notes.append(f"{name}: weights stored as {W.dtype}")
    return _Node(
        node=node,
        name=name,
        hidden_size=hidden,
        bidirectional=dirs == 2,
        layout=int(attributes.get("layout", 0)),
        config_fields=config_fields,
        layers=layers,
        input_size=int(W.shape[2]),
        weight_names=[inputs[p] for p in (1, 2, 3, 7) if inputs[p]],
        notes=notes,
    )


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
    from lstm_conformance.adapters.onnx_runtime import (
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


def _chains(graph: _Graph, nodes: list[_Node]) -> list[list[_Node]]:
    """Group nodes into stacks: each link is a verified Y -> X rearrangement between compatible nodes."""
    by_output = {node.node.output[0]: node for node in nodes if node.node.output and node.node.output[0]}
    readers: dict[int, list[tuple[_Node, list[onnx.NodeProto]]]] = {}
    for node in nodes:
        source = _trace_to_lstm(graph, node.node.input[0], by_output)
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
                or not _path_is_stacking(graph, path, previous, node)
            ):
                node.notes.append(f"{node.name} reads {previous.name}'s output but is not its next layer")
                continue
            successor[id(previous)] = node
            has_predecessor.add(id(node))
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
    graph: _Graph, tensor: str, by_output: Mapping[str, _Node]
) -> tuple[_Node, list[onnx.NodeProto]] | None:
    """The LSTM node whose Y reaches ``tensor`` through shape-only nodes, with those nodes in data order."""
    path: list[onnx.NodeProto] = []
    while tensor not in by_output:
        producer = graph.producer.get(tensor)
        if producer is None or producer.op_type not in SHAPE_OPS:
            return None
        if any(graph.constant(name) is None for name in producer.input[1:] if name):
            return None
        path.insert(0, producer)
        tensor = producer.input[0]
    return by_output[tensor], path


def _compatible(lower: _Node, upper: _Node) -> bool:
    dirs = 2 if lower.bidirectional else 1
    return (
        lower.config_fields == upper.config_fields
        and lower.bidirectional == upper.bidirectional
        and lower.hidden_size == upper.hidden_size
        and upper.input_size == dirs * lower.hidden_size
    )


def _path_is_stacking(graph: _Graph, path: list[onnx.NodeProto], lower: _Node, upper: _Node) -> bool:
    """Run ``path`` on a probe Y of ``lower`` and check that it yields the canonical next-layer input."""
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    steps, batch, dirs, hidden = 2, 3, 2 if lower.bidirectional else 1, lower.hidden_size
    probe = np.arange(steps * dirs * batch * hidden, dtype=np.float32).reshape(steps, dirs, batch, hidden)
    expected = probe.transpose(0, 2, 1, 3).reshape(steps, batch, dirs * hidden)
    if lower.layout == 1:
        probe = probe.transpose(2, 0, 1, 3)
    if upper.layout == 1:
        expected = expected.swapaxes(0, 1)
    if not path:  # Y [T, D, B, H] straight into X [T, B, I] cannot be a stack
        return False
    source = path[0].input[0]
    constants = {name for node in path for name in node.input[1:] if name}
    initializers = [numpy_helper.from_array(np.asarray(graph.constants[name]), name) for name in constants]
    inputs = [helper.make_tensor_value_info(source, helper.np_dtype_to_tensor_dtype(probe.dtype), list(probe.shape))]
    outputs = [helper.make_tensor_value_info(path[-1].output[0], helper.np_dtype_to_tensor_dtype(probe.dtype), None)]
    probe_graph = helper.make_graph(list(path), "probe", inputs, outputs, initializers)
    opsets = [helper.make_opsetid("", graph.opset)]
    try:
        (result,) = ReferenceEvaluator(helper.make_model(probe_graph, opset_imports=opsets)).run(None, {source: probe})
    except Exception:  # a path the evaluator cannot run is not a verified stack
        return False
    return bool(result.shape == expected.shape and np.array_equal(result, expected))


def _found(chain: list[_Node]) -> FoundLSTM:
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
    return FoundLSTM(
        name=first.name,
        weights=weights,
        implementation="onnxruntime",
        notes=notes,
        batch_first=first.layout == 1,
    )
