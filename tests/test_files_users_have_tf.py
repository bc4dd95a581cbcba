"""TensorFlow and Keras files as users have them (issue 10), each written by the framework's own save function
and what the reader found checked against the framework's own output on the same input:

- object-based checkpoints of tf_keras models (``save_weights`` in TF format) and of Keras 3 models
  (``tf.train.Checkpoint(model=...)``): the LSTM found through the checkpoint's object graph, never a Dense
  kernel read as an LSTM;
- Saver checkpoints named by their directory, ``checkpoint`` state file or step-less prefix;
- TF1 ``.meta`` graphs: forget_bias, clips and activation read from the graph instead of assumed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.formats.tf_checkpoint import TFCheckpointFormat
from lstm_conformance.reference.errors import InputFileError
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights
from lstm_conformance.reference.lstm import lstm_forward

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
tf = pytest.importorskip("tensorflow", reason="TF checkpoints need TensorFlow (pip install tensorflow-cpu tf-keras)")
tf_keras = pytest.importorskip("tf_keras", reason="tf_keras models need tf-keras (pip install tf-keras)")
keras = pytest.importorskip("keras", reason="Keras 3 models need keras (pip install keras)")

pytestmark = [
    pytest.mark.xdist_group("tensorflow"),
    pytest.mark.filterwarnings("ignore:.*is deprecated:UserWarning"),
]

STEPS, BATCH = 5, 2
RNN = tf.compat.v1.nn.rnn_cell


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected)) / max(float(np.linalg.norm(expected)), 1e-300)


def _reference(weights: LSTMWeights, x_batch_major: np.ndarray) -> Any:
    """The reference on what the reader found, given Keras' batch-major input; y returned batch-major."""
    result = lstm_forward(weights.astype(np.float64), np.transpose(x_batch_major, (1, 0, 2)).astype(np.float64))
    return np.transpose(result.y, (1, 0, 2)), result


def _randomize_keras(model: Any, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.set_weights([rng.uniform(-0.6, 0.6, size=w.shape).astype(w.dtype) for w in layer.get_weights()])


def test_tf_keras_save_weights_reads_the_lstm_not_the_dense(tmp_path: Path) -> None:
    """The reported bug: LSTM(20) then Dense(4) read as an LSTM of input 19, hidden 1 (the Dense kernel)."""
    model = tf_keras.Sequential(
        [tf_keras.layers.Input((STEPS, 19)), tf_keras.layers.LSTM(20), tf_keras.layers.Dense(4)]
    )
    model.compile("adam", "mse")
    model.fit(np.zeros((2, STEPS, 19)), np.zeros((2, 4)), verbose=0)  # optimizer slots in the checkpoint too
    _randomize_keras(model, 0)
    model.save_weights(str(tmp_path / "weights"))  # no .h5 suffix: TF's object-based checkpoint format

    contents = TFCheckpointFormat().read(tmp_path / "weights", {})
    (found,) = contents.lstms
    assert found.name == model.layers[0].name  # "lstm", numbered when the session made others before
    assert found.implementation == "tf-keras"
    assert found.weights.config == LSTMConfig(19, 20)
    assert any("activations not stored" in text for text in found.assumptions)
    assert any(key.startswith("layer_with_weights-1/kernel") for key in contents.other_tensors)
    assert any(key.startswith("optimizer/") for key in contents.other_tensors)
    x = np.random.default_rng(1).normal(size=(BATCH, STEPS, 19)).astype(np.float32)
    _, result = _reference(found.weights, x)
    assert _relative(result.h_n[0], model.layers[0](x).numpy()) < 1e-5


def test_keras3_checkpoint_of_a_model_reads_each_lstm_layer(tmp_path: Path) -> None:
    inputs = keras.Input((STEPS, 3))
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="encoder")(inputs)
    hidden = keras.layers.LSTM(6, use_bias=False, return_sequences=True, name="decoder")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(8)(hidden))
    _randomize_keras(model, 2)
    written = tf.train.Checkpoint(model=model).save(str(tmp_path / "ckpt"))  # ckpt-1, with a state file

    contents = TFCheckpointFormat().read(Path(written), {})
    by_name = {found.name: found for found in contents.lstms}
    assert set(by_name) == {"encoder", "decoder"}
    assert by_name["encoder"].weights.config == LSTMConfig(3, 4, bidirectional=True)
    assert by_name["decoder"].weights.config == LSTMConfig(8, 6, bias=False)
    assert {found.implementation for found in contents.lstms} == {"keras"}
    x = np.random.default_rng(3).normal(size=(BATCH, STEPS, 3)).astype(np.float32)
    encoder_y = model.get_layer("encoder")(x).numpy()
    assert _relative(_reference(by_name["encoder"].weights, x)[0], encoder_y) < 1e-5
    decoder_y = model.get_layer("decoder")(encoder_y).numpy()
    assert _relative(_reference(by_name["decoder"].weights, encoder_y)[0], decoder_y) < 1e-5
    # The directory and its state file name the same checkpoint.
    for given in (tmp_path, tmp_path / "checkpoint"):
        again = TFCheckpointFormat().read(given, {})
        assert sorted(found.name for found in again.lstms) == ["decoder", "encoder"]
        assert any("ckpt-1" in note for note in again.lstms[0].notes)


def test_an_object_based_checkpoint_without_an_lstm_is_refused_naming_what_it_holds(tmp_path: Path) -> None:
    dense = tf_keras.layers.Dense(8)
    dense(tf.zeros((1, 12)))  # kernel [12, 8], bias [8]: shaped like a legacy cell of input 10, hidden 2
    tf.train.Checkpoint(dense=dense).write(str(tmp_path / "dense"))
    with pytest.raises(InputFileError) as raised:
        TFCheckpointFormat().read(tmp_path / "dense", {})
    message = str(raised.value)
    assert "\n" not in message
    assert re.search(r"kernels found: dense(_\d+)?/kernel", message)  # Keras numbers a session's layers


def _saver_model(cell: Any, directory: Path, step: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """What TF1 training code does: dynamic_rnn over ``cell``, Saver.save with its .meta graph. Returns x, y."""
    x_value = np.random.default_rng(5).normal(size=(STEPS, BATCH, 3))
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float64, [STEPS, BATCH, 3])
        y, _ = tf.compat.v1.nn.dynamic_rnn(cell(), x, dtype=tf.float64, time_major=True)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            rng = np.random.default_rng(6)
            for variable in tf.compat.v1.global_variables():
                session.run(variable.assign(rng.uniform(-0.9, 0.9, size=variable.shape.as_list())))
            tf.compat.v1.train.Saver().save(session, str(directory / "model.ckpt"), global_step=step)
            return x_value, np.asarray(session.run(y, {x: x_value}))


def test_basic_lstm_cell_forget_bias_is_read_from_the_meta_graph(tmp_path: Path) -> None:
    """The reported bug: BasicLSTMCell(forget_bias=0.0) converted 0.26 off because 1.0 was assumed."""
    x, expected = _saver_model(lambda: RNN.BasicLSTMCell(4, forget_bias=0.0, dtype=tf.float64), tmp_path, step=2)
    for given in ("model.ckpt-2", "model.ckpt", "model.ckpt-2.index", "checkpoint", "."):
        (found,) = TFCheckpointFormat().read(tmp_path / given, {}).lstms
        assert found.implementation_options == {"forget_bias": 0.0, "cell": "basic"}, given
        assert found.assumptions == [], given
        assert _relative(lstm_forward(found.weights, x).y, expected) < 1e-12, given


def test_lstm_cell_clips_activation_and_forget_bias_are_read_from_the_meta_graph(tmp_path: Path) -> None:
    def cell() -> Any:
        return RNN.LSTMCell(
            4,
            use_peepholes=True,
            cell_clip=0.8,
            num_proj=3,
            proj_clip=0.3,
            forget_bias=0.5,
            activation=tf.nn.relu,
            dtype=tf.float64,
        )

    x, expected = _saver_model(cell, tmp_path)
    (found,) = TFCheckpointFormat().read(tmp_path / "model.ckpt", {}).lstms
    relu = Activation("relu")
    assert found.weights.config == LSTMConfig(
        3,
        4,
        peepholes=True,
        proj_size=3,
        cell_clip=0.8,
        proj_clip=0.3,
        cell_input_activation=relu,
        cell_output_activation=relu,
    )
    assert found.implementation_options["forget_bias"] == 0.5
    assert found.assumptions == []
    assert _relative(lstm_forward(found.weights, x).y, expected) < 1e-12


def test_without_the_meta_graph_the_assumptions_are_said(tmp_path: Path) -> None:
    _saver_model(lambda: RNN.LSTMCell(4, dtype=tf.float64), tmp_path)
    (tmp_path / "model.ckpt.meta").unlink()
    (found,) = TFCheckpointFormat().read(tmp_path / "model.ckpt", {}).lstms
    assert found.batch_first is None
    assert any(text.startswith("assumed forget_bias=1.0") for text in found.assumptions)
    assert any("activation is not stored" in text and "cell_clip" in text for text in found.assumptions)


def test_a_directory_with_several_checkpoints_and_no_state_file_is_refused(tmp_path: Path) -> None:
    _saver_model(lambda: RNN.LSTMCell(4, dtype=tf.float64), tmp_path, step=1)
    _saver_model(lambda: RNN.LSTMCell(4, dtype=tf.float64), tmp_path, step=2)
    (found,) = TFCheckpointFormat().read(tmp_path, {}).lstms  # the state file names step 2
    assert any("model.ckpt-2" in note for note in found.notes)
    (tmp_path / "checkpoint").unlink()
    with pytest.raises(InputFileError, match=r"several checkpoints: model\.ckpt-1, model\.ckpt-2; pass one prefix"):
        TFCheckpointFormat().read(tmp_path, {})


# ----------------------------------------------------------------------------------------------------------
# Keras files: the file's own model runs (run_source); weights-only files say what they assume
# ----------------------------------------------------------------------------------------------------------


def _masked_keras3_model() -> Any:
    inputs = keras.Input((STEPS, 3))
    masked = keras.layers.Masking(mask_value=0.0)(inputs)
    hidden = keras.layers.LSTM(4, return_sequences=True, name="tagger")(masked)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    _randomize_keras(model, 7)
    return model


def test_a_keras3_model_runs_itself_with_its_mask(tmp_path: Path) -> None:
    from lstm_conformance.adapters.base import RunInputs, RunOptions
    from lstm_conformance.adapters.formats.keras_file import KerasFormat

    model = _masked_keras3_model()
    model.save(tmp_path / "tagger.keras")
    (found,) = KerasFormat().read(tmp_path / "tagger.keras", {}).lstms
    assert found.run_source is not None
    assert found.batch_first is True
    assert any("Masking(mask_value=0.0)" in note and "pack_padded_sequence" in note for note in found.notes)
    rng = np.random.default_rng(8)
    x = rng.normal(size=(BATCH, STEPS, 3)).astype(np.float32).astype(np.float64)  # exact in the float32 model
    lengths = np.array([STEPS, 2], dtype=np.int64)
    x[1, 2:] = 0.0  # padded as the Masking layer expects
    ran = found.run_source(RunInputs(x=x, seq_lens=lengths, batch_first=True), RunOptions())
    submodel = keras.Model(model.inputs, model.get_layer("tagger").output)
    lstm_output = submodel(x.astype(np.float32)).numpy()  # masked by the model's own Masking layer
    for sample, length in enumerate(lengths):
        valid = slice(0, int(length))
        assert _relative(ran.y[sample, valid], lstm_output[sample, valid]) < 1e-6
        assert _relative(ran.h_n[0, sample], lstm_output[sample, length - 1]) < 1e-6
    # What the project read computes what the file's own model computes.
    reference = lstm_forward(found.weights.astype(np.float64), x.swapaxes(0, 1), seq_lens=lengths)
    assert _relative(ran.h_n, reference.h_n) < 1e-5


def test_a_masked_keras_model_converts_with_its_masking_carried(tmp_path: Path) -> None:
    """convert carries the Masking layer into an ONNX sequence_lens input and a Keras Masking layer, proves
    each with per-sample lengths on both sides, and says plainly that a torch file holds none; the written
    files, run by ONNX Runtime and Keras alone, compute what the source model's own LSTM computes on padded x."""
    pytest.importorskip("onnxruntime", reason="ONNX Runtime runs the written file (pip install onnxruntime)")
    import onnxruntime

    from lstm_conformance import api

    model = _masked_keras3_model()
    model.save(tmp_path / "tagger.keras")
    x = np.random.default_rng(11).normal(size=(BATCH, STEPS, 3)).astype(np.float32)
    lengths = np.array([STEPS, 2])
    x[1, 2:] = 0.0  # padded as the Masking layer expects
    source_y = keras.Model(model.inputs, model.get_layer("tagger").output)(x).numpy()

    to_onnx = api.convert(tmp_path / "tagger.keras", tmp_path / "tagger.onnx")
    assert to_onnx.verified
    assert to_onnx.agreement is not None
    assert to_onnx.agreement.lengths
    session = onnxruntime.InferenceSession(str(tmp_path / "tagger.onnx"), providers=["CPUExecutionProvider"])
    assert "sequence_lens" in [graph_input.name for graph_input in session.get_inputs()]
    y = session.run(None, {"X": x.swapaxes(0, 1).copy(), "sequence_lens": lengths.astype(np.int32)})[0]
    for sample, length in enumerate(lengths):
        assert _relative(y.swapaxes(0, 1)[sample, :length], source_y[sample, :length]) < 1e-5

    to_keras = api.convert(tmp_path / "tagger.keras", tmp_path / "lstm.keras")
    assert to_keras.verified
    written = keras.saving.load_model(tmp_path / "lstm.keras")
    assert any(isinstance(layer, keras.layers.Masking) for layer in written.layers)
    written_y = np.asarray(written(x))
    for sample, length in enumerate(lengths):
        assert _relative(written_y[sample, :length], source_y[sample, :length]) < 1e-5

    to_torch = api.convert(tmp_path / "tagger.keras", tmp_path / "lstm.pt")
    assert to_torch.verified
    assert any("pack_padded_sequence" in note and "holds no masking" in note for note in to_torch.notes)


def _keras_archive_datasets(path: Path) -> set[str]:
    """The dataset paths of a .keras archive's model.weights.h5, read with h5py."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(path) as archive:
        data = archive.read("model.weights.h5")
    found: set[str] = set()
    with h5py.File(io.BytesIO(data), "r") as weights:
        weights.visititems(lambda name, item: found.add(name) if isinstance(item, h5py.Dataset) else None)
    return found


@pytest.mark.parametrize("implementation", ["reference", "native"])
def test_run_names_a_keras_models_gradients_as_its_file_does(tmp_path: Path, cli: Any, implementation: str) -> None:
    """``run --grad-output`` on a Keras model: grad/<name> for each of the LSTM's weights under the name the
    .keras file stores it by, equal to TensorFlow's own gradient of the model's layer (GradientTape), whatever
    implementation ran."""
    inputs = keras.Input((None, 3))
    hidden = keras.layers.Bidirectional(keras.layers.LSTM(4, return_sequences=True), name="encoder")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    _randomize_keras(model, 12)
    model.save(tmp_path / "model.keras")
    rng = np.random.default_rng(13)
    x, dy = rng.normal(size=(5, 2, 3)), rng.normal(size=(5, 2, 8))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "dy.npy", dy)
    status, _, err = cli(
        "run", tmp_path / "model.keras", "--implementation", implementation, "--input", tmp_path / "x.npy",
        "--grad-output", tmp_path / "dy.npy", "--output", tmp_path / "out.npz",
    )  # fmt: skip
    assert status == 0, err
    layer = model.get_layer("encoder")
    with tf.GradientTape() as tape:
        y = layer(tf.constant(x.swapaxes(0, 1), tf.float32))
        loss = tf.reduce_sum(y * tf.constant(dy.swapaxes(0, 1), tf.float32))
    expected = [g.numpy() for g in tape.gradient(loss, layer.trainable_weights)]
    with np.load(tmp_path / "out.npz") as result:
        names = [key for key in result.files if key.startswith("grad/")]
        got = [result[name] for name in names]
    assert len(names) == len(expected) == 6
    stored = _keras_archive_datasets(tmp_path / "model.keras")
    assert {name.removeprefix("grad/") for name in names} <= stored  # the file's own names
    for name, value, want in zip(names, got, expected, strict=True):
        assert value.shape == want.shape, name
        assert _relative(value, want) < 1e-5, name


def test_a_tf_keras_h5_model_with_hard_sigmoid_runs_itself(tmp_path: Path) -> None:
    from lstm_conformance.adapters.base import RunInputs, RunOptions
    from lstm_conformance.adapters.formats.keras_file import KerasH5Format

    model = tf_keras.Sequential(
        [tf_keras.layers.Input((STEPS, 3)), tf_keras.layers.LSTM(4, recurrent_activation="hard_sigmoid")]
    )
    _randomize_keras(model, 9)
    model.save(tmp_path / "model.h5")
    (found,) = KerasH5Format().read(tmp_path / "model.h5", {}).lstms
    assert found.implementation == "tf-keras"
    assert found.weights.config.gate_activation == Activation("hard_sigmoid_keras2")
    assert found.run_source is not None
    x = np.random.default_rng(10).normal(size=(STEPS, BATCH, 3)) * 3  # reaches hard_sigmoid's corners
    ran = found.run_source(RunInputs(x=x), RunOptions())
    expected = model.layers[0](x.swapaxes(0, 1).astype(np.float32)).numpy()
    assert _relative(ran.h_n[0], expected) < 1e-6
    assert _relative(lstm_forward(found.weights.astype(np.float64), x).h_n[0], expected) < 1e-5

    model.save_weights(tmp_path / "model.weights.h5")
    (weights_only,) = KerasH5Format().read(tmp_path / "model.weights.h5", {}).lstms
    assert weights_only.run_source is None
    assert weights_only.batch_first is None
    assert any("activations not stored" in text and "sigmoid" in text for text in weights_only.assumptions)


@pytest.mark.parametrize("file_name", ["model.keras", "model.h5"])
def test_tf_keras_hard_sigmoid_is_written_back_by_tf_keras_and_keeps_its_function(
    tmp_path: Path, file_name: str
) -> None:
    from lstm_conformance.adapters.formats import get_format, infer_format
    from lstm_conformance.reference.layout import random_weights

    config = LSTMConfig(3, 4, gate_activation=Activation("hard_sigmoid_keras2"))
    weights = random_weights(config, np.random.default_rng(11)).astype(np.float32)
    format_ = get_format(infer_format(tmp_path / file_name))
    notes = format_.write(tmp_path / file_name, weights, {})
    assert any("tf_keras.models.load_model" in note for note in notes)
    model = tf_keras.models.load_model(tmp_path / file_name, compile=False)  # tf_keras' own loader
    x = (np.random.default_rng(12).normal(size=(STEPS, BATCH, 3)) * 3).astype(np.float32)
    expected = model(x.swapaxes(0, 1)).numpy().swapaxes(0, 1)
    assert _relative(lstm_forward(weights.astype(np.float64), x.astype(np.float64)).y, expected) < 1e-5
    (read_back,) = format_.read(tmp_path / file_name, {}).lstms
    assert read_back.weights.config == config


def test_the_keras_h5_flavor_option_chooses_which_keras_writes(tmp_path: Path) -> None:
    from lstm_conformance.adapters.formats.keras_file import KerasH5Format
    from lstm_conformance.reference.errors import NotImplementedOptionError
    from lstm_conformance.reference.layout import random_weights

    weights = random_weights(LSTMConfig(3, 4), np.random.default_rng(13)).astype(np.float32)
    KerasH5Format().write(tmp_path / "keras2.h5", weights, {"flavor": "tf-keras"})
    KerasH5Format().write(tmp_path / "keras3.h5", weights, {"flavor": "keras3"})
    x = np.random.default_rng(14).normal(size=(BATCH, STEPS, 3)).astype(np.float32)
    expected = lstm_forward(weights.astype(np.float64), x.swapaxes(0, 1).astype(np.float64)).y.swapaxes(0, 1)
    for loaded in (
        tf_keras.models.load_model(tmp_path / "keras2.h5", compile=False),
        keras.saving.load_model(tmp_path / "keras3.h5", compile=False),
    ):
        assert _relative(loaded(x).numpy(), expected) < 1e-5
    with pytest.raises(NotImplementedOptionError, match="flavor 'keras3' or 'tf-keras', not 'keras4'"):
        KerasH5Format().write(tmp_path / "x.h5", weights, {"flavor": "keras4"})


@pytest.mark.parametrize(
    ("package", "file_name"), [("keras", "m.keras"), ("tf_keras", "m.h5"), ("tf_keras", "m.keras")]
)
def test_a_stacked_bidirectional_model_runs_itself_with_states_and_gradients(
    tmp_path: Path, package: str, file_name: str
) -> None:
    from lstm_conformance.adapters.base import RunInputs, RunOptions
    from lstm_conformance.adapters.formats import get_format, infer_format

    framework = keras if package == "keras" else tf_keras
    inputs = framework.Input((STEPS, 3))
    hidden = framework.layers.Bidirectional(framework.layers.LSTM(4, return_sequences=True))(inputs)
    model = framework.Model(
        inputs, framework.layers.Bidirectional(framework.layers.LSTM(4, return_sequences=True))(hidden)
    )
    _randomize_keras(model, 15)
    model.save(tmp_path / file_name)
    (found,) = get_format(infer_format(tmp_path / file_name)).read(tmp_path / file_name, {}).lstms
    assert found.weights.config == LSTMConfig(3, 4, num_layers=2, bidirectional=True)
    assert found.run_source is not None
    rng = np.random.default_rng(16)
    x = rng.normal(size=(STEPS, BATCH, 3))
    plain = found.run_source(RunInputs(x=x), RunOptions())
    own = model(x.swapaxes(0, 1).astype(np.float32)).numpy().swapaxes(0, 1)  # the loaded-from-file model's twin
    assert _relative(plain.y, own) < 1e-6
    h0, c0 = rng.normal(size=(4, BATCH, 4)), rng.normal(size=(4, BATCH, 4))
    ran = found.run_source(RunInputs(x=x, h0=h0, c0=c0, dy=np.ones((STEPS, BATCH, 8))), RunOptions())
    assert _relative(ran.h_n, lstm_forward(found.weights.astype(np.float64), x, h0, c0).h_n) < 1e-5
    assert ran.gradients is not None
    assert ran.gradients.x.shape == x.shape


def test_a_damaged_meta_graph_or_state_file_is_refused_in_one_line(tmp_path: Path) -> None:
    _saver_model(lambda: RNN.LSTMCell(4, dtype=tf.float64), tmp_path, step=3)
    (tmp_path / "checkpoint").write_text("this is not a checkpoint state {")
    with pytest.raises(InputFileError, match="not a readable checkpoint state file") as raised:
        TFCheckpointFormat().read(tmp_path / "checkpoint", {})
    assert "\n" not in str(raised.value)
    (tmp_path / "model.ckpt-3.meta").write_bytes(b"\x08\x96\x01garbage")
    with pytest.raises(InputFileError, match=r"model\.ckpt-3\.meta: not a readable MetaGraphDef") as raised:
        TFCheckpointFormat().read(tmp_path / "model.ckpt-3", {})
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("flavor", ["keras3", "tf-keras"])
def test_masking_is_carried_into_a_written_keras_model(tmp_path: Path, flavor: str) -> None:
    from lstm_conformance.adapters.formats.keras_file import KerasFormat
    from lstm_conformance.reference.layout import random_weights

    source = tmp_path / "masked.keras"
    _masked_keras3_model().save(source)
    (found,) = KerasFormat().read(source, {}).lstms
    assert found.mask_value == 0.0
    written = tmp_path / "written.keras"
    weights = random_weights(LSTMConfig(3, 4), np.random.default_rng(17)).astype(np.float32)
    KerasFormat().write(written, weights, {"mask_value": found.mask_value, "flavor": flavor})
    loader = keras.saving.load_model if flavor == "keras3" else tf_keras.models.load_model
    model = loader(written, compile=False)
    x = np.random.default_rng(18).normal(size=(BATCH, STEPS, 3)).astype(np.float32)
    lengths = np.array([STEPS, 3], dtype=np.int64)
    x[1, 3:] = 0.0
    got = model(x).numpy()
    expected = lstm_forward(weights.astype(np.float64), x.swapaxes(0, 1).astype(np.float64), seq_lens=lengths).y
    for sample, length in enumerate(lengths):
        assert _relative(got[sample, :length], expected[:length, sample]) < 1e-5
    (read_back,) = KerasFormat().read(written, {}).lstms
    assert read_back.mask_value == 0.0


def test_a_keras_lstm_layer_in_a_saver_checkpoint_is_read_in_keras_layout(tmp_path: Path) -> None:
    """A tf_keras LSTM layer built in a TF1 graph: its kernel is [I, 4H] beside a recurrent_kernel, never a TF1
    cell's [I + H, 4H] kernel."""
    x_value = np.random.default_rng(19).normal(size=(BATCH, STEPS, 9)).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        x = tf.compat.v1.placeholder(tf.float32, [BATCH, STEPS, 9])
        y = tf_keras.layers.LSTM(4, return_sequences=True)(x)
        with tf.compat.v1.Session(graph=graph) as session:
            session.run(tf.compat.v1.global_variables_initializer())
            tf.compat.v1.train.Saver().save(session, str(tmp_path / "model.ckpt"))
            expected = session.run(y, {x: x_value})
    (found,) = TFCheckpointFormat().read(tmp_path / "model.ckpt", {}).lstms
    assert found.weights.config == LSTMConfig(9, 4)
    assert found.implementation == "tf-keras"
    assert _relative(_reference(found.weights, x_value)[0], expected) < 1e-5
