"""Speed of the float64 reference's forward plus backward beside PyTorch's CPU nn.LSTM in float64, same weights.

    python -m benchmarks.bench_reference [--repeats N] [--steps T] [--batch B] [--size H] [--threads N]

Cases: one layer (T=200, B=64, I=H=512) and two bidirectional layers with a projection (proj 256). Runs are
interleaved (reference, torch, reference, torch, ...) so that load from other processes hits both alike; each
time is the median over the repeats; the ratio is reference / torch (below 1: the reference is faster).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from lstm_conformance.adapters.pytorch import to_state_dict
from lstm_conformance.reference.layout import LSTMConfig, LSTMWeights, random_weights
from lstm_conformance.reference.lstm import lstm_forward_backward


def torch_runner(weights: LSTMWeights, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    """One forward plus backward of nn.LSTM (float64, CPU) holding ``weights``, loaded through the torch
    adapter's one canonical -> state_dict mapping (``adapters.pytorch.to_state_dict``)."""
    import torch

    config = weights.config
    module = torch.nn.LSTM(
        config.input_size,
        config.hidden_size,
        config.num_layers,
        bias=config.bias,
        bidirectional=config.bidirectional,
        proj_size=config.proj_size,
    ).double()
    state = {key: torch.from_numpy(value) for key, value in to_state_dict(weights).items()}
    module.load_state_dict(state, strict=True)
    x_torch = torch.tensor(x, requires_grad=True)
    dy_torch = torch.tensor(dy)

    def run() -> Any:
        module.zero_grad(set_to_none=True)
        x_torch.grad = None
        y, _ = module(x_torch)
        y.backward(dy_torch)
        return x_torch.grad

    return run


def reference_runner(weights: LSTMWeights, x: np.ndarray, dy: np.ndarray) -> Callable[[], Any]:
    def run() -> Any:
        return lstm_forward_backward(weights, x, dy=dy)[1].x

    return run


def gemm_floor_runner(config: LSTMConfig, steps: int, batch: int) -> Callable[[], Any]:
    """The matrix products alone of one forward plus backward, shaped as the reference (and PyTorch) make them,
    per layer and direction: the input projection of all steps, the recurrent product of each step (and the
    projection's), backward's per-step products, and the weight and input gradients as products over all
    steps. Their time is the floor of float64 GEMM throughput: no LSTM runs faster on this BLAS."""
    rng = np.random.default_rng(1)
    H, Hout, rows = config.hidden_size, config.output_size, steps * batch
    P = config.proj_size

    def normal(*shape: int) -> np.ndarray:
        return rng.normal(size=shape)

    directions = []
    for layer in range(config.num_layers):
        features = config.layer_input_size(layer)
        for _ in range(config.num_directions):
            directions.append(
                (normal(rows, features), normal(4 * H, features), normal(Hout, 4 * H), normal(4 * H, Hout))
            )
    dA, Hs, h, m = normal(rows, 4 * H), normal(rows, Hout), normal(batch, Hout), normal(batch, H)
    projT, proj, M = normal(H, Hout), normal(Hout, H), normal(rows, H)
    z, dh, dm = np.empty((batch, 4 * H)), np.empty((batch, Hout)), np.empty((batch, H))

    def run() -> Any:
        for X, W, RT, R in directions:
            np.matmul(X, W.T)
            for _ in range(steps):
                np.matmul(h, RT, out=z)
                if P:
                    np.matmul(m, projT, out=dh)
            for _ in range(steps):
                np.matmul(z, R, out=dh)
                if P:
                    np.matmul(dh, proj, out=dm)
            dA.T @ X
            dA.T @ Hs
            dA @ W
            if P:
                Hs.T @ M
        return None

    return run


def measure(runners: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median wall time in ms per runner, interleaving them; one untimed warm-up run each."""
    for run in runners.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--size", type=int, default=512, help="input and hidden size")
    parser.add_argument("--proj", type=int, default=256, help="projection size of the stacked case")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:
        print("torch is not installed: pip install 'lstm-conformance[torch]'", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.size
    cases = {
        f"1 layer, I=H={size}": LSTMConfig(input_size=size, hidden_size=size),
        f"2 layers bidirectional, I=H={size}, proj {args.proj}": LSTMConfig(
            input_size=size, hidden_size=size, num_layers=2, bidirectional=True, proj_size=args.proj
        ),
    }
    print(f"command: python -m benchmarks.bench_reference {' '.join(sys.argv[1:] if argv is None else argv)}")
    print(
        f"T={args.steps} B={args.batch}, float64, forward+backward, median of {args.repeats} interleaved runs; "
        f"numpy {np.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )
    print(
        f"{'case':<48} {'reference ms':>13} {'torch ms':>10} {'GEMM floor ms':>14} {'ratio':>7} "
        f"{'floor/torch':>12} {'of floor':>9}"
    )
    for label, config in cases.items():
        rng = np.random.default_rng(0)
        weights = random_weights(config, rng)
        x = rng.normal(size=(args.steps, args.batch, config.input_size))
        dy = rng.normal(size=(args.steps, args.batch, config.num_directions * config.output_size))
        runners = {
            "reference": reference_runner(weights, x, dy),
            "torch": torch_runner(weights, x, dy),
            "floor": gemm_floor_runner(config, args.steps, args.batch),
        }
        # Same function, same gradients: a benchmark of two different computations would mean nothing.
        np.testing.assert_allclose(runners["reference"](), runners["torch"]().numpy(), rtol=1e-9, atol=1e-12)
        medians = measure(runners, args.repeats)
        reference, torch_ms, floor = medians["reference"], medians["torch"], medians["floor"]
        print(
            f"{label:<48} {reference:>13.1f} {torch_ms:>10.1f} {floor:>14.1f} {reference / torch_ms:>7.2f} "
            f"{floor / torch_ms:>12.2f} {floor / reference:>9.2f}"
        )
    print("ratio: reference / torch (aim <= 0.8); floor/torch: the GEMMs alone / torch; of floor: GEMMs alone / ")
    print("reference (1.0: the reference spends all its time in the products it cannot avoid)")
    print(f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')} ", end="")
    print(f"OPENBLAS_L2_SIZE={os.environ.get('OPENBLAS_L2_SIZE', '(unset)')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
