"""The element rule stays honest at scale: a bug in one unit of a 512-wide layer, or in the first steps of a
1000-step sequence's vanishing gradients (float64: per-step scale), fails under the suite's own tolerance, while
float32 rounding passes."""

from __future__ import annotations

import numpy as np

from lstm_conformance.conformance import runtime
from lstm_conformance.conformance.cases import case_by_name
from lstm_conformance.conformance.checks import measure
from lstm_conformance.conformance.tolerances import tolerance_for


def test_a_bug_in_one_unit_of_512_fails() -> None:
    case = case_by_name("h512")
    expected, _ = runtime.reference_result(case, 0, "float32")
    tolerance = tolerance_for("float32", "any", "cpu", "forward", case.steps)
    rounded = expected.y.astype(np.float32).astype(np.float64)  # float32 rounding of every element
    assert measure("y", rounded, expected.y, tolerance).passed
    buggy = rounded.copy()
    buggy[-1, 0, 511] *= 1 + 1e-4  # one unit, one step, one sample: 1e-4 relative
    found = measure("y", buggy, expected.y, tolerance)
    assert not found.passed
    assert found.index == (buggy.shape[0] - 1, 0, 511)


def test_a_bug_in_the_early_steps_of_vanishing_gradients_fails() -> None:
    case = case_by_name("t1000")
    _, gradients = runtime.reference_result(case, 0, "float64")
    grad_x = gradients.x
    per_step = np.abs(grad_x).max(axis=(1, 2))
    assert per_step[:10].max() < 1e-100 * per_step.max()  # the gradients vanish toward the first steps
    faint = (per_step > 1e-12 * per_step.max()) & (per_step < 1e-10 * per_step.max())
    assert faint.sum() >= 3
    tolerance = tolerance_for("float64", "any", "cpu", "gradients", case.steps)
    buggy = grad_x.copy()
    buggy[faint] *= 1.01  # the steps where the gradient is 1e-12 to 1e-10 of its max, off by 1%
    assert not measure("grad_x", buggy, grad_x, tolerance).passed
    # The same bug under the tensor-wide scale (the rule before per-step scales) would have passed:
    allowed = tolerance.rtol * (np.abs(grad_x) + np.abs(grad_x).max())
    assert (np.abs(buggy - grad_x) <= allowed).all()
