"""lstm-conformance: do these two LSTMs compute the same function, and do they train the same way?

One import namespace: ``lstm_conformance.reference`` (the float64 NumPy LSTM and the canonical layout),
``lstm_conformance.adapters`` (framework layouts, runners, file formats), ``lstm_conformance.conformance`` (the
pytest conformance suite) and ``lstm_conformance.cli`` (the ``lstm-conformance`` command line).

Importing this package imports nothing heavy (no NumPy, no framework).
"""

from __future__ import annotations

__version__ = "0.1.0"
