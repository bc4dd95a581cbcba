"""What a conformance report must say about where it ran: Python, NumPy, the frameworks that ran, CUDA and cuDNN
where used, CPU model, BLAS, and the project's own version and git revision.

Versions come from ``importlib.metadata`` (the installed distributions), never from importing a framework: a
framework counts as "ran" when its top-level module is in ``sys.modules`` of a process that ran suite tests.
Under pytest-xdist those are the workers: each worker attaches what it has imported to its test reports
(``framework_versions``, called by the plugin), and the controller merges them into ``machine_environment``'s
result. Standard library only, every probe tolerant of what is absent (no git, no /proc, no BLAS info).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, TypedDict

#: Framework module (as in sys.modules) -> the distributions that install it, first found wins.
FRAMEWORK_DISTRIBUTIONS: dict[str, tuple[str, ...]] = {
    "torch": ("torch",),
    "tensorflow": ("tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-macos", "tf-nightly"),
    "keras": ("keras", "keras-nightly"),
    "tf_keras": ("tf-keras", "tf-keras-nightly"),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "onnxscript": ("onnxscript",),
    "jax": ("jax",),
    "jaxlib": ("jaxlib",),
    "flax": ("flax",),
    "openvino": ("openvino",),
    "ai_edge_litert": ("ai-edge-litert",),
    "tflite_runtime": ("tflite-runtime",),
    "safetensors": ("safetensors",),
    "h5py": ("h5py",),
}


class Environment(TypedDict):
    """The report's ``environment`` object (report.json), one per job in a merged report."""

    hostname: str
    platform: str
    python: str
    numpy: str | None
    cpu: str | None
    blas: str | None
    project: str | None
    git_revision: str | None
    frameworks: dict[str, str]
    cuda: dict[str, str]


def distribution_version(names: tuple[str, ...]) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def framework_versions(extra_modules: tuple[str, ...] = ()) -> dict[str, str]:
    """``{module: version}`` of every framework this process has imported (``extra_modules``: third parties'
    top-level modules, looked up through the installed distributions that provide them)."""
    found = {}
    for module, distributions in FRAMEWORK_DISTRIBUTIONS.items():
        if module in sys.modules:
            found[module] = distribution_version(distributions) or "unknown (no distribution metadata)"
    for module in extra_modules:
        if module in sys.modules and module not in found:
            providers = importlib.metadata.packages_distributions().get(module, [])
            version = distribution_version(tuple(providers)) if providers else None
            found[module] = version or "(no distribution metadata)"
    return found


def cuda_versions() -> dict[str, str]:
    """CUDA, cuDNN and the GPU as torch sees them, only when torch is already imported and has a device."""
    torch = sys.modules.get("torch")
    if torch is None:
        return {}
    found: dict[str, str] = {}
    built_with = getattr(getattr(torch, "version", None), "cuda", None)
    if built_with:
        found["torch_cuda"] = str(built_with)
    try:
        if torch.cuda.is_available():
            found["gpu"] = str(torch.cuda.get_device_name(0))
            cudnn = torch.backends.cudnn.version()
            if cudnn:
                found["cudnn"] = str(cudnn)
    except Exception:  # a broken driver is the tests' business; the report only says less
        pass
    return found


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.partition(':')[2].strip()} ({os.cpu_count()} logical CPUs)"
    except OSError:
        pass
    return platform.processor() or None


def blas_info() -> str | None:
    """NumPy's BLAS as its build configuration names it (threadpoolctl's runtime view when installed)."""
    if "threadpoolctl" in sys.modules or importlib.util.find_spec("threadpoolctl") is not None:
        try:
            threadpoolctl = importlib.import_module("threadpoolctl")  # optional; imported only when installed
            libraries = [i for i in threadpoolctl.threadpool_info() if i.get("user_api") == "blas"]
            if libraries:
                first = libraries[0]
                return f"{first.get('internal_api')} {first.get('version')} ({first.get('num_threads')} threads)"
        except Exception:
            pass
    numpy = sys.modules.get("numpy")
    if numpy is None:
        return None
    try:
        config = numpy.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}".strip()
    except Exception:  # NumPy before 1.25 has no mode="dicts"
        return None


def git_revision(folder: Path) -> str | None:
    """The checkout's commit (with "-dirty" when it has local changes), None outside a git checkout."""
    try:
        revision = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"], cwd=folder, capture_output=True, text=True, timeout=5
        )
        if revision.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=folder,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    dirty = "-dirty" if status.returncode == 0 and status.stdout.strip() else ""
    return revision.stdout.strip() + dirty


def machine_environment(frameworks: dict[str, str], cuda: dict[str, str]) -> Environment:
    """This machine's environment, with the frameworks (and CUDA facts) gathered from the processes that ran."""
    numpy_version = distribution_version(("numpy",))
    return Environment(
        hostname=socket.gethostname(),
        platform=platform.platform(),
        python=f"{platform.python_version()} ({platform.python_implementation()})",
        numpy=numpy_version,
        cpu=cpu_model(),
        blas=blas_info(),
        project=distribution_version(("lstm-conformance",)),
        git_revision=git_revision(Path(__file__).resolve().parent),
        frameworks=dict(sorted(frameworks.items())),
        cuda=dict(sorted(cuda.items())),
    )


def environment_lines(environment: Environment | dict[str, Any]) -> list[str]:
    """Two or three lines for the console header."""
    frameworks = ", ".join(f"{name} {version}" for name, version in environment.get("frameworks", {}).items())
    project = f"lstm-conformance {environment.get('project') or '(not installed)'}"
    if environment.get("git_revision"):
        project += f" @ {environment['git_revision']}"
    lines = [
        f"{project}; Python {environment.get('python')}; NumPy {environment.get('numpy')} "
        f"(BLAS: {environment.get('blas') or 'unknown'}); CPU: {environment.get('cpu') or 'unknown'}",
        f"frameworks that ran: {frameworks or 'none'}",
    ]
    cuda = environment.get("cuda") or {}
    if cuda:
        lines.append("CUDA: " + ", ".join(f"{key} {value}" for key, value in cuda.items()))
    return lines
