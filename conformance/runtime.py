"""What the suite's tests run: implementations by id (variants included), cached per process, and the
reference results they are compared with.

Nothing is shared between processes: every xdist worker loads its own implementations and computes its own
reference results, from the same (seed, case) numbers, so serial and parallel runs compute the same thing.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass, field
from functools import cache, lru_cache
from typing import Any

from lstm_conformance.adapters.base import Capabilities, Implementation, RunOptions, RunResult
from lstm_conformance.adapters.reference_impl import reference_run
from lstm_conformance.adapters.registry import available_names, get_implementation, load_object
from lstm_conformance.conformance.cases import (
    IMPLEMENTATION_VARIANTS,
    PROFILES,
    Case,
    CaseData,
    Plan,
    case_rng,
    drawn_examples,
    make_case_data,
    plan_cases,
)
from lstm_conformance.conformance.checks import sensitivity
from lstm_conformance.conformance.settings import SuiteSettings
from lstm_conformance.names import IMPLEMENTATIONS
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
    else:  # an --lstm-implementation given is always run, beside the --lstm-implementations chosen
        names = tuple(names) + tuple(name for name in specs if name not in names)
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
def target_capabilities(target: Target) -> Capabilities | None:
    """What the implementation says it runs; None when it cannot be loaded or its capabilities() raises (the
    tests then report that as a failure, with every dtype and device generated so that nothing hides it)."""
    implementation = load_target(target)
    if isinstance(implementation, str):
        return None
    try:
        return implementation.capabilities()
    except Exception:  # a broken capabilities() shows up as the test's failure, not at collection
        return None


def capability_devices(target: Target) -> tuple[str, ...]:
    """Devices the implementation says it runs on; ("cpu",) when it cannot even be loaded."""
    capabilities = target_capabilities(target)
    return tuple(capabilities.devices) if capabilities is not None else ("cpu",)


@cache
def cuda_unavailable_reason() -> str | None:
    """Why CUDA cases cannot run here, None when a CUDA device is present. Without an NVIDIA driver (no
    /proc/driver/nvidia, no /dev/nvidiactl) the answer needs no import; otherwise torch is asked."""
    has_driver = os.path.exists("/proc/driver/nvidia") or os.path.exists("/dev/nvidiactl")
    if not has_driver and "torch" not in sys.modules:
        return "no CUDA device here (no NVIDIA driver: /proc/driver/nvidia and /dev/nvidiactl absent)"
    if importlib.util.find_spec("torch") is None:
        return "no CUDA device detected: torch is not installed to ask torch.cuda.is_available()"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA device here (torch.cuda.is_available() is False)"
    return None


@dataclass(frozen=True)
class Where:
    """Dtype, device and math mode ("strict" or "tf32") of one test."""

    dtype: str
    device: str
    mode: str

    @property
    def id(self) -> str:
        return f"{self.dtype}-{self.device}" + ("-tf32" if self.mode == "tf32" else "")

    def options(self) -> RunOptions:
        return RunOptions(dtype=self.dtype, device=self.device, allow_tf32=self.mode == "tf32")  # type: ignore[arg-type]


def places(settings: SuiteSettings, target: Target) -> list[Where]:
    """Dtype x device x mode one implementation is tested in: only the dtypes and devices its capabilities
    list, and CUDA only where a device is present (the rest are ``cases.not_run_lines``, not skipped tests)."""
    capabilities = target_capabilities(target)
    dtypes = [d for d in settings.dtypes if capabilities is None or d in capabilities.dtypes]
    devices = [d for d in settings.devices if capabilities is None or d in capabilities.devices]
    if cuda_unavailable_reason() is not None:
        devices = [d for d in devices if d != "cuda"]
    return [
        Where(dtype, device, mode)
        for device in devices
        for dtype in dtypes
        for mode in settings.math_modes(device, dtype)
    ]


def float16_places(settings: SuiteSettings, target: Target) -> list[Where]:
    """The extra float16 places of cases marked ``float16_too`` (saturation: overflow paths live in float16):
    only when ``--lstm-dtype`` was left at its default, in the standard and exhaustive profiles, and where the
    implementation has float16."""
    capabilities = target_capabilities(target)
    # tf-block's float16 on the saturated cases exceeded the element rule (1e-2) alone; with the conditioning
    # term (tolerances.SENSITIVITY_FACTOR) it passes at 0.17 to 0.27 of its tolerance: the saturated cells
    # amplify float16 rounding, as the reference's own movement shows.
    if "--lstm-dtype" in settings.explicit or settings.profile == "quick" or capabilities is None:
        return []
    if "float16" not in capabilities.dtypes:
        return []
    devices = [d for d in settings.devices if d in capabilities.devices]
    if cuda_unavailable_reason() is not None:
        devices = [d for d in devices if d != "cuda"]
    return [Where("float16", device, "strict") for device in devices]


def plan(settings: SuiteSettings, target: Target) -> Plan:
    """The profile's cases for one implementation, kept to the profile's budget (``cases.plan_cases``)."""
    third_party = is_third_party(target)
    return _plan(target, settings.profile, max(1, len(places(settings, target))), third_party)


def is_third_party(target: Target) -> bool:
    """Not one of the registry's own implementations: it gets every case, whatever it costs."""
    return target.spec is not None or target.name not in _BUILT_IN


def drawn_examples_for(settings: SuiteSettings, target: Target) -> int:
    """Hypothesis examples per place: ``--lstm-max-examples`` as given; else the profile's number, fewer for a
    built-in whose overhead per run (an export, a compile) the profile's drawn budget cannot afford
    (``cases.drawn_examples``)."""
    if is_third_party(target) or "--lstm-max-examples" in settings.explicit:
        return settings.max_examples
    return drawn_examples(target.id, PROFILES[settings.profile], settings.max_examples)


@cache
def _plan(target: Target, profile: str, runs_per_case: int, third_party: bool) -> Plan:
    return plan_cases(target.id, PROFILES[profile], runs_per_case, third_party, target_capabilities(target))


#: Built-in implementation names (the registry's own, not entry points): these keep to a profile's budget;
#: any other gets the profile's every case.
_BUILT_IN: frozenset[str] = frozenset(IMPLEMENTATIONS) | frozenset(
    {
        "reference",
        "torch",
        "torch-cell",
        "tf-cell",
        "tf-block",
        "tf-block-v2",
        "keras",
        "tf-keras",
        "keras-jax",
        "keras-torch",
        "onnxruntime",
        "onnx-reference",
        "openvino",
        "tflite",
        "torch-onnx",
        "torch-onnx-dynamo",
        "flax",
        "flax-optimized",
    }
)


@lru_cache(maxsize=64)
def case_data(case: Case, seed: int, dtype: str) -> CaseData:
    return make_case_data(case, seed, dtype)


@lru_cache(maxsize=64)
def reference_result(case: Case, seed: int, dtype: str) -> Any:
    """The float64 reference's outputs and gradients for the case's numbers rounded to ``dtype``: once per
    process and (case, seed, dtype rounding), shared by every implementation, check and pair."""
    data = case_data(case, seed, dtype)
    return reference_run(data.weights, data.inputs)


@lru_cache(maxsize=64)
def reference_sensitivity(case: Case, seed: int, dtype: str, math_mode: str) -> Any:
    """The case's sensitivity in ``math_mode`` (``checks.sensitivity``): once per process and key, from a
    generator seeded by the case, so every process perturbs alike."""
    data = case_data(case, seed, dtype)
    rng = case_rng(seed, f"{case.name}/sensitivity/{math_mode}")
    return sensitivity(data.weights, data.inputs, math_mode, rng)


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
