"""Known limitations as data: an implementation computes a case wrong in a known way, so its test is an xfail.

Every xfail is strict: when a limitation stops failing (the framework fixed it), the test fails as
``XPASS(strict)`` and the report lists it under "known limitation fixed?", so the entry gets removed instead of
hiding a now-working feature.

A limitation matches a test when the implementation (or its base name, for variants such as ``tf-cell:fb0``),
device, dtype and check match (``"*"`` matches anything) and the case has the ``feature``: a name from
``Case.features()`` ("ragged", "gate_clip", ...), or a prefix ending in "=" ("gate_activation=") that matches
any non-default activation of that role.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache


@dataclass(frozen=True)
class KnownLimitation:
    implementation: str
    feature: str
    reason: str
    device: str = "*"
    dtype: str = "*"
    check: str = "*"

    def matches(self, implementation: str, features: list[str], device: str, dtype: str, check: str) -> bool:
        if self.implementation not in (implementation, implementation.split(":")[0]):
            return False
        if self.device not in ("*", device) or self.dtype not in ("*", dtype) or self.check not in ("*", check):
            return False
        if self.feature.endswith("="):
            return any(feature.startswith(self.feature) for feature in features)
        return self.feature in features


#: Limitations written down here; those of onnx's reference evaluator come from its adapter (below).
STATIC_LIMITATIONS: tuple[KnownLimitation, ...] = ()

#: ONNX_REFERENCE_IGNORES keys (option names of adapters.onnx_runtime) -> the case feature that uses the option.
_ONNX_OPTION_FEATURES: dict[str, str] = {
    "seq_lens": "ragged",
    "gate_activation": "gate_activation=",
    "cell_input_activation": "cell_input_activation=",
    "cell_output_activation": "cell_output_activation=",
}


@cache
def onnx_reference_limitations() -> tuple[KnownLimitation, ...]:
    """The options ``onnx.reference`` silently ignores, from ``adapters.onnx_runtime.ONNX_REFERENCE_IGNORES``,
    imported lazily (the adapter module imports no framework at its top level)."""
    try:
        module = importlib.import_module("lstm_conformance.adapters.onnx_runtime")
    except ImportError:
        return ()
    ignored: dict[str, str] = getattr(module, "ONNX_REFERENCE_IGNORES", {})
    return tuple(
        KnownLimitation("onnx-reference", _ONNX_OPTION_FEATURES.get(option, option), reason)
        for option, reason in ignored.items()
    )


def all_limitations() -> tuple[KnownLimitation, ...]:
    return STATIC_LIMITATIONS + onnx_reference_limitations()


def find_limitation(
    implementation: str, features: list[str], device: str, dtype: str, check: str
) -> KnownLimitation | None:
    """The first known limitation that applies to a test, or None."""
    for limitation in all_limitations():
        if limitation.matches(implementation, features, device, dtype, check):
            return limitation
    return None
