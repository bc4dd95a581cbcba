"""TensorFlow checkpoints ("tf-checkpoint") of the tf.compat.v1 LSTM cells, run natively by "tf-cell".

A checkpoint is a prefix (``model.ckpt``) naming the files ``model.ckpt.index`` and
``model.ckpt.data-00000-of-00001`` (more ``data-*-of-N`` shards for a sharded save); ``Saver.save`` and
``Checkpoint.save`` also keep a ``checkpoint`` state file in the directory, which only
``tf.train.latest_checkpoint`` needs. ``write`` writes the two prefix files and no state file.

Reading (``tf.train.load_checkpoint``) finds every LSTM cell by its variable names:

- ``tf.compat.v1.train.Saver`` names, from ``dynamic_rnn``/``bidirectional_dynamic_rnn`` in any scope:
  ``SCOPE/lstm_cell/kernel`` (``basic_lstm_cell`` for BasicLSTMCell), stacked
  ``SCOPE/multi_rnn_cell/cell_K/lstm_cell/...``, bidirectional ``SCOPE/fw/lstm_cell/...`` and ``SCOPE/bw/...``,
  a stack of bidirectional layers ``SCOPE/cell_K/bidirectional_rnn/fw/lstm_cell/...`` (tf.contrib's
  ``stack_bidirectional_dynamic_rnn``);
- ``tf.train.Checkpoint`` (object-based) names of a legacy cell, of a ``MultiRNNCell`` and of a tf_keras
  ``RNN(cell)`` layer: ``PATH/kernel/.ATTRIBUTES/VARIABLE_VALUE``, ``PATH/projection.Skernel/...``,
  ``PATH/cell-K/kernel/...``. These record no cell class, so a cell is recognized by its variables (``kernel``
  [I+Hout, 4H] and ``bias`` [4H], no ``recurrent_kernel``), which the notes say.

Checkpoints store neither ``forget_bias`` nor LSTMCell's ``cell_clip``, ``proj_clip`` and ``activation``:
reading assumes forget_bias=1.0 (TF's default; options["forget_bias"] overrides), no clipping
(options["cell_clip"], options["proj_clip"]) and tanh, and says so in each FoundLSTM's notes.

Writing names the variables as ``dynamic_rnn`` names an ``LSTMCell`` under its default scope
(``adapters.tf_cell.native_prefix``); options["scope"] picks another scope, options["cell"] = "basic"
BasicLSTMCell's names, options["dtype"] ("float32"/"float64"; default the weights' own dtype) the stored dtype,
options["forget_bias"] (default 1.0) the value taken off the forget bias. It saves with
``tf.compat.v1.train.Saver`` from a graph holding those variables, so ``Saver.restore`` puts them into the cells.
"""

from __future__ import annotations

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
from lstm_conformance.adapters.tf_cell import (
    CELL_SCOPES,
    PEEPHOLE_VARIABLES,
    PROJECTION_VARIABLE,
    choose_cell,
    default_scope,
    from_tf_cell,
    import_tensorflow,
    tensorflow_unavailable_reason,
    to_tf_variables,
)
from lstm_conformance.reference.errors import (
    InputFileError,
    LayoutError,
    NotImplementedOptionError,
    UnsupportedFeatureError,
)
from lstm_conformance.reference.layout import TANH, FloatArray, LSTMConfig, LSTMWeights

READ_OPTIONS = ("forget_bias", "cell_clip", "proj_clip")
WRITE_OPTIONS = ("forget_bias", "scope", "cell", "dtype")
FORGET_BIAS_NOTE = (
    "assumed forget_bias={value} (TF's default; checkpoints do not store it); pass --forget-bias to override"
)
OBJECT_SUFFIX = "/.ATTRIBUTES/VARIABLE_VALUE"
CELL_VARIABLES = ("kernel", "bias", *PEEPHOLE_VARIABLES.values(), PROJECTION_VARIABLE)
_SCOPE_KIND = {scope: kind for kind, scope in CELL_SCOPES.items()}

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
    kind: str  # "basic", "lstm" or "unknown" (object-based)
    lstm: str = ""
    layer: int = 0
    direction: int = 0
    bidirectional: bool = False


@dataclass
class _Group:
    name: str
    cells: list[_Cell] = field(default_factory=list)


def _object_variable(key: str) -> str | None:
    """The attribute path of an object-based checkpoint value (``cell/projection/kernel``), None for others."""
    if not key.endswith(OBJECT_SUFFIX) or "/.OPTIMIZER_SLOT/" in key:
        return None
    parts = key[: -len(OBJECT_SUFFIX)].split("/")
    # tf.train.Checkpoint escapes "/" inside an attribute name as ".S" and "." as "..".
    return "/".join(part.replace(".S", "/").replace("..", ".") for part in parts)


def _find_cells(names: Mapping[str, str], shapes: Mapping[str, list[int]]) -> list[_Cell]:
    """Every cell: a ``kernel`` with a ``bias`` beside it, named as a legacy cell or shaped as one."""
    cells = []
    for name, key in names.items():
        if not (name == "kernel" or name.endswith("/kernel")) or name.endswith(PROJECTION_VARIABLE):
            continue
        path = name[: -len("kernel")].rstrip("/")
        leaf = path.rsplit("/", 1)[-1]
        object_based = key.endswith(OBJECT_SUFFIX)
        if not object_based and leaf not in _SCOPE_KIND:
            continue
        prefix = f"{path}/" if path else ""
        keys = {var: names[prefix + var] for var in CELL_VARIABLES if prefix + var in names}
        if "bias" not in keys:
            continue
        if object_based and (prefix + "recurrent_kernel" in names or not _lstm_shaped(shapes, keys)):
            continue
        cells.append(_Cell(path=path, keys=keys, kind="unknown" if object_based else _SCOPE_KIND[leaf]))
    return cells


def _lstm_shaped(shapes: Mapping[str, list[int]], keys: Mapping[str, str]) -> bool:
    kernel, bias = shapes[keys["kernel"]], shapes[keys["bias"]]
    return len(kernel) == 2 and len(bias) == 1 and bias[0] == kernel[1] and kernel[1] % 4 == 0


def _place(cell: _Cell) -> None:
    """Set the cell's LSTM name, layer and direction from its path."""
    where = cell.path if cell.kind == "unknown" else cell.path.rsplit("/", 1)[0] if "/" in cell.path else ""
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
    groups: dict[str, _Group] = {}
    for cell in cells:
        _place(cell)
        groups.setdefault(cell.lstm, _Group(cell.lstm)).cells.append(cell)
    return list(groups.values())


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
        forget_bias = float(given.get("forget_bias", 1.0))
        reader = self._open(path)
        shapes = reader.get_variable_to_shape_map()
        guards.check_checkpoint_sizes(path, shapes, reader.get_variable_to_dtype_map())
        names = {(_object_variable(key) or key): key for key in shapes}
        cells = _find_cells(names, shapes)
        if not cells:
            raise InputFileError(
                f"{path}: no LSTM cell in this TF checkpoint (looked for .../lstm_cell/kernel, "
                ".../basic_lstm_cell/kernel, or an object-based cell's kernel and bias); it holds "
                f"{sorted(shapes)[:8]}"
            )
        lstms = [self._lstm(path, reader, group, forget_bias, given) for group in _group(cells)]
        used = {key for cell in cells for key in cell.keys.values()}
        others = sorted(key for key in shapes if key not in used and key != "_CHECKPOINTABLE_OBJECT_GRAPH")
        return ModelContents(lstms=lstms, other_tensors=others)

    @staticmethod
    def _open(path: Path) -> Any:
        if not Path(f"{path}.index").is_file():
            hint = " (that is a directory: pass the prefix inside it, as model.ckpt for model.ckpt.index)"
            raise InputFileError(
                f"{path}: not a TF checkpoint prefix: {path}.index does not exist"
                + (hint if Path(path).is_dir() else "; pass the prefix, as model.ckpt for model.ckpt.index")
            )
        guards.check_checkpoint_files(path)
        tf = import_tensorflow()
        try:
            return tf.train.load_checkpoint(str(path))
        except (tf.errors.OpError, ValueError) as error:
            raise InputFileError(f"{path}: unreadable TF checkpoint ({error_summary(error)})") from None

    def _lstm(self, path: Path, reader: Any, group: _Group, forget_bias: float, given: Mapping[str, Any]) -> FoundLSTM:
        where = f"{path}: LSTM {group.name or '(no scope)'}"
        arrays = {}
        for cell in group.cells:
            for var, key in cell.keys.items():
                try:
                    arrays[(cell.layer, cell.direction, var)] = np.asarray(reader.get_tensor(key))
                except Exception as error:  # TF raises several types for a damaged data file
                    raise InputFileError(f"{where}: cannot read {key!r} ({error_summary(error)})") from None
        kinds = {cell.kind for cell in group.cells}
        config = self._config(where, group, arrays, given)
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
        kind = kinds.pop() if len(kinds) == 1 else "lstm"
        return FoundLSTM(
            name=group.name,
            weights=weights,
            implementation="tf-cell",
            implementation_options={"forget_bias": forget_bias, "cell": "auto" if kind == "unknown" else kind},
            notes=self._read_notes(kind, forget_bias, config),
        )

    @staticmethod
    def _config(
        where: str, group: _Group, arrays: Mapping[tuple[int, int, str], FloatArray], given: Mapping[str, Any]
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
        try:
            return LSTMConfig(
                input_size=int(kernel.shape[0] - output),
                hidden_size=int(hidden),
                num_layers=len(layers),
                bidirectional=bidirectional,
                proj_size=int(output) if projection is not None else 0,
                peepholes=PEEPHOLE_VARIABLES["i"] in names,
                cell_clip=given.get("cell_clip"),
                proj_clip=given.get("proj_clip"),
            )
        except LayoutError as error:
            raise InputFileError(f"{where}: {error}") from None

    @staticmethod
    def _read_notes(kind: str, forget_bias: float, config: LSTMConfig) -> list[str]:
        notes = [FORGET_BIAS_NOTE.format(value=forget_bias)]
        if kind == "unknown":
            notes.append(
                "object-based checkpoint: the cell class is not recorded; read as a TF LSTM cell from its "
                "variables (kernel [I+Hout, 4H] applied to [x, h], gates i, j, f, o)"
            )
        if kind != "basic":
            clips = f"cell_clip={config.cell_clip}, proj_clip={config.proj_clip}"
            notes.append(
                f"LSTMCell's cell_clip, proj_clip and activation are not stored in checkpoints: read with {clips}, "
                "activation tanh (options cell_clip/proj_clip override)"
            )
        return notes

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
