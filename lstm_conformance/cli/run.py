"""``lstm-conformance run MODEL --implementation IMPL --input X.npy ... --output OUT.npz``.

OUT.npz keys: ``y``, ``h_n``, ``c_n`` (PyTorch's shapes); with ``--grad-output``: ``grad_x``, ``grad_h0``,
``grad_c0`` and ``grad/<name>`` per parameter, named and shaped as in MODEL itself whatever IMPL ran (the
contract of ../shared/DESIGN.md): the canonical gradients are mapped to MODEL's names by the mapping of MODEL's
own layout (``file_gradients``), the one that maps its weights, since gradients have the weights' layout.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance import api
from lstm_conformance.adapters.base import Gradients, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.registry import get_implementation
from lstm_conformance.cli.common import warn
from lstm_conformance.reference.errors import FrameworkMissingError, InputFileError, LayoutError
from lstm_conformance.reference.layout import LSTMWeights

NATIVE = "native"
#: Formats holding a state_dict, where an LSTM's name is the prefix of its keys.
STATE_DICT_FORMATS = ("torch", "safetensors")


def run_command(args: argparse.Namespace) -> int:
    model = api.read(args.model, format=args.from_format, select=args.select, forget_bias=args.forget_bias)
    for message in model.warnings:
        warn(message)
    implementation, own = _implementation(model, args.implementation)
    inputs = _inputs(args)
    config = model.config
    try:
        inputs.prepare(config)
    except LayoutError as error:
        raise LayoutError(f"{error} (for {model.path}: {_shapes_wanted(config, inputs)})") from None
    dtype = args.dtype or ("float64" if "float64" in implementation.capabilities().dtypes else "float32")
    options = RunOptions(dtype=dtype, device=args.device)
    implementation.check_supported(config, inputs, options)
    result = implementation.run(model.weights, inputs, options)
    arrays, naming = _output_arrays(result, model, own)
    output = Path(args.output)
    with api.StagedOutput(output) as staged:
        with open(staged.path, "wb") as handle:
            save: Any = np.savez  # numpy's stubs take **arrays for its allow_pickle keyword
            save(handle, **arrays)
        staged.commit()
    shapes = ", ".join(f"{key} {list(value.shape)}" for key, value in arrays.items() if "/" not in key)
    parameters = sum("/" in key for key in arrays)
    named = "" if not parameters else f" and {parameters} grad/ arrays ({naming})"
    print(f"wrote {output}: {shapes}{named}; {implementation.name}, {result.math_mode} on {args.device}")
    return 0


def _implementation(model: api.Model, name: str) -> tuple[Implementation, bool]:
    """The implementation to run, and whether it is the model's own (its options and native names apply)."""
    own = name in (NATIVE, model.implementation)
    if own:
        implementation = get_implementation(model.implementation, **model.implementation_options)
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


def file_gradients(model: api.Model, canonical: LSTMWeights) -> dict[str, NDArray[Any]] | None:
    """The parameter gradients under MODEL's own names and shapes, through the mapping of MODEL's layout (the
    one that writes its weights), or None where this layout has no such mapping here.

    A gradient is the weights' layout, but not their constants: TF's forget_bias is a shift, which changes no
    gradient, so it is mapped with forget_bias 0; and the canonical ``Wb`` and ``Rb`` gradients are equal
    (only their sum enters the LSTM), so a layout with two biases (torch) gives each that gradient, and a layout
    with one (TF) gives it once: mapped with ``Rb`` zero, since the mapping would sum them."""
    implementation, config = model.implementation, model.config
    if implementation in ("torch", "torch-cell"):
        from lstm_conformance.adapters import pytorch

        mapping = pytorch.to_state_dict if implementation == "torch" else pytorch.to_cell_state_dict
        prefix = f"{model.name}." if model.format in STATE_DICT_FORMATS and model.name else ""
        return {f"{prefix}{key}": value for key, value in mapping(canonical).items()}
    if implementation == "tf-cell":
        from lstm_conformance.adapters.layouts.tf import choose_cell, to_tf_variables

        cell = choose_cell(config, str(model.implementation_options.get("cell", "auto")))
        variables = to_tf_variables(_one_bias(canonical), 0.0, cell, scope=model.name)
        names = model.found.parameter_names  # the checkpoint's own keys, in to_tf_variables' order
        return dict(zip(names, variables.values(), strict=True)) if len(names) == len(variables) else variables
    if implementation in ("keras", "tf-keras"):
        from lstm_conformance.adapters.layouts.keras import keras_layer_weights

        arrays = [array for layer in keras_layer_weights(_one_bias(canonical)) for array in layer]
        names = model.found.parameter_names
        return dict(zip(names, arrays, strict=True)) if len(names) == len(arrays) else None
    if implementation in ("onnxruntime", "onnx-reference"):
        from lstm_conformance.adapters.layouts.onnx import layer_to_onnx

        per_node = [layer_to_onnx(layer, config.bias) for layer in canonical.layers]
        arrays = [a for node in per_node for a in (node.W, node.R, node.B, node.P) if a is not None]
        names = model.found.parameter_names
        return dict(zip(names, arrays, strict=True)) if len(names) == len(arrays) else None
    if implementation == "reference":
        return canonical.named_arrays()  # an npz file: the canonical layout is its own
    return None


def _one_bias(canonical: LSTMWeights) -> LSTMWeights:
    """The gradients for a layout with one bias: ``Rb``'s (equal to ``Wb``'s) zeroed, since the layout's
    mapping sums the two."""
    one_bias = canonical.map(np.array)
    for per_direction in one_bias.layers:
        for layer in per_direction:
            layer.Rb = np.zeros_like(layer.Rb)
    return one_bias


def _output_arrays(result: RunResult, model: api.Model, own: bool) -> tuple[dict[str, NDArray[Any]], str]:
    """The arrays of OUT.npz, and how the grad/ arrays are named."""
    arrays: dict[str, NDArray[Any]] = {"y": result.y, "h_n": result.h_n, "c_n": result.c_n}
    gradients = result.gradients
    if gradients is None:
        return arrays, ""
    arrays.update(grad_x=gradients.x, grad_h0=gradients.h0, grad_c0=gradients.c0)
    named, naming = _named_gradients(gradients, model, own)
    for name, value in named.items():
        arrays[f"grad/{name}"] = np.asarray(value)
    return arrays, naming


def _named_gradients(gradients: Gradients, model: api.Model, own: bool) -> tuple[dict[str, Any], str]:
    mapped = file_gradients(model, gradients.weights)
    if mapped is not None:
        return mapped, f"{model.format} names, as in {model.path.name}"
    if own and gradients.native:
        return gradients.native, f"{model.implementation}'s native names"
    warn(
        f"no mapping of {model.implementation}'s layout to name gradients as in {model.path.name}; grad/ arrays "
        "use the canonical names"
    )
    return gradients.weights.named_arrays(), "canonical names"
