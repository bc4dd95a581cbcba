"""Every A -> B -> A round trip through the command line, for every pair of formats that holds the model.

A 2-layer bidirectional LSTM with random float32 weights (something every format holds: no projection, no
peepholes, no clip) is written in format A, converted to B and back to A with ``lstm-conformance convert``, and
the two A files must hold the same canonical weights: bit for bit for W and R; the biases as each format keeps
them (see ``assert_same_model``). The conversions themselves are verified by running both sides (the command's
default), so a round trip that kept the weights but lost the function fails too.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from lstm_conformance.adapters.formats import get_format
from lstm_conformance.cli import main
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, random_weights, save_npz

#: Format -> the file name it is written under (a TF checkpoint is a prefix).
FILE_NAMES: dict[str, str] = {
    "npz": "model.npz",
    "torch": "model.pt",
    "safetensors": "model.safetensors",
    "keras": "model.keras",
    "keras-h5": "model.h5",
    "tf-checkpoint": "model.ckpt",
    "onnx": "model.onnx",
}
#: Formats that store one bias per gate: they keep only Wb + Rb.
ONE_BIAS = frozenset({"keras", "keras-h5", "tf-checkpoint"})
#: Formats whose reader folds TF's forget_bias (1.0) into the forget gate's bias and whose writer takes it off
#: again: in float32 that addition and subtraction may round the forget bias by one unit in the last place.
FORGET_BIAS_FOLDED = frozenset({"tf-checkpoint"})

CONFIG = LSTMConfig(input_size=3, hidden_size=4, num_layers=2, bidirectional=True)


def available(name: str) -> bool:
    try:
        return get_format(name).unavailable_reason() is None
    except ImportError:
        return False


def read_single(path: Path) -> LSTMWeights:
    contents = get_format(infer_name(path)).read(path, {})
    assert len(contents.lstms) == 1, [found.name for found in contents.lstms]
    return contents.lstms[0].weights


def infer_name(path: Path) -> str:
    return next(name for name, file in FILE_NAMES.items() if path.name == file)


def convert(source: Path, destination: Path) -> None:
    status = main(["convert", str(source), str(destination)])
    assert status == 0, f"convert {source.name} -> {destination.name} exited {status}"


def assert_same_model(first: LSTMWeights, second: LSTMWeights, formats: set[str]) -> None:
    """W and R bit for bit. Biases: both of them bit for bit when no format on the way keeps one bias; their
    sum otherwise (a one-bias format holds Wb + Rb only), see ``assert_forget_bias_folded`` where TF's
    forget_bias was taken off and added again in float32."""
    assert first.config == second.config
    one_bias = bool(formats & ONE_BIAS)
    for layer, (ours, theirs) in enumerate(zip(first.layers, second.layers, strict=True)):
        for direction, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            where = f"layer {layer} direction {direction}"
            np.testing.assert_array_equal(a.W, b.W, err_msg=f"W, {where}")
            np.testing.assert_array_equal(a.R, b.R, err_msg=f"R, {where}")
            if not one_bias:
                np.testing.assert_array_equal(a.Wb, b.Wb, err_msg=f"Wb, {where}")
                np.testing.assert_array_equal(a.Rb, b.Rb, err_msg=f"Rb, {where}")
            elif formats & FORGET_BIAS_FOLDED:
                assert_forget_bias_folded(a.Wb + a.Rb, b.Wb + b.Rb, where)
            else:
                np.testing.assert_array_equal(a.Wb + a.Rb, b.Wb + b.Rb, err_msg=f"Wb + Rb, {where}")


def assert_forget_bias_folded(first: np.ndarray, second: np.ndarray, where: str) -> None:
    """The i, g, o blocks bit for bit; the f block to float32's rounding of x - 1 + 1 (TF's default forget_bias
    taken off on writing, added back on reading): at most spacing(2.0) = 2.4e-7 for |x| < 1, however small x."""
    hidden = CONFIG.hidden_size
    forget = slice(hidden, 2 * hidden)
    others = np.ones(4 * hidden, dtype=bool)
    others[forget] = False
    np.testing.assert_array_equal(first[others], second[others], err_msg=f"Wb + Rb (i, g, o), {where}")
    bound = float(np.spacing(np.float32(2.0)))
    np.testing.assert_allclose(first[forget], second[forget], rtol=0, atol=bound, err_msg=f"Wb + Rb (f), {where}")


@pytest.fixture(scope="module")
def originals(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The model in every available format, each written from the same canonical float32 weights."""
    folder = tmp_path_factory.mktemp("originals")
    weights = random_weights(CONFIG, np.random.default_rng(11)).astype(np.float32)
    start = folder / FILE_NAMES["npz"]
    save_npz(start, weights)
    files = {"npz": start}
    for name, file_name in FILE_NAMES.items():
        if name != "npz" and available(name):
            files[name] = folder / file_name
            convert(start, files[name])
    return files


PAIRS = list(itertools.permutations(FILE_NAMES, 2))


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}-{b}" for a, b in PAIRS])
def test_round_trip_keeps_the_model(first: str, second: str, originals: dict[str, Path], tmp_path: Path) -> None:
    for name in (first, second):
        if name not in originals:
            pytest.skip(f"format {name!r} is not available here: {get_format(name).unavailable_reason()}")
    there = tmp_path / "there"
    back = tmp_path / "back"
    there.mkdir()
    back.mkdir()
    convert(originals[first], there / FILE_NAMES[second])
    convert(there / FILE_NAMES[second], back / FILE_NAMES[first])
    assert_same_model(read_single(originals[first]), read_single(back / FILE_NAMES[first]), {first, second})
