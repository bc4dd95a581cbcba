"""The registry of cases the suite checks: a fixed grid for CI, hypothesis-drawn cases, and their inputs.

A ``Case`` is a configuration (``LSTMConfig``) plus the shape of its inputs: sequence length, batch, ragged or
full lengths, zero or random initial states, time-major or batch-first. Its weights and arrays are drawn from
``(seed, case name)`` alone, so a test computes the same numbers in any worker, in any order, run alone or in the
whole suite. Weights are random (``reference.layout.random_weights``), never constants.

``forget_bias`` is not part of a case: the canonical model has none (TF adapters fold it into ``Rb``). It is an
implementation option, and ``IMPLEMENTATION_VARIANTS`` runs each TF implementation with forget_bias 0.0 and 1.0
against the same canonical reference.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import RunInputs
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights, random_weights

#: Implementation variants: registry name -> [(variant id, constructor options)]. An implementation listed here
#: runs once per variant, as ``name:variant``; one not listed runs once with no options.
IMPLEMENTATION_VARIANTS: dict[str, list[tuple[str, dict[str, Any]]]] = {
    "tf-cell": [("fb0", {"forget_bias": 0.0}), ("fb1", {"forget_bias": 1.0})],
    "tf-block": [("fb0", {"forget_bias": 0.0}), ("fb1", {"forget_bias": 1.0})],
    # OpenVINO's CPU inference precision: strict f32, and the reduced bf16 its plugin would pick on CPUs with it.
    "openvino": [("f32", {"precision": "f32"}), ("bf16", {"precision": "bf16"})],
}


@dataclass(frozen=True)
class Case:
    """One configuration and input shape; ``name`` is its test-id part and the seed of its numbers."""

    name: str
    config: LSTMConfig
    steps: int = 6
    batch: int = 3
    ragged: bool = False
    initial_state: bool = False
    batch_first: bool = False
    #: Scale of the uniform weights; None is PyTorch's 1/sqrt(H). Clip cases raise it so that clips bite.
    weight_scale: float | None = None

    def features(self) -> list[str]:
        """Config features plus the input features, by the names limitations and the report use."""
        found = self.config.features()
        for name in ("ragged", "initial_state", "batch_first"):
            if getattr(self, name):
                found.append(name)
        return found


def _config(**fields: Any) -> LSTMConfig:
    return LSTMConfig(**{"input_size": 3, "hidden_size": 5, **fields})


def _grid() -> list[Case]:
    hard2 = Activation("hard_sigmoid_keras2")
    hard3 = Activation("hard_sigmoid_keras3")
    return [
        Case("l1_basic", _config()),
        Case("l1_state", _config(), initial_state=True),
        Case("l1_ragged", _config(), ragged=True, initial_state=True),
        Case("l1_batch_first", _config(), batch_first=True, initial_state=True),
        # A few sequence lengths, so that the report can plot error against T.
        Case("l1_T1", _config(), steps=1, initial_state=True),
        Case("l1_T20", _config(), steps=20, initial_state=True),
        Case("l1_T60", _config(), steps=60, batch=2, initial_state=True),
        Case("l1_nobias", _config(bias=False), initial_state=True),
        Case("l2", _config(num_layers=2), initial_state=True),
        Case("l1_bidir", _config(bidirectional=True), initial_state=True),
        Case("l2_bidir_ragged", _config(num_layers=2, bidirectional=True), ragged=True, initial_state=True),
        Case("l1_proj", _config(proj_size=3), initial_state=True),
        Case(
            "l2_bidir_proj_ragged",
            _config(num_layers=2, bidirectional=True, proj_size=3),
            ragged=True,
            initial_state=True,
            batch_first=True,
        ),
        Case("l1_peep", _config(peepholes=True), initial_state=True),
        Case("l1_cell_clip", _config(cell_clip=0.4), initial_state=True, weight_scale=1.0),
        Case(
            "l1_peep_proj_clips",
            _config(peepholes=True, proj_size=3, cell_clip=0.5, proj_clip=0.3),
            initial_state=True,
            weight_scale=1.0,
        ),
        Case("l1_gate_clip", _config(gate_clip=0.6), initial_state=True, weight_scale=1.0),
        Case("l1_input_forget", _config(input_forget=True), initial_state=True),
        Case("l1_hard_sigmoid_keras2", _config(gate_activation=hard2), initial_state=True, weight_scale=1.5),
        Case("l1_hard_sigmoid_keras3", _config(gate_activation=hard3), initial_state=True, weight_scale=1.5),
        Case(
            "l1_relu",
            _config(cell_input_activation=Activation("relu"), cell_output_activation=Activation("relu")),
            initial_state=True,
        ),
        Case(
            "l1_onnx_activations",
            _config(
                gate_activation=Activation("hard_sigmoid", 0.3, 0.45),
                cell_input_activation=Activation("scaled_tanh", 1.1, 0.9),
                cell_output_activation=Activation("softsign"),
            ),
            initial_state=True,
        ),
    ]


#: The fixed grid, in a stable order (test ids and the report follow it).
GRID: tuple[Case, ...] = tuple(_grid())
#: Cases on which every pair of implementations is compared with each other (cheap, common features).
PAIR_CASES: tuple[str, ...] = ("l1_state", "l2_bidir_proj_ragged")


def case_by_name(name: str) -> Case:
    for case in GRID:
        if case.name == name:
            return case
    raise KeyError(name)


# ----------------------------------------------------------------------------------------------------------
# Numbers of a case
# ----------------------------------------------------------------------------------------------------------


@dataclass
class CaseData:
    """Weights, inputs and cotangents of one case, already rounded to the dtype under test (float64 arrays
    holding values that dtype represents exactly), so that the implementation and the reference see the same
    numbers and only arithmetic rounding separates them."""

    weights: LSTMWeights
    inputs: RunInputs

    def forward_only(self) -> RunInputs:
        return replace(self.inputs, dy=None, dh_n=None, dc_n=None)


def case_rng(seed: int, name: str) -> np.random.Generator:
    """A generator seeded by the suite seed and the case name: crc32, since Python's hash() is salted."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def round_to_dtype(array: NDArray[Any], dtype: str) -> NDArray[np.float64]:
    """``array`` rounded to ``dtype`` and back to float64 (bfloat16: round to nearest even on the bits)."""
    array = np.asarray(array, dtype=np.float64)
    if dtype == "float64":
        return array.copy()
    if dtype in ("float32", "float16"):
        return array.astype(dtype).astype(np.float64)
    if dtype == "bfloat16":
        bits = array.astype(np.float32).view(np.uint32)
        rounded = (bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))) & np.uint32(0xFFFF0000)
        return rounded.view(np.float32).astype(np.float64)
    raise ValueError(f"unknown dtype {dtype!r}")


def seq_lens_for(rng: np.random.Generator, steps: int, batch: int) -> NDArray[np.int64]:
    """Ragged lengths in 1..T, with at least one sample shorter than T and one of exactly T."""
    lengths = rng.integers(1, steps + 1, size=batch)
    lengths[0] = steps
    if batch > 1:
        lengths[-1] = max(1, min(int(lengths[-1]), steps - 1))
    return lengths.astype(np.int64)


def make_case_data(case: Case, seed: int, dtype: str) -> CaseData:
    """The numbers of ``case`` under ``seed``, rounded to ``dtype``; identical in every process."""
    rng = case_rng(seed, case.name)
    config = case.config
    weights = random_weights(config, rng, case.weight_scale).map(lambda a: round_to_dtype(a, dtype))
    states = config.num_layers * config.num_directions
    steps, batch = case.steps, case.batch
    out_width = config.num_directions * config.output_size

    def normal(*shape: int) -> NDArray[np.float64]:
        return round_to_dtype(rng.standard_normal(shape), dtype)

    x = normal(steps, batch, config.input_size)
    h0, c0 = normal(states, batch, config.output_size), normal(states, batch, config.hidden_size)
    dy = normal(steps, batch, out_width)
    dh_n, dc_n = normal(states, batch, config.output_size), normal(states, batch, config.hidden_size)
    lengths = seq_lens_for(rng, steps, batch) if case.ragged and steps > 1 else None
    if case.batch_first:
        x, dy = x.swapaxes(0, 1).copy(), dy.swapaxes(0, 1).copy()
    inputs = RunInputs(
        x=x,
        h0=h0 if case.initial_state else None,
        c0=c0 if case.initial_state else None,
        seq_lens=lengths,
        batch_first=case.batch_first,
        dy=dy,
        dh_n=dh_n,
        dc_n=dc_n,
    )
    return CaseData(weights, inputs)


# ----------------------------------------------------------------------------------------------------------
# Hypothesis-drawn cases
# ----------------------------------------------------------------------------------------------------------

#: Activations a drawn case may use, per role, when the implementation supports them.
DRAWN_ACTIVATIONS: dict[str, tuple[Activation, ...]] = {
    "gate": (
        Activation("sigmoid"),
        Activation("hard_sigmoid_keras2"),
        Activation("hard_sigmoid_keras3"),
        Activation("hard_sigmoid", 0.25, 0.5),
    ),
    "cell_input": (Activation("tanh"), Activation("relu"), Activation("softsign"), Activation("scaled_tanh", 1.2, 0.8)),
    "cell_output": (Activation("tanh"), Activation("relu"), Activation("softsign")),
}


def drawn_cases(capabilities: Any) -> Any:
    """A hypothesis strategy of Cases using only what ``capabilities`` (an adapters.base.Capabilities) holds,
    so that every drawn case is checked rather than skipped."""
    from hypothesis import strategies as st

    features = capabilities.features

    def flag(feature: str) -> Any:
        return st.booleans() if feature in features else st.just(False)

    def clip(feature: str) -> Any:
        return st.sampled_from([None, 0.5, 1.0]) if feature in features else st.just(None)

    def activation(role: str, default: Activation) -> Any:
        allowed = capabilities.activations.get(role, frozenset())
        options = [a for a in DRAWN_ACTIVATIONS[role] if a.name in allowed]
        return st.sampled_from(options) if options else st.just(default)

    @st.composite
    def build(draw: Any) -> Case:
        hidden = draw(st.integers(2, 6))
        projecting = draw(flag("proj_size")) and hidden > 1
        proj_size = draw(st.integers(1, hidden - 1)) if projecting else 0
        config = LSTMConfig(
            input_size=draw(st.integers(1, 5)),
            hidden_size=hidden,
            num_layers=draw(st.integers(1, 3)) if "num_layers" in features else 1,
            bidirectional=draw(flag("bidirectional")),
            proj_size=proj_size,
            bias=not draw(flag("no_bias")),
            peepholes=draw(flag("peepholes")),
            cell_clip=draw(clip("cell_clip")),
            gate_clip=draw(clip("gate_clip")),
            proj_clip=draw(clip("proj_clip")) if proj_size else None,
            input_forget=draw(flag("input_forget")),
            gate_activation=draw(activation("gate", Activation("sigmoid"))),
            cell_input_activation=draw(activation("cell_input", Activation("tanh"))),
            cell_output_activation=draw(activation("cell_output", Activation("tanh"))),
        )
        steps = draw(st.integers(1, 12))
        ragged = steps > 1 and capabilities.seq_lens and draw(st.booleans())
        initial_state = capabilities.initial_state and draw(st.booleans())
        batch_first = capabilities.batch_first and draw(st.booleans())
        number = draw(st.integers(0, 2**31 - 1))
        return Case(
            name=f"drawn{number}",
            config=config,
            steps=steps,
            batch=draw(st.integers(1, 4)),
            ragged=ragged,
            initial_state=initial_state,
            batch_first=batch_first,
            weight_scale=draw(st.sampled_from([None, 1.0])),
        )

    return build()
