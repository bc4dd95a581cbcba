"""PyTorch model files: ``.pt``/``.pth`` (``torch.save``) and ``.safetensors``, both holding state_dicts.

Reading accepts the state_dict of one ``nn.LSTM`` or of a larger model holding any number of them under
prefixes (``encoder.lstm.weight_ih_l0`` is the LSTM "encoder.lstm"), and a dict wrapping such a state_dict
under ``"state_dict"`` or ``"model"`` (as training checkpoints do). Every LSTM is found by its
``<prefix>weight_ih_l0`` key and read through ``adapters.pytorch``'s one mapping; every other tensor is listed
in ``ModelContents.other_tensors``. ``.pt`` files are loaded with ``torch.load(weights_only=True)``, so a
pickled payload never runs: a file holding anything but tensors and plain containers is refused.

Writing gives a plain state_dict of one ``nn.LSTM`` (no prefix), in the canonical arrays' own dtype unless
``options["dtype"]`` names another, which ``nn.LSTM(...).load_state_dict(..., strict=True)`` accepts.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    error_summary,
    format_hint,
    guards,
    refuse_options,
)
from lstm_conformance.adapters.pytorch import FRAMEWORK, LSTM_KEY_PATTERN, describe, from_state_dict, to_state_dict
from lstm_conformance.reference.errors import InputFileError, LSTMConformanceError, UnsupportedFeatureError
from lstm_conformance.reference.layout import LSTMWeights

#: dtypes a written file may hold (options["dtype"]).
WRITE_DTYPES = ("float64", "float32", "float16", "bfloat16")
#: Keys under which training checkpoints commonly wrap a model's state_dict.
WRAPPER_KEYS = ("state_dict", "model")
_FIRST_KEY = "weight_ih_l0"


def _READ_DTYPES(torch: Any) -> tuple[Any, ...]:
    return (torch.float16, torch.float32, torch.float64)


def _unavailable(*modules: str) -> str | None:
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (pip install 'lstm-conformance[torch]')"
    return None


class TorchFormat(FileFormat):
    """``.pt``/``.pth``: what ``torch.save(model.state_dict(), path)`` writes."""

    name = "torch"
    framework = FRAMEWORK
    implementation = "torch"

    def unavailable_reason(self) -> str | None:
        return _unavailable("torch")

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), f"reading a {self.name} file")
        return contents_of(path, self._load(path))

    def _load(self, path: Path) -> Any:
        import pickle

        import torch

        guards.check_torch_file(path)
        _require_file(path)
        try:
            return torch.load(path, weights_only=True, map_location="cpu")
        except pickle.UnpicklingError as error:
            refused = re.search(r"GLOBAL ([\w.]+)", str(error))
            if refused is None:  # "Unsupported operand": the bytes are not a pickle stream at all
                raise InputFileError(
                    f"{path}: not a readable PyTorch file (corrupt, truncated or another format): it is not a "
                    f"torch.save archive or pickle; {format_hint(path, self.name)}"
                ) from None
            raise InputFileError(
                f"{path}: refused, it holds pickled Python objects ({refused.group(1)}) beyond tensors and plain "
                "containers, which weights_only loading never runs (a whole nn.Module saved with "
                "torch.save(model), say); save model.state_dict() instead"
            ) from None
        except Exception as error:  # torch raises RuntimeError, EOFError, KeyError, ... for a damaged file
            raise InputFileError(
                f"{path}: not a readable PyTorch file (corrupt, truncated or another format): "
                f"{error_summary(error)}; {format_hint(path, self.name)}"
            ) from None

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        import torch

        refuse_options(options, ("dtype",), f"writing a {self.name} file")
        tensors, dtype = state_tensors(weights, options.get("dtype"))
        torch.save(tensors, path)
        return _write_notes(weights, dtype, "module.load_state_dict(torch.load(path, weights_only=True))")


class SafetensorsFormat(TorchFormat):
    """``.safetensors`` holding a PyTorch state_dict (same key schema as ``.pt``)."""

    name = "safetensors"

    def unavailable_reason(self) -> str | None:
        return _unavailable("torch", "safetensors")

    def _load(self, path: Path) -> Any:
        from safetensors.torch import load_file

        guards.require_regular_file(path)
        _require_file(path)
        try:
            return load_file(path, device="cpu")
        except Exception as error:  # safetensors raises SafetensorError (and OSError) for a damaged file
            raise InputFileError(
                f"{path}: not a readable safetensors file (corrupt, truncated or another format): "
                f"{error_summary(error)}; {format_hint(path, self.name)}"
            ) from None

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        from safetensors.torch import save_file

        refuse_options(options, ("dtype",), f"writing a {self.name} file")
        tensors, dtype = state_tensors(weights, options.get("dtype"))
        save_file(tensors, str(path), metadata={"format": "pt"})
        return _write_notes(weights, dtype, "module.load_state_dict(safetensors.torch.load_file(path))")


def _require_file(path: Path) -> None:
    if not path.is_file():
        raise InputFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    if path.stat().st_size == 0:
        raise InputFileError(f"{path}: the file is empty")


def state_tensors(weights: LSTMWeights, dtype: str | None) -> tuple[dict[str, Any], str]:
    """The nn.LSTM state_dict of ``weights`` as CPU tensors, in ``dtype`` (default: the arrays' own dtype)."""
    import torch

    if dtype is not None and dtype not in WRITE_DTYPES:
        raise UnsupportedFeatureError(FRAMEWORK, f"dtype {dtype!r} in a file", f"choose one of {WRITE_DTYPES}")
    arrays = to_state_dict(weights)
    tensors = {key: torch.from_numpy(array) for key, array in arrays.items()}
    if dtype is not None:
        tensors = {key: tensor.to(getattr(torch, dtype)) for key, tensor in tensors.items()}
    written = dtype or str(next(iter(arrays.values())).dtype)
    return {key: tensor.contiguous() for key, tensor in tensors.items()}, written


def _write_notes(weights: LSTMWeights, dtype: str, how: str) -> list[str]:
    return [
        f"wrote the state_dict of {describe(weights.config)} in {dtype} (the weights' own dtype unless --dtype "
        f"chose one); load it with {how}"
    ]


# ----------------------------------------------------------------------------------------------------------
# Finding the LSTMs in a loaded state_dict
# ----------------------------------------------------------------------------------------------------------


def contents_of(path: Path, loaded: Any) -> ModelContents:
    """Every nn.LSTM in what ``torch.load``/``load_file`` returned, and the names of the other tensors."""
    import torch

    state, notes = _unwrap(path, loaded)
    # Keys that are not strings (an int key in a hand-made dict) are no module's parameters: left alone.
    tensors = {key: value for key, value in state.items() if isinstance(value, torch.Tensor) and isinstance(key, str)}
    skipped = sorted(str(key) for key in state if key not in tensors)
    if skipped:
        notes.append(f"entries that are not tensors were left alone: {', '.join(skipped[:6])}")
    prefixes = lstm_prefixes(tensors)
    if not prefixes:
        shown = ", ".join(sorted(tensors)[:6]) or "none"
        raise InputFileError(
            f"{path}: no nn.LSTM weights found (no key ending in {_FIRST_KEY}); tensors in the file: {shown}"
        )
    lstms: list[FoundLSTM] = []
    used: set[str] = set()
    for prefix in prefixes:
        keys = {key[len(prefix) :]: key for key in tensors if _belongs(key, prefix)}
        used.update(keys.values())
        name = prefix[:-1]
        lstms.append(_read_lstm(path, name, {short: tensors[key] for short, key in keys.items()}, notes))
    return ModelContents(lstms, sorted(set(tensors) - used))


def lstm_prefixes(keys: Mapping[str, Any]) -> list[str]:
    """Prefixes (``""``, ``"encoder.lstm."``) of the keys ending in ``weight_ih_l0`` at a module boundary."""
    found = [key[: -len(_FIRST_KEY)] for key in keys if key.endswith(_FIRST_KEY)]
    return sorted(prefix for prefix in found if prefix == "" or prefix.endswith("."))


def _belongs(key: str, prefix: str) -> bool:
    return key.startswith(prefix) and LSTM_KEY_PATTERN.match(key[len(prefix) :]) is not None


def _unwrap(path: Path, loaded: Any) -> tuple[Mapping[str, Any], list[str]]:
    if not isinstance(loaded, Mapping):
        raise InputFileError(
            f"{path}: holds a {type(loaded).__name__}, not a state_dict (a dict of tensors such as model.state_dict())"
        )
    for wrapper in WRAPPER_KEYS:
        inner = loaded.get(wrapper)
        if isinstance(inner, Mapping) and not any(str(key).endswith(_FIRST_KEY) for key in loaded):
            others = sorted(str(key) for key in loaded if key != wrapper)
            note = f"read the state_dict stored under {wrapper!r}"
            return inner, [note + (f"; other entries left alone: {', '.join(others[:6])}" if others else "")]
    return loaded, []


def _read_lstm(path: Path, name: str, tensors: Mapping[str, Any], shared_notes: list[str]) -> FoundLSTM:
    import torch

    notes = list(shared_notes)
    if any(tensor.dtype == torch.bfloat16 for tensor in tensors.values()):
        notes.append("stored in bfloat16, which NumPy lacks; read as float32 (exact)")
        tensors = {key: t.float() if t.dtype == torch.bfloat16 else t for key, t in tensors.items()}
    where = f"the LSTM {name!r}" if name else "the LSTM"
    unreadable = sorted({str(t.dtype) for t in tensors.values() if t.dtype not in _READ_DTYPES(torch)})
    if unreadable:  # float8, integers, complex: no LSTM weights NumPy and the reference hold
        raise InputFileError(f"{path}: {where} holds {', '.join(unreadable)} tensors; save it in float32 or float64")
    try:
        weights = from_state_dict(tensors)
    except LSTMConformanceError as error:
        prefix = f"{name}." if name else ""
        raise InputFileError(f"{path}: {where} (keys {prefix}*) does not fit nn.LSTM's layout: {error}") from None
    return FoundLSTM(name=name, weights=weights, implementation="torch", notes=notes)
