"""``lstm-conformance run MODEL --implementation IMPL --input X.npy ... --output OUT.npz``.

OUT.npz keys: ``y``, ``h_n``, ``c_n`` (PyTorch's shapes); with ``--grad-output``: ``grad_x``, ``grad_h0``,
``grad_c0`` and ``grad/<name>`` per parameter. Parameter names are the framework's own (the implementation's
``Gradients.native``, under the LSTM's state_dict prefix for torch files) when IMPL is MODEL's own
implementation, and the canonical ``layers.K.DIRECTION.NAME`` otherwise: another implementation's names are
not the file's.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.cli.common import (
    LoadedModel,
    StagedOutput,
    check_forget_bias_applies,
    format_of,
    load_model,
    warn,
)
from lstm_conformance.reference.errors import FrameworkMissingError, InputFileError, LayoutError

NATIVE = "native"
#: Formats holding a state_dict, where an LSTM's name is the prefix of its keys.
STATE_DICT_FORMATS = ("torch", "safetensors")


def run_command(args: argparse.Namespace) -> int:
    model_format = format_of(Path(args.model), args.from_format)
    check_forget_bias_applies(args.forget_bias, [model_format])
    model = load_model(args.model, model_format, args.select, args.forget_bias)
    implementation, own = _implementation(model, args.implementation)
    inputs = _inputs(args)
    config = model.found.weights.config
    try:
        inputs.prepare(config)
    except LayoutError as error:
        raise LayoutError(f"{error} (for {model.path}: {_shapes_wanted(config, inputs)})") from None
    dtype = args.dtype or ("float64" if "float64" in implementation.capabilities().dtypes else "float32")
    options = RunOptions(dtype=dtype, device=args.device)
    implementation.check_supported(config, inputs, options)
    result = implementation.run(model.found.weights, inputs, options)
    arrays = _output_arrays(result, own, _state_dict_prefix(model) if own else "")
    output = Path(args.output)
    with StagedOutput(output) as staged:
        with open(staged.path, "wb") as handle:
            save: Any = np.savez  # numpy's stubs take **arrays for its allow_pickle keyword
            save(handle, **arrays)
        staged.commit()
    shapes = ", ".join(f"{key} {list(value.shape)}" for key, value in arrays.items() if "/" not in key)
    parameters = sum("/" in key for key in arrays)
    naming = "" if not parameters else f" and {parameters} grad/ arrays ({'native' if own else 'canonical'} names)"
    print(f"wrote {output}: {shapes}{naming}; {implementation.name}, {result.math_mode} on {args.device}")
    return 0


def _implementation(model: LoadedModel, name: str) -> tuple[Implementation, bool]:
    """The implementation to run, and whether it is the model's own (its options and native names apply)."""
    own = name in (NATIVE, model.found.implementation)
    if own:
        implementation = get_implementation(model.found.implementation, **model.found.implementation_options)
    else:
        implementation = get_implementation(name)
    reason = implementation.unavailable_reason()
    if reason:
        raise FrameworkMissingError(f"implementation {implementation.name or name!r} cannot run here: {reason}")
    return implementation, own


def _load_array(path_text: str | None, what: str, integer: bool = False) -> NDArray[Any] | None:
    if path_text is None:
        return None
    path = Path(path_text)
    if not path.is_file():
        raise InputFileError(f"{path}: no such file ({what}); check the path")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, EOFError, OSError) as error:
        raise InputFileError(f"{path}: not a readable .npy array ({error}); save {what} with numpy.save") from None
    if not isinstance(array, np.ndarray):
        raise InputFileError(f"{path}: holds several arrays (.npz); give {what} as one .npy array")
    kinds = "iu" if integer else "fiu"
    if array.dtype.kind not in kinds:
        wanted = "integers" if integer else "numbers"
        raise InputFileError(f"{path}: {what} must hold {wanted}, found dtype {array.dtype}")
    if integer:
        return array.astype(np.int64)
    return np.asarray(array, dtype=np.float64)


def _inputs(args: argparse.Namespace) -> RunInputs:
    x = _load_array(args.input, "the input X [T, B, I]")
    assert x is not None  # --input is required
    return RunInputs(
        x=x,
        h0=_load_array(args.h0, "h0 [layers*dirs, B, Hout]"),
        c0=_load_array(args.c0, "c0 [layers*dirs, B, H]"),
        seq_lens=_load_array(args.seq_lens, "sequence lengths [B]", integer=True),
        dy=_load_array(args.grad_output, "the output gradient DY [T, B, dirs*Hout]"),
    )


def _shapes_wanted(config: Any, inputs: RunInputs) -> str:
    steps, batch = (inputs.x.shape[:2]) if inputs.x.ndim == 3 else ("T", "B")
    states = config.num_layers * config.num_directions
    return (
        f"X [T, B, {config.input_size}], h0 [{states}, {batch}, {config.output_size}], "
        f"c0 [{states}, {batch}, {config.hidden_size}], DY [{steps}, {batch}, "
        f"{config.num_directions * config.output_size}]"
    )


def _state_dict_prefix(model: LoadedModel) -> str:
    """A torch file's LSTM sits under its name in the state_dict (``encoder.weight_ih_l0``): its gradients
    are named so too, as in MODEL itself."""
    return f"{model.found.name}." if model.format_name in STATE_DICT_FORMATS and model.found.name else ""


def _output_arrays(result: RunResult, own: bool, prefix: str) -> dict[str, NDArray[Any]]:
    arrays: dict[str, NDArray[Any]] = {"y": result.y, "h_n": result.h_n, "c_n": result.c_n}
    gradients = result.gradients
    if gradients is None:
        return arrays
    arrays.update(grad_x=gradients.x, grad_h0=gradients.h0, grad_c0=gradients.c0)
    named = gradients.native if own and gradients.native else gradients.weights.named_arrays()
    if own and not gradients.native:
        warn("the implementation gave no native gradient names; grad/ arrays use the canonical names")
    for name, value in named.items():
        arrays[f"grad/{prefix}{name}"] = np.asarray(value)
    return arrays
