"""Bad input to ``lstm-conformance``: exit 2, one line on stderr naming the problem and the fix, no traceback,
and no file left behind (the directory listing is checked before and after). Files are real: written by
torch.save, numpy.save, the canonical save_npz, or truncated copies of those."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lstm_conformance.reference.layout import LSTMConfig
from tests.conftest import Run, require_format
from tests.test_cli import listing, npz_file, torch_lstm_file

Make = Callable[[Path], list[str]]


def _truncated_torch(tmp: Path) -> list[str]:
    torch_lstm_file(tmp / "full.pt")
    data = (tmp / "full.pt").read_bytes()
    (tmp / "model.pt").write_bytes(data[: len(data) // 2])
    (tmp / "full.pt").unlink()
    return ["convert", "model.pt", "out.npz"]


def _truncated_npz(tmp: Path) -> list[str]:
    npz_file(tmp / "full.npz", LSTMConfig(input_size=3, hidden_size=4))
    data = (tmp / "full.npz").read_bytes()
    (tmp / "model.npz").write_bytes(data[: len(data) // 2])
    (tmp / "full.npz").unlink()
    return ["convert", "model.npz", "out.npz"]


def _npz_named_pt(tmp: Path) -> list[str]:
    pytest.importorskip("torch", reason="reading a .pt file needs torch")
    npz_file(tmp / "model.pt", LSTMConfig(input_size=3, hidden_size=4))
    return ["convert", "model.pt", "out.npz"]


def _torch_named_npz(tmp: Path) -> list[str]:
    torch_lstm_file(tmp / "model.npz")
    return ["inspect", "model.npz"]


def _npy_named_npz(tmp: Path) -> list[str]:
    np.save(tmp / "model.npy", np.zeros(3))
    (tmp / "model.npy").rename(tmp / "model.npz")
    return ["compare", "model.npz", "model.npz"]


def _garbage_keras(tmp: Path) -> list[str]:
    require_format("keras")
    (tmp / "model.keras").write_bytes(np.random.default_rng(0).bytes(2000))
    return ["convert", "model.keras", "out.npz"]


def _h5_named_keras(tmp: Path) -> list[str]:
    """A Keras model saved by Keras as HDF5, then renamed .keras (a common mix-up)."""
    require_format("keras")
    keras = pytest.importorskip("keras")
    model = keras.Sequential([keras.Input((2, 3)), keras.layers.LSTM(4)])
    model.save(tmp / "model.h5")
    (tmp / "model.h5").rename(tmp / "model.keras")
    return ["inspect", "model.keras"]


def _torch_named_keras(tmp: Path) -> list[str]:
    require_format("keras")
    torch_lstm_file(tmp / "model.keras")
    return ["convert", "model.keras", "out.npz"]


def _onnx_without_lstm(tmp: Path) -> list[str]:
    require_format("onnx")
    onnx = pytest.importorskip("onnx")
    helper, float32 = onnx.helper, onnx.TensorProto.FLOAT
    relu = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", float32, [2])],
        [helper.make_tensor_value_info("y", float32, [2])],
    )
    onnx.save(helper.make_model(relu), tmp / "relu.onnx")
    return ["convert", "relu.onnx", "out.npz"]


def _torch_as_onnx(tmp: Path) -> list[str]:
    require_format("onnx")
    torch_lstm_file(tmp / "model.pt")
    return ["inspect", "model.pt", "--from", "onnx"]


def _no_lstm(tmp: Path) -> list[str]:
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp / "linear.pt")
    return ["convert", "linear.pt", "out.npz"]


def _several_lstms(tmp: Path) -> list[str]:
    torch = pytest.importorskip("torch")
    torch.save(torch.nn.ModuleDict({"a": torch.nn.LSTM(2, 3), "b": torch.nn.LSTM(2, 3)}).state_dict(), tmp / "m.pt")
    return ["convert", "m.pt", "out.npz"]


def _unknown_select(tmp: Path) -> list[str]:
    return [*_several_lstms(tmp), "--select", "c"]


def _input_of_wrong_shape(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    np.save(tmp / "x.npy", np.zeros((5, 2, 4)))
    return ["run", "m.npz", "--implementation", "reference", "--input", "x.npy", "--output", "out.npz"]


def _h0_of_wrong_shape(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    np.save(tmp / "x.npy", np.zeros((5, 2, 3)))
    np.save(tmp / "h0.npy", np.zeros((1, 3, 4)))
    return ["run", "m.npz", "--implementation", "reference", "--input", "x.npy", "--h0", "h0.npy", "--output", "o.npz"]


def _float_lengths(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    np.save(tmp / "x.npy", np.zeros((5, 2, 3)))
    np.save(tmp / "lens.npy", np.array([5.0, 2.0]))
    return ["run", "m.npz", "--implementation", "reference", "--input", "x.npy", "--seq-lens", "lens.npy",
            "--output", "out.npz"]  # fmt: skip


def _unknown_implementation(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    np.save(tmp / "x.npy", np.zeros((5, 2, 3)))
    return ["run", "m.npz", "--implementation", "no-such", "--input", "x.npy", "--output", "out.npz"]


def _unknown_format(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    return ["convert", "m.npz", "out.bin", "--to", "no-such-format"]


def _unknown_suffix(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    return ["convert", "m.npz", "out.xyz"]


def _peepholes_into_torch(tmp: Path) -> list[str]:
    require_format("torch")
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4, peepholes=True))
    return ["convert", "m.npz", "out.pt", "--no-verify"]


def _projection_into_keras(tmp: Path) -> list[str]:
    require_format("keras")
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4, proj_size=2))
    return ["convert", "m.npz", "out.keras"]


def _missing_source(tmp: Path) -> list[str]:
    return ["convert", "nothing.pt", "out.npz"]


def _missing_checkpoint(tmp: Path) -> list[str]:
    require_format("tf-checkpoint")
    return ["inspect", "model.ckpt", "--from", "tf-checkpoint"]


def _missing_destination_directory(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    return ["convert", "m.npz", "no/such/dir/out.npz"]


def _forget_bias_without_tf(tmp: Path) -> list[str]:
    npz_file(tmp / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    return ["convert", "m.npz", "out.pt", "--forget-bias", "0.5"]


def _usage(tmp: Path) -> list[str]:
    return ["convert", "only-one-argument.pt"]


def _bad_steps(tmp: Path) -> list[str]:
    return ["compare", "a.npz", "b.npz", "--steps", "0"]


BAD_INPUTS: dict[str, tuple[Make, str]] = {
    "truncated-torch": (_truncated_torch, "model.pt: not a readable PyTorch file"),
    "truncated-torch-fix": (_truncated_torch, "may be truncated or damaged: write it again"),
    "truncated-npz": (_truncated_npz, "model.npz: "),
    "npz-named-pt": (_npz_named_pt, "model.pt: "),
    "torch-named-npz": (_torch_named_npz, "it is a PyTorch torch.save file: pass --from torch"),
    "npy-named-npz": (
        _npy_named_npz,
        "not an .npz (zip) file; it may be truncated or damaged: write it again, or if it is not npz, pass --from",
    ),
    "garbage-keras": (_garbage_keras, "model.keras"),
    "h5-named-keras": (
        _h5_named_keras,
        "model.keras: not a .keras file (not a zip archive, or a truncated one); "
        "it is a Keras HDF5 (.h5) file: pass --from keras-h5",
    ),
    "torch-named-keras": (
        _torch_named_keras,
        "not a Keras .keras file (no config.json and model.weights.h5 in it); "
        "it is a PyTorch torch.save file: pass --from torch",
    ),
    "onnx-without-lstm": (_onnx_without_lstm, "relu.onnx: no LSTM node in the ONNX graph (its ops: Relu)"),
    "torch-as-onnx": (_torch_as_onnx, "not a readable ONNX model (DecodeError"),
    "torch-as-onnx-fix": (_torch_as_onnx, "it is a PyTorch torch.save file: pass --from torch"),
    "no-lstm": (_no_lstm, "no nn.LSTM weights found"),
    "several-lstms": (_several_lstms, "holds 2 LSTMs: a, b; choose one with --select NAME"),
    "unknown-select": (_unknown_select, "no LSTM named 'c'; --select one of: a, b"),
    "input-wrong-shape": (_input_of_wrong_shape, "x: expected 3 input features"),
    "h0-wrong-shape": (_h0_of_wrong_shape, "h0: expected shape (1, 2, 4), found (1, 3, 4)"),
    "float-lengths": (_float_lengths, "must hold integers"),
    "unknown-implementation": (_unknown_implementation, "unknown implementation 'no-such'; known: reference"),
    "unknown-format": (_unknown_format, "unknown format 'no-such-format'; known: npz"),
    "unknown-suffix": (_unknown_suffix, "cannot tell the format of out.xyz from its name; pass --from/--to"),
    "peepholes-into-torch": (_peepholes_into_torch, "does not support peepholes"),
    "projection-into-keras": (_projection_into_keras, "proj_size"),
    "missing-source": (_missing_source, "nothing.pt: no such file; check the path"),
    "missing-checkpoint": (_missing_checkpoint, "model.ckpt: not a TF checkpoint prefix"),
    "missing-directory": (_missing_destination_directory, "no/such/dir: no such directory"),
    "forget-bias-without-tf": (_forget_bias_without_tf, "--forget-bias applies to tf-checkpoint files only"),
    "usage": (_usage, "the following arguments are required: DST; see 'lstm-conformance convert --help'"),
    "bad-steps": (_bad_steps, "expected a positive integer, got 0"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_exit_2_and_leaves_no_file(
    case: str, tmp_path: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    make, expected = BAD_INPUTS[case]
    argv = make(tmp_path)
    before = listing(tmp_path)
    monkeypatch.chdir(tmp_path)
    status, out, err = cli(*argv)
    assert status == 2, (out, err)
    assert out == ""
    assert err.count("\n") == 1, err
    assert err.startswith("lstm-conformance: error: "), err
    assert "Traceback" not in err
    assert expected in err, err
    assert listing(tmp_path) == before  # no partial output, no temporary file


def test_console_script_reports_bad_input_in_one_line(tmp_path: Path) -> None:
    """The installed entry point itself: exit 2, one stderr line, nothing on stdout."""
    npz_file(tmp_path / "m.npz", LSTMConfig(input_size=3, hidden_size=4))
    (tmp_path / "out.npz").write_bytes(b"")
    script = shutil.which("lstm-conformance", path=str(Path(sys.executable).parent))
    assert script, "the lstm-conformance console script is not installed beside this Python"
    done = subprocess.run(
        [script, "convert", "m.npz", "out.npz"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr == "lstm-conformance: error: out.npz exists; pass --force to overwrite it\n"
