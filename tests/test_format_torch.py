"""The torch (.pt/.pth) and safetensors file formats, on files written by torch.save and safetensors' own
save_file, and files read back by torch itself: found LSTMs, the function they compute, refusals."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.formats import FileFormat, get_format, infer_format
from lstm_conformance.adapters.formats.torch_file import SafetensorsFormat, TorchFormat
from lstm_conformance.adapters.pytorch import TorchLSTM, to_state_dict
from lstm_conformance.reference.errors import (
    InputFileError,
    LayoutError,
    NotImplementedOptionError,
    UnsupportedFeatureError,
)
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward

torch: Any = pytest.importorskip("torch")
safetensors_torch: Any = pytest.importorskip("safetensors.torch")
pytestmark = pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN")

SIZE = {"input_size": 3, "hidden_size": 5}


def random_lstm(**options: Any) -> Any:
    """A real nn.LSTM with every parameter random (biases too)."""
    module = torch.nn.LSTM(**{**SIZE, **options})
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(-0.8, 0.8)
    return module


class Encoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm = random_lstm(num_layers=2)


class Seq2Seq(torch.nn.Module):
    """A larger model: an embedding, two LSTMs under prefixes ("encoder.lstm", "decoder") and a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(7, 3)
        self.encoder = Encoder()
        self.decoder = torch.nn.LSTM(5, 6, bidirectional=True, proj_size=2)
        self.head = torch.nn.Linear(4, 7)


def assert_computes_like(weights: LSTMWeights, module: Any, seed: int = 0) -> None:
    """The adapter running ``weights`` and ``module`` itself give the same outputs (float64, ragged inputs)."""
    config = weights.config
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4, 3, config.input_size))
    lengths = np.array([2, 4, 1], dtype=np.int64)
    result = TorchLSTM().run(weights, RunInputs(x=x, seq_lens=lengths), RunOptions())
    module = module.double()
    packed = torch.nn.utils.rnn.pack_padded_sequence(torch.from_numpy(x), lengths.tolist(), enforce_sorted=False)
    with torch.no_grad():
        y, (h_n, c_n) = module(packed)
    y, _ = torch.nn.utils.rnn.pad_packed_sequence(y, total_length=4)
    for name, expected in (("y", y), ("h_n", h_n), ("c_n", c_n)):
        np.testing.assert_allclose(getattr(result, name), expected.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


def assert_weights_equal(weights: LSTMWeights, module: Any) -> None:
    """Bit for bit and in the stored dtype: canonical W, R, Wb, Rb, proj are torch's tensors unchanged."""
    written = to_state_dict(weights)
    state = module.state_dict()
    assert list(written) == list(state)
    for key, tensor in state.items():
        assert written[key].dtype == tensor.numpy().dtype, key
        assert np.array_equal(written[key], tensor.numpy()), key


# ----------------------------------------------------------------------------------------------------------
# Reading files written by torch.save and safetensors
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{}, {"num_layers": 2, "bidirectional": True, "proj_size": 2}, {"bias": False}],
    ids=["plain", "stacked_bidirectional_projection", "no_bias"],
)
def test_reads_a_torch_saved_lstm_state_dict(tmp_path: Path, options: dict[str, Any]) -> None:
    module = random_lstm(**options)
    path = tmp_path / "lstm.pt"
    torch.save(module.state_dict(), path)

    contents = TorchFormat().read(path, {})
    assert contents.other_tensors == []
    (found,) = contents.lstms
    assert (found.name, found.implementation) == ("", "torch")
    assert found.weights.config == LSTMConfig(**{**SIZE, **options})
    assert_weights_equal(found.weights, module)
    assert_computes_like(found.weights, module)


def test_reads_two_lstms_under_prefixes_and_lists_other_tensors(tmp_path: Path) -> None:
    model = Seq2Seq()
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)

    contents = TorchFormat().read(path, {})
    assert [found.name for found in contents.lstms] == ["decoder", "encoder.lstm"]
    assert contents.other_tensors == ["embedding.weight", "head.bias", "head.weight"]
    decoder, encoder = contents.lstms
    assert decoder.weights.config == LSTMConfig(5, 6, bidirectional=True, proj_size=2)
    assert encoder.weights.config == LSTMConfig(3, 5, num_layers=2)
    for found, module in ((decoder, model.decoder), (encoder, model.encoder.lstm)):
        assert_weights_equal(found.weights, module)
        assert_computes_like(found.weights, module)


@pytest.mark.parametrize("wrapper", ["state_dict", "model"])
def test_reads_a_checkpoint_wrapping_the_state_dict(tmp_path: Path, wrapper: str) -> None:
    model = Seq2Seq()
    path = tmp_path / "checkpoint.pt"
    torch.save({wrapper: model.state_dict(), "epoch": 3, "optimizer": {"lr": 0.1}}, path)

    contents = TorchFormat().read(path, {})
    assert [found.name for found in contents.lstms] == ["decoder", "encoder.lstm"]
    assert any(f"under {wrapper!r}" in note and "epoch" in note for note in contents.lstms[0].notes)
    assert_weights_equal(contents.lstms[1].weights, model.encoder.lstm)


def test_reads_safetensors_written_by_safetensors(tmp_path: Path) -> None:
    model = Seq2Seq()
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(model.state_dict(), str(path))

    contents = SafetensorsFormat().read(path, {})
    assert [found.name for found in contents.lstms] == ["decoder", "encoder.lstm"]
    assert contents.other_tensors == ["embedding.weight", "head.bias", "head.weight"]
    assert_weights_equal(contents.lstms[0].weights, model.decoder)
    assert_computes_like(contents.lstms[0].weights, model.decoder)


def test_bfloat16_files_read_as_float32_with_a_note(tmp_path: Path) -> None:
    module = random_lstm().to(torch.bfloat16)
    path = tmp_path / "half.pt"
    torch.save(module.state_dict(), path)
    (found,) = TorchFormat().read(path, {}).lstms
    assert found.weights.layers[0][0].W.dtype == np.float32
    assert np.array_equal(found.weights.layers[0][0].W, module.weight_ih_l0.float().detach().numpy())
    assert any("bfloat16" in note for note in found.notes)


def test_formats_are_registered_and_inferred() -> None:
    assert isinstance(get_format("torch"), TorchFormat)
    assert isinstance(get_format("safetensors"), SafetensorsFormat)
    assert infer_format(Path("a/model.pth")) == "torch"
    assert infer_format(Path("model.safetensors")) == "safetensors"


# ----------------------------------------------------------------------------------------------------------
# Writing: files torch itself loads into nn.LSTM, strict
# ----------------------------------------------------------------------------------------------------------

WRITTEN = {
    "plain": LSTMConfig(3, 5),
    "stacked_bidirectional_projection": LSTMConfig(3, 5, num_layers=2, bidirectional=True, proj_size=3),
    "no_bias": LSTMConfig(3, 4, num_layers=2, bias=False),
}


def load_back(format_: FileFormat, path: Path) -> dict[str, Any]:
    if isinstance(format_, SafetensorsFormat):
        loaded: dict[str, Any] = safetensors_torch.load_file(str(path))
        return loaded
    return torch.load(path, weights_only=True)


@pytest.mark.parametrize("format_", [TorchFormat(), SafetensorsFormat()], ids=lambda f: f.name)
@pytest.mark.parametrize("config_name", WRITTEN)
def test_written_file_loads_into_nn_lstm_strict_and_computes_the_reference(
    tmp_path: Path, format_: FileFormat, config_name: str
) -> None:
    config = WRITTEN[config_name]
    weights = random_weights(config, np.random.default_rng(4))
    path = tmp_path / "out.bin"
    notes = format_.write(path, weights, {})
    assert any("float64" in note and "nn.LSTM(input_size=3" in note for note in notes)

    state = load_back(format_, path)
    assert all(tensor.dtype == torch.float64 for tensor in state.values())  # the weights' own dtype, kept
    module = torch.nn.LSTM(
        config.input_size,
        config.hidden_size,
        config.num_layers,
        bias=config.bias,
        bidirectional=config.bidirectional,
        proj_size=config.proj_size,
        dtype=torch.float64,
    )
    module.load_state_dict(state, strict=True)
    x = np.random.default_rng(5).normal(size=(4, 2, 3))
    with torch.no_grad():
        y, (h_n, c_n) = module(torch.from_numpy(x))
    expected = lstm_forward(weights, x)
    np.testing.assert_allclose(y.numpy(), expected.y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(h_n.numpy(), expected.h_n, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(c_n.numpy(), expected.c_n, rtol=1e-10, atol=1e-12)

    (found,) = format_.read(path, {}).lstms  # and back, bit for bit
    for key, value in weights.named_arrays().items():
        assert np.array_equal(found.weights.named_arrays()[key], value), key


@pytest.mark.parametrize("format_", [TorchFormat(), SafetensorsFormat()], ids=lambda f: f.name)
def test_written_dtype_follows_the_option(tmp_path: Path, format_: FileFormat) -> None:
    weights = random_weights(WRITTEN["plain"], np.random.default_rng(6))
    path = tmp_path / "out.bin"
    notes = format_.write(path, weights, {"dtype": "float32"})
    assert any("in float32" in note for note in notes)
    state = load_back(format_, path)
    assert state["weight_hh_l0"].dtype == torch.float32
    assert np.array_equal(state["weight_hh_l0"].numpy(), weights.layers[0][0].R.astype(np.float32))
    with pytest.raises(UnsupportedFeatureError, match="dtype 'int8'"):
        format_.write(tmp_path / "other.bin", weights, {"dtype": "int8"})
    with pytest.raises(NotImplementedOptionError, match="forget_bias"):
        format_.write(tmp_path / "other.bin", weights, {"forget_bias": 1.0})


@pytest.mark.parametrize(
    ("config", "feature"),
    [
        (LSTMConfig(3, 4, peepholes=True), "peepholes"),
        (LSTMConfig(3, 4, cell_clip=1.0), "cell_clip"),
        (LSTMConfig(3, 4, input_forget=True), "input_forget"),
    ],
)
def test_writing_refuses_features_nn_lstm_lacks(tmp_path: Path, config: LSTMConfig, feature: str) -> None:
    weights = random_weights(config, np.random.default_rng(0))
    with pytest.raises(UnsupportedFeatureError, match=f"PyTorch does not support {feature}"):
        TorchFormat().write(tmp_path / "x.pt", weights, {})
    assert not (tmp_path / "x.pt").exists()


def test_writing_refuses_nonzero_biases_without_bias(tmp_path: Path) -> None:
    trained = random_weights(LSTMConfig(3, 4), np.random.default_rng(0))
    weights = LSTMWeights(LSTMConfig(3, 4, bias=False), trained.layers)
    with pytest.raises(LayoutError, match="bias=False"):
        TorchFormat().write(tmp_path / "x.pt", weights, {})


# ----------------------------------------------------------------------------------------------------------
# Bad files
# ----------------------------------------------------------------------------------------------------------


def _write_marker(path: str) -> None:
    """What a malicious pickle would run; reading must never call it."""
    Path(path).write_text("ran")


class Payload:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_write_marker, (str(self.marker),))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_pickled_payload_is_refused_and_never_runs(tmp_path: Path, zip_format: bool) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    state = dict(random_lstm().state_dict(), extra=Payload(marker))
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(InputFileError, match=rf"{path}: refused, it holds pickled Python objects"):
        TorchFormat().read(path, {})
    assert not marker.exists()


def test_a_plain_pickle_and_a_whole_module_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = tmp_path / "plain.pt"
    path.write_bytes(pickle.dumps({"weight_ih_l0": Payload(marker)}, protocol=2))
    with pytest.raises(InputFileError, match=r"refused, it holds pickled Python objects \(tests\..*_write_marker\)"):
        TorchFormat().read(path, {})
    assert not marker.exists()
    torch.save(random_lstm(), path)
    with pytest.raises(InputFileError, match=r"save model\.state_dict\(\) instead"):
        TorchFormat().read(path, {})


def torch_bytes(obj: object) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def npz_bytes() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, weight_ih_l0=np.zeros((8, 3)))
    return buffer.getvalue()


BAD_TORCH_FILES = {
    "random_bytes": lambda: np.random.default_rng(0).bytes(300),
    "text": lambda: b"weight_ih_l0 = [1, 2, 3]\n",
    "truncated": lambda: torch_bytes(random_lstm().state_dict())[:900],
    "npz_content": npz_bytes,
    "safetensors_content": lambda: safetensors_torch.save(random_lstm().state_dict()),
}


@pytest.mark.parametrize("content", BAD_TORCH_FILES)
def test_corrupt_or_foreign_torch_files_give_input_file_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(BAD_TORCH_FILES[content]())
    with pytest.raises(InputFileError, match=rf"^{path}: not a readable PyTorch file \(corrupt, truncated") as raised:
        TorchFormat().read(path, {})
    assert "\n" not in str(raised.value)


BAD_SAFETENSORS_FILES = {
    "random_bytes": lambda: np.random.default_rng(0).bytes(300),
    "truncated": lambda: safetensors_torch.save(random_lstm().state_dict())[:-16],
    "torch_content": lambda: torch_bytes(random_lstm().state_dict()),
}


@pytest.mark.parametrize("content", BAD_SAFETENSORS_FILES)
def test_corrupt_or_foreign_safetensors_files_give_input_file_error(tmp_path: Path, content: str) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(BAD_SAFETENSORS_FILES[content]())
    with pytest.raises(InputFileError, match=rf"^{path}: not a readable safetensors file"):
        SafetensorsFormat().read(path, {})


def test_empty_missing_and_lstm_less_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match="the file is empty"):
        TorchFormat().read(empty, {})
    with pytest.raises(InputFileError, match="no such file"):
        TorchFormat().read(tmp_path / "absent.pt", {})
    linear = tmp_path / "linear.pt"
    torch.save(torch.nn.Linear(2, 3).state_dict(), linear)
    with pytest.raises(InputFileError, match=r"no nn.LSTM weights found.*tensors in the file: bias, weight"):
        TorchFormat().read(linear, {})
    tensor = tmp_path / "tensor.pt"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(InputFileError, match="holds a Tensor, not a state_dict"):
        TorchFormat().read(tensor, {})


def test_inconsistent_shapes_name_the_lstm_key_expected_and_found(tmp_path: Path) -> None:
    state = Seq2Seq().state_dict()
    state["encoder.lstm.weight_hh_l1"] = torch.zeros(20, 4)
    path = tmp_path / "bad_shapes.pt"
    torch.save(state, path)
    with pytest.raises(
        InputFileError,
        match=r"the LSTM 'encoder.lstm' .*weight_hh_l1: expected shape \(20, 5\).*found \(20, 4\)",
    ):
        TorchFormat().read(path, {})
    state = random_lstm().state_dict()
    state["bias_ih_l0"] = torch.zeros(20, dtype=torch.int64)
    torch.save(state, path)
    with pytest.raises(InputFileError, match=r"holds torch.int64 tensors; save it in float32 or float64"):
        TorchFormat().read(path, {})


FIXES = {
    ("torch", "npz_content"): "it is a NumPy .npz file: pass --from npz",
    ("torch", "safetensors_content"): "it is a safetensors file: pass --from safetensors",
    ("torch", "truncated"): "it may be truncated or damaged: write it again",
    ("safetensors", "torch_content"): "it is a PyTorch torch.save file: pass --from torch",
    ("safetensors", "truncated"): "it may be truncated or damaged: write it again",
}


@pytest.mark.parametrize(("format_name", "content"), FIXES)
def test_unreadable_file_message_names_the_fix(tmp_path: Path, format_name: str, content: str) -> None:
    """A foreign file's bytes name the --from that reads it; a damaged one is to be written again."""
    files = BAD_TORCH_FILES if format_name == "torch" else BAD_SAFETENSORS_FILES
    reader = TorchFormat() if format_name == "torch" else SafetensorsFormat()
    path = tmp_path / f"model.{'pt' if format_name == 'torch' else 'safetensors'}"
    path.write_bytes(files[content]())
    with pytest.raises(InputFileError) as raised:
        reader.read(path, {})
    assert FIXES[format_name, content] in str(raised.value)
