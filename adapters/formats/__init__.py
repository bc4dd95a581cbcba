"""Model files as users have them, one module per format with the same two functions.

Each format module defines a ``FileFormat`` subclass; ``FORMATS`` maps the format names of DESIGN.md to
"module:class", imported lazily. A reader returns every LSTM it finds in canonical form with the
implementation that runs that file's layout natively; a writer writes one canonical LSTM so that the
framework's own loading code reads it without this project.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import struct
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from lstm_conformance.names import FORMATS as FORMAT_SPECS
from lstm_conformance.reference.errors import InputFileError, LSTMConformanceError, NotImplementedOptionError
from lstm_conformance.reference.layout import LSTMWeights

if TYPE_CHECKING:
    from lstm_conformance.adapters.base import RunInputs, RunOptions, RunResult

#: Format name -> "module:class" (``lstm_conformance.names``), imported lazily.
FORMATS: dict[str, str] = FORMAT_SPECS

#: Suffix -> format name, for ``--from``/``--to`` inference (longest suffix first).
SUFFIXES: dict[str, str] = {
    ".weights.h5": "keras-h5",
    ".safetensors": "safetensors",
    ".keras": "keras",
    ".h5": "keras-h5",
    ".hdf5": "keras-h5",
    ".pt": "torch",
    ".pth": "torch",
    ".onnx": "onnx",
    ".tflite": "tflite",
    ".npz": "npz",
    ".ckpt": "tf-checkpoint",
}


class SourceRunner(Protocol):
    """Runs an LSTM as its file's own framework loads the file (``FoundLSTM.run_source``)."""

    def __call__(self, inputs: RunInputs, options: RunOptions) -> RunResult: ...


def quantization_error(
    quantized: SourceRunner, floating: SourceRunner, shape: tuple[int, int, int], seeds: int
) -> float:
    """A quantized file's measured quantization error: the normwise relative difference of y between the file
    as it stands (``quantized``) and the float LSTM of its own dequantized weights (``floating``), the largest
    over ``seeds`` seeded random float32 inputs of ``shape`` [T, B, I] (one input's error varies by a factor of
    two). The readers of quantized files (ONNX's DynamicQuantizeLSTM, int8 .tflite) set it on their runner."""
    import numpy as np

    from lstm_conformance.adapters.base import RunInputs, RunOptions

    errors = []
    for seed in range(seeds):
        x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32).astype(np.float64)
        inputs, options = RunInputs(x=x), RunOptions(dtype="float32")
        got, expected = quantized(inputs, options).y, floating(inputs, options).y
        errors.append(float(np.linalg.norm(got - expected)) / max(float(np.linalg.norm(expected)), 1e-30))
    return max(errors)


@dataclass
class FoundLSTM:
    """One LSTM read from a file.

    ``name``: where it sits in the file (a state_dict prefix, a Keras layer name; "" for a bare LSTM).
    ``implementation`` and ``implementation_options``: what runs this file's layout natively
    (``adapters.registry.get_implementation(implementation, **implementation_options)``).
    ``notes``: what the reader found worth saying (informational, not changing the function).
    ``assumptions``: every assumption the reading made that changes the function the file computes, because
    the file does not store it (TF's forget_bias in a checkpoint without its graph; the activations, batch
    layout or masking of a weights-only file). Said on stderr as assumptions; a conversion from a file with
    assumptions and no ``run_source`` is "converted under assumptions", never "verified".
    ``run_source``: runs this LSTM as the file's own framework loads the file itself (the ONNX node as it
    stands in the file, the Keras model Keras loads, the TF1 graph restored from its .meta), not this project's
    reading of it; None when the file holds weights only. Inputs and results follow ``Implementation.run``.
    ``batch_first``: the layout the file's own model takes its input in, None when the file does not say.
    ``mask_value``: the value a Keras ``Masking`` layer before this LSTM skips steps by (None: none in the file);
    the Keras writers' ``mask_value`` option writes the same layer, other targets need per-sample lengths.
    ``takes_lengths``: the file's own model takes per-sample lengths (a TF1 graph's dynamic_rnn
    ``sequence_length``): carried as ``mask_value`` is, where the target holds lengths.
    ``parameter_names``: the file's own names of the parameters, in its native layout's order, where known.
    """

    name: str
    weights: LSTMWeights
    implementation: str
    implementation_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    batch_first: bool | None = False
    assumptions: list[str] = field(default_factory=list)
    run_source: SourceRunner | None = None
    mask_value: float | None = None
    takes_lengths: bool = False
    #: The file's own names of the parameters, in its native layout's order (Keras: each layer's kernel,
    #: recurrent_kernel and bias per direction), where the reader knows them; ``run`` names gradients by them.
    parameter_names: list[str] = field(default_factory=list)


@dataclass
class ModelContents:
    """Everything a reader found: the LSTMs, and the names of the other tensors it left alone."""

    lstms: list[FoundLSTM]
    other_tensors: list[str] = field(default_factory=list)


class FileFormat:
    """One file format. Subclasses set the class attributes and implement ``read`` and ``write``."""

    name: str = ""
    framework: str = ""
    #: The implementation that runs what ``write`` wrote (used to verify a conversion).
    implementation: str = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Every format's ``read`` and ``write`` pass through one place that turns a library's failure on a
        stranger's file into InputFileError (see ``_guarded_read``, ``_guarded_write``)."""
        super().__init_subclass__(**kwargs)
        if "read" in cls.__dict__:
            setattr(cls, "read", _guarded_read(cls.__dict__["read"]))  # noqa: B010 - mypy refuses a method assignment
        if "write" in cls.__dict__:
            setattr(cls, "write", _guarded_write(cls.__dict__["write"]))  # noqa: B010

    def unavailable_reason(self) -> str | None:
        """None when the libraries this format needs import here; else what to install."""
        return None

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        """Every LSTM in ``path``. Raises InputFileError naming the problem for a corrupt or foreign file.
        ``options`` carries command-line choices such as ``forget_bias``."""
        raise NotImplementedError

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        """Write ``weights`` to ``path`` (the caller passes a temporary path and renames it), returning notes
        for the user. Raises UnsupportedFeatureError for a feature the format cannot hold exactly."""
        raise NotImplementedError


ReadMethod = Callable[[FileFormat, Path, Mapping[str, Any]], ModelContents]
WriteMethod = Callable[[FileFormat, Path, LSTMWeights, Mapping[str, Any]], list[str]]


def _guarded_read(read: ReadMethod) -> ReadMethod:
    """``read``, with what a library raises while parsing the file (h5py, zipfile, protobuf, torch, TF),
    MemoryError and RecursionError turned into InputFileError naming the file. An exception raised in this
    project's own code is a bug and keeps its traceback."""

    @functools.wraps(read)
    def guarded(self: FileFormat, path: Path, options: Mapping[str, Any]) -> ModelContents:
        try:
            return read(self, path, options)
        except InputFileError as error:
            if str(path) not in str(error):  # a message from deep inside a reader: say which file
                error.args = (f"{path}: {error}", *error.args[1:])
            raise
        except (LSTMConformanceError, ImportError):  # ours, or a framework missing here: not the file's fault
            raise
        except MemoryError:
            raise InputFileError(
                f"{path}: reading it ran out of memory: the file declares more data than it holds, or more than "
                "this machine has; use a machine with more memory, or save the model again"
            ) from None
        except RecursionError:
            raise InputFileError(
                f"{path}: nested too deeply to be a model file (recursion limit); save the model again"
            ) from None
        except Exception as error:
            if not raised_by_library(error):
                raise
            raise InputFileError(
                f"{path}: not a readable {self.name} file ({type(error).__name__}: {error_summary(error)}); "
                f"{format_hint(path, self.name)}"
            ) from None

    return guarded


def _guarded_write(write: WriteMethod) -> WriteMethod:
    """``write``, after checking that the destination's file system has room for it (an HDF5 writer that
    meets a full disk can crash the process, past any cleanup), with a full disk met anyway as InputFileError."""

    @functools.wraps(write)
    def guarded(self: FileFormat, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        require_free_space(path, weights, options.get("dtype"))
        try:
            return write(self, path, weights, options)
        except MemoryError:
            raise InputFileError(f"{path}: not enough memory to write it; use a machine with more memory") from None
        except OSError as error:
            if error.errno not in _DISK_FULL:
                raise
            raise InputFileError(
                f"{path}: the disk is full ({error.strerror or error}); free space or write to another folder"
            ) from None

    return guarded


#: errno values of a full disk or an exhausted quota.
_DISK_FULL = {28, 122}  # ENOSPC, EDQUOT
#: Room every written file needs beyond its arrays (HDF5 and zip headers, a Keras config).
_WRITE_OVERHEAD = 256 << 10


def require_free_space(path: Path, weights: LSTMWeights, dtype: Any = None) -> None:
    """Refuse before writing when ``path``'s file system cannot hold twice the arrays (Keras writes its HDF5
    weights, then the zip holding them) plus headers."""
    arrays = weights.named_arrays().values()
    elements = sum(int(getattr(array, "size", 0)) for array in arrays)
    sizes = [int(getattr(getattr(array, "dtype", None), "itemsize", 8)) for array in arrays]
    itemsize = max([*sizes, 8 if dtype == "float64" else 4])
    needed = 2 * elements * itemsize + _WRITE_OVERHEAD
    try:
        info = os.statvfs(path.parent)
    except (OSError, AttributeError):
        return  # no statvfs here (Windows): the write itself reports a full disk
    free = info.f_bavail * info.f_frsize
    if free < needed:
        raise InputFileError(
            f"{path}: not enough free space to write it: it needs about {needed} bytes and the file system has "
            f"{free} free; free space or write to another folder"
        )


def _project_folders() -> tuple[str, ...]:
    import lstm_conformance
    import lstm_conformance.reference

    modules = (lstm_conformance, lstm_conformance.reference)
    roots = {os.path.dirname(os.path.abspath(module.__file__ or "")) for module in modules}
    roots.add(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # adapters/
    return tuple(root + os.sep for root in roots)


def raised_by_library(error: BaseException) -> bool:
    """Whether ``error`` was raised in a library's code (a third-party package or the standard library)
    rather than in this project's: the innermost frame of its traceback decides."""
    traceback = error.__traceback__
    if traceback is None:
        return False
    while traceback.tb_next is not None:
        traceback = traceback.tb_next
    filename = os.path.abspath(traceback.tb_frame.f_code.co_filename)
    return not filename.startswith(_project_folders())


def get_format(name: str) -> FileFormat:
    if name not in FORMATS:
        raise LSTMConformanceError(f"unknown format {name!r}; known: {', '.join(FORMATS)}")
    module_name, _, class_name = FORMATS[name].partition(":")
    module = importlib.import_module(module_name)
    instance: FileFormat = getattr(module, class_name)()
    return instance


def infer_format(path: Path) -> str:
    """The format a path's name implies; a TF checkpoint prefix is recognized by its ``.index`` file."""
    text = path.name.lower()
    for suffix, name in SUFFIXES.items():
        if text.endswith(suffix):
            return name
    if Path(f"{path}.index").exists() or _is_checkpoint_place(path):
        return "tf-checkpoint"
    raise InputFileError(
        f"cannot tell the format of {path} from its name; pass --from/--to with one of: {', '.join(FORMATS)}"
    )


def _is_checkpoint_place(path: Path) -> bool:
    """A TF checkpoint directory or state file, or a Saver prefix given without its step (``model.ckpt`` for
    ``model.ckpt-2.index``): the tf-checkpoint reader resolves each to a prefix."""
    if path.name == "checkpoint" and path.is_file():
        return True
    if path.is_dir():
        return (path / "checkpoint").is_file() or any(path.glob("*.index"))
    return path.parent.is_dir() and any(path.parent.glob(f"{glob.escape(path.name)}-*.index"))


# ----------------------------------------------------------------------------------------------------------
# What every format's reader and writer share: refusing options, short error text, telling formats apart
# ----------------------------------------------------------------------------------------------------------


def refuse_options(options: Mapping[str, Any], allowed: tuple[str, ...], what: str) -> dict[str, Any]:
    """The options that are set (not None); any that ``what`` does not use is refused, never silently ignored."""
    given = {key: value for key, value in options.items() if value is not None}
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "none"
        raise NotImplementedOptionError(f"{what} takes no option {', '.join(unknown)} (it takes: {takes}); drop it")
    return given


def error_summary(error: BaseException, limit: int = 160) -> str:
    """A library's error in a few words: its first line, cut at the first sentence when long (torch's and
    TensorFlow's run to paragraphs of advice that does not apply here), or its type when it says nothing."""
    lines = str(error).strip().splitlines()
    text = lines[0].strip() if lines else ""
    if len(text) > limit and ". " in text[:limit]:
        text = text[: text.index(". ")]
    text = text if len(text) > 12 else f"{type(error).__name__}: {text}".rstrip(": ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


#: HDF5's signature (Keras .h5 and .weights.h5, and the weights inside a .keras archive).
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: What ``sniff_format``'s answers are, in the words users know them by.
_SNIFFED = {
    "keras-h5": "Keras HDF5 (.h5)",
    "keras": "Keras .keras",
    "torch": "PyTorch torch.save",
    "safetensors": "safetensors",
    "npz": "NumPy .npz",
}


def sniff_format(path: Path) -> str | None:
    """The format ``path``'s first bytes (and, for a zip, its member names) show, or None when they do not
    tell: for naming the fix when a file has a misleading suffix. ONNX and TF checkpoints have no signature."""
    if not path.is_file():  # a FIFO would block the read, a device never end
        return None
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError:
        return None
    if head.startswith(_HDF5_MAGIC):
        return "keras-h5"
    if head[:4] in _ZIP_MAGICS:
        return _zip_format(path)
    if head[:2] == b"\x80\x02":  # torch.save's legacy (pre-1.6) pickle format
        return "torch"
    if len(head) >= 9 and head[8:9] == b"{" and struct.unpack("<Q", head[:8])[0] < 100_000_000:
        return "safetensors"  # an 8-byte header length, then the JSON header
    return None


def _zip_format(path: Path) -> str | None:
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except Exception:  # a truncated archive, or undecodable member names: nothing to tell by
        return None
    if any(name.endswith("data.pkl") for name in members):
        return "torch"
    if "config.json" in members and "model.weights.h5" in members:
        return "keras"
    if members and all(name.endswith(".npy") for name in members):
        return "npz"
    return None


def format_hint(path: Path, expected: str) -> str:
    """The fix for a file that ``expected``'s reader cannot read: the --from of the format its bytes show,
    else saving it again (a truncated or damaged file) or naming its format."""
    actual = sniff_format(path)
    if actual is not None and actual != expected:
        return f"it is a {_SNIFFED[actual]} file: pass --from {actual}"
    return f"it may be truncated or damaged: write it again, or if it is not {expected}, pass --from with its format"
