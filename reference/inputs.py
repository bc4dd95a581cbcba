"""Validation and normalization of run inputs, shared by the reference and every adapter.

Everything is checked once here, so that a wrong shape names the offending array with what was expected and
what was found, whichever implementation is run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import LayoutError
from lstm_conformance.reference.layout import LSTMConfig

F64 = NDArray[np.float64]


@dataclass
class PreparedInputs:
    """Time-major float64 inputs with every optional array filled in.

    ``x`` [T, B, I]; ``h0`` [L*D, B, Hout]; ``c0`` [L*D, B, H] (zeros where not given); ``seq_lens`` [B] int64
    (T for every sample where not given) and ``ragged`` whether any sample is shorter than T; cotangents
    ``dy`` [T, B, D*Hout], ``dh_n``, ``dc_n`` (zeros where not given; None only when ``wants_gradients`` is
    False). How the caller gave them: ``batch_first``, ``lengths_given`` (seq_lens given, even if all are T) and
    ``states_given`` (h0 or c0 given), for implementations whose native call differs with them.
    """

    x: F64
    h0: F64
    c0: F64
    seq_lens: NDArray[np.int64]
    ragged: bool
    wants_gradients: bool
    dy: F64 | None
    dh_n: F64 | None
    dc_n: F64 | None
    batch_first: bool = False
    lengths_given: bool = False
    states_given: bool = False

    @property
    def steps(self) -> int:
        return int(self.x.shape[0])

    @property
    def batch(self) -> int:
        return int(self.x.shape[1])


def _as_f64(name: str, value: Any, shape: tuple[int, ...]) -> F64:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise LayoutError(f"{name}: expected a floating-point array, found dtype {array.dtype}")
    if array.shape != shape:
        raise LayoutError(f"{name}: expected shape {shape}, found {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float64)


def prepare_inputs(
    config: LSTMConfig,
    x: Any,
    h0: Any = None,
    c0: Any = None,
    seq_lens: Any = None,
    *,
    dy: Any = None,
    dh_n: Any = None,
    dc_n: Any = None,
    batch_first: bool = False,
) -> PreparedInputs:
    """Validate every array against ``config`` and return them time-major, float64, zeros filled in."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise LayoutError(f"x: expected 3 dimensions ([T, B, I] or batch-first [B, T, I]), found shape {x.shape}")
    if batch_first:
        x = x.swapaxes(0, 1)
        dy = None if dy is None else np.asarray(dy).swapaxes(0, 1)
    steps, batch, features = x.shape
    if steps < 1 or batch < 1:
        raise LayoutError(f"x: needs at least one time step and one sample, found shape {x.shape}")
    if features != config.input_size:
        raise LayoutError(f"x: expected {config.input_size} input features (the model's input_size), found {features}")
    states = config.num_layers * config.num_directions
    h_shape = (states, batch, config.output_size)
    c_shape = (states, batch, config.hidden_size)
    y_shape = (steps, batch, config.num_directions * config.output_size)
    lengths = _seq_lens(seq_lens, steps, batch)
    wants_gradients = any(v is not None for v in (dy, dh_n, dc_n))
    return PreparedInputs(
        x=_as_f64("x", x, (steps, batch, features)),
        h0=np.zeros(h_shape) if h0 is None else _as_f64("h0", h0, h_shape),
        c0=np.zeros(c_shape) if c0 is None else _as_f64("c0", c0, c_shape),
        seq_lens=lengths,
        ragged=bool((lengths < steps).any()),
        wants_gradients=wants_gradients,
        dy=None if not wants_gradients else np.zeros(y_shape) if dy is None else _as_f64("dy", dy, y_shape),
        dh_n=None if not wants_gradients else np.zeros(h_shape) if dh_n is None else _as_f64("dh_n", dh_n, h_shape),
        dc_n=None if not wants_gradients else np.zeros(c_shape) if dc_n is None else _as_f64("dc_n", dc_n, c_shape),
        batch_first=batch_first,
        lengths_given=seq_lens is not None,
        states_given=h0 is not None or c0 is not None,
    )


def _seq_lens(seq_lens: Any, steps: int, batch: int) -> NDArray[np.int64]:
    if seq_lens is None:
        return np.full(batch, steps, dtype=np.int64)
    lengths = np.asarray(seq_lens)
    if lengths.dtype.kind not in "iu" or lengths.shape != (batch,):
        raise LayoutError(
            f"seq_lens: expected {batch} integers (one per sample), found {lengths.dtype} {lengths.shape}"
        )
    if (lengths < 1).any() or (lengths > steps).any():
        raise LayoutError(f"seq_lens: every length must be in 1..{steps} (T), found {lengths.tolist()}")
    return lengths.astype(np.int64)
