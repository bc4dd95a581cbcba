"""lstm-conformance: do these two LSTMs compute the same function, and do they train the same way?

One import namespace: ``lstm_conformance.reference`` (the float64 NumPy LSTM and the canonical layout),
``lstm_conformance.adapters`` (framework layouts, runners, file formats), ``lstm_conformance.conformance`` (the
pytest conformance suite) and ``lstm_conformance.cli`` (the ``lstm-conformance`` command line).

Importing this package imports nothing heavy (no NumPy, no framework).
"""

from __future__ import annotations

__version__ = "0.1.0"

#: The Python API (``lstm_conformance.api``), re-exported here and imported on first use, so that importing
#: this package stays free of NumPy: ``lstm_conformance.read(...)`` imports it then.
_API_NAMES = (
    "read",
    "write",
    "convert",
    "compare",
    "Model",
    "WriteResult",
    "ConversionResult",
    "Comparison",
    "Agreement",
)


def __getattr__(name: str) -> object:
    if name in _API_NAMES:
        from lstm_conformance import api

        return getattr(api, name)
    raise AttributeError(f"module 'lstm_conformance' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API_NAMES])
