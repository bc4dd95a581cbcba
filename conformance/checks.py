"""Assertion helpers in the array-api-tests style: keyword-only arguments, ``__tracebackhide__``, and a message
"got X, should be Y [implementation, case, tensor, index]" with error, tolerance and a command that reproduces
the failure alone.

Every tensor of a test is measured first and all failures are reported together, so the report counts every
check (one tensor comparison) even in a failing test.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.conformance.tolerances import UNIT_ROUNDOFF, Tolerance

if TYPE_CHECKING:
    from lstm_conformance.adapters.base import RunInputs
    from lstm_conformance.reference.layout import LSTMWeights
    from lstm_conformance.reference.lstm import LSTMGradients


@dataclass
class Measurement:
    """One tensor compared: the worst element by its fraction of the tolerance (``ratio`` > 1 fails)."""

    tensor: str
    ratio: float
    index: tuple[int, ...]
    got: float
    expected: float
    error: float
    allowed: float
    relative_error: float
    shape_problem: str = ""

    @property
    def passed(self) -> bool:
        return not self.shape_problem and self.ratio <= 1.0


def measure(tensor: str, got: Any, expected: NDArray[Any], tolerance: Tolerance) -> Measurement:
    """Compare ``got`` with ``expected`` elementwise: ``|got - expected| <= rtol * (|expected| + scale)``, the
    scale the tensor's max |expected| (per step for y and grad_x: ``Tolerance.scale``)."""
    expected = np.asarray(expected, dtype=np.float64)
    if got is None:
        return Measurement(tensor, np.inf, (), np.nan, np.nan, np.inf, 0.0, np.inf, "got None")
    got = np.asarray(got, dtype=np.float64)
    if got.shape != expected.shape:
        problem = f"shape {got.shape}, should be {expected.shape}"
        return Measurement(tensor, np.inf, (), np.nan, np.nan, np.inf, 0.0, np.inf, problem)
    if expected.size == 0:
        return Measurement(tensor, 0.0, (), 0.0, 0.0, 0.0, 0.0, 0.0)
    magnitude = np.abs(expected)
    scale = float(np.max(magnitude))
    error = np.abs(got - expected)
    # The element rule (per-step scale for time-indexed tensors) plus the case's conditioning term.
    allowed = tolerance.allowed(tensor, magnitude)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = np.where(np.isfinite(got), error / allowed, np.inf)
    flat = int(np.argmax(np.nan_to_num(ratios, nan=np.inf)))
    index = tuple(int(i) for i in np.unravel_index(flat, expected.shape))
    max_error = float(np.nanmax(np.where(np.isfinite(got), error, np.inf)))
    return Measurement(
        tensor=tensor,
        ratio=float(ratios[index]),
        index=index,
        got=float(got[index]),
        expected=float(expected[index]),
        error=float(error[index]),
        allowed=float(allowed[index]),
        relative_error=max_error / scale if scale else max_error,
    )


def describe_failure(measurement: Measurement, *, implementation: str, case: str) -> str:
    where = f"[{implementation}, {case}, {measurement.tensor}"
    if measurement.shape_problem:
        return f"{measurement.tensor}: got {measurement.shape_problem} {where}]"
    return (
        f"{measurement.tensor}: got {measurement.got:.9g}, should be {measurement.expected:.9g} "
        f"{where}, index {measurement.index}]; error {measurement.error:.3g} > tolerance {measurement.allowed:.3g} "
        f"({measurement.ratio:.3g}x)"
    )


def assert_all_close(
    *,
    measurements: list[Measurement],
    implementation: str,
    case: str,
    tolerance: Tolerance,
    reproduce: str,
) -> None:
    """Fail with every tensor that is out of tolerance, worst first, then the tolerance and the command."""
    __tracebackhide__ = True
    failed = sorted((m for m in measurements if not m.passed), key=lambda m: -m.ratio)
    if not failed:
        return
    lines = [describe_failure(m, implementation=implementation, case=case) for m in failed]
    passed = len(measurements) - len(failed)
    lines.append(f"{len(failed)} of {len(measurements)} tensors out of tolerance ({passed} within)")
    lines.append(f"tolerance: {tolerance.describe()}")
    lines.append(f"reproduce alone: {reproduce}")
    raise AssertionError("\n".join(lines))


def assert_math_mode(*, problem: str | None, implementation: str, case: str, reproduce: str) -> None:
    """Fail when a run computed in another math mode than asked (a TF32 run under a strict request)."""
    __tracebackhide__ = True
    if problem:
        raise AssertionError(f"math mode: {problem} [{implementation}, {case}]\nreproduce alone: {reproduce}")


#: The forward outputs every check compares, in PyTorch's conventions.
OUTPUTS: tuple[str, ...] = ("y", "h_n", "c_n")


def forward_measurements(got: Any, expected: Any, tolerance: Tolerance) -> list[Measurement]:
    """y, h_n and c_n of ``got`` against ``expected`` (anything with those attributes: run results, outputs)."""
    return [measure(name, getattr(got, name), getattr(expected, name), tolerance) for name in OUTPUTS]


def gradient_tensors(gradients: Any) -> dict[str, Any]:
    """Gradients (an ``LSTMGradients``, or None) by the names their measurements carry: ``grad_x``, ``grad_h0``,
    ``grad_c0`` and ``grad[<canonical key>]``; None for one not there."""
    if gradients is None:
        return {}
    found = {f"grad_{name}": getattr(gradients, name, None) for name in ("x", "h0", "c0")}
    found.update({f"grad[{key}]": value for key, value in gradients.weights.named_arrays().items()})
    return found


def named_tensors(outputs: Any, gradients: LSTMGradients | None) -> dict[str, NDArray[Any]]:
    """Every tensor a check compares, by the name its measurement carries."""
    found = {name: getattr(outputs, name) for name in OUTPUTS} | gradient_tensors(gradients)
    return {name: np.asarray(value, dtype=np.float64) for name, value in found.items() if value is not None}


def sensitivity(
    weights: LSTMWeights, inputs: RunInputs, math_mode: str, rng: np.random.Generator
) -> dict[str, NDArray[Any]]:
    """How far the float64 reference moves, per tensor, when every weight and every element of x, h0 and c0 is
    perturbed by a random relative amount up to the math mode's unit roundoff: the case's own conditioning,
    the tolerances' ``SENSITIVITY_FACTOR`` term (see ``conformance.tolerances``)."""
    from lstm_conformance.adapters.reference_impl import reference_run

    unit = UNIT_ROUNDOFF[math_mode]

    def nudge(array: NDArray[Any]) -> NDArray[Any]:
        return array * (1.0 + unit * rng.uniform(-1.0, 1.0, np.shape(array)))

    exact = named_tensors(*reference_run(weights, inputs))
    nudged_weights = weights.map(nudge)  # in this order: weights, x, h0, c0 (the generator's draws)
    x = nudge(inputs.x)
    h0, c0 = (None if state is None else nudge(state) for state in (inputs.h0, inputs.c0))
    moved = named_tensors(*reference_run(nudged_weights, replace(inputs, x=x, h0=h0, c0=c0)))
    with np.errstate(invalid="ignore"):
        # Where the reference is NaN/Inf (NaN weights) the movement says nothing: zero, not NaN.
        return {
            name: np.nan_to_num(np.abs(moved[name] - value), nan=0.0, posinf=0.0)
            for name, value in exact.items()
            if name in moved
        }


def gradient_measurements(
    got: LSTMGradients | None, expected: LSTMGradients, tolerance: Tolerance
) -> list[Measurement]:
    """Gradients with respect to x, h0, c0 and every parameter in the canonical layout (``grad[<key>]``); a
    missing gradient is a failed measurement, never a skipped one."""
    got_tensors = gradient_tensors(got)
    return [
        measure(name, got_tensors.get(name), value, tolerance) for name, value in gradient_tensors(expected).items()
    ]
