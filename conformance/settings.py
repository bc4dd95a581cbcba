"""The suite's command-line options: declared, parsed and validated here, with the standard library only.

The plugin adds these options to every pytest run (that is how pytest options work), so this module must stay
cheap: no NumPy, no framework. Names of implementations are checked against ``adapters.registry`` only when
the user names some.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from lstm_conformance.names import DEVICES as NAMED_DEVICES
from lstm_conformance.names import DTYPES as NAMED_DTYPES

#: Values ``--lstm-device`` and ``--lstm-dtype`` accept (``lstm_conformance.names``, import-free).
DEVICES: tuple[str, ...] = NAMED_DEVICES
DTYPES: tuple[str, ...] = NAMED_DTYPES

DEFAULT_DEVICES = "cpu,cuda"
DEFAULT_DTYPES = "float64,float32"
DEFAULT_SEED = 0
DEFAULT_PROFILE = "standard"
#: ``--lstm-profile`` values (``conformance.cases.PROFILES`` holds what each runs; kept here import-free).
PROFILES: tuple[str, ...] = ("quick", "standard", "exhaustive")
#: Hypothesis examples per implementation and place when ``--lstm-max-examples`` is not given, per profile.
PROFILE_MAX_EXAMPLES: dict[str, int] = {"quick": 2, "standard": 4, "exhaustive": 25}
DEFAULT_MAX_EXAMPLES = PROFILE_MAX_EXAMPLES[DEFAULT_PROFILE]


@dataclass(frozen=True)
class ThirdParty:
    """An implementation given as ``--lstm-implementation MODULE:OBJECT``: its spec and the name it reports."""

    spec: str
    name: str


@dataclass(frozen=True)
class SuiteSettings:
    """Everything the options decide. ``implementations`` None means every registered one."""

    implementations: tuple[str, ...] | None
    third_party: tuple[ThirdParty, ...]
    devices: tuple[str, ...]
    dtypes: tuple[str, ...]
    allow_tf32: bool
    seed: int
    max_examples: int
    report_dir: Path | None
    explicit: dict[str, str] = field(default_factory=dict)
    #: ``--lstm-profile``: quick, standard (the default) or exhaustive (``conformance.cases.PROFILES``).
    profile: str = DEFAULT_PROFILE

    def math_modes(self, device: str, dtype: str) -> tuple[str, ...]:
        """The math modes one (device, dtype) runs in: "strict" always; also "tf32" for float32 on CUDA when
        ``--lstm-allow-tf32`` is given (TF32 exists only there)."""
        if device == "cuda" and dtype == "float32" and self.allow_tf32:
            return ("strict", "tf32")
        return ("strict",)

    def reproduce_options(self, implementations: tuple[str, ...]) -> str:
        """The options that reproduce a test of ``implementations`` alone (ids, variants resolve to their base)."""
        specs = {party.name: party.spec for party in self.third_party}
        parts = []
        registered = sorted({name.split(":")[0] for name in implementations if name.split(":")[0] not in specs})
        if registered:
            parts.append(f"--lstm-implementations {','.join(registered)}")
        for name in implementations:
            if name in specs:
                parts.append(f"--lstm-implementation {specs[name]}")
        parts.append(f"--lstm-seed {self.seed}")
        if self.allow_tf32:
            parts.append("--lstm-allow-tf32")
        if self.profile != DEFAULT_PROFILE:
            parts.append(f"--lstm-profile {self.profile}")
        for option in ("--lstm-device", "--lstm-dtype", "--lstm-max-examples"):
            if option in self.explicit:
                parts.append(f"{option} {self.explicit[option]}")
        return " ".join(parts)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("lstm-conformance", "LSTM conformance suite (pytest --pyargs conformance.suite)")
    group.addoption(
        "--lstm-implementations",
        default=None,
        metavar="NAMES",
        help="comma-separated implementation names (variants such as tf-cell:fb0 allowed); "
        "default: every registered implementation",
    )
    group.addoption(
        "--lstm-implementation",
        action="append",
        default=[],
        metavar="MODULE:OBJECT",
        help="check a third party's own Implementation (repeatable); alone, it selects only these",
    )
    group.addoption("--lstm-device", default=DEFAULT_DEVICES, metavar="LIST", help=f"of {','.join(DEVICES)}")
    group.addoption("--lstm-dtype", default=DEFAULT_DTYPES, metavar="LIST", help=f"of {','.join(DTYPES)}")
    group.addoption(
        "--lstm-allow-tf32",
        action="store_true",
        default=False,
        help="on CUDA also run float32 with TF32 matmuls (default: strict, TF32 off)",
    )
    group.addoption("--lstm-seed", default=str(DEFAULT_SEED), metavar="N", help="seed of weights, inputs, hypothesis")
    group.addoption(
        "--lstm-profile",
        default=DEFAULT_PROFILE,
        metavar="NAME",
        help="quick (toy grid), standard (default: sizes, lengths, batches and saturation within a CI budget) "
        "or exhaustive (nightly and GPU runs)",
    )
    group.addoption(
        "--lstm-max-examples",
        default=None,
        metavar="N",
        help="hypothesis-drawn configurations per implementation, dtype and device (0: none; "
        "default: quick 2, standard 4, exhaustive 25)",
    )
    group.addoption("--lstm-report", default=None, metavar="DIR", help="write report.json and report.html to DIR")


def _choices(option: str, text: str, valid: tuple[str, ...]) -> tuple[str, ...]:
    values = tuple(dict.fromkeys(v.strip() for v in text.split(",") if v.strip()))
    bad = [v for v in values if v not in valid]
    if not values or bad:
        what = f"unknown value {bad[0]!r}" if bad else "no value"
        raise pytest.UsageError(f"{option}: {what}; valid values: {', '.join(valid)} (comma-separated)")
    return values


def _natural(option: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise pytest.UsageError(f"{option}: expected an integer >= 0, got {text!r}")
    return value


def _implementation_names(text: str, third_party: tuple[ThirdParty, ...]) -> tuple[str, ...]:
    from lstm_conformance.adapters.registry import available_names  # only when the user names implementations
    from lstm_conformance.conformance.cases import IMPLEMENTATION_VARIANTS

    registered = list(available_names())
    valid = registered + [
        f"{name}:{variant}" for name in registered for variant, _ in IMPLEMENTATION_VARIANTS.get(name, ())
    ]
    valid += [party.name for party in third_party]
    return _choices("--lstm-implementations", text, tuple(valid))


def _third_party(specs: list[str]) -> tuple[ThirdParty, ...]:
    if not specs:
        return ()
    from lstm_conformance.adapters.registry import available_names, load_object
    from lstm_conformance.reference.errors import LSTMConformanceError

    found = []
    for spec in specs:
        try:
            implementation = load_object(spec)
        except LSTMConformanceError as error:
            raise pytest.UsageError(f"--lstm-implementation: {error}") from None
        name = str(getattr(implementation, "name", "") or "")
        if not name:
            raise pytest.UsageError(f"--lstm-implementation {spec}: the implementation has an empty name")
        if name in available_names():
            raise pytest.UsageError(
                f"--lstm-implementation {spec}: its name {name!r} is already registered; give it another name"
            )
        found.append(ThirdParty(spec, name))
    return tuple(found)


#: Thread-count variables of the BLAS libraries and OpenMP runtimes the frameworks use (read at their import).
THREAD_VARIABLES: tuple[str, ...] = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def share_cores_between_workers() -> None:
    """In a pytest-xdist worker, give each worker its share of the cores for BLAS and OpenMP threads, unless the
    user set them. Measured here: with -n 2 on 2 cores, each worker's NumPy running 2 OpenBLAS threads made a
    reference run of I=H=512 ten times slower (1.8 s against 0.14 s with one thread), the threads of two
    processes spinning against each other. Effective only before NumPy's first import (the plugin configures
    before the suite module imports it)."""
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0") or 0)
    if workers < 2 or not os.environ.get("PYTEST_XDIST_WORKER") or "numpy" in sys.modules:
        return
    share = str(max(1, (os.cpu_count() or 1) // workers))
    for variable in THREAD_VARIABLES:
        os.environ.setdefault(variable, share)


def parse_settings(config: pytest.Config) -> SuiteSettings:
    """Validate every option; a bad value raises pytest.UsageError naming the option and the valid values."""
    share_cores_between_workers()

    def get(option: str) -> Any:
        return config.getoption(option)

    explicit = {}
    defaults = {"--lstm-device": DEFAULT_DEVICES, "--lstm-dtype": DEFAULT_DTYPES}
    for option, default in defaults.items():
        if str(get(option)) != default:
            explicit[option] = str(get(option))
    profile = _choices("--lstm-profile", str(get("--lstm-profile")), PROFILES)
    if len(profile) != 1:
        raise pytest.UsageError(f"--lstm-profile: one of {', '.join(PROFILES)}, got {get('--lstm-profile')!r}")
    max_examples_text = get("--lstm-max-examples")
    if max_examples_text is None:
        max_examples = PROFILE_MAX_EXAMPLES[profile[0]]
    else:
        explicit["--lstm-max-examples"] = str(max_examples_text)
        max_examples = _natural("--lstm-max-examples", str(max_examples_text))
    third_party = _third_party(list(get("--lstm-implementation")))
    names_text = get("--lstm-implementations")
    if names_text is not None:
        implementations: tuple[str, ...] | None = _implementation_names(names_text, third_party)
    elif third_party:
        implementations = tuple(party.name for party in third_party)
    else:
        implementations = None
    report = get("--lstm-report")
    devices = _choices("--lstm-device", str(get("--lstm-device")), DEVICES)
    dtypes = _choices("--lstm-dtype", str(get("--lstm-dtype")), DTYPES)
    allow_tf32 = bool(get("--lstm-allow-tf32"))
    if allow_tf32 and ("cuda" not in devices or "float32" not in dtypes):
        # TF32 exists only for float32 on CUDA: without both, the option would change nothing, silently.
        raise pytest.UsageError(
            "--lstm-allow-tf32 applies to float32 on cuda only; include cuda in --lstm-device and float32 in "
            "--lstm-dtype, or drop --lstm-allow-tf32"
        )
    return SuiteSettings(
        implementations=implementations,
        third_party=third_party,
        devices=devices,
        dtypes=dtypes,
        allow_tf32=allow_tf32,
        seed=_natural("--lstm-seed", str(get("--lstm-seed"))),
        max_examples=max_examples,
        report_dir=Path(report) if report else None,
        explicit=explicit,
        profile=profile[0],
    )
