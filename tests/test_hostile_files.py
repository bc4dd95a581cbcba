"""Hostile model files (issue 11): every attack is built here, from a valid file its framework wrote, and must
end with exit 2, exactly one stderr line naming the problem and the fix, no traceback, nothing left in the
destination folder, none of another file's bytes in any output, and (for the memory attacks, run in a
subprocess) a peak RSS under 2 GB within 60 s."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from lstm_conformance.reference.layout import LSTMConfig
from tests.conftest import Run, require_format
from tests.test_cli import listing, npz_file, torch_lstm_file

#: Bytes of a "local file" an attack points at; must never show up in any output.
SECRET = b"SECRET-PASSWD-" * 4096
PEAK_LIMIT = 2 << 30
SECONDS = 60
CONFIG = LSTMConfig(input_size=3, hidden_size=4)


# ----------------------------------------------------------------------------------------------------------
# Running the command line and checking the outcome
# ----------------------------------------------------------------------------------------------------------


def assert_refused(status: int, out: str, err: str, *words: str) -> None:
    """Exit 2, one stderr line, no traceback, the secret nowhere, and the line names ``words``."""
    assert "Traceback" not in err, err
    assert status == 2, (status, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lstm-conformance: error: "), err
    assert ";" in lines[0] or ": refused" in lines[0] or "refused" in lines[0], f"no fix named: {err}"
    for word in words:
        assert word.lower() in lines[0].lower(), (word, err)
    assert SECRET[:14].decode() not in out + err
    print(f"refused: {lines[0]}")  # shown with pytest -rP: the message each attack gets


def assert_clean(folder: Path) -> None:
    """Nothing written to, or left in, the destination folder; no secret bytes in any file there."""
    assert listing(folder) == [], listing(folder)


def run_bounded(args: list[str], cwd: Path, timeout: float = SECONDS) -> tuple[int, str, str, int, float]:
    """The CLI in a fresh process under RLIMIT_AS (a safety net for this shared machine), returning its
    status, stdout, stderr, peak RSS in bytes (VmHWM, reported by the child itself) and wall time."""
    report = cwd / ".peak-rss"
    code = (
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_AS, ({3 * PEAK_LIMIT}, {3 * PEAK_LIMIT}))\n"
        "from lstm_conformance.cli import main\n"
        "try:\n"
        "    status = main(sys.argv[1:])\n"
        "finally:\n"
        "    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "    if os.path.exists('/proc/self/status'):  # ru_maxrss survives exec: VmHWM is this program's own\n"
        "        peak = int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
        f"    open({str(report)!r}, 'w').write(str(peak))\n"
        "sys.exit(status)\n"
    )
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    start = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env
    )
    elapsed = time.monotonic() - start
    peak = int(report.read_text()) * 1024 if report.exists() else -1
    report.unlink(missing_ok=True)
    return done.returncode, done.stdout, done.stderr, peak, elapsed


def assert_bounded_refusal(args: list[str], cwd: Path, out_dir: Path, *words: str) -> None:
    status, out, err, peak, elapsed = run_bounded(args, cwd)
    assert_refused(status, out, err, *words)
    assert 0 < peak < PEAK_LIMIT, f"peak RSS {peak / 2**30:.2f} GiB"
    print(f"peak RSS {peak / 2**20:.0f} MiB, {elapsed:.1f} s")
    assert elapsed < SECONDS
    assert_clean(out_dir)


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """(source folder, empty destination folder); the working directory is the source folder, where relative
    paths in hostile files are resolved."""
    source, out = tmp_path / "src", tmp_path / "out"
    source.mkdir()
    out.mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET)
    monkeypatch.chdir(source)
    return source, out


# ----------------------------------------------------------------------------------------------------------
# Valid files, written by the frameworks
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A Keras 3 LSTM(4) model on [2, 3] inputs saved as .keras, legacy .h5 and .weights.h5."""
    require_format("keras")
    keras = pytest.importorskip("keras")
    folder = tmp_path_factory.mktemp("keras")
    model = keras.Sequential([keras.Input((2, 3)), keras.layers.LSTM(4, return_sequences=True)])
    model.save(folder / "model.keras")
    model.save(folder / "model.h5")
    model.save_weights(folder / "model.weights.h5")
    return {name: folder / f"model{name}" for name in (".keras", ".h5", ".weights.h5")}


def copy(source: Path, target: Path) -> Path:
    shutil.copyfile(source, target)
    return target


KERNEL = "layers/lstm/cell/vars/0"


def replace_kernel(path: Path, make: Callable[[Any, str, tuple[int, ...], Any], None]) -> None:
    """Replace the LSTM kernel of a Keras ``layers/...`` weights file by what ``make`` builds there."""
    import h5py

    with h5py.File(path, "a") as handle:
        shape, dtype = handle[KERNEL].shape, handle[KERNEL].dtype
        del handle[KERNEL]
        make(handle, KERNEL, shape, dtype)


def keras_with_weights(keras_path: Path, weights_h5: Path, target: Path) -> Path:
    """A copy of a .keras archive whose model.weights.h5 member is ``weights_h5``."""
    with zipfile.ZipFile(keras_path) as source, zipfile.ZipFile(target, "w") as archive:
        for member in source.infolist():
            data = weights_h5.read_bytes() if member.filename == "model.weights.h5" else source.read(member)
            archive.writestr(member, data)
    return target


# ----------------------------------------------------------------------------------------------------------
# Nothing outside the file is read: HDF5 indirections
# ----------------------------------------------------------------------------------------------------------


def _external_storage(secret: str) -> Callable[[Any, str, tuple[int, ...], Any], None]:
    def make(handle: Any, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        handle.create_dataset(name, shape=shape, dtype=dtype, external=[(secret, 0, int(np.prod(shape)) * 4)])

    return make


def _external_link(target: str) -> Callable[[Any, str, tuple[int, ...], Any], None]:
    def make(handle: Any, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        import h5py

        with h5py.File(target, "w") as other:
            other["data"] = np.frombuffer(SECRET[: int(np.prod(shape)) * 4], dtype="<f4").reshape(shape)
        handle[name] = h5py.ExternalLink(target, "/data")

    return make


def _virtual(target: str) -> Callable[[Any, str, tuple[int, ...], Any], None]:
    def make(handle: Any, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        import h5py

        with h5py.File(target, "w") as other:
            other["data"] = np.frombuffer(SECRET[: int(np.prod(shape)) * 4], dtype="<f4").reshape(shape)
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[...] = h5py.VirtualSource(target, "data", shape=shape)
        handle.create_virtual_dataset(name, layout)

    return make


def _dangling_soft_link(handle: Any, name: str, shape: tuple[int, ...], dtype: Any) -> None:
    import h5py

    handle[name] = h5py.SoftLink("/elsewhere/kernel")


HDF5_ATTACKS = {
    "external storage, absolute path": (lambda tmp: _external_storage(str(tmp.parent / "secret.bin")), "external"),
    "external storage, ../ path": (lambda tmp: _external_storage("../secret.bin"), "external"),
    "external link": (lambda tmp: _external_link(str(tmp.parent / "other.h5")), "external link"),
    "virtual dataset": (lambda tmp: _virtual(str(tmp.parent / "other.h5")), "virtual"),
    "soft link out of the file": (lambda tmp: _dangling_soft_link, "soft link"),
}


@pytest.mark.parametrize("container", [".weights.h5", ".keras"])
@pytest.mark.parametrize("attack", sorted(HDF5_ATTACKS))
def test_hdf5_indirection_is_refused(
    attack: str, container: str, keras_files: dict[str, Path], work: tuple[Path, Path], cli: Run
) -> None:
    source, out = work
    build, word = HDF5_ATTACKS[attack]
    weights = copy(keras_files[".weights.h5"], source / "model.weights.h5")
    replace_kernel(weights, build(source))
    model = (
        weights
        if container == ".weights.h5"
        else keras_with_weights(keras_files[".keras"], weights, source / "m.keras")
    )
    for command in (["inspect", model], ["convert", model, out / "out.npz"]):
        assert_refused(*cli(*command), word)
    assert_clean(out)


def test_legacy_h5_model_with_external_storage_is_refused(
    keras_files: dict[str, Path], work: tuple[Path, Path], cli: Run
) -> None:
    import h5py

    source, out = work
    model = copy(keras_files[".h5"], source / "model.h5")
    with h5py.File(model, "a") as handle:
        names: list[str] = []
        handle["model_weights"].visititems(lambda n, item: names.append(n) if hasattr(item, "shape") else None)
        kernel = f"model_weights/{names[0]}"
        shape, dtype = handle[kernel].shape, handle[kernel].dtype
        del handle[kernel]
        handle.create_dataset(
            kernel, shape=shape, dtype=dtype, external=[("../secret.bin", 0, int(np.prod(shape)) * 4)]
        )
    assert_refused(*cli("convert", model, out / "out.pt"), "external")
    assert_clean(out)


# ----------------------------------------------------------------------------------------------------------
# Memory bounded by what the file holds
# ----------------------------------------------------------------------------------------------------------


def test_unallocated_chunked_hdf5_dataset_is_refused(keras_files: dict[str, Path], work: tuple[Path, Path]) -> None:
    """A few KB of .weights.h5 whose kernel is a chunked 12 GB dataset with no chunk written."""
    source, out = work

    def huge(handle: Any, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        handle.create_dataset(name, shape=(50_000, 60_000), chunks=(64, 64), dtype="f4")

    weights = copy(keras_files[".weights.h5"], source / "model.weights.h5")
    replace_kernel(weights, huge)
    assert weights.stat().st_size < 100_000
    assert_bounded_refusal(["convert", str(weights), str(out / "out.npz")], source, out, "declares", "allocates")


def test_stride0_torch_view_is_refused(work: tuple[Path, Path]) -> None:
    """torch.save of ``torch.zeros(1).expand(48000, 12000)``: a 2 KB file whose tensor needs 2.3 GB."""
    torch = pytest.importorskip("torch")
    source, out = work
    state = {key: value for key, value in torch.nn.LSTM(3, 4).state_dict().items()}
    state["weight_ih_l0"] = torch.zeros(1).expand(48_000, 12_000)
    torch.save(state, source / "model.pt")
    assert (source / "model.pt").stat().st_size < 10_000
    assert_bounded_refusal(["inspect", "model.pt"], source, out, "weight_ih_l0", "declares")
    assert_bounded_refusal(["convert", "model.pt", str(out / "o.npz")], source, out, "weight_ih_l0")


def test_many_views_of_one_storage_are_refused(work: tuple[Path, Path]) -> None:
    """3000 entries all viewing one 1 MB storage: each fits its storage, together they need 3 GB."""
    torch = pytest.importorskip("torch")
    source, out = work
    base = torch.zeros(262_144)
    state = dict(torch.nn.LSTM(3, 4).state_dict())
    state.update({f"buffer_{i}": base for i in range(3000)})
    torch.save(state, source / "model.pt")
    assert_bounded_refusal(["inspect", "model.pt"], source, out, "tensors together")


#: The block a zip bomb repeats.
ZEROS = bytes(16 << 20)


class _BlockDeflater:
    """A compressor for zipfile's writer that ends every block with a full flush, so the deflate output of a
    block of zeros is the same each time and is computed once: gigabytes of zeros take a second to write."""

    def __init__(self) -> None:
        self.deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
        self.zeros: bytes | None = None

    def compress(self, data: bytes) -> bytes:
        if data is ZEROS and self.zeros is not None:
            return self.zeros
        out = self.deflate.compress(data) + self.deflate.flush(zlib.Z_FULL_FLUSH)
        if data is ZEROS:
            self.zeros = out
        return out

    def flush(self) -> bytes:
        return self.deflate.flush()


def zip_bomb_member(archive: zipfile.ZipFile, name: str, head: bytes, size: int) -> None:
    """A deflated member of ``head`` followed by zeros, ``size`` bytes in all (a multiple of 16 MiB)."""
    info = zipfile.ZipInfo(name)
    info.compress_type = zipfile.ZIP_DEFLATED
    with archive.open(info, "w", force_zip64=True) as stream:
        stream._compressor = _BlockDeflater()  # type: ignore[attr-defined]
        stream.write(head + bytes(len(ZEROS) - len(head)))
        for _ in range(size // len(ZEROS) - 1):
            stream.write(ZEROS)


def test_npz_zip_bomb_is_refused(work: tuple[Path, Path]) -> None:
    """A valid .npz plus a member declaring 3.2 GB of zeros in a few MB."""
    source, out = work
    npz_file(source / "model.npz", CONFIG)
    size = 200 * (16 << 20)
    header = _npy_header((size // 4,), "<f4")
    with zipfile.ZipFile(source / "model.npz", "a", compression=zipfile.ZIP_DEFLATED) as archive:
        zip_bomb_member(archive, "layers.0.forward.W.npy", header, size)
    assert (source / "model.npz").stat().st_size < 8 << 20
    assert_bounded_refusal(["convert", "model.npz", str(out / "o.pt")], source, out, "declares", "compresses to")


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    import io

    from numpy.lib import format as npy

    buffer = io.BytesIO()
    npy.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def test_keras_zip_bomb_is_refused(keras_files: dict[str, Path], work: tuple[Path, Path]) -> None:
    source, out = work
    target = source / "model.keras"
    with zipfile.ZipFile(keras_files[".keras"]) as original, zipfile.ZipFile(target, "w") as archive:
        for member in original.infolist():
            if member.filename != "model.weights.h5":
                archive.writestr(member, original.read(member))
        zip_bomb_member(archive, "model.weights.h5", b"\x89HDF\r\n\x1a\n", 200 * (16 << 20))
    assert target.stat().st_size < 8 << 20
    assert_bounded_refusal(["inspect", "model.keras"], source, out, "model.weights.h5", "declares")


def test_npy_header_declaring_1e15_elements_is_refused(work: tuple[Path, Path], cli: Run) -> None:
    source, out = work
    npz_file(source / "model.npz", CONFIG)
    with zipfile.ZipFile(source / "model.npz", "a") as archive:
        archive.writestr("layers.0.forward.W.npy", _npy_header((10**15,), "<f8") + bytes(64))
    assert_refused(*cli("convert", "model.npz", out / "o.pt"), "declares shape")
    assert_clean(out)


# ----------------------------------------------------------------------------------------------------------
# ONNX external data
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def onnx_model(work: tuple[Path, Path], cli: Run) -> Path:
    require_format("onnx")
    source, _ = work
    npz_file(source / "model.npz", CONFIG)
    status, _, err = cli("convert", "model.npz", "model.onnx")
    assert status == 0, err
    return source / "model.onnx"


def _externalize(model_path: Path, location: str, data: bytes | None = None, dims: list[int] | None = None) -> None:
    import onnx

    model = onnx.load(str(model_path))
    tensor = next(t for t in model.graph.initializer if len(t.dims) == 3)
    if dims is not None:
        del tensor.dims[:]
        tensor.dims.extend(dims)
    tensor.ClearField("raw_data")
    del tensor.float_data[:]
    entry = tensor.external_data.add()
    entry.key, entry.value = "location", location
    tensor.data_location = onnx.TensorProto.EXTERNAL
    onnx.save(model, str(model_path), save_as_external_data=False)
    if data is not None:
        (model_path.parent / location).write_bytes(data)


@pytest.mark.parametrize("where", ["../secret.bin", "absolute", "symlink leaving the folder"])
def test_onnx_external_data_outside_the_model_folder_is_refused(
    where: str, onnx_model: Path, work: tuple[Path, Path], cli: Run
) -> None:
    source, out = work
    secret = source.parent / "secret.bin"
    location = {"../secret.bin": "../secret.bin", "absolute": str(secret)}.get(where, "weights.bin")
    if where.startswith("symlink"):
        os.symlink(secret, source / "weights.bin")
    _externalize(onnx_model, location)
    for command in (["inspect", onnx_model], ["convert", onnx_model, out / "o.npz"]):
        assert_refused(*cli(*command), "external data")
    assert_clean(out)


def test_onnx_external_data_in_a_sparse_file_is_refused(onnx_model: Path, work: tuple[Path, Path]) -> None:
    """A 6 GB sparse file of holes beside the model, the LSTM's W declared to fill it."""
    source, out = work
    _externalize(onnx_model, "weights.bin", dims=[1, 16, 100_000_000])
    with open(source / "weights.bin", "wb") as handle:
        handle.truncate(6_400_000_000)
    assert_bounded_refusal(["convert", "model.onnx", str(out / "o.npz")], source, out, "holds on disk")


def test_onnx_external_data_shorter_than_declared_is_refused(
    onnx_model: Path, work: tuple[Path, Path], cli: Run
) -> None:
    _, out = work
    _externalize(onnx_model, "weights.bin", data=b"\0" * 16)
    assert_refused(*cli("convert", "model.onnx", out / "o.npz"), "missing or truncated")
    assert_clean(out)


# ----------------------------------------------------------------------------------------------------------
# Only regular files
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".pt", ".safetensors", ".keras", ".weights.h5", ".h5", ".onnx"])
def test_symlink_to_dev_zero_is_refused(suffix: str, work: tuple[Path, Path]) -> None:
    source, out = work
    os.symlink("/dev/zero", source / f"model{suffix}")
    assert_bounded_refusal(["convert", f"model{suffix}", str(out / "o.pt")], source, out, "character device")


def test_fifo_named_npz_is_refused_without_hanging(work: tuple[Path, Path]) -> None:
    source, out = work
    os.mkfifo(source / "model.npz")
    for command in (["inspect", "model.npz"], ["convert", "model.npz", str(out / "o.pt")]):
        status, stdout, err, _, elapsed = run_bounded(command, source, timeout=30)
        assert_refused(status, stdout, err, "FIFO")
        assert elapsed < 30
    assert_clean(out)


def test_checkpoint_data_file_that_is_a_device_is_refused(work: tuple[Path, Path], cli: Run) -> None:
    require_format("tf-checkpoint")
    source, out = work
    npz_file(source / "model.npz", CONFIG)
    assert cli("convert", "model.npz", "model.ckpt")[0] == 0
    data = next(source.glob("model.ckpt.data-*"))
    data.unlink()
    os.symlink("/dev/zero", data)
    assert_refused(*cli("convert", "model.ckpt", out / "o.npz"), "character device")
    assert_clean(out)


# ----------------------------------------------------------------------------------------------------------
# One line, exit 2: malformed configs, attributes and tensors
# ----------------------------------------------------------------------------------------------------------


def _edit_keras_config(keras_path: Path, target: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    with zipfile.ZipFile(keras_path) as original, zipfile.ZipFile(target, "w") as archive:
        for member in original.infolist():
            data = original.read(member)
            if member.filename == "config.json":
                config = json.loads(data)
                replaced = edit(config)
                data = replaced if isinstance(replaced, bytes) else json.dumps(config).encode()
            archive.writestr(member, data)
    return target


def _lstm_config(config: dict[str, Any]) -> dict[str, Any]:
    layer = next(entry for entry in config["config"]["layers"] if entry["class_name"] == "LSTM")
    result: dict[str, Any] = layer["config"]
    return result


KERAS_CONFIG_EDITS: dict[str, tuple[Callable[[dict[str, Any]], Any], str]] = {
    "units as a string": (lambda c: _lstm_config(c).update(units="4"), "'units' must be an integer"),
    "use_bias 'false'": (lambda c: _lstm_config(c).update(use_bias="false"), "'use_bias' must be true or false"),
    "go_backwards 1": (lambda c: _lstm_config(c).update(go_backwards=1), "'go_backwards' must be true or false"),
    "activation a number": (lambda c: _lstm_config(c).update(activation=3), "'activation' must be an activation name"),
    "layers not a list": (lambda c: c["config"].update(layers={"a": 1}), "expected a list"),
    "layer config a list": (lambda c: c["config"]["layers"][-1].update(config=[1]), "expected a JSON object"),
    "deep JSON": (lambda c: b"[" * 100_000 + b"]" * 100_000, "JSON"),
}


@pytest.mark.parametrize("edit", sorted(KERAS_CONFIG_EDITS))
def test_malformed_keras_config_is_one_line(
    edit: str, keras_files: dict[str, Path], work: tuple[Path, Path], cli: Run
) -> None:
    source, out = work
    change, words = KERAS_CONFIG_EDITS[edit]
    model = _edit_keras_config(keras_files[".keras"], source / "model.keras", change)
    assert_refused(*cli("convert", model, out / "o.npz"), words)
    assert_clean(out)


NPZ_CONFIG_EDITS: dict[str, tuple[dict[str, Any], str]] = {
    "bias 'false'": ({"bias": "false"}, "'bias' must be true or false"),
    "cell_clip 'abc'": ({"cell_clip": "abc"}, "'cell_clip' must be a number"),
    "hidden_size a string": ({"hidden_size": "4"}, "'hidden_size' must be an integer"),
    "num_layers 1.5": ({"num_layers": 1.5}, "'num_layers' must be an integer"),
    "bidirectional 1": ({"bidirectional": 1}, "'bidirectional' must be true or false"),
}


@pytest.mark.parametrize("edit", sorted(NPZ_CONFIG_EDITS))
def test_malformed_canonical_npz_config_is_one_line(edit: str, work: tuple[Path, Path], cli: Run) -> None:
    """The canonical .npz's own JSON config, from a stranger, typed strictly ("false" is not false)."""
    from lstm_conformance.reference.layout import NPZ_CONFIG_KEY

    source, out = work
    npz_file(source / "model.npz", CONFIG)
    with np.load(source / "model.npz") as loaded:
        arrays = {key: loaded[key] for key in loaded.files}
    change, words = NPZ_CONFIG_EDITS[edit]
    arrays[NPZ_CONFIG_KEY] = np.asarray(json.dumps({**json.loads(str(arrays[NPZ_CONFIG_KEY])), **change}))
    np.savez(source / "model.npz", **arrays)
    assert_refused(*cli("convert", "model.npz", out / "o.pt"), words)
    assert_clean(out)


def _set_attribute(model_path: Path, name: str, value: Any) -> None:
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path))
    node = next(n for n in model.graph.node if n.op_type == "LSTM")
    kept = [a for a in node.attribute if a.name != name]
    del node.attribute[:]
    node.attribute.extend([*kept, helper.make_attribute(name, value)])
    onnx.save(model, str(model_path))


ONNX_ATTRIBUTE_EDITS = {
    "layout 1.5": ("layout", 1.5, "'layout' must be one of 0, 1"),
    "hidden_size a string": ("hidden_size", "4", "'hidden_size' must be an integer"),
    "clip 'abc'": ("clip", "abc", "'clip' must be a number"),
    "input_forget 2": ("input_forget", 2, "'input_forget' must be one of 0, 1"),
    "activations a float": ("activations", 1.0, "'activations' must be a list of strings"),
}


@pytest.mark.parametrize("edit", sorted(ONNX_ATTRIBUTE_EDITS))
def test_malformed_onnx_attribute_is_one_line(edit: str, onnx_model: Path, work: tuple[Path, Path], cli: Run) -> None:
    _, out = work
    name, value, words = ONNX_ATTRIBUTE_EDITS[edit]
    _set_attribute(onnx_model, name, value)
    assert_refused(*cli("convert", onnx_model, out / "o.npz"), words)
    assert_clean(out)


def test_onnx_unparsable_tensor_is_one_line(onnx_model: Path, work: tuple[Path, Path], cli: Run) -> None:
    """A W initializer whose raw_data does not fit its dims: a library error, told as an input error."""
    import onnx

    _, out = work
    model = onnx.load(str(onnx_model))
    tensor = next(t for t in model.graph.initializer if len(t.dims) == 3)
    tensor.raw_data = tensor.raw_data[:-3]
    onnx.save(model, str(onnx_model))
    status, stdout, err = cli("convert", onnx_model, out / "o.npz")
    assert_refused(status, stdout, err, str(onnx_model), "layer0_W")
    assert_clean(out)


def _torch_state(edit: Callable[[dict[Any, Any]], None]) -> Callable[[Path], None]:
    def build(path: Path) -> None:
        def change(state: dict[str, Any]) -> None:
            edit(state)

        torch_lstm_file(path, edit=change)

    return build


def _sparse(state: dict[Any, Any]) -> None:
    state["weight_ih_l0"] = state["weight_ih_l0"].to_sparse()


def _float8(state: dict[Any, Any]) -> None:
    import torch

    for key in list(state):
        state[key] = state[key].to(torch.float8_e4m3fn)


def _nested(depth: int) -> Any:
    value: Any = [1]
    for _ in range(depth):
        value = [value]
    return value


TORCH_EDITS: dict[str, tuple[Callable[[dict[Any, Any]], None], str]] = {
    "sparse tensor": (_sparse, "sparse"),
    "float8 tensors": (_float8, ""),
    "nested 30 deep": (lambda s: s.update(nested=_nested(30)), "nest"),
}


@pytest.mark.parametrize("edit", sorted(TORCH_EDITS))
def test_malformed_torch_state_dict_is_one_line(edit: str, work: tuple[Path, Path], cli: Run) -> None:
    pytest.importorskip("torch")
    source, out = work
    change, word = TORCH_EDITS[edit]
    _torch_state(change)(source / "model.pt")
    assert_refused(*cli("convert", "model.pt", out / "o.npz"), word)
    assert_clean(out)


def test_int_keys_in_a_state_dict_are_left_alone(work: tuple[Path, Path], cli: Run) -> None:
    """An int key beside a real nn.LSTM's keys: the LSTM still converts, the int key is noted."""
    pytest.importorskip("torch")
    source, out = work
    torch_lstm_file(source / "model.pt", edit=lambda state: state.update({0: state["bias_ih_l0"]}))
    status, stdout, err = cli("convert", "model.pt", out / "o.npz")
    assert status == 0, err
    assert "Traceback" not in err
    assert "0" in stdout


def test_int_keys_only_is_one_line(work: tuple[Path, Path], cli: Run) -> None:
    torch = pytest.importorskip("torch")
    source, out = work
    torch.save({0: torch.zeros(3), 1: torch.zeros(2)}, source / "model.pt")
    assert_refused(*cli("convert", "model.pt", out / "o.npz"), "no nn.LSTM weights")
    assert_clean(out)


# ----------------------------------------------------------------------------------------------------------
# Writes that cannot leave debris
# ----------------------------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs, filled up but for a few KB (needs root and mount)."""
    folder = tmp_path / "tmpfs"
    folder.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root and mount(8); the full-disk case is not tried")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (folder / "filler").write_bytes(bytes(1000 * 1024))
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], check=False)


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras", ".h5", ".pt", ".safetensors", ".onnx", ".npz", ".ckpt"])
def test_full_disk_is_one_line_and_leaves_nothing(
    suffix: str, full_disk: Path, work: tuple[Path, Path], cli: Run
) -> None:
    source, _ = work
    format_name = {".weights.h5": "keras-h5", ".h5": "keras-h5", ".pt": "torch", ".ckpt": "tf-checkpoint"}
    require_format(format_name.get(suffix, suffix.lstrip(".")))
    npz_file(source / "model.npz", LSTMConfig(input_size=16, hidden_size=64))
    before = listing(full_disk)
    destination = full_disk / f"out{suffix}"
    status, out, err = cli("convert", "model.npz", destination)
    assert_refused(status, out, err, str(destination))
    assert ".partial" not in err
    assert listing(full_disk) == before


def test_long_destination_name_converts(work: tuple[Path, Path], cli: Run) -> None:
    """A 250-character file name is valid; the temporary name must fit beside it."""
    source, out = work
    npz_file(source / "model.npz", CONFIG)
    name = "a" * 246 + ".npz"
    status, _, err = cli("convert", "model.npz", out / name)
    assert status == 0, err
    assert listing(out) == [name]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_signal_while_writing_leaves_nothing(signum: int, work: tuple[Path, Path]) -> None:
    """SIGTERM or SIGHUP once the staging folder exists (a Keras write takes seconds): no debris."""
    require_format("keras")
    source, out = work
    npz_file(source / "model.npz", LSTMConfig(input_size=8, hidden_size=16))
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1"}
    command = [sys.executable, "-m", "lstm_conformance.cli", "convert", "model.npz", str(out / "o.keras")]
    process = subprocess.Popen(command, cwd=source, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + SECONDS
    while not any(out.iterdir()) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert process.poll() is None, "the conversion ended before the signal could be sent"
    time.sleep(0.2)
    process.send_signal(signum)
    _, err = process.communicate(timeout=SECONDS)
    assert process.returncode == 128 + signum, err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1].startswith("lstm-conformance: terminated by"), err
    assert_clean(out)


# ----------------------------------------------------------------------------------------------------------
# The guards refuse nothing a framework writes
# ----------------------------------------------------------------------------------------------------------


def test_framework_files_still_read(keras_files: dict[str, Path], work: tuple[Path, Path], cli: Run) -> None:
    """Valid files pass every guard: Keras 3 (.keras, .h5, .weights.h5, a trained model with optimizer state),
    tf_keras, torch.save, safetensors, ONNX, a TF checkpoint and the canonical npz."""
    source, out = work
    keras = pytest.importorskip("keras")
    trained = keras.Sequential([keras.Input((2, 3)), keras.layers.LSTM(4, return_sequences=True)])
    trained.compile(optimizer="adam", loss="mse")
    trained.fit(np.zeros((2, 2, 3)), np.zeros((2, 2, 4)), verbose=0)
    trained.save(source / "trained.keras")
    models = [*keras_files.values(), source / "trained.keras"]
    tf_keras = pytest.importorskip("tf_keras")
    legacy = tf_keras.Sequential([tf_keras.Input((2, 3)), tf_keras.layers.LSTM(4, return_sequences=True)])
    legacy.save(source / "tf_keras.h5")
    legacy.save_weights(source / "tf_keras_weights.h5")
    models += [source / "tf_keras.h5", source / "tf_keras_weights.h5"]
    torch_lstm_file(source / "model.pt")
    npz_file(source / "model.npz", CONFIG)
    models += [source / "model.pt", source / "model.npz"]
    for suffix in (".safetensors", ".onnx", ".ckpt"):
        assert cli("convert", "model.npz", f"model{suffix}", "--no-verify")[0] == 0
        models.append(source / f"model{suffix}")
    for model in models:
        status, _, err = cli("inspect", model)
        assert status == 0, (model, err)
    assert_clean(out)
