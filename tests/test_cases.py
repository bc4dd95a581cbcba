"""Profiles, plans and the lines for what the matrix does not generate (conformance.cases)."""

from __future__ import annotations

from lstm_conformance.adapters.base import Capabilities
from lstm_conformance.conformance import runtime
from lstm_conformance.conformance.cases import (
    ALL_CASES,
    DEPTH,
    DRAWN_SIZES,
    DRAWN_STEPS,
    PROFILES,
    case_by_name,
    not_run_lines,
    plan_cases,
)
from lstm_conformance.conformance.settings import SuiteSettings


def _settings(profile: str = "standard", implementations: tuple[str, ...] | None = None) -> SuiteSettings:
    return SuiteSettings(
        implementations, (), ("cpu", "cuda"), ("float64", "float32"), False, 0, 4, None, profile=profile
    )


def test_depth_cases_reach_every_axis() -> None:
    standard = [case for case in DEPTH if case.tier == "standard"]
    hidden = {case.config.hidden_size for case in standard}
    assert {1, 7, 8, 9, 17, 31, 33, 64, 100, 128, 256, 512} <= hidden
    assert any(case.config.input_size != case.config.hidden_size for case in standard)
    assert any(case.config.proj_size % 2 for case in standard)
    assert max(case.steps for case in standard) >= 1000
    assert any(case.ragged and case.steps >= 257 for case in standard)
    assert {1, 7, 300} <= {case.batch for case in standard}
    assert any(case.input_offset and case.float16_too for case in standard)  # saturation, float16 too
    assert any(case.weight_scale is not None and case.weight_scale < 1e-2 for case in standard)
    assert any(case.final_cotangent_only for case in standard)
    assert all(case.reason for case in DEPTH)
    assert list(DRAWN_SIZES) == sorted(DRAWN_SIZES)
    assert list(DRAWN_STEPS) == sorted(DRAWN_STEPS)


def test_budget_keeps_builtins_within_and_gives_third_parties_everything() -> None:
    standard = PROFILES["standard"]
    builtin = plan_cases("tf-cell", standard, 2, third_party=False, capabilities=None)
    assert builtin.estimated_s <= standard.budget_s
    assert builtin.left_out
    third = plan_cases("my-lstm", standard, 2, third_party=True, capabilities=None)
    assert not third.left_out
    assert {c.name for c in third.cases} >= {c.name for c in DEPTH if c.tier == "standard"}
    quick = plan_cases("my-lstm", PROFILES["quick"], 2, third_party=True, capabilities=None)
    assert all(case.tier == "quick" for case in quick.cases)


def test_cases_needing_what_an_implementation_lacks_are_not_planned() -> None:
    bare = Capabilities(features=frozenset(), seq_lens=False)
    plan = plan_cases("my-lstm", PROFILES["standard"], 2, third_party=True, capabilities=bare)
    assert case_by_name("h100_proj17") not in plan.cases
    assert case_by_name("h512") in plan.cases
    lacking = dict(plan.lacking)
    assert "proj_size" in lacking[case_by_name("h100_proj17")]
    assert "per-sample lengths" in lacking[case_by_name("t300_ragged")]
    assert not set(plan.cases) & set(lacking)
    assert set(plan.cases) | set(lacking) == {c for c in ALL_CASES if c.tier in ("quick", "standard")}


def test_not_run_lines() -> None:
    settings = _settings(implementations=("reference", "torch"))
    lines = not_run_lines(settings)
    planned = len(runtime.plan(settings, runtime.selected_targets(settings)[0]).cases)
    assert f"reference: float32 not generated (it runs float64 only); {planned} cases not run" in lines
    if runtime.cuda_unavailable_reason() is not None:
        assert lines[0].startswith("cuda: no CUDA device here")
        assert lines[0].endswith("cases not run")
