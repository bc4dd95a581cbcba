"""What the suite's tests run: implementations by id (variants included), cached per process, and the
reference results they are compared with.

Nothing is shared between processes: every xdist worker loads its own implementations and computes its own
reference results, from the same (seed, case) numbers, so serial and parallel runs compute the same thing.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from lstm_conformance.adapters.base import Implementation, RunOptions, RunResult
from lstm_conformance.adapters.reference_impl import reference_run
from lstm_conformance.adapters.registry import available_names, get_implementation, load_object
from lstm_conformance.conformance.cases import IMPLEMENTATION_VARIANTS, Case, CaseData, make_case_data
from lstm_conformance.conformance.settings import SuiteSettings
from lstm_conformance.reference.errors import LSTMConformanceError


@dataclass(frozen=True)
class Target:
    """One implementation to test: its id (``tf-cell:fb0``), how to load it, constructor options."""

    id: str
    name: str
    spec: str | None = None
    options: tuple[tuple[str, Any], ...] = field(default_factory=tuple)


def selected_targets(settings: SuiteSettings) -> list[Target]:
    """The implementations the options select, variants expanded, in a stable order."""
    specs = {party.name: party.spec for party in settings.third_party}
    names = settings.implementations
    if names is None:
        names = tuple(available_names()) + tuple(specs)
    targets: list[Target] = []
    for requested in names:
        base, _, variant = requested.partition(":")
        if requested in specs:
            targets.append(Target(requested, requested, spec=specs[requested]))
            continue
        variants = IMPLEMENTATION_VARIANTS.get(base)
        if not variants:
            targets.append(Target(base, base))
            continue
        for variant_id, options in variants:
            if not variant or variant == variant_id:
                targets.append(Target(f"{base}:{variant_id}", base, options=tuple(sorted(options.items()))))
    return list(dict.fromkeys(targets))


@cache
def load_target(target: Target) -> Implementation | str:
    """The loaded implementation, or the error text that loading raised (the test reports it)."""
    try:
        options = dict(target.options)
        if target.spec is not None:
            return load_object(target.spec, **options)
        return get_implementation(target.name, **options)
    except (LSTMConformanceError, TypeError, ValueError) as error:
        return f"cannot load implementation {target.id!r}: {error}"


@cache
def capability_devices(target: Target) -> tuple[str, ...]:
    """Devices the implementation says it runs on; ("cpu",) when it cannot even be loaded."""
    implementation = load_target(target)
    if isinstance(implementation, str):
        return ("cpu",)
    try:
        return tuple(implementation.capabilities().devices)
    except Exception:  # a broken capabilities() shows up as the test's failure, not at collection
        return ("cpu",)


@cache
def cuda_unavailable_reason() -> str | None:
    """Why CUDA cases cannot run here, None when a CUDA device is present (asked through torch if installed)."""
    if importlib.util.find_spec("torch") is None:
        return "no CUDA device detected: torch is not installed to ask torch.cuda.is_available()"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device: torch.cuda.is_available() is False"
    return None


@cache
def case_data(case: Case, seed: int, dtype: str) -> CaseData:
    return make_case_data(case, seed, dtype)


@cache
def reference_result(case: Case, seed: int, dtype: str) -> Any:
    """The float64 reference's outputs and gradients for the case's numbers rounded to ``dtype``."""
    data = case_data(case, seed, dtype)
    return reference_run(data.weights, data.inputs)


_RUNS: dict[tuple[Target, Case, int, RunOptions, bool], RunResult | BaseException] = {}


def run_cached(
    implementation: Implementation, target: Target, case: Case, seed: int, options: RunOptions, gradients: bool
) -> RunResult:
    """Run once per process (pair tests reuse the runs of their two sides); re-raises a run's error."""
    key = (target, case, seed, options, gradients)
    if key not in _RUNS:
        data = case_data(case, seed, options.dtype)
        inputs = data.inputs if gradients else data.forward_only()
        try:
            _RUNS[key] = implementation.run(data.weights, inputs, options)
        except Exception as error:
            _RUNS[key] = error
    found = _RUNS[key]
    if isinstance(found, BaseException):
        raise found
    return found
