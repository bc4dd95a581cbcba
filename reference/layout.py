"""The canonical LSTM layout: the one place where gate order, parameter names and shapes are defined.

Every adapter translates to and from this layout; the reference computes in it.

Gate order
    ``GATES = ("i", "f", "g", "o")``: input gate, forget gate, cell input (TF's ``j``, Keras' ``c``,
    BlockLSTM's ``ci``, ONNX's ``c``), output gate. This is PyTorch's and cuDNN's order.

Per layer ``k`` and direction ``d`` (``LayerWeights``), with ``H`` the cell size, ``Hout`` the output size
(``proj_size`` when projecting, else ``H``), ``I_k`` the layer's input size (``input_size`` for layer 0,
``dirs * Hout`` above it):

    ==========  ===============  ======================================================
    name        shape            meaning
    ==========  ===============  ======================================================
    ``W``       ``[4H, I_k]``    input weights, gate blocks of H rows in GATES order
    ``R``       ``[4H, Hout]``   recurrent weights
    ``Wb``      ``[4H]``         input-side bias
    ``Rb``      ``[4H]``         recurrent-side bias (two biases, so PyTorch, ONNX and cuDNN
                                 files round-trip bit for bit; one-bias layouts sum them)
    ``P``       ``[3, H]``       peepholes, rows in ``PEEPHOLES`` order (i, f, o); only with
                                 ``config.peepholes``
    ``proj``    ``[Hout, H]``    projection (PyTorch's ``weight_hr``); only with ``proj_size``
    ==========  ===============  ======================================================

The cell, for each time step (``act_*`` from the config, ``clip_x(v) = clip(v, -x, x)``)::

    a      = W @ x_t + Wb + R @ h_{t-1} + Rb                     split into a_i, a_f, a_g, a_o
    i      = act_gate(clip_gate(a_i + P_i * c_{t-1}))
    f      = act_gate(clip_gate(a_f + P_f * c_{t-1}))            (1 - i with input_forget)
    g      = act_cell_input(clip_gate(a_g))
    c_t    = clip_cell(f * c_{t-1} + i * g)
    o      = act_gate(clip_gate(a_o + P_o * c_t))
    m_t    = o * act_cell_output(c_t)
    h_t    = clip_proj(proj @ m_t)                               (m_t without projection)

TF's cells add ``forget_bias`` to the forget gate at run time and never store it. The canonical layout has no
forget_bias: the TF adapters fold it into ``Rb``'s forget block when reading (``Rb_f += forget_bias``) and take
it off when writing, so a canonical model is one function, whatever framework it came from.

States follow PyTorch: ``h`` is ``[layers * dirs, B, Hout]`` and ``c`` ``[layers * dirs, B, H]``, index
``layer * dirs + direction`` (direction 0 forward, 1 reverse).

Saved as ``.npz`` with the key schema below (``NPZ_FORMAT_VERSION``); ``load_npz`` validates everything.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.reference.errors import LayoutError

FloatArray = NDArray[np.floating[Any]]

#: The canonical gate order (rows of W, R, Wb, Rb), written down once.
GATES: tuple[str, ...] = ("i", "f", "g", "o")
#: The order of the peephole rows in ``P``.
PEEPHOLES: tuple[str, ...] = ("i", "f", "o")
#: Direction names, index = direction.
DIRECTIONS: tuple[str, ...] = ("forward", "reverse")
#: Parameter names of one layer and direction, in a fixed order.
PARAMETERS: tuple[str, ...] = ("W", "R", "Wb", "Rb", "P", "proj")

NPZ_FORMAT_VERSION = 1
NPZ_FORMAT_KEY = "__lstm_conformance_format__"
NPZ_CONFIG_KEY = "__config__"


def gate_index(gate: str) -> int:
    """Position of a canonical gate name in GATES."""
    return GATES.index(gate)


def reorder_gates(array: NDArray[Any], source: Sequence[str], target: Sequence[str], axis: int = 0) -> NDArray[Any]:
    """Reorder the gate blocks of ``array`` along ``axis`` from ``source`` order to ``target`` order.

    Orders are written in canonical gate names (``("i", "g", "f", "o")`` for TF's i, j, f, o). The axis must
    hold len(source) equal blocks. Returns a new array; never a view of the input.
    """
    if sorted(source) != sorted(target):
        raise LayoutError(f"gate orders {tuple(source)} and {tuple(target)} name different gates")
    size = array.shape[axis]
    if size % len(source):
        raise LayoutError(f"axis {axis} of size {size} does not split into {len(source)} gate blocks")
    if tuple(source) == tuple(target):
        return np.array(array, copy=True)
    blocks = np.split(array, len(source), axis=axis)
    by_name = dict(zip(source, blocks, strict=True))
    return np.concatenate([by_name[gate] for gate in target], axis=axis)


def transposed(matrix: NDArray[Any], rows_per_block: int = 16) -> NDArray[Any]:
    """A C-contiguous copy of ``matrix.T``, copied a few rows at a time.

    Converting between [4H, I] and [I, 4H] layouts is most of the work of a large conversion: NumPy's plain
    ``ascontiguousarray(matrix.T)`` walks one of the two arrays across cache lines and is about 5x slower here
    for a [4096, 1024] float32 matrix.
    """
    matrix = np.asarray(matrix)
    if matrix.ndim != 2:
        return np.ascontiguousarray(matrix.T)
    rows, columns = matrix.shape
    result = np.empty((columns, rows), dtype=matrix.dtype)
    for start in range(0, rows, rows_per_block):
        result[:, start : start + rows_per_block] = matrix[start : start + rows_per_block].T
    return result


# ----------------------------------------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------------------------------------

#: Activation names and the parameters each takes. Keras 2's hard_sigmoid (clip(0.2x + 0.5, 0, 1)) and
#: Keras 3's (clip(x/6 + 0.5, 0, 1)) share a name in their frameworks and are different functions: here they
#: have distinct names. The ONNX-parametrized ones follow the ONNX operator spec (alpha, beta as there).
ACTIVATION_PARAMETERS: dict[str, tuple[str, ...]] = {
    "sigmoid": (),
    "tanh": (),
    "relu": (),
    "hard_sigmoid_keras2": (),
    "hard_sigmoid_keras3": (),
    "hard_sigmoid": ("alpha", "beta"),  # ONNX HardSigmoid: clip(alpha*x + beta, 0, 1)
    "affine": ("alpha", "beta"),  # alpha*x + beta
    "leaky_relu": ("alpha",),  # x if x >= 0 else alpha*x
    "thresholded_relu": ("alpha",),  # x if x > alpha else 0
    "scaled_tanh": ("alpha", "beta"),  # alpha*tanh(beta*x)
    "elu": ("alpha",),  # x if x >= 0 else alpha*(exp(x) - 1)
    "softsign": (),  # x / (1 + |x|)
    "softplus": (),  # log(1 + exp(x))
}


@dataclass(frozen=True)
class Activation:
    """An activation function by name, with its ONNX-style parameters where it takes any."""

    name: str
    alpha: float | None = None
    beta: float | None = None

    def __post_init__(self) -> None:
        if self.name not in ACTIVATION_PARAMETERS:
            known = ", ".join(ACTIVATION_PARAMETERS)
            raise LayoutError(f"unknown activation {self.name!r}; known: {known}")
        wanted = ACTIVATION_PARAMETERS[self.name]
        for parameter in ("alpha", "beta"):
            given = getattr(self, parameter) is not None
            if given != (parameter in wanted):
                need = "needs" if parameter in wanted else "takes no"
                raise LayoutError(f"activation {self.name!r} {need} parameter {parameter!r}")

    def __str__(self) -> str:
        params = [repr(v) for v in (self.alpha, self.beta) if v is not None]
        return f"{self.name}({', '.join(params)})" if params else self.name

    @classmethod
    def parse(cls, text: str) -> Activation:
        """Inverse of ``str``: ``"tanh"``, ``"leaky_relu(0.01)"``, ``"scaled_tanh(1.0, 2.0)"``."""
        text = text.strip()
        if "(" not in text:
            return cls(text)
        name, _, rest = text.partition("(")
        values = [float(v) for v in rest.rstrip(")").split(",") if v.strip()]
        return cls(name.strip(), *values)


SIGMOID = Activation("sigmoid")
TANH = Activation("tanh")


# ----------------------------------------------------------------------------------------------------------
# Configuration and weights
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LSTMConfig:
    """Everything that fixes the function of an LSTM, apart from its weights.

    ``proj_size`` 0 means no projection. A clip of ``None`` means no clipping: ``cell_clip`` clips c (TF's
    cell_clip), ``gate_clip`` clips every gate pre-activation before its activation (ONNX's ``clip``),
    ``proj_clip`` clips the projected h (TF's proj_clip). ``input_forget`` couples f = 1 - i (ONNX).
    ``bias`` False means both biases are zero and a layout without biases may hold the model.
    """

    input_size: int
    hidden_size: int
    num_layers: int = 1
    bidirectional: bool = False
    proj_size: int = 0
    bias: bool = True
    peepholes: bool = False
    cell_clip: float | None = None
    gate_clip: float | None = None
    proj_clip: float | None = None
    input_forget: bool = False
    gate_activation: Activation = SIGMOID
    cell_input_activation: Activation = TANH
    cell_output_activation: Activation = TANH

    def __post_init__(self) -> None:
        for name in ("input_size", "hidden_size", "num_layers"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LayoutError(f"LSTMConfig.{name} must be a positive integer, got {value!r}")
        if not isinstance(self.proj_size, int) or self.proj_size < 0:
            raise LayoutError(f"LSTMConfig.proj_size must be an integer >= 0, got {self.proj_size!r}")
        if self.proj_size >= self.hidden_size:
            raise LayoutError(
                f"LSTMConfig.proj_size ({self.proj_size}) must be smaller than hidden_size ({self.hidden_size})"
            )
        for name in ("cell_clip", "gate_clip", "proj_clip"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value > 0):
                raise LayoutError(f"LSTMConfig.{name} must be a positive finite number or None, got {value!r}")
        if self.proj_clip is not None and not self.proj_size:
            raise LayoutError("LSTMConfig.proj_clip needs proj_size > 0")

    @property
    def num_directions(self) -> int:
        return 2 if self.bidirectional else 1

    @property
    def output_size(self) -> int:
        """Size of h (and of y per direction): proj_size when projecting, else hidden_size."""
        return self.proj_size or self.hidden_size

    def layer_input_size(self, layer: int) -> int:
        return self.input_size if layer == 0 else self.num_directions * self.output_size

    def parameter_shapes(self, layer: int) -> dict[str, tuple[int, ...]]:
        """Shapes of the parameters this config has, for one direction of ``layer`` (absent ones omitted)."""
        hidden, out = self.hidden_size, self.output_size
        shapes: dict[str, tuple[int, ...]] = {
            "W": (4 * hidden, self.layer_input_size(layer)),
            "R": (4 * hidden, out),
            "Wb": (4 * hidden,),
            "Rb": (4 * hidden,),
        }
        if self.peepholes:
            shapes["P"] = (len(PEEPHOLES), hidden)
        if self.proj_size:
            shapes["proj"] = (out, hidden)
        return shapes

    def features(self) -> list[str]:
        """The non-default features this config uses, by the names adapters refuse them with."""
        found = []
        if self.num_layers > 1:
            found.append("num_layers")
        if self.bidirectional:
            found.append("bidirectional")
        if self.proj_size:
            found.append("proj_size")
        if not self.bias:
            found.append("no_bias")
        for name in ("peepholes", "input_forget"):
            if getattr(self, name):
                found.append(name)
        for name in ("cell_clip", "gate_clip", "proj_clip"):
            if getattr(self, name) is not None:
                found.append(name)
        for role in ("gate_activation", "cell_input_activation", "cell_output_activation"):
            act = getattr(self, role)
            if act != {"gate_activation": SIGMOID}.get(role, TANH):
                found.append(f"{role}={act}")
        return found

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for role in ("gate_activation", "cell_input_activation", "cell_output_activation"):
            data[role] = str(getattr(self, role))
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LSTMConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise LayoutError(f"LSTM config is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise LayoutError("LSTM config must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise LayoutError(f"LSTM config has unknown keys {unknown}; known: {sorted(known)}")
        for role in ("gate_activation", "cell_input_activation", "cell_output_activation"):
            if role in data:
                data[role] = Activation.parse(str(data[role]))
        return cls(**data)


@dataclass
class LayerWeights:
    """Parameters of one layer in one direction, canonical names and shapes (see the module docstring)."""

    W: FloatArray
    R: FloatArray
    Wb: FloatArray
    Rb: FloatArray
    P: FloatArray | None = None
    proj: FloatArray | None = None

    def items(self) -> Iterator[tuple[str, FloatArray]]:
        """(name, array) for the parameters present, in PARAMETERS order."""
        for name in PARAMETERS:
            value = getattr(self, name)
            if value is not None:
                yield name, value


@dataclass
class LSTMWeights:
    """A whole LSTM (or the gradient of a loss with respect to one): config plus ``layers[k][d]``."""

    config: LSTMConfig
    layers: list[list[LayerWeights]] = field(default_factory=list)

    def __post_init__(self) -> None:
        validate_weights(self)

    def named_arrays(self) -> dict[str, FloatArray]:
        """Flat ``{"layers.K.DIRECTION.NAME": array}``; the npz key schema without the metadata keys."""
        return {
            parameter_key(layer, direction, name): value
            for layer, per_direction in enumerate(self.layers)
            for direction, weights in enumerate(per_direction)
            for name, value in weights.items()
        }

    @classmethod
    def from_named_arrays(cls, config: LSTMConfig, arrays: Mapping[str, NDArray[Any]]) -> LSTMWeights:
        """Inverse of ``named_arrays``; every expected key must be present and no other."""
        expected = {
            parameter_key(layer, direction, name)
            for layer in range(config.num_layers)
            for direction in range(config.num_directions)
            for name in config.parameter_shapes(layer)
        }
        missing, extra = sorted(expected - set(arrays)), sorted(set(arrays) - expected)
        if missing:
            raise LayoutError(f"missing canonical arrays {missing[:4]}{' ...' if len(missing) > 4 else ''}")
        if extra:
            raise LayoutError(f"unexpected canonical arrays {extra[:4]}{' ...' if len(extra) > 4 else ''}")
        layers = [
            [
                LayerWeights(
                    **{
                        name: np.asarray(arrays[parameter_key(layer, direction, name)])
                        for name in config.parameter_shapes(layer)
                    }
                )
                for direction in range(config.num_directions)
            ]
            for layer in range(config.num_layers)
        ]
        return cls(config, layers)

    def map(self, function: Any) -> LSTMWeights:
        """A new LSTMWeights with ``function(array)`` applied to every parameter (cast, copy, zero)."""
        return LSTMWeights.from_named_arrays(
            self.config, {key: function(value) for key, value in self.named_arrays().items()}
        )

    def astype(self, dtype: Any) -> LSTMWeights:
        return self.map(lambda a: np.asarray(a, dtype=dtype))


def parameter_key(layer: int, direction: int, name: str) -> str:
    """The npz key of one parameter: ``layers.0.forward.W``."""
    return f"layers.{layer}.{DIRECTIONS[direction]}.{name}"


def validate_weights(weights: LSTMWeights) -> None:
    """Check that every array is present, float, finite-shaped and of the shape the config asks for."""
    config = weights.config
    if len(weights.layers) != config.num_layers:
        raise LayoutError(f"expected {config.num_layers} layers of weights, found {len(weights.layers)}")
    for layer, per_direction in enumerate(weights.layers):
        if len(per_direction) != config.num_directions:
            raise LayoutError(f"layer {layer}: expected {config.num_directions} directions, found {len(per_direction)}")
        shapes = config.parameter_shapes(layer)
        for direction, params in enumerate(per_direction):
            for name in PARAMETERS:
                _validate_parameter(layer, direction, name, getattr(params, name), shapes.get(name))


def _validate_parameter(
    layer: int, direction: int, name: str, value: NDArray[Any] | None, expected: tuple[int, ...] | None
) -> None:
    key = parameter_key(layer, direction, name)
    if expected is None:
        if value is not None:
            raise LayoutError(f"{key}: present, but the config has no {name!r} (peepholes/proj_size off)")
        return
    if value is None:
        raise LayoutError(f"{key}: missing; expected shape {expected}")
    if not isinstance(value, np.ndarray):
        raise LayoutError(f"{key}: expected a NumPy array, found {type(value).__name__}")
    if value.dtype.kind != "f":
        raise LayoutError(f"{key}: expected a floating-point array, found dtype {value.dtype}")
    if value.shape != expected:
        raise LayoutError(f"{key}: expected shape {expected}, found {value.shape}")


def require_zero_biases(weights: LSTMWeights) -> None:
    """A bias=False model has no bias parameters: its Wb and Rb must be zeros, never silently dropped or used."""
    if weights.config.bias:
        return
    for layer, per_direction in enumerate(weights.layers):
        for direction, params in enumerate(per_direction):
            for name in ("Wb", "Rb"):
                if np.any(getattr(params, name) != 0):
                    raise LayoutError(
                        f"{parameter_key(layer, direction, name)} is nonzero but the config has bias=False "
                        "(no bias parameters); zero the biases or set bias=True"
                    )


# ----------------------------------------------------------------------------------------------------------
# The .npz file
# ----------------------------------------------------------------------------------------------------------


def save_npz(path: str | Path, weights: LSTMWeights) -> None:
    """Write ``weights`` as a canonical ``.npz`` (schema version NPZ_FORMAT_VERSION).

    Keys: ``__lstm_conformance_format__`` (int, the version), ``__config__`` (the LSTMConfig as JSON),
    and ``layers.K.DIRECTION.NAME`` for every parameter (see ``parameter_key``).
    """
    arrays: dict[str, Any] = dict(weights.named_arrays())
    arrays[NPZ_FORMAT_KEY] = np.asarray(NPZ_FORMAT_VERSION)
    arrays[NPZ_CONFIG_KEY] = np.asarray(weights.config.to_json())
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_npz(path: str | Path) -> LSTMWeights:
    """Read a canonical ``.npz``, validating version, config, every key, shape and dtype."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, EOFError) as error:
        raise LayoutError(f"{path}: not a readable .npz file ({error})") from None
    version = arrays.pop(NPZ_FORMAT_KEY, None)
    if version is None:
        raise LayoutError(f"{path}: no {NPZ_FORMAT_KEY!r} key; not an lstm-conformance canonical .npz")
    if int(version) != NPZ_FORMAT_VERSION:
        raise LayoutError(f"{path}: canonical format version {int(version)}, this build reads {NPZ_FORMAT_VERSION}")
    config_text = arrays.pop(NPZ_CONFIG_KEY, None)
    if config_text is None:
        raise LayoutError(f"{path}: no {NPZ_CONFIG_KEY!r} key")
    config = LSTMConfig.from_json(str(config_text))
    try:
        return LSTMWeights.from_named_arrays(config, arrays)
    except LayoutError as error:
        raise LayoutError(f"{path}: {error}") from None


def random_weights(config: LSTMConfig, rng: np.random.Generator, scale: float | None = None) -> LSTMWeights:
    """Random float64 weights (uniform in +-scale, default 1/sqrt(H) as PyTorch initializes), biases included.

    Never constant: every gate block differs, so that a swapped gate or bias changes the function.
    """
    bound = scale if scale is not None else 1.0 / math.sqrt(config.hidden_size)
    layers = []
    for layer in range(config.num_layers):
        per_direction = []
        for _ in range(config.num_directions):
            shapes = config.parameter_shapes(layer)
            params = {name: rng.uniform(-bound, bound, size=shape) for name, shape in shapes.items()}
            if not config.bias:
                params["Wb"] = np.zeros(shapes["Wb"])
                params["Rb"] = np.zeros(shapes["Rb"])
            per_direction.append(LayerWeights(**params))
        layers.append(per_direction)
    return LSTMWeights(config, layers)
