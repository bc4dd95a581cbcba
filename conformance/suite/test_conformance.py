"""The conformance suite: every selected implementation against the float64 reference, and against each other.

Collected only when asked for (``pytest --pyargs conformance.suite`` or ``lstm-conformance check``); the
options (``conformance.settings``) decide the parameters in ``pytest_generate_tests`` below.

Tests (ids ``<implementation>-<dtype>-<device>[-tf32]-<case>``):

- ``test_forward``: a forward-only run; y, h_n, c_n.
- ``test_gradients``: a forward and backward run; the gradients with respect to x, h0, c0 and every parameter
  in the canonical layout.
- ``test_pair``: two implementations on the same canonical weights, compared with each other (outputs and
  canonical gradients): the weights go through each side's own layout mapping, so this is the conversion round
  trip A -> canonical -> B.
- ``test_drawn``: hypothesis-drawn configurations within the implementation's capabilities (seeded by
  ``--lstm-seed``, ``--lstm-max-examples`` of them).

Each test records what it measured in ``user_properties`` (the plugin's report reads them, across xdist workers).
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

from lstm_conformance.adapters.base import Implementation, RunResult
from lstm_conformance.conformance import runtime
from lstm_conformance.conformance.cases import (
    PAIR_CASES,
    PROFILES,
    Case,
    case_by_name,
    case_lacks,
    cost_model,
    drawn_cases,
)
from lstm_conformance.conformance.checks import (
    Measurement,
    assert_all_close,
    assert_math_mode,
    forward_measurements,
    gradient_measurements,
)
from lstm_conformance.conformance.limitations import find_limitation
from lstm_conformance.conformance.plugin import RECORD_KEY, suite_settings
from lstm_conformance.conformance.runtime import Target, Where
from lstm_conformance.conformance.settings import SuiteSettings
from lstm_conformance.conformance.tolerances import (
    Tolerance,
    math_mode_for,
    pair_tolerance,
    strict_mode_violation,
    tolerance_for,
)
from lstm_conformance.reference.errors import UnsupportedFeatureError
from lstm_conformance.reference.lstm import LSTMOutputs


def _xfail_marks(targets: list[Target], case: Case, where: Where, check: str) -> list[Any]:
    for target in targets:
        limitation = find_limitation(target.id, case.features(), where.device, where.dtype, check)
        if limitation is not None:
            return [pytest.mark.xfail(reason=f"known limitation of {target.id}: {limitation.reason}", strict=True)]
    return []


def _group(where: Where, *targets: Target) -> list[Any]:
    """The xdist group of a test (``--dist loadgroup``, which ``lstm-conformance check -n N`` asks for): a
    built-in implementation in one place (dtype, device, mode), so that one worker makes its runs, prepared
    models and reference results once; a pair goes with its costlier side, whose runs its own tests made. A
    third party's tests stay ungrouped: they are what is under test, spread over every worker."""
    built_in = [target for target in targets if not runtime.is_third_party(target)]
    if not built_in:
        return []
    costliest = max(built_in, key=lambda target: cost_model(target.id).overhead_s)
    return [pytest.mark.xdist_group(f"{costliest.id}-{where.id}")]


def _whole_place_xfail(target: Target, where: Where) -> list[Any]:
    limitation = find_limitation(target.id, ["*"], where.device, where.dtype, "drawn")
    if limitation is None or limitation.feature != "*" or limitation.without:
        return []
    return [pytest.mark.xfail(reason=f"known limitation of {target.id}: {limitation.reason}", strict=True)]


def _single_params(settings: SuiteSettings, targets: list[Target], check: str) -> list[Any]:
    """Every (implementation, case, place) the profile plans: dtypes and devices the implementation has, CUDA
    where a device is present, float16 too for the saturation cases; what is not generated is one line each in
    ``cases.not_run_lines``."""
    params = []
    for target in targets:
        capabilities = runtime.target_capabilities(target)
        if check == "gradients" and capabilities is not None and not capabilities.gradients:
            continue  # forward only: one line in cases.not_run_lines, not a skipped test per case
        places = runtime.places(settings, target)
        extra = runtime.float16_places(settings, target)
        for case in runtime.plan(settings, target).cases:
            wheres = places + [w for w in extra if w not in places] if case.float16_too else places
            for where in wheres:
                marks = [*_xfail_marks([target], case, where, check), *_group(where, target)]
                value = (target, case, where)
                params.append(pytest.param(value, marks=marks, id=f"{target.id}-{where.id}-{case.name}"))
    return params


def _both_declare(first: Target, second: Target, case: Case) -> bool:
    """Whether both capabilities declare everything ``case`` needs (a pair either side declines could only
    skip)."""
    for target in (first, second):
        capabilities = runtime.target_capabilities(target)
        if capabilities is not None and case_lacks(capabilities, case):
            return False
    return True


def _pair_params(settings: SuiteSettings, targets: list[Target]) -> list[Any]:
    params = []
    for first, second in itertools.combinations(targets, 2):
        shared = [w for w in runtime.places(settings, first) if w in runtime.places(settings, second)]
        both = set(runtime.plan(settings, first).cases) & set(runtime.plan(settings, second).cases)
        for where in shared:
            for case in map(case_by_name, PAIR_CASES):
                if case not in both or not _both_declare(first, second, case):
                    continue
                marks = [*_xfail_marks([first, second], case, where, "pair"), *_group(where, first, second)]
                pair_id = f"{first.id}+{second.id}-{where.id}-{case.name}"
                params.append(pytest.param((first, second, case, where), marks=marks, id=pair_id))
    return params


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    settings = suite_settings(metafunc.config)
    targets = runtime.selected_targets(settings)
    check = metafunc.function.__name__.removeprefix("test_")
    params = []
    if "single" in metafunc.fixturenames:
        metafunc.parametrize("single", _single_params(settings, targets, check))
    elif "pair" in metafunc.fixturenames:
        params = _pair_params(settings, targets)
        if not params:
            why = "no pair to compare: fewer than two implementations share a dtype and device"
            params.append(pytest.param(None, marks=pytest.mark.skip(reason=why), id="no-pair"))
        metafunc.parametrize("pair", params)
    elif "drawn" in metafunc.fixturenames:
        if settings.max_examples:
            for target in targets:
                for where in runtime.places(settings, target):
                    # A limitation of every case (a whole dtype: feature "*", nothing lifting it) holds for the
                    # drawn ones too; a narrower one only excludes the drawn cases it matches (check_one).
                    marks = [*_whole_place_xfail(target, where), *_group(where, target)]
                    params.append(pytest.param((target, where), marks=marks, id=f"{target.id}-{where.id}"))
        if not params:
            why = "no drawn cases: --lstm-max-examples is 0" if not settings.max_examples else "nothing selected"
            params.append(pytest.param(None, marks=pytest.mark.skip(reason=why), id="none"))
        metafunc.parametrize("drawn", params)


# ----------------------------------------------------------------------------------------------------------
# Shared steps
# ----------------------------------------------------------------------------------------------------------


def _record(request: pytest.FixtureRequest, check: str, target: Target, where: Where, **extra: Any) -> dict[str, Any]:
    """The measurements of this test, for the report; filled in as the test goes (a dict the report copies)."""
    record: dict[str, Any] = {
        "implementation": target.id,
        "check": check,
        "dtype": where.dtype,
        "device": where.device,
        "mode": where.mode,
        "checks": 0,
        "worst_ratio": None,
        "relative_error": None,
        "math_mode": None,
        **extra,
    }
    request.node.user_properties.append((RECORD_KEY, record))
    return record


def _reproduce(request: pytest.FixtureRequest, settings: SuiteSettings, targets: list[Target]) -> str:
    options = settings.reproduce_options(tuple(t.id for t in targets))
    return f"lstm-conformance check -k '{request.node.name}' {options}"


def _ready(target: Target, case: Case, where: Where, gradients: bool, seed: int) -> Implementation:
    """The loaded implementation, or a skip with the reason it cannot run this case (never a pass)."""
    implementation = runtime.load_target(target)
    if isinstance(implementation, str):
        pytest.fail(implementation, pytrace=False)
    reason = implementation.unavailable_reason()
    if reason:
        pytest.skip(f"{target.id} unavailable: {reason}")
    if where.device == "cuda":
        cuda_reason = runtime.cuda_unavailable_reason()
        if cuda_reason:
            pytest.skip(cuda_reason)
    data = runtime.case_data(case, seed, where.dtype)
    inputs = data.inputs if gradients else data.forward_only()
    try:
        implementation.check_supported(case.config, inputs, where.options())
    except UnsupportedFeatureError as error:
        pytest.skip(f"unsupported: {error}")
    return implementation


def _run(
    implementation: Implementation, target: Target, case: Case, seed: int, where: Where, gradients: bool
) -> RunResult:
    try:
        return runtime.run_cached(implementation, target, case, seed, where.options(), gradients)
    except UnsupportedFeatureError as error:
        pytest.skip(f"unsupported: {error}")


def _finish(
    record: dict[str, Any],
    measurements: list[Measurement],
    *,
    implementation: str,
    case: str,
    tolerance: Tolerance,
    reproduce: str,
) -> None:
    __tracebackhide__ = True
    record["checks"] += len(measurements)
    ratios = [m.ratio for m in measurements]
    record["worst_ratio"] = max([*ratios, record["worst_ratio"] or 0.0])
    relative = [m.relative_error for m in measurements]
    record["relative_error"] = max([*relative, record["relative_error"] or 0.0])
    record["tolerance"] = tolerance.rtol
    assert_all_close(
        measurements=measurements, implementation=implementation, case=case, tolerance=tolerance, reproduce=reproduce
    )


def _tolerance(target: Target, where: Where, check: str, case: Case, seed: int) -> Tolerance:
    """The rule for the math mode, the case's time axis and its sensitivity (``conformance.tolerances``)."""
    math_mode = math_mode_for(where.dtype, where.mode)
    tolerance = tolerance_for(math_mode, target.id, where.device, check, case.steps)
    sensitivity = runtime.reference_sensitivity(case, seed, where.dtype, math_mode)
    return tolerance.with_time_axis(case.batch_first).with_sensitivity(sensitivity)


# ----------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------


def _check_against_reference(request: pytest.FixtureRequest, single: tuple[Target, Case, Where], check: str) -> None:
    __tracebackhide__ = True
    settings = suite_settings(request.config)
    target, case, where = single
    record = _record(request, check, target, where, case=case.name, steps=case.steps)
    gradients = check == "gradients"
    implementation = _ready(target, case, where, gradients, settings.seed)
    result = _run(implementation, target, case, settings.seed, where, gradients)
    record["math_mode"] = result.math_mode
    expected_outputs, expected_gradients = runtime.reference_result(case, settings.seed, where.dtype)
    tolerance = _tolerance(target, where, check, case, settings.seed)
    reproduce = _reproduce(request, settings, [target])
    assert_math_mode(
        problem=strict_mode_violation(where.mode, result.math_mode),
        implementation=target.id,
        case=case.name,
        reproduce=reproduce,
    )
    if gradients:
        measurements = gradient_measurements(result.gradients, expected_gradients, tolerance)
    else:
        measurements = forward_measurements(result, expected_outputs, tolerance)
    _finish(record, measurements, implementation=target.id, case=case.name, tolerance=tolerance, reproduce=reproduce)


def test_forward(request: pytest.FixtureRequest, single: tuple[Target, Case, Where]) -> None:
    """y, h_n, c_n of a forward-only run against the reference."""
    __tracebackhide__ = True
    _check_against_reference(request, single, "forward")


def test_gradients(request: pytest.FixtureRequest, single: tuple[Target, Case, Where]) -> None:
    """Gradients w.r.t. x, h0, c0 and every canonical parameter against the reference."""
    __tracebackhide__ = True
    _check_against_reference(request, single, "gradients")


def test_pair(request: pytest.FixtureRequest, pair: tuple[Target, Target, Case, Where]) -> None:
    """Two implementations on the same canonical weights agree with each other (outputs and gradients)."""
    __tracebackhide__ = True
    settings = suite_settings(request.config)
    first, second, case, where = pair
    record = _record(request, "pair", first, where, case=case.name, steps=case.steps, partner=second.id)
    results = []
    for target in (first, second):
        implementation = _ready(target, case, where, False, settings.seed)
        want_gradients = implementation.capabilities().gradients
        results.append(_run(implementation, target, case, settings.seed, where, want_gradients))
    math_mode = math_mode_for(where.dtype, where.mode)
    tolerance = pair_tolerance(math_mode, first.id, second.id, where.device, case.steps)
    sensitivity = runtime.reference_sensitivity(case, settings.seed, where.dtype, math_mode)
    tolerance = tolerance.with_time_axis(case.batch_first).with_sensitivity(sensitivity)
    as_expected = LSTMOutputs(y=results[1].y, h_n=results[1].h_n, c_n=results[1].c_n)
    measurements = forward_measurements(results[0], as_expected, tolerance)
    if results[0].gradients is not None and results[1].gradients is not None:
        measurements += gradient_measurements(results[0].gradients, results[1].gradients, tolerance)
    label = f"{first.id} vs {second.id}"
    reproduce = _reproduce(request, settings, [first, second])
    _finish(record, measurements, implementation=label, case=case.name, tolerance=tolerance, reproduce=reproduce)


def test_drawn(request: pytest.FixtureRequest, drawn: tuple[Target, Where]) -> None:
    """Hypothesis-drawn configurations the implementation's capabilities cover, forward and gradients."""
    __tracebackhide__ = True
    _check_drawn(request, drawn)


def _check_drawn(request: pytest.FixtureRequest, drawn: tuple[Target, Where]) -> None:
    __tracebackhide__ = True
    from hypothesis import HealthCheck, assume, given, seed, settings

    suite = suite_settings(request.config)
    target, where = drawn
    record = _record(
        request,
        "drawn",
        target,
        where,
        case="drawn",
        steps=0,
        examples=0,
        steps_seen=[],
        outcome_seen="",
        shrink_steps=0,
    )
    implementation = _ready(target, case_by_name("l1_basic"), where, False, suite.seed)
    capabilities = implementation.capabilities()
    reproduce = _reproduce(request, suite, [target])

    model, reference = cost_model(target.id), cost_model("reference")
    cap = PROFILES[suite.profile].drawn_cost_s

    def cost(case: Case) -> float:
        """What a drawn case's size adds (its overhead is paid whatever the size): the implementation's run,
        and the reference's two (the expected values and the sensitivity) with gradients."""
        run = model.seconds(case, capabilities.gradients) - model.overhead_s
        return run + 2 * reference.seconds(case, True)

    @seed(suite.seed)
    @settings(
        max_examples=runtime.drawn_examples_for(suite, target),
        database=None,  # no shared .hypothesis directory; the seed makes runs repeatable instead
        deadline=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=False,
    )
    @given(case=drawn_cases(capabilities, cost, cap))
    def check_one(case: Case) -> None:
        __tracebackhide__ = True
        gradients = capabilities.gradients
        data = runtime.make_case_data(case, suite.seed, where.dtype)
        inputs = data.inputs if gradients else data.forward_only()
        try:
            implementation.check_supported(case.config, inputs, where.options())
        except UnsupportedFeatureError:
            assume(False)
        assume(find_limitation(target.id, case.features(), where.device, where.dtype, "drawn") is None)
        try:
            result = implementation.run(data.weights, inputs, where.options())
        except UnsupportedFeatureError:
            assume(False)  # a combination its capabilities cannot express (the grid's skips show such reasons)
            raise
        expected_outputs, expected_gradients = runtime.reference_result(case, suite.seed, where.dtype)
        record["math_mode"] = result.math_mode
        if record["outcome_seen"] == "failed":
            record["shrink_steps"] += 1  # hypothesis shrinking a failure: not counted as more checks
            measurements_counted = False
        else:
            record["examples"] += 1
            record["steps_seen"].append(case.steps)
            measurements_counted = True
        tolerance = _tolerance(target, where, "gradients", case, suite.seed)
        measurements = forward_measurements(result, expected_outputs, tolerance)
        if gradients:
            measurements += gradient_measurements(result.gradients, expected_gradients, tolerance)
        assert_math_mode(
            problem=strict_mode_violation(where.mode, result.math_mode),
            implementation=target.id,
            case=_case_text(case),
            reproduce=reproduce,
        )
        if not measurements_counted:
            assert_all_close(
                measurements=measurements,
                implementation=target.id,
                case=_case_text(case),
                tolerance=tolerance,
                reproduce=reproduce,
            )
            return
        try:
            _finish(
                record,
                measurements,
                implementation=target.id,
                case=_case_text(case),
                tolerance=tolerance,
                reproduce=reproduce,
            )
        except AssertionError:
            record["outcome_seen"] = "failed"
            raise

    check_one()


def _case_text(case: Case) -> str:
    config = case.config
    inputs = [name for name in ("ragged", "initial_state", "batch_first") if getattr(case, name)]
    features = ", ".join(config.features() + inputs) or "no options"
    sizes = f"I={config.input_size} H={config.hidden_size} proj={config.proj_size} T={case.steps} B={case.batch}"
    return f"drawn {sizes} ({features})"
