"""TF1 checkpoints with the ``.meta`` graph ``Saver.save`` wrote beside them (issue 10): the proof runs the graph
itself (``tf_meta_graph.GraphRunner``), so a conversion is "verified" only when the file's own loop ran.

Every file is written here by TF's own ``Saver.save`` from a TF1-style training graph (an LSTM, a Dense head and
an Adam optimizer), in both control-flow flavours a user may have: TF1's v1 loops with ref variables (what
TF 1.x wrote) and TF2's v2 ``While`` with resource variables. Each graph's own session output is the expected
value, never this project's reading. Hostile graphs are those real files with one node changed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.formats.tf_checkpoint import TFCheckpointFormat

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
tf = pytest.importorskip("tensorflow", reason="TF checkpoints need TensorFlow (pip install tensorflow-cpu tf-keras)")

pytestmark = [
    pytest.mark.xdist_group("tensorflow"),
    pytest.mark.filterwarnings("ignore:.*is deprecated:UserWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

STEPS, BATCH, INPUT = 5, 3, 3
RNN = tf.compat.v1.nn.rnn_cell
FLAVOURS = ("tf1-loops", "tf2-loops")


@contextlib.contextmanager
def _control_flow(flavour: str) -> Iterator[None]:
    """Graphs built inside use TF1's v1 loops ("tf1-loops") or TF2's v2 While ("tf2-loops"); TF's process-wide
    switch is restored afterwards."""
    from tensorflow.python.ops import control_flow_util

    before = control_flow_util.ENABLE_CONTROL_FLOW_V2
    control_flow_util.ENABLE_CONTROL_FLOW_V2 = flavour == "tf2-loops"
    try:
        yield
    finally:
        control_flow_util.ENABLE_CONTROL_FLOW_V2 = before


def _train_and_save(
    directory: Path,
    flavour: str,
    lstm: Callable[[Any, Any], tuple[Any, list[Any]]],
    *,
    lengths: bool = False,
) -> dict[str, Any]:
    """What TF1 training code does: a placeholder, ``lstm(x, lengths)`` (its output and flat final states), a
    Dense head, Adam, one training step, ``Saver.save`` (with its .meta). Returns x, lengths and what the graph's
    own session computes for the LSTM's output and states on them."""
    rng = np.random.default_rng(3)
    x_value = rng.normal(size=(BATCH, STEPS, INPUT)).astype(np.float32)
    lengths_value = np.array([STEPS, 2, 4][:BATCH], dtype=np.int32)
    graph = tf.Graph()
    with _control_flow(flavour), graph.as_default():
        with tf.compat.v1.variable_scope("model", use_resource=flavour == "tf2-loops"):
            x = tf.compat.v1.placeholder(tf.float32, [None, STEPS, INPUT], name="x")
            seq = tf.compat.v1.placeholder(tf.int32, [None], name="lengths") if lengths else None
            y, states = lstm(x, seq)
            logits = tf.compat.v1.layers.dense(y[:, -1], 2)
        loss = tf.reduce_mean(logits**2)
        train = tf.compat.v1.train.AdamOptimizer(0.1).minimize(loss)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            feed = {x: x_value, **({seq: lengths_value} if lengths else {})}
            session.run(train, feed)  # the bias moves off zero, the kernels off their initializer
            tf.compat.v1.train.Saver().save(session, str(directory / "model.ckpt"))
            y_value, *state_values = session.run([y, *states], feed)
    return {"x": x_value, "lengths": lengths_value, "y": y_value, "states": state_values}


def _basic_forget_bias_zero(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    """The reported bug: BasicLSTMCell(forget_bias=0.0) converted 0.26 off when 1.0 was assumed."""
    y, state = tf.compat.v1.nn.dynamic_rnn(RNN.BasicLSTMCell(4, forget_bias=0.0), x, lengths, dtype=tf.float32)
    return y, [state.c, state.h]


def _lstm_cell_every_option_time_major(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    cell = RNN.LSTMCell(4, use_peepholes=True, cell_clip=0.8, num_proj=3, proj_clip=0.6, forget_bias=0.5)
    time_major = tf.transpose(x, [1, 0, 2])
    y, state = tf.compat.v1.nn.dynamic_rnn(cell, time_major, lengths, dtype=tf.float32, time_major=True)
    return tf.transpose(y, [1, 0, 2]), [state.c, state.h]


def _two_layers(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    stack = RNN.MultiRNNCell([RNN.LSTMCell(4), RNN.LSTMCell(4)])
    y, states = tf.compat.v1.nn.dynamic_rnn(stack, x, lengths, dtype=tf.float32)
    return y, [s for state in states for s in (state.c, state.h)]


def _bidirectional(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    (fw, bw), (s_fw, s_bw) = tf.compat.v1.nn.bidirectional_dynamic_rnn(
        RNN.LSTMCell(4), RNN.LSTMCell(4), x, lengths, dtype=tf.float32
    )
    return tf.concat([fw, bw], -1), [s_fw.c, s_fw.h, s_bw.c, s_bw.h]


def _stacked_bidirectional(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    """tf.contrib's stack_bidirectional_dynamic_rnn (gone from TF 2), written out as it built it: layer K's
    bidirectional_dynamic_rnn under stack_bidirectional_rnn/cell_K reads both directions of layer K-1."""
    layer_input, states = x, []
    for layer in range(2):
        with tf.compat.v1.variable_scope(f"stack_bidirectional_rnn/cell_{layer}"):
            (fw, bw), (s_fw, s_bw) = tf.compat.v1.nn.bidirectional_dynamic_rnn(
                RNN.LSTMCell(4), RNN.LSTMCell(4), layer_input, lengths, dtype=tf.float32
            )
        layer_input = tf.concat([fw, bw], -1)
        states += [s_fw.c, s_fw.h, s_bw.c, s_bw.h]
    return layer_input, states


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.max(np.abs(found - expected)) / max(float(np.max(np.abs(expected))), 1e-30))


def _read_one(directory: Path, options: dict[str, Any] | None = None) -> Any:
    (found,) = TFCheckpointFormat().read(directory / "model.ckpt", options or {}).lstms
    return found


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(
    "lstm",
    [_basic_forget_bias_zero, _lstm_cell_every_option_time_major, _two_layers, _bidirectional, _stacked_bidirectional],
)
def test_the_graph_itself_runs_as_its_own_session_does(tmp_path: Path, flavour: str, lstm: Any) -> None:
    """run_source feeds the LSTM's input tensor and fetches its output and final states from the file's own
    loop: exactly what the training session computed, with no assumption left."""
    expected = _train_and_save(tmp_path, flavour, lstm)
    found = _read_one(tmp_path)
    assert found.assumptions == []
    assert found.run_source is not None
    assert found.batch_first is (lstm is not _lstm_cell_every_option_time_major)  # what the graph says
    x = expected["x"] if found.batch_first else expected["x"].swapaxes(0, 1)
    ran = found.run_source(RunInputs(x=x, batch_first=bool(found.batch_first)), RunOptions())
    y = ran.y if found.batch_first else ran.y.swapaxes(0, 1)
    assert _relative(y, expected["y"]) < 1e-6, f"got y {y}, should be {expected['y']} [{lstm.__name__}]"
    states = [state for k in range(len(ran.c_n)) for state in (ran.c_n[k], ran.h_n[k])]  # (c, h) per cell
    for got, should in zip(states, expected["states"], strict=True):
        assert _relative(got, should) < 1e-6
    _check_states_and_gradients(found, x.swapaxes(0, 1) if found.batch_first else x)


def _check_states_and_gradients(found: Any, x: np.ndarray) -> None:
    """Random initial states and cotangents: the graph's loop variables fed and its tf.gradients against the
    float64 reference on the weights read (which the zero-state run above ties to the session). Feeding a
    state to the wrong loop variable, c for h, or a gradient mapped to the wrong cell fails here."""
    from lstm_conformance.adapters.registry import get_implementation

    config, rng = found.weights.config, np.random.default_rng(8)
    states = config.num_layers * config.num_directions
    inputs = RunInputs(
        x=x.astype(np.float64),
        h0=rng.normal(size=(states, BATCH, config.output_size)),
        c0=rng.normal(size=(states, BATCH, config.hidden_size)),
        dy=rng.normal(size=(STEPS, BATCH, config.num_directions * config.output_size)),
        dh_n=rng.normal(size=(states, BATCH, config.output_size)),
        dc_n=rng.normal(size=(states, BATCH, config.hidden_size)),
    )
    ran = found.run_source(inputs, RunOptions())
    expected = get_implementation("reference").run(found.weights, inputs, RunOptions(dtype="float64"))
    for name in ("y", "h_n", "c_n"):
        assert _relative(getattr(ran, name), getattr(expected, name)) < 1e-5, name
    assert ran.gradients is not None
    assert expected.gradients is not None
    for name in ("x", "h0", "c0"):
        assert _relative(getattr(ran.gradients, name), getattr(expected.gradients, name)) < 1e-5, f"grad {name}"
    should = expected.gradients.weights.named_arrays()
    for name, got in ran.gradients.weights.named_arrays().items():
        assert _relative(got, should[name]) < 1e-5, f"grad {name}"


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lengths_are_fed_to_the_graphs_sequence_length(tmp_path: Path, flavour: str) -> None:
    expected = _train_and_save(tmp_path, flavour, _bidirectional, lengths=True)
    found = _read_one(tmp_path)
    assert found.run_source is not None
    inputs = RunInputs(x=expected["x"], seq_lens=expected["lengths"].astype(np.int64), batch_first=True)
    ran = found.run_source(inputs, RunOptions())
    assert _relative(ran.y, expected["y"]) < 1e-6
    assert _relative(ran.h_n[1], expected["states"][3]) < 1e-6  # bw's final h: its first step, per sample


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_converting_is_verified_with_gradients_and_torch_computes_the_original(tmp_path: Path, flavour: str) -> None:
    """The proof runs the file's own graph (forward and tf.gradients through its loop), so the conversion is
    "verified"; the torch model alone, on the session's input, computes what the session computed."""
    torch = pytest.importorskip("torch", reason="the written file runs in PyTorch (pip install torch)")
    from lstm_conformance import api

    expected = _train_and_save(tmp_path, flavour, _basic_forget_bias_zero)
    result = api.convert(tmp_path / "model.ckpt", tmp_path / "lstm.pt")
    assert result.verified
    assert result.agreement is not None
    assert result.agreement.first.ran_file_itself
    assert result.agreement.gradients, "the proof compares gradients where both sides compute them"
    assert "model/dense/kernel" in result.not_carried
    module = torch.nn.LSTM(INPUT, 4, batch_first=True)
    module.load_state_dict(torch.load(tmp_path / "lstm.pt", weights_only=True))
    with torch.no_grad():
        y, _ = module(torch.from_numpy(expected["x"]))
    assert _relative(y.numpy(), expected["y"]) < 1e-5


def test_a_graphs_sequence_length_is_carried_into_onnx_and_said_for_torch(tmp_path: Path) -> None:
    """A model whose dynamic_rnn takes sequence_length: the proof runs ragged lengths on both sides; the ONNX
    file takes sequence_lens and, run by ONNX Runtime alone, computes what the session computed on each
    sample's steps; a torch state_dict holds no lengths, and the note says what the torch model needs."""
    onnxruntime = pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the written file")
    from lstm_conformance import api

    expected = _train_and_save(tmp_path, "tf1-loops", _bidirectional, lengths=True)
    to_onnx = api.convert(tmp_path / "model.ckpt", tmp_path / "lstm.onnx")
    assert to_onnx.verified
    assert to_onnx.agreement is not None
    assert to_onnx.agreement.lengths
    session = onnxruntime.InferenceSession(str(tmp_path / "lstm.onnx"), providers=["CPUExecutionProvider"])
    feed = {"X": expected["x"].swapaxes(0, 1).copy(), "sequence_lens": expected["lengths"]}
    y = session.run(None, feed)[0].swapaxes(0, 1)  # the written model's y is [T, B, dirs*H]
    for sample, length in enumerate(expected["lengths"]):
        assert _relative(y[sample, :length], expected["y"][sample, :length]) < 1e-5

    to_torch = api.convert(tmp_path / "model.ckpt", tmp_path / "lstm.pt")
    assert to_torch.verified
    assert any("sequence_length" in note and "pack_padded_sequence" in note for note in to_torch.notes)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_a_graph_with_a_fixed_input_shape_is_proved_at_that_shape(tmp_path: Path, flavour: str) -> None:
    """TF1 code often fixes the placeholder's batch and steps; dynamic_rnn then sizes its loop from them as
    constants, and the graph runs at that shape only. The proof runs there (4 samples, 7 steps), and a run at
    another shape is refused naming the shape, not failed inside TensorFlow."""
    from lstm_conformance import api
    from lstm_conformance.reference.errors import UnsupportedFeatureError

    graph = tf.Graph()
    with _control_flow(flavour), graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [4, 7, INPUT], name="x")
        tf.compat.v1.nn.dynamic_rnn(RNN.LSTMCell(4), x, dtype=tf.float32)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    found = _read_one(tmp_path)
    assert getattr(found.run_source, "steps_batch", None) == (7, 4)
    result = api.convert(tmp_path / "model.ckpt", tmp_path / "lstm.pt")
    assert result.verified
    assert result.agreement is not None
    assert (result.agreement.steps, result.agreement.batch) == (7, 4)
    with pytest.raises(UnsupportedFeatureError, match=r"fixes steps and batch to \(7, 4\)"):
        found.run_source(RunInputs(x=np.ones((5, 3, INPUT))), RunOptions())


def _encoder_and_decoder(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    """Two LSTMs in one graph, the second cell named lstm_cell_1 (as Keras-style unique naming gives a second
    cell): its variables are model/decoder/lstm_cell_1/..., not the default scope's names."""
    encoded, _ = tf.compat.v1.nn.dynamic_rnn(RNN.LSTMCell(4), x, lengths, dtype=tf.float32, scope="encoder")
    decoder = RNN.LSTMCell(4, name="lstm_cell_1")
    y, state = tf.compat.v1.nn.dynamic_rnn(decoder, encoded, lengths, dtype=tf.float32, scope="decoder")
    return y, [state.c, state.h]


@pytest.mark.parametrize(
    ("lstm", "select"),
    [
        (_encoder_and_decoder, "model/decoder"),
        (_bidirectional, "model/bidirectional_rnn"),
        (_stacked_bidirectional, "model/stack_bidirectional_rnn"),
    ],
)
def test_run_names_gradients_by_the_checkpoints_own_keys(tmp_path: Path, cli: Any, lstm: Any, select: str) -> None:
    """``run --implementation reference`` names grad/<checkpoint key> (a decoder in scope lstm_cell_1, fw and bw,
    stacked layers), each equal to the gradient the file's own graph computes through its loop (tf.gradients)."""
    _train_and_save(tmp_path, "tf2-loops", lstm)
    lstms = {f.name: f for f in TFCheckpointFormat().read(tmp_path / "model.ckpt", {}).lstms}
    found = lstms[select]
    assert found.run_source is not None
    from tests.test_cli_proof import _run_gradients, _save_inputs

    arrays = _save_inputs(tmp_path, STEPS, BATCH, found.weights.config)
    grads = _run_gradients(cli, tmp_path / "model.ckpt", "reference", tmp_path, "--select", select)
    ran = found.run_source(RunInputs(**arrays), RunOptions())
    assert ran.gradients is not None
    assert set(grads) == set(ran.gradients.native)
    for name, value in ran.gradients.native.items():
        assert _relative(grads[name], value) < 1e-5, name


def _two_cells_in_one_scope(x: Any, lengths: Any) -> tuple[Any, list[Any]]:
    """Two dynamic_rnn calls in the default scope: cells rnn/lstm_cell (4 units) and rnn/lstm_cell_1 (6)."""
    first, _ = tf.compat.v1.nn.dynamic_rnn(RNN.LSTMCell(4), x, lengths, dtype=tf.float32)
    y, state = tf.compat.v1.nn.dynamic_rnn(RNN.LSTMCell(6, name="lstm_cell_1"), first, lengths, dtype=tf.float32)
    return y, [state.c, state.h]


def test_two_cells_in_one_scope_are_two_lstms(tmp_path: Path) -> None:
    """They were once merged into one LSTM of whichever cell came last (and "verified"): each is its own LSTM,
    named by its cell's path, and each runs its own loop of the graph."""
    expected = _train_and_save(tmp_path, "tf2-loops", _two_cells_in_one_scope)
    lstms = {f.name: f for f in TFCheckpointFormat().read(tmp_path / "model.ckpt", {}).lstms}
    assert set(lstms) == {"model/rnn/lstm_cell", "model/rnn/lstm_cell_1"}
    assert lstms["model/rnn/lstm_cell"].weights.config.hidden_size == 4
    second = lstms["model/rnn/lstm_cell_1"]
    assert second.weights.config.hidden_size == 6
    assert second.run_source is not None
    first = lstms["model/rnn/lstm_cell"]
    assert first.run_source is not None
    encoded = first.run_source(RunInputs(x=expected["x"], batch_first=True), RunOptions()).y
    ran = second.run_source(RunInputs(x=encoded, batch_first=True), RunOptions())  # each its own loop
    assert _relative(ran.y, expected["y"]) < 1e-6


# ----------------------------------------------------------------------------------------------------------
# Graphs that are not run: said as an assumption, never "verified"
# ----------------------------------------------------------------------------------------------------------


def _edit_meta(directory: Path, edit: Callable[[Any], bool]) -> None:
    """Apply ``edit`` to every node it accepts (in the graph and its function bodies) of the real .meta file."""
    from tensorflow.core.protobuf import meta_graph_pb2

    path = directory / "model.ckpt.meta"
    meta = meta_graph_pb2.MetaGraphDef()
    meta.ParseFromString(path.read_bytes())
    nodes = [*meta.graph_def.node, *(n for f in meta.graph_def.library.function for n in f.node_def)]
    assert sum(edit(node) for node in nodes), "no node to edit"
    path.write_bytes(meta.SerializeToString())


def _assumptions_of_edited(tmp_path: Path, flavour: str, lstm: Any, edit: Callable[[Any], bool]) -> list[str]:
    """A real file of ``lstm``, its .meta edited: the graph must not run; the reading's assumptions."""
    _train_and_save(tmp_path, flavour, lstm)
    _edit_meta(tmp_path, edit)
    found = _read_one(tmp_path)
    assert found.run_source is None
    return list(found.assumptions)


def _to_py_func(node: Any) -> bool:
    if node.op != "Sigmoid":
        return False
    node.op = "PyFunc"  # the hostile graph: Python code called from inside the loop
    return True


def _huge_loop_bound(node: Any) -> bool:
    """dynamic_rnn's loop bound, Maximum(1, steps): a graph whose constants size its loops and arrays by 10**9
    could allocate and run far beyond what the file stores (the zero states are fed, so theirs never run)."""
    if node.op != "Const" or not node.name.endswith("rnn/Maximum/x"):
        return False
    node.attr["value"].tensor.int_val[:] = [10**9]
    return True


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize(("edit", "said"), [(_to_py_func, "op PyFunc"), (_huge_loop_bound, "is over")])
def test_a_graph_holding_what_may_not_run_is_not_run(tmp_path: Path, flavour: str, edit: Any, said: str) -> None:
    """Python called from the loop, a loop bound of 10**9: the graph never runs; the reading is proved under the
    assumption, which names what was found."""
    assumptions = _assumptions_of_edited(tmp_path, flavour, _basic_forget_bias_zero, edit)
    assert any(said in text and "cannot be run" in text for text in assumptions), assumptions


def test_a_saver_restoring_other_entries_than_the_variables_names_is_not_run(tmp_path: Path) -> None:
    """The file's Saver restores fw's kernel from bw's entry and bw's from fw's: TF restoring the file computes
    other weights than the entries of the variables' names, so the graph with those entries proves nothing."""

    def swapped(node: Any) -> bool:
        if node.op != "Const" or not node.name.endswith("RestoreV2/tensor_names"):
            return False
        names = list(node.attr["value"].tensor.string_val)
        fw, bw = (names.index(f"model/bidirectional_rnn/{side}/lstm_cell/kernel".encode()) for side in ("fw", "bw"))
        names[fw], names[bw] = names[bw], names[fw]
        node.attr["value"].tensor.string_val[:] = names
        return True

    assumptions = _assumptions_of_edited(tmp_path, "tf2-loops", _bidirectional, swapped)
    assert any("Saver restores" in text for text in assumptions), assumptions


def test_a_loop_reading_a_placeholder_the_file_gives_no_value_is_not_run(tmp_path: Path) -> None:
    """TF1's dropout idiom, DropoutWrapper(output_keep_prob=keep) with keep a placeholder fed 0.5 in training and
    1.0 at inference: the file holds no value for it, so its graph cannot run as the model is used."""
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, STEPS, INPUT], name="x")
        keep = tf.compat.v1.placeholder(tf.float32, [], name="keep_prob")
        cell = RNN.DropoutWrapper(RNN.LSTMCell(4), output_keep_prob=keep)
        tf.compat.v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
    found = _read_one(tmp_path)
    assert found.run_source is None
    assert any("placeholder 'keep_prob'" in text for text in found.assumptions), found.assumptions


def test_a_saver_whose_restore_loops_on_itself_ends_in_the_assumption(tmp_path: Path) -> None:
    """Every Identity of the Saver's restore made its own input: following them back must end (a bounded
    walk), and the variables then have no restore entry: the graph is not run."""

    def loop(node: Any) -> bool:
        if node.op != "Identity" or not node.name.startswith("save/Identity"):
            return False
        node.input[:] = [node.name]
        return True

    assumptions = _assumptions_of_edited(tmp_path, "tf2-loops", _basic_forget_bias_zero, loop)
    assert any("Saver restores" in text for text in assumptions), assumptions


def test_a_constant_declaring_a_huge_shape_is_never_expanded(tmp_path: Path) -> None:
    """The forget_bias Const declaring 10**12 values: reading it would allocate terabytes; it is not read."""

    def huge(node: Any) -> bool:
        if node.op != "Const" or not node.name.endswith("lstm_cell/Const_1"):
            return False
        node.attr["value"].tensor.tensor_shape.dim.add(size=10**6)
        node.attr["value"].tensor.tensor_shape.dim.add(size=10**6)
        return True

    assumptions = _assumptions_of_edited(tmp_path, "tf2-loops", _basic_forget_bias_zero, huge)
    assert any(text.startswith("assumed forget_bias=1.0") for text in assumptions), assumptions


def test_a_forget_bias_given_is_proved_under_assumptions(tmp_path: Path) -> None:
    """--forget-bias changes what the cells compute: the graph no longer speaks for the reading."""
    from lstm_conformance import api

    _train_and_save(tmp_path, "tf2-loops", _basic_forget_bias_zero)
    found = _read_one(tmp_path, {"forget_bias": 1.0})
    assert found.run_source is None
    assert any("forget_bias as given" in text for text in found.assumptions)
    result = api.convert(tmp_path / "model.ckpt", tmp_path / "lstm.npz", forget_bias=1.0)
    assert result.under_assumptions
    assert not result.verified


# ----------------------------------------------------------------------------------------------------------
# Mutated graphs: one line and exit 2, a failed proof (1), or a proof; never a traceback or a partial file
# ----------------------------------------------------------------------------------------------------------

#: Ops a mutation puts in place of a node's: ones that touch files, run Python or allocate by a shape, and
#: ordinary ones wired wrongly.
_MUTANT_OPS = ("PyFunc", "ReadFile", "WriteFile", "Fill", "Tile", "Const", "Identity", "MatMul", "NoOp", "Unknown")


def _mutate_graph(draw: Any, meta: Any) -> None:
    """One structural change to a node of the LSTM's loop (its graph nodes and function bodies): its op, an
    input, a type, a constant's value or declared shape, or the node deleted."""
    from hypothesis import strategies as st

    nodes = [n for n in meta.graph_def.node if "rnn" in n.name]
    nodes += [n for f in meta.graph_def.library.function for n in f.node_def]
    node = draw(st.sampled_from(nodes))
    change = draw(st.sampled_from(["op", "input", "type", "value", "shape", "delete"]))
    if change == "op":
        node.op = draw(st.sampled_from(_MUTANT_OPS))
    elif change == "input" and node.input:
        node.input[draw(st.integers(0, len(node.input) - 1))] = draw(st.sampled_from(nodes)).name
    elif change == "type" and "T" in node.attr:
        node.attr["T"].type = draw(st.sampled_from([1, 2, 3, 9, 10]))  # float, double, int32, int64, bool
    elif change in ("value", "shape") and node.op == "Const":
        tensor = node.attr["value"].tensor
        if change == "value":
            tensor.int_val[:] = [draw(st.integers(-(2**31), 2**31 - 1))]
        else:
            tensor.tensor_shape.dim.add(size=draw(st.sampled_from([0, 7, 10**6, 2**40])))
    elif change == "delete" and node in meta.graph_def.node:
        meta.graph_def.node.remove(node)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_mutated_meta_graphs_end_in_one_line_or_a_proof(
    tmp_path: Path, flavour: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """convert (with its proof, so the graph runs) of a real Saver checkpoint whose .meta was changed in one
    node, or in its bytes: exit 0 with the file, 1 (the proof failed) or 2 in one line, nothing left behind."""
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from tensorflow.core.protobuf import meta_graph_pb2

    from tests.test_fuzz_files import check_outcome, mutate_bytes

    (tmp_path / "source").mkdir()
    _train_and_save(tmp_path / "source", flavour, _bidirectional)
    original = (tmp_path / "source" / "model.ckpt.meta").read_bytes()

    examples = int(os.environ.get("LSTM_CONFORMANCE_GRAPH_FUZZ_EXAMPLES", 10))  # each converts with TF: ~1.5 s

    @settings(max_examples=examples, derandomize=True, deadline=None, database=None)
    @given(st.data())
    def run(data: st.DataObject) -> None:
        model, out = tmp_path / "model", tmp_path / "out"
        for folder in (model, out):
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
        for file in (tmp_path / "source").glob("model.ckpt.*"):
            shutil.copyfile(file, model / file.name)
        if data.draw(st.booleans()):
            meta = meta_graph_pb2.MetaGraphDef()
            meta.ParseFromString(original)
            _mutate_graph(data.draw, meta)
            mutated = meta.SerializeToString()
        else:
            mutated = mutate_bytes(data.draw, original)
        (model / "model.ckpt.meta").write_bytes(mutated)
        check_outcome(["convert", str(model / "model.ckpt"), str(out / "lstm.npz")], out, capsys)

    run()
