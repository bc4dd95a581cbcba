"""The float64 reference LSTM: forward over a sequence and exact backward (BPTT), in the canonical layout.

(Stub: the signatures are the contract; issue 2 fills in the bodies.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from reference.layout import LSTMWeights

F64 = NDArray[np.float64]


@dataclass
class LSTMOutputs:
    """y [T, B, dirs*Hout] (batch_first: [B, T, ...]), h_n [layers*dirs, B, Hout], c_n [layers*dirs, B, H]."""

    y: F64
    h_n: F64
    c_n: F64


@dataclass
class LSTMGradients:
    """Gradients of ``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)``: input, initial states, parameters."""

    x: F64
    h0: F64
    c0: F64
    weights: LSTMWeights


def lstm_forward(
    weights: LSTMWeights,
    x: NDArray[np.floating],
    h0: NDArray[np.floating] | None = None,
    c0: NDArray[np.floating] | None = None,
    seq_lens: NDArray[np.integer] | None = None,
    *,
    batch_first: bool = False,
) -> LSTMOutputs:
    """Run the LSTM in float64. Past a sample's length its outputs are zero and its state frozen; the
    reverse direction starts at each sample's own last step."""
    raise NotImplementedError


def lstm_forward_backward(
    weights: LSTMWeights,
    x: NDArray[np.floating],
    h0: NDArray[np.floating] | None = None,
    c0: NDArray[np.floating] | None = None,
    seq_lens: NDArray[np.integer] | None = None,
    *,
    dy: NDArray[np.floating] | None = None,
    dh_n: NDArray[np.floating] | None = None,
    dc_n: NDArray[np.floating] | None = None,
    batch_first: bool = False,
) -> tuple[LSTMOutputs, LSTMGradients]:
    """Forward, then the exact gradients for the cotangents given (None is zero)."""
    raise NotImplementedError
