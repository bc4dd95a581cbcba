"""What ``convert`` proves and how it says it: "verified" only when the source file itself ran (its reader's
``run_source``), "under assumptions" otherwise with every assumption on stderr; gradients compared; the
tensors not carried listed; and ``run`` naming gradients as in MODEL whatever implementation ran.

The run_source here is a real one: the .pt file loaded by torch into an nn.LSTM and run with torch's autograd.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import Gradients, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats import FORMATS, ModelContents, SourceRunner
from lstm_conformance.adapters.formats.torch_file import TorchFormat
from lstm_conformance.reference.layout import GATES, LSTMConfig, random_weights, save_npz
from tests.conftest import Run, require_format
from tests.test_cli import assumptions_only


def torch_module_runner(path: Path, config: LSTMConfig) -> SourceRunner:
    """Runs the .pt file itself: torch.load into an nn.LSTM of its config, forward and autograd in torch."""

    def run(inputs: RunInputs, options: RunOptions) -> RunResult:
        import torch

        from lstm_conformance.adapters.pytorch import from_state_dict

        dtype = getattr(torch, options.dtype)
        lstm = torch.nn.LSTM(
            config.input_size, config.hidden_size, num_layers=config.num_layers, bidirectional=config.bidirectional
        )
        lstm.load_state_dict(torch.load(path, weights_only=True), strict=True)
        lstm = lstm.to(dtype)
        x, h0, c0 = (torch.tensor(a, dtype=dtype, requires_grad=True) for a in (inputs.x, inputs.h0, inputs.c0))
        y, (h_n, c_n) = lstm(x, (h0, c0))
        gradients = None
        if inputs.wants_gradients:
            cotangents = [torch.tensor(a, dtype=dtype) for a in (inputs.dy, inputs.dh_n, inputs.dc_n)]
            loss = sum((out * dout).sum() for out, dout in zip((y, h_n, c_n), cotangents, strict=True))
            loss.backward()
            native = {name: p.grad.double().numpy() for name, p in lstm.named_parameters()}
            gradients = Gradients(
                x=x.grad.double().numpy(),
                h0=h0.grad.double().numpy(),
                c0=c0.grad.double().numpy(),
                weights=from_state_dict(native, config),
                native=native,
            )
        y_out, h_out, c_out = (t.detach().double().numpy() for t in (y, h_n, c_n))
        return RunResult(y=y_out, h_n=h_out, c_n=c_out, math_mode=options.dtype, gradients=gradients)

    return run


class TorchFileRunsItself(TorchFormat):
    """The torch reader, its LSTMs carrying a run_source that runs the file with torch itself."""

    name = "torch-runs-itself"

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        contents = super().read(path, options)
        for found in contents.lstms:
            found.run_source = torch_module_runner(path, found.weights.config)
            found.assumptions = []  # the file runs as nn.LSTM(batch_first=False) loads it: nothing is assumed
        return contents


class TorchFileMisread(TorchFileRunsItself):
    """A reader with a bug (gates f and g read swapped in layer 0), its run_source still the real file: the
    proof must catch the misreading that a check against the reading itself would certify."""

    name = "torch-misread"

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        contents = super().read(path, options)
        layer = contents.lstms[0].weights.layers[0][0]
        hidden = contents.lstms[0].weights.config.hidden_size
        f, g = (slice(GATES.index(n) * hidden, (GATES.index(n) + 1) * hidden) for n in ("f", "g"))
        for name in ("W", "R", "Wb", "Rb"):
            array = getattr(layer, name)
            array[f], array[g] = array[g].copy(), array[f].copy()
        return contents


def torch_file(path: Path, *, seed: int = 0, **sizes: Any) -> Any:
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(3, 5, **sizes)
    torch.save(lstm.state_dict(), path)
    return lstm


# ----------------------------------------------------------------------------------------------------------
# convert: verified, under assumptions, failed
# ----------------------------------------------------------------------------------------------------------


def test_convert_says_verified_only_when_the_source_file_itself_ran(
    tmp_path: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_format("torch")
    monkeypatch.setitem(FORMATS, TorchFileRunsItself.name, f"{__name__}:TorchFileRunsItself")
    torch_file(tmp_path / "a.pt", num_layers=2, bidirectional=True)

    status, out, err = cli("convert", tmp_path / "a.pt", tmp_path / "b.pt", "--from", TorchFileRunsItself.name)
    assert (status, err) == (0, ""), out
    line = out.splitlines()[-1]
    assert line.startswith("  verified: torch (float64, the file itself) vs torch (float64)"), out
    assert "gradients worst" in line
    assert "over 19 tensors" in line  # x, h0, c0 and 16 parameters
    assert "under assumptions" not in out

    # The same file through the plain reader (no run_source): the same numbers, but never "verified".
    status, out, err = cli("convert", tmp_path / "a.pt", tmp_path / "c.pt")
    assert (status, assumptions_only(err)) == (0, True), out
    assert "verified:" not in out
    result_line = out.splitlines()[-1]
    assert result_line.startswith("  weights converted under assumptions (2 said on stderr; the source ran as read")


def test_convert_catches_a_misreading_because_the_source_file_ran(
    tmp_path: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    require_format("torch")
    monkeypatch.setitem(FORMATS, TorchFileMisread.name, f"{__name__}:TorchFileMisread")
    torch_file(tmp_path / "a.pt")
    status, out, _ = cli("convert", tmp_path / "a.pt", tmp_path / "b.npz", "--from", TorchFileMisread.name)
    assert status == 1, out
    assert "FAILED: torch (float64, the file itself) vs reference (float64)" in out
    assert "NOT VERIFIED" in out
    assert not (tmp_path / "b.npz").exists()


def test_convert_under_assumptions_says_each_on_stderr(tmp_path: Path, cli: Run) -> None:
    require_format("torch")
    torch_file(tmp_path / "a.pt")
    status, out, err = cli("convert", tmp_path / "a.pt", tmp_path / "b.npz")
    assert status == 0, out
    said = err.splitlines()
    assert len(said) == 2, err  # a state_dict stores neither the batch layout nor whether batches are packed
    assert all(line.startswith("lstm-conformance: assumption: ") for line in said), err
    assert "batch layout not stored" in said[0], err
    assert "pack_padded_sequence" in said[1], err
    assert "weights converted under assumptions (2 said on stderr;" in out
    assert "verified:" not in out


def test_convert_lists_what_it_did_not_carry(tmp_path: Path, cli: Run) -> None:
    torch = pytest.importorskip("torch")
    require_format("torch")
    model = torch.nn.ModuleDict(
        {"embedding": torch.nn.Embedding(7, 3), "lstm": torch.nn.LSTM(3, 4), "head": torch.nn.Linear(4, 2)}
    )
    torch.save(model.state_dict(), tmp_path / "model.pt")
    status, out, _ = cli("convert", tmp_path / "model.pt", tmp_path / "out.npz")
    assert status == 0, out
    assert "  not carried: embedding.weight, head.bias, head.weight (3 tensors)" in out.splitlines()


def test_compare_json_carries_gradients_and_says_forward_only_for_onnxruntime(tmp_path: Path, cli: Run) -> None:
    require_format("torch")
    require_format("onnx")
    torch_file(tmp_path / "a.pt", bidirectional=True)
    assert cli("convert", tmp_path / "a.pt", tmp_path / "b.npz")[0] == 0
    status, out, err = cli("compare", tmp_path / "a.pt", tmp_path / "b.npz", "--json")
    assert (status, assumptions_only(err)) == (0, True), out
    result = json.loads(out)
    assert result["agree"] is True
    assert set(result["outputs"]) == {"y", "h_n", "c_n"}
    assert {"grad_x", "grad_h0", "grad_c0", "grad[layers.0.reverse.R]"} <= set(result["gradients"])
    assert all(item["fraction"] <= 1.0 for item in result["gradients"].values())
    assert result["forward_only"] == ""

    assert cli("convert", tmp_path / "a.pt", tmp_path / "c.onnx")[0] == 0
    status, out, _ = cli("compare", tmp_path / "a.pt", tmp_path / "c.onnx", "--json")
    assert status == 0, out
    result = json.loads(out)
    assert result["gradients"] == {}
    assert result["forward_only"] == "forward only: onnxruntime computes no gradients"


# ----------------------------------------------------------------------------------------------------------
# run: grad/<name> as in MODEL, whatever implementation ran
# ----------------------------------------------------------------------------------------------------------


def _save_inputs(directory: Path, steps: int, batch: int, config: LSTMConfig, seed: int = 4) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    states = config.num_layers * config.num_directions
    arrays = {
        "x": rng.standard_normal((steps, batch, config.input_size)),
        "h0": rng.standard_normal((states, batch, config.hidden_size)),
        "c0": rng.standard_normal((states, batch, config.hidden_size)),
        "dy": rng.standard_normal((steps, batch, config.num_directions * config.hidden_size)),
    }
    for name, value in arrays.items():
        np.save(directory / f"{name}.npy", value)
    return arrays


def _run_gradients(cli: Run, model: Path, implementation: str, directory: Path, *extra: object) -> dict[str, Any]:
    output = directory / f"{implementation}.npz"
    status, out, err = cli(
        "run", model, "--implementation", implementation, "--input", directory / "x.npy",
        "--h0", directory / "h0.npy", "--c0", directory / "c0.npy", "--grad-output", directory / "dy.npy",
        "--output", output, *extra,
    )  # fmt: skip
    assert (status, err) == (0, ""), out
    with np.load(output) as result:
        return {key.removeprefix("grad/"): result[key] for key in result.files if key.startswith("grad/")}


def test_run_reference_names_gradients_as_the_torch_file_does(tmp_path: Path, cli: Run) -> None:
    """--implementation reference on a torch file: grad/<state_dict key>, each equal to torch's own autograd
    gradient of that parameter (both biases get the same gradient)."""
    torch = pytest.importorskip("torch")
    require_format("torch")
    lstm = torch_file(tmp_path / "m.pt", num_layers=2, bidirectional=True, seed=3).double()
    config = LSTMConfig(input_size=3, hidden_size=5, num_layers=2, bidirectional=True)
    arrays = _save_inputs(tmp_path, 4, 2, config)
    grads = _run_gradients(cli, tmp_path / "m.pt", "reference", tmp_path)

    x, h0, c0 = (torch.tensor(arrays[n], requires_grad=True) for n in ("x", "h0", "c0"))
    y, _ = lstm(x, (h0, c0))
    (y * torch.from_numpy(arrays["dy"])).sum().backward()
    expected = {name: p.grad.numpy() for name, p in lstm.named_parameters()}
    assert set(grads) == set(expected)
    for name, value in expected.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-10, atol=1e-12, err_msg=name)


def test_run_reference_names_gradients_as_the_tf_checkpoint_does(tmp_path: Path, cli: Run) -> None:
    """--implementation reference on a TF checkpoint: grad/<variable name> with the variable's shape, equal to
    the gradients TF's own cell computes under its own names (tf-cell's Gradients.native)."""
    require_format("tf-checkpoint")
    import tensorflow as tf

    from lstm_conformance.adapters.registry import get_implementation

    config = LSTMConfig(input_size=3, hidden_size=4, num_layers=2)
    save_npz(tmp_path / "a.npz", random_weights(config, np.random.default_rng(0)))
    assert cli("convert", tmp_path / "a.npz", tmp_path / "model.ckpt")[0] == 0
    arrays = _save_inputs(tmp_path, 4, 2, config)
    grads = _run_gradients(cli, tmp_path / "model.ckpt", "reference", tmp_path)

    variables = dict(tf.train.list_variables(str(tmp_path / "model.ckpt")))
    assert set(grads) <= set(variables)
    assert {key: list(value.shape) for key, value in grads.items()} == {key: variables[key] for key in grads}

    from lstm_conformance.api import read

    model = read(tmp_path / "model.ckpt")
    cell = get_implementation(model.implementation, **model.implementation_options)
    inputs = RunInputs(x=arrays["x"], h0=arrays["h0"], c0=arrays["c0"], dy=arrays["dy"])
    native = cell.run(model.weights, inputs, RunOptions(dtype="float64")).gradients
    assert native is not None
    assert set(grads) == set(native.native)
    for name, value in native.native.items():
        np.testing.assert_allclose(grads[name], value, rtol=1e-9, atol=1e-9, err_msg=name)
