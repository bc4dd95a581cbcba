"""PyTorch model files: ``.pt``/``.pth`` (``torch.save``) and ``.safetensors``, both holding state_dicts.

Reading accepts the state_dict of one ``nn.LSTM`` or of a larger model holding any number of them under
prefixes (``encoder.lstm.weight_ih_l0`` is the LSTM "encoder.lstm"; DataParallel's ``module.`` is one more
prefix), ``nn.LSTMCell`` keys (``<prefix>weight_ih`` beside ``<prefix>weight_hh``, read as a one-layer LSTM run
by "torch-cell"), and training checkpoints: a dict holding such a state_dict under any key and at any depth
(``model_state_dict``, ``net``, ...), found by its keys rather than by the wrapper's name. Every other tensor
(optimizer state, embeddings) is listed in ``ModelContents.other_tensors`` by its dotted path. ``.pt`` files are
loaded with ``torch.load(weights_only=True)``, so a pickled payload never runs: a file holding anything but
tensors and plain containers is refused.

A state_dict holds weights only: nn.LSTM's ``batch_first`` and whether the model packs padded batches are in
its code, so every FoundLSTM says those assumptions (``batch_first`` None) and has no ``run_source``.

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
from lstm_conformance.adapters.layouts.torch import (
    FRAMEWORK,
    LSTM_KEY_PATTERN,
    describe,
    from_state_dict,
    to_state_dict,
)
from lstm_conformance.reference.errors import InputFileError, LSTMConformanceError, UnsupportedFeatureError
from lstm_conformance.reference.layout import LSTMWeights

#: dtypes a written file may hold (options["dtype"]).
WRITE_DTYPES = ("float64", "float32", "float16", "bfloat16")
_FIRST_KEY = "weight_ih_l0"
#: nn.LSTMCell's state_dict keys, and the nn.LSTM key each is (a cell is a one-layer LSTM stepped by the caller).
CELL_KEYS = {"weight_ih": "weight_ih_l0", "weight_hh": "weight_hh_l0", "bias_ih": "bias_ih_l0", "bias_hh": "bias_hh_l0"}
#: What a torch state_dict does not store that changes the function the model computes.
BATCH_LAYOUT_ASSUMPTION = (
    "batch layout not stored (time-major [T, B, I] assumed; nn.LSTM's batch_first is a constructor argument, "
    "not part of the state_dict)"
)
PACKING_ASSUMPTION = (
    "every sample runs all T steps assumed: whether the model packs padded batches (pack_padded_sequence) is "
    "in its code, not in the state_dict"
)
CELL_LOOP_ASSUMPTION = (
    "nn.LSTMCell computes one step; read as the LSTM that steps it over time from t=0 with the state carried "
    "(the loop is the model's code, not in the state_dict)"
)


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
    """Every nn.LSTM and nn.LSTMCell in what ``torch.load``/``load_file`` returned, and the names of the other
    tensors (optimizer state included, left alone)."""
    if not isinstance(loaded, Mapping):
        raise InputFileError(
            f"{path}: holds a {type(loaded).__name__}, not a state_dict (a dict of tensors such as model.state_dict())"
        )
    containers, skipped = _containers(loaded)
    found = [(where, prefix, kind) for where, tensors in containers.items() for prefix, kind in _modules(tensors)]
    if not found:
        everything = [_joined(where, key) for where, tensors in containers.items() for key in tensors]
        shown = ", ".join(sorted(everything)[:8]) or "none"
        top = ", ".join(sorted(str(key) for key in loaded)[:8]) or "none"
        raise InputFileError(
            f"{path}: no nn.LSTM weights found (no key ending in {_FIRST_KEY}, nor nn.LSTMCell's weight_ih beside "
            f"weight_hh, at any depth; top-level entries: {top}); tensors in the file: {shown}"
        )
    holders = sorted({where for where, _prefix, _kind in found})
    notes = _container_notes(holders, loaded, skipped)
    lstms: list[FoundLSTM] = []
    used: set[str] = set()
    for where, prefix, kind in found:
        tensors = containers[where]
        module_keys = {key[len(prefix) :]: key for key in tensors if _belongs(key, prefix, kind)}
        used.update(_joined(where, key) for key in module_keys.values())
        name = prefix[:-1] if len(holders) == 1 else _joined(where, prefix[:-1])
        module = {short: tensors[key] for short, key in module_keys.items()}
        lstms.append(_read_lstm(path, name, module, kind, notes))
    every_tensor = {_joined(where, key) for where, tensors in containers.items() for key in tensors}
    return ModelContents(sorted(lstms, key=lambda lstm: lstm.name), sorted(every_tensor - used))


def _joined(where: str, key: str) -> str:
    return f"{where}.{key}" if where and key else where or key


def _containers(loaded: Mapping[Any, Any]) -> tuple[dict[str, dict[str, Any]], list[str]]:
    """The tensors of ``loaded`` grouped by the dict (or list) directly holding them, by that container's
    dotted path ("" for the top level: a plain state_dict), and the paths of the entries that are not tensors.
    A training checkpoint's model state_dict is then one container among others (optimizer state, ...)."""
    import torch

    containers: dict[str, dict[str, Any]] = {}
    skipped: list[str] = []

    def walk(where: str, node: Any) -> None:
        items = node.items() if isinstance(node, Mapping) else enumerate(node)
        for key, value in items:
            if isinstance(value, torch.Tensor):
                containers.setdefault(where, {})[str(key)] = value
            elif isinstance(value, Mapping | list | tuple) and value:
                walk(_joined(where, str(key)), value)
            else:
                skipped.append(_joined(where, str(key)))

    walk("", loaded)
    return containers, skipped


def _modules(tensors: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(prefix, "lstm" or "cell") of every nn.LSTM (``<prefix>weight_ih_l0``) and nn.LSTMCell
    (``<prefix>weight_ih`` beside ``<prefix>weight_hh``) in one state_dict, prefixes at module boundaries."""
    found = [(prefix, "lstm") for prefix in lstm_prefixes(tensors)]
    for key in tensors:
        if key == "weight_ih" or key.endswith(".weight_ih"):
            prefix = key[: -len("weight_ih")]
            if f"{prefix}weight_hh" in tensors and f"{prefix}{_FIRST_KEY}" not in tensors:
                found.append((prefix, "cell"))
    return sorted(found)


def lstm_prefixes(keys: Mapping[str, Any]) -> list[str]:
    """Prefixes (``""``, ``"encoder.lstm."``) of the keys ending in ``weight_ih_l0`` at a module boundary."""
    found = [key[: -len(_FIRST_KEY)] for key in keys if key.endswith(_FIRST_KEY)]
    return sorted(prefix for prefix in found if prefix == "" or prefix.endswith("."))


def _belongs(key: str, prefix: str, kind: str) -> bool:
    if not key.startswith(prefix):
        return False
    rest = key[len(prefix) :]
    return rest in CELL_KEYS if kind == "cell" else LSTM_KEY_PATTERN.match(rest) is not None


def _container_notes(holders: list[str], loaded: Mapping[Any, Any], skipped: list[str]) -> list[str]:
    """Where the state_dict was found and what was left alone beside it."""
    if holders == [""]:
        return [f"entries that are not tensors were left alone: {', '.join(sorted(skipped)[:6])}"] if skipped else []
    top = {holder.split(".")[0] for holder in holders}
    others = sorted(str(key) for key in loaded if str(key) not in top)
    where = ", ".join(repr(holder) for holder in holders)
    note = f"read the state_dict stored under {where}"
    return [note + (f"; other entries left alone: {', '.join(others[:6])}" if others else "")]


def _read_lstm(path: Path, name: str, tensors: Mapping[str, Any], kind: str, shared_notes: list[str]) -> FoundLSTM:
    import torch

    notes = list(shared_notes)
    if any(tensor.dtype == torch.bfloat16 for tensor in tensors.values()):
        notes.append("stored in bfloat16, which NumPy lacks; read as float32 (exact)")
        tensors = {key: t.float() if t.dtype == torch.bfloat16 else t for key, t in tensors.items()}
    module = "nn.LSTMCell" if kind == "cell" else "nn.LSTM"
    what = "LSTMCell" if kind == "cell" else "LSTM"
    where = f"the {what} {name!r}" if name else f"the {what}"
    unreadable = sorted({str(t.dtype) for t in tensors.values() if t.dtype not in _READ_DTYPES(torch)})
    if unreadable:  # float8, integers, complex: no LSTM weights NumPy and the reference hold
        raise InputFileError(f"{path}: {where} holds {', '.join(unreadable)} tensors; save it in float32 or float64")
    try:
        weights = from_state_dict(
            {CELL_KEYS[key]: value for key, value in tensors.items()} if kind == "cell" else tensors
        )
    except LSTMConformanceError as error:
        prefix = f"{name}." if name else ""
        raise InputFileError(f"{path}: {where} (keys {prefix}*) does not fit {module}'s layout: {error}") from None
    assumptions = [BATCH_LAYOUT_ASSUMPTION, PACKING_ASSUMPTION]
    if kind == "cell":
        notes.append(f"an nn.LSTMCell state_dict ({', '.join(sorted(tensors))}), read as a one-layer LSTM")
        assumptions.insert(0, CELL_LOOP_ASSUMPTION)
    return FoundLSTM(
        name=name,
        weights=weights,
        implementation="torch-cell" if kind == "cell" else "torch",
        notes=notes,
        batch_first=None,
        assumptions=assumptions,
    )
