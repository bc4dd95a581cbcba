"""The float64 NumPy reference (``reference.lstm``) as an ``Implementation``, so the suite and the command line
can run it by name ("reference") like any framework. Its native layout is the canonical one."""

from __future__ import annotations

import numpy as np

from lstm_conformance.adapters.base import Capabilities, Gradients, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.reference.layout import ACTIVATION_PARAMETERS, LSTMWeights
from lstm_conformance.reference.lstm import LSTMGradients, LSTMOutputs, lstm_forward, lstm_forward_backward

#: Every feature ``LSTMConfig.features()`` can name, apart from activations (checked per role below).
REFERENCE_FEATURES = frozenset(
    {
        "num_layers",
        "bidirectional",
        "proj_size",
        "no_bias",
        "peepholes",
        "input_forget",
        "cell_clip",
        "gate_clip",
        "proj_clip",
    }
)


def reference_run(weights: LSTMWeights, inputs: RunInputs) -> tuple[LSTMOutputs, LSTMGradients]:
    """The reference's outputs and gradients for ``inputs`` (zero gradients where no cotangent is given)."""
    return lstm_forward_backward(
        weights,
        inputs.x,
        inputs.h0,
        inputs.c0,
        inputs.seq_lens,
        dy=inputs.dy,
        dh_n=inputs.dh_n,
        dc_n=inputs.dc_n,
        batch_first=inputs.batch_first,
    )


class ReferenceImplementation(Implementation):
    """Runs ``reference.lstm`` in float64 on the CPU; every option of ``LSTMConfig``, with exact gradients."""

    name = "reference"
    framework = "NumPy (reference)"

    def capabilities(self) -> Capabilities:
        every_activation = frozenset(ACTIVATION_PARAMETERS)
        return Capabilities(
            dtypes=("float64",),
            devices=("cpu",),
            gradients=True,
            features=REFERENCE_FEATURES,
            activations={"gate": every_activation, "cell_input": every_activation, "cell_output": every_activation},
            notes=("float64 NumPy: the single source of truth",),
        )

    def run(self, weights: LSTMWeights, inputs: RunInputs, options: RunOptions) -> RunResult:
        self.check_supported(weights.config, inputs, options)
        arguments = (weights, inputs.x, inputs.h0, inputs.c0, inputs.seq_lens)
        if not inputs.wants_gradients:
            outputs = lstm_forward(*arguments, batch_first=inputs.batch_first)
            return RunResult(y=outputs.y, h_n=outputs.h_n, c_n=outputs.c_n, math_mode="float64")
        outputs, grads = reference_run(weights, inputs)
        # The canonical names are the reference's native names.
        native = {key: np.asarray(value, dtype=np.float64) for key, value in grads.weights.named_arrays().items()}
        gradients = Gradients(x=grads.x, h0=grads.h0, c0=grads.c0, weights=grads.weights, native=native)
        return RunResult(y=outputs.y, h_n=outputs.h_n, c_n=outputs.c_n, math_mode="float64", gradients=gradients)
