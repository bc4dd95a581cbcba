"""Tolerances as data: how far an implementation may be from the float64 reference, and why.

An element passes when ``|got - expected| <= rtol(T) * (|expected| + scale)``, where ``scale`` is the largest
``|expected|`` of the tensor (so near-zero elements of a tensor get an absolute tolerance in proportion to the
tensor, instead of an arbitrary atol) and ``rtol(T) = rtol * growth(T)``.

``growth(T) = max(1, (T / 10) ** 0.25)``: ../shared/DESIGN.md measured the errors of cuDNN runs barely growing
from T=10 to T=1000; a quarter power (x3.2 at T=1000) allows for that growth with margin. Kept after the depth
cases' measurements: on CPU the error divided by growth(T) stayed within the same rule from T=10 (h9: 1.0e-7
float32 forward) to T=400 (saturated_h9_long: 3.8e-7) and T=1000 (torch-cell, t1000 with every step's cotangent:
5.1e-8 forward, 1.4e-7 gradients), so no refit was needed.

For the time-indexed tensors (y, grad_x) the scale is per step (``Tolerance.scale``): gradients vanish over long
sequences, and a tensor-wide scale would let a bug in the early steps through.

Conditioning: an element rule fitted on well-conditioned cases is dishonest where the function itself amplifies
rounding (large recurrent weights in the steep part of the gates: every step multiplies an error by up to
|W| * sigma', a chaotic recurrence). There every correct float32 run is far from the float64 reference
(measured: drawn I=1 H=64 L=2 T=125, PyTorch's own nn.LSTM 36x over the element rule; I=2 H=64 L=3 T=6 with
weight scale 2, 3.9x). So each comparison also allows ``SENSITIVITY_FACTOR`` times the case's *sensitivity*:
how far the float64 reference itself moves when its inputs and weights are perturbed by the math mode's unit
roundoff (``checks.sensitivity``; per step for the time-indexed tensors, the tensor's max otherwise). On
well-conditioned cases that term is ~10x below the element rule (H=128 T=300: 7e-9 against 3.5e-6), so a bug
confined to one unit or one step still fails; on chaotic cases it grows exactly as the function's own
amplification does.

The reference runs on inputs and weights already rounded to the dtype under test (``cases.round_to_dtype``), so
only the arithmetic of the run separates got from expected.

Rules are keyed by math mode (float64, float32, tf32, float16, bfloat16), implementation, device and check;
the most specific matching rule wins (``"*"`` matches anything). The math mode comes from what was asked:
float32 on CUDA with ``--lstm-allow-tf32`` is checked as "tf32", strict float32 as "float32", so a TF32 result
is never judged by a float32 tolerance, and a strict run that reports TF32 fails (``strict_mode_violation``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Math modes, by the name the report and the rules use.
MATH_MODES: tuple[str, ...] = ("float64", "float32", "tf32", "float16", "bfloat16")


@dataclass(frozen=True)
class ToleranceRule:
    math_mode: str
    rtol: float
    reason: str
    implementation: str = "*"
    device: str = "*"
    check: str = "*"
    #: The per-step scale term never goes below this fraction of the tensor's max |expected| (1.0: the tensor's
    #: max, the rule as before). Per step only in float64: in float32 TF's BlockLSTM measured grad_x errors in
    #: proportion to the tensor, not to the step (drawn I=1 H=8 T=100 B=1: error 1.6e-6 on a step value of
    #: 7.9e-3, 7e-7 of the tensor's max 2.2; t1000 with vanishing gradients failed alike), so float32 and below
    #: keep the tensor-wide scale.
    step_floor: float = 1.0
    #: Widened to a quantized source's measured quantization error (``with_quantization``).
    quantized: bool = False

    def matches(self, math_mode: str, implementation: str, device: str, check: str) -> bool:
        return (
            self.math_mode == math_mode
            and self.implementation in ("*", implementation, implementation.split(":")[0])
            and self.device in ("*", device)
            and self.check in ("*", check)
        )

    def specificity(self) -> int:
        return sum(value != "*" for value in (self.implementation, self.device, self.check))


RULES: tuple[ToleranceRule, ...] = (
    ToleranceRule(
        "float64",
        1e-12,
        "float64 against float64: only the order of summation differs (unit roundoff 1.1e-16); measured on the "
        "toy grid (torch, TF, Keras, Flax on CPU): at most 8e-16; on the depth cases (H to 512, T to 1000, B to "
        "300, saturated), as error / (|e| + per-step scale) / growth(T): torch 2.4e-15 forward, 1.5e-14 "
        "gradients (saturated_h9_long grad_x); torch-cell 2.4e-15, 1.0e-14; tf-cell 3.8e-15, 1.1e-14 "
        "(saturated): ~70x margin",
        step_floor=1e-6,
    ),
    ToleranceRule(
        "float32",
        5e-6,
        "strict float32 (unit roundoff 6e-8) on inputs already rounded to float32; measured on the toy grid on "
        "CPU: at most 3.2e-7; on the depth cases (error / (|e| + per-step scale) / growth(T)): torch-cell 9.5e-7 "
        "(saturated: cells near 100), 3.2e-7 at H=512; DESIGN.md measures cuDNN float32 with TF32 off at 3e-7 "
        "normwise: ~5x margin over the worst",
    ),
    ToleranceRule(
        "float32",
        1e-5,
        "float32 gradients sum T*B products per parameter element; measured on the toy grid on CPU: at most "
        "5.4e-7; on the depth cases: torch-cell 3.7e-6 (saturated_h9_long grad_x, per step: saturated gates leave "
        "gradients of 1e-6 of the tensor's max, each judged against its own step), 8e-7 at H=512 under the "
        "tensor scale; DESIGN.md measures cuDNN grad W_hh at up to 9e-7 normwise: ~3x margin over the worst",
        check="gradients",
    ),
    ToleranceRule(
        "tf32",
        5e-3,
        "TF32 matmuls (10-bit mantissa, unit roundoff 4.9e-4); DESIGN.md measures cuDNN with TF32 on at 3e-4 "
        "(outputs) and 4e-4 (gradients) normwise on an H200; elementwise allowance ~10x",
    ),
    ToleranceRule(
        "float16",
        1e-2,
        "float16 (unit roundoff 4.9e-4); DESIGN.md measures cuDNN float16 at 4.5e-4 (outputs), 7.7e-4 (gradients)",
    ),
    ToleranceRule(
        "bfloat16",
        6e-2,
        "bfloat16 (unit roundoff 3.9e-3); DESIGN.md measures cuDNN bfloat16 at 3.6e-3 (outputs), 6.2e-3 (gradients)",
    ),
    ToleranceRule(
        "float32",
        6e-2,
        "float32 model under OpenVINO's INFERENCE_PRECISION_HINT=bf16 (its reduced CPU mode; the run reports the "
        "precision the plugin compiled); the bfloat16 rule's allowance. Not measured in bf16 here: the CI CPU "
        "(AVX2, no AVX512-BF16/AMX) compiles it as f32, measured at 2.6e-7",
        implementation="openvino:bf16",
    ),
)


#: The unit roundoff of each math mode: the relative size of the perturbation that measures a case's
#: sensitivity (TF32 rounds matmul inputs to a 10-bit mantissa, as float16 does).
UNIT_ROUNDOFF: dict[str, float] = {
    "float64": 2.0**-53,
    "float32": 2.0**-24,
    "tf32": 2.0**-11,
    "float16": 2.0**-11,
    "bfloat16": 2.0**-8,
}
#: How many times the sensitivity (the reference's own change under unit-roundoff perturbations) a run may be
#: off. Measured as error / sensitivity per step with PyTorch's nn.LSTM in float32 on CPU: 1.2 (drawn
#: I=2 H=64 L=3 T=6, weight scale 2), 3.5 (drawn I=1 H=64 L=2 T=125), 3.2 (saturated H=9 T=400), 4.7 (H=64
#: T=100), 6.8 (H=128 L=2 T=300): ~2.5x margin over the worst. One perturbed run: the factor covers its
#: randomness.
SENSITIVITY_FACTOR = 16.0

#: Tensors indexed by time (time-major [T, B, F]; [B, T, F] batch-first): their scale term is per step.
TIME_INDEXED: tuple[str, ...] = ("y", "grad_x")
#: Smallest normal number per math mode: values below it have lost relative precision to underflow.
SMALLEST_NORMAL: dict[str, float] = {
    "float64": 2.2e-308,
    "float32": 1.2e-38,
    "tf32": 1.2e-38,
    "float16": 6.1e-5,
    "bfloat16": 1.2e-38,
}


@dataclass(frozen=True)
class Tolerance:
    """The tolerance one comparison uses: the rule's rtol times growth(T), with the rule kept for messages;
    ``time_axis`` is the axis of time in the time-indexed tensors (1 for batch-first runs)."""

    rtol: float
    steps: int
    rule: ToleranceRule
    time_axis: int = 0
    #: Per tensor (as the measurements name them: "y", "grad_x", "grad[layers.0.forward.W]"), how far the
    #: reference moves under unit-roundoff perturbations of its inputs and weights (``checks.sensitivity``);
    #: empty: no conditioning term (the element rule alone).
    sensitivity: Mapping[str, NDArray[Any]] = field(default_factory=dict, compare=False, repr=False)
    sensitivity_factor: float = SENSITIVITY_FACTOR

    def with_time_axis(self, batch_first: bool) -> Tolerance:
        return replace(self, time_axis=1 if batch_first else 0)

    def with_sensitivity(self, sensitivity: Mapping[str, NDArray[Any]]) -> Tolerance:
        return replace(self, sensitivity=sensitivity)

    def allowed(self, tensor: str, magnitude: NDArray[Any]) -> NDArray[Any]:
        """The error each element of ``tensor`` may have (``magnitude`` = |expected|): the element rule plus
        the conditioning term (``SENSITIVITY_FACTOR`` times the sensitivity, per step for time-indexed tensors)."""
        allowed = self.rtol * (magnitude + self.scale(tensor, magnitude))
        moved = self.sensitivity.get(tensor)
        if moved is None or moved.shape != magnitude.shape or moved.size == 0:
            return np.asarray(allowed)
        return np.asarray(allowed + self.sensitivity_factor * self._spread(tensor, np.abs(moved)))

    def _spread(self, tensor: str, moved: NDArray[Any]) -> NDArray[Any] | float:
        """The sensitivity as a per-step (time-indexed tensors) or tensor-wide bound: where the perturbation
        moved an element is noise; how far it moved that step's elements is the conditioning."""
        if tensor not in TIME_INDEXED or moved.ndim < 2:
            return float(moved.max())
        other = tuple(axis for axis in range(moved.ndim) if axis != self.time_axis)
        return np.asarray(moved.max(axis=other, keepdims=True))

    def scale(self, tensor: str, magnitude: NDArray[Any]) -> NDArray[Any] | float:
        """The scale term of every element of ``tensor`` (``magnitude`` = |expected|): the tensor's max
        |expected|, or for a time-indexed tensor (``TIME_INDEXED``) the max |expected| of the element's own
        step, floored at ``rule.step_floor`` times the tensor's max and at the smallest normal over rtol.

        Why per step: the rounding error of a step's values is in proportion to that step's magnitudes (grad_x
        at step t is dA_t @ W), and gradients shrink over a long sequence (measured: t1000's grad_x at step 0 is
        ~1e-3 to 1e-6 of the last step's). Under the tensor's max a bug confined to the early steps of a long
        sequence stayed below tolerance; under the per-step scale it fails (tests/test_tolerances.py)."""
        overall = float(magnitude.max())
        if tensor not in TIME_INDEXED or magnitude.ndim < 2:
            return max(overall, 1e-30)
        other = tuple(axis for axis in range(magnitude.ndim) if axis != self.time_axis)
        floor = max(self.rule.step_floor * overall, SMALLEST_NORMAL.get(self.rule.math_mode, 2.2e-308) / self.rtol)
        return np.maximum(magnitude.max(axis=other, keepdims=True), floor)

    def describe(self) -> str:
        conditioning = (
            f"; plus {self.sensitivity_factor:g}x the case's sensitivity (the reference moved by unit-roundoff "
            "perturbations)"
            if self.sensitivity
            else ""
        )
        return f"rtol {self.rtol:.3g} ({self.rule.math_mode}, T={self.steps}: {self.rule.reason}){conditioning}"


def growth(steps: int) -> float:
    return max(1.0, (steps / 10.0) ** 0.25)


def tolerance_for(math_mode: str, implementation: str, device: str, check: str, steps: int) -> Tolerance:
    """The most specific rule matching; every math mode has a default rule, so this always finds one."""
    matching = [rule for rule in RULES if rule.matches(math_mode, implementation, device, check)]
    if not matching:
        raise KeyError(f"no tolerance rule for math mode {math_mode!r}; known: {', '.join(MATH_MODES)}")
    rule = max(matching, key=ToleranceRule.specificity)
    return Tolerance(rule.rtol * growth(steps), steps, rule)


def combined(first: Tolerance, second: Tolerance) -> Tolerance:
    """Two implementations compared with each other: each may be its own tolerance from the reference."""
    rule = first.rule if first.rtol >= second.rtol else second.rule
    merged = ToleranceRule(
        rule.math_mode,
        first.rtol + second.rtol,
        f"sum of both sides' tolerances; {rule.reason}",
        step_floor=max(first.rule.step_floor, second.rule.step_floor),
    )
    return Tolerance(
        first.rtol + second.rtol,
        first.steps,
        merged,
        first.time_axis,
        first.sensitivity or second.sensitivity,
        first.sensitivity_factor + second.sensitivity_factor,
    )


def math_mode_for(dtype: str, mode: str) -> str:
    """The math mode a run is checked in: "strict"/"tf32" combined with the dtype."""
    return "tf32" if mode == "tf32" else dtype


def strict_mode_violation(requested_mode: str, reported: str) -> str | None:
    """A message when a run asked to be strict reports reduced-precision math (it ignored allow_tf32=False)."""
    if requested_mode == "strict" and "tf32" in reported.lower():
        return f"ran with math mode {reported!r} although strict mode (allow_tf32=False) was asked"
    return None


def pair_tolerance(math_mode: str, first: str, second: str, device: str, steps: int) -> Tolerance:
    """Two implementations compared with each other, as the suite's pair test compares them (outputs and
    gradients under one tolerance): each side's gradient tolerance from the reference, summed (``combined``).
    ``convert``'s proof and ``compare`` use it too, so "verified" and "agree" mean what a pair pass means."""
    return combined(*(tolerance_for(math_mode, name, device, "gradients", steps) for name in (first, second)))


#: How many times a quantized source's measured error (normwise relative, against the float LSTM of its own
#: dequantized weights) a conversion of it may be off, elementwise: the measurement is one statistic of a few
#: random inputs, the check another input's worst element (measured: a bidirectional H=8 DynamicQuantizeLSTM,
#: measured 0.22, its conversion to torch 0.86 of 2x that on the proof's input with initial states).
QUANTIZATION_FACTOR = 3.0


def with_quantization(tolerance: Tolerance, measured: float) -> Tolerance:
    """``tolerance`` widened to a quantized side's own measured quantization error (``measured``: a quantized
    source, or a file written quantized): the two can only be as close as the quantized file is to its own
    dequantized weights."""
    rtol = tolerance.rtol + QUANTIZATION_FACTOR * measured
    reason = (
        f"a side is quantized (int8 weights, activations quantized at run time): {QUANTIZATION_FACTOR:g}x its "
        f"measured error {measured:.2g} against the float LSTM of its dequantized weights, plus "
        f"{tolerance.rule.reason}"
    )
    rule = replace(tolerance.rule, rtol=rtol, reason=reason, quantized=True)
    return replace(tolerance, rtol=rtol, rule=rule)
