"""TensorFlow checkpoints ("tf-checkpoint") of the tf.compat.v1 LSTM cells, run natively by "tf-cell".

A checkpoint is a prefix (``model.ckpt``) naming the files ``model.ckpt.index`` and
``model.ckpt.data-00000-of-00001`` (more ``data-*-of-N`` shards for a sharded save); ``Saver.save`` and
``Checkpoint.save`` also keep a ``checkpoint`` state file in the directory. Reading accepts the prefix, one of its
files, a prefix whose Saver added the step (``model.ckpt`` for ``model.ckpt-2.index``: the latest step), the
directory or its state file (the checkpoint the state file names; ``resolve_prefix``). ``write`` writes the two
prefix files and no state file.

Reading (``tf.train.load_checkpoint``) finds every LSTM:

- in ``tf.compat.v1.train.Saver`` checkpoints by the variable names ``dynamic_rnn``/``bidirectional_dynamic_rnn``
  give in any scope: ``SCOPE/lstm_cell/kernel`` (``basic_lstm_cell`` for BasicLSTMCell), stacked
  ``SCOPE/multi_rnn_cell/cell_K/lstm_cell/...``, bidirectional ``SCOPE/fw/lstm_cell/...`` and ``SCOPE/bw/...``,
  a stack of bidirectional layers ``SCOPE/cell_K/bidirectional_rnn/fw/lstm_cell/...`` (tf.contrib's
  ``stack_bidirectional_dynamic_rnn``);
- in object-based checkpoints (``tf.train.Checkpoint``, tf_keras' ``save_weights`` in TF format) through the
  checkpoint's own object graph (``_CHECKPOINTABLE_OBJECT_GRAPH``): a node whose ``kernel`` child is a variable
  named ``.../lstm_cell/kernel`` (``basic_lstm_cell``) is a legacy cell, with ``bias`` beside it (placed by its
  object path: ``PATH``, ``PATH/cell-K`` for a MultiRNNCell), or with ``recurrent_kernel`` beside it a Keras
  LSTM layer's cell (tf_keras or Keras 3; ``forward_layer``/``backward_layer`` of a Bidirectional), read in
  Keras' layout, one FoundLSTM per Keras layer, named by the layer's name. Nothing is recognized by its shapes:
  a Dense layer's kernel and bias are shaped like a cell's often enough, and a checkpoint holding no cell so
  named is refused, naming the kernels it holds.

Checkpoints store neither ``forget_bias`` nor LSTMCell's ``cell_clip``, ``proj_clip`` and ``activation``. Beside
a Saver checkpoint, the ``.meta`` graph (MetaGraphDef) that ``Saver.save`` writes shows them, read from the
protobuf (``tf_meta_graph.read_meta_graph``); and where the graph holds the dynamic_rnn loop(s) computing the
LSTM, ``run_source`` runs them, cut out of the graph, with the checkpoint's values (``tf_meta_graph.GraphRunner``),
and ``batch_first`` says the graph's own input layout. Without a graph, forget_bias=1.0 (TF's default), no
clipping and tanh are assumed and said in ``FoundLSTM.assumptions``; options forget_bias, cell_clip and proj_clip
override either (and the graph then does not run: it computes without them). A graph that cannot run (not
dynamic_rnn's loop, an op outside ``tf_meta_graph.RUNNABLE_OPS``) is said as an assumption: the proof runs the
project's reading. Keras layers in checkpoints assume Keras' default activations.

Writing names the variables as ``dynamic_rnn`` names an ``LSTMCell`` under its default scope
(``adapters.tf_cell.native_prefix``); options["scope"] picks another scope, options["cell"] = "basic"
BasicLSTMCell's names, options["dtype"] ("float32"/"float64"; default the weights' own dtype) the stored dtype,
options["forget_bias"] (default 1.0) the value taken off the forget bias. It saves with
``tf.compat.v1.train.Saver`` from a graph holding those variables, so ``Saver.restore`` puts them into the cells.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    error_summary,
    guards,
    refuse_options,
)
from lstm_conformance.adapters.formats.tf_meta_graph import (
    ACTIVATION_OPS,
    CELL_SCOPE,
    GraphNotRunnableError,
    MetaGraph,
    graph_runner,
    read_meta_graph,
)
from lstm_conformance.adapters.frameworks import import_tensorflow, tensorflow_unavailable_reason
from lstm_conformance.adapters.layouts.keras import (
    KERAS3,
    TF_KERAS,
    canonical_from_keras_weights,
    config_from_keras_arguments,
)
from lstm_conformance.adapters.layouts.tf import (
    CELL_SCOPES,
    PEEPHOLE_VARIABLES,
    PROJECTION_VARIABLE,
    choose_cell,
    default_scope,
    from_tf_cell,
    to_tf_cell,
    to_tf_variables,
)
from lstm_conformance.reference.errors import (
    InputFileError,
    LayoutError,
    NotImplementedOptionError,
    UnsupportedFeatureError,
)
from lstm_conformance.reference.layout import TANH, Activation, FloatArray, LSTMConfig, LSTMWeights

READ_OPTIONS = ("forget_bias", "cell_clip", "proj_clip")
WRITE_OPTIONS = ("forget_bias", "scope", "cell", "dtype")
FORGET_BIAS_NOTE = (
    "assumed forget_bias={value} (TF's default; checkpoints do not store it); pass --forget-bias to override"
)
OBJECT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
OBJECT_GRAPH_KEY = "_CHECKPOINTABLE_OBJECT_GRAPH"
CELL_VARIABLES = ("kernel", "bias", *PEEPHOLE_VARIABLES.values(), PROJECTION_VARIABLE)

# Where a cell sits, by the path of its variables (without the variable name).
_STACKED_BIDIRECTIONAL = re.compile(r"^(?:(?P<name>.+)/)?cell_(?P<layer>\d+)/bidirectional_rnn/(?P<side>fw|bw)$")
_BIDIRECTIONAL = re.compile(r"^(?:(?P<name>.+)/)?(?P<side>fw|bw)$")
_MULTI_RNN_CELL = re.compile(r"^(?:(?P<name>.+)/)?multi_rnn_cell/cell_(?P<layer>\d+)$")
_OBJECT_MULTI_RNN_CELL = re.compile(r"^(?P<name>.+)/cell-(?P<layer>\d+)$")


@dataclass
class _Cell:
    """One cell's variables as found: full key per variable name, where it sits, which class."""

    path: str
    keys: dict[str, str]
    kind: str  # "basic" or "lstm"
    object_based: bool = False
    lstm: str = ""
    layer: int = 0
    direction: int = 0
    bidirectional: bool = False


@dataclass
class _Group:
    name: str
    cells: list[_Cell] = field(default_factory=list)


def _find_saver_cells(names: Mapping[str, str]) -> tuple[list[_Cell], list[_KerasCell]]:
    """Every cell of a name-based (``Saver``) checkpoint: ``.../lstm_cell/kernel`` or ``.../basic_lstm_cell/kernel``
    with a ``bias`` beside it; with a ``recurrent_kernel`` beside it instead a Keras LSTM layer's cell (a Keras
    layer in a TF1 graph: ``lstm/lstm_cell/...``, ``bidirectional/forward_lstm/lstm_cell/...``)."""
    cells: list[_Cell] = []
    keras: list[_KerasCell] = []
    for name in names:
        if not (name == "kernel" or name.endswith("/kernel")) or name.endswith(PROJECTION_VARIABLE):
            continue
        path = name[: -len("kernel")].rstrip("/")
        leaf = path.rsplit("/", 1)[-1]
        match = CELL_SCOPE.match(leaf)
        if match is None:
            continue
        prefix = f"{path}/" if path else ""
        if prefix + "recurrent_kernel" in names:
            wanted = {
                var: names[prefix + var] for var in ("kernel", "recurrent_kernel", "bias") if prefix + var in names
            }
            layer, _, side = path.rpartition("/")[0].rpartition("/")
            if side.startswith(("forward_", "backward_")) and layer:
                keras.append(_KerasCell(path, layer, int(side.startswith("backward_")), wanted, name))
            else:
                keras.append(_KerasCell(path, path.rpartition("/")[0], 0, wanted, name))
            continue
        keys = {var: names[prefix + var] for var in CELL_VARIABLES if prefix + var in names}
        if "bias" in keys:  # lstm_cell_1 too: a second cell in one scope, or one named so
            cells.append(_Cell(path=path, keys=keys, kind="basic" if match.group(1) else "lstm"))
    return cells, keras


@dataclass
class _ObjectNode:
    """One node of an object-based checkpoint's object graph: its first path from the root (``/``-joined edge
    names), its children by edge name, and for a variable its checkpoint key and the variable's own name."""

    path: str
    children: dict[str, int]
    key: str | None = None
    full_name: str = ""


@dataclass
class _KerasCell:
    """A Keras LSTM layer's cell found in the object graph: kernel, recurrent_kernel[, bias] checkpoint keys."""

    path: str
    layer_path: str
    direction: int
    keys: dict[str, str]
    full_name: str


def _object_graph(reader: Any) -> list[_ObjectNode]:
    """The checkpoint's own TrackableObjectGraph (the proto TF stores under ``_CHECKPOINTABLE_OBJECT_GRAPH``),
    each node with its first path from the root, breadth first in the graph's own child order."""
    from tensorflow.core.protobuf import trackable_object_graph_pb2

    graph = trackable_object_graph_pb2.TrackableObjectGraph()
    graph.ParseFromString(reader.get_tensor(OBJECT_GRAPH_KEY))
    paths: dict[int, str] = {0: ""}
    queue = [0]
    while queue:
        node = queue.pop(0)
        for child in graph.nodes[node].children:
            if child.node_id not in paths:
                paths[child.node_id] = f"{paths[node]}/{child.local_name}".lstrip("/")
                queue.append(child.node_id)
    nodes = []
    for index, proto in enumerate(graph.nodes):
        value = next((a for a in proto.attributes if a.name == "VARIABLE_VALUE"), None)
        nodes.append(
            _ObjectNode(
                path=paths.get(index, f"<node {index}>"),
                children={child.local_name: child.node_id for child in proto.children},
                key=value.checkpoint_key if value is not None else None,
                full_name=value.full_name if value is not None else "",
            )
        )
    return nodes


def _find_object_cells(nodes: list[_ObjectNode]) -> tuple[list[_Cell], list[_KerasCell], list[str]]:
    """Legacy cells and Keras LSTM layers' cells, identified by the object graph: a node whose ``kernel`` child is
    a variable named ``.../lstm_cell/kernel`` (``basic_lstm_cell``, ``lstm_cell_1``: the cell's own variable
    scope), with a ``bias`` child (legacy tf.compat.v1 cells) or a ``recurrent_kernel`` child (Keras' LSTMCell).
    Never by shapes: a Dense layer's kernel and bias are [I, 4H]-shaped often enough. Also returns the other
    kernels seen, for the refusal when no LSTM is found."""
    legacy: list[_Cell] = []
    keras: list[_KerasCell] = []
    others: list[str] = []
    for node in nodes:
        kernel = nodes[node.children["kernel"]] if "kernel" in node.children else None
        if kernel is None or kernel.key is None:
            continue
        variables = {name: nodes[index] for name, index in node.children.items() if nodes[index].key is not None}
        scope = kernel.full_name.rsplit("/", 2)[-2] if kernel.full_name.count("/") >= 1 else ""
        match = CELL_SCOPE.match(scope)
        if match is None:
            others.append(kernel.full_name or node.path)
            continue
        keys = {name: str(variable.key) for name, variable in variables.items()}
        if "recurrent_kernel" in variables:
            wanted: dict[str, str] = {
                name: keys[name] for name in ("kernel", "recurrent_kernel", "bias") if name in keys
            }
            keras.append(_keras_cell(node.path, wanted, kernel.full_name))
        elif "bias" in variables:
            found = {name: keys[name] for name in CELL_VARIABLES if name in keys}
            kind = "basic" if match.group(1) else "lstm"
            legacy.append(_Cell(path=node.path, keys=found, kind=kind, object_based=True))
        else:
            others.append(kernel.full_name or node.path)
    return legacy, keras, others


def _keras_cell(path: str, keys: dict[str, str], full_name: str) -> _KerasCell:
    for side, direction in (("forward_layer", 0), ("backward_layer", 1)):
        suffix = f"/{side}/cell"
        if path.endswith(suffix):
            return _KerasCell(path, path[: -len(suffix)], direction, keys, full_name)
    return _KerasCell(path, path.rsplit("/", 1)[0] if "/" in path else "", 0, keys, full_name)


def _place(cell: _Cell) -> None:
    """Set the cell's LSTM name, layer and direction from its path."""
    where = cell.path if cell.object_based else cell.path.rsplit("/", 1)[0] if "/" in cell.path else ""
    for pattern, bidirectional in (
        (_STACKED_BIDIRECTIONAL, True),
        (_BIDIRECTIONAL, True),
        (_MULTI_RNN_CELL, False),
        (_OBJECT_MULTI_RNN_CELL, False),
    ):
        match = pattern.match(where)
        if match:
            groups = match.groupdict()
            cell.lstm = groups.get("name") or ""
            cell.layer = int(groups.get("layer") or 0)
            cell.bidirectional = bidirectional
            cell.direction = 1 if groups.get("side") == "bw" else 0
            break
    else:
        cell.lstm = where
    if cell.lstm.split("/")[-1] in ("fw", "bw"):
        raise UnsupportedFeatureError(
            "lstm-conformance",
            f"the LSTM at {cell.lstm!r} (bidirectional_dynamic_rnn over a MultiRNNCell)",
            "there each direction is a stack of its own, while a bidirectional LSTM's layer K reads both "
            "directions of layer K-1; no canonical LSTM computes it",
        )


def _group(cells: list[_Cell]) -> list[_Group]:
    """The cells by LSTM. Two cells at one place of one LSTM (``rnn/lstm_cell`` and ``rnn/lstm_cell_1``: two
    dynamic_rnn calls in one scope, or cells called by hand) are two LSTMs, each named by its cell's path."""
    groups: dict[str, _Group] = {}
    for cell in cells:
        _place(cell)
        groups.setdefault(cell.lstm, _Group(cell.lstm)).cells.append(cell)
    found: list[_Group] = []
    for group in groups.values():
        places = [(cell.layer, cell.direction) for cell in group.cells]
        if len(set(places)) == len(places):
            found.append(group)
            continue
        for cell in group.cells:
            if cell.layer or cell.bidirectional:
                raise InputFileError(
                    f"two cells at layer {cell.layer}, direction {cell.direction} of the LSTM {group.name!r} "
                    f"({', '.join(sorted(c.path for c in group.cells))}): which belongs to which LSTM is not stored"
                )
            cell.lstm = cell.path
            found.append(_Group(cell.path, [cell]))
    return found


class TFCheckpointFormat(FileFormat):
    name = "tf-checkpoint"
    framework = "TensorFlow"
    implementation = "tf-cell"

    def unavailable_reason(self) -> str | None:
        return tensorflow_unavailable_reason()

    # ------------------------------------------------------------------------------------------------------
    # Reading
    # ------------------------------------------------------------------------------------------------------

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        given = refuse_options(options, READ_OPTIONS, "reading a tf-checkpoint")
        prefix, notes = resolve_prefix(path)
        reader = self._open(prefix)
        shapes = reader.get_variable_to_shape_map()
        guards.check_checkpoint_sizes(prefix, shapes, reader.get_variable_to_dtype_map())
        if OBJECT_GRAPH_KEY in shapes:
            cells, keras_cells, seen = _find_object_cells(_object_graph(reader))
            graph = None
        else:
            (cells, keras_cells), seen = _find_saver_cells({key: key for key in shapes}), []
            graph = read_meta_graph(prefix)
        if not cells and not keras_cells:
            kernels = f"; kernels found: {', '.join(seen[:6])}" if seen else ""
            raise InputFileError(
                f"{path}: no LSTM cell in this TF checkpoint (looked for .../lstm_cell/kernel, "
                ".../basic_lstm_cell/kernel, or in an object-based checkpoint's object graph a cell whose kernel is "
                f"named so){kernels}; it holds {sorted(key for key in shapes if key != OBJECT_GRAPH_KEY)[:8]}"
            )
        lstms = [self._lstm(prefix, reader, shapes, group, given, graph, notes) for group in _group(cells)]
        lstms += [_keras_lstm(prefix, reader, cells_of_layer, notes) for cells_of_layer in _keras_layers(keras_cells)]
        used = {key for cell in cells for key in cell.keys.values()}
        used |= {key for keras_cell in keras_cells for key in keras_cell.keys.values()}
        others = sorted(key for key in shapes if key not in used and key != OBJECT_GRAPH_KEY)
        return ModelContents(lstms=lstms, other_tensors=others)

    @staticmethod
    def _open(path: Path) -> Any:
        guards.check_checkpoint_files(path)
        tf = import_tensorflow()
        try:
            return tf.train.load_checkpoint(str(path))
        except (tf.errors.OpError, ValueError) as error:
            raise InputFileError(f"{path}: unreadable TF checkpoint ({error_summary(error)})") from None

    def _lstm(
        self,
        path: Path,
        reader: Any,
        shapes: Mapping[str, Any],
        group: _Group,
        given: Mapping[str, Any],
        graph: MetaGraph | None,
        shared_notes: list[str],
    ) -> FoundLSTM:
        where = f"{path}: LSTM {group.name or '(no scope)'}"
        arrays = {}
        for cell in group.cells:
            for var, key in cell.keys.items():
                try:
                    arrays[(cell.layer, cell.direction, var)] = np.asarray(reader.get_tensor(key))
                except Exception as error:  # TF raises several types for a damaged data file
                    raise InputFileError(f"{where}: cannot read {key!r} ({error_summary(error)})") from None
        kinds = {cell.kind for cell in group.cells}
        kind = kinds.pop() if len(kinds) == 1 else "lstm"
        facts, notes, assumptions = _what_the_cell_computes(path, group, given, graph, kind)
        config = self._config(where, group, arrays, facts)
        forget_bias = float(facts["forget_bias"])
        layers = [
            [
                from_tf_cell(
                    {
                        var: arrays[(layer, direction, var)]
                        for var in CELL_VARIABLES
                        if (layer, direction, var) in arrays
                    },
                    config.layer_input_size(layer),
                    forget_bias,
                )
                for direction in range(config.num_directions)
            ]
            for layer in range(config.num_layers)
        ]
        try:
            weights = LSTMWeights(config, layers)
        except LayoutError as error:
            raise InputFileError(f"{where}: {error}") from None
        if any(cell.object_based for cell in group.cells):
            notes.append(
                "object-based checkpoint: the cell found through its object graph, its class from its variables' "
                f"own names ({'BasicLSTMCell' if kind == 'basic' else 'LSTMCell'}: kernel [I+Hout, 4H] applied to "
                "[x, h], gates i, j, f, o)"
            )
        by_place = {(cell.layer, cell.direction): cell for cell in group.cells}
        found = FoundLSTM(
            name=group.name,
            weights=weights,
            implementation="tf-cell",
            implementation_options={"forget_bias": forget_bias, "cell": kind},
            notes=[*shared_notes, *notes],
            batch_first=None,
            assumptions=assumptions,
            # The checkpoint's own keys, in to_tf_variables' order (a cell scope may be lstm_cell_1, a scope
            # anything): ``run`` names gradients by them.
            parameter_names=[
                by_place[(layer, direction)].keys[name]
                for layer, per_direction in enumerate(weights.layers)
                for direction, layer_weights in enumerate(per_direction)
                for name in to_tf_cell(layer_weights, forget_bias)
            ],
        )
        if graph is not None and not assumptions:
            _run_the_graph(found, graph, path, group, shapes, given)
        return found

    @staticmethod
    def _config(
        where: str, group: _Group, arrays: Mapping[tuple[int, int, str], FloatArray], facts: Mapping[str, Any]
    ) -> LSTMConfig:
        layers = sorted({cell.layer for cell in group.cells})
        bidirectional = any(cell.bidirectional for cell in group.cells)
        directions = 2 if bidirectional else 1
        if layers != list(range(len(layers))):
            raise InputFileError(f"{where}: layers {layers} are not 0..{len(layers) - 1}; a layer's cell is missing")
        present = {(cell.layer, cell.direction) for cell in group.cells}
        wanted = {(layer, direction) for layer in layers for direction in range(directions)}
        if present != wanted:
            missing = sorted(wanted - present)
            raise InputFileError(f"{where}: cells missing for (layer, direction) {missing} (direction 1 is bw)")
        variables = {frozenset(v for (lay, d, v) in arrays if (lay, d) == key) for key in wanted}
        if len(variables) != 1:
            raise InputFileError(f"{where}: its cells have different variables ({sorted(map(sorted, variables))})")
        kernel = arrays[(0, 0, "kernel")]
        if kernel.ndim != 2 or kernel.shape[1] % 4:
            raise InputFileError(f"{where}: kernel of shape {kernel.shape} is not [I + Hout, 4H]")
        hidden = kernel.shape[1] // 4
        projection = arrays.get((0, 0, PROJECTION_VARIABLE))
        output = projection.shape[-1] if projection is not None else hidden
        names = next(iter(variables))
        activation = Activation(str(facts["activation"]))
        try:
            return LSTMConfig(
                input_size=int(kernel.shape[0] - output),
                hidden_size=int(hidden),
                num_layers=len(layers),
                bidirectional=bidirectional,
                proj_size=int(output) if projection is not None else 0,
                peepholes=PEEPHOLE_VARIABLES["i"] in names,
                cell_clip=facts["cell_clip"],
                proj_clip=facts["proj_clip"],
                cell_input_activation=activation,
                cell_output_activation=activation,
            )
        except LayoutError as error:
            raise InputFileError(f"{where}: {error}") from None

    # ------------------------------------------------------------------------------------------------------
    # Writing
    # ------------------------------------------------------------------------------------------------------

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        given = refuse_options(options, WRITE_OPTIONS, "writing a tf-checkpoint")
        config = weights.config
        cell = str(given.get("cell", "lstm"))
        if cell not in CELL_SCOPES:
            raise NotImplementedOptionError(f"tf-checkpoint: option cell={cell!r}; it takes 'lstm' or 'basic'")
        choose_cell(config, cell)
        for role in ("cell_input_activation", "cell_output_activation", "gate_activation"):
            expected = TANH if role != "gate_activation" else None
            value = getattr(config, role)
            if (expected is not None and value != expected) or (expected is None and value.name != "sigmoid"):
                raise UnsupportedFeatureError(
                    "tf-checkpoint", f"{role}={value}", "checkpoints hold no activation; readers assume TF's defaults"
                )
        if config.gate_clip is not None or config.input_forget:
            feature = "gate_clip" if config.gate_clip is not None else "input_forget"
            raise UnsupportedFeatureError("TensorFlow LSTMCell", feature)
        forget_bias = float(given.get("forget_bias", 1.0))
        scope = given.get("scope")
        try:
            dtype = np.dtype(given.get("dtype", weights.layers[0][0].W.dtype))
        except TypeError:
            dtype = np.dtype(object)
        if dtype not in (np.float32, np.float64, np.float16):
            raise NotImplementedOptionError(f"tf-checkpoint: dtype {dtype}; it writes float16, float32 or float64")
        arrays = to_tf_variables(weights, forget_bias, cell, scope)
        self._save(path, {name: np.asarray(a, dtype=dtype) for name, a in arrays.items()})
        return self._write_notes(path, config, cell, scope, forget_bias, dtype)

    @staticmethod
    def _save(path: Path, arrays: Mapping[str, FloatArray]) -> None:
        tf = import_tensorflow()
        graph = tf.Graph()
        with graph.as_default():
            variables = {name: tf.compat.v1.Variable(array, name=name) for name, array in arrays.items()}
            saver = tf.compat.v1.train.Saver(var_list=variables, sharded=False)
            with tf.compat.v1.Session(graph=graph) as session:
                session.run(tf.compat.v1.global_variables_initializer())
                saver.save(session, str(path), write_meta_graph=False, write_state=False)

    @staticmethod
    def _write_notes(
        path: Path, config: LSTMConfig, cell: str, scope: str | None, forget_bias: float, dtype: np.dtype[Any]
    ) -> list[str]:
        cell_class = "LSTMCell" if cell == "lstm" else "BasicLSTMCell"
        where = scope if scope is not None else default_scope(config)
        notes = [
            f"wrote {cell_class} variables under scope {where!r} in {dtype.name}; build the cell with "
            f"forget_bias={forget_bias} (taken off the stored forget-gate bias)",
            f"files: {path.name}.index and {path.name}.data-00000-of-00001 (no 'checkpoint' state file: restore "
            "with Saver.restore(session, prefix))",
        ]
        if config.bidirectional and config.num_layers > 1:
            notes.append(
                "layer K runs bidirectional_dynamic_rnn under variable_scope "
                f"'{where}/cell_K' (as tf.contrib's stack_bidirectional_dynamic_rnn)"
            )
        clips = [f"{name}={getattr(config, name)}" for name in ("cell_clip", "proj_clip") if getattr(config, name)]
        if clips:
            notes.append(f"checkpoints do not store {', '.join(clips)}: pass them to LSTMCell when restoring")
        return notes


def _run_the_graph(
    found: FoundLSTM, graph: MetaGraph, prefix: Path, group: _Group, shapes: Mapping[str, Any], given: Mapping[str, Any]
) -> None:
    """Set ``found.run_source`` to the file's own graph (``tf_meta_graph.GraphRunner``) and its batch layout to
    the graph's, or say as an assumption why the graph cannot run. An option that changes what the cells compute
    (forget_bias, a clip) makes the reading differ from the graph: then the graph does not speak for it."""
    changed = sorted(option for option in READ_OPTIONS if option in given)
    if changed:
        found.assumptions.append(
            f"{', '.join(changed)} as given, not as the .meta graph computes: the proof runs this tool's reading"
        )
        return
    cells = {(cell.layer, cell.direction): (cell.path, cell.keys) for cell in group.cells}
    try:
        runner = graph_runner(graph, prefix, found.weights.config, cells, shapes)
    except GraphNotRunnableError as why:
        found.assumptions.append(
            f"the .meta graph cannot be run here ({why}): the proof runs this tool's reading of the checkpoint, "
            "with what the graph shows (forget_bias, clips, activation)"
        )
        return
    found.run_source = runner
    found.batch_first = runner.batch_first
    found.takes_lengths = runner.takes_lengths
    layout = "batch-major [B, T, I] (dynamic_rnn time_major=False)" if runner.batch_first else "time-major [T, B, I]"
    found.notes.append(
        f"the proof runs the graph Saver wrote ({graph.path.name}): its dynamic_rnn loop(s), cut out of the "
        f"graph, with the checkpoint's values; its input is {layout}"
    )


def _what_the_cell_computes(
    path: Path, group: _Group, given: Mapping[str, Any], graph: MetaGraph | None, kind: str
) -> tuple[dict[str, Any], list[str], list[str]]:
    """forget_bias, cell_clip, proj_clip and activation of a group's cells: an option where given, else what the
    .meta graph shows, else TF's defaults said as assumptions. Returns (values, notes, assumptions)."""
    shown = [graph.cells.get(cell.path) for cell in group.cells] if graph is not None else []
    facts = shown[0] if shown and all(f is not None and f.forget_bias is not None for f in shown) else None
    if facts is not None and any(f != facts for f in shown):
        raise InputFileError(
            f"{path}: the cells of LSTM {group.name or '(no scope)'} differ in forget_bias, clips or activation in "
            "the .meta graph; one canonical LSTM has one of each"
        )
    notes: list[str] = []
    assumptions: list[str] = []
    values: dict[str, Any] = {}
    if facts is not None:
        if facts.activation is not None and facts.activation not in ACTIVATION_OPS.values():
            raise InputFileError(
                f"{path}: the cell's activation in the .meta graph is the {facts.activation}, which the canonical "
                f"layout does not hold (it holds {', '.join(sorted(ACTIVATION_OPS.values()))})"
            )
        values = {
            "forget_bias": facts.forget_bias,
            "cell_clip": facts.cell_clip,
            "proj_clip": facts.proj_clip,
            "activation": facts.activation or "tanh",
        }
        read = ", ".join(f"{key}={value}" for key, value in values.items())
        notes.append(f"read from {Path(f'{path}.meta').name} (the graph Saver wrote beside the checkpoint): {read}")
    else:
        values = {"forget_bias": 1.0, "cell_clip": None, "proj_clip": None, "activation": "tanh"}
        why = "no .meta graph beside it" if graph is None else "its cell's ops were not found in the .meta graph"
        assumptions.append(FORGET_BIAS_NOTE.format(value=1.0) + f" ({why})")
        assumptions.append(
            "the cell's activation is not stored in checkpoints: tanh assumed (TF's default)"
            + (
                "; cell_clip and proj_clip neither: no clipping assumed (options cell_clip/proj_clip set them)"
                if kind != "basic"
                else ""
            )
        )
    for option in ("forget_bias", "cell_clip", "proj_clip"):
        if option in given:
            if option == "forget_bias":
                assumptions = [text for text in assumptions if not text.startswith("assumed forget_bias")]
            if facts is not None and getattr(facts, option) != given[option]:
                notes.append(f"{option}={given[option]} as given, where the .meta graph says {getattr(facts, option)}")
            values[option] = float(given[option])
    return values, notes, assumptions


def resolve_prefix(path: Path) -> tuple[Path, list[str]]:
    """The checkpoint prefix ``path`` names: a prefix (``model.ckpt``, ``model.ckpt-2``), one of its files
    (``.index``, ``.meta``, ``.data-*``), a prefix whose Saver added the step (``model.ckpt`` for
    ``model.ckpt-2.index``), a checkpoint directory or its ``checkpoint`` state file (the latest checkpoint it
    names). Returns the prefix and a note saying how it was found; InputFileError when none."""
    text = str(path)
    if Path(f"{text}.index").is_file():
        return path, []
    stripped = re.sub(r"(\.index|\.meta|\.data-\d{5}-of-\d{5})$", "", text)
    if stripped != text and Path(f"{stripped}.index").is_file():
        return Path(stripped), [f"read the checkpoint prefix {stripped} (given one of its files)"]
    if path.is_dir() or (path.is_file() and path.name == "checkpoint"):
        return _latest(path if path.is_dir() else path.parent)
    steps = sorted(
        (int(match.group(1)), candidate)
        for candidate in path.parent.glob(f"{glob.escape(path.name)}-*.index")
        if (match := re.fullmatch(rf"{re.escape(path.name)}-(\d+)\.index", candidate.name))
    )
    if steps:
        index = steps[-1][1]
        prefix = Path(str(index)[: -len(".index")])
        return prefix, [
            f"read {prefix.name}, the latest step of {path.name} (steps {', '.join(str(s) for s, _ in steps)})"
        ]
    raise InputFileError(
        f"{path}: not a TF checkpoint prefix: {path}.index does not exist; pass the prefix, as model.ckpt for "
        "model.ckpt.index (or the checkpoint directory)"
    )


def _latest(directory: Path) -> tuple[Path, list[str]]:
    """The checkpoint a directory's ``checkpoint`` state file names, else its only prefix."""
    state = directory / "checkpoint"
    if state.is_file():
        tf = import_tensorflow()
        try:
            named = tf.train.get_checkpoint_state(str(directory))
        except Exception as error:  # TF logs a damaged state file's ParseError and returns None; or raises
            raise InputFileError(f"{state}: not a readable checkpoint state file ({error_summary(error)})") from None
        if named is None:
            raise InputFileError(
                f"{state}: not a readable checkpoint state file (TF could not parse it); pass the checkpoint prefix "
                "itself, as DIR/model.ckpt for DIR/model.ckpt.index"
            )
        latest = named.model_checkpoint_path
        prefix = Path(latest) if Path(latest).is_absolute() else directory / latest
        if latest and Path(f"{prefix}.index").is_file():
            return prefix, [f"read {prefix.name}, the latest checkpoint that {state} names"]
        if latest:
            raise InputFileError(f"{state}: names {latest}, which has no .index file; pass an existing prefix")
    prefixes = sorted(str(index)[: -len(".index")] for index in directory.glob("*.index"))
    if len(prefixes) == 1:
        return Path(prefixes[0]), [f"read {Path(prefixes[0]).name}, the one checkpoint in {directory}"]
    if not prefixes:
        raise InputFileError(
            f"{directory}: that is a directory, and it holds no TF checkpoint (no 'checkpoint' state file, no .index "
            "file); pass the prefix, as DIR/model.ckpt for DIR/model.ckpt.index"
        )
    raise InputFileError(
        f"{directory}: a directory without a usable 'checkpoint' state file, holding several checkpoints: "
        f"{', '.join(Path(prefix).name for prefix in prefixes)}; pass one prefix, as DIR/model.ckpt"
    )


# ----------------------------------------------------------------------------------------------------------
# Keras LSTM layers in object-based checkpoints (tf_keras save_weights, tf.train.Checkpoint(model=...))
# ----------------------------------------------------------------------------------------------------------

KERAS_ASSUMPTIONS = (
    "activations not stored (a TF checkpoint holds weights only): Keras' defaults assumed, tanh and sigmoid "
    "gates (a model built with other activations computes another function)",
    "go_backwards and masking not stored: a forward LSTM reading every step assumed",
    "batch layout not stored (Keras' LSTM takes batch-major [B, T, I] unless built time_major)",
)


def _keras_layers(cells: list[_KerasCell]) -> list[list[_KerasCell]]:
    """Keras LSTM cells grouped by layer (a Bidirectional's forward and backward cells together)."""
    layers: dict[str, list[_KerasCell]] = {}
    for cell in cells:
        layers.setdefault(cell.layer_path, []).append(cell)
    return [sorted(group, key=lambda cell: cell.direction) for group in layers.values()]


def _keras_lstm(path: Path, reader: Any, cells: list[_KerasCell], shared_notes: list[str]) -> FoundLSTM:
    first = cells[0]
    parts = first.full_name.split("/")
    bidirectional = [cell.direction for cell in cells] == [0, 1]
    name = "/".join(parts[: -3 if bidirectional else -2]) or first.layer_path
    where = f"{path}: Keras LSTM layer {name!r} (object path {first.layer_path})"
    if len(cells) > 1 and not bidirectional:
        raise InputFileError(f"{where}: {len(cells)} cells under one layer, not a Bidirectional's two")
    flavor = KERAS3 if "_operations" in first.path.split("/") else TF_KERAS
    arrays = []
    for cell in cells:
        for var in ("kernel", "recurrent_kernel", "bias"):
            if var in cell.keys:
                try:
                    arrays.append(np.asarray(reader.get_tensor(cell.keys[var])))
                except Exception as error:  # TF raises several types for a damaged data file
                    raise InputFileError(f"{where}: cannot read {cell.keys[var]!r} ({error_summary(error)})") from None
    kernel, recurrent = arrays[0], arrays[1]
    try:
        arguments = {"units": int(recurrent.shape[0]), "use_bias": "bias" in first.keys}
        config = config_from_keras_arguments(int(kernel.shape[0]), [arguments], bidirectional, flavor)
        weights = canonical_from_keras_weights(config, [arrays])
    except (LayoutError, IndexError) as error:
        raise InputFileError(f"{where}: does not fit Keras' LSTM layout ({error})") from None
    return FoundLSTM(
        name=name,
        weights=weights,
        implementation=flavor.implementation,
        notes=[
            *shared_notes,
            f"a {flavor.framework} LSTM layer found through the checkpoint's object graph at {first.layer_path} "
            f"(its cell's variables {first.full_name.rsplit('/', 1)[0]}/...)",
        ],
        batch_first=None,
        assumptions=list(KERAS_ASSUMPTIONS),
    )
