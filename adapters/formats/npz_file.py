"""The canonical ``.npz`` (``reference.layout.save_npz``/``load_npz``): one bare LSTM, run by the reference."""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters.formats import FileFormat, FoundLSTM, ModelContents
from reference.errors import InputFileError, LayoutError, NotImplementedOptionError
from reference.layout import LSTMWeights, load_npz, save_npz

#: The first bytes of a zip archive (an .npz is one); an empty archive starts with the second.
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
#: dtypes NumPy holds that an npz may store (bfloat16 has no NumPy dtype).
WRITE_DTYPES = ("float64", "float32", "float16")


class NpzFormat(FileFormat):
    """``.npz`` in the canonical key schema of ``reference.layout`` (NPZ_FORMAT_VERSION)."""

    name = "npz"
    framework = "NumPy"
    implementation = "reference"

    def read(self, path: Path, options: Mapping[str, Any]) -> ModelContents:
        _refuse_options(options)
        _check_zip_magic(path)
        try:
            weights = load_npz(path)
        except LayoutError as error:
            raise InputFileError(f"{error}; {_foreign_zip_hint(path)}") from None
        # A damaged archive fails inside zipfile or zlib, which load_npz does not translate.
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as error:
            raise InputFileError(f"{path}: damaged .npz ({error}); write it again") from None
        return ModelContents(lstms=[FoundLSTM(name="", weights=weights, implementation=self.implementation)])

    def write(self, path: Path, weights: LSTMWeights, options: Mapping[str, Any]) -> list[str]:
        _refuse_options(options, allowed=("dtype",))
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


def _refuse_options(options: Mapping[str, Any], allowed: tuple[str, ...] = ()) -> None:
    given = sorted(key for key, value in options.items() if value is not None and key not in allowed)
    if given:
        raise NotImplementedOptionError(
            f"the npz format takes no option {', '.join(given)} (it takes: {', '.join(allowed) or 'none'}); "
            "the canonical layout already holds the whole function"
        )


def _check_zip_magic(path: Path) -> None:
    """Refuse a file that is no zip archive at all (a .npy, a torch pickle) before NumPy guesses at it."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if head not in _ZIP_MAGICS:
        raise InputFileError(f"{path}: not an .npz (zip) file; if it is another format, pass --from with its name")


def _foreign_zip_hint(path: Path) -> str:
    """The fix for a zip that is not a canonical .npz; torch.save's files are zips too."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        members = []
    if any(name.endswith("/data.pkl") for name in members):
        return "it is a PyTorch torch.save file: pass --from torch"
    if "config.json" in members and "model.weights.h5" in members:
        return "it is a Keras .keras archive: pass --from keras"
    return "write it with reference.layout.save_npz, or pass --from with its format"
