"""Keras model files, written by Keras 3 and tf_keras themselves, read and written by adapters.formats.keras_file.

One model per framework (two stacked LSTMs with the framework's own hard_sigmoid, a Bidirectional LSTM, a Dense
layer) is saved as .keras, .h5 and .weights.h5 once per module; what is read must compute what Keras computed.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.formats import get_format
from lstm_conformance.adapters.formats.keras_file import KerasFormat, KerasH5Format
from lstm_conformance.adapters.keras_layer import import_keras
from lstm_conformance.adapters.layouts.keras import KERAS3, TF_KERAS, KerasFlavor
from lstm_conformance.reference.errors import InputFileError, UnsupportedFeatureError
from lstm_conformance.reference.layout import Activation, LSTMConfig, random_weights
from lstm_conformance.reference.lstm import lstm_forward

pytest.importorskip("tensorflow", reason="writing the test files needs TensorFlow (pip install tensorflow-cpu)")
pytest.importorskip("h5py", reason="Keras files are HDF5 (pip install h5py)")

# tf_keras warns that .h5 is a legacy format: writing one is the point here.
pytestmark = pytest.mark.filterwarnings("ignore:You are saving your model as an HDF5 file")

FLOAT32 = 1e-5
INPUT = 3


def _keras(flavor: KerasFlavor) -> Any:
    pytest.importorskip(flavor.module, reason=f"{flavor.framework} is not installed")
    return import_keras(flavor)


def _relative(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected) / np.linalg.norm(expected))


class SavedModel:
    """A real model saved by one framework, with what it computes on ``x``: the stack's and the
    Bidirectional's output sequences."""

    def __init__(self, flavor: KerasFlavor, folder: Path) -> None:
        keras = _keras(flavor)
        rng = np.random.default_rng(11)
        inputs = keras.Input(shape=(None, INPUT))
        # Named explicitly: other tests in the process move Keras' automatic name counters.
        stacked = keras.layers.LSTM(4, return_sequences=True, recurrent_activation="hard_sigmoid", name="lstm")(inputs)
        stacked = keras.layers.LSTM(4, return_sequences=True, recurrent_activation="hard_sigmoid", name="lstm_1")(
            stacked
        )
        both = keras.layers.Bidirectional(keras.layers.LSTM(5, return_sequences=True), name="bidirectional")(stacked)
        dense = keras.layers.Dense(2, name="dense")(both)
        model = keras.Model(inputs, [stacked, both, dense])
        for layer in model.layers:
            layer.set_weights([rng.uniform(-1, 1, size=w.shape).astype(w.dtype) for w in layer.get_weights()])
        self.flavor = flavor
        self.x = rng.normal(size=(2, 6, INPUT)).astype(np.float32)
        self.stacked, self.both, _ = (np.asarray(y, dtype=np.float64) for y in model(self.x))
        tag = flavor.module
        self.paths = {kind: folder / f"{tag}{kind}" for kind in (".keras", ".h5", ".weights.h5")}
        model.save(str(self.paths[".keras"]))
        model.save(str(self.paths[".h5"]))
        model.save_weights(str(self.paths[".weights.h5"]))


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SavedModel]:
    folder = tmp_path_factory.mktemp("keras-files")
    models = {}
    for flavor in (KERAS3, TF_KERAS):
        try:
            models[flavor.implementation] = SavedModel(flavor, folder)
        except pytest.skip.Exception:
            continue
    return models


def _model(saved: dict[str, SavedModel], name: str) -> SavedModel:
    if name not in saved:
        pytest.skip(f"{name} is not installed")
    return saved[name]


def _read(path: Path) -> Any:
    fmt = KerasFormat() if path.name.endswith(".keras") else KerasH5Format()
    return fmt.read(path, {})


@pytest.mark.parametrize("kind", [".keras", ".h5"])
@pytest.mark.parametrize("name", ["keras", "tf-keras"])
def test_full_model_files(saved: dict[str, SavedModel], name: str, kind: str) -> None:
    model = _model(saved, name)
    contents = _read(model.paths[kind])
    found = {lstm.name: lstm for lstm in contents.lstms}
    assert sorted(found) == ["bidirectional", "lstm"]
    stack, both = found["lstm"], found["bidirectional"]
    assert stack.weights.config == LSTMConfig(
        INPUT, 4, num_layers=2, gate_activation=Activation(model.flavor.hard_sigmoid)
    )
    assert "lstm, lstm_1" in " ".join(stack.notes)
    assert both.weights.config == LSTMConfig(4, 5, bidirectional=True)
    assert {stack.implementation, both.implementation} == {name}
    assert stack.batch_first
    assert len(contents.other_tensors) == 2
    assert all("dense" in tensor for tensor in contents.other_tensors)
    x = model.x.astype(np.float64)
    assert _relative(lstm_forward(stack.weights, x, batch_first=True).y, model.stacked) < FLOAT32
    assert _relative(lstm_forward(both.weights, model.stacked, batch_first=True).y, model.both) < FLOAT32


@pytest.mark.parametrize("name", ["keras", "tf-keras"])
def test_weights_only_files(saved: dict[str, SavedModel], name: str) -> None:
    model = _model(saved, name)
    contents = _read(model.paths[".weights.h5"])
    found = {lstm.name: lstm for lstm in contents.lstms}
    # No config: the stack comes back as separate layers with default activations, and the notes say so.
    assert sorted(found) == ["bidirectional", "lstm", "lstm_1"]
    assert found["lstm"].weights.config == LSTMConfig(INPUT, 4)
    assert all("no config" in " ".join(lstm.notes) for lstm in contents.lstms)
    assert {lstm.implementation for lstm in contents.lstms} == {name}
    both = found["bidirectional"].weights
    assert _relative(lstm_forward(both, model.stacked, batch_first=True).y, model.both) < FLOAT32
    # The stack's weights are the full model's, bit for bit.
    full = {lstm.name: lstm for lstm in _read(model.paths[".h5"]).lstms}["lstm"].weights
    for key, array in found["lstm_1"].weights.named_arrays().items():
        np.testing.assert_array_equal(array, full.named_arrays()[key.replace("layers.0", "layers.1")])


def test_written_keras_file_loads_and_computes_the_reference(tmp_path: Path) -> None:
    keras = _keras(KERAS3)
    config = LSTMConfig(INPUT, 4, num_layers=2, bidirectional=True, gate_activation=Activation("hard_sigmoid_keras3"))
    weights = random_weights(config, np.random.default_rng(5), scale=1.0)
    path = tmp_path / "written.tmp"  # the command line writes to a temporary name, then renames
    notes = get_format("keras").write(path, weights, {})
    assert "float64" in notes[0]
    final = path.rename(tmp_path / "written.keras")
    loaded = keras.saving.load_model(str(final))
    x = np.random.default_rng(6).normal(size=(2, 7, INPUT))
    y = np.asarray(loaded(x), dtype=np.float64)
    expected = lstm_forward(weights, x, batch_first=True).y
    assert y.shape == (2, 7, 8)
    assert _relative(y, expected) < 1e-10
    again = KerasFormat().read(final, {}).lstms
    assert len(again) == 1
    assert again[0].weights.config == config
    assert _relative(lstm_forward(again[0].weights, x, batch_first=True).y, expected) < 1e-12


@pytest.mark.parametrize("kind", [".keras", ".h5", ".weights.h5"])
def test_read_write_read_is_bit_identical(saved: dict[str, SavedModel], tmp_path: Path, kind: str) -> None:
    model = _model(saved, "keras")
    first = {lstm.name: lstm for lstm in _read(model.paths[kind]).lstms}["bidirectional"].weights
    path = tmp_path / f"again{kind}"
    (KerasFormat() if kind == ".keras" else KerasH5Format()).write(path, first, {})
    second = {lstm.name: lstm for lstm in _read(path).lstms}["bidirectional"].weights
    assert second.config == first.config
    for key, array in first.named_arrays().items():
        assert array.dtype == np.float32
        np.testing.assert_array_equal(second.named_arrays()[key], array)


@pytest.mark.parametrize(
    ("config", "feature"),
    [
        (LSTMConfig(INPUT, 4, gate_activation=Activation("hard_sigmoid_keras2")), "hard_sigmoid_keras2"),
        (LSTMConfig(INPUT, 4, proj_size=2), "proj_size"),
        (LSTMConfig(INPUT, 4, peepholes=True), "peepholes"),
    ],
)
def test_write_refuses_what_keras_3_lacks(tmp_path: Path, config: LSTMConfig, feature: str) -> None:
    weights = random_weights(config, np.random.default_rng(0))
    path = tmp_path / "refused.keras"
    with pytest.raises(UnsupportedFeatureError, match=feature):
        KerasFormat().write(path, weights, {"flavor": "keras3"})  # by default tf_keras writes hard_sigmoid_keras2
    assert not path.exists()


def test_lstms_the_canonical_layout_cannot_hold(tmp_path: Path) -> None:
    keras = _keras(KERAS3)
    model = keras.Sequential(
        [
            keras.Input(shape=(None, INPUT)),
            keras.layers.LSTM(4, return_sequences=True, name="first"),
            keras.layers.LSTM(4, return_sequences=True, go_backwards=True, name="backwards"),
            keras.layers.Bidirectional(keras.layers.LSTM(3, return_sequences=True), merge_mode="sum", name="summed"),
        ]
    )
    path = tmp_path / "odd.keras"
    model.save(str(path))
    contents = KerasFormat().read(path, {})
    assert [lstm.name for lstm in contents.lstms] == ["first"]
    assert contents.lstms[0].weights.config == LSTMConfig(INPUT, 4)
    notes = " ".join(contents.lstms[0].notes)
    assert "'backwards' has go_backwards=True" in notes
    assert "'summed' merges with 'sum'" in notes
    # Weights sit under Keras' storage keys (class name, numbered), not under the layer names.
    assert sorted(contents.other_tensors) == sorted(
        [f"layers/lstm_1/cell/vars/{i}" for i in range(3)]
        + [f"layers/bidirectional/{side}_layer/cell/vars/{i}" for side in ("forward", "backward") for i in range(3)]
    )

    only_odd = keras.Sequential(
        [keras.Input(shape=(None, INPUT)), keras.layers.LSTM(4, go_backwards=True), keras.layers.Dense(1)]
    )
    odd_path = tmp_path / "backwards.keras"
    only_odd.save(str(odd_path))
    with pytest.raises(InputFileError, match="go_backwards"):
        KerasFormat().read(odd_path, {})


def test_no_lstm(tmp_path: Path) -> None:
    keras = _keras(KERAS3)
    model = keras.Sequential([keras.Input(shape=(INPUT,)), keras.layers.Dense(2, name="head")])
    path = tmp_path / "dense.keras"
    model.save(str(path))
    with pytest.raises(InputFileError, match=r"no LSTM .*head \(Dense\)"):
        KerasFormat().read(path, {})


def test_damaged_files(saved: dict[str, SavedModel], tmp_path: Path) -> None:
    model = _model(saved, "keras")
    cases: dict[str, bytes] = {}
    for kind in (".keras", ".h5", ".weights.h5"):
        data = model.paths[kind].read_bytes()
        cases[f"truncated{kind}"] = data[: len(data) // 2]
    cases["text.keras"] = b"this is not a model\n"
    cases["text.h5"] = b"this is not a model\n"
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(InputFileError) as error:
            _read(path)
        assert str(path) in str(error.value)

    foreign = tmp_path / "foreign.keras"
    with zipfile.ZipFile(foreign, "w") as archive:
        archive.writestr("readme.txt", "a zip, but no Keras model")
    with pytest.raises(InputFileError, match=r"not a Keras \.keras file"):
        KerasFormat().read(foreign, {})

    import h5py

    plain = tmp_path / "plain.h5"
    with h5py.File(plain, "w") as handle:
        handle["data"] = np.arange(3.0)
    with pytest.raises(InputFileError, match="not one Keras wrote"):
        KerasH5Format().read(plain, {})


def test_refuses_options(saved: dict[str, SavedModel]) -> None:
    model = _model(saved, "keras")
    with pytest.raises(NotImplementedError, match="forget_bias"):
        KerasFormat().read(model.paths[".keras"], {"forget_bias": 1.0})
