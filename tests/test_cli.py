"""The ``lstm-conformance`` commands end to end, on real files written by the frameworks' own save functions.

Commands run in-process through ``lstm_conformance.cli.main`` (TensorFlow is imported once per process, not once
per command); ``test_cli_help.py`` runs the console script itself. Expected values come from the frameworks
(torch's autograd, a loaded Keras model), never from numbers written here.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.formats import FORMATS, ModelContents
from lstm_conformance.adapters.formats.npz_file import NpzFormat
from lstm_conformance.adapters.reference_impl import ReferenceImplementation
from lstm_conformance.adapters.registry import BUILTIN
from lstm_conformance.reference.layout import (
    GATES,
    LSTMConfig,
    LSTMWeights,
    load_npz,
    random_weights,
    reorder_gates,
    save_npz,
)
from tests.conftest import Run, require_format

#: What a weights-only source (a torch state_dict) says on stderr: each assumption, one line each.
TORCH_STATE_DICT_ASSUMPTIONS = ("batch layout not stored", "pack_padded_sequence")


def assumptions_only(err: str) -> bool:
    """stderr holds assumption lines only, those of a torch state_dict among them."""
    lines = err.splitlines()
    said = all(line.startswith("lstm-conformance: assumption: ") for line in lines)
    return said and all(any(text in line for line in lines) for text in TORCH_STATE_DICT_ASSUMPTIONS)


def npz_file(path: Path, config: LSTMConfig, seed: int = 0) -> LSTMWeights:
    weights = random_weights(config, np.random.default_rng(seed))
    save_npz(path, weights)
    return weights


def torch_lstm_file(
    path: Path, *, layers: int = 1, bidirectional: bool = False, seed: int = 0, edit: Any = None
) -> Any:
    """torch.save of a real nn.LSTM(3, 5)'s state_dict (``edit`` changes the state_dict first); returns it."""
    torch = pytest.importorskip("torch")
    torch.manual_seed(seed)
    lstm = torch.nn.LSTM(3, 5, num_layers=layers, bidirectional=bidirectional)
    state = {key: value.clone() for key, value in lstm.state_dict().items()}
    if edit is not None:
        edit(state)
    torch.save(state, path)
    return lstm


def swap_gate_rows(tensor: Any, first: str, second: str, hidden: int = 5) -> None:
    """Swap two gate blocks of a torch weight or bias in place (torch's gate order is the canonical one)."""
    a, b = GATES.index(first), GATES.index(second)
    rows_a, rows_b = slice(a * hidden, (a + 1) * hidden), slice(b * hidden, (b + 1) * hidden)
    saved = tensor[rows_a].clone()
    tensor[rows_a] = tensor[rows_b]
    tensor[rows_b] = saved


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# ----------------------------------------------------------------------------------------------------------
# convert
# ----------------------------------------------------------------------------------------------------------


def test_convert_npz_to_torch_loads_into_nn_lstm_and_back_exactly(tmp_path: Path, cli: Run) -> None:
    torch = pytest.importorskip("torch")
    require_format("torch")
    config = LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True, proj_size=2)
    original = npz_file(tmp_path / "a.npz", config)

    status, out, err = cli("convert", tmp_path / "a.npz", tmp_path / "b.pt")
    assert (status, err) == (0, "")
    # An npz holds weights only: the proof ran this tool's reading of it, so it is "under assumptions".
    assert "weights converted under assumptions" in out
    assert "reference (float64) vs torch (float64) agree" in out
    assert "verified:" not in out
    assert "2 layers, bidirectional, input 3, hidden 4, projected to 2" in out

    # The contract: a plain state_dict of one nn.LSTM, loadable with weights_only=True.
    lstm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, proj_size=2).double()
    lstm.load_state_dict(torch.load(tmp_path / "b.pt", weights_only=True), strict=True)
    x = np.random.default_rng(5).standard_normal((6, 2, 3))
    np.save(tmp_path / "x.npy", x)
    status, _, err = cli(
        "run", tmp_path / "a.npz", "--implementation", "reference", "--input", tmp_path / "x.npy", "--output",
        tmp_path / "ref.npz",
    )  # fmt: skip
    assert (status, err) == (0, "")
    with torch.no_grad():
        y, (h_n, c_n) = lstm(torch.from_numpy(x))
    with np.load(tmp_path / "ref.npz") as ref:
        np.testing.assert_allclose(ref["y"], y.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(ref["h_n"], h_n.numpy(), rtol=0, atol=1e-12)
        np.testing.assert_allclose(ref["c_n"], c_n.numpy(), rtol=0, atol=1e-12)

    status, _, _ = cli("convert", tmp_path / "b.pt", tmp_path / "c.npz")
    assert status == 0
    back = load_npz(tmp_path / "c.npz").named_arrays()
    for key, value in original.named_arrays().items():
        np.testing.assert_array_equal(back[key], value, err_msg=key)
    assert listing(tmp_path) == ["a.npz", "b.pt", "c.npz", "ref.npz", "x.npy"]


def test_convert_torch_to_keras_and_back(tmp_path: Path, cli: Run) -> None:
    """torch -> keras -> torch keeps the function; the .keras file loads with keras.saving.load_model and
    computes what the original nn.LSTM computes."""
    torch = pytest.importorskip("torch")
    require_format("keras")
    lstm = torch_lstm_file(tmp_path / "a.pt", layers=2, bidirectional=True)

    status, out, err = cli("convert", tmp_path / "a.pt", tmp_path / "b.keras")
    assert (status, assumptions_only(err)) == (0, True), out
    result_line = out.splitlines()[-1]
    assert result_line.startswith("  weights converted under assumptions"), out  # a state_dict is weights only
    assert "torch (float64) vs keras (float32, the file itself) agree" in result_line  # the file computes float32
    assert "gradients worst" in result_line  # both compute gradients: they train the same way too
    assert "verified:" not in out
    status, out, err = cli("convert", tmp_path / "b.keras", tmp_path / "c.pt")
    assert (status, err) == (0, ""), out

    x = np.random.default_rng(1).standard_normal((4, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected, _ = lstm(torch.from_numpy(x))
    keras = pytest.importorskip("keras")
    model = keras.saving.load_model(tmp_path / "b.keras")
    got_keras = np.asarray(model(x.swapaxes(0, 1))).swapaxes(0, 1)  # the .keras model is batch-major
    np.testing.assert_allclose(got_keras, expected.numpy(), rtol=0, atol=1e-5)

    back = torch.nn.LSTM(3, 5, num_layers=2, bidirectional=True)
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    back.load_state_dict(state, strict=True)
    with torch.no_grad():
        got_torch, _ = back(torch.from_numpy(x))
    np.testing.assert_allclose(got_torch.numpy(), expected.numpy(), rtol=0, atol=1e-5)
    original = lstm.state_dict()
    for key, value in original.items():
        if key.startswith("weight"):  # weights travel unchanged; Keras' one bias is the sum of torch's two
            np.testing.assert_array_equal(state[key].numpy(), value.numpy(), err_msg=key)
    for key in (k for k in original if k.startswith("bias_ih")):
        summed = state[key] + state[key.replace("bias_ih", "bias_hh")]
        expected_sum = original[key] + original[key.replace("bias_ih", "bias_hh")]
        np.testing.assert_allclose(summed.numpy(), expected_sum.numpy(), rtol=0, atol=1e-6)
    assert listing(tmp_path) == ["a.pt", "b.keras", "c.pt"]


def test_convert_to_onnx_verifies_in_float32(tmp_path: Path, cli: Run) -> None:
    """ONNX Runtime runs float32 only: both sides are run in float32 and the tolerance says so."""
    require_format("torch")
    require_format("onnx")
    torch_lstm_file(tmp_path / "a.pt", bidirectional=True)
    status, out, err = cli("convert", tmp_path / "a.pt", tmp_path / "b.onnx")
    assert (status, assumptions_only(err)) == (0, True), out
    assert "torch (float32) vs onnxruntime (float32, the file itself)" in out
    assert "(float32, T=5" in out.split("tolerance rtol")[-1]
    assert "forward only: onnxruntime computes no gradients" in out


def test_convert_tf_checkpoint_prefix_writes_every_file_and_assumes_forget_bias(tmp_path: Path, cli: Run) -> None:
    require_format("tf-checkpoint")
    config = LSTMConfig(input_size=3, hidden_size=4, num_layers=2)
    original = npz_file(tmp_path / "a.npz", config)
    status, out, err = cli("convert", tmp_path / "a.npz", tmp_path / "model.ckpt")
    assert (status, err) == (0, ""), out
    files = listing(tmp_path)
    assert "model.ckpt.index" in files
    assert any(f.startswith("model.ckpt.data-") for f in files)
    assert not [f for f in files if f.startswith(".")], "temporary files left behind"
    status, out, err = cli("convert", tmp_path / "model.ckpt", tmp_path / "back.npz")
    assert status == 0
    assert "assumption: assumed forget_bias" in err  # the assumption is said, on stderr
    back = load_npz(tmp_path / "back.npz")
    for layer, (read, wrote) in enumerate(zip(back.layers, original.layers, strict=True)):
        # Weights travel unchanged; TF's one bias holds the sum of the two (forget_bias off, then on again).
        np.testing.assert_allclose(read[0].W, wrote[0].W, rtol=0, atol=1e-6, err_msg=f"layer {layer}")
        np.testing.assert_allclose(read[0].R, wrote[0].R, rtol=0, atol=1e-6, err_msg=f"layer {layer}")
        np.testing.assert_allclose(read[0].Wb + read[0].Rb, wrote[0].Wb + wrote[0].Rb, rtol=0, atol=1e-6)

    # Existing prefix: refused without --force, replaced with it.
    status, _, err = cli("convert", tmp_path / "a.npz", tmp_path / "model.ckpt")
    assert status == 2
    assert "--force" in err
    status, _, _ = cli("convert", tmp_path / "a.npz", tmp_path / "model.ckpt", "--force", "--forget-bias", "0")
    assert status == 0


def test_convert_fails_when_the_destination_cannot_hold_a_clip(tmp_path: Path, cli: Run) -> None:
    """A TF checkpoint does not store cell_clip: the file read back computes another function wherever the clip
    bites, even if the verification input never reaches it. Exit 1, nothing written."""
    require_format("tf-checkpoint")
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=3, hidden_size=4, peepholes=True, cell_clip=2.0))
    status, out, _ = cli("convert", tmp_path / "a.npz", tmp_path / "model.ckpt")
    assert status == 1, out
    assert "the written file does not hold cell_clip 2.0 (read back: None)" in out
    assert "NOT VERIFIED" in out
    assert listing(tmp_path) == ["a.npz"]


def test_convert_to_a_file_that_reads_back_as_several_lstms_cannot_verify(tmp_path: Path, cli: Run) -> None:
    """A .weights.h5 holds no config: a stacked LSTM reads back as one LSTM per Keras layer."""
    require_format("keras-h5")
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=3, hidden_size=4, num_layers=2))
    status, _, err = cli("convert", tmp_path / "a.npz", tmp_path / "b.weights.h5")
    assert status == 2
    assert "reads back as 2 LSTMs" in err
    assert "pass --no-verify" in err
    assert listing(tmp_path) == ["a.npz"]


def test_convert_existing_destination_needs_force(tmp_path: Path, cli: Run) -> None:
    require_format("torch")
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=2, hidden_size=3))
    (tmp_path / "b.pt").write_bytes(b"keep me")
    status, out, err = cli("convert", tmp_path / "a.npz", tmp_path / "b.pt")
    assert status == 2
    assert out == ""
    assert err == f"lstm-conformance: error: {tmp_path / 'b.pt'} exists; pass --force to overwrite it\n"
    assert (tmp_path / "b.pt").read_bytes() == b"keep me"
    status, _, _ = cli("convert", tmp_path / "a.npz", tmp_path / "b.pt", "--force")
    assert status == 0
    assert (tmp_path / "b.pt").read_bytes() != b"keep me"
    assert listing(tmp_path) == ["a.npz", "b.pt"]


class SwappedGatesNpz(NpzFormat):
    """A broken writer (gates f and g swapped in layer 0), to show that verification catches what it writes."""

    name = "npz-swapped-gates"

    def write(self, path: Path, weights: LSTMWeights, options: Any) -> list[str]:
        arrays = dict(weights.named_arrays())
        hidden = weights.config.hidden_size
        for key in ("layers.0.forward.W", "layers.0.forward.R"):
            blocks = np.split(arrays[key], 4)
            arrays[key] = np.concatenate([blocks[0], blocks[2], blocks[1], blocks[3]])
        assert arrays["layers.0.forward.W"].shape[0] == 4 * hidden
        save_npz(path, LSTMWeights.from_named_arrays(weights.config, arrays))
        return []


def test_convert_that_does_not_verify_exits_1_and_writes_nothing(
    tmp_path: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FORMATS, "npz-swapped-gates", f"{__name__}:SwappedGatesNpz")
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=3, hidden_size=4))
    (tmp_path / "b.npz").write_bytes(b"old")
    status, out, _ = cli("convert", tmp_path / "a.npz", tmp_path / "b.npz", "--to", "npz-swapped-gates", "--force")
    assert status == 1
    assert "FAILED: reference (float64) vs reference (float64)" in out
    assert "forward worst" in out
    assert "of tolerance" in out
    assert "NOT VERIFIED" in out
    assert listing(tmp_path) == ["a.npz", "b.npz"]
    assert (tmp_path / "b.npz").read_bytes() == b"old"  # the old destination survives a failed conversion
    # Unverified, the broken file is written (the user asked for it).
    status, _, _ = cli("convert", tmp_path / "a.npz", tmp_path / "c.npz", "--to", "npz-swapped-gates", "--no-verify")
    assert status == 0
    assert (tmp_path / "c.npz").exists()


def test_convert_with_nan_weights_warns_and_converts(tmp_path: Path, cli: Run) -> None:
    require_format("torch")
    weights = random_weights(LSTMConfig(input_size=2, hidden_size=3), np.random.default_rng(0))
    weights.layers[0][0].W[1, 1] = np.nan
    save_npz(tmp_path / "a.npz", weights)
    status, out, err = cli("convert", tmp_path / "a.npz", tmp_path / "b.pt")
    assert status == 0, out
    lines = err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("lstm-conformance: warning: ")
    assert "layers.0.forward.W holds 1 NaN/Inf" in lines[0]
    # The verification says how much of the output it could compare by value.
    assert "output values are NaN/Inf (the weights are)" in out, out


def test_convert_selects_one_of_several_lstms(tmp_path: Path, cli: Run) -> None:
    torch = pytest.importorskip("torch")
    require_format("torch")
    model = torch.nn.ModuleDict(
        {"encoder": torch.nn.LSTM(3, 4), "decoder": torch.nn.LSTM(4, 2, num_layers=2), "head": torch.nn.Linear(2, 1)}
    )
    torch.save(model.state_dict(), tmp_path / "model.pt")
    status, _, err = cli("convert", tmp_path / "model.pt", tmp_path / "out.npz")
    assert status == 2
    assert "holds 2 LSTMs: decoder, encoder; choose one with --select NAME" in err
    status, out, err = cli("convert", tmp_path / "model.pt", tmp_path / "out.npz", "--select", "decoder")
    assert (status, assumptions_only(err)) == (0, True), out
    weights = load_npz(tmp_path / "out.npz")
    assert (weights.config.input_size, weights.config.hidden_size, weights.config.num_layers) == (4, 2, 2)
    np.testing.assert_array_equal(weights.layers[1][0].W, model["decoder"].weight_ih_l1.detach().numpy())


# ----------------------------------------------------------------------------------------------------------
# run
# ----------------------------------------------------------------------------------------------------------


def test_run_torch_native_gradients_match_torch_autograd(tmp_path: Path, cli: Run) -> None:
    torch = pytest.importorskip("torch")
    require_format("torch")
    lstm = torch_lstm_file(tmp_path / "m.pt", layers=2, bidirectional=True).double()
    rng = np.random.default_rng(2)
    arrays = {
        "x": rng.standard_normal((4, 3, 3)),
        "h0": rng.standard_normal((4, 3, 5)),
        "c0": rng.standard_normal((4, 3, 5)),
        "dy": rng.standard_normal((4, 3, 10)),
    }
    for name, value in arrays.items():
        np.save(tmp_path / f"{name}.npy", value)
    status, out, err = cli(
        "run", tmp_path / "m.pt", "--implementation", "torch", "--input", tmp_path / "x.npy",
        "--h0", tmp_path / "h0.npy", "--c0", tmp_path / "c0.npy", "--grad-output", tmp_path / "dy.npy",
        "--output", tmp_path / "out.npz",
    )  # fmt: skip
    assert (status, err) == (0, ""), out

    x, h0, c0 = (torch.tensor(arrays[n], requires_grad=True) for n in ("x", "h0", "c0"))
    y, (h_n, c_n) = lstm(x, (h0, c0))
    (y * torch.from_numpy(arrays["dy"])).sum().backward()
    with np.load(tmp_path / "out.npz") as out_file:
        keys = set(out_file.files)
        native = {f"grad/{name}" for name, _ in lstm.named_parameters()}
        assert keys == {"y", "h_n", "c_n", "grad_x", "grad_h0", "grad_c0"} | native
        for key, value in (("y", y), ("h_n", h_n), ("c_n", c_n)):
            np.testing.assert_allclose(out_file[key], value.detach().numpy(), rtol=0, atol=1e-12, err_msg=key)
        for key, tensor in (("grad_x", x), ("grad_h0", h0), ("grad_c0", c0)):
            np.testing.assert_allclose(out_file[key], tensor.grad.numpy(), rtol=0, atol=1e-12, err_msg=key)
        for name, parameter in lstm.named_parameters():
            np.testing.assert_allclose(out_file[f"grad/{name}"], parameter.grad.numpy(), rtol=0, atol=1e-12)


def test_run_names_gradients_as_the_file_does(tmp_path: Path, cli: Run) -> None:
    """An LSTM under a prefix in a larger model's state_dict: grad/<key> for exactly its keys in the file."""
    torch = pytest.importorskip("torch")
    require_format("torch")
    model = torch.nn.ModuleDict({"encoder": torch.nn.LSTM(3, 4), "head": torch.nn.Linear(4, 1)})
    torch.save(model.state_dict(), tmp_path / "model.pt")
    np.save(tmp_path / "x.npy", np.ones((2, 1, 3)))
    np.save(tmp_path / "dy.npy", np.ones((2, 1, 4)))
    status, out, err = cli(
        "run", tmp_path / "model.pt", "--implementation", "native", "--input", tmp_path / "x.npy",
        "--grad-output", tmp_path / "dy.npy", "--output", tmp_path / "out.npz",
    )  # fmt: skip
    assert (status, err) == (0, ""), out
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    with np.load(tmp_path / "out.npz") as result:
        grads = {key.removeprefix("grad/"): result[key].shape for key in result.files if key.startswith("grad/")}
    assert grads == {key: tuple(value.shape) for key, value in state.items() if key.startswith("encoder.")}


def test_run_other_implementation_uses_canonical_names(tmp_path: Path, cli: Run) -> None:
    config = LSTMConfig(input_size=3, hidden_size=4, bidirectional=True, peepholes=True)
    npz_file(tmp_path / "m.npz", config)
    rng = np.random.default_rng(3)
    np.save(tmp_path / "x.npy", rng.standard_normal((5, 2, 3)))
    np.save(tmp_path / "dy.npy", rng.standard_normal((5, 2, 8)))
    np.save(tmp_path / "lens.npy", np.array([5, 2]))
    status, out, err = cli(
        "run", tmp_path / "m.npz", "--implementation", "reference", "--input", tmp_path / "x.npy",
        "--seq-lens", tmp_path / "lens.npy", "--grad-output", tmp_path / "dy.npy", "--output", tmp_path / "o.npz",
    )  # fmt: skip
    assert (status, err) == (0, ""), out
    with np.load(tmp_path / "o.npz") as result:
        shapes = {key: result[key].shape for key in result.files}
    assert shapes["y"] == (5, 2, 8)
    assert shapes["h_n"] == (2, 2, 4)
    assert shapes["c_n"] == (2, 2, 4)
    assert shapes["grad_x"] == (5, 2, 3)
    assert shapes["grad_h0"] == (2, 2, 4)
    for direction in ("forward", "reverse"):
        assert shapes[f"grad/layers.0.{direction}.W"] == (16, 3)
        assert shapes[f"grad/layers.0.{direction}.P"] == (3, 4)
    assert listing(tmp_path) == ["dy.npy", "lens.npy", "m.npz", "o.npz", "x.npy"]


# ----------------------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------------------


def test_compare_agrees_across_frameworks(tmp_path: Path, cli: Run) -> None:
    require_format("torch")
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=3, hidden_size=4, num_layers=2))
    assert cli("convert", tmp_path / "a.npz", tmp_path / "b.pt")[0] == 0
    status, out, err = cli("compare", tmp_path / "a.npz", tmp_path / "b.pt")
    assert (status, assumptions_only(err)) == (0, True), err
    assert out.splitlines()[-1].startswith("AGREE: they agree")


def test_compare_names_swapped_gates(tmp_path: Path, cli: Run) -> None:
    """A gate-order bug (i and f swapped in layer 0) is named, its first time step found, and shown to explain
    the whole difference by running A with B's blocks of those gates."""
    require_format("torch")

    def swap(state: dict[str, Any]) -> None:
        for key in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            swap_gate_rows(state[key], "i", "f")

    torch_lstm_file(tmp_path / "a.pt", layers=2)
    torch_lstm_file(tmp_path / "b.pt", layers=2, edit=swap)
    status, out, _ = cli("compare", tmp_path / "a.pt", tmp_path / "b.pt")
    assert status == 1
    summary = out.splitlines()[-1]
    assert summary.startswith("DIFFER: gates i, f of layer 0 forward differ")
    assert "swapped: A's i is B's f, A's f is B's i" in summary
    assert "first differing time step 0" in summary

    status, out, _ = cli("compare", tmp_path / "a.pt", tmp_path / "b.pt", "--json", "--steps", "3", "--batch", "1")
    assert status == 1
    result = json.loads(out)
    assert result["agree"] is False
    assert result["differences"][0] | {"layer": 0, "direction": "forward", "time_step": 0} == result["differences"][0]
    assert result["gates"]["differing_gates"] == ["i", "f"]
    assert result["gates"]["substitution"]["explains"] is True
    alone = result["gates"]["substitution"]["fraction_with_one_gate_replaced"]
    assert min(alone.values()) > 1.0  # neither gate alone explains a swap (fractions of the tolerance)


def test_compare_names_a_forget_bias_offset_in_the_reverse_direction(tmp_path: Path, cli: Run) -> None:
    require_format("torch")
    hidden, forget = 5, GATES.index("f")

    def shift(state: dict[str, Any]) -> None:
        state["bias_hh_l1_reverse"][forget * hidden : (forget + 1) * hidden] += 1.0

    torch_lstm_file(tmp_path / "a.pt", layers=2, bidirectional=True)
    torch_lstm_file(tmp_path / "b.pt", layers=2, bidirectional=True, edit=shift)
    status, out, _ = cli("compare", tmp_path / "a.pt", tmp_path / "b.pt", "--json", "--steps", "4")
    assert status == 1
    result = json.loads(out)
    assert result["summary"].startswith("gate f of layer 1 reverse differs")
    first = result["differences"][0]
    assert (first["layer"], first["direction"], first["time_step"]) == (1, "reverse", 3)  # reverse starts at T-1
    (block,) = result["gates"]["differing_blocks"]
    assert (block["parameter"], block["gate"]) == ("bias", "f")
    assert block["constant_offset"] == pytest.approx(1.0)


class GatesReadInTFOrder(ReferenceImplementation):
    """A buggy third-party implementation: it reads the canonical gate blocks as if they were TF's i, j, f, o
    (so f and g trade places) and runs the reference on that. compare must find it from the outputs alone."""

    name = "test-tf-order-bug"

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        tf_order = ("i", "g", "f", "o")
        misread = weights.map(lambda a: a)
        for per_direction in misread.layers:
            for layer in per_direction:
                for name in ("W", "R", "Wb", "Rb"):
                    setattr(layer, name, reorder_gates(getattr(layer, name), tf_order, GATES))
        return super().run(misread, inputs, options)


class NpzRunByBuggyImplementation(NpzFormat):
    name = "npz-buggy"

    def read(self, path: Path, options: Any) -> ModelContents:
        contents = super().read(path, options)
        contents.lstms[0].implementation = GatesReadInTFOrder.name
        return contents


def test_compare_finds_what_an_implementation_computes_when_the_weights_agree(
    tmp_path: Path, cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(BUILTIN, GatesReadInTFOrder.name, f"{__name__}:GatesReadInTFOrder")
    monkeypatch.setitem(FORMATS, "npz-buggy", f"{__name__}:NpzRunByBuggyImplementation")
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=3, hidden_size=4, num_layers=2))
    status, out, err = cli("compare", tmp_path / "a.npz", tmp_path / "a.npz", "--from-b", "npz-buggy", "--json")
    assert (status, err) == (1, "")
    result = json.loads(out)
    assert result["weight_differences"] == []
    assert (result["differences"][0]["layer"], result["differences"][0]["direction"]) == (0, "forward")
    matches = [m["hypothesis"] for m in result["gates"]["hypotheses"]["matches"]]
    assert matches == ["gates in order i, g, f, o instead of i, f, g, o"]
    assert "B computes as with gates in order i, g, f, o" in result["summary"]


def test_compare_models_of_different_sizes(tmp_path: Path, cli: Run) -> None:
    npz_file(tmp_path / "a.npz", LSTMConfig(input_size=3, hidden_size=4))
    npz_file(tmp_path / "b.npz", LSTMConfig(input_size=3, hidden_size=5))
    status, out, err = cli("compare", tmp_path / "a.npz", tmp_path / "b.npz", "--json")
    assert (status, err) == (1, "")
    result = json.loads(out)
    assert result["config_differences"] == [{"field": "hidden_size", "a": "4", "b": "5"}]


# ----------------------------------------------------------------------------------------------------------
# inspect, check
# ----------------------------------------------------------------------------------------------------------


def test_a_closed_pipe_is_not_an_error(tmp_path: Path) -> None:
    """``lstm-conformance inspect m.npz | head``: the reader closing stdout ends the command quietly (exit 141,
    as SIGPIPE would), with nothing on stderr."""
    import subprocess
    import sys

    npz_file(tmp_path / "m.npz", LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True))
    command = [sys.executable, "-m", "lstm_conformance.cli", "inspect", str(tmp_path / "m.npz")]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert child.stdout is not None
    child.stdout.close()  # before the child writes anything
    _, err = child.communicate(timeout=120)
    assert (child.returncode, err.decode()) == (141, "")


def test_inspect_lists_every_lstm_and_the_other_tensors(tmp_path: Path, cli: Run) -> None:
    torch = pytest.importorskip("torch")
    require_format("torch")
    model = torch.nn.ModuleDict(
        {
            "encoder": torch.nn.LSTM(3, 4, bidirectional=True),
            "decoder": torch.nn.LSTM(8, 2),
            "head": torch.nn.Linear(2, 1),
        }
    )
    torch.save(model.state_dict(), tmp_path / "model.pt")
    status, out, err = cli("inspect", tmp_path / "model.pt", "--json")
    assert (status, err) == (0, "")
    result = json.loads(out)
    by_name = {lstm["name"]: lstm for lstm in result["lstms"]}
    assert sorted(by_name) == ["decoder", "encoder"]
    encoder = by_name["encoder"]
    assert encoder["implementation"] == "torch"
    assert encoder["features"] == ["bidirectional"]
    assert encoder["parameters"]["layers.0.reverse.R"] == {"shape": [16, 4], "dtype": "float32"}
    assert sorted(result["other_tensors"]) == ["head.bias", "head.weight"]

    status, out, _ = cli("inspect", tmp_path / "model.pt")
    assert status == 0
    assert "model.pt (torch): 2 LSTMs" in out
    assert "layer 0 reverse: W [16, 3], R [16, 4]" in out
    assert "other tensors: head." in out
    assert "head.weight" in out
    assert "head.bias" in out


def test_check_passes_pytest_options_through(cli: Run) -> None:
    status, out, _ = cli(
        "check", "--collect-only", "-q", "-p", "no:cacheprovider", "--lstm-implementations", "reference"
    )
    assert status == 0, out
    assert "collected" in out
    assert "reference" in out
    status, _, _ = cli("check", "--no-such-pytest-option")
    assert status == 2
