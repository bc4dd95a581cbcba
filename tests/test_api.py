"""The Python API (``lstm_conformance.api``, re-exported lazily by ``lstm_conformance``): typed results, the
project's errors on bad input, and the same answers as the command line (which is a thin layer over it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import lstm_conformance
from lstm_conformance import api
from lstm_conformance.reference.errors import InputFileError, LSTMConformanceError
from lstm_conformance.reference.layout import GATES, LSTMConfig, LSTMWeights, load_npz, random_weights, save_npz
from tests.conftest import require_format


def npz_model(path: Path, config: LSTMConfig | None = None, seed: int = 0) -> LSTMWeights:
    weights = random_weights(
        config or LSTMConfig(input_size=3, hidden_size=4, num_layers=2), np.random.default_rng(seed)
    )
    save_npz(path, weights)
    return weights


def test_importing_the_package_imports_no_numpy_and_the_api_on_first_use() -> None:
    probe = (
        "import sys, lstm_conformance\n"
        "assert 'numpy' not in sys.modules, 'numpy imported by the package'\n"
        "from lstm_conformance import api\n"
        "assert lstm_conformance.read is api.read and lstm_conformance.Comparison is api.Comparison\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        getattr(lstm_conformance, "no_such_name")  # noqa: B009


def test_read_returns_the_canonical_model_with_what_the_file_holds_besides(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    require_format("torch")
    module = torch.nn.ModuleDict({"lstm": torch.nn.LSTM(3, 4, bidirectional=True), "head": torch.nn.Linear(8, 1)})
    torch.save(module.state_dict(), tmp_path / "m.pt")
    model = api.read(tmp_path / "m.pt")
    assert isinstance(model, api.Model)
    assert (model.name, model.format, model.implementation) == ("lstm", "torch", "torch")
    assert (model.config.input_size, model.config.hidden_size, model.config.bidirectional) == (3, 4, True)
    assert isinstance(model.weights, LSTMWeights)
    np.testing.assert_array_equal(model.weights.layers[0][1].R, module["lstm"].weight_hh_l0_reverse.detach().numpy())
    assert sorted(model.other_tensors) == ["head.bias", "head.weight"]
    assert model.dtype == "float32"
    assert isinstance(model.assumptions, list)
    assert model.runs_itself is False  # a state_dict holds weights only


def test_write_is_atomic_and_refuses_to_overwrite(tmp_path: Path) -> None:
    weights = npz_model(tmp_path / "a.npz")
    result = api.write(weights, tmp_path / "b.npz")
    assert isinstance(result, api.WriteResult)
    assert result.files == [tmp_path / "b.npz"]
    back = load_npz(tmp_path / "b.npz").named_arrays()
    for key, value in weights.named_arrays().items():
        np.testing.assert_array_equal(back[key], value)
    with pytest.raises(InputFileError, match="exists; pass --force"):
        api.write(api.read(tmp_path / "a.npz"), tmp_path / "b.npz")
    api.write(api.read(tmp_path / "a.npz"), tmp_path / "b.npz", force=True)
    with pytest.raises(LSTMConformanceError, match="unknown format"):
        api.write(weights, tmp_path / "c.bin", format="no-such-format")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz", "b.npz"]


def test_convert_returns_the_proof_per_tensor_as_fractions_of_the_tolerance(tmp_path: Path) -> None:
    require_format("torch")
    npz_model(tmp_path / "a.npz")
    result = api.convert(tmp_path / "a.npz", tmp_path / "b.pt")
    assert isinstance(result, api.ConversionResult)
    assert result.written
    assert result.files == [tmp_path / "b.pt"]
    # An npz reader has no run_source: the proof ran this tool's reading, so "under assumptions".
    assert (result.verified, result.under_assumptions) == (False, True)
    assert result.agreement is not None
    assert result.agreement.tolerance.rule.math_mode == "float64"
    assert {"y", "h_n", "c_n", "grad_x", "grad_h0", "grad_c0", "grad[layers.1.forward.R]"} <= set(result.errors)
    assert all(0.0 <= fraction <= 1.0 for fraction in result.errors.values())
    assert result.worst_fraction == max(result.errors.values())


def test_compare_agrees_and_names_where_two_models_part(tmp_path: Path) -> None:
    weights = npz_model(tmp_path / "a.npz")
    swapped = weights.map(np.array)
    hidden = weights.config.hidden_size
    i, f = (slice(GATES.index(n) * hidden, (GATES.index(n) + 1) * hidden) for n in ("i", "f"))
    layer = swapped.layers[1][0]
    for name in ("W", "R", "Wb", "Rb"):
        array = getattr(layer, name)
        array[i], array[f] = array[f].copy(), array[i].copy()
    save_npz(tmp_path / "b.npz", swapped)

    same = api.compare(tmp_path / "a.npz", api.read(tmp_path / "a.npz"))
    assert isinstance(same, api.Comparison)
    assert same.agree
    assert same.agreement is not None
    assert same.agreement.gradients  # both sides compute gradients: compared too
    assert same.first_divergence is None

    different = api.compare(tmp_path / "a.npz", tmp_path / "b.npz", steps=3)
    assert not different.agree
    divergence = different.first_divergence
    assert divergence is not None
    assert (divergence.layer, divergence.direction, divergence.time_step) == (1, "forward", 0)
    assert different.gates is not None
    assert different.gates.differing_gates == ["i", "f"]
    assert [(s.a_gate, s.b_gate) for s in different.gates.swapped] == [("i", "f"), ("f", "i")]
    assert different.to_json()["agree"] is False


def test_bad_input_raises_the_projects_errors(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="no such file"):
        api.read(tmp_path / "missing.npz")
    npz_model(tmp_path / "a.npz")
    with pytest.raises(InputFileError, match="--forget-bias applies to tf-checkpoint files only"):
        api.read(tmp_path / "a.npz", forget_bias=0.0)
    with pytest.raises(InputFileError, match="steps must be a positive integer"):
        api.compare(tmp_path / "a.npz", tmp_path / "a.npz", steps=0)
    with pytest.raises(InputFileError, match="cannot tell the format"):
        api.convert(tmp_path / "a.npz", tmp_path / "b.unknown")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npz"]
