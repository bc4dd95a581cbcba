"""The canonical ``.npz`` (``reference.layout.save_npz``/``load_npz``): one bare LSTM, run by the reference."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lstm_conformance.adapters.formats import (
    FileFormat,
    FoundLSTM,
    ModelContents,
    fields,
    format_hint,
    guards,
    refuse_options,
)
from lstm_conformance.reference.errors import InputFileError, LayoutError, NotImplementedOptionError
from lstm_conformance.reference.layout import LSTMWeights, load_npz, save_npz

#: The first bytes of a zip archive (an .npz is one); an empty archive starts with the second.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: Why the canonical npz takes no reading option (forget_bias and the like).
_NO_OPTIONS = "the npz format (the canonical layout already holds the whole function)"
#: dtypes NumPy holds that an npz may store (bfloat16 has no NumPy dtype).
WRITE_DTYPES = ("float64", "float32", "float16")


class NpzFormat(FileFormat):
    """``.npz`` in the canonical key schema of ``reference.layout`` (NPZ_FORMAT_VERSION)."""

    name = "npz"
    framework = "NumPy"
    implementation = "reference"

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        refuse_options(options, (), _NO_OPTIONS)
        guards.check_npz(path)
        _check_zip_magic(path)
        fields.check_canonical_npz(path)
        try:
            weights = load_npz(path)
        except LayoutError as error:
            raise InputFileError(f"{error}; {_foreign_zip_hint(path)}") from None
        # A damaged archive fails inside zipfile or zlib, which load_npz does not translate.
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
            raise InputFileError(f"{path}: damaged .npz ({error}); write it again") from None
        return ModelContents(lstms=[FoundLSTM(name="", weights=weights, implementation=self.implementation)])

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        refuse_options(options, ("dtype",), _NO_OPTIONS)
        dtype = options.get("dtype")
        if dtype is None:
            save_npz(path, weights)
            return []
        if dtype not in WRITE_DTYPES:
            raise NotImplementedOptionError(
                f"npz cannot store dtype {dtype!r}; choose one of {', '.join(WRITE_DTYPES)}"
            )
        save_npz(path, weights.astype(dtype))
        return [f"weights stored as {dtype}"]


def _check_zip_magic(path: Path) -> None:
    """Refuse a file that is no zip archive at all (a .npy, a torch pickle) before NumPy guesses at it."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head not in _ZIP_MAGICS:
        raise InputFileError(f"{path}: not an .npz (zip) file; {format_hint(path, 'npz')}")


def _foreign_zip_hint(path: Path) -> str:
    """The fix for a zip that is not a canonical .npz; torch.save's and Keras' files are zips too."""
    hint = format_hint(path, "npz")
    if hint.startswith("it is a "):
        return hint
    return "write it with reference.layout.save_npz, or pass --from with its format"
