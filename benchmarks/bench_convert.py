"""How fast ``lstm-conformance`` feels: a big conversion beside a plain file copy, and ``--help``'s wall time.

The model: a 4-layer bidirectional ``nn.LSTM`` with I = H = 1024 in float32, written by ``torch.save`` (about
369 MB). Converted torch -> keras -> torch with ``--no-verify``, each conversion timed beside
``shutil.copyfile`` of the torch file (aim: within 3x of the copy). The frameworks are imported once, first,
and that one-time cost is printed on its own line: a user converting many files pays it once per process.
``lstm-conformance --help`` is timed as a fresh process (aim: under 0.5 s; it imports no framework).

    .venv/bin/python benchmarks/bench_convert.py [--hidden 1024] [--layers 4] [--repeat 2] [--dir DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path


def timed(action: Callable[[], object], repeat: int) -> float:
    """The best of ``repeat`` runs, in seconds (the machine is shared: the minimum is the least disturbed)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        best = min(best, time.perf_counter() - start)
    return best


def write_torch_model(path: Path, size: int, layers: int) -> None:
    import torch

    torch.manual_seed(0)
    lstm = torch.nn.LSTM(size, size, num_layers=layers, bidirectional=True)
    torch.save(lstm.state_dict(), path)


def convert(source: Path, destination: Path) -> None:
    from lstm_conformance.cli import main

    with contextlib.redirect_stdout(io.StringIO()):  # the conversion's report, not wanted 2 x repeat times
        status = main(["convert", str(source), str(destination), "--no-verify", "--force"])
    if status != 0:
        raise SystemExit(f"convert {source} -> {destination} failed with status {status}")


def help_times(repeat: int) -> list[float]:
    script = shutil.which("lstm-conformance", path=str(Path(sys.executable).parent))
    command = [script] if script else [sys.executable, "-m", "lstm_conformance.cli"]
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run([*command, "--help"], check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=1024, help="input and hidden size (default 1024)")
    parser.add_argument("--layers", type=int, default=4, help="layers (default 4)")
    parser.add_argument("--repeat", type=int, default=2, help="runs per measurement; the best is kept")
    parser.add_argument("--dir", type=Path, default=None, help="where to write the files (default: a temp dir)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    print("command:", shlex.join([sys.executable, *sys.argv]))
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}")

    # --help first, in fresh processes, before this one has imported anything heavy.
    help_runs = help_times(5)
    median, best = statistics.median(help_runs), min(help_runs)
    print(f"lstm-conformance --help: median {median:.3f} s, best {best:.3f} s (aim < 0.5 s)")

    start = time.perf_counter()
    # Keras 3 pulls in TensorFlow: the one-time cost every process converting to or from Keras pays.
    for module in (
        "torch",
        "keras",
        "lstm_conformance.adapters.formats.torch_file",
        "lstm_conformance.adapters.formats.keras_file",
    ):
        importlib.import_module(module)
    imported = time.perf_counter() - start
    print(f"one-time framework import (torch, keras + tensorflow, format modules): {imported:.2f} s")

    with tempfile.TemporaryDirectory(dir=args.dir) as directory:
        folder = Path(directory)
        source, as_keras, back = folder / "model.pt", folder / "model.keras", folder / "back.pt"
        write_torch_model(source, args.hidden, args.layers)
        size = source.stat().st_size / 1e6
        shape = f"nn.LSTM({args.hidden}, {args.hidden}, num_layers={args.layers}, bidirectional=True)"
        print(f"model: {shape}, {size:.0f} MB written by torch.save")
        convert(source, as_keras)  # warm-up: Keras builds its first model, TF initializes its kernels
        copy = timed(lambda: shutil.copyfile(source, folder / "copy.pt"), args.repeat)
        to_keras = timed(lambda: convert(source, as_keras), args.repeat)
        to_torch = timed(lambda: convert(as_keras, back), args.repeat)
        print(f"copy (shutil.copyfile):       {copy:7.2f} s")
        print(f"convert torch -> keras:       {to_keras:7.2f} s  ratio {to_keras / copy:5.2f}x the copy")
        print(f"convert keras -> torch:       {to_torch:7.2f} s  ratio {to_torch / copy:5.2f}x the copy")
        both = to_keras + to_torch
        print(f"round trip torch->keras->torch: {both:5.2f} s  ratio {both / (2 * copy):5.2f}x two copies (aim <= 3x)")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
