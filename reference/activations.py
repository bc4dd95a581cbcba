"""The activations of ``layout.ACTIVATION_PARAMETERS`` with their derivatives, vectorized, in float64.

``resolve(Activation)`` returns an ``ActivationFunction``: ``forward(x, out)`` writes the activation of ``x``
into ``out`` (``out`` may be ``x`` itself) and ``derivative(x, y)`` returns d act / dx given the input ``x`` and
the output ``y = act(x)``. Where the derivative follows from ``y`` alone (``needs_input`` False), ``x`` may be
None, so the reference need not keep pre-activations for the common sigmoid/tanh case.

Derivatives at kinks (the side taken), chosen to match the frameworks' autograd where they agree:

- ``relu``: 0 at x == 0 (PyTorch ``threshold_backward`` and TF ``ReluGrad`` both use x > 0).
- ``leaky_relu``: alpha at x == 0 (PyTorch and TF ``LeakyReluGrad`` both use x > 0 for the slope 1).
- ``thresholded_relu``: 0 at x == alpha (PyTorch ``threshold`` and Keras' ``x * (x > theta)``).
- ``elu``: alpha at x == 0 (PyTorch ``elu_backward`` uses x <= 0 for the exponential side; Keras' alpha != 1
  path, ``where(x > 0, elu, alpha * elu)``, gives the same).
- ``hard_sigmoid_keras2`` = clip(0.2x + 0.5, 0, 1): 0.2 at the corners x == +-2.5, inclusive, because tf_keras
  computes it with ``clip_by_value`` whose gradient (TF's Minimum/Maximum gradients) passes at equality, like
  PyTorch's ``clamp``.
- ``hard_sigmoid`` (ONNX, clip(alpha*x + beta, 0, 1)): alpha at the corners, inclusive, the same ``clip``
  convention (it is the parametrized form of the Keras 2 one; ONNX itself defines no gradient).
- ``hard_sigmoid_keras3`` = clip(x/6 + 0.5, 0, 1): 0 at the corners x == +-3, exclusive, because Keras 3
  computes it as ``relu6(x + 3) / 6`` on TF (``Relu6Grad``: 0 < x < 6) and ``hardsigmoid`` on PyTorch
  (-3 < x < 3), which agree.

The clips of the cell (``gate_clip``, ``cell_clip``, ``proj_clip``, in ``reference.lstm``) use the ``clip``
convention too: the gradient passes where the value equals the bound (PyTorch ``clamp``, TF ``clip_by_value``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import NotImplementedOptionError
from lstm_conformance.reference.layout import Activation

F64 = NDArray[np.float64]

Forward = Callable[[F64, F64], None]
Derivative = Callable[[F64 | None, F64], F64]


@dataclass(frozen=True)
class ActivationFunction:
    """One activation, resolved: ``forward(x, out)`` and ``derivative(x, y)`` (see the module docstring)."""

    activation: Activation
    forward: Forward
    derivative: Derivative
    #: Whether ``derivative`` reads ``x``; when False it is computed from ``y`` alone.
    needs_input: bool
    #: The inputs x where the function or its derivative jumps (where finite differences do not converge).
    kinks: tuple[float, ...] = ()

    def __call__(self, x: F64) -> F64:
        """The activation of ``x`` as a new array."""
        out = np.empty_like(x, dtype=np.float64)
        self.forward(x, out)
        return out


def _need(x: F64 | None) -> F64:
    if x is None:
        raise ValueError("this activation's derivative needs its input x")
    return x


def _sigmoid(x: F64, out: F64) -> None:
    # 1 / (1 + exp(-x)) is accurate in relative terms on both tails; exp overflows to inf for x < -709,
    # which gives the right 0.
    with np.errstate(over="ignore"):
        np.negative(x, out=out)
        np.exp(out, out=out)
    out += 1.0
    np.reciprocal(out, out=out)


def _sigmoid_derivative(_x: F64 | None, y: F64) -> F64:
    return y * (1.0 - y)


def _tanh(x: F64, out: F64) -> None:
    np.tanh(x, out=out)


def _tanh_derivative(_x: F64 | None, y: F64) -> F64:
    return 1.0 - y * y


def _relu(x: F64, out: F64) -> None:
    np.maximum(x, 0.0, out=out)


def _relu_derivative(_x: F64 | None, y: F64) -> F64:
    return (y > 0.0).astype(np.float64)  # y > 0 exactly where x > 0: 0 at the kink


def _clipped_linear(slope: float, offset: float, inclusive: bool) -> tuple[Forward, Derivative]:
    """clip(slope*x + offset, 0, 1) and its derivative; ``inclusive``: slope at the corners (clip's rule)."""

    def forward(x: F64, out: F64) -> None:
        np.multiply(x, slope, out=out)
        out += offset
        np.clip(out, 0.0, 1.0, out=out)

    def derivative(x: F64 | None, _y: F64) -> F64:
        u = _need(x) * slope + offset
        inside = (u >= 0.0) & (u <= 1.0) if inclusive else (u > 0.0) & (u < 1.0)
        return np.where(inside, slope, 0.0)

    return forward, derivative


def _affine(alpha: float, beta: float) -> tuple[Forward, Derivative]:
    def forward(x: F64, out: F64) -> None:
        np.multiply(x, alpha, out=out)
        out += beta

    def derivative(_x: F64 | None, y: F64) -> F64:
        return np.full_like(y, alpha)

    return forward, derivative


def _leaky_relu(alpha: float) -> tuple[Forward, Derivative]:
    def forward(x: F64, out: F64) -> None:
        out[...] = np.where(x >= 0.0, x, alpha * x)

    def derivative(x: F64 | None, _y: F64) -> F64:
        return np.where(_need(x) > 0.0, 1.0, alpha)  # alpha at 0

    return forward, derivative


def _thresholded_relu(alpha: float) -> tuple[Forward, Derivative]:
    def forward(x: F64, out: F64) -> None:
        out[...] = np.where(x > alpha, x, 0.0)

    def derivative(x: F64 | None, _y: F64) -> F64:
        return (_need(x) > alpha).astype(np.float64)  # 0 at x == alpha

    return forward, derivative


def _scaled_tanh(alpha: float, beta: float) -> tuple[Forward, Derivative]:
    def forward(x: F64, out: F64) -> None:
        np.multiply(x, beta, out=out)
        np.tanh(out, out=out)
        out *= alpha

    def derivative(x: F64 | None, _y: F64) -> F64:
        t = np.tanh(_need(x) * beta)
        return alpha * beta * (1.0 - t * t)

    return forward, derivative


def _elu(alpha: float) -> tuple[Forward, Derivative]:
    def forward(x: F64, out: F64) -> None:
        # expm1 of the positive side is never used; min(x, 0) keeps it from overflowing.
        out[...] = np.where(x > 0.0, x, alpha * np.expm1(np.minimum(x, 0.0)))

    def derivative(x: F64 | None, _y: F64) -> F64:
        x = _need(x)
        return np.where(x > 0.0, 1.0, alpha * np.exp(np.minimum(x, 0.0)))  # alpha at 0

    return forward, derivative


def _softsign(x: F64, out: F64) -> None:
    out[...] = x / (1.0 + np.abs(x))


def _softsign_derivative(x: F64 | None, _y: F64) -> F64:
    denominator = 1.0 + np.abs(_need(x))
    return 1.0 / (denominator * denominator)


def _softplus(x: F64, out: F64) -> None:
    np.logaddexp(0.0, x, out=out)


def _softplus_derivative(x: F64 | None, _y: F64) -> F64:
    out = np.empty_like(_need(x))
    _sigmoid(_need(x), out)
    return out


def _kinks(activation: Activation) -> tuple[float, ...]:
    """Where ``activation`` is not continuously differentiable."""
    name, alpha, beta = activation.name, activation.alpha or 0.0, activation.beta or 0.0
    fixed = {"relu": (0.0,), "hard_sigmoid_keras2": (-2.5, 2.5), "hard_sigmoid_keras3": (-3.0, 3.0)}
    if name in fixed:
        return fixed[name]
    if name == "hard_sigmoid":
        return (-beta / alpha, (1.0 - beta) / alpha) if alpha else ()
    if name == "thresholded_relu":
        return (alpha,)
    if name == "leaky_relu":
        return (0.0,) if alpha != 1.0 else ()
    if name == "elu":
        return (0.0,) if alpha != 1.0 else ()
    return ()


def resolve(activation: Activation) -> ActivationFunction:
    """The function and derivative for ``activation``; an unknown name raises NotImplementedOptionError."""
    name, alpha, beta = activation.name, activation.alpha, activation.beta
    a = float(alpha) if alpha is not None else 0.0
    b = float(beta) if beta is not None else 0.0
    by_output: dict[str, tuple[Forward, Derivative]] = {
        "sigmoid": (_sigmoid, _sigmoid_derivative),
        "tanh": (_tanh, _tanh_derivative),
        "relu": (_relu, _relu_derivative),
    }
    if name in by_output:
        forward, derivative = by_output[name]
        return ActivationFunction(activation, forward, derivative, needs_input=False, kinks=_kinks(activation))
    if name == "affine":
        forward, derivative = _affine(a, b)
        return ActivationFunction(activation, forward, derivative, needs_input=False)
    by_input: dict[str, Callable[[], tuple[Forward, Derivative]]] = {
        "hard_sigmoid_keras2": lambda: _clipped_linear(0.2, 0.5, inclusive=True),
        "hard_sigmoid_keras3": lambda: _clipped_linear(1.0 / 6.0, 0.5, inclusive=False),
        "hard_sigmoid": lambda: _clipped_linear(a, b, inclusive=True),
        "leaky_relu": lambda: _leaky_relu(a),
        "thresholded_relu": lambda: _thresholded_relu(a),
        "scaled_tanh": lambda: _scaled_tanh(a, b),
        "elu": lambda: _elu(a),
        "softsign": lambda: (_softsign, _softsign_derivative),
        "softplus": lambda: (_softplus, _softplus_derivative),
    }
    if name not in by_input:
        raise NotImplementedOptionError(f"the reference does not implement activation {activation}")
    forward, derivative = by_input[name]()
    return ActivationFunction(activation, forward, derivative, needs_input=True, kinks=_kinks(activation))
