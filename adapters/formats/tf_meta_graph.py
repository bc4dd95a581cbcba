"""A TF1 checkpoint's ``.meta`` graph (the MetaGraphDef ``Saver.save`` writes beside it): what each cell computes,
read from the protobuf (``read_meta_graph``), and the graph's own LSTM run (``GraphRunner``, the checkpoint's
``FoundLSTM.run_source``).

Reading parses the protobuf and runs nothing. Each cell is found by the MatMul reading its ``kernel`` variable
(in the graph, or in a while loop's body function); its forget_bias is the scalar Const added to the forget
gate's split output, its activation the op applied to j, its clips the clip_by_value Minimum ops; and the while
loop computing it (a control-flow-v1 frame or a v2 ``While`` node) is kept for running it.

Running (``graph_runner``, ``GraphRunner``): the loops of ``dynamic_rnn``/``bidirectional_dynamic_rnn`` that
compute the LSTM's cells are found in the graph by what ``dynamic_rnn`` builds around its loop (its
``TensorArrayUnstack`` and ``TensorArrayStack`` ops, the transposes of ``time_major=False``, the loop variables
after the output's, ``sequence_length``). The subgraph from the LSTM's input to its outputs and final states is
cut out of the file's graph, its input, initial states and lengths replaced by placeholders, and run by
TensorFlow in a session with the checkpoint's values assigned to its variables; gradients by ``tf.gradients``
through the file's own loop. The LSTM's input tensor is fed (what comes before it, an embedding, is not the
LSTM), and the graph's own ops reverse the input for a backward direction and join stacked layers. Where the
graph is not of that shape, the reader says why and the proof runs the project's reading under assumptions.

Files come from strangers: the cut-out subgraph runs only if every op in it (and in the functions it calls) is
one of ``RUNNABLE_OPS`` (math, shapes, control flow, TensorArrays/TensorLists, variables: nothing that reads or
writes files, runs Python or touches the network), no integer is computed by multiplying or summing or from
a float, every constant is bounded by the LSTM's own sizes (``_constant_limit``), the file's Saver restores each
variable from the checkpoint entry of its own name, and each run ends within ``RUN_TIMEOUT_MS`` with TF's graph
optimizer (which folds constants before the run) off. The file's own Saver ops (``save/restore_all``) never
run: the values come from ``tf.train.load_checkpoint``, assigned by ops of this module's own. Integer
additions in a loop could still build a large size from bounded constants: a residual this module does not
rule out.
"""

from __future__ import annotations

import functools
import re
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstm_conformance.adapters.base import Gradients, RunInputs, RunOptions, RunResult, batch_major
from lstm_conformance.adapters.formats import error_summary
from lstm_conformance.adapters.layouts.tf import gradients_from_tf_cell
from lstm_conformance.reference.errors import InputFileError, UnsupportedFeatureError
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights

#: A legacy cell's or Keras LSTMCell's own variable scope, the last scope of its kernel's name.
CELL_SCOPE = re.compile(r"^(basic_)?lstm_cell(?:_\d+)?$")
#: TF op -> canonical activation name, for a cell's ``activation`` (applied to j and to the new c).
ACTIVATION_OPS = {"Tanh": "tanh", "Relu": "relu", "Softsign": "softsign", "Softplus": "softplus"}
_VARIABLE_OPS = frozenset({"VarHandleOp", "VariableV2", "Variable"})
_PASS_THROUGH_OPS = frozenset({"Identity", "ReadVariableOp", "Enter", "Switch", "Merge"})
_WHILE_OPS = frozenset({"While", "StatelessWhile"})
_REVERSE_OPS = frozenset({"ReverseV2", "ReverseSequence"})
#: The ops a cut-out LSTM subgraph may hold and still run: what dynamic_rnn and the tf.compat.v1 cells build.
RUNNABLE_OPS = frozenset(
    {
        # tensors, shapes and math
        "Const", "Placeholder", "PlaceholderWithDefault", "Identity", "IdentityN", "NoOp", "Shape", "ShapeN",
        "Size", "Rank", "StridedSlice", "Slice", "Pack", "Unpack", "ConcatV2", "Split", "SplitV", "Reshape",
        "Squeeze", "ExpandDims", "Transpose", "Fill", "ZerosLike", "OnesLike", "Range", "Cast", "Select",
        "SelectV2", "Less", "LessEqual", "Greater", "GreaterEqual", "Equal", "NotEqual", "LogicalAnd",
        "LogicalOr", "LogicalNot", "Maximum", "Minimum", "Max", "Min", "Sum", "Add", "AddV2", "AddN", "Sub",
        "Mul", "RealDiv", "Neg", "MatMul", "BiasAdd", "Sigmoid", "Tanh", "Relu", "Relu6", "Elu", "Softsign",
        "Softplus", "ClipByValue", "ReverseV2", "ReverseSequence", "StopGradient", "All", "Any",
        "Assert",  # dynamic_rnn checks sequence_length's shape: it raises, it prints nothing
        # control flow v1 and v2
        "Enter", "Exit", "Merge", "Switch", "NextIteration", "LoopCond", "While", "StatelessWhile",
        # TensorArrays (v1) and TensorLists (v2)
        "TensorArrayV3", "TensorArrayReadV3", "TensorArrayWriteV3", "TensorArrayScatterV3",
        "TensorArrayGatherV3", "TensorArraySizeV3", "EmptyTensorList", "TensorListReserve",
        "TensorListFromTensor", "TensorListGetItem", "TensorListSetItem", "TensorListStack", "TensorListLength",
        "TensorListElementShape", "TensorListPushBack", "TensorListPopBack",
        # variables (their values assigned by this module from the checkpoint)
        "VariableV2", "VarHandleOp", "ReadVariableOp",
    }
)  # fmt: skip
#: The longest one run of the file's graph may take (a loop whose condition never ends is the file's bug).
RUN_TIMEOUT_MS = 60_000
_FEED_SCOPE = "lstm_conformance_feed"


@dataclass
class CellFacts:
    """What the graph fixes for one cell (None where the graph did not show it), and the while loop that
    computes it: a control-flow-v1 frame name, or a v2 ``While`` node's name (None when not in a loop)."""

    forget_bias: float | None = None
    cell_clip: float | None = None
    proj_clip: float | None = None
    activation: str | None = None
    loop: str | None = field(default=None, compare=False)


@dataclass
class MetaGraph:
    """A parsed ``.meta`` file: the MetaGraphDef, its nodes and functions by name, and its cells by path
    (``rnn/lstm_cell``, as in the checkpoint's keys)."""

    path: Path
    proto: Any
    nodes: dict[str, Any]
    functions: dict[str, Any]
    cells: dict[str, CellFacts]

    @functools.cached_property
    def while_contexts(self) -> list[Any]:
        """The v1 WhileContextDefs of the ``while_context`` collection, parsed once; GraphNotRunnableError for an
        entry that is not one."""
        from google.protobuf.message import DecodeError  # type: ignore[import-untyped]
        from tensorflow.core.protobuf import control_flow_pb2

        collection = self.proto.collection_def.get("while_context")
        contexts = []
        for raw in collection.bytes_list.value if collection is not None else []:
            context = control_flow_pb2.WhileContextDef()
            try:
                context.ParseFromString(raw)
            except DecodeError:
                raise GraphNotRunnableError("a while_context of the .meta graph is not a WhileContextDef") from None
            contexts.append(context)
        return contexts


def read_meta_graph(prefix: Path) -> MetaGraph | None:
    """The ``.meta`` file beside a checkpoint prefix, parsed; None when there is none. Nothing runs."""
    meta = Path(f"{prefix}.meta")
    if not meta.is_file():
        return None
    from google.protobuf.message import DecodeError
    from tensorflow.core.protobuf import meta_graph_pb2

    proto = meta_graph_pb2.MetaGraphDef()
    try:
        proto.ParseFromString(meta.read_bytes())
    except (DecodeError, OSError, RuntimeError) as error:
        raise InputFileError(
            f"{meta}: not a readable MetaGraphDef ({error_summary(error)}); remove or rewrite it"
        ) from None
    main = {node.name: node for node in proto.graph_def.node}
    functions = {function.signature.name: function for function in proto.graph_def.library.function}
    cells = _cells_in(main, lambda name: _variable_name(main, name), lambda name: _frame(main, name))
    for node in main.values():
        body = functions.get(node.attr["body"].func.name) if node.op in _WHILE_OPS else None
        if body is None:
            continue
        arguments = {arg.name: index for index, arg in enumerate(body.signature.input_arg)}

        def outer(name: str, loop: Any = node, arguments: Mapping[str, int] = arguments) -> str | None:
            index = arguments.get(name)
            if index is None or index >= len(loop.input):
                return None
            return _variable_name(main, source(loop.input[index])[0])

        def while_node(_: str, loop: str = node.name) -> str:
            return loop

        inner = {node_def.name: node_def for node_def in body.node_def}
        cells.update(_cells_in(inner, outer, while_node))
    return MetaGraph(meta, proto, main, functions, cells)


def source(text: str) -> tuple[str, int]:
    """(node, output index) of a NodeDef input: ``a``, ``a:1`` (graphs) or ``a:output:1`` (function bodies)."""
    parts = text.lstrip("^").split(":")
    return parts[0], int(parts[-1]) if len(parts) > 1 and re.fullmatch("[0-9]{1,9}", parts[-1]) else 0


def _input(node: Any, index: int) -> str:
    """Input ``index`` of ``node`` as a tensor name, or GraphNotRunnableError where the node has no such input."""
    if node is None or len(node.input) <= index:
        raise GraphNotRunnableError(f"the node {getattr(node, 'name', '?')!r} lacks input {index}")
    return _tensor(node.input[index])


def _tensor(text: str) -> str:
    """A graph input as a tensor name: ``a`` -> ``a:0``."""
    node, index = source(text)
    return f"{node}:{index}"


def _scalar(node: Any) -> float | None:
    """The value of a scalar Const NodeDef, read from the proto (nothing runs)."""
    if node is None or node.op != "Const" or declared_size(node.attr["value"].tensor) != 1:
        return None  # (a constant declaring many values is expanded by MakeNdarray: never read one)
    from tensorflow.python.framework import tensor_util

    try:
        value = np.asarray(tensor_util.MakeNdarray(node.attr["value"].tensor), dtype=np.float64)
    except (ValueError, TypeError):
        return None
    return float(value) if value.size == 1 else None


def _upstream(nodes: Mapping[str, Any], text: str, through: frozenset[str], steps: int = 16) -> str:
    """The tensor a graph input comes from, followed back through input 0 of the ``through`` ops, at most
    ``steps`` of them (a hostile graph may loop them)."""
    for _ in range(steps):
        node = nodes.get(source(text)[0])
        if node is None or node.op not in through or not node.input:
            break
        text = node.input[0]
    return _tensor(text)


def _variable_name(nodes: Mapping[str, Any], name: str) -> str | None:
    """The variable a graph input reads, followed back through Identity/ReadVariableOp/Enter nodes."""
    node = nodes.get(source(_upstream(nodes, name, _PASS_THROUGH_OPS))[0])
    return str(node.name) if node is not None and node.op in _VARIABLE_OPS else None


def _frame(nodes: Mapping[str, Any], name: str) -> str | None:
    """The control-flow-v1 frame (while loop) a graph input enters, through the Enter on its way."""
    node = nodes.get(source(_upstream(nodes, name, _PASS_THROUGH_OPS - {"Enter"}))[0])
    if node is None or node.op != "Enter" or not node.input:
        return None
    return str(node.attr["frame_name"].s.decode(errors="replace"))


def _cells_in(
    nodes: Mapping[str, Any], variable_of: Callable[[str], str | None], loop_of: Callable[[str], str | None]
) -> dict[str, CellFacts]:
    """The cells computed in one node list (a graph, or a while loop's body): each found by the MatMul that reads
    its ``kernel`` variable, then its forget_bias, clips and activation from the ops in the MatMul's scope."""
    consumers: dict[tuple[str, int], list[Any]] = {}
    for node in nodes.values():
        for text in node.input:
            consumers.setdefault(source(text), []).append(node)
    found: dict[str, CellFacts] = {}
    for node in nodes.values():
        scope, _, leaf = node.name.rpartition("/")
        if node.op != "MatMul" or leaf != "MatMul" or not CELL_SCOPE.match(scope.rsplit("/", 1)[-1]):
            continue
        kernel_input = source(node.input[1])[0] if len(node.input) > 1 else ""
        variable = variable_of(kernel_input) if kernel_input else None
        if variable is None or not variable.endswith("/kernel"):
            continue
        facts = _cell_facts(nodes, consumers, scope)
        facts.loop = loop_of(kernel_input)
        found[variable[: -len("/kernel")]] = facts
    return found


def _cell_facts(nodes: Mapping[str, Any], consumers: Mapping[tuple[str, int], list[Any]], scope: str) -> CellFacts:
    """BasicLSTMCell/LSTMCell.call: ``i, j, f, o = split(...)``; ``f + forget_bias`` adds a scalar Const to
    output 2; ``activation(j)`` consumes output 1; clip_by_value is a Minimum with a Const, on the projection
    MatMul's output for proj_clip and on the new c for cell_clip."""
    facts = CellFacts()
    split = nodes.get(f"{scope}/split")
    if split is None or split.op != "Split":
        return facts
    for node in consumers.get((split.name, 2), []):
        if node.op in ("Add", "AddV2"):
            constants = [_scalar(nodes.get(source(text)[0])) for text in node.input]
            facts.forget_bias = next((value for value in constants if value is not None), None)
    for node in consumers.get((split.name, 1), []):
        facts.activation = ACTIVATION_OPS.get(node.op, f"TF op {node.op}")
    for node in nodes.values():
        if node.op != "Minimum" or not node.name.startswith(f"{scope}/clip_by_value"):
            continue
        limit = _scalar(nodes.get(source(node.input[1])[0]))
        clipped = nodes.get(source(node.input[0])[0])
        if clipped is not None and clipped.op == "MatMul":
            facts.proj_clip = limit
        else:
            facts.cell_clip = limit
    return facts


# ----------------------------------------------------------------------------------------------------------
# Finding dynamic_rnn's loops
# ----------------------------------------------------------------------------------------------------------


class GraphNotRunnableError(Exception):
    """The graph cannot be run as this module runs it; the message says why (for the reader's note)."""


@dataclass(frozen=True)
class _Loop:
    """One dynamic_rnn call in the graph, by the tensors around its while loop. ``input`` and ``output`` are in
    the layout dynamic_rnn was given (batch-major where ``batch_major``: time_major=False); ``initial`` and
    ``final`` the state tensors entering and leaving the loop, (c, h) per cell; ``lengths`` the tensor its
    sequence_length comes from, None without one."""

    input: str
    output: str
    batch_major: bool
    initial: list[str]
    final: list[str]
    lengths: str | None


def _find_loop(graph: MetaGraph, loop: str, cells: int) -> _Loop:
    nodes = graph.nodes
    while_node = nodes.get(loop)
    v2 = while_node is not None and while_node.op in _WHILE_OPS
    scope = loop.removesuffix("/while") if v2 else loop.removesuffix("/while/while_context")
    if scope == loop:
        raise GraphNotRunnableError(f"the loop {loop!r} is not one dynamic_rnn builds")
    scatter = nodes.get(f"{scope}/TensorArrayUnstack/TensorListFromTensor") or nodes.get(
        f"{scope}/TensorArrayUnstack/TensorArrayScatter/TensorArrayScatterV3"
    )
    stack = nodes.get(f"{scope}/TensorArrayV2Stack/TensorListStack") or nodes.get(
        f"{scope}/TensorArrayStack/TensorArrayGatherV3"
    )
    value_input = 0 if scatter is not None and scatter.op == "TensorListFromTensor" else 2  # the tensor scattered
    if scatter is None or stack is None or len(scatter.input) <= value_input:
        raise GraphNotRunnableError(f"no TensorArrayUnstack/TensorArrayStack around {loop!r} (not dynamic_rnn's loop)")
    time_major_input = _input(scatter, value_input)
    transpose = nodes.get(source(time_major_input)[0])
    batch_major = transpose is not None and transpose.op == "Transpose" and transpose.name == f"{scope}/transpose"
    output = _tensor(stack.name)
    if batch_major:
        back = nodes.get(f"{scope}/transpose_1")
        if back is None or back.op != "Transpose" or _input(back, 0) != output:
            raise GraphNotRunnableError(
                f"the input of {scope!r} is transposed to time-major but its output is not back"
            )
        output = _tensor(back.name)
    initial, final = _states(graph, loop, stack, cells) if v2 else _v1_states(graph, loop, stack, cells)
    return _Loop(
        input=_input(transpose, 0) if batch_major else time_major_input,
        output=output,
        batch_major=batch_major,
        initial=initial,
        final=final,
        lengths=_lengths(nodes, scope),
    )


def _states(graph: MetaGraph, loop: str, stack: Any, cells: int) -> tuple[list[str], list[str]]:
    """A v2 While's state loop variables: dynamic_rnn's loop variables are (counter, limit, time, output, state
    ...), so the states follow the output's (the one TensorArrayV2Stack reads, through an Identity)."""
    identity = graph.nodes.get(source(_input(stack, 0))[0])
    if identity is None or identity.op != "Identity" or source(_input(identity, 0))[0] != loop:
        raise GraphNotRunnableError(f"the output of {loop!r} does not come from its loop")
    position = source(_input(identity, 0))[1]
    inputs = [text for text in graph.nodes[loop].input if not text.startswith("^")]
    wanted = range(position + 1, position + 1 + 2 * cells)
    if wanted.stop > len(inputs):
        raise GraphNotRunnableError(f"{loop!r} has fewer loop variables than {cells} cells' states")
    return [_tensor(inputs[k]) for k in wanted], [f"{loop}:{k}" for k in wanted]


def _v1_states(graph: MetaGraph, frame: str, stack: Any, cells: int) -> tuple[list[str], list[str]]:
    """A v1 loop's state loop variables, by its WhileContextDef (the ``while_context`` collection): its loop
    variables' Enter and Exit ops in order, the states after the output's (the one TensorArrayGatherV3 reads)."""
    context = _while_context(graph, frame)
    exits, enters = [_tensor(t) for t in context.loop_exit_names], [_tensor(t) for t in context.loop_enter_names]
    flow = _input(stack, 2)
    if flow not in exits:
        raise GraphNotRunnableError(f"the output of {frame!r} does not come from its loop")
    position = exits.index(flow)
    wanted = range(position + 1, position + 1 + 2 * cells)
    if wanted.stop > min(len(exits), len(enters)):
        raise GraphNotRunnableError(f"{frame!r} has fewer loop variables than {cells} cells' states")
    initial = []
    for k in wanted:
        enter = graph.nodes.get(source(enters[k])[0])
        if enter is None or enter.op != "Enter" or not enter.input:
            raise GraphNotRunnableError(f"the loop variable {enters[k]!r} of {frame!r} is not an Enter op")
        initial.append(_input(enter, 0))
    return initial, [exits[k] for k in wanted]


def _while_context(graph: MetaGraph, frame: str) -> Any:
    for context in graph.while_contexts:
        if context.context_name == frame:
            return context
    raise GraphNotRunnableError(f"the .meta graph holds no while_context for the loop {frame!r}")


def _lengths(nodes: Mapping[str, Any], scope: str) -> str | None:
    """The tensor dynamic_rnn's ``sequence_length`` comes from (its ``SCOPE/sequence_length`` Identity, followed
    back through Identity and Cast: the lengths the model is given), None when it takes none."""
    node = nodes.get(f"{scope}/sequence_length")
    if node is None or node.op != "Identity":
        return None
    return _upstream(nodes, _input(node, 0), frozenset({"Identity", "Cast"}), steps=8)


# ----------------------------------------------------------------------------------------------------------
# The LSTM's subgraph: what is fed, what is fetched, what it holds
# ----------------------------------------------------------------------------------------------------------


@dataclass
class _Plan:
    """How one LSTM runs in the graph: the tensors fed (input, initial states (c, h) per layer and direction,
    lengths) and fetched (the last layer's output per direction, final states), the cells' variables by their
    (layer, direction), and the cut-out subgraph."""

    x: str
    batch_major: bool
    outputs: list[str]
    initial: list[str]
    final: list[str]
    lengths: str | None
    variables: dict[tuple[int, int], dict[str, str]]
    #: The input's shape where the graph fixes it (its placeholder's), in the graph's layout; None: free.
    x_shape: tuple[int | None, ...] | None = None
    graph_def: Any = None
    functions: list[Any] = field(default_factory=list)
    variable_ops: dict[str, str] = field(default_factory=dict)
    contexts: list[bytes] = field(default_factory=list)


def _plan(graph: MetaGraph, config: LSTMConfig, cells: Mapping[tuple[int, int], tuple[str, dict[str, str]]]) -> _Plan:
    """The loops of an LSTM's cells ((layer, direction) -> (cell path, variable -> checkpoint key)), joined:
    one loop for a unidirectional stack (MultiRNNCell), one per layer and direction for a bidirectional one."""
    facts = {key: graph.cells.get(path) for key, (path, _) in cells.items()}
    missing = [cells[key][0] for key, fact in facts.items() if fact is None or fact.loop is None]
    if missing:
        raise GraphNotRunnableError(
            f"the cell {missing[0]!r} is not computed in a while loop of the graph (not dynamic_rnn)"
        )
    loop_names = {key: str(fact.loop) for key, fact in facts.items() if fact is not None}
    initial, final = [], []
    if not config.bidirectional:
        if len(set(loop_names.values())) != 1:
            raise GraphNotRunnableError("the layers run in separate loops, not one MultiRNNCell")
        loop = _find_loop(graph, loop_names[(0, 0)], config.num_layers)
        x, outputs, lengths = loop.input, [loop.output], {loop.lengths}
        initial, final = loop.initial, loop.final
        batch_first = loop.batch_major
    else:
        if len(set(loop_names.values())) != 2 * config.num_layers:
            raise GraphNotRunnableError(
                "a bidirectional LSTM's directions and layers do not each run in a loop of their own"
            )
        loops = {key: _find_loop(graph, name, 1) for key, name in loop_names.items()}
        first_fw, first_bw = loops[(0, 0)], loops[(0, 1)]
        x, batch_first = first_fw.input, first_fw.batch_major
        if _reversed_input(graph, first_bw) != x or first_bw.batch_major != batch_first:
            raise GraphNotRunnableError("the backward direction's input is not the forward's reversed")
        last = config.num_layers - 1
        outputs = [loops[(last, 0)].output, _reversed_output(graph, loops[(last, 1)])]
        lengths = {loop.lengths for loop in loops.values()}
        for layer in range(config.num_layers):
            for direction in range(2):
                initial += loops[(layer, direction)].initial
                final += loops[(layer, direction)].final
    if len(lengths) != 1:
        raise GraphNotRunnableError("the directions take different sequence_length tensors")
    return _Plan(
        x, batch_first, outputs, initial, final, lengths.pop(), {key: keys for key, (_, keys) in cells.items()}
    )


def _reversed_input(graph: MetaGraph, loop: _Loop) -> str | None:
    """What a backward direction's input reverses (a Reverse op's input), None where it is not reversed."""
    node = graph.nodes.get(source(loop.input)[0])
    return _input(node, 0) if node is not None and node.op in _REVERSE_OPS else None


def _reversed_output(graph: MetaGraph, loop: _Loop) -> str:
    """The backward direction's output put back in time order: the Reverse op that reads it."""
    found = [
        node.name
        for node in graph.nodes.values()
        if node.op in _REVERSE_OPS and node.input and _tensor(node.input[0]) == loop.output
    ]
    if len(found) != 1:
        raise GraphNotRunnableError(
            f"the backward output {loop.output!r} is not reversed back once ({len(found)} times)"
        )
    return _tensor(found[0])


def _cut(graph: MetaGraph, plan: _Plan, config: LSTMConfig, checkpoint: Mapping[str, Sequence[int]]) -> None:
    """The subgraph from the fed tensors to the fetched ones, its fed tensors replaced by placeholders, the
    functions it calls, its variables; GraphNotRunnableError where it holds what may not run (``_check_runnable``)
    or a variable the checkpoint or the file's Saver does not give. Rewrites the plan's fed tensor names to the
    placeholders'."""
    from tensorflow.core.framework import graph_pb2, types_pb2

    feeds = [plan.x, *plan.initial, *([plan.lengths] if plan.lengths else [])]
    if len(set(feeds)) != len(feeds):
        raise GraphNotRunnableError("one tensor of the graph is both the input or lengths and a state, or two states")
    placeholders = {tensor: f"{_FEED_SCOPE}/{k}" for k, tensor in enumerate(feeds)}
    dtypes: dict[str, int] = {}
    kept: dict[str, Any] = {}
    queue = [source(t)[0] for t in [*plan.outputs, *plan.final]]
    while queue:
        name = queue.pop()
        if name in kept:
            continue
        node = graph.nodes.get(name)
        if node is None:
            raise GraphNotRunnableError(f"the graph's node {name!r} is missing")
        copy = type(node)()
        copy.CopyFrom(node)
        if "_class" in copy.attr:
            del copy.attr["_class"]  # colocation with nodes that may be cut away (a placement hint, not math)
        for index, text in enumerate(copy.input):
            fed = placeholders.get(_tensor(text)) if not text.startswith("^") else None
            if fed is not None:
                dtypes.setdefault(fed, _fed_dtype(copy, index, integer=fed == placeholders.get(plan.lengths or "")))
                copy.input[index] = fed
            else:
                queue.append(source(text)[0])
        kept[name] = copy
    unfed = sorted(name for name, node in kept.items() if node.op == "Placeholder")
    if unfed:  # (is_training, keep_prob without a default): a value the file does not hold
        raise GraphNotRunnableError(f"the LSTM's loop reads the placeholder {unfed[0]!r}, given no value in the file")
    limit = _constant_limit(config, plan.variables, checkpoint)
    functions = _called_functions(graph, list(kept.values()))
    for node in [*kept.values(), *(inner for function in functions for inner in function.node_def)]:
        _check_runnable(node, limit)
    graph_def = graph_pb2.GraphDef()
    graph_def.versions.CopyFrom(graph.proto.graph_def.versions)
    for placeholder in placeholders.values():
        node = graph_def.node.add(name=placeholder, op="Placeholder")
        node.attr["dtype"].type = dtypes.get(placeholder, types_pb2.DT_FLOAT)
        node.attr["shape"].shape.unknown_rank = True
    graph_def.node.extend(kept.values())
    graph_def.library.function.extend(functions)
    plan.graph_def, plan.functions = graph_def, functions
    plan.variable_ops = {name: node.op for name, node in kept.items() if node.op in _VARIABLE_OPS}
    restored = _restored_from(graph)
    for name in sorted(plan.variable_ops):
        if name not in checkpoint:
            raise GraphNotRunnableError(f"the graph's variable {name!r} is not in the checkpoint")
        if restored.get(name) != name:  # a Saver mapping names elsewhere would restore other values than we do
            raise GraphNotRunnableError(
                f"the file's Saver restores {name!r} from {restored.get(name, 'no checkpoint entry')!r}, not its own"
            )
    plan.contexts = _contexts_within(graph, set(kept))
    plan.x_shape = _static_shape(graph, plan.x)
    _check_fixed_shape(plan.x_shape, config)
    if plan.x_shape is not None:  # the graph's constants may be sized from it: the placeholder keeps it
        shape = graph_def.node[0].attr["shape"].shape
        shape.unknown_rank = False
        for size in plan.x_shape:
            shape.dim.add(size=-1 if size is None else size)
    plan.x, plan.initial = f"{placeholders[plan.x]}:0", [f"{placeholders[t]}:0" for t in plan.initial]
    plan.lengths = f"{placeholders[plan.lengths]}:0" if plan.lengths else None


def _static_shape(graph: MetaGraph, tensor: str) -> tuple[int | None, ...] | None:
    """The shape a graph fixes for a tensor, read from its producer: a placeholder's ``shape`` (TF1 code often
    fixes the batch and the steps: dynamic_rnn then builds its loop from them as constants), or the
    ``_output_shapes`` a graph may carry; None where neither says (None per dimension left free)."""
    name, index = source(tensor)
    node = graph.nodes.get(name)
    if node is None:
        return None
    if node.op in ("Placeholder", "PlaceholderWithDefault") and index == 0 and "shape" in node.attr:
        shape = node.attr["shape"].shape
    elif "_output_shapes" in node.attr and index < len(node.attr["_output_shapes"].list.shape):
        shape = node.attr["_output_shapes"].list.shape[index]
    else:
        return None
    if shape.unknown_rank or len(shape.dim) != 3:
        return None
    sizes = tuple(int(d.size) if d.size >= 0 else None for d in shape.dim)
    return sizes if any(size is not None for size in sizes) else None


#: The most values a fixed input shape may ask a proof to compute with (steps x batch x the widest layer).
_FIXED_SHAPE_VALUES = 10_000_000
#: The most steps (or samples) a fixed input shape may ask a proof to run.
_FIXED_STEPS_OR_BATCH = 4096


def _check_fixed_shape(shape: tuple[int | None, ...] | None, config: LSTMConfig) -> None:
    """GraphNotRunnableError where a fixed input shape cannot be the LSTM's (an input width not its input size,
    an empty dimension) or asks a proof far beyond the weights (over ``_FIXED_SHAPE_VALUES`` values)."""
    if shape is None:
        return
    if shape[2] not in (None, config.input_size) or any(size == 0 for size in shape):
        raise GraphNotRunnableError(f"its input placeholder's shape {list(shape)} is not an input of this LSTM")
    widest = max(config.input_size, 4 * config.hidden_size, config.num_directions * config.output_size)
    steps_and_batch = [size for size in shape[:2] if size is not None]
    too_long = any(size > _FIXED_STEPS_OR_BATCH for size in steps_and_batch)  # the reference steps in Python
    if too_long or (shape[0] or 1) * (shape[1] or 1) * widest > _FIXED_SHAPE_VALUES:
        raise GraphNotRunnableError(f"its input placeholder fixes the shape {list(shape)}, too large for a proof")


def _fed_dtype(node: Any, index: int, integer: bool) -> int:
    """The dtype (DataType enum) of a fed input, ``index`` of ``node``, from its type attributes: an integer
    type for the lengths, a floating one for the input and states; GraphNotRunnableError otherwise."""
    dtype = _input_dtype(node, index)
    if (dtype in _INTEGER_TYPES) != integer or (not integer and dtype not in _FLOAT_TYPES):
        raise GraphNotRunnableError(f"input {index} of {node.name!r} ({node.op}) has the unexpected type {dtype}")
    return dtype


def _restored_from(graph: MetaGraph) -> dict[str, str]:
    """Variable -> the checkpoint entry the file's Saver restores it from: each Assign / AssignVariableOp whose
    value is (through Identity) output k of a RestoreV2, whose tensor_names Const names entry k."""
    nodes, restored = graph.nodes, {}
    for node in nodes.values():
        if node.op not in ("Assign", "AssignVariableOp") or len(node.input) < 2:
            continue
        name, index = source(_upstream(nodes, node.input[1], frozenset({"Identity"})))
        value = nodes.get(name)
        if value is None or value.op != "RestoreV2" or len(value.input) < 2:
            continue
        names = nodes.get(source(value.input[1])[0])
        if names is None or names.op != "Const":
            continue
        keys = names.attr["value"].tensor.string_val
        variable = _variable_name(nodes, source(node.input[0])[0])
        if variable is not None and index < len(keys):
            restored[variable] = keys[index].decode(errors="replace")
    return restored


def _input_dtype(node: Any, index: int) -> int:
    """The dtype (DataType enum) of input ``index`` of ``node``, from its type attributes."""
    for name in ("Tlen",) if node.op == "ReverseSequence" and index == 1 else ("T", "SrcT", "element_dtype"):
        if name not in node.attr:
            continue
        value = node.attr[name]
        if value.HasField("list") and len(value.list.type) > index:
            return int(value.list.type[index])
        if value.type:
            return int(value.type)
    raise GraphNotRunnableError(f"cannot tell the dtype of input {index} of {node.name!r} ({node.op})")


def _called_functions(graph: MetaGraph, nodes: list[Any]) -> list[Any]:
    """The functions the nodes call (a While's cond and body), and those they call in turn."""
    found: dict[str, Any] = {}
    queue = list(nodes)
    while queue:
        node = queue.pop()
        for value in node.attr.values():
            names = [value.func.name] if value.HasField("func") else [f.name for f in value.list.func]
            for name in names:
                if name in found:
                    continue
                function = graph.functions.get(name)
                if function is None:
                    raise GraphNotRunnableError(
                        f"{node.name!r} calls the function {name!r}, which the graph does not hold"
                    )
                found[name] = function
                queue.extend(function.node_def)
    return list(found.values())


@dataclass(frozen=True)
class _ConstantLimit:
    """What a runnable graph's constants may be: ``values``, the most values one constant may declare (a
    constant declaring more than it stores is expanded when it runs); ``integer``, the largest integer
    constant (the sizes zero states, TensorArrays and loops are built from)."""

    values: int
    integer: int


def _constant_limit(
    config: LSTMConfig, variables: Mapping[tuple[int, int], Mapping[str, str]], checkpoint: Mapping[str, Sequence[int]]
) -> _ConstantLimit:
    """A runnable graph's constants may declare as many values as the LSTM's largest variable holds and be
    integers up to four times its largest size (a fused 4H, an input plus output), each at least 4096 (time
    steps, loop limits): more would allocate or run far beyond what the file stores. The sizes are the LSTM's
    own, never the checkpoint index's other entries (which a hostile index may declare at will)."""
    shapes = [checkpoint.get(key, ()) for keys in variables.values() for key in keys.values()]
    biggest = max((int(np.prod(shape, dtype=np.int64)) for shape in shapes), default=0)
    largest = max(4 * config.hidden_size, config.input_size + config.output_size, 2 * config.output_size)
    return _ConstantLimit(values=max(biggest, 4096), integer=max(4 * largest, 4096))


def declared_size(tensor: Any) -> int:
    """How many values a TensorProto declares (its shape's product), whatever it stores; -1 for a bad shape."""
    sizes = [int(d.size) for d in tensor.tensor_shape.dim]
    if any(size < 0 for size in sizes):
        return -1
    return int(np.prod(sizes, dtype=np.float64)) if sizes else 1


def _check_runnable(node: Any, limit: _ConstantLimit) -> None:
    """GraphNotRunnableError unless ``node`` may run: its op in ``RUNNABLE_OPS``; no integer made by a product, a
    sum or from a float (a size multiplied up from bounded constants); a constant within ``limit``."""
    if node.op not in RUNNABLE_OPS:
        raise GraphNotRunnableError(
            f"its op {node.op} ({node.name!r}) is not one this tool runs from a stranger's graph"
        )
    integer_out = node.attr["T"].type in _INTEGER_TYPES if "T" in node.attr else False
    if (node.op in _INTEGER_GROWING_OPS and integer_out) or (
        node.op == "Cast" and node.attr["SrcT"].type in _FLOAT_TYPES and node.attr["DstT"].type in _INTEGER_TYPES
    ):
        raise GraphNotRunnableError(f"its op {node.op} ({node.name!r}) computes an integer this tool does not bound")
    if node.op != "Const":
        return
    tensor = node.attr["value"].tensor
    count = declared_size(tensor)
    if not 0 <= count <= limit.values:
        raise GraphNotRunnableError(f"its constant {node.name!r} declares {count} values")
    if node.attr["dtype"].type in _INTEGER_TYPES:
        from tensorflow.python.framework import tensor_util

        try:
            value = np.asarray(tensor_util.MakeNdarray(tensor))
        except (ValueError, TypeError) as error:
            raise GraphNotRunnableError(f"its constant {node.name!r} is damaged ({error_summary(error)})") from None
        if value.size and int(np.max(np.abs(value.astype(np.int64)))) > limit.integer:
            raise GraphNotRunnableError(f"its integer constant {node.name!r} is over {limit.integer}")


#: DataType enums of the integer types (types.proto: DT_INT32 3, DT_UINT8 4, DT_INT16 5, DT_INT8 6, DT_INT64 9,
#: DT_UINT16 17, DT_UINT32 22, DT_UINT64 23).
_INTEGER_TYPES = frozenset({3, 4, 5, 6, 9, 17, 22, 23})
#: DT_FLOAT 1, DT_DOUBLE 2, DT_BFLOAT16 14, DT_HALF 19.
_FLOAT_TYPES = frozenset({1, 2, 14, 19})
#: Ops that multiply an integer up (dynamic_rnn's integers are shapes, slices, +1 counters, min and max).
_INTEGER_GROWING_OPS = frozenset({"Mul", "Sum", "AddN", "RealDiv"})


def _contexts_within(graph: MetaGraph, kept: set[str]) -> list[bytes]:
    """The v1 while contexts of the kept loops, each cut to the kept nodes (tf.gradients needs them)."""
    contexts = []
    for parsed in graph.while_contexts:
        if source(parsed.pivot_name)[0] in kept:
            context = type(parsed)()
            context.CopyFrom(parsed)  # the graph's own stays whole for the next LSTM
            _cut_context(context, kept)
            contexts.append(context.SerializeToString())
    return contexts


def _cut_context(context: Any, kept: set[str]) -> None:
    """A WhileContextDef holding only the kept nodes' names (import_meta_graph looks every name up)."""

    def keep(name: str) -> bool:
        return source(name)[0] in kept

    for names in (context.loop_exit_names, context.loop_enter_names, context.values_def.values):
        wanted = [name for name in names if keep(name)]
        del names[:]
        names.extend(wanted)
    external = context.values_def.external_values
    for key in list(external):
        if not (keep(key) and keep(external[key])):
            del external[key]
    for nested in context.nested_contexts:
        if nested.HasField("while_ctxt"):
            _cut_context(nested.while_ctxt, kept)


# ----------------------------------------------------------------------------------------------------------
# Running it
# ----------------------------------------------------------------------------------------------------------


def graph_runner(
    graph: MetaGraph,
    prefix: Path,
    config: LSTMConfig,
    cells: Mapping[tuple[int, int], tuple[str, dict[str, str]]],
    checkpoint: Mapping[str, Sequence[int]],
) -> GraphRunner:
    """The runner of an LSTM's cells in the file's own graph; GraphNotRunnableError (why) where it cannot run."""
    try:
        plan = _plan(graph, config, cells)
        _cut(graph, plan, config, checkpoint)
    except (IndexError, KeyError, ValueError, TypeError, AttributeError) as error:
        # A hostile graph's protos hold anything: what they break here is a graph this tool does not run.
        raise GraphNotRunnableError(f"its protobuf is malformed where the LSTM runs ({error_summary(error)})") from None
    return GraphRunner(prefix, plan, config)


class GraphRunner:
    """``FoundLSTM.run_source`` for a TF1 checkpoint with its ``.meta`` graph: the graph's own dynamic_rnn loop(s),
    cut out of the file's graph and run by TensorFlow with the checkpoint's values (see the module's doc). It
    computes in the graph's own dtype, whatever ``options.dtype`` asks: that is the file's function."""

    def __init__(self, prefix: Path, plan: _Plan, config: LSTMConfig) -> None:
        self.prefix, self.plan, self.config = prefix, plan, config
        self._built: dict[bool, _Built] = {}

    @property
    def batch_first(self) -> bool:
        return self.plan.batch_major

    @property
    def steps_batch(self) -> tuple[int | None, int | None]:
        """The steps and batch the graph fixes for its input (None where free): a proof runs at them."""
        shape = self.plan.x_shape or (None, None, None)
        return (shape[1], shape[0]) if self.plan.batch_major else (shape[0], shape[1])

    @property
    def takes_lengths(self) -> bool:
        """The graph's dynamic_rnn takes a sequence_length (fed the lengths given, else every sample's T)."""
        return self.plan.lengths is not None

    def __call__(self, inputs: RunInputs, options: RunOptions) -> RunResult:
        if options.device != "cpu":
            raise UnsupportedFeatureError("TensorFlow", f"device {options.device}", "run it on the CPU")
        prepared = inputs.prepare(self.config)
        pairs = zip(self.steps_batch, prepared.x.shape[:2], strict=True)
        wanted = [(size, given) for size, given in pairs if size is not None]
        if any(size != given for size, given in wanted):
            raise UnsupportedFeatureError(
                "the checkpoint's graph",
                f"{prepared.steps} steps and batch {prepared.x.shape[1]}",
                f"its placeholder fixes steps and batch to {self.steps_batch}; run it at those (--steps, --batch)",
            )
        if prepared.lengths_given and self.plan.lengths is None:
            raise UnsupportedFeatureError(
                "the checkpoint's graph", "per-sample lengths", "its dynamic_rnn takes no sequence_length"
            )
        built = self._build(prepared.wants_gradients)
        feed = self._feed(built, prepared)
        import tensorflow as tf

        run_options = tf.compat.v1.RunOptions(timeout_in_ms=RUN_TIMEOUT_MS)
        try:
            values = built.session.run(built.fetches, feed, options=run_options)
        except tf.errors.OpError as error:
            raise InputFileError(f"{self.prefix}.meta: its graph failed to run ({_tf_message(error)})") from None
        return self._result(built, values, prepared)

    def _feed(self, built: _Built, prepared: Any) -> dict[Any, Any]:
        plan, config = self.plan, self.config
        x = prepared.x.swapaxes(0, 1) if plan.batch_major else prepared.x
        feed = {built.tensors[plan.x]: x}
        for k in range(config.num_layers * config.num_directions):
            feed[built.tensors[plan.initial[2 * k]]] = prepared.c0[k]
            feed[built.tensors[plan.initial[2 * k + 1]]] = prepared.h0[k]
        if plan.lengths is not None:
            feed[built.tensors[plan.lengths]] = prepared.seq_lens
        if built.cotangents:
            cotangents = [*self._split_directions(prepared.dy), *self._states(prepared.dc_n, prepared.dh_n)]
            feed.update(zip(built.cotangents, cotangents, strict=True))
        return {tensor: np.asarray(value, dtype=tensor.dtype.as_numpy_dtype) for tensor, value in feed.items()}

    def _split_directions(self, dy: Any) -> list[Any]:
        """A time-major [T, B, D*Hout] array per direction, in the layout the graph's outputs have."""
        width = self.config.output_size
        parts = [dy[..., d * width : (d + 1) * width] for d in range(self.config.num_directions)]
        return [part.swapaxes(0, 1) if self.plan.batch_major else part for part in parts]

    def _states(self, c: Any, h: Any) -> list[Any]:
        return [state for k in range(len(c)) for state in (c[k], h[k])]

    def _result(self, built: _Built, values: list[Any], prepared: Any) -> RunResult:
        config = self.config
        count = config.num_directions
        outputs = [np.asarray(v, dtype=np.float64) for v in values[:count]]
        if self.plan.batch_major:
            outputs = [output.swapaxes(0, 1) for output in outputs]
        states = [np.asarray(v, dtype=np.float64) for v in values[count : count + len(self.plan.final)]]
        self._check_shapes(outputs, states, prepared)
        result = RunResult(
            y=np.ascontiguousarray(np.concatenate(outputs, axis=-1)),
            h_n=np.stack(states[1::2]),
            c_n=np.stack(states[0::2]),
            math_mode=built.dtype,
            gradients=self._gradients(values[count + len(self.plan.final) :]) if built.cotangents else None,
        )
        return batch_major(result) if prepared.batch_first else result

    def _check_shapes(self, outputs: list[Any], states: list[Any], prepared: Any) -> None:
        """The graph's outputs shaped as the LSTM read from the checkpoint computes them, or InputFileError (the
        loop found is not the one the variables were read for)."""
        config, steps, batch = self.config, prepared.steps, prepared.x.shape[1]
        got = [tuple(output.shape) for output in outputs] + [tuple(state.shape) for state in states]
        should: list[tuple[int, ...]] = [(steps, batch, config.output_size)] * len(outputs)
        should += [(batch, config.hidden_size), (batch, config.output_size)] * (len(states) // 2)
        if got != should:
            raise InputFileError(
                f"{self.prefix}.meta: the graph's LSTM outputs and states are shaped {got}, where the cells read "
                f"from the checkpoint compute {should}; its loop is not dynamic_rnn's over those cells"
            )

    def _gradients(self, values: list[Any]) -> Gradients:
        config, plan = self.config, self.plan
        found = [np.asarray(v, dtype=np.float64) for v in values]
        x = found[0].swapaxes(0, 1) if plan.batch_major else found[0]
        states = found[1 : 1 + len(plan.initial)]
        by_variable = dict(zip(plan.variable_ops, found[1 + len(plan.initial) :], strict=True))
        native: dict[str, Any] = {}
        layers = []
        for layer in range(config.num_layers):
            per_direction = []
            for direction in range(config.num_directions):
                keys = plan.variables[(layer, direction)]
                grads = {var: by_variable[key] for var, key in keys.items()}
                native.update({key: by_variable[key] for key in keys.values()})
                per_direction.append(gradients_from_tf_cell(grads, config.layer_input_size(layer)))
            layers.append(per_direction)
        return Gradients(
            x=np.ascontiguousarray(x),
            h0=np.stack(states[1::2]),
            c0=np.stack(states[0::2]),
            weights=LSTMWeights(config, layers),
            native=native,
        )

    def _build(self, gradients: bool) -> _Built:
        if gradients not in self._built:
            self._built[gradients] = _build(self.prefix, self.plan, gradients)
        return self._built[gradients]


@dataclass
class _Built:
    session: Any
    tensors: dict[str, Any]
    fetches: list[Any]
    cotangents: list[Any]
    dtype: str


def _build(prefix: Path, plan: _Plan, gradients: bool) -> _Built:
    """The cut-out graph imported into a graph of its own (with its v1 while contexts, which tf.gradients needs),
    the checkpoint's values assigned to its variables, the fetches and, with ``gradients``, tf.gradients."""
    import tensorflow as tf
    from tensorflow.core.protobuf import meta_graph_pb2
    from tensorflow.python.ops import control_flow_util

    meta = meta_graph_pb2.MetaGraphDef()
    meta.graph_def.CopyFrom(plan.graph_def)
    if plan.contexts:
        meta.collection_def["while_context"].bytes_list.value.extend(plan.contexts)
    v2 = control_flow_util.ENABLE_CONTROL_FLOW_V2
    graph = tf.Graph()
    try:
        # A v1 loop's gradient needs v1 TensorArrays, which TF builds only with control flow v2 off.
        control_flow_util.ENABLE_CONTROL_FLOW_V2 = not plan.contexts
        with graph.as_default(), tf.device("/CPU:0"):
            tf.compat.v1.train.import_meta_graph(meta, clear_devices=True)
            tensors = {name: graph.get_tensor_by_name(name) for name in _names(plan)}
            fetches = [tensors[name] for name in [*plan.outputs, *plan.final]]
            assign = _assignments(tf, graph, prefix, plan)
            cotangents: list[Any] = []
            if gradients:
                cotangents = [
                    tf.compat.v1.placeholder(t.dtype, name=f"{_FEED_SCOPE}/d{k}") for k, t in enumerate(fetches)
                ]
                wrt = [tensors[plan.x], *(tensors[t] for t in plan.initial)]
                wrt += [graph.get_tensor_by_name(f"{name}:0") for name in plan.variable_ops]
                zero = tf.UnconnectedGradients.ZERO
                found = tf.gradients(fetches, wrt, grad_ys=cotangents, unconnected_gradients=zero)
                fetches = [*fetches, *found]
        session = tf.compat.v1.Session(graph=graph, config=_session_config(tf))
        weakref.finalize(graph, session.close)
        session.run(assign, options=tf.compat.v1.RunOptions(timeout_in_ms=RUN_TIMEOUT_MS))
    except (ValueError, LookupError, TypeError, AttributeError, AssertionError, tf.errors.OpError) as error:
        # (LookupError: tf.gradients' "no gradient defined" for an op of the file's)
        raise InputFileError(f"{prefix}.meta: its LSTM subgraph cannot be imported ({_tf_message(error)})") from None
    finally:
        control_flow_util.ENABLE_CONTROL_FLOW_V2 = v2
    return _Built(session, tensors, fetches, cotangents, tensors[plan.outputs[0]].dtype.name)


def _session_config(tf: Any) -> Any:
    """No graph optimization: Grappler and the classic optimizer fold constants before the run's timeout
    applies, and a hostile constant subgraph would be computed there."""
    config = tf.compat.v1.ConfigProto()
    config.graph_options.rewrite_options.disable_meta_optimizer = True
    config.graph_options.optimizer_options.opt_level = tf.compat.v1.OptimizerOptions.L0
    config.graph_options.optimizer_options.do_constant_folding = False
    return config


def _tf_message(error: BaseException) -> str:
    """TensorFlow's own words for a failure: the first line of its message after "Graph execution error:"."""
    message = str(getattr(error, "message", "") or error)
    for line in message.splitlines():
        line = line.strip()
        if line and line != "Graph execution error:" and not line.startswith(("Detected at node", "[[")):
            return error_summary(RuntimeError(line))
    return error_summary(error)


def _names(plan: _Plan) -> list[str]:
    return [plan.x, *plan.initial, *([plan.lengths] if plan.lengths else []), *plan.outputs, *plan.final]


def _assignments(tf: Any, graph: Any, prefix: Path, plan: _Plan) -> list[Any]:
    """Ops of this module's own (never the file's Saver ops) assigning the checkpoint's values to the graph's
    variables."""
    reader = tf.train.load_checkpoint(str(prefix))
    ops = []
    for name, op in plan.variable_ops.items():
        variable = graph.get_tensor_by_name(f"{name}:0")
        value = reader.get_tensor(name)
        if op == "VarHandleOp":
            ops.append(tf.raw_ops.AssignVariableOp(resource=variable, value=value))
        else:
            ops.append(tf.raw_ops.Assign(ref=variable, value=value))
    return ops
