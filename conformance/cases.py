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

import math
import zlib
from collections import Counter
from collections.abc import Callable
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


#: Profiles, smallest first: the cases of a profile are those of its tier and every tier before it.
PROFILE_NAMES: tuple[str, ...] = ("quick", "standard", "exhaustive")


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
    #: x = input_scale * (N(0, 1) + input_offset): a common offset drives every step's pre-activations the same
    #: way, so that gates saturate and cells grow over the steps (saturation cases); a tiny scale keeps activity
    #: near zero.
    input_scale: float = 1.0
    input_offset: float = 0.0
    #: The smallest profile (``PROFILE_NAMES``) that runs this case.
    tier: str = "quick"
    #: Why the case exists: the branch of a kernel it reaches.
    reason: str = "feature coverage at a toy size"
    #: Also run in float16 where the implementation has it (saturation: exp and tanh overflow paths live there).
    float16_too: bool = False
    #: The output cotangent at the last step only (dy zero before it, dh_n and dc_n given): the loss of a
    #: sequence classifier, whose gradients reach the first steps only through all T steps' Jacobians.
    final_cotangent_only: bool = False

    def features(self) -> list[str]:
        """Config features plus the input features, by the names limitations and the report use."""
        found = self.config.features()
        for name in ("ragged", "initial_state", "batch_first"):
            if getattr(self, name):
                found.append(name)
        return found

    def flops(self, gradients: bool) -> float:
        """Floating-point operations of one run: the gate products of every layer, direction and step
        (2 * T * B * 4H * (I_layer + Hout)), the projection's, and about twice that again for backward."""
        config = self.config
        total = 0.0
        for layer in range(config.num_layers):
            width = config.layer_input_size(layer) + config.output_size
            per_step = 2 * self.batch * 4 * config.hidden_size * width
            if config.proj_size:
                per_step += 2 * self.batch * config.hidden_size * config.proj_size
            total += per_step * self.steps * config.num_directions
        return total * (3.0 if gradients else 1.0)

    def sequential_steps(self) -> int:
        """Steps an implementation takes one after another (per layer and direction): the per-step overhead."""
        return self.steps * self.config.num_layers * self.config.num_directions


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


def _sized(
    name: str,
    input_size: int,
    hidden_size: int,
    steps: int,
    batch: int,
    reason: str,
    tier: str = "standard",
    **fields: Any,
) -> Case:
    """A depth case: plain sigmoid/tanh cell (every implementation runs it) at a size chosen for ``reason``."""
    config_fields = {k: fields.pop(k) for k in ("num_layers", "bidirectional", "proj_size") if k in fields}
    config = LSTMConfig(input_size=input_size, hidden_size=hidden_size, **config_fields)
    return Case(name, config, steps=steps, batch=batch, tier=tier, reason=reason, **fields)


def _depth() -> list[Case]:
    """Cases along the axes where kernels branch, cheapest and most telling first (the planner keeps to a
    budget in this order). Vector widths: 8 float32 lanes (AVX2), 16 (AVX-512), 4/8 float64; sizes just
    below, at and just past them reach a SIMD main loop's tail."""
    return [
        _sized("h1_i1_b1", 1, 1, 7, 1, "H=I=1, batch 1: degenerate products (dot products, no tile at all)"),
        _sized("h7_i9", 9, 7, 12, 3, "H=7, one short of 8 float32 lanes: all tail, no full vector"),
        _sized("h8_i16", 16, 8, 10, 5, "H=8: exactly one AVX2 float32 vector, no tail", initial_state=True),
        _sized(
            "h9_i8_odd_batch",
            8,
            9,
            10,
            7,
            "H=9: one full vector plus a tail of one; odd batch",
            initial_state=True,
        ),
        _sized(
            "h17_i31",
            31,
            17,
            9,
            4,
            "H=17, I=31: one AVX-512 float32 vector plus one; I odd and != H (input product's tail)",
            initial_state=True,
            batch_first=True,
        ),
        _sized(
            "h33_i32_bidir",
            32,
            33,
            16,
            5,
            "H=33 across 32: tail after four AVX2 vectors; bidirectional",
            initial_state=True,
            bidirectional=True,
        ),
        _sized(
            "h31_i16_l2",
            16,
            31,
            11,
            3,
            "H=31 (one short of 32) stacked: layer 2 reads 31-wide input",
            initial_state=True,
            num_layers=2,
        ),
        _sized(
            "h64_i100_ragged",
            100,
            64,
            40,
            9,
            "H=64, I=100: a cache-line multiple against an odd-tiled input; ragged lengths spread over 1..40",
            ragged=True,
            initial_state=True,
        ),
        _sized(
            "h100_proj17",
            33,
            100,
            12,
            4,
            "H=100 with an odd projection P=17 (P and H both off every vector width)",
            initial_state=True,
            proj_size=17,
        ),
        _sized("h128_i256", 256, 128, 8, 4, "H=128, I=256: a typical GEMM tile, I != H", initial_state=True),
        _sized("h256_i128", 128, 256, 6, 3, "H=256: 4H=1024-row products, beyond small-size kernels"),
        _sized(
            "h512",
            512,
            512,
            5,
            2,
            "I=H=512: a realistic layer; a bug in one unit of 512 must still fail (per-unit scale)",
            initial_state=True,
        ),
        _sized(
            "t300_ragged",
            8,
            16,
            300,
            6,
            "T=300: past a 256-step scan chunk; ragged lengths spread evenly over 1..300",
            ragged=True,
            initial_state=True,
        ),
        _sized(
            "t1000",
            4,
            8,
            1000,
            3,
            "T=1000: long scans (chunks of 256 and 512); the cotangent at the last step only, so the gradients "
            "vanish toward the first steps (max |grad_x| 3e-1 at step 999, 3e-112 at step 500, 1e-223 at step 0 "
            "in float64; no weight scale from 0.35 to 1.5 made them grow): judged per step",
            initial_state=True,
            final_cotangent_only=True,
        ),
        _sized(
            "b300",
            8,
            16,
            20,
            300,
            "batch 300: past a 128/256-sample batch split, with initial states per sample",
            initial_state=True,
        ),
        _sized(
            "b129_t257_h33_ragged_bidir",
            17,
            33,
            257,
            129,
            "every boundary at once: B=129 (128+1), T=257 (256+1), H=33, ragged, both directions",
            ragged=True,
            initial_state=True,
            bidirectional=True,
        ),
        _sized(
            "saturated",
            16,
            32,
            100,
            5,
            "pre-activations of tens (weights +-2, inputs 3*(N(0,1)+1)): gates at 0/1, cells growing to ~100; "
            "exp/tanh overflow paths (float32 exp overflows past 88, tanh via exp(2x) past 44)",
            weight_scale=2.0,
            input_scale=3.0,
            input_offset=1.0,
            initial_state=True,
            float16_too=True,
        ),
        _sized(
            "saturated_h9_long",
            5,
            9,
            400,
            3,
            "saturated gates on an odd H over 400 steps: cells grow past float16's range of exact integers",
            weight_scale=3.0,
            input_scale=2.0,
            input_offset=1.5,
            float16_too=True,
        ),
        _sized(
            "near_zero",
            12,
            24,
            50,
            4,
            "near-zero activity (weights and inputs 1e-3): outputs ~1e-6, the relative rule must still bite",
            weight_scale=1e-3,
            input_scale=1e-3,
        ),
        _sized(
            "h1024_t64",
            1024,
            1024,
            64,
            16,
            "I=H=1024 over 64 steps: a large layer for nightly and GPU runs",
            tier="exhaustive",
        ),
        _sized(
            "t4096",
            8,
            16,
            4096,
            2,
            "T=4096: scans chunked at 1024 or 2048",
            tier="exhaustive",
            ragged=True,
            initial_state=True,
        ),
        _sized("b1024", 16, 32, 16, 1024, "batch 1024", tier="exhaustive", initial_state=True),
        _sized(
            "h257_proj129_l2_bidir",
            64,
            257,
            50,
            33,
            "odd sizes everywhere, stacked and bidirectional",
            tier="exhaustive",
            num_layers=2,
            bidirectional=True,
            proj_size=129,
            initial_state=True,
        ),
    ]


#: The toy grid (the quick profile), in a stable order (test ids and the report follow it).
GRID: tuple[Case, ...] = tuple(_grid())
#: The order in which a budget takes the depth cases: one per axis first (odd H across a vector width,
#: saturation, large batch, a large layer, bidirectional odd sizes, a long ragged scan), then the rest.
DEPTH_PRIORITY: tuple[str, ...] = (
    "h9_i8_odd_batch",
    "saturated",
    "b300",
    "h512",
    "h33_i32_bidir",
    "t300_ragged",
    "h17_i31",
    "h64_i100_ragged",
    "h100_proj17",
    "t1000",
    "b129_t257_h33_ragged_bidir",
    "saturated_h9_long",
    "near_zero",
)
#: Cases along the axes where kernels branch (standard and exhaustive profiles), in budget order.
DEPTH: tuple[Case, ...] = tuple(
    sorted(_depth(), key=lambda c: DEPTH_PRIORITY.index(c.name) if c.name in DEPTH_PRIORITY else len(DEPTH_PRIORITY))
)
ALL_CASES: tuple[Case, ...] = GRID + DEPTH
#: Cases on which every pair of implementations is compared with each other (cheap, common features; the
#: depth ones only where both sides' plans hold them).
PAIR_CASES: tuple[str, ...] = ("l1_state", "l2_bidir_proj_ragged", "h17_i31", "h33_i32_bidir")


def case_by_name(name: str) -> Case:
    for case in ALL_CASES:
        if case.name == name:
            return case
    raise KeyError(name)


# ----------------------------------------------------------------------------------------------------------
# Cost estimates and profiles
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostModel:
    """Estimated seconds of one run: a fixed overhead (graph building, tracing, compiling), a per-step cost
    (a Python or graph loop per step, per layer and direction) and a per-GFLOP cost (see ``Case.flops``)."""

    overhead_s: float
    step_s: float
    gflop_s: float

    def seconds(self, case: Case, gradients: bool) -> float:
        steps = case.sequential_steps() * (2 if gradients else 1)
        return self.overhead_s + self.step_s * steps + self.gflop_s * case.flops(gradients) / 1e9


#: Per implementation (base name): least-squares fits (non-negative) of every forward and gradients test's
#: duration in two whole standard runs (`lstm-conformance check -n 2 --durations=0`, this 2-core machine at load
#: 2.5 to 3, 2026-12-01), the larger of the two fits, rounded up: a plan errs toward fewer cases. The overhead is
#: a run's fixed cost: keras-jax's and Flax's an XLA compile of each new shape (2.5 to 4.8 s, 1 s), dynamo's an
#: export (2.7 to 6.7 s); the TF cells' and Keras' step cost is their per-step loop (15 to 20 ms). LiteRT's, since
#: its files are written directly (no TF converter): 3 to 18 ms a run, 63 ms at B=1024, 0.4 s per GFLOP at
#: H=1024. Unknown implementations use ``DEFAULT_COST``.
COST_MODELS: dict[str, CostModel] = {
    "reference": CostModel(0.02, 6e-4, 2.2),
    "torch": CostModel(0.03, 4e-4, 3.1),
    "torch-cell": CostModel(0.02, 6e-4, 1.2),
    "tf-cell": CostModel(0.1, 0.016, 2.5),
    "tf-block": CostModel(0.03, 5e-4, 5.8),
    "tf-block-v2": CostModel(0.03, 5e-4, 5.8),
    "keras": CostModel(0.12, 0.014, 5.0),
    "tf-keras": CostModel(0.05, 0.021, 4.2),
    "keras-jax": CostModel(4.8, 5e-4, 10.0),
    "keras-torch": CostModel(0.5, 2.3e-3, 0.8),
    "onnxruntime": CostModel(0.02, 5e-4, 2.3),
    "onnx-reference": CostModel(0.02, 4e-4, 1.4),
    "openvino": CostModel(0.24, 6e-5, 1.2),
    "tflite": CostModel(0.02, 5e-6, 0.5),
    "torch-onnx": CostModel(0.3, 1e-4, 1.5),
    "torch-onnx-dynamo": CostModel(6.7, 0.023, 27.0),
    "flax": CostModel(1.0, 8e-3, 7e3),
    "flax-optimized": CostModel(1.0, 8e-3, 1e4),
}
DEFAULT_COST = CostModel(0.05, 1e-3, 1.0)


@dataclass(frozen=True)
class Profile:
    """A profile: which tiers of cases, and how much estimated time each built-in implementation may spend
    (``budget_s``, over its places and both checks): the toy cases first, those adding a feature before the
    rest, then the depth cases in ``DEPTH`` order. A third party's implementation gets every case of the
    profile. ``max_examples``: hypothesis examples per implementation and place, each kept under
    ``drawn_cost_s`` (estimated), and no more than ``drawn_budget_s`` allows at the implementation's overhead
    per run."""

    name: str
    tiers: tuple[str, ...]
    budget_s: float
    max_examples: int
    drawn_cost_s: float
    drawn_budget_s: float = math.inf


#: Budgets: on this 2-core machine the standard matrix (21 targets) must finish within 240 s with -n 2.
#: Measured (`lstm-conformance check -n 2`, quiet machine, 2026-12-02): standard at 12 s per implementation 145 s
#: (8,113 checks), at 18 s 168 s (8,707 checks, 11 skipped of 1,442 tests).
PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", ("quick",), 6.0, 2, 0.2, 3.0),
    "standard": Profile("standard", ("quick", "standard"), 18.0, 4, 0.5, 6.0),
    "exhaustive": Profile("exhaustive", PROFILE_NAMES, math.inf, 25, 60.0),
}


def drawn_examples(implementation: str, profile: Profile, max_examples: int) -> int:
    """The hypothesis examples one place of ``implementation`` gets: ``max_examples``, fewer where its
    overhead per run (an export, a compile) would spend more than the profile's ``drawn_budget_s``; at least
    one."""
    overhead = cost_model(implementation).overhead_s
    affordable = (
        int(profile.drawn_budget_s / overhead)
        if overhead > 0 and math.isfinite(profile.drawn_budget_s)
        else max_examples
    )
    return max(1, min(max_examples, affordable))


def cost_model(implementation: str) -> CostModel:
    return COST_MODELS.get(implementation.split(":")[0], DEFAULT_COST)


@dataclass(frozen=True)
class Plan:
    """The cases one implementation runs under a profile, the depth cases its budget left out, and the cases
    that need what its capabilities do not declare (each with what it lacks: they could only skip)."""

    cases: tuple[Case, ...]
    left_out: tuple[Case, ...]
    estimated_s: float
    lacking: tuple[tuple[Case, tuple[str, ...]], ...] = ()


def case_lacks(capabilities: Any, case: Case) -> list[str]:
    """What ``case`` needs that ``capabilities`` (an adapters.base.Capabilities) does not declare: config
    features, per-sample lengths, initial states, a batch-first layout."""
    missing = list(capabilities.unsupported(case.config))
    for needed, declared, name in (
        (case.ragged, capabilities.seq_lens, "per-sample lengths"),
        (case.initial_state, capabilities.initial_state, "initial states"),
        (case.batch_first, capabilities.batch_first, "batch_first"),
    ):
        if needed and not declared:
            missing.append(name)
    return missing


def plan_cases(
    implementation: str, profile: Profile, runs_per_case: int, third_party: bool, capabilities: Any | None
) -> Plan:
    """The profile's cases for ``implementation``, each costing ``runs_per_case`` runs of forward and of
    gradients (estimated by its ``CostModel``): for a built-in, while the estimate keeps within
    ``profile.budget_s`` (the first of them whatever it costs: every implementation shows in the matrix), the
    toy cases that add a feature first (in grid order), then the other toy cases, then the depth cases in
    ``DEPTH`` order; for a third party, the profile's every case, whatever it costs. A
    case needing what the implementation's ``capabilities`` do not declare is not planned (it could only
    skip): it is listed in ``Plan.lacking``."""
    model = cost_model(implementation)
    candidates: list[Case] = []
    lacking: list[tuple[Case, tuple[str, ...]]] = []
    for case in ALL_CASES:
        if case.tier not in profile.tiers:
            continue
        missing = case_lacks(capabilities, case) if capabilities is not None else []
        if missing:
            lacking.append((case, tuple(missing)))
        else:
            candidates.append(case)
    chosen: set[Case] = set()
    spent = 0.0
    gradients = capabilities is None or capabilities.gradients
    for case in _budget_order(candidates):
        cost = runs_per_case * (model.seconds(case, False) + (model.seconds(case, True) if gradients else 0.0))
        if third_party or not chosen or spent + cost <= profile.budget_s:  # the first case whatever it costs
            chosen.add(case)
            spent += cost
    cases = tuple(case for case in candidates if case in chosen)  # test ids keep the grid's order
    left_out = tuple(case for case in candidates if case not in chosen)
    return Plan(cases, left_out, spent, tuple(lacking))


def _budget_order(cases: list[Case]) -> list[Case]:
    """Toy cases that add a feature not yet covered, then the other toy cases, then the depth cases."""
    covered: set[str] = set()
    first: list[Case] = []
    later: list[Case] = []
    for case in (c for c in cases if c.tier == "quick"):
        needs = set(_coverage(case))
        (first if needs - covered else later).append(case)
        covered |= needs
    return first + later + [c for c in cases if c.tier != "quick"]


def _coverage(case: Case) -> list[str]:
    extras = [name for name, on in (("ragged", case.ragged), ("initial_state", case.initial_state)) if on]
    return [*case.config.features(), *extras, *(["batch_first"] if case.batch_first else [])]


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
    """Ragged lengths spread evenly over 1..T (shuffled), so that a long case runs short, middle and full
    lengths together; one sample runs all T steps and, with two or more samples, one runs a single step."""
    if batch == 1:
        return np.array([steps], dtype=np.int64)
    lengths = np.rint(np.linspace(1, steps, batch)).astype(np.int64)
    rng.shuffle(lengths)
    return lengths


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

    x = round_to_dtype(
        case.input_scale * (rng.standard_normal((steps, batch, config.input_size)) + case.input_offset), dtype
    )
    h0, c0 = normal(states, batch, config.output_size), normal(states, batch, config.hidden_size)
    dy = normal(steps, batch, out_width)
    if case.final_cotangent_only:
        dy[:-1] = 0.0
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


#: The axes drawn cases take their sizes from, ascending: hypothesis shrinks a ``sampled_from`` toward its first
#: element, so a failure shrinks toward the smallest size (and length, batch) that still fails.
DRAWN_SIZES: tuple[int, ...] = (1, 2, 3, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64, 100, 128, 256)
DRAWN_STEPS: tuple[int, ...] = (1, 2, 3, 6, 12, 33, 100, 257, 300, 1000)
DRAWN_BATCHES: tuple[int, ...] = (1, 2, 3, 4, 7, 16, 33, 129, 300)
#: (weight scale, input scale, input offset), gentlest first: PyTorch's init, clip-biting, saturating, near zero.
DRAWN_REGIMES: tuple[tuple[float | None, float, float], ...] = (
    (None, 1.0, 0.0),
    (1.0, 1.0, 0.0),
    (2.0, 3.0, 1.0),
    (1e-3, 1e-3, 0.0),
)


def fit_to_cost(case: Case, seconds: Callable[[Case], float], cap: float) -> Case:
    """``case`` with its steps, then its batch, halved until its estimated cost fits ``cap``: deterministic
    and monotone, so hypothesis' shrinking still moves toward small cases."""
    while seconds(case) > cap and (case.steps > 1 or case.batch > 1):
        if case.steps > 1:
            case = replace(case, steps=max(1, case.steps // 2))
        else:
            case = replace(case, batch=max(1, case.batch // 2))
    return case


def drawn_cases(capabilities: Any, seconds: Callable[[Case], float] | None = None, cap: float = math.inf) -> Any:
    """A hypothesis strategy of Cases using only what ``capabilities`` (an adapters.base.Capabilities) holds,
    so that every drawn case is checked rather than skipped; sizes, lengths, batches and weight regimes from the
    same axes as ``DEPTH``, each case's estimated cost (``seconds``) kept under ``cap``."""
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
        hidden = draw(st.sampled_from(DRAWN_SIZES))
        projecting = draw(flag("proj_size")) and hidden > 1
        proj_size = draw(st.sampled_from([p for p in DRAWN_SIZES if p < hidden])) if projecting else 0
        config = LSTMConfig(
            input_size=draw(st.sampled_from(DRAWN_SIZES)),
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
        steps = draw(st.sampled_from(DRAWN_STEPS))
        ragged = steps > 1 and capabilities.seq_lens and draw(st.booleans())
        initial_state = capabilities.initial_state and draw(st.booleans())
        batch_first = capabilities.batch_first and draw(st.booleans())
        batch = draw(st.sampled_from(DRAWN_BATCHES))
        weight_scale, input_scale, input_offset = draw(st.sampled_from(DRAWN_REGIMES))
        number = draw(st.integers(0, 2**31 - 1))
        case = Case(
            name=f"drawn{number}",
            config=config,
            steps=steps,
            batch=batch,
            ragged=ragged,
            initial_state=initial_state,
            batch_first=batch_first,
            weight_scale=weight_scale,
            input_scale=input_scale,
            input_offset=input_offset,
            tier="standard",
            reason="drawn by hypothesis",
        )
        return case if seconds is None else fit_to_cost(case, seconds, cap)

    return build()


# ----------------------------------------------------------------------------------------------------------
# What the matrix does not generate, in one line each
# ----------------------------------------------------------------------------------------------------------


def not_run_lines(settings: Any) -> list[str]:
    """One line per group of tests the suite does not generate because they could only skip: a dtype or
    device an implementation lacks entirely, CUDA without a device, depth cases beyond a built-in
    implementation's budget under the profile. ``settings`` is a ``conformance.settings.SuiteSettings``.
    Cheap: capabilities and plans only (no framework import beyond what collecting the suite did)."""
    from lstm_conformance.conformance import runtime  # runtime imports this module

    lines: list[str] = []
    cuda_reason = runtime.cuda_unavailable_reason() if "cuda" in settings.devices else None
    cuda_cases = 0
    cpu_only: list[str] = []
    for target in runtime.selected_targets(settings):
        capabilities = runtime.target_capabilities(target)
        if capabilities is None:
            continue
        plan = runtime.plan(settings, target)
        planned = len(plan.cases)
        missing_dtypes = [d for d in settings.dtypes if d not in capabilities.dtypes]
        if missing_dtypes:
            lines.append(
                f"{target.id}: {', '.join(missing_dtypes)} not generated (it runs {', '.join(capabilities.dtypes)} "
                f"only); {planned * len(missing_dtypes)} cases not run"
            )
        if not capabilities.gradients:
            lines.append(f"{target.id}: gradients not generated (it runs forward only); {planned} cases not run")
        if "cuda" in settings.devices and "cuda" not in capabilities.devices:
            cpu_only.append(target.id)
        elif cuda_reason is not None and "cuda" in settings.devices:
            dtypes = [d for d in settings.dtypes if d in capabilities.dtypes]
            cuda_cases += planned * sum(len(settings.math_modes("cuda", d)) for d in dtypes)
        if plan.lacking:
            counts = Counter(need for _, needs in plan.lacking for need in needs)
            needs = ", ".join(f"{need} ({count})" for need, count in counts.most_common())
            lines.append(
                f"{target.id}: {len(plan.lacking)} cases not generated (they need what it does not declare: {needs})"
            )
        examples = runtime.drawn_examples_for(settings, target)
        if 0 < examples < settings.max_examples:
            lines.append(
                f"{target.id}: {examples} drawn examples per place, not {settings.max_examples} (about "
                f"{cost_model(target.id).overhead_s:g} s a run); --lstm-max-examples {settings.max_examples} draws "
                "them all"
            )
        if plan.left_out:
            names = ", ".join(case.name for case in plan.left_out)
            lines.append(
                f"{target.id}: {len(plan.left_out)} cases of the {settings.profile} profile over its budget "
                f"({plan.estimated_s:.0f} s estimated of {PROFILES[settings.profile].budget_s:.0f} s) not run: "
                f"{names}; --lstm-profile exhaustive runs them"
            )
    if cpu_only and cuda_reason is None:
        lines.insert(0, f"cuda: not generated for {', '.join(cpu_only)} (they run on the CPU only)")
    if cuda_reason is not None and cuda_cases:
        lines.insert(0, f"cuda: {cuda_reason}; {cuda_cases} cases not run")
    return lines
