"""ONNX's ``LSTM`` operator, run by ONNX Runtime's C++ kernel (``onnxruntime``) and by onnx's own NumPy
evaluator (``onnx-reference``).

The layout (W, R, B, P, activations) is ``adapters.layouts.onnx``. What the kernels do with it (checked
against ONNX Runtime's ``uni_directional_lstm.cc`` and ``rnn_helpers.cc`` and onnx's ``op_lstm.py``):

- ``clip`` is the canonical ``gate_clip``: ONNX Runtime clips i, f, c and o after adding bias and peepholes,
  and not the cell state that h() reads (the clip-with-bias calls in ``GateComputations``).
- ``input_forget``: f = 1 - i (i after its peephole, clip and activation).
- ``sequence_lens``: past a sample's length Y is zero and Y_h, Y_c hold the state at its last step; the
  reverse direction runs over each sample's own valid steps (``ReverseSequence``).

Stacked layers are a chain of LSTM nodes: ``Y`` ``[T, D, B, H]`` -> Transpose(0, 2, 1, 3) -> Reshape(0, 0, -1)
-> the next layer's ``X`` ``[T, B, D*H]``, the chain PyTorch's exporter writes.

ONNX Runtime 1.32's CPU kernel refuses ``layout=1`` ("Batchwise recurrent operations (layout == 1) are not
supported"), so ``onnxruntime`` runs batch-first input through Transpose nodes around layout-0 LSTM nodes;
``onnx-reference`` runs ``layout=1`` nodes.

onnx's reference evaluator runs the LSTM node but ignores several of its attributes and inputs; they are
listed in ``ONNX_REFERENCE_IGNORES`` (found by experiment against ONNX Runtime and the reference, and in
op_lstm.py's ``_run``, whose parameters are marked ``noqa: ARG002``). ``OnnxReferenceLSTM`` accepts them (so
that the conformance suite sees the wrong result and records it as a known limitation) and never refuses them.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import (
    Capabilities,
    Implementation,
    ImplementationLimitError,
    Refusal,
    RunInputs,
    RunOptions,
    RunResult,
)
from lstm_conformance.adapters.layouts.onnx import (
    ONNX_ACTIVATIONS,
    ONNX_FEATURES,
    activation_attributes,
    check_onnx_config,
    config_activations,
    layer_to_onnx,
)
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import Activation, LSTMConfig, LSTMWeights

if TYPE_CHECKING:
    import onnx

#: Opset of the models built here: 14 is the first with the LSTM ``layout`` attribute.
OPSET = 14
#: IR version 8 (ONNX 1.10) holds opset 14 and loads in ONNX Runtime releases from 1.10 on.
IR_VERSION = 8

#: What onnx's reference evaluator (onnx 1.23.2, ``onnx/reference/ops/op_lstm.py``) accepts and ignores,
#: feature -> what it does instead. Keys are ``LSTMConfig.features()`` names, activation roles, and
#: "seq_lens" for per-sample lengths. ``onnx_reference_ignored`` says which apply to a run. Each is shown by
#: a test in tests/test_adapter_onnx.py that fails once onnx implements it.
ONNX_REFERENCE_IGNORES: dict[str, str] = {
    "gate_clip": "onnx 1.23.2's reference LSTM ignores the clip attribute (gate pre-activations are not clipped)",
    "input_forget": "onnx 1.23.2's reference LSTM ignores input_forget (f is computed from its own weights)",
    "gate_activation": "onnx 1.23.2's reference LSTM ignores activations and always uses Sigmoid for f",
    "cell_input_activation": "onnx 1.23.2's reference LSTM ignores activations and always uses Tanh for g",
    "cell_output_activation": "onnx 1.23.2's reference LSTM ignores activations and always uses Tanh for h",
    "seq_lens": (
        "onnx 1.23.2's reference LSTM ignores sequence_lens: every sample runs all T steps, outputs past a "
        "sample's length are not zero, Y_h/Y_c are the states after step T, and the reverse direction starts "
        "at step T rather than at each sample's last step"
    ),
}


def onnx_reference_ignored(config: LSTMConfig, ragged: bool) -> dict[str, str]:
    """The entries of ``ONNX_REFERENCE_IGNORES`` that change the result of running ``config`` (with
    per-sample lengths shorter than T when ``ragged``) under onnx's reference evaluator."""
    found: dict[str, str] = {}
    if config.gate_clip is not None:
        found["gate_clip"] = ONNX_REFERENCE_IGNORES["gate_clip"]
    if config.input_forget:
        found["input_forget"] = ONNX_REFERENCE_IGNORES["input_forget"]
    defaults = {"gate_activation": "sigmoid", "cell_input_activation": "tanh", "cell_output_activation": "tanh"}
    for role, default in defaults.items():
        if getattr(config, role) != Activation(default):
            found[role] = ONNX_REFERENCE_IGNORES[role]
    if ragged:
        found["seq_lens"] = ONNX_REFERENCE_IGNORES["seq_lens"]
    return found


# ----------------------------------------------------------------------------------------------------------
# Building the model
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GraphSignature:
    """Which inputs the built graph takes, and how.

    ``batch_first``: X and Y are [B, T, ...] instead of [T, B, ...]. ``node_layout``: the LSTM nodes'
    ``layout`` attribute (1 puts batch first inside the node; Transposes fill any gap). States are always
    PyTorch's [layers*dirs, B, *]; ``sequence_lens`` is int32 [B].
    """

    batch_first: bool = False
    node_layout: int = 0
    sequence_lens: bool = False
    initial_states: bool = False


#: Graph input and output names.
INPUT_X, INPUT_SEQ_LENS, INPUT_H0, INPUT_C0 = "X", "sequence_lens", "initial_h", "initial_c"
OUTPUT_Y, OUTPUT_H, OUTPUT_C = "Y", "Y_h", "Y_c"


def build_model(weights: LSTMWeights, signature: GraphSignature, dtype: str = "float32") -> onnx.ModelProto:
    """An ONNX model computing ``weights``' LSTM: one LSTM node per layer, chained as PyTorch exports them.

    Graph inputs: X (and sequence_lens, initial_h, initial_c as ``signature`` says); outputs Y [T, B, D*H]
    ([B, T, D*H] batch-first), Y_h and Y_c [layers*dirs, B, H]. Weights are initializers of ``dtype``.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    config = weights.config
    check_onnx_config(config)
    builder = _GraphBuilder(np.dtype(dtype))
    elem_type = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    hidden, dirs, states = config.hidden_size, config.num_directions, config.num_layers * config.num_directions
    x_dims: list[str | int] = (
        ["batch", "steps", config.input_size] if signature.batch_first else ["steps", "batch", config.input_size]
    )
    inputs = [helper.make_tensor_value_info(INPUT_X, elem_type, x_dims)]
    if signature.sequence_lens:
        inputs.append(helper.make_tensor_value_info(INPUT_SEQ_LENS, TensorProto.INT32, ["batch"]))
    if signature.initial_states:
        inputs.append(helper.make_tensor_value_info(INPUT_H0, elem_type, [states, "batch", hidden]))
        inputs.append(helper.make_tensor_value_info(INPUT_C0, elem_type, [states, "batch", hidden]))

    node_batch_first = signature.node_layout == 1
    layer_input = INPUT_X if signature.batch_first == node_batch_first else builder.transpose(INPUT_X, [1, 0, 2])
    final_h, final_c = [], []
    for layer in range(config.num_layers):
        y, y_h, y_c = _add_layer(builder, weights, layer, layer_input, signature)
        layer_input = builder.reshape(y if node_batch_first else builder.transpose(y, [0, 2, 1, 3]), [0, 0, -1])
        final_h.append(builder.transpose(y_h, [1, 0, 2]) if node_batch_first else y_h)
        final_c.append(builder.transpose(y_c, [1, 0, 2]) if node_batch_first else y_c)
    y_out = layer_input if signature.batch_first == node_batch_first else builder.transpose(layer_input, [1, 0, 2])
    builder.add("Identity", [y_out], [OUTPUT_Y])
    builder.add("Concat", final_h, [OUTPUT_H], axis=0)
    builder.add("Concat", final_c, [OUTPUT_C], axis=0)

    y_dims: list[str | int] = (
        ["batch", "steps", dirs * hidden] if signature.batch_first else ["steps", "batch", dirs * hidden]
    )
    outputs = [
        helper.make_tensor_value_info(OUTPUT_Y, elem_type, y_dims),
        helper.make_tensor_value_info(OUTPUT_H, elem_type, [states, "batch", hidden]),
        helper.make_tensor_value_info(OUTPUT_C, elem_type, [states, "batch", hidden]),
    ]
    initializers = [numpy_helper.from_array(array, name) for name, array in builder.initializers.items()]
    graph = helper.make_graph(builder.nodes, "lstm", inputs, outputs, initializers)
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="lstm-conformance", ir_version=IR_VERSION
    )
    onnx.checker.check_model(model, full_check=True)
    return model


def _add_layer(
    builder: _GraphBuilder, weights: LSTMWeights, layer: int, layer_input: str, signature: GraphSignature
) -> tuple[str, str, str]:
    """Add one layer's LSTM node (with its weights and state slices); return its Y, Y_h, Y_c names."""
    config = weights.config
    arrays = layer_to_onnx(weights.layers[layer], config.bias)
    prefix = f"layer{layer}"
    node_inputs = [
        layer_input,
        builder.constant(f"{prefix}_W", arrays.W),
        builder.constant(f"{prefix}_R", arrays.R),
        "" if arrays.B is None else builder.constant(f"{prefix}_B", arrays.B),
        INPUT_SEQ_LENS if signature.sequence_lens else "",
    ]
    if signature.initial_states:
        dirs = config.num_directions
        for name in (INPUT_H0, INPUT_C0):
            state = builder.slice_rows(name, layer * dirs, (layer + 1) * dirs)
            node_inputs.append(builder.transpose(state, [1, 0, 2]) if signature.node_layout == 1 else state)
    else:
        node_inputs += ["", ""]
    node_inputs.append("" if arrays.P is None else builder.constant(f"{prefix}_P", arrays.P))
    while node_inputs[-1] == "":
        node_inputs.pop()

    names, alphas, betas = activation_attributes(config_activations(config))
    attributes: dict[str, Any] = {
        "hidden_size": config.hidden_size,
        "direction": "bidirectional" if config.bidirectional else "forward",
        "activations": names,
        "input_forget": int(config.input_forget),
        "layout": signature.node_layout,
    }
    if alphas:
        attributes["activation_alpha"] = alphas
    if betas:
        attributes["activation_beta"] = betas
    if config.gate_clip is not None:
        attributes["clip"] = float(config.gate_clip)
    outputs = [f"{prefix}_Y", f"{prefix}_Y_h", f"{prefix}_Y_c"]
    builder.add("LSTM", node_inputs, outputs, name=f"lstm_{layer}", **attributes)
    return outputs[0], outputs[1], outputs[2]


class _GraphBuilder:
    """Collects nodes and initializers with unique names."""

    def __init__(self, dtype: np.dtype[Any]) -> None:
        self.dtype = dtype
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: dict[str, NDArray[Any]] = {}
        self._count = 0

    def fresh(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def add(
        self, op_type: str, inputs: Sequence[str], outputs: Sequence[str], name: str = "", **attributes: Any
    ) -> None:
        from onnx import helper

        self.nodes.append(
            helper.make_node(op_type, list(inputs), list(outputs), name=name or self.fresh(op_type), **attributes)
        )

    def constant(self, name: str, array: NDArray[Any]) -> str:
        self.initializers[name] = np.ascontiguousarray(array, dtype=self.dtype)
        return name

    def int_constant(self, values: Sequence[int]) -> str:
        name = self.fresh("const")
        self.initializers[name] = np.asarray(values, dtype=np.int64)
        return name

    def transpose(self, source: str, perm: Sequence[int]) -> str:
        out = self.fresh("transposed")
        self.add("Transpose", [source], [out], perm=list(perm))
        return out

    def reshape(self, source: str, shape: Sequence[int]) -> str:
        out = self.fresh("reshaped")
        self.add("Reshape", [source, self.int_constant(shape)], [out])
        return out

    def slice_rows(self, source: str, start: int, stop: int) -> str:
        out = self.fresh(f"{source}_rows")
        self.add(
            "Slice", [source, self.int_constant([start]), self.int_constant([stop]), self.int_constant([0])], [out]
        )
        return out


# ----------------------------------------------------------------------------------------------------------
# The implementations
# ----------------------------------------------------------------------------------------------------------


def _signature(prepared: PreparedInputs, node_layout: int) -> GraphSignature:
    """The graph for the inputs as the caller gave them (batch-first X, lengths and states only when given)."""
    return GraphSignature(
        batch_first=prepared.batch_first,
        node_layout=node_layout,
        sequence_lens=prepared.lengths_given,
        initial_states=prepared.states_given,
    )


def _feeds(prepared: PreparedInputs, signature: GraphSignature, dtype: str) -> dict[str, NDArray[Any]]:
    """The graph's input arrays, cast to ``dtype``."""
    x = prepared.x.swapaxes(0, 1) if signature.batch_first else prepared.x
    feeds: dict[str, NDArray[Any]] = {INPUT_X: np.ascontiguousarray(x, dtype=dtype)}
    if signature.sequence_lens:
        feeds[INPUT_SEQ_LENS] = prepared.seq_lens.astype(np.int32)
    if signature.initial_states:
        feeds[INPUT_H0] = prepared.h0.astype(dtype)
        feeds[INPUT_C0] = prepared.c0.astype(dtype)
    return feeds


def _result(outputs: Sequence[Any], signature: GraphSignature, math_mode: str) -> RunResult:
    """The graph's outputs, float64, y time-major."""
    y, h_n, c_n = (np.asarray(array, dtype=np.float64) for array in outputs)
    return RunResult(y=y.swapaxes(0, 1) if signature.batch_first else y, h_n=h_n, c_n=c_n, math_mode=math_mode)


#: Why the ONNX LSTM operator lacks what it lacks, in the refusals' words.
LIMITS: dict[str, str] = {
    "proj_size": "the ONNX LSTM operator has no proj_size",
    "cell_clip": "ONNX's clip bounds the gates (gate_clip), not the cell state (cell_clip)",
    "proj_clip": "the ONNX LSTM operator has no proj_clip",
}
ONNX_RUNTIME_LIMITS: dict[str, str] = {
    **LIMITS,
    "dtype": "ONNX Runtime's LSTM kernel",
    "gradients": "ONNX Runtime has no LSTM gradient",
    "device": "cuda needs the CUDA provider of onnxruntime-gpu",
}
ONNX_REFERENCE_LIMITS: dict[str, str] = {**LIMITS, "gradients": "onnx's evaluator has no gradients"}


class OnnxRuntimeLSTM(Implementation):
    """ONNX's LSTM node run by ONNX Runtime (CPU; CUDA where onnxruntime-gpu provides it), float32 only."""

    name = "onnxruntime"
    framework = "ONNX Runtime"
    limits = ONNX_RUNTIME_LIMITS
    alternatives = ("onnx-reference",)

    def capabilities(self) -> Capabilities:
        devices: tuple[str, ...] = ("cpu", "cuda") if self._cuda_available() else ("cpu",)
        every_activation = {role: ONNX_ACTIVATIONS for role in ("gate", "cell_input", "cell_output")}
        return Capabilities(
            dtypes=("float32",),
            devices=devices,
            gradients=False,
            features=ONNX_FEATURES,
            activations=every_activation,
            notes=(
                "float32 only: ONNX Runtime's LSTM kernel has no float64",
                "no gradients: ONNX Runtime has no LSTM gradient for inference sessions",
                "batch-first input runs through Transpose nodes: ONNX Runtime's CPU LSTM refuses layout=1",
            ),
        )

    def unavailable_reason(self) -> str | None:
        for module in ("onnx", "onnxruntime"):
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed (pip install 'lstm-conformance[onnx]')"
        return None

    def _cuda_available(self) -> bool:
        """Whether this onnxruntime build ships the CUDA provider (onnxruntime-gpu), seen without importing it."""
        spec = importlib.util.find_spec("onnxruntime")
        if spec is None or not spec.submodule_search_locations or self.unavailable_reason() is not None:
            return False
        libraries = ("libonnxruntime_providers_cuda.so", "onnxruntime_providers_cuda.dll")
        return any(
            (Path(location) / "capi" / library).exists()
            for location in spec.submodule_search_locations
            for library in libraries
        )

    def refusal(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> Refusal | None:
        refused = super().refusal(config, inputs, options)
        if refused is None and options.device == "cuda" and config.features():
            # ONNX Runtime's CUDA LSTM (cuDNN) has not been checked against the reference for these here.
            feature = config.features()[0]
            limit = f"{self.name} runs plain LSTMs only on cuda (no {feature}: not checked there)"
            return Refusal(f"{feature} on CUDA", limit, "run it on the cpu")
        return refused

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        import onnxruntime

        signature = _signature(prepared, node_layout=0)
        model = build_model(weights, signature, dtype="float32")
        session_options = onnxruntime.SessionOptions()
        session_options.intra_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        math_mode = "float32"
        if options.device == "cuda":
            # ONNX Runtime's CUDA provider may use TF32 matmuls; set it from the option, never inherit it.
            providers = [("CUDAExecutionProvider", {"use_tf32": int(options.allow_tf32)})]
            math_mode = "tf32" if options.allow_tf32 else "float32"
        session = onnxruntime.InferenceSession(model.SerializeToString(), session_options, providers=providers)
        if options.device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            # ONNX Runtime falls back to the CPU, with a logged warning, when the CUDA provider cannot start
            # (no GPU, no CUDA or cuDNN libraries): a cuda run must not be reported from the CPU.
            raise ImplementationLimitError(
                self.name,
                Refusal(
                    "device cuda",
                    f"{self.name}: the CUDA execution provider did not start here (session providers "
                    f"{session.get_providers()})",
                ),
                "check the CUDA and cuDNN libraries onnxruntime-gpu needs, or run it on the cpu",
            )
        outputs = session.run([OUTPUT_Y, OUTPUT_H, OUTPUT_C], _feeds(prepared, signature, "float32"))
        return _result(outputs, signature, math_mode)


class OnnxReferenceLSTM(Implementation):
    """The same ONNX model run by ``onnx.reference.ReferenceEvaluator`` (NumPy), float64 and float32.

    It accepts every feature ONNX Runtime runs and ignores those in ``ONNX_REFERENCE_IGNORES``: they are not
    refused, so that the conformance suite sees the wrong result and records it as a known limitation.
    """

    name = "onnx-reference"
    framework = "onnx.reference"
    limits = ONNX_REFERENCE_LIMITS
    alternatives = ("onnxruntime",)

    def capabilities(self) -> Capabilities:
        every_activation = {role: ONNX_ACTIVATIONS for role in ("gate", "cell_input", "cell_output")}
        ignored = "; ".join(f"{feature}: {reason}" for feature, reason in ONNX_REFERENCE_IGNORES.items())
        return Capabilities(
            dtypes=("float64", "float32"),
            devices=("cpu",),
            gradients=False,
            features=ONNX_FEATURES,
            activations=every_activation,
            notes=(f"known wrong (ONNX_REFERENCE_IGNORES): {ignored}",),
        )

    def unavailable_reason(self) -> str | None:
        if importlib.util.find_spec("onnx") is None:
            return "onnx is not installed (pip install 'lstm-conformance[onnx]')"
        return None

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        from onnx.reference import ReferenceEvaluator

        # The evaluator runs layout=1 nodes: batch-first input goes in batch-first.
        signature = _signature(prepared, node_layout=1 if prepared.batch_first else 0)
        model = build_model(weights, signature, dtype=options.dtype)
        outputs = ReferenceEvaluator(model).run(
            [OUTPUT_Y, OUTPUT_H, OUTPUT_C], _feeds(prepared, signature, options.dtype)
        )
        return _result(outputs, signature, options.dtype)
