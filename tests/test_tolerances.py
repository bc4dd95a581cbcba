"""The element rule stays honest at scale: a bug in one unit of a 512-wide layer, or in the first steps of a
1000-step sequence's vanishing gradients (float64: per-step scale), fails under the suite's own tolerance, while
float32 rounding passes."""

from __future__ import annotations

import numpy as np
import pytest

from lstm_conformance.conformance import runtime
from lstm_conformance.conformance.cases import Case, case_by_name
from lstm_conformance.conformance.checks import measure
from lstm_conformance.conformance.tolerances import SENSITIVITY_FACTOR, tolerance_for
from lstm_conformance.reference.layout import LSTMConfig


def test_a_bug_in_one_unit_of_512_fails() -> None:
    case = case_by_name("h512")
    expected, _ = runtime.reference_result(case, 0, "float32")
    sensitivity = runtime.reference_sensitivity(case, 0, "float32", "float32")
    tolerance = tolerance_for("float32", "any", "cpu", "forward", case.steps).with_sensitivity(sensitivity)
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


#: A chaotic recurrence (weights 1 in [-1, 1] at H=64: gain ~8 per step where gates are steep), where PyTorch's
#: own float32 nn.LSTM is 36x over the element rule alone; a well-conditioned one of the same size and length.
CHAOTIC = Case("chaotic", LSTMConfig(1, 64, num_layers=2), steps=125, batch=1, weight_scale=1.0)
CALM = Case("calm", LSTMConfig(1, 64, num_layers=2), steps=125, batch=1)


def test_the_conditioning_term_follows_the_function_not_the_implementation() -> None:
    """The sensitivity (the reference moved by float32-sized perturbations) is large only where the function
    amplifies rounding: >= 100x the calm case's, and there below a tenth of the element rule."""
    chaotic = runtime.reference_sensitivity(CHAOTIC, 0, "float32", "float32")["y"].max()
    calm_expected, _ = runtime.reference_result(CALM, 0, "float32")
    calm = runtime.reference_sensitivity(CALM, 0, "float32", "float32")["y"].max()
    rule = tolerance_for("float32", "any", "cpu", "forward", CALM.steps).rtol * np.abs(calm_expected.y).max()
    assert chaotic > 100 * calm, (chaotic, calm)
    assert SENSITIVITY_FACTOR * calm < 0.1 * rule, (calm, rule)


@pytest.mark.parametrize("case", [CHAOTIC, CALM], ids=lambda case: case.name)
def test_torch_float32_passes_and_a_one_step_bug_fails(case: Case) -> None:
    """PyTorch's float32 nn.LSTM (a correct implementation) passes with the conditioning term, on the chaotic
    case too, where the element rule alone fails it; a bug of 1e-3 in one unit of one step still fails."""
    pytest.importorskip("torch", reason="torch not installed (pip install 'lstm-conformance[torch]')")
    from lstm_conformance.adapters.base import RunOptions
    from lstm_conformance.adapters.registry import get_implementation

    data = runtime.case_data(case, 0, "float32")
    expected, _ = runtime.reference_result(case, 0, "float32")
    got = get_implementation("torch").run(data.weights, data.forward_only(), RunOptions(dtype="float32")).y
    rule = tolerance_for("float32", "torch", "cpu", "forward", case.steps)
    tolerance = rule.with_sensitivity(runtime.reference_sensitivity(case, 0, "float32", "float32"))
    assert measure("y", got, expected.y, tolerance).passed
    if case is CHAOTIC:
        assert not measure("y", got, expected.y, rule).passed  # the element rule alone is dishonest here
    buggy = np.array(got, dtype=np.float64)
    buggy[60, 0, 7] += 1e-3 * np.abs(expected.y[60]).max()
    if case is CALM:
        assert not measure("y", buggy, expected.y, tolerance).passed
