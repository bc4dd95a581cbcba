"""The "tf-checkpoint" format on real TensorFlow: checkpoints written by TF's own ``tf.compat.v1.train.Saver``
(graph mode, dynamic_rnn / bidirectional_dynamic_rnn cells) and ``tf.train.Checkpoint`` are read and compute, in
the reference, what the TF model computes; written checkpoints restore with ``Saver.restore`` into the cells a
user builds and compute the reference's function; TF -> canonical -> TF is bit-identical; bad files are refused
with the problem named.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.formats import get_format, infer_format
from lstm_conformance.adapters.formats.tf_checkpoint import TFCheckpointFormat
from lstm_conformance.reference.errors import InputFileError, NotImplementedOptionError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward

tf = pytest.importorskip("tensorflow", reason="TF checkpoints need TensorFlow (pip install tensorflow-cpu tf-keras)")
pytest.importorskip("tf_keras", reason="tf.compat.v1 LSTM cells live in tf-keras (pip install tf-keras)")

pytestmark = [
    pytest.mark.xdist_group("tensorflow"),
    pytest.mark.filterwarnings("ignore:.*is deprecated:UserWarning"),
]

INPUT, HIDDEN, STEPS, BATCH = 3, 4, 5, 2
RNN = tf.compat.v1.nn.rnn_cell


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected)) / max(float(np.linalg.norm(expected)), 1e-300)


def _make_cell(config: LSTMConfig, cell: str, forget_bias: float, dtype: Any) -> Any:
    if cell == "basic":
        return RNN.BasicLSTMCell(config.hidden_size, forget_bias=forget_bias, dtype=dtype)
    return RNN.LSTMCell(
        config.hidden_size,
        use_peepholes=config.peepholes,
        cell_clip=config.cell_clip,
        num_proj=config.proj_size or None,
        proj_clip=config.proj_clip,
        forget_bias=forget_bias,
        dtype=dtype,
    )


def _user_model(
    config: LSTMConfig, cell: str = "lstm", forget_bias: float = 1.0, scope: str | None = None, dtype: Any = None
) -> tuple[Any, Any]:
    """What a TF1 user writes: dynamic_rnn (MultiRNNCell when stacked) or one bidirectional_dynamic_rnn per layer
    (under ``SCOPE/cell_K`` when stacked, as tf.contrib's stack_bidirectional_dynamic_rnn). Returns (x, y)."""
    dtype = dtype or tf.float64
    x = tf.compat.v1.placeholder(dtype, [STEPS, BATCH, config.input_size])
    if not config.bidirectional:
        cells = [_make_cell(config, cell, forget_bias, dtype) for _ in range(config.num_layers)]
        stack = cells[0] if len(cells) == 1 else RNN.MultiRNNCell(cells)
        y, _ = tf.compat.v1.nn.dynamic_rnn(stack, x, dtype=dtype, time_major=True, scope=scope)
        return x, y
    layer_input = x
    for layer in range(config.num_layers):
        outer = scope or "stack_bidirectional_rnn"
        where = tf.compat.v1.variable_scope(f"{outer}/cell_{layer}") if config.num_layers > 1 else None
        with where or contextlib.nullcontext():
            (y_fw, y_bw), _ = tf.compat.v1.nn.bidirectional_dynamic_rnn(
                _make_cell(config, cell, forget_bias, dtype),
                _make_cell(config, cell, forget_bias, dtype),
                layer_input,
                dtype=dtype,
                time_major=True,
                scope=scope if config.num_layers == 1 else None,
            )
        layer_input = tf.concat([y_fw, y_bw], axis=-1)
    return x, layer_input


def _randomize(session: Any, rng: np.random.Generator) -> None:
    """Random values in every variable (TF initializes biases to zero: a swapped bias block must show)."""
    for variable in tf.compat.v1.global_variables():
        shape = variable.shape.as_list()
        session.run(variable.assign(rng.uniform(-0.7, 0.7, size=shape).astype(variable.dtype.as_numpy_dtype)))


def _reference_y(weights: LSTMWeights, x: np.ndarray) -> np.ndarray:
    return lstm_forward(weights.astype(np.float64), x).y


WRITE_CASES: dict[str, tuple[LSTMConfig, dict[str, Any]]] = {
    "one-layer-peepholes-proj-clips": (
        LSTMConfig(INPUT, HIDDEN, peepholes=True, proj_size=2, cell_clip=0.3, proj_clip=0.2),
        {},
    ),
    "stacked": (LSTMConfig(INPUT, HIDDEN, num_layers=2), {"forget_bias": 0.5}),
    "bidirectional": (LSTMConfig(INPUT, HIDDEN, bidirectional=True), {}),
    "stacked-bidirectional-peepholes": (
        LSTMConfig(INPUT, HIDDEN, num_layers=2, bidirectional=True, peepholes=True),
        {"forget_bias": 0.0},
    ),
    "basic-names": (LSTMConfig(INPUT, HIDDEN), {"cell": "basic"}),
    "own-scope-stacked": (LSTMConfig(INPUT, HIDDEN, num_layers=2), {"scope": "encoder"}),
}


@pytest.mark.parametrize("case", list(WRITE_CASES))
def test_written_checkpoint_restores_into_tf_cells_with_saver(case: str, tmp_path: Path) -> None:
    config, options = WRITE_CASES[case]
    rng = np.random.default_rng(sum(map(ord, case)))
    weights = random_weights(config, rng, scale=0.8)
    prefix = tmp_path / "model.ckpt"
    notes = TFCheckpointFormat().write(prefix, weights, options)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.ckpt.data-00000-of-00001", "model.ckpt.index"]
    assert any("forget_bias" in note for note in notes)
    x = rng.normal(size=(STEPS, BATCH, INPUT))
    graph = tf.Graph()
    with graph.as_default():
        placeholder, y = _user_model(
            config, options.get("cell", "lstm"), options.get("forget_bias", 1.0), options.get("scope")
        )
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            saver.restore(session, str(prefix))
            found = session.run(y, {placeholder: x})
    assert _relative(found, _reference_y(weights, x)) < 1e-10


SAVER_CASES = {
    "basic": (LSTMConfig(INPUT, HIDDEN), "basic", 1.0, "rnn"),
    "lstm-stacked-peepholes-proj": (
        LSTMConfig(INPUT, HIDDEN, num_layers=2, peepholes=True, proj_size=3),
        "lstm",
        1.0,
        "rnn",
    ),
    "basic-bidirectional-fb0.5": (LSTMConfig(INPUT, HIDDEN, bidirectional=True), "basic", 0.5, "bidirectional_rnn"),
    "stacked-bidirectional": (
        LSTMConfig(INPUT, HIDDEN, num_layers=2, bidirectional=True),
        "lstm",
        1.0,
        "stack_bidirectional_rnn",
    ),
}


def _saver_checkpoint(
    config: LSTMConfig, cell: str, forget_bias: float, prefix: Path, x: np.ndarray, dtype: Any = None
) -> np.ndarray:
    """A checkpoint as TF1 training code saves it (Saver.save, with meta graph and state file); returns y."""
    graph = tf.Graph()
    with graph.as_default():
        placeholder, y = _user_model(config, cell, forget_bias, dtype=dtype)
        tf.compat.v1.train.get_or_create_global_step()
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            _randomize(session, np.random.default_rng(prefix.name.__len__()))
            saver.save(session, str(prefix))
            return np.asarray(session.run(y, {placeholder: x.astype(placeholder.dtype.as_numpy_dtype)}), np.float64)


@pytest.mark.parametrize("case", list(SAVER_CASES))
def test_reads_saver_checkpoints_as_tf_computes_them(case: str, tmp_path: Path) -> None:
    config, cell, forget_bias, scope = SAVER_CASES[case]
    x = np.random.default_rng(4).normal(size=(STEPS, BATCH, INPUT))
    prefix = tmp_path / "train.ckpt"
    expected = _saver_checkpoint(config, cell, forget_bias, prefix, x)
    contents = TFCheckpointFormat().read(prefix, {})  # forget_bias and clips read from the .meta graph
    [found] = contents.lstms
    assert found.name == scope
    assert found.weights.config == config
    assert found.implementation == "tf-cell"
    assert found.implementation_options == {"forget_bias": forget_bias, "cell": cell}
    assert any("train.ckpt.meta" in note and f"forget_bias={forget_bias}" in note for note in found.notes)
    assert found.assumptions == []
    assert "global_step" in contents.other_tensors
    assert _relative(_reference_y(found.weights, x), expected) < 1e-10


def test_wrong_forget_bias_changes_the_function(tmp_path: Path) -> None:
    """The assumed forget_bias matters: without the .meta graph, read with the wrong one, the function differs
    (the assumption is not idle)."""
    config, cell, forget_bias, _ = SAVER_CASES["basic-bidirectional-fb0.5"]
    x = np.random.default_rng(4).normal(size=(STEPS, BATCH, INPUT))
    expected = _saver_checkpoint(config, cell, forget_bias, tmp_path / "m.ckpt", x)
    (tmp_path / "m.ckpt.meta").unlink()
    [found] = TFCheckpointFormat().read(tmp_path / "m.ckpt", {}).lstms
    assert any(text.startswith("assumed forget_bias=1.0") for text in found.assumptions)
    assert _relative(_reference_y(found.weights, x), expected) > 1e-3


def test_several_lstms_in_one_checkpoint_named_by_scope(tmp_path: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [STEPS, BATCH, INPUT])
        tf.compat.v1.nn.dynamic_rnn(RNN.LSTMCell(HIDDEN), x, dtype=tf.float32, time_major=True, scope="encoder")
        tf.compat.v1.nn.dynamic_rnn(RNN.BasicLSTMCell(2), x, dtype=tf.float32, time_major=True, scope="decoder")
        tf.compat.v1.get_variable("dense/kernel", [2, 1])
        saver = tf.compat.v1.train.Saver()
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            saver.save(session, str(tmp_path / "two.ckpt"))
    contents = TFCheckpointFormat().read(tmp_path / "two.ckpt", {})
    by_name = {found.name: found for found in contents.lstms}
    assert set(by_name) == {"encoder", "decoder"}
    assert by_name["decoder"].weights.config.hidden_size == 2
    assert contents.other_tensors == ["dense/kernel"]


@pytest.mark.parametrize("case", ["basic", "lstm-stacked-peepholes-proj", "stacked-bidirectional"])
def test_tf_to_canonical_to_tf_is_bit_identical(case: str, tmp_path: Path) -> None:
    config, cell, forget_bias, _ = SAVER_CASES[case]
    x = np.zeros((STEPS, BATCH, INPUT))
    source = tmp_path / "source.ckpt"
    _saver_checkpoint(config, cell, forget_bias, source, x, dtype=tf.float32)
    [found] = TFCheckpointFormat().read(source, {}).lstms
    copy = tmp_path / "copy.ckpt"
    TFCheckpointFormat().write(copy, found.weights, {"scope": found.name, "cell": cell})
    before, after = tf.train.load_checkpoint(str(source)), tf.train.load_checkpoint(str(copy))
    names = set(after.get_variable_to_shape_map())
    assert names == set(before.get_variable_to_shape_map()) - {"global_step"}
    for name in names:
        original, written = before.get_tensor(name), after.get_tensor(name)
        assert written.dtype == original.dtype == np.float32
        assert written.tobytes() == original.tobytes(), name


def test_reads_object_based_checkpoints(tmp_path: Path) -> None:
    """tf.train.Checkpoint of a legacy LSTMCell, of a MultiRNNCell, and of a tf_keras RNN layer over a cell."""
    rng = np.random.default_rng(8)
    x = tf.constant(rng.normal(size=(STEPS, BATCH, INPUT)))
    lstm = RNN.LSTMCell(HIDDEN, use_peepholes=True, num_proj=2, dtype=tf.float64)
    stack = RNN.MultiRNNCell([RNN.BasicLSTMCell(HIDDEN, dtype=tf.float64) for _ in range(2)])
    expected = {}
    for name, cell in (("cell", lstm), ("stack", stack)):
        tf.compat.v1.nn.dynamic_rnn(cell, x[:1], dtype=tf.float64, time_major=True, scope=name)
        for variable in cell.variables:
            variable.assign(rng.uniform(-0.7, 0.7, size=variable.shape))
        expected[name] = tf.compat.v1.nn.dynamic_rnn(cell, x, dtype=tf.float64, time_major=True, scope=name)[0]
    import tf_keras

    layer = tf_keras.layers.RNN(RNN.LSTMCell(HIDDEN, dtype=tf.float64), return_sequences=True, dtype=tf.float64)
    layer(tf.transpose(x, [1, 0, 2]))
    for variable in layer.variables:
        variable.assign(rng.uniform(-0.7, 0.7, size=variable.shape))
    expected["layer/cell"] = tf.transpose(layer(tf.transpose(x, [1, 0, 2])), [1, 0, 2])
    tf.train.Checkpoint(cell=lstm, stack=stack, layer=layer).write(str(tmp_path / "object"))
    contents = TFCheckpointFormat().read(tmp_path / "object", {})
    by_name = {found.name: found for found in contents.lstms}
    assert set(by_name) == set(expected)
    assert by_name["stack"].weights.config.num_layers == 2
    assert by_name["cell"].weights.config.proj_size == 2
    assert any("object-based" in note for note in by_name["cell"].notes)
    for name, found in by_name.items():
        assert _relative(_reference_y(found.weights, x.numpy()), expected[name].numpy()) < 1e-10, name


def test_format_is_registered_and_inferred(tmp_path: Path) -> None:
    weights = random_weights(LSTMConfig(INPUT, HIDDEN), np.random.default_rng(0))
    get_format("tf-checkpoint").write(tmp_path / "model", weights, {})
    assert infer_format(tmp_path / "model") == "tf-checkpoint"
    assert infer_format(tmp_path / "x.ckpt") == "tf-checkpoint"


def test_bad_files_and_options_are_refused_with_the_problem_named(tmp_path: Path) -> None:
    fmt = TFCheckpointFormat()
    with pytest.raises(InputFileError, match=r"missing\.ckpt\.index does not exist"):
        fmt.read(tmp_path / "missing.ckpt", {})
    (tmp_path / "dir.ckpt").mkdir()
    with pytest.raises(InputFileError, match="that is a directory"):
        fmt.read(tmp_path / "dir.ckpt", {})
    (tmp_path / "garbage.ckpt.index").write_bytes(b"not a checkpoint at all")
    with pytest.raises(InputFileError, match="unreadable TF checkpoint"):
        fmt.read(tmp_path / "garbage.ckpt", {})
    weights = random_weights(LSTMConfig(INPUT, HIDDEN, num_layers=2), np.random.default_rng(1))
    fmt.write(tmp_path / "cut.ckpt", weights, {})
    data = tmp_path / "cut.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
    with pytest.raises(InputFileError, match="cannot read"):
        fmt.read(tmp_path / "cut.ckpt", {})
    graph = tf.Graph()
    with graph.as_default():
        tf.compat.v1.get_variable("dense/kernel", [2, 3])
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(tmp_path / "dense.ckpt"))
    with pytest.raises(InputFileError, match=r"no LSTM cell in this TF checkpoint.*dense/kernel"):
        fmt.read(tmp_path / "dense.ckpt", {})
    with pytest.raises(NotImplementedOptionError, match=r"takes no option colour"):
        fmt.read(tmp_path / "cut.ckpt", {"colour": "red"})
    peepholes = random_weights(LSTMConfig(INPUT, HIDDEN, peepholes=True), np.random.default_rng(2))
    with pytest.raises(UnsupportedFeatureError, match="BasicLSTMCell does not support peepholes"):
        fmt.write(tmp_path / "basic.ckpt", peepholes, {"cell": "basic"})
    relu = LSTMConfig(
        INPUT, HIDDEN, cell_input_activation=Activation("relu"), cell_output_activation=Activation("relu")
    )
    with pytest.raises(UnsupportedFeatureError, match="checkpoints hold no activation"):
        fmt.write(tmp_path / "relu.ckpt", random_weights(relu, np.random.default_rng(3)), {})


def test_bidirectional_over_multi_rnn_cell_is_refused(tmp_path: Path) -> None:
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [STEPS, BATCH, INPUT])
        fw, bw = (RNN.MultiRNNCell([RNN.LSTMCell(HIDDEN) for _ in range(2)]) for _ in range(2))
        tf.compat.v1.nn.bidirectional_dynamic_rnn(fw, bw, x, dtype=tf.float32, time_major=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(tmp_path / "bimulti.ckpt"))
    with pytest.raises(UnsupportedFeatureError, match="each direction is a stack of its own"):
        TFCheckpointFormat().read(tmp_path / "bimulti.ckpt", {})
