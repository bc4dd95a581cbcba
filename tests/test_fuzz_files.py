"""Fuzzing the readers (issue 11): valid files written by each framework in this test, mutated by hypothesis
(truncation, bit flips, overwritten and inserted bytes, renamed, dropped and rewritten archive members, JSON
fields, npy headers, HDF5 datasets and attributes, ONNX attributes, dims and dtypes, safetensors headers,
torch tensors' dtypes and shapes), run through ``inspect`` and ``convert``. Every outcome must be exit 0, 1 or
2, with no traceback, exit 2 told in exactly one stderr line, and no file left in the destination folder
but the destination itself after a success. A batch of mutated files also runs in a subprocess under
RLIMIT_AS = 2 GB, where running out of memory counts as a failure.

Fast by default (derandomized, ``DEFAULT_EXAMPLES`` per format); ``LSTM_CONFORMANCE_FUZZ_EXAMPLES=N`` runs N
per format, e.g. 5000 overnight.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.cli import main
from lstm_conformance.reference.layout import LSTMConfig
from tests.test_cli import npz_file, require_format, torch_lstm_file

hypothesis = pytest.importorskip("hypothesis", reason="the fuzzing test needs hypothesis (pip install hypothesis)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

DEFAULT_EXAMPLES = 30
EXAMPLES = int(os.environ.get("LSTM_CONFORMANCE_FUZZ_EXAMPLES", DEFAULT_EXAMPLES))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
#: Format -> the file name of its valid example (a TF checkpoint: its prefix).
FILES = {
    "npz": "model.npz",
    "torch": "model.pt",
    "safetensors": "model.safetensors",
    "keras": "model.keras",
    "keras-h5": "model.weights.h5",
    "keras-h5-legacy": "model.h5",
    "tf-checkpoint": "model.ckpt",
    "onnx": "model.onnx",
    "tflite": "model.tflite",
}
FORMAT_OF = {"keras-h5-legacy": "keras-h5"}


# ----------------------------------------------------------------------------------------------------------
# Valid files, written by the frameworks
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One folder with a valid file of every format (an LSTM of input 3, hidden 4)."""
    folder = tmp_path_factory.mktemp("valid")
    npz_file(folder / "model.npz", LSTMConfig(input_size=3, hidden_size=4))
    return folder


def valid_file(folder: Path, kind: str) -> Path:
    """The valid file of ``kind`` in ``folder``, written on first use by its framework."""
    require_format(FORMAT_OF.get(kind, kind))
    path = folder / FILES[kind]
    if (kind == "tf-checkpoint" and Path(f"{path}.index").exists()) or path.exists():
        return path
    if kind == "torch":
        torch_lstm_file(path)
    elif kind in ("keras", "keras-h5", "keras-h5-legacy"):
        keras = pytest.importorskip("keras")
        model = keras.Sequential([keras.Input((2, 3)), keras.layers.LSTM(4, return_sequences=True)])
        model.save(folder / "model.keras")
        model.save(folder / "model.h5")
        model.save_weights(folder / "model.weights.h5")
    else:  # safetensors, tf-checkpoint, onnx: written by the framework's own writer behind `convert`
        status = main(["convert", str(folder / "model.npz"), str(path), "--no-verify"])
        assert status == 0
    return path


def checkpoint_files(prefix: Path) -> list[Path]:
    return sorted(p for p in prefix.parent.iterdir() if p.name.startswith(prefix.name + "."))


# ----------------------------------------------------------------------------------------------------------
# Mutations
# ----------------------------------------------------------------------------------------------------------

Draw = Callable[[st.SearchStrategy[Any]], Any]

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63)
    | st.sampled_from([0, 1, -1, 10**15, 2**31])
    | st.floats(allow_nan=True)
    | st.text(max_size=8)
    | st.sampled_from(["false", "true", "4", "abc", "LSTM", "Bidirectional", "hard_sigmoid", "relu"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
NPY_DESCRS = ["<f4", "<f8", "<f2", ">f4", "<i4", "|u1", "|b1", "<c16", "|O", "V8", "<U4", "<M8[s]"]
SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 4, 12, 16, 10**6, 10**12]), max_size=4).map(tuple)
MEMBER_NAMES = ["../evil.npy", "/abs.npy", "", "a/../../b", "x" * 300, "config.json", "model.weights.h5", "data.pkl"]


def mutate_bytes(draw: Draw, data: bytes) -> bytes:
    """Truncate, flip bits (mostly in the first and last KB, where headers are), overwrite, insert or delete."""
    size = len(data)
    kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"]))
    if size == 0:
        return b"\0"
    position = draw(
        st.one_of(
            st.integers(0, min(size - 1, 1024)), st.integers(max(0, size - 1024), size - 1), st.integers(0, size - 1)
        )
    )
    if kind == "truncate":
        return data[:position]
    if kind == "flip":
        out = bytearray(data)
        for extra in draw(st.lists(st.integers(0, 64), min_size=1, max_size=6)):
            out[min(size - 1, position + extra)] ^= 1 << draw(st.integers(0, 7))
        return bytes(out)
    chunk = draw(st.binary(min_size=1, max_size=16) | st.sampled_from([b"\xff" * 8, b"\0" * 8, b"\x7f\xff\xff\xff"]))
    if kind == "overwrite":
        return data[:position] + chunk + data[position + len(chunk) :]
    if kind == "insert":
        return data[:position] + chunk + data[position:]
    return data[:position] + data[position + draw(st.integers(1, 64)) :]


def mutate_json(draw: Draw, value: Any) -> Any:
    """Replace one value somewhere in a JSON document, or delete a key."""
    paths: list[tuple[Any, Any]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key in node:
                paths.append((node, key))
                walk(node[key])
        elif isinstance(node, list):
            for index in range(len(node)):
                paths.append((node, index))
                walk(node[index])

    walk(value)
    if not paths:
        return draw(JSON_VALUES)
    parent, key = draw(st.sampled_from(paths))
    if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
        del parent[key]
    else:
        parent[key] = draw(JSON_VALUES)
    return value


def npy_with_header(data: bytes, shape: tuple[int, ...], descr: str) -> bytes:
    from numpy.lib import format as npy

    stream = io.BytesIO(data)
    version = npy.read_magic(stream)
    npy.read_array_header_1_0(stream) if version == (1, 0) else npy.read_array_header_2_0(stream)
    body = data[stream.tell() :]
    header = io.BytesIO()
    npy.write_array_header_1_0(header, {"descr": descr, "fortran_order": False, "shape": shape})
    return header.getvalue() + body


def mutate_zip(draw: Draw, data: bytes) -> bytes:
    """Rename, drop, duplicate or rewrite one member (its bytes, its JSON, its npy header), re-zipped."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    index = draw(st.integers(0, len(members) - 1))
    name, content = members[index]
    choices = ["rename", "drop", "duplicate", "bytes"]
    choices += ["json"] if name.endswith(".json") else []
    choices += ["npy"] if name.endswith(".npy") else []
    kind = draw(st.sampled_from(choices))
    if kind == "rename":
        members[index] = (draw(st.sampled_from([*MEMBER_NAMES, name + "x", name.upper()])), content)
    elif kind == "drop":
        del members[index]
    elif kind == "duplicate":
        members.append((name, content))
    elif kind == "bytes":
        members[index] = (name, mutate_bytes(draw, content))
    elif kind == "json":
        members[index] = (name, json.dumps(mutate_json(draw, json.loads(content))).encode())
    else:
        members[index] = (name, npy_with_header(content, draw(SHAPES), draw(st.sampled_from(NPY_DESCRS))))
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for member_name, member_data in members:
            archive.writestr(zipfile.ZipInfo(member_name or "_"), member_data)
    return buffer.getvalue()


H5_DTYPES = ["f2", "f4", "f8", "i4", "u1", "?", "c16", "S5"]


def mutate_h5(draw: Draw, path: Path) -> None:
    """Rewrite one dataset (another dtype or shape), delete it, or change an attribute, with h5py."""
    import h5py

    with h5py.File(path, "a") as handle:
        datasets: list[str] = []
        groups: list[str] = []
        handle.visititems(lambda n, item: (datasets if hasattr(item, "shape") else groups).append(n))
        kind = draw(st.sampled_from(["dataset", "delete", "attribute"]))
        if kind in ("dataset", "delete") and datasets:
            name = draw(st.sampled_from(datasets))
            array = np.asarray(handle[name])
            del handle[name]
            if kind == "dataset":
                shape = draw(st.sampled_from([array.shape, array.shape[::-1], (4,), (3, 16), (), (0, 16)]))
                dtype = draw(st.sampled_from(H5_DTYPES))
                handle.create_dataset(name, data=np.zeros(shape, dtype=dtype))
            return
        owner = handle[draw(st.sampled_from(["/", *groups]))]
        keys = list(owner.attrs)
        if not keys:
            return
        key = draw(st.sampled_from(keys))
        value = owner.attrs[key]
        text = value.decode() if isinstance(value, bytes) else value if isinstance(value, str) else None
        if text is not None and text.startswith("{"):
            owner.attrs[key] = json.dumps(mutate_json(draw, json.loads(text)))
        else:
            replacement = draw(st.sampled_from([np.int64(3), "lstm", np.array([b"x", b"y"]), np.zeros(2), b"2.0"]))
            owner.attrs[key] = replacement


ONNX_ATTRIBUTES = ["hidden_size", "layout", "clip", "input_forget", "direction", "activations", "activation_alpha"]
ONNX_VALUES = [0, 1, 2, -4, 1.5, "forward", "reverse", "abc", b"\xff", [1, 2], [0.5], ["Sigmoid", "Tanh"]]


def mutate_onnx(draw: Draw, data: bytes) -> bytes:
    """Change an LSTM attribute (value and type), an initializer's dims or data_type, or a node's inputs."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(data)
    kind = draw(st.sampled_from(["attribute", "dims", "data_type", "input", "op_type", "opset", "bytes"]))
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"] or list(model.graph.node)
    node = draw(st.sampled_from(nodes))
    tensors = list(model.graph.initializer)
    if kind == "attribute":
        name = draw(st.sampled_from(ONNX_ATTRIBUTES))
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend([*kept, helper.make_attribute(name, draw(st.sampled_from(ONNX_VALUES)))])
    elif kind == "dims" and tensors:
        tensor = draw(st.sampled_from(tensors))
        del tensor.dims[:]
        tensor.dims.extend(draw(SHAPES))
    elif kind == "data_type" and tensors:
        draw(st.sampled_from(tensors)).data_type = draw(st.integers(0, 25))
    elif kind == "input":
        position = draw(st.integers(0, max(0, len(node.input) - 1)))
        if node.input:
            node.input[position] = draw(st.sampled_from(["", "missing", node.output[0] if node.output else "y"]))
    elif kind == "op_type":
        node.op_type = draw(st.sampled_from(["GRU", "RNN", "LSTM", "Foo"]))
    elif kind == "opset":
        model.opset_import[0].version = draw(st.sampled_from([1, 7, 14, 22, 999]))
    else:
        return mutate_bytes(draw, data)
    return bytes(model.SerializeToString())


TFLITE_INDICES = [-2, -1, 0, 1, 5, 17, 47, 10**6]
#: Shapes the schema's int32 dimensions hold (SHAPES goes past them); buffers are uint32.
TFLITE_SHAPES = st.lists(st.sampled_from([0, 1, 2, 3, 4, 12, 16, 10**6, 2**31 - 1]), max_size=4)
TFLITE_BUFFERS = [0, 1, 5, 47, 10**6, 2**32 - 1]
TFLITE_OPTIONS: dict[str, list[Any]] = {
    "fusedActivationFunction": [0, 1, 3, 4, 5, 99],
    "cellClip": [0.0, -1.0, float("nan"), float("inf"), 1e30],
    "projClip": [0.0, -1.0, 2.0],
    "timeMajor": [True, False],
    "mergeOutputs": [True, False],
}


def mutate_tflite(draw: Draw, data: bytes) -> bytes:
    """Through LiteRT's schema object API: an op's input or output index, a tensor's shape, type or buffer, an
    LSTM option, an op code, or an operator dropped; packed again."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(data, 0))
    subgraph = model.subgraphs[0]
    operator = draw(st.sampled_from(subgraph.operators))
    kind = draw(st.sampled_from(["input", "output", "shape", "type", "buffer", "option", "opcode", "drop", "bytes"]))
    if kind in ("input", "output"):
        indices = [int(i) for i in getattr(operator, f"{kind}s")]
        indices[draw(st.integers(0, len(indices) - 1))] = draw(st.sampled_from(TFLITE_INDICES))
        setattr(operator, f"{kind}s", indices)
    elif kind in ("shape", "type", "buffer"):
        tensor = draw(st.sampled_from(subgraph.tensors))
        values = {"shape": [draw(TFLITE_SHAPES)], "type": list(range(-1, 24)), "buffer": TFLITE_BUFFERS}[kind]
        setattr(tensor, kind, draw(st.sampled_from(values)))
    elif kind == "option" and operator.builtinOptions is not None:
        name = draw(st.sampled_from(sorted(TFLITE_OPTIONS)))
        setattr(operator.builtinOptions, name, draw(st.sampled_from(TFLITE_OPTIONS[name])))
    elif kind == "opcode":
        model.operatorCodes[operator.opcodeIndex].builtinCode = draw(st.sampled_from([2, 44, 52, 105, 200]))
        model.operatorCodes[operator.opcodeIndex].deprecatedBuiltinCode = 0
    elif kind == "drop":
        subgraph.operators = [op for op in subgraph.operators if op is not operator]
    else:
        return mutate_bytes(draw, data)
    builder = flatbuffers.Builder(len(data) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


SAFETENSORS_DTYPES = ["F32", "F64", "F16", "BF16", "I64", "F8_E4M3", "BOOL", "X"]


def mutate_safetensors(draw: Draw, data: bytes) -> bytes:
    """Change the JSON header (dtype, shape, offsets, metadata) and re-frame it, or mutate the bytes."""
    length = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    kind = draw(st.sampled_from(["dtype", "shape", "offsets", "json", "bytes"]))
    names = [k for k in header if k != "__metadata__"]
    name = draw(st.sampled_from(names))
    if kind == "dtype":
        header[name]["dtype"] = draw(st.sampled_from(SAFETENSORS_DTYPES))
    elif kind == "shape":
        header[name]["shape"] = list(draw(SHAPES))
    elif kind == "offsets":
        header[name]["data_offsets"] = [draw(st.integers(0, 2**40)), draw(st.integers(0, 2**40))]
    elif kind == "json":
        header = mutate_json(draw, header)
    else:
        return mutate_bytes(draw, data)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + body


TORCH_DTYPES = ["float16", "bfloat16", "float64", "int64", "bool", "complex64", "uint8", "float8_e5m2"]


def mutate_torch_state(draw: Draw, path: Path) -> None:
    """torch.save of the real state_dict with one tensor cast, reshaped, renamed, dropped or made a view."""
    import torch

    state = torch.load(path, weights_only=True)
    key = draw(st.sampled_from(sorted(state)))
    kind = draw(st.sampled_from(["dtype", "shape", "rename", "drop", "view", "int key", "wrap"]))
    tensor = state[key]
    if kind == "dtype":
        state[key] = tensor.to(getattr(torch, draw(st.sampled_from(TORCH_DTYPES))))
    elif kind == "shape":
        state[key] = tensor.reshape(-1) if draw(st.booleans()) else tensor.reshape(-1)[: draw(st.integers(0, 7))]
    elif kind == "rename":
        state[draw(st.sampled_from(["weight_ih_l1", "x.weight_ih_l0", "weight_hh_l0_reverse", key + "_"]))] = state.pop(
            key
        )
    elif kind == "drop":
        del state[key]
    elif kind == "view":
        state[key] = tensor.reshape(-1)[:1].expand(tensor.shape) if tensor.ndim else tensor
    elif kind == "int key":
        state[draw(st.integers(-3, 3))] = state.pop(key)
    else:
        state = {draw(st.sampled_from(["state_dict", "model", "other"])): state}
    torch.save(state, path)


def mutate_npz_arrays(draw: Draw, path: Path) -> None:
    """np.savez of the canonical arrays with one changed: dtype, shape, key, dropped, or an extra key."""
    with np.load(path) as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    key = draw(st.sampled_from(sorted(arrays)))
    kind = draw(st.sampled_from(["dtype", "shape", "rename", "drop", "value"]))
    if kind == "dtype":
        dtype = draw(st.sampled_from(["f2", "i8", "?", "c8", "U3"]))
        numeric = arrays[key].dtype.kind in "fc"
        arrays[key] = arrays[key].astype(dtype) if numeric else np.zeros(3, dtype=dtype)
    elif kind == "shape":
        arrays[key] = arrays[key].reshape(-1)[: draw(st.integers(0, 5))]
    elif kind == "rename":
        arrays[key + draw(st.sampled_from(["x", ".W", "_"]))] = arrays.pop(key)
    elif kind == "drop":
        del arrays[key]
    else:
        arrays[key] = np.array(json.dumps(draw(JSON_VALUES)))  # the config key holds JSON text
    np.savez(path, **arrays)


# ----------------------------------------------------------------------------------------------------------
# Writing a mutated copy, running the CLI, checking the outcome
# ----------------------------------------------------------------------------------------------------------


def mutated_copy(draw: Draw, kind: str, source: Path, folder: Path) -> Path:
    """A mutated copy of ``source`` (a ``kind`` file) in ``folder``; returns the path to give the CLI."""
    if kind == "tf-checkpoint":
        files = checkpoint_files(source)
        for file in files:
            shutil.copyfile(file, folder / file.name)
        victim = folder / draw(st.sampled_from([f.name for f in files]))
        victim.write_bytes(mutate_bytes(draw, victim.read_bytes()))
        return folder / source.name
    target = folder / source.name
    shutil.copyfile(source, target)
    data = source.read_bytes()
    structural = draw(st.booleans())
    if not structural:
        target.write_bytes(mutate_bytes(draw, data))
    elif kind in ("npz", "keras") or (kind == "torch" and draw(st.booleans())):
        if kind == "npz" and draw(st.booleans()):
            mutate_npz_arrays(draw, target)
        else:
            target.write_bytes(mutate_zip(draw, data))
    elif kind == "torch":
        mutate_torch_state(draw, target)
    elif kind in ("keras-h5", "keras-h5-legacy"):
        mutate_h5(draw, target)
    elif kind == "onnx":
        target.write_bytes(mutate_onnx(draw, data))
    elif kind == "tflite":
        target.write_bytes(mutate_tflite(draw, data))
    else:
        target.write_bytes(mutate_safetensors(draw, data))
    return target


def check_outcome(argv: list[str], out_folder: Path, capsys: pytest.CaptureFixture[str]) -> int:
    """Run the CLI in-process; an exception escaping main is a bug, and fails the test with its traceback."""
    capsys.readouterr()
    status = main(argv)
    _, err = capsys.readouterr()
    assert status in (0, 1, 2), (status, argv, err)
    assert "Traceback" not in err, err
    if status == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("lstm-conformance: error: "), err
    left = sorted(p.name for p in out_folder.iterdir())
    written = [Path(argv[2]).name] if argv[0] == "convert" and status == 0 else []
    assert left == written, (left, err)
    return status


def fuzz_format(kind: str, valid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = valid_file(valid, kind)

    @FUZZ
    @given(st.data())
    def run(data: st.DataObject) -> None:
        folder = Path(tempfile.mkdtemp(dir=valid.parent))
        try:
            model_folder, out_folder = folder / "m", folder / "out"
            model_folder.mkdir()
            out_folder.mkdir()
            model = mutated_copy(data.draw, kind, source, model_folder)
            from_format = ["--from", FORMAT_OF.get(kind, kind)]
            check_outcome(["inspect", str(model), *from_format], out_folder, capsys)
            convert = ["convert", str(model), str(out_folder / "out.npz"), *from_format, "--no-verify"]
            check_outcome(convert, out_folder, capsys)
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    run()


@pytest.mark.parametrize("kind", sorted(FILES))
def test_mutated_files_end_in_one_line_or_success(kind: str, valid: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fuzz_format(kind, valid, capsys)


# ----------------------------------------------------------------------------------------------------------
# Memory bound: a batch of mutated files in a subprocess under RLIMIT_AS = 2 GB
# ----------------------------------------------------------------------------------------------------------

_BATCH_CHILD = """
import json, resource, sys
limit = 2 << 30
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
from lstm_conformance.cli import main
results = []
for path, fmt in json.loads(sys.argv[1]):
    results.append(main(["inspect", path, "--from", fmt]))
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # survives exec; VmHWM is this program's own
try:
    peak = int(next(line for line in open("/proc/self/status") if line.startswith("VmHWM")).split()[1])
except OSError:
    pass
print(json.dumps({"results": results, "peak_kb": peak}))
"""


def test_mutated_files_stay_under_2_gb(valid: Path, tmp_path: Path) -> None:
    """Mutations that declare huge sizes (npy headers of 10^12 elements, safetensors shapes, ONNX dims)
    read by one process under RLIMIT_AS = 2 GB: none may run out of memory (the one-line "out of memory"
    error would mean a bound was missing), and each outcome is 0, 1 or 2."""
    batch: list[tuple[str, str]] = []
    for index, kind in enumerate(("npz", "safetensors", "onnx", "torch")):
        source = valid_file(valid, kind)
        for example in range(3):
            folder = tmp_path / f"{kind}-{example}"
            folder.mkdir()
            model = _large_declaration(kind, source, folder, index * 10 + example)
            batch.append((str(model), FORMAT_OF.get(kind, kind)))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", _BATCH_CHILD, json.dumps(batch)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(status in (0, 1, 2) for status in report["results"]), report
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert "out of memory" not in done.stderr, done.stderr[-2000:]
    assert report["peak_kb"] * 1024 < 2 << 30


def _large_declaration(kind: str, source: Path, folder: Path, seed: int) -> Path:
    """A copy of ``source`` declaring a huge tensor in its header, the stored bytes unchanged."""
    rng = np.random.default_rng(seed)
    huge = (int(rng.integers(10**9, 10**11)),)
    target = folder / source.name
    data = source.read_bytes()
    if kind == "npz":
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            members = [(info.filename, archive.read(info)) for info in archive.infolist()]
        name, content = members[0]
        members[0] = (name, npy_with_header(content, huge, "<f8"))
        with zipfile.ZipFile(target, "w") as archive:
            for member_name, member_data in members:
                archive.writestr(member_name, member_data)
    elif kind == "safetensors":
        length = struct.unpack("<Q", data[:8])[0]
        header = json.loads(data[8 : 8 + length])
        name = next(k for k in header if k != "__metadata__")
        header[name]["shape"] = list(huge)
        text = json.dumps(header).encode()
        target.write_bytes(struct.pack("<Q", len(text)) + text + data[8 + length :])
    elif kind == "onnx":
        import onnx

        model = onnx.load_from_string(data)
        tensor = model.graph.initializer[0]
        del tensor.dims[:]
        tensor.dims.extend(huge)
        target.write_bytes(model.SerializeToString())
    else:
        import torch

        state = torch.load(source, weights_only=True)
        key = sorted(state)[0]
        state[key] = state[key].reshape(-1)[:1].expand(huge[0] // 100, 100)
        torch.save(state, target)
    return target
