"""PyTorch: ``nn.LSTM`` ("torch") and ``nn.LSTMCell`` stepped by this adapter ("torch-cell").

The layout (names, shapes, the state_dict mapping) is ``adapters.layouts.torch``. ``nn.LSTM(bias=False)`` has no
bias parameters: nothing trains them, so a run's canonical gradients of ``Wb`` and ``Rb`` are zero there (the
native gradients have no bias keys), as ``reference.lstm.LSTMGradients`` defines them for every implementation.

Gradients come from autograd as the vector-Jacobian product of (y, h_n, c_n) with (dy, dh_n, dc_n), which is
the gradient of ``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)``, with respect to x, h0, c0 (zeros passed
explicitly where none were given) and every parameter.

"torch-cell" keeps one ``nn.LSTMCell`` per layer and direction in a ``ModuleDict``; its native names are that
module's own state_dict names, ``cells.{layer}.{direction}.weight_ih``.

Torch is imported inside the functions that use it, never when this module is imported.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import (
    Capabilities,
    Gradients,
    Implementation,
    Refusal,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.adapters.frameworks import torch_unavailable_reason
from lstm_conformance.adapters.layouts.torch import (
    FRAMEWORK,
    LSTM_CELL_FEATURES,
    LSTM_FEATURES,
    from_cell_state_dict,
    from_state_dict,
    to_cell_state_dict,
    to_state_dict,
)
from lstm_conformance.names import DTYPES
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import FloatArray, LSTMConfig, LSTMWeights


def _limits(module: str) -> dict[str, str]:
    """Why ``module`` (nn.LSTM or nn.LSTMCell) lacks each feature it lacks, in the refusals' words."""
    return {
        "peepholes": f"{module} has no peepholes",
        "input_forget": f"{module} has no input_forget (coupled input-forget gate)",
        "cell_clip": f"{module} never clips the cell state (cell_clip)",
        "gate_clip": f"{module} never clips the gates (gate_clip)",
        "proj_clip": f"{module} never clips the projection (proj_clip)",
        "proj_size": f"{module} has no proj_size",
        "gate_activation": f"{module}'s gates are sigmoid only",
        "cell_input_activation": f"{module}'s cell input is tanh only",
        "cell_output_activation": f"{module}'s cell output is tanh only",
    }


_HALF_DTYPES = ("float16", "bfloat16")


# ----------------------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------------------


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


def build_nn_lstm(weights: LSTMWeights, dtype: Any, device: Any, batch_first: bool) -> Any:
    """A ``torch.nn.LSTM`` of ``weights``' config in ``dtype`` on ``device``, holding ``weights`` (through
    ``layouts.torch.to_state_dict``, the one canonical -> state_dict mapping)."""
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
    state = {key: torch.from_numpy(value) for key, value in to_state_dict(weights).items()}
    module.load_state_dict(state, strict=True)
    return module


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

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        refused = super().refusal(config, inputs, options)
        if refused is not None:
            return refused
        if options.dtype in _HALF_DTYPES and options.device != "cuda":
            limit = f"{self.name} runs float16 and bfloat16 on cuda only"
            return Refusal(f"dtype {options.dtype} on cpu", limit, "run it on cuda", f" for {options.dtype} on cpu")
        if options.device == "cuda":
            reason = cuda_unavailable_reason()
            if reason:
                return Refusal("device cuda", f"{self.name}: {reason}")
        return None

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        import torch

        config = weights.config
        dtype, device = getattr(torch, options.dtype), torch.device(options.device)
        # nn.LSTM runs batch-first input as its own batch_first: the module gets the caller's layout.
        batch_first = prepared.batch_first

        def tensor(array: NDArray[Any] | None, batch_major: bool = False, leaf: bool = True) -> Any:
            """``array`` (time-major, from ``prepared``) in the caller's layout, dtype and device."""
            assert array is not None
            array = array.swapaxes(0, 1) if batch_major and batch_first else array
            made = torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=dtype)
            return made.requires_grad_(leaf and prepared.wants_gradients)

        def time_major(found: Any) -> NDArray[np.float64]:
            array = _to_numpy64(found)
            return array.swapaxes(0, 1) if batch_first else array

        with math_mode(options) as mode:
            module = self._build(weights, dtype, device, batch_first)
            x, h0, c0 = tensor(prepared.x, batch_major=True), tensor(prepared.h0), tensor(prepared.c0)
            lengths = prepared.seq_lens if prepared.lengths_given else None
            y, h_n, c_n = self._forward(module, x, h0, c0, lengths, batch_first)
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
                    x=time_major(found[0]),
                    h0=_to_numpy64(found[1]),
                    c0=_to_numpy64(found[2]),
                    weights=self._canonical(native, config),
                    native=native,
                )
        return RunResult(time_major(y), _to_numpy64(h_n), _to_numpy64(c_n), mode, gradients)

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
    FEATURES = LSTM_FEATURES
    limits = _limits("nn.LSTM")
    alternatives = ("torch-cell",)
    _notes = ("torch.nn.LSTM; per-sample lengths through pack_padded_sequence(enforce_sorted=False)",)

    def _build(self, weights: LSTMWeights, dtype: Any, device: Any, batch_first: bool) -> Any:
        return build_nn_lstm(weights, dtype, device, batch_first)

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
    FEATURES = LSTM_CELL_FEATURES
    limits = _limits("nn.LSTMCell")
    alternatives = ("torch",)
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
