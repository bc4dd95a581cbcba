"""Model files as users have them, one module per format with the same two functions.

Each format module defines a ``FileFormat`` subclass; ``FORMATS`` maps the format names of DESIGN.md to
"module:class", imported lazily. A reader returns every LSTM it finds in canonical form with the
implementation that runs that file's layout natively; a writer writes one canonical LSTM so that the
framework's own loading code reads it without this project.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reference.errors import InputFileError, LSTMConformanceError
from reference.layout import LSTMWeights

#: Format name -> "module:class". Order matters for suffix inference: first match wins.
FORMATS: dict[str, str] = {
    "npz": "adapters.formats.npz_file:NpzFormat",
    "torch": "adapters.formats.torch_file:TorchFormat",
    "safetensors": "adapters.formats.torch_file:SafetensorsFormat",
    "keras": "adapters.formats.keras_file:KerasFormat",
    "keras-h5": "adapters.formats.keras_file:KerasH5Format",
    "tf-checkpoint": "adapters.formats.tf_checkpoint:TFCheckpointFormat",
    "onnx": "adapters.formats.onnx_file:OnnxFormat",
}

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
    ".npz": "npz",
    ".ckpt": "tf-checkpoint",
}


@dataclass
class FoundLSTM:
    """One LSTM read from a file.

    ``name``: where it sits in the file (a state_dict prefix, a Keras layer name; "" for a bare LSTM).
    ``implementation`` and ``implementation_options``: what runs this file's layout natively
    (``adapters.registry.get_implementation(implementation, **implementation_options)``).
    ``notes``: assumptions made while reading, said to the user (for example TF's forget_bias).
    ``batch_first``: the layout the file's own model takes its input in (informational).
    """

    name: str
    weights: LSTMWeights
    implementation: str
    implementation_options: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    batch_first: bool = False


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
    if Path(f"{path}.index").exists():
        return "tf-checkpoint"
    raise InputFileError(
        f"cannot tell the format of {path} from its name; pass --from/--to with one of: {', '.join(FORMATS)}"
    )
