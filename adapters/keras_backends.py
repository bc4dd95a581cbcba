"""Keras 3's ``LSTM`` layer on its JAX ("keras-jax") and torch ("keras-torch") backends, beside the TensorFlow-
backed "keras" of ``adapters.keras_layer``.

Keras fixes its backend when it is first imported, once per process, so each backend runs in a process of its
own: a persistent worker per backend (``multiprocessing`` with the spawn start method, ``KERAS_BACKEND`` set in
the child's environment before anything imports Keras), started at the first run and reused for every later
one, so the import is paid once per backend per process; it is shut down at exit. Under pytest-xdist each xdist
worker is a process of its own and starts its own backend workers. Only NumPy arrays, the canonical config and
Keras weight lists cross the pipe.

Inside the worker the model is what ``adapters.keras_layer`` builds for Keras 3 (``build_keras_layers``,
``keras_layer_weights``; the generic, non-cuDNN loop), run eagerly on the CPU, with the same mask handling
(``keras_layer._forward``, run on ``keras.ops``). float64 on JAX needs ``JAX_ENABLE_X64``: the worker sets it,
and the math mode reported is the dtype of the outputs the backend actually returned.

Gradients: on torch, from torch autograd through the Keras layers (``torch.autograd.grad`` of
``sum(y*dy) + sum(h_n*dh_n) + sum(c_n*dc_n)`` with respect to x, h0, c0 and each Keras variable's torch
parameter); on JAX, from ``jax.vjp`` of the layers' ``stateless_call``. Native gradient names are Keras 3's
``Variable.path``, as for "keras".
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import multiprocessing
import os
import threading
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
from numpy.typing import NDArray

from lstm_conformance.adapters.base import Capabilities, Gradients, Implementation, RunInputs, RunOptions, RunResult
from lstm_conformance.adapters.layouts.keras import KERAS3, check_keras_config, keras_layer_weights
from lstm_conformance.reference.errors import LSTMConformanceError
from lstm_conformance.reference.inputs import PreparedInputs
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, require_zero_biases

#: Backend -> the packages its worker imports.
BACKEND_PACKAGES: dict[str, tuple[str, ...]] = {"jax": ("keras", "jax"), "torch": ("keras", "torch")}
#: Environment every worker starts with: the backend, and float64 allowed on JAX (off by default).
_WORKER_ENVIRONMENT: dict[str, dict[str, str]] = {
    "jax": {"KERAS_BACKEND": "jax", "JAX_ENABLE_X64": "1", "JAX_PLATFORMS": "cpu"},
    "torch": {"KERAS_BACKEND": "torch"},
}


@dataclass
class WorkerRequest:
    """One run, as it crosses the pipe: plain data only."""

    config: LSTMConfig
    layer_weights: list[list[NDArray[Any]]]
    dtype: str
    x: NDArray[np.float64]  # batch-major [B, T, I]
    h0: NDArray[np.float64]
    c0: NDArray[np.float64]
    lengths: NDArray[np.int64] | None
    cotangents: tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None  # dy [B,T,*], dh_n, dc_n


@dataclass
class WorkerReply:
    """y [B, T, dirs*H], h_n, c_n, the dtype the backend computed in, and gradients when asked for."""

    y: NDArray[np.float64]
    h_n: NDArray[np.float64]
    c_n: NDArray[np.float64]
    computed_dtype: str
    gradients: Gradients | None = None


# ----------------------------------------------------------------------------------------------------------
# The worker processes
# ----------------------------------------------------------------------------------------------------------


class BackendWorker:
    """A spawned process that imported Keras on one backend and runs requests until told to stop."""

    def __init__(self, backend: str) -> None:
        self.backend = backend
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._connection: Connection = parent
        saved = {key: os.environ.get(key) for key in _WORKER_ENVIRONMENT[backend]}
        os.environ.update(_WORKER_ENVIRONMENT[backend])  # spawn copies the environment at start()
        try:
            self._process = context.Process(
                target=_serve, args=(backend, child), name=f"keras-{backend}-worker", daemon=True
            )
            self._process.start()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        child.close()

    def alive(self) -> bool:
        return self._process.is_alive()

    def call(self, request: WorkerRequest) -> WorkerReply:
        self._connection.send(request)
        try:
            status, payload = self._connection.recv()
        except EOFError:
            raise LSTMConformanceError(
                f"the Keras {self.backend} worker process died (exit code {self._process.exitcode})"
            ) from None
        if status == "error":
            raise LSTMConformanceError(f"Keras on {self.backend} failed: {payload}")
        reply: WorkerReply = payload
        return reply

    def stop(self) -> None:
        if self._process.is_alive():
            with contextlib.suppress(BrokenPipeError, OSError):  # it may be exiting already
                self._connection.send(None)
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
        self._connection.close()


_WORKERS: dict[str, BackendWorker] = {}
_WORKERS_LOCK = threading.Lock()


def worker_for(backend: str) -> BackendWorker:
    """This process's worker for ``backend``, started on first use (or again if it died)."""
    with _WORKERS_LOCK:
        worker = _WORKERS.get(backend)
        if worker is None or not worker.alive():
            worker = BackendWorker(backend)
            _WORKERS[backend] = worker
        return worker


@atexit.register
def stop_workers() -> None:
    """Stop every backend worker this process started."""
    with _WORKERS_LOCK:
        for worker in _WORKERS.values():
            worker.stop()
        _WORKERS.clear()


def _serve(backend: str, connection: Connection) -> None:
    """The worker's loop: import Keras (on ``backend``, from the environment), then answer requests."""
    import keras

    if keras.backend.backend() != backend:
        connection.send(("error", f"Keras started on {keras.backend.backend()!r}, not {backend!r}"))
        return
    while True:
        try:
            request = connection.recv()
        except EOFError:
            return
        if request is None:
            return
        try:
            connection.send(("ok", _run_in_worker(keras, backend, request)))
        except Exception as error:  # reported to the parent, which raises it there
            connection.send(("error", f"{type(error).__name__}: {error}"))


def _run_in_worker(keras: Any, backend: str, request: WorkerRequest) -> WorkerReply:
    """Build the Keras 3 layers, set the weights, run forward (and backward) on ``backend``."""
    from lstm_conformance.adapters.keras_layer import build_keras_layers

    config, dtype, ops = request.config, request.dtype, keras.ops
    layers = build_keras_layers(keras, config, KERAS3, dtype, return_state=True, generic_path=True)
    for k, (layer, arrays) in enumerate(zip(layers, request.layer_weights, strict=True)):
        layer(ops.zeros((1, 1, config.layer_input_size(k)), dtype=dtype))
        layer.set_weights(arrays)
    mask = None
    if request.lengths is not None:
        steps = request.x.shape[1]
        mask = ops.convert_to_tensor(np.arange(steps)[None, :] < request.lengths[:, None])
    if backend == "torch":
        return _run_torch(keras, layers, config, request, mask)
    return _run_jax(keras, layers, config, request, mask)


def _run_torch(keras: Any, layers: list[Any], config: LSTMConfig, request: WorkerRequest, mask: Any) -> WorkerReply:
    import torch

    from lstm_conformance.adapters.keras_layer import _forward, _gradients

    dtype = getattr(torch, request.dtype)
    wants = request.cotangents is not None
    x, h0, c0 = (torch.tensor(a, dtype=dtype).requires_grad_(wants) for a in (request.x, request.h0, request.c0))
    with torch.set_grad_enabled(wants):
        y, h_n, c_n = _forward(keras.ops, layers, config, x, h0, c0, mask)
    gradients = None
    if request.cotangents is not None:
        variables = [v for layer in layers for v in layer.trainable_variables]
        dy, dh_n, dc_n = (torch.tensor(a, dtype=dtype) for a in request.cotangents)
        loss = (y * dy).sum() + (h_n * dh_n).sum() + (c_n * dc_n).sum()
        found = torch.autograd.grad(loss, [x, h0, c0, *(v.value for v in variables)], allow_unused=True)
        found = [torch.zeros_like(t) if g is None else g for g, t in zip(found, [x, h0, c0, *variables], strict=True)]
        gradients = _gradients(config, [g.detach().numpy() for g in found], variables)
    y_np, h_np, c_np = (t.detach().numpy() for t in (y, h_n, c_n))
    return WorkerReply(_f64(y_np), _f64(h_np), _f64(c_np), str(y_np.dtype), gradients)


def _run_jax(keras: Any, layers: list[Any], config: LSTMConfig, request: WorkerRequest, mask: Any) -> WorkerReply:
    import jax
    import jax.numpy as jnp

    from lstm_conformance.adapters.keras_layer import _forward, _gradients

    dtype = request.dtype
    variables = [v for layer in layers for v in layer.trainable_variables]
    counts = [len(layer.trainable_variables) for layer in layers]

    def run(values: list[Any], x: Any, h0: Any, c0: Any) -> tuple[Any, Any, Any]:
        stateless = []
        cursor = 0
        for layer, count in zip(layers, counts, strict=True):
            stateless.append(_StatelessLayer(layer, values[cursor : cursor + count]))
            cursor += count
        return _forward(keras.ops, stateless, config, x, h0, c0, mask)

    values = [v.value for v in variables]
    x, h0, c0 = (jnp.asarray(a, dtype=dtype) for a in (request.x, request.h0, request.c0))
    if request.cotangents is None:
        y, h_n, c_n = run(values, x, h0, c0)
        gradients = None
    else:
        (y, h_n, c_n), pullback = jax.vjp(run, values, x, h0, c0)
        cotangents = tuple(jnp.asarray(a, dtype=dtype) for a in request.cotangents)
        grad_values, grad_x, grad_h0, grad_c0 = pullback(cotangents)
        found = [np.asarray(g) for g in (grad_x, grad_h0, grad_c0, *grad_values)]
        gradients = _gradients(config, found, variables)
    y_np, h_np, c_np = (np.asarray(t) for t in (y, h_n, c_n))
    return WorkerReply(_f64(y_np), _f64(h_np), _f64(c_np), str(y_np.dtype), gradients)


class _StatelessLayer:
    """A Keras layer called through ``stateless_call`` with given trainable values (so that jax.vjp can trace
    the parameters), with the call signature ``keras_layer._forward`` uses."""

    def __init__(self, layer: Any, values: list[Any]) -> None:
        self.layer, self.values = layer, values

    def __call__(self, inputs: Any, initial_state: Any, mask: Any) -> Any:
        outputs, _ = self.layer.stateless_call(
            self.values,
            [v.value for v in self.layer.non_trainable_variables],
            inputs,
            initial_state=initial_state,
            mask=mask,
        )
        return outputs


def _f64(array: NDArray[Any]) -> NDArray[np.float64]:
    return np.asarray(array, dtype=np.float64)


# ----------------------------------------------------------------------------------------------------------
# The implementations
# ----------------------------------------------------------------------------------------------------------


class _KerasBackendLSTM(Implementation):
    """Keras 3's LSTM on a non-TensorFlow backend, run in that backend's worker process (CPU)."""

    backend: str = ""

    def capabilities(self) -> Capabilities:
        names = frozenset(KERAS3.activations())
        return Capabilities(
            dtypes=("float64", "float32"),
            devices=("cpu",),
            gradients=True,
            features=frozenset({"num_layers", "bidirectional", "no_bias"}),
            activations={"gate": names, "cell_input": names, "cell_output": names},
            notes=(
                f"Keras 3 LSTM layers on the {self.backend} backend (generic loop, CPU), in a worker process of "
                "its own (the backend is fixed at Keras' first import)",
                "per-sample lengths through a Keras mask; y is zeroed past each length",
            ),
        )

    def unavailable_reason(self) -> str | None:
        for package in BACKEND_PACKAGES[self.backend]:
            if importlib.util.find_spec(package) is None:
                extra = "jax" if package == "jax" else "torch" if package == "torch" else "tensorflow"
                return f"{package} is not installed (pip install 'lstm-conformance[{extra}]')"
        return None

    def check_supported(self, config: LSTMConfig, inputs: RunInputs | None, options: RunOptions) -> None:
        check_keras_config(config, KERAS3)
        super().check_supported(config, inputs, options)

    def _run_native(self, weights: LSTMWeights, prepared: PreparedInputs, options: RunOptions) -> RunResult:
        # CPU only: allow_tf32 changes nothing there, as for "keras".
        require_zero_biases(weights)
        cotangents = None
        if prepared.wants_gradients:
            assert prepared.dy is not None
            assert prepared.dh_n is not None
            assert prepared.dc_n is not None
            cotangents = (np.ascontiguousarray(prepared.dy.swapaxes(0, 1)), prepared.dh_n, prepared.dc_n)
        request = WorkerRequest(
            config=weights.config,
            layer_weights=keras_layer_weights(weights, options.dtype),
            dtype=options.dtype,
            x=np.ascontiguousarray(prepared.x.swapaxes(0, 1)),  # Keras runs batch-major [B, T, I]
            h0=prepared.h0,
            c0=prepared.c0,
            lengths=prepared.seq_lens if prepared.lengths_given else None,
            cotangents=cotangents,
        )
        # The native step, in the backend's own process; its gradient of x comes back time-major.
        reply = worker_for(self.backend).call(request)
        return RunResult(
            y=np.ascontiguousarray(reply.y.swapaxes(0, 1)),
            h_n=reply.h_n,
            c_n=reply.c_n,
            math_mode=reply.computed_dtype,
            gradients=reply.gradients,
        )


class KerasJaxLSTM(_KerasBackendLSTM):
    """``keras.layers.LSTM`` with ``KERAS_BACKEND=jax``."""

    name = "keras-jax"
    framework = "Keras 3 (JAX backend)"
    backend = "jax"


class KerasTorchLSTM(_KerasBackendLSTM):
    """``keras.layers.LSTM`` with ``KERAS_BACKEND=torch``."""

    name = "keras-torch"
    framework = "Keras 3 (torch backend)"
    backend = "torch"
