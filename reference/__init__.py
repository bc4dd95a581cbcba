"""The float64 NumPy reference LSTM and the canonical layout: the single source of truth."""

from lstm_conformance.reference.errors import (
    FrameworkMissingError,
    InputFileError,
    LayoutError,
    LSTMConformanceError,
    NotImplementedOptionError,
    UnsupportedFeatureError,
)
from lstm_conformance.reference.layout import (
    GATES,
    PEEPHOLES,
    Activation,
    LayerWeights,
    LSTMConfig,
    LSTMWeights,
    load_npz,
    random_weights,
    reorder_gates,
    save_npz,
)
from lstm_conformance.reference.lstm import LSTMGradients, LSTMOutputs, lstm_forward, lstm_forward_backward

__all__ = [
    "GATES",
    "PEEPHOLES",
    "Activation",
    "FrameworkMissingError",
    "InputFileError",
    "LSTMConfig",
    "LSTMConformanceError",
    "LSTMGradients",
    "LSTMOutputs",
    "LSTMWeights",
    "LayerWeights",
    "LayoutError",
    "NotImplementedOptionError",
    "UnsupportedFeatureError",
    "load_npz",
    "lstm_forward",
    "lstm_forward_backward",
    "random_weights",
    "reorder_gates",
    "save_npz",
]
