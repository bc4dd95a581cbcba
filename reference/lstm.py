"""The float64 reference LSTM: forward over a sequence and exact backward (BPTT), in the canonical layout.

The cell is the one written in ``reference.layout``'s docstring, every option of ``LSTMConfig`` included:

- peepholes ``P`` (rows i, f, o): i and f read c_{t-1}, o reads the new c_t (after ``cell_clip``);
- ``gate_clip`` clips every gate pre-activation (g's too) after the peepholes are added, before the activation;
- ``input_forget``: f = 1 - i. The f rows of W, R, Wb, Rb and the f row of P are then unused: they do not
  change the function and their gradients are exactly zero;
- ``cell_clip`` clips c_t; the projection ``proj`` gives h_t = clip_proj(proj @ m_t).

Clip derivatives follow PyTorch's ``clamp`` and TF's ``clip_by_value``: the gradient passes where the value
equals the bound (inclusive) and is zero strictly outside. Activation derivatives at their kinks are documented
in ``reference.activations``.

Sequences: per-sample lengths ``seq_lens`` behave as PyTorch's packed sequences and ONNX's ``sequence_lens``:
past a sample's length its outputs are zero and its state is frozen (h_n, c_n are the state after its own last
step); the reverse direction reads each sample from its own last step (seq_lens[b] - 1) down to 0. Stacked
layers above the first read the concatenation of both directions' outputs.

How it computes (for speed, as cuDNN does): the batch is sorted by length once, so that the samples still
running at step t are a prefix of the batch; a reverse direction runs forward over each sample's reversed
sequence (a gather that is its own inverse); the input projection of all steps is one matrix product before
the time loop; the backward pass keeps only the recurrent product in its time loop and computes the weight and
input gradients as single matrix products over all steps afterwards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.activations import ActivationFunction, resolve
from lstm_conformance.reference.inputs import PreparedInputs, prepare_inputs
from lstm_conformance.reference.layout import LayerWeights, LSTMConfig, LSTMWeights, require_zero_biases

F64 = NDArray[np.float64]


@dataclass
class LSTMOutputs:
    """y [T, B, dirs*Hout] (batch_first: [B, T, ...]), h_n [layers*dirs, B, Hout], c_n [layers*dirs, B, H]."""

    y: F64
    h_n: F64
    c_n: F64


@dataclass
class LSTMGradients:
    """Gradients of ``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)``: input, initial states, parameters.

    With ``config.bias`` False the model has no bias parameters, so the canonical ``Wb``/``Rb`` gradients are
    zero, whichever implementation computed them (TF's cells and Flax keep a bias variable held at zero and
    report its gradient under their native names only). Enforced here, once, for every implementation.
    """

    x: F64
    h0: F64
    c0: F64
    weights: LSTMWeights

    def __post_init__(self) -> None:
        if self.weights.config.bias:
            return
        for per_direction in self.weights.layers:
            for params in per_direction:
                params.Wb = np.zeros_like(params.Wb)
                params.Rb = np.zeros_like(params.Rb)


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
    prepared = prepare_inputs(weights.config, x, h0, c0, seq_lens, batch_first=batch_first)
    outputs, _ = _Network(weights, prepared).forward(keep_tapes=False)
    return _to_caller_layout(outputs, batch_first)


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
    config = weights.config
    prepared = prepare_inputs(config, x, h0, c0, seq_lens, dy=dy, dh_n=dh_n, dc_n=dc_n, batch_first=batch_first)
    if not prepared.wants_gradients:  # every cotangent None: the gradients are zero, shaped as the inputs
        prepared.dy = np.zeros((prepared.steps, prepared.batch, config.num_directions * config.output_size))
        prepared.dh_n = np.zeros_like(prepared.h0)
        prepared.dc_n = np.zeros_like(prepared.c0)
    network = _Network(weights, prepared)
    outputs, tapes = network.forward(keep_tapes=True)
    gradients = network.backward(tapes)
    if batch_first:
        gradients.x = np.ascontiguousarray(gradients.x.swapaxes(0, 1))
    return _to_caller_layout(outputs, batch_first), gradients


def kink_margin(
    weights: LSTMWeights,
    x: NDArray[np.floating],
    h0: NDArray[np.floating] | None = None,
    c0: NDArray[np.floating] | None = None,
    seq_lens: NDArray[np.integer] | None = None,
    *,
    batch_first: bool = False,
) -> float:
    """How far this run stays from the points where the LSTM is not differentiable: the smallest distance, over
    every step each sample runs, from a clipped value to its bound (gate, cell and projection clips) or from an
    activation's input to one of its kinks (``ActivationFunction.kinks``); inf when there is none.

    Gradients at a kink are a convention; finite differences, and gradient comparisons between frameworks,
    mean something only when this margin exceeds the size of the perturbation.
    """
    prepared = prepare_inputs(weights.config, x, h0, c0, seq_lens, batch_first=batch_first)
    network = _Network(weights, prepared, keep_preactivations=True)
    _, tapes = network.forward(keep_tapes=True)
    cell, H = network.cell, network.cell.hidden
    running = np.arange(prepared.batch)[None, :] < np.asarray(network.active)[:, None]  # [T, B]
    gates = [(0, cell.gate), (2, cell.cell_input), (3, cell.gate)]
    if not cell.input_forget:  # with input_forget the f pre-activation is never read
        gates.append((1, cell.gate))
    margin = math.inf
    for tape in (tape for layer in tapes for tape in layer):
        assert tape.Z is not None
        for block, function in gates:
            z = tape.Z[:, :, block * H : (block + 1) * H][running]
            if cell.gate_clip is not None:
                margin = min(margin, _distance(z, (-cell.gate_clip, cell.gate_clip)))
                z = np.clip(z, -cell.gate_clip, cell.gate_clip)
            margin = min(margin, _distance(z, function.kinks))
        if tape.Cpre is not None and cell.cell_clip is not None:
            margin = min(margin, _distance(tape.Cpre[running], (-cell.cell_clip, cell.cell_clip)))
        margin = min(margin, _distance(tape.Cs[1:][running], cell.cell_output.kinks))
        if tape.Hpre is not None and cell.proj_clip is not None:
            margin = min(margin, _distance(tape.Hpre[running], (-cell.proj_clip, cell.proj_clip)))
    return margin


def _distance(values: F64, points: tuple[float, ...]) -> float:
    if not points or not values.size:
        return math.inf
    return float(min(np.abs(values - point).min() for point in points))


def _to_caller_layout(outputs: LSTMOutputs, batch_first: bool) -> LSTMOutputs:
    if batch_first:
        outputs.y = np.ascontiguousarray(outputs.y.swapaxes(0, 1))
    return outputs


# ----------------------------------------------------------------------------------------------------------
# The cell options, resolved once per run
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cell:
    hidden: int
    output: int
    gate: ActivationFunction
    cell_input: ActivationFunction
    cell_output: ActivationFunction
    gate_clip: float | None
    cell_clip: float | None
    proj_clip: float | None
    peepholes: bool
    input_forget: bool
    projection: bool
    #: Keep the gate pre-activations Z for backward (a clip mask, or a derivative that reads x) or on request.
    keeps_preactivations: bool

    @classmethod
    def from_config(cls, config: LSTMConfig, keep_preactivations: bool = False) -> _Cell:
        gate = resolve(config.gate_activation)
        cell_input = resolve(config.cell_input_activation)
        needed = config.gate_clip is not None or gate.needs_input or cell_input.needs_input
        return cls(
            hidden=config.hidden_size,
            output=config.output_size,
            gate=gate,
            cell_input=cell_input,
            cell_output=resolve(config.cell_output_activation),
            gate_clip=config.gate_clip,
            cell_clip=config.cell_clip,
            proj_clip=config.proj_clip,
            peepholes=config.peepholes,
            input_forget=config.input_forget,
            projection=config.proj_size > 0,
            keeps_preactivations=needed or keep_preactivations,
        )


@dataclass
class _Params:
    """One layer and direction's parameters as contiguous float64, with the transposes the loops use."""

    W: F64
    R: F64
    bias: F64  # Wb + Rb: the two biases only ever enter as their sum
    RT: F64
    P: F64 | None
    proj: F64 | None
    projT: F64 | None

    @classmethod
    def from_layer(cls, layer: LayerWeights) -> _Params:
        def f64(a: NDArray[np.floating]) -> F64:
            return np.ascontiguousarray(a, dtype=np.float64)

        W, R = f64(layer.W), f64(layer.R)
        proj = None if layer.proj is None else f64(layer.proj)
        return cls(
            W=W,
            R=R,
            bias=f64(layer.Wb) + f64(layer.Rb),
            RT=np.ascontiguousarray(R.T),
            P=None if layer.P is None else f64(layer.P),
            proj=proj,
            projT=None if proj is None else np.ascontiguousarray(proj.T),
        )


@dataclass
class _Tape:
    """What one layer-direction's forward keeps for its backward, in direction order over the sorted batch.

    ``Z`` gate pre-activations before the gate clip (only when backward needs them), ``G`` gates after their
    activations (i, f, g, o blocks), ``Hs``/``Cs`` states with the initial one at index 0 (rows of samples past
    their length stay zero), ``Tc`` act_cell_output(c_t), ``Cpre`` c before ``cell_clip``, ``M`` m_t before the
    projection, ``Hpre`` h before ``proj_clip``.
    """

    X: F64
    G: F64
    Z: F64 | None
    Hs: F64
    Cs: F64
    Tc: F64
    Cpre: F64 | None
    M: F64 | None
    Hpre: F64 | None


def _clip_mask(values: F64, bound: float) -> F64:
    """d clip(v, -bound, bound) / dv: 1 inside and on the bound (PyTorch clamp, TF clip_by_value), else 0."""
    return (np.abs(values) <= bound).astype(np.float64)


# ----------------------------------------------------------------------------------------------------------
# One layer in one direction
# ----------------------------------------------------------------------------------------------------------


def _forward_direction(
    cell: _Cell, params: _Params, X: F64, h0: F64, c0: F64, active: list[int], keep_tape: bool
) -> _Tape:
    """Run one direction over X [T, B, I] (direction order, batch sorted by length, ``active[t]`` samples
    still running at step t)."""
    steps, batch, features = X.shape
    H, Hout = cell.hidden, cell.output
    Z = np.empty((steps, batch, 4 * H))
    np.matmul(X.reshape(steps * batch, features), params.W.T, out=Z.reshape(steps * batch, 4 * H))
    Z += params.bias
    # When backward can rebuild gate derivatives from the activated gates, activate in place.
    G = np.empty_like(Z) if cell.keeps_preactivations else Z
    Hs = np.zeros((steps + 1, batch, Hout))
    Cs = np.zeros((steps + 1, batch, H))
    Hs[0], Cs[0] = h0, c0
    Tc = np.zeros((steps, batch, H)) if keep_tape else np.empty((batch, H))
    Cpre = np.zeros((steps, batch, H)) if cell.cell_clip is not None else None
    M = np.zeros((steps, batch, H)) if cell.projection else None
    Hpre = np.zeros((steps, batch, Hout)) if cell.proj_clip is not None else None
    recurrent = np.empty((batch, 4 * H))
    product = np.empty((batch, H))
    for t in range(steps):
        n = active[t]
        z, g = Z[t, :n], G[t, :n]
        c_prev, c = Cs[t, :n], Cs[t + 1, :n]
        np.matmul(Hs[t, :n], params.RT, out=recurrent[:n])
        z += recurrent[:n]
        if params.P is not None:
            z[:, :H] += params.P[0] * c_prev
            z[:, H : 2 * H] += params.P[1] * c_prev
        _activate_gates(cell, z, g, H)
        # c_t = f * c_{t-1} + i * g
        np.multiply(g[:, H : 2 * H], c_prev, out=c)
        np.multiply(g[:, :H], g[:, 2 * H : 3 * H], out=product[:n])
        c += product[:n]
        if Cpre is not None and cell.cell_clip is not None:
            Cpre[t, :n] = c
            np.clip(c, -cell.cell_clip, cell.cell_clip, out=c)
        if params.P is not None:
            z[:, 3 * H :] += params.P[2] * c
        _activate(cell.gate, z[:, 3 * H :], g[:, 3 * H :], cell.gate_clip)
        tc = Tc[t, :n] if keep_tape else Tc[:n]
        cell.cell_output.forward(c, tc)
        m = M[t, :n] if M is not None else Hs[t + 1, :n]
        np.multiply(g[:, 3 * H :], tc, out=m)
        if params.projT is not None:
            if Hpre is not None and cell.proj_clip is not None:
                np.matmul(m, params.projT, out=Hpre[t, :n])
                np.clip(Hpre[t, :n], -cell.proj_clip, cell.proj_clip, out=Hs[t + 1, :n])
            else:
                np.matmul(m, params.projT, out=Hs[t + 1, :n])
    return _Tape(
        X=X,
        G=G,
        Z=Z if cell.keeps_preactivations else None,
        Hs=Hs,
        Cs=Cs,
        Tc=Tc,
        Cpre=Cpre,
        M=M,
        Hpre=Hpre,
    )


def _activate(function: ActivationFunction, z: F64, out: F64, clip: float | None) -> None:
    """out = function(clip(z)); z is left as it is (backward reads the unclipped value for the clip mask)."""
    if clip is None:
        function.forward(z, out)
    else:
        np.clip(z, -clip, clip, out=out)
        function.forward(out, out)


def _activate_gates(cell: _Cell, z: F64, g: F64, H: int) -> None:
    """i, f, g of one step (o waits for c_t's peephole); with input_forget f = 1 - i."""
    if cell.input_forget:
        _activate(cell.gate, z[:, :H], g[:, :H], cell.gate_clip)
        np.subtract(1.0, g[:, :H], out=g[:, H : 2 * H])
    else:
        _activate(cell.gate, z[:, : 2 * H], g[:, : 2 * H], cell.gate_clip)
    _activate(cell.cell_input, z[:, 2 * H : 3 * H], g[:, 2 * H : 3 * H], cell.gate_clip)


def _gate_derivative(function: ActivationFunction, z: F64 | None, y: F64, clip: float | None) -> F64:
    """d y / d z for y = function(clip(z)), z the pre-activation before the clip."""
    if clip is None:
        return function.derivative(z, y)
    assert z is not None  # kept whenever gate_clip is set
    return function.derivative(np.clip(z, -clip, clip), y) * _clip_mask(z, clip)


def _block(z: F64 | None, gate: int, H: int) -> F64 | None:
    """Gate block ``gate`` (GATES order) of a step's pre-activations, when they were kept."""
    return None if z is None else z[:, gate * H : (gate + 1) * H]


@dataclass
class _DirectionGradients:
    dX: F64
    dh0: F64
    dc0: F64
    params: LayerWeights


def _backward_direction(
    cell: _Cell, params: _Params, tape: _Tape, dY: F64, dh_n: F64, dc_n: F64, active: list[int]
) -> _DirectionGradients:
    """BPTT through one direction; dY [T, B, Hout] in direction order, dh_n/dc_n the final-state cotangents."""
    steps, batch, _ = tape.X.shape
    H = cell.hidden
    dA = np.zeros((steps, batch, 4 * H))  # d loss / d gate pre-activation; zero where a sample has ended
    dHpre = np.zeros((steps, batch, cell.output)) if cell.projection else None
    dh = np.array(dh_n)  # running d loss / d h_t, arriving from step t+1 and the final state
    dc = np.array(dc_n)
    # Per-step scratch, allocated once (the same values as fresh temporaries, in the same order of operations).
    dh_buffer, through_c, di_buffer = np.empty_like(dh), np.empty((batch, H)), np.empty((batch, H))
    G, Z = tape.G, tape.Z
    for t in range(steps - 1, -1, -1):
        n = active[t]
        g = G[t, :n]
        z = None if Z is None else Z[t, :n]
        dh_t = np.add(dh[:n], dY[t, :n], out=dh_buffer[:n])
        if params.proj is not None and dHpre is not None:
            if tape.Hpre is not None and cell.proj_clip is not None:
                dh_t *= _clip_mask(tape.Hpre[t, :n], cell.proj_clip)
            dHpre[t, :n] = dh_t
            dm = dh_t @ params.proj
        else:
            dm = dh_t
        c_prev, c = tape.Cs[t, :n], tape.Cs[t + 1, :n]
        tc = tape.Tc[t, :n]
        o = g[:, 3 * H :]
        da = dA[t, :n]
        da_o = da[:, 3 * H :]
        np.multiply(dm, tc, out=da_o)
        da_o *= _gate_derivative(cell.gate, _block(z, 3, H), o, cell.gate_clip)
        # dc_t = dc + dm * o * act'(c), accumulated in place in dc[:n] (rows past n wait for their samples).
        via_h = np.multiply(dm, o, out=through_c[:n])
        via_h *= cell.cell_output.derivative(c, tc)
        dc_t = np.add(dc[:n], via_h, out=dc[:n])
        if params.P is not None:
            dc_t += da_o * params.P[2]
        if tape.Cpre is not None and cell.cell_clip is not None:
            dc_t *= _clip_mask(tape.Cpre[t, :n], cell.cell_clip)
        i_gate, f_gate, g_gate = g[:, :H], g[:, H : 2 * H], g[:, 2 * H : 3 * H]
        di = np.multiply(dc_t, g_gate, out=di_buffer[:n])
        if cell.input_forget:
            di -= dc_t * c_prev  # f = 1 - i: the f pre-activation gets no gradient
        else:
            np.multiply(dc_t, c_prev, out=da[:, H : 2 * H])
            da[:, H : 2 * H] *= _gate_derivative(cell.gate, _block(z, 1, H), f_gate, cell.gate_clip)
        np.multiply(di, _gate_derivative(cell.gate, _block(z, 0, H), i_gate, cell.gate_clip), out=da[:, :H])
        np.multiply(dc_t, i_gate, out=da[:, 2 * H : 3 * H])
        da[:, 2 * H : 3 * H] *= _gate_derivative(cell.cell_input, _block(z, 2, H), g_gate, cell.gate_clip)
        dc_prev = np.multiply(dc_t, f_gate, out=dc_t)  # dc[:n] becomes d loss / d c_{t-1}
        if params.P is not None:
            dc_prev += da[:, :H] * params.P[0]
            dc_prev += da[:, H : 2 * H] * params.P[1]
        np.matmul(da, params.R, out=dh[:n])
    return _weight_gradients(cell, params, tape, dA, dHpre, dh, dc)


def _weight_gradients(
    cell: _Cell, params: _Params, tape: _Tape, dA: F64, dHpre: F64 | None, dh0: F64, dc0: F64
) -> _DirectionGradients:
    """Every parameter and input gradient as one product over all steps (dA is zero where samples ended)."""
    steps, batch, features = tape.X.shape
    H = cell.hidden
    rows = steps * batch
    dA2 = dA.reshape(rows, 4 * H)
    dW = dA2.T @ tape.X.reshape(rows, features)
    dR = dA2.T @ tape.Hs[:-1].reshape(rows, cell.output)
    db = dA2.sum(axis=0)
    dX = (dA2 @ params.W).reshape(steps, batch, features)
    dP = None
    if params.P is not None:
        dP = np.stack(
            [
                np.einsum("tbh,tbh->h", dA[:, :, :H], tape.Cs[:-1]),
                np.einsum("tbh,tbh->h", dA[:, :, H : 2 * H], tape.Cs[:-1]),
                np.einsum("tbh,tbh->h", dA[:, :, 3 * H :], tape.Cs[1:]),
            ]
        )
    dproj = None
    if dHpre is not None and tape.M is not None:
        dproj = dHpre.reshape(rows, cell.output).T @ tape.M.reshape(rows, H)
    return _DirectionGradients(
        dX=dX, dh0=dh0, dc0=dc0, params=LayerWeights(W=dW, R=dR, Wb=db, Rb=db.copy(), P=dP, proj=dproj)
    )


# ----------------------------------------------------------------------------------------------------------
# The whole network: sorting by length, directions, layers
# ----------------------------------------------------------------------------------------------------------


class _Network:
    """One run over prepared inputs: sorts the batch by length (longest first) and undoes it on the way out."""

    def __init__(self, weights: LSTMWeights, inputs: PreparedInputs, keep_preactivations: bool = False) -> None:
        require_zero_biases(weights)
        self.config = weights.config
        self.cell = _Cell.from_config(weights.config, keep_preactivations)
        self.params = [[_Params.from_layer(d) for d in layer] for layer in weights.layers]
        self.inputs = inputs
        steps = inputs.steps
        # Stable sort, longest first: the samples still running at step t are then a prefix of the batch.
        self.order = np.argsort(-inputs.seq_lens, kind="stable")
        #: Already longest first (every full-length batch): the gathers into and out of sorted order are skipped.
        self.sorted = bool((self.order == np.arange(inputs.batch)).all())
        self.lengths = inputs.seq_lens[self.order]
        self.active = [int((self.lengths > t).sum()) for t in range(steps)]
        self.ragged = inputs.ragged
        self.reverse_index = self._reverse_index(steps)

    def _reverse_index(self, steps: int) -> NDArray[np.int64]:
        """time_index[t, b] = lengths[b]-1-t for t < lengths[b], else t: reverses each sample's own steps and
        is its own inverse, so one gather maps inputs into and outputs back out of the reverse direction."""
        t = np.arange(steps)[:, None]
        return np.where(t < self.lengths[None, :], self.lengths[None, :] - 1 - t, t)

    def _reverse(self, array: F64) -> F64:
        """Reverse each sample's own steps of a time-major [T, B, ...] array (a copy)."""
        if not self.ragged:
            return np.ascontiguousarray(array[::-1])
        return np.ascontiguousarray(array[self.reverse_index, np.arange(array.shape[1])[None, :]])

    def _in_direction(self, array: F64, direction: int) -> F64:
        return self._reverse(array) if direction == 1 else array

    def forward(self, keep_tapes: bool) -> tuple[LSTMOutputs, list[list[_Tape]]]:
        config, cell = self.config, self.cell
        dirs, Hout = config.num_directions, config.output_size
        order = self.order
        if self.sorted and not self.ragged:  # nothing to gather and nothing to zero: read x as it is
            layer_input = np.ascontiguousarray(self.inputs.x)
        else:
            layer_input = np.ascontiguousarray(self.inputs.x[:, order])
        if self.ragged:  # padding never reaches the result, not even as NaN * 0 in a weight gradient
            layer_input[np.arange(self.inputs.steps)[:, None] >= self.lengths[None, :]] = 0.0
        h0, c0 = self.inputs.h0[:, order], self.inputs.c0[:, order]
        h_n, c_n = np.empty_like(h0), np.empty_like(c0)
        tapes: list[list[_Tape]] = []
        batch_index = np.arange(self.inputs.batch)
        for layer in range(config.num_layers):
            output = np.empty((self.inputs.steps, self.inputs.batch, dirs * Hout))
            layer_tapes = []
            for direction in range(dirs):
                state = layer * dirs + direction
                X = self._in_direction(layer_input, direction)
                tape = _forward_direction(
                    cell, self.params[layer][direction], X, h0[state], c0[state], self.active, keep_tapes
                )
                output[:, :, direction * Hout : (direction + 1) * Hout] = self._in_direction(tape.Hs[1:], direction)
                h_n[state] = tape.Hs[self.lengths, batch_index]
                c_n[state] = tape.Cs[self.lengths, batch_index]
                if keep_tapes:
                    layer_tapes.append(tape)
            tapes.append(layer_tapes)
            layer_input = output
        inverse = np.argsort(order)
        outputs = LSTMOutputs(
            y=layer_input if self.sorted else np.ascontiguousarray(layer_input[:, inverse]),
            h_n=np.ascontiguousarray(h_n[:, inverse]),
            c_n=np.ascontiguousarray(c_n[:, inverse]),
        )
        return outputs, tapes

    def backward(self, tapes: list[list[_Tape]]) -> LSTMGradients:
        config, inputs, order = self.config, self.inputs, self.order
        assert inputs.dy is not None
        assert inputs.dh_n is not None
        assert inputs.dc_n is not None
        dirs, Hout = config.num_directions, config.output_size
        d_output = np.ascontiguousarray(inputs.dy if self.sorted else inputs.dy[:, order])
        dh_n, dc_n = inputs.dh_n[:, order], inputs.dc_n[:, order]
        dh0, dc0 = np.empty_like(dh_n), np.empty_like(dc_n)
        layer_grads: list[list[LayerWeights]] = [[] for _ in range(config.num_layers)]
        for layer in range(config.num_layers - 1, -1, -1):
            d_input = np.zeros((inputs.steps, inputs.batch, config.layer_input_size(layer)))
            for direction in range(dirs):
                state = layer * dirs + direction
                dY = self._in_direction(d_output[:, :, direction * Hout : (direction + 1) * Hout], direction)
                grads = _backward_direction(
                    self.cell,
                    self.params[layer][direction],
                    tapes[layer][direction],
                    dY,
                    dh_n[state],
                    dc_n[state],
                    self.active,
                )
                d_input += self._in_direction(grads.dX, direction)
                dh0[state], dc0[state] = grads.dh0, grads.dc0
                layer_grads[layer].append(grads.params)
            d_output = d_input
        inverse = np.argsort(order)
        return LSTMGradients(
            x=d_output if self.sorted else np.ascontiguousarray(d_output[:, inverse]),
            h0=np.ascontiguousarray(dh0[:, inverse]),
            c0=np.ascontiguousarray(dc0[:, inverse]),
            weights=LSTMWeights(config, layer_grads),
        )
