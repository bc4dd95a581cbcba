"""PyTorch: ``nn.LSTM`` ("torch") and ``nn.LSTMCell`` stepped by this adapter ("torch-cell").

The layout, checked against torch 2.13's ``torch/nn/modules/rnn.py``: ``LSTM.__init__`` names the parameters of
layer ``k`` ``weight_ih_l{k}``, ``weight_hh_l{k}``, ``bias_ih_l{k}``, ``bias_hh_l{k}`` and (with ``proj_size``)
``weight_hr_l{k}``, each with the suffix ``_reverse`` for direction 1; ``weight_ih`` is ``[4H, I_k]`` with rows
``(W_ii|W_if|W_ig|W_io)`` and ``torch/_decomp/decompositions.py:lstm_cell`` chunks the gates as in, forget,
cell, out. That is the canonical gate order (i, f, g, o) and the canonical shapes, so the mapping is a renaming
(``NATIVE_STEMS``) and an array copy, bit for bit, dtype kept:

    canonical  W          R          Wb        Rb        proj
    nn.LSTM    weight_ih  weight_hh  bias_ih   bias_hh   weight_hr    (+ _l{k}, + _reverse for direction 1)

``nn.LSTM(bias=False)`` has no bias parameters: its state_dict omits them and the canonical biases are zero.
Nothing trains them either, so a run's canonical gradients of ``Wb`` and ``Rb`` are zero there (the native
gradients have no bias keys), as ``reference.lstm.LSTMGradients`` defines them for every implementation.

Gradients come from autograd as the vector-Jacobian product of (y, h_n, c_n) with (dy, dh_n, dc_n), which is
the gradient of ``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)``, with respect to x, h0, c0 (zeros passed
explicitly where none were given) and every parameter.

``nn.LSTMCell`` has the same four parameters without the suffixes; "torch-cell" keeps one cell per layer and
direction in a ``ModuleDict({"cells": ModuleList(ModuleList(LSTMCell))})``, so its native names are that
module's own state_dict names, ``cells.{layer}.{direction}.weight_ih`` (direction 0 forward, 1 reverse).

Torch is imported inside the functions that use it, never when this module is imported.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import (
    Capabilities,
    Gradients,
    Implementation,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.names import DTYPES
from lstm_conformance.reference.errors import LayoutError, UnsupportedFeatureError
from lstm_conformance.reference.layout import FloatArray, LayerWeights, LSTMConfig, LSTMWeights, require_zero_biases

FRAMEWORK = "PyTorch"

#: canonical parameter name -> PyTorch's parameter stem (the whole mapping; the gate order is the same).
NATIVE_STEMS: dict[str, str] = {
    "W": "weight_ih",
    "R": "weight_hh",
    "Wb": "bias_ih",
    "Rb": "bias_hh",
    "proj": "weight_hr",
}
_CANONICAL_OF_STEM = {stem: name for name, stem in NATIVE_STEMS.items()}
#: The key of one nn.LSTM parameter in its own state_dict (stem, layer, reverse suffix).
LSTM_KEY_PATTERN = re.compile(r"^(weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(\d+)(_reverse)?$")

#: Why nn.LSTM cannot hold each feature it lacks (the hint of UnsupportedFeatureError).
_MISSING_FEATURE_HINTS: dict[str, str] = {
    "peepholes": "nn.LSTM and nn.LSTMCell have no peephole connections",
    "input_forget": "nn.LSTM and nn.LSTMCell have no coupled input-forget gate (f = 1 - i)",
    "cell_clip": "nn.LSTM and nn.LSTMCell never clip the cell state",
    "gate_clip": "nn.LSTM and nn.LSTMCell never clip gate pre-activations",
    "proj_clip": "nn.LSTM never clips the projected output",
    "proj_size": "nn.LSTMCell has no projection (proj_size); use the 'torch' implementation (nn.LSTM)",
}
_ACTIVATION_HINT = "PyTorch's LSTM activations are fixed to sigmoid (gates), tanh (cell input) and tanh (cell output)"

_HALF_DTYPES = ("float16", "bfloat16")


# ----------------------------------------------------------------------------------------------------------
# Layout mapping (written once)
# ----------------------------------------------------------------------------------------------------------

KeyOf = Callable[[str, int, int], str]


def state_dict_key(name: str, layer: int, direction: int) -> str:
    """nn.LSTM's state_dict key of a canonical parameter: ``("W", 0, 1)`` -> ``"weight_ih_l0_reverse"``."""
    return f"{NATIVE_STEMS[name]}_l{layer}{'_reverse' if direction else ''}"


def cell_state_key(name: str, layer: int, direction: int) -> str:
    """The "torch-cell" module's state_dict key: ``("W", 0, 1)`` -> ``"cells.0.1.weight_ih"``."""
    return f"cells.{layer}.{direction}.{NATIVE_STEMS[name]}"


def native_names(config: LSTMConfig, key_of: KeyOf = state_dict_key) -> list[tuple[int, int, str, str]]:
    """(layer, direction, canonical name, native key) for every native parameter, in nn.LSTM's order."""
    names: list[tuple[int, int, str, str]] = []
    for layer in range(config.num_layers):
        for direction in range(config.num_directions):
            names.extend((layer, direction, name, key_of(name, layer, direction)) for name in _present(config))
    return names


def refuse_unsupported(config: LSTMConfig, supported: frozenset[str]) -> None:
    """Raise UnsupportedFeatureError for the first feature of ``config`` outside ``supported``."""
    for feature in config.features():
        if "_activation=" in feature:
            raise UnsupportedFeatureError(FRAMEWORK, feature, _ACTIVATION_HINT)
        if feature not in supported:
            raise UnsupportedFeatureError(FRAMEWORK, feature, _MISSING_FEATURE_HINTS.get(feature, ""))


def _to_native(weights: LSTMWeights, key_of: KeyOf) -> dict[str, FloatArray]:
    require_zero_biases(weights)
    return {
        key: np.array(getattr(weights.layers[layer][direction], name), copy=True)
        for layer, direction, name, key in native_names(weights.config, key_of)
    }


def _from_native(arrays: Mapping[str, FloatArray], config: LSTMConfig, key_of: KeyOf) -> LSTMWeights:
    check_native_shapes(config, {key: tuple(value.shape) for key, value in arrays.items()}, key_of)
    layers = []
    for layer in range(config.num_layers):
        per_direction = []
        for direction in range(config.num_directions):
            found = {name: np.array(arrays[key_of(name, layer, direction)], copy=True) for name in _present(config)}
            if not config.bias:
                zeros = np.zeros(4 * config.hidden_size, dtype=found["W"].dtype)
                found["Wb"], found["Rb"] = zeros, zeros.copy()
            per_direction.append(LayerWeights(**found))
        layers.append(per_direction)
    return LSTMWeights(config, layers)


def _present(config: LSTMConfig) -> list[str]:
    """The canonical names nn.LSTM stores for ``config`` (no biases with bias=False, proj only with proj_size)."""
    return ["W", "R"] + (["Wb", "Rb"] if config.bias else []) + (["proj"] if config.proj_size else [])


def check_native_shapes(
    config: LSTMConfig, shapes: Mapping[str, Sequence[int]], key_of: KeyOf = state_dict_key
) -> None:
    """Every native key ``config`` implies is present with its shape, and no other: else LayoutError naming the
    key, the shape expected and the one found."""
    expected = {
        key: config.parameter_shapes(layer)[name] for layer, _direction, name, key in native_names(config, key_of)
    }
    for key, shape in expected.items():
        if key not in shapes:
            raise LayoutError(f"{key}: missing; expected shape {shape} for {describe(config)}")
        if tuple(shapes[key]) != shape:
            raise LayoutError(f"{key}: expected shape {shape} for {describe(config)}, found {tuple(shapes[key])}")
    extra = sorted(set(shapes) - set(expected))
    if extra:
        raise LayoutError(f"unexpected keys {extra[:4]}{' ...' if len(extra) > 4 else ''} for {describe(config)}")


def describe(config: LSTMConfig) -> str:
    """The nn.LSTM constructor call that holds ``config`` (for messages and notes)."""
    text = f"nn.LSTM(input_size={config.input_size}, hidden_size={config.hidden_size}"
    text += f", num_layers={config.num_layers}" if config.num_layers > 1 else ""
    text += ", bias=False" if not config.bias else ""
    text += ", bidirectional=True" if config.bidirectional else ""
    text += f", proj_size={config.proj_size}" if config.proj_size else ""
    return text + ")"


def to_state_dict(weights: LSTMWeights) -> dict[str, FloatArray]:
    """The state_dict of the ``nn.LSTM`` holding ``weights``, as NumPy copies in the weights' own dtype.

    Raises UnsupportedFeatureError for a feature nn.LSTM lacks, LayoutError for nonzero biases with bias=False.
    """
    refuse_unsupported(weights.config, TorchLSTM.FEATURES)
    return _to_native(weights, state_dict_key)


def config_from_state_dict(shapes: Mapping[str, Sequence[int]]) -> LSTMConfig:
    """The LSTMConfig of an nn.LSTM state_dict, from its keys and shapes alone (``{key: shape}``).

    Layers from the ``weight_ih_l{k}`` keys, bidirectional from ``_reverse`` keys, hidden and input sizes from
    ``weight_ih_l0`` ([4H, I]), proj_size from ``weight_hr_l0`` ([P, H]), bias from ``bias_ih_l0``. Then every
    key and shape is checked against that config (``check_native_shapes``).
    """
    parsed = {key: LSTM_KEY_PATTERN.match(key) for key in shapes}
    foreign = sorted(key for key, match in parsed.items() if match is None)
    if foreign:
        raise LayoutError(f"keys {foreign[:4]} are not nn.LSTM parameter names (weight_ih_l0, bias_hh_l1_reverse, ...)")
    if "weight_ih_l0" not in shapes:
        raise LayoutError("no weight_ih_l0: not the state_dict of an nn.LSTM")
    first = tuple(shapes["weight_ih_l0"])
    if len(first) != 2 or first[0] % 4 or first[0] == 0:
        raise LayoutError(f"weight_ih_l0: expected shape [4*hidden_size, input_size], found {first}")
    layer_indices = {int(m.group(2)) for m in parsed.values() if m is not None and m.group(1) == "weight_ih"}
    num_layers = max(layer_indices) + 1
    proj = tuple(shapes.get("weight_hr_l0", (0,)))
    config = LSTMConfig(
        input_size=first[1],
        hidden_size=first[0] // 4,
        num_layers=num_layers,
        bidirectional="weight_ih_l0_reverse" in shapes,
        proj_size=proj[0],
        bias="bias_ih_l0" in shapes,
    )
    check_native_shapes(config, shapes)
    return config


def from_state_dict(state: Mapping[str, Any], config: LSTMConfig | None = None) -> LSTMWeights:
    """Canonical weights from an nn.LSTM state_dict (NumPy arrays or CPU tensors), dtype kept, arrays copied.

    ``config`` defaults to the one the keys and shapes imply (``config_from_state_dict``); a given config is
    checked against the keys and shapes.
    """
    arrays = {key: as_numpy(key, value) for key, value in state.items()}
    shapes = {key: tuple(value.shape) for key, value in arrays.items()}
    if config is None:
        config = config_from_state_dict(shapes)
    refuse_unsupported(config, TorchLSTM.FEATURES)
    return _from_native(arrays, config, state_dict_key)


def to_cell_state_dict(weights: LSTMWeights) -> dict[str, FloatArray]:
    """The state_dict of the "torch-cell" module (``cells.{layer}.{direction}.weight_ih``, ...)."""
    refuse_unsupported(weights.config, TorchLSTMCell.FEATURES)
    return _to_native(weights, cell_state_key)


def from_cell_state_dict(state: Mapping[str, Any], config: LSTMConfig) -> LSTMWeights:
    """Inverse of ``to_cell_state_dict``."""
    refuse_unsupported(config, TorchLSTMCell.FEATURES)
    arrays = {key: as_numpy(key, value) for key, value in state.items()}
    return _from_native(arrays, config, cell_state_key)


def as_numpy(key: str, value: Any) -> FloatArray:
    """A NumPy view of an array or a CPU tensor, dtype kept (bfloat16, which NumPy lacks, is refused)."""
    if hasattr(value, "detach"):
        value = value.detach()
        if str(value.dtype) == "torch.bfloat16":
            raise LayoutError(f"{key}: bfloat16 has no NumPy dtype; convert the tensor with .float() (exact)")
        value = value.cpu().numpy()
    array: FloatArray = np.asarray(value)
    return array


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------


def torch_unavailable_reason() -> str | None:
    """Why torch cannot run here, without importing it."""
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'lstm-conformance[torch]')"
    return None


def cuda_unavailable_reason() -> str | None:
    """Why CUDA cannot run here (imports torch; call only when a CUDA run was asked for)."""
    import torch

    if not torch.cuda.is_available():
        return "torch.cuda.is_available() is False here (no CUDA GPU, or a CPU-only torch build); use device cpu"
    return None


@contextmanager
def math_mode(options: RunOptions) -> Iterator[str]:
    """Set TF32 for cuDNN and cuBLAS from ``options.allow_tf32`` for the run (restored afterwards) and yield the
    math mode to report. On the CPU there is no TF32: the run computes in its dtype whatever allow_tf32 says."""
    if options.device != "cuda":
        yield options.dtype
        return
    import torch

    saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = options.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = options.allow_tf32
    try:
        yield "tf32" if options.allow_tf32 and options.dtype == "float32" else options.dtype
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def _to_numpy64(tensor: Any) -> NDArray[np.float64]:
    import torch

    array: NDArray[np.float64] = tensor.detach().to(device="cpu", dtype=torch.float64).numpy()
    return array


class _TorchImplementation(Implementation):
    """What nn.LSTM and the stepped nn.LSTMCell share: checks, tensors, math mode, autograd, results."""

    framework = FRAMEWORK
    FEATURES: frozenset[str] = frozenset()
    _notes: tuple[str, ...] = ()

    def capabilities(self) -> Capabilities:
        return Capabilities(
            dtypes=DTYPES,
            devices=("cpu", "cuda"),
            gradients=True,
            features=self.FEATURES,
            notes=(
                *self._notes,
                "float16 and bfloat16 on cuda only; cuda only where torch.cuda.is_available()",
                "TF32 set from RunOptions.allow_tf32 on cuda (reported as math mode 'tf32')",
            ),
        )

    def unavailable_reason(self) -> str | None:
        return torch_unavailable_reason()

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        refuse_unsupported(config, self.FEATURES)
        super().check_supported(config, inputs, options)
        if options.dtype in _HALF_DTYPES and options.device != "cuda":
            raise UnsupportedFeatureError(
                FRAMEWORK, f"dtype {options.dtype} on cpu", "half-precision runs are offered on cuda only"
            )
        if options.device == "cuda":
            reason = cuda_unavailable_reason()
            if reason:
                raise UnsupportedFeatureError(FRAMEWORK, "device cuda", reason)

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        import torch

        config = weights.config
        self.check_supported(config, inputs, options)
        require_zero_biases(weights)
        prepared = inputs.prepare(config)
        dtype, device = getattr(torch, options.dtype), torch.device(options.device)

        def tensor(array: NDArray[Any] | None, batch_major: bool = False, leaf: bool = True) -> Any:
            """``array`` (time-major, from ``prepared``) in the caller's layout, dtype and device."""
            assert array is not None
            array = array.swapaxes(0, 1) if batch_major and inputs.batch_first else array
            made = torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)
            return made.requires_grad_(leaf and prepared.wants_gradients)

        with math_mode(options) as mode:
            module = self._build(weights, dtype, device, inputs.batch_first)
            x, h0, c0 = tensor(prepared.x, batch_major=True), tensor(prepared.h0), tensor(prepared.c0)
            lengths = None if inputs.seq_lens is None else prepared.seq_lens
            y, h_n, c_n = self._forward(module, x, h0, c0, lengths, inputs.batch_first)
            gradients = None
            if prepared.wants_gradients:
                cotangents = (
                    tensor(prepared.dy, batch_major=True, leaf=False),
                    tensor(prepared.dh_n, leaf=False),
                    tensor(prepared.dc_n, leaf=False),
                )
                names, parameters = zip(*module.named_parameters(), strict=True)
                found = torch.autograd.grad((y, h_n, c_n), (x, h0, c0, *parameters), grad_outputs=cotangents)
                native = {name: _to_numpy64(grad) for name, grad in zip(names, found[3:], strict=True)}
                gradients = Gradients(
                    x=_to_numpy64(found[0]),
                    h0=_to_numpy64(found[1]),
                    c0=_to_numpy64(found[2]),
                    weights=self._canonical(native, config),
                    native=native,
                )
        return RunResult(_to_numpy64(y), _to_numpy64(h_n), _to_numpy64(c_n), mode, gradients)

    def _load(self, module: Any, native: Mapping[str, FloatArray]) -> Any:
        import torch

        module.load_state_dict({key: torch.from_numpy(value) for key, value in native.items()}, strict=True)
        return module

    def _build(self, weights: LSTMWeights, dtype: Any, device: Any, batch_first: bool) -> Any:
        raise NotImplementedError

    def _forward(
        self, module: Any, x: Any, h0: Any, c0: Any, lengths: NDArray[np.int64] | None, batch_first: bool
    ) -> tuple[Any, Any, Any]:
        raise NotImplementedError

    def _canonical(self, native: Mapping[str, FloatArray], config: LSTMConfig) -> LSTMWeights:
        raise NotImplementedError


class TorchLSTM(_TorchImplementation):
    """``torch.nn.LSTM`` run natively: packed sequences for per-sample lengths, ``batch_first`` as nn.LSTM's own."""

    name = "torch"
    FEATURES = frozenset({"num_layers", "bidirectional", "proj_size", "no_bias"})
    _notes = ("torch.nn.LSTM; per-sample lengths through pack_padded_sequence(enforce_sorted=False)",)

    def _build(self, weights: LSTMWeights, dtype: Any, device: Any, batch_first: bool) -> Any:
        import torch

        config = weights.config
        module = torch.nn.LSTM(
            config.input_size,
            config.hidden_size,
            num_layers=config.num_layers,
            bias=config.bias,
            batch_first=batch_first,
            bidirectional=config.bidirectional,
            proj_size=config.proj_size,
            device=device,
            dtype=dtype,
        )
        return self._load(module, to_state_dict(weights))

    def _forward(
        self, module: Any, x: Any, h0: Any, c0: Any, lengths: NDArray[np.int64] | None, batch_first: bool
    ) -> tuple[Any, Any, Any]:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        if lengths is None:
            y, (h_n, c_n) = module(x, (h0, c0))
            return y, h_n, c_n
        steps = x.shape[1 if batch_first else 0]
        packed = pack_padded_sequence(x, lengths.tolist(), batch_first=batch_first, enforce_sorted=False)
        packed_y, (h_n, c_n) = module(packed, (h0, c0))
        y, _ = pad_packed_sequence(packed_y, batch_first=batch_first, total_length=steps)
        return y, h_n, c_n

    def _canonical(self, native: Mapping[str, FloatArray], config: LSTMConfig) -> LSTMWeights:
        return from_state_dict(native, config)


class TorchLSTMCell(_TorchImplementation):
    """``torch.nn.LSTMCell`` per layer and direction, stepped over time in Python and stacked by this adapter.

    The reverse direction runs over each sample's own valid steps reversed; past a sample's length its state is
    frozen (``torch.where`` on a mask) and its outputs are zero, as nn.LSTM's packed sequences give.
    """

    name = "torch-cell"
    FEATURES = frozenset({"num_layers", "bidirectional", "no_bias"})
    _notes = ("torch.nn.LSTMCell stepped in Python; native names cells.{layer}.{direction}.weight_ih, ...",)

    def _build(self, weights: LSTMWeights, dtype: Any, device: Any, batch_first: bool) -> Any:
        import torch

        config = weights.config
        cells = torch.nn.ModuleList(
            torch.nn.ModuleList(
                torch.nn.LSTMCell(
                    config.layer_input_size(layer), config.hidden_size, bias=config.bias, device=device, dtype=dtype
                )
                for _direction in range(config.num_directions)
            )
            for layer in range(config.num_layers)
        )
        return self._load(torch.nn.ModuleDict({"cells": cells}), to_cell_state_dict(weights))

    def _forward(
        self, module: Any, x: Any, h0: Any, c0: Any, lengths: NDArray[np.int64] | None, batch_first: bool
    ) -> tuple[Any, Any, Any]:
        import torch

        x = x.transpose(0, 1) if batch_first else x
        steps, batch = x.shape[0], x.shape[1]
        time = torch.arange(steps, device=x.device)[:, None]
        sample_lengths = torch.as_tensor(lengths if lengths is not None else [steps] * batch, device=x.device)
        valid = time < sample_lengths[None, :]
        # Within each sample's valid steps t -> length-1-t, identity past them: an involution, so the same
        # index reverses the input and restores the reverse direction's outputs.
        reverse_time = torch.where(valid, sample_lengths[None, :] - 1 - time, time)
        samples = torch.arange(batch, device=x.device)[None, :]
        layer_input, h_n, c_n = x, [], []
        for layer, per_direction in enumerate(module["cells"]):
            outputs = []
            for direction, cell in enumerate(per_direction):
                state = layer * len(per_direction) + direction
                sequence = layer_input if direction == 0 else layer_input[reverse_time, samples]
                output, h, c = _step(cell, sequence, h0[state], c0[state], valid)
                outputs.append(output if direction == 0 else output[reverse_time, samples])
                h_n.append(h)
                c_n.append(c)
            layer_input = torch.cat(outputs, dim=2)
        y = layer_input.transpose(0, 1) if batch_first else layer_input
        return y, torch.stack(h_n), torch.stack(c_n)

    def _canonical(self, native: Mapping[str, FloatArray], config: LSTMConfig) -> LSTMWeights:
        return from_cell_state_dict(native, config)


def _step(cell: Any, sequence: Any, h: Any, c: Any, valid: Any) -> tuple[Any, Any, Any]:
    """Run ``cell`` over time-major ``sequence``; a sample's state is frozen and its output zero where not valid."""
    import torch

    outputs = []
    for t in range(sequence.shape[0]):
        h_new, c_new = cell(sequence[t], (h, c))
        keep = valid[t][:, None]
        h, c = torch.where(keep, h_new, h), torch.where(keep, c_new, c)
        outputs.append(torch.where(keep, h_new, torch.zeros_like(h_new)))
    return torch.stack(outputs), h, c
