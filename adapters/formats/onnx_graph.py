"""ONNX graphs as the file has them: scopes (the main graph and the subgraph bodies of If, Loop and Scan), the
nodes that compute a tensor, constants folded from constant subgraphs, and LSTM nodes run by ONNX Runtime as
they stand in the file.

``Scope`` resolves a tensor name the way ONNX does: in its own graph first (initializers, node outputs, the
body's own inputs), then in the enclosing graphs. ``closure`` collects the nodes and initializers that compute
some tensors from others, across scopes. ``Scope.constant`` folds a tensor that only constants compute
(Unsqueeze/Slice/Concat/Transpose of initializers, Constant nodes) with ONNX's own reference evaluator.
``OnnxSourceRunner`` extracts a chain of LSTM nodes (one node, or stacked layers with the nodes the file puts
between them) with the nodes that compute their weights into a model of its own and runs it in ONNX Runtime:
the LSTM nodes keep their op, attributes and weight inputs; only X, the states and sequence_lens are fed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import F64, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats import error_summary
from lstm_conformance.reference.errors import InputFileError, UnsupportedFeatureError

if TYPE_CHECKING:
    import onnx

#: Ops whose output is not a function of their inputs: never folded.
NONDETERMINISTIC_OPS: frozenset[str] = frozenset(
    {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial", "Bernoulli"}
)
#: A folded constant may be at most this many times the file's size (plus a floor): a constant subgraph
#: that expands into more is not a weight.
FOLD_SIZE_FACTOR = 4
FOLD_SIZE_FLOOR = 1 << 20
I64 = NDArray[np.int64]
#: The names the extracted model feeds the LSTM nodes' states and lengths under.
_FED_PREFIX = "lstm_conformance_fed"


class Scope:
    """One graph of the model (the main graph, or an If/Loop/Scan body) with the scopes around it."""

    def __init__(
        self,
        graph: onnx.GraphProto,
        model: onnx.ModelProto,
        file_size: int,
        parent: Scope | None = None,
        path: str = "",
    ) -> None:
        self.graph = graph
        self.model = model
        self.parent = parent
        #: Where this graph sits: "" for the main graph, else "If_3/then_branch" (nested with "/").
        self.path = path
        self.file_size = file_size
        self.initializers: dict[str, onnx.TensorProto] = {t.name: t for t in graph.initializer}
        self.producers: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for output in node.output:
                if output:
                    self.producers[output] = node
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.formal_inputs = {value.name for value in graph.input if value.name not in self.initializers}
        self.types: dict[str, onnx.TypeProto] = {
            value.name: value.type for value in [*graph.input, *graph.value_info, *graph.output]
        }
        self._folded: dict[str, NDArray[Any] | None] = {}
        self.folded_from: dict[str, set[str]] = {}

    @property
    def opset(self) -> int:
        return next((o.version for o in self.model.opset_import if o.domain in ("", "ai.onnx")), 14)

    def where(self, name: str) -> tuple[str, Scope] | None:
        """How ``name`` is defined ("initializer", "node" or "input") and in which scope, ONNX's lookup order."""
        scope: Scope | None = self
        while scope is not None:
            if name in scope.initializers:
                return "initializer", scope
            if name in scope.producers:
                return "node", scope
            if name in scope.formal_inputs:
                return "input", scope
            scope = scope.parent
        return None

    def type_of(self, name: str) -> onnx.TypeProto | None:
        scope: Scope | None = self
        while scope is not None:
            if name in scope.types:
                return scope.types[name]
            scope = scope.parent
        return None

    def constant(self, name: str) -> NDArray[Any] | None:
        """The value of ``name`` when only constants compute it (an initializer, a Constant node, or a
        constant subgraph folded by ``onnx.reference``); None when it depends on an input of the graph."""
        if name not in self._folded:
            self._folded[name] = self._fold(name)
        return self._folded[name]

    def _fold(self, name: str) -> NDArray[Any] | None:
        from onnx import helper

        found = self.where(name)
        if found is None:
            return None
        kind, scope = found
        if kind == "initializer":
            self.folded_from[name] = {name}
            return to_array(scope.initializers[name])
        if kind == "input":
            return None
        needed = closure(self, [name], stop=set(), ordered=False)
        if needed.open_inputs or any(
            node.op_type in NONDETERMINISTIC_OPS or node.domain not in ("", "ai.onnx") for node in needed.nodes
        ):
            return None
        self.folded_from[name] = set(needed.initializers)
        graph = helper.make_graph(
            _in_running_order(needed.nodes),
            "fold",
            [],
            [helper.make_value_info(name, helper.TypeProto())],
            list(needed.initializers.values()),
        )
        model = helper.make_model(graph, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
        return self._evaluate(model, name)

    def _evaluate(self, model: onnx.ModelProto, name: str) -> NDArray[Any]:
        from onnx.reference import ReferenceEvaluator

        limit = FOLD_SIZE_FACTOR * self.file_size + FOLD_SIZE_FLOOR
        inferred = _inferred_size(model, name)
        if inferred is not None and inferred > limit:
            raise InputFileError(
                f"tensor {name!r} is computed from constants into {inferred} bytes, more than {FOLD_SIZE_FACTOR} "
                "times the file: not folded; export the model with its weights as initializers"
            )
        try:
            (value,) = ReferenceEvaluator(model).run(None, {})
        except Exception as error:  # an op the evaluator lacks, a malformed constant subgraph
            raise InputFileError(
                f"tensor {name!r} is computed from constants, but onnx's reference evaluator cannot fold it "
                f"({error_summary(error)}); export the model with its weights as initializers"
            ) from None
        array = np.asarray(value)
        if array.nbytes > limit:
            raise InputFileError(
                f"tensor {name!r} is computed from constants into {array.nbytes} bytes, more than "
                f"{FOLD_SIZE_FACTOR} times the file: not folded; export the model with its weights as initializers"
            )
        return array


def _inferred_size(model: onnx.ModelProto, name: str) -> int | None:
    """Bytes of ``name`` by ONNX's shape inference, before running anything; None when it cannot tell."""
    from onnx import helper, shape_inference

    try:
        inferred = shape_inference.infer_shapes(model)
    except Exception:  # shape inference is advisory here: a failure only means the size is not known yet
        return None
    for value in inferred.graph.output:
        if value.name == name and value.type.HasField("tensor_type"):
            dims = value.type.tensor_type.shape.dim
            if not dims or any(not dim.HasField("dim_value") for dim in dims):
                return None
            itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)).itemsize
            return int(np.prod([dim.dim_value for dim in dims])) * itemsize
    return None


def to_array(tensor: onnx.TensorProto) -> NDArray[Any]:
    from onnx import numpy_helper

    try:
        return np.asarray(numpy_helper.to_array(tensor))
    except Exception as error:  # external data missing, bad raw_data size: the protobuf is damaged
        raise InputFileError(
            f"tensor {tensor.name!r} cannot be read ({error}); the file is damaged or truncated"
        ) from None


def scopes(model: onnx.ModelProto, file_size: int) -> list[Scope]:
    """The main graph and every subgraph body in it (If branches, Loop and Scan bodies), outermost first."""
    from onnx import AttributeProto

    found = [Scope(model.graph, model, file_size)]
    index = 0
    while index < len(found):
        scope = found[index]
        index += 1
        for position, node in enumerate(scope.graph.node):
            label = node.name or f"{node.op_type}_{position}"
            for attribute in node.attribute:
                bodies = (
                    [attribute.g]
                    if attribute.type == AttributeProto.GRAPH
                    else list(attribute.graphs)
                    if attribute.type == AttributeProto.GRAPHS
                    else []
                )
                for body in bodies:
                    path = f"{scope.path}/{label}/{attribute.name}" if scope.path else f"{label}/{attribute.name}"
                    found.append(Scope(body, model, file_size, scope, path))
    return found


# ----------------------------------------------------------------------------------------------------------
# Which nodes compute a tensor
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Closure:
    """The nodes (in an order that runs) and initializers that compute some tensors; ``open_inputs``: the
    graph or body inputs they depend on that nobody feeds."""

    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: dict[str, onnx.TensorProto] = field(default_factory=dict)
    open_inputs: list[str] = field(default_factory=list)


def closure(scope: Scope, targets: Iterable[str], stop: set[str], ordered: bool = True) -> Closure:
    """Everything that computes ``targets``, walking back from them and stopping at the names in ``stop``
    (fed, or computed elsewhere), across enclosing scopes; the nodes in running order when ``ordered``."""
    result = Closure()
    chosen: dict[int, onnx.NodeProto] = {}
    pending = [name for name in targets if name]
    seen: set[str] = set()
    while pending:
        name = pending.pop()
        if not name or name in seen or name in stop:
            continue
        seen.add(name)
        found = scope.where(name)
        if found is None or found[0] == "input":
            result.open_inputs.append(name)
            continue
        kind, owner = found
        if kind == "initializer":
            result.initializers[name] = owner.initializers[name]
            continue
        node = owner.producers[name]
        if id(node) not in chosen:
            chosen[id(node)] = node
            pending.extend(node.input)
            pending.extend(implicit_inputs(node))
    result.nodes = _in_running_order(list(chosen.values())) if ordered else list(chosen.values())
    return result


def implicit_inputs(node: onnx.NodeProto) -> set[str]:
    """The outer-scope names an If/Loop/Scan node's bodies read (the node depends on them too)."""
    from onnx import AttributeProto

    used: set[str] = set()
    for attribute in node.attribute:
        bodies = [attribute.g] if attribute.type == AttributeProto.GRAPH else list(attribute.graphs)
        for body in bodies:
            defined = {t.name for t in body.initializer} | {v.name for v in body.input}
            for inner in body.node:
                defined.update(inner.output)
            for inner in body.node:
                used.update(name for name in inner.input if name and name not in defined)
                used.update(name for name in implicit_inputs(inner) if name not in defined)
            used.update(v.name for v in body.output if v.name not in defined)
    return used


def _in_running_order(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """``nodes`` sorted so that every node comes after the nodes producing its inputs (a depth-first
    topological sort; the file's own order among independent nodes is kept)."""
    producer = {output: node for node in nodes for output in node.output if output}
    ordered: list[onnx.NodeProto] = []
    placed: set[int] = set()
    for root in nodes:
        stack: list[tuple[onnx.NodeProto, bool]] = [(root, False)]
        while stack:
            node, inputs_placed = stack.pop()
            if id(node) in placed:
                continue
            if inputs_placed:
                placed.add(id(node))
                ordered.append(node)
                continue
            stack.append((node, True))
            for name in [*node.input, *implicit_inputs(node)]:
                before = producer.get(name)
                if before is not None and id(before) not in placed and before is not node:
                    stack.append((before, False))
    return ordered


# ----------------------------------------------------------------------------------------------------------
# Running LSTM nodes as they stand in the file
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LSTMNodeInfo:
    """One LSTM (or DynamicQuantizeLSTM) node of a chain, with what the runner needs to shape its arrays."""

    node: onnx.NodeProto
    name: str
    layout: int
    directions: int
    hidden_size: int


class OnnxSourceRunner:
    """``FoundLSTM.run_source`` for ONNX: the chain of LSTM nodes, with the nodes between them and the nodes
    computing their weights, run by ONNX Runtime from the first node's X to the last node's outputs.

    X is fed in the file's own type; ``initial_h``/``initial_c`` and ``sequence_lens`` are fed into the nodes'
    own slots (the given arrays, else zeros and full lengths where the node has the slot), so that a file whose
    zero state is a constant of a fixed batch size runs at any batch size. Slots the node leaves empty are
    filled only when the run gives states or lengths (ONNX defines an empty slot as zeros and full lengths).
    ``fixed_input_shape``: X's shape as the file declares it (None per dimension it leaves free); other
    shapes run as ``_run_fitted`` says, or are refused where that would not be exact.
    ``quantization_error``: set by the reader for a DynamicQuantizeLSTM (the relative difference, measured,
    between the quantized node and the float LSTM of its dequantized weights).
    """

    def __init__(self, path: Path, scope: Scope, chain: Sequence[LSTMNodeInfo]) -> None:
        self.path = path
        self.scope = scope
        self.chain = list(chain)
        self.input_name = self.chain[0].node.input[0]
        self.input_type = scope.type_of(self.input_name)
        defined = scope.where(self.input_name)
        if defined is not None and not (defined[0] == "input" and defined[1].parent is None) and self.input_type:
            # An intermediate tensor's declared shape is the exporter's trace, not a limit of the file (only the
            # model's own inputs bind): keep its element type only.
            self.input_type = _float_type(np.dtype(_elem_dtype(self.input_type)))
        self.fixed_input_shape = fixed_shape(self.input_type)
        self.quantization_error: float | None = None
        self._sessions: dict[tuple[bool, bool], Any] = {}

    @property
    def input_dtype(self) -> np.dtype[Any]:
        from onnx import helper

        if self.input_type is not None and self.input_type.tensor_type.elem_type:
            return np.dtype(helper.tensor_dtype_to_np_dtype(self.input_type.tensor_type.elem_type))
        first = self.chain[0].node
        if first.op_type == "LSTM":
            weight = self.scope.constant(first.input[1])
            if weight is not None:
                return weight.dtype
        return np.dtype(np.float32)

    def __call__(self, inputs: RunInputs, options: RunOptions) -> RunResult:
        """Forward only (ONNX Runtime computes no gradients: ``gradients`` is None)."""
        dtype = self.input_dtype
        if options.device != "cpu":
            raise UnsupportedFeatureError("ONNX Runtime (the file's own run)", f"device {options.device}", "run on cpu")
        if options.dtype != str(dtype):
            raise UnsupportedFeatureError(
                "ONNX Runtime (the file's own run)",
                f"dtype {options.dtype}",
                f"the file's LSTM node runs in {dtype}: run it with dtype {dtype}",
            )
        x = np.asarray(inputs.x, dtype=np.float64)
        x = x.swapaxes(0, 1) if inputs.batch_first else x  # time-major [T, B, I] from here on
        h0 = None if inputs.h0 is None else np.asarray(inputs.h0, dtype=np.float64)
        c0 = None if inputs.c0 is None else np.asarray(inputs.c0, dtype=np.float64)
        if (h0 is None) != (c0 is None):
            shape = (sum(info.directions for info in self.chain), x.shape[1], self.chain[0].hidden_size)
            h0 = np.zeros(shape) if h0 is None else h0
            c0 = np.zeros(shape) if c0 is None else c0
        lengths = None if inputs.seq_lens is None else np.asarray(inputs.seq_lens, dtype=np.int64)
        y, h_n, c_n = self._run_fitted(x, h0, c0, lengths)
        return RunResult(
            y=y.swapaxes(0, 1) if inputs.batch_first else y, h_n=h_n, c_n=c_n, math_mode=str(self.input_dtype)
        )

    def _fixed_steps_batch(self) -> tuple[int | None, int | None]:
        fixed = self.fixed_input_shape
        if fixed is None or len(fixed) != 3:
            return None, None
        return (fixed[1], fixed[0]) if self.chain[0].layout == 1 else (fixed[0], fixed[1])

    def _run_fitted(self, x: F64, h0: F64 | None, c0: F64 | None, lengths: I64 | None) -> tuple[F64, F64, F64]:
        """Run at the steps and batch the file fixes, when it fixes them (exporters without dynamic axes bake
        them into Reshape shapes and zero states): samples are independent, so a batch runs in slices of the
        fixed batch (the last padded with zeros); fewer steps run padded, with sequence_lens stopping each
        sample at its own end; more steps run in pieces, each piece starting from the previous one's states
        (forward LSTMs without lengths only). All exact for ONNX's LSTM, none for a DynamicQuantizeLSTM
        (its activations are quantized over the whole tensor), which runs at the file's own shape only."""
        steps, batch = x.shape[0], x.shape[1]
        fixed_steps, fixed_batch = self._fixed_steps_batch()
        if (fixed_steps in (None, steps)) and (fixed_batch in (None, batch)):
            return self._run_once(x, h0, c0, lengths)
        quantized = any(info.node.op_type != "LSTM" for info in self.chain)
        bidirectional = any(info.directions == 2 for info in self.chain)
        long = fixed_steps is not None and steps > fixed_steps
        if quantized or (long and (bidirectional or lengths is not None)):
            why = (
                "its DynamicQuantizeLSTM quantizes activations over the whole input"
                if quantized
                else ("a bidirectional LSTM or one with per-sample lengths cannot run in pieces of time")
            )
            raise InputFileError(
                f"{self.path}: the file fixes the LSTM's input {self.input_name!r} to {fixed_steps or '?'} steps and "
                f"batch {fixed_batch or '?'} (exported without dynamic axes), and {why}, so its own run cannot "
                f"take {steps} steps and batch {batch}; run it at the file's shape, or export with dynamic axes"
            )
        width = fixed_batch or batch
        pieces = []
        for start in range(0, batch, width):
            rows = slice(start, min(start + width, batch))
            pieces.append(
                self._run_batch_slice(
                    x[:, rows],
                    None if h0 is None else h0[:, rows],
                    None if c0 is None else c0[:, rows],
                    None if lengths is None else lengths[rows],
                    width,
                    fixed_steps,
                )
            )
        return (
            np.concatenate([p[0] for p in pieces], axis=1),
            np.concatenate([p[1] for p in pieces], axis=1),
            np.concatenate([p[2] for p in pieces], axis=1),
        )

    def _run_batch_slice(
        self, x: F64, h0: F64 | None, c0: F64 | None, lengths: I64 | None, width: int, fixed_steps: int | None
    ) -> tuple[F64, F64, F64]:
        """One slice of the batch, padded with zero samples to ``width``, at the file's steps."""
        steps, batch = x.shape[0], x.shape[1]
        pad = width - batch
        x = np.concatenate([x, np.zeros((steps, pad, x.shape[2]))], axis=1)
        h0 = None if h0 is None else np.concatenate([h0, np.zeros((h0.shape[0], pad, h0.shape[2]))], axis=1)
        c0 = None if c0 is None else np.concatenate([c0, np.zeros((c0.shape[0], pad, c0.shape[2]))], axis=1)
        if lengths is not None:
            lengths = np.concatenate([lengths, np.full(pad, steps, dtype=np.int64)])
        if fixed_steps is None or steps == fixed_steps:
            y, h_n, c_n = self._run_once(x, h0, c0, lengths)
        elif steps < fixed_steps:
            padded = np.concatenate([x, np.zeros((fixed_steps - steps, width, x.shape[2]))])
            full = lengths if lengths is not None else np.full(width, steps, dtype=np.int64)
            y, h_n, c_n = self._run_once(padded, h0, c0, full)
            y = y[:steps]
        else:
            outputs = []
            for start in range(0, steps, fixed_steps):
                piece = x[start : start + fixed_steps]
                short = fixed_steps - piece.shape[0]
                if short:
                    piece = np.concatenate([piece, np.zeros((short, width, x.shape[2]))])
                piece_lengths = None if not short else np.full(width, fixed_steps - short, dtype=np.int64)
                y, h_n, c_n = self._run_once(piece, h0, c0, piece_lengths)
                h0, c0 = h_n, c_n  # the next piece starts where this one ended
                outputs.append(y[: fixed_steps - short])
            y = np.concatenate(outputs)
        return y[:, :batch], h_n[:, :batch], c_n[:, :batch]

    def _run_once(self, x: F64, h0: F64 | None, c0: F64 | None, lengths: I64 | None) -> tuple[F64, F64, F64]:
        """One run of the extracted model on time-major arrays; y [T, B, D*H], states [layers*dirs, B, H]."""
        dtype = self.input_dtype
        steps, batch = x.shape[0], x.shape[1]
        node_x = x.swapaxes(0, 1) if self.chain[0].layout == 1 else x
        self._check_shape(node_x.shape)
        session = self._session(h0 is not None, lengths is not None)
        feeds = {self.input_name: np.ascontiguousarray(node_x, dtype=dtype)}
        feeds.update(self._state_feeds(h0, c0, batch, dtype, session))
        if f"{_FED_PREFIX}_sequence_lens" in {i.name for i in session.get_inputs()}:
            full = lengths if lengths is not None else np.full(batch, steps)
            feeds[f"{_FED_PREFIX}_sequence_lens"] = np.asarray(full, dtype=np.int32)
        try:
            outputs = session.run(None, feeds)
        except Exception as error:  # ONNX Runtime refuses the node at run time (an attribute, a shape)
            raise self._refusal(error) from None
        return self._result(outputs)

    def _check_shape(self, shape: tuple[int, ...]) -> None:
        fixed = self.fixed_input_shape
        if fixed is None:
            return
        if len(fixed) != len(shape) or any(
            want is not None and want != got for want, got in zip(fixed, shape, strict=False)
        ):
            declared = [dim if dim is not None else "?" for dim in fixed]
            raise InputFileError(
                f"{self.path}: the file fixes the LSTM's input {self.input_name!r} to shape {declared} (exported "
                f"without dynamic axes), so its own run cannot take shape {list(shape)}; run it with that shape, "
                "or export with dynamic axes"
            )

    def _state_feeds(
        self, h0: F64 | None, c0: F64 | None, batch: int, dtype: np.dtype[Any], session: Any
    ) -> dict[str, Any]:
        fed = {i.name for i in session.get_inputs()}
        feeds: dict[str, Any] = {}
        offset = 0
        for index, info in enumerate(self.chain):
            rows = slice(offset, offset + info.directions)
            offset += info.directions
            for role, given in (("h", h0), ("c", c0)):
                name = f"{_FED_PREFIX}_initial_{role}_{index}"
                if name not in fed:
                    continue
                state = np.zeros((info.directions, batch, info.hidden_size)) if given is None else given[rows]
                state = state.swapaxes(0, 1) if info.layout == 1 else state
                feeds[name] = np.ascontiguousarray(state, dtype=dtype)
        return feeds

    def _result(self, outputs: Sequence[Any]) -> tuple[F64, F64, F64]:
        arrays = [np.asarray(array, dtype=np.float64) for array in outputs]
        last = self.chain[-1]
        y = arrays[0]
        if last.layout == 1:  # [B, T, D, H] -> [T, D, B, H]
            y = y.transpose(1, 2, 0, 3)
        steps, dirs, batch, hidden = y.shape
        y = y.transpose(0, 2, 1, 3).reshape(steps, batch, dirs * hidden)
        states_h, states_c = [], []
        for index, info in enumerate(self.chain):
            h, c = arrays[1 + 2 * index], arrays[2 + 2 * index]
            states_h.append(h.swapaxes(0, 1) if info.layout == 1 else h)
            states_c.append(c.swapaxes(0, 1) if info.layout == 1 else c)
        return y, np.concatenate(states_h), np.concatenate(states_c)

    def _refusal(self, error: BaseException) -> InputFileError:
        names = ", ".join(repr(info.name) for info in self.chain)
        fix = "export it again with what ONNX Runtime runs"
        if any(info.layout == 1 for info in self.chain):
            fix = "export it with layout=0 (ONNX Runtime's CPU LSTM runs time-major nodes only)"
        return InputFileError(
            f"{self.path}: ONNX Runtime cannot run LSTM node {names} as it stands in the file "
            f"({onnxruntime_message(error)}), so its conversion cannot be verified; {fix}"
        )

    def _session(self, with_states: bool, with_lengths: bool) -> Any:
        key = (with_states, with_lengths)
        if key not in self._sessions:
            import onnxruntime

            model = self.extracted_model(with_states, with_lengths)
            # ONNX Runtime's default session options, as a user's own session has them: its graph optimizations
            # remove Dropout, and DynamicQuantizeLSTM's result depends on its default thread count.
            options = onnxruntime.SessionOptions()
            options.log_severity_level = 4  # errors come back as exceptions, not printed
            try:
                self._sessions[key] = onnxruntime.InferenceSession(
                    model.SerializeToString(), options, providers=["CPUExecutionProvider"]
                )
            except Exception as error:  # ONNX Runtime refuses an op or attribute of the node
                raise self._refusal(error) from None
        return self._sessions[key]

    def extracted_model(self, with_states: bool, with_lengths: bool) -> onnx.ModelProto:
        """The chain as a model of its own: inputs X (the file's tensor name; states and lengths where fed),
        outputs the last node's Y and every node's Y_h, Y_c."""
        from onnx import TensorProto, helper

        copies, fed_inputs, outputs = [], [], []
        x_type = self.input_type if self.input_type is not None else _float_type(self.input_dtype)
        fed_inputs.append(helper.make_value_info(self.input_name, x_type))
        state_type = _float_type(self.input_dtype)
        for index, info in enumerate(self.chain):
            copy = type(info.node)()
            copy.CopyFrom(info.node)
            slots = list(copy.input) + [""] * max(0, 7 - len(copy.input))
            if with_lengths or slots[4]:
                slots[4] = f"{_FED_PREFIX}_sequence_lens"
                if index == 0:
                    fed_inputs.append(helper.make_tensor_value_info(slots[4], TensorProto.INT32, None))
            for position, role in ((5, "h"), (6, "c")):
                if with_states or slots[position]:
                    slots[position] = f"{_FED_PREFIX}_initial_{role}_{index}"
                    fed_inputs.append(helper.make_value_info(slots[position], state_type))
            while slots and slots[-1] == "":
                slots.pop()
            del copy.input[:]
            copy.input.extend(slots)
            names = list(copy.output) + [""] * (3 - len(copy.output))
            names = [name or f"{_FED_PREFIX}_{index}_output_{k}" for k, name in enumerate(names)]
            del copy.output[:]
            copy.output.extend(names)
            copies.append(copy)
            outputs.extend(names[1:])
        outputs.insert(0, copies[-1].output[0])
        stop = {value.name for value in fed_inputs} | {name for copy in copies for name in copy.output}
        needed = closure(self.scope, [name for copy in copies for name in copy.input], stop)
        chain_ids = {id(info.node) for info in self.chain}
        if needed.open_inputs:
            labels = ", ".join(repr(info.name) for info in self.chain)
            raise InputFileError(
                f"{self.path}: LSTM node {labels} depends on {', '.join(map(repr, needed.open_inputs[:3]))}, an "
                "input of its graph other than its X, states and lengths, so it cannot be run on its own; "
                "export the LSTM with constant weights"
            )
        nodes = [node for node in needed.nodes if id(node) not in chain_ids] + copies
        graph = helper.make_graph(
            _in_running_order(nodes),
            "lstm_as_in_file",
            fed_inputs,
            [helper.make_value_info(name, helper.TypeProto()) for name in outputs],
            list(needed.initializers.values()),
        )
        model = helper.make_model(
            graph, opset_imports=list(self.scope.model.opset_import), ir_version=self.scope.model.ir_version
        )
        model.functions.extend(self.scope.model.functions)
        return model


def onnxruntime_message(error: BaseException, limit: int = 220) -> str:
    """ONNX Runtime's error in its own words, without its status prefix and C++ source locations."""
    text = " ".join(str(error).split())
    text = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : ", "", text)
    text = re.sub(r"/\S+\.(?:cc|h|cpp):\d+ (?:\S+\([^)]*\)\s*)?", "", text)
    text = text.split(" If you need support")[0].strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _elem_dtype(value_type: onnx.TypeProto) -> np.dtype[Any]:
    from onnx import helper

    elem = value_type.tensor_type.elem_type if value_type.HasField("tensor_type") else 0
    return np.dtype(helper.tensor_dtype_to_np_dtype(elem)) if elem else np.dtype(np.float32)


def _float_type(dtype: np.dtype[Any]) -> onnx.TypeProto:
    from onnx import helper

    return helper.make_tensor_type_proto(helper.np_dtype_to_tensor_dtype(dtype), None)


def fixed_shape(value_type: onnx.TypeProto | None) -> tuple[int | None, ...] | None:
    """The dimensions a declared tensor type fixes (None for a free one); None when no shape is declared
    or none is fixed."""
    if value_type is None or not value_type.HasField("tensor_type"):
        return None
    tensor = value_type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = tuple(dim.dim_value if dim.HasField("dim_value") else None for dim in tensor.shape.dim)
    return dims if any(dim is not None for dim in dims[:2]) else None


def run_in_onnxruntime(model: onnx.ModelProto, feeds: Mapping[str, NDArray[Any]]) -> list[NDArray[Any]]:
    """Run a small model built here (a probe) in ONNX Runtime on the CPU."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 4  # errors come back as exceptions, not printed
    session = onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return [np.asarray(array) for array in session.run(None, dict(feeds))]
