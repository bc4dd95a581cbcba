"""Torch files as users have them (issue 10): training checkpoints with the state_dict nested under any key,
optimizer state beside it, nn.LSTMCell state_dicts, DataParallel prefixes. Each file is written by torch.save,
and what the reader found is checked against torch's own modules computing on the same input, never against
this project's reading."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.adapters.base import RunInputs, RunOptions
from lstm_conformance.adapters.formats import FoundLSTM
from lstm_conformance.adapters.formats.torch_file import TorchFormat
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.reference.errors import InputFileError

torch: Any = pytest.importorskip("torch")

STEPS, BATCH = 4, 3


class Tagger(torch.nn.Module):
    """A small real model: embedding, a 2-layer LSTM, a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.embedding = torch.nn.Embedding(11, 3)
        self.lstm = torch.nn.LSTM(3, 5, num_layers=2)
        self.head = torch.nn.Linear(5, 2)


def trained_checkpoint(model: Any) -> dict[str, Any]:
    """What a training loop saves: one real Adam step taken, so the optimizer holds exp_avg tensors."""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    tokens = torch.randint(0, 11, (STEPS, BATCH))
    output, _ = model.lstm(model.embedding(tokens))
    model.head(output).sum().backward()
    optimizer.step()
    return {"epoch": 3, "loss": 0.25, "optimizer_state_dict": optimizer.state_dict()}


def run_found(found: FoundLSTM, x: np.ndarray) -> Any:
    implementation = get_implementation(found.implementation, **found.implementation_options)
    return implementation.run(found.weights, RunInputs(x=x), RunOptions())


def assert_runs_like_module(found: FoundLSTM, module: Any) -> None:
    """The found LSTM, run by its implementation, gives what torch's own module gives (float64)."""
    x = np.random.default_rng(0).normal(size=(STEPS, BATCH, found.weights.config.input_size))
    result = run_found(found, x)
    with torch.no_grad():
        y, (h_n, c_n) = module.double()(torch.from_numpy(x))
    for name, expected in (("y", y), ("h_n", h_n), ("c_n", c_n)):
        np.testing.assert_allclose(getattr(result, name), expected.numpy(), rtol=1e-12, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("key", ["model_state_dict", "net", "weights_of_the_best_epoch"])
def test_a_training_checkpoint_is_found_by_structure_under_any_key(tmp_path: Path, key: str) -> None:
    model = Tagger()
    checkpoint = trained_checkpoint(model)
    checkpoint[key] = model.state_dict()
    path = tmp_path / "checkpoint.pt"
    torch.save(checkpoint, path)

    contents = TorchFormat().read(path, {})
    (found,) = contents.lstms
    assert found.name == "lstm"
    assert any(f"under {key!r}" in note and "epoch" in note for note in found.notes)
    # The optimizer's state is left alone and listed, as are the model's other tensors.
    assert f"{key}.embedding.weight" in contents.other_tensors
    assert any(name.startswith("optimizer_state_dict.state.") and "exp_avg" in name for name in contents.other_tensors)
    assert not any(name.endswith("weight_ih_l0") for name in contents.other_tensors)
    assert_runs_like_module(found, model.lstm)


def test_a_state_dict_nested_two_levels_deep_is_found(tmp_path: Path) -> None:
    model = Tagger()
    path = tmp_path / "nested.pth"
    torch.save({"trainer": {"version": 2, "modules": {"tagger": model.state_dict()}}}, path)
    (found,) = TorchFormat().read(path, {}).lstms
    assert found.name == "lstm"
    assert any("'trainer.modules.tagger'" in note for note in found.notes)
    assert_runs_like_module(found, model.lstm)


def test_two_state_dicts_in_one_checkpoint_are_named_by_where_they_sit(tmp_path: Path) -> None:
    model, average = Tagger(), Tagger()
    path = tmp_path / "ema.pt"
    torch.save({"model": model.state_dict(), "ema": average.state_dict()}, path)
    contents = TorchFormat().read(path, {})
    assert [found.name for found in contents.lstms] == ["ema.lstm", "model.lstm"]
    assert_runs_like_module(contents.lstms[0], average.lstm)
    assert_runs_like_module(contents.lstms[1], model.lstm)


def test_a_data_parallel_state_dict_is_read_under_its_module_prefix(tmp_path: Path) -> None:
    model = Tagger()
    path = tmp_path / "parallel.pt"
    torch.save(torch.nn.DataParallel(model).state_dict(), path)
    (found,) = TorchFormat().read(path, {}).lstms
    assert found.name == "module.lstm"
    assert_runs_like_module(found, model.lstm)


class Decoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = torch.nn.LSTMCell(3, 4)
        self.out = torch.nn.Linear(4, 2)


def test_an_lstm_cell_state_dict_is_read_and_steps_like_the_cell(tmp_path: Path) -> None:
    model = Decoder()
    path = tmp_path / "decoder.pt"
    torch.save({"state_dict": model.state_dict()}, path)

    contents = TorchFormat().read(path, {})
    (found,) = contents.lstms
    assert (found.name, found.implementation) == ("cell", "torch-cell")
    assert contents.other_tensors == ["state_dict.out.bias", "state_dict.out.weight"]
    assert any("nn.LSTMCell computes one step" in text for text in found.assumptions)

    x = np.random.default_rng(1).normal(size=(STEPS, BATCH, 3))
    result = run_found(found, x)
    cell = model.cell.double()
    h = c = torch.zeros(BATCH, 4, dtype=torch.float64)
    outputs = []
    with torch.no_grad():
        for step in torch.from_numpy(x):
            h, c = cell(step, (h, c))
            outputs.append(h)
    np.testing.assert_allclose(result.y, torch.stack(outputs).numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(result.c_n[0], c.numpy(), rtol=1e-12, atol=1e-12)


def test_a_state_dict_says_nothing_of_batch_layout_or_packing(tmp_path: Path) -> None:
    path = tmp_path / "lstm.pt"
    torch.save(torch.nn.LSTM(3, 4, batch_first=True).state_dict(), path)
    (found,) = TorchFormat().read(path, {}).lstms
    assert found.batch_first is None
    assert found.run_source is None  # weights only: nothing of the file's own model can run
    assert any("batch_first is a constructor argument" in text for text in found.assumptions)
    assert any("pack_padded_sequence" in text for text in found.assumptions)


def test_a_checkpoint_without_an_lstm_names_what_it_holds(tmp_path: Path) -> None:
    path = tmp_path / "linear.pt"
    linear = torch.nn.Linear(2, 3)
    torch.save({"epoch": 1, "model_state_dict": linear.state_dict()}, path)
    with pytest.raises(InputFileError) as raised:
        TorchFormat().read(path, {})
    message = str(raised.value)
    assert "\n" not in message
    assert "top-level entries: epoch, model_state_dict" in message
    assert "model_state_dict.bias, model_state_dict.weight" in message
