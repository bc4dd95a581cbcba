"""Checks a model file passes before any reader parses it: files from strangers are an attack surface.

Three promises, each checked before a byte of tensor data is read:

- Nothing outside the file is read: only regular files are opened (no FIFO, device, or symlink to one);
  HDF5 datasets with external storage, virtual datasets, external links and soft links leaving the file are
  refused; ONNX external data only from regular files inside the model's own folder.
- Memory is bounded by what the file holds: every tensor's declared bytes are compared with the bytes the file
  stores for it (zip members' compressed sizes, HDF5 allocated storage, a torch storage's bytes, the bytes
  present in an external data file). A tensor declaring more than ``MAX_EXPANSION`` times what it stores plus
  ``SLACK_BYTES`` is refused, naming the tensor and both sizes. The bound is a ratio, not a cap on model size:
  a 369 MB model stored as 369 MB passes.
- A file is opened once and read in bounded pieces (``read_bounded``).

Why 64: uncompressed formats (torch.save, safetensors, contiguous HDF5, TF bundles) store exactly what they
declare (ratio 1); trained float weights deflate to 1.05-1.3x; deflate's own maximum is about 1032x, reached by
constant data, which is what a bomb is made of. 64x leaves room for sparse or zero-padded real weights and
bounds a hostile file's memory at 64 times its size; the slack lets tiny all-zero test models through.
"""

from __future__ import annotations

import json
import math
import os
import stat
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from lstm_conformance.reference.errors import InputFileError

#: A tensor may declare at most this many times the bytes the file stores for it (plus SLACK_BYTES).
MAX_EXPANSION = 64
#: Declared bytes always allowed, whatever is stored (an all-zero tiny model compresses to nearly nothing).
SLACK_BYTES = 1 << 20
#: Members a model archive may hold (a .keras has 3, an .npz of 8 layers about 60, torch.save one per storage).
MAX_ZIP_MEMBERS = 100_000
#: What a JSON document inside a file (a Keras config) may take.
MAX_JSON_BYTES = 64 << 20


def allowed_bytes(stored: int) -> int:
    """The most bytes a tensor storing ``stored`` bytes may declare."""
    return MAX_EXPANSION * max(0, int(stored)) + SLACK_BYTES


def check_declared(path: Path, what: str, declared: int, stored: int, how: str = "stores") -> None:
    """Refuse ``what`` declaring far more bytes than the file ``how`` for it (compression bomb, stride-0 view,
    unallocated chunks, sparse external file)."""
    if declared > allowed_bytes(stored):
        raise InputFileError(
            f"{path}: {what} declares {_size(declared)} but the file {how} {_size(stored)} for it (more than "
            f"{MAX_EXPANSION}x): refused as a decompression bomb or forged header; save the model again with "
            "its framework's own save function"
        )


def _size(count: int) -> str:
    if count < 10_000:
        return f"{count} bytes"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit} ({count} bytes)"
    return f"{count} bytes"


# ----------------------------------------------------------------------------------------------------------
# Regular files only
# ----------------------------------------------------------------------------------------------------------


def require_regular_file(path: Path, what: str = "model file") -> int:
    """The size of ``path`` after checking that it is (or links to) a regular file: a FIFO, a device such as
    /dev/zero, a socket or a directory is refused before anything reads it. Opened with O_NONBLOCK so a FIFO
    without a writer cannot hang the check; the type comes from fstat of what was opened."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise InputFileError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise InputFileError(f"{path}: is a directory; give a {what}") from None
    except OSError as error:
        raise InputFileError(f"{path}: cannot open ({error.strerror}); check the path and its permissions") from None
    try:
        info = os.fstat(descriptor)
    finally:
        os.close(descriptor)
    if not stat.S_ISREG(info.st_mode):
        kind = _file_kind(info.st_mode)
        raise InputFileError(f"{path}: is {kind}, not a regular file; give the {what} itself")
    return int(info.st_size)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a directory"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bounded(path: Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes."""
    size = require_regular_file(path, what)
    if size > limit:
        raise InputFileError(f"{path}: {what} of {_size(size)} is larger than the {_size(limit)} it may be")
    with open(path, "rb") as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise InputFileError(f"{path}: {what} grew past {_size(limit)} while being read")
    return data


# ----------------------------------------------------------------------------------------------------------
# Zip archives: .keras, .npz, torch.save's .pt
# ----------------------------------------------------------------------------------------------------------


def check_zip(path: Path, source: Any = None) -> list[zipfile.ZipInfo]:
    """The members of the zip at ``path`` (or in ``source``) after checking each one: a name that stays
    inside the archive, a declared size within MAX_EXPANSION of its compressed size, and a bounded count.
    Python's zipfile and torch's reader never produce more than a member's declared size, so checking the
    declared sizes bounds what reading allocates. Not a zip at all: an empty list (the reader says why)."""
    try:
        with zipfile.ZipFile(source if source is not None else path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError):
        return []
    if len(members) > MAX_ZIP_MEMBERS:
        raise InputFileError(f"{path}: a zip archive of {len(members)} members (at most {MAX_ZIP_MEMBERS}); refused")
    total_declared = total_stored = 0
    for member in members:
        check_member_name(path, member.filename)
        stored = member.compress_size
        check_declared(path, f"archive member {member.filename!r}", member.file_size, stored, "compresses to")
        total_declared += member.file_size
        total_stored += stored
    check_declared(path, "the archive's members together", total_declared, total_stored, "compresses to")
    return members


def check_member_name(path: Path, name: str) -> None:
    """A member name that cannot leave the archive's folder if someone extracts it: relative, no ``..``."""
    pure = PurePosixPath(name.replace("\\", "/"))
    if pure.is_absolute() or ".." in pure.parts or (len(name) > 1 and name[1] == ":") or "\x00" in name:
        raise InputFileError(f"{path}: archive member name {name!r} escapes the archive; refused")


def check_npz(path: Path) -> None:
    """Every ``.npy`` member's header: its shape times its itemsize must be the bytes the member holds, and
    no object (pickled) dtype. Read from the header alone, before np.load allocates the array."""
    require_regular_file(path)
    members = check_zip(path)
    if not members:
        return
    with zipfile.ZipFile(path) as archive:
        for member in members:
            if member.filename.endswith(".npy"):
                with archive.open(member) as stream:
                    _check_npy_header(path, member, stream)


def _check_npy_header(path: Path, member: zipfile.ZipInfo, stream: Any) -> None:
    from numpy.lib import format as npy

    name = member.filename
    try:
        version = npy.read_magic(stream)
        # Versions 2.0 and 3.0 differ only in the header's length field and encoding.
        read_header = getattr(npy, "_read_array_header", None)
        if version == (1, 0) or read_header is None:
            shape, _, dtype = npy.read_array_header_1_0(stream, max_header_size=10_000)
        else:
            shape, _, dtype = read_header(stream, version, max_header_size=10_000)
    except (ValueError, SyntaxError, TypeError, EOFError, OSError, zipfile.BadZipFile) as error:
        raise InputFileError(f"{path}: member {name!r} has no valid .npy header ({error}); write it again") from None
    if dtype.hasobject:
        raise InputFileError(f"{path}: member {name!r} holds Python objects (pickled); an .npz of arrays only is read")
    declared = math.prod(int(n) for n in shape) * dtype.itemsize
    if declared > member.file_size:
        raise InputFileError(
            f"{path}: member {name!r} declares shape {tuple(shape)} ({_size(declared)}) but holds "
            f"{_size(member.file_size)}; the file is forged or truncated: write it again"
        )


# ----------------------------------------------------------------------------------------------------------
# HDF5: .h5, .weights.h5, and the weights inside a .keras
# ----------------------------------------------------------------------------------------------------------


def check_hdf5(path: Path, root: Any, where: str = "") -> None:
    """Walk every link and object of the open h5py File ``root`` before any data is read: refuse external
    links, soft links out of the file, datasets with external raw storage, virtual datasets, and datasets
    declaring far more bytes than the file allocates for them (unallocated chunks, compression bombs)."""
    import h5py

    inside = f" ({where})" if where else ""
    for name, link in _links(root):
        if isinstance(link, h5py.ExternalLink):
            raise InputFileError(
                f"{path}{inside}: {name!r} is an HDF5 external link to {link.filename!r}; refused, since reading it "
                "would read another file: save the model again without external links"
            )
        if isinstance(link, h5py.SoftLink):
            target = str(link.path)
            if not target.startswith("/") or root.get(target, getlink=True) is None:
                raise InputFileError(
                    f"{path}{inside}: {name!r} is a soft link to {target!r}, outside the file; refused"
                )
    for name, item in _objects(root):
        if isinstance(item, h5py.Dataset):
            _check_dataset(path, inside, name, item)


def _links(root: Any) -> Iterator[tuple[str, Any]]:
    """Every link in the file, by name, with its kind (HDF5's link iteration does not follow soft or
    external links, so nothing outside the file is touched)."""
    names: list[bytes] = []
    root.id.links.visit(names.append)
    for raw in names:
        name = raw.decode(errors="replace")
        yield name, root.get(name, getlink=True)


def _objects(root: Any) -> Iterator[tuple[str, Any]]:
    """Every object reachable by hard links (visititems does not follow soft or external links)."""
    found: list[tuple[str, Any]] = []
    root.visititems(lambda name, item: found.append((name, item)))
    return iter(found)


def _check_dataset(path: Path, inside: str, name: str, dataset: Any) -> None:
    if dataset.is_virtual:
        raise InputFileError(
            f"{path}{inside}: dataset {name!r} is an HDF5 virtual dataset, which reads other files; refused"
        )
    external = dataset.external
    if external:
        files = ", ".join(repr(_text(entry[0])) for entry in external[:3])
        raise InputFileError(
            f"{path}{inside}: dataset {name!r} keeps its data in external file(s) {files}, outside this file; "
            "refused: save the model again without HDF5 external storage"
        )
    dtype = dataset.dtype
    if dtype.hasobject or (dtype.kind in "OV" and dtype.fields is None):
        raise InputFileError(
            f"{path}{inside}: dataset {name!r} has dtype {dtype}, not a numeric array; write the file again"
        )
    declared = math.prod(int(n) for n in (dataset.shape or ())) * dtype.itemsize
    stored = int(dataset.id.get_storage_size())
    check_declared(path, f"HDF5 dataset {name!r}{inside}", declared, stored, "allocates")


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


# ----------------------------------------------------------------------------------------------------------
# ONNX external data
# ----------------------------------------------------------------------------------------------------------


def check_onnx(path: Path) -> None:
    """Load ``path`` without its external data and check every external tensor (initializers, Constant node
    attributes, subgraphs) before onnx.load reads them: a relative location inside the model's own folder, a
    regular file there (symlinks resolved, none leaving the folder), and the tensor's declared bytes present
    (as allocated blocks, so a sparse file of holes does not count) at its offset."""
    import onnx

    require_regular_file(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a protobuf at all: the reader says why, in its own words
        return
    folder = Path(os.path.realpath(path.parent))
    for tensor in _onnx_tensors(model.graph):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            _check_external_tensor(path, folder, tensor)


def _onnx_tensors(graph: Any) -> Iterator[Any]:
    yield from graph.initializer
    for sparse in graph.sparse_initializer:
        yield sparse.values
        yield sparse.indices
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                yield attribute.t
            yield from attribute.tensors
            if attribute.HasField("sparse_tensor"):
                yield attribute.sparse_tensor.values
                yield attribute.sparse_tensor.indices
            if attribute.HasField("g"):
                yield from _onnx_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _onnx_tensors(subgraph)


def _check_external_tensor(path: Path, folder: Path, tensor: Any) -> None:
    from onnx import helper

    entries: Mapping[str, str] = {entry.key: entry.value for entry in tensor.external_data}
    name = tensor.name or "(unnamed)"
    location = entries.get("location", "")
    where = f"{path}: tensor {name!r} has external data {location!r}"
    pure = PurePosixPath(location.replace("\\", "/"))
    if not location or pure.is_absolute() or ".." in pure.parts or (len(location) > 1 and location[1] == ":"):
        raise InputFileError(f"{where}: only a file inside the model's own folder may hold it; refused")
    target = Path(os.path.realpath(folder / location))
    if folder not in (target, *target.parents):
        raise InputFileError(f"{where}, which resolves outside the model's folder ({target}); refused")
    try:
        info = os.stat(target)
    except OSError as error:
        raise InputFileError(f"{where}, which cannot be opened ({error.strerror}); put it beside the model") from None
    if not stat.S_ISREG(info.st_mode):
        raise InputFileError(f"{where}, which is {_file_kind(info.st_mode)}, not a regular file; refused")
    try:
        offset = int(entries.get("offset", "0"))
        length = int(entries["length"]) if "length" in entries else None
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (ValueError, KeyError, TypeError) as error:
        raise InputFileError(f"{where} with an invalid offset, length or data type ({error}); refused") from None
    declared = math.prod(int(n) for n in tensor.dims) * itemsize
    if offset < 0 or (length is not None and length < 0):
        raise InputFileError(f"{where} at a negative offset or length; refused")
    reads = length if length is not None else info.st_size - offset
    if declared > reads or offset + reads > info.st_size:
        raise InputFileError(
            f"{where}: it declares {_size(declared)} at offset {offset} of a file of {_size(info.st_size)}; the "
            "data is missing or truncated: export the model again"
        )
    # Allocated blocks, not the length: a sparse file of holes reads as gigabytes of zeros.
    present = int(info.st_blocks) * 512 if hasattr(info, "st_blocks") else info.st_size
    check_declared(path, f"external tensor {name!r}", max(declared, reads), present, "holds on disk")


# ----------------------------------------------------------------------------------------------------------
# torch.save files: stride-0 and overlapping views
# ----------------------------------------------------------------------------------------------------------


def check_torch_file(path: Path) -> None:
    """Load ``path`` memory-mapped (nothing materialized) and compare each tensor's bytes with its storage's,
    and all tensors' with the file's size: a stride-0 ``expand`` view or many views of one storage need far
    more memory than the file holds once converted to arrays."""
    import torch

    size = require_regular_file(path)
    check_zip(path)
    try:
        loaded = torch.load(path, weights_only=True, map_location="cpu", mmap=True)
    except Exception:
        if zipfile.is_zipfile(path):
            return  # a damaged archive: the reader says why
        try:  # torch.save's legacy (pre-1.6) format cannot be memory-mapped; its storages are its bytes
            loaded = torch.load(path, weights_only=True, map_location="cpu")
        except Exception:
            return
    total = 0
    for key, tensor in _torch_tensors(path, loaded):
        needed = tensor.numel() * tensor.element_size()
        stored = tensor.untyped_storage().nbytes()
        check_declared(path, f"tensor {key!r} (shape {list(tensor.shape)})", needed, stored, "stores")
        total += needed
    check_declared(path, "its tensors together", total, size, "is")


def _torch_tensors(path: Path, loaded: Any, prefix: str = "", depth: int = 0) -> Iterator[tuple[str, Any]]:
    import torch

    if depth > 20:
        raise InputFileError(f"{path}: nesting deeper than 20 levels at {prefix!r}; save model.state_dict()")
    if isinstance(loaded, torch.Tensor):
        if loaded.layout != torch.strided:
            raise InputFileError(
                f"{path}: tensor {prefix!r} is {loaded.layout} (sparse); save a state_dict of dense tensors"
            )
        yield prefix, loaded
    elif isinstance(loaded, Mapping):
        for key, value in loaded.items():
            yield from _torch_tensors(path, value, f"{prefix}.{key}" if prefix else str(key), depth + 1)
    elif isinstance(loaded, (list, tuple)):
        for index, value in enumerate(loaded):
            yield from _torch_tensors(path, value, f"{prefix}[{index}]", depth + 1)


# ----------------------------------------------------------------------------------------------------------
# TF checkpoints and JSON
# ----------------------------------------------------------------------------------------------------------


def check_checkpoint_files(prefix: Path) -> None:
    """The files of a TF checkpoint prefix (P.index, P.data-*) are regular files."""
    require_regular_file(Path(f"{prefix}.index"), "checkpoint index")
    folder = prefix.parent if str(prefix.parent) else Path(".")
    if folder.is_dir():
        for candidate in folder.iterdir():
            if candidate.name.startswith(f"{prefix.name}.data-"):
                require_regular_file(candidate, "checkpoint data file")


def check_checkpoint_sizes(prefix: Path, shapes: Mapping[str, Any], dtypes: Mapping[str, Any]) -> None:
    """The bytes the index declares for all variables, against the data files' bytes."""
    folder = prefix.parent if str(prefix.parent) else Path(".")
    stored = sum(p.stat().st_size for p in folder.iterdir() if p.name.startswith(f"{prefix.name}.data-"))
    declared = 0
    for key, shape in shapes.items():
        dtype = dtypes.get(key)
        itemsize = int(getattr(dtype, "size", 8) or 8)
        declared += math.prod(int(n) for n in shape) * itemsize
    check_declared(prefix, "its variables together", declared, stored, "holds")


def load_json(path: Path, text: bytes | str, where: str) -> Any:
    """json.loads with the size bounded and nesting errors (RecursionError) as InputFileError."""
    if len(text) > MAX_JSON_BYTES:
        raise InputFileError(f"{path}: {where} is {_size(len(text))} of JSON, more than a model config holds")
    try:
        return json.loads(text)
    except RecursionError:
        raise InputFileError(f"{path}: {where} nests JSON too deeply to be a model config; refused") from None
